"""The grid as a rooted forest: who feeds whom, in one switch state.

:class:`Topology` turns :class:`GridTables` into integer arrays (scipy.sparse / csgraph) once:

* the *supply forest*: a depth-first search from all sources through closed elements, giving
  every node its parent node and parent edge, its position in the preorder and the size of its
  subtree. Everything downstream of a node is the contiguous preorder range
  ``order[pos[x] : pos[x] + size[x]]``, so "what loses supply when x fails" is a slice.
  Parts that no source reaches (islands behind open switches) are rooted at an arbitrary node and
  flagged not energised.
* *switch zones*: the connected pieces of the network between switching devices (components of the
  section-only graph). A fault de-energises a whole zone at least; devices bound zones, so isolation
  and restoration work zone by zone. Zones form a tree too (their parent edge is a switch).

A grid whose closed elements form a loop, or connect two sources, is not radial: building the
topology raises :class:`~citytwin.errors.InputError` naming the elements of the loop or path.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.sparse import csgraph

from citytwin.errors import InputError
from citytwin.models.grid.tables import PROTECTIVE_SWITCH_KINDS, GridTables

# Manual switching time used where a device has none (hours); RBTS uses 1 h for every switching action.
DEFAULT_SWITCHING_TIME_H = 1.0
FEEDER_HEAD_KINDS = ("breaker", "recloser")


def _strings(series: pd.Series) -> np.ndarray:
    return series.to_numpy(dtype=object, na_value=None)


@dataclass(eq=False)
class Topology:
    """Integer-indexed view of a grid in one switch state (see module docstring).

    Edges ``0 .. n_sections-1`` are the sections (in table order), the rest the switches.
    Node arrays are indexed by node number (table order); ``order`` is the DFS preorder.
    A topology describes its grid as it was when built: change the grid, build a new one.
    """

    grid: GridTables
    state: str
    node_ids: np.ndarray
    node_kind: np.ndarray
    edge_ids: np.ndarray
    edge_u: np.ndarray
    edge_v: np.ndarray
    n_sections: int
    switch_kind: np.ndarray
    edge_closed: np.ndarray
    switching_time: np.ndarray
    # supply forest
    parent: np.ndarray
    parent_edge: np.ndarray
    order: np.ndarray
    pos: np.ndarray
    size: np.ndarray
    root: np.ndarray
    energised: np.ndarray
    # switch zones
    zone: np.ndarray
    zone_root: np.ndarray
    zone_parent: np.ndarray
    zone_parent_edge: np.ndarray
    zone_pos: np.ndarray
    zone_size: np.ndarray
    zone_order: np.ndarray
    zone_prot: np.ndarray
    zone_child_ptr: np.ndarray
    zone_child_edges: np.ndarray
    # derived results that only depend on the grid and state (feeder labels, FLISR engines, ...)
    cache: dict = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_grid(cls, grid: GridTables, state: str = "normal", *, checked: bool = False) -> Topology:
        """Build the topology of ``grid`` with switches in their ``state`` ('normal' or 'present').

        Parameters
        ----------
        grid : GridTables
        state : {'normal', 'present'}
            Which switch state column decides open/closed.
        checked : bool
            True when :func:`~citytwin.models.grid.validate.check_structure` already ran.
        """
        if state not in ("normal", "present"):
            raise InputError(f"switch state must be 'normal' or 'present', not {state!r}")
        if not checked:
            from citytwin.models.grid.validate import check_structure

            check_structure(grid)
        nodes, sections, switches = grid.nodes, grid.sections, grid.switches
        node_ids = _strings(nodes["node_id"])
        index = pd.Index(node_ids)
        n = len(node_ids)
        edge_ids = np.concatenate([_strings(sections["section_id"]), _strings(switches["switch_id"])])
        edge_u = np.concatenate([index.get_indexer(sections["from_node"]), index.get_indexer(switches["from_node"])])
        edge_v = np.concatenate([index.get_indexer(sections["to_node"]), index.get_indexer(switches["to_node"])])
        n_sec = len(sections)
        switch_kind = np.concatenate([np.full(n_sec, "", dtype=object), _strings(switches["kind"])])
        closed = np.concatenate([np.ones(n_sec, bool), (switches[f"{state}_state"] == "closed").to_numpy()])
        sw_time = np.concatenate([np.full(n_sec, np.nan), switches["switching_time_h"].to_numpy(float)])
        sw_time = np.where(np.isnan(sw_time) & (np.arange(len(sw_time)) >= n_sec), DEFAULT_SWITCHING_TIME_H, sw_time)
        is_source = (nodes["kind"] == "source").to_numpy()
        forest = _supply_forest(n, edge_ids, edge_u, edge_v, closed, is_source, node_ids)
        parent, parent_edge, order, pos, size, root = forest
        zones = _switch_zones(n, n_sec, edge_u, edge_v, parent, parent_edge, order, pos, size, switch_kind)
        return cls(grid=grid, state=state, node_ids=node_ids, node_kind=_strings(nodes["kind"]),
                   edge_ids=edge_ids, edge_u=edge_u, edge_v=edge_v, n_sections=n_sec, switch_kind=switch_kind,
                   edge_closed=closed, switching_time=sw_time, parent=parent, parent_edge=parent_edge,
                   order=order, pos=pos, size=size, root=root, energised=is_source[root], **zones)

    # ------------------------------------------------------------------ lookups
    @property
    def n_nodes(self) -> int:
        return len(self.node_ids)

    @property
    def n_zones(self) -> int:
        return len(self.zone_root)

    def node_index(self) -> pd.Index:
        return pd.Index(self.node_ids)

    def edge_index(self) -> pd.Index:
        return pd.Index(self.edge_ids)

    def resolve_assets(self, asset_ids) -> tuple[np.ndarray, np.ndarray]:
        """Split asset ids into (node numbers, section edge numbers).

        Raises
        ------
        InputError
            For an id that is neither a node nor a section (switches do not fail in this model).
        """
        ids = pd.Index([str(a) for a in asset_ids])
        nodes = self.node_index().get_indexer(ids)
        edges = pd.Index(self.edge_ids[: self.n_sections]).get_indexer(ids)
        unknown = ids[(nodes < 0) & (edges < 0)]
        if len(unknown):
            raise InputError(f"unknown grid asset {', '.join(repr(u) for u in unknown[:5])}: not a node or "
                             f"section of grid {self.grid.name!r}")
        return nodes[nodes >= 0], edges[edges >= 0]

    def child_of_edge(self, edges: np.ndarray) -> np.ndarray:
        """The downstream end of each closed tree edge (-1 for open or non-tree edges)."""
        edges = np.asarray(edges, dtype=np.int64)
        u, v = self.edge_u[edges], self.edge_v[edges]
        return np.where(self.parent_edge[u] == edges, u, np.where(self.parent_edge[v] == edges, v, -1))

    def asset_zone(self, nodes: np.ndarray, edges: np.ndarray) -> np.ndarray:
        """The switch zone of each failed node and section."""
        return np.concatenate([self.zone[nodes], self.zone[self.edge_u[edges]]])

    def subtree(self, x: int) -> np.ndarray:
        """Node numbers downstream of (and including) node ``x``."""
        return self.order[self.pos[x]: self.pos[x] + self.size[x]]

    def unsupplied_mask(self, failed_nodes=(), failed_sections=()) -> np.ndarray:
        """Nodes without a path to a source once the failed assets are removed (no protection acting).

        This is the topological question pandapower's ``topology.unsupplied_buses`` answers:
        the union of the subtrees below each failed asset, plus the parts no source reaches at all.
        """
        heads = np.concatenate([np.asarray(failed_nodes, np.int64),
                                self.child_of_edge(np.asarray(failed_sections, np.int64))])
        heads = heads[heads >= 0]
        diff = np.zeros(self.n_nodes + 1, np.int64)
        np.add.at(diff, self.pos[heads], 1)
        np.add.at(diff, self.pos[heads] + self.size[heads], -1)
        in_order = np.cumsum(diff[:-1]) > 0
        mask = ~self.energised.copy()
        mask[self.order[in_order]] = True
        return mask

    def feeder_labels(self, use_table: bool = True) -> np.ndarray:
        """Feeder of every node: the table's ``feeder`` where given, else the id of the head device.

        The head device is the topmost breaker or recloser on the path from the source; in a tree
        without one, the first edge leaving the source. Nodes above every feeder head (substation
        busbars) and unsupplied islands get None.
        """
        if ("feeders", use_table) in self.cache:
            return self.cache[("feeders", use_table)].copy()
        given = _strings(self.grid.nodes["feeder"]) if use_table else np.full(self.n_nodes, None, object)
        head = np.full(self.n_nodes, -1, np.int64)
        tree_has_breaker = np.zeros(self.n_nodes, bool)
        is_head_kind = np.isin(self.switch_kind, FEEDER_HEAD_KINDS)
        pe = self.parent_edge
        brk_nodes = np.flatnonzero((pe >= 0) & is_head_kind[np.maximum(pe, 0)])
        tree_has_breaker[self.root[brk_nodes]] = True
        parent, order = self.parent.tolist(), self.order.tolist()
        head_l, pe_l = head.tolist(), pe.tolist()
        is_head_l, has_brk = is_head_kind.tolist(), tree_has_breaker.tolist()
        root_l = self.root.tolist()
        for x in order:
            p = parent[x]
            if p < 0:
                continue
            if head_l[p] >= 0:
                head_l[x] = head_l[p]
            elif is_head_l[pe_l[x]] or (not has_brk[root_l[x]] and parent[p] < 0):
                head_l[x] = pe_l[x]
        head = np.asarray(head_l, np.int64)
        derived = np.where(head >= 0, self.edge_ids[np.maximum(head, 0)], None)
        derived[~self.energised] = None
        labels = np.where(pd.isna(given), derived, given)
        self.cache[("feeders", use_table)] = labels
        return labels.copy()

    def nearest_upstream(self, kinds: tuple[str, ...]) -> np.ndarray:
        """For every node, the nearest node at or above it whose kind is in ``kinds`` (-1 if none)."""
        match = np.isin(self.node_kind, kinds)
        out = np.full(self.n_nodes, -1, np.int64).tolist()
        parent, match_l = self.parent.tolist(), match.tolist()
        for x in self.order.tolist():
            out[x] = x if match_l[x] else (out[parent[x]] if parent[x] >= 0 else -1)
        return np.asarray(out, np.int64)


def _supply_forest(n, edge_ids, edge_u, edge_v, closed, is_source, node_ids):
    """DFS forest from the sources over closed edges; raises on loops or connected sources."""
    cu, cv = edge_u[closed], edge_v[closed]
    closed_idx = np.flatnonzero(closed)
    lo, hi = np.minimum(cu, cv), np.maximum(cu, cv)
    keys = lo.astype(np.int64) * n + hi
    sort = np.argsort(keys, kind="stable")
    dup = np.flatnonzero(keys[sort][1:] == keys[sort][:-1])
    if len(dup):
        a, b = closed_idx[sort[dup[0]]], closed_idx[sort[dup[0] + 1]]
        raise InputError(f"the closed elements form a loop: {edge_ids[a]!r} and {edge_ids[b]!r} both connect "
                         f"{node_ids[edge_u[a]]!r} and {node_ids[edge_v[a]]!r}; open one of them")
    graph = sp.coo_matrix((np.ones(len(cu)), (cu, cv)), shape=(n, n)).tocsr()
    n_comp, comp = csgraph.connected_components(graph, directed=False)
    comp_has_source = np.zeros(n_comp, bool)
    comp_has_source[comp[is_source]] = True
    first_of_comp = np.full(n_comp, n, np.int64)
    np.minimum.at(first_of_comp, comp, np.arange(n))
    island_roots = first_of_comp[~comp_has_source]
    roots = np.concatenate([np.flatnonzero(is_source), island_roots])
    # A virtual super-root (node n) joined to every source and island root makes one DFS enough.
    rows = np.concatenate([cu, np.full(len(roots), n)])
    cols = np.concatenate([cv, roots])
    aug = sp.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n + 1, n + 1)).tocsr()
    order, pred = csgraph.depth_first_order(aug, n, directed=False, return_predecessors=True)
    order = order[1:]
    pred = pred[:n].astype(np.int64)
    parent = np.where(pred == n, -1, pred)
    is_root = parent < 0
    child = np.flatnonzero(~is_root)
    ckeys = np.minimum(child, parent[child]).astype(np.int64) * n + np.maximum(child, parent[child])
    parent_edge = np.full(n, -1, np.int64)
    parent_edge[child] = closed_idx[sort[np.searchsorted(keys[sort], ckeys)]]
    pos = np.empty(n, np.int64)
    pos[order] = np.arange(n)
    size = np.ones(n, np.int64).tolist()
    root = np.arange(n).tolist()
    par_l = parent.tolist()
    for x in reversed(order.tolist()):
        p = par_l[x]
        if p >= 0:
            size[p] += size[x]
    for x in order.tolist():
        p = par_l[x]
        if p >= 0:
            root[x] = root[p]
    size, root = np.asarray(size, np.int64), np.asarray(root, np.int64)
    joined = np.flatnonzero(is_source & ~is_root)
    if len(joined):
        s = int(joined[0])
        path = _path_edges(s, int(root[s]), parent, parent_edge)
        raise InputError(f"sources {node_ids[root[s]]!r} and {node_ids[s]!r} are connected through closed elements "
                         f"({_names(edge_ids, path)}); a radial grid needs an open point between them")
    tree_edge = np.zeros(len(edge_ids), bool)
    tree_edge[parent_edge[child]] = True
    extra = closed_idx[~tree_edge[closed_idx]]
    if len(extra):
        e = int(extra[0])
        a, b = int(edge_u[e]), int(edge_v[e])
        loop = [e] + _loop_edges(a, b, parent, parent_edge)
        raise InputError(f"the closed elements form a loop ({_names(edge_ids, loop)}); "
                         f"a radial grid needs one of them open, e.g. {edge_ids[e]!r}")
    return parent, parent_edge, order, pos, size, root


def _path_edges(x: int, ancestor: int, parent: np.ndarray, parent_edge: np.ndarray) -> list[int]:
    out = []
    while x != ancestor and x >= 0:
        out.append(int(parent_edge[x]))
        x = int(parent[x])
    return out


def _loop_edges(a: int, b: int, parent: np.ndarray, parent_edge: np.ndarray) -> list[int]:
    up_a = [a]
    while parent[up_a[-1]] >= 0:
        up_a.append(int(parent[up_a[-1]]))
    seen = {x: i for i, x in enumerate(up_a)}
    path_b, x = [], b
    while x not in seen and x >= 0:
        path_b.append(int(parent_edge[x]))
        x = int(parent[x])
    return path_b + [int(parent_edge[y]) for y in up_a[: seen.get(x, 0)]]


def _names(edge_ids: np.ndarray, edges: list[int], limit: int = 12) -> str:
    names = [repr(str(edge_ids[e])) for e in edges[:limit]]
    return ", ".join(names) + (f" and {len(edges) - limit} more" if len(edges) > limit else "")


def _switch_zones(n, n_sec, edge_u, edge_v, parent, parent_edge, order, pos, size, switch_kind) -> dict:
    """Zones (section-connected pieces), their tree, preorder ranges and protective devices."""
    su, sv = edge_u[:n_sec], edge_v[:n_sec]
    graph = sp.coo_matrix((np.ones(n_sec), (su, sv)), shape=(n, n)).tocsr()
    n_zones, zone = csgraph.connected_components(graph, directed=False)
    zone = zone.astype(np.int64)
    first_pos = np.full(n_zones, n, np.int64)
    np.minimum.at(first_pos, zone, pos)
    zone_root = order[first_pos]
    zone_parent_edge = parent_edge[zone_root]
    zone_parent = np.where(parent[zone_root] >= 0, zone[np.maximum(parent[zone_root], 0)], -1)
    zone_order = np.argsort(first_pos, kind="stable")
    zone_pos = np.empty(n_zones, np.int64)
    zone_pos[zone_order] = np.arange(n_zones)
    sorted_first = first_pos[zone_order]
    end_pos = pos[zone_root] + size[zone_root]
    zone_size = np.searchsorted(sorted_first, end_pos, side="left") - zone_pos
    protective = np.isin(switch_kind, PROTECTIVE_SWITCH_KINDS)
    prot = np.full(n_zones, -1, np.int64).tolist()
    zpe, zp, prot_l = zone_parent_edge.tolist(), zone_parent.tolist(), protective.tolist()
    for z in zone_order.tolist():
        e = zpe[z]
        if e >= 0 and prot_l[e]:
            prot[z] = e
        elif zp[z] >= 0:
            prot[z] = prot[zp[z]]
    has_parent = np.flatnonzero(zone_parent >= 0)
    by_parent = has_parent[np.argsort(zone_parent[has_parent], kind="stable")]
    counts = np.bincount(zone_parent[has_parent], minlength=n_zones)
    ptr = np.concatenate([[0], np.cumsum(counts)])
    return {"zone": zone, "zone_root": zone_root, "zone_parent": zone_parent, "zone_parent_edge": zone_parent_edge,
                "zone_pos": zone_pos, "zone_size": zone_size, "zone_order": zone_order, "zone_prot": np.asarray(prot, np.int64),
                "zone_child_ptr": ptr, "zone_child_edges": zone_parent_edge[by_parent]}


def node_customers(grid: GridTables) -> np.ndarray:
    """Customers per node: the node's ``customers``, else the sum of its service connections."""
    cust = grid.nodes["customers"].to_numpy(np.int64).copy()
    if not grid.connections.empty:
        per_node = grid.connections.groupby("node_id")["customers"].sum()
        fill = pd.Series(grid.nodes["node_id"]).map(per_node).fillna(0).to_numpy(np.int64)
        cust = np.where(cust > 0, cust, fill)
    return cust


