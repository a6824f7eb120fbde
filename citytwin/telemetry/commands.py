"""Commands back to devices in the SensorThings Tasking shape: capabilities, tasks, outbox, acks, expiry.

A task is written together with its command in one transaction (the outbox), so a command is sent if and
only if its task exists; a relay publishes outbox rows QoS 1 to ``citytwin/cmd/{thing}`` (at least once:
devices see the task id and must ignore repeats). Devices answer on ``citytwin/cmd/{thing}/ack`` with::

    {"task": 12, "status": "accepted" | "done" | "failed", "reported": {"state": "open"}, "message": "..."}

Desired state (what a task asked for) and reported state (what the device says) are kept apart in
``device_state``. A ``done`` switch operation sets ``grid_switches.present_state``: the grid model then
sees the switch as it is in the field. Tasks nobody confirms expire.

Task parameters follow the SWE Common JSON encoding used by SensorThings Tasking: a ``DataRecord`` whose
fields are ``Category`` (with ``AllowedTokens``) or ``Quantity`` (with ``AllowedValues`` intervals).
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone

from sqlalchemy import Connection, text

from citytwin.errors import InputError, NotFoundError
from citytwin.telemetry.mqtt import CMD_PREFIX
from citytwin.telemetry.pg import OUTBOX_CHANNEL

OPEN_STATUSES = ("created", "sent", "accepted")
FINAL_STATUSES = ("done", "failed", "expired")
ACK_STATUSES = ("accepted", "done", "failed")
DEFAULT_EXPIRY_S = 60.0
MAX_EXPIRY_S = 86400.0
SWITCH_CAPABILITY = "switch_operation"

SWITCH_PARAMETERS = {
    "type": "DataRecord",
    "field": [{
        "name": "state", "label": "Switch state", "description": "Open or close the switch",
        "type": "Category", "constraint": {"type": "AllowedTokens", "value": ["open", "closed"]},
    }],
}


def setpoint_parameters(name: str, low: float, high: float, uom: str) -> dict:
    """A one-field Quantity record, e.g. a voltage or temperature setpoint within [low, high]."""
    return {"type": "DataRecord", "field": [{
        "name": name, "label": name.replace("_", " ").capitalize(), "type": "Quantity", "uom": {"code": uom},
        "constraint": {"type": "AllowedValues", "interval": [[low, high]]},
    }]}


def ensure_actuator(conn: Connection, name: str, description: str = "") -> int:
    return conn.execute(text("""
        INSERT INTO actuators (name, description) VALUES (:n, :d)
        ON CONFLICT (name) DO UPDATE SET description = EXCLUDED.description RETURNING id
    """), {"n": name, "d": description or name}).scalar_one()


def ensure_capability(conn: Connection, thing: str, name: str, parameters: dict, *, actuator: str,
                      description: str = "", properties: dict | None = None) -> int:
    """Create or update the capability ``name`` of the thing named ``thing``; returns its id."""
    thing_id = conn.execute(text("SELECT id FROM things WHERE name = :n"), {"n": thing}).scalar()
    if thing_id is None:
        raise NotFoundError(f"thing {thing!r} does not exist")
    actuator_id = ensure_actuator(conn, actuator)
    return conn.execute(text("""
        INSERT INTO tasking_capabilities (name, description, thing_id, actuator_id, tasking_parameters,
            properties)
        VALUES (:n, :d, :t, :a, CAST(:p AS jsonb), CAST(:props AS jsonb))
        ON CONFLICT (thing_id, name) DO UPDATE SET description = EXCLUDED.description,
            actuator_id = EXCLUDED.actuator_id, tasking_parameters = EXCLUDED.tasking_parameters,
            properties = EXCLUDED.properties
        RETURNING id
    """), {"n": name, "d": description or name, "t": thing_id, "a": actuator_id, "p": json.dumps(parameters),
           "props": json.dumps(properties or {})}).scalar_one()


def ensure_switch_capabilities(conn: Connection) -> int:
    """A Thing and a ``switch_operation`` capability for every grid switch (idempotent, set-wise); returns
    the number of switches.

    The Thing is named after the switch id (its command topic is ``citytwin/cmd/<switch_id>``) and
    placed at the switch.
    """
    conn.execute(text("""
        INSERT INTO things (name, description, properties, asset_id)
        SELECT s.switch_id, s.kind || ' ' || s.switch_id,
               jsonb_build_object('kind', 'switch', 'switch_kind', s.kind), s.switch_id
        FROM grid_switches s
        ON CONFLICT (name) DO UPDATE SET asset_id = EXCLUDED.asset_id
    """))
    conn.execute(text("""
        WITH missing AS (
            SELECT t.id AS thing_id, s.switch_id, s.geom
            FROM grid_switches s JOIN things t ON t.name = s.switch_id
            WHERE s.geom IS NOT NULL
              AND NOT EXISTS (SELECT 1 FROM thing_locations tl WHERE tl.thing_id = t.id)),
        added AS (INSERT INTO locations (name, location)
                  SELECT switch_id, geom FROM missing RETURNING id, name)
        INSERT INTO thing_locations
        SELECT m.thing_id, a.id FROM missing m JOIN added a ON a.name = m.switch_id
    """))
    actuator = ensure_actuator(conn, "switch operator", "Motor operator of a grid switch")
    return conn.execute(text("""
        INSERT INTO tasking_capabilities (name, description, thing_id, actuator_id, tasking_parameters,
            properties)
        SELECT :name, 'Open or close ' || s.kind || ' ' || s.switch_id, t.id, :actuator,
               CAST(:params AS jsonb), jsonb_build_object('kind', 'switch', 'switch_id', s.switch_id)
        FROM grid_switches s JOIN things t ON t.name = s.switch_id
        ON CONFLICT (thing_id, name) DO UPDATE SET tasking_parameters = EXCLUDED.tasking_parameters,
            properties = EXCLUDED.properties, actuator_id = EXCLUDED.actuator_id
    """), {"name": SWITCH_CAPABILITY, "actuator": actuator, "params": json.dumps(SWITCH_PARAMETERS)}).rowcount


def check_parameters(schema: dict, given: object) -> dict:
    """``given`` checked against a SWE Common DataRecord; returns the cleaned values or raises InputError."""
    if not isinstance(given, dict):
        raise InputError("taskingParameters must be an object of field name -> value")
    fields = {f["name"]: f for f in schema.get("field", [])}
    unknown = sorted(set(given) - set(fields))
    if unknown:
        raise InputError(f"taskingParameters: unknown field(s) {unknown}; "
                         f"this capability takes {sorted(fields)}")
    missing = sorted(set(fields) - set(given))
    if missing:
        raise InputError(f"taskingParameters: missing field(s) {missing}")
    clean = {}
    for name, value in given.items():
        spec, constraint = fields[name], fields[name].get("constraint", {})
        if spec.get("type") == "Category":
            allowed = constraint.get("value")
            if not isinstance(value, str) or (allowed and value not in allowed):
                raise InputError(f"taskingParameters.{name} must be one of {allowed}, got {value!r}")
        elif spec.get("type") in ("Quantity", "Count"):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InputError(f"taskingParameters.{name} must be a finite number, got {value!r}")
            intervals = constraint.get("interval") or []
            if intervals and not any(lo <= value <= hi for lo, hi in intervals):
                raise InputError(f"taskingParameters.{name} = {value} is outside the allowed {intervals}")
        clean[name] = value
    return clean


def create_task(conn: Connection, capability_id: int, parameters: object,
                expires_in_s: float | None = None) -> dict:
    """Write a task, its outbox command and the desired state in the caller's transaction."""
    cap = conn.execute(text("""
        SELECT c.id, c.name, c.tasking_parameters, c.properties, t.id, t.name
        FROM tasking_capabilities c JOIN things t ON t.id = c.thing_id WHERE c.id = :id
    """), {"id": capability_id}).first()
    if cap is None:
        raise NotFoundError(f"TaskingCapability {capability_id} does not exist")
    _, cap_name, schema, cap_props, thing_id, thing_name = cap
    clean = check_parameters(schema, parameters)
    if expires_in_s is None:
        expires_in_s = cap_props.get("expires_in_s", DEFAULT_EXPIRY_S)
    expiry = float(expires_in_s)
    if not 0 < expiry <= MAX_EXPIRY_S:
        raise InputError(f"expiresIn must be within (0, {MAX_EXPIRY_S:.0f}] seconds, got {expiry}")
    task_id, created, expires = conn.execute(text("""
        INSERT INTO tasks (tasking_capability_id, tasking_parameters, expires_at)
        VALUES (:c, CAST(:p AS jsonb), now() + :e * interval '1 second')
        RETURNING id, creation_time, expires_at
    """), {"c": capability_id, "p": json.dumps(clean), "e": expiry}).one()
    command = {"task": task_id, "capability": cap_name, "parameters": clean,
               "issued": _iso(created), "expires": _iso(expires)}
    conn.execute(text("INSERT INTO command_outbox (task_id, topic, payload) "
                      "VALUES (:t, :topic, CAST(:p AS jsonb))"),
                 {"t": task_id, "topic": f"{CMD_PREFIX}/{thing_name}", "p": json.dumps(command)})
    for name, value in clean.items():
        conn.execute(text("""
            INSERT INTO device_state (thing_id, property, desired, desired_at, desired_task_id)
            VALUES (:t, :p, CAST(:v AS jsonb), now(), :task)
            ON CONFLICT (thing_id, property) DO UPDATE SET desired = EXCLUDED.desired,
                desired_at = EXCLUDED.desired_at, desired_task_id = EXCLUDED.desired_task_id
        """), {"t": thing_id, "p": name, "v": json.dumps(value), "task": task_id})
    _event(conn, task_id, "created", {"parameters": clean})
    conn.execute(text("SELECT pg_notify(:c, :p)"), {"c": OUTBOX_CHANNEL, "p": str(task_id)})
    return get_task(conn, task_id)


