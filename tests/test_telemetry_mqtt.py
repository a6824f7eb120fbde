"""The MQTT ingest service on a real Mosquitto: SensorThings and batch topics, dead letters, and commands
that reach simulated devices (ack -> task status and switch state; a silent device's task expires)."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from sqlalchemy import text

from fastapi.testclient import TestClient

from _telemetry_support import Broker, Publisher, iso, make_network, recent, telemetry_app
from citytwin.api.auth import create_key
from citytwin.telemetry import commands
from citytwin.telemetry.mqtt_ingest import IngestService
from citytwin.telemetry.simulator import CitySignals, DeviceResponder, SimDatastream


@pytest.fixture
def broker():
    b = Broker()
    b.start()
    yield b
    b.close()


def wait_for(predicate, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_mqtt_ingest_stores_good_messages_and_dead_letters_bad_ones(engine, database_url, broker) -> None:
    ids = make_network(engine, n_meters=2)
    temp, level = ids["WX01:air_temperature"], ids["RG01:water_level"]
    service = IngestService(database_url, broker.url, client_id="test-ingest", relay=False).start()
    publisher = Publisher(broker.url, "test-pub")
    try:
        t0 = recent(30)
        for i in range(50):
            publisher.publish(f"v1.1/Datastreams({temp})/Observations",
                              {"phenomenonTime": iso(t0 + timedelta(seconds=i)), "result": 20 + 0.1 * i})
        publisher.publish("v1.1/Observations", {"Datastream": {"@iot.id": level},
                                                "phenomenonTime": iso(t0), "result": 3.25})
        batch = [[level, iso(t0 + timedelta(minutes=k)), 3.0 + k] for k in range(1, 11)]
        publisher.publish("citytwin/ingest/batch", {"observations": batch})
        publisher.publish("citytwin/ingest/batch", b"{broken")
        publisher.publish(f"v1.1/Datastreams({temp})/Observations",
                          {"phenomenonTime": iso(t0), "result": "hot"})
        publisher.publish("v1.1/Datastreams(424242)/Observations", {"phenomenonTime": iso(t0), "result": 1.0})
        publisher.publish("citytwin/ingest/batch", [[temp, iso(t0 + timedelta(seconds=100)), 25.0]])

        def stored() -> int:
            with engine.connect() as conn:
                return conn.execute(text("SELECT count(*) FROM observations")).scalar()

        wait_for(lambda: stored() == 62 and service.stats.rejected == 3, what="62 rows and 3 dead letters")
    finally:
        publisher.close()
        service.stop()
    with engine.connect() as conn:
        reasons = dict(conn.execute(text("SELECT reason, topic FROM telemetry_dead_letters")).all())
        latest = dict(conn.execute(text("SELECT datastream_id, result FROM latest_observations")).all())
    assert reasons == {"malformed_json": "citytwin/ingest/batch",
                       "bad_result_type": f"v1.1/Datastreams({temp})/Observations",
                       "unknown_datastream": "v1.1/Datastreams(424242)/Observations"}
    assert latest == {temp: 25.0, level: 13.0}


def _grid_with_switches(engine) -> None:
    with engine.begin() as conn:
        for node in ("N1", "N2", "N3"):
            conn.execute(text("INSERT INTO grid_nodes (node_id, kind, source, geom) VALUES "
                              "(:n, 'bus', 'test', ST_SetSRID(ST_MakePoint(460000, 5430000), 32632))"),
                         {"n": node})
        for sw, a, b in (("SW1", "N1", "N2"), ("SW2", "N2", "N3")):
            conn.execute(text("INSERT INTO grid_switches (switch_id, kind, from_node, to_node, normal_state, "
                              "present_state, source, geom) VALUES (:s, 'breaker', :a, :b, 'closed', "
                              "'closed', 'test', ST_SetSRID(ST_MakePoint(460010, 5430010), 32632))"),
                         {"s": sw, "a": a, "b": b})
        assert commands.ensure_switch_capabilities(conn) == 2


def test_commands_reach_devices_acks_update_task_and_switch_silent_device_expires(engine, database_url,
                                                                                 broker) -> None:
    make_network(engine, n_meters=1)
    _grid_with_switches(engine)
    with engine.connect() as conn:
        caps = dict(conn.execute(text("SELECT t.name, c.id FROM tasking_capabilities c "
                                      "JOIN things t ON t.id = c.thing_id")).all())
    with engine.begin() as conn:
        admin = create_key(conn, "operator", ["admin"])
    api = TestClient(telemetry_app(engine))
    devices = DeviceResponder(broker.url, silent={"SW2"}, delay_s=0.2)
    service = IngestService(database_url, broker.url, client_id="test-ingest-cmd").start()
    try:
        def task(capability: int, state: str) -> dict:
            return {"TaskingCapability": {"@iot.id": capability}, "taskingParameters": {"state": state}}

        posted = api.post("/api/tasks", headers={"X-API-Key": admin}, json=task(caps["SW1"], "open"))
        assert posted.status_code == 201, posted.text
        task1 = posted.json()
        assert task1["status"] == "created"
        assert posted.headers["Location"].endswith(f"/api/tasks/{task1['@iot.id']}")
        with engine.begin() as conn:
            task2 = commands.create_task(conn, caps["SW2"], {"state": "open"}, expires_in_s=3)
        bad = api.post("/api/tasks", headers={"X-API-Key": admin}, json=task(caps["SW1"], "ajar"))
        assert bad.status_code == 400 and "ajar" in bad.json()["detail"]
        missing = api.post("/api/tasks", headers={"X-API-Key": admin}, json=task(99999, "open"))
        assert missing.status_code == 404
        assert api.post("/api/tasks", json=task(caps["SW1"], "open")).status_code == 401

        def status(task_id: int) -> str:
            return api.get(f"/api/tasks/{task_id}").json()["status"]

        wait_for(lambda: status(task1["@iot.id"]) == "done", what="task 1 done")
        wait_for(lambda: status(task2["@iot.id"]) == "expired", timeout=20, what="task 2 expired")
        with engine.connect() as conn:
            states = dict(conn.execute(text("SELECT switch_id, present_state FROM grid_switches")).all())
        done = api.get(f"/api/tasks/{task1['@iot.id']}").json()
        expired = api.get(f"/api/tasks/{task2['@iot.id']}").json()
        sw1_state = api.get("/api/devices/SW1/state").json()["state"]
        sw2_state = api.get("/api/devices/SW2/state").json()["state"]
        sta_task = api.get(f"/sta/v1.1/Tasks({task1['@iot.id']})?$expand=TaskingCapability").json()
        # Bad answers are dead-lettered: unreadable, and for a task of another device.
        rogue = Publisher(broker.url, "rogue-device")
        rogue.publish("citytwin/cmd/SW1/ack", {"task": "first", "status": "done"})
        rogue.publish("citytwin/cmd/SW1/ack", {"task": task2["@iot.id"], "status": "done"})
        rogue.close()

        def bad_acks() -> list[str]:
            with engine.connect() as conn:
                return conn.execute(text("SELECT detail FROM telemetry_dead_letters WHERE reason = 'bad_ack' "
                                         "ORDER BY id")).scalars().all()

        details = wait_for(lambda: len(bad_acks()) == 2 and bad_acks(), what="two bad acks dead-lettered")
    finally:
        service.stop()
        devices.close()
        api.close()
    assert states == {"SW1": "open", "SW2": "closed"}
    assert "needs task (integer)" in details[0] and "belongs to 'SW2'" in details[1]
    assert [e["status"] for e in done["events"]] == ["created", "sent", "accepted", "done"]
    assert [e["status"] for e in expired["events"]] == ["created", "sent", "expired"]
    assert sw1_state["state"]["desired"] == "open" and sw1_state["state"]["reported"] == "open"
    assert sw1_state["state"]["inSync"] is True
    assert sw2_state["state"]["desired"] == "open" and sw2_state["state"]["reported"] is None
    assert {c["thing"] for c in devices.received} == {"SW1", "SW2"}          # both were delivered
    assert done["taskingParameters"] == {"state": "open"}
    assert sta_task["status"] == "done" and sta_task["TaskingCapability"]["name"] == "switch_operation"


def test_task_parameters_are_checked_against_the_capability(engine) -> None:
    make_network(engine, n_meters=1)
    _grid_with_switches(engine)
    with engine.begin() as conn:
        cap = commands.ensure_capability(conn, "SUB1-LOAD", "voltage_setpoint",
                                         commands.setpoint_parameters("voltage_kv", 9.5, 11.5, "kV"),
                                         actuator="tap changer")
        created = commands.create_task(conn, cap, {"voltage_kv": 10.8})
        assert created["taskingParameters"] == {"voltage_kv": 10.8}
        from citytwin.errors import InputError

        for bad, message in (({"voltage_kv": 20}, "outside"), ({"volts": 10}, "unknown field"),
                             ({"voltage_kv": "high"}, "finite number"), ({}, "missing")):
            with pytest.raises(InputError, match=message):
                commands.create_task(conn, cap, bad)


def test_simulated_signals_are_plausible() -> None:
    streams = [SimDatastream(1, "WX01", "air_temperature"), SimDatastream(2, "WX01", "rainfall_rate"),
               SimDatastream(3, "RG01", "water_level"), SimDatastream(4, "SUB1-LOAD", "active_power"),
               SimDatastream(5, "MTR-1", "energy")]
    start = 1_750_000_000 - 1_750_000_000 % 86400       # a UTC midnight
    signals = CitySignals(streams, seed=1, start=start)
    hours = [signals.step(start + 600 * k) for k in range(1, 6 * 24 * 10)]      # ten days, 10-min steps
    temp = [h[0] for h in hours]
    by_hour = {}
    for k, value in enumerate(temp, start=1):
        by_hour.setdefault((k * 10 // 60) % 24, []).append(value)
    mean_by_hour = {h: sum(v) / len(v) for h, v in by_hour.items()}
    assert max(mean_by_hour, key=mean_by_hour.get) in (14, 15, 16)     # afternoon maximum
    assert 8 < max(mean_by_hour.values()) - min(mean_by_hour.values()) < 12   # 2 A = 10 K
    energy = [h[4] for h in hours]
    assert all(b >= a for a, b in zip(energy, energy[1:]))             # a cumulative meter
    rain = [h[1] for h in hours]
    assert min(rain) == 0.0 and max(rain) > 0.5                        # dry spells and storms in ten days
    power = [h[3] for h in hours]
    assert 5 < min(power) and max(power) < 13
