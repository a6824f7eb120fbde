"""Outage records in the CIM / public outage-feed vocabulary: read, filter, update.

Field names follow what outage-management systems and outage maps exchange (IEC 61968 ``Outage``:
actualPeriod, estimatedPeriod = ETR, customersRestored, originalCustomersServed; outage feeds: id,
start_time, etr, etr_confidence, cause, customers affected).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

from sqlalchemy import Connection, text

from citytwin.errors import InputError, NotFoundError

STATUSES = ("predicted", "confirmed", "partially_restored", "restored", "closed")
KINDS = ("unplanned", "planned", "simulated")
CONFIDENCES = ("low", "medium", "high")
# Allowed status moves: an outage only moves forward (or is confirmed from predicted).
NEXT_STATUS = {
    "predicted": {"confirmed", "partially_restored", "restored", "closed"},
    "confirmed": {"partially_restored", "restored", "closed"},
    "partially_restored": {"restored", "closed"},
    "restored": {"closed"},
    "closed": set(),
}
FIELDS = """o.id, o.status, o.kind, o.cause, o.start_time, o.etr, o.etr_confidence, o.end_time,
    o.customers_affected, o.customers_restored, o.original_customers_served, o.feeder, o.faulted_assets,
    o.opened_switches, o.switching_plan, o.run_id, o.created_at, o.updated_at,
    ST_AsGeoJSON(ST_Transform(o.geom, 4326), 7) AS geom"""


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def outage_feature(row) -> dict:
    m = row._mapping
    properties = {
        "id": m["id"], "status": m["status"], "kind": m["kind"], "cause": m["cause"],
        "start_time": _iso(m["start_time"]), "etr": _iso(m["etr"]), "etr_confidence": m["etr_confidence"],
        "end_time": _iso(m["end_time"]), "customers_affected": m["customers_affected"],
        "customers_restored": m["customers_restored"], "original_customers_served": m["original_customers_served"],
        "feeder": m["feeder"], "faulted_assets": list(m["faulted_assets"] or []),
        "opened_switches": list(m["opened_switches"] or []), "switching_plan": m["switching_plan"],
        "run_id": m["run_id"], "updated_at": _iso(m["updated_at"]),
    }
    geometry = json.loads(m["geom"]) if m["geom"] else None
    return {"type": "Feature", "id": m["id"], "geometry": geometry, "properties": properties}


def list_outages(conn: Connection, *, status: str | None = None, kind: str | None = None,
                 bbox: tuple[float, float, float, float] | None = None, since: datetime | None = None,
                 limit: int = 1000) -> list[dict]:
    where, params = ["TRUE"], {"limit": limit}
    if status is not None:
        if status not in STATUSES:
            raise InputError(f"status must be one of {list(STATUSES)}, got {status!r}")
        where.append("o.status = :status")
        params["status"] = status
    if kind is not None:
        if kind not in KINDS:
            raise InputError(f"kind must be one of {list(KINDS)}, got {kind!r}")
        where.append("o.kind = :kind")
        params["kind"] = kind
    if bbox is not None:
        where.append("o.geom && ST_Transform(ST_MakeEnvelope(:x0, :y0, :x1, :y1, 4326), ST_SRID(o.geom))")
        params.update(x0=bbox[0], y0=bbox[1], x1=bbox[2], y1=bbox[3])
    if since is not None:
        where.append("(o.updated_at >= :since OR o.start_time >= :since)")
        params["since"] = since
    rows = conn.execute(text(f"SELECT {FIELDS} FROM outages o WHERE {' AND '.join(where)} "
                             "ORDER BY o.start_time DESC, o.id DESC LIMIT :limit"), params).all()
    return [outage_feature(r) for r in rows]


def get_outage(conn: Connection, outage_id: int) -> dict:
    row = conn.execute(text(f"SELECT {FIELDS} FROM outages o WHERE o.id = :id"), {"id": outage_id}).first()
    if row is None:
        raise NotFoundError(f"no outage {outage_id}")
    return outage_feature(row)


def outage_customers(conn: Connection, outage_id: int) -> list[dict]:
    get_outage(conn, outage_id)
    rows = conn.execute(text("""
        SELECT c.node_id AS service_point, c.building_id, b.source_id AS building_source_id, c.customers,
               c.interruption_h, c.restored_by, c.restored_at
        FROM outage_customers c LEFT JOIN buildings b ON b.id = c.building_id
        WHERE c.outage_id = :id ORDER BY c.node_id
    """), {"id": outage_id}).all()
    return [{**r._mapping, "restored_at": _iso(r.restored_at)} for r in rows]


def outage_summary(conn: Connection) -> dict:
    rows = conn.execute(text("""
        SELECT status, kind, count(*) AS outages, coalesce(sum(customers_affected), 0) AS affected,
               coalesce(sum(customers_restored), 0) AS restored
        FROM outages GROUP BY status, kind ORDER BY status, kind
    """)).all()
    active = [r for r in rows if r.status in ("predicted", "confirmed", "partially_restored")]
    served = conn.execute(text("SELECT coalesce(sum(customers), 0) FROM service_connections")).scalar()
    return {
        "active_outages": sum(r.outages for r in active),
        "customers_out": int(sum(r.affected - r.restored for r in active)),
        "customers_served": int(served or 0),
        "by_status_and_kind": [dict(r._mapping) for r in rows],
        "as_of": datetime.now(timezone.utc).isoformat(),
    }


def update_outage(conn: Connection, outage_id: int, *, status: str | None, etr: datetime | None,
                  etr_confidence: str | None) -> dict:
    current = get_outage(conn, outage_id)["properties"]
    sets, params = ["updated_at = now()"], {"id": outage_id}
    if status is not None and status != current["status"]:
        if status not in STATUSES:
            raise InputError(f"status must be one of {list(STATUSES)}, got {status!r}")
        if status not in NEXT_STATUS[current["status"]]:
            raise InputError(f"an outage cannot move from {current['status']!r} to {status!r}")
        sets.append("status = :status")
        params["status"] = status
        if status in ("restored", "closed"):
            sets.append("end_time = coalesce(end_time, now()), customers_restored = customers_affected")
    if etr is not None:
        if etr.tzinfo is None:
            raise InputError("etr needs a time zone (RFC 3339, e.g. 2026-11-22T18:00:00Z)")
        sets.append("etr = :etr")
        params["etr"] = etr
    if etr_confidence is not None:
        if etr_confidence not in CONFIDENCES:
            raise InputError(f"etr_confidence must be one of {list(CONFIDENCES)}")
        sets.append("etr_confidence = :conf")
        params["conf"] = etr_confidence
    conn.execute(text(f"UPDATE outages SET {', '.join(sets)} WHERE id = :id"), params)
    return get_outage(conn, outage_id)


def reliability_indices(conn: Connection, *, start: datetime, end: datetime, kind: str | None = None) -> dict:
    """IEEE 1366 indices per feeder and system from outage records in [start, end).

    SAIFI = sum(N_i) / N_T and SAIDI = sum(r_i N_i) / N_T over sustained interruptions (> 5 min),
    MAIFI over momentary ones; N_T = customers served on the feeder (system: all).
    """
    if end <= start:
        raise InputError("the period must end after it starts")
    if kind is not None and kind not in KINDS:
        raise InputError(f"kind must be one of {list(KINDS)}, got {kind!r}")
    rows = conn.execute(text("""
        WITH served AS (
            SELECT n.feeder, sum(sc.customers) AS customers
            FROM service_connections sc JOIN grid_nodes n ON n.node_id = sc.node_id GROUP BY n.feeder
        ), hits AS (
            SELECT o.feeder, c.customers,
                   coalesce(c.interruption_h, EXTRACT(EPOCH FROM (coalesce(o.end_time, now()) - o.start_time)) / 3600)
                       AS hours
            FROM outage_customers c JOIN outages o ON o.id = c.outage_id
            WHERE o.start_time >= :start AND o.start_time < :end AND (CAST(:kind AS text) IS NULL OR o.kind = :kind)
        )
        SELECT s.feeder, s.customers AS served,
               coalesce(sum(h.customers) FILTER (WHERE h.hours > 5.0 / 60), 0) AS sustained,
               coalesce(sum(h.customers * h.hours) FILTER (WHERE h.hours > 5.0 / 60), 0) AS customer_hours,
               coalesce(sum(h.customers) FILTER (WHERE h.hours <= 5.0 / 60), 0) AS momentary
        FROM served s LEFT JOIN hits h ON h.feeder = s.feeder GROUP BY s.feeder, s.customers ORDER BY s.feeder
    """), {"start": start, "end": end, "kind": kind}).all()

    def indices(served: float, sustained: float, hours: float, momentary: float) -> dict:
        saifi = sustained / served if served else 0.0
        saidi = hours / served if served else 0.0
        period_h = (end - start).total_seconds() / 3600
        return {"customers_served": int(served), "SAIFI": saifi, "SAIDI": saidi,
                "CAIDI": saidi / saifi if saifi else None, "MAIFI": momentary / served if served else 0.0,
                "ASAI": 1 - saidi / period_h if period_h else None}

    feeders = {str(r.feeder): indices(r.served, r.sustained, r.customer_hours, r.momentary) for r in rows}
    total = [sum(getattr(r, f) for r in rows) for f in ("served", "sustained", "customer_hours", "momentary")]
    return {"start": start.isoformat(), "end": end.isoformat(), "kind": kind,
            "system": indices(*total), "feeders": feeders}
