"""Chunk-parallel runs on a ``dask.distributed`` cluster, with each chunk resident on one worker.

Each chunk's arrays (:class:`.chunked.Chunk`) live in a store in the memory of the worker the run
gave it to, keyed by run id and chunk index, for the whole run. Every task that touches a chunk is
pinned to that worker (``workers=[address], allow_other_workers=False``), so the chunk itself is
never a task result: a block of steps is one task per chunk that takes the previous results of its
own chunk and its neighbours and returns only ``(outgoing strips, Info)`` -- small, and exactly what
the next block's tasks need. With no ``getitem`` picks between blocks, a block costs one task per
chunk and a single hop of its results between workers. Chunks that are neither the chunk itself nor
one of its neighbours send just their report, through a small pick task pinned to their worker
(none with two chunks or one row of bands), so strips never travel to chunks that do not need them.

The store is a module-level dict, so it works alike with threads in the client's process
(``processes=False``: all workers share it, the run id keeps runs apart), with worker processes
and with an external scheduler. It is emptied at the end of the run, after the maps have been
taken out of it, and when the run fails. A worker that leaves mid-run takes its chunks with it:
the driver notices (its pinned tasks could never run elsewhere) and fails with a clear error.
"""

from __future__ import annotations

import operator
import threading
import uuid
from typing import TYPE_CHECKING, Any, Callable

from citytwin.errors import ExternalServiceError

from .chunked import F32, Chunk, _make_chunk, chunk_frame, step_chunk
from .domain import Domain, Forcing
from .engine import Numerics

if TYPE_CHECKING:
    from .chunked import _Wiring

# --- on the workers ------------------------------------------------------------------------------
_STORE: dict[tuple[str, int], Chunk] = {}  # (run id, chunk index) -> the chunk, in this process
_STORE_LOCK = threading.Lock()  # a worker with several threads may open or release chunks at once


def _chunk(run: str, index: int) -> Chunk:
    try:
        return _STORE[(run, index)]
    except KeyError:
        raise ExternalServiceError(f"flood run {run}: chunk {index} is not on this Dask worker (the worker "
                                   "restarted, or the run was released)") from None


def open_chunk(run: str, index: int, args: tuple) -> tuple:
    """Build a chunk from its input slices and keep it here; returns (strips, Info)."""
    chunk, strips, info = _make_chunk(*args)
    with _STORE_LOCK:
        _STORE[(run, index)] = chunk
    return strips, info


def advance_resident(run: str, index: int, forcing: Forcing, num: Numerics, times: tuple, targets: tuple,
                     n_feeds: int, own: tuple, *others: Any) -> tuple:
    """Run the next block of steps on a resident chunk; returns (outgoing strips, Info).

    ``own`` is this chunk's previous (strips, Info); ``others`` are first the previous results of
    the ``n_feeds`` neighbours that feed its halo (in ``targets`` order), then the reports of all
    other chunks: every chunk needs every report to plan the same block of steps.
    """
    feeds, reports = others[:n_feeds], others[n_feeds:]
    infos = [own[1], *(feed[1] for feed in feeds), *reports]
    return step_chunk(_chunk(run, index), own[0], forcing, num, times, targets, infos,
                      [feed[0] for feed in feeds])


def on_chunk(run: str, index: int, after: Any, fn: Callable, *args: Any) -> Any:
    """``fn(chunk, *args)`` on a resident chunk; ``after`` (the chunk's last block) only orders it."""
    return fn(_chunk(run, index), *args)


def chunk_plans(chunk: Chunk) -> list:
    """The blocks of steps the chunk ran (every chunk ran the same), for the driver's books."""
    return chunk.plans


def release(run: str) -> int:
    """Drop every chunk of ``run`` held in this process; returns how many there were."""
    with _STORE_LOCK:
        keys = [key for key in _STORE if key[0] == run]
        for key in keys:
            del _STORE[key]
    return len(keys)


def _pack(*args: Any) -> tuple:
    return args


