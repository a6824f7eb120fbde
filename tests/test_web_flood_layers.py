"""Flood map endpoints of the web map: ``/api/runs/{id}/flood`` metadata and its depth PNGs.

A NetCDF shaped like the flood model's output (``depth(time, y, x)``, ``max_depth(y, x)``, CRS in a CF
``spatial_ref`` variable) is registered as a run in a fresh twin database; the PNGs must be valid, coloured
on the published scale, transparent where dry, and placed where the water is (checked against pyproj).
"""

from __future__ import annotations

import io
import os
from types import SimpleNamespace

import numpy as np
import pytest
import xarray as xr
from fastapi.testclient import TestClient
from PIL import Image
from pyproj import Transformer
from sqlalchemy import text

from citytwin.api.app import create_app
from citytwin.api.routers import flood_layers
from citytwin.api.routers.flood_layers import DEPTH_STOPS, colour_depths, encode_png

CRS = "EPSG:32632"
X0, Y0, DX = 411_000.0, 5_362_000.0, 5.0  # north-west corner (m), cell size (m)
NY, NX = 60, 80
WET_ROW, WET_COL = 20, 50  # the one deep cell


def flood_dataset() -> xr.Dataset:
    """Four output times; water rises in one cell to 1.5 m, a shallow 0.01 m film elsewhere at the end."""
    import rioxarray  # noqa: F401

    x = X0 + DX * (np.arange(NX) + 0.5)
    y = Y0 - DX * (np.arange(NY) + 0.5)
    times = np.array([0.0, 600.0, 1200.0, 1800.0])
    depth = np.zeros((len(times), NY, NX), np.float32)
    depth[:, WET_ROW, WET_COL] = [0.0, 0.5, 1.0, 1.5]
    depth[-1, 40:, :] = 0.01  # below the visible threshold: must stay transparent
    depth[:, 0, 0] = np.nan  # a closed cell
    ds = xr.Dataset({"depth": (("time", "y", "x"), depth), "max_depth": (("y", "x"), depth.max(axis=0))},
                    coords={"time": times, "y": y, "x": x})
    return ds.rio.write_crs(CRS)


def add_run(engine, kind: str, status: str, result_path=None, summary: str = "{}") -> int:
    with engine.begin() as conn:
        return conn.execute(text(
            "INSERT INTO simulation_runs (kind, parameters, status, progress, result_path, summary) "
            "VALUES (:k, '{}', :st, 1, :p, CAST(:s AS jsonb)) RETURNING id"),
            {"k": kind, "st": status, "p": result_path, "s": summary}).scalar_one()


def write_flood(path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    flood_dataset().to_netcdf(path)


@pytest.fixture(scope="module")
def client(pg_server, tmp_path_factory):
    """One twin database and app for the module (runs are rows; each test reads its own)."""
    from citytwin.db.engine import make_engine

    name = pg_server.create_database()
    engine = make_engine(pg_server.url(name))
    root = tmp_path_factory.mktemp("flood_layers")
    path = root / "runs" / "1" / "flood.nc"
    write_flood(path)
    flood_run = add_run(engine, "flood", "succeeded", str(path))
    storm_run = add_run(engine, "storm", "succeeded", summary=f'{{"flood_run_id": {flood_run}}}')
    running = add_run(engine, "storm", "running")
    app = create_app(SimpleNamespace(tiles_dir=root, cors_origins=[]), engine=engine, routers=[flood_layers.router])
    try:
        with TestClient(app) as c:
            yield SimpleNamespace(http=c, engine=engine, root=root, flood=flood_run, storm=storm_run,
                                  running=running, path=path)
    finally:
        engine.dispose()
        pg_server.drop_database(name)


def png(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(response.content))
    assert image.mode == "RGBA"
    return np.asarray(image)


def test_png_encoder_round_trips_through_a_real_decoder():
    rng = np.random.default_rng(7)
    rgba = rng.integers(0, 256, size=(17, 23, 4), dtype=np.uint8)
    decoded = np.asarray(Image.open(io.BytesIO(encode_png(rgba))))
    assert decoded.shape == (17, 23, 4)
    assert np.array_equal(decoded, rgba)


def test_colour_scale_is_transparent_when_dry_and_exact_at_the_stops():
    depths = np.array([np.nan, 0.0, 0.019, *[d for d, _ in DEPTH_STOPS], 5.0])
    rgba = colour_depths(depths)
    assert (rgba[:3, 3] == 0).all()
    for i, (_, colour) in enumerate(DEPTH_STOPS):
        assert tuple(rgba[3 + i]) == colour
    assert tuple(rgba[-1]) == DEPTH_STOPS[-1][1]  # deeper than the scale: the last colour holds
    alphas = rgba[3:, 3].astype(int)
    assert (np.diff(alphas) >= 0).all()  # deeper water is never more transparent


def test_metadata_gives_times_bounds_and_urls(client):
    meta = client.http.get(f"/api/runs/{client.flood}/flood").json()
    assert meta["times"] == [0.0, 600.0, 1200.0, 1800.0]
    assert meta["max_depth_m"] == pytest.approx(1.5)
    to_lonlat = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True)
    corners = [to_lonlat.transform(x, y) for x in (X0, X0 + NX * DX) for y in (Y0, Y0 - NY * DX)]
    lons, lats = zip(*corners)
    w, s, e, n = meta["bounds"]
    # The warped grid covers the UTM rectangle; its edges lie within one cell (~7e-5 deg) of the extremes.
    assert w == pytest.approx(min(lons), abs=1e-4) and e == pytest.approx(max(lons), abs=1e-4)
    assert s == pytest.approx(min(lats), abs=1e-4) and n == pytest.approx(max(lats), abs=1e-4)
    assert meta["max_depth_url"].startswith(f"/api/runs/{client.flood}/flood/max.png?v=")
    assert "{index}" in meta["depth_url_template"]
    assert [s["depth"] for s in meta["legend"]["stops"]] == [d for d, _ in DEPTH_STOPS]


