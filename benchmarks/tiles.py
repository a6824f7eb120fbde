"""Benchmark: buildings/s from buildings to a finished 3D Tiles tileset, citytwin vs ``py3dtiles export``.

Same synthetic city (rectangular LoD1 buildings on a jittered 25 m grid in RD New + NAP, seeded) for
everyone, in the same run:

- citytwin from a GeoDataFrame (``build_tileset``) on a Dask LocalCluster of ``--workers`` processes;
- citytwin from PostGIS (``build_from_twin``; the buildings are loaded into a scratch twin first, untimed);
- ``py3dtiles export`` on the first ``--peer`` buildings, from a PostGIS table of the same extruded
  buildings already converted to EPSG:4978 (MultiPolygonZ faces), as it requires (conversion untimed).

Each run is a child process; peak memory is the largest sum of resident memory over the child and its
descendants (Dask workers), sampled with psutil. Two rates, both printed with their ratio to py3dtiles:

- "build": citytwin's timed build only (a running service has its interpreter and Dask cluster up),
  against py3dtiles' whole process (it has no separate build phase to time);
- "process": whole process for everyone: citytwin's child wall time including interpreter start, imports,
  Dask cluster start and stop (and, for the GeoDataFrame run, generating the city in memory).

Then a comparison with pg2b3dm's published rates (3DBAG, IGN France; larger machines) and the goals
(>= 3x py3dtiles, >= 3,000 buildings/s, peak memory < 3 GB) marked OK / MISSED.

    .venv/bin/python benchmarks/tiles.py [--small] [--sizes 100000 1000000] [--peer 100000] [--no-db]

PostGIS: ``--db-url`` (default postgresql://postgres@127.0.0.1:5432/), scratch database
``citytwin_bench_tiles`` (dropped and recreated per size).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from _common import OUT, ROOT

CRS, VERTICAL = "EPSG:28992", "EPSG:5709"
X0, Y0 = 60000.0, 430000.0
SPACING = 25.0
SCRATCH_DB = "citytwin_bench_tiles"

# pg2b3dm (Geodan), published full-country runs from PostGIS: (dataset, buildings, seconds). Those runs used
# larger machines than this 2-core one, so the comparison shows the order of magnitude, not a like-for-like
# ratio.
PG2B3DM = (("3DBAG", 9_700_000, (1 * 60 + 54) * 60), ("IGN France", 46_300_000, (3 * 60 + 21) * 60))
GOAL_RATIO, GOAL_RATE, GOAL_PEAK_MB = 3.0, 3_000.0, 3_072.0


def synthetic_city(n: int, seed: int = 42):
    """``n`` rectangular buildings, 6-16 m wide, 3-40 m tall, on a jittered 25 m grid (deterministic)."""
    import geopandas as gpd
    import numpy as np
    import shapely

    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(n)))
    i = np.arange(n)
    cx = X0 + (i % side) * SPACING + rng.uniform(-3, 3, n)
    cy = Y0 + (i // side) * SPACING + rng.uniform(-3, 3, n)
    w, d = rng.uniform(6, 16, n), rng.uniform(6, 16, n)
    return gpd.GeoDataFrame({
        "id": i + 1,
        "source_id": np.char.add("b", i.astype(str)),
        "height": rng.uniform(3, 40, n),
        "ground_elevation": rng.uniform(-2, 3, n),
        "use": rng.choice(np.array(["residential", "office", "retail", "industrial"]), n),
        "year_built": rng.integers(1850, 2024, n),
    }, geometry=shapely.box(cx - w / 2, cy - d / 2, cx + w / 2, cy + d / 2), crs=CRS)


# ----------------------------------------------------------------------------------------------- children

def _cluster(workers: int):
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                           memory_limit=0)
    return cluster, Client(cluster)


def child_gdf(n: int, out: Path, workers: int) -> dict:
    from citytwin.tiler import build_tileset

    frame = synthetic_city(n)
    cluster, client = _cluster(workers)
    try:
        started = time.perf_counter()
        result = build_tileset(frame, out, crs=CRS, vertical_crs=VERTICAL, name="bench", client=client)
        seconds = time.perf_counter() - started
    finally:
        client.close()
        cluster.close()
    return {"seconds": seconds, "buildings": result.buildings, "tiles": result.tiles, "bytes": result.bytes}


def child_db(url: str, out: Path, workers: int) -> dict:
    from citytwin.db.engine import make_engine
    from citytwin.tiler import build_from_twin

    engine = make_engine(url)
    cluster, client = _cluster(workers)
    try:
        started = time.perf_counter()
        result = build_from_twin(engine, out, "bench", client)
        seconds = time.perf_counter() - started
    finally:
        client.close()
        cluster.close()
        engine.dispose()
    return {"seconds": seconds, "buildings": result.buildings, "tiles": result.tiles, "bytes": result.bytes}


# ------------------------------------------------------------------------------------------------ parent

def run_sampled(args: list[str]) -> tuple[float, float, int, str, str]:
    """Run a child; wall seconds, peak MB summed over its process tree, exit code, stdout, stderr."""
    import psutil

    started = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    peak = 0.0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        try:
            parent = psutil.Process(proc.pid)
        except psutil.NoSuchProcess:
            return
        while not done.is_set():
            total = 0
            try:
                for p in [parent, *parent.children(recursive=True)]:
                    try:
                        total += p.memory_info().rss
                    except psutil.NoSuchProcess:
                        pass
            except psutil.NoSuchProcess:
                break
            peak = max(peak, total / 2**20)
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = proc.communicate()
    done.set()
    sampler.join()
    return time.perf_counter() - started, peak, proc.returncode, stdout, stderr


def citytwin_run(mode: str, n: int, workers: int, url: str | None) -> dict:
    out = OUT / f"tiles-{mode}-{n}"
    shutil.rmtree(out, ignore_errors=True)
    args = [sys.executable, __file__, "--child", mode, "--n", str(n), "--out", str(out),
            "--workers", str(workers)]
    if url:
        args += ["--url", url]
    wall, peak, code, stdout, stderr = run_sampled(args)
    if code != 0:
        raise SystemExit(f"citytwin {mode} build of {n} failed:\n{stderr[-3000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    shutil.rmtree(out, ignore_errors=True)
    return {**result, "wall": wall, "peak_mb": peak}


def admin_url(base: str, dbname: str) -> str:
    return base.rstrip("/") + "/" + dbname


def recreate_database(base: str) -> str:
    import psycopg

    with psycopg.connect(admin_url(base, "postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{SCRATCH_DB}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{SCRATCH_DB}"')
    return admin_url(base, SCRATCH_DB)


def load_twin(url: str, n: int) -> float:
    """Migrate the scratch database and load the city through the twin's own loader (untimed setup)."""
    import pandas as pd

    from citytwin.db.buildings import load_buildings
    from citytwin.db.engine import make_engine
    from citytwin.db.migrate import upgrade
    from citytwin.io.buildings import BuildingRead

    started = time.perf_counter()
    engine = make_engine(url)
    upgrade(engine)
    city = synthetic_city(n)
    chunks = []
    for start in range(0, n, 200_000):
        part = city.iloc[start:start + 200_000].drop(columns="id").copy()
        part["floors"] = pd.array([None] * len(part), dtype="Int64")
        part["attributes"] = [{}] * len(part)
        part["lod2"] = None
        no_rejections = pd.DataFrame(columns=["index", "source_id", "reason"])
        chunks.append(BuildingRead(part, no_rejections, CRS, VERTICAL,
                                   "bench"))
    load_buildings(engine, iter(chunks), source="bench", path="synthetic", twin_name="bench")
    engine.dispose()
    return time.perf_counter() - started