# --- on the driver -------------------------------------------------------------------------------
class Resident:
    """Runs chunks resident on the workers of a ``dask.distributed`` client; blocks queued in batches.

    The driver queues :attr:`BATCH` blocks of steps at a time and keeps one batch queued behind the
    one it waits for, so workers never run dry while it books and queues; the tasks plan their own
    steps. Blocks queued past the end of the run do nothing and are cancelled.
    """

    BATCH = 8  # blocks of steps per batch
    PATIENCE = 10.0  # s of waiting between checks that the chunks' workers are still there

    def __init__(self, client, wiring: _Wiring) -> None:
        self.client = client
        self.wiring = wiring
        self.run_id = uuid.uuid4().hex  # keeps concurrent runs' chunks apart in the workers' stores
        self.homes: list[str] = []  # per chunk: address of the worker that holds it
        self.last: list = []  # per chunk: future of its last block of steps (strips, Info)
        self.pending: list = []  # futures of batches queued but not yet waited for
        self.outputs: list = []  # futures of maps and volumes taken out of the chunks

    def _submit(self, index: int, fn: Callable, *args: Any):
        """Submit ``fn(*args)`` to the worker holding chunk ``index``, and only there."""
        return self.client.submit(fn, *args, workers=[self.homes[index]], allow_other_workers=False,
                                  pure=False)

    def _place(self, n: int) -> list[str]:
        """Workers for ``n`` chunks: consecutive chunks (mostly neighbours) share a worker."""
        workers = sorted(self.client.scheduler_info(n_workers=-1)["workers"])
        if not workers:
            self.client.wait_for_workers(1)
            workers = sorted(self.client.scheduler_info(n_workers=-1)["workers"])
        return [workers[i * len(workers) // n] for i in range(n)]

    def run(self, inputs: list, domain: Domain, num: Numerics, times: list[float], result) -> None:
        import dask

        client, wiring, run = self.client, self.wiring, self.run_id
        n = len(inputs)
        self.homes = self._place(n)
        # Small constants go to every worker once instead of with every task.
        forcing, num_f, times_f = client.scatter([domain.forcing, num, tuple(times)], broadcast=True)
        targets = client.scatter(list(wiring.targets), broadcast=True)
        # The input slices are computed wherever the scheduler likes, then move to the chunk's home.
        packed = client.compute([dask.delayed(_pack, pure=False)(*args) for args in inputs])
        self.last = [self._submit(i, open_chunk, run, i, packed[i]) for i in range(n)]
        del packed
        feeders = wiring.feeders
        others = [[j for j in range(n) if j != i and j not in feeders[i]] for i in range(n)]
        reported = sorted({j for row in others for j in row})

        def queue() -> tuple[list, Any]:
            """Queue a batch of blocks; returns its last block's futures and chunk 0's report of it."""
            for _ in range(self.BATCH):
                last = self.last
                reports = {j: self._submit(j, operator.getitem, last[j], 1) for j in reported}
                self.last = [self._submit(i, advance_resident, run, i, forcing, num_f, times_f, targets[i],
                                          len(feeders[i]), last[i], *[last[a] for a in feeders[i]],
                                          *[reports[j] for j in others[i]])
                             for i in range(n)]
            return self.last, self._submit(0, operator.getitem, self.last[0], 1)

        self.pending = [queue(), queue()]
        while True:
            blocks, report = self.pending.pop(0)
            info = self._wait([report])[0]
            if info.done or info.t >= times[-1]:
                break
            self.pending.append(queue())
        self.last = blocks  # every chunk's last block that ran (or found the run at its end)
        self._cancel(self.pending)
        self.pending = []
        plans = self._wait([self._submit(0, on_chunk, run, 0, self.last[0], chunk_plans)])[0]
        for plan in plans:
            result.book(plan, domain.forcing)
        result.extra["exchanges"] += len(plans)

    def _wait(self, futures: list) -> list:
        """Gather futures, failing if a worker holding a chunk leaves (its tasks would wait forever)."""
        from distributed import wait

        while True:
            try:
                wait(futures, timeout=self.PATIENCE)
                return self.client.gather(futures)
            except TimeoutError:
                present = set(self.client.scheduler_info(n_workers=-1)["workers"])
                lost = sorted(set(self.homes) - present)
                if lost:
                    raise ExternalServiceError(
                        f"Dask worker(s) {', '.join(lost)} left during a chunked flood run; the chunks "
                        "they held are lost (chunks stay on one worker for a whole run)") from None

    def _cancel(self, batches: list) -> None:
        futures = [f for blocks, report in batches for f in (*blocks, report)]
        if futures:
            self.client.cancel(futures)

    def map(self, fn: Callable, *args: Any) -> list:
        """Futures of ``fn(chunk, *args)`` for every chunk, each on the chunk's worker."""
        futures = [self._submit(i, on_chunk, self.run_id, i, self.last[i], fn, *args)
                   for i in range(len(self.last))]
        self.outputs.extend(futures)
        return futures

    def gather(self, handles: list) -> list:
        return self._wait(handles)

    def assemble(self, parts: list, shapes: list, width: int) -> Any:
        import dask
        import dask.array as da

        cells = [da.from_delayed(dask.delayed(p), shape=s, dtype=F32) for p, s in zip(parts, shapes)]
        return da.block([cells[k:k + width] for k in range(0, len(cells), width)])

    def frames(self, assemble: Callable, count: int) -> list:
        return [assemble(self.map(chunk_frame, k)) for k in range(count)]

    def close(self, finished: bool) -> None:
        """Free the run's chunks on the workers: after the maps are out, or at once on failure."""
        client = self.client
        if not self.homes:  # failed before any chunk was placed
            return
        if finished:
            self._wait(self.outputs)  # the maps stay on the cluster as results; the chunks can go
            client.run(release, self.run_id, workers=sorted(set(self.homes)))
            return
        try:
            self._cancel(self.pending)
            client.cancel(self.last + self.outputs)
            client.run(release, self.run_id, workers=sorted(set(self.homes)), on_error="ignore")
        except Exception:  # noqa: BLE001 - the run's own error is the one to report
            pass

