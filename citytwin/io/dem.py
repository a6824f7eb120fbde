"""Digital elevation models: reading GeoTIFF-like rasters as xarray, sampling them at points, and
ground elevations for building footprints.

A DEM is a 2D ``xarray.DataArray`` (dims ``y``, ``x``; float32, metres; NaN where the file has
no data) with its CRS attached through rioxarray. Values are taken at cell centres, the GDAL
"area" convention: cell (row i, column j) covers ``[x0 + j dx, x0 + (j + 1) dx]`` and its value
belongs to the centre.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from citytwin.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    import geopandas as gpd
    import xarray as xr

SQUARE_TOLERANCE = 1e-6  # relative difference of |dx| and |dy| still called square


def read_dem(path: str | Path, *, crs: str | None = None,
             chunks: int | dict | bool | None = None) -> "xr.DataArray":
    """Read a single-band elevation raster.

    Parameters
    ----------
    path
        Any raster GDAL reads (GeoTIFF, ASCII grid, VRT, ...).
    crs
        CRS when the file declares none; must agree with a declared one.
    chunks
        Passed to ``rioxarray.open_rasterio``: a Dask-backed array for large DEMs; ``None`` reads
        into memory.

    Returns
    -------
    xarray.DataArray
        float32 (m), nodata -> NaN, CRS attached. ``attrs``: ``square_cells`` (bool), ``cell_size``
        ((|dx|, |dy|) in CRS units), ``warnings`` (list of str), ``source`` (the path),
        ``file_nodata`` (the nodata value the file declares, e.g. -9999.0 or -32768.0, whose cells
        are now NaN; ``None`` when it declares none, and then every cell is data).

    Raises
    ------
    InputError
        Not a raster, more than one band, no or unknown CRS, rotated grid, cells that cannot be
        read (a corrupt or truncated file; checked when reading into memory).
    """
    import rioxarray
    from rasterio.errors import RasterioIOError

    from citytwin.io.crs import resolve_crs

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_file() and path.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty")
    try:
        dem = rioxarray.open_rasterio(path, masked=True, chunks=chunks)
    except RasterioIOError as exc:
        raise InputError(f"{path}: not a readable raster ({str(exc).splitlines()[0]})") from exc
    if isinstance(dem, list) or not hasattr(dem, "rio"):
        raise InputError(f"{path}: holds several rasters (subdatasets); give one of them")
    bands = dem.sizes.get("band", 1)
    if bands != 1:
        raise InputError(f"{path}: {bands} bands; a DEM has one band of elevations")
    # masked=True turned the file's nodata cells into NaN and moved the value into the encoding.
    fill = dem.encoding.get("_FillValue", dem.attrs.get("_FillValue"))
    file_nodata = None if fill is None else float(fill)
    dem = dem.squeeze("band", drop=True) if "band" in dem.dims else dem
    file_crs = dem.rio.crs
    horizontal, _ = resolve_crs(file_crs.to_wkt() if file_crs else None, crs, what=str(path))
    if file_crs is None:
        dem = dem.rio.write_crs(horizontal)
    transform = dem.rio.transform()
    if transform.b != 0 or transform.d != 0:
        raise InputError(f"{path}: rotated or sheared grid (affine {tuple(transform)[:6]}); warp it to a "
                         "north-up grid first (gdalwarp)")
    dx, dy = abs(transform.a), abs(transform.e)
    square = abs(dx - dy) <= SQUARE_TOLERANCE * max(dx, dy)
    warnings = [] if square else [f"cells are not square ({dx:g} x {dy:g} CRS units)"]
    if chunks is None or chunks is False:
        # Into memory as documented: a corrupt or truncated file fails here, not halfway into an import.
        from rasterio._err import CPLE_BaseError
        from rasterio.errors import RasterioError

        try:
            dem = dem.load()
        except (RasterioError, CPLE_BaseError) as exc:
            detail = str(exc.__cause__ or exc).splitlines()[0]  # rasterio chains GDAL's own message
            raise InputError(f"{path}: the raster's cells cannot be read, the file is corrupt or truncated "
                             f"({detail})") from exc
    dem = dem.astype("float32")
    dem.attrs.update(square_cells=bool(square), cell_size=(dx, dy), warnings=warnings, source=str(path),
                     units="m", file_nodata=file_nodata)
    dem.name = "elevation"
    return dem


def _indices(dem: "xr.DataArray", x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fractional (row, column) of each point in cell-centre units, and whether it is inside."""
    transform = dem.rio.transform()
    height, width = dem.sizes["y"], dem.sizes["x"]
    col = (x - transform.c) / transform.a
    row = (y - transform.f) / transform.e
    inside = (col >= 0) & (col <= width) & (row >= 0) & (row <= height) & np.isfinite(col) & np.isfinite(row)
    return row - 0.5, col - 0.5, inside


