"""The model domain: padded arrays of elevation, water and parameters, numpy or Dask alike.

The kernels work on arrays padded by one ghost cell on every side (see :mod:`.kernels`). This
module turns the validated user inputs into those arrays. The code uses numpy functions only;
with Dask inputs they dispatch to Dask (``__array_function__``), so the same code builds a lazy
domain for a chunked run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from citytwin.errors import InputError

from .boundaries import Boundaries
from .forcing import Inflows, Rain
from .kernels import CLOSED_Z, LEVEL
from .validate import Grid

F32 = np.float32


@dataclass
class Forcing:
    """What the time stepping needs besides the arrays: small, shipped to Dask workers as is."""

    rain: Rain  # temporal profile only (``field`` is None here)
    inflows: Inflows
    boundaries: Boundaries
    rain_cells: float  # sum over open cells of the rain field (m/s), or the number of open cells
    cell_area: float  # m2
    zmin_sides: np.ndarray  # lowest open bed elevation along each side (m), +inf when none


@dataclass
class Domain:
    """Everything the time stepping needs, in padded array order.

    ``z``, ``h0``, ``hmax0``, ``tarr0`` and the optional ``manning`` / ``rain_field`` arrays have the
    shape ``(ny + 2, nx + 2)``; numpy arrays for an in-memory DEM, Dask arrays for a chunked one.
    """

    grid: Grid
    z: Any  # elevation (m), CLOSED_Z on closed cells and the ghost ring
    h0: Any  # initial depth (m)
    hmax0: Any  # running maximum depth; -1 marks closed cells (the kernels' activity mask)
    tarr0: Any  # arrival time (s), NaN = not yet
    manning: float | Any  # Manning n (s m^-1/3): a number or a padded field
    rain: Rain  # with ``field`` padded when rain is a raster
    inflows: Inflows
    boundaries: Boundaries
    rain_cells: float  # sum over open cells of the rain field (m/s), or the number of open cells
    stored0: float  # initial water volume (m3)
    zmin_sides: np.ndarray  # lowest open bed elevation along each side (m), +inf when none
    n_open: int  # number of open (wet-able) cells

    @property
    def lazy(self) -> bool:
        return not isinstance(self.z, np.ndarray)

    def drop_arrays(self) -> None:
        """Release the padded arrays once a run has copied what it needs from them."""
        self.z = self.h0 = self.hmax0 = self.tarr0 = None
        if not isinstance(self.manning, float):
            self.manning = None
        self.rain = Rain(self.rain.times, self.rain.rates)

    @property
    def forcing(self) -> Forcing:
        return Forcing(rain=Rain(self.rain.times, self.rain.rates), inflows=self.inflows,
                       boundaries=self.boundaries, rain_cells=self.rain_cells, cell_area=self.grid.cell_area,
                       zmin_sides=self.zmin_sides)


def _pad(a: Any, value: float) -> Any:
    return np.pad(a, 1, mode="constant", constant_values=value)


def _compute(*values: Any) -> tuple:
    """Evaluate Dask values together (one pass over the inputs); numbers pass through."""
    if any(hasattr(v, "dask") for v in values):
        import dask

        return dask.compute(*values)
    return values


def build_domain(z: Any, closed_extra: Any, grid: Grid, *, rain: Rain, initial_depth: float | Any,
                 manning: float | Any, inflows: Inflows, boundaries: Boundaries,
                 arrival_threshold: float) -> Domain:
    """Padded model arrays from the DEM values and the parsed inputs.

    Parameters
    ----------
    z : float32 array (ny, nx), NaN = nodata. closed_extra : bool array or None (obstacles).
    initial_depth, manning : numbers or float32 arrays (ny, nx) on the grid.
    """
    closed = np.isnan(z)
    if closed_extra is not None:
        closed = closed | closed_extra
    open_ = ~closed
    zc = np.where(closed, CLOSED_Z, z)
    if isinstance(initial_depth, float):
        h = np.where(closed, F32(0.0), F32(initial_depth))
    else:
        h = np.where(closed, F32(0.0), np.nan_to_num(initial_depth, nan=0.0)).astype(F32)
    fields = {}
    if not isinstance(manning, float):
        fields["manning"] = (manning, "s m^-1/3", True)
    if not isinstance(initial_depth, float):
        fields["initial_depth"] = (h, "m", False)
    if rain.field is not None:
        fields["rain"] = (rain.field, "m/s", False)
    reductions = []
    for values, _, _ in fields.values():
        reductions += [np.where(open_, values, F32(np.inf)).min(), (open_ & ~np.isfinite(values)).sum()]
    # Lowest open bed along each border: the deepest a fixed boundary level can make a ghost cell.
    edges = [zc[0, :], zc[-1, :], zc[:, 0], zc[:, -1]]
    rain_sum = (np.where(open_, rain.field, F32(0.0)).astype("float64").sum() if rain.field is not None
                else open_.sum())
    stored = h.astype("float64").sum()
    results = _compute(open_.sum(), rain_sum, stored, *[e.min() for e in edges], *reductions)
    n_open = int(results[0])
    if n_open == 0:
        raise InputError("dem: no valid cells; the DEM is all nodata (or all cells are obstacles)")
    rain_sum, stored = float(results[1]), float(results[2])
    zmin = np.array([float(v) for v in results[3:7]])
    zmin[zmin >= CLOSED_Z] = np.inf
    for k, (name, (_, units, positive)) in enumerate(fields.items()):
        low, bad = float(results[7 + 2 * k]), int(results[8 + 2 * k])
        if bad:
            raise InputError(f"{name}: {bad} cells with NaN/inf inside the DEM's valid area")
        if low < 0 or (positive and low <= 0):
            need = "positive" if positive else "non-negative"
            shown = low * 3.6e6 if name == "rain" else low
            raise InputError(f"{name}: must be {need}; found {shown:g} {'mm/h' if name == 'rain' else units}")

    hmax0 = np.where(closed, F32(-1.0), h)
    tarr0 = np.where(open_ & (h > F32(arrival_threshold)), F32(0.0), F32(np.nan))
    manning_p = manning if isinstance(manning, float) else np.pad(
        np.where(closed, F32(1.0), manning).astype(F32), 1, mode="edge")
    if rain.field is not None:
        field = np.where(closed, F32(0.0), rain.field).astype(F32)
        rain = Rain(rain.times, rain.rates, field=_pad(field, 0.0))
    return Domain(grid=grid, z=_pad(zc.astype(F32), CLOSED_Z), h0=_pad(h, 0.0), hmax0=_pad(hmax0, -1.0),
                  tarr0=_pad(tarr0, np.nan), manning=manning_p, rain=rain, inflows=inflows,
                  boundaries=boundaries, rain_cells=rain_sum, stored0=stored * grid.cell_area,
                  zmin_sides=zmin, n_open=n_open)


def ghost_depth(forcing: Forcing, levels: np.ndarray) -> float:
    """Deepest water a fixed-level border puts in its ghost cells (m), for the time step."""
    depth = 0.0
    for side in range(4):
        if forcing.boundaries.kinds[side] == LEVEL and np.isfinite(forcing.zmin_sides[side]):
            depth = max(depth, float(levels[side]) - float(forcing.zmin_sides[side]))
    return depth
