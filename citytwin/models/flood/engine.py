"""Time stepping shared by the in-memory and the chunked (Dask) runs.

The time step is ``dt = alpha sqrt(theta / 2) dx / sqrt(g h_max)``, capped at ``dt_max``. Bates et
al. (2010) and de Almeida et al. (2012) write ``dt = alpha dx / sqrt(g h_max)``, a one-dimensional
Courant condition. In two dimensions the scheme is stricter. Linearised without friction, one step
maps a Fourier mode's (q, eta) by a matrix with determinant ``A`` and trace ``1 + A - C^2 S``, where
``C = sqrt(g h) dt / dx``, ``S = 4 sin^2(kx dx/2) + 4 sin^2(ky dx/2)`` (at most 8) and ``A = theta +
(1 - theta) cos(k dx)`` is the theta averaging (``2 theta - 1`` for the checkerboard mode). Stability
needs ``C^2 S <= 2 (1 + A)``, i.e. ``C <= sqrt(theta / 2)``: 0.59 for theta = 0.7, 0.71 for theta = 1.
With ``alpha = 0.7`` and the 1-D convention a flat lake with a 0.1 mm perturbation blows up to
decimetres within minutes at theta = 0.7 (measured), so here ``alpha`` is the fraction of the 2-D
limit; 0.7 leaves room for depths that grow during a block of steps.

The step is held for blocks of ``exchange_steps`` steps (computed from the global maximum depth
at the start of the block) and shortened so that blocks end exactly on the output times. Every
run -- one block, bands on threads, chunks on Dask -- uses the same blocks and the same kernels,
so chunking changes speed, never results (bit-identical in the tests).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import kernels as k
from .domain import Forcing, ghost_depth

F32 = np.float32


@dataclass(frozen=True)
class Numerics:
    """Numerical parameters of a run."""

    dx: float  # cell size (m)
    theta: float  # de Almeida's weighting of the face's own flux (1 = Bates et al. 2010)
    alpha: float  # time step as a fraction of the 2-D stability limit (see the module docstring)
    dt_max: float  # upper bound of the time step (s)
    exchange_steps: int  # steps per block of constant dt (= per halo exchange in a chunked run)
    arrival_threshold: float  # depth (m) that counts as "water arrived"
    depth_threshold: float = 1e-3  # faces shallower than this (m) carry no flow (LISFLOOD-FP)
    g: float = k.G


@dataclass
class Plan:
    """One block of ``n`` steps of length ``dt`` from ``t0`` with the forcing of every step."""

    t0: float
    dt: float
    n: int
    t1: float  # end time (s), exactly ``t_stop`` when the block reaches it
    rain: np.ndarray  # (n,) rain amount per step: m (uniform rain) or s (rain raster)
    sources: np.ndarray  # (n, n_sources) inflow volume per step (m3)
    levels: np.ndarray  # (n, 4) boundary water levels at the step midpoints (m)
    kinds: np.ndarray  # (4,) boundary kinds

    def rain_volume(self, forcing: Forcing) -> float:
        """Rain volume (m3, float64) this plan adds to the open cells."""
        return float(self.rain.sum()) * forcing.rain_cells * forcing.cell_area

    def inflow_volume(self) -> float:
        return float(self.sources.sum())


def make_plan(forcing: Forcing, num: Numerics, t: float, h_peak: float, t_stop: float) -> Plan:
    """The next block of steps from ``t``, ending at ``t_stop`` if that is within reach."""
    levels_now = forcing.boundaries.levels_at(np.array([t]))[0]
    depth = max(h_peak, ghost_depth(forcing, levels_now))
    courant = num.alpha * math.sqrt(num.theta / 2.0)
    dt = num.dt_max if depth <= 0 else min(num.dt_max, courant * num.dx / math.sqrt(num.g * depth))
    remaining = t_stop - t
    n = num.exchange_steps
    if n * dt >= remaining * (1.0 - 1e-12):
        n = max(1, math.ceil(remaining / dt - 1e-9))
        dt = remaining / n
        times = t + dt * np.arange(n + 1)
        times[-1] = t_stop
    else:
        times = t + dt * np.arange(n + 1)
    t0s, t1s = times[:-1], times[1:]
    return Plan(t0=t, dt=dt, n=n, t1=float(times[-1]), rain=forcing.rain.amount(t0s, t1s),
                sources=forcing.inflows.volumes(t0s, t1s),
                levels=forcing.boundaries.levels_at(0.5 * (t0s + t1s)), kinds=forcing.boundaries.kinds)


def next_plan(forcing: Forcing, num: Numerics, times: list[float], t: float, h_peak: float) -> Plan | None:
    """The block of steps after time ``t`` towards the next output time; None once ``t`` is the end."""
    later = [out for out in times if out > t]
    if not later:
        return None
    return make_plan(forcing, num, t, h_peak, later[0])


@dataclass
class Block:
    """A padded rectangle of the grid the kernels advance.

    ``edges[s]`` tells which sides are the domain border (their ring is the ghost ring);
    ``own = (row0, row1, col0, col1)`` are the cells whose volume and border faces this block
    books (all interior cells in an in-memory run; the non-halo part in a chunked run).
    """

    z: np.ndarray
    h: np.ndarray
    c: np.ndarray
    qx: np.ndarray
    qy: np.ndarray
    hmax: np.ndarray
    tarr: np.ndarray
    manning: Any  # float n or float32 array of n
    rain_field: Any  # float 1.0 or float32 array (m/s)
    edges: np.ndarray
    own: np.ndarray
    src_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, "int64"))
    src_cols: np.ndarray = field(default_factory=lambda: np.zeros(0, "int64"))
    src_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, "int64"))
    scratch: tuple | None = None  # the second pair of flux arrays (double buffering)

    def own_view(self, a: np.ndarray) -> np.ndarray:
        r0, r1, c0, c1 = self.own
        return a[r0:r1, c0:c1]


def advance(block: Block, plan: Plan, num: Numerics) -> float:
    """Run the plan's steps on a block in place; returns the net border outflow (m3, float64)."""
    flux, continuity = k.flux, k.continuity
    if block.scratch is None:  # second flux buffers; entries the kernels never write read as 0
        block.scratch = (np.zeros_like(block.qx), np.zeros_like(block.qy))
    qxn, qyn = block.scratch
    fric = F32(block.manning**2) if isinstance(block.manning, float) else block.manning
    rain_field = block.rain_field
    dt = plan.dt
    theta = F32(num.theta)
    half = F32(0.5 * (1.0 - num.theta))
    hmin = F32(num.depth_threshold)
    thr = F32(num.arrival_threshold)
    gdt = F32(num.g * dt)
    inv_dx = F32(1.0 / num.dx)
    q_cap = F32(num.dx / (4.0 * dt))
    dt_dx = dt / num.dx
    src_depths = plan.sources[:, block.src_ids] / (num.dx * num.dx) if len(block.src_ids) else None
    outflow = 0.0
    for step in range(plan.n):
        t_end = F32(plan.t0 + (step + 1) * dt)
        k.set_ghosts(block.z, block.h, plan.kinds, plan.levels[step], block.edges, hmin)
        flux(block.z, block.h, block.qx, block.qy, qxn, qyn, fric, gdt, inv_dx, theta, half, hmin, q_cap)
        block.qx, qxn = qxn, block.qx
        block.qy, qyn = qyn, block.qy
        outflow += k.border_outflow(block.qx, block.qy, plan.kinds, block.edges, block.own, dt, num.dx)
        if src_depths is not None:
            k.add_sources(block.h, block.c, block.hmax, block.tarr, block.src_rows, block.src_cols,
                          src_depths[step], thr, t_end)
        continuity(block.h, block.c, block.qx, block.qy, block.hmax, block.tarr, rain_field, dt_dx,
                   float(plan.rain[step]), thr, t_end)
    block.scratch = (qxn, qyn)
    return outflow


def peak_depth(block: Block) -> float:
    """Largest depth (m) on the block's own cells."""
    own = block.own_view(block.h)
    return float(own.max()) if own.size else 0.0


def stored_volume(block: Block, cell_area: float) -> float:
    """Water volume (m3, float64) on the block's own cells, including the compensation terms."""
    h = float(block.own_view(block.h).sum(dtype="float64"))
    c = float(block.own_view(block.c).sum(dtype="float64"))
    return (h + c) * cell_area
