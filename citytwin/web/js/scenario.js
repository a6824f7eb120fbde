// Storm scenario panel: rain intensity and duration in, POST /api/scenarios, poll the run until it ends,
// then show the results (flooded buildings, failed assets, customers out, restoration plan) and hand the
// per-building results to the map for recolouring.

import { apiKey, getJSON, postJSON, setApiKey } from "./api.js";

const POLL_MS = 1000;

function text(tag, content, className) {
  const el = document.createElement(tag);
  el.textContent = content;
  if (className) el.className = className;
  return el;
}

// A restoration step as one line, whatever its shape (string, or an object such as
// {step, action, switch, customers_restored, time_h}).
export function describeStep(step) {
  if (typeof step !== "object" || step === null) return String(step);
  const action = step.action || step.operation || "";
  const target = step.switch_id || step.switch || step.asset_id || step.device || "";
  const head = step.time_h !== undefined && step.time_h !== null ? `t+${Number(step.time_h).toFixed(1)} h: ` : "";
  const main = [action, target].filter(Boolean).join(" ") ||
    Object.entries(step).map(([k, v]) => `${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`).join(", ");
  const purpose = step.purpose ? ` (${step.purpose})` : "";
  const customers = step.customers_restored ? ` — ${step.customers_restored} customers back` : "";
  return `${head}${main}${purpose}${customers}`;
}

export class ScenarioPanel {
  constructor(elements, { onResults = () => {}, onRun = () => {} } = {}) {
    this.el = elements; // {form, rain, hours, key, run, progress, status, results, unavailable}
    this.onResults = onResults;
    this.onRun = onRun;
    this.runId = null;
    this.polling = null;
    this.last = null;
    this.el.key.value = apiKey();
    this.el.key.addEventListener("change", () => setApiKey(this.el.key.value.trim()));
    this.el.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.start().catch((error) => this.showError(error));
    });
  }

  disable(reason) {
    this.el.form.hidden = true;
    this.el.unavailable.hidden = false;
    this.el.unavailable.textContent = reason;
  }

  showError(error) {
    const needsKey = error.status === 401 || error.status === 403;
    this.el.status.textContent = needsKey
      ? `running a scenario needs an API key with admin scope (${error.detail})`
      : `error: ${error.detail || error.message}`;
    this.el.status.classList.add("error");
    this.el.run.disabled = false;
  }

  async start() {
    const rain = Number(this.el.rain.value);
    const hours = Number(this.el.hours.value);
    this.el.status.classList.remove("error");
    this.el.results.replaceChildren();
    this.el.run.disabled = true;
    setApiKey(this.el.key.value.trim());
    const { run_id: runId } = await postJSON("/api/scenarios", { rain_mm_h: rain, hours });
    this.onRun(runId);
    await this.follow(runId);
  }

  // Poll a run until it finishes, then show its results. Resolves with the final status document.
  async follow(runId) {
    this.runId = runId;
    this.el.progress.hidden = false;
    this.el.run.disabled = true;
    for (;;) {
      const run = await getJSON(`/api/scenarios/${runId}`);
      if (runId !== this.runId) return run; // another run was started meanwhile
      this.el.progress.value = Number(run.progress || 0);
      const stage = run.summary?.stage ? ` · ${run.summary.stage}` : "";
      this.el.status.textContent = `run #${runId}: ${run.status} ${Math.round(100 * (run.progress || 0))}%${stage}`;
      if (run.status === "succeeded" || run.status === "failed") {
        this.el.run.disabled = false;
        this.el.progress.hidden = true;
        this.last = run;
        if (run.status === "failed") {
          this.el.status.textContent = `run #${runId} failed: ${run.error || "see the server log"}`;
          this.el.status.classList.add("error");
          return run;
        }
        this.showSummary(run);
        const buildings = await getJSON(`/api/scenarios/${runId}/buildings`);
        await this.onResults(runId, run, buildings.buildings || {});
        this.el.status.textContent = `run #${runId} succeeded`;
        return run;
      }
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
  }

  showSummary(run) {
    const s = run.summary || {};
    const failed = s.failed_assets || [];
    const plan = s.restoration_plan || [];
    const box = document.createElement("div");
    box.className = "results";
    const dl = document.createElement("dl");
    const add = (label, value) => dl.append(text("dt", label), text("dd", String(value)));
    add("Flooded buildings", s.flooded_buildings ?? "–");
    add("Failed assets", failed.length);
    add("Customers out", s.customers_out ?? "–");
    if (s.customers_restored_by_switching !== undefined) add("Restored by switching", s.customers_restored_by_switching);
    if (s.customer_hours !== undefined) add("Customer hours lost", Math.round(s.customer_hours));
    if (s.max_depth_m !== undefined) add("Deepest water", `${Number(s.max_depth_m).toFixed(2)} m`);
    box.append(dl);
    if (failed.length) {
      box.append(text("div", "Failed: " + failed.slice(0, 30).map((a) => (typeof a === "object" ? a.id || a.asset_id || JSON.stringify(a) : a)).join(", ")
        + (failed.length > 30 ? ` … (${failed.length})` : ""), "muted"));
    }
    if (plan.length) {
      box.append(text("div", "Restoration plan"));
      const ol = document.createElement("ol");
      for (const step of plan) ol.append(text("li", describeStep(step)));
      box.append(ol);
    }
    this.el.results.replaceChildren(box);
  }
}
