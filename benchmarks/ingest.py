"""Benchmark: buildings/s from a synthetic GeoPackage into PostGIS, citytwin vs ogr2ogr.

Both load the same file into fresh databases on the same server, in the same run:
citytwin through ``citytwin import buildings`` (COPY into staging, upsert, spatial index), ogr2ogr with
``-f PostgreSQL`` and ``PG_USE_COPY=YES``. Prints buildings/s for both, the ratio and peak memory.

What each side does (checked in the server log), so the ratio is read fairly in both directions:

- ogr2ogr creates the table with a ``fid`` primary key and the GiST index *before* its COPY, so the
  server maintains the index row by row; it commits every 100 000 features (``-gt`` default), so a
  failure leaves a partial table; it writes the geometry as read, with no validation.
- citytwin validates every footprint (GEOS validity, area, orientation; repairs or rejects), maps
  heights, uses and attributes, runs the whole import in one transaction, and on a load into an
  empty table builds the GiST index, the ``(source, source_id)`` key and the use index after the
  COPY (cheaper than maintaining them), then ANALYZEs. It also migrates the fresh database first.
  Reading and preparing run in a forked child beside the server backend (2 cores).
- Peak memory is ``ru_maxrss`` of the loader process and its waited-for children: for citytwin the
  larger of the CLI process and its preparing child, not their sum.

    .venv/bin/python benchmarks/ingest.py [--buildings 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from _common import OUT, ROOT, create_database, drop_database, run_measured, scratch_server


def ensure_city(n: int) -> Path:
    out = OUT / f"city-{n}"
    manifest = out / "city.json"
    if not manifest.exists():
        from citytwin.synth import generate_city

        print(f"generating a {n:,}-building city in {out} ...", flush=True)
        generate_city(n, 7, out)
    return out / json.loads(manifest.read_text())["files"]["buildings"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--buildings", type=int, default=1_000_000)
    args = parser.parse_args()
    gpkg = ensure_city(args.buildings)
    cluster = scratch_server()
    user = "citytwin" if os.geteuid() == 0 else os.environ.get("USER", "postgres")
    db_ct, db_ogr = create_database(cluster, "bench_ct"), create_database(cluster, "bench_ogr")
    try:
        url = f"postgresql://{user}@/{db_ct}?host={cluster.socket_dir}"
        ours = run_measured([sys.executable, "-m", "citytwin", "import", "buildings", str(gpkg), "--json"],
                            env={"CITYTWIN_DATABASE_URL": url})
        if ours.returncode != 0:
            raise SystemExit(f"citytwin import failed: {ours.stderr[-2000:]}")
        pg = f"PG:host={cluster.socket_dir} user={user} dbname={db_ogr}"
        peer = run_measured(["ogr2ogr", "-f", "PostgreSQL", pg, str(gpkg), "-nln", "buildings",
                             "-lco", "GEOMETRY_NAME=footprint", "-lco", "SPATIAL_INDEX=GIST",
                             "--config", "PG_USE_COPY", "YES"])
        if peer.returncode != 0:
            raise SystemExit(f"ogr2ogr failed: {peer.stderr[-2000:]}")
    finally:
        drop_database(cluster, db_ct)
        drop_database(cluster, db_ogr)
    n = args.buildings
    rate_ours, rate_peer = n / ours.seconds, n / peer.seconds
    print(f"\n{'loader':<10}{'seconds':>10}{'buildings/s':>14}{'peak MB':>10}")
    print(f"{'citytwin':<10}{ours.seconds:>10.1f}{rate_ours:>14,.0f}{ours.peak_rss_mb:>10.0f}")
    print(f"{'ogr2ogr':<10}{peer.seconds:>10.1f}{rate_peer:>14,.0f}{peer.peak_rss_mb:>10.0f}")
    print(f"\nratio citytwin / ogr2ogr: {rate_ours / rate_peer:.2f}x  (goal >= 1.0; peak memory goal < 2048 MB)")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
