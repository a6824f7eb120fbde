"""Benchmark: single-asset failure evaluations/s on mv_oberrhein (pandapower vs citytwin), and
Monte Carlo years of RBTS Bus 2 on 1 and 2 Dask workers.

Part 1 - for every line of pandapower's mv_oberrhein, "which buses lose supply if this line fails":

* pandapower ``topology.unsupplied_buses`` with the line out of service (graph rebuilt per call);
* pandapower ``unsupplied_buses`` on a prebuilt networkx graph (edge removed and re-added);
* citytwin ``Topology.unsupplied_mask`` (no per-asset precomputation: one O(N) pass);
* citytwin ``ImpactTable`` (precomputed per-asset impact: a preorder slice per failure).

All four answer the same question and are checked equal on every line before timing.
The ratio is citytwin's impact table against pandapower's best (prebuilt graph).

Part 2 - wall time for N Monte Carlo years of RBTS Bus 2 on a ``dask.distributed`` LocalCluster
with 1 and 2 worker processes (1 thread each), same seed and batches, so the results are identical.

    .venv/bin/python benchmarks/outage.py [--small]
"""

from __future__ import annotations

import argparse
import importlib
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"
MV = DATA / "oberrhein_schutterwald_grids" / "mv_oberrhein.json"
RBTS = DATA / "rbts_bus2"


def rate(fn, items, min_seconds: float) -> tuple[float, int]:
    """Evaluations per second of ``fn`` over ``items``, repeating rounds for at least ``min_seconds``."""
    done, start = 0, time.perf_counter()
    while True:
        for item in items:
            fn(item)
        done += len(items)
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return done / elapsed, done


def part_failures(min_seconds: float) -> list[tuple[str, float, int]]:
    import pandapower as pp
    import pandapower.topology as pptop

    from citytwin.io.grids import read_pandapower
    from citytwin.models.grid import ImpactTable, Topology

    net = pp.from_json(str(MV))
    grid = read_pandapower(MV)
    t0 = time.perf_counter()
    topo = Topology.from_grid(grid, "present")
    t1 = time.perf_counter()
    impact = ImpactTable.build(topo)
    t2 = time.perf_counter()
    print(f"citytwin precomputation: topology {1e3 * (t1 - t0):.1f} ms, impact table {1e3 * (t2 - t1):.1f} ms "
          f"({len(impact.asset_ids)} assets)")
    bus_of_node = np.array([int(n[4:]) if n.startswith("bus_") else -1 for n in topo.node_ids])
    lines = list(net.line.index)
    rows = {ln: impact.index_of(f"line_{ln}") for ln in lines}
    sections = {ln: topo.resolve_assets([f"line_{ln}"])[1] for ln in lines}
    graph = pptop.create_nxgraph(net)
    edge_of = {key[1]: (u, v, key, data) for u, v, key, data in graph.edges(keys=True, data=True) if key[0] == "line"}

    def pp_rebuild(ln):
        net.line.at[ln, "in_service"] = False
        out = pptop.unsupplied_buses(net)
        net.line.at[ln, "in_service"] = True
        return out

    def pp_prebuilt(ln):
        if ln not in edge_of:           # behind an open switch: not in the graph, nothing to remove
            return pptop.unsupplied_buses(net, mg=graph)
        u, v, key, data = edge_of[ln]
        graph.remove_edge(u, v, key)
        out = pptop.unsupplied_buses(net, mg=graph)
        graph.add_edge(u, v, key=key, **data)
        return out

    def ct_mask(ln):
        buses = bus_of_node[topo.unsupplied_mask(failed_sections=sections[ln])]
        return buses[buses >= 0]

    def ct_table(ln):
        buses = bus_of_node[impact.unsupplied_nodes(rows[ln])]
        return buses[buses >= 0]

    for ln in lines:   # same answers before anything is timed
        expected = pp_rebuild(ln)
        assert pp_prebuilt(ln) == expected, ln
        assert set(ct_mask(ln).tolist()) == expected, ln
        assert set(ct_table(ln).tolist()) == expected, ln
    print(f"all four methods agree on the unsupplied buses of each of the {len(lines)} line failures")
    results = []
    for name, fn, seconds in (("pandapower unsupplied_buses (graph rebuilt)", pp_rebuild, min_seconds),
                              ("pandapower unsupplied_buses (prebuilt graph)", pp_prebuilt, min_seconds),
                              ("citytwin Topology.unsupplied_mask", ct_mask, min_seconds),
                              ("citytwin ImpactTable (precomputed)", ct_table, min_seconds)):
        per_s, n = rate(fn, lines, seconds)
        results.append((name, per_s, n))
    return results


def part_monte_carlo(years: int, batch_years: int) -> list[tuple[int, float, float]]:
    from dask.distributed import Client, LocalCluster

    from citytwin.io.grids import read_rbts
    from citytwin.models.grid.effects import failure_effects
    from citytwin.models.grid.reliability_montecarlo import monte_carlo

    effects = failure_effects(read_rbts(RBTS))
    out, reference = [], None
    for workers in (1, 2):
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
                Client(cluster) as client:
            client.wait_for_workers(workers)
            # warm-up: every worker imports citytwin and runs a batch, so start-up is not timed
            client.run(importlib.import_module, "citytwin.models.grid.reliability_montecarlo")
            monte_carlo(effects, 4 * batch_years, seed=1, batch_years=batch_years, client=client)
            start = time.perf_counter()
            result = monte_carlo(effects, years, seed=42, batch_years=batch_years, client=client)
            elapsed = time.perf_counter() - start
        saidi = float(result.annual["SAIDI"].astype(np.float64).mean())
        if reference is None:
            reference = result.unavailability_h
        else:
            assert np.array_equal(reference, result.unavailability_h), "results differ between worker counts"
        out.append((workers, elapsed, saidi))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="shorter timings and fewer years")
    args = parser.parse_args()
    min_seconds = 1.0 if args.small else 3.0

    print("== single-asset failure evaluations on mv_oberrhein (181 lines) ==")
    results = part_failures(min_seconds)
    width = max(len(r[0]) for r in results)
    for name, per_s, n in results:
        print(f"{name:<{width}}  {per_s:>12,.0f} evaluations/s  ({n:,} evaluations)")
    best_pp = max(r[1] for r in results if r[0].startswith("pandapower"))
    table = results[-1][1]
    print(f"ratio citytwin ImpactTable / best pandapower: {table / best_pp:,.1f}x  (goal >= 20x)")
    print(f"ratio citytwin unsupplied_mask / best pandapower: {results[2][1] / best_pp:,.1f}x")

    print("\n== Monte Carlo years of RBTS Bus 2 on a LocalCluster ==")
    runs = [(10_000, 2_500)] + ([] if args.small else [(2_000_000, 100_000)])
    for years, batch in runs:
        rows = part_monte_carlo(years, batch)
        for workers, elapsed, saidi in rows:
            print(f"{years:>10,} years, batch {batch:,}, {workers} worker(s): {elapsed:8.3f} s   "
                  f"({years / elapsed:,.0f} years/s, mean SAIDI {saidi:.3f} h)")
        print(f"{'':>10}  speed-up 2 vs 1 workers: {rows[0][1] / rows[1][1]:.2f}x")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"\npeak RSS: this process {peak:,.0f} MB, largest child (Dask worker) {children:,.0f} MB")


if __name__ == "__main__":
    main()
