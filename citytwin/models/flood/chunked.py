"""Chunk-parallel runs: one task per chunk and block of steps, with halo exchange.

Each chunk of the DEM is a block whose state (depth, fluxes, running maxima) stays where it runs. A
block of ``K = exchange_steps`` steps runs on the chunk extended by a halo of ``K + 1`` cells copied
from its neighbours: wrong values enter from the halo's outer edge at one cell per step (a face
needs its two cells and its neighbouring faces), so after K steps the chunk itself is still exact.
All blocks use the same time step, computed from the global maximum depth between blocks, so the
chunked run reproduces the in-memory run (see :mod:`.engine`).

Per block of steps there is one task per chunk (:func:`step_chunk`): it plans the steps from all
chunks' reports, writes the strips its neighbours handed out into its halo, runs the steps and
hands out its own strips (the parts of it other halos need) with its report. Only strips and
reports travel. Three runners drive the tasks:

- ``dask.distributed`` client (:class:`.resident.Resident`): each chunk is kept in a store on one
  worker for the whole run and every task touching it is pinned there, so a task's result is just
  ``(strips, report)`` -- no picks out of a big result, one task per chunk and block. Tasks are
  submitted as futures in batches (the tasks plan their own steps, so the driver queues ahead and
  never builds, culls or orders a graph per step: with delayed objects and ``persist`` that
  bookkeeping cost more than the steps themselves, measured; REFERENCE.md: a few hundred tasks per
  step otherwise).
- no client (:class:`_Local`): each block is a small graph on the active local Dask scheduler.
- an in-memory grid split into bands (:class:`_Threads`): a thread pool of this process.

Volumes are booked per chunk on the cells and border faces it owns, in float64, and summed at the
end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from itertools import product
from typing import Any

import numpy as np

from .domain import Domain, Forcing
from .engine import Block, Numerics, Plan, advance, next_plan
from .result import RunResult

F32 = np.float32
Rect = tuple[int, int, int, int]  # row0, row1, col0, col1 (end-exclusive), padded grid coordinates


@dataclass(frozen=True)
class Piece:
    """Where a chunk sits in the padded grid."""

    own: Rect  # the cells this chunk owns (ghost ring included on border chunks)
    ext: Rect  # own + halo, clipped to the padded grid
    # Sides of the extended rectangle that are the domain's ghost ring: first row, last row, first
    # col, last col. Decided by the extended rectangle, not the own one: a halo that reaches the
    # border must apply the boundary condition there, or a wall-like ring would sit closer to the
    # chunk than the halo width.
    edges: tuple[bool, bool, bool, bool]
    interior: Rect  # own cells that are real cells (ghost ring excluded)


def _bounds(chunks: tuple[int, ...]) -> list[int]:
    """Padded-grid boundaries of chunks along one axis (first/last chunk take the ghost cell)."""
    edges = [0]
    for size in chunks:
        edges.append(edges[-1] + size)
    edges = [e + 1 for e in edges]
    edges[0] = 0
    edges[-1] += 1
    return edges


def layout(chunks: tuple[tuple[int, ...], tuple[int, ...]], halo: int) -> list[list[Piece]]:
    """Pieces of the padded grid for DEM chunks ``(row chunks, col chunks)``."""
    rb, cb = _bounds(chunks[0]), _bounds(chunks[1])
    ny, nx = rb[-1], cb[-1]
    pieces = []
    for i in range(len(rb) - 1):
        row = []
        for j in range(len(cb) - 1):
            own = (rb[i], rb[i + 1], cb[j], cb[j + 1])
            ext = (max(own[0] - halo, 0), min(own[1] + halo, ny),
                   max(own[2] - halo, 0), min(own[3] + halo, nx))
            edges = (ext[0] == 0, ext[1] == ny, ext[2] == 0, ext[3] == nx)
            interior = (max(own[0], 1), min(own[1], ny - 1), max(own[2], 1), min(own[3], nx - 1))
            row.append(Piece(own, ext, edges, interior))
        pieces.append(row)
    return pieces


def _overlap(a: Rect, b: Rect) -> Rect | None:
    r = (max(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), min(a[3], b[3]))
    return r if r[0] < r[1] and r[2] < r[3] else None


def _local(rect: Rect, origin: Rect) -> tuple[slice, slice]:
    return slice(rect[0] - origin[0], rect[1] - origin[0]), slice(rect[2] - origin[2], rect[3] - origin[2])


# --- tasks (run on the workers) ------------------------------------------------------------------
@dataclass
class Chunk:
    """One chunk's model arrays on its extended rectangle (own cells + halo), kept where it runs.

    Advanced in place: each block of steps has exactly one task that touches a chunk; the parts its
    neighbours need leave as separate small strips. Depth maps at output times stay in ``frames``
    (output index -> own cells) until the driver asks for them; ``plans`` are the blocks of steps
    run so far (every chunk runs the same ones), for the driver's books at the end of a run.
    """

    block: Block
    piece: Piece
    sources: tuple  # (rows, cols) of each outgoing strip in the extended rectangle
    outflow: float = 0.0
    frames: dict = field(default_factory=dict)
    plans: list = field(default_factory=list)


@dataclass
class Info:
    """What a chunk reports after a block of steps (small; every chunk's next task reads all)."""

    t: float  # time reached (s)
    peak: float  # largest depth on the chunk's own cells (m)
    plan: Plan | None  # the block of steps just run (None: nothing ran)
    done: bool = False  # the run had already reached its end


def _make_chunk(z, h0, hmax0, tarr0, manning, rain_field, piece: Piece, sources: tuple,
                src: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple:
    """Build a chunk from its slices of the padded inputs; returns (chunk, strips, info)."""
    z = np.array(z, dtype=F32)  # own copy: the ghost ring is rewritten every step
    h = np.array(h0, dtype=F32)
    zeros = np.zeros_like(h)
    rows, cols = _local(piece.interior, piece.ext)
    block = Block(z=z, h=h, c=zeros.copy(), qx=zeros.copy(), qy=zeros.copy(), hmax=np.array(hmax0, dtype=F32),
                  tarr=np.array(tarr0, dtype=F32),
                  manning=manning if isinstance(manning, float) else np.asarray(manning, dtype=F32),
                  rain_field=(rain_field if isinstance(rain_field, float)
                              else np.asarray(rain_field, dtype=F32)),
                  edges=np.array(piece.edges, dtype=np.bool_),
                  own=np.array([rows.start, rows.stop, cols.start, cols.stop], dtype="int64"),
                  src_rows=src[0], src_cols=src[1], src_ids=src[2])
    chunk = Chunk(block=block, piece=piece, sources=sources)
    inner = block.own_view(block.h)
    chunk.frames[0] = inner.copy()
    return chunk, _outgoing(chunk), Info(t=0.0, peak=_peak(inner), plan=None)


def _peak(inner: np.ndarray) -> float:
    return float(inner.max()) if inner.size else 0.0


def _outgoing(chunk: Chunk) -> tuple:
    """Copies of the parts of this chunk that neighbouring halos need: (h, c, qx, qy) each."""
    b = chunk.block
    return tuple(tuple(a[rows, cols].copy() for a in (b.h, b.c, b.qx, b.qy)) for rows, cols in chunk.sources)


def step_chunk(chunk: Chunk, strips: tuple, forcing: Forcing, num: Numerics, times: tuple, targets: tuple,
               infos: list, incoming: list) -> tuple[tuple, Info]:
    """Refresh the halo, run the next block of steps, hand out the strips for the neighbours.

    The block of steps is planned here, from every chunk's report of the previous block (they all
    compute the same plan), so a driver can queue many blocks without waiting for any. ``strips``
    are this chunk's last outgoing strips (handed out again when nothing runs); ``incoming[k]`` a
    neighbour's strip tuple and ``targets[k] = (index, rows, cols)`` which of its strips lands
    where. Returns (outgoing strips, Info).
    """
    b = chunk.block
    t = infos[0].t
    plan = None if infos[0].done else next_plan(forcing, num, list(times), t, max(i.peak for i in infos))
    inner = b.own_view(b.h)
    if plan is None:
        return strips, Info(t=t, peak=_peak(inner), plan=None, done=True)
    for (index, rows, cols), feed in zip(targets, incoming):
        for target, values in zip((b.h, b.c, b.qx, b.qy), feed[index]):
            target[rows, cols] = values
    chunk.outflow += advance(b, plan, num)
    chunk.plans.append(plan)
    if plan.t1 in times:
        chunk.frames[times.index(plan.t1)] = inner.copy()
    return _outgoing(chunk), Info(t=plan.t1, peak=_peak(inner), plan=plan)


def _advance(previous: tuple, forcing: Forcing, num: Numerics, times: tuple, targets: tuple, infos: list,
             *incoming: tuple) -> tuple:
    """:func:`step_chunk` on an in-process result ``(chunk, strips, info)``; returns the next one."""
    chunk = previous[0]
    return (chunk, *step_chunk(chunk, previous[1], forcing, num, times, targets, infos, list(incoming)))


def chunk_frame(chunk: Chunk, index: int) -> np.ndarray:
    """The depth map at output ``index`` on the chunk's own cells."""
    return chunk.frames.pop(index)  # handed out once: the chunk need not keep it


def chunk_field(chunk: Chunk, name: str) -> np.ndarray:
    """A copy of a block array (``hmax``, ``tarr``) on the chunk's own cells."""
    block = chunk.block
    return block.own_view(getattr(block, name)).copy()


def chunk_volumes(chunk: Chunk) -> tuple[float, float]:
    """(stored water, net border outflow) of the chunk's own cells and faces, m3 / cell area and m3."""
    b = chunk.block
    stored = float(b.own_view(b.h).sum(dtype="float64") + b.own_view(b.c).sum(dtype="float64"))
    return stored, chunk.outflow


# --- driver --------------------------------------------------------------------------------------
def _sources_in(domain: Domain, piece: Piece) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inflow cells inside a piece's extended rectangle (halo cells too: they must evolve alike)."""
    r0, r1, c0, c1 = piece.ext
    rows, cols = domain.inflows.rows + 1, domain.inflows.cols + 1
    inside = (rows > r0) & (rows < r1 - 1) & (cols > c0) & (cols < c1 - 1)
    ids = np.flatnonzero(inside)
    return (rows[ids] - r0).astype("int64"), (cols[ids] - c0).astype("int64"), ids.astype("int64")


@dataclass
class _Wiring:
    """Who feeds whose halo: chunk a's k-th outgoing strip lands in chunk b at ``targets[b]``."""

    sources: list[tuple]  # per chunk: (rows, cols) of each outgoing strip, in its extended rectangle
    targets: list[tuple]  # per chunk: (strip index at the feeder, rows, cols) of each incoming strip
    feeders: list[list[int]]  # per chunk: the chunks its incoming strips come from, in order

    @classmethod
    def of(cls, flat: list[Piece]) -> _Wiring:
        sources: list[list] = [[] for _ in flat]
        targets: list[list] = [[] for _ in flat]
        feeders: list[list[int]] = [[] for _ in flat]
        for (a, pa), (b, pb) in product(enumerate(flat), repeat=2):
            rect = _overlap(pa.own, pb.ext) if a != b else None
            if rect is not None:
                rows, cols = _local(rect, pb.ext)
                targets[b].append((len(sources[a]), rows, cols))
                sources[a].append(_local(rect, pa.ext))
                feeders[b].append(a)
        return cls([tuple(s) for s in sources], [tuple(t) for t in targets], feeders)


def _client():
    """The active dask.distributed client, or None."""
    try:
        from distributed import default_client

        return default_client()
    except (ImportError, ValueError):
        return None


def run_chunked(domain: Domain, num: Numerics, times: list[float], chunks: tuple, *, threads: int = 0) -> Any:
    """Run ``domain`` chunk by chunk with halo exchange; returns a RunResult.

    ``threads > 0``: numpy inputs, the chunks advance on a pool of that many threads in this
    process, the maps come back as numpy arrays. Otherwise (Dask inputs): with a
    ``dask.distributed`` client the chunks stay resident on its workers and blocks of steps are
    queued in batches (the tasks plan their own steps), so workers never wait for the driver (see
    :mod:`.resident`); without one, each block of steps runs as a small graph on the active local
    Dask scheduler. Maps come back Dask-backed.
    """
    rows_of_pieces = layout(chunks, num.exchange_steps + 1)
    flat = [p for row in rows_of_pieces for p in row]
    wiring = _Wiring.of(flat)
    rain_field = domain.rain.field if domain.rain.field is not None else 1.0
    inputs = []  # per chunk: the arguments of _make_chunk (numpy views or Dask slices)
    for k, piece in enumerate(flat):
        r0, r1, c0, c1 = piece.ext

        def cut(a, rect=(r0, r1, c0, c1)):
            return a if isinstance(a, float) else a[rect[0]:rect[1], rect[2]:rect[3]]

        inputs.append((cut(domain.z), cut(domain.h0), cut(domain.hmax0), cut(domain.tarr0),
                       cut(domain.manning), cut(rain_field), piece, wiring.sources[k],
                       _sources_in(domain, piece)))
    if threads:
        runner = _Threads(threads, wiring)
    else:
        client = _client()
        if client is not None:
            from .resident import Resident

            runner = Resident(client, wiring)
        else:
            runner = _Local(wiring)
    result = RunResult(times=times, frames=[], hmax=None, tarr=None)
    result.extra.update(chunks=len(flat), exchanges=0)
    finished = False
    try:
        runner.run(inputs, domain, num, times, result)
        inputs.clear()
        if threads:
            domain.drop_arrays()  # the chunks hold copies; free the originals before assembling maps
        shapes = [(p.interior[1] - p.interior[0], p.interior[3] - p.interior[2]) for p in flat]
        width = len(rows_of_pieces[0])

        def assemble(parts: list) -> Any:
            return runner.assemble(parts, shapes, width)

        result.frames = runner.frames(assemble, len(times))
        result.hmax = assemble(runner.map(chunk_field, "hmax"))
        result.tarr = assemble(runner.map(chunk_field, "tarr"))
        volumes = runner.gather(runner.map(chunk_volumes))
        finished = True
    finally:
        runner.close(finished)
    result.stored_end = float(sum(v[0] for v in volumes)) * domain.grid.cell_area
    result.outflow = float(sum(v[1] for v in volumes))
    return result


def book(result, reports: list, forcing: Forcing) -> bool:
    """Book the blocks of steps the reports describe; True once the run has reached its end."""
    for report in reports:
        if report.plan is not None:
            result.book(report.plan, forcing)
            result.extra["exchanges"] += 1
        if report.done:
            return True
    return False


class _Local:
    """Chunks in this process; each block of steps is one small graph on the local Dask scheduler."""

    def __init__(self, wiring: _Wiring) -> None:
        self.wiring = wiring
        self.results: list = []  # per chunk: (chunk, outgoing strips, Info) of the last block

    def run(self, inputs: list, domain: Domain, num: Numerics, times: list[float], result) -> None:
        import dask
        from dask.base import get_scheduler

        get = get_scheduler() or dask.threaded.get
        wiring = self.wiring
        n = len(inputs)
        make = dask.delayed(_make_chunk, pure=False)
        self.results = list(dask.compute(*[make(*args) for args in inputs]))
        forcing, times_t = domain.forcing, tuple(times)
        while True:
            infos = [r[2] for r in self.results]
            # Arguments are bound with partial: the scheduler must not look inside them.
            graph = {("advance", i): (partial(_advance, self.results[i], forcing, num, times_t,
                                              wiring.targets[i], infos,
                                              *[self.results[a][1] for a in wiring.feeders[i]]),)
                     for i in range(n)}
            self.results = list(get(graph, [("advance", i) for i in range(n)]))
            if book(result, [self.results[0][2]], forcing):
                return

    def map(self, fn, *args) -> list:
        """``fn(chunk, *args)`` for every chunk."""
        return [fn(r[0], *args) for r in self.results]

    def gather(self, handles: list) -> list:
        return handles

    def assemble(self, parts: list, shapes: list, width: int) -> Any:
        import dask.array as da

        return da.from_array(np.block([parts[k:k + width] for k in range(0, len(parts), width)]))

    def frames(self, assemble, count: int) -> list:
        return [assemble(self.map(chunk_frame, k)) for k in range(count)]

    def close(self, finished: bool) -> None:
        pass


class _Threads(_Local):
    """Chunks of an in-memory grid on a thread pool of this process; numpy maps out.

    This is how a large in-memory grid uses several cores: each thread advances its band for a
    whole block of steps (the numba kernels release the GIL), so threads meet once per block, not
    twice per step as a parallel loop inside each kernel would. On a loaded machine, where a
    thread may wait milliseconds for a core, that is the difference between 47 and 300 M
    cell-updates/s (measured, 1000 x 1000 cells, 2 cores).
    """

    def __init__(self, threads: int, wiring: _Wiring) -> None:
        from concurrent.futures import ThreadPoolExecutor

        super().__init__(wiring)
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="citytwin-flood")

    def run(self, inputs: list, domain: Domain, num: Numerics, times: list[float], result) -> None:
        wiring, pool = self.wiring, self.pool
        n = len(inputs)
        self.results = list(pool.map(lambda args: _make_chunk(*args), inputs))
        forcing, times_t = domain.forcing, tuple(times)
        while True:
            infos = [r[2] for r in self.results]
            futures = [pool.submit(_advance, self.results[i], forcing, num, times_t, wiring.targets[i], infos,
                                   *[self.results[a][1] for a in wiring.feeders[i]]) for i in range(n)]
            self.results = [f.result() for f in futures]
            if book(result, [self.results[0][2]], forcing):
                return

    def assemble(self, parts: list, shapes: list, width: int) -> np.ndarray:
        return np.block([parts[k:k + width] for k in range(0, len(parts), width)])

    def frames(self, assemble, count: int) -> np.ndarray:
        """All depth maps in one (time, y, x) array, filled map by map (no list of copies)."""
        first = assemble(self.map(chunk_frame, 0))
        out = np.empty((count,) + first.shape, dtype=F32)
        out[0] = first
        for k in range(1, count):
            out[k] = assemble(self.map(chunk_frame, k))
        return out

    def close(self, finished: bool) -> None:
        self.pool.shutdown(wait=True)
