"""Loading a grid (:class:`citytwin.models.grid.tables.GridTables`) into the twin, and reading it back.

One transaction per import. Re-importing the same source replaces that source's grid (ids are kept,
so results and outages that reference them stay meaningful); ids owned by another source conflict.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import shapely
from pyproj import CRS, Transformer
from sqlalchemy import Connection, Engine, text

from citytwin.db.buildings import ImportSummary, log_import
from citytwin.db.copy import copy_frame, hex_ewkb
from citytwin.db.twin import get_twin, init_twin
from citytwin.errors import ConflictError, InputError
from citytwin.models.grid.tables import (CONNECTION_COLUMNS, NODE_COLUMNS, OPTIONAL_COLUMNS,
                                         SECTION_COLUMNS, SWITCH_COLUMNS, GridTables)


def _reprojected_points(nodes: pd.DataFrame, grid_crs: str | None, srid: int | None) -> np.ndarray:
    has_xy = nodes["x"].notna() & nodes["y"].notna()
    geoms = np.full(len(nodes), None, dtype=object)
    if not has_xy.any():
        return geoms
    if grid_crs is None or srid is None:
        raise InputError("the grid has coordinates but no CRS; pass --crs EPSG:n")
    x, y = nodes.loc[has_xy, "x"].to_numpy(), nodes.loc[has_xy, "y"].to_numpy()
    if CRS.from_user_input(grid_crs).to_epsg() != srid:
        x, y = Transformer.from_crs(grid_crs, f"EPSG:{srid}", always_xy=True).transform(x, y)
    geoms[has_xy.to_numpy()] = shapely.points(x, y)
    return geoms


def _check_foreign_ids(conn: Connection, table: str, key: str, ids: pd.Series, source: str) -> None:
    clash = conn.execute(
        text(f"SELECT {key}, source FROM {table} WHERE {key} = ANY(:ids) AND source <> :source LIMIT 5"),
        {"ids": list(ids.astype(str)), "source": source},
    ).all()
    if clash:
        names = ", ".join(f"{row[0]!r} (from {row[1]!r})" for row in clash)
        raise ConflictError(f"grid ids already belong to another source: {names}; import under that "
                            f"source name or rename the elements")


def _choose_twin_crs(conn: Connection, grid: GridTables, twin_name: str) -> int | None:
    twin = get_twin(conn)
    if twin is not None:
        return twin.srid
    if grid.crs is None or grid.nodes["x"].isna().all():
        return None  # a topology-only grid (e.g. RBTS) needs no CRS
    parsed = CRS.from_user_input(grid.crs)
    crs = grid.crs
    if not parsed.is_projected:
        import geopandas as gpd

        from citytwin.io.crs import choose_metric_crs

        points = gpd.GeoDataFrame(geometry=gpd.points_from_xy(grid.nodes["x"], grid.nodes["y"]), crs=grid.crs)
        crs = choose_metric_crs(points.dropna())
    return init_twin(conn, twin_name, crs).srid


def load_grid(engine: Engine, grid: GridTables, *, source: str, path: str,
              twin_name: str = "citytwin") -> ImportSummary:
    """Replace ``source``'s grid with ``grid``; connect service points to buildings by source id."""
    from citytwin.models.grid.validate import validate_grid

    validate_grid(grid)
    summary = ImportSummary(kind="grid", source=source, path=path, crs=grid.crs or "")
    with engine.begin() as conn:
        _check_foreign_ids(conn, "grid_nodes", "node_id", grid.nodes["node_id"], source)
        _check_foreign_ids(conn, "grid_sections", "section_id", grid.sections["section_id"], source)
        _check_foreign_ids(conn, "grid_switches", "switch_id", grid.switches["switch_id"], source)
        srid = _choose_twin_crs(conn, grid, twin_name)
        summary.crs = f"EPSG:{srid}" if srid else ""
        existing = conn.execute(text("SELECT count(*) FROM grid_nodes WHERE source = :s"), {"s": source}).scalar()
        for table in ("grid_switches", "grid_sections", "grid_nodes"):
            conn.execute(text(f"DELETE FROM {table} WHERE source = :s"), {"s": source})

        feeders = pd.concat([grid.nodes["feeder"], grid.sections["feeder"], grid.switches["feeder"]]).dropna().unique()
        if len(feeders):
            conn.execute(text("INSERT INTO feeders (feeder_id) SELECT unnest(CAST(:ids AS text[])) "
                              "ON CONFLICT DO NOTHING"), {"ids": [str(f) for f in feeders]})
        nodes = grid.nodes.copy()
        nodes["geom"] = hex_ewkb(_reprojected_points(nodes, grid.crs, srid), srid or 0)
        nodes["source"] = source
        node_cols = [c for c in NODE_COLUMNS if c not in ("x", "y")] + ["geom", "source"] + _optional(nodes)
        copy_frame(conn, "grid_nodes", nodes, node_cols)

        sections = grid.sections.copy()
        sections["geom"] = _section_geoms(sections, grid.crs, srid)
        sections["source"] = source
        copy_frame(conn, "grid_sections", sections, list(SECTION_COLUMNS) + ["geom", "source"] + _optional(sections))

        switches = grid.switches.copy()
        switches["source"] = source
        copy_frame(conn, "grid_switches", switches, list(SWITCH_COLUMNS) + ["source"] + _optional(switches))
        conn.execute(text("""
            UPDATE grid_switches s SET geom = n.geom FROM grid_nodes n
            WHERE s.source = :s AND n.node_id = s.from_node AND s.geom IS NULL
        """), {"s": source})

        summary.imported = len(grid.nodes) + len(grid.sections) + len(grid.switches)
        summary.updated = int(existing or 0)
        summary.rejected = _load_connections(conn, grid.connections, summary)
        log_import(conn, summary)
    return summary


