"""The street grid of the synthetic city: blocks, districts, lots and how many buildings each block gets.

Everything here is per *block* (a few tens of thousands for a million buildings), never per
building, so the plan of the whole city fits in a few megabytes and the buildings themselves can
be generated block row by block row (:mod:`citytwin.synth.buildings`).

Geometry (local metres, x east, y north): ``ncols + 1`` north-south streets and ``nrows + 1``
east-west streets with jittered spacing; street ``i`` has centre line ``lines[i]`` and width
``widths[i]`` (12 m, every fifth a 20 m avenue). A block is the land between four streets and is
split into two rows of lots back to back: row 0 fronts the street to its south, row 1 the street to
its north. Blocks are numbered row-major (``b = r * ncols + c``) and buildings are numbered in block
order, lot by lot, which fixes every id independently of how the work is chunked.

Size: with ~80 x 50 m blocks and 12-20 m streets a suburban block holds ~17 houses, i.e. ~28
buildings per hectare including streets; downtown and industrial blocks hold fewer, larger
buildings. The grid is sized so the lots exceed the target by ~25 %; the surplus is taken from the
fringe (furthest from the centre, with a wavy outline), which leaves the city a rounded shape among
fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from citytwin.errors import InputError
from citytwin.synth.terrain import River

BLOCK_W_M = 80.0
BLOCK_H_M = 50.0
BLOCK_JITTER = 0.15          # +- fraction of the block size
STREET_M = 12.0
AVENUE_M = 20.0
AVENUE_EVERY = 5
RIVER_BANK_M = 10.0          # kept free of buildings beside the channel
MIN_LOT_W_M = 7.0
CAPACITY_MARGIN = 1.25
MAX_BUILDINGS = 9_999_999    # ids are B + 7 digits

# Districts.
SUBURB, INNER, DOWNTOWN, INDUSTRIAL, WATER = 0, 1, 2, 3, 4
DISTRICTS = ("suburb", "inner", "downtown", "industrial", "water")

# Building uses, in the order of citytwin.io.uses.USES.
USES = ("residential", "apartment", "office", "retail", "school", "hospital", "warehouse",
        "supermarket", "industrial", "other")
RESIDENTIAL, APARTMENT, OFFICE, RETAIL, SCHOOL, HOSPITAL, WAREHOUSE, SUPERMARKET, INDUSTRY, OTHER = range(10)

# Lots per row of a block (inclusive range) by district.
LOTS_PER_ROW = {SUBURB: (7, 10), INNER: (5, 8), DOWNTOWN: (3, 5), INDUSTRIAL: (1, 3)}
# Probability that a row of a block is one large lot with a special use, and that use's distribution.
SPECIAL_ROW_P = {SUBURB: 0.05, INNER: 0.08, DOWNTOWN: 0.15, INDUSTRIAL: 0.4}
SPECIAL_USES = {
    SUBURB: {SCHOOL: 0.5, SUPERMARKET: 0.3, OTHER: 0.2},
    INNER: {SCHOOL: 0.35, SUPERMARKET: 0.3, HOSPITAL: 0.1, APARTMENT: 0.25},
    DOWNTOWN: {OFFICE: 0.6, HOSPITAL: 0.1, RETAIL: 0.3},
    INDUSTRIAL: {WAREHOUSE: 0.5, INDUSTRY: 0.5},
}
# Use mix of ordinary lots by district (each row sums to 1).
USE_MIX = {
    SUBURB: {RESIDENTIAL: 0.88, APARTMENT: 0.04, RETAIL: 0.03, OFFICE: 0.01, OTHER: 0.04},
    INNER: {APARTMENT: 0.5, RESIDENTIAL: 0.22, RETAIL: 0.14, OFFICE: 0.08, OTHER: 0.06},
    DOWNTOWN: {OFFICE: 0.45, APARTMENT: 0.3, RETAIL: 0.2, OTHER: 0.05},
    INDUSTRIAL: {INDUSTRY: 0.45, WAREHOUSE: 0.4, OFFICE: 0.08, OTHER: 0.07},
}


def use_cumulative() -> np.ndarray:
    """(district, use) cumulative probabilities of the ordinary use mix (rows end at 1)."""
    table = np.zeros((len(DISTRICTS), len(USES)))
    for district, mix in USE_MIX.items():
        for use, p in mix.items():
            table[district, use] = p
    table[WATER, OTHER] = 1.0
    return np.cumsum(table, axis=1)


@dataclass(frozen=True)
class StreetAxis:
    """Street centre lines and widths along one axis; block ``i`` lies between streets ``i`` and ``i+1``."""

    lines: np.ndarray
    widths: np.ndarray

    @classmethod
    def jittered(cls, n_blocks: int, block: float, rng: np.random.Generator) -> "StreetAxis":
        phase = int(rng.integers(AVENUE_EVERY))
        widths = np.where((np.arange(n_blocks + 1) + phase) % AVENUE_EVERY == 0, AVENUE_M, STREET_M)
        sizes = block * (1.0 + BLOCK_JITTER * (2.0 * rng.random(n_blocks) - 1.0))
        steps = sizes + widths[:-1] / 2 + widths[1:] / 2
        lines = np.concatenate([[widths[0] / 2], widths[0] / 2 + np.cumsum(steps)])
        return cls(lines=np.round(lines, 2), widths=widths)

    @property
    def lo(self) -> np.ndarray:
        """Start of each block (m)."""
        return self.lines[:-1] + self.widths[:-1] / 2

    @property
    def hi(self) -> np.ndarray:
        """End of each block (m)."""
        return self.lines[1:] - self.widths[1:] / 2

    @property
    def extent(self) -> float:
        return float(self.lines[-1] + self.widths[-1] / 2)


@dataclass(frozen=True)
class CityLayout:
    """The plan of the city: street axes, the river, and per-block districts, lots and building counts."""

    n_buildings: int
    seed: int
    xs: StreetAxis
    ys: StreetAxis
    river: River
    downtown: tuple[float, float]
    district: np.ndarray = field(repr=False)      # (nblocks,) int8
    lots: np.ndarray = field(repr=False)          # (nblocks, 2) lots per row (before trimming)
    special_use: np.ndarray = field(repr=False)   # (nblocks, 2) use of a single-lot special row, -1 if none
    buildings: np.ndarray = field(repr=False)     # (nblocks,) buildings actually built
    first: np.ndarray = field(repr=False)         # (nblocks,) index of the block's first building

    @property
    def ncols(self) -> int:
        return len(self.xs.lines) - 1

    @property
    def nrows(self) -> int:
        return len(self.ys.lines) - 1

    @property
    def width(self) -> float:
        return self.xs.extent

    @property
    def height(self) -> float:
        return self.ys.extent

    def row_blocks(self, row: int) -> np.ndarray:
        """Block numbers of one block row."""
        return np.arange(row * self.ncols, (row + 1) * self.ncols)

    def block_bounds(self, blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(x0, y0, x1, y1) of blocks, local metres."""
        r, c = np.divmod(blocks, self.ncols)
        return self.xs.lo[c], self.ys.lo[r], self.xs.hi[c], self.ys.hi[r]


