"""Scenarios over HTTP: POST -> 202 with a run id, poll to completion, results in three formats."""

from __future__ import annotations

import io
import time

import geopandas as gpd
import pyarrow.parquet as pq
import pytest
import xarray as xr
from fastapi.testclient import TestClient

from citytwin.api.auth import create_key

POLL_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def engine(demo_engine):
    return demo_engine


@pytest.fixture(scope="module")
def client(demo_app):
    with TestClient(demo_app) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def admin(engine) -> dict[str, str]:
    with engine.begin() as conn:
        return {"X-API-Key": create_key(conn, "planner", ["admin"])}


@pytest.fixture(scope="module")
def finished_run(client, admin) -> dict:
    started = client.post("/api/scenarios", json={"rain_mm_h": 120, "hours": 0.5}, headers=admin)
    assert started.status_code == 202, started.text
    body = started.json()
    assert isinstance(body["run_id"], int) and started.headers["Location"] == f"/api/scenarios/{body['run_id']}"
    deadline = time.monotonic() + POLL_TIMEOUT_S
    while True:
        run = client.get(f"/api/scenarios/{body['run_id']}").json()
        if run["status"] not in ("pending", "running"):
            break
        assert time.monotonic() < deadline, f"scenario still {run['status']} after {POLL_TIMEOUT_S} s"
        time.sleep(1)
    assert run["status"] == "succeeded", run
    return run


def test_scenario_runs_to_completion(client, finished_run) -> None:
    run_id = finished_run["id"]
    assert run_id in [r["id"] for r in client.get("/api/scenarios").json()]
    buildings = client.get(f"/api/scenarios/{run_id}/buildings").json()["buildings"]
    assert len(buildings) == 400


def test_results_parse_in_every_format(client, finished_run) -> None:
    run_id = finished_run["id"]
    as_json = client.get(f"/api/scenarios/{run_id}/results", params={"format": "geojson"})
    assert as_json.status_code == 200 and as_json.headers["content-type"].startswith("application/geo+json")
    frame = gpd.read_file(io.BytesIO(as_json.content))
    assert len(frame) == 400 and frame.crs.to_epsg() == 4326

    as_parquet = client.get(f"/api/scenarios/{run_id}/results", params={"format": "geoparquet"})
    assert as_parquet.status_code == 200
    table = pq.read_table(io.BytesIO(as_parquet.content))
    assert table.num_rows == 400 and b"geo" in table.schema.metadata  # GeoParquet metadata
    parquet_frame = gpd.read_parquet(io.BytesIO(as_parquet.content))
    attributes = set(frame.columns) - {"geometry"}
    assert attributes == set(parquet_frame.columns) - {parquet_frame.geometry.name} and "max_depth_m" in attributes
    assert parquet_frame.crs.to_epsg() == 4326
    assert sorted(parquet_frame["max_depth_m"].fillna(-1)) == pytest.approx(sorted(frame["max_depth_m"].fillna(-1)))

    as_netcdf = client.get(f"/api/scenarios/{run_id}/results", params={"format": "netcdf"})
    assert as_netcdf.status_code == 200
    with xr.open_dataset(io.BytesIO(as_netcdf.content)) as grid:
        assert grid.sizes and len(grid.data_vars) >= 1
        depth = next(iter(grid.data_vars.values()))
        assert float(depth.max()) > 0  # 120 mm/h for half an hour wets the low ground


def test_bad_scenario_requests_are_4xx(client, admin, finished_run) -> None:
    run_id = finished_run["id"]
    assert client.get(f"/api/scenarios/{run_id}/results", params={"format": "shapefile"}).status_code == 422
    assert client.get("/api/scenarios/987654").status_code == 404
    assert client.get("/api/scenarios/987654/results").status_code == 404
    assert client.post("/api/scenarios", json={"rain_mm_h": 120}).status_code == 401
    assert client.post("/api/scenarios", json={"rain_mm_h": -1}, headers=admin).status_code == 422
    assert client.post("/api/scenarios", json={"rain_mm_h": 50, "colour": "red"}, headers=admin).status_code == 422
