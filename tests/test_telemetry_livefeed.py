"""The live WebSocket feed on a real server: viewport and datastream filters, coalescing (at most ~10
frames/s however fast batches arrive), anomalies announced, a slow client dropped without slowing a
fast one, and fan-out across two API processes through LISTEN/NOTIFY."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from websockets.sync.client import connect

from _telemetry_support import ApiServer, free_port, iso, make_network, recent, telemetry_app
from citytwin.telemetry.ingest import Ingestor
from citytwin.telemetry.livefeed import LiveHub
from citytwin.telemetry.pg import conninfo
from citytwin.telemetry.validate import RawMessage

WX01_BOX = "8.295,49.0,8.305,49.02"        # only the weather station WX01 (lon 8.30)


class Reader(threading.Thread):
    """Reads frames from a WebSocket into a list, with arrival times."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.ws = connect(url, open_timeout=10, max_size=None)
        self.frames: list[tuple[float, dict]] = []
        self.received_bytes = 0
        self.largest_frame = 0
        self.closed: str | None = None
        self.start()

    def run(self) -> None:
        try:
            for message in self.ws:
                size = len(message.encode() if isinstance(message, str) else message)
                self.received_bytes += size
                self.largest_frame = max(self.largest_frame, size)
                self.frames.append((time.monotonic(), json.loads(message)))
        except Exception as exc:  # noqa: BLE001 - record how the connection ended
            self.closed = repr(exc)

    def updates(self) -> list[dict]:
        return [f for _, f in self.frames if f["type"] == "observations"]

    def latest(self) -> dict[int, float]:
        out: dict[int, float] = {}
        for _, frame in self.frames:
            for item in frame.get("data", []):
                out[item["datastream"]] = item["result"]
        return out

    def close(self) -> None:
        self.ws.close()


def wait_until(predicate, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def plausible(r: int, ds: int) -> float:
    """A value inside every property's plausible range that differs per round and datastream."""
    return round(10 + (r % 7) * 0.1 + ds * 0.001, 4)


def _ingest_rounds(database_url: str, ids: list[int], rounds: int, pause: float,
                   start_minutes_ago: float = 120, value=None, until=None) -> int:
    """Ingest ``rounds`` batches (one observation per datastream each), or fewer once ``until()`` is
    true; returns how many were ingested."""
    value = value or plausible
    t0 = recent(start_minutes_ago)
    ingestor = Ingestor()
    with psycopg.connect(conninfo(database_url), autocommit=True) as pg:
        for r in range(rounds):
            if until is not None and until():
                return r
            rows = [[ds, iso(t0 + timedelta(seconds=r)), value(r, ds)] for ds in ids]
            ingestor.ingest(pg, [RawMessage("citytwin/ingest/batch", json.dumps(rows).encode())])
            time.sleep(pause)
    return rounds


def test_filters_coalescing_and_anomalies(engine, database_url) -> None:
    ids = make_network(engine, n_meters=5)
    all_ids = sorted(ids.values())
    temp, level = ids["WX01:air_temperature"], ids["RG01:water_level"]
    with ApiServer(telemetry_app(engine)) as server:
        ws = server.url.replace("http", "ws") + "/ws/telemetry"
        boxed, picked = Reader(f"{ws}?bbox={WX01_BOX}"), Reader(f"{ws}?datastreams={level}")
        everything = Reader(ws)
        wait_until(lambda: all(r.frames for r in (boxed, picked, everything)))     # snapshots
        started = time.monotonic()
        _ingest_rounds(database_url, all_ids, rounds=40, pause=0.02)                 # ~40 batches in ~1.5 s
        elapsed = time.monotonic() - started
        wait_until(lambda: everything.latest() == {ds: plausible(39, ds) for ds in all_ids})
        wait_until(lambda: boxed.latest().get(temp) == plausible(39, temp)
                   and picked.latest().get(level) == plausible(39, level))
        # A spike after the warm-up is announced to the clients that see that datastream.
        spike = lambda r, ds: 10.3 + (0.2 if r % 2 else -0.2) + (30.0 if r == 59 else 0.0)  # noqa: E731
        _ingest_rounds(database_url, [temp], rounds=60, pause=0.0, start_minutes_ago=60, value=spike)
        wait_until(lambda: any(f["anomalies"] for f in everything.updates()))
        time.sleep(0.5)
        # A client changes its filter with a message (and gets a fresh snapshot); nonsense gets an error.
        boxed.ws.send(json.dumps({"datastreams": [level], "bbox": None}))
        boxed.ws.send("not json")
        wait_until(lambda: [f["type"] for _, f in boxed.frames if f["type"] != "observations"][-2:]
                   == ["snapshot", "error"])
        refiltered = [f for _, f in boxed.frames if f["type"] == "snapshot"][-1]
        for r in (boxed, picked, everything):
            r.close()
    assert [i["datastream"] for i in refiltered["data"]] == [level]
    boxed_ids = {i["datastream"] for f in boxed.updates() for i in f["data"]}
    assert boxed_ids == {temp, ids["WX01:rainfall_rate"]}
    assert {i["datastream"] for f in picked.updates() for i in f["data"]} == {level}
    assert {i["datastream"] for f in everything.updates() for i in f["data"]} == set(all_ids)
    # Coalescing: 40 batches became at most ~10 frames a second, each with the newest values.
    first_phase = [t for t, f in everything.frames
                   if f["type"] == "observations" and t <= started + elapsed + 0.3]
    assert len(first_phase) <= 10 * (elapsed + 0.3) + 2
    gaps = [b - a for a, b in zip(first_phase, first_phase[1:])]
    assert all(g >= 0.08 for g in gaps), gaps
    item = next(i for f in everything.updates() for i in f["data"] if i["datastream"] == temp)
    assert item["thing"] == "WX01" and item["lon"] == pytest.approx(8.30, abs=1e-6)
    anomalies = [a for f in everything.updates() for a in f["anomalies"]]
    assert [(a["datastream"], a["flags"]) for a in anomalies] == [(temp, ["spike"])]
    assert anomalies[0]["result"] == pytest.approx(40.5) and anomalies[0]["thing"] == "WX01"
    assert [a for f in picked.updates() for a in f["anomalies"]] == []


def _raw_ws(port: int, path: str) -> socket.socket:
    """A WebSocket client that completes the handshake and then never reads (tiny receive buffer)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                  "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert b" 101 " in head.split(b"\r\n")[0]
    return sock


def _below_the_hub(sock: socket.socket) -> int:
    """Bytes that a WebSocket peer which never reads can absorb below the hub's queue: the server's TCP
    send buffer (auto-tuned up to the ``net.ipv4.tcp_wmem`` maximum, which loopback's 64 kB segments reach
    at once; uvicorn sets no SO_SNDBUF) and one segment over it, the peer's receive buffer, and the asyncio
    transport's 64 KiB high-water mark (plus the frame written while below it: counted by the caller)."""
    try:
        send_max = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    except (OSError, ValueError, IndexError):      # not Linux (macOS auto-tunes up to 4 MB)
        send_max = 16 * 2**20
    return send_max + 2**16 + sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) + 2**16


