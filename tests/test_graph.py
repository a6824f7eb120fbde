"""The twin graph: relationships, what an asset serves, sensors on a feeder, DTDL v3 export.

Every query is checked against an independent computation: a recursive SQL walk over the grid
tables (sections and normally-closed switches, from the sources) for "what is downstream of an
asset", plain SQL joins for the direct relationships, and the generated city's own files for districts.
"""

from __future__ import annotations

import json
import re

import pyogrio
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from citytwin.api.app import create_app
from citytwin.client import Twin
from citytwin.config import Settings
from citytwin.db import make_engine
from citytwin.graph.dtdl import CONTEXT, INTERFACES, all_interfaces, write_interfaces

CRITICAL = {"hospital", "school"}

# Buildings still connected to a source, in the normal switch state, once ``cut`` (a node, section or
# switch id; '' for none) is taken out. Undirected edges: sections and normally-closed switches.
_LIVE_BUILDINGS = text("""
WITH RECURSIVE edges AS (
    SELECT section_id AS id, from_node AS a, to_node AS b FROM grid_sections
    UNION ALL
    SELECT switch_id, from_node, to_node FROM grid_switches WHERE normal_state = 'closed'
), links AS (
    SELECT a, b FROM edges WHERE id <> :cut AND a <> :cut AND b <> :cut
    UNION ALL
    SELECT b, a FROM edges WHERE id <> :cut AND a <> :cut AND b <> :cut
), live(node) AS (
    SELECT node_id FROM grid_nodes WHERE kind = 'source' AND node_id <> :cut
    UNION
    SELECT l.b FROM live JOIN links l ON l.a = live.node
)
SELECT sc.building_id FROM service_connections sc WHERE sc.node_id IN (SELECT node FROM live)
""")


def downstream_buildings(conn, asset_id: str) -> set[int]:
    """Building ids (database) that lose their only path to a source without ``asset_id``."""
    before = {r[0] for r in conn.execute(_LIVE_BUILDINGS, {"cut": ""})}
    after = {r[0] for r in conn.execute(_LIVE_BUILDINGS, {"cut": asset_id})}
    return before - after


def building_uses(conn) -> dict[int, str]:
    return dict(conn.execute(text("SELECT id, use FROM buildings")).all())


@pytest.fixture(scope="module")
def twin(demo_twin):
    url, data_dir = demo_twin
    engine = make_engine(url)
    yield Twin(engine, data_dir)
    engine.dispose()


@pytest.fixture(scope="module")
def edges(twin):
    return twin.relationships()


@pytest.fixture(scope="module")
def breaker_with_critical(twin) -> tuple[str, set[int], set[int]]:
    """The feeder breaker with the fewest buildings behind it among those with a hospital or school
    behind it: (switch id, downstream building ids, critical building ids)."""
    with twin.engine.connect() as conn:
        uses = building_uses(conn)
        breakers = conn.execute(text(
            "SELECT s.switch_id FROM grid_switches s JOIN grid_nodes n ON n.node_id = s.to_node "
            "WHERE s.kind = 'breaker' AND s.normal_state = 'closed' AND n.feeder IS NOT NULL "
            "ORDER BY s.switch_id"
        )).scalars().all()
        assert len(breakers) >= 2
        found = []
        for breaker in breakers:
            behind = downstream_buildings(conn, breaker)
            critical = {b for b in behind if uses[b] in CRITICAL}
            if critical:
                found.append((len(behind), breaker, behind, critical))
    assert found, "no feeder of the demo city has a hospital or school on it"
    _, breaker, behind, critical = min(found)
    assert 0 < len(behind) < len(uses)
    return breaker, behind, critical


def _pairs(frame, relationship: str) -> set[tuple[str, str]]:
    part = frame[frame["relationship"] == relationship]
    return set(zip(part["source"], part["target"]))


def test_relationships_cover_the_chain_from_substation_to_building(edges) -> None:
    kinds = set(zip(edges["source_kind"], edges["relationship"], edges["target_kind"]))
    assert kinds == {("substation", "feeds", "feeder"), ("feeder", "feeds", "transformer"),
                     ("transformer", "serves", "service_point"), ("service_point", "supplies", "building"),
                     ("sensor", "monitors", "asset"), ("building", "liesIn", "district")}
    supplies = edges[edges["relationship"] == "supplies"]
    assert supplies["target"].nunique() == 400  # every building of the demo city is supplied


