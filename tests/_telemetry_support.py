"""Helpers for the telemetry tests: a small sensor network, a private Mosquitto, MQTT clients."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import geopandas as gpd
import shapely
from sqlalchemy import Engine, text

from citytwin.db.sensors import load_sensors
from citytwin.db.twin import init_twin

CRS = "EPSG:32632"          # UTM 32N; the network sits around Karlsruhe (8.40 E, 49.01 N)
UNITS = {"air_temperature": ("degree Celsius", "°C"), "rainfall_rate": ("millimetre per hour", "mm/h"),
         "water_level": ("metre", "m"), "active_power": ("megawatt", "MW"),
         "energy": ("kilowatt hour", "kWh")}


def make_network(engine: Engine, n_meters: int = 20) -> dict[str, int]:
    """A twin with a weather station, two gauges, a substation load and ``n_meters`` meters; returns
    datastream name -> id.

    Things sit on a 0.01-degree grid west to east from lon 8.30 at lat 49.01 (WX01, RG01, RG02,
    SUB1-LOAD, then the meters), so bbox tests can pick them. The meters are inserted set-wise (fast).
    """
    rows = []
    spec = [("WX01", "weather", "air_temperature"), ("WX01", "weather", "rainfall_rate"),
            ("RG01", "river_level", "water_level"), ("RG02", "river_level", "water_level"),
            ("SUB1-LOAD", "substation_load", "active_power"), ("MTR-000", "meter", "energy")]
    things = list(dict.fromkeys(s[0] for s in spec))
    for thing, kind, prop in spec:
        k = things.index(thing)
        rows.append({"thing_id": thing, "name": f"{kind} {thing}", "kind": kind, "observed_property": prop,
                     "unit_name": UNITS[prop][0], "unit_symbol": UNITS[prop][1], "unit_definition": "",
                     "asset_id": "", "result_type": "number",
                     "geometry": shapely.Point(8.30 + 0.01 * k, 49.01)})
    frame = gpd.GeoDataFrame(rows, geometry="geometry", crs="EPSG:4326")
    with engine.begin() as conn:
        init_twin(conn, "telemetry-test", CRS)
    load_sensors(engine, frame, source="test", path="memory")
    with engine.begin() as conn:
        # Meters 1..n-1 like MTR-000, in bulk.
        conn.execute(text("""
            WITH m AS (SELECT g, format('MTR-%s', lpad(g::text, 3, '0')) AS name
                       FROM generate_series(1, :n - 1) g),
            th AS (INSERT INTO things (name, description, properties)
                   SELECT name, 'meter ' || name, '{"kind": "meter", "source": "test"}' FROM m
                   RETURNING id, name),
            loc AS (INSERT INTO locations (name, location)
                    SELECT m.name,
                           ST_Transform(ST_SetSRID(ST_MakePoint(8.34 + 0.01 * m.g, 49.01), 4326), 32632)
                    FROM m RETURNING id, name),
            tl AS (INSERT INTO thing_locations SELECT th.id, loc.id FROM th JOIN loc USING (name))
            INSERT INTO datastreams (name, description, thing_id, sensor_id, observed_property_id,
                                     unit_of_measurement, result_type)
            SELECT th.name || :suffix, 'energy at ' || th.name, th.id, d.sensor_id, d.observed_property_id,
                   d.unit_of_measurement, 'number'
            FROM th, (SELECT * FROM datastreams WHERE name = 'MTR-000:energy') d
        """), {"n": n_meters, "suffix": ":energy"})
        return dict(conn.execute(text("SELECT name, id FROM datastreams")).all())


def iso(t: datetime) -> str:
    return t.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def recent(minutes_ago: float = 60.0) -> datetime:
    """A start time inside the raw window, on a whole second."""
    return (datetime.now(timezone.utc) - timedelta(minutes=minutes_ago)).replace(microsecond=0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """A private Mosquitto with persistence and no queue limit, which a test may stop and restart."""

    def __init__(self) -> None:
        # Mosquitto started as root runs as user "mosquitto": its directory must be reachable by it.
        workdir = Path(tempfile.mkdtemp(prefix="citytwin-mqtt-"))
        if os.geteuid() == 0 and _has_user("mosquitto"):
            shutil.chown(workdir, "mosquitto", "mosquitto")
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {workdir}/\nmax_queued_messages 0\nmax_inflight_messages 0\n"
            f"log_dest file {workdir}/mosquitto.log\n")

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen([mosquitto_binary(), "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not start on port {self.port}: {self.log()[-1000:]}")

    def stop(self) -> None:
        """Graceful stop: Mosquitto writes its persistence file (sessions, queued messages) on SIGTERM."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=20)
            self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def log(self) -> str:
        path = self.workdir / "mosquitto.log"
        return path.read_text(errors="replace") if path.exists() else ""


def mosquitto_binary() -> str:
    """Debian puts the broker in /usr/sbin, which is not on a normal user's PATH."""
    return shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def _has_user(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


class Publisher:
    """A QoS 1 publisher that survives broker restarts (paho resends unacknowledged messages)."""

    def __init__(self, url: str, client_id: str, window: int = 500) -> None:
        from citytwin.telemetry.mqtt import connect_client

        self.window = threading.Semaphore(window)
        self.acked = 0
        self._lock = threading.Lock()
        self.client = connect_client(url, client_id, clean=True, receive_maximum=None, max_inflight=window)
        self.client.on_publish = self._on_publish

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._lock:
            self.acked += 1
        self.window.release()

    def publish(self, topic: str, payload: object, qos: int = 1) -> None:
        self.window.acquire()
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.client.publish(topic, data, qos=qos)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def publish_messages(url: str, client_id: str, messages: list[tuple[str, bytes]], progress, acked,
                     window: int = 200) -> None:
    """Publish ``messages`` QoS 1 (run in a child process: paho costs ~100 µs of CPU per QoS 1 message,
    so publisher and ingest would otherwise share one interpreter lock). ``progress``/``acked`` are
    ``multiprocessing.Value`` counters the parent watches."""
    publisher = Publisher(url, client_id, window=window)
    try:
        for i, (topic, payload) in enumerate(messages):
            publisher.publish(topic, payload)
            if i % 100 == 0:
                progress.value = i
        progress.value = len(messages)
        deadline = time.monotonic() + 120
        while publisher.acked < len(messages) and time.monotonic() < deadline:
            acked.value = publisher.acked
            time.sleep(0.05)
        acked.value = publisher.acked
    finally:
        publisher.close()


def telemetry_app(engine, **settings_overrides):
    """The API with the telemetry routers (SensorThings, ingest, live feed, tasks) on ``engine``."""
    from citytwin.api.app import create_app
    from citytwin.api.routers import sensorthings, tasks, telemetry
    from citytwin.config import Settings

    settings = Settings(database_url=engine.url.render_as_string(hide_password=False),
                        data_dir=Path(tempfile.gettempdir()) / "citytwin-telemetry-tests",
                        **settings_overrides)
    return create_app(settings, engine=engine,
                      routers=[sensorthings.router, telemetry.router, telemetry.ws_router, tasks.router])


class ApiServer:
    """Serve an ASGI app with uvicorn in a thread on a free port (for real HTTP/WebSocket clients)."""

    def __init__(self, app) -> None:
        import uvicorn

        self.port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "ApiServer":
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
