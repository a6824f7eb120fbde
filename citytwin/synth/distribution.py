"""The distribution grid of a block row: laterals, transformers, service points, low-voltage chains.

For every block with buildings: a tap on the lateral (on the street centre line at the block's
middle), a fused distribution transformer at the tap, and four radial low-voltage chains (the two
lot rows, each split west and east of the transformer) that run from the transformer from service
point to service point, nearest first. Every building has exactly one service point.

Loads (average and peak, MW) follow floor area x electricity use intensity:
``P_avg = A_floor * EUI / 8760 h``, ``P_peak = P_avg / load factor``. EUIs (kWh/m2/yr) are the DOE
commercial reference buildings (Chicago 5A, REFERENCE.md): office 160 (small/medium/large 169/195/137),
retail 221, school 152, hospital 382, apartment 85, warehouse 51, supermarket 484; homes 40 (a
European house of ~150 m2 uses ~4,000-6,000 kWh/yr) and industry 250 are assumptions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from citytwin.synth import gridparts as gp
from citytwin.synth import layout as L
from citytwin.synth.buildings import BuildingRows
from citytwin.synth.feeders import LATERAL_MVA, MV_KV, FeederPlan
from citytwin.synth.layout import CityLayout

LV_KV = 0.4
EUI_KWH_M2 = np.array([40.0, 85.0, 160.0, 221.0, 152.0, 382.0, 51.0, 484.0, 250.0, 100.0])  # by layout.USES
LOAD_FACTOR = np.array([0.30, 0.35, 0.45, 0.50, 0.35, 0.70, 0.45, 0.65, 0.60, 0.40])
DWELLING_M2 = 90.0
# Standard ratings, MVA.
TRANSFORMER_SIZES = (0.25, 0.4, 0.63, 0.8, 1.0, 1.25, 1.6, 2.0, 2.5)
LV_CABLE_SIZES = (0.1, 0.15, 0.2, 0.25, 0.3)
LV_DIVERSITY = 0.8       # coincidence of peaks behind one transformer


def customers(rows: BuildingRows) -> np.ndarray:
    """Customers per building: one, or one per dwelling (~90 m2 gross) for apartment blocks."""
    per_floor = np.clip(np.round(rows.area / DWELLING_M2), 2, 12)
    return np.where(rows.use == L.APARTMENT, rows.floors * per_floor, 1).astype(np.int64)


def loads_mw(rows: BuildingRows) -> tuple[np.ndarray, np.ndarray]:
    """(average, peak) electric load per building, MW (see module docstring)."""
    avg = rows.area * rows.floors * EUI_KWH_M2[rows.use] / 8760.0 / 1000.0
    return np.round(avg, 6), np.round(avg / LOAD_FACTOR[rows.use], 6)


@dataclass
class ChunkGrid:
    """The grid rows of one chunk plus what the backbone and sensors need from it."""

    tables: dict[str, pa.Table]
    feeder_peak_mw: np.ndarray     # per feeder, this chunk's contribution
    service_point_ids: pa.Array    # aligned with the chunk's buildings
    transformers: int


def _reverse_group_cumsum(values: np.ndarray, group_start: np.ndarray) -> np.ndarray:
    """Sum of ``values`` from each element to the end of its group (contiguous groups, flagged starts)."""
    total = np.cumsum(values[::-1])[::-1]
    group_id = np.cumsum(group_start) - 1
    ends = np.r_[np.flatnonzero(group_start)[1:], len(values)]
    after_group = np.r_[total[ends[:-1]], 0.0] if len(ends) else np.zeros(0)
    return total - after_group[group_id]


def _shifted(values: pa.Array) -> pa.Array:
    """``values`` moved one place down (element i is the old element i - 1; the first is null)."""
    return pa.concat_arrays([pa.nulls(1, values.type), values.slice(0, max(len(values) - 1, 0))]) \
        if len(values) else values


def distribution_grid(layout: CityLayout, plan: FeederPlan, rows: BuildingRows,
               origin: tuple[float, float]) -> ChunkGrid:
    """Laterals, transformers, service points, LV sections and connections for ``rows``' blocks."""
    n = len(rows)
    avg, peak = loads_mw(rows)
    cust = customers(rows)
    fid_all = np.asarray(plan.f_id, dtype=object)

    # Blocks with buildings, in block order.
    blocks, first_of_block = np.unique(rows.block, return_index=True)
    f = plan.block_feeder[blocks]
    fid = fid_all[f]
    x0, _y0, x1, _y1 = layout.block_bounds(blocks)
    bx = (x0 + x1) / 2
    by = layout.ys.lines[plan.block_line[blocks]]
    block_peak = np.add.reduceat(peak, first_of_block) if n else np.zeros(0)
    tr_rating = gp.next_standard(np.maximum(LV_DIVERSITY * block_peak, 1e-9), TRANSFORMER_SIZES, 0.5)
    tap_ids = gp.numbered("TAP", blocks, 6)
    tr_ids = gp.numbered("TR", blocks, 6)

    # Laterals: blocks sharing (feeder, trunk node, side), nearest to the trunk first.
    k = plan.block_k[blocks]
    west = plan.block_west[blocks]
    trunk_x = layout.xs.lines[plan.f_trunk_line[f]]
    order = np.lexsort((np.abs(bx - trunk_x), west, k, f))
    key = np.stack([f, k, west], axis=1)[order]
    new_lateral = np.r_[True, (key[1:] != key[:-1]).any(axis=1)] if len(order) else np.zeros(0, bool)
    lat_ids = gp.joined(fid[order], gp.numbered("-L", k[order], 3), np.where(west[order], "W", "E"))
    trunk_ids = plan.trunk_node_ids(f[order], k[order])
    tap_sorted = tap_ids.take(pa.array(order))
    from_node = pc.if_else(pa.array(new_lateral), lat_ids, _shifted(tap_sorted))
    prev_x = np.r_[0.0, bx[order][:-1]] if len(order) else np.zeros(0)
    from_x = np.where(new_lateral, trunk_x[order], prev_x)
    heads = pa.array(new_lateral)
    o = order

    nodes = [
        gp.node_table(lat_ids.filter(heads), "bus", name=lat_ids.filter(heads), feeder=fid[o][new_lateral],
                      voltage_kv=MV_KV, x=trunk_x[o][new_lateral], y=by[o][new_lateral], origin=origin),
        gp.node_table(tap_ids, "bus", name=tap_ids, feeder=fid, voltage_kv=MV_KV, x=bx, y=by, origin=origin),
        gp.node_table(tr_ids, "transformer", name=tr_ids, feeder=fid, voltage_kv=MV_KV, rating_mva=tr_rating,
                      failure_rate=gp.TRANSFORMER_FAILURE, repair_time_h=gp.TRANSFORMER_REPAIR_H,
                      # Ground-level kiosks: LV boards and terminations sit 0.2-0.5 m above ground.
                      critical_depth_m=np.round(0.2 + 0.3 * rows.draw[first_of_block], 2), x=bx, y=by,
                      origin=origin),
    ]
    switches = [
        gp.switch_table(gp.joined(lat_ids.filter(heads), "-FU"), "fuse", trunk_ids.filter(heads),
                        lat_ids.filter(heads), x=trunk_x[o][new_lateral], y=by[o][new_lateral], origin=origin,
                        feeder=fid[o][new_lateral]),
        gp.switch_table(gp.joined(tr_ids, "-FU"), "fuse", tap_ids, tr_ids, x=bx, y=by, origin=origin,
                        feeder=fid),
    ]
    sections = [gp.section_table(gp.numbered("MV", blocks[o], 6), from_node, tap_sorted, x0=from_x, y0=by[o],
                                 x1=bx[o], y1=by[o], origin=origin, rating_mva=LATERAL_MVA, feeder=fid[o])]

    # Low voltage: chains per (block, lot row, west/east of the transformer), nearest lot first.
    b_pos = np.searchsorted(blocks, rows.block)
    t_x, t_y = bx[b_pos], by[b_pos]
    lv_west = rows.lot_cx < t_x
    lv_order = np.lexsort((np.abs(rows.lot_cx - t_x), lv_west, rows.side, rows.block))
    chain = np.stack([rows.block, rows.side, lv_west], axis=1)[lv_order]
    new_chain = np.r_[True, (chain[1:] != chain[:-1]).any(axis=1)] if n else np.zeros(0, bool)
    number = rows.index + 1
    sp_ids = gp.numbered("SP", number, 7)
    b_ids = gp.numbered("B", number, 7)
    sp_sorted = sp_ids.take(pa.array(lv_order))
    lv_from = pc.if_else(pa.array(new_chain), tr_ids.take(pa.array(b_pos[lv_order])), _shifted(sp_sorted))
    fx, fy = rows.front_x[lv_order], rows.front_y[lv_order]
    lv_x0 = np.where(new_chain, t_x[lv_order], np.r_[0.0, fx[:-1]] if n else fx)
    lv_y0 = np.where(new_chain, t_y[lv_order], np.r_[0.0, fy[:-1]] if n else fy)
    downstream = _reverse_group_cumsum(peak[lv_order], new_chain)
    lv_rating = gp.next_standard(downstream, LV_CABLE_SIZES, 0.05)
    fid_b = fid[b_pos]

    nodes.append(gp.node_table(sp_ids, "service_point", name=b_ids, feeder=fid_b, voltage_kv=LV_KV,
                               customers=cust, load_mw=avg, peak_load_mw=peak, x=rows.front_x, y=rows.front_y,
                               origin=origin))
    sections.append(gp.section_table(gp.numbered("LV", number[lv_order], 7), lv_from, sp_sorted, x0=lv_x0,
                                     y0=lv_y0, x1=fx, y1=fy, origin=origin, rating_mva=lv_rating,
                                     feeder=fid_b[lv_order]))
    tables = {"nodes": gp.concat(nodes), "sections": gp.concat(sections), "switches": gp.concat(switches),
              "connections": gp.connection_table(b_ids, sp_ids, cust)}
    feeder_peak = np.bincount(plan.block_feeder[rows.block], weights=peak, minlength=plan.n_feeders)
    return ChunkGrid(tables=tables, feeder_peak_mw=feeder_peak, service_point_ids=sp_ids,
                     transformers=len(blocks))
