// A few DOM helpers: elements are built from text, never from HTML strings, so nothing the
// API returns can become markup.

/** h("td", {class: "x", onclick}, child, ...): an element; strings become text nodes. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "style") Object.assign(el.style, value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function link(href, ...children) {
  return h("a", { href }, ...children);
}

/** A labelled form control: <label>Text <control></label>. */
export function field(label, control) {
  return h("label", { class: "field" }, h("span", {}, label), control);
}

export function select(name, options, value, onchange) {
  const el = h("select", { name, onchange: (e) => onchange(e.target.value) });
  for (const option of options) {
    const [val, text] = Array.isArray(option) ? option : [option, option || "(any)"];
    el.append(h("option", { value: val, selected: val === value }, text));
  }
  return el;
}

export function table(caption, headings, rows, empty = "Nothing here yet.") {
  const head = h("tr", {}, headings.map((t) => h("th", { scope: "col" }, t)));
  const body = rows.length
    ? rows
    : [h("tr", {}, h("td", { colspan: headings.length, class: "empty" }, empty))];
  return h("table", {}, h("caption", {}, caption), h("thead", {}, head), h("tbody", {}, body));
}

export function phaseBadge(phase) {
  return h("span", { class: `phase phase-${(phase || "").toLowerCase()}` }, phase || "");
}

export function json(value) {
  return h("pre", { class: "json" }, JSON.stringify(value, null, 2));
}

export function notice(message, kind = "error") {
  return h("p", { class: `notice ${kind}`, role: kind === "error" ? "alert" : "status" }, message);
}

const UNITS = [
  [86400, "d"],
  [3600, "h"],
  [60, "m"],
  [1, "s"],
];

/** "3m", "2h" for a duration in seconds. */
export function duration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "";
  if (seconds < 1) return `${Math.round(seconds * 1000)}ms`;
  for (const [size, unit] of UNITS) {
    if (seconds >= size) {
      const n = seconds / size;
      return `${n < 10 && unit !== "s" ? n.toFixed(1) : Math.round(n)}${unit}`;
    }
  }
  return `${seconds.toFixed(1)}s`;
}

export function age(rfc3339) {
  return rfc3339 ? duration((Date.now() - Date.parse(rfc3339)) / 1000) : "";
}

export function usd(value) {
  const n = Number(value || 0);
  return `$${n < 0.01 && n > 0 ? n.toPrecision(3) : n.toFixed(2)}`;
}

export function tokens(usage) {
  return usage ? (usage.inputTokens || 0) + (usage.outputTokens || 0) : 0;
}

/** The query of a route (`#/runs?tenant=a`) as an object, and back. */
export function query(params) {
  const entries = Object.entries(params).filter(([, v]) => v !== undefined && v !== "");
  return entries.length ? `?${new URLSearchParams(entries)}` : "";
}
