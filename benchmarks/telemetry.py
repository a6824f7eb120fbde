"""Benchmark: live telemetry, MQTT publish -> committed rows -> WebSocket, against the raw COPY ceiling.

In one run, on one scratch database and a private Mosquitto (persistence on, no queue limit):

1. batched: observations/s from the first publish (compact batch topic, 1,000 observations per QoS 1
   message) until every row is committed by ``citytwin telemetry ingest`` (a separate process);
2. per-message: the same with one SensorThings message per observation (two publisher processes);
3. the peer: raw binary COPY of the same number of rows straight into ``observations`` (same
   partitions, PK and BRIN): the ceiling any ingest path can reach on this server;
4. latency: 5,000 messages/s (one observation each, the value is the publish time) through broker, ingest,
   NOTIFY and the API process (``uvicorn citytwin.api.app:create_app``) to a WebSocket client: p50/p99.

Goals: batched >= 50,000 obs/s and >= 1/6 of the COPY ceiling; p99 < 250 ms.

    .venv/bin/python benchmarks/telemetry.py [--small]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from _common import ROOT, create_database, drop_database, scratch_server

sys.path.insert(0, str(ROOT))
BATCH_ROWS = 1000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat().replace("+00:00", "Z")


# -- set-up ------------------------------------------------------------------------------------------
def make_database(cluster, meters: int) -> tuple[str, str, list[int]]:
    from sqlalchemy import text

    from citytwin.db import make_engine, upgrade
    from citytwin.db.twin import init_twin

    name = create_database(cluster, "bench_tele")
    user = "citytwin" if os.geteuid() == 0 else os.environ.get("USER", "postgres")
    url = f"postgresql+psycopg://{user}@/{name}?host={cluster.socket_dir}"
    engine = make_engine(url)
    upgrade(engine)
    with engine.begin() as conn:
        init_twin(conn, "bench", "EPSG:32632")
        conn.execute(text("""
            WITH s AS (INSERT INTO sensors (name) VALUES ('meter sensor') RETURNING id),
                 p AS (INSERT INTO observed_properties (name) VALUES ('energy') RETURNING id),
                 m AS (SELECT g, format('MTR-%s', g) AS name FROM generate_series(1, :n) g),
                 th AS (INSERT INTO things (name, properties)
                        SELECT name, '{"kind": "meter"}' FROM m RETURNING id, name),
                 loc AS (INSERT INTO locations (name, location) SELECT name, ST_Transform(ST_SetSRID(
                             ST_MakePoint(8.3 + 0.0001 * g, 49.0), 4326), 32632) FROM m RETURNING id, name),
                 tl AS (INSERT INTO thing_locations SELECT th.id, loc.id FROM th JOIN loc USING (name))
            INSERT INTO datastreams (name, thing_id, sensor_id, observed_property_id, unit_of_measurement)
            SELECT th.name || '/energy', th.id, s.id, p.id, '{"symbol": "kWh"}' FROM th, s, p
        """), {"n": meters})
        ids = conn.execute(text("SELECT id FROM datastreams ORDER BY id")).scalars().all()
    engine.dispose()
    return name, url, ids


class Broker:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="citytwin-bench-mqtt-"))
        if os.geteuid() == 0:
            shutil.chown(self.dir, "mosquitto", "mosquitto")
        self.port = free_port()
        conf = self.dir / "mosquitto.conf"
        conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
                        f"persistence_location {self.dir}/\nmax_queued_messages 0\nmax_inflight_messages 0\n")
        self.proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_port(self.port)

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)
        shutil.rmtree(self.dir, ignore_errors=True)


def wait_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


# -- publishers (child processes: paho costs ~100 µs CPU per QoS 1 message) ---------------------------
def publisher(mqtt_url: str, client_id: str, messages: list[tuple[str, bytes]], started, done,
              window: int) -> None:
    from citytwin.telemetry.mqtt import connect_client

    sem = threading.Semaphore(window)
    client = connect_client(mqtt_url, client_id, clean=True, receive_maximum=None, max_inflight=window)
    client.on_publish = lambda *a: sem.release()
    while not client.is_connected():
        time.sleep(0.01)
    started.value = time.time()
    for topic, payload in messages:
        sem.acquire()
        client.publish(topic, payload, qos=1)
    for _ in range(window):
        sem.acquire()
    done.value = time.time()
    client.disconnect()
    client.loop_stop()


def paced_publisher(mqtt_url: str, client_id: str, ids: list[int], rate: float, seconds: float,
                    per_message: int, sent) -> None:
    """``rate`` observations/s, ``per_message`` per MQTT message (1: SensorThings topic, else the compact
    batch topic); each result is its publish time (epoch seconds), so the receiver can time it."""
    from citytwin.telemetry.mqtt import connect_client

    client = connect_client(mqtt_url, client_id, clean=True, receive_maximum=None, max_inflight=1000)
    while not client.is_connected():
        time.sleep(0.01)
    start, k = time.time(), 0
    while (now := time.time()) - start < seconds:
        due = int((now - start) * rate)
        while k + per_message <= due:
            t = time.time()
            if per_message == 1:
                client.publish(f"v1.1/Datastreams({ids[k % len(ids)]})/Observations",
                               json.dumps({"phenomenonTime": iso(t), "result": t}).encode(), qos=1)
            else:
                rows = [[ids[(k + j) % len(ids)], iso(t), t] for j in range(per_message)]
                client.publish("citytwin/ingest/batch", json.dumps(rows).encode(), qos=1)
            k += per_message
        time.sleep(0.002)
    sent.value = k
    time.sleep(1.0)
    client.disconnect()
    client.loop_stop()


def run_publishers(mqtt_url: str, batches: list[list[tuple[str, bytes]]], window: int = 200):
    ctx = multiprocessing.get_context("spawn")
    started = [ctx.Value("d", 0.0) for _ in batches]
    done = [ctx.Value("d", 0.0) for _ in batches]
    procs = [ctx.Process(target=publisher,
                         args=(mqtt_url, f"bench-pub-{i}", msgs, started[i], done[i], window))
             for i, msgs in enumerate(batches)]
    for p in procs:
        p.start()
    return procs, started, done


# -- measurement ---------------------------------------------------------------------------------------
def wait_committed(engine, ids: list[int], last: str, timeout: float = 600) -> float:
    """Wall time when every datastream's latest value reached ``last`` (rows are published in time order)."""
    from sqlalchemy import text

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            n = conn.execute(text("SELECT count(*) FROM latest_observations WHERE phenomenon_time >= :t"),
                             {"t": last}).scalar()
        if n == len(ids):
            return time.time()
        time.sleep(0.05)
    raise SystemExit(f"ingest did not finish within {timeout} s")


