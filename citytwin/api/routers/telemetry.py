"""Telemetry over HTTP: batch ingest, dead letters, and the live WebSocket feed ``/ws/telemetry``.

``POST /api/telemetry/observations`` takes the same payloads as the MQTT batch topic (compact rows,
SensorThings observations, dataArray blocks; see ``citytwin.telemetry.validate``) and answers with what
was stored, what was a duplicate and what was rejected (also written to the dead-letter table).

``/ws/telemetry?bbox=minlon,minlat,maxlon,maxlat&datastreams=1,2`` sends a snapshot of the latest values,
then coalesced updates (at most 10 frames/s) and anomalies; the client may send
``{"bbox": [...], "datastreams": [...]}`` to change its filter (null clears one).
"""

from __future__ import annotations

import json
from datetime import timedelta

from fastapi import APIRouter, Depends, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Engine, text

from citytwin.api.auth import HEADER, require_scope, scopes_for_key
from citytwin.api.deps import get_engine
from citytwin.errors import CityTwinError, InputError
from citytwin.telemetry.ingest import IngestResult, Ingestor
from citytwin.telemetry.livefeed import LiveHub, Subscription
from citytwin.telemetry.pg import conninfo
from citytwin.telemetry.validate import IngestLimits, RawMessage

router = APIRouter(prefix="/api/telemetry", tags=["Telemetry"])
ws_router = APIRouter(tags=["Telemetry"])
HTTP_TOPIC = "http:/api/telemetry/observations"


def _ingestor(app) -> Ingestor:
    ingestor = getattr(app.state, "telemetry_ingestor", None)
    if ingestor is None:
        settings = app.state.settings
        limits = IngestLimits(max_message_bytes=int(getattr(settings, "max_request_bytes", 10 * 1024 * 1024)),
                              max_age=timedelta(days=int(getattr(settings, "telemetry_retention_days", 30))))
        ingestor = app.state.telemetry_ingestor = Ingestor(limits=limits)
    return ingestor


def ingest_body(app, body: bytes, topic: str = HTTP_TOPIC) -> IngestResult:
    """Validate and store one request body with a pooled connection (blocking: call in a thread)."""
    engine: Engine = app.state.engine
    raw = engine.raw_connection()
    pg = raw.driver_connection
    try:
        pg.autocommit = True
        return _ingestor(app).ingest(pg, [RawMessage(topic, body, "http")])
    finally:
        pg.autocommit = False
        raw.close()


@router.post("/observations", summary="Ingest a batch of observations",
             dependencies=[require_scope("ingest")])
async def post_observations(request: Request) -> dict:
    body = await request.body()
    result = await run_in_threadpool(ingest_body, request.app, body)
    whole = [d for d in result.dead if d.item_index is None]
    if whole:
        raise InputError(f"payload rejected ({whole[0].reason}): {whole[0].detail}")
    return {"received": result.received, "stored": result.stored, "duplicates": result.duplicates,
            "rejected": result.rejected, "flagged": result.flagged,
            "rejections": [{"index": d.item_index, "reason": d.reason, "detail": d.detail}
                           for d in result.dead[:100]]}


@router.get("/dead-letters", summary="Recently rejected telemetry, newest first",
            dependencies=[require_scope("ingest")])
def dead_letters(reason: str | None = Query(None), limit: int = Query(100, ge=1, le=1000),
                 engine: Engine = Depends(get_engine)) -> dict:
    with engine.connect() as conn:
        rows = conn.execute(text("""
            SELECT id, received_at, source, topic, reason, detail, item_index, payload, payload_bytes
            FROM telemetry_dead_letters WHERE (CAST(:r AS text) IS NULL OR reason = :r)
            ORDER BY id DESC LIMIT :n
        """), {"r": reason, "n": limit}).mappings().all()
    return {"dead_letters": [{**r, "received_at": r["received_at"].isoformat()} for r in rows]}


def _hub(app) -> LiveHub:
    hub = getattr(app.state, "telemetry_hub", None)
    if hub is None:
        hub = app.state.telemetry_hub = LiveHub(conninfo(app.state.engine))
    return hub


async def _authorised(websocket: WebSocket) -> bool:
    settings = websocket.app.state.settings
    if not getattr(settings, "require_key_for_reads", False):
        return True
    key = websocket.headers.get(HEADER) or websocket.query_params.get("api_key")
    if not key:
        return False

    def check() -> bool:
        with websocket.app.state.engine.connect() as conn:
            scopes = scopes_for_key(conn, key)
        return bool({"read", "admin"} & scopes)

    try:
        return await run_in_threadpool(check)
    except CityTwinError:
        return False


@ws_router.websocket("/ws/telemetry")
async def live_feed(websocket: WebSocket, bbox: str | None = None, datastreams: str | None = None) -> None:
    try:
        subscription = Subscription.parse(bbox, datastreams)
    except InputError as exc:
        await websocket.close(code=1008, reason=exc.message[:120])
        return
    if not await _authorised(websocket):
        await websocket.close(code=1008, reason=f"a key with scope 'read' is needed ({HEADER} or api_key)")
        return
    await websocket.accept()
    hub = _hub(websocket.app)
    client = await hub.connect(websocket, subscription)
    try:
        while True:
            text_ = await websocket.receive_text()
            try:
                message = json.loads(text_)
                if not isinstance(message, dict):
                    raise InputError('send {"bbox": [minlon, minlat, maxlon, maxlat], "datastreams": [ids]}')
                client.subscription = Subscription.parse(message.get("bbox"), message.get("datastreams"))
            except ValueError as exc:      # frames go through the client's queue: one sender per socket
                hub.offer(client, json.dumps({"type": "error", "detail": f"not JSON: {exc}"}))
                continue
            except InputError as exc:
                hub.offer(client, json.dumps({"type": "error", "detail": exc.message}))
                continue
            await hub.send_snapshot(client)
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        hub.disconnect(client)