def prepare_peer_table(url: str, n: int) -> float:
    """The same buildings as extruded MultiPolygonZ faces (roof + walls) in EPSG:4978, for py3dtiles."""
    import numpy as np
    import psycopg
    import shapely

    from citytwin.tiler.frames import GeoReference, geodetic_to_ecef

    started = time.perf_counter()
    city = synthetic_city(n)
    georef = GeoReference(CRS, VERTICAL)
    # shapely.box: 4 corners + the closing vertex.
    boxes = shapely.get_coordinates(city.geometry.values).reshape(n, 5, 2)[:, :4]
    base = city["ground_elevation"].to_numpy()[:, None].repeat(4, axis=1)
    top = base + city["height"].to_numpy()[:, None]
    lon, lat, hb = georef.to_geodetic(boxes[..., 0].ravel(), boxes[..., 1].ravel(), base.ravel())
    ht = hb + (top - base).ravel()
    bottom = geodetic_to_ecef(lon, lat, hb).reshape(n, 4, 3)
    roof = geodetic_to_ecef(lon, lat, ht).reshape(n, 4, 3)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
        conn.execute("DROP TABLE IF EXISTS py3dtiles_buildings")
        conn.execute("CREATE TABLE py3dtiles_buildings (id text, geom geometry(MultiPolygonZ, 4978))")
        with conn.cursor().copy("COPY py3dtiles_buildings (id, geom) FROM STDIN") as copy:
            for k in range(n):
                faces = [roof[k]] + [np.array([bottom[k][j], bottom[k][(j + 1) % 4], roof[k][(j + 1) % 4],
                                               roof[k][j]]) for j in range(4)]
                rings = ("((" + ",".join(f"{x:.3f} {y:.3f} {z:.3f}" for x, y, z in [*f, f[0]]) + "))"
                         for f in faces)
                wkt = "MULTIPOLYGON Z (" + ",".join(rings) + ")"
                copy.write_row((f"b{k}", f"SRID=4978;{wkt}"))
    return time.perf_counter() - started