def test_direct_relationships_match_the_tables(twin, edges) -> None:
    with twin.engine.connect() as conn:
        supplies = set(conn.execute(text(
            "SELECT sc.node_id, b.source_id FROM service_connections sc "
            "JOIN buildings b ON b.id = sc.building_id"
        )).all())
        # A substation feeds the feeders its breakers close onto; a feeder feeds the transformers on it.
        feeds = set(conn.execute(text(
            "SELECT s.from_node, n.feeder FROM grid_switches s JOIN grid_nodes n ON n.node_id = s.to_node "
            "JOIN grid_nodes sub ON sub.node_id = s.from_node AND sub.kind = 'substation' "
            "WHERE n.feeder IS NOT NULL")).all())
        substation_feeds = len(feeds)
        feeds |= set(conn.execute(text(
            "SELECT feeder, node_id FROM grid_nodes WHERE kind = 'transformer'")).all())
        monitors = set(conn.execute(text(
            "SELECT name, asset_id FROM things WHERE asset_id IS NOT NULL")).all())
        assets = set(conn.execute(text(
            "SELECT node_id FROM grid_nodes UNION SELECT source_id FROM buildings")).scalars())
    assert len(supplies) == 400 and _pairs(edges, "supplies") == supplies
    assert substation_feeds >= 2 and len(feeds) > substation_feeds and _pairs(edges, "feeds") == feeds
    assert monitors and _pairs(edges, "monitors") == monitors
    assert {target for _, target in monitors} <= assets       # sensors monitor assets that exist


def test_each_transformer_serves_exactly_the_service_points_below_it(twin, edges) -> None:
    serves = edges[edges["relationship"] == "serves"]
    assert serves["target"].is_unique                         # one transformer per service point
    with twin.engine.connect() as conn:
        point_of = dict(conn.execute(text("SELECT building_id, node_id FROM service_connections")).all())
        transformers = conn.execute(text(
            "SELECT node_id FROM grid_nodes WHERE kind = 'transformer'")).scalars().all()
        for transformer in transformers:
            below = {point_of[b] for b in downstream_buildings(conn, transformer)}
            assert set(serves.loc[serves["source"] == transformer, "target"]) == below, transformer
    assert set(serves["source"]) <= set(transformers)


def test_every_building_lies_in_its_district_from_the_city_files(twin, edges, demo_twin) -> None:
    _, data_dir = demo_twin
    city = pyogrio.read_dataframe(data_dir / "city" / "buildings.gpkg", columns=["source_id", "district"],
                                  read_geometry=False)
    expected = set(zip(city["source_id"], city["district"]))
    lies_in = edges[edges["relationship"] == "liesIn"]
    assert len(lies_in) == 400 and set(zip(lies_in["source"], lies_in["target"])) == expected
    assert len(set(lies_in["target"])) >= 2
    assert set(lies_in["target"]) <= {"suburb", "inner", "downtown", "industrial"}


def test_every_building_a_substation_serves(twin) -> None:
    grid = twin.grid_tables()
    substations = grid.nodes.loc[grid.nodes["kind"] == "substation", "node_id"].tolist()
    assert substations
    served = {s: twin.buildings_served_by(s) for s in substations}
    with twin.engine.connect() as conn:
        for substation, frame in served.items():
            assert len(frame) and set(frame["id"]) == downstream_buildings(conn, substation), substation
        customers = conn.execute(text("SELECT sum(customers) FROM service_connections")).scalar()
    # The substations partition the city: every building once, customers add up to the twin's.
    ids = [i for frame in served.values() for i in frame["id"]]
    assert len(ids) == len(set(ids)) == 400
    assert sum(int(frame["customers"].sum()) for frame in served.values()) == customers


