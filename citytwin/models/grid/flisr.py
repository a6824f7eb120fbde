"""The FLISR engine at switch-zone level: protection, isolation, reclosing, back-feeding.

Used by :func:`citytwin.models.grid.restoration.restore` (one event, any number of faults) and by
the reliability evaluations (one fault zone at a time). The procedure follows the usual
distribution-automation sequence (see REFERENCE.md, "Grid outages and reliability"):

1. *Clear*: each fault trips the nearest protective device (breaker, recloser, fuse) on its path
   to the source; without one, the source itself is lost. Everything below a tripped device is
   de-energised.
2. *Isolate*: the switching devices bounding each faulted zone are opened.
3. *Reclose*: a tripped device that is not itself isolating a fault is closed again, restoring
   the healthy part between it and the fault.
4. *Back-feed*: each remaining healthy de-energised region is connected through one open switch
   (a normally-open tie) to a part fed in its normal orientation, if every rated element on that
   part's path to its source has headroom for the region's load (flow after the event plus the
   region's load, at the given power factor, within ``rating_mva``). If no tie can take the whole
   region, the region is split at one internal switch so that the part next to the tie fits
   (the rest is tried again on other ties), else it is shed until repair.

Closing exactly one switch into a de-energised region keeps the network radial and never joins two
sources. Interruption times: switching time of the slowest device that had to operate for a
region (isolation, reclose, tie, split); parts not restored by switching wait for the repair of
every faulted zone on their normal path to the source (zones are repaired in parallel).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from citytwin.models.grid.topology import Topology

SOURCE_TRIP = "source"


@dataclass
class Step:
    """One switching action of a plan."""

    action: str          # 'trip' | 'open' | 'close'
    edge: int            # switch edge number; -1 - node for the loss of a source
    purpose: str         # 'clear fault' | 'isolate' | 'reclose' | 'back-feed' | 'split'
    time_h: float        # when the action is done, hours after the fault
    zones: list[int] = field(default_factory=list)   # zones (re)energised by a close


@dataclass
class ZoneOutcome:
    """Result of one FLISR run: per affected zone how and when it is restored."""

    steps: list[Step]
    trips: dict[int, list[int]]              # device edge (or -1-source) -> fault zones it cleared
    zone_kind: dict[int, str]                # zone -> 'switching' | 'repair'
    zone_time: dict[int, float]              # zone -> interruption duration (h)
    fault_zones: set[int]
    closed_ties: list[int]


class Flisr:
    """FLISR on a fixed topology with fixed loads; :meth:`run` handles one event."""

    def __init__(self, topo: Topology, node_load: np.ndarray, power_factor: float = 1.0) -> None:
        self.t = topo
        self.pf = float(power_factor)
        self.node_load = np.asarray(node_load, float)
        self.zone_load = np.bincount(topo.zone, weights=self.node_load, minlength=topo.n_zones)
        self.load_prefix = np.concatenate([[0.0], np.cumsum(self.node_load[topo.order])])
        rating_node = topo.grid.nodes["rating_mva"].to_numpy(float)
        rating_edge = np.concatenate([topo.grid.sections["rating_mva"].to_numpy(float),
                                      np.full(len(topo.edge_ids) - topo.n_sections, np.nan)])
        pe = topo.parent_edge
        # Rating of each node as a path element: its own (transformers, substations) and its parent section's.
        self.rating = np.fmin(rating_node, np.where(pe >= 0, rating_edge[np.maximum(pe, 0)], np.nan))
        rated = ~np.isnan(self.rating)
        rated_up = np.full(topo.n_nodes, -1, np.int64).tolist()
        parent, rated_l = topo.parent.tolist(), rated.tolist()
        for x in topo.order.tolist():
            rated_up[x] = x if rated_l[x] else (rated_up[parent[x]] if parent[x] >= 0 else -1)
        self.rated_up = np.asarray(rated_up, np.int64)
        self._open_adjacency()

    def _open_adjacency(self) -> None:
        t = self.t
        open_edges = np.flatnonzero(~t.edge_closed)
        self.open_at: dict[int, list[tuple[int, int, int]]] = {}
        for e in open_edges.tolist():
            u, v = int(t.edge_u[e]), int(t.edge_v[e])
            self.open_at.setdefault(int(t.zone[u]), []).append((e, u, v))
            self.open_at.setdefault(int(t.zone[v]), []).append((e, v, u))

    # ------------------------------------------------------------------ helpers
    def _zone_range(self, z: int) -> np.ndarray:
        t = self.t
        return t.zone_order[t.zone_pos[z]: t.zone_pos[z] + t.zone_size[z]]

    def _children(self, z: int) -> np.ndarray:
        t = self.t
        return t.zone_child_edges[t.zone_child_ptr[z]: t.zone_child_ptr[z + 1]]

    def _time(self, e: int) -> float:
        return float(self.t.switching_time[e]) if e >= 0 else 0.0

    def headroom(self, y: int, dpos: np.ndarray, dval: np.ndarray) -> float:
        """Spare capacity (MVA) on the path from node ``y`` to its source, given load changes.

        ``dpos``/``dval`` are load changes (MW) placed at preorder positions: the flow into a node
        is its normal subtree load plus the changes inside its subtree.
        """
        t = self.t
        path = []
        x = int(self.rated_up[y])
        while x >= 0:
            path.append(x)
            p = int(t.parent[x])
            x = int(self.rated_up[p]) if p >= 0 else -1
        if not path:
            return float("inf")
        path = np.asarray(path)
        start, end = t.pos[path], t.pos[path] + t.size[path]
        flow = self.load_prefix[end] - self.load_prefix[start]
        if len(dpos):
            inside = (dpos[None, :] >= start[:, None]) & (dpos[None, :] < end[:, None])
            flow = flow + inside.astype(float) @ dval
        return float(np.min(self.rating[path] - flow / self.pf))

    # ------------------------------------------------------------------ the event
    def run(self, fault_repair: dict[int, float]) -> ZoneOutcome:
        """One event: faults in the given zones (zone -> repair time, h).

        Faults in parts that no source reaches change nothing and are ignored.
        """
        t = self.t
        faults = {z: r for z, r in fault_repair.items() if t.energised[t.zone_root[z]]}
        steps: list[Step] = []
        trips: dict[int, list[int]] = {}
        top_of: dict[int, int] = {}
        for f in faults:
            d = int(t.zone_prot[f])
            if d >= 0:
                top = int(t.zone[t.child_of_edge(np.array([d]))[0]])
            else:
                src = int(t.root[t.zone_root[f]])
                d, top = -1 - src, int(t.zone[src])
            trips.setdefault(d, []).append(f)
            top_of[d] = top
        for d in trips:
            steps.append(Step("trip", d, "clear fault", 0.0, []))
        tripped = self._tripped_zones(top_of.values())
        in_trip = set(tripped)
        opened: dict[int, str] = {}
        for f in faults:
            pe = int(t.zone_parent_edge[f])
            if pe >= 0 and pe not in trips:
                opened[pe] = "isolate"
            for ce in self._children(f).tolist():
                opened[int(ce)] = "isolate"
        for e in opened:
            steps.append(Step("open", e, "isolate", self._time(e), []))
        isolating = set(opened) | {int(t.zone_parent_edge[f]) for f in faults if t.zone_parent_edge[f] >= 0}
        region_of, regions = self._regions(tripped, in_trip, faults, isolating, trips)
        boundary: dict[int, list[int]] = {r: [] for r in regions}
        for e in isolating:
            if e < 0:
                continue
            for node in (t.edge_u[e], t.edge_v[e]):
                r = region_of.get(int(t.zone[node]))
                if r is not None:
                    boundary[r].append(e)
        zone_kind: dict[int, str] = {}
        zone_time: dict[int, float] = {}
        region_load = {r: float(self.zone_load[zs].sum()) for r, zs in regions.items()}
        dpos: list[int] = [int(t.pos[t.zone_root[f]]) for f in faults if f in in_trip]
        dval: list[float] = [-float(self.zone_load[f]) for f in faults if f in in_trip]
        for r in regions:
            dpos.append(int(t.pos[t.zone_root[r]]))
            dval.append(-region_load[r])
        fed_normally = set()
        # Top-down, so that a device nested below another tripped device recloses only when the part
        # above it is live again; otherwise its region is left to back-feeding.
        for d, top in sorted(top_of.items(), key=lambda item: int(t.zone_pos[item[1]])):
            if d in isolating or top in faults:
                continue
            above = int(t.zone_parent[top])
            if above >= 0 and above in in_trip and region_of.get(above) not in fed_normally:
                continue
            r = region_of[top]
            when = max([self._time(e) for e in boundary[r]] + [self._time(d)])
            steps.append(Step("close", d, "reclose", when, list(regions[r])))
            self._restore(regions[r], when, zone_kind, zone_time)
            fed_normally.add(r)
            dpos.append(int(t.pos[t.zone_root[r]]))
            dval.append(region_load[r])
        closed_ties = self._backfeed(regions, region_of, boundary, region_load, fed_normally, faults, in_trip,
                                     opened, steps, zone_kind, zone_time, dpos, dval)
        self._repair_times(tripped, in_trip, faults, zone_kind, zone_time)
        return ZoneOutcome(steps, trips, zone_kind, zone_time, set(faults), closed_ties)

    def _tripped_zones(self, tops) -> list[int]:
        t = self.t
        ranges = sorted({(int(t.zone_pos[z]), int(t.zone_pos[z] + t.zone_size[z])) for z in tops})
        out, last_end = [], -1
        for start, end in ranges:
            if start >= last_end:
                out.append(t.zone_order[start:end])
                last_end = end
            elif end > last_end:
                out.append(t.zone_order[last_end:end])
                last_end = end
        return np.concatenate(out).tolist() if out else []

    def _regions(self, tripped, in_trip, faults, isolating, trips):
        t = self.t
        zp, zpe = t.zone_parent, t.zone_parent_edge
        region_of: dict[int, int] = {}
        regions: dict[int, list[int]] = {}
        for z in tripped:          # zone preorder: a parent comes before its children
            if z in faults:
                continue
            pz, pe = int(zp[z]), int(zpe[z])
            if pz < 0 or pz not in in_trip or pz in faults or pe in isolating or pe in trips:
                region_of[z] = z
                regions[z] = [z]
            else:
                r = region_of[pz]
                region_of[z] = r
                regions[r].append(z)
        return region_of, regions

    @staticmethod
    def _restore(zones, when: float, zone_kind: dict, zone_time: dict) -> None:
        for z in zones:
            zone_kind[z] = "switching"
            zone_time[z] = when

    def _feedable(self, y: int, in_trip: set, live_regions: set, region_of: dict) -> bool:
        """True if node ``y`` is energised in its normal orientation after isolation and reclosing."""
        t = self.t
        if not t.energised[y]:
            return False
        z = int(t.zone[y])
        return z not in in_trip or region_of.get(z) in live_regions

    def _backfeed(self, regions, region_of, boundary, region_load, fed_normally, faults, in_trip, opened,
                  steps, zone_kind, zone_time, dpos, dval) -> list[int]:
        t = self.t
        # Largest load first: it has the fewest ties able to take it, and the most to lose.
        queue = sorted((r for r in regions if r not in fed_normally), key=lambda r: (-region_load[r], r))
        pending = [(list(regions[r]), list(boundary[r])) for r in queue]
        closed_ties: list[int] = []
        used: set[int] = set()
        while pending:
            zones, bound = pending.pop(0)
            zset = set(zones)
            cands = []
            for z in zones:
                for e, own, other in self.open_at.get(z, ()):
                    if e in used or e in opened or not self._feedable(other, in_trip, fed_normally, region_of):
                        continue
                    cands.append((self.headroom(other, np.asarray(dpos), np.asarray(dval)), e, own, other))
            if not cands:
                continue
            cands.sort(key=lambda c: (-c[0], c[1]))
            need = float(self.zone_load[zones].sum())
            head, e, own, other = cands[0]
            if need / self.pf <= head + 1e-9:
                when = max([self._time(b) for b in bound] + [self._time(e)])
                steps.append(Step("close", e, "back-feed", when, zones))
                self._restore(zones, when, zone_kind, zone_time)
                closed_ties.append(e)
                used.add(e)
                dpos.append(int(t.pos[other]))
                dval.append(need)
                continue
            for head, e, own, other in cands:
                cut = self._best_split(zset, int(t.zone[own]), head, opened)
                if cut is None:
                    continue
                s, far = cut
                near = [z for z in zones if z not in far]
                when = max([self._time(b) for b in bound if int(t.zone[t.edge_u[b]]) in near
                            or int(t.zone[t.edge_v[b]]) in near] + [self._time(e), self._time(s)])
                opened[s] = "split"
                steps.append(Step("open", s, "split", self._time(s), []))
                steps.append(Step("close", e, "back-feed", when, near))
                self._restore(near, when, zone_kind, zone_time)
                closed_ties.append(e)
                used.add(e)
                dpos.append(int(t.pos[other]))
                dval.append(float(self.zone_load[near].sum()))
                far_bound = [b for b in bound if int(t.zone[t.edge_u[b]]) in far
                             or int(t.zone[t.edge_v[b]]) in far] + [s]
                pending.append(([z for z in zones if z in far], far_bound))
                break
        return closed_ties

    def _best_split(self, zset: set, entry: int, head: float, opened: dict):
        """The internal switch whose opening leaves the most load next to ``entry`` within ``head``.

        Returns (switch edge, set of zones cut off) or None.
        """
        t = self.t
        adj: dict[int, list[tuple[int, int]]] = {z: [] for z in zset}
        for z in zset:
            pz, pe = int(t.zone_parent[z]), int(t.zone_parent_edge[z])
            if pz in zset and pe not in opened:
                adj[z].append((pz, pe))
                adj[pz].append((z, pe))
        order, parent, via = [entry], {entry: -1}, {entry: -1}
        for z in order:
            for w, e in adj[z]:
                if w not in parent:
                    parent[w], via[w] = z, e
                    order.append(w)
        below = {z: float(self.zone_load[z]) for z in order}
        for z in reversed(order[1:]):
            below[parent[z]] += below[z]
        total = below[entry]
        best = None
        for z in order[1:]:
            kept = total - below[z]
            if kept / self.pf <= head + 1e-9 and kept > 0 and (best is None or kept > best[0]):
                best = (kept, z)
        if best is None:
            return None
        far, stack = set(), [best[1]]
        while stack:
            z = stack.pop()
            far.add(z)
            stack.extend(w for w, _ in adj[z] if w != parent[z] and w not in far)
        return via[best[1]], far

    def _repair_times(self, tripped, in_trip, faults, zone_kind, zone_time) -> None:
        """Zones not restored by switching wait for every faulted zone above them (and their own).

        Repairs of different zones proceed in parallel, so the wait is the longest repair time.
        """
        t = self.t
        wait: dict[int, float] = {}
        for z in tripped:
            pz = int(t.zone_parent[z])
            up = wait.get(pz, 0.0) if pz in in_trip else 0.0
            own = faults.get(z, 0.0)
            # An unknown repair time (NaN) makes the wait unknown, not zero.
            wait[z] = float("nan") if np.isnan(up) or np.isnan(own) else max(up, own)
            if z not in zone_kind:
                zone_kind[z] = "repair"
                zone_time[z] = wait[z]
