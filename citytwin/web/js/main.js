// The planners' map: wires the viewer, the layers, the panels and the URL state together.
// Everything optional (grid, outages, sensors, flood runs, scenarios) is loaded only when the server offers
// it (see capabilities() in api.js) and fails soft: a message in the panel, a console warning, no error.

import { capabilities, getJSON } from "./api.js";
import { BuildingLayer, featureId } from "./buildings.js";
import { FloodLayer } from "./flood.js";
import { GridLayer, switchStatesAfter } from "./grid.js";
import { InfoPanel } from "./info.js";
import { renderLegend } from "./legend.js";
import { ScenarioPanel } from "./scenario.js";
import { LAYERS, applyCamera, cameraToText, readState, writeState } from "./state.js";
import { SensorLayer } from "./telemetry.js";
import { createViewer, setMiddaySun } from "./viewer.js";

const $ = (id) => document.getElementById(id);
const app = { ready: false, failed: null, warnings: [], layers: new Set(LAYERS), switchStatesAfter };
window.citytwin = app;

function setStatus(message, isError = false) {
  const el = $("status");
  el.textContent = message;
  el.classList.toggle("error", isError);
}

function warn(what, error) {
  const message = `${what}: ${error && (error.detail || error.message) || error}`;
  app.warnings.push(message);
  console.warn(message);
  return message;
}

function idOf(asset) {
  return typeof asset === "object" && asset !== null ? String(asset.id ?? asset.asset_id ?? asset.node_id ?? "") : String(asset);
}

function setLayerVisible(layer, visible) {
  if (visible) app.layers.add(layer);
  else app.layers.delete(layer);
  const box = document.querySelector(`input[data-layer="${layer}"]`);
  if (box) box.checked = visible;
  if (layer === "buildings") app.buildings?.setVisible(visible);
  if (layer === "flood") app.flood?.setVisible(visible);
  if (layer === "grid" || layer === "outages") app.grid?.setVisible(layer, visible);
  if (layer === "sensors") app.sensors?.setVisible(visible);
  writeState({ layers: LAYERS.filter((l) => app.layers.has(l)).join(",") });
}

function setColourMode(mode) {
  app.buildings.setMode(mode);
  $("colour-mode").value = app.buildings.mode;
  renderLegend($("building-legend"), app.buildings.legend());
  writeState({ colour: app.buildings.mode });
}

function homeView(viewer, tileset) {
  const sphere = tileset.boundingSphere;
  viewer.camera.flyToBoundingSphere(sphere, {
    duration: 0,
    offset: new Cesium.HeadingPitchRange(0, Cesium.Math.toRadians(-45), sphere.radius * 2.2),
  });
}

// --- picking -------------------------------------------------------------------------------------------------

async function showPicked(picked) {
  const { info, buildings } = app;
  if (picked instanceof Cesium.Cesium3DTileFeature) {
    const id = featureId(picked);
    buildings.select(id);
    const sections = [{ properties: buildings.properties(picked) }];
    const result = buildings.results?.get(id);
    if (result) sections.push({ heading: "Scenario results", properties: result });
    info.show(`Building ${id}`, sections);
    writeState({ select: `building:${id}` });
    return;
  }
  buildings.select(null);
  const data = picked && picked.id;
  if (data && data.kind && data.feature) {
    showGridFeature(data.kind, data.feature, data);
    return;
  }
  if (data && data.kind === "sensor" && app.sensors) {
    const details = await app.sensors.details(data.thing);
    info.show(details.title, [{ properties: details.properties }], details.extra);
    writeState({ select: `sensor:${data.thing}` });
    return;
  }
  if (data instanceof Cesium.Entity && data.properties && data.properties.citytwin) {
    const outage = data.properties.citytwin.getValue().feature;
    info.show(`Outage ${outage.id}`, [{ properties: outage.properties }]);
    writeState({ select: `outage:${outage.id}` });
    return;
  }
  info.hide();
}

function showGridFeature(kind, feature, drawn = {}) {
  const props = { id: feature.id, ...feature.properties };
  if (kind === "grid_switch") props.state_on_map = drawn.open ? "open" : "closed";
  if (drawn.deenergised !== undefined) props.energised = drawn.deenergised ? "no (de-energised)" : "yes";
  if (drawn.faulted) props.failed = "yes";
  const title = { grid_asset: "Grid asset", grid_line: "Line section", grid_switch: "Switch" }[kind] || "Feature";
  app.info.show(`${title} ${feature.id}`, [{ properties: props }]);
  writeState({ select: `${kind}:${feature.id}` });
}

