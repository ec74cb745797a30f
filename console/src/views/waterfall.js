// The trace waterfall: a run's steps on one time axis, model (llm) and tool calls told apart,
// children under their parent (`parentCallId`), each step's detail a click or Enter away.
import { duration, fill, h, json } from "../dom.js";

const ms = (t) => Date.parse(t);

/** Steps in tree order: roots by start, each followed by its children; with their depth. */
export function ordered(steps) {
  const ids = new Set(steps.map((s) => s.callId));
  const children = new Map();
  for (const step of steps) {
    const parent = step.parentCallId && ids.has(step.parentCallId) ? step.parentCallId : null;
    if (!children.has(parent)) children.set(parent, []);
    children.get(parent).push(step);
  }
  const out = [];
  const visit = (parent, depth) => {
    const kids = (children.get(parent) || []).sort((a, b) => ms(a.startedAt) - ms(b.startedAt));
    for (const step of kids) {
      out.push({ step, depth });
      visit(step.callId, depth + 1);
    }
  };
  visit(null, 0);
  return out;
}

function detail(step, replayed) {
  const usage = step.usage || {};
  return h("div", { class: "step-detail" },
    h("dl", { class: "facts" },
      h("dt", {}, "Type"), h("dd", {}, step.type),
      h("dt", {}, "Status"), h("dd", {}, step.status),
      h("dt", {}, "Attempt"), h("dd", {}, String(step.attempt)),
      h("dt", {}, "Started"), h("dd", {}, step.startedAt),
      h("dt", {}, "Latency"), h("dd", {}, duration((ms(step.endedAt) - ms(step.startedAt)) / 1000)),
      h("dt", {}, "Tokens"),
      h("dd", {}, `${usage.inputTokens || 0} in, ${usage.outputTokens || 0} out` +
        (usage.cachedInputTokens ? `, ${usage.cachedInputTokens} cached` : "")),
      h("dt", {}, "Cost"), h("dd", {}, `$${usage.costUsd || 0}`),
      replayed ? [h("dt", {}, "Journal"), h("dd", {}, replayed)] : null),
    h("h4", {}, "Input"), json(step.input),
    step.error ? [h("h4", {}, "Error"), json(step.error)] : [h("h4", {}, "Output"),
      json(step.output)]);
}

/** Why a step was not executed on the run's current attempt, or "". */
function replayedNote(step, run) {
  const st = run.status;
  if (step.attempt < (st.attempt || 1)) {
    return `recorded on attempt ${step.attempt}; later attempts were served it from the journal`;
  }
  return "";
}

/**
 * Draw the waterfall into `root`: `steps` (the journal), `run` (for its times and attempt),
 * `open` the callIds whose detail is shown (kept across redraws).
 */
export function drawWaterfall(root, steps, run, open) {
  const st = run.status;
  const starts = steps.map((s) => ms(s.startedAt));
  const ends = steps.map((s) => ms(s.endedAt));
  const t0 = Math.min(...starts, ms(st.startedAt || run.metadata.creationTimestamp));
  const t1 = Math.max(...ends, st.finishedAt ? ms(st.finishedAt) : Date.now(), t0 + 1);
  const span = t1 - t0;
  const rows = ordered(steps).map(({ step, depth }) => {
    const left = ((ms(step.startedAt) - t0) / span) * 100;
    const width = Math.max(((ms(step.endedAt) - ms(step.startedAt)) / span) * 100, 0.4);
    const replayed = replayedNote(step, run);
    const usage = step.usage || {};
    const toggle = () => {
      if (open.has(step.callId)) open.delete(step.callId);
      else open.add(step.callId);
      drawWaterfall(root, steps, run, open);
    };
    const expanded = open.has(step.callId);
    return h("li", { class: `step step-${step.type} ${step.status}${replayed ? " replayed" : ""}`,
      "data-call-id": step.callId, "data-type": step.type },
    h("button", { type: "button", class: "step-row", "aria-expanded": String(expanded),
      onclick: toggle },
    h("span", { class: "step-name", style: { paddingLeft: `${depth * 1.2}em` } },
      h("span", { class: `kind kind-${step.type}` }, step.type === "llm" ? "model" : step.type),
      " ", step.name, replayed ? h("span", { class: "tag" }, " journal") : null,
      step.status === "failed" ? h("span", { class: "tag error" }, " failed") : null),
    h("span", { class: "track", "aria-hidden": "true" },
      h("span", { class: "bar", style: { left: `${left}%`, width: `${width}%` } })),
    h("span", { class: "step-latency" }, duration((ms(step.endedAt) - ms(step.startedAt)) / 1000)),
    h("span", { class: "step-tokens" },
      `${(usage.inputTokens || 0) + (usage.outputTokens || 0)} tok`)),
    expanded ? detail(step, replayed) : null);
  });
  fill(root,
    h("div", { class: "axis", "aria-hidden": "true" }, h("span", {}, "0"),
      h("span", {}, duration(span / 2000)), h("span", {}, duration(span / 1000))),
    rows.length
      ? h("ol", { class: "waterfall", "aria-label": "Steps on a time axis" }, rows)
      : h("p", { class: "empty" }, "No steps yet."));
}
