// Fault injection for SignalingChannel run in Node: a `fetch` to pass as its `fetch`
// option, which logs every request and lets a test hold, fail or lose chosen ones, plus a
// raw HTTP peer for the other side of the room. No mocks of the server: every request that
// is not failed on purpose reaches the real one.

/** A promise with its resolve function outside: `await gate.promise` until `gate.open()`. */
export function gate() {
  let open;
  const promise = new Promise((resolve) => { open = resolve; });
  return { promise, open };
}

/** Polls `check` every 25 ms until it returns something truthy; throws after `timeout` ms. */
export async function waitFor(check, what, timeout = 15_000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

const abortError = () => new DOMException("The operation was aborted.", "AbortError");

/** Like a network that delivers the response only when `until` resolves; honours `signal`. */
function delayed(produce, until, signal, { honourAbort }) {
  return new Promise((resolve, reject) => {
    if (honourAbort && signal) {
      if (signal.aborted) { reject(abortError()); return; }
      signal.addEventListener("abort", () => reject(abortError()), { once: true });
    }
    until.then(produce).then(resolve, reject);
  });
}

/**
 * `net.fetch` goes to the real server unless a rule added with `net.on(match, action)`
 * takes the request. `match(req)` sees `{method, url, token, path}`; a rule applies once
 * unless `{times}` says otherwise. Actions:
 * - `holdRequest(gate)`: the request leaves only once the gate opens (a slow uplink);
 * - `holdResponse(gate, {honourAbort})`: the server answers at once, the client sees it
 *   when the gate opens (a slow downlink), or an AbortError if its signal aborts first;
 * - `loseResponse()`: the server acts, the client gets a network error;
 * - `respond(status, headers)`: a problem+json answer that never reaches the server.
 */
export function faultyNet() {
  const log = [];
  const rules = [];
  const net = {
    log,
    on(match, action, { times = 1 } = {}) {
      const rule = { match, action, left: times, seen: [] };
      rules.push(rule);
      return rule;
    },
    fetch: async (input, init = {}) => {
      const url = new URL(String(input));
      const req = {
        method: init.method ?? "GET",
        url: url.href,
        path: url.pathname,
        token: (init.headers?.Authorization ?? "").replace(/^Bearer /, "") || null,
        at: Date.now(),
      };
      log.push(req);
      const real = () => fetch(input, init);
      const rule = rules.find((r) => r.left > 0 && r.match(req));
      if (!rule) return real();
      rule.left--;
      rule.seen.push(req);
      return rule.action(real, init.signal, req);
    },
  };
  return net;
}

export const holdRequest = (g) => (real) => g.promise.then(real);

/** `onAnswered(response)` runs as soon as the server has answered (before the hold). */
export const holdResponse = (g, { honourAbort = true, onAnswered = () => {} } = {}) => async (real, signal) => {
  const response = await real();
  await onAnswered(response.clone());
  return delayed(() => response, g.promise, signal, { honourAbort });
};

export const loseResponse = () => async (real) => {
  await real();
  throw new TypeError("fetch failed (injected: the response was lost)");
};

export const respond = (status, headers = {}) => async () => new Response(
  JSON.stringify({ type: `urn:signalpost:${status === 503 ? "unavailable" : "injected"}`, title: "injected", status }),
  { status, headers: { "Content-Type": "application/problem+json", ...headers } },
);

export const isPoll = (req) => req.method === "GET" && req.path.endsWith("/messages");
export const isPost = (req) => req.method === "POST" && req.path.endsWith("/messages");
export const isJoin = (req) => req.method === "POST" && req.path.endsWith("/peers");
export const isLeave = (req) => req.method === "DELETE";

/** The other side of the room, over plain HTTP: join, post, poll, leave. */
export async function rawPeer(base, room, name) {
  const call = async (method, path, { token, body } = {}) => {
    const headers = {};
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const res = await fetch(`${base}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : null };
  };
  const joined = await call("POST", `/v1/rooms/${room}/peers`, { body: { name } });
  if (joined.status !== 201) throw new Error(`raw join: ${joined.status} ${JSON.stringify(joined.body)}`);
  const { peer, token } = joined.body;
  let cursor = null;
  const received = [];
  return {
    peer,
    token,
    received,
    peers: joined.body.peers,
    async send(to, data) {
      const res = await call("POST", `/v1/rooms/${room}/messages`, { token, body: { to, type: "message", data } });
      if (res.status !== 202) throw new Error(`raw post: ${res.status} ${JSON.stringify(res.body)}`);
    },
    /** One poll (wait 1 s); what it returned is appended to `received`. */
    async poll() {
      const after = cursor ? `&after=${encodeURIComponent(cursor)}` : "";
      const res = await call("GET", `/v1/rooms/${room}/messages?wait=1${after}`, { token });
      if (res.status !== 200) throw new Error(`raw poll: ${res.status} ${JSON.stringify(res.body)}`);
      if (res.body.cursor) cursor = res.body.cursor;
      received.push(...res.body.messages);
      return res.body.messages;
    },
    leave: () => call("DELETE", `/v1/rooms/${room}/peers/${peer}`, { token }),
  };
}

/** Another peer's leave, with a token the test took from the channel's own requests. */
export function leaveAs(base, room, peer, token) {
  return fetch(`${base}/v1/rooms/${room}/peers/${peer}`, { method: "DELETE", headers: { Authorization: `Bearer ${token}` } });
}
