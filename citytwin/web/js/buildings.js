// The city's 3D buildings (3D Tiles 1.1 from /tiles) and their colouring.
//
// One Cesium3DTileStyle whose colour is a JavaScript function of the feature (Cesium3DTileStyle accepts any
// object with evaluateColor): a constant-time Map lookup per building, so scenario results for thousands of
// buildings recolour the city without re-tiling and without a style expression per building. Tiles that
// load later are styled by Cesium with the same function.

import { rampColour, hexToRgb } from "./legend.js";
import { groundOffsetMatrix } from "./viewer.js";

const NO_DATA = "#c9ccd1";
const SELECTED = "#ffd400";

const HEIGHT_STOPS = [[0, "#fff7bc"], [10, "#fee391"], [20, "#fec44f"], [35, "#ec7014"], [60, "#993404"]];
// Same depth classes as the flood overlay (citytwin/api/routers/flood_layers.py DEPTH_STOPS).
const DEPTH_STOPS = [[0.02, "#c6e9ff"], [0.15, "#82c4f4"], [0.3, "#4292de"], [0.6, "#2166c4"],
  [1.2, "#103c96"], [2.0, "#081d58"]];
const DRY = "#efe9dc";
// Annual demand on a log10 scale: 1 MWh .. 10 GWh per year.
const DEMAND_STOPS = [[3, "#f7fcf5"], [4, "#c7e9c0"], [5, "#74c476"], [6, "#238b45"], [7, "#00441b"]];
const USE_COLOURS = {
  residential: "#e8c27d", apartment: "#d89b52", office: "#6f9fd8", retail: "#d8739f", industrial: "#8d7c6a",
  warehouse: "#a89274", school: "#7bbf6a", supermarket: "#b876d8", hospital: "#e35d5d", other: "#bfc3c8",
};
const OUTAGE_COLOURS = {
  out: "#d32f2f", interrupted: "#d32f2f", restored: "#ff9f1c", ok: "#8fbc8f", supplied: "#8fbc8f",
};

function numeric(value) {
  if (value === undefined || value === null) return null;
  const n = typeof value === "bigint" ? Number(value) : Number(value);
  // The tiles' noData sentinel for result columns is -9999.
  return Number.isFinite(n) && n > -9000 ? n : null;
}

export const MODES = {
  height: {
    title: "Height (m)",
    colour: (f) => rampColour(HEIGHT_STOPS, numeric(f.getProperty("height")) ?? 0),
    legend: () => HEIGHT_STOPS.map(([v, c], i) => ({ label: i === HEIGHT_STOPS.length - 1 ? `≥ ${v} m` : `${v} m`, colour: c })),
  },
  use: {
    title: "Use",
    colour: (f) => hexToRgb(USE_COLOURS[f.getProperty("use")] || USE_COLOURS.other),
    legend: () => Object.entries(USE_COLOURS).map(([use, c]) => ({ label: use, colour: c })),
  },
  flood: {
    title: "Maximum flood depth (m)",
    colour: (f, r) => {
      const depth = r ? numeric(r.max_depth_m) : numeric(f.getProperty("max_depth_m"));
      if (depth === null) return hexToRgb(NO_DATA);
      return depth < DEPTH_STOPS[0][0] ? hexToRgb(DRY) : rampColour(DEPTH_STOPS, depth);
    },
    legend: () => [{ label: "dry (< 0.02 m)", colour: DRY },
      ...DEPTH_STOPS.map(([v, c]) => ({ label: `${v} m`, colour: c })), { label: "no result", colour: NO_DATA }],
  },
  demand: {
    title: "Annual energy demand",
    colour: (f, r) => {
      const kwh = r ? numeric(r.annual_kwh) : numeric(f.getProperty("annual_kwh"));
      return kwh === null || kwh <= 0 ? hexToRgb(NO_DATA) : rampColour(DEMAND_STOPS, Math.log10(kwh));
    },
    legend: () => [...DEMAND_STOPS.map(([v, c]) => ({ label: `${10 ** (v - 3)} MWh/yr`, colour: c })),
      { label: "no result", colour: NO_DATA }],
  },
  outage: {
    title: "Supply during the scenario",
    colour: (f, r) => {
      const state = r ? r.outage_state : f.getProperty("outage_state");
      return hexToRgb(OUTAGE_COLOURS[state] || NO_DATA);
    },
    legend: () => [{ label: "out of supply", colour: OUTAGE_COLOURS.out },
      { label: "restored", colour: OUTAGE_COLOURS.restored }, { label: "supplied", colour: OUTAGE_COLOURS.ok },
      { label: "no result", colour: NO_DATA }],
  },
};

