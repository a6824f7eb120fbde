"""The SensorThings API on the real database: resource paths, keyset paging with @iot.nextLink, $filter,
$orderby, $select, $expand, $count, errors naming the bad option, and the frost-sta-client reading it."""

from __future__ import annotations

import json
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
from fastapi.testclient import TestClient

from _telemetry_support import ApiServer, iso, make_network, recent, telemetry_app
from citytwin.api.auth import create_key
from citytwin.db.engine import make_engine
from citytwin.telemetry.ingest import Ingestor
from citytwin.telemetry.pg import conninfo
from citytwin.telemetry.validate import RawMessage

N_TEMP = 250


@pytest.fixture(scope="module")
def shared_db(module_database_url):
    """One database for this module's tests: a network with 250 temperature readings (one a minute) and a
    few water levels."""
    url = module_database_url
    engine = make_engine(url)
    ids = make_network(engine, n_meters=20)
    t0 = recent(400)
    temp = ids["WX01:air_temperature"]
    rows = [[temp, iso(t0 + timedelta(minutes=i)), round(10 + (i * 37 % 100) / 10, 1)] for i in range(N_TEMP)]
    rows += [[ids["RG01:water_level"], iso(t0 + timedelta(minutes=i)), 2.0 + i / 100] for i in range(5)]
    with psycopg.connect(conninfo(url), autocommit=True) as pg:
        Ingestor().ingest(pg, [RawMessage("citytwin/ingest/batch", json.dumps(rows).encode())])
    yield engine, (ids, t0, rows[:N_TEMP])
    engine.dispose()


@pytest.fixture
def loaded(shared_db):
    return shared_db[1]


@pytest.fixture
def engine(shared_db):
    return shared_db[0]


@pytest.fixture(scope="module")
def client(shared_db):
    with TestClient(telemetry_app(shared_db[0])) as c:
        yield c


def follow(client, url: str) -> tuple[list[dict], list[str]]:
    """All entities behind ``url``, following @iot.nextLink; also the links followed."""
    items, links = [], []
    while url:
        page = client.get(url)
        assert page.status_code == 200, page.text
        body = page.json()
        items += body["value"]
        url = body.get("@iot.nextLink")
        if url:
            links.append(url)
    return items, links


def test_service_root_and_entity_sets(client, loaded) -> None:
    root = client.get("/sta/v1.1").json()
    names = [v["name"] for v in root["value"]]
    assert {"Things", "Locations", "Datastreams", "Sensors", "ObservedProperties", "Observations",
            "TaskingCapabilities", "Tasks"} <= set(names)
    things, links = follow(client, "/sta/v1.1/Things?$top=7")
    assert len(things) == 24 and len(links) == 3
    assert [t["@iot.id"] for t in things] == sorted(t["@iot.id"] for t in things)
    first = things[0]
    assert first["@iot.selfLink"].endswith(f"/sta/v1.1/Things({first['@iot.id']})")
    assert first["Datastreams@iot.navigationLink"].endswith(f"Things({first['@iot.id']})/Datastreams")
    location = client.get(f"/sta/v1.1/Things({first['@iot.id']})/Locations").json()["value"][0]
    lon, lat = location["location"]["coordinates"]
    assert location["location"]["type"] == "Point"
    assert lon == pytest.approx(8.30, abs=1e-6) and lat == pytest.approx(49.01, abs=1e-6)
    sensors = client.get("/sta/v1.1/Sensors?$count=true").json()
    assert sensors["@iot.count"] == len(sensors["value"]) == 4     # one per kind
    assert client.get(f"/sta/v1.1/Things({first['@iot.id']})/name").json() == {"name": first["name"]}


def test_observations_page_by_keyset_and_filter(client, loaded) -> None:
    ids, t0, rows = loaded
    temp = ids["WX01:air_temperature"]
    obs, links = follow(client, f"/sta/v1.1/Datastreams({temp})/Observations"
                                "?$top=60&$orderby=phenomenonTime desc")
    assert len(obs) == N_TEMP and len(links) == 4
    times = [o["phenomenonTime"] for o in obs]
    assert times == sorted(times, reverse=True) and times[0] == rows[-1][1]
    for link in links:      # keyset cursors, never an OFFSET
        query = parse_qs(urlsplit(link).query)
        assert "$skiptoken" in query and "$skip" not in query and query["$top"] == ["60"]
    lo, hi = rows[50][1], rows[120][1]
    flt = f"phenomenonTime ge {lo} and phenomenonTime lt '{hi}' and (result gt 15 or result eq 10.0)"
    got, _ = follow(client, f"/sta/v1.1/Observations?$filter={flt} and Datastream/id eq {temp}&$top=13")
    expected = [r for r in rows[50:120] if r[2] > 15 or r[2] == 10.0]
    assert [o["result"] for o in got] == [r[2] for r in expected]
    by_result = client.get(f"/sta/v1.1/Datastreams({temp})/Observations?$orderby=result desc,phenomenonTime"
                           f"&$top=5&$select=result").json()
    assert by_result["value"] == [{"result": v} for v in sorted((r[2] for r in rows), reverse=True)[:5]]
    negated = client.get(f"/sta/v1.1/Observations?$filter=not (result le 19.5) and Datastream/id eq {temp}"
                         "&$count=true&$top=1").json()
    assert negated["@iot.count"] == sum(1 for r in rows if r[2] > 19.5)
    one = obs[0]
    again = client.get(one["@iot.selfLink"]).json()
    assert again["result"] == one["result"] and again["phenomenonTime"] == one["phenomenonTime"]
    ds = client.get(one["@iot.selfLink"] + "/Datastream").json()
    assert ds["@iot.id"] == temp and ds["unitOfMeasurement"]["symbol"] == "°C"


