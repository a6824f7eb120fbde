// The electricity grid: line sections, substations / transformers / buses / service points, switches with
// their state, outage areas, and which parts are de-energised.
//
// Energisation is traced here, in the browser, from the OGC layers: a breadth-first search from every
// source over line sections and closed switches, skipping faulted assets and opened switches (of active
// outages, or of the scenario shown). Whatever the search does not reach is de-energised. That is the same
// rule the grid model applies (citytwin/models/grid/topology.py), over a few thousand elements: milliseconds.

import { fetchAllFeatures, getJSON } from "./api.js";

const LINE_HEIGHT_M = 1.5;
const POINT_HEIGHT_M = 3;
const FEEDER_COLOURS = ["#3465a4", "#2f8f83", "#6a4c93", "#7a7d2a", "#8b5a2b", "#1f4e79", "#5d6d7e", "#9c640c"];
const COLOURS = {
  deenergised: "#e53935",
  faulted: "#b71c1c",
  source: "#311b92",
  substation: "#4527a0",
  transformer: "#f9a825",
  bus: "#607d8b",
  service_point: "#90a4ae",
  switchClosed: "#263238",
  switchOpen: "#ffffff",
  switchOpenOutline: "#d50000",
  outage: "#ff1744",
};
const ACTIVE = new Set(["predicted", "confirmed", "partially_restored"]);
// Small, numerous elements only near the camera (m), so a whole city stays readable from above; failed,
// de-energised and open elements always show.
const NEAR_M = { service_point: 800, bus: 1500, transformer: 3000, fuse: 1500, disconnector: 1500 };
const SHRINK = new Cesium.NearFarScalar(500, 1.0, 8000, 0.5);

function nearOnly(kind, always) {
  const far = NEAR_M[kind];
  return far && !always ? new Cesium.DistanceDisplayCondition(0, far) : undefined;
}

function css(colour, alpha = 1) {
  return Cesium.Color.fromCssColorString(colour).withAlpha(alpha);
}

function positions(coords, height) {
  return coords.map(([lon, lat]) => Cesium.Cartesian3.fromDegrees(lon, lat, height));
}

function lineParts(geometry) {
  if (!geometry) return [];
  if (geometry.type === "LineString") return [geometry.coordinates];
  if (geometry.type === "MultiLineString") return geometry.coordinates;
  return [];
}

// Final state of every switch a restoration plan operates: steps run in time order, the last one wins
// (trip/open -> "open", close -> "closed"); a "trip" of a source (loss of supply) is not a switch.
export function switchStatesAfter(plan) {
  const states = new Map();
  for (const step of plan || []) {
    if (typeof step !== "object" || step === null || !step.switch_id || step.device_kind === "source") continue;
    states.set(String(step.switch_id), step.action === "close" ? "closed" : "open");
  }
  return states;
}

export class GridLayer {
  constructor(viewer) {
    this.viewer = viewer;
    this.lines = viewer.scene.primitives.add(new Cesium.PolylineCollection());
    this.points = viewer.scene.primitives.add(new Cesium.PointPrimitiveCollection());
    this.outageSource = new Cesium.CustomDataSource("outages");
    viewer.dataSources.add(this.outageSource);
    this.features = { lines: [], assets: [], switches: [] };
    this.feederColour = new Map();
    this.outages = [];
    this.scenario = null; // {failed: Set, states: Map switch id -> "open"|"closed"} of the scenario shown
    this.deenergised = new Set();
    this.visible = { grid: true, outages: true };
  }

  async load() {
    const [lines, assets, switches] = await Promise.all([
      fetchAllFeatures("grid_lines"), fetchAllFeatures("grid_assets"), fetchAllFeatures("grid_switches"),
    ]);
    this.features = { lines, assets, switches };
    const feeders = [...new Set(lines.map((l) => l.properties.feeder).filter(Boolean))].sort();
    feeders.forEach((f, i) => this.feederColour.set(f, FEEDER_COLOURS[i % FEEDER_COLOURS.length]));
    this.redraw();
    return { lines: lines.length, assets: assets.length, switches: switches.length };
  }

  // Real outages, plus the simulated ones of the scenario shown (other scenarios' stay off the map).
  async loadOutages() {
    const collection = await getJSON("/api/outages?limit=1000");
    const shown = this.scenario ? this.scenario.runId : null;
    this.outages = (collection.features || []).filter(
      (o) => o.properties.kind !== "simulated" || (shown !== null && o.properties.run_id === shown));
    this.redraw();
    return this.outages.filter((o) => ACTIVE.has(o.properties.status));
  }

