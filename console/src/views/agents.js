// Agents: the table (live from the watch stream) and an agent's page.
import { api, followText, listAll, watch } from "../api.js";
import { age, field, fill, h, json, link, notice, phaseBadge, query, select, table } from "../dom.js";
import { currentTenant, tenantPicker } from "../tenants.js";
import { runsTable } from "./runs.js";

const PHASES = ["", "Created", "Scheduled", "Starting", "Ready", "Failed", "Terminating",
  "Suspended"];

const base = (tenant) => `/api/v1/tenants/${encodeURIComponent(tenant)}`;

function agentRow(tenant, agent) {
  const st = agent.status || {};
  const name = agent.metadata.name;
  return h(
    "tr",
    { "data-agent": name },
    h("td", {}, link(`#/agents/${tenant}/${name}`, name)),
    h("td", { "data-col": "phase" }, phaseBadge(st.phase)),
    h("td", {}, st.runtimeClass || (agent.spec.runtime || {}).class || ""),
    h("td", {}, st.node || ""),
    h("td", { class: "num" }, String(st.restartCount || 0)),
    h("td", {}, age(agent.metadata.creationTimestamp)),
  );
}

/** `#/agents?tenant=&phase=&label=`: GET .../agents (a list and its resourceVersion), then
 * GET .../agents?watch=true from it; each ADDED/MODIFIED/DELETED updates one row. */
export async function renderAgents(root, { params }, signal) {
  const { names, tenant } = await currentTenant(params, signal);
  const label = h("input", { name: "label", value: params.label || "", placeholder: "team=a" });
  const filters = h(
    "form",
    {
      class: "filters",
      onsubmit: (e) => {
        e.preventDefault();
        location.hash = `#/agents${query({ ...params, label: label.value.trim() })}`;
      },
    },
    tenantPicker("agents", names, tenant, params),
    field("Phase", select("phase", PHASES, params.phase || "", (phase) => {
      location.hash = `#/agents${query({ ...params, tenant, phase })}`;
    })),
    field("Label selector", label),
    h("button", { type: "submit" }, "Filter"),
  );
  const status = h("p", { class: "live", role: "status" }, "");
  const holder = h("div", {});
  fill(root, h("h1", {}, "Agents"), filters, status, holder);
  if (!tenant) return fill(holder, notice("No tenant yet.", "info"));
  const selector = params.label ? `&labelSelector=${encodeURIComponent(params.label)}` : "";
  const path = `${base(tenant)}/agents?limit=500${selector}`;
  const listing = await api(path, { signal });
  const agents = new Map(listing.items.map((a) => [a.metadata.name, a]));
  const draw = () => {
    const shown = [...agents.values()]
      .filter((a) => !params.phase || (a.status || {}).phase === params.phase)
      .sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));
    fill(holder, table(`Agents of ${tenant}`, ["Name", "Phase", "Runtime", "Node", "Restarts",
      "Age"], shown.map((a) => agentRow(tenant, a)), "No agents."));
  };
  draw();
  status.textContent = "Live";
  watch(path, listing.metadata.resourceVersion, (event) => {
    const name = event.object && event.object.metadata.name;
    if (!name) return;
    if (event.type === "DELETED") agents.delete(name);
    else agents.set(name, event.object);
    draw();
  }, signal, (error) => { status.textContent = `Reconnecting: ${error.message}`; });
  return undefined;
}

function conditions(status) {
  const rows = (status.conditions || []).map((c) =>
    h("tr", {}, h("td", {}, c.type), h("td", {}, c.status), h("td", {}, c.reason || ""),
      h("td", {}, c.message || ""), h("td", {}, c.lastTransitionTime || "")));
  return table("Conditions", ["Type", "Status", "Reason", "Message", "Since"], rows);
}

function history(status) {
  const items = (status.history || []).map((t) =>
    h("li", {}, h("time", { datetime: t.at }, t.at), " ", phaseBadge(t.from || "—"), " → ",
      phaseBadge(t.to), " ", h("span", { class: "reason" }, t.reason || ""), " ", t.message || ""));
  return h("section", { "aria-labelledby": "history" }, h("h2", { id: "history" }, "History"),
    items.length ? h("ol", { class: "timeline" }, items) : h("p", {}, "No transitions yet."));
}

function eventsTable(items) {
  const rows = items.map((e) => h("tr", {}, h("td", { class: "num" }, String(e.sequence)),
    h("td", {}, e.event_type), h("td", {}, e.occurred_at), h("td", {}, e.state)));
  return table("Events", ["#", "Type", "Occurred", "Delivery"], rows);
}

/** `#/agents/{tenant}/{name}`: GET the agent (status with history), its events and runs;
 * its logs followed (`.../logs?follow=true`); refreshed on each watch event for it. */
export async function renderAgent(root, { tenant, name }, signal) {
  const path = `${base(tenant)}/agents/${encodeURIComponent(name)}`;
  const summary = h("div", {});
  const runs = h("div", {});
  const logs = h("pre", { class: "logs", tabindex: "0", "aria-label": `Logs of ${name}` });
  fill(root, h("h1", {}, `Agent ${name}`), h("p", {}, `Tenant ${tenant}`), summary,
    h("h2", {}, "Runs"), runs, h("h2", {}, "Logs (following)"), logs);
  const refresh = async () => {
    const [agent, events, agentRuns] = await Promise.all([
      api(path, { signal }),
      api(`${path}/events`, { signal }),
      listAll(`${base(tenant)}/runs?agent=${encodeURIComponent(name)}&limit=50`,
        { signal, maxPages: 1 }),
    ]);
    const st = agent.status || {};
    fill(summary,
      h("dl", { class: "facts" },
        h("dt", {}, "Phase"), h("dd", { "data-col": "phase" }, phaseBadge(st.phase)),
        h("dt", {}, "Reason"), h("dd", {}, st.reason || ""),
        h("dt", {}, "Runtime"), h("dd", {}, st.runtimeClass || agent.spec.runtime.class),
        h("dt", {}, "Node"), h("dd", {}, st.node || ""),
        h("dt", {}, "Restarts"), h("dd", {}, String(st.restartCount || 0)),
        h("dt", {}, "Image"), h("dd", {}, agent.spec.image)),
      conditions(st), history(st), eventsTable(events.items),
      h("details", {}, h("summary", {}, "Manifest"), json(agent)));
    fill(runs, runsTable(tenant, agentRuns));
  };
  await refresh();
  const logPath = (first) => `${path}/logs?follow=true&tailLines=${first ? 200 : 1}`;
  followText(logPath, (line) => {
    logs.append(`${line}\n`);
    logs.scrollTop = logs.scrollHeight;
  }, signal, () => {});
  watch(`${base(tenant)}/agents?limit=500`, null, (event) => {
    if (event.object && event.object.metadata.name === name) refresh().catch(() => {});
  }, signal, () => {});
}
