"""A short summary of what the twin holds, for the CLI and the API."""

from __future__ import annotations

from sqlalchemy import Connection, text

from citytwin.db.twin import get_twin

COUNTS = {
    "buildings": "SELECT count(*) FROM buildings",
    "buildings_lod2": "SELECT count(*) FROM buildings WHERE lod2 IS NOT NULL",
    "grid_nodes": "SELECT count(*) FROM grid_nodes",
    "substations": "SELECT count(*) FROM grid_nodes WHERE kind = 'substation'",
    "transformers": "SELECT count(*) FROM grid_nodes WHERE kind = 'transformer'",
    "service_points": "SELECT count(*) FROM grid_nodes WHERE kind = 'service_point'",
    "line_sections": "SELECT count(*) FROM grid_sections",
    "switches": "SELECT count(*) FROM grid_switches",
    "normally_open_ties": "SELECT count(*) FROM grid_switches WHERE normal_state = 'open'",
    "feeders": "SELECT count(*) FROM feeders",
    "customers": "SELECT coalesce(sum(customers), 0) FROM service_connections",
    "terrain_rasters": "SELECT count(*) FROM terrain",
    "things": "SELECT count(*) FROM things",
    "datastreams": "SELECT count(*) FROM datastreams",
    "simulation_runs": "SELECT count(*) FROM simulation_runs",
}


def twin_summary(conn: Connection) -> dict:
    """Counts of everything the twin holds, its CRS and the buildings' extent."""
    twin = get_twin(conn)
    out: dict = {"name": twin.name if twin else None, "crs": twin.crs if twin else None,
                 "vertical_crs": twin.vertical_crs if twin else None}
    out["counts"] = {key: int(conn.execute(text(sql)).scalar() or 0) for key, sql in COUNTS.items()}
    uses = conn.execute(text("SELECT use, count(*) FROM buildings GROUP BY use ORDER BY 2 DESC")).all()
    out["buildings_by_use"] = {use: int(n) for use, n in uses}
    extent = conn.execute(text("SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) "
                               "FROM (SELECT ST_Extent(footprint) AS e FROM buildings) s")).first()
    out["extent"] = [float(v) for v in extent] if extent and extent[0] is not None else None
    return out