def _optional(frame: pd.DataFrame) -> list[str]:
    """Optional GridTables columns present in ``frame`` (stored when given)."""
    return [c for c in OPTIONAL_COLUMNS if c in frame.columns]


def _section_geoms(sections: pd.DataFrame, grid_crs: str | None, srid: int | None) -> np.ndarray:
    if "geometry" not in sections.columns or srid is None:
        return np.full(len(sections), None, dtype=object)
    geoms = np.asarray(sections["geometry"].values, dtype=object)
    if grid_crs and CRS.from_user_input(grid_crs).to_epsg() != srid:
        import geopandas as gpd

        geoms = gpd.GeoSeries(geoms, crs=grid_crs).to_crs(epsg=srid).values
    return hex_ewkb(geoms, srid)


def _load_connections(conn: Connection, connections: pd.DataFrame, summary: ImportSummary) -> int:
    """Link service points to buildings by the building's source id; report the unmatched."""
    if connections.empty:
        return 0
    conn.execute(text("CREATE TEMP TABLE staging_connections (building_id text, node_id text, customers integer) "
                      "ON COMMIT DROP"))
    copy_frame(conn, "staging_connections", connections, list(CONNECTION_COLUMNS))
    conn.execute(text("""
        DELETE FROM service_connections sc USING staging_connections s
        WHERE sc.node_id = s.node_id
    """))
    linked = conn.execute(text("""
        INSERT INTO service_connections (building_id, node_id, customers)
        SELECT DISTINCT ON (b.id, s.node_id) b.id, s.node_id, s.customers
        FROM staging_connections s JOIN buildings b ON b.source_id = s.building_id
        ON CONFLICT (building_id, node_id) DO UPDATE SET customers = EXCLUDED.customers
    """)).rowcount
    unmatched = len(connections) - linked
    if unmatched > 0:
        summary.warnings.append(f"{unmatched} service connections name buildings not in the twin")
    return max(unmatched, 0)


def read_grid(conn: Connection) -> GridTables:
    """The twin's grid as GridTables (coordinates in the twin's CRS)."""
    twin = get_twin(conn)
    node_cols = ", ".join(c for c in NODE_COLUMNS if c not in ("x", "y"))
    nodes = pd.read_sql_query(text(f"SELECT {node_cols}, component_class, ST_X(geom) AS x, ST_Y(geom) AS y "
                                   "FROM grid_nodes ORDER BY node_id"), conn)
    sections = pd.read_sql_query(text(f"SELECT {', '.join(SECTION_COLUMNS)}, component_class FROM grid_sections "
                                      "ORDER BY section_id"), conn)
    switches = pd.read_sql_query(text(f"SELECT {', '.join(SWITCH_COLUMNS)}, component_class FROM grid_switches "
                                      "ORDER BY switch_id"), conn)
    connections = pd.read_sql_query(text("""
        SELECT b.source_id AS building_id, sc.node_id, sc.customers
        FROM service_connections sc JOIN buildings b ON b.id = sc.building_id ORDER BY sc.node_id
    """), conn)
    return GridTables(nodes=nodes, sections=sections, switches=switches, connections=connections,
                      crs=twin.crs if twin else None, name=twin.name if twin else "grid")
