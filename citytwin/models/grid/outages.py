"""Outages from failures: which assets fail, what trips, who is left without supply.

Failed assets come from one of three places:

* :func:`failures_from_flood` - maximum flood depth per asset above the asset's critical depth;
* :func:`failures_from_event` - an outage-management event naming faulted equipment (CIM
  ``Outage.Equipments`` / ``Faults``, or the fields ``faulted_assets`` / ``equipment``);
* :func:`sample_failures` - drawn from the assets' failure rates.

:func:`outage` then finds the protective device that clears each fault and the de-energised
service points, customers, buildings and load *before* any restoration (for that, see
:func:`citytwin.models.grid.restoration.restore`). :func:`outage_from_device` answers the same for
a device reported open (a MultiSpeak outage-detection event) when the fault itself is unknown.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from citytwin.errors import InputError
from citytwin.models.grid.tables import GridTables
from citytwin.models.grid.topology import Topology, node_customers, node_loads

EVENT_ASSET_KEYS = ("faulted_assets", "equipment", "equipments", "Equipments", "faults", "Faults")


@dataclass
class Outage:
    """De-energised part of the grid after protection acted (before restoration)."""

    failed: list[str]
    clearing: pd.DataFrame          # asset_id, device_id, device_kind ('source' = source lost)
    nodes: np.ndarray               # ids of all de-energised nodes
    service_points: pd.DataFrame    # node_id, customers, load_mw, feeder
    buildings: list[str]

    @property
    def customers(self) -> int:
        return int(self.service_points["customers"].sum())

    @property
    def load_mw(self) -> float:
        return float(self.service_points["load_mw"].sum())

    def to_dict(self) -> dict:
        return {"failed_assets": self.failed, "clearing_devices": self.clearing.to_dict(orient="records"),
                "customers": self.customers, "load_mw": self.load_mw, "nodes": len(self.nodes),
                "service_points": self.service_points["node_id"].tolist(), "buildings": self.buildings}


def failures_from_flood(grid: GridTables, max_depth: pd.DataFrame,
                        critical_depth: Mapping[str, float] | None = None) -> list[str]:
    """Nodes (substations, transformers, service points, ...) whose maximum flood depth exceeds
    their critical depth. Lines are not flood-sensitive in this model (cables and overhead lines
    survive inundation; the equipment at their ends does not).

    Parameters
    ----------
    grid : GridTables
    max_depth : DataFrame
        Columns ``asset_id`` and ``max_depth_m`` (m above ground at the asset).
    critical_depth : mapping, optional
        Critical depth (m) by node kind or component class, e.g. ``{"transformer": 0.3,
        "substation": 0.5}``; used where a node has no ``critical_depth_m`` of its own.

    Returns
    -------
    list of str
        Failed asset ids (depth strictly above the critical depth).
    """
    missing = [c for c in ("asset_id", "max_depth_m") if c not in max_depth.columns]
    if missing:
        raise InputError(f"flood depths need columns asset_id and max_depth_m; missing {', '.join(missing)}")
    nodes = grid.nodes
    crit = nodes["critical_depth_m"].to_numpy(float).copy()
    if critical_depth:
        by_kind = nodes["kind"].map(critical_depth).to_numpy(float)
        by_class = (nodes["component_class"].map(critical_depth).to_numpy(float)
                    if "component_class" in nodes.columns else np.full(len(nodes), np.nan))
        crit = np.where(np.isnan(crit), np.where(np.isnan(by_class), by_kind, by_class), crit)
    table = pd.Series(crit, index=nodes["node_id"].astype(str))
    depth = max_depth.groupby(max_depth["asset_id"].astype(str))["max_depth_m"].max()
    limits = table.reindex(depth.index)
    failed = depth[(depth > limits) & limits.notna()]
    return sorted(failed.index.tolist())


def failures_from_event(grid: GridTables, event: Mapping) -> list[str]:
    """Faulted equipment named by an outage-management event (see module docstring).

    Raises
    ------
    InputError
        If the event names no equipment, or equipment the grid does not have.
    """
    for key in EVENT_ASSET_KEYS:
        if event.get(key):
            value = event[key]
            assets = [value] if isinstance(value, str) else [
                v.get("mRID") or v.get("id") if isinstance(v, Mapping) else v for v in value]
            assets = [str(a) for a in assets if a is not None]
            Topology.from_grid(grid, "present").resolve_assets(assets)
            return assets
    raise InputError(f"the outage event names no faulted equipment (expected one of {', '.join(EVENT_ASSET_KEYS)})")


def sample_failures(grid: GridTables, *, years: float = 1.0, seed: int | None = None) -> list[str]:
    """Assets that fail at least once in ``years`` years: P = 1 - exp(-lambda * years)."""
    rng = np.random.default_rng(seed)
    ids = np.concatenate([grid.sections["section_id"].astype(str).to_numpy(), grid.nodes["node_id"].astype(str).to_numpy()])
    lam = np.nan_to_num(np.concatenate([grid.sections["failure_rate"].to_numpy(float),
                                        grid.nodes["failure_rate"].to_numpy(float)]))
    hit = rng.random(len(ids)) < -np.expm1(-lam * float(years))
    return ids[hit].tolist()


def _service_points(topo: Topology, mask: np.ndarray, load: str | pd.Series) -> tuple[pd.DataFrame, list[str]]:
    grid = topo.grid
    cust = node_customers(grid)
    is_point = (topo.node_kind == "service_point") | (cust > 0)
    idx = np.flatnonzero(mask & is_point)
    points = pd.DataFrame({"node_id": topo.node_ids[idx], "customers": cust[idx],
                           "load_mw": node_loads(grid, load)[idx], "feeder": topo.feeder_labels()[idx]})
    conns = grid.connections
    buildings = sorted(conns.loc[conns["node_id"].isin(points["node_id"]), "building_id"].astype(str).unique())
    return points, buildings


def _mask_of_tops(topo: Topology, tops: np.ndarray) -> np.ndarray:
    diff = np.zeros(topo.n_nodes + 1, np.int64)
    np.add.at(diff, topo.pos[tops], 1)
    np.add.at(diff, topo.pos[tops] + topo.size[tops], -1)
    mask = np.zeros(topo.n_nodes, bool)
    mask[topo.order[np.cumsum(diff[:-1]) > 0]] = True
    return mask


def outage(grid: GridTables, failed, *, load: str | pd.Series = "average", topo: Topology | None = None) -> Outage:
    """The outage the failed assets cause once protection has acted (present switch state).

    Each fault trips the nearest protective device upstream of its switch zone (or, with none,
    takes out its source); every node below a tripped device is de-energised.
    """
    topo = topo or Topology.from_grid(grid, "present")
    failed = [str(a) for a in failed]
    nodes, sections = topo.resolve_assets(failed)
    ids = np.concatenate([topo.node_ids[nodes], topo.edge_ids[sections]])
    zones = topo.asset_zone(nodes, sections)
    live = topo.energised[topo.zone_root[zones]]
    device = topo.zone_prot[zones]
    child = topo.child_of_edge(np.maximum(device, 0))
    source = topo.root[topo.zone_root[zones]]
    tops = np.where(device >= 0, child, source)[live]
    clearing = pd.DataFrame({"asset_id": ids[live],
                             "device_id": np.where(device >= 0, topo.edge_ids[np.maximum(device, 0)],
                                                   topo.node_ids[source])[live],
                             "device_kind": np.where(device >= 0, topo.switch_kind[np.maximum(device, 0)], "source")[live]})
    mask = _mask_of_tops(topo, tops)
    points, buildings = _service_points(topo, mask, load)
    return Outage(failed, clearing, topo.node_ids[mask], points, buildings)


def outage_from_device(grid: GridTables, device_id: str, *, load: str | pd.Series = "average",
                       topo: Topology | None = None) -> Outage:
    """The part de-energised when switch ``device_id`` opens (fault location unknown)."""
    topo = topo or Topology.from_grid(grid, "present")
    edge = topo.edge_index().get_indexer([device_id])[0]
    if edge < topo.n_sections:
        raise InputError(f"unknown switching device {device_id!r} in grid {grid.name!r}")
    child = topo.child_of_edge(np.array([edge]))
    if child[0] < 0 or not topo.energised[child[0]]:
        raise InputError(f"device {device_id!r} does not carry supply in the present state (open or unfed)")
    mask = _mask_of_tops(topo, child)
    points, buildings = _service_points(topo, mask, load)
    clearing = pd.DataFrame({"asset_id": [None], "device_id": [device_id],
                             "device_kind": [str(topo.switch_kind[edge])]})
    return Outage([], clearing, topo.node_ids[mask], points, buildings)