def _take(dem: "xr.DataArray", rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Values at integer (row, col) pairs, for in-memory or Dask-backed DEMs."""
    data = dem.transpose("y", "x").data
    if hasattr(data, "vindex"):  # Dask: one gather instead of computing the whole array
        return np.asarray(data.vindex[rows, cols].compute(), dtype=np.float64)
    return np.asarray(data, dtype=np.float64)[rows, cols]


def sample_dem(dem: "xr.DataArray", x: np.ndarray, y: np.ndarray, method: str = "bilinear") -> np.ndarray:
    """Elevations at points (same CRS as the DEM).

    Bilinear interpolation between the four surrounding cell centres,
    ``z = (1-t)(1-u) z00 + t(1-u) z01 + (1-t)u z10 + tu z11`` with t, u the fractional column and
    row offsets (exact for planar terrain). Neighbours without data are left out and the weights of
    the others renormalised, so a point near the edge of the data still gets a value; a point whose
    own cell has no data, or that lies outside the raster, gets NaN. Between the outermost cell
    centres and the raster edge the edge value is held. ``method="nearest"`` returns the value of
    the cell holding the point.

    Parameters
    ----------
    dem
        From ``read_dem``.
    x, y
        Point coordinates in the DEM's CRS.
    method
        ``"bilinear"`` or ``"nearest"``.

    Returns
    -------
    numpy.ndarray
        float64 elevations (m), NaN where unknown.
    """
    if method not in ("bilinear", "nearest"):
        raise InputError(f"unknown sampling method {method!r}; use 'bilinear' or 'nearest'")
    x = np.atleast_1d(np.asarray(x, dtype=np.float64))
    y = np.atleast_1d(np.asarray(y, dtype=np.float64))
    if x.shape != y.shape:
        raise InputError(f"x and y differ in shape: {x.shape} vs {y.shape}")
    out = np.full(x.shape, np.nan)
    row, col, inside = _indices(dem, x, y)
    if not inside.any():
        return out
    height, width = dem.sizes["y"], dem.sizes["x"]
    row, col = row[inside], col[inside]
    own_r = np.clip(np.floor(row + 0.5), 0, height - 1).astype(np.int64)
    own_c = np.clip(np.floor(col + 0.5), 0, width - 1).astype(np.int64)
    if method == "nearest":
        out[inside] = _take(dem, own_r, own_c)
        return out
    row = np.clip(row, 0, height - 1)
    col = np.clip(col, 0, width - 1)
    r0 = np.minimum(np.floor(row), max(height - 2, 0)).astype(np.int64)
    c0 = np.minimum(np.floor(col), max(width - 2, 0)).astype(np.int64)
    r1, c1 = np.minimum(r0 + 1, height - 1), np.minimum(c0 + 1, width - 1)
    u, t = row - r0, col - c0
    k = len(row)
    values = _take(dem, np.concatenate([r0, r0, r1, r1, own_r]), np.concatenate([c0, c1, c0, c1, own_c]))
    z = values[: 4 * k].reshape(4, k)
    w = np.stack([(1 - t) * (1 - u), t * (1 - u), (1 - t) * u, t * u])
    valid = np.isfinite(z)
    weight = np.where(valid, w, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        result = np.where(valid, w * np.where(valid, z, 0.0), 0.0).sum(axis=0) / weight
    result[(weight <= 0) | ~np.isfinite(values[4 * k:])] = np.nan
    out[inside] = result
    return out


def ground_elevation_for(frame: "gpd.GeoDataFrame", dem: "xr.DataArray", *, method: str = "point",
                         only_missing: bool = True) -> pd.Series:
    """Ground elevation of each building from a DEM.

    Parameters
    ----------
    frame
        Buildings (``read_buildings(...).frame``) in any CRS; points are reprojected to the DEM's.
    dem
        From ``read_dem``.
    method
        ``"point"``: bilinear value at a point inside the footprint (``point_on_surface``, which is
        the centroid for convex footprints and stays inside concave ones, as PostGIS'
        ``ST_PointOnSurface`` used by the loader); ``"min_vertex"``: the lowest value at the
        footprint's vertices (the lowest ground along the walls, e.g. where water would enter).
    only_missing
        Keep existing finite ``ground_elevation`` values and sample only the others.

    Returns
    -------
    pandas.Series
        float64 (m), indexed like ``frame``; NaN where the DEM has no data.
    """
    import shapely
    from pyproj import Transformer

    if frame.crs is None:
        raise InputError("the buildings have no CRS; cannot place them on the DEM")
    if method not in ("point", "min_vertex"):
        raise InputError(f"unknown ground method {method!r}; use 'point' or 'min_vertex'")
    result = pd.Series(np.nan, index=frame.index, name="ground_elevation", dtype="float64")
    todo = np.ones(len(frame), dtype=bool)
    if only_missing and "ground_elevation" in frame:
        existing = pd.to_numeric(frame["ground_elevation"], errors="coerce").to_numpy(dtype=float)
        result[:] = existing
        todo = ~np.isfinite(existing)
    if not todo.any():
        return result
    geoms = np.asarray(frame.geometry.values[todo], dtype=object)
    if method == "point":
        xy = shapely.get_coordinates(shapely.point_on_surface(geoms))
        owner = np.arange(len(geoms))
    else:
        parts, part_owner = shapely.get_parts(geoms, return_index=True)
        xy, ring_index = shapely.get_coordinates(shapely.get_exterior_ring(parts), return_index=True)
        owner = part_owner[ring_index]
    x, y = xy[:, 0], xy[:, 1]
    if not frame.crs.equals(dem.rio.crs.to_wkt()):
        x, y = Transformer.from_crs(frame.crs, dem.rio.crs.to_wkt(), always_xy=True).transform(x, y)
    z = sample_dem(dem, x, y)
    lowest = np.full(len(geoms), np.inf)
    np.fmin.at(lowest, owner, z)
    lowest[~np.isfinite(lowest)] = np.nan
    result.iloc[np.flatnonzero(todo)] = lowest
    return result