def node_loads(grid: GridTables, load: str | pd.Series = "average") -> np.ndarray:
    """Load per node in MW.

    Parameters
    ----------
    load : {'average', 'peak'} or pandas.Series
        'average' uses ``load_mw``; 'peak' uses ``peak_load_mw`` where given, else ``load_mw``;
        a Series indexed by node id (e.g. from the energy model) overrides both for its nodes.
    """
    avg = grid.nodes["load_mw"].to_numpy(float)
    if isinstance(load, pd.Series):
        given = pd.Series(grid.nodes["node_id"]).map(load.astype(float)).to_numpy(float)
        return np.nan_to_num(np.where(np.isnan(given), avg, given))
    if load == "peak":
        peak = grid.nodes["peak_load_mw"].to_numpy(float)
        return np.nan_to_num(np.where(np.isnan(peak), avg, peak))
    if load != "average":
        raise InputError(f"load must be 'average', 'peak' or a Series of MW per node id, not {load!r}")
    return np.nan_to_num(avg)


def assignments(grid: GridTables) -> pd.DataFrame:
    """The upstream transformer, feeder and substation of every service point (normal state).

    Returns
    -------
    pandas.DataFrame
        Columns ``building_id, service_point, transformer, feeder, substation``: one row per
        service connection, plus one row (``building_id`` NA) per service point without buildings.
        ``substation`` is the nearest substation node upstream, else the feeding source.
    """
    topo = Topology.from_grid(grid, "normal")
    sp_idx = np.flatnonzero(topo.node_kind == "service_point")
    tx = topo.nearest_upstream(("transformer",))[sp_idx]
    sub = topo.nearest_upstream(("substation",))[sp_idx]
    sub = np.where(sub >= 0, sub, np.where(topo.energised[sp_idx], topo.root[sp_idx], -1))
    feeders = topo.feeder_labels()[sp_idx]

    def ids(idx: np.ndarray) -> pd.Series:
        return pd.Series(np.where(idx >= 0, topo.node_ids[np.maximum(idx, 0)], None), dtype="string")

    points = pd.DataFrame({"service_point": pd.Series(topo.node_ids[sp_idx], dtype="string"),
                           "transformer": ids(tx), "feeder": pd.Series(feeders, dtype="string"),
                           "substation": ids(sub)})
    conns = grid.connections[["building_id", "node_id"]].rename(columns={"node_id": "service_point"})
    linked = conns.merge(points, on="service_point", how="inner")
    alone = points[~points["service_point"].isin(conns["service_point"])]
    columns = ["building_id", "service_point", "transformer", "feeder", "substation"]
    parts = [frame for frame in (linked, alone) if len(frame)]
    out = pd.concat(parts, ignore_index=True) if parts else linked
    out["building_id"] = out["building_id"].astype("string") if "building_id" in out else pd.NA
    return out.reindex(columns=columns).astype({"building_id": "string"})
