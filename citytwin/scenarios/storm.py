"""The storm what-if: rain -> flood -> flooded assets fail -> outages -> FLISR restoration -> records.

The one place where the flood, grid and energy models meet the database for a planner's question:
"which buildings and substations are under water, who loses power, for how long?".

The flood runs on the caller's Dask client; restoration reckons with the latest energy run's loads
when there is one (:func:`restoration_loads`); each affected feeder gets an outage record with the
failed assets and switching steps that concern it (:class:`_FeederScope`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
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


def restoration_loads(conn: Connection, grid, energy_run: int | None) -> tuple[str | pd.Series, dict]:
    """The loads (MW per node) FLISR headroom and energy not supplied are reckoned with, and their source.

    With an energy run: each service point's load is the sum of the annual peak electric demand
    (``building_results.peak_kw``) of the buildings connected to it (a building connected to several
    service points split evenly). The annual peak, not the load at the storm's hour: the storm is a
    what-if with no date in the energy year, and the peak is what the grid table's fallback
    (``peak_load_mw``) means too, so both sources answer the same question -- can a tie carry the load
    at its worst? Summing buildings' own peaks is non-coincident, so it errs on the safe side for
    back-feeding and gives an upper bound for energy not supplied. Nodes the energy run does not cover
    keep the grid table's peak (``load_mw`` where no peak is given).

    Returns
    -------
    (load, source)
        ``load`` for :func:`~citytwin.models.grid.restore` ('peak' or a Series by node id, MW) and a
        JSON-ready description for the run summary.
    """
    grid_source = {"source": "grid", "basis": "peak_load_mw of the grid table (load_mw where missing)"}
    if energy_run is None:
        return "peak", grid_source
    served = pd.read_sql_query(text("""
        WITH links AS (SELECT building_id, node_id, count(*) OVER (PARTITION BY building_id) AS n
                       FROM service_connections)
        SELECT l.node_id, SUM(br.peak_kw / l.n) / 1000.0 AS load_mw
        FROM links l JOIN building_results br ON br.building_id = l.building_id AND br.run_id = :e
        WHERE br.peak_kw IS NOT NULL GROUP BY l.node_id
    """), conn, params={"e": energy_run})
    served = served[served["node_id"].isin(grid.nodes["node_id"])]
    if served.empty:
        return "peak", grid_source | {"note": f"energy run {energy_run} has no loads on this grid's service points"}
    nodes = grid.nodes.set_index("node_id")
    load = nodes["peak_load_mw"].astype(float).fillna(nodes["load_mw"].astype(float)).fillna(0.0)
    load.loc[served["node_id"].to_numpy()] = served["load_mw"].to_numpy(float)
    return load, {"source": "energy", "energy_run": int(energy_run),
                  "basis": "annual peak electric demand per service point (sum of its buildings' peaks)",
                  "service_points": int(len(served)), "energy_load_mw": round(float(served["load_mw"].sum()), 3)}


class _FeederScope:
    """Which failed assets and switching steps of an event belong to one feeder's outage.

    A step belongs to feeder F when its device has an end on F (isolation inside F, a tie that
    back-feeds F) or sits upstream of F's interrupted service points (the breaker or lost source that
    cleared a fault above the feeder). Feeder labels are the topology's: the grid table's ``feeder``
    where given, else the feeder head device.
    """

    def __init__(self, grid, topo) -> None:
        self.topo = topo
        self.label = topo.feeder_labels()
        self.node_index = topo.node_index()
        self.section_index = pd.Index(topo.edge_ids[: topo.n_sections])
        ends = grid.switches.set_index("switch_id")[["from_node", "to_node"]]
        self.switch_ends = {str(k): [str(a), str(b)] for k, (a, b) in ends.iterrows()}

    def _nodes(self, ids) -> np.ndarray:
        found = self.node_index.get_indexer([str(i) for i in ids])
        return found[found >= 0]

    def upstream(self, node_ids) -> set[int]:
        """Nodes on the supply paths of ``node_ids`` (excluding the nodes themselves)."""
        seen: set[int] = set()
        frontier = np.unique(self.topo.parent[self._nodes(node_ids)])
        while len(frontier := frontier[frontier >= 0]):
            fresh = [int(x) for x in frontier if int(x) not in seen]
            seen.update(fresh)
            frontier = np.unique(self.topo.parent[np.asarray(fresh, np.int64)]) if fresh else frontier[:0]
        return seen

    def touches(self, ends: list[str], feeder: str, upstream: set[int]) -> bool:
        idx = self._nodes(ends)
        return any(self.label[i] == feeder for i in idx) or (len(idx) > 0 and all(int(i) in upstream for i in idx))

    def steps(self, plan: pd.DataFrame, feeder: str, upstream: set[int]) -> pd.DataFrame:
        """The plan's steps for this feeder (original step numbers kept, so they can be cross-read)."""
        ends = [[sid] if kind == "source" else self.switch_ends.get(str(sid), [])
                for sid, kind in zip(plan["switch_id"], plan["device_kind"], strict=True)]
        keep = [self.touches(e, feeder, upstream) for e in ends]
        return plan.loc[keep]

    def faults(self, failed: list[str], feeder: str, upstream: set[int]) -> list[str]:
        """Failed assets on the feeder, else those upstream of its customers, else (unknown) all."""
        on, above = [], []
        for asset in failed:
            node = self.node_index.get_indexer([asset])[0]
            if node < 0:
                edge = self.section_index.get_indexer([asset])[0]
                node = self.topo.edge_u[edge] if edge >= 0 else -1
            if node >= 0 and self.label[node] == feeder:
                on.append(asset)
            elif node >= 0 and int(node) in upstream:
                above.append(asset)
        return on or above or list(failed)


