"""Batch ingest on the real database: validation and dead letters, idempotency, partitions, latest values,
anomaly flags, and the HTTP batch endpoint."""

from __future__ import annotations

import json
import math
from datetime import timedelta

import numpy as np
import psycopg
import pytest
from sqlalchemy import text

from _telemetry_support import iso, make_network, recent
from citytwin.telemetry import anomaly
from citytwin.telemetry.ingest import Ingestor
from citytwin.telemetry.pg import conninfo
from citytwin.telemetry.validate import IngestLimits, RawMessage, parse_times


@pytest.fixture
def network(engine):
    return make_network(engine, n_meters=3)


@pytest.fixture
def pg(database_url):
    with psycopg.connect(conninfo(database_url), autocommit=True) as conn:
        yield conn


def _batch(rows) -> RawMessage:
    return RawMessage("citytwin/ingest/batch", json.dumps(rows).encode())


def test_parse_times_fast_and_slow_paths_agree() -> None:
    zulu = ["2025-03-01T12:00:00Z", "2025-03-01T12:00:00.250Z"]
    mixed = ["2025-03-01T14:00:00+02:00", "2025-03-01T12:00:00.250000",
             "2025-03-01T12:00:00Z/2025-03-01T13:00:00Z", "yesterday", 17]
    fast, slow = parse_times(zulu), parse_times(mixed)
    assert fast[0] == slow[0] == 1740830400 * 1_000_000
    assert fast[1] == slow[1] == fast[0] + 250_000
    assert (slow[2:] == np.iinfo(np.int64).min).all()


def test_bad_input_goes_to_dead_letters_and_good_rows_around_it_are_stored(network, pg, engine) -> None:
    temp = network["WX01:air_temperature"]
    t0 = recent(30)
    good = [[temp, iso(t0 + timedelta(seconds=i)), 10.0 + i] for i in range(5)]
    messages = [
        _batch(good[:2] + [[999999, iso(t0), 1.0],                            # unknown datastream
                           [temp, iso(t0 + timedelta(seconds=60)), "warm"],     # wrong result type
                           [temp, iso(t0 + timedelta(days=2)), 1.0],            # far in the future
                           [temp, "not a time", 1.0],                           # unparseable time
                           [temp, iso(t0 - timedelta(days=90)), 1.0],           # older than the raw window
                           [temp, iso(t0 + timedelta(seconds=61)), True]]      # boolean for a number stream
               + good[2:]),
        RawMessage("citytwin/ingest/batch",
                   b"[[%d, \"%s\", NaN]]" % (temp, iso(t0 + timedelta(seconds=70)).encode())),
        RawMessage("citytwin/ingest/batch", b"{not json"),
        RawMessage("citytwin/ingest/batch", b"[" + b"1," * 3_000_000 + b"1]"),   # 6 MB > 4 MiB limit
        RawMessage("citytwin/ingest/batch", b'{"hello": "world"}'),
        RawMessage("v1.1/Datastreams(%d)/Observations" % temp,
                   json.dumps({"phenomenonTime": iso(t0 + timedelta(seconds=5)), "result": 15.5}).encode()),
        RawMessage("some/other/topic", b"[]"),
    ]
    result = Ingestor().ingest(pg, messages)
    assert result.stored == 6 and result.received == 6
    with engine.connect() as conn:
        reasons = conn.execute(text("SELECT reason, count(*) FROM telemetry_dead_letters "
                                    "GROUP BY reason")).all()
        stored = conn.execute(text("SELECT result FROM observations WHERE datastream_id = :d ORDER BY 1"),
                              {"d": temp}).scalars().all()
        detail = conn.execute(text("SELECT detail, item_index, payload FROM telemetry_dead_letters "
                                   "WHERE reason = 'unknown_datastream'")).one()
    assert dict(reasons) == {"unknown_datastream": 1, "bad_result_type": 2, "future_time": 1,
                             "bad_time": 1, "too_old": 1, "non_finite": 1, "malformed_json": 1,
                             "oversized": 1, "bad_shape": 1, "unknown_topic": 1}
    assert stored == [10.0, 11.0, 12.0, 13.0, 14.0, 15.5]
    assert "999999" in detail[0] and detail[1] == 2 and "999999" in detail[2]


