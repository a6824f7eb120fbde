"""``simulate``: pluvial and fluvial flooding on a DEM with the local inertial scheme.

The scheme is LISFLOOD-FP's "ACC" solver: de Almeida, Bates, Freer & Souvignet (2012),
"Improving the stability of a simple formulation of the shallow water equations for 2-D flood
modeling", Water Resources Research 48, W05528, building on Bates, Horritt & Fewtrell (2010),
J. Hydrology 387, 33-45. Equations: :mod:`.kernels`; time stepping: :mod:`.engine`.
"""

from __future__ import annotations

import time as _time
from typing import Any

import numpy as np
import xarray as xr

from citytwin.errors import InputError

from .boundaries import parse_boundary
from .domain import Domain, build_domain
from .engine import Block, Numerics, advance, next_plan, peak_depth, stored_volume
from .forcing import parse_inflows, parse_rain
from .obstacles import obstacle_mask
from .result import RunResult, to_dataset
from .validate import check_number, dem_values, grid_of, scalar_or_field

F32 = np.float32
# From this many cells on, an in-memory grid is split into bands, one per core, advanced by a thread
# pool with halo exchange (see chunked._Threads); below it one thread does all (a block of steps
# then takes too little time to be worth splitting).
PARALLEL_MIN_CELLS = 200_000


def simulate(dem: xr.DataArray, *, rain: Any, duration: float, initial_depth: float | xr.DataArray = 0.0,
             manning: float | xr.DataArray = 0.03, inflows: Any = None, obstacles: Any = None,
             boundary: Any = "open", output_interval: float | None = None, theta: float = 0.7,
             alpha: float = 0.7, dt_max: float = 5.0, arrival_threshold: float = 0.05,
             exchange_steps: int = 16) -> xr.Dataset:
    """Simulate surface water on a DEM under rain, inflows and boundary levels.

    Parameters
    ----------
    dem : xarray.DataArray (y, x)
        Ground elevation (m) with a projected CRS in metres (rioxarray ``.rio.crs``) and square
        cells. NaN (or the raster's nodata value) marks cells outside the model: walls. A
        Dask-backed DEM (``dem.chunk(...)``) runs chunk-parallel on the active Dask scheduler
        (a ``dask.distributed`` client if one exists) and returns Dask-backed results.
    rain : float, pandas.Series or xarray.DataArray
        Rain intensity (mm/h): a constant, a hyetograph (Series indexed by seconds or timedeltas,
        piecewise constant, see :mod:`.forcing`) or a field (DataArray on the DEM grid).
    duration : float
        Simulated time (s).
    initial_depth : float or DataArray (y, x)
        Water depth (m) at the start.
    manning : float or DataArray (y, x)
        Manning roughness n (s m^-1/3); on a face the mean of its two cells.
    inflows : optional
        Point inflow hydrographs (m3/s): ``(x, y, discharge)`` tuples, a ``{(x, y): discharge}``
        dict, a DataFrame with ``x, y, discharge`` or a GeoDataFrame of points with a
        ``discharge`` column; a discharge is a number or a Series (piecewise linear).
    obstacles : optional
        Building footprints (GeoDataFrame of polygons) or a boolean DataArray on the DEM grid;
        blocked cells are walls water flows around (see :func:`.rasterize_obstacles`). Rain on
        them is not modelled (roof drainage is outside the model).
    boundary : "open", "closed", float, Series or dict
        Border condition for all sides or per side (``north``/``south``/``east``/``west``), see
        :mod:`.boundaries`.
    output_interval : float, optional
        Spacing (s) of the stored depth maps; default ``duration / 12``. The last map is at
        ``duration``; the first at 0.
    theta : float
        de Almeida's flux weighting in (0, 1], 0.7 by default (1 = Bates et al. 2010).
    alpha : float
        Time step as a fraction of the scheme's 2-D stability limit: ``dt = alpha sqrt(theta / 2)
        dx / sqrt(g h_max)`` (see :mod:`.engine` for why this differs from the 1-D convention).
    dt_max : float
        Largest time step (s).
    arrival_threshold : float
        Depth (m) that counts as arrival of the flood for ``arrival_time``.
    exchange_steps : int
        Steps per block of constant time step (and per halo exchange of a chunked run, whose
        halo is ``exchange_steps + 1`` cells wide). The time step is recomputed between blocks
        from the maximum depth; in-memory and chunked runs use the same blocks and agree.

    Returns
    -------
    xarray.Dataset
        ``depth (time, y, x)`` float32 (m) at the output times (``time`` in s since the start),
        ``max_depth (y, x)`` (m), ``arrival_time (y, x)`` (s, NaN where the threshold was never
        exceeded); closed cells are NaN. ``attrs`` hold the volume balance (m3): ``rain_volume``,
        ``inflow_volume``, ``outflow_volume`` (net, through the border), ``initial_volume``,
        ``final_volume``, ``volume_error`` and ``relative_volume_error`` (error / (initial +
        rain + inflow)), plus run statistics. The CRS is the DEM's.

    Raises
    ------
    citytwin.errors.InputError
        Bad inputs (non-square cells, CRS mismatch, negative rain, all-nodata DEM, ...), with a
        message naming the problem.
    """
    if isinstance(dem, xr.DataArray) and "band" in dem.dims and dem.sizes["band"] == 1:
        dem = dem.squeeze("band", drop=True)
    grid = grid_of(dem)
    duration = check_number(duration, "duration (s)", low=0.0, low_open=True)
    interval = duration / 12.0 if output_interval is None else check_number(
        output_interval, "output_interval (s)", low=0.0, low_open=True)
    steps = exchange_steps
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise InputError(f"exchange_steps: {exchange_steps!r} must be a positive integer")
    num = Numerics(dx=grid.dx, theta=check_number(theta, "theta", low=0.0, high=1.0, low_open=True),
                   alpha=check_number(alpha, "alpha", low=0.0, high=1.0, low_open=True),
                   dt_max=check_number(dt_max, "dt_max (s)", low=0.0, low_open=True),
                   exchange_steps=int(steps),
                   arrival_threshold=check_number(arrival_threshold, "arrival_threshold (m)", low=0.0,
                                                  low_open=True))
    z = dem_values(dem)
    blocked = obstacle_mask(obstacles, grid)
    rain_ = parse_rain(rain, grid)
    manning_ = scalar_or_field(manning, grid, "manning", "s m^-1/3", strictly_positive=True)
    depth0 = scalar_or_field(initial_depth, grid, "initial_depth", "m")
    if isinstance(z, np.ndarray):
        # An in-memory DEM runs in memory: Dask-backed fields given with it are loaded.
        manning_, depth0, blocked = (v if v is None or isinstance(v, float) else np.asarray(v)
                                     for v in (manning_, depth0, blocked))
        if rain_.field is not None:
            rain_.field = np.asarray(rain_.field)
    closed = np.isnan(z) if blocked is None else (np.isnan(z) | blocked)
    inflows_ = parse_inflows(inflows, grid, closed)
    boundaries = parse_boundary(boundary, grid)
    domain = build_domain(z, blocked, grid, rain=rain_, initial_depth=depth0, manning=manning_,
                          inflows=inflows_, boundaries=boundaries, arrival_threshold=num.arrival_threshold)
    times = output_times(duration, interval)
    started = _time.perf_counter()
    if domain.lazy:
        from .chunked import run_chunked

        result = run_chunked(domain, num, times, dem.chunks)
    else:
        result = run_in_memory(domain, num, times)
    result.extra["wall_time_s"] = _time.perf_counter() - started
    return to_dataset(result, domain, num)