def get_task(conn: Connection, task_id: int) -> dict:
    row = conn.execute(text("""
        SELECT k.id, k.tasking_capability_id, k.tasking_parameters, k.status, k.creation_time, k.sent_at,
               k.accepted_at, k.finished_at, k.expires_at, k.message, t.name
        FROM tasks k JOIN tasking_capabilities c ON c.id = k.tasking_capability_id
        JOIN things t ON t.id = c.thing_id WHERE k.id = :id
    """), {"id": task_id}).first()
    if row is None:
        raise NotFoundError(f"Task {task_id} does not exist")
    events = conn.execute(text("SELECT status, at, detail FROM task_events WHERE task_id = :id ORDER BY id"),
                          {"id": task_id}).all()
    return {
        "@iot.id": row[0], "creationTime": _iso(row[4]), "taskingParameters": row[2], "status": row[3],
        "sentTime": _iso(row[5]), "acceptedTime": _iso(row[6]), "finishedTime": _iso(row[7]),
        "expirationTime": _iso(row[8]), "message": row[9], "thing": row[10],
        "TaskingCapability": {"@iot.id": row[1]},
        "events": [{"status": s, "time": _iso(at), "detail": d} for s, at, d in events],
    }


def _event(conn: Connection, task_id: int, status: str, detail: dict | None = None) -> None:
    conn.execute(text("INSERT INTO task_events (task_id, status, detail) VALUES (:t, :s, CAST(:d AS jsonb))"),
                 {"t": task_id, "s": status, "d": json.dumps(detail or {})})


