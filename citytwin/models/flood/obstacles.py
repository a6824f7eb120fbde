"""Obstacles (building footprints) as blocked cells of the DEM grid."""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from citytwin.errors import InputError

from .validate import Grid, check_on_grid, grid_of, horizontal_crs, same_crs


def rasterize_obstacles(footprints: Any, dem: xr.DataArray) -> xr.DataArray:
    """Blocked cells of ``dem``'s grid: those whose centre lies inside a footprint polygon.

    Water flows around blocked cells (they become walls). A footprint smaller than a cell may
    block nothing; the centre rule keeps a building from closing a street narrower than a cell
    beside it.

    Parameters
    ----------
    footprints : geopandas.GeoDataFrame
        Polygons or multipolygons, in the DEM's CRS (compared horizontally: EPSG:7415 matches
        EPSG:28992).
    dem : xarray.DataArray
        The DEM (y, x) the mask is made for.

    Returns
    -------
    xarray.DataArray
        bool (y, x) on the DEM grid, True = blocked, with the DEM's CRS.

    Raises
    ------
    InputError
        Not a GeoDataFrame, missing or different CRS, non-polygon geometries.
    """
    grid = grid_of(dem)
    return xr.DataArray(_mask(footprints, grid), dims=(grid.y_dim, grid.x_dim),
                        coords={grid.y_dim: grid.y, grid.x_dim: grid.x},
                        name="obstacle").rio.write_crs(grid.crs)


def _mask(footprints: Any, grid: Grid) -> np.ndarray:
    import geopandas as gpd
    from rasterio.features import rasterize

    if not isinstance(footprints, gpd.GeoDataFrame | gpd.GeoSeries):
        raise InputError(f"obstacles: expected a GeoDataFrame of footprints or a boolean DataArray, got "
                         f"{type(footprints).__name__}")
    if footprints.crs is None:
        raise InputError("obstacles: the footprints have no CRS; set it (set_crs) to the DEM's "
                         f"{grid.crs.to_string()}")
    if not same_crs(footprints.crs, grid.crs):
        raise InputError(f"obstacles: CRS {horizontal_crs(footprints.crs).to_string()} differs from "
                         f"the DEM's "
                         f"{grid.crs.to_string()}; reproject the footprints (to_crs)")
    geoms = footprints.geometry if isinstance(footprints, gpd.GeoDataFrame) else footprints
    geoms = geoms[~(geoms.isna() | geoms.is_empty)]
    if len(geoms) == 0:
        return np.zeros(grid.shape, dtype=bool)
    kinds = set(geoms.geom_type)
    if not kinds <= {"Polygon", "MultiPolygon"}:
        other = sorted(kinds - {"Polygon", "MultiPolygon"})
        raise InputError(f"obstacles: footprints must be polygons, found {other}")
    return rasterize(((g, 1) for g in geoms), out_shape=grid.shape, transform=grid.transform, fill=0,
                     all_touched=False, dtype="uint8").astype(bool)


def obstacle_mask(obstacles: Any, grid: Grid) -> np.ndarray | Any | None:
    """Blocked cells from a footprint GeoDataFrame or a boolean DataArray on the DEM grid."""
    if obstacles is None:
        return None
    if isinstance(obstacles, xr.DataArray):
        field = check_on_grid(obstacles, grid, "obstacles")
        if field.dtype != bool:
            raise InputError(f"obstacles: a DataArray must be boolean (True = blocked), got {field.dtype}")
        return field.data
    return _mask(obstacles, grid)