def count_between(engine, lo: str, hi: str) -> int:
    from sqlalchemy import text

    with engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM observations WHERE phenomenon_time >= :a AND "
                                 "phenomenon_time <= :b"), {"a": lo, "b": hi}).scalar()


def scenario_batched(mqtt_url: str, engine, ids: list[int], n: int, base: float) -> dict:
    steps = n // len(ids)
    rows = [[ds, iso(base + s * 0.5), float(s)] for s in range(steps) for ds in ids]
    messages = [("citytwin/ingest/batch", json.dumps(rows[k:k + BATCH_ROWS]).encode())
                for k in range(0, len(rows), BATCH_ROWS)]
    procs, started, _ = run_publishers(mqtt_url, [messages], window=50)
    end = wait_committed(engine, ids, rows[-1][1])
    for p in procs:
        p.join()
    stored = count_between(engine, rows[0][1], rows[-1][1])
    seconds = end - started[0].value
    return {"rows": len(rows), "stored": stored, "seconds": seconds, "rate": len(rows) / seconds,
            "messages": len(messages)}


def scenario_per_message(mqtt_url: str, engine, ids: list[int], n: int, base: float,
                         publishers: int = 2) -> dict:
    steps = n // len(ids)
    plan = [(ds, iso(base + s * 0.5), float(s)) for s in range(steps) for ds in ids]
    parts = [[(f"v1.1/Datastreams({ds})/Observations",
               json.dumps({"phenomenonTime": t, "result": v}).encode())
              for ds, t, v in plan if ds % publishers == k] for k in range(publishers)]
    procs, started, done = run_publishers(mqtt_url, parts, window=200)
    end = wait_committed(engine, ids, plan[-1][1])
    for p in procs:
        p.join()
    stored = count_between(engine, plan[0][1], plan[-1][1])
    seconds = end - min(s.value for s in started)
    publish_s = max(d.value for d in done) - min(s.value for s in started)
    return {"rows": len(plan), "stored": stored, "seconds": seconds, "rate": len(plan) / seconds,
            "publish_rate": len(plan) / publish_s}


