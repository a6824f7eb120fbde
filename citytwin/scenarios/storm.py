"""The storm what-if: rain -> flood -> flooded assets fail -> outages -> FLISR restoration -> records.

The one place where the flood, grid and energy models meet the database for a planner's question:
"which buildings and substations are under water, who loses power, for how long?".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
from sqlalchemy import Connection, Engine, text

from citytwin.db.copy import copy_frame
from citytwin.scenarios.flood_run import FloodRequest, flood_stage, validate_flood_request
from citytwin.scenarios.runs import create_run, fail_run, finish_run, set_progress

# Critical depths (m) for assets without their own: pad-mounted transformers fail early,
# substations have raised equipment (typical utility flood-hardening figures).
DEFAULT_CRITICAL_DEPTH = {"transformer": 0.3, "substation": 0.6, "source": 0.6}
BUFFER_M = 15.0  # outage areas: affected footprints grown by this much, then merged


@dataclass
class StormRequest:
    rain_mm_h: float
    hours: float
    manning: float = 0.03
    output_interval_s: float = 600.0


def _asset_depths(conn: Connection, run_id: int) -> pd.DataFrame:
    return pd.read_sql_query(text("SELECT asset_id, max_depth_m FROM asset_results WHERE run_id = :r "
                                  "AND max_depth_m IS NOT NULL"), conn, params={"r": run_id})


def _store_outages(conn: Connection, run_id: int, grid, restoration, start: datetime) -> list[int]:
    """One simulated outage per affected feeder, with its customers, switching plan and area."""
    interruptions = restoration.interruptions
    if interruptions.empty:
        return []
    feeder_of = grid.nodes.set_index("node_id")["feeder"]
    customers_per_feeder = grid.nodes.groupby("feeder")["customers"].sum()
    plan = restoration.plan
    outage_ids = []
    for feeder, group in interruptions.groupby(interruptions["feeder"].fillna("unassigned")):
        failed_here = [a for a in restoration.failed if str(feeder_of.get(a, "")) == feeder] or list(restoration.failed)
        switched = group["restored_by"] == "switching"
        longest = float(group["interruption_h"].max()) if group["interruption_h"].notna().any() else None
        steps = plan.to_dict(orient="records")
        opened = sorted({s["switch_id"] for s in steps if s.get("action") in ("open", "trip")})
        outage_id = conn.execute(text("""
            INSERT INTO outages (status, kind, cause, start_time, etr, etr_confidence, customers_affected,
                customers_restored, original_customers_served, feeder, faulted_assets, opened_switches,
                switching_plan, run_id)
            VALUES ('predicted', 'simulated', 'flood', :start, :etr, :conf, :affected, :restored, :served,
                :feeder, :failed, :opened, CAST(:plan AS jsonb), :run)
            RETURNING id
        """), {"start": start, "etr": start + timedelta(hours=longest) if longest is not None else None,
               "conf": "medium" if longest is not None else "low",
               "affected": int(group["customers"].sum()), "restored": int(group.loc[switched, "customers"].sum()),
               "served": int(customers_per_feeder.get(feeder, group["customers"].sum())), "feeder": str(feeder),
               "failed": failed_here, "opened": opened, "plan": json.dumps(steps, default=str),
               "run": run_id}).scalar_one()
        rows = group.assign(outage_id=outage_id)
        rows["restored_at"] = [start + timedelta(hours=h) if pd.notna(h) else None for h in rows["interruption_h"]]
        conn.execute(text("CREATE TEMP TABLE IF NOT EXISTS staging_outage_customers "
                          "(outage_id bigint, node_id text, customers integer, interruption_h double precision, "
                          "restored_by text, restored_at timestamptz) ON COMMIT DROP"))
        conn.execute(text("TRUNCATE staging_outage_customers"))
        copy_frame(conn, "staging_outage_customers", rows,
                   ["outage_id", "node_id", "customers", "interruption_h", "restored_by", "restored_at"])
        conn.execute(text("""
            INSERT INTO outage_customers (outage_id, node_id, building_id, customers, interruption_h, restored_by,
                                          restored_at)
            SELECT s.outage_id, s.node_id, sc.building_id, s.customers, s.interruption_h, s.restored_by, s.restored_at
            FROM staging_outage_customers s
            LEFT JOIN LATERAL (SELECT building_id FROM service_connections c WHERE c.node_id = s.node_id
                               ORDER BY building_id LIMIT 1) sc ON TRUE
        """))
        conn.execute(text("""
            UPDATE outages o SET geom = sub.area FROM (
                SELECT ST_Multi(ST_Union(ST_Buffer(b.footprint, :buffer))) AS area
                FROM outage_customers c JOIN buildings b ON b.id = c.building_id WHERE c.outage_id = :id
            ) sub WHERE o.id = :id AND sub.area IS NOT NULL
        """), {"id": outage_id, "buffer": BUFFER_M})
        outage_ids.append(outage_id)
    return outage_ids


def _mark_buildings(conn: Connection, run_id: int, energy_run: int | None) -> None:
    """Outage state per building for the map: 'out' (until repair), 'restored' (by switching), 'ok'."""
    conn.execute(text("""
        UPDATE building_results br SET outage_state = 'ok' WHERE br.run_id = :r
    """), {"r": run_id})
    conn.execute(text("""
        UPDATE building_results br SET outage_state = CASE WHEN c.restored_by = 'switching' THEN 'restored' ELSE 'out' END
        FROM outage_customers c JOIN outages o ON o.id = c.outage_id
        JOIN service_connections sc ON sc.node_id = c.node_id
        WHERE o.run_id = :r AND br.run_id = :r AND br.building_id = sc.building_id
    """), {"r": run_id})
    if energy_run is not None:
        conn.execute(text("""
            UPDATE building_results br SET annual_kwh = e.annual_kwh, peak_kw = e.peak_kw
            FROM building_results e WHERE e.run_id = :e AND br.run_id = :r AND e.building_id = br.building_id
        """), {"r": run_id, "e": energy_run})


def run_storm(engine: Engine, data_dir: Path, request: StormRequest, *, client=None,
              run_id: int | None = None) -> dict:
    """The whole storm what-if; returns (and stores on the run) a summary."""
    from citytwin.db.grid import read_grid
    from citytwin.models.grid import failures_from_flood, restore
    from citytwin.scenarios.energy_run import latest_energy_run

    flood_request = FloodRequest(rain_mm_h=request.rain_mm_h, hours=request.hours, manning=request.manning,
                                 output_interval_s=request.output_interval_s)
    validate_flood_request(flood_request)
    run_id = run_id or create_run(engine, "storm", {"rain_mm_h": request.rain_mm_h, "hours": request.hours})
    try:
        flood = flood_stage(engine, data_dir, flood_request, run_id, client=client)
        set_progress(engine, run_id, 0.75, "outages")
        start = datetime.now(timezone.utc).replace(microsecond=0)
        with engine.connect() as conn:
            grid = read_grid(conn)
            depths = _asset_depths(conn, run_id)
        failed = failures_from_flood(grid, depths, DEFAULT_CRITICAL_DEPTH) if len(grid.nodes) else []
        summary = {"run_id": run_id, **flood, "failed_assets": failed, "customers_out": 0,
                   "customers_restored_by_switching": 0, "restoration_plan": [], "outages": []}
        with engine.begin() as conn:
            if failed:
                restoration = restore(grid, failed, load="peak")
                outage_ids = _store_outages(conn, run_id, grid, restoration, start)
                totals = restoration.summary()
                summary.update(customers_out=totals["customers_interrupted"],
                               customers_restored_by_switching=totals["customers_restored_by_switching"],
                               customer_hours=totals["customer_hours"],
                               energy_not_supplied_mwh=totals["energy_not_supplied_mwh"],
                               restoration_plan=restoration.plan.to_dict(orient="records"), outages=outage_ids)
            _mark_buildings(conn, run_id, latest_energy_run(engine))
        finish_run(engine, run_id, summary, flood["flood_result_path"])
        return summary
    except Exception as exc:
        fail_run(engine, run_id, str(exc))
        raise
