"""Tiles from the twin's PostGIS database: buildings imported by the DB layer, scenario results joined."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from sqlalchemy import text

from _tiles_support import DENHAAG, buildings_in_tileset, read_city, tileset_problems
from citytwin.errors import InputError, NotFoundError
from citytwin.tiler import build_from_twin, build_tileset, build_tiles


@pytest.fixture
def denhaag_twin(engine):
    from citytwin.db.buildings import load_buildings
    from citytwin.io.cityjson import read_cityjson

    read = read_cityjson(DENHAAG, crs="EPSG:7415")
    load_buildings(engine, [read], source="denhaag", path=str(DENHAAG))
    return engine


def _add_run(engine, kind: str, status: str, values: dict[str, list], ids: list[int]) -> int:
    with engine.begin() as conn:
        run = conn.execute(text("INSERT INTO simulation_runs (kind, status) VALUES (:k, :s) RETURNING id"),
                           {"k": kind, "s": status}).scalar()
        columns = ", ".join(values)
        params = ", ".join(f":{c}" for c in values)
        conn.execute(text(f"INSERT INTO building_results (run_id, building_id, {columns}) "
                          f"VALUES (:run, :building, {params})"),
                     [{"run": run, "building": b, **{c: v[k] for c, v in values.items()}}
                      for k, b in enumerate(ids)])
    return run


def test_twin_tiles_with_results(denhaag_twin, tmp_path):
    engine = denhaag_twin
    with engine.connect() as conn:
        ids = conn.execute(text("SELECT id FROM buildings ORDER BY id")).scalars().all()
    flooded = ids[:50]
    _add_run(engine, "flood", "succeeded", {"max_depth_m": list(np.linspace(0.1, 1.5, 50))}, flooded)
    newer = _add_run(engine, "flood", "succeeded", {"max_depth_m": [2.5] * 10}, flooded[:10])
    _add_run(engine, "flood", "failed", {"max_depth_m": [9.9] * 50}, flooded)  # failed runs are left out
    _add_run(engine, "outage", "succeeded", {"outage_state": ["interrupted"] * 5}, ids[-5:])

    result = build_tiles(engine, tmp_path / "tiles", "denhaag", max_features_per_tile=200)
    assert result.buildings == len(ids) == 844
    assert result.path == tmp_path / "tiles" / "denhaag" / "tileset.json"
    buildings = buildings_in_tileset(tmp_path / "tiles" / "denhaag")
    assert sorted(buildings) == sorted(ids)
    props = {k: v["properties"] for k, v in buildings.items()}
    assert props[flooded[0]]["max_depth_m"] == pytest.approx(2.5)  # the newest run wins
    assert props[flooded[20]]["max_depth_m"] == pytest.approx(np.linspace(0.1, 1.5, 50)[20], rel=1e-6)
    assert props[ids[100]]["max_depth_m"] is None and props[ids[100]]["outage_state"] is None
    assert props[ids[-1]]["outage_state"] == "interrupted"
    assert "annual_kwh" not in props[ids[0]]  # no run produced it
    doc = json.loads(result.path.read_text())
    assert newer in doc["extras"]["citytwin"]["runs"]
    # Every glb (LoD2 meshes, result columns with missing values) and tileset.json pass the validators.
    assert tileset_problems(tmp_path / "tiles" / "denhaag", {"max_depth_m", "outage_state"}) == []

    # Same geometry as the GeoDataFrame path for the same source building.
    frame, crs, vertical = read_city(DENHAAG, "EPSG:7415")
    build_tileset(frame, tmp_path / "gdf", crs=crs, vertical_crs=vertical, name="gdf",
                  max_features_per_tile=200)
    from_frame = {v["properties"]["source_id"]: v["ecef"]
                  for v in buildings_in_tileset(tmp_path / "gdf").values()}
    for building_id in ids[::50]:
        mine = buildings[building_id]
        other = from_frame[mine["properties"]["source_id"]]
        assert mine["ecef"].shape == other.shape
        assert np.abs(np.sort(mine["ecef"], axis=0) - np.sort(other, axis=0)).max() < 0.01


def test_twin_tiles_on_dask_with_chosen_runs(denhaag_twin, tmp_path):
    from distributed import Client, LocalCluster

    engine = denhaag_twin
    with engine.connect() as conn:
        ids = conn.execute(text("SELECT id FROM buildings ORDER BY id")).scalars().all()
    energy = _add_run(engine, "energy", "succeeded", {"annual_kwh": [1000.0 + k for k in range(len(ids))],
                                                      "peak_kw": [3.5] * len(ids)}, ids)
    _add_run(engine, "flood", "succeeded", {"max_depth_m": [1.0] * 3}, ids[:3])
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        result = build_from_twin(engine, tmp_path / "t", "energy", client, run_ids=[energy],
                                 max_features_per_tile=100)
    assert result.tiles >= 9
    props = {k: v["properties"] for k, v in buildings_in_tileset(tmp_path / "t").items()}
    assert props[ids[7]]["annual_kwh"] == pytest.approx(1007.0)
    assert props[ids[7]]["peak_kw"] == pytest.approx(3.5)
    assert "max_depth_m" not in props[ids[0]]  # that run was not chosen
    assert tileset_problems(tmp_path / "t", {"annual_kwh", "peak_kw"}) == []


def test_twin_errors(engine, denhaag_twin, tmp_path):
    with pytest.raises(InputError, match="unknown simulation run"):
        build_from_twin(denhaag_twin, tmp_path / "x", "x", run_ids=[424242])
    for bad in ("../up", "a/b", "", ".hidden", "x" * 80):
        with pytest.raises(InputError, match="invalid tileset name"):
            build_tiles(denhaag_twin, tmp_path, bad)
    assert list(tmp_path.iterdir()) == []


def test_empty_twin(engine, tmp_path):
    with pytest.raises(NotFoundError):  # no twin yet
        build_from_twin(engine, tmp_path / "x", "x")


def _tiles_cli(database_url: str, tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYTWIN_")}
    env.update(CITYTWIN_DATABASE_URL=database_url, CITYTWIN_TILES_DIR=str(tmp_path / "tiles"),
               CITYTWIN_DATA_DIR=str(tmp_path / "data"))
    return subprocess.run([sys.executable, "-m", "citytwin", "tiles", "build", *args], capture_output=True,
                          text=True, env=env, timeout=300, cwd=tmp_path)


def test_cli_tiles_build(database_url, denhaag_twin, tmp_path):
    """``citytwin tiles build [--name NAME]`` against the twin's database, results included, validated."""
    engine = denhaag_twin
    with engine.connect() as conn:
        ids = conn.execute(text("SELECT id FROM buildings ORDER BY id")).scalars().all()
    _add_run(engine, "flood", "succeeded", {"max_depth_m": [0.1 * k for k in range(40)]}, ids[:40])
    _add_run(engine, "energy", "succeeded", {"annual_kwh": [5000.0] * 30, "peak_kw": [4.0] * 30}, ids[-30:])
    _add_run(engine, "outage", "succeeded", {"outage_state": ["interrupted"] * 7}, ids[100:107])

    named = _tiles_cli(database_url, tmp_path, "--name", "den-haag", "--max-per-tile", "150", "--json")
    assert named.returncode == 0, named.stderr
    summary = json.loads(named.stdout)
    out = tmp_path / "tiles" / "den-haag"
    assert summary["name"] == "den-haag" and summary["path"] == str(out / "tileset.json")
    assert summary["buildings"] == len(ids) == 844 and summary["tiles"] >= 844 / 150
    results = {"max_depth_m", "annual_kwh", "peak_kw", "outage_state"}
    assert tileset_problems(out, results) == []
    props = {k: v["properties"] for k, v in buildings_in_tileset(out).items()}
    assert sorted(props) == sorted(ids)
    assert props[ids[10]]["max_depth_m"] == pytest.approx(1.0)
    assert props[ids[-1]]["annual_kwh"] == pytest.approx(5000.0) and props[ids[-1]]["peak_kw"] == 4.0
    assert props[ids[103]]["outage_state"] == "interrupted" and props[ids[200]]["outage_state"] is None

    default = _tiles_cli(database_url, tmp_path, "--json")  # --name defaults to "buildings"
    assert default.returncode == 0, default.stderr
    assert json.loads(default.stdout)["path"] == str(tmp_path / "tiles" / "buildings" / "tileset.json")
    assert tileset_problems(tmp_path / "tiles" / "buildings", results) == []
    assert sorted(p.name for p in (tmp_path / "tiles").iterdir()) == ["buildings", "den-haag"]

    bad = _tiles_cli(database_url, tmp_path, "--name", "../escape")
    assert bad.returncode == 2 and "invalid tileset name" in bad.stderr and "Traceback" not in bad.stderr
    assert sorted(p.name for p in (tmp_path / "tiles").iterdir()) == ["buildings", "den-haag"]
