"""The medium-voltage backbone of the synthetic grid: substations, radial feeders and their ties.

Plan ("fishbone" feeders along the street grid)
-----------------------------------------------
The block grid is cut into substation *cells* of up to 24 block rows; a city gets roughly one
primary substation (110/20 kV, 40-80 MVA) per 10,000 buildings, at least two from 1,000 buildings
on. A cell with buildings gets a substation on the east-west street and in the block column that
split its buildings evenly (the nearest street off the river channel). Its cell is split into a
north and a south half at that street and each half into *strips* four block columns wide; each
(half, strip) with buildings is one feeder. A feeder's trunk leaves the substation bus through a
breaker, runs along the substation's street to the north-south street in the middle of its strip,
then along that street to the edge of the cell: one trunk node at every crossing east-west street.
At each crossing a fused lateral branches west and east along the east-west street and feeds the
distribution transformers of the strip's blocks in that row (see
:mod:`citytwin.synth.distribution`). Every third trunk segment starts with a disconnector, the
middle one of long trunks with a recloser.

Ties: where a north trunk of one cell ends on the same street crossing as a south trunk of the
cell above, a normally-open tie switch joins them (two substations). Every other trunk end is
joined to the next one along the same street (within 1.5 km) by a tie cable ending in a
normally-open switch. Closing any tie joins two feeders; with every tie open the grid is radial.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from citytwin.synth import gridparts as gp
from citytwin.synth.layout import CityLayout

CELL_ROWS = 24
STRIP_COLS = 4
BUILDINGS_PER_SUBSTATION = 10_000
MV_KV, HV_KV = 20.0, 110.0
DISCONNECTOR_EVERY = 3
RECLOSER_MIN_SEGMENTS = 6
# Ratings, MVA: a 240 mm2 Al XLPE 20 kV cable carries ~12 MVA, a 150 mm2 ~9 MVA.
TRUNK_CABLES_MVA = (12.0, 15.0, 20.0, 24.0)
LATERAL_MVA = 9.0
MAX_TIE_CABLE_M = 1500.0
SUBSTATION_SIZES_MVA = (10.0, 16.0, 20.0, 25.0, 31.5, 40.0, 50.0, 63.0, 80.0, 100.0, 126.0)


@dataclass
class FeederPlan:
    """Substations, feeders and the feeder of every block (local metres)."""

    row_edges: np.ndarray        # cell boundaries in block rows (sy + 1)
    col_edges: np.ndarray        # cell boundaries in block columns (sx + 1)
    # Per substation (only cells with buildings get one):
    sub_id: list[str]
    sub_line: np.ndarray         # east-west street it stands on
    sub_x: np.ndarray
    sub_y: np.ndarray
    # Per feeder (only strips with buildings get one):
    f_id: list[str]
    f_sub: np.ndarray            # index of its substation
    f_cell: np.ndarray           # (nf, 2) cell row, cell col
    f_north: np.ndarray          # bool: north half
    f_strip: np.ndarray
    f_trunk_line: np.ndarray     # north-south street of the trunk
    f_segments: np.ndarray       # number of trunk segments (block rows in its half)
    block_feeder: np.ndarray = field(repr=False)   # (nblocks,) feeder of each block, -1 if none
    block_k: np.ndarray = field(repr=False)        # trunk node index its lateral leaves from
    block_line: np.ndarray = field(repr=False)     # east-west street of its lateral and transformer
    block_west: np.ndarray = field(repr=False)     # lateral goes west of the trunk

    @property
    def n_feeders(self) -> int:
        return len(self.f_id)

    def substation_of(self, f: np.ndarray) -> np.ndarray:
        return self.f_sub[f]

    def trunk_point(self, layout: CityLayout, f: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Local position of trunk node ``k`` of feeder ``f``."""
        line = self.sub_line[self.f_sub[f]] + np.where(self.f_north[f], k, -k)
        return layout.xs.lines[self.f_trunk_line[f]], layout.ys.lines[line]

    def trunk_node_ids(self, f: np.ndarray, k: np.ndarray) -> pa.Array:
        return gp.joined(np.asarray(self.f_id, dtype=object)[f], gp.numbered("-T", k, 3))


def _edges(n: int, parts: int) -> np.ndarray:
    return np.round(np.linspace(0, n, parts + 1)).astype(int)