def _store_outages(conn: Connection, run_id: int, grid, topo, restoration, start: datetime) -> list[int]:
    """One simulated outage per affected feeder, with its customers, its own switching steps and area.

    ``opened_switches`` are the feeder's switches the plan leaves open (isolation; a tripped breaker
    that recloses is not among them).
    """
    from citytwin.models.grid.topology import node_customers

    interruptions = restoration.interruptions
    if interruptions.empty:
        return []
    scope = _FeederScope(grid, topo)
    # Customers each feeder serves in the normal course (nodes without a feeder label are dropped).
    served = pd.Series(node_customers(grid), index=scope.label).groupby(level=0).sum()
    outage_ids = []
    for feeder, group in interruptions.groupby(interruptions["feeder"].fillna("unassigned")):
        upstream = scope.upstream(group["node_id"])
        steps = scope.steps(restoration.plan, str(feeder), upstream)
        opened = sorted({str(s) for s in steps.loc[steps["device_kind"] != "source", "switch_id"]
                         if restoration.switch_states.get(str(s)) == "open"})
        switched = group["restored_by"] == "switching"
        longest = float(group["interruption_h"].max()) if group["interruption_h"].notna().any() else None
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
               "served": int(served.get(feeder, group["customers"].sum())),
               "feeder": str(feeder), "failed": scope.faults(list(restoration.failed), str(feeder), upstream),
               "opened": opened, "plan": json.dumps(steps.to_dict(orient="records"), default=str),
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
    """The whole storm what-if; returns (and stores on the run) a summary.

    ``client``: the ``dask.distributed`` client the flood runs on (see
    :func:`~citytwin.scenarios.flood_run.flood_stage`); callers pass
    :func:`~citytwin.scenarios.cluster.get_client`. The grid part is small and runs here.
    The summary's ``load_source`` says which loads FLISR and energy not supplied used
    (see :func:`restoration_loads`).
    """
    from citytwin.db.grid import read_grid
    from citytwin.models.grid import Topology, failures_from_flood, restore
    from citytwin.oms.webhooks import announce_created
    from citytwin.scenarios.energy_run import latest_energy_run

    flood_request = FloodRequest(rain_mm_h=request.rain_mm_h, hours=request.hours, manning=request.manning,
                                 output_interval_s=request.output_interval_s)
    validate_flood_request(flood_request)
    run_id = run_id or create_run(engine, "storm", {"rain_mm_h": request.rain_mm_h, "hours": request.hours})
    try:
        flood = flood_stage(engine, data_dir, flood_request, run_id, client=client)
        set_progress(engine, run_id, 0.75, "outages")
        start = datetime.now(timezone.utc).replace(microsecond=0)
        energy_run = latest_energy_run(engine)
        with engine.connect() as conn:
            grid = read_grid(conn)
            depths = _asset_depths(conn, run_id)
            load, load_source = restoration_loads(conn, grid, energy_run) if len(grid.nodes) else ("peak", {})
        failed = failures_from_flood(grid, depths, DEFAULT_CRITICAL_DEPTH) if len(grid.nodes) else []
        summary = {"run_id": run_id, **flood, "failed_assets": failed, "customers_out": 0,
                   "customers_restored_by_switching": 0, "restoration_plan": [], "outages": [],
                   "load_source": load_source}
        with engine.begin() as conn:
            if failed:
                topo = Topology.from_grid(grid, "present")
                restoration = restore(grid, failed, load=load, topo=topo)
                outage_ids = _store_outages(conn, run_id, grid, topo, restoration, start)
                announce_created(conn, outage_ids)  # webhook deliveries commit with the outages (outbox)
                totals = restoration.summary()
                summary.update(customers_out=totals["customers_interrupted"],
                               customers_restored_by_switching=totals["customers_restored_by_switching"],
                               customer_hours=totals["customer_hours"],
                               energy_not_supplied_mwh=totals["energy_not_supplied_mwh"],
                               restoration_plan=restoration.plan.to_dict(orient="records"), outages=outage_ids)
            _mark_buildings(conn, run_id, energy_run)
        finish_run(engine, run_id, summary, flood["flood_result_path"])
        return summary
    except Exception as exc:
        fail_run(engine, run_id, str(exc))
        raise
