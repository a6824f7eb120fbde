"""The batch writer: validated observations into PostgreSQL, one transaction per batch.

Per batch: ensure the day partitions exist (own short transaction: DDL locks the parent table), then in
one transaction: lock and advance the anomaly state of the batch's datastreams, binary COPY into a
temporary stage table, ``INSERT ... ON CONFLICT DO NOTHING`` into ``observations`` (idempotent on
(datastream, phenomenon_time): QoS 1 redeliveries are absorbed), upsert ``latest_observations``, write
dead letters, and send one ``NOTIFY`` (never one per row: a NOTIFYing transaction takes a global lock
at commit). The caller acknowledges messages only after this returns.

Round trips are what a batch costs besides the rows themselves (and the writer thread waits for the
GIL after each one), so statements without parameters share round trips: BEGIN rides with the state
lock, the three writes go together, NOTIFY rides with COMMIT: five round trips for a batch. Binary COPY
buffers are laid out with numpy, never row by row. The stage tables are session temp tables: a
transaction-pooling proxy (pgbouncer) in front of the database would break them.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Callable, Sequence

import numpy as np
import psycopg
from psycopg import errors as pg_errors
from psycopg import sql

from citytwin.telemetry import anomaly
from citytwin.telemetry.pg import TELEMETRY_CHANNEL
from citytwin.telemetry.validate import (
    DEFAULT_BATCH_TOPIC, NO_TIME, RESULT_TYPES, DeadLetter, IngestLimits, ObservationColumns, RawMessage,
    validate_messages,
)

PG_EPOCH_US = 946_684_800_000_000          # 2000-01-01 in Unix µs: PostgreSQL's binary time origin
DAY_US = 86_400_000_000
NOTIFY_LIMIT = 7000                        # bytes; PostgreSQL's hard limit is 8000
NOTIFY_ANOMALIES = 40
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_COPY_TRAILER = struct.pack(">h", -1)
_NULL = struct.pack(">i", -1)              # a NULL field: length -1, no data
STAGE_DDL = """
CREATE TEMP TABLE IF NOT EXISTS _obs_stage (
    datastream_id bigint, phenomenon_time timestamptz, result_time timestamptz,
    result double precision, result_json jsonb, quality_flags smallint, is_last boolean
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS _state_stage (
    datastream_id bigint, n bigint, mean double precision, var double precision,
    last_time timestamptz, last_value double precision, flat_run integer
) ON COMMIT DELETE ROWS;
"""
_staged: set[tuple[int, int]] = set()     # (connection id, backend pid) whose temp tables exist
_ROW = np.dtype([("nf", ">i2"), ("l0", ">i4"), ("ds", ">i8"), ("l1", ">i4"), ("t", ">i8"), ("l2", ">i4"),
                 ("l3", ">i4"), ("r", ">f8"), ("l4", ">i4"), ("l5", ">i4"), ("f", ">i2"), ("l6", ">i4"),
                 ("last", "u1")])
_STATE = np.dtype([("nf", ">i2"), ("l0", ">i4"), ("ds", ">i8"), ("l1", ">i4"), ("n", ">i8"),
                   ("l2", ">i4"), ("mean", ">f8"), ("l3", ">i4"), ("var", ">f8"), ("l4", ">i4"),
                   ("lt", ">i8"), ("l5", ">i4"), ("lv", ">f8"), ("l6", ">i4"), ("fr", ">i4")])


def _ensure_stage(pg: psycopg.Connection) -> None:
    key = (id(pg), pg.info.backend_pid)
    if key not in _staged:
        pg.execute(STAGE_DDL)
        _staged.add(key)


def _copy(pg: psycopg.Connection, sql: str, data: bytes) -> None:
    with pg.cursor() as cur, cur.copy(sql) as copy:
        copy.write(data)


def _binary(records: np.ndarray) -> bytes:
    return _COPY_HEADER + records.tobytes() + _COPY_TRAILER


def copy_rows_binary(ds: np.ndarray, t_us: np.ndarray, result: np.ndarray, flags: np.ndarray,
                     result_time_us: np.ndarray | None = None, is_last: np.ndarray | None = None) -> bytes:
    """The rows as one PostgreSQL binary COPY stream into (datastream_id, phenomenon_time, result_time,
    result, result_json, quality_flags, is_last), result_json NULL and NaN results NULL.

    The common rows (a number, no resultTime) are laid out by numpy in one pass; the rest are packed one
    by one (NULL fields have no data bytes, so their tuples differ in width).
    """
    has_rt = np.zeros(len(ds), dtype=bool) if result_time_us is None else result_time_us != NO_TIME
    fast = ~has_rt & ~np.isnan(result)
    last = np.zeros(len(ds), dtype=np.uint8) if is_last is None else is_last.astype(np.uint8)
    buf = np.empty(int(fast.sum()), dtype=_ROW)
    buf["nf"], buf["l0"], buf["l1"], buf["l3"], buf["l5"], buf["l6"] = 7, 8, 8, 8, 2, 1
    buf["l2"], buf["l4"] = -1, -1
    buf["ds"], buf["t"], buf["r"], buf["f"] = ds[fast], t_us[fast] - PG_EPOCH_US, result[fast], flags[fast]
    buf["last"] = last[fast]
    parts = [_COPY_HEADER, buf.tobytes()]
    for i in np.flatnonzero(~fast):
        tup = [struct.pack(">hiqiq", 7, 8, int(ds[i]), 8, int(t_us[i]) - PG_EPOCH_US)]
        tup.append(struct.pack(">iq", 8, int(result_time_us[i]) - PG_EPOCH_US) if has_rt[i] else _NULL)
        tup.append(_NULL if np.isnan(result[i]) else struct.pack(">id", 8, float(result[i])))
        tup.append(_NULL + struct.pack(">ihiB", 2, int(flags[i]), 1, int(last[i])))
        parts.append(b"".join(tup))
    parts.append(_COPY_TRAILER)
    return b"".join(parts)


@dataclass
class DatastreamCatalogue:
    """Datastream ids -> result type and anomaly rules, loaded on first sight (new ids are re-queried)."""

    types: dict[int, int] = field(default_factory=dict)
    rules: dict[int, anomaly.Rules] = field(default_factory=dict)

    def result_types(self, pg: psycopg.Connection, ids: np.ndarray) -> np.ndarray:
        if len(ids) == 0:
            return np.zeros(0, dtype=np.int8)
        uniq, inverse = np.unique(ids, return_inverse=True)
        missing = [int(i) for i in uniq if int(i) not in self.types]
        if missing:
            self.load(pg, missing)
        codes = np.array([self.types.get(int(i), 0) for i in uniq], dtype=np.int8)
        return codes[inverse]

    def load(self, pg: psycopg.Connection, ids: Sequence[int]) -> None:
        rows = pg.execute("""
            SELECT d.id, d.result_type, p.name, d.properties
            FROM datastreams d JOIN observed_properties p ON p.id = d.observed_property_id
            WHERE d.id = ANY(%s)
        """, (list(ids),)).fetchall()
        for ds, result_type, prop, properties in rows:
            self.types[ds] = RESULT_TYPES.get(result_type, 0)
            self.rules[ds] = anomaly.rules_for(prop, properties)


class PartitionKeeper:
    """Makes sure day partitions exist before rows for those days are written (cached per process)."""

    def __init__(self, ahead_days: int = 7) -> None:
        self.ahead_days = ahead_days
        self.known: set[int] = set()

    def ensure(self, pg: psycopg.Connection, day_numbers: np.ndarray) -> int:
        """Create partitions for the given days (days since the epoch) that this process hasn't seen."""
        wanted = sorted(set(int(d) for d in np.unique(day_numbers)) - self.known)
        if not wanted:
            return 0
        created = 0
        with pg.transaction():
            # One creator at a time across processes; DDL on the parent is short and rare.
            pg.execute("SELECT pg_advisory_xact_lock(hashtext('citytwin_observation_partitions'))")
            for first, last in _runs(wanted):
                created += pg.execute("SELECT citytwin_ensure_observation_partitions(%s, %s)",
                                      (_day(first), _day(last))).fetchone()[0]
        self.known.update(wanted)
        return created

    def ensure_ahead(self, pg: psycopg.Connection, today: date | None = None) -> int:
        """Partitions from yesterday to ``ahead_days`` ahead, so ingest rarely creates one itself."""
        today = today or datetime.now(timezone.utc).date()
        start = (today - date(1970, 1, 1)).days - 1
        return self.ensure(pg, np.arange(start, start + self.ahead_days + 2))


def _day(number: int) -> date:
    return date(1970, 1, 1) + timedelta(days=number)


def _runs(days: list[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for d in days:
        if runs and d == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], d)
        else:
            runs.append((d, d))
    return runs


@dataclass
class IngestResult:
    messages: int = 0
    received: int = 0          # observations that passed validation
    stored: int = 0            # new rows (the rest were already stored)
    rejected: int = 0          # dead letters written
    flagged: int = 0           # rows with an anomaly bit
    changed: list[int] = field(default_factory=list)       # datastreams with a new latest value
    anomalies: list[list] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)

    @property
    def duplicates(self) -> int:
        return self.received - self.stored