def test_slow_client_is_dropped_without_blocking_a_fast_one(engine, database_url) -> None:
    ids = sorted(make_network(engine, n_meters=700).values())
    app = telemetry_app(engine)
    app.state.telemetry_hub = hub = LiveHub(conninfo(engine), queue_size=4, send_timeout=0.5)
    with ApiServer(app) as server:
        slow = _raw_ws(server.port, "/ws/telemetry")
        fast = Reader(server.url.replace("http", "ws") + "/ws/telemetry")
        wait_until(lambda: fast.frames)
        # Both clients are offered the same ~100 kB frames, up to 10 a second. The kernel alone holds
        # megabytes for the slow one, so feed until it has been offered more than fits below the hub plus
        # the frame its sender holds, the one written over the high-water mark and a full queue: it has
        # then stalled for send_timeout or overflowed its queue, and must have been dropped.
        buffered = _below_the_hub(slow)
        started = time.monotonic()
        rounds = _ingest_rounds(database_url, ids, rounds=300, pause=0.05, until=lambda: hub.dropped or (
            fast.received_bytes > buffered + (hub.queue_size + 3) * fast.largest_frame))
        duration = time.monotonic() - started
        wait_until(lambda: fast.latest().get(ids[-1]) == plausible(rounds - 1, ids[-1]))
        times = [t for t, f in fast.frames if f["type"] == "observations"]
        offered, clients_left = fast.received_bytes, len(hub.clients)
        fast.close()
        slow.close()
    assert hub.dropped == 1, f"the slow client was offered {offered} bytes and is still served"
    assert clients_left == 1                       # the fast one
    # The fast client kept getting frames at the coalescing rate (10/s, or one per batch if slower).
    assert len(times) >= 0.6 * min(rounds, 10 * duration)


def test_fan_out_reaches_two_api_processes(engine, database_url) -> None:
    ids = make_network(engine, n_meters=3)
    level = ids["RG02:water_level"]
    tests_dir = Path(__file__).resolve().parent
    launcher = ("import sys, uvicorn; sys.path.insert(0, sys.argv[3]); "
                "from _telemetry_support import telemetry_app; from citytwin.db.engine import make_engine; "
                "uvicorn.run(telemetry_app(make_engine(sys.argv[1])), host='127.0.0.1', "
                "port=int(sys.argv[2]), log_level='warning', lifespan='off')")
    ports = [free_port(), free_port()]
    procs = [subprocess.Popen([sys.executable, "-c", launcher, database_url, str(p), str(tests_dir)],
                              env={**os.environ, "PYTHONPATH": str(tests_dir.parent)}) for p in ports]
    readers = []
    try:
        for port in ports:
            deadline = time.monotonic() + 30
            while True:
                try:
                    readers.append(Reader(f"ws://127.0.0.1:{port}/ws/telemetry?datastreams={level}"))
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
        wait_until(lambda: all(r.frames for r in readers))
        _ingest_rounds(database_url, [level], rounds=3, pause=0.2)
        wait_until(lambda: all(r.latest().get(level) == plausible(2, level) for r in readers))
    finally:
        for r in readers:
            r.close()
        for p in procs:
            p.terminate()
            p.wait(timeout=10)
    assert all(len(r.updates()) >= 1 for r in readers)
