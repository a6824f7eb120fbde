"""The twin's terrain store: DEM files referenced from the database, read back as xarray."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import shapely
from sqlalchemy import Connection, Engine, text

from citytwin.db.buildings import ImportSummary, log_import
from citytwin.db.copy import copy_frame
from citytwin.db.twin import get_twin, init_twin
from citytwin.errors import NotFoundError


def register_dem(engine: Engine, path: Path, *, name: str | None = None, crs: str | None = None,
                 twin_name: str = "citytwin", sample_buildings: bool = True) -> ImportSummary:
    """Reference a DEM GeoTIFF from the twin and fill ``ground_elevation`` where buildings lack it.

    ``terrain.nodata`` records the nodata value the file declares (NULL when it declares none);
    cells holding it are no data when sampling, so a building over them keeps a NULL ground.
    """
    from pyproj import CRS, Transformer

    from citytwin.io.dem import read_dem

    path = Path(path).resolve()
    dem = read_dem(path, crs=crs)
    dem_crs = dem.rio.crs.to_string()
    name = name or path.stem
    summary = ImportSummary(kind="dem", source=name, path=str(path), crs=dem_crs)
    xres, yres = (abs(v) for v in dem.rio.resolution())
    left, bottom, right, top = dem.rio.bounds()
    with engine.begin() as conn:
        twin = get_twin(conn) or init_twin(conn, twin_name, dem_crs)
        corners_x, corners_y = np.array([left, right, right, left]), np.array([bottom, bottom, top, top])
        if CRS.from_user_input(dem_crs).to_epsg() != twin.srid:
            corners_x, corners_y = Transformer.from_crs(dem_crs, twin.crs, always_xy=True).transform(corners_x, corners_y)
        extent = shapely.Polygon(np.column_stack([corners_x, corners_y]))
        conn.execute(text("""
            INSERT INTO terrain (name, path, crs, cell_size, width, height, nodata, extent)
            VALUES (:name, :path, :crs, :cell, :w, :h, :nodata, ST_GeomFromText(:extent, :srid))
            ON CONFLICT (name) DO UPDATE SET path = EXCLUDED.path, crs = EXCLUDED.crs,
                cell_size = EXCLUDED.cell_size, width = EXCLUDED.width, height = EXCLUDED.height,
                nodata = EXCLUDED.nodata, extent = EXCLUDED.extent, created_at = now()
        """), {"name": name, "path": str(path), "crs": dem_crs, "cell": float(max(xres, yres)),
               "w": int(dem.sizes["x"]), "h": int(dem.sizes["y"]), "nodata": dem.attrs.get("file_nodata"),
               "extent": extent.wkt, "srid": twin.srid})
        summary.imported = 1
        if sample_buildings:
            summary.updated = fill_ground_elevation(conn, dem, twin.crs)
        log_import(conn, summary)
    return summary


def fill_ground_elevation(conn: Connection, dem, twin_crs: str) -> int:
    """Sample the DEM at the footprint centroid of every building lacking a ground elevation."""
    import geopandas as gpd

    from citytwin.io.dem import sample_dem

    rows = pd.read_sql_query(text("""
        SELECT id, ST_X(ST_PointOnSurface(footprint)) AS x, ST_Y(ST_PointOnSurface(footprint)) AS y
        FROM buildings WHERE ground_elevation IS NULL
    """), conn)
    if rows.empty:
        return 0
    points = gpd.GeoSeries(gpd.points_from_xy(rows["x"], rows["y"]), crs=twin_crs).to_crs(dem.rio.crs)
    rows["z"] = sample_dem(dem, points.x.to_numpy(), points.y.to_numpy())
    rows = rows[np.isfinite(rows["z"])]
    conn.execute(text("CREATE TEMP TABLE staging_ground (id bigint, z double precision) ON COMMIT DROP"))
    copy_frame(conn, "staging_ground", rows, ["id", "z"])
    return conn.execute(text("UPDATE buildings b SET ground_elevation = s.z FROM staging_ground s "
                             "WHERE b.id = s.id")).rowcount


def terrain_path(conn: Connection, name: str | None = None) -> Path:
    """The file of the named DEM, or of the most recent one."""
    query = "SELECT path FROM terrain " + ("WHERE name = :name " if name else "") + "ORDER BY created_at DESC LIMIT 1"
    row = conn.execute(text(query), {"name": name}).first()
    if row is None:
        raise NotFoundError(f"no terrain named {name!r} in the twin" if name else
                            "the twin has no terrain: run `citytwin import dem PATH` first")
    return Path(row[0])
