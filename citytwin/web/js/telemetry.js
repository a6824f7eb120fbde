// Live telemetry: one point per sensor (Thing) in a PointPrimitiveCollection, latest values pushed over the
// WebSocket feed /ws/telemetry, the values on hover, a chart of recent observations on click.
// Anomalous values turn the point red with a thick outline.

import { getJSON } from "./api.js";
import { lineChart } from "./chart.js";

const HEIGHT_M = 6;
const KIND_COLOURS = {
  weather: "#1e88e5", rain_gauge: "#1e88e5", river_level: "#00897b", water_level: "#00897b",
  meter: "#8e24aa", power: "#8e24aa", substation_load: "#6d4c41", substation: "#6d4c41", other: "#546e7a",
};
const ANOMALY = "#e53935";

function numberText(value) {
  if (typeof value !== "number") return String(value);
  // At most two decimals, no trailing zeros: 17.25, 3.1, 99.
  return String(Math.round(value * 100) / 100);
}

// Quality flags that mark an anomaly ("late" only says a value arrived out of order).
export function anomalyFlags(flags) {
  return Array.isArray(flags) ? flags.filter((f) => f !== "late") : [];
}

// One feed frame -> [{datastream, time, value, flags}]. Frames of /ws/telemetry (citytwin/telemetry/livefeed.py):
//   {"type": "snapshot"|"observations", "data": [{datastream, thing, property, time, result, flags, lon, lat}],
//    "anomalies": [{datastream, time, result, flags}]}
// Anomalies are applied after the data; one older than the latest value of its datastream is dropped by apply().
export function normaliseMessage(message) {
  if (!message || (message.type && !["snapshot", "observations"].includes(message.type))) return [];
  const items = [...(message.data || []), ...(message.anomalies || [])];
  const out = [];
  for (const item of items) {
    if (item.datastream === undefined || item.result === undefined) continue;
    out.push({ datastream: Number(item.datastream), time: item.time ?? null, value: item.result,
      flags: anomalyFlags(item.flags) });
  }
  return out;
}

export class SensorLayer {
  constructor(viewer, { staBase, onStatus = () => {} }) {
    this.viewer = viewer;
    this.staBase = staBase;
    this.onStatus = onStatus;
    this.points = viewer.scene.primitives.add(new Cesium.PointPrimitiveCollection());
    this.things = new Map(); // thing id -> {id, name, kind, lon, lat, datastreams: [ids], point}
    this.datastreams = new Map(); // datastream id -> {id, name, unit, thing, latest: {time, value, anomaly}}
    this.socket = null;
    this.retry = 0;
    this.closed = false;
    this.messages = 0;
    this.onUpdate = () => {};
  }

  async load() {
    let url = `${this.staBase}/Things?$expand=Locations,Datastreams&$top=1000`;
    while (url) {
      const page = await getJSON(url);
      for (const thing of page.value || []) this.addThing(thing);
      url = page["@iot.nextLink"] || null;
    }
    return this.things.size;
  }

  addThing(thing) {
    const location = (thing.Locations || [])[0];
    const geometry = location && (location.location?.geometry || location.location);
    if (!geometry || geometry.type !== "Point") return;
    const [lon, lat] = geometry.coordinates;
    const id = thing["@iot.id"];
    const kind = thing.properties?.kind || "other";
    const entry = { id, name: thing.name, description: thing.description, kind, lon, lat, properties: thing.properties || {}, datastreams: [] };
    for (const ds of thing.Datastreams || []) {
      const dsId = Number(ds["@iot.id"]);
      entry.datastreams.push(dsId);
      this.datastreams.set(dsId, {
        id: dsId, name: ds.name, unit: ds.unitOfMeasurement?.symbol || "", thing: id, latest: null,
        property: ds.name.includes(":") ? ds.name.split(":").pop() : ds.name,
      });
    }
    entry.point = this.points.add({
      position: Cesium.Cartesian3.fromDegrees(lon, lat, HEIGHT_M),
      pixelSize: 11,
      color: Cesium.Color.fromCssColorString(KIND_COLOURS[kind] || KIND_COLOURS.other),
      outlineColor: Cesium.Color.WHITE,
      outlineWidth: 2,
      scaleByDistance: new Cesium.NearFarScalar(500, 1.0, 8000, 0.5),
      disableDepthTestDistance: Number.POSITIVE_INFINITY,
      id: { kind: "sensor", thing: id },
    });
    this.things.set(id, entry);
  }

