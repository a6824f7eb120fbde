"""Scenarios on a real twin: storm outages per feeder, the CLI runs, energy loads in restoration, Dask.

One small synthetic city (``demo_twin``: 400 buildings) in a real PostGIS database serves the whole
module; the tests run in file order because the energy run made half-way changes what the storm uses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from sqlalchemy import text

from citytwin.db.engine import make_engine
from citytwin.errors import InputError

REPO = Path(__file__).resolve().parents[1]
# The demo city's transformers see at most ~0.14 m in a 150 mm/h, 2 h storm; a 5 cm critical depth
# makes several of them, on several feeders, fail.
TRANSFORMER_CRITICAL_M = 0.05
STORM = {"rain_mm_h": 150.0, "hours": 2.0}


@pytest.fixture(scope="module")
def twin(demo_twin):
    url, data_dir = demo_twin
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE grid_nodes SET critical_depth_m = :d WHERE kind = 'transformer'"),
                     {"d": TRANSFORMER_CRITICAL_M})
    yield engine, url, data_dir
    from citytwin.scenarios.cluster import close_clients

    close_clients()  # a LocalCluster left open would become every later test's Dask scheduler
    engine.dispose()


def cli(url: str, data_dir: Path, cwd: Path, *args: str) -> dict:
    """``python -m citytwin ...`` as a user runs it; returns the --json output."""
    env = {**os.environ, "CITYTWIN_DATABASE_URL": url, "CITYTWIN_DATA_DIR": str(data_dir),
           "CITYTWIN_DASK_SCHEDULER": "", "CITYTWIN_MQTT_URL": ""}
    proc = subprocess.run([sys.executable, "-m", "citytwin", *args, "--json"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def grid_state(engine):
    from citytwin.db.grid import read_grid
    from citytwin.models.grid import Topology
    from citytwin.models.grid.topology import node_customers

    with engine.connect() as conn:
        grid = read_grid(conn)
    topo = Topology.from_grid(grid, "present")
    return grid, topo, topo.feeder_labels(), node_customers(grid)


def outages_of(engine, run_id: int) -> list[dict]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM outages WHERE run_id = :r ORDER BY id"), {"r": run_id}).mappings()
        outages = [dict(r) for r in rows]
        for o in outages:
            o["customers"] = pd.read_sql_query(text("SELECT node_id, customers, interruption_h FROM outage_customers "
                                                    "WHERE outage_id = :o"), conn, params={"o": o["id"]})
    return outages


def ens_expected(outages: list[dict], load_mw: pd.Series) -> float:
    """Energy not supplied (MWh) from each interrupted node's load and its interruption."""
    frame = pd.concat([o["customers"] for o in outages])
    return float(np.nansum(frame["node_id"].map(load_mw).to_numpy(float) * frame["interruption_h"].to_numpy(float)))


# ----------------------------------------------------------------------------------- pure helpers


def test_flood_chunks_only_for_large_grids():
    from citytwin.scenarios.flood_run import CHUNK_MIN_CELLS, flood_chunks

    assert flood_chunks((135, 151), 4) is None
    side = int(np.ceil(np.sqrt(CHUNK_MIN_CELLS)))
    chunks = flood_chunks((side, 2 * side), 2)
    assert chunks == {"y": side, "x": side}  # two workers, a 1:2 grid: two square chunks side by side
    chunks = flood_chunks((3000, 3000), 4)
    assert chunks == {"y": 1500, "x": 1500}


def write_epw(path: Path, years: list[int]) -> Path:
    """A minimal hourly EPW (8 header lines, then year, month, day, hour, minute, flags, dry bulb)."""
    header = ["LOCATION,Test,,NLD,test,000000,52.0,4.4,1.0,0.0", "DESIGN CONDITIONS,0",
              "TYPICAL/EXTREME PERIODS,0", "GROUND TEMPERATURES,0", "HOLIDAYS/DAYLIGHT SAVINGS,No,0,0,0",
              "COMMENTS 1,", "COMMENTS 2,", "DATA PERIODS,1,1,Data,Friday, 1/ 1,12/31"]
    hours = pd.date_range("2021-01-01", periods=8760, freq="h")
    lines = [f"{years[i % len(years)] if len(years) > 1 else years[0]},{t.month},{t.day},{t.hour + 1},60,x,"
             f"{8 + 10 * np.sin(2 * np.pi * (t.dayofyear - 100) / 365):.1f}" for i, t in enumerate(hours)]
    path.write_text("\n".join(header + lines) + "\n")
    return path