def claim_outbox(conn: Connection, limit: int = 100) -> list[tuple[int, int, str, dict]]:
    """Unsent commands of live tasks, locked for this relay (others skip them): (id, task, topic, payload)."""
    return [tuple(r) for r in conn.execute(text("""
        SELECT o.id, o.task_id, o.topic, o.payload FROM command_outbox o JOIN tasks k ON k.id = o.task_id
        WHERE o.sent_at IS NULL AND k.status IN ('created', 'sent', 'accepted') AND k.expires_at > now()
        ORDER BY o.id LIMIT :n FOR UPDATE OF o SKIP LOCKED
    """), {"n": limit}).all()]


def mark_sent(conn: Connection, outbox_id: int, task_id: int) -> None:
    conn.execute(text("UPDATE command_outbox SET sent_at = now(), attempts = attempts + 1 WHERE id = :id"),
                 {"id": outbox_id})
    moved = conn.execute(text("UPDATE tasks SET status = 'sent', sent_at = now() "
                              "WHERE id = :id AND status = 'created'"), {"id": task_id}).rowcount
    if moved:
        _event(conn, task_id, "sent")


def mark_failed_attempt(conn: Connection, outbox_id: int, error: str) -> None:
    conn.execute(text("UPDATE command_outbox SET attempts = attempts + 1, last_error = :e WHERE id = :id"),
                 {"id": outbox_id, "e": error[:500]})


