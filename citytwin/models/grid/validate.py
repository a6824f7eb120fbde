"""Checks that a :class:`GridTables` is a well-formed, radial distribution grid.

Two layers: :func:`check_structure` (ids, kinds, references, value ranges; pure table checks) and
:func:`validate_grid`, which also builds the graph in the normal and the present switch states and
so rejects loops and sources connected to each other (see :mod:`citytwin.models.grid.topology`).
Every problem raises :class:`~citytwin.errors.InputError` naming the element and the reason.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from citytwin.errors import InputError
from citytwin.models.grid.tables import NODE_KINDS, SWITCH_KINDS, SWITCH_STATES, GridTables

_NON_NEGATIVE = {
    "nodes": ("customers", "load_mw", "peak_load_mw", "rating_mva", "failure_rate", "repair_time_h"),
    "sections": ("length_km", "rating_mva", "failure_rate", "repair_time_h"),
    "switches": ("switching_time_h",),
}


def _first(values: pd.Series, limit: int = 5) -> str:
    shown = [repr(str(v)) for v in values[:limit]]
    more = f" and {len(values) - limit} more" if len(values) > limit else ""
    return ", ".join(shown) + more


def _check_ids(frame: pd.DataFrame, key: str, table: str) -> None:
    missing = frame[key].isna()
    if missing.any():
        raise InputError(f"grid {table}: {int(missing.sum())} rows without {key} (first at row {int(np.argmax(missing))})")
    dup = frame[key][frame[key].duplicated()]
    if len(dup):
        raise InputError(f"grid {table}: duplicate {key} {_first(dup.unique())}")


def _check_kinds(frame: pd.DataFrame, key: str, column: str, allowed: tuple[str, ...], table: str) -> None:
    bad = ~frame[column].isin(allowed)
    if bad.any():
        row = frame[bad].iloc[0]
        raise InputError(f"grid {table}: {row[key]!r} has {column} {row[column]!r}; "
                         f"expected one of {', '.join(allowed)}")


def _check_refs(frame: pd.DataFrame, key: str, table: str, node_ids: pd.Index) -> None:
    for end in ("from_node", "to_node"):
        unknown = ~frame[end].isin(node_ids) | frame[end].isna()
        if unknown.any():
            row = frame[unknown].iloc[0]
            what = "section" if table == "sections" else "switch"
            raise InputError(f"{what} {row[key]!r} names {end} {row[end]!r}, which is not a node of the grid "
                             f"({int(unknown.sum())} {table} with unknown nodes)")
    same = frame["from_node"] == frame["to_node"]
    if same.any():
        row = frame[same].iloc[0]
        raise InputError(f"grid {table}: {row[key]!r} connects node {row['from_node']!r} to itself")


def _check_ranges(grid: GridTables) -> None:
    tables = {"nodes": (grid.nodes, "node_id"), "sections": (grid.sections, "section_id"),
              "switches": (grid.switches, "switch_id")}
    for table, columns in _NON_NEGATIVE.items():
        frame, key = tables[table]
        for column in columns:
            bad = frame[column] < 0
            if bad.any():
                row = frame[bad.fillna(False)].iloc[0]
                raise InputError(f"grid {table}: {row[key]!r} has negative {column} ({row[column]})")


def check_structure(grid: GridTables) -> None:
    """Table-level checks: unique ids, valid kinds and states, known nodes, non-negative values.

    Raises
    ------
    InputError
        Naming the first offending element and why.
    """
    if grid.nodes.empty:
        raise InputError("the grid has no nodes")
    _check_ids(grid.nodes, "node_id", "nodes")
    _check_ids(grid.sections, "section_id", "sections")
    _check_ids(grid.switches, "switch_id", "switches")
    all_ids = pd.concat([grid.nodes["node_id"], grid.sections["section_id"], grid.switches["switch_id"]])
    shared = all_ids[all_ids.duplicated()]
    if len(shared):
        raise InputError(f"grid element ids must be unique across nodes, sections and switches; "
                         f"{_first(shared.unique())} used twice")
    _check_kinds(grid.nodes, "node_id", "kind", NODE_KINDS, "nodes")
    _check_kinds(grid.switches, "switch_id", "kind", SWITCH_KINDS, "switches")
    _check_kinds(grid.switches, "switch_id", "normal_state", SWITCH_STATES, "switches")
    _check_kinds(grid.switches, "switch_id", "present_state", SWITCH_STATES, "switches")
    node_ids = pd.Index(grid.nodes["node_id"])
    _check_refs(grid.sections, "section_id", "sections", node_ids)
    _check_refs(grid.switches, "switch_id", "switches", node_ids)
    _check_ranges(grid)
    unknown = ~grid.connections["node_id"].isin(node_ids)
    if unknown.any():
        row = grid.connections[unknown].iloc[0]
        raise InputError(f"service connection of building {row['building_id']!r} names node {row['node_id']!r}, "
                         f"which is not a node of the grid")
    if not (grid.nodes["kind"] == "source").any():
        raise InputError("the grid has no source node (kind 'source'): nothing can be supplied")


def validate_grid(grid: GridTables) -> None:
    """Full validation: :func:`check_structure` plus radiality in the normal and present states.

    Raises
    ------
    InputError
        For malformed tables, a loop of closed elements, or two sources connected by closed elements.
    """
    from citytwin.models.grid.topology import Topology

    check_structure(grid)
    Topology.from_grid(grid, state="normal", checked=True)
    Topology.from_grid(grid, state="present", checked=True)
