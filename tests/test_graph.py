"""The twin graph: relationships, what an asset serves, sensors on a feeder, DTDL v3 export."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from citytwin.api.app import create_app
from citytwin.client import Twin
from citytwin.config import Settings
from citytwin.db import make_engine
from citytwin.graph.dtdl import CONTEXT, INTERFACES, all_interfaces, dtmi, write_interfaces


@pytest.fixture(scope="module")
def twin(demo_twin):
    url, data_dir = demo_twin
    engine = make_engine(url)
    yield Twin(engine, data_dir)
    engine.dispose()


def test_relationships_cover_the_chain_from_substation_to_building(twin) -> None:
    edges = twin.relationships()
    kinds = set(zip(edges["source_kind"], edges["relationship"], edges["target_kind"]))
    assert {("substation", "feeds", "feeder"), ("feeder", "feeds", "transformer"),
            ("transformer", "serves", "service_point"), ("service_point", "supplies", "building"),
            ("sensor", "monitors", "asset")} <= kinds
    supplies = edges[edges["relationship"] == "supplies"]
    assert supplies["target"].nunique() == 400  # every building of the demo city is supplied


def test_every_building_a_substation_serves(twin) -> None:
    grid = twin.grid_tables()
    substations = grid.nodes.loc[grid.nodes["kind"] == "substation", "node_id"].tolist()
    served = [twin.buildings_served_by(s) for s in substations]
    # The substations partition the city: every building once, customers add up to the twin's.
    ids = [i for frame in served for i in frame["id"]]
    assert len(ids) == len(set(ids)) == 400
    with twin.engine.connect() as conn:
        customers = conn.execute(text("SELECT sum(customers) FROM service_connections")).scalar()
    assert sum(int(frame["customers"].sum()) for frame in served) == customers


def test_sensors_on_a_feeder_and_critical_customers_behind_a_switch(twin) -> None:
    grid = twin.grid_tables()
    feeders = grid.nodes["feeder"].dropna().unique()
    found = [twin.sensors_on(f) for f in feeders]
    assert sum(len(frame) for frame in found) > 0
    breaker = grid.switches[grid.switches["kind"] == "breaker"].iloc[0]
    behind = twin.buildings_served_by(breaker["switch_id"])
    critical = twin.critical_customers_behind(breaker["switch_id"])
    assert set(critical["id"]) <= set(behind["id"])
    assert set(critical["use"]) <= {"hospital", "school"}
    assert len(critical) == int(behind["use"].isin(["hospital", "school"]).sum())


def test_graph_over_rest_and_unknown_assets(demo_twin) -> None:
    url, data_dir = demo_twin
    engine = make_engine(url)
    app = create_app(Settings(database_url=url, data_dir=data_dir, tiles_dir=data_dir), engine=engine)
    with TestClient(app) as client:
        rels = client.get("/api/graph/relationships", params={"relationship": "monitors"}).json()
        assert rels["count"] > 0 and all(r["relationship"] == "monitors" for r in rels["relationships"])
        assert client.get("/api/graph/assets/NOPE/buildings").status_code == 404
        assert client.get("/api/graph/feeders/NOPE/sensors").status_code == 404
        models = client.get("/api/graph/dtdl").json()
        assert {m["displayName"] for m in models} == set(INTERFACES)
    engine.dispose()


def test_dtdl_v3_interfaces_are_well_formed(tmp_path) -> None:
    models = all_interfaces()
    ids = {m["@id"] for m in models}
    for model in models:
        assert model["@context"] == CONTEXT and model["@type"] == "Interface"
        assert model["@id"].startswith("dtmi:") and model["@id"].endswith(";1")
        names = [c["name"] for c in model["contents"]]
        assert len(names) == len(set(names))
        for content in model["contents"]:
            assert content["@type"] in ("Property", "Relationship")
            if "target" in content:
                assert content["target"] in ids  # relationships point at interfaces that exist
    paths = write_interfaces(tmp_path)
    assert len(paths) == len(INTERFACES)
    assert json.loads(paths[0].read_text())["@id"] == dtmi(paths[0].stem)
