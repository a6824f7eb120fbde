"""OGC API - Features over the real PostGIS twin, read by a real client (GDAL's OAPIF driver)."""

from __future__ import annotations

import pandas as pd
import pyogrio
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from citytwin.api.app import create_app
from citytwin.config import Settings
from citytwin.db import make_engine
from citytwin.db.twin import init_twin
from citytwin.ogc.params import MAX_LIMIT
from tests._server import serve_subprocess

# Outages added to the demo city (which has none): start times for the datetime filter.
OUTAGE_STARTS = ["2026-01-10T08:00:00+00:00", "2026-03-10T08:00:00+00:00", "2026-06-10T08:00:00+00:00"]


@pytest.fixture(scope="module")
def outages(demo_twin) -> list[int]:
    """Three outages over building footprints, at the times in OUTAGE_STARTS."""
    engine = make_engine(demo_twin[0])
    with engine.begin() as conn:
        ids = [conn.execute(text("""
            INSERT INTO outages (status, kind, cause, start_time, customers_affected, feeder, geom)
            SELECT 'confirmed', 'planned', 'maintenance', :start, 5, 'F1', ST_Multi(ST_Buffer(footprint, 15))
            FROM buildings ORDER BY id OFFSET :n LIMIT 1 RETURNING id
        """), {"start": start, "n": 50 * i}).scalar_one() for i, start in enumerate(OUTAGE_STARTS)]
    engine.dispose()
    return ids


@pytest.fixture(scope="module")
def app(demo_twin, outages):
    url, data_dir = demo_twin
    engine = make_engine(url)
    settings = Settings(database_url=url, data_dir=data_dir, tiles_dir=data_dir / "tiles")
    yield create_app(settings, engine=engine)
    engine.dispose()


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app) as test_client:
        yield test_client


def test_landing_conformance_collections(client) -> None:
    landing = client.get("/ogc").json()
    rels = {link["rel"] for link in landing["links"]}
    assert {"self", "service-desc", "conformance", "data"} <= rels
    conf = client.get("/ogc/conformance").json()["conformsTo"]
    assert "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core" in conf
    collections = {c["id"]: c for c in client.get("/ogc/collections").json()["collections"]}
    assert {"buildings", "grid_assets", "grid_lines", "grid_switches", "sensors", "outages"} <= set(collections)
    west, south, east, north = collections["buildings"]["extent"]["spatial"]["bbox"][0]
    # The synthetic city sits in UTM 32N around (411 km E, 5361 km N): about 7.8 E, 48.4 N.
    assert 7.7 < west < east < 7.9 and 48.3 < south < north < 48.5


def test_paging_by_next_links_returns_every_building_once(client) -> None:
    seen, url, pages = [], "/ogc/collections/buildings/items?limit=150", 0
    while url:
        page = client.get(url)
        assert page.status_code == 200 and page.headers["content-type"].startswith("application/geo+json")
        body = page.json()
        seen.extend(f["id"] for f in body["features"])
        nxt = [link["href"] for link in body["links"] if link["rel"] == "next"]
        url = nxt[0].replace("http://testserver", "") if nxt else None
        pages += 1
    assert pages == 3 and len(seen) == 400 and len(set(seen)) == 400