def scenario_copy(url: str, ids: list[int], n: int, base: float) -> dict:
    """The peer: binary COPY straight into observations, in 100k-row chunks, one transaction each."""
    import numpy as np
    import psycopg

    from citytwin.telemetry.ingest import DAY_US, PartitionKeeper, copy_rows_binary
    from citytwin.telemetry.pg import conninfo

    steps = n // len(ids)
    ds = np.tile(np.asarray(ids, dtype=np.int64), steps)
    t = (np.repeat(np.arange(steps, dtype=np.int64), len(ids)) * 500_000 + int(base * 1e6))
    values = np.repeat(np.arange(steps, dtype=np.float64), len(ids))
    flags = np.zeros(len(ds), dtype=np.int16)
    chunk = 100_000
    # copy_rows_binary writes the stage layout (7 fields); the observations table takes the first 6.
    # The buffers are ready before the clock starts: the peer is the server's COPY alone.
    buffers = [_strip_last_field(copy_rows_binary(ds[k:k + chunk], t[k:k + chunk], values[k:k + chunk],
                                                  flags[k:k + chunk]))
               for k in range(0, len(ds), chunk)]
    with psycopg.connect(conninfo(url), autocommit=True) as pg:
        PartitionKeeper().ensure(pg, t // DAY_US)
        start = time.perf_counter()
        for buf in buffers:
            with pg.transaction(), pg.cursor() as cur, cur.copy(
                    "COPY observations (datastream_id, phenomenon_time, result_time, result, result_json, "
                    "quality_flags) FROM STDIN (FORMAT binary)") as copy:
                copy.write(buf)
        seconds = time.perf_counter() - start
    return {"rows": len(ds), "seconds": seconds, "rate": len(ds) / seconds}


def _strip_last_field(buf: bytes) -> bytes:
    """Drop the stage-only ``is_last`` field (last 5 bytes of every tuple) from a fixed-width stream."""
    import numpy as np

    from citytwin.telemetry.ingest import _COPY_HEADER, _COPY_TRAILER, _ROW

    body = np.frombuffer(buf[len(_COPY_HEADER):-len(_COPY_TRAILER)], dtype=_ROW).copy()
    body["nf"] = 6
    fields = [f for f in _ROW.names if f not in ("l6", "last")]
    packed = np.empty(len(body), dtype=np.dtype([(f, _ROW.fields[f][0]) for f in fields]))
    for f in fields:
        packed[f] = body[f]
    return _COPY_HEADER + packed.tobytes() + _COPY_TRAILER


def scenario_latency(mqtt_url: str, database_url: str, ids: list[int], rate: float, seconds: float,
                     per_message: int) -> dict:
    from websockets.sync.client import connect

    port = free_port()
    env = {**os.environ, "CITYTWIN_DATABASE_URL": database_url, "CITYTWIN_MQTT_URL": mqtt_url}
    api = subprocess.Popen([sys.executable, "-m", "uvicorn", "citytwin.api.app:create_app", "--factory",
                            "--port", str(port), "--log-level", "warning"], env=env, cwd=str(ROOT))
    latencies: list[float] = []
    try:
        wait_port(port)
        deadline = time.monotonic() + 60
        while True:     # the app factory migrates and imports before the socket answers upgrades
            try:
                ws = connect(f"ws://127.0.0.1:{port}/ws/telemetry", max_size=None, open_timeout=30)
                break
            except Exception:  # noqa: BLE001
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        ws.recv()                                     # snapshot
        stop = threading.Event()

        def read() -> None:
            while not stop.is_set():
                try:
                    frame = json.loads(ws.recv(timeout=0.5))
                except TimeoutError:
                    continue
                except Exception:  # noqa: BLE001 - closed
                    return
                now = time.time()
                latencies.extend(now - item["result"] for item in frame["data"] if item["result"] > 1e9)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        ctx = multiprocessing.get_context("spawn")
        sent = [ctx.Value("l", 0), ctx.Value("l", 0)]
        halves = [ids[0::2], ids[1::2]]
        procs = [ctx.Process(target=paced_publisher,
                             args=(mqtt_url, f"bench-lat-{per_message}-{k}", halves[k], rate / 2, seconds,
                                   per_message, sent[k]))
                 for k in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        time.sleep(1.0)
        stop.set()
        reader.join(timeout=2)
        ws.close()
    finally:
        api.send_signal(signal.SIGINT)
        try:
            api.wait(timeout=15)
        except subprocess.TimeoutExpired:
            api.kill()
    if not latencies:
        raise SystemExit("the WebSocket client received no observations")
    latencies.sort()
    pick = lambda q: latencies[min(int(q * len(latencies)), len(latencies) - 1)] * 1000  # noqa: E731
    return {"observations": sum(s.value for s in sent), "rate": sum(s.value for s in sent) / seconds,
            "messages_per_s": sum(s.value for s in sent) / seconds / per_message,
            "samples": len(latencies), "p50_ms": pick(0.50), "p99_ms": pick(0.99),
            "max_ms": latencies[-1] * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="a quick run (fewer rows, shorter latency test)")
    parser.add_argument("--workers", type=int, default=1, help="ingest processes (shared subscriptions)")
    args = parser.parse_args()
    n_batched = 200_000 if args.small else 1_000_000
    n_single = 20_000 if args.small else 50_000
    latency_s = 10.0 if args.small else 20.0
    meters = 500

    from citytwin.db import make_engine

    cluster = scratch_server()
    name, url, ids = make_database(cluster, meters)
    broker = Broker()
    ingest = subprocess.Popen([sys.executable, "-m", "citytwin", "telemetry", "ingest", "--client-id",
                               "bench-ingest", "--maintenance-minutes", "0", "--no-relay",
                               "--workers", str(args.workers)],
                              env={**os.environ, "CITYTWIN_DATABASE_URL": url,
                                   "CITYTWIN_MQTT_URL": broker.url},
                              cwd=str(ROOT), stdout=subprocess.DEVNULL)
    engine = make_engine(url)
    now = time.time()
    try:
        time.sleep(3.0)                                  # the subscriber's session is up
        print(f"batched: {n_batched:,} observations in {n_batched // BATCH_ROWS:,} messages ...", flush=True)
        batched = scenario_batched(broker.url, engine, ids, n_batched, now - 6 * 3600)
        print(f"per-message: {n_single:,} messages ...", flush=True)
        single = scenario_per_message(broker.url, engine, ids, n_single, now - 5 * 3600)
        print(f"COPY ceiling: {n_batched:,} rows ...", flush=True)
        ceiling = scenario_copy(url, ids, n_batched, now - 4 * 3600)
        print(f"latency: 5,000 observations/s in batches of 50 for {latency_s:.0f} s ...", flush=True)
        latency_b = scenario_latency(broker.url, url, ids, 5000.0, latency_s, per_message=50)
        print(f"latency: 5,000 messages/s (one observation each) for {latency_s:.0f} s ...", flush=True)
        latency = scenario_latency(broker.url, url, ids, 5000.0, latency_s, per_message=1)
    finally:
        ingest.send_signal(signal.SIGINT)
        try:
            ingest.wait(timeout=20)
        except subprocess.TimeoutExpired:
            ingest.kill()
        broker.close()
        engine.dispose()
        drop_database(cluster, name)
    children_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"\ningest: citytwin telemetry ingest --workers {args.workers}")
    print(f"{'path':<34}{'rows':>11}{'stored':>11}{'seconds':>9}{'obs/s':>11}{'/ COPY':>9}")
    for label, r in (("MQTT batched (1000 obs/message)", batched), ("MQTT one observation/message", single)):
        print(f"{label:<34}{r['rows']:>11,}{r['stored']:>11,}{r['seconds']:>9.2f}{r['rate']:>11,.0f}"
              f"{r['rate'] / ceiling['rate']:>9.2f}")
    print(f"{'raw binary COPY (peer, ceiling)':<34}{ceiling['rows']:>11,}{ceiling['rows']:>11,}"
          f"{ceiling['seconds']:>9.2f}{ceiling['rate']:>11,.0f}{1.0:>9.2f}")
    print(f"(per-message publishers alone acknowledged {single['publish_rate']:,.0f} msg/s)")
    print(f"\nbatched / COPY ceiling: {batched['rate'] / ceiling['rate']:.2f} (goal >= 0.17); "
          f"batched rate goal >= 50,000 obs/s")
    print("\nlatency publish -> WebSocket client (goal p99 < 250 ms):")
    for label, lat in (("50 observations/message", latency_b), ("1 observation/message", latency)):
        print(f"  {lat['rate']:>6,.0f} obs/s = {lat['messages_per_s']:>6,.0f} msg/s, {label:<24} "
              f"({lat['samples']:>6,} samples): p50 {lat['p50_ms']:>6.0f} ms  p99 {lat['p99_ms']:>6.0f} ms  "
              f"max {lat['max_ms']:>6.0f} ms")
    print(f"peak RSS of child processes (largest): {children_mb:.0f} MB")
    ok = batched["stored"] == batched["rows"] and single["stored"] == single["rows"]
    print("every published observation stored exactly once" if ok
          else "MISMATCH between published and stored rows")


if __name__ == "__main__":
    main()
