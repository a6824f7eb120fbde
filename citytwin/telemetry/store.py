"""Storage tiers of the observations: day partitions ahead, hourly rollups, Parquet archive, retention.

* Raw: ``observations`` is range-partitioned by UTC day; partitions are created ahead of time
  (yesterday .. ``ahead_days``), ingest creates a missing one on demand.
* Rollups: ``observation_rollups_hourly`` holds count/min/mean/max (and how many were flagged) per
  datastream and UTC hour, for closed hours only. A refresh recomputes every closed hour from a
  watermark minus ``late_window`` (late data changes recent hours), so it is idempotent; a day's
  rollups are recomputed in full right before its raw partition is archived.
* Archive: raw days older than ``retention_days`` are written to Parquet (one file per day,
  ``<data_dir>/archive/observations/date=YYYY-MM-DD/part.parquet``, hive-style so pandas, pyarrow and
  Dask read the folder as one dataset with a ``date`` column), verified (row count), logged in
  ``observation_archive_log``, then detached and dropped (dropping a 1 M-row partition takes ~25 ms,
  far cheaper than DELETE).
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path

from sqlalchemy import Connection, Engine, text

from citytwin.errors import ConflictError, InputError

ROLLUP_WATERMARK = "rollup_hourly"
ANOMALY_BITS = 7            # spike | range | flatline (see citytwin.telemetry.anomaly)


@dataclass
class RetentionReport:
    partitions_created: int = 0
    rollup_rows: int = 0
    archived: list[dict] = field(default_factory=list)
    dead_letters_purged: int = 0


def ensure_partitions_ahead(conn: Connection, ahead_days: int = 7, today: date | None = None) -> int:
    today = today or datetime.now(timezone.utc).date()
    first, last = today - timedelta(days=1), today + timedelta(days=ahead_days)
    return conn.execute(text("SELECT citytwin_ensure_observation_partitions(:a, :b)"),
                        {"a": first, "b": last}).scalar_one()


def observation_partitions(conn: Connection) -> dict[date, str]:
    """Existing day partitions: day -> table name."""
    names = conn.execute(text("""
        SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'observations'::regclass
    """)).scalars().all()
    out = {}
    for name in names:
        try:
            out[datetime.strptime(name.rsplit("_", 1)[1], "%Y%m%d").date()] = name
        except (IndexError, ValueError):
            continue        # not one of ours
    return out


def refresh_rollups(conn: Connection, since: datetime | None = None, until: datetime | None = None,
                    late_window: timedelta = timedelta(hours=6)) -> int:
    """Recompute the hourly rollups of closed hours in [since, until); returns rows written.

    Defaults: ``until`` = the start of the current hour (UTC); ``since`` = the watermark minus
    ``late_window``, or the oldest raw observation on the first run. Advances the watermark.
    """
    now_hour = conn.execute(text("SELECT date_trunc('hour', now(), 'UTC')")).scalar_one()
    until = min(until or now_hour, now_hour)
    if since is None:
        mark = conn.execute(text("SELECT value FROM telemetry_watermarks WHERE name = :n"),
                            {"n": ROLLUP_WATERMARK}).scalar()
        since = (mark - late_window) if mark else conn.execute(text(
            "SELECT date_trunc('hour', min(phenomenon_time), 'UTC') FROM observations")).scalar()
    if since is None or since >= until:
        return 0
    written = conn.execute(text("""
        INSERT INTO observation_rollups_hourly AS r (datastream_id, hour, n, min, mean, max, flagged,
            refreshed_at)
        SELECT datastream_id, date_trunc('hour', phenomenon_time, 'UTC'), count(*), min(result), avg(result),
               max(result), count(*) FILTER (WHERE quality_flags & :bits <> 0), now()
        FROM observations
        WHERE phenomenon_time >= :since AND phenomenon_time < :until AND result IS NOT NULL
        GROUP BY 1, 2
        ON CONFLICT (datastream_id, hour) DO UPDATE SET n = EXCLUDED.n, min = EXCLUDED.min,
            mean = EXCLUDED.mean, max = EXCLUDED.max, flagged = EXCLUDED.flagged, refreshed_at = now()
    """), {"since": since, "until": until, "bits": ANOMALY_BITS}).rowcount
    conn.execute(text("""
        INSERT INTO telemetry_watermarks (name, value) VALUES (:n, :v)
        ON CONFLICT (name) DO UPDATE SET value = greatest(telemetry_watermarks.value, EXCLUDED.value)
    """), {"n": ROLLUP_WATERMARK, "v": until})
    return written


def archive_path(data_dir: Path, day: date) -> Path:
    return Path(data_dir) / "archive" / "observations" / f"date={day.isoformat()}" / "part.parquet"


def _export_day(conn: Connection, table: str):
    """The partition as an Arrow table (COPY to CSV, parsed by pyarrow: no Python per row)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    buffer = io.BytesIO()
    raw = conn.connection.dbapi_connection
    with raw.cursor() as cur:
        with cur.copy(f"""COPY (SELECT datastream_id,
                                 (EXTRACT(EPOCH FROM phenomenon_time) * 1000000)::bigint,
                                 (EXTRACT(EPOCH FROM result_time) * 1000000)::bigint,
                                 result, result_json::text, quality_flags
                          FROM {table} ORDER BY datastream_id, phenomenon_time)
                          TO STDOUT (FORMAT csv)""") as copy:
            for chunk in copy:
                buffer.write(chunk)
    names = ["datastream_id", "phenomenon_time", "result_time", "result", "result_json", "quality_flags"]
    types = {"datastream_id": pa.int64(), "phenomenon_time": pa.int64(), "result_time": pa.int64(),
             "result": pa.float64(), "result_json": pa.string(), "quality_flags": pa.int16()}
    buffer.seek(0)
    convert = pacsv.ConvertOptions(column_types=types, strings_can_be_null=True)
    read = pacsv.ReadOptions(column_names=names)
    table_ = pacsv.read_csv(buffer, read_options=read, convert_options=convert)
    utc = pa.timestamp("us", tz="UTC")
    return table_.set_column(1, "phenomenon_time", table_["phenomenon_time"].cast(utc)).set_column(
        2, "result_time", table_["result_time"].cast(utc))


