"""Reading and serialising building chunks ahead of the COPY, so the client and PostgreSQL overlap.

An import is a pipeline: read a chunk (GDAL, GEOS validation), turn it into COPY bytes, let the
server parse and store it. The first two steps are CPU-bound Python/C work under the GIL; a thread
cannot run them beside anything else in this process, so on Linux they run in a forked child
(``ProcessFeed``): the child reads and prepares chunk *n + 1* while the parent streams chunk *n* to
the server, and with two cores the child and the server backend each get one. Elsewhere (no
``fork``) a thread does the same work (``ThreadFeed``), which still overlaps GIL-free I/O.

Both feeds are driven the same way::

    first = feed.first(on_empty)          # the first chunk with buildings (its frame may be a sketch)
    for prepared in feed.prepared(twin):  # every chunk, the first included, ready for COPY
        ...
    feed.close()

The child is forked *before* the source is touched, so it owns every open file of the read; it never
uses anything else it inherited (the database connection, the console) and leaves with
``os._exit`` (multiprocessing's fork start), so no finaliser of the parent's objects runs in it.
"""

from __future__ import annotations

import multiprocessing
import pickle
import queue
import sys
import threading
import traceback
from dataclasses import replace
from typing import Callable, Iterable, Iterator

from citytwin.db.building_rows import Prepared, TwinCRS, prepare_chunk
from citytwin.errors import CityTwinError

OnEmpty = Callable[[object], None]


def can_fork() -> bool:
    """Whether preparing in a forked child is possible and safe here: Linux (macOS forks badly with its
    system frameworks), and not inside a daemonic worker (those may not have children)."""
    return (sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()
            and not multiprocessing.current_process().daemon)


def open_feed(chunks: Iterable, *, source: str, path: str, in_process: bool | None = None):
    """A ``ProcessFeed`` where forking is possible (or ``in_process`` says so), else a ``ThreadFeed``."""
    if in_process is None:
        in_process = can_fork()
    return ProcessFeed(chunks, source=source, path=path) if in_process else ThreadFeed(chunks, source=source, path=path)


class PreparationError(CityTwinError):
    """The preparing child died without reporting an error (killed, out of memory)."""


class ThreadFeed:
    """Chunks read in the caller's thread until the first, then prepared in a background thread."""

    def __init__(self, chunks: Iterable, *, source: str, path: str) -> None:
        self._chunks = iter(chunks)
        self._source, self._path = source, path
        self._first = None

    def first(self, on_empty: OnEmpty):
        for chunk in self._chunks:
            if len(chunk.frame):
                self._first = chunk
                return chunk
            on_empty(chunk)
        return None

    def prepared(self, twin: TwinCRS) -> Iterator[Prepared]:
        """Prepare chunks in a background thread, at most two ahead of the database."""
        ready: queue.Queue = queue.Queue(maxsize=2)
        done = object()
        stop = threading.Event()

        def produce() -> None:
            try:
                for chunk in ([self._first] if self._first is not None else []):
                    ready.put(prepare_chunk(chunk, twin, self._source, self._path))
                for chunk in self._chunks:
                    if stop.is_set():
                        return
                    ready.put(prepare_chunk(chunk, twin, self._source, self._path))
                ready.put(done)
            except BaseException as exc:  # handed to the consumer, which raises it in the import's thread
                ready.put(exc)

        worker = threading.Thread(target=produce, name="citytwin-import", daemon=True)
        worker.start()
        try:
            while True:
                item = ready.get()
                if item is done:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            while worker.is_alive():  # unblock a producer waiting on a full queue
                try:
                    ready.get_nowait()
                except queue.Empty:
                    worker.join(timeout=0.05)

    def close(self) -> None:
        """Nothing to release: the thread ends with the ``prepared`` generator."""


class ProcessFeed:
    """Chunks read and prepared in a forked child; messages and COPY bytes come back over a pipe.

    Protocol (child -> parent): ``("empty", read)`` for chunks without buildings before the first
    one, ``("head", read)`` for the first chunk with buildings (its frame reduced to its bounding
    box, which is all the twin's CRS choice needs), then after the parent answers with a
    ``TwinCRS``: ``("chunk", prepared)`` followed by the payload bytes, per chunk; ``("end", None)``
    or ``("error", (exception, traceback text))``. The pipe holds one message, so the child is at
    most one chunk ahead of the COPY, which bounds memory.
    """

    def __init__(self, chunks: Iterable, *, source: str, path: str) -> None:
        context = multiprocessing.get_context("fork")
        self._pipe, child_end = context.Pipe(duplex=True)
        self._process = context.Process(target=_child_main, args=(child_end, chunks, source, path),
                                        name="citytwin-prepare", daemon=True)
        self._process.start()
        child_end.close()  # the parent's copy: EOF on our end then means the child is gone
        self._finished = False

    def _receive(self) -> tuple[str, object]:
        try:
            kind, value = self._pipe.recv()
        except EOFError:
            self._process.join(timeout=5)
            raise PreparationError(f"the process preparing the buildings ended unexpectedly "
                                    f"(exit code {self._process.exitcode}); nothing was imported") from None
        if kind == "error":
            exc, text = value
            raise exc from _ChildTraceback(text)
        return kind, value

    def first(self, on_empty: OnEmpty):
        while True:
            kind, value = self._receive()
            if kind == "empty":
                on_empty(value)
            elif kind == "head":
                return value
            else:  # "end": no chunk had buildings
                self._finished = True
                return None

    def prepared(self, twin: TwinCRS) -> Iterator[Prepared]:
        self._pipe.send(twin)
        while True:
            kind, value = self._receive()
            if kind == "end":
                self._finished = True
                return
            value.payload = self._pipe.recv_bytes()  # raw bytes: no pickling of tens of MB
            yield value

    def close(self) -> None:
        """Wait for a child that finished; kill one that is still working (the import failed)."""
        if self._finished:
            self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._pipe.close()


class _ChildTraceback(Exception):
    """Carries the child's traceback text as the cause of the re-raised error."""


def _child_main(pipe, chunks: Iterable, source: str, path: str) -> None:
    """The child's loop (see ``ProcessFeed``); every error goes to the parent, which raises it."""
    try:
        twin = None
        for chunk in chunks:
            if twin is None:
                if not len(chunk.frame):
                    pipe.send(("empty", chunk))
                    continue
                pipe.send(("head", _sketch(chunk)))
                twin = pipe.recv()
            prepared = prepare_chunk(chunk, twin, source, path)
            payload, prepared.payload = prepared.payload, b""
            pipe.send(("chunk", prepared))
            pipe.send_bytes(payload)
        pipe.send(("end", None))
    except (BrokenPipeError, EOFError):
        return  # the parent stopped listening (its import failed): nothing left to tell
    except BaseException as exc:
        text = traceback.format_exc()
        try:
            pickle.loads(pickle.dumps(exc))
        except Exception:  # an exception type that does not survive pickling: keep its words
            exc = RuntimeError(f"{type(exc).__name__}: {exc}")
        try:
            pipe.send(("error", (exc, text)))
        except (BrokenPipeError, OSError):
            pass


def _sketch(read):
    """The read with its frame replaced by one bounding-box polygon in the same CRS: the same
    ``crs``, ``total_bounds``, warnings and rejections, at a few hundred bytes instead of a chunk."""
    import geopandas as gpd
    import shapely

    frame = gpd.GeoDataFrame(geometry=[shapely.box(*read.frame.total_bounds)], crs=read.frame.crs)
    return replace(read, frame=frame)
