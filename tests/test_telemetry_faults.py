"""Fault tests on real Mosquitto and PostgreSQL: 50,000 QoS 1 observations, one message each, while the
broker restarts (one run) or the database restarts (another run). Afterwards every observation is stored
exactly once: the count, the number of distinct keys and a checksum over the values all match."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from _telemetry_support import Broker, iso, make_network, publish_messages, recent
from citytwin.db.embedded import EmbeddedCluster
from citytwin.db.engine import make_engine
from citytwin.db.migrate import upgrade
from citytwin.telemetry.mqtt_ingest import IngestService

N_OBSERVATIONS = 50_000


def _plan(ids: list[int]) -> list[tuple[int, str, float]]:
    """(datastream, time, value): integer values so the checksum (a float8 sum) is exact."""
    t0 = recent(600)
    per = N_OBSERVATIONS // len(ids)
    return [(ds, iso(t0 + timedelta(seconds=k)), float(ds * 100_000 + k)) for k in range(per) for ds in ids]


def _publish_with_fault(broker: Broker, plan, fault, at_fraction: float = 0.3) -> None:
    """Publish from a child process; run ``fault`` once ``at_fraction`` of the plan is published."""
    messages = [(f"v1.1/Datastreams({ds})/Observations",
                 json.dumps({"phenomenonTime": t, "result": v}).encode()) for ds, t, v in plan]
    ctx = multiprocessing.get_context("spawn")
    progress, acked = ctx.Value("l", 0), ctx.Value("l", 0)
    child = ctx.Process(target=publish_messages,
                        args=(broker.url, "fault-publisher", messages, progress, acked))
    child.start()
    try:
        while progress.value < len(messages) * at_fraction and child.is_alive():
            time.sleep(0.02)
        fault()
        child.join(timeout=180)
        assert acked.value == len(messages), f"broker acknowledged only {acked.value} of {len(messages)}"
    finally:
        if child.is_alive():
            child.kill()


def _wait_stored(engine, expected: int, service: IngestService, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    count = -1
    while time.monotonic() < deadline:
        try:
            with engine.connect() as conn:
                count = conn.execute(text("SELECT count(*) FROM observations")).scalar()
        except Exception:  # noqa: BLE001 - the database may still be coming back
            count = -1
        if count >= expected and time.monotonic() - service.stats.last_commit > 1.0:
            return
        time.sleep(0.25)
    raise AssertionError(f"only {count} of {expected} observations stored after {timeout} s; "
                         f"stats {service.stats}")


def _assert_exactly_once(engine, plan) -> None:
    with engine.connect() as conn:
        count, keys, total = conn.execute(text(
            "SELECT count(*), count(DISTINCT (datastream_id, phenomenon_time)), sum(result) "
            "FROM observations")).one()
        dead = conn.execute(text("SELECT count(*) FROM telemetry_dead_letters")).scalar()
    assert dead == 0
    assert count == keys == len(plan)
    assert total == sum(v for _, _, v in plan)


@pytest.mark.slow
def test_broker_restart_loses_nothing(engine, database_url) -> None:
    ids = list(make_network(engine, n_meters=20).values())
    plan = _plan(ids)
    broker = Broker()
    broker.start()
    service = IngestService(database_url, broker.url, client_id="fault-ingest-broker", relay=False).start()

    def restart_broker() -> None:
        broker.stop()           # SIGTERM: Mosquitto saves sessions and queued messages
        time.sleep(1.0)
        broker.start()

    try:
        _publish_with_fault(broker, plan, restart_broker)
        _wait_stored(engine, len(plan), service)
    finally:
        service.stop()
        broker.close()
    _assert_exactly_once(engine, plan)
    assert service.stats.messages >= len(plan)


@pytest.fixture
def private_cluster():
    """A PostgreSQL cluster of this test alone, so restarting it disturbs no other test."""
    base = Path(tempfile.mkdtemp(prefix="citytwin-pgfault-"))
    os.chmod(base, 0o755)       # the server may run as the unprivileged service user
    cluster = EmbeddedCluster.for_data_dir(base)
    url = cluster.ensure_running()
    try:
        yield cluster, url
    finally:
        cluster.stop()
        shutil.rmtree(cluster.base, ignore_errors=True)
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow
def test_database_restart_loses_nothing(private_cluster) -> None:
    cluster, url = private_cluster
    engine = make_engine(url)
    upgrade(engine)
    ids = list(make_network(engine, n_meters=20).values())
    plan = _plan(ids)
    broker = Broker()
    broker.start()
    # This run writes from a child process (the CLI's default), the broker run writes inline.
    service = IngestService(url, broker.url, client_id="fault-ingest-db", relay=False,
                            writer_process=True).start()

    def restart_database() -> None:
        cluster.stop()          # pg_ctl stop -m fast: sessions are terminated mid-transaction
        time.sleep(2.0)
        cluster.ensure_running()

    try:
        _publish_with_fault(broker, plan, restart_database)
        _wait_stored(engine, len(plan), service)
    finally:
        service.stop()
        broker.close()
    _assert_exactly_once(engine, plan)
    assert service.stats.db_retries >= 1          # the restart really hit the writer
    engine.dispose()
