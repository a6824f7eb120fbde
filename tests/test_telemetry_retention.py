"""Storage tiers on the real database: partitions ahead, hourly rollups against a pandas reference,
old raw days archived to Parquet (read back with pandas and Dask) and dropped, idempotent re-runs."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import psycopg
import pytest
from sqlalchemy import text

from _telemetry_support import iso, make_network
from citytwin.telemetry.ingest import Ingestor
from citytwin.telemetry.pg import conninfo
from citytwin.telemetry.store import archive_path, observation_partitions, refresh_rollups, run_retention
from citytwin.telemetry.validate import IngestLimits, RawMessage


ROLLUPS = "SELECT datastream_id, hour, n, min, mean, max FROM observation_rollups_hourly"


def _ingest(database_url: str, rows: list) -> None:
    ingestor = Ingestor(limits=IngestLimits(max_age=timedelta(days=60)))
    with psycopg.connect(conninfo(database_url), autocommit=True) as pg:
        for k in range(0, len(rows), 5000):
            ingestor.ingest(pg, [RawMessage("citytwin/ingest/batch", json.dumps(rows[k:k + 5000]).encode())])


def test_retention_archives_old_days_to_parquet_and_keeps_rollups(engine, database_url, tmp_path) -> None:
    ids = make_network(engine, n_meters=1)
    streams = [ids["WX01:air_temperature"], ids["RG01:water_level"], ids["SUB1-LOAD:active_power"]]
    today = datetime.now(timezone.utc).date()
    rng = np.random.default_rng(5)
    rows = []
    old_days = [today - timedelta(days=d) for d in (40, 39, 38)]
    for day in old_days + [today - timedelta(days=1)]:
        start = datetime.combine(day, datetime.min.time(), tzinfo=timezone.utc)
        for ds in streams:
            for minute in range(0, 1440, 7):            # every 7 minutes: uneven counts per hour
                rows.append([ds, iso(start + timedelta(minutes=minute, seconds=int(rng.integers(60)))),
                             round(float(10 + 5 * np.sin(minute / 200) + rng.normal()), 3)])
    _ingest(database_url, rows)
    frame = pd.DataFrame(rows, columns=["datastream_id", "phenomenon_time", "result"])
    frame["phenomenon_time"] = pd.to_datetime(frame["phenomenon_time"], utc=True)

    report = run_retention(engine, tmp_path, retention_days=30)

    assert [a["day"] for a in report.archived] == [d.isoformat() for d in old_days]
    with engine.connect() as conn:
        parts = observation_partitions(conn)
        remaining = conn.execute(text("SELECT count(*) FROM observations")).scalar()
        logged = conn.execute(text("SELECT day, rows, dropped_at IS NOT NULL FROM observation_archive_log "
                                   "ORDER BY day")).all()
        rollups = pd.read_sql(text(ROLLUPS), conn)
    assert not set(old_days) & set(parts)                                       # raw old days are gone
    assert {today + timedelta(days=k) for k in range(0, 8)} <= set(parts)      # and the next week exists
    per_day = frame.groupby(frame["phenomenon_time"].dt.date).size()
    assert remaining == per_day[today - timedelta(days=1)]
    assert [(d, r, dropped) for d, r, dropped in logged] == [(d, per_day[d], True) for d in old_days]

    # The archive reads back exactly, with pandas (one dataset, hive 'date' column) and with Dask.
    archive_dir = archive_path(tmp_path, old_days[0]).parent.parent
    keys = ["datastream_id", "phenomenon_time"]
    back = pd.read_parquet(archive_dir).sort_values(keys).reset_index(drop=True)
    old = frame[frame["phenomenon_time"].dt.date.isin(old_days)].sort_values(
        ["datastream_id", "phenomenon_time"]).reset_index(drop=True)
    assert len(back) == len(old)
    assert (back["datastream_id"].to_numpy() == old["datastream_id"].to_numpy()).all()
    assert (back["phenomenon_time"].to_numpy() == old["phenomenon_time"].to_numpy()).all()
    assert (back["result"].to_numpy() == old["result"].to_numpy()).all()
    assert sorted(back["date"].astype(str).unique()) == [d.isoformat() for d in old_days]
    import dask.dataframe as dd

    assert len(dd.read_parquet(str(archive_dir))) == len(old)

    # Rollups: every closed hour of every day, equal to a pandas reference.
    frame["hour"] = frame["phenomenon_time"].dt.floor("h")
    ref = frame.groupby(["datastream_id", "hour"])["result"].agg(["count", "min", "mean", "max"])
    stored = rollups.assign(hour=pd.to_datetime(rollups["hour"], utc=True))
    merged = ref.reset_index().merge(stored, on=["datastream_id", "hour"], how="outer", indicator=True)
    assert (merged["_merge"] == "both").all()
    assert (merged["count"] == merged["n"]).all()
    assert np.allclose(merged["min_x"], merged["min_y"]) and np.allclose(merged["max_x"], merged["max_y"])
    assert np.allclose(merged["mean_x"], merged["mean_y"], rtol=1e-12)

    # Idempotent: running again archives nothing and leaves the rollups as they are.
    again = run_retention(engine, tmp_path, retention_days=30)
    assert again.archived == [] and again.partitions_created == 0
    with engine.begin() as conn:
        refresh_rollups(conn, since=datetime.combine(old_days[0], datetime.min.time(), tzinfo=timezone.utc))
        after = pd.read_sql(text(ROLLUPS), conn)
    pd.testing.assert_frame_equal(after.sort_values(["datastream_id", "hour"]).reset_index(drop=True),
                                  rollups.sort_values(["datastream_id", "hour"]).reset_index(drop=True))


def test_retention_refuses_nonsense(engine, tmp_path) -> None:
    from citytwin.errors import InputError

    with pytest.raises(InputError, match="at least 1 day"):
        run_retention(engine, tmp_path, retention_days=0)