  connect() {
    if (this.closed || !this.datastreams.size) return;
    const scheme = window.location.protocol === "https:" ? "wss" : "ws";
    // Ask for our datastreams by id; with very many, by the sensors' bounding box instead (a short URL).
    let filter;
    if (this.datastreams.size <= 1000) {
      filter = `datastreams=${[...this.datastreams.keys()].join(",")}`;
    } else {
      const things = [...this.things.values()];
      const lons = things.map((t) => t.lon);
      const lats = things.map((t) => t.lat);
      filter = `bbox=${Math.min(...lons)},${Math.min(...lats)},${Math.max(...lons)},${Math.max(...lats)}`;
    }
    const socket = new WebSocket(`${scheme}://${window.location.host}/ws/telemetry?${filter}`);
    this.socket = socket;
    socket.addEventListener("open", () => {
      this.retry = 0;
      this.onStatus(`live · ${this.things.size} sensors`);
    });
    socket.addEventListener("message", (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch (_) {
        return;
      }
      this.apply(normaliseMessage(message));
    });
    socket.addEventListener("close", () => {
      if (this.closed) return;
      const delay = Math.min(30000, 1000 * 2 ** this.retry++);
      this.onStatus(`feed interrupted; reconnecting in ${Math.round(delay / 1000)} s`);
      setTimeout(() => this.connect(), delay);
    });
  }

  apply(updates) {
    let changed = false;
    for (const update of updates) {
      const ds = this.datastreams.get(update.datastream);
      if (!ds) continue;
      if (ds.latest && update.time && ds.latest.time) {
        const newer = new Date(update.time) - new Date(ds.latest.time);
        if (newer < 0) continue;
        // The same observation again (an anomaly notice after its data row): keep the flags it carries.
        if (newer === 0 && !update.flags.length) continue;
      }
      ds.latest = { time: update.time, value: update.value, flags: update.flags, anomaly: update.flags.length > 0 };
      this.restylePoint(this.things.get(ds.thing));
      changed = true;
      this.messages++;
    }
    if (changed) {
      this.viewer.scene.requestRender();
      this.onUpdate();
    }
  }

  restylePoint(thing) {
    if (!thing) return;
    const anomaly = thing.datastreams.some((id) => this.datastreams.get(id)?.latest?.anomaly);
    thing.point.color = Cesium.Color.fromCssColorString(anomaly ? ANOMALY : KIND_COLOURS[thing.kind] || KIND_COLOURS.other);
    thing.point.outlineColor = anomaly ? Cesium.Color.fromCssColorString("#ffeb3b") : Cesium.Color.WHITE;
    thing.point.outlineWidth = anomaly ? 4 : 2;
    thing.point.pixelSize = anomaly ? 15 : 11;
  }

  // Text for the hover tooltip: the sensor and its latest values.
  describe(thingId) {
    const thing = this.things.get(thingId);
    if (!thing) return "";
    const parts = thing.datastreams.map((id) => {
      const ds = this.datastreams.get(id);
      if (!ds.latest) return `${ds.property}: –`;
      const flag = ds.latest.anomaly ? ` ⚠ ${ds.latest.flags.join(", ")}` : "";
      return `${ds.property}: ${numberText(ds.latest.value)} ${ds.unit}${flag}`.trim();
    });
    return `${thing.name} — ${parts.join(" · ")}`;
  }

  latest(datastreamId) {
    const ds = this.datastreams.get(Number(datastreamId));
    return ds && ds.latest ? { ...ds.latest } : null;
  }

  // Info panel content: properties, latest values and a chart of recent observations per datastream.
  async details(thingId) {
    const thing = this.things.get(thingId);
    const charts = [];
    for (const id of thing.datastreams) {
      const ds = this.datastreams.get(id);
      const url = `${this.staBase}/Datastreams(${id})/Observations?$top=50&$orderby=phenomenonTime%20desc`;
      let observations = [];
      try {
        const page = await getJSON(url);
        observations = (page.value || []).map((o) => ({
          time: o.phenomenonTime, value: o.result,
          anomaly: anomalyFlags(o.resultQuality).length > 0,
        }));
      } catch (error) {
        observations = [];
      }
      if (ds.latest && !observations.some((o) => o.time === ds.latest.time)) observations.push(ds.latest);
      const block = document.createElement("div");
      block.className = "chart";
      const title = document.createElement("div");
      title.textContent = `${ds.property} (${ds.unit})`;
      block.append(title, lineChart(observations, { unit: ds.unit }));
      charts.push(block);
    }
    const properties = { id: thing.id, name: thing.name, kind: thing.kind, description: thing.description };
    for (const id of thing.datastreams) {
      const ds = this.datastreams.get(id);
      const flags = ds.latest && ds.latest.anomaly ? ` (anomaly: ${ds.latest.flags.join(", ")})` : "";
      properties[ds.property] = ds.latest ? `${numberText(ds.latest.value)} ${ds.unit}${flags}` : "–";
    }
    return { title: `Sensor ${thing.name}`, properties, extra: charts };
  }

  setVisible(visible) {
    this.points.show = visible;
    this.viewer.scene.requestRender();
  }

  legend() {
    const kinds = [...new Set([...this.things.values()].map((t) => t.kind))];
    return {
      title: null,
      items: [...kinds.map((k) => ({ label: k.replace(/_/g, " "), colour: KIND_COLOURS[k] || KIND_COLOURS.other, shape: "round" })),
        { label: "anomaly", colour: ANOMALY, shape: "round" }],
    };
  }

  close() {
    this.closed = true;
    if (this.socket) this.socket.close();
  }
}
