// The approvals inbox: pending approvals of every tenant the caller sees; approve, reject or
// edit the arguments, with a comment. Buttons only for editors (the API checks anyway).
import { api } from "../api.js";
import { fill, h, json, link, notice } from "../dom.js";
import { canEdit, tenants } from "../tenants.js";

const REFRESH_MS = 2000;

function card(tenant, approval, onDone) {
  const id = `approval-${approval.id}`;
  const edits = h("textarea", { id: `${id}-edits`, rows: 3, spellcheck: "false" },
    JSON.stringify(approval.arguments || approval.details || {}, null, 2));
  const comment = h("input", { id: `${id}-comment`, name: "comment" });
  const message = h("div", { "aria-live": "polite" });
  const decide = async (decision) => {
    const body = { decision, comment: comment.value };
    if (decision === "approve") {
      try {
        const edited = JSON.parse(edits.value);
        const original = approval.arguments || approval.details || {};
        if (JSON.stringify(edited) !== JSON.stringify(original)) body.edits = edited;
      } catch (error) {
        return fill(message, notice(`The arguments are not JSON: ${error.message}`));
      }
    }
    try {
      await api(`/api/v1/tenants/${encodeURIComponent(tenant)}/runs/` +
        `${encodeURIComponent(approval.run)}/approvals/${encodeURIComponent(approval.id)}`,
      { method: "POST", body });
      onDone();
    } catch (error) {
      fill(message, notice(error.message));
    }
    return undefined;
  };
  const controls = canEdit()
    ? h("div", { class: "decide" },
      h("label", { for: `${id}-edits` }, "Arguments (edit before approving)"), edits,
      h("label", { for: `${id}-comment` }, "Comment"), comment,
      h("div", { class: "buttons" },
        h("button", { type: "button", onclick: () => decide("approve") }, "Approve"),
        h("button", { type: "button", class: "danger", onclick: () => decide("reject") },
          "Reject")), message)
    : h("p", { class: "hint" }, "Your role may look but not decide.");
  return h("article", { class: "approval", "data-approval": approval.id,
    "aria-labelledby": `${id}-title` },
  h("h2", { id: `${id}-title` }, `${approval.action}`, " — ",
    link(`#/runs/${tenant}/${approval.run}`, approval.run)),
  h("p", {}, `Tenant ${tenant}, step ${approval.step}, asked ${approval.requestedAt}` +
    (approval.expiresAt ? `, expires ${approval.expiresAt}` : "")),
  json(approval.arguments || approval.details), controls);
}

/** `#/approvals`: GET .../approvals?state=pending for each tenant, every 2 s. */
export async function renderApprovals(root, _target, signal) {
  const names = await tenants(signal);
  const holder = h("div", { class: "inbox" });
  fill(root, h("h1", {}, "Approvals"), holder);
  const refresh = async (force = false) => {
    const found = await Promise.all(names.map(async (tenant) => {
      const body = await api(`/api/v1/tenants/${encodeURIComponent(tenant)}/approvals?state=pending`,
        { signal });
      return body.items.map((a) => [tenant, a]);
    }));
    const items = found.flat();
    if (!force && holder.contains(document.activeElement)) return; // do not redraw under the user's hands
    fill(holder, items.length ? items.map(([t, a]) => card(t, a, () => refresh(true)))
      : h("p", { class: "empty" }, "No run waits for a decision."));
  };
  await refresh();
  const timer = setInterval(() => refresh().catch(() => {}), REFRESH_MS);
  signal.addEventListener("abort", () => clearInterval(timer));
}
