// HTTP helpers: JSON in and out, errors with the server's message, OGC paging, server capabilities.

export class HttpError extends Error {
  constructor(status, detail, url) {
    super(`${status} ${detail} (${url})`);
    this.status = status;
    this.detail = detail;
    this.url = url;
  }
}

// An API key (header X-API-Key) for writes, and for reads where the server requires keys. Kept for the
// browser session only (sessionStorage), never in the URL.
const KEY_STORAGE = "citytwin.apiKey";

export function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  else sessionStorage.removeItem(KEY_STORAGE);
}

export function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

function headers(extra = {}) {
  const key = apiKey();
  return key ? { ...extra, "X-API-Key": key } : extra;
}

async function check(response, url) {
  if (response.ok) return response;
  let detail = response.statusText;
  try {
    const body = await response.json();
    detail = body.detail || detail;
  } catch (_) { /* not JSON */ }
  throw new HttpError(response.status, detail, url);
}

export async function getJSON(url, { signal } = {}) {
  const response = await fetch(url, { headers: headers({ Accept: "application/json" }), signal });
  return (await check(response, url)).json();
}

export async function postJSON(url, body) {
  const response = await fetch(url, {
    method: "POST",
    headers: headers({ "Content-Type": "application/json", Accept: "application/json" }),
    body: JSON.stringify(body),
  });
  return (await check(response, url)).json();
}

// Every feature of an OGC API - Features collection, following "next" links (page size up to 10,000).
export async function fetchAllFeatures(collection, { bbox = null, pageSize = 10000, maxFeatures = 200000 } = {}) {
  const params = new URLSearchParams({ limit: String(pageSize) });
  if (bbox) params.set("bbox", bbox.join(","));
  let url = `/ogc/collections/${collection}/items?${params}`;
  const features = [];
  while (url && features.length < maxFeatures) {
    const page = await getJSON(url);
    features.push(...page.features);
    const next = (page.links || []).find((l) => l.rel === "next");
    url = next ? next.href : null;
  }
  return features;
}

// Which APIs this server offers, from its OpenAPI document: the map only calls what exists, so a
// partial installation shows "not available" instead of filling the console with 404s.
export async function capabilities() {
  try {
    const doc = await getJSON("/openapi.json");
    const paths = Object.keys(doc.paths || {});
    const has = (prefix) => paths.some((p) => p === prefix || p.startsWith(prefix + "/") || p.startsWith(prefix + "("));
    // SensorThings: "/sta/v1.1" (and "/sta/v1.1/{path}" or "/sta/v1.1/Things") -> its base path.
    const staPath = paths.find((p) => /^\/sta\/v[\d.]+(\/|$)/.test(p));
    const sta = staPath ? staPath.match(/^\/sta\/v[\d.]+/)[0] : null;
    return {
      paths,
      tiles: has("/tiles"),
      ogc: has("/ogc"),
      outages: has("/api/outages"),
      scenarios: has("/api/scenarios"),
      scenarioBuildings: paths.includes("/api/scenarios/{run_id}/buildings") ||
        paths.some((p) => /^\/api\/scenarios\/\{[^}]+\}\/buildings$/.test(p)),
      runs: has("/api/runs"),
      telemetry: paths.some((p) => p.startsWith("/api/telemetry") || p.startsWith("/ws/telemetry")) || Boolean(sta),
      staBase: sta,
    };
  } catch (error) {
    return { paths: [], tiles: true, ogc: false, outages: false, scenarios: false, scenarioBuildings: false,
      runs: false, telemetry: false, staBase: null, error };
  }
}