def test_max_png_puts_the_water_where_it_is(client):
    meta = client.http.get(f"/api/runs/{client.flood}/flood").json()
    image = png(client.http.get(meta["max_depth_url"]))
    wet = np.argwhere(image[..., 3] > 0)
    assert len(wet) >= 1
    # Only the deep cell is visible (the 0.01 m film and the NaN cell are transparent).
    assert len(wet) <= 4  # one source cell covers at most 2 x 2 output pixels after warping
    w, s, e, n = meta["bounds"]
    height, width = image.shape[:2]
    row, col = wet.mean(axis=0)
    lon = w + (col + 0.5) * (e - w) / width
    lat = n - (row + 0.5) * (n - s) / height
    cx, cy = X0 + (WET_COL + 0.5) * DX, Y0 - (WET_ROW + 0.5) * DX
    expected_lon, expected_lat = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True).transform(cx, cy)
    pixel = max((e - w) / width, (n - s) / height)
    assert abs(lon - expected_lon) <= 1.5 * pixel and abs(lat - expected_lat) <= 1.5 * pixel
    r, c = wet[0]
    assert tuple(image[r, c]) == tuple(colour_depths(np.array([1.5]))[0])  # 1.5 m on the scale


def test_depth_frames_follow_the_rising_water(client):
    meta = client.http.get(f"/api/runs/{client.flood}/flood").json()
    colours = []
    for index in range(len(meta["times"])):
        image = png(client.http.get(meta["depth_url_template"].replace("{index}", str(index))))
        wet = image[image[..., 3] > 0]
        colours.append(wet[0] if len(wet) else None)
    assert colours[0] is None  # dry at t = 0
    expected = [colour_depths(np.array([d]))[0] for d in (0.5, 1.0, 1.5)]
    for got, want in zip(colours[1:], expected):
        assert got is not None and tuple(got) == tuple(want)


def test_scenario_run_resolves_to_its_flood_run(client):
    meta = client.http.get(f"/api/runs/{client.storm}/flood").json()
    assert meta["flood_run_id"] == client.flood
    assert png(client.http.get(meta["max_depth_url"])).shape[2] == 4


def test_errors_name_the_problem(client):
    missing = client.http.get("/api/runs/999999/flood")
    assert missing.status_code == 404 and "no simulation run 999999" in missing.json()["detail"]
    frames = client.http.get(f"/api/runs/{client.flood}/flood/depth/4.png")
    assert frames.status_code == 404 and "4 depth frames" in frames.json()["detail"]
    negative = client.http.get(f"/api/runs/{client.flood}/flood/depth/-1.png")
    assert negative.status_code == 404
    not_a_number = client.http.get(f"/api/runs/{client.flood}/flood/depth/x.png")
    assert not_a_number.status_code == 422
    running = client.http.get(f"/api/runs/{client.running}/flood")
    assert running.status_code == 404 and "still running" in running.json()["detail"]


def test_images_are_cached_beside_the_netcdf_and_rebuilt_when_it_changes(client):
    path = client.root / "runs" / "cache" / "flood.nc"
    write_flood(path)
    run = add_run(client.engine, "flood", "succeeded", str(path))
    first = client.http.get(f"/api/runs/{run}/flood").json()
    client.http.get(first["depth_url_template"].replace("{index}", "2"))
    cached = path.with_name("flood_map") / "depth_0002.png"
    assert cached.is_file()
    stamp = cached.stat().st_mtime_ns
    client.http.get(first["depth_url_template"].replace("{index}", "2"))
    assert cached.stat().st_mtime_ns == stamp  # served from the cache, not rendered again
    ds = flood_dataset()
    ds["max_depth"][:] = 0.0
    ds["depth"][:] = 0.0
    ds.to_netcdf(path.with_suffix(".tmp.nc"))
    os.replace(path.with_suffix(".tmp.nc"), path)
    second = client.http.get(f"/api/runs/{run}/flood").json()
    assert second["max_depth_url"] != first["max_depth_url"]  # new version token: browsers fetch anew
    assert second["max_depth_m"] == 0.0
    assert not cached.exists()  # stale frames dropped
    assert (png(client.http.get(second["max_depth_url"]))[..., 3] == 0).all()


def test_run_list_marks_runs_with_flood_maps(client):
    runs = {r["id"]: r for r in client.http.get("/api/runs").json()["runs"]}
    assert runs[client.flood]["has_flood"] and runs[client.storm]["has_flood"]
    assert not runs[client.running]["has_flood"]
