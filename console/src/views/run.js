// A run's page: status, the trace waterfall, attempts, checkpoints, events; live from the
// run's event stream (GET .../runs/{run}/events, resumed with Last-Event-ID); cancel.
import { api, followEvents } from "../api.js";
import { duration, fill, h, json, link, notice, phaseBadge, table, usd } from "../dom.js";
import { canEdit } from "../tenants.js";
import { runDuration } from "./runs.js";
import { drawWaterfall } from "./waterfall.js";

const TERMINAL = new Set(["Succeeded", "Failed", "Canceled", "TimedOut"]);
const SETTLE_MS = 2000;

function summary(run, tenant, onCancel) {
  const st = run.status;
  const usage = st.usage || {};
  return h("div", {},
    h("dl", { class: "facts" },
      h("dt", {}, "Agent"), h("dd", {}, link(`#/agents/${tenant}/${run.metadata.agent}`,
        run.metadata.agent)),
      h("dt", {}, "Phase"), h("dd", { id: "run-phase", "data-col": "phase" },
        phaseBadge(st.phase)),
      h("dt", {}, "Reason"), h("dd", {}, [st.reason, st.message].filter(Boolean).join(": ")),
      h("dt", {}, "Duration"), h("dd", {}, duration(runDuration(run))),
      h("dt", {}, "Attempts"), h("dd", { id: "run-attempts" }, String(st.attempt || 0)),
      h("dt", {}, "Input tokens"), h("dd", { id: "run-input-tokens" },
        String(usage.inputTokens || 0)),
      h("dt", {}, "Output tokens"), h("dd", { id: "run-output-tokens" },
        String(usage.outputTokens || 0)),
      h("dt", {}, "Cost"), h("dd", { id: "run-cost" }, usd(usage.costUsd)),
      st.replayOf ? [h("dt", {}, "Replay of"), h("dd", {}, `${st.replayOf.name} ` +
        `(${st.replayOf.mode}${st.replayOf.fromStep ? `, live from step ${st.replayOf.fromStep}` :
          ""})`)] : null),
    !TERMINAL.has(st.phase) && canEdit()
      ? h("button", { type: "button", class: "danger", onclick: onCancel }, "Cancel run") : null);
}

function inputOutput(run) {
  const st = run.status;
  return h("div", {}, h("h2", {}, "Input"), json(run.spec.input),
    st.error ? [h("h2", {}, "Error"), json(st.error)] : null,
    TERMINAL.has(st.phase) ? [h("h2", {}, "Output"), h("div", { id: "run-output" },
      json(st.output))] : null);
}

function attempts(steps, events) {
  const byAttempt = new Map();
  for (const step of steps) byAttempt.set(step.attempt, (byAttempt.get(step.attempt) || 0) + 1);
  // run.started is also the way back from InputRequired: an attempt starts at its first one.
  const starts = new Map();
  for (const e of events.filter((x) => x.type === "run.started")) {
    const n = e.data.attempt || starts.size + 1;
    if (!starts.has(n)) starts.set(n, e);
  }
  const rows = [...starts.entries()].map(([n, e]) => {
    return h("tr", {}, h("td", { class: "num" }, String(n)), h("td", {}, e.data.occurredAt),
      h("td", { class: "num" }, String(byAttempt.get(n) || 0)),
      h("td", {}, n > 1 ? "steps of earlier attempts served from the journal" : ""));
  });
  return table("Attempts", ["Attempt", "Started", "Steps recorded", "Replay"], rows,
    "Not started yet.");
}

function checkpoints(events) {
  const rows = events.filter((e) => e.type === "run.checkpointed").map((e) =>
    h("tr", {}, h("td", {}, e.data.occurredAt), h("td", { class: "num" }, String(e.data.attempt)),
      h("td", {}, e.data.callId || "")));
  return table("Checkpoints", ["Saved", "Attempt", "After step"], rows, "No checkpoints.");
}

function eventList(events) {
  const rows = events.map((e) => h("tr", {}, h("td", { class: "num" }, String(e.data.sequence)),
    h("td", {}, e.type), h("td", {}, e.data.occurredAt),
    h("td", {}, e.data.toPhase ? `${e.data.fromPhase || ""} → ${e.data.toPhase}` :
      (e.data.step ? e.data.step.name : ""))));
  return table("Events", ["#", "Type", "Occurred", "What"], rows);
}

/** `#/runs/{tenant}/{name}`: GET the run and its steps, then follow its events. */
export async function renderRun(root, { tenant, name }, signal) {
  const path = `/api/v1/tenants/${encodeURIComponent(tenant)}/runs/${encodeURIComponent(name)}`;
  let [run, steps] = await Promise.all([api(path, { signal }),
    api(`${path}/steps`, { signal }).then((b) => b.items)]);
  const events = [];
  const open = new Set();
  const head = h("div", {});
  const waterfall = h("div", {});
  const trace = h("section", { class: "trace", "aria-labelledby": "trace-title" },
    h("h2", { id: "trace-title" }, "Trace"), waterfall);
  const io = h("div", {});
  const extra = h("div", {});
  const live = h("p", { class: "live", role: "status" });
  const cancel = async () => {
    try {
      run = await api(`${path}/cancel`, { method: "POST", signal });
      draw();
    } catch (error) {
      head.append(notice(error.message));
    }
  };
  const draw = () => {
    fill(head, summary(run, tenant, cancel));
    drawWaterfall(waterfall, steps, run, open);
    fill(io, inputOutput(run));
    fill(extra, attempts(steps, events), checkpoints(events), eventList(events));
  };
  fill(root, h("h1", {}, `Run ${name}`), live, head, trace, io, extra);
  draw();
  live.textContent = TERMINAL.has(run.status.phase) ? "" : "Live";
  followEvents(`${path}/events`, (event) => {
    events.push(event);
    const data = event.data;
    if (data.step && !steps.some((s) => s.callId === data.step.callId)) steps.push(data.step);
    if (data.run && data.run.status) run = data.run;
    draw();
    if (TERMINAL.has(run.status.phase)) {
      live.textContent = "";
      // The final word is the API's: the run and its journal as stored, read again now and
      // then, since the model proxy records its calls in batches, after the run may have ended.
      const settle = () => Promise.all([api(path, { signal }), api(`${path}/steps`, { signal })])
        .then(([final, journal]) => {
          run = final;
          steps = journal.items;
          draw();
        }).catch(() => {});
      settle();
      const timer = setInterval(settle, SETTLE_MS);
      signal.addEventListener("abort", () => clearInterval(timer));
      return false;
    }
    return true;
  }, signal, (error) => { live.textContent = `Reconnecting: ${error.message}`; });
}