def test_buildings_served_by_each_kind_of_asset_are_those_downstream(twin, breaker_with_critical) -> None:
    breaker, behind, _ = breaker_with_critical
    grid = twin.grid_tables()
    with twin.engine.connect() as conn:
        feeder = conn.execute(text(
            "SELECT feeder FROM grid_nodes WHERE node_id = "
            "(SELECT to_node FROM grid_switches WHERE switch_id = :s)"), {"s": breaker}).scalar()
        by_feeder = set(conn.execute(text(
            "SELECT sc.building_id FROM service_connections sc JOIN grid_nodes n ON n.node_id = sc.node_id "
            "WHERE n.feeder = :f"), {"f": feeder}).scalars())
        # A section in the middle of the feeder: only what lies below it, not the whole feeder.
        sections = grid.sections[grid.sections["feeder"] == feeder]["section_id"].tolist()
        partial = [(s, d) for s in sections if 0 < len(d := downstream_buildings(conn, s)) < len(behind)]
        nodes = grid.nodes
        transformer = nodes[(nodes["kind"] == "transformer") & (nodes["feeder"] == feeder)]["node_id"].iloc[0]
        below_transformer = downstream_buildings(conn, transformer)
    assert behind and set(twin.buildings_served_by(breaker)["id"]) == behind
    assert set(twin.buildings_served_by(feeder)["id"]) == behind == by_feeder
    assert partial, "no section with part of the feeder below it"
    section, below = partial[len(partial) // 2]
    assert set(twin.buildings_served_by(section)["id"]) == below
    assert below_transformer and set(twin.buildings_served_by(transformer)["id"]) == below_transformer


def test_critical_customers_behind_a_breaker(twin, breaker_with_critical) -> None:
    breaker, behind, critical = breaker_with_critical
    found = twin.critical_customers_behind(breaker)
    assert len(found) == len(critical) > 0
    assert set(found["id"]) == critical
    assert set(found["use"]) <= CRITICAL
    with twin.engine.connect() as conn:
        customers = dict(conn.execute(text("SELECT building_id, customers FROM service_connections")).all())
    assert found.set_index("id")["customers"].to_dict() == {b: customers[b] for b in critical}


def test_sensors_on_a_feeder(twin) -> None:
    grid = twin.grid_tables()
    feeders = sorted(grid.nodes["feeder"].dropna().unique())
    found = {f: twin.sensors_on(f) for f in feeders}
    with twin.engine.connect() as conn:
        # A meter on a building's service point, or the load sensor of the feeder head.
        for feeder, frame in found.items():
            expected = set(conn.execute(text(
                "SELECT t.id FROM things t JOIN grid_nodes n ON n.node_id = t.asset_id WHERE n.feeder = :f"),
                {"f": feeder}).scalars())
            assert expected <= set(frame["id"]), feeder
    assert all(len(frame) for frame in found.values())


def test_graph_over_rest(demo_twin, breaker_with_critical) -> None:
    url, data_dir = demo_twin
    breaker, behind, critical = breaker_with_critical
    engine = make_engine(url)
    app = create_app(Settings(database_url=url, data_dir=data_dir, tiles_dir=data_dir), engine=engine)
    with engine.connect() as conn:
        customers = conn.execute(text(
            "SELECT sum(customers) FROM service_connections WHERE building_id = ANY(:b)"),
            {"b": sorted(behind)}).scalar()
        substation = conn.execute(text("SELECT node_id FROM grid_nodes WHERE kind = 'substation' "
                                       "ORDER BY node_id LIMIT 1")).scalar()
        under_substation = downstream_buildings(conn, substation)
    with TestClient(app) as client:
        rels = client.get("/api/graph/relationships", params={"relationship": "monitors"}).json()
        assert rels["count"] > 0 and all(r["relationship"] == "monitors" for r in rels["relationships"])
        lies_in = client.get("/api/graph/relationships", params={"relationship": "liesIn"}).json()
        assert lies_in["count"] == 400

        served = client.get(f"/api/graph/assets/{breaker}/buildings")
        assert served.status_code == 200, served.text
        body = served.json()
        assert body["asset_id"] == breaker and {b["id"] for b in body["buildings"]} == behind
        assert body["customers"] == customers
        body = client.get(f"/api/graph/assets/{substation}/buildings").json()
        assert {b["id"] for b in body["buildings"]} == under_substation

        crit = client.get(f"/api/graph/assets/{breaker}/critical-customers")
        assert crit.status_code == 200, crit.text
        assert {b["id"] for b in crit.json()["buildings"]} == critical
        assert all(b["use"] in CRITICAL for b in crit.json()["buildings"])

        feeds = client.get("/api/graph/relationships", params={"relationship": "feeds"}).json()
        feeder = next(r["target"] for r in feeds["relationships"] if r["source_kind"] == "substation")
        sensors = client.get(f"/api/graph/feeders/{feeder}/sensors")
        assert sensors.status_code == 200 and sensors.json()["sensors"]

        for path in ("/api/graph/assets/NOPE/buildings", "/api/graph/assets/NOPE/critical-customers",
                     "/api/graph/feeders/NOPE/sensors"):
            response = client.get(path)
            assert response.status_code == 404 and "NOPE" in response.text, path
        models = client.get("/api/graph/dtdl").json()
        assert models == all_interfaces()
    engine.dispose()


# -- DTDL v3 ---------------------------------------------------------------------------------------

# DTDL v3 (https://azure.github.io/opendigitaltwins-dtdl/DTDL/v3/DTDL.v3.html): DTMI syntax, names,
# the primitive schemas and the content kinds an Interface may hold.
DTMI = re.compile(r"^dtmi:[A-Za-z](?:[A-Za-z0-9_]*[A-Za-z0-9])?(?::[A-Za-z](?:[A-Za-z0-9_]*[A-Za-z0-9])?)*"
                  r";[1-9][0-9]{0,8}(?:\.[1-9][0-9]{0,5})?$")
NAME = re.compile(r"^[A-Za-z](?:[A-Za-z0-9_]*[A-Za-z0-9])?$")
PRIMITIVES = {"boolean", "byte", "bytes", "date", "dateTime", "decimal", "double", "duration", "float",
              "integer", "long", "short", "string", "time", "unsignedByte", "unsignedInteger", "unsignedLong",
              "unsignedShort", "uuid"}
CONTENT_TYPES = {"Property", "Relationship", "Telemetry", "Command", "Component"}
# Twin-graph node kinds -> the interface that models them.
KIND_INTERFACE = {"substation": "Substation", "feeder": "Feeder", "transformer": "Transformer",
                  "service_point": "ServicePoint", "building": "Building", "district": "District",
                  "sensor": "Sensor"}


def dtdl_problems(models: list[dict]) -> list[str]:
    """Structural DTDL v3 checks of a set of interfaces; an empty list when they are valid."""
    problems = []
    ids = [m.get("@id") for m in models]
    if len(set(ids)) != len(ids):
        problems.append("duplicate @id")
    for model in models:
        where = model.get("@id", "?")
        if model.get("@context") != "dtmi:dtdl:context;3":
            problems.append(f"{where}: @context is not dtmi:dtdl:context;3")
        if model.get("@type") != "Interface":
            problems.append(f"{where}: @type is not Interface")
        if not isinstance(model.get("@id"), str) or not DTMI.match(model["@id"]) or len(model["@id"]) > 128:
            problems.append(f"{where}: @id is not a versioned DTMI of at most 128 characters")
        for key in ("displayName", "description"):
            if key in model and not (isinstance(model[key], str) and len(model[key]) <= 512):
                problems.append(f"{where}: {key} must be a string of at most 512 characters")
        names = []
        for content in model.get("contents", []):
            kind, name = content.get("@type"), content.get("name", "")
            names.append(name)
            if kind not in CONTENT_TYPES:
                problems.append(f"{where}: content {name!r} has @type {kind!r}")
            if not NAME.match(name) or len(name) > 512:
                problems.append(f"{where}: bad content name {name!r}")
            if kind == "Property" and content.get("schema") not in PRIMITIVES:
                problems.append(f"{where}: property {name!r} has schema {content.get('schema')!r}")
            if kind == "Relationship" and "target" in content and content["target"] not in ids:
                problems.append(f"{where}: relationship {name!r} targets {content['target']!r}, not exported")
        if len(names) != len(set(names)):
            problems.append(f"{where}: duplicate content names")
    return problems


def test_the_structural_check_catches_bad_models() -> None:
    good = all_interfaces()
    assert dtdl_problems(good) == []
    bad = json.loads(json.dumps(good))
    bad[0]["@context"] = "dtmi:dtdl:context;2"
    bad[1]["@id"] = "dtmi:org:citytwin:Building"                   # no version
    bad[2]["contents"].append({"@type": "Relationship", "name": "feeds2", "target": "dtmi:org:nope;1"})
    bad[3]["contents"].append({"@type": "Property", "name": "x-y", "schema": "text"})
    problems = "\n".join(dtdl_problems(bad))
    for expected in ("@context", "versioned DTMI", "not exported", "bad content name", "schema 'text'"):
        assert expected in problems


def test_dtdl_export_is_valid_and_models_the_twin_graph(edges, tmp_path) -> None:
    paths = write_interfaces(tmp_path)
    models = [json.loads(p.read_text()) for p in paths]
    assert len(models) == len(INTERFACES) and models == all_interfaces()
    assert dtdl_problems(models) == []
    assert all(m["@context"] == CONTEXT for m in models)
    for path, model in zip(paths, models):
        assert path.stem == model["displayName"] and model["@id"].endswith(f":{path.stem};1")
    # Every kind of edge the twin graph holds is a relationship of its source's interface, pointing at
    # the target's interface (or open, for sensors that monitor any asset).
    by_name = {m["displayName"]: m for m in models}
    kinds = set(zip(edges["source_kind"], edges["relationship"], edges["target_kind"]))
    for source_kind, rel, target_kind in kinds:
        declared = {c["name"]: c for c in by_name[KIND_INTERFACE[source_kind]]["contents"]
                    if c["@type"] == "Relationship"}
        assert rel in declared, (source_kind, rel)
        if target_kind in KIND_INTERFACE:
            assert declared[rel].get("target") == by_name[KIND_INTERFACE[target_kind]]["@id"], \
                (source_kind, rel, target_kind)
        else:
            assert "target" not in declared[rel], (source_kind, rel, target_kind)
