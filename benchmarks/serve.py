"""Benchmark: serving a tileset, ``citytwin serve`` (the full app) vs nginx, with wrk, same run, same files.

A synthetic tileset is built once; both servers serve that directory on localhost:

- citytwin: the real ``citytwin serve --workers N`` (every router, middleware and the web map, the
  webhook sender running), on a scratch database (``--db-url``, default the local PostgreSQL at
  postgresql://postgres@127.0.0.1:5432/, database ``citytwin_bench_serve``, dropped afterwards; ``--db-url
  embedded`` uses the benchmarks' own embedded cluster from ``_common.py``) with
  ``CITYTWIN_TILES_DIR`` pointing at the tiles;
- nginx: generated config in a temp dir, ``worker_processes`` = the same N, ``gzip_static on``,
  ``open_file_cache``, ``sendfile``, the same cache headers: nginx at its best for static files.

wrk cycles through every tile URL plus tileset.json with ``Accept-Encoding: gzip`` (both servers answer
with the precompressed copies), 64 connections, one server after the other in the same run. Prints
requests/s, latency percentiles and errors for both, the ratio and the goals with OK/MISSED (citytwin >=
0.3 x nginx requests/s, p99 < 50 ms, zero errors).

    .venv/bin/python benchmarks/serve.py [--small] [--duration 15] [--workers 2] [--db-url URL]
"""

from __future__ import annotations

import argparse
import gzip
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from _common import OUT, ROOT, create_database, drop_database, scratch_server

SCRATCH_DB = "citytwin_bench_serve"

NGINX_CONF = """
worker_processes {workers};
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
daemon off;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    open_file_cache max=10000 inactive=60s;
    open_file_cache_valid 60s;
    client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy; fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
    types {{ application/json json; model/gltf-binary glb; }}
    server {{
        listen 127.0.0.1:{port};
        location /tiles/ {{
            alias {tiles}/;
            gzip_static on;
            etag on;
            add_header Vary Accept-Encoding;
            add_header Cache-Control "no-cache";
            location ~ "/[0-9a-f]{{16,64}}\\.glb$" {{
                add_header Cache-Control "public, max-age=31536000, immutable";
                add_header Vary Accept-Encoding; }}
        }}
    }}
}}
"""

WRK_SCRIPT = """
local paths = {{ {paths} }}
local counter = 0
request = function()
  counter = counter + 1
  if counter > #paths then counter = 1 end
  return wrk.format("GET", paths[counter], {{["Accept-Encoding"] = "gzip"}})
end
"""

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"server at {url} did not come up")


def build_tiles(n: int) -> Path:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from tiles import CRS, VERTICAL, synthetic_city

    from citytwin.tiler import build_tileset

    tiles = OUT / f"serve-tiles-{n}"
    build_tileset(synthetic_city(n), tiles / "city", crs=CRS, vertical_crs=VERTICAL, name="city")  # fresh
    return tiles


def parse_wrk(text: str) -> dict:
    def latency_ms(label: str) -> float:
        m = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        if not m:
            return float("nan")
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000.0 if unit == "us" else value * 1000.0 if unit == "s" else value

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    errors = int(non2xx.group(1)) if non2xx else 0
    if sock:
        errors += sum(int(g) for g in sock.groups())
    total = int(re.search(r"(\d+) requests in", text).group(1))
    return {"rps": rps, "p50": latency_ms("50%"), "p90": latency_ms("90%"), "p99": latency_ms("99%"),
            "errors": errors, "requests": total}


def run_wrk(base: str, script: Path, duration: int, connections: int) -> dict:
    subprocess.run(["wrk", "-t2", f"-c{connections}", "-d2s", "-s", str(script), base], check=True,
                   capture_output=True)  # warm-up: caches, connections, workers
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script),
                          base],
                         check=True, capture_output=True, text=True).stdout
    return parse_wrk(out)


class ScratchDatabase:
    """A fresh database for ``citytwin serve``: on the server of ``base`` or the embedded bench cluster."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.cluster = None
        self.name = SCRATCH_DB

    def __enter__(self) -> str:
        if self.base == "embedded":
            self.cluster = scratch_server()
            self.name = create_database(self.cluster, SCRATCH_DB)
            user = "citytwin" if os.geteuid() == 0 else os.environ.get("USER", "postgres")
            return f"postgresql://{user}@/{self.name}?host={self.cluster.socket_dir}"
        import psycopg

        with psycopg.connect(self._url("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{self.name}"')
        with psycopg.connect(self._url(self.name), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
        return self._url(self.name)

    def _url(self, dbname: str) -> str:
        return self.base.rstrip("/") + "/" + dbname

    def __exit__(self, *exc) -> None:
        if self.cluster is not None:
            drop_database(self.cluster, self.name)
            return
        import psycopg

        with psycopg.connect(self._url("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def start_citytwin(port: int, workers: int, tiles: Path, database_url: str, tmp: Path) -> subprocess.Popen:
    """``citytwin serve`` as a user runs it, configured only through the environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYTWIN_")}
    env.update(CITYTWIN_DATABASE_URL=database_url, CITYTWIN_TILES_DIR=str(tiles),
               CITYTWIN_DATA_DIR=str(tmp / "data"), PYTHONPATH=str(ROOT))
    log = open(tmp / "citytwin.log", "wb")
    return subprocess.Popen([sys.executable, "-m", "citytwin", "serve", "--host", "127.0.0.1", "--port",
                             str(port), "--workers", str(workers)], env=env, cwd=tmp, stdout=log,
                            stderr=subprocess.STDOUT)