  // The scenario shown: failedAssets are ids of nodes / sections / switches that failed; switchStates maps
  // switch id -> "open"|"closed" after the scenario's restoration plan.
  setScenario(runId, failedAssets, switchStates = new Map()) {
    this.scenario = failedAssets ? { runId, failed: new Set(failedAssets.map(String)), states: switchStates } : null;
    this.redraw();
  }

  faultedAndOpened() {
    const faulted = new Set();
    const opened = new Set();
    for (const outage of this.outages) {
      if (!ACTIVE.has(outage.properties.status)) continue;
      (outage.properties.faulted_assets || []).forEach((a) => faulted.add(String(a)));
      (outage.properties.opened_switches || []).forEach((s) => opened.add(String(s)));
    }
    if (this.scenario) this.scenario.failed.forEach((a) => faulted.add(a));
    return { faulted, opened };
  }

  switchIsOpen(sw, opened) {
    const planned = this.scenario && this.scenario.states.get(String(sw.id));
    if (planned) return planned === "open";
    return sw.properties.present_state === "open" || opened.has(String(sw.id));
  }

  // Node ids and section ids not reachable from a source.
  trace(faulted, opened) {
    const adjacency = new Map();
    const link = (a, b, edge) => {
      if (!adjacency.has(a)) adjacency.set(a, []);
      adjacency.get(a).push([b, edge]);
    };
    for (const line of this.features.lines) {
      if (faulted.has(String(line.id))) continue;
      const { from_node: a, to_node: b } = line.properties;
      link(a, b, line.id);
      link(b, a, line.id);
    }
    for (const sw of this.features.switches) {
      if (faulted.has(String(sw.id)) || this.switchIsOpen(sw, opened)) continue;
      const { from_node: a, to_node: b } = sw.properties;
      link(a, b, sw.id);
      link(b, a, sw.id);
    }
    const reached = new Set();
    const queue = this.features.assets
      .filter((a) => a.properties.kind === "source" && !faulted.has(String(a.id)))
      .map((a) => a.id);
    queue.forEach((id) => reached.add(id));
    while (queue.length) {
      const node = queue.pop();
      for (const [next] of adjacency.get(node) || []) {
        if (!reached.has(next) && !faulted.has(String(next))) {
          reached.add(next);
          queue.push(next);
        }
      }
    }
    const dead = new Set();
    for (const asset of this.features.assets) if (!reached.has(asset.id)) dead.add(asset.id);
    for (const line of this.features.lines) {
      const { from_node: a, to_node: b } = line.properties;
      if (faulted.has(String(line.id)) || !reached.has(a) || !reached.has(b)) dead.add(line.id);
    }
    return dead;
  }

  redraw() {
    const { faulted, opened } = this.faultedAndOpened();
    const anySources = this.features.assets.some((a) => a.properties.kind === "source");
    this.deenergised = anySources ? this.trace(faulted, opened) : new Set();
    this.lines.removeAll();
    this.points.removeAll();
    for (const line of this.features.lines) {
      const dead = this.deenergised.has(line.id);
      const colour = faulted.has(String(line.id)) ? COLOURS.faulted
        : dead ? COLOURS.deenergised : this.feederColour.get(line.properties.feeder) || "#37474f";
      for (const part of lineParts(line.geometry)) {
        this.lines.add({
          positions: positions(part, LINE_HEIGHT_M),
          width: dead ? 4 : 2,
          material: Cesium.Material.fromType("Color", { color: css(colour) }),
          id: { kind: "grid_line", feature: line, deenergised: dead },
        });
      }
    }
    for (const asset of this.features.assets) {
      const [lon, lat] = asset.geometry.coordinates;
      const kind = asset.properties.kind;
      const isFaulted = faulted.has(String(asset.id));
      const dead = this.deenergised.has(asset.id);
      const size = { source: 14, substation: 14, transformer: 9, bus: 5, service_point: 4 }[kind] || 5;
      this.points.add({
        position: Cesium.Cartesian3.fromDegrees(lon, lat, POINT_HEIGHT_M),
        pixelSize: isFaulted ? size + 6 : size,
        color: css(isFaulted ? COLOURS.faulted : dead && kind !== "bus" ? COLOURS.deenergised : COLOURS[kind] || "#607d8b"),
        outlineColor: css(isFaulted ? "#ffeb3b" : "#ffffff"),
        outlineWidth: isFaulted ? 3 : 1,
        distanceDisplayCondition: nearOnly(kind, isFaulted || (dead && kind !== "service_point")),
        scaleByDistance: SHRINK,
        disableDepthTestDistance: kind === "service_point" ? 0 : Number.POSITIVE_INFINITY,
        id: { kind: "grid_asset", feature: asset, faulted: isFaulted, deenergised: dead },
      });
    }
    for (const sw of this.features.switches) {
      const [lon, lat] = sw.geometry.coordinates;
      const open = this.switchIsOpen(sw, opened);
      const changed = open !== (sw.properties.normal_state === "open");
      this.points.add({
        position: Cesium.Cartesian3.fromDegrees(lon, lat, POINT_HEIGHT_M + 1),
        pixelSize: open ? 10 : 7,
        color: css(open ? COLOURS.switchOpen : COLOURS.switchClosed),
        outlineColor: css(open ? COLOURS.switchOpenOutline : changed ? "#ff9100" : "#ffffff"),
        outlineWidth: open ? 3 : 1,
        distanceDisplayCondition: nearOnly(sw.properties.kind, open || changed),
        scaleByDistance: SHRINK,
        disableDepthTestDistance: Number.POSITIVE_INFINITY,
        id: { kind: "grid_switch", feature: sw, open, changed },
      });
    }
    this.drawOutages();
    this.lines.show = this.visible.grid;
    this.points.show = this.visible.grid;
    this.viewer.scene.requestRender();
  }

