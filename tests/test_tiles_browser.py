"""CesiumJS in headless Chromium loads a tileset from the running tile service and picks a building.

The page (served by a test route next to the real app) loads Cesium from node_modules, opens the Den Haag
tileset through ``/tiles/...``, looks straight down at a chosen building, waits until every tile is loaded
and picks at the building's projected screen position; the picked feature's metadata must be that
building's id and height.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

from _tiles_support import (CESIUM_BUILD, CHROMIUM, CHROMIUM_FLAGS, DENHAAG, ServerThread,
                            buildings_in_tileset, read_city)
from citytwin.api.app import create_app
from citytwin.api.routers.tiles import router as tiles_router
from citytwin.tiler import build_tileset

PAGE = """<!doctype html>
<html><head><meta charset="utf-8">
<script>window.CESIUM_BASE_URL = "/cesium/";</script>
<script src="/cesium/Cesium.js"></script>
<link href="/cesium/Widgets/widgets.css" rel="stylesheet">
<style>html, body, #map { margin: 0; width: 100%; height: 100%; overflow: hidden; }</style>
</head><body><div id="map"></div>
<script>
const viewer = new Cesium.Viewer("map", {
  baseLayer: false, baseLayerPicker: false, geocoder: false, animation: false, timeline: false,
  homeButton: false, sceneModePicker: false, navigationHelpButton: false, fullscreenButton: false,
  infoBox: false, selectionIndicator: false,
  terrainProvider: new Cesium.EllipsoidTerrainProvider(),
});
window.tileset = null;
window.loadTileset = async (url) => {
  window.tileset = await Cesium.Cesium3DTileset.fromUrl(url);
  viewer.scene.primitives.add(window.tileset);
  return true;
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
window.lookDownAt = async (lon, lat, height) => {
  viewer.camera.setView({
    destination: Cesium.Cartesian3.fromDegrees(lon, lat, height),
    orientation: { heading: 0, pitch: -Cesium.Math.PI_OVER_TWO, roll: 0 },
  });
  // Let the traversal start, then wait until every selected tile is loaded.
  for (let i = 0; i < 600; i++) {
    viewer.scene.requestRender();
    await sleep(100);
    if (i > 5 && window.tileset.tilesLoaded) return i;
  }
  throw new Error("tiles did not finish loading");
};
window.pickAt = (x, y, z) => {
  viewer.render();
  const world = new Cesium.Cartesian3(x, y, z);
  const win = Cesium.SceneTransforms.worldToWindowCoordinates(viewer.scene, world);
  if (!win) return { error: "not on screen" };
  const picked = viewer.scene.pick(win);
  if (!(picked instanceof Cesium.Cesium3DTileFeature)) return { error: "no feature", what: String(picked) };
  return {
    id: String(picked.getProperty("id")),
    height: picked.getProperty("height"),
    use: picked.getProperty("use"),
    names: picked.getPropertyIds(),
  };
};
</script></body></html>
"""


@pytest.fixture(scope="module")
def served_tiles(tmp_path_factory):
    frame, crs, vertical = read_city(DENHAAG, "EPSG:7415")
    tiles_dir = tmp_path_factory.mktemp("tiles")
    build_tileset(frame, tiles_dir / "denhaag", crs=crs, vertical_crs=vertical, name="denhaag",
                  max_features_per_tile=200)
    app = create_app(SimpleNamespace(tiles_dir=tiles_dir, cors_origins=["*"]), routers=[tiles_router])
    app.mount("/cesium", StaticFiles(directory=CESIUM_BUILD), name="cesium")
    app.add_api_route("/test/map.html", lambda: HTMLResponse(PAGE), include_in_schema=False)
    with ServerThread(app) as server:
        yield server, tiles_dir / "denhaag", frame


def _target(buildings: dict, frame) -> tuple[int, np.ndarray]:
    """A tall building, and the middle of its highest part (the roof the camera sees first)."""
    tallest = frame.sort_values("height", ascending=False)["id"].iloc[5]
    ecef = buildings[int(tallest)]["ecef"]
    up = ecef.mean(axis=0) / np.linalg.norm(ecef.mean(axis=0))
    heights = ecef @ up
    top = ecef[heights > heights.max() - 0.5]
    return int(tallest), top.mean(axis=0)


def test_cesium_picks_building_metadata(served_tiles):
    from playwright.sync_api import sync_playwright
    from pyproj import Transformer

    server, tileset_dir, frame = served_tiles
    buildings = buildings_in_tileset(tileset_dir)
    building_id, roof = _target(buildings, frame)
    lon, lat, h = Transformer.from_crs("EPSG:4978", "EPSG:4979", always_xy=True).transform(*roof)
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 800, "height": 600})
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{server.url}/test/map.html")
            ready = "typeof Cesium !== 'undefined' && typeof window.loadTileset === 'function'"
            page.wait_for_function(ready, timeout=60_000)
            page.evaluate("url => window.loadTileset(url)", f"{server.url}/tiles/denhaag/tileset.json")
            page.evaluate("([lon, lat, h]) => window.lookDownAt(lon, lat, h)", [lon, lat, h + 250.0])
            picked = page.evaluate("([x, y, z]) => window.pickAt(x, y, z)", [float(v) for v in roof])
        finally:
            browser.close()
    assert not errors, errors
    assert "error" not in picked, json.dumps(picked)
    assert int(picked["id"]) == building_id
    expected = float(frame.loc[frame["id"] == building_id, "height"].iloc[0])
    assert picked["height"] == pytest.approx(expected, abs=1e-3)  # FLOAT32 storage
    assert {"id", "height", "use", "year_built", "source_id"} <= set(picked["names"])
