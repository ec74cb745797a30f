// Platform (platform admins): the outbox's state and its dead letters, with requeue.
import { api } from "../api.js";
import { fill, h, json, notice, table } from "../dom.js";

const ADMIN = "/api/v1/admin/outbox";

/** `#/platform`: GET /admin/outbox/status and /dead-letters; POST .../requeue. */
export async function renderPlatform(root, _target, signal) {
  const holder = h("div", {});
  const message = h("div", { "aria-live": "polite" });
  fill(root, h("h1", {}, "Platform"), message, holder);
  const requeue = async (path) => {
    try {
      const done = await api(path, { method: "POST", signal });
      fill(message, notice(`Requeued ${done.count}.`, "info"));
      await refresh();
    } catch (error) {
      fill(message, notice(error.message));
    }
  };
  const refresh = async () => {
    const [status, letters] = await Promise.all([api(`${ADMIN}/status`, { signal }),
      api(`${ADMIN}/dead-letters`, { signal })]);
    const counts = Object.entries(status.counts || {}).map(([state, n]) =>
      h("tr", {}, h("td", {}, state), h("td", { class: "num" }, String(n))));
    const rows = letters.items.map((d) => h("tr", {}, h("td", {}, d.eventId), h("td", {}, d.source),
      h("td", {}, d.reason), h("td", { class: "num" }, String(d.attempts)), h("td", {}, d.deadAt),
      h("td", {}, h("details", {}, h("summary", {}, "Envelope"), json(d.envelope))),
      h("td", {}, h("button", { type: "button",
        onclick: () => requeue(`${ADMIN}/dead-letters/${encodeURIComponent(d.eventId)}/requeue`) },
      "Requeue"))));
    fill(holder,
      h("p", {}, `Oldest unpublished: ${status.oldestUnpublishedAgeSeconds ?? 0} s; ` +
        `open dead letters: ${status.deadLettersOpen}`),
      table("Outbox events by state", ["State", "Events"], counts),
      table("Dead letters", ["Event", "Source", "Reason", "Attempts", "Dead since", "", ""], rows,
        "No dead letters."),
      letters.items.length ? h("button", { type: "button",
        onclick: () => requeue(`${ADMIN}/dead-letters/requeue`) }, "Requeue all") : null);
  };
  await refresh();
}
