"""Outage detection events (meter no-power / restoration, MultiSpeak-like) -> outages.

When meters report "no power", the twin infers the device that most likely operated: the deepest
switching device upstream of every reporting meter on a feeder (one meter alone: its own service
drop). The outage gets every customer downstream of that device. Restoration events restore
customers; when all are back the outage is restored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd
from sqlalchemy import Connection, text

from citytwin.errors import InputError

EVENT_TYPES = ("Outage", "Restoration", "NoResponse")


@dataclass(frozen=True)
class DetectionEvent:
    object_id: str          # a service point id or a building source id (the meter's premise)
    event_type: str
    event_time: datetime
    device_id: str | None = None
    device_type: str | None = None


def _switch_chain(topo, node: int) -> list[int]:
    """Switch edges from ``node`` up to its source, nearest first."""
    chain = []
    while node >= 0 and topo.parent[node] >= 0:
        edge = topo.parent_edge[node]
        if edge >= topo.n_sections:
            chain.append(int(edge))
        node = int(topo.parent[node])
    return chain


def infer_device(topo, service_points: list[int]) -> int | None:
    """The deepest switch edge upstream of all ``service_points`` (None if there is none)."""
    chains = [_switch_chain(topo, sp) for sp in service_points]
    if not chains or not all(chains):
        return None
    common = set(chains[0]).intersection(*map(set, chains[1:]))
    for edge in chains[0]:  # nearest first: the first common one is the deepest
        if edge in common:
            return edge
    return None


def _resolve_meters(conn: Connection, object_ids: list[str]) -> dict[str, str]:
    """object id -> service point id (accepts service point ids or building source ids)."""
    rows = conn.execute(text("""
        SELECT o AS object_id, coalesce(n.node_id, sc.node_id) AS node_id
        FROM unnest(CAST(:ids AS text[])) AS o
        LEFT JOIN grid_nodes n ON n.node_id = o AND n.kind = 'service_point'
        LEFT JOIN buildings b ON b.source_id = o
        LEFT JOIN service_connections sc ON sc.building_id = b.id
    """), {"ids": object_ids}).all()
    resolved = {r.object_id: r.node_id for r in rows if r.node_id}
    unknown = sorted(set(object_ids) - set(resolved))
    if unknown:
        raise InputError(f"unknown meters (neither service points nor buildings): {unknown[:10]}")
    return resolved


def process_events(conn: Connection, events: list[DetectionEvent]) -> dict:
    """Record events, then create/update outages from the meters now reporting out or restored.

    Returns counts, the ids of the outages touched, and (``outages_created``) those that are new.
    """
    from citytwin.db.grid import read_grid
    from citytwin.models.grid import outage_from_device
    from citytwin.models.grid.topology import Topology

    for event in events:
        if event.event_type not in EVENT_TYPES:
            raise InputError(f"outageEventType must be one of {list(EVENT_TYPES)}, got {event.event_type!r}")
    meters = _resolve_meters(conn, sorted({e.object_id for e in events}))
    new = 0
    for e in events:
        new += conn.execute(text("""
            INSERT INTO od_events (object_id, event_type, event_time, device_id, device_type)
            VALUES (:o, :t, :time, :d, :dt) ON CONFLICT DO NOTHING
        """), {"o": e.object_id, "t": e.event_type, "time": e.event_time, "d": e.device_id,
               "dt": e.device_type}).rowcount
    outs = [e for e in events if e.event_type == "Outage"]
    restorations = [e for e in events if e.event_type == "Restoration"]
    touched: list[int] = []
    created: list[int] = []
    if outs:
        grid = read_grid(conn)
        topo = Topology.from_grid(grid, "present")
        index = pd.Index(topo.node_ids)
        reported = pd.DataFrame({"node_id": [meters[e.object_id] for e in outs],
                                 "time": [e.event_time for e in outs]})
        reported["feeder"] = reported["node_id"].map(grid.nodes.set_index("node_id")["feeder"])
        for feeder, group in reported.groupby(reported["feeder"].fillna("unknown")):
            points = index.get_indexer(group["node_id"].unique())
            edge = infer_device(topo, list(points)) if len(points) > 1 else None
            if edge is not None:
                device = str(topo.edge_ids[edge])
                out = outage_from_device(grid, device, topo=topo)
                affected = out.service_points[["node_id", "customers"]]
            else:
                device = None
                affected = grid.nodes.loc[grid.nodes["node_id"].isin(group["node_id"]), ["node_id", "customers"]]
            outage_id, is_new = _upsert_outage(conn, str(feeder), device, affected, group["time"].min(), grid)
            touched.append(outage_id)
            if is_new:
                created.append(outage_id)
    if restorations:
        touched.extend(_restore(conn, [meters[e.object_id] for e in restorations],
                                max(e.event_time for e in restorations)))
    return {"events_received": len(events), "events_new": new, "outages": sorted(set(touched)),
            "outages_created": sorted(set(created))}


def _upsert_outage(conn: Connection, feeder: str, device: str | None, affected: pd.DataFrame, start: datetime,
                   grid) -> tuple[int, bool]:
    """The feeder's active unplanned outage, extended by ``affected`` (or a new one): (id, created)."""
    served = int(grid.nodes.loc[grid.nodes["feeder"] == feeder, "customers"].sum())
    existing = conn.execute(text("""
        SELECT id FROM outages WHERE kind = 'unplanned' AND feeder = :f
          AND status IN ('predicted', 'confirmed', 'partially_restored') ORDER BY start_time DESC LIMIT 1
    """), {"f": feeder}).scalar()
    switches = [device] if device else []
    if existing is None:
        outage_id = conn.execute(text("""
            INSERT INTO outages (status, kind, cause, start_time, original_customers_served, feeder, opened_switches)
            VALUES ('predicted', 'unplanned', 'unknown (detected by meters)', :start, :served, :f, :sw) RETURNING id
        """), {"start": start, "served": served, "f": feeder, "sw": switches}).scalar_one()
    else:
        outage_id = existing
        conn.execute(text("""
            UPDATE outages SET opened_switches = CASE WHEN cardinality(CAST(:sw AS text[])) > 0 THEN :sw
                ELSE opened_switches END, start_time = least(start_time, :start), updated_at = now()
            WHERE id = :id
        """), {"sw": switches, "start": start, "id": outage_id})
    rows = affected.assign(outage_id=outage_id)
    for row in rows.itertuples(index=False):
        conn.execute(text("""
            INSERT INTO outage_customers (outage_id, node_id, building_id, customers)
            VALUES (:o, :n, (SELECT building_id FROM service_connections WHERE node_id = :n ORDER BY building_id LIMIT 1), :c)
            ON CONFLICT (outage_id, node_id) DO NOTHING
        """), {"o": outage_id, "n": row.node_id, "c": int(row.customers)})
    _refresh_counts(conn, outage_id)
    return outage_id, existing is None


