"""A telemetry simulator: realistic streams for the twin's sensors, and devices that answer commands.

Signals (simulated time t, local solar hour h; deterministic for a seed):

* air temperature: ``T = T_mean + A cos(2 pi (h - 15) / 24) + e``, ``e`` AR(1) (phi 0.95, sd 0.3 K):
  the diurnal cycle peaks mid-afternoon (A = 5 K, T_mean = 12 degC, a station offset of +-1 K).
* rainfall rate: a city-wide two-state Markov chain (storm onset 0.05 /h, mean storm length 2 h);
  in a storm each station's intensity is gamma-distributed (shape 2, mean 4 mm/h), AR(1) in time.
* river level: a linear reservoir fed by the mean rain, ``dh/dt = k r(t) - (h - h0) / tau``
  (k = 0.03 m per mm/h per hour, tau = 12 h; Nash 1957), so levels rise after storms and recede.
* substation / feeder load: ``P = P_peak (0.55 + 0.25 g(h; 8, 2) + 0.35 g(h; 19, 2.5)) (1 + 0.02 e)``
  with Gaussian bumps g (morning and evening peaks), P_peak 12 MW per substation, 3 MW per feeder.
* smart meters: cumulative energy, ``dE/dt`` = a household profile (0.3 kW base, 0.5 kW morning,
  0.9 kW evening peaks) times a per-meter scale (0.6-1.6).

``DeviceResponder`` plays the devices: it answers ``citytwin/cmd/{thing}`` with ``accepted`` and then
``done`` (reporting the new state), once per task id; things listed as silent never answer.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

from citytwin.telemetry.mqtt import CMD_PREFIX, connect_client

log = logging.getLogger("citytwin.telemetry.simulator")


@dataclass(frozen=True)
class SimDatastream:
    id: int
    thing: str
    observed_property: str
    kind: str = ""


def load_datastreams(engine) -> list[SimDatastream]:
    """The twin's datastreams with their thing and observed property."""
    from sqlalchemy import text

    with engine.connect() as conn:
        rows = conn.execute(text("""
            SELECT d.id, t.name, p.name, coalesce(t.properties->>'kind', '')
            FROM datastreams d JOIN things t ON t.id = d.thing_id
            JOIN observed_properties p ON p.id = d.observed_property_id
            WHERE d.result_type = 'number' ORDER BY d.id
        """)).all()
    return [SimDatastream(*r) for r in rows]


def _bump(h: float, centre: float, width: float) -> float:
    return math.exp(-(((h - centre + 12) % 24 - 12) / width) ** 2)


class CitySignals:
    """The state of every simulated signal; ``step(t)`` advances to epoch seconds ``t``."""

    def __init__(self, datastreams: list[SimDatastream], seed: int = 7, start: float | None = None) -> None:
        self.streams = datastreams
        self.rng = np.random.default_rng(seed)
        n = len(datastreams)
        self.offset = self.rng.uniform(-1, 1, n)                # station / asset individuality
        self.scale = self.rng.uniform(0.6, 1.6, n)
        self.noise = np.zeros(n)
        self.rain_noise = np.ones(n)
        self.level = np.array([1.5 + 0.3 * (i % 5) for i in range(n)], dtype=float)
        self.energy = self.rng.uniform(1_000, 20_000, n)
        self.storm = False
        self.t = start if start is not None else time.time()

    def step(self, t: float) -> np.ndarray:
        """Values of all datastreams at epoch seconds ``t`` (after the previous step)."""
        dt_h = max(t - self.t, 0.0) / 3600.0
        self.t = t
        h = (t % 86400) / 3600.0
        rng = self.rng
        if self.storm:
            self.storm = rng.random() > 1 - math.exp(-dt_h / 2.0)
        else:
            self.storm = rng.random() < 1 - math.exp(-0.05 * dt_h)
        phi = math.exp(-dt_h / 0.3) if dt_h > 0 else 1.0
        self.noise = phi * self.noise + math.sqrt(max(1 - phi * phi, 0)) * rng.normal(0, 1, len(self.streams))
        self.rain_noise = 0.9 * self.rain_noise + 0.1 * rng.gamma(2.0, 0.5, len(self.streams))
        out = np.zeros(len(self.streams))
        rain_mean = 4.0 * float(np.mean(self.rain_noise)) if self.storm else 0.0
        for i, ds in enumerate(self.streams):
            prop = ds.observed_property
            if prop == "air_temperature":
                out[i] = 12 + self.offset[i] + 5 * math.cos(2 * math.pi * (h - 15) / 24) + 0.3 * self.noise[i]
            elif prop == "rainfall_rate":
                out[i] = 4.0 * self.rain_noise[i] if self.storm else 0.0
            elif prop == "water_level":
                h0 = 1.5 + 0.3 * (i % 5)
                self.level[i] += dt_h * (0.03 * rain_mean - (self.level[i] - h0) / 12.0)
                out[i] = self.level[i] + 0.002 * self.noise[i]
            elif prop == "active_power":
                peak = 3.0 if "FDR" in ds.thing or ds.thing.count("-") > 1 else 12.0
                shape = 0.55 + 0.25 * _bump(h, 8, 2) + 0.35 * _bump(h, 19, 2.5)
                out[i] = peak * shape * (1 + 0.02 * self.noise[i])
            elif prop == "energy":
                load_kw = self.scale[i] * (0.3 + 0.5 * _bump(h, 7.5, 1.5) + 0.9 * _bump(h, 19, 2))
                self.energy[i] += load_kw * dt_h
                out[i] = round(self.energy[i], 3)
            else:
                out[i] = 10 + 2 * math.sin(2 * math.pi * h / 24) + 0.1 * self.noise[i]
        return out