  drawOutages() {
    this.outageSource.entities.removeAll();
    for (const outage of this.outages) {
      if (!ACTIVE.has(outage.properties.status) || !outage.geometry) continue;
      const polygons = outage.geometry.type === "Polygon" ? [outage.geometry.coordinates]
        : outage.geometry.type === "MultiPolygon" ? outage.geometry.coordinates : [];
      for (const rings of polygons) {
        this.outageSource.entities.add({
          polygon: {
            hierarchy: new Cesium.PolygonHierarchy(positions(rings[0], 0), rings.slice(1).map((r) => new Cesium.PolygonHierarchy(positions(r, 0)))),
            // A flat polygon just above the ellipsoid (the map's ground), under the buildings: cheaper and
            // steadier than a ground-clamped (classification) primitive.
            height: 0.3,
            material: css(COLOURS.outage, 0.3),
            outline: true,
            outlineColor: css(COLOURS.outage, 0.9),
          },
          properties: { citytwin: { kind: "outage", feature: outage } },
        });
      }
    }
    this.outageSource.show = this.visible.outages;
  }

  setVisible(layer, visible) {
    this.visible[layer] = visible;
    if (layer === "grid") {
      this.lines.show = visible;
      this.points.show = visible;
    } else {
      this.outageSource.show = visible;
    }
    this.viewer.scene.requestRender();
  }

  legend() {
    const feeders = [...this.feederColour.entries()];
    const items = feeders.slice(0, 6).map(([feeder, colour]) => ({ label: `feeder ${feeder}`, colour, shape: "line" }));
    if (feeders.length > 6) items.push({ label: `… ${feeders.length} feeders in all`, colour: "#9e9e9e", shape: "line" });
    return {
      title: null,
      items: [
        ...items,
        { label: "de-energised", colour: COLOURS.deenergised, shape: "line" },
        { label: "substation", colour: COLOURS.substation, shape: "round" },
        { label: "transformer", colour: COLOURS.transformer, shape: "round" },
        { label: "switch closed", colour: COLOURS.switchClosed, shape: "round" },
        { label: "switch open", colour: COLOURS.switchOpen, shape: "hollow" },
        { label: "failed asset", colour: COLOURS.faulted, shape: "round" },
        { label: "outage area", colour: "rgba(255, 23, 68, 0.35)" },
      ],
    };
  }

  // Ids of de-energised nodes (substations, buses, transformers, service points), sorted.
  deenergisedNodes() {
    return this.features.assets.filter((a) => this.deenergised.has(a.id)).map((a) => String(a.id)).sort();
  }

  feature(kind, id) {
    const list = { grid_asset: this.features.assets, grid_line: this.features.lines, grid_switch: this.features.switches }[kind];
    return list ? list.find((f) => String(f.id) === String(id)) || null : null;
  }

  // Counts for tests and the status line.
  counts() {
    const { opened } = this.faultedAndOpened();
    return {
      lines: this.features.lines.length,
      assets: this.features.assets.length,
      switches: this.features.switches.length,
      openSwitches: this.features.switches.filter((s) => this.switchIsOpen(s, opened)).length,
      deenergised: this.deenergised.size,
      activeOutages: this.outages.filter((o) => ACTIVE.has(o.properties.status)).length,
      outageAreas: this.outageSource.entities.values.length,
    };
  }
}
