"""Service restoration after faults (FLISR): an ordered switching plan and interruption per customer.

:func:`restore` runs the sequence of :mod:`citytwin.models.grid.flisr` on the grid's present
switch state: clear each fault with its protective device, isolate it with the nearest switching
devices, reclose upstream, back-feed healthy downstream parts through normally-open ties where the
neighbouring feeder has headroom (else split or shed). Each affected service point gets its
interruption duration: the switching time where switching restores it, the repair time otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from citytwin.models.grid.effects import load_points
from citytwin.models.grid.flisr import Flisr, ZoneOutcome
from citytwin.models.grid.tables import GridTables
from citytwin.models.grid.topology import Topology, node_loads

STEP_COLUMNS = ["step", "action", "switch_id", "device_kind", "purpose", "time_h", "customers_restored",
                "load_restored_mw"]


@dataclass
class Restoration:
    """The outcome of :func:`restore`.

    Attributes
    ----------
    plan : DataFrame
        Ordered steps: ``step, action ('trip'|'open'|'close'), switch_id, device_kind, purpose
        ('clear fault'|'isolate'|'reclose'|'back-feed'|'split'), time_h, customers_restored,
        load_restored_mw``. A trip with ``device_kind == 'source'`` is the loss of a source (no
        protective device upstream of the fault); ``switch_id`` is then the source node.
    interruptions : DataFrame
        One row per interrupted service point: ``node_id, customers, load_mw, feeder,
        interruption_h, restored_by ('switching'|'repair')``.
    buildings : DataFrame
        ``building_id, node_id, interruption_h, restored_by`` for connected buildings.
        ``interruption_h`` is NaN where a repair time is unknown.
    switch_states : dict
        Final state of every switch that operated (switch id -> 'open' | 'closed').
    """

    failed: list[str]
    plan: pd.DataFrame
    interruptions: pd.DataFrame
    buildings: pd.DataFrame
    switch_states: dict[str, str]

    def apply(self, grid: GridTables) -> GridTables:
        """A copy of ``grid`` with the switches' present states after the plan."""
        out = grid.copy()
        states = out.switches["switch_id"].map(self.switch_states)
        out.switches["present_state"] = states.fillna(out.switches["present_state"]).astype("string")
        return out

    def summary(self) -> dict:
        """Totals: customers interrupted / restored by switching, customer-hours, energy not supplied."""
        it = self.interruptions
        switched = it["restored_by"] == "switching"
        return {"failed_assets": list(self.failed),
                "customers_interrupted": int(it["customers"].sum()),
                "customers_restored_by_switching": int(it.loc[switched, "customers"].sum()),
                "customer_hours": float((it["customers"] * it["interruption_h"]).sum()),
                "energy_not_supplied_mwh": float((it["load_mw"] * it["interruption_h"]).sum()),
                "ties_closed": self.plan.loc[self.plan["purpose"] == "back-feed", "switch_id"].tolist(),
                "steps": len(self.plan)}

    def to_dict(self) -> dict:
        """JSON-ready form: summary, plan and interruptions."""
        return {"summary": self.summary(), "plan": self.plan.to_dict(orient="records"),
                "interruptions": self.interruptions.to_dict(orient="records")}