def _restore(conn: Connection, service_points: list[str], when: datetime) -> list[int]:
    ids = conn.execute(text("""
        UPDATE outage_customers c SET restored_at = :when, restored_by = 'repair',
            interruption_h = EXTRACT(EPOCH FROM (:when - o.start_time)) / 3600
        FROM outages o WHERE o.id = c.outage_id AND o.kind = 'unplanned' AND c.restored_at IS NULL
          AND o.status IN ('predicted', 'confirmed', 'partially_restored') AND c.node_id = ANY(:sps)
        RETURNING c.outage_id
    """), {"when": when, "sps": service_points}).scalars().all()
    for outage_id in set(ids):
        _refresh_counts(conn, outage_id, when)
    return sorted(set(ids))


def _refresh_counts(conn: Connection, outage_id: int, when: datetime | None = None) -> None:
    conn.execute(text("""
        UPDATE outages o SET customers_affected = s.affected, customers_restored = s.restored, updated_at = now(),
            status = CASE WHEN s.restored >= s.affected AND s.affected > 0 THEN 'restored'
                          WHEN s.restored > 0 THEN 'partially_restored' ELSE o.status END,
            end_time = CASE WHEN s.restored >= s.affected AND s.affected > 0 THEN coalesce(CAST(:when AS timestamptz), now())
                            ELSE o.end_time END,
            geom = coalesce(s.area, o.geom)
        FROM (SELECT sum(c.customers) AS affected,
                     coalesce(sum(c.customers) FILTER (WHERE c.restored_at IS NOT NULL), 0) AS restored,
                     ST_Multi(ST_Union(ST_Buffer(b.footprint, 15))) AS area
              FROM outage_customers c LEFT JOIN buildings b ON b.id = c.building_id WHERE c.outage_id = :id) s
        WHERE o.id = :id
    """), {"id": outage_id, "when": when})


def parse_events(payload: object) -> list[DetectionEvent]:
    """MultiSpeak-like JSON: ``{"events": [{"objectID", "eventTime", "outageEventType", ...}]}`` or a list."""
    items = payload.get("events") if isinstance(payload, dict) else payload
    if not isinstance(items, list) or not items:
        raise InputError("expected {'events': [...]} with at least one event")
    if len(items) > 10_000:
        raise InputError("at most 10,000 events per request")
    events = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise InputError(f"event {i} is not an object")
        try:
            when = datetime.fromisoformat(str(item["eventTime"]).replace("Z", "+00:00"))
            object_id = str(item["objectID"])
            event_type = str(item["outageEventType"])
        except KeyError as missing:
            raise InputError(f"event {i} lacks {missing}") from None
        except ValueError:
            raise InputError(f"event {i}: eventTime {item.get('eventTime')!r} is not RFC 3339") from None
        if when.tzinfo is None:
            raise InputError(f"event {i}: eventTime needs a time zone")
        events.append(DetectionEvent(object_id, event_type, when, item.get("outageDetectDeviceID"),
                                     item.get("outageDetectDeviceType")))
    return events