def test_energy_year_is_honoured_or_rejected_for_epw(tmp_path):
    from citytwin.scenarios.energy_run import EnergyRequest, _weather

    measured = write_epw(tmp_path / "measured.epw", [2019])
    assert pd.Timestamp(_weather(EnergyRequest(weather=str(measured)))["time"].values[0]).year == 2019
    assert pd.Timestamp(_weather(EnergyRequest(year=2019, weather=str(measured)))["time"].values[0]).year == 2019
    with pytest.raises(InputError, match="measured weather of 2019.*2023"):
        _weather(EnergyRequest(year=2023, weather=str(measured)))
    typical = write_epw(tmp_path / "tmy.epw", [2005, 2011, 2016])
    placed = _weather(EnergyRequest(year=2023, weather=str(typical)))
    assert pd.Timestamp(placed["time"].values[0]) == pd.Timestamp("2023-01-01")
    assert placed.sizes["time"] == 8760
    with pytest.raises(InputError, match="leap year 2024"):
        _weather(EnergyRequest(year=2024, weather=str(typical)))


# ----------------------------------------------------------------------------------- the twin


def test_storm_outages_per_feeder(twin):
    """Customers = those below the tripped devices on the feeder; each plan only that feeder's steps."""
    from citytwin.scenarios.storm import StormRequest, run_storm

    engine, _, data_dir = twin
    summary = run_storm(engine, data_dir, StormRequest(**STORM))
    assert summary["load_source"]["source"] == "grid"  # no energy run yet
    grid, topo, label, customers = grid_state(engine)
    outages = outages_of(engine, summary["run_id"])
    assert len(summary["failed_assets"]) >= 2 and len(outages) >= 2, summary["failed_assets"]
    assert sum(o["customers_affected"] for o in outages) == summary["customers_out"] > 0
    switch_edge = {sid: i for i, sid in enumerate(topo.edge_ids)}
    node_no = {nid: i for i, nid in enumerate(topo.node_ids)}
    sp = topo.node_kind == "service_point"
    event_steps = len(summary["restoration_plan"])
    for o in outages:
        plan = o["switching_plan"]
        assert plan, f"outage {o['id']} has no switching plan"
        assert o["etr"] > o["start_time"]
        longest = o["customers"]["interruption_h"].max()
        assert abs((o["etr"] - o["start_time"]).total_seconds() - longest * 3600) <= 1.0
        # De-energised: everything below the devices that tripped for this feeder (or lost sources).
        down = np.zeros(topo.n_nodes, bool)
        for step in (s for s in plan if s["action"] == "trip"):
            if step["device_kind"] == "source":
                top = node_no[step["switch_id"]]
            else:
                top = int(topo.child_of_edge(np.array([switch_edge[step["switch_id"]]]))[0])
            down[topo.subtree(top)] = True
        mine = down & sp & (label == o["feeder"])
        assert o["customers_affected"] == int(customers[mine].sum()) > 0
        assert set(o["customers"]["node_id"]) == set(topo.node_ids[mine])
        # Every step has an end on this feeder (a fault clearing device above it has its lower end here).
        ends = grid.switches.set_index("switch_id")[["from_node", "to_node"]]
        for step in plan:
            nodes = [step["switch_id"]] if step["device_kind"] == "source" else list(ends.loc[step["switch_id"]])
            assert any(label[node_no[n]] == o["feeder"] for n in nodes), (o["feeder"], step)
        assert set(o["opened_switches"]) <= {s["switch_id"] for s in plan if s["action"] in ("open", "trip")}
        assert len(plan) < event_steps  # several feeders out: none carries the whole event's plan
        assert o["faulted_assets"] and all(label[node_no[a]] == o["feeder"] for a in o["faulted_assets"])
    # Energy not supplied at the grid table's peak loads.
    nodes = grid.nodes.set_index("node_id")
    peak = nodes["peak_load_mw"].fillna(nodes["load_mw"]).astype(float)
    assert summary["energy_not_supplied_mwh"] == pytest.approx(ens_expected(outages, peak), rel=1e-9)


def test_flood_cli_with_relative_out(twin, tmp_path):
    engine, url, data_dir = twin
    summary = cli(url, data_dir, tmp_path, "simulate", "flood", "--rain-mm-h", "80", "--hours", "0.5",
                  "--out", "rel.nc")
    out = tmp_path / "rel.nc"
    assert summary["flood_result_path"] == str(out.resolve())
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT result_path, status FROM simulation_runs WHERE id = :r"),
                              {"r": summary["run_id"]}).one()
        assets = pd.read_sql_query(text("""
            SELECT r.asset_id, r.asset_kind, r.max_depth_m, ST_X(n.geom) AS x, ST_Y(n.geom) AS y
            FROM asset_results r JOIN grid_nodes n ON n.node_id = r.asset_id WHERE r.run_id = :r
        """), conn, params={"r": summary["run_id"]})
        located = conn.execute(text("SELECT count(*) FROM grid_nodes WHERE geom IS NOT NULL")).scalar_one()
    assert tuple(stored) == (str(out.resolve()), "succeeded")
    assert len(assets) == located > 0
    with xr.open_dataset(out, engine="h5netcdf") as flood:
        gridded = flood["max_depth"].load()
    assert float(gridded.max()) == pytest.approx(summary["max_depth_m"], rel=1e-6)
    # An asset on an open cell stores that cell's gridded maximum; only assets on blocked cells (in a
    # building, where the sampler looks at the cells around) may differ or have no depth at all.
    at_cells = gridded.sel(x=xr.DataArray(assets["x"]), y=xr.DataArray(assets["y"]), method="nearest").to_numpy()
    open_cell = np.isfinite(at_cells)
    assert open_cell.sum() > len(assets) / 2
    np.testing.assert_allclose(assets["max_depth_m"].to_numpy()[open_cell], at_cells[open_cell], atol=1e-6)
    assert assets["max_depth_m"].notna().sum() >= open_cell.sum() and (assets["max_depth_m"] > 0).any()


