// Flood overlay: a run's depth PNGs (EPSG:4326, from /api/runs/{id}/flood) as a single-tile imagery layer
// over the run's rectangle, with a time slider whose last position is the maximum depth over the run.

import { getJSON } from "./api.js";
import { renderLegend, rgbaCss } from "./legend.js";

function formatTime(seconds) {
  const h = Math.floor(seconds / 3600);
  const m = Math.round((seconds % 3600) / 60);
  return h ? `${h} h ${String(m).padStart(2, "0")} min` : `${m} min`;
}

export class FloodLayer {
  constructor(viewer, elements, { onChange = () => {} } = {}) {
    this.viewer = viewer;
    this.el = elements; // {empty, controls, run, time, timeLabel, play, legend}
    this.onChange = onChange;
    this.meta = null;
    this.runId = null;
    this.layer = null;
    this.visible = true;
    this.frame = "max";
    this.sequence = 0;
    this.timer = null;
    this.el.time.addEventListener("input", () => this.showFrame(this.sliderFrame()));
    this.el.play.addEventListener("click", () => this.togglePlay());
    this.el.run.addEventListener("change", () => this.setRun(Number(this.el.run.value)));
  }

  // Fill the run list from /api/runs; "no runs yet" when there is none with a flood map.
  async listRuns(preferred = null) {
    const { runs } = await getJSON("/api/runs?limit=50");
    const floods = runs.filter((r) => r.has_flood);
    this.el.run.replaceChildren(...floods.map((r) => {
      const option = document.createElement("option");
      option.value = String(r.id);
      option.textContent = `#${r.id} ${r.kind}${r.finished_at ? " · " + r.finished_at.slice(0, 16).replace("T", " ") : ""}`;
      return option;
    }));
    this.el.empty.hidden = floods.length > 0;
    this.el.controls.hidden = floods.length === 0;
    if (!floods.length) return null;
    const pick = floods.find((r) => r.id === preferred) || floods[0];
    return pick.id;
  }

  async setRun(runId, frame = "max") {
    this.stop();
    const meta = await getJSON(`/api/runs/${runId}/flood`);
    this.meta = meta;
    this.runId = runId;
    if (![...this.el.run.options].some((o) => Number(o.value) === runId)) {
      const option = document.createElement("option");
      option.value = String(runId);
      option.textContent = `#${runId}`;
      this.el.run.prepend(option);
    }
    this.el.run.value = String(runId);
    this.el.empty.hidden = true;
    this.el.controls.hidden = false;
    this.el.time.max = String(meta.times.length); // positions 0..n-1 are times, n is the maximum
    renderLegend(this.el.legend, {
      title: "Water depth",
      items: meta.legend.stops.map((s) => ({ label: `${s.depth} m`, colour: rgbaCss(s.rgba) })),
    });
    await this.showFrame(frame);
  }

  sliderFrame() {
    const position = Number(this.el.time.value);
    return this.meta && position >= this.meta.times.length ? "max" : position;
  }

  frameUrl(frame) {
    return frame === "max" ? this.meta.max_depth_url : this.meta.depth_url_template.replace("{index}", String(frame));
  }

  async showFrame(frame) {
    if (!this.meta) return;
    if (frame !== "max" && !(frame >= 0 && frame < this.meta.times.length)) frame = "max";
    this.frame = frame;
    this.el.time.value = String(frame === "max" ? this.meta.times.length : frame);
    this.el.timeLabel.textContent = frame === "max"
      ? `maximum depth (${this.meta.max_depth_m.toFixed(2)} m deepest)`
      : `after ${formatTime(this.meta.times[frame])}`;
    const sequence = ++this.sequence;
    const [w, s, e, n] = this.meta.bounds;
    const provider = await Cesium.SingleTileImageryProvider.fromUrl(this.frameUrl(frame), {
      rectangle: Cesium.Rectangle.fromDegrees(w, s, e, n),
    });
    if (sequence !== this.sequence) return; // a later frame was asked for while this one loaded
    const layer = this.viewer.imageryLayers.addImageryProvider(provider);
    layer.alpha = 0.9;
    layer.show = this.visible;
    if (this.layer) this.viewer.imageryLayers.remove(this.layer, true);
    this.layer = layer;
    this.viewer.scene.requestRender();
    this.onChange({ run: this.runId, t: frame });
  }

  togglePlay() {
    if (this.timer) {
      this.stop();
      return;
    }
    if (!this.meta) return;
    this.el.play.textContent = "⏸";
    let frame = this.frame === "max" ? 0 : this.frame;
    this.showFrame(frame);
    this.timer = setInterval(() => {
      frame = (frame + 1) % (this.meta.times.length + 1);
      this.showFrame(frame === this.meta.times.length ? "max" : frame);
    }, 1200);
  }

  stop() {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.el.play.textContent = "▶";
  }

  setVisible(visible) {
    this.visible = visible;
    if (this.layer) this.layer.show = visible;
    this.viewer.scene.requestRender();
  }

  rectangle() {
    if (!this.meta) return null;
    const [w, s, e, n] = this.meta.bounds;
    return Cesium.Rectangle.fromDegrees(w, s, e, n);
  }
}