export function featureId(feature) {
  const id = feature.getProperty("id");
  return id === undefined || id === null ? null : String(id);
}

export class BuildingLayer {
  constructor(viewer) {
    this.viewer = viewer;
    this.tileset = null;
    this.mode = "height";
    this.results = null; // Map building id -> {max_depth_m, outage_state, annual_kwh} of the shown scenario
    this.selectedId = null;
    this.offset = 0;
    const style = new Cesium.Cesium3DTileStyle();
    const layer = this;
    style.color = {
      evaluateColor(feature, result) {
        const rgb = layer.colourOf(feature);
        return Cesium.Color.fromBytes(Math.round(rgb[0] * 255), Math.round(rgb[1] * 255), Math.round(rgb[2] * 255),
          255, result);
      },
      evaluate(feature) {
        return this.evaluateColor(feature, new Cesium.Color());
      },
    };
    this.style = style;
  }

  async load(url) {
    const tileset = await Cesium.Cesium3DTileset.fromUrl(url, { maximumScreenSpaceError: 16 });
    const { matrix, offset } = groundOffsetMatrix(tileset);
    tileset.modelMatrix = matrix;
    this.offset = offset;
    tileset.style = this.style;
    // Show the style colours as they are (the default HIGHLIGHT multiplies them with the mesh colour).
    tileset.colorBlendMode = Cesium.Cesium3DTileColorBlendMode.REPLACE;
    this.viewer.scene.primitives.add(tileset);
    this.tileset = tileset;
    return tileset;
  }

  colourOf(feature) {
    const id = featureId(feature);
    if (id !== null && id === this.selectedId) return hexToRgb(SELECTED);
    const result = this.results ? this.results.get(id) || null : null;
    const mode = MODES[this.mode] || MODES.height;
    if (this.results && !result && (this.mode === "flood" || this.mode === "outage")) {
      // A scenario is shown and this building is not in its results: unaffected.
      return this.mode === "flood" ? hexToRgb(DRY) : hexToRgb(OUTAGE_COLOURS.ok);
    }
    return mode.colour(feature, result);
  }

  restyle() {
    if (!this.tileset) return;
    this.tileset.makeStyleDirty();
    this.viewer.scene.requestRender();
  }

  setMode(mode) {
    this.mode = MODES[mode] ? mode : "height";
    this.restyle();
  }

  // results: {"<building id>": {max_depth_m, outage_state, annual_kwh}} from /api/scenarios/{id}/buildings.
  setResults(results) {
    this.results = results ? new Map(Object.entries(results)) : null;
    this.restyle();
  }

  select(id) {
    this.selectedId = id === null || id === undefined ? null : String(id);
    this.restyle();
  }

  legend() {
    const mode = MODES[this.mode] || MODES.height;
    return { title: mode.title, items: mode.legend() };
  }

  setVisible(visible) {
    if (this.tileset) this.tileset.show = visible;
    this.viewer.scene.requestRender();
  }

  // Loaded features of a building (a building lives in exactly one tile; a few tiles may be loaded at once).
  *loadedFeatures() {
    if (!this.tileset || !this.tileset.root) return;
    const stack = [this.tileset.root];
    while (stack.length) {
      const tile = stack.pop();
      const content = tile.content;
      if (content && tile.contentReady && content.featuresLength) {
        for (let i = 0; i < content.featuresLength; i++) yield content.getFeature(i);
      }
      stack.push(...tile.children);
    }
  }

  // The displayed colour of a building (CSS string), or null when no loaded tile holds it.
  featureColour(id) {
    const wanted = String(id);
    for (const feature of this.loadedFeatures()) {
      if (featureId(feature) === wanted) return feature.color.toCssColorString();
    }
    return null;
  }

  properties(feature) {
    const out = {};
    for (const name of feature.getPropertyIds()) {
      const value = feature.getProperty(name);
      out[name] = typeof value === "bigint" ? value.toString() : value;
    }
    return out;
  }
}
