// A small inline-SVG line chart of recent observations (no chart library): time on x, value on y,
// anomalous values as red dots.

const SVG = "http://www.w3.org/2000/svg";

function node(name, attrs, text) {
  const el = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

function niceNumber(value) {
  const abs = Math.abs(value);
  return abs >= 100 ? value.toFixed(0) : abs >= 10 ? value.toFixed(1) : value.toFixed(2);
}

// points: [{time: Date|string, value: number, anomaly: bool}], any order.
export function lineChart(points, { width = 280, height = 120, unit = "" } = {}) {
  const data = points
    .map((p) => ({ t: new Date(p.time).getTime(), v: Number(p.value), anomaly: Boolean(p.anomaly) }))
    .filter((p) => Number.isFinite(p.t) && Number.isFinite(p.v))
    .sort((a, b) => a.t - b.t);
  const svg = node("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "recent values" });
  if (!data.length) {
    svg.append(node("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "axis" }, "no observations yet"));
    return svg;
  }
  const pad = { left: 36, right: 6, top: 8, bottom: 16 };
  const t0 = data[0].t;
  const t1 = Math.max(data[data.length - 1].t, t0 + 1);
  let lo = Math.min(...data.map((d) => d.v));
  let hi = Math.max(...data.map((d) => d.v));
  if (hi - lo < 1e-9) { lo -= 1; hi += 1; }
  const x = (t) => pad.left + ((t - t0) / (t1 - t0)) * (width - pad.left - pad.right);
  const y = (v) => pad.top + (1 - (v - lo) / (hi - lo)) * (height - pad.top - pad.bottom);
  for (const v of [lo, (lo + hi) / 2, hi]) {
    svg.append(node("line", { x1: pad.left, x2: width - pad.right, y1: y(v), y2: y(v), class: "grid" }));
    svg.append(node("text", { x: pad.left - 3, y: y(v) + 3, "text-anchor": "end", class: "axis" }, niceNumber(v)));
  }
  const fmt = (t) => new Date(t).toISOString().slice(11, 16);
  svg.append(node("text", { x: pad.left, y: height - 3, class: "axis" }, fmt(t0)));
  svg.append(node("text", { x: width - pad.right, y: height - 3, "text-anchor": "end", class: "axis" },
    `${fmt(t1)} UTC${unit ? " · " + unit : ""}`));
  const path = data.map((d, i) => `${i ? "L" : "M"}${x(d.t).toFixed(1)},${y(d.v).toFixed(1)}`).join(" ");
  svg.append(node("path", { d: path, class: "line" }));
  for (const d of data.filter((p) => p.anomaly)) {
    svg.append(node("circle", { cx: x(d.t), cy: y(d.v), r: 3, class: "anomaly" }));
  }
  return svg;
}
