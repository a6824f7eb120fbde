"""Twin-graph queries: who feeds whom, who serves what, what monitors what.

The graph's edges are derived, not stored twice: the grid's normal-state topology gives
substation -> feeder -> transformer -> service point -> building; ``things.asset_id`` gives sensor ->
asset; the buildings' ``district`` attribute gives building -> district.
"""

from __future__ import annotations

import pandas as pd
from sqlalchemy import Connection, text

from citytwin.errors import NotFoundError

# Uses whose loss of supply is critical (hospitals first, then schools and care).
CRITICAL_USES = ("hospital", "school")


def relationships(conn: Connection) -> pd.DataFrame:
    """Every edge of the twin graph: ``source, source_kind, relationship, target, target_kind``."""
    from citytwin.db.grid import read_grid
    from citytwin.models.grid import assignments

    grid = read_grid(conn)
    edges: list[pd.DataFrame] = []
    if len(grid.nodes):
        links = assignments(grid)
        for upper, lower, rel in (("substation", "feeder", "feeds"), ("feeder", "transformer", "feeds"),
                                  ("transformer", "service_point", "serves"),
                                  ("service_point", "building_id", "supplies")):
            pairs = links[[upper, lower]].dropna().drop_duplicates()
            edges.append(pd.DataFrame({"source": pairs[upper].astype(str), "source_kind": upper,
                                       "relationship": rel, "target": pairs[lower].astype(str),
                                       "target_kind": "building" if lower == "building_id" else lower}))
    sensors = pd.read_sql_query(text("SELECT name, asset_id FROM things WHERE asset_id IS NOT NULL"), conn)
    if len(sensors):
        edges.append(pd.DataFrame({"source": sensors["name"], "source_kind": "sensor",
                                   "relationship": "monitors",
                                   "target": sensors["asset_id"], "target_kind": "asset"}))
    districts = pd.read_sql_query(text("SELECT source_id, attributes->>'district' AS district FROM buildings "
                                       "WHERE attributes ? 'district'"), conn)
    if len(districts):
        edges.append(pd.DataFrame({"source": districts["source_id"], "source_kind": "building",
                                   "relationship": "liesIn", "target": districts["district"],
                                   "target_kind": "district"}))
    if not edges:
        return pd.DataFrame(columns=["source", "source_kind", "relationship", "target", "target_kind"])
    return pd.concat(edges, ignore_index=True)


def buildings_served_by(conn: Connection, asset_id: str) -> pd.DataFrame:
    """Every building downstream of an asset (substation, feeder, transformer, bus, switch, section).

    Downstream in the normal switch state: the buildings that lose their only path to a source when
    the asset is taken out (a switch opened, a node or section removed). This is topology, not
    protection: a fault on a section also trips the breaker or fuse above it and takes out more
    (:func:`citytwin.models.grid.outage` answers that). A feeder id stands for its whole feeder.

    Raises
    ------
    NotFoundError
        If ``asset_id`` is no node, section, switch or feeder of the grid.
    """
    from citytwin.db.grid import read_grid
    from citytwin.models.grid.topology import Topology

    grid = read_grid(conn)
    topo = Topology.from_grid(grid, "normal")
    node = topo.node_index().get_indexer([asset_id])[0]
    edge = topo.edge_index().get_indexer([asset_id])[0]
    if node >= 0 or edge >= 0:
        below = topo.unsupplied_mask(failed_nodes=[node] if node >= 0 else [],
                                     failed_sections=[edge] if edge >= 0 else []) & topo.energised
        points = set(topo.node_ids[below])
        source_ids = grid.connections.loc[grid.connections["node_id"].isin(points), "building_id"]
    else:
        from citytwin.models.grid import assignments

        links = assignments(grid)
        if asset_id not in set(links["feeder"].dropna()):
            raise NotFoundError(f"no grid asset or feeder {asset_id!r}")
        source_ids = links.loc[links["feeder"] == asset_id, "building_id"].dropna()
    frame = pd.read_sql_query(text("""
        SELECT b.id, b.source_id, b.use, b.height, coalesce(sc.customers, 0) AS customers
        FROM buildings b LEFT JOIN service_connections sc ON sc.building_id = b.id
        WHERE b.source_id = ANY(:ids) ORDER BY b.id
    """), conn, params={"ids": sorted(source_ids.astype(str).unique())})
    return frame


def critical_customers_behind(conn: Connection, asset_id: str) -> pd.DataFrame:
    """Buildings with critical uses (hospitals, schools) downstream of ``asset_id``.

    They lose supply when the asset opens or is taken out (see :func:`buildings_served_by`).
    """
    served = buildings_served_by(conn, asset_id)
    return served[served["use"].isin(CRITICAL_USES)].reset_index(drop=True)


def sensors_on(conn: Connection, feeder: str) -> pd.DataFrame:
    """Every sensor monitoring an asset on a feeder (or a building supplied by it)."""
    from citytwin.db.grid import read_grid
    from citytwin.models.grid import assignments

    grid = read_grid(conn)
    links = assignments(grid)
    if feeder not in set(links["feeder"].dropna()):
        raise NotFoundError(f"no feeder {feeder!r}")
    on_feeder = links[links["feeder"] == feeder]
    assets = set(on_feeder["service_point"].dropna()) | set(on_feeder["transformer"].dropna()) | \
        set(on_feeder["building_id"].dropna()) | \
        set(grid.nodes.loc[grid.nodes["feeder"] == feeder, "node_id"])
    assets |= set(on_feeder["substation"].dropna())
    return pd.read_sql_query(text("""
        SELECT t.id, t.name, t.asset_id, t.properties->>'kind' AS kind FROM things t
        WHERE t.asset_id = ANY(:assets) ORDER BY t.id
    """), conn, params={"assets": sorted(assets)})
