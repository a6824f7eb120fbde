"""Energy demand benchmark: building-hours per second, demand generated and summed onto feeders.

Synthetic city (seeded): 100,000 buildings (``--small``: 10,000) with lognormal footprints, heights
3-40 m, the ten uses, random construction years, randomly assigned to ~200 feeders under 10
substations; one synthetic year (8,760 h). The same lazy graph (``demand`` -> ``aggregate`` to
feeders) runs on a Dask LocalCluster with 1 worker and then 2 workers (1 thread each, separate
processes), in the same run, with the three aggregation methods (same numbers, see
``citytwin.models.energy.aggregate``):

* ``blocks``: every chunk (8192 buildings x 744 h) of the three demand arrays is computed as a
  Dask task result and group-summed onto feeders: the generic path any demand Dataset takes, and
  the heavy workload whose 2-vs-1 scaling is the goal (>= 1.6x);
* ``stream``: every building-hour formed and added to its feeder inside one compiled pass per task
  (~134 M building-hours per task), no chunk stored;
* ``factored``: floor area per (feeder, profile) times the profiles, the path ``simulate`` takes
  for demand made by ``demand()``.

Printed: seconds, building-hours/s (building x hour cells of all three variables per second), the
cores the workers actually got (worker CPU-seconds / compute seconds) and the throughput per
worker CPU-second, the 2-vs-1 ratio and the peak memory of the whole run (client + scheduler +
worker processes, sampled every 50 ms; goal < 4 GB). Each cluster first runs a small warm-up so
worker start-up, imports and the numba kernel load are not timed. The machine load average is
printed: other jobs on a shared 2-core machine take cores away from the 2-worker run. Scaling is
printed for the whole call and for the compute phase alone (the graph is built on the client,
serially, before any worker runs).

    .venv/bin/python benchmarks/energy.py [--small] [--repeat 2] [--chunk 8192] [--time-chunk 744]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from citytwin.models.energy import aggregate, demand, load_archetypes, prepare_weather, synthetic_weather  # noqa: E402
from citytwin.models.energy.demand import DEFAULT_CHUNK, DEFAULT_TIME_CHUNK  # noqa: E402

HOURS = 8760
METHODS = ("blocks", "stream", "factored")


class PeakMemory:
    """Peak of the summed resident memory of this process and all its descendants."""

    def __init__(self, interval: float = 0.05) -> None:
        import psutil

        self.proc = psutil.Process()
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        import psutil

        total = self.proc.memory_info().rss
        for child in self.proc.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def synthetic_city(n: int, n_feeders: int, seed: int = 42) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    uses = np.array(
        [
            "residential",
            "apartment",
            "office",
            "retail",
            "school",
            "hospital",
            "warehouse",
            "supermarket",
            "industrial",
            "other",
        ]
    )
    weights = np.array([0.55, 0.15, 0.08, 0.07, 0.02, 0.005, 0.04, 0.01, 0.035, 0.04])
    footprint = rng.lognormal(mean=np.log(150.0), sigma=0.8, size=n).clip(20, 20_000)
    height = rng.uniform(3.0, 40.0, n)
    buildings = pd.DataFrame(
        {
            "source_id": [f"B{i:06d}" for i in range(n)],
            "floor_area_m2": footprint * np.maximum(1, np.round(height / 3.0)),
            "height": height,
            "use": rng.choice(uses, n, p=weights / weights.sum()),
            "year_built": rng.integers(1900, 2024, n).astype(float),
        }
    )
    feeder = rng.integers(0, n_feeders, n)
    assignments = pd.DataFrame(
        {
            "building_id": buildings["source_id"],
            "feeder": [f"F{f:03d}" for f in feeder],
            "substation": [f"S{f % 10:02d}" for f in feeder],
        }
    )
    return buildings, assignments


def worker_cpu_seconds(pids: list[int]) -> float:
    import psutil

    total = 0.0
    for pid in pids:
        times = psutil.Process(pid).cpu_times()
        total += times.user + times.system
    return total


def timed(buildings, assignments, weather, arch, chunks: tuple, method: str, pids: list[int]) -> dict:
    cpu0 = worker_cpu_seconds(pids)
    start = time.perf_counter()
    ds = demand(buildings, weather, arch, chunk_size=chunks[0], time_chunk=chunks[1])
    agg = aggregate(ds, assignments, levels=["feeder"], method=method)
    built = time.perf_counter()
    result = agg[
        ["electricity", "electricity_kwh", "heating_kwh", "cooling_kwh", "electricity_peak_kw"]
    ].compute()
    done = time.perf_counter()
    return {
        "method": method,
        "seconds": done - start,
        "graph_s": built - start,
        "result": result,
        "worker_cpu_s": worker_cpu_seconds(pids) - cpu0,
    }


def run(workers: int, buildings, assignments, weather, arch, chunks: tuple) -> list[dict]:
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            silence_logs=logging.CRITICAL,  # shutdown heartbeat noise on a loaded machine
        ) as cluster,
        Client(cluster) as client,
    ):
        # Warm-up: imports, numba kernel load and the profile tables on every worker.
        warm = demand(buildings.iloc[: 200 * workers], weather, arch, chunk_size=100)
        aggregate(warm, assignments, levels=["feeder"], unassigned="ignore", method="blocks").compute()
        pids = list(client.run(os.getpid).values())
        rows = [timed(buildings, assignments, weather, arch, chunks, m, pids) for m in METHODS]
    for row in rows:
        row["workers"] = workers
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", help="10,000 buildings instead of 100,000")
    parser.add_argument("--chunk", type=int, default=DEFAULT_CHUNK, help="buildings per Dask chunk")
    parser.add_argument("--time-chunk", type=int, default=DEFAULT_TIME_CHUNK, help="hours per Dask chunk")
    parser.add_argument("--repeat", type=int, default=2, help="runs per configuration; the fastest counts")
    args = parser.parse_args()
    n = 10_000 if args.small else 100_000
    buildings, assignments = synthetic_city(n, n_feeders=200)
    weather = synthetic_weather("temperate", year=2021)
    arch = load_archetypes()
    cells = n * HOURS
    print(
        f"energy benchmark: {n:,} buildings x {HOURS:,} h = {cells / 1e9:.3f} G building-hours, "
        f"{assignments['feeder'].nunique()} feeders, chunks {args.chunk} buildings x {args.time_chunk} h"
    )

    best: dict = {}
    load = os.getloadavg()[0]
    with PeakMemory() as memory:
        # 1 and 2 workers interleaved, best of `repeat` each: the shared machine's other jobs only
        # ever add time, and interleaving spreads their drift over both configurations.
        for _ in range(args.repeat):
            for workers in (1, 2):
                for row in run(workers, buildings, assignments, weather, arch, (args.chunk, args.time_chunk)):
                    key = row["method"], workers
                    if key not in best or row["seconds"] < best[key]["seconds"]:
                        best[key] = row
    rows = [best[m, w] for w in (1, 2) for m in METHODS]
    # Check: feeder totals equal the analytic sum of floor area x annual per-m2 profile energy.
    unit = arch.unit_profiles(prepare_weather(weather))
    rows_of = arch.match(buildings["use"], buildings["year_built"]).index
    expected = float(
        (
            buildings["floor_area_m2"].to_numpy() * unit.electricity.astype(np.float64).sum(axis=1)[rows_of]
        ).sum()
    )
    for row in rows:
        got = float(row["result"]["electricity_kwh"].sum())
        row["error"] = abs(got / expected - 1)
    reference = rows[0]["result"]["electricity"].values
    same = all(np.allclose(r["result"]["electricity"].values, reference, rtol=1e-5) for r in rows)
    by = {(r["method"], r["workers"]): r for r in rows}

    print()
    header = ("method", 9), ("workers", 7), ("seconds", 9), ("graph s", 8), ("M building-h/s", 15)
    header += ("cores used", 10), ("M b-h/cpu-s", 12), ("energy error", 13)
    print(" ".join(f"{name:>{width}}" for name, width in header))
    for row in rows:
        compute_s = row["seconds"] - row["graph_s"]
        print(
            f"{row['method']:>9} {row['workers']:>7} {row['seconds']:>9.2f} {row['graph_s']:>8.2f} "
            f"{3 * cells / row['seconds'] / 1e6:>15.1f} {row['worker_cpu_s'] / compute_s:>10.2f} "
            f"{3 * cells / max(row['worker_cpu_s'], 1e-9) / 1e6:>12.1f} {row['error']:>13.1e}"
        )
    peak_gb = memory.peak / 1e9
    print()
    print(f"load average before the run: {load:.1f} (2 cores)")
    for method in METHODS:
        one, two = by[method, 1], by[method, 2]
        ratio = one["seconds"] / two["seconds"]
        compute_ratio = (one["seconds"] - one["graph_s"]) / (two["seconds"] - two["graph_s"])
        cpu_ratio = one["worker_cpu_s"] / max(two["worker_cpu_s"], 1e-9)
        goal = f"  (goal >= 1.6x: {'OK' if ratio >= 1.6 else 'BELOW GOAL'})" if method == "blocks" else ""
        print(
            f"{method:>9}: 2 vs 1 workers {ratio:.2f}x, compute phase {compute_ratio:.2f}x, "
            f"worker CPU per building-hour 1w/2w {cpu_ratio:.2f}{goal}"
        )
    print(
        f"2 workers: factored {by['blocks', 2]['seconds'] / by['factored', 2]['seconds']:.0f}x and stream "
        f"{by['blocks', 2]['seconds'] / by['stream', 2]['seconds']:.0f}x faster than blocks"
    )
    verdict = "OK" if peak_gb < 4 else "ABOVE GOAL"
    print(f"peak memory, all processes: {peak_gb:.2f} GB (goal < 4 GB)  {verdict}")
    print(
        f"feeder series identical across methods and worker counts (rtol 1e-5): {same}; "
        f"city electricity {expected / 1e9:.3f} TWh/yr on {buildings['floor_area_m2'].sum() / 1e6:.1f} M m2"
    )


if __name__ == "__main__":
    main()