def _districts(xc: np.ndarray, yc: np.ndarray, river: River, downtown: tuple[float, float],
               width: float, height: float) -> np.ndarray:
    size = max(width, height)
    r = np.hypot(xc - downtown[0], yc - downtown[1]) / size
    district = np.full(xc.shape, SUBURB, dtype=np.int8)
    district[r < 0.28] = INNER
    near_river = np.abs(river.offset(xc, yc)) < river.floodplain + 0.12 * height
    industrial = (xc > downtown[0] + 0.25 * width) & near_river & (r > 0.2)
    district[industrial] = INDUSTRIAL
    district[r < 0.11] = DOWNTOWN
    return district


def _in_river(x0, y0, x1, y1, river: River) -> np.ndarray:
    """Blocks whose extent comes within the channel plus a bank strip (sampled along x)."""
    keep_out = river.half_width + RIVER_BANK_M
    hit = np.zeros(x0.shape, dtype=bool)
    for f in np.linspace(0.0, 1.0, 7):
        x = x0 + f * (x1 - x0)
        yr = river.centre_y(x)
        half = keep_out * np.sqrt(1.0 + river.centre_slope(x) ** 2)  # vertical half-extent of the strip
        hit |= (y0 < yr + half) & (y1 > yr - half)
    return hit