def test_energy_cli_stores_building_results(twin, tmp_path):
    engine, url, data_dir = twin
    summary = cli(url, data_dir, tmp_path, "simulate", "energy")
    with engine.connect() as conn:
        results = pd.read_sql_query(text("SELECT building_id, annual_kwh, peak_kw FROM building_results "
                                         "WHERE run_id = :r"), conn, params={"r": summary["run_id"]})
        n_buildings = conn.execute(text("SELECT count(*) FROM buildings")).scalar_one()
    assert summary["year"] == 2025
    assert len(results) == summary["buildings"] == n_buildings
    assert (results["annual_kwh"] > 0).all() and (results["peak_kw"] > 0).all()
    # Peak power times the hours of a year bounds the annual energy of every building.
    assert (results["annual_kwh"] <= results["peak_kw"] * 8760 * (1 + 1e-9)).all()
    assert results["annual_kwh"].sum() / 1000 == pytest.approx(summary["electricity_mwh"], rel=1e-9)
    per_building = pd.read_parquet(summary["buildings_path"])
    assert per_building["heating_kwh"].sum() / 1000 == pytest.approx(summary["heating_mwh"], rel=1e-9)
    assert per_building["cooling_kwh"].sum() / 1000 == pytest.approx(summary["cooling_mwh"], rel=1e-9)
    assert per_building["heating_kwh"].sum() > 0


def test_storm_uses_the_energy_runs_loads(twin):
    from citytwin.scenarios.energy_run import latest_energy_run
    from citytwin.scenarios.storm import StormRequest, run_storm

    engine, _, data_dir = twin
    energy_run = latest_energy_run(engine)
    assert energy_run is not None
    summary = run_storm(engine, data_dir, StormRequest(**STORM))
    source = summary["load_source"]
    assert source["source"] == "energy" and source["energy_run"] == energy_run
    with engine.connect() as conn:
        per_point = pd.read_sql_query(text("""
            SELECT sc.node_id, SUM(br.peak_kw) / 1000.0 AS load_mw FROM service_connections sc
            JOIN building_results br ON br.building_id = sc.building_id AND br.run_id = :e GROUP BY sc.node_id
        """), conn, params={"e": energy_run}).set_index("node_id")["load_mw"]
    outages = outages_of(engine, summary["run_id"])
    expected = ens_expected(outages, per_point)
    assert expected > 0
    assert summary["energy_not_supplied_mwh"] == pytest.approx(expected, rel=1e-9)
    grid, *_ = grid_state(engine)
    nodes = grid.nodes.set_index("node_id")
    grid_ens = ens_expected(outages, nodes["peak_load_mw"].fillna(nodes["load_mw"]).astype(float))
    assert abs(grid_ens - expected) > 1e-3 * expected  # the two sources differ, so the check above tells


def test_twin_run_scenario_on_its_client_with_a_chunked_dem(twin, monkeypatch):
    """Twin.run_scenario runs on twin.client; a DEM over the threshold is chunked and equals the plain run."""
    from citytwin.client import Twin
    from citytwin.scenarios import flood_run
    from citytwin.scenarios.flood_run import FloodRequest, simulate_flood_on_twin

    engine, _, data_dir = twin
    plain = simulate_flood_on_twin(engine, data_dir, FloodRequest(**STORM))
    assert plain["dask_chunks"] is None
    monkeypatch.setattr(flood_run, "CHUNK_MIN_CELLS", 0)  # the demo DEM is small: chunk it anyway
    monkeypatch.setattr(flood_run, "MIN_CHUNK", 40)
    twin_api = Twin(engine, data_dir)
    result = twin_api.run_scenario(**STORM)
    summary = result.summary
    assert summary["dask_chunks"] is not None and summary["mass_balance"]["chunks"] > 1
    assert twin_api.client.status == "running" and twin_api.client is twin_api.client
    assert summary["max_depth_m"] == pytest.approx(plain["max_depth_m"], abs=1e-5)
    with engine.connect() as conn:
        depths = pd.read_sql_query(text("""
            SELECT a.asset_id, a.max_depth_m AS chunked, b.max_depth_m AS plain FROM asset_results a
            JOIN asset_results b ON b.asset_id = a.asset_id AND b.run_id = :p WHERE a.run_id = :c
        """), conn, params={"p": plain["run_id"], "c": summary["run_id"]})
    assert len(depths) > 0
    np.testing.assert_allclose(depths["chunked"], depths["plain"], atol=1e-5)
    assert summary["failed_assets"] and len(result.outages) == len(summary["outages"])
