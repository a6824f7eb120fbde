"""Per-asset impact tables: what one failure of each asset cuts off, answered by lookup.

Built once from a :class:`~citytwin.models.grid.topology.Topology` in O(assets): because the
supply forest is stored in DFS preorder, the nodes below a failed asset are one contiguous slice
of ``topo.order``, and customers or load below it are a difference of prefix sums. A failure is
then answered in constant time (counts) or by slicing (node lists), with no graph search - the
"precomputed per-asset impact tables" of REFERENCE.md ("Grid outages and reliability").

Two impacts per asset:

* *unsupplied*: nodes that lose their path to a source when the asset is removed (the question
  pandapower's ``topology.unsupplied_buses`` answers), plus nodes never supplied;
* *tripped*: nodes de-energised when the protective device clearing the fault opens (before any
  isolation or restoration), and which device that is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from citytwin.models.grid.topology import Topology, node_customers, node_loads


@dataclass(eq=False)
class ImpactTable:
    """Impact of a single failure of every section and node (see module docstring)."""

    topo: Topology
    asset_ids: np.ndarray
    unsupplied_start: np.ndarray     # preorder slice [start, end) of the subtree cut off
    unsupplied_end: np.ndarray
    tripped_start: np.ndarray
    tripped_end: np.ndarray
    device: np.ndarray               # edge number of the clearing device; -1 = the source is lost
    customers_unsupplied: np.ndarray
    load_unsupplied_mw: np.ndarray
    customers_tripped: np.ndarray
    load_tripped_mw: np.ndarray
    dead: np.ndarray                 # nodes no source reaches in this state

    @classmethod
    def build(cls, topo: Topology, load: str | pd.Series = "average") -> ImpactTable:
        """Precompute the table for every section and node of ``topo``."""
        n_sec = topo.n_sections
        heads = np.concatenate([topo.child_of_edge(np.arange(n_sec)), np.arange(topo.n_nodes)])
        live = (heads >= 0) & topo.energised[np.maximum(heads, 0)]
        h = np.maximum(heads, 0)
        u_start = np.where(live, topo.pos[h], 0)
        u_end = np.where(live, topo.pos[h] + topo.size[h], 0)
        zones = np.concatenate([topo.zone[topo.edge_u[:n_sec]], topo.zone])
        device = topo.zone_prot[zones]
        dev_child = topo.child_of_edge(np.maximum(device, 0))
        top = np.where(device >= 0, dev_child, topo.root[topo.zone_root[zones]])
        t_start = np.where(live, topo.pos[top], 0)
        t_end = np.where(live, topo.pos[top] + topo.size[top], 0)
        cust = np.concatenate([[0], np.cumsum(node_customers(topo.grid)[topo.order])])
        load_mw = np.concatenate([[0.0], np.cumsum(node_loads(topo.grid, load)[topo.order])])
        return cls(topo=topo, asset_ids=np.concatenate([topo.edge_ids[:n_sec], topo.node_ids]),
                   unsupplied_start=u_start, unsupplied_end=u_end, tripped_start=t_start, tripped_end=t_end,
                   device=np.where(live, device, -1),
                   customers_unsupplied=cust[u_end] - cust[u_start], load_unsupplied_mw=load_mw[u_end] - load_mw[u_start],
                   customers_tripped=cust[t_end] - cust[t_start], load_tripped_mw=load_mw[t_end] - load_mw[t_start],
                   dead=np.flatnonzero(~topo.energised))

    def index_of(self, asset_id: str) -> int:
        """Row of an asset; raises InputError for an unknown id."""
        if not hasattr(self, "_index"):
            self._index = pd.Index(self.asset_ids)
        i = self._index.get_indexer([asset_id])[0]
        if i < 0:
            from citytwin.errors import InputError

            raise InputError(f"unknown grid asset {asset_id!r}: not a section or node of grid {self.topo.grid.name!r}")
        return int(i)

    def unsupplied_nodes(self, row: int) -> np.ndarray:
        """Node numbers without supply after a failure of asset ``row`` (including never-supplied ones)."""
        cut = self.topo.order[self.unsupplied_start[row]: self.unsupplied_end[row]]
        return np.concatenate([self.dead, cut]) if len(self.dead) else cut

    def tripped_nodes(self, row: int) -> np.ndarray:
        """Node numbers de-energised by the protective device clearing a fault on asset ``row``."""
        return self.topo.order[self.tripped_start[row]: self.tripped_end[row]]

    def service_points(self, row: int) -> np.ndarray:
        """Ids of the service points without supply after a failure of asset ``row``."""
        nodes = self.unsupplied_nodes(row)
        return self.topo.node_ids[nodes[self.topo.node_kind[nodes] == "service_point"]]

    def table(self) -> pd.DataFrame:
        """The table as a frame: one row per asset."""
        dev = np.where(self.device >= 0, self.topo.edge_ids[np.maximum(self.device, 0)], None)
        return pd.DataFrame({"asset_id": self.asset_ids, "clearing_device": dev,
                             "nodes_unsupplied": self.unsupplied_end - self.unsupplied_start,
                             "customers_unsupplied": self.customers_unsupplied,
                             "load_unsupplied_mw": self.load_unsupplied_mw,
                             "nodes_tripped": self.tripped_end - self.tripped_start,
                             "customers_tripped": self.customers_tripped, "load_tripped_mw": self.load_tripped_mw})
