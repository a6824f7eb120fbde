"""OGC API - Features over the real PostGIS twin, read by a real client (GDAL's OAPIF driver)."""

from __future__ import annotations

import pyogrio
import pytest
from fastapi.testclient import TestClient

from citytwin.api.app import create_app
from citytwin.config import Settings
from citytwin.db import make_engine
from tests._server import serve_subprocess


@pytest.fixture(scope="module")
def app(demo_twin):
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


@pytest.mark.parametrize("path, status", [
    ("/ogc/collections/buildings/items?bbox=1,2,3", 400),
    ("/ogc/collections/buildings/items?bbox=a,b,c,d", 400),
    ("/ogc/collections/buildings/items?bbox=0,80,10,70", 400),
    ("/ogc/collections/buildings/items?limit=0", 400),
    ("/ogc/collections/buildings/items?limit=ten", 400),
    ("/ogc/collections/buildings/items?colour=red", 400),
    ("/ogc/collections/buildings/items?datetime=yesterday", 400),
    ("/ogc/collections/nowhere/items", 404),
    ("/ogc/collections/buildings/items/999999999", 404),
    ("/ogc/collections/buildings/items/not-a-number", 400),
    ("/ogc/collections/grid_assets/items/%27%3B%20DROP%20TABLE%20buildings%3B--", 404),
])
def test_bad_requests_are_4xx_with_a_reason(client, path: str, status: int) -> None:
    response = client.get(path)
    assert response.status_code == status
    assert response.json()["detail"]


def test_gdal_oapif_driver_reads_the_collections(demo_twin) -> None:
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
