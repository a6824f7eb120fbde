// Colour ramps shared by layers, and legend rendering.

// A piecewise-linear ramp over [value, "#rrggbb"] stops; below the first / above the last stop the end
// colours hold. Returns [r, g, b] in 0..1.
export function rampColour(stops, value) {
  if (value <= stops[0][0]) return hexToRgb(stops[0][1]);
  for (let i = 1; i < stops.length; i++) {
    if (value <= stops[i][0]) {
      const [v0, c0] = stops[i - 1];
      const [v1, c1] = stops[i];
      const f = (value - v0) / (v1 - v0);
      const a = hexToRgb(c0);
      const b = hexToRgb(c1);
      return [a[0] + f * (b[0] - a[0]), a[1] + f * (b[1] - a[1]), a[2] + f * (b[2] - a[2])];
    }
  }
  return hexToRgb(stops[stops.length - 1][1]);
}

const rgbCache = new Map();
export function hexToRgb(hex) {
  let rgb = rgbCache.get(hex);
  if (!rgb) {
    const n = Number.parseInt(hex.slice(1), 16);
    rgb = [((n >> 16) & 255) / 255, ((n >> 8) & 255) / 255, (n & 255) / 255];
    rgbCache.set(hex, rgb);
  }
  return rgb;
}

export function rgbaCss(rgba) {
  const [r, g, b, a = 255] = rgba;
  return `rgba(${r}, ${g}, ${b}, ${(a / 255).toFixed(2)})`;
}

// legend: {title, items: [{label, colour, shape?}]}; shape is "box" (default), "round", "hollow" or "line".
export function renderLegend(element, legend) {
  element.replaceChildren();
  if (!legend) return;
  if (legend.title) {
    const title = document.createElement("div");
    title.className = "title";
    title.textContent = legend.title;
    element.append(title);
  }
  for (const item of legend.items) {
    const row = document.createElement("div");
    row.className = "item";
    const swatch = document.createElement("span");
    swatch.className = `swatch ${item.shape || ""}`.trim();
    swatch.style.background = item.colour;
    const label = document.createElement("span");
    label.textContent = item.label;
    row.append(swatch, label);
    element.append(row);
  }
}
