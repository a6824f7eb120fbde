"""Benchmark: a whole scenario (flood + energy + reliability) on a 2-worker vs a 1-worker Dask cluster,
and a 1,000,000-building city end to end (generate, import, simulate, tile) with timings and peak memory.

    .venv/bin/python benchmarks/scale.py scenario [--buildings 20000]
    .venv/bin/python benchmarks/scale.py city [--buildings 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from _common import OUT, ROOT, create_database, drop_database, run_measured, scratch_server

sys.path.insert(0, str(ROOT))


def ensure_city(n: int, seed: int = 7) -> Path:
    out = OUT / f"city-{n}"
    if not (out / "city.json").exists():
        from citytwin.synth import generate_city

        generate_city(n, seed, out)
    return out


def scenario_once(city: Path, workers: int, years: int) -> dict[str, float]:
    """Flood (chunked with halo exchange), energy (chunked over buildings) and Monte Carlo reliability."""
    import geopandas as gpd
    import pandas as pd
    from dask.distributed import Client, LocalCluster

    from citytwin.io.dem import read_dem
    from citytwin.io.grid_gpkg import read_grid_gpkg
    from citytwin.models import energy, flood
    from citytwin.models.grid import assignments, reliability_report
    from citytwin.scenarios.energy_batches import simulate_bounded

    buildings = gpd.read_file(city / "buildings.gpkg", engine="pyogrio")
    grid = read_grid_gpkg(city / "grid.gpkg")
    dem = read_dem(city / "dem.tif")
    times: dict[str, float] = {}
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=40) as cluster, Client(cluster) as client:
        client.run(lambda: None)
        start = time.perf_counter()
        chunked = dem.chunk({"y": -(-dem.sizes["y"] // 2), "x": -1})
        result = flood.simulate(chunked, rain=100.0, duration=1800.0, obstacles=buildings, output_interval=900.0)
        result["max_depth"].values  # noqa: B018 - force the result
        times["flood_s"] = time.perf_counter() - start
        start = time.perf_counter()
        links = assignments(grid).dropna(subset=["building_id"])
        # The twin's energy path (citytwin simulate energy): batches of substations once the hourly
        # series outgrow the budget, so only feeder and substation series travel to the client.
        simulate_bounded(pd.DataFrame(buildings), energy.synthetic_weather("temperate", year=2025), links,
                         unassigned="ignore", chunk_size=max(1000, len(buildings) // 8))
        times["energy_s"] = time.perf_counter() - start
        start = time.perf_counter()
        reliability_report(grid, method="monte-carlo", years=years, seed=1, client=client, batch_years=years // 8)
        times["reliability_s"] = time.perf_counter() - start
    times["total_s"] = sum(times.values())
    return times


def scenario(args) -> None:
    city = ensure_city(args.buildings)
    one = scenario_once(city, 1, args.years)
    two = scenario_once(city, 2, args.years)
    print(f"\nscenario on {args.buildings:,} buildings ({args.years:,} Monte Carlo years)")
    print(f"{'stage':<15}{'1 worker s':>12}{'2 workers s':>13}{'speed-up':>10}")
    for key in one:
        print(f"{key[:-2]:<15}{one[key]:>12.1f}{two[key]:>13.1f}{one[key] / two[key]:>10.2f}")
    print(f"\nscaling 1 -> 2 workers: {one['total_s'] / two['total_s']:.2f}x  (goal >= 1.6x)")


def city(args) -> None:
    n = args.buildings
    cli = [sys.executable, "-m", "citytwin"]
    out = OUT / f"city-{n}"
    rows = []
    generated = run_measured(cli + ["synth", "--buildings", str(n), "--seed", "7", "--out", str(out)])
    rows.append(("generate", generated))
    cluster = scratch_server()
    db = create_database(cluster, "bench_city")
    user = "citytwin" if os.geteuid() == 0 else os.environ.get("USER", "postgres")
    env = {"CITYTWIN_DATABASE_URL": f"postgresql://{user}@/{db}?host={cluster.socket_dir}",
           "CITYTWIN_DATA_DIR": str(OUT / f"data-{n}"), "CITYTWIN_TILES_DIR": str(OUT / f"tiles-{n}")}
    try:
        files = json.loads((out / "city.json").read_text())["files"]
        for kind in ("buildings", "dem", "grid", "sensors"):
            rows.append((f"import {kind}", run_measured(cli + ["import", kind, str(out / files[kind])], env)))
        rows.append(("flood 100 mm/h 1 h", run_measured(cli + ["simulate", "flood", "--rain-mm-h", "100",
                                                               "--hours", "1"], env)))
        rows.append(("energy (1 year)", run_measured(cli + ["simulate", "energy"], env)))
        rows.append(("tiles", run_measured(cli + ["tiles", "build", "--name", "city"], env)))
    finally:
        drop_database(cluster, db)
    print(f"\n{n:,}-building city end to end")
    print(f"{'stage':<22}{'seconds':>10}{'peak MB':>10}{'ok':>5}")
    for name, m in rows:
        print(f"{name:<22}{m.seconds:>10.1f}{m.peak_rss_mb:>10.0f}{'yes' if m.returncode == 0 else 'NO':>5}")
        if m.returncode != 0:
            print("   ", m.stderr.strip().splitlines()[-1] if m.stderr.strip() else "")
    print(f"total {sum(m.seconds for _, m in rows):.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="what", required=True)
    s = sub.add_parser("scenario")
    s.add_argument("--buildings", type=int, default=20_000)
    s.add_argument("--years", type=int, default=80_000)
    c = sub.add_parser("city")
    c.add_argument("--buildings", type=int, default=1_000_000)
    args = parser.parse_args()
    {"scenario": scenario, "city": city}[args.what](args)


if __name__ == "__main__":
    main()