def test_expand_and_select(client, loaded) -> None:
    ids, _, rows = loaded
    temp = ids["WX01:air_temperature"]
    body = client.get("/sta/v1.1/Datastreams?$filter=ObservedProperty/name eq 'air_temperature'"
                      "&$expand=Thing($select=name),ObservedProperty,"
                      "Observations($top=3;$orderby=phenomenonTime desc;$select=result,phenomenonTime)"
                      "&$select=id,name").json()
    assert len(body["value"]) == 1
    ds = body["value"][0]
    assert set(ds) == {"@iot.id", "name", "Thing", "ObservedProperty", "Observations",
                       "Observations@iot.nextLink"}
    assert ds["@iot.id"] == temp and ds["Thing"] == {"name": "WX01"}
    assert ds["ObservedProperty"]["name"] == "air_temperature"
    assert [o["result"] for o in ds["Observations"]] == [r[2] for r in rows[::-1][:3]]
    rest, _ = follow(client, ds["Observations@iot.nextLink"])
    assert [o["result"] for o in rest] == [r[2] for r in rows[::-1][3:]]
    things = client.get("/sta/v1.1/Things?$filter=properties/kind eq 'river_level'"
                        "&$expand=Datastreams").json()
    assert sorted(t["name"] for t in things["value"]) == ["RG01", "RG02"]
    assert all(len(t["Datastreams"]) == 1 for t in things["value"])


BAD_REQUESTS = [
    ("Observations?$top=abc", 400, "$top"),
    ("Observations?$top=20000", 400, "$top"),
    ("Observations?$skip=50000", 400, "$skip"),
    ("Observations?$filter=result gt", 400, "$filter"),
    ("Observations?$filter=temperature gt 3", 400, "temperature"),
    ("Observations?$filter=phenomenonTime gt 'soon'", 400, "$filter"),
    ("Observations?$filter=substringof('a', result)", 400, "substringof"),
    ("Observations?$orderby=colour", 400, "$orderby"),
    ("Things?$select=colour", 400, "$select"),
    ("Things?$expand=Wheels", 400, "$expand"),
    ("Things?$expand=Datastreams/Observations", 400, "one level"),
    ("Things?$bogus=1", 400, "$bogus"),
    ("Things?$skiptoken=garbage", 400, "$skiptoken"),
    ("Things(999999)", 404, "does not exist"),
    ("Gadgets", 404, "Gadgets"),
]


def test_bad_requests_name_the_problem(client, loaded) -> None:
    for query, status, needle in BAD_REQUESTS:
        response = client.get(f"/sta/v1.1/{query}")
        assert response.status_code == status, (query, response.text)
        assert needle in response.json()["detail"], (query, response.json())


def test_create_observation_over_sta_and_http_batch(client, engine, loaded) -> None:
    ids, t0, _ = loaded
    with engine.begin() as conn:
        key = create_key(conn, "sensor", ["ingest"])
    level = ids["RG02:water_level"]
    when = iso(t0 + timedelta(minutes=3))
    denied = client.post("/sta/v1.1/Observations", json={"Datastream": {"@iot.id": level},
                                                         "phenomenonTime": when, "result": 1.5})
    assert denied.status_code == 401
    created = client.post(f"/sta/v1.1/Datastreams({level})/Observations", headers={"X-API-Key": key},
                          json={"phenomenonTime": when, "result": 1.5})
    assert created.status_code == 201, created.text
    entity = client.get(created.headers["Location"]).json()
    assert entity["result"] == 1.5 and entity["phenomenonTime"] == when
    batch = client.post("/api/telemetry/observations", headers={"X-API-Key": key},
                        json={"observations": [[level, when, 1.5], [level, iso(t0), 1.25],
                                               [level, "later", 3]]})
    assert batch.json() | {"rejections": None} == {"received": 2, "stored": 1, "duplicates": 1, "rejected": 1,
                                                    "flagged": 0, "rejections": None}
    assert batch.json()["rejections"][0]["reason"] == "bad_time"
    broken = client.post("/api/telemetry/observations", headers={"X-API-Key": key}, content=b"{oops")
    assert broken.status_code == 400 and "malformed_json" in broken.json()["detail"]
    bad_sta = client.post("/sta/v1.1/Observations", headers={"X-API-Key": key},
                          json={"Datastream": {"@iot.id": level}, "phenomenonTime": when, "result": "high"})
    assert bad_sta.status_code == 400 and "bad_result_type" in bad_sta.json()["detail"]


def test_frost_sta_client_reads_things_datastreams_observations(engine, loaded) -> None:
    import frost_sta_client as fsc

    ids, _, rows = loaded
    temp = ids["WX01:air_temperature"]
    with ApiServer(telemetry_app(engine)) as server:
        service = fsc.SensorThingsService(f"{server.url}/sta/v1.1")
        things = list(service.things().query().top(10).list())
        assert len(things) == 24 and {t.name for t in things} >= {"WX01", "RG01", "SUB1-LOAD"}
        datastreams = list(service.datastreams().query().expand("Thing").list())
        assert len(datastreams) == 25
        ds = service.datastreams().find(temp)
        assert ds.name == "WX01:air_temperature" and ds.unit_of_measurement.symbol == "°C"
        observations = list(ds.get_observations().query().top(100).list())     # follows two nextLinks
        assert len(observations) == N_TEMP
        assert [o.result for o in observations] == [r[2] for r in rows]
        recent_ones = list(service.observations().query().filter(
            f"Datastream/id eq {temp} and result ge 19").orderby("phenomenonTime", "desc").list())
        assert [o.result for o in recent_ones] == [r[2] for r in rows[::-1] if r[2] >= 19]
