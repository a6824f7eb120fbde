"""Building footprints, heights, uses and ages for one block row of the synthetic city, vectorised.

Each block row draws from its own random stream (``default_rng([seed, 2, row])``) a fixed table of
uniforms per lot, so a building's attributes depend only on the seed and its position, never on
how rows are grouped into chunks.

A lot is ``lot_w`` wide (along its street) and half the block deep. The footprint is a rectangle,
or an L (a back corner cut out) for some homes, apartments, offices, schools and hospitals, placed
behind a front setback and at least ``MARGIN_M`` from the lot's sides and back: neighbouring
footprints are therefore never closer than 2 * MARGIN_M and never overlap.

Heights: ``floors * storey * U(0.95, 1.05) + roof`` with storey heights by use (2.9 m homes,
3.6 m offices, 4.2 m shops, ...), pitched roofs of 1.5-4 m on homes, parapets elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely

from citytwin.synth import layout as L
from citytwin.synth.layout import CityLayout
from citytwin.synth.terrain import DemGrid, Terrain, sample_cells

MARGIN_M = 0.5
N_DRAWS = 14

# Per use: width fraction of the free lot width (lo, hi), max width m, depth m (lo, hi),
# front setback m (lo, hi), storey height m, L-shape probability.
_FOOTPRINT = {
    L.RESIDENTIAL: ((0.55, 0.95), 13.0, (8.0, 12.0), (2.5, 6.0), 2.9, 0.25),
    L.APARTMENT: ((0.75, 0.95), 60.0, (10.0, 16.0), (1.0, 4.0), 3.0, 0.25),
    L.OFFICE: ((0.80, 0.98), 80.0, (14.0, 24.0), (0.5, 3.0), 3.6, 0.15),
    L.RETAIL: ((0.80, 0.98), 60.0, (12.0, 22.0), (0.5, 2.0), 4.2, 0.0),
    L.SCHOOL: ((0.60, 0.85), 90.0, (12.0, 20.0), (3.0, 6.0), 3.8, 0.4),
    L.HOSPITAL: ((0.70, 0.90), 120.0, (16.0, 22.0), (2.0, 4.0), 4.0, 0.3),
    L.WAREHOUSE: ((0.70, 0.95), 120.0, (16.0, 22.0), (2.0, 4.0), 9.0, 0.0),
    L.SUPERMARKET: ((0.55, 0.85), 70.0, (16.0, 21.0), (2.0, 4.0), 6.0, 0.0),
    L.INDUSTRY: ((0.60, 0.90), 120.0, (14.0, 22.0), (2.0, 4.0), 7.0, 0.0),
    L.OTHER: ((0.40, 0.80), 25.0, (8.0, 14.0), (2.0, 5.0), 3.5, 0.0),
}
# Floors (inclusive range) by use, with district-specific overrides.
_FLOORS = {
    L.RESIDENTIAL: (1, 3), L.APARTMENT: (3, 6), L.OFFICE: (2, 5), L.RETAIL: (1, 2), L.SCHOOL: (2, 3),
    L.HOSPITAL: (3, 7), L.WAREHOUSE: (1, 1), L.SUPERMARKET: (1, 1), L.INDUSTRY: (1, 2), L.OTHER: (1, 2),
}
_FLOORS_BY_DISTRICT = {
    (L.DOWNTOWN, L.APARTMENT): (5, 10), (L.DOWNTOWN, L.RETAIL): (1, 4), (L.DOWNTOWN, L.HOSPITAL): (5, 10),
    (L.DOWNTOWN, L.RESIDENTIAL): (3, 5), (L.INNER, L.APARTMENT): (3, 7), (L.SUBURB, L.APARTMENT): (3, 5),
}
# Year built (inclusive range) by district; downtown is the old town.
_YEARS = {L.SUBURB: (1950, 2023), L.INNER: (1890, 2015), L.DOWNTOWN: (1850, 2020), L.INDUSTRIAL: (1955, 2020),
          L.WATER: (1950, 2020)}
_DOWNTOWN_TOWER_FLOORS = (4, 30)  # offices: 4 + 26 u^3, so towers are rare


_W_FRAC = np.array([_FOOTPRINT[u][0] for u in range(len(L.USES))])
_W_MAX = np.array([_FOOTPRINT[u][1] for u in range(len(L.USES))])
_DEPTH = np.array([_FOOTPRINT[u][2] for u in range(len(L.USES))])
_SETBACK = np.array([_FOOTPRINT[u][3] for u in range(len(L.USES))])
_STOREY = np.array([_FOOTPRINT[u][4] for u in range(len(L.USES))])
_P_L = np.array([_FOOTPRINT[u][5] for u in range(len(L.USES))])
_FLOOR_RANGE = np.array([[_FLOORS_BY_DISTRICT.get((d, u), _FLOORS[u]) for u in range(len(L.USES))]
                         for d in range(len(L.DISTRICTS))])            # (district, use, 2)
_YEAR_RANGE = np.array([_YEARS[d] for d in range(len(L.DISTRICTS))])
_USE_CUM = L.use_cumulative()


@dataclass
class BuildingRows:
    """Buildings of one or more block rows as arrays (local metres; ``index`` is the global number)."""

    index: np.ndarray           # int64, 0-based building number (source_id = B + index + 1)
    block: np.ndarray           # int64 block number
    side: np.ndarray            # 0: fronts the block's south street, 1: its north street
    lot: np.ndarray             # lot number within its row, west to east
    lot_cx: np.ndarray          # x of the lot centre
    footprint: np.ndarray       # shapely Polygons
    area: np.ndarray            # footprint area m2
    height: np.ndarray          # m
    floors: np.ndarray          # int64
    use: np.ndarray             # int8 index into layout.USES
    year_built: np.ndarray      # int64
    district: np.ndarray        # int8
    ground_elevation: np.ndarray  # m, float32 value of the DEM cell under the centroid
    front_x: np.ndarray         # service point: middle of the front facade
    front_y: np.ndarray
    draw: np.ndarray            # spare uniforms per building: transformer flood tolerance ...
    meter_draw: np.ndarray      # ... and the smart-meter sample

    def __len__(self) -> int:
        return len(self.index)

    @staticmethod
    def concat(parts: list["BuildingRows"]) -> "BuildingRows":
        fields = BuildingRows.__dataclass_fields__
        return BuildingRows(**{name: np.concatenate([getattr(p, name) for p in parts]) for name in fields})


def _uniform(u: np.ndarray, lo: np.ndarray | float, hi: np.ndarray | float) -> np.ndarray:
    return lo + (hi - lo) * u


def block_row_buildings(layout: CityLayout, row: int, terrain: Terrain, dem: DemGrid) -> BuildingRows:
    """All buildings of block row ``row`` (see module docstring)."""
    blocks = layout.row_blocks(row)
    counts = layout.buildings[blocks]
    n = int(counts.sum())
    blk = np.repeat(blocks, counts)
    q = np.arange(n) - np.repeat(np.cumsum(counts) - counts, counts)   # lot number within the block
    k0 = layout.lots[blk, 0]
    side = (q >= k0).astype(np.int8)
    lot = np.where(side == 0, q, q - k0)
    k = layout.lots[blk, side]
    special = layout.special_use[blk, side]
    district = layout.district[blk]
    x0, y0, x1, y1 = layout.block_bounds(blk)

    u = np.random.default_rng([layout.seed, 2, row]).random((n, N_DRAWS))

    ordinary = np.minimum((u[:, 0, None] >= _USE_CUM[district]).sum(axis=1), len(L.USES) - 1)
    use = np.where(special >= 0, special, ordinary).astype(np.int8)

    lot_w = (x1 - x0) / k
    lot_x0 = x0 + lot * lot_w
    lot_d = (y1 - y0) / 2
    free_w = lot_w - 2 * MARGIN_M
    width = np.minimum(free_w * _uniform(u[:, 1], _W_FRAC[use, 0], _W_FRAC[use, 1]), _W_MAX[use])
    width = np.maximum(width, np.minimum(4.0, free_w))
    setback = _uniform(u[:, 4], _SETBACK[use, 0], _SETBACK[use, 1])
    setback = np.minimum(setback, np.maximum(MARGIN_M, lot_d - MARGIN_M - 4.0))
    depth = np.minimum(_uniform(u[:, 2], _DEPTH[use, 0], _DEPTH[use, 1]), lot_d - setback - MARGIN_M)
    offset = MARGIN_M + u[:, 3] * (free_w - width)

    # Local frame: u0 along the street from the lot's west side, v from the street into the lot.
    left = lot_x0 + offset
    front_y = np.where(side == 0, y0, y1)
    sign = np.where(side == 0, 1.0, -1.0)
    is_l = (u[:, 8] < _P_L[use]) & (width >= 10.0) & (depth >= 10.0)
    notch_w = width * _uniform(u[:, 9], 0.3, 0.5)
    notch_d = depth * _uniform(u[:, 10], 0.3, 0.5)
    footprint = _footprints(left, front_y + sign * setback, sign, width, depth, is_l, notch_w, notch_d)

    lo, hi = _FLOOR_RANGE[district, use, 0], _FLOOR_RANGE[district, use, 1]
    floors = lo + np.floor(u[:, 5] * (hi - lo + 1)).astype(np.int64)
    tower = (district == L.DOWNTOWN) & (use == L.OFFICE)
    t_lo, t_hi = _DOWNTOWN_TOWER_FLOORS
    floors = np.where(tower, t_lo + np.floor(u[:, 5] ** 3 * (t_hi - t_lo + 1)).astype(np.int64), floors)
    roof = np.where(use == L.RESIDENTIAL, _uniform(u[:, 7], 1.5, 4.0), _uniform(u[:, 7], 0.3, 1.5))
    height = np.round(floors * _STOREY[use] * _uniform(u[:, 6], 0.95, 1.05) + roof, 1)

    y_lo, y_hi = _YEAR_RANGE[district, 0], _YEAR_RANGE[district, 1]
    year = (y_lo + np.floor(u[:, 11] ** 0.8 * (y_hi - y_lo + 1))).astype(np.int64)

    centroid = shapely.get_coordinates(shapely.centroid(footprint))
    ground = sample_cells(terrain, dem, centroid[:, 0], centroid[:, 1])
    start = layout.first[blocks[0]] if len(blocks) else 0
    return BuildingRows(
        index=start + np.arange(n, dtype=np.int64), block=blk.astype(np.int64), side=side, lot=lot,
        lot_cx=lot_x0 + lot_w / 2, footprint=footprint, area=shapely.area(footprint), height=height,
        floors=floors, use=use, year_built=year, district=district, ground_elevation=ground,
        front_x=left + width / 2, front_y=front_y + sign * setback, draw=u[:, 12],
        meter_draw=u[:, 13],
    )


def _footprints(left, front, sign, width, depth, is_l, notch_w, notch_d) -> np.ndarray:
    """Rectangles (4 corners) or L shapes (6 corners, back-right corner cut) as shapely Polygons."""
    n = len(left)
    if n == 0:
        return np.empty(0, dtype=object)
    uu = np.zeros((n, 6))
    vv = np.zeros((n, 6))
    uu[:, 1] = uu[:, 2] = width
    vv[:, 2] = vv[:, 3] = depth
    # L: (0,0) (w,0) (w,d-nd) (w-nw,d-nd) (w-nw,d) (0,d)
    uu[is_l, 2] = width[is_l]
    vv[is_l, 2] = (depth - notch_d)[is_l]
    uu[is_l, 3] = (width - notch_w)[is_l]
    vv[is_l, 3] = (depth - notch_d)[is_l]
    uu[is_l, 4] = (width - notch_w)[is_l]
    vv[is_l, 4] = depth[is_l]
    uu[is_l, 5] = 0.0
    vv[is_l, 5] = depth[is_l]
    count = np.where(is_l, 6, 4)
    used = np.arange(6)[None, :] < count[:, None]
    x = left[:, None] + uu
    y = front[:, None] + sign[:, None] * vv
    coords = np.column_stack([x[used], y[used]])
    rings = shapely.linearrings(coords, indices=np.repeat(np.arange(n), count))
    # Row-1 lots are mirrored (v runs south), which flips the ring; orient all exteriors counter-clockwise.
    return shapely.orient_polygons(shapely.polygons(rings), exterior_cw=False)
