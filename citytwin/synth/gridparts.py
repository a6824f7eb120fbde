"""Building the grid layers as Arrow tables straight from numpy arrays (no per-row Python objects).

The synthetic grid has a million service points for a million buildings; going through pandas
frames of Python strings would cost gigabytes. These helpers take arrays (or scalars, broadcast),
fill the defaults of :mod:`citytwin.models.grid.tables` and return tables in the schema of
:data:`citytwin.io.grid_gpkg.GRID_LAYERS`, with WKB geometry in world coordinates.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import shapely

from citytwin.io.grid_gpkg import GEOMETRY, GRID_LAYERS

# Failure and repair data (per year, hours): the RBTS distribution components (Allan et al. 1991;
# ../shared/data/rbts_bus2/components.csv): lines 0.065 /km/yr, 5 h; transformers 0.015 /yr, 200 h;
# switching 1 h. Substations (redundant transformers) and remote-controlled breakers are assumptions.
LINE_FAILURES_PER_KM = 0.065
LINE_REPAIR_H = 5.0
TRANSFORMER_FAILURE = 0.015
TRANSFORMER_REPAIR_H = 200.0
SUBSTATION_FAILURE = 0.01
SUBSTATION_REPAIR_H = 10.0
SWITCHING_TIME_H = {"breaker": 0.05, "recloser": 0.05, "disconnector": 1.0, "fuse": 1.0, "tie": 1.0}


def numbered(prefix: str, numbers: np.ndarray, width: int, suffix: str = "") -> pa.Array:
    """``prefix + zero-padded number + suffix`` for every number, computed in Arrow."""
    digits = pc.utf8_lpad(pc.cast(pa.array(np.asarray(numbers, dtype=np.int64)), pa.string()), width, "0")
    return pc.binary_join_element_wise(prefix, digits, suffix, "")


def joined(*parts) -> pa.Array:
    """Element-wise concatenation of string arrays and scalars."""
    return pc.binary_join_element_wise(*[p if isinstance(p, str) else pa.array(p, type=pa.string())
                                         for p in parts], "")


def _column(value, n: int, type_: pa.DataType) -> pa.Array:
    if isinstance(value, (pa.Array, pa.ChunkedArray)):
        return value.cast(type_)
    if value is None or np.isscalar(value):
        if type_ == pa.string():
            return pa.array([value] * n, type=type_) if n else pa.array([], type=type_)
        return pa.array(np.full(n, np.nan if value is None else value), type=type_, from_pandas=True)
    array = np.asarray(value)
    if type_ == pa.string():
        return pa.array(array.astype(object), type=type_)
    return pa.array(array, type=type_, from_pandas=True)


def _table(layer: str, n: int, values: dict, geometry: np.ndarray | None) -> pa.Table:
    schema = GRID_LAYERS[layer].schema
    columns = []
    for f in schema:
        if f.name == GEOMETRY:
            columns.append(pa.array(shapely.to_wkb(geometry), type=pa.binary()) if geometry is not None
                           else pa.nulls(n, pa.binary()))
        else:
            columns.append(_column(values.get(f.name), n, f.type))
    return pa.Table.from_arrays(columns, schema=schema)


def node_table(node_id, kind, *, x: np.ndarray, y: np.ndarray, origin: tuple[float, float],
               **values) -> pa.Table:
    """Nodes at local ``x``, ``y`` (written in world coordinates); unspecified columns get defaults."""
    n = len(x)
    wx, wy = origin[0] + np.asarray(x, float), origin[1] + np.asarray(y, float)
    values = {"customers": 0, "load_mw": 0.0, "peak_load_mw": 0.0, "rating_mva": None, "failure_rate": 0.0,
              "repair_time_h": 0.0, "critical_depth_m": None} | values
    values |= {"node_id": node_id, "kind": kind, "x": wx, "y": wy}
    return _table("nodes", n, values, shapely.points(wx, wy))


def section_table(section_id, from_node, to_node, *, x0, y0, x1, y1, origin: tuple[float, float],
                  rating_mva, feeder, repair_time_h: float = LINE_REPAIR_H) -> pa.Table:
    """Straight sections between local points; length from geometry, failures 0.065/km/yr."""
    x0, y0, x1, y1 = (np.asarray(v, float) for v in (x0, y0, x1, y1))
    n = len(x0)
    coords = np.stack([np.column_stack([x0, y0]), np.column_stack([x1, y1])], axis=1) + np.asarray(origin)
    length_km = np.hypot(x1 - x0, y1 - y0) / 1000.0
    values = {"section_id": section_id, "from_node": from_node, "to_node": to_node, "length_km": length_km,
              "rating_mva": rating_mva, "failure_rate": LINE_FAILURES_PER_KM * length_km,
              "repair_time_h": repair_time_h, "feeder": feeder}
    return _table("sections", n, values, shapely.linestrings(coords) if n else np.empty(0, dtype=object))


def switch_table(switch_id, kind: str, from_node, to_node, *, x, y, origin: tuple[float, float], feeder,
                 normal_state: str = "closed") -> pa.Table:
    """Switches (zero-length edges) drawn as points at local ``x``, ``y``."""
    n = len(x)
    wx, wy = origin[0] + np.asarray(x, float), origin[1] + np.asarray(y, float)
    values = {"switch_id": switch_id, "kind": kind, "from_node": from_node, "to_node": to_node,
              "normal_state": normal_state, "present_state": normal_state,
              "switching_time_h": SWITCHING_TIME_H[kind], "feeder": feeder}
    return _table("switches", n, values, shapely.points(wx, wy))


def connection_table(building_id, node_id, customers) -> pa.Table:
    return _table("connections", len(customers), {"building_id": building_id, "node_id": node_id,
                                                  "customers": customers}, None)


def concat(tables: list[pa.Table]) -> pa.Table:
    return pa.concat_tables([t for t in tables if t.num_rows]) if any(t.num_rows for t in tables) \
        else tables[0]


def next_standard(required: np.ndarray, sizes: tuple[float, ...], step: float) -> np.ndarray:
    """The smallest standard size >= ``required``; beyond the largest, ``required`` rounded up to ``step``."""
    required = np.asarray(required, float)
    table = np.asarray(sizes)
    idx = np.searchsorted(table, required - 1e-12)
    above = np.ceil(required / step) * step
    return np.where(idx < len(table), table[np.minimum(idx, len(table) - 1)], above)
