// The Cesium viewer, fully offline: no ion token, no geocoder, the bundled Natural Earth II imagery
// (zoom levels 0-2 only, a backdrop) over the WGS84 ellipsoid.

// True when WebGL runs on a CPU rasteriser (SwiftShader, llvmpipe): virtual machines without a GPU, headless
// test browsers. The map then drops multisampling and sky effects, which cost seconds per frame there.
export function softwareRenderer() {
  try {
    const gl = document.createElement("canvas").getContext("webgl2") || document.createElement("canvas").getContext("webgl");
    if (!gl) return false;
    const info = gl.getExtension("WEBGL_debug_renderer_info");
    const renderer = String(gl.getParameter(info ? info.UNMASKED_RENDERER_WEBGL : gl.RENDERER));
    gl.getExtension("WEBGL_lose_context")?.loseContext();
    return /swiftshader|llvmpipe|software|softpipe/i.test(renderer);
  } catch (_) {
    return false;
  }
}

export function createViewer(container) {
  const software = softwareRenderer();
  const baseLayer = Cesium.ImageryLayer.fromProviderAsync(
    Cesium.TileMapServiceImageryProvider.fromUrl(Cesium.buildModuleUrl("Assets/Textures/NaturalEarthII")),
  );
  const viewer = new Cesium.Viewer(container, {
    baseLayer,
    terrainProvider: new Cesium.EllipsoidTerrainProvider(),
    baseLayerPicker: false,
    geocoder: false,
    animation: false,
    timeline: false,
    homeButton: true,
    sceneModePicker: false,
    navigationHelpButton: false,
    fullscreenButton: false,
    infoBox: false,
    selectionIndicator: false,
    // Render only when something changed: the machine running the map is often shared (and headless tests
    // run on a software rasteriser). Layers call scene.requestRender() after they change.
    requestRenderMode: true,
    maximumRenderTimeChange: Infinity,
    msaaSamples: software ? 1 : 4,
  });
  const scene = viewer.scene;
  scene.globe.baseColor = Cesium.Color.fromCssColorString("#dfe3e0");
  scene.globe.showGroundAtmosphere = false;
  scene.fog.enabled = false;
  if (software) {
    scene.skyAtmosphere.show = false;
    scene.skyBox.show = false;
    scene.sun.show = false;
    scene.moon.show = false;
    scene.backgroundColor = Cesium.Color.fromCssColorString("#b9cde0");
  }
  viewer.cesiumWidget.creditContainer.style.display = "none";
  viewer.softwareRenderer = software;
  return viewer;
}

// Light the city as at local solar noon on midsummer's day, whatever the time of viewing (at night the
// real sun would leave the buildings black). The clock does not run: the map shows no time-of-day.
export function setMiddaySun(viewer, longitudeDegrees) {
  const noonUtcHours = 12 - longitudeDegrees / 15;
  const start = Cesium.JulianDate.fromIso8601("2024-06-21T00:00:00Z");
  viewer.clock.currentTime = Cesium.JulianDate.addHours(start, noonUtcHours - 1.5, new Cesium.JulianDate());
  viewer.clock.shouldAnimate = false;
}

// Height offset (m) that puts a tileset's lowest point on the ellipsoid. The map has no terrain (the
// ellipsoid stands in for the ground), while the tiles carry true ellipsoidal heights (ground elevation +
// geoid, ~190 m for the demo city): without the shift the city would float above the imagery and the
// overlays drawn on the globe. Relief inside the city is kept.
export function groundOffsetMatrix(tileset) {
  const volume = tileset.root.boundingVolume;
  let minimum = volume.minimumHeight;
  const centre = tileset.boundingSphere.center;
  if (!Number.isFinite(minimum)) {
    const carto = Cesium.Cartographic.fromCartesian(centre);
    minimum = carto.height - tileset.boundingSphere.radius * 0.5;
  }
  const up = Cesium.Ellipsoid.WGS84.geodeticSurfaceNormal(centre, new Cesium.Cartesian3());
  const shift = Cesium.Cartesian3.multiplyByScalar(up, -minimum, new Cesium.Cartesian3());
  return { matrix: Cesium.Matrix4.fromTranslation(shift), offset: minimum };
}