def peer_run(url: str, n: int) -> dict:
    import psycopg

    out = OUT / f"py3dtiles-{n}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    info = psycopg.conninfo.conninfo_to_dict(url)
    conninfo = " ".join(f"{k}={v}" for k, v in info.items())
    exe = str(Path(sys.executable).with_name("py3dtiles"))
    wall, peak, code, stdout, stderr = run_sampled([
        exe, "export", "-D", conninfo, "-t", "py3dtiles_buildings", "-c", "geom", "-i", "id", "-s", str(out),
        "--spec-version", "1.1"])
    if code != 0:
        raise SystemExit(f"py3dtiles export failed:\n{stderr[-3000:]}")
    tiles = sum(1 for p in out.rglob("*") if p.suffix in (".glb", ".b3dm"))
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    shutil.rmtree(out, ignore_errors=True)
    return {"seconds": wall, "wall": wall, "buildings": n, "tiles": tiles, "bytes": size, "peak_mb": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="20,000 buildings everywhere (a quick check)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--peer", type=int, default=100_000, help="buildings for py3dtiles export")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-db", action="store_true", help="skip the PostGIS path")
    parser.add_argument("--db-url", default="postgresql://postgres@127.0.0.1:5432/")
    parser.add_argument("--child", choices=["gdf", "db"], help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child == "gdf":
        print(json.dumps(child_gdf(args.n, args.out, args.workers)))
        return
    if args.child == "db":
        print(json.dumps(child_db(args.url, args.out, args.workers)))
        return

    sizes = [20_000] if args.small else args.sizes
    peer_n = 20_000 if args.small else args.peer
    OUT.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, dict]] = []
    for n in sizes:
        print(f"citytwin from a GeoDataFrame, {n:,} buildings ...", flush=True)
        rows.append((f"citytwin gdf {n:,}", citytwin_run("gdf", n, args.workers, None)))
        if not args.no_db:
            url = recreate_database(args.db_url)
            print(f"  loading {n:,} buildings into PostGIS (untimed) ...", flush=True)
            load_twin(url, n)
            print(f"citytwin from PostGIS, {n:,} buildings ...", flush=True)
            rows.append((f"citytwin postgis {n:,}", citytwin_run("db", n, args.workers, url)))
    url = recreate_database(args.db_url)
    print(f"  preparing py3dtiles' EPSG:4978 table of {peer_n:,} buildings (untimed) ...", flush=True)
    prepare_peer_table(url, peer_n)
    print(f"py3dtiles export, {peer_n:,} buildings ...", flush=True)
    peer = peer_run(url, peer_n)
    rows.append((f"py3dtiles export {peer_n:,}", peer))
    import psycopg

    with psycopg.connect(admin_url(args.db_url, "postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{SCRATCH_DB}" WITH (FORCE)')

    report(rows, peer, args.workers)


def ok(flag: bool) -> str:
    return "OK" if flag else "MISSED"


def report(rows: list[tuple[str, dict]], peer: dict, workers: int) -> None:
    """The table, the pg2b3dm comparison and the goals."""
    peer_rate = peer["buildings"] / peer["wall"]  # py3dtiles: whole process either way
    print(f"\n{'run':<28}{'buildings':>11}{'tiles':>7}{'build s':>9}{'wall s':>8}{'bldg/s build':>14}"
          f"{'bldg/s process':>16}{'peak MB':>9}{'x py3dtiles build':>19}{'x process':>11}")
    for label, r in rows:
        build_rate, process_rate = r["buildings"] / r["seconds"], r["buildings"] / r["wall"]
        print(f"{label:<28}{r['buildings']:>11,}{r['tiles']:>7}{r['seconds']:>9.1f}{r['wall']:>8.1f}"
              f"{build_rate:>14,.0f}{process_rate:>16,.0f}{r['peak_mb']:>9.0f}{build_rate / peer_rate:>19.2f}"
              f"{process_rate / peer_rate:>11.2f}")
    print("\n'build': citytwin's timed build (interpreter, imports and Dask cluster already up) vs py3dtiles'"
          " whole process;\n'process': whole process for both (citytwin's includes interpreter and cluster"
          " start-up; the gdf runs also generate the city in memory).")

    ours = [(label, r) for label, r in rows if label.startswith("citytwin")]
    # pg2b3dm reads PostGIS: compare with citytwin's PostGIS run of the most buildings (else the gdf one).
    like = [lr for lr in ours if "postgis" in lr[0]] or ours
    ref_label, ref = max(like, key=lambda lr: lr[1]["buildings"])
    ref_build, ref_process = ref["buildings"] / ref["seconds"], ref["buildings"] / ref["wall"]
    print(f"\npg2b3dm, published runs on larger machines than this 2-core one (not like-for-like), vs "
          f"{ref_label}: {ref_build:,.0f}/s timed build, {ref_process:,.0f}/s whole process")
    for dataset, n, seconds in PG2B3DM:
        rate = n / seconds
        hours, minutes = seconds // 3600, seconds % 3600 // 60
        print(f"  {dataset:<11} {n / 1e6:5.1f} M buildings in {hours} h {minutes:02d} min = {rate:,.0f}/s"
              f"   citytwin build {ref_build / rate:.2f}x, process {ref_process / rate:.2f}x")

    print(f"\ngoals, citytwin on {workers} Dask workers (>= {GOAL_RATIO:.0f}x py3dtiles, >= {GOAL_RATE:,.0f} buildings/s, peak < "
          f"{GOAL_PEAK_MB:,.0f} MB):")
    for label, r in ours:
        build_rate, process_rate = r["buildings"] / r["seconds"], r["buildings"] / r["wall"]
        print(f"  {label:<26} x py3dtiles build {build_rate / peer_rate:5.2f} "
              f"{ok(build_rate / peer_rate >= GOAL_RATIO):<7}"
              f"process {process_rate / peer_rate:5.2f} {ok(process_rate / peer_rate >= GOAL_RATIO):<7}"
              f"{build_rate:>8,.0f}/s {ok(build_rate >= GOAL_RATE):<7}"
              f"peak {r['peak_mb']:,.0f} MB {ok(r['peak_mb'] < GOAL_PEAK_MB)}")

if __name__ == "__main__":
    main()
