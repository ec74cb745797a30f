// Runs: per tenant and agent, filtered; submit a run.
import { api, listAll } from "../api.js";
import { age, duration, field, fill, h, link, notice, phaseBadge, query, select, table, tokens,
  usd } from "../dom.js";
import { canEdit, currentTenant, tenantPicker } from "../tenants.js";

const PHASES = ["", "Pending", "Dispatched", "Running", "InputRequired", "Succeeded", "Failed",
  "Canceled", "TimedOut"];
const REFRESH_MS = 2000;

const base = (tenant) => `/api/v1/tenants/${encodeURIComponent(tenant)}`;

/** Seconds from start (or creation) to finish (or now). */
export function runDuration(run) {
  const st = run.status;
  const start = Date.parse(st.startedAt || run.metadata.creationTimestamp);
  const end = st.finishedAt ? Date.parse(st.finishedAt) : Date.now();
  return (end - start) / 1000;
}

export function runsTable(tenant, runs) {
  const rows = runs.map((run) => {
    const st = run.status;
    return h("tr", { "data-run": run.metadata.name },
      h("td", {}, link(`#/runs/${tenant}/${run.metadata.name}`, run.metadata.name)),
      h("td", {}, link(`#/agents/${tenant}/${run.metadata.agent}`, run.metadata.agent)),
      h("td", { "data-col": "phase" }, phaseBadge(st.phase)),
      h("td", {}, duration(runDuration(run))),
      h("td", { class: "num" }, String(st.attempt || 0)),
      h("td", { class: "num", "data-col": "tokens" }, String(tokens(st.usage))),
      h("td", { class: "num" }, usd(st.usage && st.usage.costUsd)),
      h("td", {}, age(run.metadata.creationTimestamp)));
  });
  return table("Runs", ["Run", "Agent", "Phase", "Duration", "Attempts", "Tokens", "Cost",
    "Age"], rows, "No runs.");
}

function submitForm(tenant, agents) {
  const agent = select("agent", agents, agents[0] || "", () => {});
  agent.id = "submit-agent";
  const input = h("textarea", { id: "submit-input", name: "input", rows: 4, spellcheck: "false" },
    "{}");
  const message = h("div", { "aria-live": "polite" });
  const submit = async (event) => {
    event.preventDefault();
    let body;
    try {
      body = { input: JSON.parse(input.value || "null") };
    } catch (error) {
      return fill(message, notice(`The input is not JSON: ${error.message}`));
    }
    try {
      const run = await api(`${base(tenant)}/agents/${encodeURIComponent(agent.value)}/runs`,
        { method: "POST", body });
      location.hash = `#/runs/${tenant}/${run.metadata.name}`;
    } catch (error) {
      fill(message, notice(error.message));
    }
    return undefined;
  };
  return h("form", { class: "submit", onsubmit: submit, "aria-labelledby": "submit-title" },
    h("h2", { id: "submit-title" }, "Submit a run"),
    h("label", { for: "submit-agent" }, "Agent"), agent,
    h("label", { for: "submit-input" }, "Input (JSON)"), input,
    h("button", { type: "submit" }, "Submit run"), message);
}

/** `#/runs?tenant=&agent=&phase=&label=`: GET .../runs with those filters, every 2 s. */
export async function renderRuns(root, { params }, signal) {
  const { names, tenant } = await currentTenant(params, signal);
  if (!tenant) return fill(root, h("h1", {}, "Runs"), notice("No tenant yet.", "info"));
  const agents = (await listAll(`${base(tenant)}/agents?limit=500`, { signal, maxPages: 1 }))
    .map((a) => a.metadata.name);
  const label = h("input", { name: "label", value: params.label || "", placeholder: "team=a" });
  const go = (change) => { location.hash = `#/runs${query({ ...params, tenant, ...change })}`; };
  const filters = h("form", { class: "filters", onsubmit: (e) => {
    e.preventDefault();
    go({ label: label.value.trim() });
  } },
  tenantPicker("runs", names, tenant, params),
  field("Agent", select("agent", ["", ...agents], params.agent || "", (agent) => go({ agent }))),
  field("Phase", select("phase", PHASES, params.phase || "", (phase) => go({ phase }))),
  field("Label selector", label), h("button", { type: "submit" }, "Filter"));
  const holder = h("div", {});
  fill(root, h("h1", {}, "Runs"), filters, holder, canEdit() ? submitForm(tenant, agents) : null);
  const q = query({ agent: params.agent, phase: params.phase, labelSelector: params.label,
    limit: 100 });
  const refresh = async () => {
    const body = await api(`${base(tenant)}/runs${q}`, { signal });
    fill(holder, runsTable(tenant, body.items));
  };
  await refresh();
  const timer = setInterval(() => refresh().catch(() => {}), REFRESH_MS);
  signal.addEventListener("abort", () => clearInterval(timer));
  return undefined;
}
