"""Outage API for OMS: detection events -> inferred outage, feed, customers, PATCH, keys, webhooks."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from citytwin.api.auth import create_key
from citytwin.oms.webhooks import dispatch_due


@pytest.fixture(scope="module")
def engine(demo_engine):
    return demo_engine


@pytest.fixture(scope="module")
def client(demo_app):
    with TestClient(demo_app) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def keys(engine) -> dict[str, str]:
    with engine.begin() as conn:
        return {"write": create_key(conn, "oms", ["outages:write"]), "read": create_key(conn, "viewer", ["read"])}


def _meters_on_one_transformer(engine) -> tuple[list[str], str]:
    """Three service points below one transformer (same feeder)."""
    from citytwin.db.grid import read_grid
    from citytwin.models.grid import assignments

    with engine.connect() as conn:
        links = assignments(read_grid(conn)).dropna(subset=["transformer"])
    counts = links.groupby("transformer")["service_point"].nunique()
    transformer = counts[counts >= 3].index[0]
    points = sorted(links.loc[links["transformer"] == transformer, "service_point"].unique())
    return points, transformer


def _event(object_id: str, kind: str, when: str) -> dict:
    return {"objectID": object_id, "eventTime": when, "outageEventType": kind,
            "outageDetectDeviceID": f"meter-{object_id}", "outageDetectDeviceType": "Meter"}


class Receiver(BaseHTTPRequestHandler):
    received: list[tuple[dict, bytes]] = []
    fail = False

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Receiver.received.append((dict(self.headers), body))
        self.send_response(500 if Receiver.fail else 204)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_detection_events_infer_outage_and_restore(client, engine, keys) -> None:
    points, transformer = _meters_on_one_transformer(engine)
    events = [_event(p, "Outage", "2026-11-20T10:00:00Z") for p in points[:3]]
    assert client.post("/api/od-events", json={"events": events}).status_code == 401  # writes need a key
    denied = client.post("/api/od-events", json={"events": events}, headers={"X-API-Key": keys["read"]})
    assert denied.status_code == 403
    result = client.post("/api/od-events", json={"events": events}, headers={"X-API-Key": keys["write"]})
    assert result.status_code == 200, result.text
    outage_id = result.json()["outages"][0]
    again = client.post("/api/od-events", json={"events": events}, headers={"X-API-Key": keys["write"]})
    assert again.json()["events_new"] == 0  # the same events twice are recorded once

    feature = client.get(f"/api/outages/{outage_id}").json()
    props = feature["properties"]
    assert props["kind"] == "unplanned" and props["status"] == "predicted"
    # Three meters under one transformer: every customer below the common upstream device is out,
    # at least the reporting ones, and the inferred device is a switch upstream of them.
    customers = client.get(f"/api/outages/{outage_id}/customers").json()
    affected = {row["service_point"] for row in customers["service_points"]}
    assert set(points[:3]) <= affected
    assert props["customers_affected"] == customers["customers"] >= 3
    assert props["opened_switches"], "an upstream device should be inferred"
    assert feature["geometry"]["type"] == "MultiPolygon"

    listed = client.get("/api/outages", params={"status": "predicted", "kind": "unplanned"}).json()
    assert outage_id in [f["id"] for f in listed["features"]]
    assert client.get("/api/outages", params={"status": "restored"}).json()["features"] == []
    summary = client.get("/api/outages/summary").json()
    assert summary["active_outages"] >= 1 and summary["customers_out"] >= 3

    restored = client.post("/api/od-events", headers={"X-API-Key": keys["write"]}, json={"events": [
        _event(sp, "Restoration", "2026-11-20T12:30:00Z") for sp in sorted(affected)]})
    assert restored.status_code == 200
    done = client.get(f"/api/outages/{outage_id}").json()["properties"]
    assert done["status"] == "restored" and done["customers_restored"] == done["customers_affected"]
    rows = client.get(f"/api/outages/{outage_id}/customers").json()["service_points"]
    assert all(row["interruption_h"] == pytest.approx(2.5) for row in rows)


def test_patch_status_and_etr_with_webhook(client, engine, keys) -> None:
    Receiver.received.clear()
    server = HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        hook = client.post("/api/webhooks", headers={"X-API-Key": keys["write"]},
                           json={"url": f"http://127.0.0.1:{server.server_port}/hook",
                                 "secret": "s3cret-s3cret-s3cret"})
        assert hook.status_code == 201
        points, _ = _meters_on_one_transformer(engine)
        created = client.post("/api/od-events", headers={"X-API-Key": keys["write"]},
                              json={"events": [_event(points[0], "Outage", "2026-11-21T08:00:00Z")]}).json()
        outage_id = created["outages"][0]
        patch = client.patch(f"/api/outages/{outage_id}", headers={"X-API-Key": keys["write"]},
                             json={"status": "confirmed", "etr": "2026-11-21T14:00:00Z", "etr_confidence": "high"})
        assert patch.status_code == 200, patch.text
        props = patch.json()["properties"]
        assert props["status"] == "confirmed" and props["etr"].startswith("2026-11-21T14:00")
        backwards = client.patch(f"/api/outages/{outage_id}", headers={"X-API-Key": keys["write"]},
                                 json={"status": "predicted"})
        assert backwards.status_code == 400 and "cannot move" in backwards.json()["detail"]
        assert client.patch(f"/api/outages/{outage_id}", headers={"X-API-Key": keys["write"]},
                            json={"status": "bogus"}).status_code == 422
        assert client.patch(f"/api/outages/{outage_id}", headers={"X-API-Key": keys["write"]},
                            json={"colour": "red"}).status_code == 422
        assert client.patch("/api/outages/987654", headers={"X-API-Key": keys["write"]},
                            json={"status": "closed"}).status_code == 404
        assert dispatch_due(engine).delivered >= 2
        announced = [(h["X-Citytwin-Event"], json.loads(b)["data"]["id"]) for h, b in Receiver.received]
        assert announced[-2:] == [("outage.created", outage_id), ("outage.updated", outage_id)]
        headers, body = Receiver.received[-1]
        expected = "sha256=" + hmac.new(b"s3cret-s3cret-s3cret", body, hashlib.sha256).hexdigest()
        assert headers["X-Citytwin-Signature"] == expected
        assert json.loads(body)["data"]["properties"]["status"] == "confirmed"
        # A failing receiver: the delivery is retried later with backoff, and the log says why.
        Receiver.fail = True
        client.patch(f"/api/outages/{outage_id}", headers={"X-API-Key": keys["write"]}, json={"etr_confidence": "low"})
        result = dispatch_due(engine)
        assert result.retried >= 1
        log = client.get(f"/api/webhooks/{hook.json()['id']}/deliveries", headers={"X-API-Key": keys["write"]}).json()
        assert log[0]["status"] == "pending" and log[0]["attempts"] == 1 and log[0]["response_code"] == 500
        with engine.connect() as conn:
            delay = conn.execute(text("SELECT next_attempt_at - now() FROM webhook_deliveries ORDER BY id DESC "
                                      "LIMIT 1")).scalar()
        assert delay.total_seconds() > 1
    finally:
        Receiver.fail = False
        server.shutdown()


@pytest.mark.parametrize("body, status", [
    # The body model rejects malformed payloads (422, naming the field); unknown meters are a 400.
    ("not json", 422), ('{"events": []}', 422), ('{"events": [{"objectID": "x"}]}', 422), ("[]", 422),
    ('{"events": [{"objectID": "nope", "eventTime": "2026-01-01T00:00:00Z", "outageEventType": "Outage"}]}', 400),
    ('{"events": [{"objectID": "SP0000001", "eventTime": "2026-01-01T00:00:00", "outageEventType": "Outage"}]}', 422),
    ('{"events": [{"objectID": "SP0000001", "eventTime": "2026-01-01T00:00:00Z", "outageEventType": "Boom"}]}', 422),
    ('{"events": [{"objectID": "SP\\u0000", "eventTime": "2026-01-01T00:00:00Z", "outageEventType": "Outage"}]}',
     422),
])
def test_bad_detection_events(client, keys, body: str, status: int) -> None:
    response = client.post("/api/od-events", content=body, headers={"X-API-Key": keys["write"],
                                                                    "Content-Type": "application/json"})
    assert response.status_code == status and response.json()["detail"]


def test_reads_and_bad_queries(client) -> None:
    assert client.get("/api/outages/999999").status_code == 404
    assert client.get("/api/outages", params={"status": "sideways"}).status_code == 422
    assert client.get("/api/outages", params={"bbox": "1,2"}).status_code == 400
    assert client.get("/api/outages", params={"limit": 10 ** 9}).status_code == 422
    assert client.get("/api/outages/summary").status_code == 200
    rel = client.get("/api/reliability", params={"start": "2026-01-01T00:00:00Z", "end": "2027-01-01T00:00:00Z",
                                                 "kind": "unplanned"})
    assert rel.status_code == 200 and rel.json()["system"]["SAIFI"] > 0
    assert client.get("/api/reliability", params={"start": "2027-01-01T00:00:00Z",
                                                  "end": "2026-01-01T00:00:00Z"}).status_code == 400


def _deliveries(engine, subscription_id: int) -> list[tuple[str, int]]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT event, (payload->'data'->>'id')::bigint FROM webhook_deliveries "
                                 "WHERE subscription_id = :s ORDER BY id"), {"s": subscription_id}).all()
    return [tuple(r) for r in rows]


def test_webhook_events_follow_the_outage_lifecycle(client, engine, keys) -> None:
    from citytwin.oms.webhooks import announce_created

    for status in ("predicted", "confirmed", "partially_restored"):  # start from no open outage
        for feature in client.get("/api/outages", params={"status": status}).json()["features"]:
            closed = client.patch(f"/api/outages/{feature['id']}", headers={"X-API-Key": keys["write"]},
                                  json={"status": "closed"})
            assert closed.status_code == 200
    hook = client.post("/api/webhooks", headers={"X-API-Key": keys["write"]},
                       json={"url": "http://127.0.0.1:9/hook", "events": ["outage.created", "outage.restored"]})
    sub = hook.json()["id"]
    points, _ = _meters_on_one_transformer(engine)
    first = client.post("/api/od-events", headers={"X-API-Key": keys["write"]},
                        json={"events": [_event(points[1], "Outage", "2026-11-23T08:00:00Z")]}).json()
    outage_id = first["outages"][0]
    assert first["outages_created"] == [outage_id]
    # More meters on the same feeder extend the open outage: an update, which this subscriber did not ask for.
    more = client.post("/api/od-events", headers={"X-API-Key": keys["write"]},
                       json={"events": [_event(points[2], "Outage", "2026-11-23T08:05:00Z")]}).json()
    assert more["outages"] == [outage_id] and more["outages_created"] == []
    assert _deliveries(engine, sub) == [("outage.created", outage_id)]
    customers = client.get(f"/api/outages/{outage_id}/customers").json()["service_points"]
    client.post("/api/od-events", headers={"X-API-Key": keys["write"]}, json={"events": [
        _event(row["service_point"], "Restoration", "2026-11-23T09:00:00Z") for row in customers]})
    assert client.get(f"/api/outages/{outage_id}").json()["properties"]["status"] == "restored"
    assert _deliveries(engine, sub) == [("outage.created", outage_id), ("outage.restored", outage_id)]
    # The function other code (a storm scenario) calls for outages it stored itself: an outage that is
    # already restored when announced gets both events, in order.
    with engine.begin() as conn:
        assert announce_created(conn, [outage_id]) >= 2
    assert _deliveries(engine, sub)[2:] == [("outage.created", outage_id), ("outage.restored", outage_id)]
    client.delete(f"/api/webhooks/{sub}", headers={"X-API-Key": keys["write"]})


def test_feed_filters_by_kind_bbox_and_since(client, engine) -> None:
    """Planned and simulated outages at the west and east ends of the city, one of them long ago."""
    with engine.begin() as conn:
        west, east = conn.execute(text("""
            (SELECT id FROM buildings ORDER BY ST_X(ST_Centroid(footprint)) LIMIT 1) UNION ALL
            (SELECT id FROM buildings ORDER BY ST_X(ST_Centroid(footprint)) DESC LIMIT 1)
        """)).scalars().all()
        insert = text("""
            INSERT INTO outages (status, kind, cause, start_time, updated_at, geom)
            SELECT 'confirmed', :kind, 'test', :start, :start, ST_Multi(ST_Buffer(footprint, 15))
            FROM buildings WHERE id = :b RETURNING id
        """)
        planned = conn.execute(insert, {"kind": "planned", "start": "2026-10-01T00:00:00Z", "b": west}).scalar_one()
        sim_west = conn.execute(insert, {"kind": "simulated", "start": "2024-05-01T00:00:00Z", "b": west}).scalar_one()
        sim_east = conn.execute(insert, {"kind": "simulated", "start": "2026-10-02T00:00:00Z", "b": east}).scalar_one()
        x0, y0, x1, y1 = conn.execute(text("""
            SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM (SELECT ST_Transform(ST_Envelope(
                ST_Buffer(footprint, 5)), 4326) AS e FROM buildings WHERE id = :b) s
        """), {"b": west}).one()

    def ids(**params) -> set[int]:
        response = client.get("/api/outages", params=params)
        assert response.status_code == 200, response.text
        return {f["id"] for f in response.json()["features"]}

    everything = ids()
    assert {planned, sim_west, sim_east} <= everything
    assert ids(kind="planned") == {planned}
    assert ids(kind="simulated") == {sim_west, sim_east}
    assert ids(kind="unplanned") == everything - {planned, sim_west, sim_east}
    west_box = f"{x0},{y0},{x1},{y1}"
    assert ids(bbox=west_box) >= {planned, sim_west} and sim_east not in ids(bbox=west_box)
    assert ids(bbox=west_box, kind="simulated") == {sim_west}
    assert ids(kind="simulated", since="2025-01-01T00:00:00Z") == {sim_east}
    assert ids(kind="simulated", since="2027-01-01T00:00:00Z") == set()
    assert ids(kind="simulated", status="restored") == set()
    assert len(client.get("/api/outages", params={"limit": 1}).json()["features"]) == 1
