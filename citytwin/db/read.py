"""Reading the twin back as GeoDataFrames (for models, the tiler and the analysts' API)."""

from __future__ import annotations

import geopandas as gpd
import pandas as pd
import shapely
from sqlalchemy import Connection, text

from citytwin.db.twin import require_twin

BUILDING_COLUMNS = ("id", "source", "source_id", "ground_elevation", "height", "floors", "use", "year_built")


def read_buildings(conn: Connection, *, bbox: tuple[float, float, float, float] | None = None,
                   bbox_crs: str = "EPSG:4326", with_lod2: bool = False, with_attributes: bool = False,
                   limit: int | None = None) -> gpd.GeoDataFrame:
    """Buildings as a GeoDataFrame in the twin's CRS; ``bbox`` (minx, miny, maxx, maxy) in ``bbox_crs``."""
    twin = require_twin(conn)
    columns = list(BUILDING_COLUMNS)
    select = [f"b.{c}" for c in columns] + ["ST_AsBinary(b.footprint) AS wkb"]
    if with_lod2:
        select.append("ST_AsBinary(b.lod2) AS lod2_wkb")
    if with_attributes:
        select.append("b.attributes")
    where, params = [], {}
    if bbox is not None:
        where.append("b.footprint && ST_Transform(ST_MakeEnvelope(:x0, :y0, :x1, :y1, :bsrid), :srid)")
        from pyproj import CRS

        params.update(x0=bbox[0], y0=bbox[1], x1=bbox[2], y1=bbox[3], bsrid=CRS.from_user_input(bbox_crs).to_epsg(),
                      srid=twin.srid)
    sql = f"SELECT {', '.join(select)} FROM buildings b"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY b.id"
    if limit is not None:
        sql += " LIMIT :limit"
        params["limit"] = int(limit)
    frame = pd.read_sql_query(text(sql), conn, params=params)
    geometry = shapely.from_wkb(frame.pop("wkb").to_numpy())
    if with_lod2:
        lod2 = frame.pop("lod2_wkb")
        frame["lod2"] = shapely.from_wkb(lod2.where(lod2.notna(), None).to_numpy())
    frame["floors"] = frame["floors"].astype("Int64")
    frame["year_built"] = frame["year_built"].astype("Int64")
    return gpd.GeoDataFrame(frame, geometry=geometry, crs=twin.crs)


def read_grid_assets(conn: Connection) -> gpd.GeoDataFrame:
    """Grid nodes with a location, as points in the twin's CRS (for flood sampling and maps)."""
    twin = require_twin(conn)
    frame = pd.read_sql_query(text("""
        SELECT node_id, kind, name, feeder, customers, critical_depth_m, ST_AsBinary(geom) AS wkb
        FROM grid_nodes WHERE geom IS NOT NULL ORDER BY node_id
    """), conn)
    geometry = shapely.from_wkb(frame.pop("wkb").to_numpy())
    return gpd.GeoDataFrame(frame, geometry=geometry, crs=twin.crs)