// Re-open the info panel for the object named in the URL (select=kind:id).
async function restoreSelection(select) {
  const [kind, id] = [select.slice(0, select.indexOf(":")), select.slice(select.indexOf(":") + 1)];
  if (!id) return;
  if (kind === "building" && app.caps.ogc) {
    const feature = await getJSON(`/ogc/collections/buildings/items/${encodeURIComponent(id)}`);
    app.buildings.select(id);
    const sections = [{ properties: { id: feature.id, ...feature.properties } }];
    const result = app.buildings.results?.get(String(id));
    if (result) sections.push({ heading: "Scenario results", properties: result });
    app.info.show(`Building ${id}`, sections);
  } else if (kind.startsWith("grid_") && app.grid) {
    const feature = app.grid.feature(kind, id);
    if (feature) showGridFeature(kind, feature, { deenergised: app.grid.deenergised.has(feature.id) });
  } else if (kind === "sensor" && app.sensors && app.sensors.things.has(Number(id))) {
    const details = await app.sensors.details(Number(id));
    app.info.show(details.title, [{ properties: details.properties }], details.extra);
  } else if (kind === "outage" && app.caps.outages) {
    const outage = await getJSON(`/api/outages/${encodeURIComponent(id)}`);
    app.info.show(`Outage ${outage.id}`, [{ properties: outage.properties }]);
  }
}

function installPicking(viewer) {
  const handler = new Cesium.ScreenSpaceEventHandler(viewer.scene.canvas);
  handler.setInputAction((click) => {
    showPicked(viewer.scene.pick(click.position)).catch((error) => warn("showing the picked object", error));
  }, Cesium.ScreenSpaceEventType.LEFT_CLICK);

  const tooltip = $("tooltip");
  let pending = null;
  let scheduled = false;
  let hovered = null;
  const refresh = () => {
    if (hovered === null || !app.sensors) {
      tooltip.hidden = true;
      return;
    }
    tooltip.textContent = app.sensors.describe(hovered);
    tooltip.hidden = false;
  };
  app.refreshTooltip = refresh;
  handler.setInputAction((move) => {
    pending = move.endPosition;
    if (scheduled) return;
    scheduled = true;
    requestAnimationFrame(() => {
      scheduled = false;
      const position = pending;
      const picked = viewer.scene.pick(position);
      const data = picked && picked.id;
      hovered = data && data.kind === "sensor" ? data.thing : null;
      if (data && data.kind === "grid_switch") {
        tooltip.textContent = `switch ${data.feature.id}: ${data.open ? "open" : "closed"}`;
        tooltip.hidden = false;
      } else {
        refresh();
      }
      tooltip.style.left = `${position.x + 14}px`;
      tooltip.style.top = `${position.y + 10}px`;
      viewer.scene.canvas.style.cursor = picked ? "pointer" : "";
    });
  }, Cesium.ScreenSpaceEventType.MOUSE_MOVE);
}

// --- optional parts ------------------------------------------------------------------------------------------

async function loadGrid(caps) {
  if (!caps.ogc) {
    $("outage-summary").textContent = "grid layers are not available on this server";
    return;
  }
  app.grid = new GridLayer(app.viewer);
  const counts = await app.grid.load();
  renderLegend($("grid-legend"), app.grid.legend());
  $("outage-summary").textContent = `${counts.lines} line sections, ${counts.switches} switches`;
  if (caps.outages) await refreshOutages();
  app.grid.setVisible("grid", app.layers.has("grid"));
  app.grid.setVisible("outages", app.layers.has("outages"));
}

app.refreshOutages = () => refreshOutages();

async function refreshOutages() {
  const active = await app.grid.loadOutages();
  const out = active.reduce(
    (sum, o) => sum + (o.properties.customers_affected || 0) - (o.properties.customers_restored || 0), 0);
  const c = app.grid.counts();
  $("outage-summary").textContent = active.length
    ? `${active.length} active outage(s), ${out} customers out; ${c.deenergised} elements de-energised, `
      + `${c.openSwitches} switches open`
    : `no active outages; ${c.openSwitches} switches open`;
}

async function loadSensors(caps) {
  if (!caps.staBase) {
    $("sensor-status").textContent = "live telemetry is not available on this server";
    return;
  }
  app.sensors = new SensorLayer(app.viewer, { staBase: caps.staBase, onStatus: (m) => { $("sensor-status").textContent = m; } });
  const count = await app.sensors.load();
  app.sensors.onUpdate = () => app.refreshTooltip && app.refreshTooltip();
  renderLegend($("sensor-legend"), app.sensors.legend());
  $("sensor-status").textContent = `${count} sensors; connecting…`;
  app.sensors.setVisible(app.layers.has("sensors"));
  app.sensors.connect();
}

async function loadFlood(caps, state) {
  const flood = new FloodLayer(app.viewer, {
    empty: $("flood-empty"), controls: $("flood-controls"), run: $("flood-run"), time: $("flood-time"),
    timeLabel: $("flood-time-label"), play: $("flood-play"), legend: $("flood-legend"),
  }, { onChange: ({ run, t }) => writeState({ run, t }) });
  app.flood = flood;
  flood.setVisible(app.layers.has("flood"));
  if (!caps.runs) {
    $("flood-empty").textContent = "flood maps are not available on this server";
    return;
  }
  const runId = await flood.listRuns(state.run);
  if (runId !== null) await flood.setRun(runId, state.time);
}