def iso_z(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class DeviceResponder:
    """Simulated devices: answer commands with accepted, then done (or stay silent)."""

    def __init__(self, mqtt_url: str, *, silent: set[str] | frozenset[str] = frozenset(),
                 delay_s: float = 0.1, client_id: str = "citytwin-sim-devices") -> None:
        self.silent = set(silent)
        self.delay_s = delay_s
        self.answered: set[int] = set()
        self.received: list[dict] = []
        self._lock = threading.Lock()
        self.client = connect_client(mqtt_url, client_id, clean=True, receive_maximum=None,
                                     on_connect=lambda c: c.subscribe(f"{CMD_PREFIX}/+", qos=1), start=False)
        self.client.on_message = self._on_command
        self.client.loop_start()

    def _on_command(self, client, userdata, message) -> None:
        thing = message.topic[len(CMD_PREFIX) + 1:]
        try:
            command = json.loads(message.payload)
            task = int(command["task"])
        except (ValueError, KeyError, TypeError):
            log.warning("unreadable command on %s", message.topic)
            return
        with self._lock:
            self.received.append({"thing": thing, **command})
            if thing in self.silent or task in self.answered:
                return      # silent device, or a repeat of a task already answered (at-least-once)
            self.answered.add(task)
        answer = threading.Thread(target=self._answer, args=(thing, task, command.get("parameters", {})),
                                  daemon=True)
        answer.start()

    def _answer(self, thing: str, task: int, parameters: dict) -> None:
        topic = f"{CMD_PREFIX}/{thing}/ack"
        self.client.publish(topic, json.dumps({"task": task, "status": "accepted"}), qos=1)
        time.sleep(self.delay_s)
        self.client.publish(topic, json.dumps({"task": task, "status": "done", "reported": parameters,
                                               "message": f"{thing} executed {parameters}"}), qos=1)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def mqtt_sink(mqtt_url: str, *, batch: bool = True, batch_size: int = 1000,
              client_id: str = "citytwin-simulator"):
    """A sink publishing rows QoS 1: compact batches, or one SensorThings message per observation."""
    publisher = connect_client(mqtt_url, client_id, clean=True, receive_maximum=None, max_inflight=1000)

    def sink(rows: list[list]) -> None:
        if batch:
            for k in range(0, len(rows), batch_size):
                publisher.publish("citytwin/ingest/batch", json.dumps(rows[k:k + batch_size]), qos=1)
        else:
            for ds_id, t, v in rows:
                publisher.publish(f"v1.1/Datastreams({ds_id})/Observations",
                                  json.dumps({"phenomenonTime": t, "result": v}), qos=1)

    def close() -> None:
        publisher.loop_stop()
        publisher.disconnect()

    sink.close = close
    return sink


def database_sink(database_url: str):
    """A sink writing rows straight into the database (no broker): the same validation and writer."""
    import psycopg

    from citytwin.telemetry.ingest import Ingestor
    from citytwin.telemetry.pg import conninfo
    from citytwin.telemetry.validate import DEFAULT_BATCH_TOPIC, RawMessage

    pg = psycopg.connect(conninfo(database_url), autocommit=True)
    ingestor = Ingestor()

    def sink(rows: list[list]) -> None:
        ingestor.ingest(pg, [RawMessage(DEFAULT_BATCH_TOPIC, json.dumps(rows).encode(), "http")])

    sink.close = pg.close
    return sink


def run_simulator(sink, datastreams: list[SimDatastream], *, interval_s: float = 1.0, time_scale: float = 1.0,
                  duration_s: float | None = None, seed: int = 7, stop: threading.Event | None = None,
                  backfill_s: float = 0.0) -> int:
    """Emit every datastream once per ``interval_s`` into ``sink(rows)`` (``mqtt_sink``/``database_sink``).

    The simulated clock starts ``backfill_s`` seconds ago and runs ``time_scale`` times faster than real
    time until it catches up with now (then it follows real time: no observation from the future).
    Returns the number of observations emitted.
    """
    stop = stop or threading.Event()
    start_real = time.time()
    start_sim = start_real - backfill_s
    signals = CitySignals(datastreams, seed=seed, start=start_sim)
    emitted = 0
    while not stop.is_set():
        now = time.time()
        if duration_s is not None and now - start_real >= duration_s:
            break
        sim_t = min(start_sim + (now - start_real) * time_scale, now)
        values = signals.step(sim_t)
        stamp = iso_z(sim_t)
        sink([[ds.id, stamp, round(float(v), 4)] for ds, v in zip(datastreams, values)])
        emitted += len(datastreams)
        stop.wait(max(interval_s - (time.time() - now), 0.0))
    return emitted
