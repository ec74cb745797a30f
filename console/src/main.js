// The console's shell: login, navigation, and a hash router (routes never carry the token).
import { api, session, setToken, whenUnauthenticated } from "./api.js";
import { fill, h, notice } from "./dom.js";
import { renderAgent, renderAgents } from "./views/agents.js";
import { renderApprovals } from "./views/approvals.js";
import { renderPlatform } from "./views/platform.js";
import { renderRun } from "./views/run.js";
import { renderRuns } from "./views/runs.js";
import { renderUsage } from "./views/usage.js";

const ROUTES = [
  [/^agents\/([^/]+)\/([^/]+)$/, (m) => ({ view: renderAgent, tenant: m[1], name: m[2] })],
  [/^agents$/, () => ({ view: renderAgents })],
  [/^runs\/([^/]+)\/([^/]+)$/, (m) => ({ view: renderRun, tenant: m[1], name: m[2] })],
  [/^runs$/, () => ({ view: renderRuns })],
  [/^approvals$/, () => ({ view: renderApprovals })],
  [/^usage$/, () => ({ view: renderUsage })],
  [/^platform$/, () => ({ view: renderPlatform })],
];
const NAV = [
  ["agents", "Agents"],
  ["runs", "Runs"],
  ["approvals", "Approvals"],
  ["usage", "Usage"],
  ["platform", "Platform"],
];

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const who = document.getElementById("who");
let current = null;

function parseHash() {
  const raw = decodeURIComponent(location.hash.replace(/^#\/?/, ""));
  const [path, search = ""] = raw.split("?");
  const params = Object.fromEntries(new URLSearchParams(search));
  for (const [pattern, make] of ROUTES) {
    const match = path.match(pattern);
    if (match) return { section: path.split("/")[0], ...make(match), params };
  }
  return null;
}

function renderNav(section) {
  const items = NAV.filter(([id]) => id !== "platform" || session.me.platformAdmin);
  fill(
    nav,
    h(
      "ul",
      {},
      items.map(([id, text]) =>
        h(
          "li",
          {},
          h("a", { href: `#/${id}`, "aria-current": id === section ? "page" : false }, text),
        ),
      ),
    ),
  );
  const grant = session.me.platformAdmin
    ? "platform admin"
    : `${session.me.role} in ${session.me.tenant}`;
  fill(
    who,
    h("span", {}, `${session.me.name} (${grant})`),
    h("button", { type: "button", onclick: logout }, "Log out"),
  );
}

function logout() {
  setToken(null);
  route();
}

function renderLogin(message) {
  fill(nav);
  fill(who);
  const input = h("input", {
    id: "token",
    name: "token",
    type: "password",
    autocomplete: "off",
    required: true,
    spellcheck: "false",
  });
  const form = h(
    "form",
    { class: "login", onsubmit: (e) => login(e, input.value.trim()) },
    h("h1", {}, "Agent OS console"),
    h("label", { for: "token" }, "API token"),
    input,
    h("p", { class: "hint" }, "Kept in this tab's session storage only; `make run` prints one."),
    message ? notice(message) : null,
    h("button", { type: "submit" }, "Log in"),
  );
  fill(main, form);
  input.focus();
}

async function login(event, token) {
  event.preventDefault();
  setToken(token);
  await route();
}

async function route() {
  if (current) current.abort();
  current = new AbortController();
  if (!session.token) return renderLogin();
  if (!session.me) {
    try {
      session.me = await api("/api/v1/whoami");
    } catch (error) {
      setToken(null);
      return renderLogin(error.status === 401 ? "That token is not valid." : error.message);
    }
  }
  const target = parseHash();
  if (!target) {
    location.hash = "#/agents";
    return undefined;
  }
  renderNav(target.section);
  fill(main);
  try {
    await target.view(main, target, current.signal);
  } catch (error) {
    if (!current.signal.aborted) fill(main, notice(error.message));
  }
  return undefined;
}

whenUnauthenticated(() => {
  setToken(null);
  renderLogin("The session ended: log in again.");
});
window.addEventListener("hashchange", route);
route();