async function onScenarioResults(runId, run, buildingResults) {
  app.buildings.setResults(buildingResults);
  // A scenario restored from the URL keeps the URL's colouring; a new run shows its flood depths.
  setColourMode(app.keepColour ? app.buildings.mode : "flood");
  app.keepColour = false;
  const summary = run.summary || {};
  if (app.grid) {
    const states = switchStatesAfter(summary.restoration_plan);
    app.grid.setScenario(runId, (summary.failed_assets || []).map(idOf), states);
    if (app.caps.outages) await refreshOutages().catch((error) => warn("outages", error));
  }
  if (app.caps.runs) {
    const floodRun = summary.flood_run_id ?? runId;
    if (app.flood.runId !== floodRun) { // (already shown when restored from the URL: keep its frame)
      await app.flood.listRuns(floodRun);
      await app.flood.setRun(floodRun).catch((error) => warn("flood map of the scenario", error));
    }
  }
  writeState({ scenario: runId });
  app.scenarioDone = runId;
}

function setupScenario(caps, state) {
  app.scenario = new ScenarioPanel({
    form: $("scenario-form"), rain: $("scenario-rain"), hours: $("scenario-hours"), key: $("api-key"), run: $("scenario-run"),
    progress: $("scenario-progress"), status: $("scenario-status"), results: $("scenario-results"),
    unavailable: $("scenario-unavailable"),
  }, { onResults: onScenarioResults, onRun: (id) => writeState({ scenario: id }) });
  if (!caps.scenarios) {
    app.scenario.disable("scenarios are not available on this server");
    return null;
  }
  return state.scenario !== null ? app.scenario.follow(state.scenario) : null;
}

// --- start ---------------------------------------------------------------------------------------------------

async function chooseTileset() {
  const params = new URLSearchParams(window.location.search);
  const { tilesets } = await getJSON("/tiles");
  if (!tilesets.length) return null;
  const wanted = params.get("tileset") || "buildings";
  return (tilesets.find((t) => t.name === wanted) || tilesets[0]).name;
}

async function main() {
  if (typeof Cesium === "undefined") {
    throw new Error("CesiumJS did not load from /cesium/ (run `npm install` where the server runs)");
  }
  const state = readState();
  if (state.layers) app.layers = state.layers;
  const viewer = createViewer("map");
  app.viewer = viewer;
  app.info = new InfoPanel({ panel: $("info"), title: $("info-title"), body: $("info-body"), close: $("info-close") },
    { onClose: () => { app.buildings.select(null); writeState({ select: null }); } });
  app.buildings = new BuildingLayer(viewer);
  for (const box of document.querySelectorAll("input[data-layer]")) {
    box.checked = app.layers.has(box.dataset.layer);
    box.addEventListener("change", () => setLayerVisible(box.dataset.layer, box.checked));
  }
  $("colour-mode").addEventListener("change", (e) => setColourMode(e.target.value));
  setColourMode(state.colour || "height");

  const caps = await capabilities();
  app.caps = caps;
  setStatus("loading buildings…");
  // The other layers load while the tiles do.
  const parts = [
    loadGrid(caps).catch((e) => warn("grid", e)),
    loadSensors(caps).catch((e) => { $("sensor-status").textContent = warn("sensors", e); }),
    loadFlood(caps, state).catch((e) => { $("flood-empty").textContent = `no flood map: ${e.detail || e.message}`; $("flood-empty").hidden = false; warn("flood", e); }),
  ];
  const name = await chooseTileset();
  if (name === null) {
    setStatus("no tileset yet: run `citytwin tiles build`", true);
  } else {
    const tileset = await app.buildings.load(`/tiles/${name}/tileset.json`);
    app.buildings.setVisible(app.layers.has("buildings"));
    setMiddaySun(viewer, Cesium.Math.toDegrees(Cesium.Cartographic.fromCartesian(tileset.boundingSphere.center).longitude));
    if (state.camera) applyCamera(viewer, state.camera);
    else homeView(viewer, tileset);
    viewer.homeButton.viewModel.command.beforeExecute.addEventListener((e) => {
      e.cancel = true;
      homeView(viewer, tileset);
    });
  }
  viewer.camera.moveEnd.addEventListener(() => writeState({ cam: cameraToText(viewer.camera) }));
  installPicking(viewer);
  await Promise.all(parts);
  app.keepColour = Boolean(state.colour);
  const following = setupScenario(caps, state);
  if (following) following.catch((e) => app.scenario.showError(e));
  if (state.select) await restoreSelection(state.select).catch((e) => warn(`selection ${state.select}`, e));
  // For scripts and tests: a promise of the next rendered frame (styles and layers applied).
  app.afterRender = () => new Promise((resolve) => {
    const remove = viewer.scene.postRender.addEventListener(() => {
      remove();
      resolve(true);
    });
    viewer.scene.requestRender();
  });
  viewer.scene.requestRender();
  setStatus(name === null ? "no tileset yet" : "ready");
  app.ready = true;
}

main().catch((error) => {
  app.failed = String(error && error.message || error);
  setStatus(`failed to start: ${app.failed}`, true);
  console.warn(error);
});
