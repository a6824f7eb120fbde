"""Failure modes and their effects on every load point (the FMEA table both evaluations share).

A *failure mode* is one asset that can fail (a section or node with ``failure_rate > 0``) in a
part a source feeds. Assets in the same switch zone have the same effect - the same devices trip,
the same isolation, the same back-feeding - and differ only in rate and repair time, so FLISR runs
once per faulted zone (:class:`~citytwin.models.grid.flisr.Flisr`) and the effect is stored per
zone as two sparse matrices over load points:

* ``switched[z, p]``: interruption (h) of load point p restored by switching (0 where not);
* ``repaired[z, p]``: 1 where p waits for the repair of the failed asset.

A mode k in zone z then interrupts p for ``switched[z, p] + repaired[z, p] * r_k`` hours.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from citytwin.models.grid.flisr import Flisr
from citytwin.models.grid.indices import MOMENTARY_H
from citytwin.models.grid.tables import GridTables
from citytwin.models.grid.topology import Topology, node_customers, node_loads


@dataclass
class FailureEffects:
    """Failure modes, load points and the per-zone effect matrices (see module docstring)."""

    modes: pd.DataFrame            # asset_id, asset_kind, zone, failure_rate, repair_time_h, mode_zone
    points: pd.DataFrame           # node_id, customers, load_mw (average), feeder
    fault_zones: np.ndarray        # zone number of each row of the matrices
    switched: sp.csr_matrix        # (fault zones x points) restoration-by-switching time, h
    repaired: sp.csr_matrix        # (fault zones x points) 1 = waits for repair

    @property
    def sustained_switched(self) -> sp.csr_matrix:
        """Switching restorations longer than 5 min (sustained interruptions), as 1/0."""
        m = self.switched.copy()
        m.data = (m.data > MOMENTARY_H).astype(float)
        m.eliminate_zeros()
        return m

    @property
    def momentary_switched(self) -> sp.csr_matrix:
        m = self.switched.copy()
        m.data = ((m.data > 0) & (m.data <= MOMENTARY_H)).astype(float)
        m.eliminate_zeros()
        return m

    def zone_rates(self) -> tuple[np.ndarray, np.ndarray]:
        """Per fault zone: total failure rate (1/yr) and rate-weighted repair time sum (h/yr)."""
        k = self.modes["mode_zone"].to_numpy()
        lam = self.modes["failure_rate"].to_numpy(float)
        rep = self.modes["repair_time_h"].to_numpy(float)
        n = len(self.fault_zones)
        return np.bincount(k, lam, minlength=n), np.bincount(k, lam * rep, minlength=n)


def failure_modes(topo: Topology) -> pd.DataFrame:
    """Every asset with a positive failure rate in an energised part, with its zone.

    Missing repair times are an error only for assets that can fail (they are needed).
    """
    from citytwin.errors import InputError

    grid = topo.grid
    n_sec = topo.n_sections
    sec = pd.DataFrame({"asset_id": topo.edge_ids[:n_sec], "asset_kind": "section",
                        "zone": topo.zone[topo.edge_u[:n_sec]],
                        "failure_rate": grid.sections["failure_rate"].to_numpy(float),
                        "repair_time_h": grid.sections["repair_time_h"].to_numpy(float),
                        "energised": topo.energised[topo.edge_u[:n_sec]]})
    nod = pd.DataFrame({"asset_id": topo.node_ids, "asset_kind": "node", "zone": topo.zone,
                        "failure_rate": grid.nodes["failure_rate"].to_numpy(float),
                        "repair_time_h": grid.nodes["repair_time_h"].to_numpy(float),
                        "energised": topo.energised})
    modes = pd.concat([sec, nod], ignore_index=True)
    modes = modes[(modes["failure_rate"].fillna(0) > 0) & modes["energised"]].drop(columns="energised")
    no_repair = modes["repair_time_h"].isna()
    if no_repair.any():
        raise InputError(f"grid asset {modes.loc[no_repair, 'asset_id'].iloc[0]!r} has a failure rate but no "
                         f"repair_time_h ({int(no_repair.sum())} such assets); set one, e.g. --set "
                         f"{modes.loc[no_repair, 'asset_id'].iloc[0]}.repair_time_h=5")
    return modes.reset_index(drop=True)


def load_points(topo: Topology) -> pd.DataFrame:
    """The load points: service points and any other node with customers."""
    grid = topo.grid
    cust = node_customers(grid)
    idx = np.flatnonzero((topo.node_kind == "service_point") | (cust > 0))
    return pd.DataFrame({"node": idx, "node_id": topo.node_ids[idx], "customers": cust[idx],
                         "load_mw": node_loads(grid, "average")[idx],
                         "feeder": topo.feeder_labels()[idx]})


def failure_effects(grid: GridTables, *, load: str | pd.Series = "average", power_factor: float = 1.0,
                    topo: Topology | None = None) -> FailureEffects:
    """Run FLISR once per faulted zone of the normal-state grid and tabulate the effects.

    Parameters
    ----------
    grid : GridTables
    load : {'average', 'peak'} or pandas.Series
        The load that back-feeding must find headroom for (MW per node; see
        :func:`~citytwin.models.grid.topology.node_loads`).
    power_factor : float
        Ratio of MW to MVA used against ``rating_mva``.
    """
    topo = topo or Topology.from_grid(grid, "normal")
    modes = failure_modes(topo)
    points = load_points(topo)
    fault_zones, mode_zone = np.unique(modes["zone"].to_numpy(np.int64), return_inverse=True)
    modes["mode_zone"] = mode_zone
    flisr = Flisr(topo, node_loads(grid, load), power_factor)
    # Load points by zone, to expand zone outcomes to points.
    pz = topo.zone[points["node"].to_numpy()]
    by_zone = np.argsort(pz, kind="stable")
    ptr = np.concatenate([[0], np.cumsum(np.bincount(pz, minlength=topo.n_zones))])
    rows_s, cols_s, vals_s, rows_r, cols_r = [], [], [], [], []
    for row, f in enumerate(fault_zones.tolist()):
        out = flisr.run({f: 1.0})
        for z, kind in out.zone_kind.items():
            pts = by_zone[ptr[z]: ptr[z + 1]]
            if not len(pts):
                continue
            if kind == "switching":
                rows_s.append(np.full(len(pts), row))
                cols_s.append(pts)
                vals_s.append(np.full(len(pts), out.zone_time[z]))
            else:
                rows_r.append(np.full(len(pts), row))
                cols_r.append(pts)
    shape = (len(fault_zones), len(points))

    def matrix(rows, cols, vals) -> sp.csr_matrix:
        if not rows:
            return sp.csr_matrix(shape)
        return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=shape)

    switched = matrix(rows_s, cols_s, vals_s)
    repaired = matrix(rows_r, cols_r, [np.ones(len(c)) for c in cols_r])
    return FailureEffects(modes, points.drop(columns="node"), fault_zones, switched, repaired)