def restore(grid: GridTables, failed, *, load: str | pd.Series = "average", power_factor: float = 1.0,
            topo: Topology | None = None) -> Restoration:
    """FLISR for the failed assets on the grid's present switch state.

    Parameters
    ----------
    grid : GridTables
    failed : iterable of str
        Ids of failed sections or nodes (from flood depths, an outage event, or sampled).
    load : {'average', 'peak'} or pandas.Series
        Load (MW) that back-feeding must find headroom for: the load at the time of the event,
        best a Series by node id from the energy model (it overrides the grid's loads for its
        nodes); else the grid's average (default) or peak load.
    power_factor : float
        MW to MVA ratio used against ratings.
    topo : Topology, optional
        A prebuilt present-state topology of ``grid`` (saves rebuilding it).

    Returns
    -------
    Restoration
    """
    topo = topo or Topology.from_grid(grid, "present")
    failed = [str(a) for a in failed]
    nodes, sections = topo.resolve_assets(failed)
    repair = np.concatenate([grid.nodes["repair_time_h"].to_numpy(float)[nodes],
                             grid.sections["repair_time_h"].to_numpy(float)[sections]])
    zones = topo.asset_zone(nodes, sections)
    fault_repair: dict[int, float] = {}
    for z, r in zip(zones.tolist(), repair.tolist()):
        # Several failed assets in one zone: it is back when the slowest repair is done (NaN = unknown).
        prev = fault_repair.get(z, 0.0)
        fault_repair[z] = float("nan") if np.isnan(prev) or np.isnan(r) else max(prev, r)
    loads = node_loads(grid, load)
    outcome = _engine(topo, load, loads, power_factor).run(fault_repair)
    if "load_points" not in topo.cache:
        topo.cache["load_points"] = load_points(topo)
    points = topo.cache["load_points"]
    node = points["node"].to_numpy()
    zone = topo.zone[node]
    hit = np.flatnonzero(np.isin(zone, np.fromiter(outcome.zone_kind, np.int64, len(outcome.zone_kind))))
    interruptions = pd.DataFrame({
        "node_id": points["node_id"].to_numpy()[hit], "customers": points["customers"].to_numpy()[hit],
        "load_mw": loads[node[hit]], "feeder": points["feeder"].to_numpy()[hit],
        "interruption_h": np.array([outcome.zone_time[z] for z in zone[hit]], float),
        "restored_by": np.array([outcome.zone_kind[z] for z in zone[hit]], dtype=object)})
    plan, states = _plan(topo, outcome, zone, points["customers"].to_numpy(), loads[node])
    conns = grid.connections[["building_id", "node_id"]]
    if conns.empty:
        buildings = pd.DataFrame(columns=["building_id", "node_id", "interruption_h", "restored_by"])
    else:
        buildings = conns.merge(interruptions[["node_id", "interruption_h", "restored_by"]], on="node_id")
    return Restoration(failed, plan, interruptions, buildings.reset_index(drop=True), states)


def _engine(topo: Topology, load, loads: np.ndarray, power_factor: float) -> Flisr:
    """The FLISR engine for these loads, reused across calls when the load is named ('average', 'peak')."""
    if not isinstance(load, str):
        return Flisr(topo, loads, power_factor)
    key = ("flisr", load, float(power_factor))
    if key not in topo.cache:
        topo.cache[key] = Flisr(topo, loads, power_factor)
    return topo.cache[key]


def _plan(topo: Topology, outcome: ZoneOutcome, point_zone: np.ndarray, customers: np.ndarray,
          load_mw: np.ndarray) -> tuple[pd.DataFrame, dict[str, str]]:
    zone_cust = np.bincount(point_zone, weights=customers, minlength=topo.n_zones)
    zone_load = np.bincount(point_zone, weights=load_mw, minlength=topo.n_zones)
    rows, states = [], {}
    order = {"trip": 0, "open": 1, "close": 2}
    steps = sorted(outcome.steps, key=lambda s: (s.time_h, order[s.action]))
    for i, s in enumerate(steps, start=1):
        if s.edge >= 0:
            sid, kind = str(topo.edge_ids[s.edge]), str(topo.switch_kind[s.edge])
            states[sid] = "closed" if s.action == "close" else "open"
        else:
            sid, kind = str(topo.node_ids[-1 - s.edge]), "source"
        rows.append({"step": i, "action": s.action, "switch_id": sid, "device_kind": kind, "purpose": s.purpose,
                     "time_h": s.time_h, "customers_restored": round(zone_cust[s.zones].sum()),
                     "load_restored_mw": float(zone_load[s.zones].sum())})
    return pd.DataFrame(rows, columns=STEP_COLUMNS), states
