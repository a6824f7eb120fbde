"""The database side of the ingest service: a batch writer that outlives database restarts, inline or in
its own process.

``BatchWriter.write(observations, acks)`` stores a batch (observation messages and command acks) and
returns only once it is committed, retrying while the database is unreachable; bad input never raises
(a batch that fails for another reason is retried message by message and the culprit dead-lettered).

``ProcessWriter`` runs a ``BatchWriter`` in a child process: the MQTT network thread (paho, pure Python,
~100 µs per message) and the writer (validation, COPY) then no longer share one interpreter lock. On
our shared 2-core test machine, with no idle core, it drained queued single-observation messages at
the same ~2-3k msg/s as the inline writer, so it is opt-in; it is meant for hosts with cores to spare.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import psycopg

from citytwin.errors import InputError
from citytwin.telemetry import commands
from citytwin.telemetry.ingest import IngestResult, Ingestor, write_dead_letters
from citytwin.telemetry.mqtt import CMD_PREFIX
from citytwin.telemetry.pg import conninfo
from citytwin.telemetry.validate import DEFAULT_BATCH_TOPIC, DeadLetter, IngestLimits, RawMessage

log = logging.getLogger("citytwin.telemetry.ingest")
DB_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError)


@dataclass
class WriteOutcome:
    """What a batch did (picklable: it crosses the process boundary)."""

    result: IngestResult
    acks_applied: int = 0
    db_retries: int = 0


@dataclass
class WriterOptions:
    limits: IngestLimits = field(default_factory=IngestLimits)
    batch_topic: str = DEFAULT_BATCH_TOPIC


class BatchWriter:
    """Stores batches with one psycopg connection (and an engine for command acks)."""

    def __init__(self, database_url: str, options: WriterOptions = WriterOptions(),
                 stopping: Callable[[], bool] = lambda: False) -> None:
        from citytwin.db.engine import make_engine

        self.database_url = database_url
        self.ingestor = Ingestor(limits=options.limits, batch_topic=options.batch_topic)
        self.stopping = stopping
        self.engine = make_engine(database_url, pool_size=2, max_overflow=2)
        self.pg: psycopg.Connection | None = self._connect()
        self.ingestor.partitions.ensure_ahead(self.pg)
        self.retries = 0

    def close(self) -> None:
        if self.pg is not None:
            self.pg.close()
        self.engine.dispose()

    def write(self, observations: list[RawMessage], acks: list[tuple[str, bytes]]) -> WriteOutcome:
        """Store a batch; returns when committed. Raises DB errors only while stopping."""
        before = self.retries
        result = self._with_retry(lambda pg: self._ingest(pg, observations))
        applied = self._apply_acks(acks) if acks else 0
        return WriteOutcome(_plain(result), applied, self.retries - before)

    # -- database connection -----------------------------------------------------------------------
    def _connect(self) -> psycopg.Connection:
        delay = 0.1
        while True:
            try:
                return psycopg.connect(conninfo(self.database_url), autocommit=True, connect_timeout=5)
            except DB_ERRORS as exc:
                if self.stopping():
                    raise
                log.warning("database unreachable (%s); retrying in %.1f s", str(exc).strip()[:200], delay)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _with_retry(self, work: Callable[[psycopg.Connection], object]) -> object:
        """Run ``work(conn)`` until it succeeds, reconnecting while the database is down."""
        while True:
            try:
                if self.pg is None or self.pg.closed:
                    self.pg = self._connect()
                return work(self.pg)
            except DB_ERRORS as exc:
                self.retries += 1
                log.warning("database error, batch kept for retry: %s", str(exc).strip()[:200])
                try:
                    self.pg.close()
                except Exception:  # noqa: BLE001 - the connection is already broken
                    pass
                self.pg = None
                if self.stopping():
                    raise
                time.sleep(0.2)

    # -- observations --------------------------------------------------------------------------------
    def _ingest(self, pg: psycopg.Connection, messages: list[RawMessage]) -> IngestResult:
        try:
            return self.ingestor.ingest(pg, messages)
        except DB_ERRORS:
            raise
        except Exception:  # noqa: BLE001 - bad input must never stop ingest: isolate the culprit
            log.exception("batch failed; retrying message by message")
            return self._one_by_one(pg, messages)

    def _one_by_one(self, pg: psycopg.Connection, messages: list[RawMessage]) -> IngestResult:
        total = IngestResult()
        for message in messages:
            try:
                result = self.ingestor.ingest(pg, [message])
            except DB_ERRORS:
                raise
            except Exception as exc:  # noqa: BLE001
                _write_dead(pg, [_dead(message.topic, message.payload, "internal_error",
                                       f"{type(exc).__name__}: {exc}")])
                result = IngestResult(rejected=1)
            total.received += result.received
            total.stored += result.stored
            total.rejected += result.rejected
        return total

    # -- command acks --------------------------------------------------------------------------------
    def _apply_acks(self, acks: list[tuple[str, bytes]]) -> int:
        applied = 0
        for topic, payload in acks:
            thing = topic[len(CMD_PREFIX) + 1:-len("/ack")]
            while True:
                try:
                    with self.engine.begin() as conn:
                        log.info("command ack: %s", commands.apply_ack(conn, thing, payload))
                    applied += 1
                    break
                except InputError as exc:
                    dead = _dead(topic, payload, "bad_ack", exc.message)
                    self._with_retry(lambda pg, d=dead: _write_dead(pg, [d]))
                    break
                except Exception as exc:  # noqa: BLE001 - database down: retry; anything else: log, move on
                    if _is_db_down(exc) and not self.stopping():
                        time.sleep(0.5)
                        continue
                    log.exception("command ack on %s failed", topic)
                    break
        return applied


def _plain(result: IngestResult) -> IngestResult:
    """The result without the dead-letter payloads (they are in the table; keep pickles small)."""
    result.dead = []
    return result


def _dead(topic: str, payload: bytes, reason: str, detail: str) -> DeadLetter:
    return DeadLetter("mqtt", topic, reason, detail[:500], None, payload[:2000].decode("utf-8", "replace"),
                      len(payload))


def _write_dead(pg: psycopg.Connection, dead: list[DeadLetter]) -> None:
    with pg.transaction():
        write_dead_letters(pg, dead)


def _is_db_down(exc: Exception) -> bool:
    from sqlalchemy.exc import DBAPIError

    return isinstance(exc, DBAPIError) and (exc.connection_invalidated or isinstance(exc.orig, DB_ERRORS))


# -- the writer in a child process -------------------------------------------------------------------
def _child_main(conn, database_url: str, options: WriterOptions) -> None:
    import signal
    import sys

    signal.signal(signal.SIGINT, signal.SIG_IGN)        # the parent decides when we stop
    sys.setswitchinterval(0.0005)
    writer = BatchWriter(database_url, options)
    conn.send(("ready", None))
    while True:
        job = conn.recv()
        if job is None:
            break
        observations, acks = job
        messages = [RawMessage(topic, payload, "mqtt") for topic, payload in observations]
        conn.send(("done", writer.write(messages, acks)))
    writer.close()


class ProcessWriter:
    """A ``BatchWriter`` in a child process, with the same ``write`` call (restarted if it dies)."""

    def __init__(self, database_url: str, options: WriterOptions = WriterOptions(),
                 stopping: Callable[[], bool] = lambda: False) -> None:
        self.database_url = database_url
        self.options = options
        self.stopping = stopping
        self._lock = threading.Lock()
        self._start()

    def _start(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_child_main, args=(child, self.database_url, self.options),
                                daemon=True, name="citytwin-ingest-writer")
        self.proc.start()
        child.close()
        while not self.conn.poll(0.5):          # the child connects to the database first
            if not self.proc.is_alive():
                raise RuntimeError(f"the ingest writer process exited with {self.proc.exitcode}")
        self.conn.recv()

    def write(self, observations: list[RawMessage], acks: list[tuple[str, bytes]]) -> WriteOutcome:
        job = ([(m.topic, m.payload) for m in observations], acks)
        with self._lock:
            while True:
                try:
                    self.conn.send(job)
                    while not self.conn.poll(0.5):
                        if not self.proc.is_alive():
                            raise EOFError("writer process died")
                        if self.stopping():
                            # Unacknowledged messages come back from the broker; leave the child behind.
                            raise psycopg.OperationalError("stopping while the batch is not committed")
                    return self.conn.recv()[1]
                except (EOFError, BrokenPipeError, ConnectionResetError) as exc:
                    if self.stopping():
                        raise psycopg.OperationalError("stopping") from exc
                    log.error("ingest writer process failed (%s); restarting it", exc)
                    self.proc.kill()
                    self._start()

    def close(self) -> None:
        try:
            self.conn.send(None)
            self.proc.join(timeout=10)
        except (BrokenPipeError, OSError):
            pass
        if self.proc.is_alive():
            self.proc.kill()
