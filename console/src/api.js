// The console's only way to data: the REST API with the session's bearer token
// (architecture/console.md). The token lives in sessionStorage: never in a URL, never logged.
const KEY = "agentos.token";

export const session = { token: sessionStorage.getItem(KEY), me: null };
let onUnauthenticated = () => {};

export function setToken(token) {
  session.token = token;
  session.me = null;
  if (token) sessionStorage.setItem(KEY, token);
  else sessionStorage.removeItem(KEY);
}

export function whenUnauthenticated(handler) {
  onUnauthenticated = handler;
}

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.code = problem.code || "";
  }
}

function headers(extra = {}) {
  return { Authorization: `Bearer ${session.token}`, Accept: "application/json", ...extra };
}

async function check(response) {
  if (response.status === 401) onUnauthenticated();
  if (!response.ok) {
    let problem = {};
    try {
      problem = await response.json();
    } catch {
      problem = {};
    }
    throw new ApiError(response.status, problem);
  }
  return response;
}

/** One call: the parsed JSON (or text) answer; throws ApiError for a 4xx/5xx. */
export async function api(path, { method = "GET", body, signal } = {}) {
  const extra = body === undefined ? {} : { "Content-Type": "application/json" };
  const response = await check(
    await fetch(path, {
      method,
      headers: headers(extra),
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      cache: "no-store",
    }),
  );
  const type = response.headers.get("content-type") || "";
  return type.includes("json") ? response.json() : response.text();
}

/** Every page of a Kubernetes-style list (`metadata.continue`), up to `maxPages`. */
export async function listAll(path, { signal, maxPages = 5 } = {}) {
  const items = [];
  let next = "";
  for (let page = 0; page < maxPages; page += 1) {
    const sep = path.includes("?") ? "&" : "?";
    const body = await api(next ? `${path}${sep}continue=${encodeURIComponent(next)}` : path, {
      signal,
    });
    items.push(...body.items);
    next = body.metadata && body.metadata.continue;
    if (!next) break;
  }
  return items;
}

async function* chunks(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    yield decoder.decode(value, { stream: true });
  }
}

/** The lines of a streamed answer, as they arrive. */
export async function* streamLines(response) {
  let buffer = "";
  for await (const text of chunks(response)) {
    buffer += text;
    const parts = buffer.split("\n");
    buffer = parts.pop();
    yield* parts;
  }
  if (buffer) yield buffer;
}

const pause = (ms, signal) =>
  new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    });
  });

/**
 * Follow a stream with fetch (EventSource cannot send Authorization): `open(cursor)` makes
 * the request, `consume(response)` reads it and returns false to stop; after an end or an
 * error it is reopened from the cursor the consumer kept, until `signal` aborts.
 */
export async function follow(open, consume, signal, onError = () => {}) {
  while (!signal.aborted) {
    try {
      const response = await check(await open());
      if ((await consume(response)) === false) return;
    } catch (error) {
      if (signal.aborted) return;
      onError(error);
      if (error instanceof ApiError && error.status < 500 && error.status !== 429) return;
    }
    await pause(1000, signal);
  }
}

/** A Kubernetes watch (`?watch=true`, newline-delimited JSON), resumed at its resourceVersion. */
export function watch(path, resourceVersion, onEvent, signal, onError) {
  let cursor = resourceVersion;
  const open = () => {
    const sep = path.includes("?") ? "&" : "?";
    const at = cursor ? `&resourceVersion=${encodeURIComponent(cursor)}` : "";
    return fetch(`${path}${sep}watch=true${at}`, { headers: headers(), signal, cache: "no-store" });
  };
  const consume = async (response) => {
    for await (const line of streamLines(response)) {
      if (!line.trim()) continue;
      const event = JSON.parse(line);
      cursor = event.resourceVersion || cursor;
      if (event.type !== "BOOKMARK") onEvent(event);
    }
    return true;
  };
  return follow(open, consume, signal, onError);
}

function parseFrame(frame) {
  const event = { id: null, type: "message", data: "" };
  for (const line of frame.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "id") event.id = value;
    else if (field === "event") event.type = value;
    else if (field === "data") event.data += event.data ? `\n${value}` : value;
  }
  return event;
}

/**
 * Server-sent events (WHATWG HTML) read with fetch, resumed with `Last-Event-ID` after a
 * reconnect; `onEvent({id, type, data})` returns false to stop (the terminal event).
 */
export function followEvents(path, onEvent, signal, onError) {
  let lastId = null;
  const open = () =>
    fetch(path, {
      headers: headers(lastId ? { "Last-Event-ID": lastId, Accept: "text/event-stream" } : {}),
      signal,
      cache: "no-store",
    });
  const consume = async (response) => {
    let buffer = "";
    for await (const text of chunks(response)) {
      buffer += text;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const frame = parseFrame(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
        if (!frame.data) continue;
        lastId = frame.id || lastId;
        if (onEvent({ ...frame, data: JSON.parse(frame.data) }) === false) return false;
      }
    }
    return true;
  };
  return follow(open, consume, signal, onError);
}

/** A text stream (an agent's logs with `follow=true`), line by line, reopened after an end:
 * `pathFor(first)` gives the URL (the first with the tail, later ones with little of it). */
export function followText(pathFor, onLine, signal, onError) {
  let first = true;
  const open = () => {
    const path = pathFor(first);
    first = false;
    return fetch(path, { headers: headers(), signal, cache: "no-store" });
  };
  const consume = async (response) => {
    for await (const line of streamLines(response)) onLine(line);
    return true;
  };
  return follow(open, consume, signal, onError);
}