def archive_day(engine: Engine, day: date, data_dir: Path) -> dict | None:
    """Roll up, export, verify, log, then detach and drop the raw partition of ``day`` (UTC)."""
    import pyarrow.parquet as pq

    table = f"observations_{day:%Y%m%d}"
    start = datetime.combine(day, time(0), tzinfo=timezone.utc)
    with engine.begin() as conn:
        if conn.execute(text("SELECT to_regclass(:t)"), {"t": table}).scalar() is None:
            return None
        refresh_rollups(conn, since=start, until=start + timedelta(days=1))
    with engine.begin() as conn:
        # Repeatable read: the export and the count see the same snapshot.
        conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
        arrow = _export_day(conn, table)
    path = archive_path(data_dir, day)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".parquet.tmp")
    pq.write_table(arrow, tmp, compression="zstd", row_group_size=1_000_000)
    if pq.read_metadata(tmp).num_rows != arrow.num_rows:
        raise ConflictError(f"archive of {day} is incomplete: {tmp}")
    os.replace(tmp, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    with engine.begin() as conn:
        conn.execute(text(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
        rows_now = conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
        if rows_now != arrow.num_rows:   # a late write slipped in: keep the raw day, retry next run
            raise ConflictError(f"{table} changed during its archive ({arrow.num_rows} -> {rows_now} rows); "
                                "it is kept and will be archived again")
        conn.execute(text("""
            INSERT INTO observation_archive_log (day, path, rows, bytes, sha256, dropped_at)
            VALUES (:d, :p, :r, :b, :h, now())
            ON CONFLICT (day) DO UPDATE SET path = EXCLUDED.path,
                rows = observation_archive_log.rows + EXCLUDED.rows,
                bytes = EXCLUDED.bytes, sha256 = EXCLUDED.sha256, archived_at = now(), dropped_at = now()
        """), {"d": day, "p": str(path), "r": arrow.num_rows, "b": path.stat().st_size, "h": digest})
        conn.execute(text(f"ALTER TABLE observations DETACH PARTITION {table}"))
        conn.execute(text(f"DROP TABLE {table}"))
    return {"day": day.isoformat(), "rows": arrow.num_rows, "path": str(path), "bytes": path.stat().st_size}


def run_retention(engine: Engine, data_dir: Path, retention_days: int, *, ahead_days: int = 7,
                  today: date | None = None) -> RetentionReport:
    """One maintenance pass: partitions ahead, rollups, archive + drop of old days, dead-letter purge."""
    if retention_days < 1:
        raise InputError(f"telemetry retention must be at least 1 day, got {retention_days}")
    today = today or datetime.now(timezone.utc).date()
    report = RetentionReport()
    with engine.begin() as conn:
        report.partitions_created = ensure_partitions_ahead(conn, ahead_days, today)
        report.rollup_rows = refresh_rollups(conn)
        partitions = observation_partitions(conn)
    cutoff = today - timedelta(days=retention_days)
    for day in sorted(d for d in partitions if d < cutoff):
        if done := _archive_if_present(engine, day, data_dir):
            report.archived.append(done)
    with engine.begin() as conn:
        report.dead_letters_purged = conn.execute(text(
            "DELETE FROM telemetry_dead_letters WHERE received_at < now() - :d * interval '1 day'"),
            {"d": retention_days}).rowcount
    return report


def _archive_if_present(engine: Engine, day: date, data_dir: Path) -> dict | None:
    path = archive_path(data_dir, day)
    with engine.connect() as conn:
        logged = conn.execute(text("SELECT 1 FROM observation_archive_log WHERE day = :d"),
                              {"d": day}).first()
    if path.exists() and logged:
        # The day was archived and dropped before; late data re-created it: keep both files.
        n = 1
        while (candidate := path.with_name(f"part-{n}.parquet")).exists():
            n += 1
        os.replace(path, candidate)
    # (A file without a log entry is from a run that stopped before the drop: it is overwritten.)
    return archive_day(engine, day, data_dir)
