"""The planners' web map in headless Chromium, against a real server holding a small synthetic twin.

One server (``citytwin serve`` in a subprocess) and one browser page for the module, in this order: the page
loads with no console errors and no failed requests, restoring the camera from the URL; every building's tile
loads; clicking a building shows its id; layer switches live in the URL; a storm scenario run from the panel
recolours the flooded buildings and draws its flood, stepping through time; an outage record and a
restoration plan are drawn with exactly the de-energised parts the grid model computes; published
observations move a sensor's value and flag an anomaly. Screenshots go to ``test-artifacts/`` (git-ignored).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--no-first-run"]
VIEWPORT = {"width": 1000, "height": 700}
BUILDINGS = 300

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def twin_server(pg_server, tmp_path_factory):
    """A migrated database with the demo city (300 buildings), its tileset, an admin key, and the API."""
    from citytwin.api.auth import create_key
    from citytwin.db.engine import make_engine
    from citytwin.scenarios.demo import load_demo_city
    from citytwin.tiler import build_tiles

    root = tmp_path_factory.mktemp("web_map")
    name = pg_server.create_database()
    url = pg_server.url(name)
    engine = make_engine(url)
    load_demo_city(engine, out_dir=root / "city", buildings=BUILDINGS, seed=1, log=lambda _: None)
    build_tiles(engine, root / "tiles", "buildings")
    with engine.begin() as conn:
        key = create_key(conn, "web-map-test", ["admin"])
    engine.dispose()
    port = free_port()
    env = {**os.environ, "CITYTWIN_DATABASE_URL": url, "CITYTWIN_TILES_DIR": str(root / "tiles"),
           "CITYTWIN_DATA_DIR": str(root / "data"), "CITYTWIN_MQTT_URL": ""}
    with open(root / "server.log", "w") as log:
        # The real thing: `citytwin serve` (uvicorn with the app factory), as a user starts it.
        proc = subprocess.Popen([sys.executable, "-m", "citytwin", "serve", "--host", "127.0.0.1", "--port", str(port)],
                                env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{base}/openapi.json", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, (root / "server.log").read_text()
            assert time.monotonic() < deadline, "the server did not start: " + (root / "server.log").read_text()
            time.sleep(0.3)
        yield SimpleNamespace(url=base, key=key, database_url=url, root=root, log=root / "server.log")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        pg_server.drop_database(name)


def tallest_building(base: str) -> dict:
    features = httpx.get(f"{base}/ogc/collections/buildings/items", params={"limit": 10000}, timeout=30).json()
    assert len(features["features"]) == BUILDINGS
    best = max(features["features"], key=lambda f: f["properties"]["height"])
    ring = best["geometry"]["coordinates"][0][0]
    lon = sum(p[0] for p in ring[:-1]) / (len(ring) - 1)
    lat = sum(p[1] for p in ring[:-1]) / (len(ring) - 1)
    return {"id": best["id"], "lon": lon, "lat": lat, "height": best["properties"]["height"]}


@pytest.fixture(scope="module")
def page(twin_server):
    """One Chromium page on the map, opened looking straight down at the tallest building (camera in the URL).

    Console errors, page errors and failed requests are collected on ``page.problems``.
    """
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    target = tallest_building(twin_server.url)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            pg = browser.new_page(viewport=VIEWPORT)
            problems: list[str] = []
            pg.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            pg.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            pg.on("requestfailed", lambda r: problems.append(f"request failed: {r.url} {r.failure}"))
            pg.on("response", lambda r: problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
            camera = f"{target['lon']:.7f},{target['lat']:.7f},{target['height'] + 260:.1f},0,-90,0"
            started = time.monotonic()
            pg.goto(f"{twin_server.url}/#cam={camera}&colour=height")
            pg.wait_for_function("window.citytwin && (window.citytwin.ready || window.citytwin.failed)",
                                 timeout=120_000)
            pg.wait_for_function("window.citytwin.buildings.tileset && window.citytwin.buildings.tileset.tilesLoaded",
                                 timeout=120_000)
            pg.load_seconds = time.monotonic() - started
            pg.problems = problems
            pg.target = target
            yield pg
        finally:
            browser.close()


def shot(page, name: str) -> Path:
    path = ARTIFACTS / f"web_map_{name}.png"
    page.evaluate("window.citytwin.viewer.scene.requestRender()")
    page.wait_for_timeout(500)
    page.screenshot(path=str(path))
    return path


def test_page_loads_without_errors_and_restores_the_camera(page):
    state = page.evaluate("({failed: window.citytwin.failed, warnings: window.citytwin.warnings, "
                          "status: document.getElementById('status').textContent, hash: location.hash})")
    shot(page, "loaded")
    assert state["failed"] is None
    assert page.problems == []
    assert state["warnings"] == []
    assert state["status"] == "ready"
    # No scenario has run: the flood panel says so instead of asking for a missing run.
    assert page.locator("#flood-empty").is_visible()
    assert page.locator("#flood-empty").inner_text() == "no runs yet"
    # The camera came from the URL and is written back to it.
    cam = dict(p.split("=", 1) for p in state["hash"].lstrip("#").split("&"))["cam"].split(",")
    assert float(cam[0]) == pytest.approx(page.target["lon"], abs=2e-5)
    assert float(cam[1]) == pytest.approx(page.target["lat"], abs=2e-5)
    assert float(cam[4]) == pytest.approx(-90, abs=0.5)


def test_every_building_is_in_the_loaded_tiles(page):
    ids = page.evaluate("[...window.citytwin.buildings.loadedFeatures()].map(f => String(f.getProperty('id')))")
    assert len(ids) == BUILDINGS
    assert len(set(ids)) == BUILDINGS
    grid = page.evaluate("window.citytwin.grid.counts()")
    # The demo grid: 345 line sections, 49 switches of which the 2 normally-open ties are open, all energised.
    assert grid["lines"] == 345 and grid["switches"] == 49
    assert grid["openSwitches"] == 2 and grid["deenergised"] == 0


def test_clicking_a_building_shows_its_id(page):
    box = page.locator("#map canvas").bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_selector("#info:not([hidden])", timeout=15_000)
    shot(page, "picked")
    assert page.locator("#info-title").inner_text() == f"Building {page.target['id']}"
    assert page.locator('#info td[data-property="id"]').inner_text() == str(page.target["id"])
    height = float(page.locator('#info td[data-property="height"]').inner_text())
    assert height == pytest.approx(page.target["height"], abs=1e-3)
    assert f"select=building:{page.target['id']}" in page.evaluate("location.hash")
    page.click("#info-close")
    assert "select=" not in page.evaluate("location.hash")


def test_layer_switches_hide_layers_and_are_kept_in_the_url(page):
    page.uncheck('input[data-layer="grid"]')
    state = page.evaluate("({hash: location.hash, lines: window.citytwin.grid.lines.show,"
                          " points: window.citytwin.grid.points.show})")
    assert "layers=buildings,flood,outages,sensors" in state["hash"]
    assert state["lines"] is False and state["points"] is False
    page.check('input[data-layer="grid"]')
    assert "layers=buildings,flood,grid,outages,sensors" in page.evaluate("location.hash")
    assert page.evaluate("window.citytwin.grid.lines.show") is True


COLOURS_JS = """async () => {
  await window.citytwin.afterRender();
  return Object.fromEntries([...window.citytwin.buildings.loadedFeatures()].map(
    (f) => [String(f.getProperty('id')), f.color.toCssColorString()]));
}"""


def rgb(css: str) -> tuple[int, int, int]:
    inner = css[css.index("(") + 1:css.index(")")]
    r, g, b = (round(float(v)) for v in inner.split(",")[:3])
    return r, g, b


def test_storm_scenario_recolours_the_flooded_buildings(page, twin_server):
    page.select_option("#colour-mode", "flood")
    before = page.evaluate(COLOURS_JS)
    assert len(set(before.values())) == 1  # flood mode with no results yet: one "no result" colour
    page.fill("#scenario-rain", "80")
    page.fill("#scenario-hours", "1")
    page.fill("#api-key", twin_server.key)
    page.click("#scenario-run")
    page.wait_for_function("window.citytwin.scenarioDone || /failed|error/.test("
                           "document.getElementById('scenario-status').textContent)", timeout=240_000)
    assert page.locator("#scenario-status").inner_text().endswith("succeeded"), page.locator("#scenario-status").inner_text()
    run_id = page.evaluate("window.citytwin.scenarioDone")
    run = httpx.get(f"{twin_server.url}/api/scenarios/{run_id}", timeout=30).json()
    results = httpx.get(f"{twin_server.url}/api/scenarios/{run_id}/buildings", timeout=30).json()["buildings"]
    after = page.evaluate(COLOURS_JS)
    shot(page, "scenario")

    depth = {bid: r["max_depth_m"] for bid, r in results.items() if r["max_depth_m"] is not None}
    flooded = [bid for bid, d in depth.items() if d >= 0.15]
    dry = [bid for bid, d in depth.items() if d < 0.02]
    assert flooded and dry  # an 80 mm/h hour floods part of the demo city, not all of it
    for bid in flooded:
        r, g, b = rgb(after[bid])
        assert after[bid] != before[bid] and b > r and b > g, (bid, depth[bid], after[bid])
    dry_colours = {after[bid] for bid in dry}
    assert len(dry_colours) == 1 and dry_colours != {after[flooded[0]]}
    # Deeper water, darker blue: compare the shallowest and the deepest flooded building.
    shallow, deep = min(flooded, key=depth.get), max(flooded, key=depth.get)
    if depth[deep] - depth[shallow] > 0.3:
        assert sum(rgb(after[deep])) < sum(rgb(after[shallow]))

    summary = run["summary"]
    panel = page.locator("#scenario-results").inner_text()
    assert f"Flooded buildings\n{summary['flooded_buildings']}" in panel.replace("\t", "\n")
    assert f"Failed assets\n{len(summary['failed_assets'])}" in panel.replace("\t", "\n")
    # The flood overlay now shows this run, and its image loaded.
    flood = page.evaluate("({run: window.citytwin.flood.runId, frames: window.citytwin.flood.meta.times.length, "
                          "layer: Boolean(window.citytwin.flood.layer), hash: location.hash})")
    assert flood["run"] == run_id and flood["layer"] and flood["frames"] >= 2
    assert f"scenario={run_id}" in flood["hash"] and f"run={run_id}" in flood["hash"]
    if summary["failed_assets"]:
        grid = page.evaluate("window.citytwin.grid.counts()")
        assert grid["deenergised"] > 0

    # The time slider steps through the depth frames: frame 2 is the depth after two output intervals.
    with page.expect_response(lambda r: f"/api/runs/{run_id}/flood/depth/2.png" in r.url) as frame:
        page.evaluate("""() => { const s = document.getElementById('flood-time');
                                 s.value = '2'; s.dispatchEvent(new Event('input')); }""")
    assert frame.value.status == 200
    page.wait_for_function("window.citytwin.flood.frame === 2 && location.hash.includes('t=2')", timeout=15_000)
    minutes = round(page.evaluate("window.citytwin.flood.meta.times[2]") / 60)
    assert page.locator("#flood-time-label").inner_text() == f"after {minutes} min"
    assert page.problems == []


def test_outage_areas_and_de_energised_parts_match_the_grid_model(page, twin_server):
    """An outage record (a transformer failed, its protection tripped) is drawn: area, failed asset, and the
    de-energised nodes the map traces are the ones the grid model computes for that failure."""
    from sqlalchemy import text

    from citytwin.db.engine import make_engine
    from citytwin.db.grid import read_grid
    from citytwin.models.grid.outages import outage

    engine = make_engine(twin_server.database_url)
    try:
        with engine.connect() as conn:
            grid = read_grid(conn)
        transformers = grid.nodes.loc[grid.nodes["kind"] == "transformer", "node_id"].astype(str).sort_values()
        failed = transformers.iloc[len(transformers) // 2]
        expected = outage(grid, [failed])
        assert len(expected.nodes) > 1 and len(expected.clearing)
        with engine.begin() as conn:
            outage_id = conn.execute(text("""
                INSERT INTO outages (status, kind, cause, start_time, customers_affected, customers_restored,
                                     feeder, faulted_assets, opened_switches, geom)
                SELECT 'confirmed', 'unplanned', 'equipment', now(), :customers, 0, n.feeder, :failed, :opened,
                       ST_Multi(ST_Buffer(n.geom, 40))
                FROM grid_nodes n WHERE n.node_id = :node RETURNING id
            """), {"customers": expected.customers, "failed": [failed], "node": failed,
                   "opened": expected.clearing["device_id"].astype(str).tolist()}).scalar_one()
        page.evaluate("window.citytwin.refreshOutages()")
        drawn = page.evaluate("({counts: window.citytwin.grid.counts(), nodes: window.citytwin.grid.deenergisedNodes(),"
                              " summary: document.getElementById('outage-summary').textContent})")
        page.evaluate("window.citytwin.viewer.camera.zoomOut(400)")
        page.evaluate("window.citytwin.afterRender()")
        page.wait_for_function("window.citytwin.viewer.dataSourceDisplay.ready", timeout=30_000)
        shot(page, "outage")
        assert drawn["counts"]["activeOutages"] == 1 and drawn["counts"]["outageAreas"] == 1
        assert drawn["nodes"] == sorted(str(n) for n in expected.nodes)
        assert drawn["summary"].startswith(f"1 active outage(s), {expected.customers} customers out")
        with engine.begin() as conn:
            conn.execute(text("UPDATE outages SET status = 'closed' WHERE id = :id"), {"id": outage_id})
        page.evaluate("window.citytwin.refreshOutages()")
        after = page.evaluate("window.citytwin.grid.counts()")
        assert after["activeOutages"] == 0 and after["outageAreas"] == 0 and after["deenergised"] == 0
    finally:
        engine.dispose()
    assert page.problems == []


SENSOR_ON_SCREEN_JS = """async () => {
  const { viewer, buildings, sensors } = window.citytwin;
  const sphere = buildings.tileset.boundingSphere;
  viewer.camera.flyToBoundingSphere(sphere, { duration: 0,
    offset: new Cesium.HeadingPitchRange(0, -Cesium.Math.PI_OVER_TWO, sphere.radius * 3) });
  await window.citytwin.afterRender();
  const side = document.getElementById('side').getBoundingClientRect();
  const canvas = viewer.scene.canvas;
  for (const [id, thing] of sensors.things) {
    const ds = thing.datastreams.find((d) => sensors.datastreams.get(d).property === 'air_temperature');
    if (ds === undefined) continue;
    const p = Cesium.SceneTransforms.worldToWindowCoordinates(viewer.scene, thing.point.position);
    if (p && p.x > side.right + 20 && p.x < canvas.clientWidth - 340 && p.y > 20 && p.y < canvas.clientHeight - 20) {
      return { thing: id, name: thing.name, datastream: ds, x: p.x, y: p.y };
    }
  }
  return null;
}"""


def test_published_observations_move_the_sensor_value_and_flag_anomalies(page, twin_server):
    assert page.locator("#sensor-status").inner_text().startswith("live")
    sensor = page.evaluate(SENSOR_ON_SCREEN_JS)
    assert sensor is not None, "no weather station on screen"
    page.mouse.move(sensor["x"], sensor["y"])
    page.wait_for_selector("#tooltip:not([hidden])", timeout=15_000)
    assert page.locator("#tooltip").inner_text().startswith(sensor["name"])

    def publish(value: float, minutes_ago: float) -> dict:
        when = (datetime.now(UTC) - timedelta(minutes=minutes_ago)).isoformat()
        response = httpx.post(f"{twin_server.url}/api/telemetry/observations", headers={"X-API-Key": twin_server.key},
                              json=[[sensor["datastream"], when, value]], timeout=30)
        assert response.status_code == 200, response.text
        return response.json()

    assert publish(17.25, 2)["stored"] == 1
    page.wait_for_function("text => document.getElementById('tooltip').textContent.includes(text)",
                           arg="air_temperature: 17.25 °C", timeout=20_000)
    assert page.evaluate(f"window.citytwin.sensors.latest({sensor['datastream']}).anomaly") is False
    colour_before = page.evaluate(f"window.citytwin.sensors.things.get({sensor['thing']}).point.color.toCssColorString()")

    # 99 °C is outside the plausible air temperature range: stored, flagged, shown as an anomaly.
    assert publish(99.0, 1)["flagged"] == 1
    page.wait_for_function("text => document.getElementById('tooltip').textContent.includes(text)",
                           arg="air_temperature: 99 °C ⚠ range", timeout=20_000)
    colour_after = page.evaluate(f"window.citytwin.sensors.things.get({sensor['thing']}).point.color.toCssColorString()")
    assert colour_after != colour_before and rgb(colour_after)[0] > 200  # red
    shot(page, "telemetry")

    # Click: the info panel charts the recent values, the anomaly as a red dot.
    page.mouse.click(sensor["x"], sensor["y"])
    page.wait_for_function("document.getElementById('info-title').textContent.startsWith('Sensor')", timeout=15_000)
    assert page.locator("#info-title").inner_text() == f"Sensor {sensor['name']}"
    chart = page.locator("#info .chart svg").first
    assert chart.locator("path.line").count() == 1
    assert chart.locator("circle.anomaly").count() == 1
    assert "99 °C (anomaly: range)" in page.locator('#info td[data-property="air_temperature"]').inner_text()
    shot(page, "sensor_chart")
    assert page.problems == []


def test_scenario_switching_state_matches_the_grid_model(page, twin_server):
    """A restoration plan with a back-feed (tie closed): the switch states the map derives from the plan and
    the parts it then draws de-energised are those of the grid model after restoration."""
    from citytwin.db.engine import make_engine
    from citytwin.db.grid import read_grid
    from citytwin.models.grid.restoration import restore
    from citytwin.models.grid.topology import Topology

    engine = make_engine(twin_server.database_url)
    try:
        with engine.connect() as conn:
            grid = read_grid(conn)
    finally:
        engine.dispose()
    for section in grid.sections["section_id"].astype(str):
        if section.startswith("LV"):
            continue
        restoration = restore(grid, [section], load="peak")
        if restoration.summary()["ties_closed"] and restoration.summary()["customers_restored_by_switching"]:
            break
    else:
        pytest.fail("no medium-voltage failure in the demo grid is back-fed through a tie")
    after = Topology.from_grid(restoration.apply(grid), "present")
    out = after.unsupplied_mask(*after.resolve_assets([section]))
    expected = sorted(str(n) for n in after.node_ids[out])
    before = Topology.from_grid(grid, "present")
    out_before = int(before.unsupplied_mask(*before.resolve_assets([section])).sum())
    assert 0 < len(expected) < out_before  # the back-feed restored part of what the fault cut off

    plan = json.loads(restoration.plan.to_json(orient="records"))
    drawn = page.evaluate("""([section, plan]) => {
        const { grid, switchStatesAfter } = window.citytwin;
        const states = switchStatesAfter(plan);
        grid.setScenario(-1, [section], states);
        const result = { states: Object.fromEntries(states), nodes: grid.deenergisedNodes(), counts: grid.counts() };
        grid.setScenario(-1, null);
        return result; }""", [section, plan])
    assert drawn["states"] == restoration.switch_states
    assert drawn["nodes"] == expected
    assert page.evaluate("window.citytwin.grid.counts().deenergised") == 0  # cleared again
