"""Live fan-out to WebSocket clients, across any number of API processes, through the database only.

The ingest transaction of every batch sends one ``NOTIFY citytwin_telemetry`` (the datastreams whose
latest value changed, plus anomalies; < 8000 bytes). Each API process runs one ``LiveHub``: it LISTENs
on its own connection, marks those datastreams dirty, and at most every ``min_interval`` seconds
(10 Hz) reads their rows from ``latest_observations`` once and sends each client one frame with the
values inside its viewport (lon/lat bbox) and datastream filter: the latest value per datastream,
coalesced. Every client has a bounded queue and its own sender task: a client whose queue fills up or
whose send stalls for ``send_timeout`` seconds is dropped (close code 1013), never blocking the others.

Frames (JSON text)::

    {"type": "snapshot" | "observations", "data": [{"datastream": 3, "thing": "WX01",
      "property": "air_temperature", "time": "...Z", "result": 12.3, "flags": [], "lon": 8.4, "lat": 49.0}],
     "anomalies": [{"datastream": 3, "time": "...Z", "result": 35.0, "flags": ["spike"]}]}
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from dataclasses import dataclass
from datetime import datetime, timezone

import psycopg

from citytwin.errors import InputError
from citytwin.telemetry.anomaly import flag_names
from citytwin.telemetry.pg import TELEMETRY_CHANNEL

log = logging.getLogger("citytwin.telemetry.livefeed")
MAX_PENDING_ANOMALIES = 500


@dataclass(frozen=True)
class Subscription:
    """What a client wants: a lon/lat bbox and/or a set of datastream ids (None = no filter)."""

    bbox: tuple[float, float, float, float] | None = None
    datastreams: frozenset[int] | None = None

    @classmethod
    def parse(cls, bbox: object = None, datastreams: object = None) -> "Subscription":
        """From query strings (``"minlon,minlat,maxlon,maxlat"``, ``"1,2,3"``) or JSON lists."""
        box = None
        if bbox not in (None, ""):
            parts = bbox.split(",") if isinstance(bbox, str) else bbox
            try:
                box = tuple(float(p) for p in parts)
            except (TypeError, ValueError):
                raise InputError(f"bbox must be minlon,minlat,maxlon,maxlat numbers, got {bbox!r}") from None
            if len(box) != 4 or not all(math.isfinite(v) for v in box) or box[0] > box[2] or box[1] > box[3]:
                raise InputError(f"bbox must be minlon,minlat,maxlon,maxlat with min <= max, got {bbox!r}")
        ids = None
        if datastreams not in (None, ""):
            parts = datastreams.split(",") if isinstance(datastreams, str) else datastreams
            try:
                ids = frozenset(int(p) for p in parts)
            except (TypeError, ValueError):
                raise InputError(f"datastreams must be integer ids, got {datastreams!r}") from None
        return cls(box, ids)

    def matches(self, ds: int, lon: float | None, lat: float | None) -> bool:
        if self.datastreams is not None and ds not in self.datastreams:
            return False
        if self.bbox is not None:
            if lon is None or lat is None:
                return False
            minx, miny, maxx, maxy = self.bbox
            return minx <= lon <= maxx and miny <= lat <= maxy
        return True


class LiveClient:
    """One WebSocket: a bounded queue of frames and a sender task."""

    def __init__(self, websocket, subscription: Subscription, queue_size: int, send_timeout: float) -> None:
        self.websocket = websocket
        self.subscription = subscription
        self.queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize=queue_size)
        self.send_timeout = send_timeout
        self.dropped = False
        self.sent = 0
        self.task: asyncio.Task | None = None

    async def sender(self, hub: "LiveHub") -> None:
        try:
            while True:
                frame = await self.queue.get()
                if frame is None:
                    return
                await asyncio.wait_for(self.websocket.send_text(frame), timeout=self.send_timeout)
                self.sent += 1
        except asyncio.TimeoutError:
            hub.drop(self, "send stalled")
        except Exception:  # noqa: BLE001 - the socket went away; the receive side cleans up
            hub.disconnect(self)


class LiveHub:
    """The per-process fan-out (see the module docstring). Started lazily by the first client."""

    def __init__(self, conninfo: str, *, min_interval: float = 0.1, queue_size: int = 32,
                 send_timeout: float = 2.0) -> None:
        self.conninfo = conninfo
        self.min_interval = min_interval
        self.queue_size = queue_size
        self.send_timeout = send_timeout
        self.clients: set[LiveClient] = set()
        self.positions: dict[int, tuple] = {}          # ds -> (thing, property, lon, lat)
        self.dirty: set[int] = set()
        self.all_dirty = False
        self.anomalies: list[dict] = []
        self.dropped = 0
        self.notifications = 0
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._reader: psycopg.AsyncConnection | None = None
        self._started = False
        self._positions_loaded = 0.0

    # -- lifecycle -------------------------------------------------------------------------------------
    async def ensure_started(self) -> None:
        if self._started:
            return
        self._started = True
        ready = asyncio.Event()
        self._tasks = [asyncio.create_task(self._listen(ready)), asyncio.create_task(self._flush_loop())]
        await asyncio.wait_for(ready.wait(), timeout=10)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._reader is not None:
            await self._reader.close()
        self._started = False

    # -- clients ---------------------------------------------------------------------------------------
    async def connect(self, websocket, subscription: Subscription) -> LiveClient:
        await self.ensure_started()
        client = LiveClient(websocket, subscription, self.queue_size, self.send_timeout)
        self.clients.add(client)
        client.task = asyncio.create_task(client.sender(self))
        await self.send_snapshot(client)
        return client

    async def send_snapshot(self, client: LiveClient) -> None:
        rows = await self._read_latest(None)
        data = [item for item in (self._item(r) for r in rows) if self._wanted(client, item)]
        self.offer(client, json.dumps({"type": "snapshot", "data": data, "anomalies": []}))

    def disconnect(self, client: LiveClient) -> None:
        if client in self.clients:
            self.clients.discard(client)
        if client.task is not None and client.task is not asyncio.current_task():
            client.task.cancel()

    def drop(self, client: LiveClient, why: str) -> None:
        """Drop a slow client: stop its sender and close its socket (without waiting on it)."""
        if client.dropped:
            return
        client.dropped = True
        self.dropped += 1
        log.info("dropping live client: %s", why)
        self.disconnect(client)

        async def close() -> None:
            with contextlib.suppress(Exception):
                closing = client.websocket.close(code=1013, reason=f"client too slow: {why}")
                await asyncio.wait_for(closing, 1.0)

        asyncio.get_running_loop().create_task(close())

    def offer(self, client: LiveClient, frame: str) -> None:
        try:
            client.queue.put_nowait(frame)
        except asyncio.QueueFull:
            self.drop(client, f"{client.queue.maxsize} frames queued")

    # -- database side ---------------------------------------------------------------------------------
    async def _listen(self, ready: asyncio.Event) -> None:
        delay = 0.2
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {TELEMETRY_CHANNEL}")
                    await self._load_positions()
                    ready.set()
                    self.all_dirty = True        # catch up on whatever happened while not listening
                    self._wake.set()
                    delay = 0.2
                    async for note in conn.notifies():
                        self._on_notify(note.payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep listening through database restarts
                log.warning("live feed listener: %s; reconnecting in %.1f s", str(exc).strip()[:200], delay)
                ready.set()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _on_notify(self, payload: str) -> None:
        self.notifications += 1
        try:
            body = json.loads(payload)
        except ValueError:
            return
        if body.get("ds") is None:
            self.all_dirty = True
        else:
            self.dirty.update(int(d) for d in body["ds"])
        for ds, t, value, flags in body.get("an", []):
            self.anomalies.append({"datastream": ds, "time": t, "result": value, "flags": flag_names(flags)})
        del self.anomalies[:-MAX_PENDING_ANOMALIES]
        self._wake.set()

    async def _flush_loop(self) -> None:
        last = 0.0
        while True:
            await self._wake.wait()
            wait = last + self.min_interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)        # coalesce: at most one frame per client per interval
            self._wake.clear()
            last = time.monotonic()
            try:
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - database hiccup: try again on the next wake-up
                log.warning("live feed flush: %s", str(exc).strip()[:200])
                self._reader = None
                self.all_dirty = True
                await asyncio.sleep(0.5)
                self._wake.set()

    async def flush(self) -> None:
        ids = None if self.all_dirty else sorted(self.dirty)
        anomalies, self.anomalies = self.anomalies, []
        self.dirty, self.all_dirty = set(), False
        if not self.clients or (ids == [] and not anomalies):
            return
        rows = await self._read_latest(ids) if ids != [] else []
        if any(r[0] not in self.positions for r in rows) or any(a["datastream"] not in self.positions
                                                                 for a in anomalies):
            await self._load_positions(min_age=1.0)
        items = [self._item(r) for r in rows]
        for a in anomalies:
            pos = self.positions.get(a["datastream"], (None, None, None, None))
            a.update(thing=pos[0], property=pos[1], lon=pos[2], lat=pos[3])
        for client in list(self.clients):
            data = [i for i in items if self._wanted(client, i)]
            found = [a for a in anomalies if self._wanted(client, a)]
            if data or found:
                self.offer(client, json.dumps({"type": "observations", "data": data, "anomalies": found}))

    @staticmethod
    def _wanted(client: LiveClient, item: dict) -> bool:
        return client.subscription.matches(item["datastream"], item.get("lon"), item.get("lat"))

    def _item(self, row: tuple) -> dict:
        ds, t, result, result_json, flags = row
        thing, prop, lon, lat = self.positions.get(ds, (None, None, None, None))
        return {"datastream": ds, "thing": thing, "property": prop, "time": _iso(t),
                "result": result if result is not None else result_json, "flags": flag_names(flags),
                "lon": lon, "lat": lat}

    async def _reader_conn(self) -> psycopg.AsyncConnection:
        if self._reader is None or self._reader.closed:
            self._reader = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
        return self._reader

    async def _read_latest(self, ids: list[int] | None) -> list[tuple]:
        conn = await self._reader_conn()
        sql = ("SELECT datastream_id, phenomenon_time, result, result_json, quality_flags "
               "FROM latest_observations")
        if ids is None:
            cur = await conn.execute(sql)
        else:
            cur = await conn.execute(sql + " WHERE datastream_id = ANY(%s)", (ids,))
        return await cur.fetchall()

    async def _load_positions(self, min_age: float = 0.0) -> None:
        if time.monotonic() - self._positions_loaded < min_age:
            return
        conn = await self._reader_conn()
        cur = await conn.execute("""
            SELECT d.id, t.name, p.name, ST_X(g.pt), ST_Y(g.pt)
            FROM datastreams d JOIN things t ON t.id = d.thing_id
            JOIN observed_properties p ON p.id = d.observed_property_id
            LEFT JOIN LATERAL (
                SELECT CASE WHEN ST_SRID(l.location) = 0 THEN NULL
                            ELSE ST_Transform(l.location, 4326) END AS pt
                FROM thing_locations tl JOIN locations l ON l.id = tl.location_id
                WHERE tl.thing_id = d.thing_id ORDER BY l.id LIMIT 1) g ON true
        """)
        self.positions = {ds: (thing, prop, lon, lat) for ds, thing, prop, lon, lat in await cur.fetchall()}
        self._positions_loaded = time.monotonic()


def _iso(value: datetime) -> str:
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