def output_times(duration: float, interval: float) -> list[float]:
    """0, interval, 2 interval, ..., duration (the last always included)."""
    n = int(np.floor(duration / interval + 1e-9))
    times = [i * interval for i in range(n + 1)]
    if duration - times[-1] > 1e-9 * duration:
        times.append(duration)
    else:
        times[-1] = duration
    return times


def memory_block(domain: Domain) -> Block:
    """The whole padded domain as one block (all four sides are borders).

    The block takes over the domain's arrays (no copies: they are private to the run).
    """
    ny, nx = domain.z.shape
    return Block(z=domain.z, h=domain.h0, c=np.zeros((ny, nx), dtype=F32), qx=np.zeros((ny, nx), dtype=F32),
                 qy=np.zeros((ny, nx), dtype=F32), hmax=domain.hmax0, tarr=domain.tarr0,
                 manning=domain.manning,
                 rain_field=domain.rain.field if domain.rain.field is not None else 1.0,
                 edges=np.ones(4, dtype=np.bool_), own=np.array([1, ny - 1, 1, nx - 1], dtype="int64"),
                 src_rows=domain.inflows.rows + 1, src_cols=domain.inflows.cols + 1,
                 src_ids=np.arange(len(domain.inflows), dtype="int64"))


def run_in_memory(domain: Domain, num: Numerics, times: list[float]) -> RunResult:
    """Advance an in-memory domain: one block, or bands on all cores for large grids."""
    threads = _threads()
    ny, nx = domain.grid.shape
    rows_per_band = ny // max(threads, 1)
    if threads > 1 and ny * nx >= PARALLEL_MIN_CELLS and rows_per_band >= 2 * (num.exchange_steps + 1):
        from .chunked import run_chunked

        bands = tuple(len(b) for b in np.array_split(np.arange(ny), threads))
        return run_chunked(domain, num, times, (bands, (nx,)), threads=threads)
    return run_single(domain, num, times)


def _threads() -> int:
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def run_single(domain: Domain, num: Numerics, times: list[float]) -> RunResult:
    """Advance the whole domain as one block on this thread; depth maps at ``times``."""
    block = memory_block(domain)
    frames = np.empty((len(times),) + domain.grid.shape, dtype=F32)  # filled in place: no stacking copy
    frames[0] = block.own_view(block.h)
    result = RunResult(times=times, frames=frames, hmax=None, tarr=None)
    forcing = domain.forcing
    plan = next_plan(forcing, num, times, 0.0, peak_depth(block))
    while plan is not None:
        result.outflow += advance(block, plan, num)
        result.book(plan, forcing)
        if plan.t1 in times:
            frames[times.index(plan.t1)] = block.own_view(block.h)
        plan = next_plan(forcing, num, times, plan.t1, peak_depth(block))
    result.hmax = block.own_view(block.hmax).copy()
    result.tarr = block.own_view(block.tarr).copy()
    result.stored_end = stored_volume(block, domain.grid.cell_area)
    return result
