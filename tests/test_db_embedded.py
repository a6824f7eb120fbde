"""The zero-config database: the CLI starts its own PostGIS cluster, reports it, stops it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg

CLI = [sys.executable, "-m", "citytwin"]


def run_cli(args: list[str], data_dir: Path, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CITYTWIN_")}
    environment.update({"CITYTWIN_DATA_DIR": str(data_dir), **env})
    return subprocess.run(CLI + args, capture_output=True, text=True, env=environment, timeout=180)


def test_embedded_cluster_lifecycle(tmp_path: Path) -> None:
    data_dir = tmp_path / "citytwin-data"
    started = run_cli(["db", "start"], data_dir)
    assert started.returncode == 0, started.stderr
    try:
        status = json.loads(run_cli(["db", "status", "--json"], data_dir).stdout)
        assert status["mode"] == "embedded" and status["running"] is True
        url = run_cli(["db", "url"], data_dir).stdout.strip()
        assert url.startswith("postgresql+psycopg://") and "host=" in url
        socket_dir = url.split("host=")[1]
        # Unix socket only: no TCP listener configured.
        with psycopg.connect(host=socket_dir, user="citytwin" if os.geteuid() == 0 else os.environ["USER"],
                             dbname="citytwin") as conn:
            assert conn.execute("SHOW listen_addresses").fetchone()[0] == ""
            assert conn.execute("SELECT postgis_lib_version()").fetchone()[0].startswith("3.")
            if os.geteuid() == 0:  # the server must not run as root
                owner = conn.execute("SELECT current_setting('data_directory')").fetchone()[0]
                assert Path(owner).stat().st_uid != 0
        upgraded = run_cli(["db", "upgrade"], data_dir)
        assert upgraded.returncode == 0 and "revision" in upgraded.stdout
        again = run_cli(["db", "start"], data_dir)  # safe to run again
        assert again.returncode == 0
    finally:
        stopped = run_cli(["db", "stop"], data_dir)
    assert stopped.returncode == 0
    status = json.loads(run_cli(["db", "status", "--json"], data_dir).stdout)
    assert status["running"] is False


def test_external_url_is_used_when_set(tmp_path: Path, database_url: str) -> None:
    result = run_cli(["db", "url"], tmp_path / "unused", CITYTWIN_DATABASE_URL=database_url)
    assert result.returncode == 0
    assert result.stdout.strip() == database_url
    assert not (tmp_path / "unused" / "postgres").exists()


def test_unreachable_server_gives_clear_error(tmp_path: Path) -> None:
    result = run_cli(["summary"], tmp_path, CITYTWIN_DATABASE_URL="postgresql://nobody@127.0.0.1:1/none")
    assert result.returncode != 0
    assert "cannot connect to the database" in result.stderr
    assert "Traceback" not in result.stderr
