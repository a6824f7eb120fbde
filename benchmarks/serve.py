"""Benchmark: serving a tileset, citytwin's tile service (uvicorn) vs nginx, with wrk, same run, same files.

A synthetic tileset is built once; both servers serve that directory on localhost:

- citytwin: ``uvicorn`` with ``create_app`` (httptools, uvloop), ``--workers`` processes;
- nginx: generated config in a temp dir, ``worker_processes`` = the same number, ``gzip_static on``,
  ``open_file_cache``, ``sendfile``: nginx at its best for static files.

wrk cycles through every tile URL plus tileset.json with ``Accept-Encoding: gzip`` (both servers answer
with the precompressed copies), 64 connections. Prints requests/s, latency percentiles and errors for both
and the ratio (goal: citytwin >= 0.3 x nginx requests/s, p99 < 50 ms, zero errors).

    .venv/bin/python benchmarks/serve.py [--small] [--duration 15] [--workers 2]
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

from _common import OUT, ROOT

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
            location ~ tileset\\.json$ {{ add_header Cache-Control "no-cache";
                                           add_header Vary Accept-Encoding; }}
            location ~ \\.glb$ {{ add_header Cache-Control "public, max-age=31536000, immutable";
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

APP_FACTORY = """
from types import SimpleNamespace
from citytwin.api.app import create_app
from citytwin.api.routers.tiles import router

def make():
    # The tile service alone: tile requests take the same fast path in the full app.
    return create_app(SimpleNamespace(tiles_dir={tiles!r}, cors_origins=["*"]), routers=[router])
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
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
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if not shutil.which("wrk") or not shutil.which("nginx"):
        raise SystemExit("wrk and nginx are required")
    n = 20_000 if args.small else args.buildings
    duration = 5 if args.small else args.duration
    tiles = build_tiles(n)
    files = sorted((tiles / "city" / "t").glob("*.glb"))
    paths = ["/tiles/city/tileset.json"] + [f"/tiles/city/t/{p.name}" for p in files]

    with tempfile.TemporaryDirectory(prefix="citytwin-serve-") as tmp_name:
        tmp = Path(tmp_name)
        script = tmp / "paths.lua"
        script.write_text(WRK_SCRIPT.format(paths=", ".join(f'"{p}"' for p in paths)))
        (tmp / "bench_app.py").write_text(APP_FACTORY.format(tiles=str(tiles)))
        ct_port, ngx_port = free_port(), free_port()
        (tmp / "nginx.conf").write_text(NGINX_CONF.format(workers=args.workers, tmp=tmp, port=ngx_port,
                                                          tiles=tiles))
        env = {**os.environ, "PYTHONPATH": f"{tmp}{os.pathsep}{ROOT}"}
        uvicorn = subprocess.Popen([sys.executable, "-m", "uvicorn", "bench_app:make", "--factory",
                                    "--host", "127.0.0.1", "--port", str(ct_port),
                                    "--workers", str(args.workers),
                                    "--http", "httptools", "--loop", "uvloop", "--no-access-log",
                                    "--log-level", "warning"], env=env, cwd=tmp)
        nginx = subprocess.Popen(["nginx", "-c", str(tmp / "nginx.conf"), "-p", str(tmp)], cwd=tmp)
        try:
            ct_base, ngx_base = f"http://127.0.0.1:{ct_port}", f"http://127.0.0.1:{ngx_port}"
            wait_http(ct_base + paths[0])
            wait_http(ngx_base + paths[0])
            for path in (paths[0], paths[-1]):
                if not same_bytes(ct_base, ngx_base, path):
                    raise SystemExit(f"the servers disagree on {path}")
            print(f"{len(paths)} URLs, {args.connections} connections, {duration} s each, "
                  f"{args.workers} worker processes per server", flush=True)
            results = {}
            for name, base in (("citytwin", ct_base), ("nginx", ngx_base)):
                print(f"wrk against {name} ...", flush=True)
                results[name] = run_wrk(base, script, duration, args.connections)
        finally:
            uvicorn.send_signal(signal.SIGINT)
            nginx.send_signal(signal.SIGQUIT)
            for proc in (uvicorn, nginx):
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
    print(f"\n{'server':<10}{'requests/s':>12}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'errors':>8}"
          f"{'requests':>10}")
    for name, r in results.items():
        print(f"{name:<10}{r['rps']:>12,.0f}{r['p50']:>9.2f}{r['p90']:>9.2f}{r['p99']:>9.2f}{r['errors']:>8}"
              f"{r['requests']:>10,}")
    ratio = results["citytwin"]["rps"] / results["nginx"]["rps"]
    print(f"\nratio citytwin / nginx requests/s: {ratio:.2f}  (goal >= 0.3; p99 < 50 ms; zero errors)")


if __name__ == "__main__":
    main()