def test_ingest_is_idempotent_and_keeps_latest_values(network, pg, engine) -> None:
    level = network["RG01:water_level"]
    t0 = recent(120)
    rows = [[level, iso(t0 + timedelta(minutes=i)), 2.0 + 0.01 * i] for i in range(100)]
    ingestor = Ingestor()
    first = ingestor.ingest(pg, [_batch(rows[:60]), _batch(rows[40:])])     # overlap inside one batch
    again = ingestor.ingest(pg, [_batch(rows)])                               # a full redelivery
    assert (first.stored, first.received, first.duplicates) == (100, 120, 20)
    assert (again.stored, again.duplicates, again.changed) == (0, 100, [])
    with engine.connect() as conn:
        count, total = conn.execute(text("SELECT count(*), sum(result) FROM observations")).one()
        latest = conn.execute(text("SELECT phenomenon_time, result FROM latest_observations "
                                   "WHERE datastream_id = :d"), {"d": level}).one()
    assert count == 100 and total == pytest.approx(sum(r[2] for r in rows))
    assert latest[1] == pytest.approx(2.99) and iso(latest[0]) == rows[-1][1]


def test_a_message_for_a_day_without_partition_creates_it(network, pg, engine) -> None:
    power = network["SUB1-LOAD:active_power"]
    ingestor = Ingestor(limits=IngestLimits(max_age=timedelta(days=40)))
    when = recent(0) - timedelta(days=20)       # a day nobody created ahead of time
    day = when.strftime("%Y%m%d")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT to_regclass(:p)"), {"p": f"observations_{day}"}).scalar() is None
    result = ingestor.ingest(pg, [_batch([[power, iso(when), 4.2]])])
    assert result.stored == 1
    # A partition dropped behind the ingestor's back (retention in another process) is recreated too.
    pg.execute(f"DROP TABLE observations_{day}")
    assert ingestor.ingest(pg, [_batch([[power, iso(when), 4.2]])]).stored == 1
    with engine.connect() as conn:
        where = conn.execute(text("SELECT tableoid::regclass::text FROM observations")).scalar()
    assert where == f"observations_{day}"


def test_anomaly_flags_spike_range_flatline_and_late(network, pg, engine) -> None:
    temp = network["WX01:air_temperature"]
    rng = np.random.default_rng(3)
    t0 = recent(600)
    values = list(15 + rng.normal(0, 0.5, 200))
    values[150] = 35.0          # spike: ~40 sigma
    values[170] = 80.0          # outside -60..60 degC
    rows = [[temp, iso(t0 + timedelta(minutes=i)), float(v)] for i, v in enumerate(values)]
    ingestor = Ingestor()
    for start in range(0, 200, 50):             # several batches: the state persists between them
        ingestor.ingest(pg, [_batch(rows[start:start + 50])])
    flat = [[temp, iso(t0 + timedelta(minutes=200 + i)), 14.8] for i in range(130)]
    result = ingestor.ingest(pg, [_batch(flat)])
    late = ingestor.ingest(pg, [_batch([[temp, iso(t0 + timedelta(minutes=100, seconds=30)), 15.0]])])
    with engine.connect() as conn:
        flags = dict(conn.execute(text(
            "SELECT round(extract(epoch FROM phenomenon_time - :t0) / 60, 1), quality_flags "
            "FROM observations WHERE datastream_id = :d AND quality_flags <> 0"),
            {"d": temp, "t0": t0}).all())
    assert flags[150] & anomaly.SPIKE and flags[170] & anomaly.RANGE
    assert flags[100.5] == anomaly.LATE
    flat_flagged = sorted(k for k, v in flags.items() if v & anomaly.FLATLINE)
    assert flat_flagged[0] == 200 + 119 and len(flat_flagged) == 11      # the 120th repeat onwards
    assert result.flagged >= 11 and late.flagged == 0
    # Ordinary noise is not flagged: only the planted rows (plus the step into the flat line).
    noise_flags = [k for k, v in flags.items() if k < 200 and k not in (150, 170, 100.5)]
    assert len(noise_flags) <= 1
    mean = pg.execute("SELECT mean FROM anomaly_state WHERE datastream_id = %s", (temp,)).fetchone()[0]
    assert not math.isnan(mean)


def test_non_numeric_datastreams_store_json_results(network, pg, engine) -> None:
    """A boolean datastream (e.g. a door contact) keeps its results as JSON; numbers are refused there."""
    door = network["MTR-000:energy"]
    with engine.begin() as conn:
        conn.execute(text("UPDATE datastreams SET result_type = 'boolean' WHERE id = :d"), {"d": door})
    t0 = recent(10)
    rows = [[door, iso(t0), True], [door, iso(t0 + timedelta(seconds=1)), False],
            [door, iso(t0 + timedelta(seconds=2)), 1.0]]
    result = Ingestor().ingest(pg, [_batch(rows)])
    assert (result.stored, result.rejected) == (2, 1) and result.dead[0].reason == "bad_result_type"
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT result, result_json FROM observations WHERE datastream_id = :d "
                                   "ORDER BY phenomenon_time"), {"d": door}).all()
        latest = conn.execute(text("SELECT result_json FROM latest_observations WHERE datastream_id = :d"),
                              {"d": door}).scalar()
    assert stored == [(None, True), (None, False)] and latest is False
