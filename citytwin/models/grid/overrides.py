"""What-if parameter changes: ``COMPONENT.FIELD=VALUE`` applied to a copy of a grid.

``COMPONENT`` is resolved in this order:

1. an element id (node, section or switch), e.g. ``S1.failure_rate=0.1``;
2. a component class (the ``component_class`` column), e.g.
   ``transformer_11_0.415kV.repair_time_h=10`` (RBTS ``components.csv``) or ``line_11kV``;
3. a kind: a node kind (``transformer``, ``service_point``, ...), a switch kind (``breaker``,
   ``disconnector``, ``tie``, ...), or ``section`` / ``node`` / ``switch`` for all of them.

The key splits at its last dot, so class names may contain dots. Units follow the tables (1/yr,
h, MW, MVA, km, m) with one rule: ``failure_rate`` given for a *group* of sections (a class or
kind) is per km, as line failure rates are specified per km (e.g. RBTS ``components.csv``), and
is multiplied by each section's length; for one section it is the section's total rate.
``failure_rate_per_km`` is per km in both cases.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from citytwin.errors import InputError
from citytwin.models.grid.tables import NODE_KINDS, SWITCH_KINDS, SWITCH_STATES, GridTables

FIELDS = {
    "nodes": {"failure_rate": float, "repair_time_h": float, "critical_depth_m": float, "rating_mva": float,
              "load_mw": float, "peak_load_mw": float, "customers": int, "voltage_kv": float},
    "sections": {"failure_rate": float, "failure_rate_per_km": float, "repair_time_h": float, "length_km": float,
                 "rating_mva": float},
    "switches": {"switching_time_h": float, "normal_state": str, "present_state": str},
}
KEYS = {"nodes": "node_id", "sections": "section_id", "switches": "switch_id"}
ALL_OF = {"node": "nodes", "section": "sections", "line": "sections", "switch": "switches"}


def parse_override(text: str) -> tuple[str, str, str]:
    """Split ``COMPONENT.FIELD=VALUE`` into its three parts (InputError if malformed)."""
    key, sep, value = str(text).partition("=")
    component, dot, field = key.strip().rpartition(".")
    if not sep or not dot or not component or not field or not value.strip():
        raise InputError(f"override {text!r} is not COMPONENT.FIELD=VALUE (e.g. S1.failure_rate=0.1)")
    return component, field.strip(), value.strip()


def _targets(grid: GridTables, component: str) -> tuple[dict[str, np.ndarray], bool]:
    """Row masks per table for ``component``, and whether it names a group (not one element)."""
    tables = {"nodes": grid.nodes, "sections": grid.sections, "switches": grid.switches}
    for name, frame in tables.items():
        mask = (frame[KEYS[name]] == component).fillna(False).to_numpy(bool)
        if mask.any():
            return {name: mask}, False
    by_class = {}
    for name, frame in tables.items():
        if "component_class" in frame.columns:
            mask = (frame["component_class"].astype("string") == component).fillna(False).to_numpy(bool)
            if mask.any():
                by_class[name] = mask
    if by_class:
        return by_class, True
    if component in ALL_OF:
        name = ALL_OF[component]
        return {name: np.ones(len(tables[name]), bool)}, True
    if component in NODE_KINDS:
        return {"nodes": (grid.nodes["kind"] == component).fillna(False).to_numpy(bool)}, True
    if component in SWITCH_KINDS:
        return {"switches": (grid.switches["kind"] == component).fillna(False).to_numpy(bool)}, True
    raise InputError(f"unknown grid component {component!r}: not an element id, component class or kind of grid "
                     f"{grid.name!r}")


def _value(text: str, kind: type, key: str):
    if kind is str:
        if text not in SWITCH_STATES:
            raise InputError(f"override {key}: state must be one of {', '.join(SWITCH_STATES)}, not {text!r}")
        return text
    try:
        value = kind(float(text)) if kind is int else float(text)
    except ValueError:
        raise InputError(f"override {key}: {text!r} is not a number") from None
    if not np.isfinite(value) or value < 0:
        raise InputError(f"override {key}: value must be a finite number >= 0, not {text!r}")
    return value


def apply_overrides(grid: GridTables, overrides: Iterable[str]) -> GridTables:
    """A copy of ``grid`` with each ``COMPONENT.FIELD=VALUE`` applied in order (module docstring).

    Raises
    ------
    InputError
        For a malformed override, an unknown component or field, or a bad value (naming it).
    """
    out = grid.copy()
    for text in overrides or ():
        component, field, raw = parse_override(text)
        key = f"{component}.{field}"
        targets, group = _targets(out, component)
        usable = {name: mask for name, mask in targets.items() if field in FIELDS[name]}
        if not usable:
            allowed = sorted({f for name in targets for f in FIELDS[name]})
            raise InputError(f"unknown field {field!r} in override {key!r}; {component!r} accepts "
                             f"{', '.join(allowed)}")
        for name, mask in usable.items():
            frame = getattr(out, name)
            value = _value(raw, FIELDS[name][field], key)
            if name == "sections" and (field == "failure_rate_per_km" or (field == "failure_rate" and group)):
                frame.loc[mask, "failure_rate"] = value * frame.loc[mask, "length_km"].to_numpy(float)
            else:
                frame.loc[mask, field] = value
            setattr(out, name, frame)
    return out


def describe_fields() -> pd.DataFrame:
    """The fields each table accepts (for help texts)."""
    return pd.DataFrame([(t, f) for t, fields in FIELDS.items() for f in fields], columns=["table", "field"])