def expire_tasks(conn: Connection) -> list[int]:
    """Open tasks past their expiry become ``expired``; returns their ids."""
    ids = conn.execute(text("""
        UPDATE tasks SET status = 'expired', finished_at = now(),
            message = coalesce(message, 'no confirmation from the device before the task expired')
        WHERE status IN ('created', 'sent', 'accepted') AND expires_at <= now() RETURNING id
    """)).scalars().all()
    for task_id in ids:
        _event(conn, task_id, "expired")
    return sorted(ids)


def apply_ack(conn: Connection, thing: str, payload: bytes | str) -> str:
    """Apply a device's answer (see the module docstring); returns what happened (for logs and tests).

    Bad acks are reported as InputError (the ingest service dead-letters them).
    """
    try:
        ack = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"ack from {thing!r} is not JSON: {exc}") from None
    task_id, status = (ack.get("task"), ack.get("status")) if isinstance(ack, dict) else (None, None)
    if type(task_id) is not int or status not in ACK_STATUSES:
        raise InputError(f"ack from {thing!r} needs task (integer) and status in {list(ACK_STATUSES)}")
    row = conn.execute(text("""
        SELECT k.status, k.tasking_parameters, c.properties, t.id, t.name
        FROM tasks k JOIN tasking_capabilities c ON c.id = k.tasking_capability_id
        JOIN things t ON t.id = c.thing_id WHERE k.id = :id FOR UPDATE OF k
    """), {"id": task_id}).first()
    if row is None:
        raise InputError(f"ack from {thing!r} names unknown task {task_id}")
    current, params, cap_props, thing_id, owner = row
    if owner != thing:
        raise InputError(f"ack from {thing!r} for task {task_id}, which belongs to {owner!r}")
    reported = ack.get("reported") if isinstance(ack.get("reported"), dict) else {}
    message = str(ack.get("message", ""))[:500] or None
    for name, value in reported.items():
        conn.execute(text("""
            INSERT INTO device_state (thing_id, property, reported, reported_at)
            VALUES (:t, :p, CAST(:v AS jsonb), now())
            ON CONFLICT (thing_id, property) DO UPDATE SET reported = EXCLUDED.reported, reported_at = now()
        """), {"t": thing_id, "p": str(name)[:100], "v": json.dumps(value)})
    if status == "done" and cap_props.get("kind") == "switch":
        # The field changed, whatever became of the task: the grid follows the device.
        state = reported.get("state", params.get("state"))
        if state in ("open", "closed"):
            conn.execute(text("UPDATE grid_switches SET present_state = :s WHERE switch_id = :id"),
                         {"s": state, "id": cap_props.get("switch_id", thing)})
    if current in FINAL_STATUSES or (current == "accepted" and status == "accepted"):
        _event(conn, task_id, f"late_{status}" if current in FINAL_STATUSES else status,
               {"message": message, "reported": reported})
        return f"task {task_id} is {current}; {status} recorded"
    stamp = "accepted_at" if status == "accepted" else "finished_at"
    conn.execute(text(f"UPDATE tasks SET status = :s, {stamp} = now(), message = coalesce(:m, message) "
                      "WHERE id = :id"),
                 {"s": status, "m": message, "id": task_id})
    _event(conn, task_id, status, {"message": message, "reported": reported})
    return f"task {task_id}: {current} -> {status}"


def device_state(conn: Connection, thing: str) -> dict:
    """Desired and reported state of a thing, per property."""
    rows = conn.execute(text("""
        SELECT s.property, s.desired, s.desired_at, s.desired_task_id, s.reported, s.reported_at
        FROM device_state s JOIN things t ON t.id = s.thing_id WHERE t.name = :n ORDER BY s.property
    """), {"n": thing}).all()
    return {p: {"desired": d, "desiredTime": _iso(dt), "desiredTask": task, "reported": r,
                "reportedTime": _iso(rt), "inSync": d is None or d == r}
            for p, d, dt, task, r, rt in rows}


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")

