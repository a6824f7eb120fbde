"""Reading sensor tables: any OGR vector file with point geometry, or CSV with x/y (or lon/lat) columns."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pandas as pd

from citytwin.errors import InputError


def read_sensors(path: Path, *, crs: str | None = None) -> gpd.GeoDataFrame:
    """One row per datastream with a point location (see ``citytwin.db.sensors``)."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        table = pd.read_csv(path)
        xy = next(((x, y) for x, y in (("x", "y"), ("lon", "lat"), ("longitude", "latitude"))
                   if x in table.columns and y in table.columns), None)
        if xy is None:
            raise InputError(f"{path}: a sensor CSV needs x/y or lon/lat columns")
        if crs is None and xy[0] != "x":
            crs = "EPSG:4326"
        if crs is None:
            raise InputError(f"{path}: the CSV declares no CRS; pass --crs EPSG:n")
        return gpd.GeoDataFrame(table, geometry=gpd.points_from_xy(table[xy[0]], table[xy[1]]), crs=crs)
    try:
        import pyogrio

        frame = pyogrio.read_dataframe(path)
    except Exception as exc:  # pyogrio raises DataSourceError and friends for unreadable files
        raise InputError(f"{path}: not a readable vector file ({exc})") from exc
    if frame.crs is None:
        if crs is None:
            raise InputError(f"{path}: no CRS in file; pass --crs EPSG:n")
        frame = frame.set_crs(crs)
    return frame
