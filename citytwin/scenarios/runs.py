"""Simulation runs: a row per run with status and progress, results under the data directory."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import Connection, Engine, text

from citytwin.errors import NotFoundError


def create_run(engine: Engine, kind: str, parameters: dict) -> int:
    with engine.begin() as conn:
        return conn.execute(text("INSERT INTO simulation_runs (kind, parameters, status, started_at) "
                                 "VALUES (:k, CAST(:p AS jsonb), 'running', now()) RETURNING id"),
                            {"k": kind, "p": json.dumps(parameters, default=str)}).scalar_one()


def set_progress(engine: Engine, run_id: int, progress: float, stage: str | None = None) -> None:
    with engine.begin() as conn:
        conn.execute(text("UPDATE simulation_runs SET progress = :p, "
                          "summary = summary || CAST(:s AS jsonb) WHERE id = :id"),
                     {"p": float(progress), "s": json.dumps({"stage": stage} if stage else {}), "id": run_id})


def finish_run(engine: Engine, run_id: int, summary: dict, result_path: str | None = None) -> None:
    with engine.begin() as conn:
        conn.execute(text("""
            UPDATE simulation_runs SET status = 'succeeded', progress = 1, finished_at = now(),
                summary = summary || CAST(:s AS jsonb), result_path = :path WHERE id = :id
        """), {"s": json.dumps(summary, default=str), "path": result_path, "id": run_id})


def fail_run(engine: Engine, run_id: int, error: str) -> None:
    with engine.begin() as conn:
        conn.execute(text("UPDATE simulation_runs SET status = 'failed', finished_at = now(), error = :e "
                          "WHERE id = :id"), {"e": error[:2000], "id": run_id})


def get_run(conn: Connection, run_id: int) -> dict:
    row = conn.execute(text("SELECT * FROM simulation_runs WHERE id = :id"), {"id": run_id}).first()
    if row is None:
        raise NotFoundError(f"no simulation run {run_id}")
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row._mapping.items()}


def run_dir(data_dir: Path, run_id: int) -> Path:
    path = Path(data_dir) / "runs" / str(run_id)
    path.mkdir(parents=True, exist_ok=True)
    return path
