"""Helpers shared by the benchmark scripts: a scratch PostGIS, timing with peak memory of a child."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"
sys.path.insert(0, str(ROOT))


@dataclass
class Measured:
    seconds: float
    peak_rss_mb: float
    returncode: int
    stderr: str


# Runs the command as its own child and prints that child's peak RSS (kB). The detour matters on
# Linux: a process's ru_maxrss starts at the high-water mark of the memory it replaced at exec, so a
# command launched straight from a large benchmark process would report at least that process's size.
# This small interpreter is what the command replaces instead.
_PEAK_WRAPPER = (
    "import os, sys\n"
    "report = int(sys.argv[1])\n"
    "pid = os.fork()\n"
    "if pid == 0:\n"
    "    os.close(report)\n"
    "    os.execvp(sys.argv[2], sys.argv[2:])\n"
    "_, status, usage = os.wait4(pid, 0)\n"
    "os.write(report, str(usage.ru_maxrss).encode())\n"
    "sys.exit(os.waitstatus_to_exitcode(status))\n"
)


def run_measured(args: list[str], env: dict | None = None) -> Measured:
    """Run a child process; wall time and its peak resident memory (ru_maxrss of the child and the
    children it waited for, measured from a small wrapper so the benchmark's own size does not count)."""
    read_end, write_end = os.pipe()
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-S", "-c", _PEAK_WRAPPER, str(write_end), *args],
                            env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, pass_fds=(write_end,))
    os.close(write_end)
    _, stderr = proc.communicate()
    elapsed = time.perf_counter() - start
    with os.fdopen(read_end, "rb") as peak:
        peak_kb = int(peak.read() or 0)
    return Measured(elapsed, peak_kb / 1024.0, proc.returncode, stderr)


def scratch_server():
    """The benchmark's own embedded PostGIS cluster (same server for citytwin and its peer)."""
    from citytwin.db.embedded import EmbeddedCluster

    cluster = EmbeddedCluster.for_data_dir(Path("/tmp/citytwin-bench"))
    cluster.ensure_running()
    return cluster


def create_database(cluster, prefix: str) -> str:
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    user = "citytwin" if os.geteuid() == 0 else os.environ.get("USER", "postgres")
    with psycopg.connect(host=str(cluster.socket_dir), user=user, dbname="postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    with psycopg.connect(host=str(cluster.socket_dir), user=user, dbname=name, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION postgis")
    return name


def drop_database(cluster, name: str) -> None:
    import psycopg

    user = "citytwin" if os.geteuid() == 0 else os.environ.get("USER", "postgres")
    with psycopg.connect(host=str(cluster.socket_dir), user=user, dbname="postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
