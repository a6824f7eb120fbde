"""The MQTT ingest service: subscribe (QoS 1, persistent session), batch, commit, then acknowledge.

Delivery guarantee: at least once from the broker, exactly once in the table. The subscriber keeps a
persistent session (fixed client id, clean start off, session expiry) so the broker queues messages
while the service or the broker is down, and acknowledges a message (manual PUBACK) only after the
transaction that stored it has committed. Redeliveries are absorbed by the table's primary key.

Threads: paho's network thread puts messages on a queue; the writer thread drains up to
``batch_max_messages`` messages or ``batch_ms`` milliseconds, writes them in one transaction, then
acknowledges them all; if the database is unreachable it retries the same batch (the broker stops
sending once ``receive_maximum`` messages are unacknowledged: that is the back-pressure). Command acks
(``citytwin/cmd/+/ack``) ride in the same batches. The outbox relay thread publishes commands.
The writer (``citytwin.telemetry.writer``) runs inline or, with ``writer_process``, in a child process
so that paho's network thread has this interpreter's lock to itself.

Scaling out: ``share_group`` turns the subscriptions into MQTT 5 shared subscriptions, so several
ingest processes (``citytwin telemetry ingest --workers N``) split the messages between them.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import psycopg
from sqlalchemy import Engine

from citytwin.telemetry import commands
from citytwin.telemetry.ingest import IngestResult
from citytwin.telemetry.mqtt import ACK_SUBSCRIPTION, CMD_PREFIX, OBSERVATION_SUBSCRIPTIONS, connect_client
from citytwin.telemetry.pg import OUTBOX_CHANNEL, conninfo
from citytwin.telemetry.validate import DEFAULT_BATCH_TOPIC, IngestLimits, RawMessage
from citytwin.telemetry.writer import DB_ERRORS, BatchWriter, ProcessWriter, WriteOutcome, WriterOptions

log = logging.getLogger("citytwin.telemetry.ingest")


@dataclass
class IngestStats:
    messages: int = 0
    batches: int = 0
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    acks_applied: int = 0
    db_retries: int = 0
    last_commit: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, messages: int, outcome: WriteOutcome) -> None:
        with self.lock:
            self.messages += messages
            self.batches += 1
            self.stored += outcome.result.stored
            self.duplicates += outcome.result.duplicates
            self.rejected += outcome.result.rejected
            self.acks_applied += outcome.acks_applied
            self.db_retries += outcome.db_retries
            self.last_commit = time.monotonic()


class IngestService:
    """Run with ``start()`` / ``stop()`` (or ``run_forever()``); see the module docstring."""

    def __init__(self, database_url: str, mqtt_url: str, *, client_id: str = "citytwin-ingest",
                 batch_topic: str = DEFAULT_BATCH_TOPIC, batch_max_messages: int = 2000,
                 batch_ms: float = 50.0, batch_max_bytes: int = 16 * 1024 * 1024, receive_maximum: int = 2000,
                 limits: IngestLimits = IngestLimits(), relay: bool = True,
                 on_commit: Callable[[list, IngestResult], None] | None = None,
                 maintenance: Callable[[Engine], object] | None = None,
                 maintenance_interval_s: float = 3600.0, share_group: str | None = None,
                 writer_process: bool = False) -> None:
        self.database_url = database_url
        self.mqtt_url = mqtt_url
        self.client_id = client_id
        self.batch_topic = batch_topic
        self.batch_max_messages = batch_max_messages
        self.batch_s = batch_ms / 1000.0
        self.batch_max_bytes = batch_max_bytes
        self.receive_maximum = receive_maximum
        self.writer_options = WriterOptions(limits=limits, batch_topic=batch_topic)
        self.writer_process = writer_process
        self.writer: BatchWriter | ProcessWriter | None = None
        self.relay_enabled = relay
        self.on_commit = on_commit
        self.maintenance = maintenance
        self.maintenance_interval_s = maintenance_interval_s
        self.share_group = share_group
        self.stats = IngestStats()
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._stop = threading.Event()
        self.subscribed = threading.Event()  # set once the broker has acknowledged our subscriptions
        self._threads: list[threading.Thread] = []
        self._engine: Engine | None = None
        self.client = None

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self, ready_timeout_s: float = 10.0) -> "IngestService":
        """Connect, subscribe and start the writer threads.

        Waits up to ``ready_timeout_s`` for the broker to acknowledge the subscriptions: a message
        published before that reaches no subscription of a new session and is not queued for it. If
        the broker is down the service goes on starting and subscribes when it comes back.
        """
        from citytwin.db.engine import make_engine

        self._engine = make_engine(self.database_url, pool_size=2, max_overflow=2)
        make = ProcessWriter if self.writer_process else BatchWriter
        self.writer = make(self.database_url, self.writer_options, stopping=self._stop.is_set)
        self.client = connect_client(self.mqtt_url, self.client_id, clean=False, manual_ack=True,
                                     receive_maximum=self.receive_maximum, on_connect=self._subscribe,
                                     start=False)
        self.client.on_message = lambda client, userdata, message: self.inbox.put(message)
        self.client.on_subscribe = lambda *args: self.subscribed.set()
        self.client.loop_start()
        self._spawn(self._write_loop, "ingest-writer")
        if self.relay_enabled:
            self._spawn(OutboxRelay(self).run, "outbox-relay")
        if self.maintenance is not None:
            self._spawn(self._maintenance_loop, "telemetry-maintenance")
        if ready_timeout_s and not self.subscribed.wait(ready_timeout_s):
            log.warning("MQTT broker at %s has not confirmed the subscriptions yet; still trying", self.mqtt_url)
        return self

    def request_stop(self) -> None:
        """Ask ``run_forever`` to return (e.g. from a signal handler)."""
        self._stop.set()

    def _maintenance_loop(self) -> None:
        """Retention and rollups in the background: first pass right away, then every interval."""
        while not self._stop.is_set():
            try:
                log.info("telemetry maintenance: %s", self.maintenance(self._engine))
            except Exception as exc:  # noqa: BLE001 - e.g. the database is restarting: try next time
                log.warning("telemetry maintenance failed: %s", str(exc).strip()[:300])
            self._stop.wait(self.maintenance_interval_s)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()
        if self.writer is not None:
            self.writer.close()
        if self._engine is not None:
            self._engine.dispose()

    def run_forever(self) -> None:
        self.start()
        try:
            while not self._stop.wait(1.0):
                pass
        finally:
            self.stop()

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _subscribe(self, client) -> None:
        """Subscribe (again: harmless) to our topics; with a share group, as an MQTT 5 shared subscription
        so that several ingest processes split the messages. The other form is unsubscribed, so a session
        switched between the two modes does not receive everything twice."""
        topics = [*OBSERVATION_SUBSCRIPTIONS, self.batch_topic, ACK_SUBSCRIPTION]
        shared = [f"$share/{self.share_group or self.client_id}/{t}" for t in topics]
        wanted, other = (shared, topics) if self.share_group else (topics, shared)
        client.unsubscribe(other)
        client.subscribe([(topic, 1) for topic in wanted])

    # -- the writer ---------------------------------------------------------------------------------
    def _collect(self) -> list:
        try:
            first = self.inbox.get(timeout=0.2)
        except queue.Empty:
            return []
        batch, size = [first], len(first.payload)
        deadline = time.monotonic() + self.batch_s
        while len(batch) < self.batch_max_messages and size < self.batch_max_bytes:
            try:
                message = self.inbox.get_nowait()
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    message = self.inbox.get(timeout=remaining)
                except queue.Empty:
                    break
            batch.append(message)
            size += len(message.payload)
        return batch

    def _write_loop(self) -> None:
        while not self._stop.is_set():
            batch = self._collect()
            if not batch:
                continue
            observations = [RawMessage(m.topic, m.payload, "mqtt") for m in batch if not _is_ack(m.topic)]
            acks = [(m.topic, m.payload) for m in batch if _is_ack(m.topic)]
            try:
                outcome = self.writer.write(observations, acks)
            except DB_ERRORS:
                return          # stopping while the database is down: nothing is acknowledged
            for message in batch:
                if message.qos > 0:
                    self.client.ack(message.mid, message.qos)
            self.stats.add(len(batch), outcome)
            if self.on_commit is not None:
                self.on_commit(batch, outcome.result)


def _is_ack(topic: str) -> bool:
    return topic.startswith(CMD_PREFIX + "/") and topic.endswith("/ack")


class OutboxRelay:
    """Publishes outbox commands QoS 1 and expires overdue tasks; wakes on NOTIFY or every second."""

    def __init__(self, service: IngestService, poll_s: float = 1.0) -> None:
        self.service = service
        self.poll_s = poll_s

    def run(self) -> None:
        listener = None
        while not self.service._stop.is_set():
            try:
                if listener is None or listener.closed:
                    listener = psycopg.connect(conninfo(self.service.database_url), autocommit=True)
                    listener.execute(f"LISTEN {OUTBOX_CHANNEL}")
                self.cycle()
                for _ in listener.notifies(timeout=self.poll_s, stop_after=1):
                    pass
            except Exception as exc:  # noqa: BLE001 - the relay must outlive database and broker restarts
                log.warning("outbox relay: %s", str(exc).strip()[:200])
                if listener is not None:
                    listener.close()
                listener = None
                self.service._stop.wait(0.5)
        if listener is not None:
            listener.close()

    def cycle(self) -> int:
        """Publish what is pending (if connected) and expire overdue tasks; returns commands sent."""
        client, engine, sent = self.service.client, self.service._engine, 0
        with engine.begin() as conn:
            commands.expire_tasks(conn)
        if client is None or not client.is_connected():
            return 0
        with engine.begin() as conn:
            for outbox_id, task_id, topic, payload in commands.claim_outbox(conn):
                info = client.publish(topic, json.dumps(payload).encode(), qos=1)
                try:
                    info.wait_for_publish(timeout=5.0)
                except (RuntimeError, ValueError):      # lost the connection meanwhile
                    pass
                if not info.is_published():
                    commands.mark_failed_attempt(conn, outbox_id, "broker did not acknowledge within 5 s")
                    break
                commands.mark_sent(conn, outbox_id, task_id)
                sent += 1
        return sent


def run_worker(database_url: str, mqtt_url: str, options: dict) -> None:
    """Entry point of one ingest process of several (``citytwin telemetry ingest --workers N``)."""
    import signal
    import sys

    sys.setswitchinterval(0.0005)
    service = IngestService(database_url, mqtt_url, **options)
    signal.signal(signal.SIGTERM, lambda *_: service.request_stop())
    signal.signal(signal.SIGINT, lambda *_: service.request_stop())
    service.run_forever()
