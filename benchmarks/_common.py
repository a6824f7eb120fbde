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


def run_measured(args: list[str], env: dict | None = None) -> Measured:
    """Run a child process; wall time and its peak resident memory (ru_maxrss of the child)."""
    start = time.perf_counter()
    proc = subprocess.Popen(args, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    stderr = proc.stderr.read() if proc.stderr else ""
    code = os.waitstatus_to_exitcode(status)
    return Measured(elapsed, usage.ru_maxrss / 1024.0, code, stderr)


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