class Ingestor:
    """Validates and writes batches of messages; keeps per-process caches (datastreams, partitions)."""

    def __init__(self, *, limits: IngestLimits = IngestLimits(), batch_topic: str = DEFAULT_BATCH_TOPIC,
                 notify: bool = True, partitions_ahead: int = 7) -> None:
        self.limits = limits
        self.batch_topic = batch_topic
        self.notify = notify
        self.catalogue = DatastreamCatalogue()
        self.partitions = PartitionKeeper(partitions_ahead)

    def ingest(self, pg: psycopg.Connection, messages: Sequence[RawMessage],
               extra: Callable[[psycopg.Connection], None] | None = None) -> IngestResult:
        """Validate and store ``messages`` with ``pg`` (an autocommit connection); ``extra(pg)`` runs in
        the same transaction (e.g. command acks). Raises psycopg errors when the database fails."""
        batch = validate_messages(messages, lambda ids: self.catalogue.result_types(pg, ids),
                                  limits=self.limits, batch_topic=self.batch_topic)
        rows = batch.rows
        if len(rows):
            self.partitions.ensure(pg, rows.time_us // DAY_US)
        for attempt in (1, 2):
            try:
                result = self._transaction(pg, rows, batch.dead, extra)
                break
            except pg_errors.CheckViolation as exc:
                # "no partition of relation observations found for row": a partition was dropped or
                # created elsewhere since we cached it. Forget the cache and try once more.
                if attempt == 2 or "no partition" not in str(exc):
                    raise
                self.partitions.known.clear()
                self.partitions.ensure(pg, rows.time_us // DAY_US)
        result.messages = batch.messages
        result.rejected = len(batch.dead)
        result.dead = batch.dead
        return result

    def _transaction(self, pg: psycopg.Connection, rows: ObservationColumns, dead: list[DeadLetter],
                     extra: Callable[[psycopg.Connection], None] | None) -> IngestResult:
        """One explicit transaction (BEGIN and COMMIT ride along with other statements: fewer round trips)."""
        try:
            if len(rows):
                result = write_rows(pg, rows, self.catalogue, begin=True)
            else:
                pg.execute("BEGIN")
                result = IngestResult()
            write_dead_letters(pg, dead)
            if extra is not None:
                extra(pg)
            if self.notify and (result.changed or result.anomalies):
                pg.execute(sql.SQL("SELECT pg_notify({}, {}); COMMIT").format(
                    sql.Literal(TELEMETRY_CHANNEL), sql.Literal(notify_payload(result))))
            else:
                pg.execute("COMMIT")
        except BaseException:
            if not pg.closed:
                try:
                    pg.execute("ROLLBACK")
                except psycopg.Error:
                    pass
            raise
        return result


def write_rows(pg: psycopg.Connection, rows: ObservationColumns, catalogue: DatastreamCatalogue, *,
               begin: bool = False) -> IngestResult:
    """Store validated rows inside the caller's transaction (``begin``: open it with the first statement);
    see the module docstring for the steps. The caller sends the NOTIFY (``notify_payload``) and commits."""
    result = IngestResult(received=len(rows))
    if len(rows) == 0:
        return result
    order = np.lexsort((rows.time_us, rows.datastream_id))
    ds, t = rows.datastream_id[order], rows.time_us[order]
    keep = np.ones(len(ds), dtype=bool)
    keep[1:] = (ds[1:] != ds[:-1]) | (t[1:] != t[:-1])          # duplicates inside the batch
    order, ds, t = order[keep], ds[keep], t[keep]
    values = rows.result[order]
    result_time = rows.result_time_us[order]
    json_rows = {new: rows.json_result[int(old)] for new, old in enumerate(order)
                 if int(old) in rows.json_result}
    starts = np.flatnonzero(np.r_[True, ds[1:] != ds[:-1], True])
    groups = ds[starts[:-1]]

    _ensure_stage(pg)
    flags = _flag(pg, groups, starts, t, values, catalogue, begin=begin)
    is_last = np.zeros(len(ds), dtype=bool)
    is_last[starts[1:] - 1] = True
    _copy(pg, "COPY _obs_stage FROM STDIN (FORMAT binary)",
          copy_rows_binary(ds, t, values, flags, result_time, is_last))
    with pg.cursor() as cur:
        if json_rows:
            cur.executemany(
                "UPDATE _obs_stage SET result_json = %s::jsonb WHERE datastream_id = %s "
                "AND phenomenon_time = timestamptz 'epoch' + %s * interval '1 microsecond'",
                [(json.dumps(v), int(ds[i]), int(t[i])) for i, v in json_rows.items()])
        # One round trip: the new anomaly state, the rows, and the newest row per datastream of this batch
        # (it replaces the stored latest value if it is newer).
        cur.execute("""
            UPDATE anomaly_state a SET n = s.n, mean = s.mean, var = s.var,
                last_time = CASE WHEN isfinite(s.last_time) THEN s.last_time END,
                last_value = NULLIF(s.last_value, 'NaN'), flat_run = s.flat_run, updated_at = now()
            FROM _state_stage s WHERE a.datastream_id = s.datastream_id;
            INSERT INTO observations (datastream_id, phenomenon_time, result_time, result, result_json,
                quality_flags)
            SELECT datastream_id, phenomenon_time, result_time, result, result_json,
                quality_flags FROM _obs_stage
            ON CONFLICT DO NOTHING;
            INSERT INTO latest_observations AS l (datastream_id, phenomenon_time, result, result_json,
                                                 quality_flags, updated_at)
            SELECT datastream_id, phenomenon_time, result, result_json, quality_flags, now()
            FROM _obs_stage WHERE is_last
            ON CONFLICT (datastream_id) DO UPDATE SET phenomenon_time = EXCLUDED.phenomenon_time,
                result = EXCLUDED.result, result_json = EXCLUDED.result_json,
                quality_flags = EXCLUDED.quality_flags, updated_at = now()
            WHERE l.phenomenon_time < EXCLUDED.phenomenon_time
            RETURNING datastream_id
        """)
        cur.nextset()
        result.stored = cur.rowcount
        cur.nextset()
        result.changed = sorted(r[0] for r in cur.fetchall())
    anomalous = np.flatnonzero(flags & anomaly.ANOMALY_MASK)
    result.flagged = len(anomalous)
    result.anomalies = [[int(ds[i]), _iso(int(t[i])), None if np.isnan(values[i]) else float(values[i]),
                         int(flags[i])] for i in anomalous[:NOTIFY_ANOMALIES]]
    return result


def _flag(pg: psycopg.Connection, groups: np.ndarray, starts: np.ndarray, t: np.ndarray, values: np.ndarray,
          catalogue: DatastreamCatalogue, *, begin: bool = False) -> np.ndarray:
    """Load (and lock, in id order) the anomaly state of the batch's datastreams, flag the rows, store the
    new state. The ids go in as an array literal (integers only, so no quoting issue) in one round trip
    with the lock; the new states go back by binary COPY: psycopg's array adaptation costs ~4 µs per
    element, a numpy-built COPY almost nothing."""
    ids = "'{" + ",".join(map(str, groups.tolist())) + "}'::bigint[]"
    with pg.cursor() as cur:
        cur.execute(f"""
            {'BEGIN;' if begin else ''}
            INSERT INTO anomaly_state (datastream_id) SELECT unnest({ids}) ORDER BY 1 ON CONFLICT DO NOTHING;
            SELECT datastream_id, n, mean, var,
                   CAST(EXTRACT(EPOCH FROM last_time) * 1000000 AS bigint), last_value, flat_run
            FROM anomaly_state WHERE datastream_id = ANY({ids})
            ORDER BY datastream_id FOR UPDATE
        """)
        while cur.nextset():
            pass
        rows = cur.fetchall()
    state = anomaly.AnomalyState.empty(len(groups))
    if rows:
        cols = list(zip(*rows))
        # rows come back in id order, like ``groups``
        state.n[:] = cols[1]
        state.mean[:] = cols[2]
        state.var[:] = cols[3]
        state.last_time[:] = [NO_TIME if v is None else v for v in cols[4]]
        state.last_value[:] = [np.nan if v is None else v for v in cols[5]]
        state.flat_run[:] = cols[6]
    rules = [catalogue.rules.get(int(ds), anomaly.Rules()) for ds in groups]
    flags = anomaly.flag_observations(starts, t, values, state, rules)
    rec = np.empty(len(groups), dtype=_STATE)
    rec["nf"] = 7
    for length in ("l0", "l1", "l2", "l3", "l4", "l5"):
        rec[length] = 8
    rec["l6"] = 4
    rec["ds"], rec["n"], rec["mean"], rec["var"] = groups, state.n, state.mean, state.var
    rec["fr"] = state.flat_run
    # No time yet: PostgreSQL's binary -infinity (INT64_MIN); no value yet: NaN. Both become NULL below.
    rec["lt"] = np.where(state.last_time == NO_TIME, NO_TIME, state.last_time - PG_EPOCH_US)
    rec["lv"] = state.last_value
    _copy(pg, "COPY _state_stage FROM STDIN (FORMAT binary)", _binary(rec))
    return flags


def write_dead_letters(pg: psycopg.Connection, dead: Sequence[DeadLetter]) -> None:
    if not dead:
        return
    with pg.cursor() as cur:
        with cur.copy("COPY telemetry_dead_letters (source, topic, reason, detail, item_index, payload, "
                      "payload_bytes) FROM STDIN") as copy:
            for d in dead:
                copy.write_row((d.source, d.topic, d.reason, d.detail, d.item_index,
                                None if d.payload is None else d.payload.replace("\x00", ""),
                                d.payload_bytes))


def _iso(t_us: int) -> str:
    return (datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=t_us)).isoformat().replace(
        "+00:00", "Z")


def notify_payload(result: IngestResult) -> str:
    """One small message per committed batch: the datastreams with new latest values and some anomalies.

    ``ds`` is null when the id list would not fit: listeners then re-read every latest value.
    """
    body = {"v": 1, "n": result.stored, "ds": result.changed, "an": result.anomalies,
            "anx": max(result.flagged - len(result.anomalies), 0)}
    text = json.dumps(body, separators=(",", ":"))
    if len(text) > NOTIFY_LIMIT:
        body["ds"] = None
        text = json.dumps(body, separators=(",", ":"))
    while len(text) > NOTIFY_LIMIT and body["an"]:
        body["an"] = body["an"][: len(body["an"]) // 2]
        body["anx"] = max(result.flagged - len(body["an"]), 0)
        text = json.dumps(body, separators=(",", ":"))
    return text
