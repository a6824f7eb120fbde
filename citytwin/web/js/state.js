// Map state in the URL hash, so a view can be bookmarked, shared and restored on reload:
//   #cam=lon,lat,height,heading,pitch,roll&layers=buildings,flood,...&colour=height&run=3&t=max
// Angles in degrees, height in metres above the ellipsoid. Written with history.replaceState (no history spam).

const LAYERS = ["buildings", "flood", "grid", "outages", "sensors"];

function parseNumbers(text, count) {
  if (!text) return null;
  const values = text.split(",").map(Number);
  return values.length === count && values.every(Number.isFinite) ? values : null;
}

export function readState(hash = window.location.hash) {
  const params = new URLSearchParams(hash.replace(/^#/, ""));
  const cam = parseNumbers(params.get("cam"), 6);
  const layers = params.has("layers")
    ? new Set(params.get("layers").split(",").filter((l) => LAYERS.includes(l)))
    : null;
  const run = Number.parseInt(params.get("run"), 10);
  const t = params.get("t");
  return {
    camera: cam && { lon: cam[0], lat: cam[1], height: cam[2], heading: cam[3], pitch: cam[4], roll: cam[5] },
    layers,
    colour: params.get("colour"),
    run: Number.isFinite(run) ? run : null,
    scenario: Number.isFinite(Number.parseInt(params.get("scenario"), 10)) ? Number.parseInt(params.get("scenario"), 10) : null,
    time: t === null || t === "max" ? "max" : (Number.isFinite(Number(t)) ? Number(t) : "max"),
    select: params.get("select"),
  };
}

export function writeState(changes) {
  const params = new URLSearchParams(window.location.hash.replace(/^#/, ""));
  for (const [key, value] of Object.entries(changes)) {
    if (value === null || value === undefined) params.delete(key);
    else params.set(key, value);
  }
  // Commas and colons are fine in a fragment (RFC 3986): keep the URL readable.
  const text = params.toString().replace(/%2C/g, ",").replace(/%3A/g, ":");
  const url = `${window.location.pathname}${window.location.search}${text ? "#" + text : ""}`;
  window.history.replaceState(null, "", url);
}

export function cameraToText(camera) {
  const c = Cesium.Cartographic.fromCartesian(camera.positionWC);
  // Angles in (-180, 180]: a roll of 360 reads as 0.
  const deg = (radians) => {
    const d = Cesium.Math.toDegrees(Cesium.Math.negativePiToPi(radians));
    return Math.abs(d) < 0.05 ? 0 : d;
  };
  return [deg(c.longitude).toFixed(6), deg(c.latitude).toFixed(6), c.height.toFixed(1),
    deg(camera.heading).toFixed(1), deg(camera.pitch).toFixed(1), deg(camera.roll).toFixed(1)].join(",");
}

export function applyCamera(viewer, cam) {
  viewer.camera.setView({
    destination: Cesium.Cartesian3.fromDegrees(cam.lon, cam.lat, cam.height),
    orientation: {
      heading: Cesium.Math.toRadians(cam.heading),
      pitch: Cesium.Math.toRadians(cam.pitch),
      roll: Cesium.Math.toRadians(cam.roll),
    },
  });
}

export { LAYERS };