def _median_split(weights: np.ndarray) -> int:
    """Index i minimising |sum(weights[:i]) - sum(weights) / 2| (0..len)."""
    prefix = np.concatenate([[0], np.cumsum(weights)])
    return int(np.argmin(np.abs(prefix - prefix[-1] / 2)))


def _substation_site(layout: CityLayout, built: np.ndarray, r0: int, r1: int, c0: int,
                     c1: int) -> tuple[int, int]:
    """(street line, block column) at the load-weighted centre of a cell, off the river channel."""
    cell = built[r0:r1, c0:c1]
    line = r0 + _median_split(cell.sum(axis=1))
    col = c0 + min(_median_split(cell.sum(axis=0)), c1 - c0 - 1)
    x = (layout.xs.lo[col] + layout.xs.hi[col]) / 2
    keep_out = layout.river.half_width + 10.0
    candidates = sorted(range(r0, r1 + 1), key=lambda c: (abs(c - line), c))
    clear = [c for c in candidates
             if abs(layout.river.offset(np.array([x]), np.array([layout.ys.lines[c]]))[0]) > keep_out]
    return (clear[0] if clear else line), col


def plan_feeders(layout: CityLayout) -> FeederPlan:
    """Cells, substations and feeders for ``layout`` (see module docstring)."""
    n_sub = max(1, round(layout.n_buildings / BUILDINGS_PER_SUBSTATION))
    if layout.n_buildings >= 1000 and layout.nrows >= 4:
        n_sub = max(2, n_sub)
    sy = max(1, int(np.ceil(layout.nrows / CELL_ROWS)))
    if n_sub >= 2 and sy == 1 and layout.ncols < 2 * STRIP_COLS:
        sy = 2
    sx = max(1, min(int(round(n_sub / sy)), layout.ncols // STRIP_COLS or 1))
    row_edges, col_edges = _edges(layout.nrows, sy), _edges(layout.ncols, sx)
    built = layout.buildings.reshape(layout.nrows, layout.ncols)

    sub_id, sub_line, sub_col = [], [], []
    f_sub, f_cell, f_north, f_strip, f_trunk, f_seg, f_id = [], [], [], [], [], [], []
    lookup: dict[tuple[int, int, bool, int], int] = {}
    cell_line = np.zeros((sy, sx), dtype=int)
    for cy in range(sy):
        r0, r1 = row_edges[cy], row_edges[cy + 1]
        for cx in range(sx):
            c0, c1 = col_edges[cx], col_edges[cx + 1]
            if built[r0:r1, c0:c1].sum() == 0:
                continue                      # fields only: no substation
            line, col = _substation_site(layout, built, r0, r1, c0, c1)
            cell_line[cy, cx] = line
            sub = len(sub_id)
            sub_id.append(f"S{sub + 1:03d}")
            sub_line.append(line)
            sub_col.append(col)
            number = 0
            for north in (True, False):
                rows = slice(line, r1) if north else slice(r0, line)
                for s, s0 in enumerate(range(c0, c1, STRIP_COLS)):
                    s1 = min(c1, s0 + STRIP_COLS)
                    if built[rows, s0:s1].sum() == 0:
                        continue              # no customers: no feeder
                    number += 1
                    lookup[(cy, cx, north, s)] = len(f_id)
                    f_sub.append(sub)
                    f_cell.append((cy, cx))
                    f_north.append(north)
                    f_strip.append(s)
                    f_trunk.append(s0 + int(np.ceil((s1 - s0) / 2)))
                    f_seg.append((r1 - line) if north else (line - r0))
                    f_id.append(f"{sub_id[sub]}-F{number:02d}")

    blocks = np.arange(layout.nrows * layout.ncols)
    r, c = np.divmod(blocks, layout.ncols)
    cy = np.searchsorted(row_edges, r, side="right") - 1
    cx = np.searchsorted(col_edges, c, side="right") - 1
    north = r >= cell_line[cy, cx]
    strip = (c - col_edges[cx]) // STRIP_COLS
    feeder = np.array([lookup.get((a, b, bool(n), s), -1) for a, b, n, s in zip(cy, cx, north, strip)],
                      dtype=np.int64)
    line = np.where(north, r, r + 1)
    trunk = np.asarray(f_trunk + [0])[feeder]
    sub_col = np.asarray(sub_col, dtype=int)
    sub_line = np.asarray(sub_line, dtype=int)
    return FeederPlan(
        row_edges=row_edges, col_edges=col_edges, sub_id=sub_id, sub_line=sub_line,
        sub_x=(layout.xs.lo[sub_col] + layout.xs.hi[sub_col]) / 2, sub_y=layout.ys.lines[sub_line],
        f_id=f_id, f_sub=np.asarray(f_sub, dtype=int), f_cell=np.asarray(f_cell, dtype=int).reshape(-1, 2),
        f_north=np.asarray(f_north, dtype=bool), f_strip=np.asarray(f_strip, dtype=int),
        f_trunk_line=np.asarray(f_trunk, dtype=int), f_segments=np.asarray(f_seg, dtype=int),
        block_feeder=feeder, block_k=np.abs(line - cell_line[cy, cx]), block_line=line, block_west=c < trunk,
    )


def _ties(layout: CityLayout, plan: FeederPlan) -> list[tuple[int, int, bool]]:
    """(feeder a, feeder b, needs a tie cable) for every normally-open tie."""
    by_key = {(int(a), int(b), bool(n), int(s)): f for f, ((a, b), n, s)
              in enumerate(zip(plan.f_cell, plan.f_north, plan.f_strip))}
    ties, paired = [], set()
    # Across cell boundaries: the north end of cell (cy, cx) meets the south end of cell (cy + 1, cx).
    for (a, b, n, s), f in by_key.items():
        g = by_key.get((a + 1, b, False, s)) if n else None
        if g is not None:
            ties.append((f, g, False))
            paired |= {f, g}
    # Every other trunk end: tied by a cable to the next unpaired end along the same street.
    ends = np.arange(plan.n_feeders)
    end_x, _ = plan.trunk_point(layout, ends, plan.f_segments)
    end_line = plan.sub_line[plan.f_sub] + np.where(plan.f_north, plan.f_segments, -plan.f_segments)
    free = [f for f in ends if f not in paired]
    free.sort(key=lambda f: (end_line[f], end_x[f], f))
    for f, g in zip(free[:-1], free[1:]):
        if end_line[f] == end_line[g] and 0 < end_x[g] - end_x[f] <= MAX_TIE_CABLE_M:
            ties.append((int(f), int(g), True))
    return ties


def backbone_tables(layout: CityLayout, plan: FeederPlan, origin: tuple[float, float],
                    feeder_peak_mw: np.ndarray, rng: np.random.Generator) -> dict[str, pa.Table]:
    """Sources, substation buses, breakers, trunks with their switches, and the ties (Arrow tables).

    ``feeder_peak_mw`` (sum of the service points' peaks per feeder) sizes the trunk cables and the
    substation transformers.
    """
    nf, ns = plan.n_feeders, len(plan.sub_id)
    sub_ids = np.asarray(plan.sub_id, dtype=object)
    fid = np.asarray(plan.f_id, dtype=object)
    sx, sy = plan.sub_x, plan.sub_y
    f_sub = plan.substation_of(np.arange(nf))
    sub_peak = np.bincount(f_sub, weights=feeder_peak_mw, minlength=ns)
    # Feeders peak at different times: 0.8 coincidence at the substation.
    sub_rating = gp.next_standard(0.8 * sub_peak, SUBSTATION_SIZES_MVA, 40.0)
    trunk_rating = gp.next_standard(0.9 * feeder_peak_mw, TRUNK_CABLES_MVA, 4.0)  # 0.9: coincidence

    nodes = [
        gp.node_table(sub_ids + "-SRC", "source", name=sub_ids + " 110 kV supply", voltage_kv=HV_KV,
                      x=sx, y=sy, origin=origin),
        gp.node_table(sub_ids, "substation", name=sub_ids + " 20 kV bus", voltage_kv=MV_KV,
                      rating_mva=sub_rating,
                      failure_rate=gp.SUBSTATION_FAILURE, repair_time_h=gp.SUBSTATION_REPAIR_H,
                      critical_depth_m=np.round(0.5 + 0.5 * rng.random(ns), 2), x=sx, y=sy, origin=origin),
        gp.node_table(fid + "-HEAD", "bus", name=fid + " feeder head", feeder=fid, voltage_kv=MV_KV,
                      x=sx[f_sub], y=sy[f_sub], origin=origin),
    ]
    switches = [
        gp.switch_table(sub_ids + "-CB", "breaker", sub_ids + "-SRC", sub_ids, x=sx, y=sy, origin=origin,
                        feeder=None),
        gp.switch_table(fid + "-CB", "breaker", sub_ids[f_sub], fid + "-HEAD", x=sx[f_sub], y=sy[f_sub],
                        origin=origin, feeder=fid),
    ]
    # Trunk nodes 0..segments of every feeder.
    f_of = np.repeat(np.arange(nf), plan.f_segments + 1)
    per_feeder = plan.f_segments + 1
    k = np.arange(len(f_of)) - np.repeat(np.cumsum(per_feeder) - per_feeder, per_feeder)
    tx, ty = plan.trunk_point(layout, f_of, k)
    t_ids = plan.trunk_node_ids(f_of, k)
    nodes.append(gp.node_table(t_ids, "bus", name=t_ids, feeder=fid[f_of], voltage_kv=MV_KV, x=tx, y=ty,
                               origin=origin))
    first = k == 0
    sections = [gp.section_table(fid + "-M000", fid + "-HEAD", t_ids.filter(pa.array(first)), x0=sx[f_sub],
                                 y0=sy[f_sub], x1=tx[first], y1=ty[first], origin=origin,
                                 rating_mva=trunk_rating, feeder=fid)]

    # Segment k -> k+1, starting with a disconnector or recloser where planned.
    seg = k < plan.f_segments[f_of]
    sf, sk = f_of[seg], k[seg]
    n_seg = plan.f_segments[sf]
    recloser = (sk == n_seg // 2) & (n_seg >= RECLOSER_MIN_SEGMENTS)
    disconnector = ~recloser & (sk % DISCONNECTOR_EVERY == DISCONNECTOR_EVERY - 1)
    switched = recloser | disconnector
    start_ids = plan.trunk_node_ids(sf, sk)
    after_ids = gp.joined(start_ids, "S")
    x0, y0 = tx[seg], ty[seg]
    x1, y1 = plan.trunk_point(layout, sf, sk + 1)
    mask = pa.array(switched)
    nodes.append(gp.node_table(after_ids.filter(mask), "bus", name=after_ids.filter(mask),
                               feeder=fid[sf][switched], voltage_kv=MV_KV, x=x0[switched], y=y0[switched],
                               origin=origin))
    for kind, which in (("recloser", recloser), ("disconnector", disconnector)):
        tag = "-RC" if kind == "recloser" else "-DS"
        switches.append(gp.switch_table(gp.joined(fid[sf][which], gp.numbered(tag, sk[which], 3)), kind,
                                        start_ids.filter(pa.array(which)), after_ids.filter(pa.array(which)),
                                        x=x0[which], y=y0[which], origin=origin, feeder=fid[sf][which]))
    from_ids = pc.if_else(mask, after_ids, start_ids)
    sections.append(gp.section_table(gp.joined(fid[sf], gp.numbered("-M", sk + 1, 3)), from_ids,
                                     plan.trunk_node_ids(sf, sk + 1), x0=x0, y0=y0, x1=x1, y1=y1,
                                     origin=origin, rating_mva=trunk_rating[sf], feeder=fid[sf]))

    ties = _ties(layout, plan)
    if ties:
        a, b, cable = (np.array(v) for v in zip(*ties))
        end_a, end_b = plan.f_segments[a], plan.f_segments[b]
        ax, ay = plan.trunk_point(layout, a, end_a)
        bx, by = plan.trunk_point(layout, b, end_b)
        tie_ids = gp.numbered("TIE", np.arange(1, len(a) + 1), 4)
        a_end, b_end = plan.trunk_node_ids(a, end_a), plan.trunk_node_ids(b, end_b)
        c = pa.array(cable)
        cable_nodes = gp.joined(tie_ids, "-N").filter(c)
        nodes.append(gp.node_table(cable_nodes, "bus", name=cable_nodes, feeder=fid[a][cable],
                                   voltage_kv=MV_KV, x=bx[cable], y=by[cable], origin=origin))
        sections.append(gp.section_table(gp.joined(tie_ids, "-C").filter(c), a_end.filter(c), cable_nodes,
                                         x0=ax[cable], y0=ay[cable], x1=bx[cable], y1=by[cable],
                                         origin=origin, rating_mva=TRUNK_CABLES_MVA[0], feeder=fid[a][cable]))
        tie_from = pc.if_else(c, gp.joined(tie_ids, "-N"), a_end)
        switches.append(gp.switch_table(tie_ids, "tie", tie_from, b_end, x=bx, y=by, origin=origin,
                                        feeder=fid[a], normal_state="open"))
    return {"nodes": gp.concat(nodes), "sections": gp.concat(sections), "switches": gp.concat(switches)}
