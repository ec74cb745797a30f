// Usage: tokens and cost over time per agent (from the runs' status.usage) and per model
// provider (GET .../usage, its budget windows), and the top runs by cost.
import { BarController, BarElement, CategoryScale, Chart, Legend, LinearScale, LineController,
  LineElement, PointElement, Tooltip } from "chart.js";
import { api, listAll } from "../api.js";
import { fill, h, link, table, tokens, usd } from "../dom.js";
import { currentTenant, tenantPicker } from "../tenants.js";

Chart.register(BarController, BarElement, CategoryScale, LinearScale, LineController,
  LineElement, PointElement, Legend, Tooltip);

const PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#76b7b2", "#edc948",
  "#9c755f"];
const HOUR_MS = 3600 * 1000;

// A time as the API gives it: RFC 3339, or Unix seconds (a budget window's start).
const msOf = (t) => (typeof t === "number" ? t * 1000 : Date.parse(t));
const hourOf = (t) => new Date(Math.floor(msOf(t) / HOUR_MS) * HOUR_MS).toISOString()
  .slice(0, 13).replace("T", " ") + ":00";

/** {labels, series: Map(key -> values)} of `items`, summed by hour and key. */
export function byHour(items, keyOf, timeOf, valueOf) {
  const labels = [...new Set(items.map((i) => hourOf(timeOf(i))))].sort();
  const series = new Map();
  for (const item of items) {
    const key = keyOf(item);
    if (!series.has(key)) series.set(key, labels.map(() => 0));
    series.get(key)[labels.indexOf(hourOf(timeOf(item)))] += valueOf(item);
  }
  return { labels, series };
}

function chart(canvas, type, { labels, series }, title) {
  const text = getComputedStyle(document.body).color;
  const datasets = [...series.entries()].map(([key, data], i) => ({
    label: key, data, backgroundColor: PALETTE[i % PALETTE.length],
    borderColor: PALETTE[i % PALETTE.length], stack: type === "bar" ? "s" : undefined,
  }));
  return new Chart(canvas, {
    type,
    data: { labels, datasets },
    options: {
      animation: false, responsive: true, maintainAspectRatio: false,
      plugins: { legend: { labels: { color: text } }, title: { display: false, text: title } },
      scales: { x: { stacked: type === "bar", ticks: { color: text } },
        y: { stacked: type === "bar", beginAtZero: true, ticks: { color: text } } },
    },
  });
}

function figure(id, title) {
  const canvas = h("canvas", { id, role: "img", "aria-label": title });
  return [h("figure", { class: "chart" }, h("figcaption", {}, title),
    h("div", { class: "chart-box" }, canvas)), canvas];
}

/** `#/usage?tenant=`: charts from the tenant's runs (up to 1,000) and its /usage windows. */
export async function renderUsage(root, { params }, signal) {
  const { names, tenant } = await currentTenant(params, signal);
  const base = `/api/v1/tenants/${encodeURIComponent(tenant)}`;
  const [runs, usage] = await Promise.all([
    listAll(`${base}/runs?limit=200`, { signal, maxPages: 5 }),
    api(`${base}/usage`, { signal }),
  ]);
  const [tokFig, tokCanvas] = figure("chart-agent-tokens", "Tokens per agent, by hour");
  const [costFig, costCanvas] = figure("chart-agent-cost", "Cost per agent (USD), by hour");
  const [modelFig, modelCanvas] = figure("chart-model-tokens",
    "Tokens per model provider, by budget window");
  const top = [...runs].sort((a, b) => (b.status.usage.costUsd || 0) - (a.status.usage.costUsd || 0))
    .slice(0, 10).map((run) => h("tr", {},
      h("td", {}, link(`#/runs/${tenant}/${run.metadata.name}`, run.metadata.name)),
      h("td", {}, run.metadata.agent), h("td", { class: "num" }, String(tokens(run.status.usage))),
      h("td", { class: "num" }, usd(run.status.usage.costUsd))));
  const total = usage.total || {};
  fill(root, h("h1", {}, "Usage"), h("div", { class: "filters" },
    tenantPicker("usage", names, tenant, params)),
  h("p", { id: "usage-total" }, `Model calls: ${total.requests || 0}, ` +
    `${(total.inputTokens || 0) + (total.outputTokens || 0)} tokens, ${usd(total.costUsd)}`),
  h("div", { class: "charts" }, tokFig, costFig, modelFig),
  table("Top runs by cost", ["Run", "Agent", "Tokens", "Cost"], top, "No runs."));
  const charts = [
    chart(tokCanvas, "bar", byHour(runs, (r) => r.metadata.agent,
      (r) => r.metadata.creationTimestamp, (r) => tokens(r.status.usage)), "tokens"),
    chart(costCanvas, "bar", byHour(runs, (r) => r.metadata.agent,
      (r) => r.metadata.creationTimestamp, (r) => Number(r.status.usage.costUsd || 0)), "cost"),
    chart(modelCanvas, "line", byHour(usage.items || [], (w) => w.provider,
      (w) => w.windowStart, (w) => w.inputTokens + w.outputTokens), "model tokens"),
  ];
  signal.addEventListener("abort", () => charts.forEach((c) => c.destroy()));
}
