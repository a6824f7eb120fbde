"""Input checks of the flood model: the DEM grid and the fields and numbers that live on it.

Every check raises :class:`citytwin.errors.InputError` with a message that names the input, what
is wrong with it and, where it helps, what to do instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import rioxarray  # noqa: F401  (registers the .rio accessor the model relies on)
import xarray as xr

from citytwin.errors import InputError

SQUARE_TOLERANCE = 1e-6  # relative difference of |dx| and |dy| still accepted as square cells


@dataclass(frozen=True)
class Grid:
    """Geometry of the DEM grid the model runs on.

    Attributes
    ----------
    dx : cell size (m), square cells.
    shape : (ny, nx).
    x, y : cell-centre coordinates (CRS units, m) of the columns / rows, in array order.
    y_dim, x_dim : dimension names of the DEM.
    crs : the DEM's CRS (``pyproj.CRS``), projected with metre units.
    transform : affine transform of the DEM (``rasterio`` convention).
    north_first : True when row 0 is the northern edge (y decreasing with the row index).
    """

    dx: float
    shape: tuple[int, int]
    x: np.ndarray
    y: np.ndarray
    y_dim: str
    x_dim: str
    crs: Any
    transform: Any
    north_first: bool

    @property
    def cell_area(self) -> float:
        """Area of one cell (m2)."""
        return self.dx * self.dx

    def side_index(self) -> dict[str, int]:
        """Map of compass side -> array side (0 first row, 1 last row, 2 first col, 3 last col)."""
        west, east = (2, 3) if self.transform.a > 0 else (3, 2)
        north, south = (0, 1) if self.north_first else (1, 0)
        return {"north": north, "south": south, "west": west, "east": east}

    def cell_of(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Row, column and an inside-the-grid flag for points (x, y) in the grid's CRS."""
        inv = ~self.transform
        col_f, row_f = inv * (np.asarray(x, dtype="float64"), np.asarray(y, dtype="float64"))
        col = np.floor(col_f).astype("int64")
        row = np.floor(row_f).astype("int64")
        inside = (row >= 0) & (row < self.shape[0]) & (col >= 0) & (col < self.shape[1])
        return row, col, inside


def grid_of(dem: xr.DataArray) -> Grid:
    """Check the DEM's geometry and describe its grid.

    Raises
    ------
    InputError
        Not a 2D (y, x) DataArray, no or non-metric CRS, rotated grid, non-square cells,
        fewer than 2 x 2 cells.
    """
    if not isinstance(dem, xr.DataArray):
        raise InputError(f"dem: expected an xarray.DataArray (y, x) of elevations in m, "
                         f"got {type(dem).__name__}")
    if dem.ndim != 2:
        raise InputError(f"dem: expected 2 dimensions (y, x), got {dem.ndim} {tuple(dem.dims)}; "
                         "select one band first (dem.squeeze('band'))")
    try:
        y_dim, x_dim = dem.rio.y_dim, dem.rio.x_dim
        crs = dem.rio.crs
        transform = dem.rio.transform(recalc=True)
    except Exception as exc:  # rioxarray raises several types for missing spatial dims/coords
        raise InputError(f"dem: not a georeferenced raster ({exc})") from exc
    if (y_dim, x_dim) != tuple(dem.dims):
        raise InputError(f"dem: dimensions must be ordered ({y_dim}, {x_dim}), got {tuple(dem.dims)}; "
                         f"use dem.transpose('{y_dim}', '{x_dim}')")
    if crs is None:
        raise InputError("dem: no CRS; attach one with dem.rio.write_crs('EPSG:n')")
    crs = horizontal_crs(crs)
    if not crs.is_projected or crs.axis_info[0].unit_name not in ("metre", "meter"):
        raise InputError(f"dem: CRS {crs.to_string()} is not a projected CRS in metres; reproject the DEM "
                         "(e.g. to the local UTM zone) so that cell sizes are in metres")
    if transform.b != 0 or transform.d != 0:
        raise InputError("dem: rotated or sheared grid; warp it to a north-up grid first")
    dx, dy = abs(transform.a), abs(transform.e)
    if abs(dx - dy) > SQUARE_TOLERANCE * max(dx, dy):
        raise InputError(f"dem: cells are not square ({dx:g} m x {dy:g} m); the scheme needs square cells, "
                         "resample the DEM (e.g. gdalwarp -tr d d)")
    ny, nx = dem.shape
    if ny < 2 or nx < 2:
        raise InputError(f"dem: {ny} x {nx} cells; the model needs at least 2 x 2")
    return Grid(dx=float(dx), shape=(ny, nx), x=np.asarray(dem[x_dim].values, dtype="float64"),
                y=np.asarray(dem[y_dim].values, dtype="float64"), y_dim=y_dim, x_dim=x_dim, crs=crs,
                transform=transform, north_first=transform.e < 0)


