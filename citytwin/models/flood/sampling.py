"""Flood depth and arrival time at assets: the link from the flood grid to the outage model."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from citytwin.errors import InputError

from .validate import grid_of, horizontal_crs, same_crs


def sample(result: xr.Dataset, features: Any) -> pd.DataFrame:
    """Maximum depth and arrival time of a flood run at points, lines and polygons.

    Which cells an asset "sees":

    * a point: the cell it lies in;
    * a polygon: the cells whose centre it covers; one smaller than a cell: the cell of its
      centroid;
    * a line: the cells whose centre lies within half a cell of it.

    When none of those cells can hold water (the asset sits on a building, which is a wall in the
    model, or on nodata) the cells around it are used instead: those whose centre lies within one
    cell size of the geometry -- for a building footprint, the water against its walls.

    Parameters
    ----------
    result : xarray.Dataset
        The output of :func:`citytwin.models.flood.simulate`.
    features : geopandas.GeoDataFrame / GeoSeries, or pandas.DataFrame with ``x``, ``y`` columns
        The assets, in the result's CRS.

    Returns
    -------
    pandas.DataFrame
        Indexed like ``features``: ``max_depth`` (m, maximum over the cells), ``arrival_time`` (s,
        earliest over the cells; NaN when the water never reached the threshold), ``cells`` (how
        many cells were used) and ``around`` (True when the surrounding cells were used). Assets
        off the grid get NaN and 0 cells.
    """
    import shapely

    geoms, index = _geometries(result, features)
    grid = grid_of(result["max_depth"])
    max_depth = np.asarray(result["max_depth"].values, dtype="float64")
    arrival = np.asarray(result["arrival_time"].values, dtype="float64")
    open_ = np.isfinite(max_depth)
    n = len(geoms)
    feat, rows, cols = _candidates(geoms, grid, pad=grid.dx)
    cx = grid.transform.c + (cols + 0.5) * grid.transform.a
    cy = grid.transform.f + (rows + 0.5) * grid.transform.e
    kinds = shapely.get_type_id(geoms)
    polygon = np.isin(kinds, (3, 6))
    line = np.isin(kinds, (1, 2, 5))
    g = geoms[feat]
    centres = shapely.points(cx, cy)
    distance = shapely.distance(g, centres)
    covered = np.zeros(len(feat), dtype=bool)
    covered[polygon[feat]] = shapely.contains_xy(g[polygon[feat]], cx[polygon[feat]], cy[polygon[feat]])
    covered |= line[feat] & (distance <= 0.5 * grid.dx)
    # Points, and polygons too small to cover a cell centre: the cell holding the point / centroid.
    has_cover = np.bincount(feat[covered], minlength=n) > 0
    anchor = shapely.centroid(geoms)
    arow, acol, _ = grid.cell_of(shapely.get_x(anchor), shapely.get_y(anchor))
    use_anchor = ~has_cover[feat] & ~line[feat]
    covered |= use_anchor & (rows == arow[feat]) & (cols == acol[feat])
    around = distance <= grid.dx
    wet = open_[rows, cols]
    direct = np.bincount(feat[covered & wet], minlength=n) > 0
    chosen = np.where(direct[feat], covered, around) & wet
    depth = np.full(n, np.nan)
    first = np.full(n, np.nan)
    np.fmax.at(depth, feat[chosen], max_depth[rows[chosen], cols[chosen]])
    np.fmin.at(first, feat[chosen], arrival[rows[chosen], cols[chosen]])
    counts = np.bincount(feat[chosen], minlength=n)
    return pd.DataFrame({"max_depth": depth, "arrival_time": first, "cells": counts,
                         "around": (~direct) & (counts > 0)}, index=index)


def _geometries(result: xr.Dataset, features: Any) -> tuple[np.ndarray, pd.Index]:
    import geopandas as gpd
    import shapely

    if not isinstance(result, xr.Dataset) or not {"max_depth", "arrival_time"} <= set(result.data_vars):
        raise InputError("sample: result must be the Dataset returned by flood.simulate "
                         "(max_depth, arrival_time)")
    crs = result.rio.crs
    if isinstance(features, (gpd.GeoDataFrame, gpd.GeoSeries)):
        if features.crs is not None and crs is not None and not same_crs(features.crs, crs):
            raise InputError(f"sample: features are in {horizontal_crs(features.crs).to_string()}, "
                             f"the flood result "
                             f"in {horizontal_crs(crs).to_string()}; reproject the features (to_crs)")
        series = features.geometry if isinstance(features, gpd.GeoDataFrame) else features
        geoms = np.asarray(series, dtype=object)
        if any(g is None or g.is_empty for g in geoms):
            raise InputError("sample: features with empty or missing geometry")
        return geoms, features.index
    if isinstance(features, pd.DataFrame) and {"x", "y"} <= set(features.columns):
        return shapely.points(features["x"].to_numpy(float), features["y"].to_numpy(float)), features.index
    raise InputError("sample: features must be a GeoDataFrame/GeoSeries or a DataFrame with x and y columns")


def _candidates(geoms: np.ndarray, grid, pad: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(feature, row, col) of every cell in each feature's bounding box grown by ``pad``."""
    import shapely

    b = shapely.bounds(geoms)
    inv = ~grid.transform
    c_a, r_a = inv * (b[:, 0] - pad, b[:, 1] - pad)
    c_b, r_b = inv * (b[:, 2] + pad, b[:, 3] + pad)
    ny, nx = grid.shape
    r0 = np.clip(np.floor(np.minimum(r_a, r_b)), 0, ny).astype("int64")
    r1 = np.clip(np.floor(np.maximum(r_a, r_b)) + 1, 0, ny).astype("int64")
    c0 = np.clip(np.floor(np.minimum(c_a, c_b)), 0, nx).astype("int64")
    c1 = np.clip(np.floor(np.maximum(c_a, c_b)) + 1, 0, nx).astype("int64")
    nr = np.maximum(r1 - r0, 0)
    nc = np.maximum(c1 - c0, 0)
    sizes = nr * nc
    feat = np.repeat(np.arange(len(geoms)), sizes)
    offset = np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    width = np.repeat(nc, sizes)
    rows = np.repeat(r0, sizes) + offset // np.maximum(width, 1)
    cols = np.repeat(c0, sizes) + offset % np.maximum(width, 1)
    return feat, rows, cols