def _plan(n: int, seed: int, ncols: int, nrows: int) -> CityLayout | None:
    """The plan on an ``ncols`` x ``nrows`` grid, or None when it has too few lots for ``n`` buildings."""
    rng = np.random.default_rng([seed, 0, ncols, nrows])
    xs = StreetAxis.jittered(ncols, BLOCK_W_M, rng)
    ys = StreetAxis.jittered(nrows, BLOCK_H_M, rng)
    width, height = xs.extent, ys.extent
    river = River.for_city(width, height, rng)
    xd = width * (0.42 + 0.16 * rng.random())
    downtown = (xd, float(river.centre_y(xd)) + river.floodplain + 0.08 * height)

    c, r = np.meshgrid(np.arange(ncols), np.arange(nrows))
    c, r = c.ravel(), r.ravel()
    x0, x1, y0, y1 = xs.lo[c], xs.hi[c], ys.lo[r], ys.hi[r]
    district = _districts((x0 + x1) / 2, (y0 + y1) / 2, river, downtown, width, height)
    district[_in_river(x0, y0, x1, y1, river)] = WATER

    nb = len(district)
    lo = np.array([LOTS_PER_ROW.get(d, (0, 0))[0] for d in range(len(DISTRICTS))])
    hi = np.array([LOTS_PER_ROW.get(d, (0, 0))[1] for d in range(len(DISTRICTS))])
    max_fit = np.maximum(1, np.floor((x1 - x0) / MIN_LOT_W_M)).astype(int)
    spread = (hi - lo + 1)[district][:, None]
    lots = lo[district][:, None] + np.floor(rng.random((nb, 2)) * spread).astype(int)
    lots = np.minimum(lots, max_fit[:, None])

    special_use = np.full((nb, 2), -1, dtype=np.int8)
    p_special = np.array([SPECIAL_ROW_P.get(d, 0.0) for d in range(len(DISTRICTS))])
    draw, pick = rng.random((nb, 2)), rng.random((nb, 2))
    for d, mix in SPECIAL_USES.items():
        uses, probs = np.array(list(mix)), np.cumsum(list(mix.values()))
        rows = (district[:, None] == d) & (draw < p_special[d])
        chosen = uses[np.minimum(np.searchsorted(probs, pick, side="right"), len(uses) - 1)]
        special_use[rows] = chosen[rows]
    lots[special_use >= 0] = 1
    lots[district == WATER] = 0

    capacity = lots.sum(axis=1)
    if capacity.sum() < CAPACITY_MARGIN * n * 0.98:
        return None
    buildings = _trim(capacity, n, (x0 + x1) / 2 - width / 2, (y0 + y1) / 2 - height / 2, width, height, rng)
    first = np.concatenate([[0], np.cumsum(buildings)[:-1]])
    return CityLayout(n_buildings=n, seed=seed, xs=xs, ys=ys, river=river, downtown=downtown,
                      district=district, lots=lots, special_use=special_use, buildings=buildings, first=first)


def _trim(capacity: np.ndarray, n: int, dx: np.ndarray, dy: np.ndarray, width: float, height: float,
          rng: np.random.Generator) -> np.ndarray:
    """Building counts per block summing to ``n``: the surplus is removed from the outermost blocks."""
    theta = np.arctan2(dy, dx)
    phase = 2 * np.pi * rng.random(2)
    radius = np.hypot(dx / (width / 2), dy / (height / 2))
    score = radius * (1 + 0.12 * np.sin(3 * theta + phase[0]) + 0.08 * np.sin(5 * theta + phase[1]))
    order = np.lexsort((np.arange(len(score)), -score))   # outermost first; ties by block number
    surplus = int(capacity.sum()) - n
    cum = np.cumsum(capacity[order])
    keep = capacity.copy()
    full = cum <= surplus
    keep[order[full]] = 0
    j = int(np.argmax(~full)) if not full.all() else None
    if j is not None:
        removed_before = int(cum[j - 1]) if j > 0 else 0
        keep[order[j]] -= surplus - removed_before
    return keep


def plan_city(n_buildings: int, seed: int) -> CityLayout:
    """The layout of a city with exactly ``n_buildings`` buildings, deterministic in ``seed``.

    Raises
    ------
    InputError
        If ``n_buildings`` is not between 1 and 9,999,999 or ``seed`` is negative.
    """
    if not isinstance(n_buildings, (int, np.integer)) or not 1 <= n_buildings <= MAX_BUILDINGS:
        raise InputError(f"number of buildings must be an integer from 1 to {MAX_BUILDINGS:,}; "
                         f"got {n_buildings!r}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be a non-negative integer; got {seed!r}")
    n, seed = int(n_buildings), int(seed)
    cell_w, cell_h = BLOCK_W_M + STREET_M, BLOCK_H_M + STREET_M
    blocks = CAPACITY_MARGIN * n / 15.0
    ncols = max(2, int(round(np.sqrt(blocks * cell_h / cell_w))))
    nrows = max(2, int(np.ceil(blocks / ncols)))
    for _ in range(30):
        layout = _plan(n, seed, ncols, nrows)
        if layout is not None:
            return layout
        ncols, nrows = ncols + max(1, ncols // 10), nrows + max(1, nrows // 10)
    raise AssertionError(f"could not lay out {n} buildings")  # pragma: no cover - capacity always grows