def horizontal_crs(crs: Any):
    """The horizontal part of a CRS as ``pyproj.CRS`` (EPSG:7415 -> EPSG:28992)."""
    from pyproj import CRS

    crs = CRS.from_user_input(crs)
    if crs.is_compound:
        crs = next(sub for sub in crs.sub_crs_list if not sub.is_vertical)
    elif len(crs.axis_info) == 3:
        crs = crs.to_2d()
    return crs


def same_crs(a: Any, b: Any) -> bool:
    """True when two CRSs agree horizontally."""
    return horizontal_crs(a).equals(horizontal_crs(b), ignore_axis_order=True)


def dem_values(dem: xr.DataArray) -> Any:
    """Elevations as float32 with NaN for nodata (numpy or Dask, like the input)."""
    data = dem.data
    nodata = dem.rio.nodata if hasattr(dem, "rio") else None
    z = data.astype("float32")
    if nodata is not None and not np.isnan(nodata):
        z = np.where(z == np.float32(nodata), np.float32(np.nan), z)
    return z


def check_on_grid(field: xr.DataArray, grid: Grid, name: str) -> xr.DataArray:
    """Check that a raster input lies on the DEM grid (same shape and coordinates, same CRS)."""
    if not isinstance(field, xr.DataArray):
        raise InputError(f"{name}: expected a number or an xarray.DataArray on the DEM grid, got "
                         f"{type(field).__name__}")
    if "band" in field.dims and field.sizes["band"] == 1:
        field = field.squeeze("band", drop=True)
    if tuple(field.dims) != (grid.y_dim, grid.x_dim):
        raise InputError(f"{name}: dimensions {tuple(field.dims)}, expected ({grid.y_dim}, {grid.x_dim}) "
                         "of the DEM")
    if field.shape != grid.shape:
        raise InputError(f"{name}: shape {field.shape} differs from the DEM's {grid.shape}")
    for dim, coords in ((grid.x_dim, grid.x), (grid.y_dim, grid.y)):
        if dim in field.coords and not np.allclose(field[dim].values, coords, rtol=0, atol=1e-6 * grid.dx):
            raise InputError(f"{name}: {dim} coordinates differ from the DEM's; "
                             "resample it onto the DEM grid")
    field_crs = field.rio.crs if hasattr(field, "rio") else None
    if field_crs is not None and not same_crs(field_crs, grid.crs):
        raise InputError(f"{name}: CRS {horizontal_crs(field_crs).to_string()} differs from the DEM's "
                         f"{grid.crs.to_string()}")
    return field


def scalar_or_field(value: Any, grid: Grid, name: str, units: str, *, minimum: float = 0.0,
                    strictly_positive: bool = False) -> float | Any:
    """A non-negative (or positive) number, or a field on the DEM grid (numpy or Dask array)."""
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        number = float(value)
        bad = not np.isfinite(number) or number < minimum or (strictly_positive and number <= minimum)
        if bad:
            need = "positive" if strictly_positive else f">= {minimum:g}"
            raise InputError(f"{name}: {number!r} {units} is not allowed; it must be {need}")
        return number
    field = check_on_grid(value, grid, name)
    data = field.data.astype("float32")
    return data


def check_number(value: Any, name: str, *, low: float, high: float | None = None,
                 low_open: bool = False) -> float:
    """A finite float in ``[low, high]`` (``(low, high]`` when ``low_open``)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name}: expected a number, got {value!r}") from None
    above = number > low if low_open else number >= low
    ok = np.isfinite(number) and above and (high is None or number <= high)
    if not ok:
        bound = f"({low:g}" if low_open else f"[{low:g}"
        bound += f", {high:g}]" if high is not None else ", inf)"
        raise InputError(f"{name}: {number!r} is outside {bound}")
    return number
