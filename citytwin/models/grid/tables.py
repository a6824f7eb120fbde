"""The neutral, in-memory shape of an electric distribution grid.

Every grid source (RBTS-style CSV folders, pandapower JSON, the synthetic city, the twin's
PostGIS tables) is read into :class:`GridTables`; every grid model consumes it. Keeping one
shape means the models never know where a grid came from.

Conventions
-----------
* A *node* is anything with a location on the network: a source (the supply point of a
  substation), a bus, a distribution transformer or a service point (where customers connect).
* A *section* is a line or cable between two nodes; it can fail.
* A *switch* is a zero-length edge between two nodes. A protective or disconnecting device that
  sits "at the upstream end of a section" is expressed by an intermediate node: bus -> switch ->
  node -> section. Normally-open ties are switches with ``normal_state == "open"``.
* Failure rates are per year (for a section: for the whole section, not per km); repair and
  switching times are in hours; loads in MW; lengths in km; ratings in MVA.
* Element ids are unique across the three element tables (a node, a section and a switch never
  share an id), so that an id names one element (failures, overrides, outage reports).
* Optional extra column ``component_class`` (string, any of the three tables): the equipment class
  an element belongs to, e.g. ``line_11kV`` or ``transformer_11_0.415kV`` in RBTS, a line's
  ``std_type`` in pandapower. Overrides (``CLASS.FIELD=VALUE``) address elements by it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

NODE_KINDS = ("source", "substation", "bus", "transformer", "service_point")
SWITCH_KINDS = ("breaker", "recloser", "fuse", "disconnector", "tie")
SWITCH_STATES = ("open", "closed")
# Devices that interrupt fault current (clear a fault); the others only isolate.
PROTECTIVE_SWITCH_KINDS = ("breaker", "recloser", "fuse")

NODE_COLUMNS = {
    "node_id": "string",
    "kind": "string",
    "name": "string",
    "feeder": "string",
    "voltage_kv": "float64",
    "customers": "int64",
    "load_mw": "float64",        # average load
    "peak_load_mw": "float64",
    "rating_mva": "float64",     # transformers / substations; NaN = unlimited
    "failure_rate": "float64",   # 1/yr
    "repair_time_h": "float64",
    "critical_depth_m": "float64",  # flood depth at which the asset fails; NaN = never
    "x": "float64",              # coordinates in GridTables.crs; NaN when unknown
    "y": "float64",
}
SECTION_COLUMNS = {
    "section_id": "string",
    "from_node": "string",
    "to_node": "string",
    "length_km": "float64",
    "rating_mva": "float64",
    "failure_rate": "float64",   # 1/yr for the whole section
    "repair_time_h": "float64",
    "feeder": "string",
}
SWITCH_COLUMNS = {
    "switch_id": "string",
    "kind": "string",
    "from_node": "string",
    "to_node": "string",
    "normal_state": "string",
    "present_state": "string",
    "switching_time_h": "float64",
    "feeder": "string",
}
# Optional columns: kept when present, not required (see module docstring).
OPTIONAL_COLUMNS = {"component_class": "string"}
CONNECTION_COLUMNS = {
    "building_id": "string",     # the building's source_id in the twin
    "node_id": "string",         # a service point
    "customers": "int64",
}


def empty_frame(columns: dict[str, str]) -> pd.DataFrame:
    """An empty frame with the given column dtypes."""
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in columns.items()})


def conform(frame: pd.DataFrame, columns: dict[str, str]) -> pd.DataFrame:
    """Return ``frame`` with exactly ``columns`` (missing ones filled with NA) in their dtypes.

    Extra columns (for example a ``geometry`` column of line strings) are kept at the end.
    """
    out = frame.copy()
    for name, dtype in columns.items():
        if name not in out.columns:
            out[name] = pd.Series(pd.NA if dtype == "string" else float("nan"), index=out.index)
        if dtype == "int64":
            out[name] = out[name].fillna(0)
        out[name] = out[name].astype(dtype)
    ordered = list(columns) + [c for c in out.columns if c not in columns]
    return out[ordered].reset_index(drop=True)


@dataclass
class GridTables:
    """A distribution grid as four tables (see module docstring for conventions)."""

    nodes: pd.DataFrame = field(default_factory=lambda: empty_frame(NODE_COLUMNS))
    sections: pd.DataFrame = field(default_factory=lambda: empty_frame(SECTION_COLUMNS))
    switches: pd.DataFrame = field(default_factory=lambda: empty_frame(SWITCH_COLUMNS))
    connections: pd.DataFrame = field(default_factory=lambda: empty_frame(CONNECTION_COLUMNS))
    crs: str | None = None
    name: str = "grid"

    def __post_init__(self) -> None:
        self.nodes = conform(self.nodes, NODE_COLUMNS)
        self.sections = conform(self.sections, SECTION_COLUMNS)
        self.switches = conform(self.switches, SWITCH_COLUMNS)
        self.connections = conform(self.connections, CONNECTION_COLUMNS)

    def copy(self) -> GridTables:
        """A deep copy (tables copied), e.g. to apply overrides or a switching plan."""
        out = object.__new__(GridTables)      # the tables are already conformed: skip __post_init__
        out.nodes, out.sections = self.nodes.copy(), self.sections.copy()
        out.switches, out.connections = self.switches.copy(), self.connections.copy()
        out.crs, out.name = self.crs, self.name
        return out