def test_limit_is_clamped_and_bbox_filters(client) -> None:
    body = client.get("/ogc/collections/buildings/items?limit=1000000").json()
    assert body["numberReturned"] == 400
    everything = body["features"]
    lons = sorted(f["geometry"]["coordinates"][0][0][0][0] for f in everything)
    lats = sorted(f["geometry"]["coordinates"][0][0][0][1] for f in everything)
    bbox = (lons[0] - 1e-4, lats[0] - 1e-4, lons[len(lons) // 2], lats[len(lats) // 2])
    part = client.get("/ogc/collections/buildings/items", params={"bbox": ",".join(map(str, bbox))}).json()
    assert 0 < part["numberReturned"] < 400
    for feature in part["features"]:
        xs = [p[0] for p in feature["geometry"]["coordinates"][0][0]]
        ys = [p[1] for p in feature["geometry"]["coordinates"][0][0]]
        assert min(xs) <= bbox[2] and max(xs) >= bbox[0] and min(ys) <= bbox[3] and max(ys) >= bbox[1]
    one = everything[0]
    item = client.get(f"/ogc/collections/buildings/items/{one['id']}").json()
    assert item["properties"]["source_id"] == one["properties"]["source_id"]


def test_limit_is_clamped_to_a_configured_maximum(demo_twin) -> None:
    class SmallPages(Settings):
        ogc_max_limit: int = 150

    url, data_dir = demo_twin
    engine = make_engine(url)
    try:
        with TestClient(create_app(SmallPages(database_url=url, data_dir=data_dir), engine=engine)) as client:
            body = client.get("/ogc/collections/buildings/items?limit=1000").json()
            assert body["numberReturned"] == 150
            nxt = [link["href"] for link in body["links"] if link["rel"] == "next"][0]
            assert "limit=150" in nxt and f"after={body['features'][-1]['id']}" in nxt
            assert client.get("/ogc/collections/buildings/items?limit=20").json()["numberReturned"] == 20
    finally:
        engine.dispose()


def test_limit_is_clamped_to_10000_by_default(engine) -> None:
    """More features than the maximum page: a huge limit returns exactly MAX_LIMIT and a next link."""
    extra = 25
    with engine.begin() as conn:
        init_twin(conn, "paging", "EPSG:32632")
        conn.execute(text("""
            INSERT INTO outages (kind, start_time, geom)
            SELECT 'planned', now(), ST_Multi(ST_MakeEnvelope(411000 + i, 5361000, 411000.5 + i, 5361000.5, 32632))
            FROM generate_series(1, :n) AS i
        """), {"n": MAX_LIMIT + extra})
    app = create_app(Settings(database_url=str(engine.url)), engine=engine)
    with TestClient(app) as client:
        body = client.get("/ogc/collections/outages/items", params={"limit": 10 ** 12}).json()
        assert MAX_LIMIT == 10_000 and body["numberReturned"] == MAX_LIMIT == len(body["features"])
        nxt = [link["href"] for link in body["links"] if link["rel"] == "next"][0]
        assert f"limit={MAX_LIMIT}" in nxt
        rest = client.get(nxt.replace("http://testserver", "")).json()
        assert rest["numberReturned"] == extra and not [link for link in rest["links"] if link["rel"] == "next"]


@pytest.mark.parametrize("interval, expected", [
    ("2026-03-10T08:00:00Z", [1]),
    ("2026-02-01T00:00:00Z/2026-12-31T00:00:00Z", [1, 2]),
    ("../2026-03-10T08:00:00Z", [0, 1]),
    ("2026-03-11T00:00:00Z/..", [2]),
    ("2025-01-01T00:00:00Z/2025-12-31T00:00:00Z", []),
])
def test_datetime_filters_outages_by_start_time(client, outages, interval: str, expected: list[int]) -> None:
    body = client.get("/ogc/collections/outages/items", params={"datetime": interval}).json()
    assert sorted(f["id"] for f in body["features"]) == [outages[i] for i in expected]
    assert all(f["properties"]["start_time"] for f in body["features"])


def test_bbox_crs_accepts_only_crs84(client) -> None:
    crs84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
    plain = client.get("/ogc/collections/buildings/items", params={"bbox": "7,48,9,49", "limit": 5000}).json()
    same = client.get("/ogc/collections/buildings/items",
                      params={"bbox": "7,48,9,49", "bbox-crs": crs84, "limit": 5000}).json()
    assert plain["numberReturned"] == same["numberReturned"] == 400
    other = client.get("/ogc/collections/buildings/items",
                       params={"bbox": "411000,5361000,412000,5362000",
                               "bbox-crs": "http://www.opengis.net/def/crs/EPSG/0/32632"})
    assert other.status_code == 400 and "bbox-crs" in other.json()["detail"]


@pytest.mark.parametrize("path, status", [
    ("/ogc/collections/buildings/items?bbox=1,2,3", 400),
    ("/ogc/collections/buildings/items?bbox=a,b,c,d", 400),
    ("/ogc/collections/buildings/items?bbox=0,80,10,70", 400),
    ("/ogc/collections/buildings/items?limit=0", 400),
    ("/ogc/collections/buildings/items?limit=ten", 400),
    ("/ogc/collections/buildings/items?colour=red", 400),
    ("/ogc/collections/buildings/items?datetime=yesterday", 400),
    ("/ogc/collections/outages/items?datetime=2026-02-01T00:00:00Z/2026-01-01T00:00:00Z", 400),
    ("/ogc/collections/buildings/items?limit=1.5", 400),
    ("/ogc/conformance?colour=red", 400),
    ("/ogc/collections/nowhere/items", 404),
    ("/ogc/collections/buildings/items/999999999", 404),
    ("/ogc/collections/buildings/items/not-a-number", 400),
    ("/ogc/collections/grid_assets/items/%27%3B%20DROP%20TABLE%20buildings%3B--", 404),
])
def test_bad_requests_are_4xx_with_a_reason(client, path: str, status: int) -> None:
    response = client.get(path)
    assert response.status_code == status
    assert response.json()["detail"]


def test_gdal_oapif_driver_reads_the_collections(demo_twin, outages) -> None:
    url, data_dir = demo_twin
    env = {"CITYTWIN_DATABASE_URL": url, "CITYTWIN_DATA_DIR": str(data_dir), "CITYTWIN_TILES_DIR": str(data_dir)}
    with serve_subprocess(env) as base:
        layers = {name for name, _ in pyogrio.list_layers(f"OAPIF:{base}/ogc")}
        assert {"buildings", "grid_assets", "grid_lines"} <= layers
        frame = pyogrio.read_dataframe(f"OAPIF:{base}/ogc", layer="buildings")
        assert len(frame) == 400
        assert frame.crs.to_epsg() == 4326
        assert {"height", "use", "source_id"} <= set(frame.columns)
        lines = pyogrio.read_dataframe(f"OAPIF:{base}/ogc", layer="grid_lines")
        assert len(lines) > 0 and lines.geom_type.isin(["LineString", "MultiLineString"]).all()
        assert {"outages", "sensors", "grid_switches"} <= layers
        found = pyogrio.read_dataframe(f"OAPIF:{base}/ogc", layer="outages")
        assert len(found) == 3 and (found.geom_type == "MultiPolygon").all()
        assert set(found["status"]) == {"confirmed"} and set(found["customers_affected"]) == {5}
        assert sorted(pd.to_datetime(found["start_time"], utc=True)) == [pd.Timestamp(t) for t in OUTAGE_STARTS]
        sensors = pyogrio.read_dataframe(f"OAPIF:{base}/ogc", layer="sensors")
        switches = pyogrio.read_dataframe(f"OAPIF:{base}/ogc", layer="grid_switches")
        engine = make_engine(url)
        with engine.connect() as conn:
            counts = conn.execute(text("SELECT (SELECT count(*) FROM things t JOIN thing_locations tl "
                                       "ON tl.thing_id = t.id), (SELECT count(*) FROM grid_switches)")).one()
        engine.dispose()
        assert len(sensors) == counts[0] > 0 and (sensors.geom_type == "Point").all()
        assert len(switches) == counts[1] > 0 and {"kind", "normal_state", "present_state"} <= set(switches.columns)