def goal(ok: bool) -> str:
    return "OK" if ok else "MISSED"


def same_bytes(citytwin: str, nginx: str, path: str) -> bool:
    def fetch(base: str) -> bytes:
        req = urllib.request.Request(base + path, headers={"Accept-Encoding": "gzip"})
        with urllib.request.urlopen(req) as response:
            body = response.read()
            return gzip.decompress(body) if response.headers.get("Content-Encoding") == "gzip" else body

    return fetch(citytwin) == fetch(nginx)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="5 s runs on a small tileset")
    parser.add_argument("--buildings", type=int, default=100_000)
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="server processes, the same for both")
    parser.add_argument("--db-url", default="postgresql://postgres@127.0.0.1:5432/",
                        help="server of citytwin serve's scratch database ('embedded': the bench cluster)")
    args = parser.parse_args()
    if not shutil.which("wrk") or not shutil.which("nginx"):
        raise SystemExit("wrk and nginx are required")
    n = 20_000 if args.small else args.buildings
    duration = 5 if args.small else args.duration
    tiles = build_tiles(n)
    files = sorted((tiles / "city" / "t").glob("*.glb"))
    paths = ["/tiles/city/tileset.json"] + [f"/tiles/city/t/{p.name}" for p in files]

    with tempfile.TemporaryDirectory(prefix="citytwin-serve-") as tmp_name, \
            ScratchDatabase(args.db_url) as database_url:
        tmp = Path(tmp_name)
        script = tmp / "paths.lua"
        script.write_text(WRK_SCRIPT.format(paths=", ".join(f'"{p}"' for p in paths)))
        ct_port, ngx_port = free_port(), free_port()
        (tmp / "nginx.conf").write_text(NGINX_CONF.format(workers=args.workers, tmp=tmp, port=ngx_port,
                                                          tiles=tiles))
        citytwin = start_citytwin(ct_port, args.workers, tiles, database_url, tmp)
        nginx = subprocess.Popen(["nginx", "-c", str(tmp / "nginx.conf"), "-p", str(tmp)], cwd=tmp)
        try:
            ct_base, ngx_base = f"http://127.0.0.1:{ct_port}", f"http://127.0.0.1:{ngx_port}"
            try:
                wait_http(ct_base + paths[0], timeout=120, proc=citytwin)  # migrations run first
            except SystemExit:
                print((tmp / "citytwin.log").read_text(errors="replace")[-3000:], file=sys.stderr)
                raise
            wait_http(ngx_base + paths[0], proc=nginx)
            wait_http(ct_base + "/openapi.json")  # the full API is up, not only the tile service
            for path in (paths[0], paths[-1]):
                if not same_bytes(ct_base, ngx_base, path):
                    raise SystemExit(f"the servers disagree on {path}")
            print(f"{len(paths)} URLs, {args.connections} connections, {duration} s each, "
                  f"{args.workers} worker processes per server (citytwin serve --workers {args.workers}, "
                  f"nginx worker_processes {args.workers})", flush=True)
            results = {}
            for name, base in (("citytwin", ct_base), ("nginx", ngx_base)):
                print(f"wrk against {name} ...", flush=True)
                results[name] = run_wrk(base, script, duration, args.connections)
        finally:
            citytwin.send_signal(signal.SIGINT)
            nginx.send_signal(signal.SIGQUIT)
            for proc in (citytwin, nginx):
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    print(f"\n{'server':<10}{'requests/s':>12}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'errors':>8}"
          f"{'requests':>10}")
    for name, r in results.items():
        print(f"{name:<10}{r['rps']:>12,.0f}{r['p50']:>9.2f}{r['p90']:>9.2f}{r['p99']:>9.2f}{r['errors']:>8}"
              f"{r['requests']:>10,}")
    ours = results["citytwin"]
    ratio = ours["rps"] / results["nginx"]["rps"]
    print(f"\nratio citytwin serve / nginx requests/s: {ratio:.2f}")
    for label, value, met in (("requests/s >= 0.3 x nginx", f"{ratio:.2f} x", ratio >= 0.3),
                              ("citytwin p99 < 50 ms", f"{ours['p99']:.1f} ms", ours["p99"] < 50.0),
                              ("zero errors", f"{ours['errors']} errors", ours["errors"] == 0)):
        print(f"goal: {label:<28}{value:>12}  {goal(met)}")

if __name__ == "__main__":
    main()
