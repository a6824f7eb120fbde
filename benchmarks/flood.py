"""Benchmark: flood model cell-updates/s, citytwin vs landlab's OverlandFlow, on the same grid.

One synthetic urban catchment (rolling terrain, a street grid of building blocks that are walls,
5 cm of water everywhere and 50 mm/h of rain, closed borders) is run

1. with landlab 2.x ``OverlandFlow`` (de Almeida et al. 2012, Cython + OpenMP), buildings as closed
   nodes, its time step set to ours (same alpha and theta), for a fixed number of steps;
2. with ``citytwin.models.flood.simulate`` on the in-memory grid (numba kernels, 2 threads);
3. with the same call on a Dask-chunked DEM on a ``dask.distributed`` LocalCluster (2 workers);
4. in a child process on a 4000 x 4000 grid, for its peak memory (ru_maxrss).

Cell-updates/s = cells x time steps / wall time. Prints the table and the ratios.

    .venv/bin/python benchmarks/flood.py [--small]
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np
from _common import ROOT, run_measured

DX = 2.0  # m
RAIN = 50.0  # mm/h
MANNING = 0.03
THETA = 0.7
ALPHA = 0.7
DEPTH0 = 0.05  # m


def terrain(n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Rolling terrain (m) and a mask of building blocks (True = wall) on an n x n grid."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:n, 0:n].astype("float64")
    z = (5.0 + 0.002 * xx * DX + 1.5 * np.sin(xx / 97.0) * np.cos(yy / 71.0)
         + 0.05 * rng.standard_normal((n, n)))
    block = (xx % 40 >= 8) & (xx % 40 < 32) & (yy % 30 >= 6) & (yy % 30 < 24)
    taken = rng.random((n // 10 + 1, n // 10 + 1)) < 0.7  # 70 % of 10 x 10 plots are built
    houses = block & taken[(yy // 10).astype(int), (xx // 10).astype(int)]
    return z.astype("float32"), houses


def dem_of(z: np.ndarray):
    sys.path.insert(0, str(ROOT / "tests"))
    from _flood_support import make_dem

    return make_dem(z, dx=DX)


def run_landlab(z: np.ndarray, walls: np.ndarray, steps: int) -> dict:
    from landlab import RasterModelGrid
    from landlab.components import OverlandFlow

    n = z.shape[0]
    grid = RasterModelGrid((n, n), xy_spacing=DX)
    # landlab's rows count upwards; flip so that row 0 is the same terrain row as ours.
    grid.add_field("topographic__elevation", z[::-1].astype("float64").ravel(), at="node")
    grid.add_field("surface_water__depth", np.full(n * n, DEPTH0), at="node")
    grid.set_closed_boundaries_at_grid_edges(True, True, True, True)
    grid.status_at_node[walls[::-1].ravel()] = grid.BC_NODE_IS_CLOSED
    # landlab's dt = alpha dx / sqrt(g h_max); ours = alpha sqrt(theta/2) dx / sqrt(g h_max).
    flow = OverlandFlow(grid, alpha=ALPHA * math.sqrt(THETA / 2), mannings_n=MANNING, theta=THETA,
                        rainfall_intensity=RAIN / 3.6e6, h_init=0.0)
    flow.run_one_step()  # warm-up (first-call setup)
    start = time.perf_counter()
    elapsed = 0.0
    for _ in range(steps):
        elapsed += flow.run_one_step()
    seconds = time.perf_counter() - start
    depth = grid.at_node["surface_water__depth"].reshape(n, n)[::-1]
    return {"steps": steps, "seconds": seconds, "rate": n * n * steps / seconds, "simulated": elapsed,
            "mean_depth": float(depth[~walls].mean())}


def run_citytwin(z: np.ndarray, walls: np.ndarray, duration: float, chunks: dict | None = None,
                 output_interval: float | None = -1.0) -> dict:
    """One citytwin run; ``output_interval=-1``: maps at start and end only, None: the default (12)."""
    from citytwin.models.flood import simulate

    sys.path.insert(0, str(ROOT / "tests"))
    from _flood_support import like

    dem = dem_of(z)
    obstacles = like(dem, walls)
    if chunks:
        dem = dem.chunk(chunks)
    start = time.perf_counter()
    result = simulate(dem, rain=RAIN, duration=duration, initial_depth=DEPTH0, manning=MANNING, theta=THETA,
                      alpha=ALPHA, obstacles=obstacles, boundary="closed",
                      output_interval=duration if output_interval == -1.0 else output_interval)
    mean_depth = float(result.depth.isel(time=-1).mean())
    seconds = time.perf_counter() - start
    n = z.size
    return {"steps": result.attrs["steps"], "seconds": seconds, "rate": n * result.attrs["steps"] / seconds,
            "mean_depth": mean_depth, "volume_error": result.attrs["relative_volume_error"],
            "kernel_seconds": result.attrs["wall_time_s"]}


def warm_up() -> None:
    """Compile (or load from cache) the numba kernels outside the timed runs."""
    z, walls = terrain(64)
    run_citytwin(z, walls, 30.0)


def child_memory(n: int, duration: float) -> None:
    """Entry point of the child process measured for peak memory."""
    z, walls = terrain(n)
    out = run_citytwin(z, walls, duration, output_interval=None)  # 13 depth maps kept, as by default
    print(f"{out['steps']} {out['seconds']:.3f} {out['rate']:.6g} {out['volume_error']:.3g}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", action="store_true", help="quick run: 400^2 and 1600^2 grids")
    parser.add_argument("--child-memory", nargs=2, type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_memory:
        child_memory(int(args.child_memory[0]), args.child_memory[1])
        return
    n, n_big = (400, 1600) if args.small else (1000, 4000)
    landlab_steps = 20 if args.small else 40
    duration = 120.0 if args.small else 300.0
    z, walls = terrain(n)
    print(f"grid {n} x {n} ({DX:g} m cells, {walls.mean():.0%} building cells), rain {RAIN:g} mm/h, "
          f"{DEPTH0 * 100:g} cm initial water, n = {MANNING}, theta = {THETA}, closed borders", flush=True)
    warm_up()
    peer = run_landlab(z, walls, landlab_steps)
    print(f"landlab: {peer['steps']} steps in {peer['seconds']:.1f} s", flush=True)
    ours = run_citytwin(z, walls, duration)
    print(f"citytwin in memory: {ours['steps']} steps in {ours['seconds']:.1f} s", flush=True)
    # Same-physics check: the mean depth after landlab's simulated time.
    check = run_citytwin(z, walls, peer["simulated"])
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None)
    with cluster, Client(cluster):
        run_citytwin(*terrain(64), 30.0, chunks={"y": 32, "x": 64})  # warm the workers
        chunked = run_citytwin(z, walls, duration, chunks={"y": n // 2, "x": n})
    print(f"citytwin chunked: {chunked['steps']} steps in {chunked['seconds']:.1f} s", flush=True)
    big_duration = 20.0 if args.small else 30.0
    big = run_measured([sys.executable, __file__, "--child-memory", str(n_big), str(big_duration)])
    if big.returncode != 0:
        raise SystemExit(f"4000^2 child failed: {big.stderr[-2000:]}")

    print(f"\n{'run':<34}{'steps':>7}{'seconds':>9}{'M cell-updates/s':>18}{'mean depth m':>14}")
    for name, r in (("landlab OverlandFlow", peer), ("citytwin, in memory (numba)", ours),
                    ("citytwin, Dask 2 chunks/2 workers", chunked)):
        print(f"{name:<34}{r['steps']:>7}{r['seconds']:>9.2f}{r['rate'] / 1e6:>18.1f}"
              f"{r['mean_depth']:>14.4f}")
    print(f"\nsame simulated time ({peer['simulated']:.1f} s): "
          f"mean depth landlab {peer['mean_depth']:.5f} m, "
          f"citytwin {check['mean_depth']:.5f} m; citytwin volume error {ours['volume_error']:.1e}")
    print(f"ratio citytwin / landlab: {ours['rate'] / peer['rate']:.1f}x   (goal >= 10x)")
    print(f"ratio Dask chunked / in memory: {chunked['rate'] / ours['rate']:.0%}   (goal >= 70 %)")
    print(f"{n_big} x {n_big} grid, {big_duration:g} s simulated, 13 depth maps: "
          f"peak memory {big.peak_rss_mb / 1024:.2f} GB "
          f"(goal < 4 GB), {big.seconds:.1f} s wall incl. setup")


if __name__ == "__main__":
    main()
