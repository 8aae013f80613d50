// signalpost.js: the browser client of the signalpost HTTP API (see API.md, "Web client").
// An ES module with no dependencies. `SignalingChannel` joins a room, long-polls its inbox
// and posts messages; `PeerMesh` wires one RTCPeerConnection per remote peer to a channel
// with the perfect negotiation pattern.

const ID_RE = /^[A-Za-z0-9_-]{1,64}$/;
const MAX_BATCH = 50;
// Candidates trickle out in bursts; a short pause lets a burst share one POST.
const CANDIDATE_BATCH_DELAY_MS = 15;
// An offer or answer waits for the burst of candidates that follows it (Chromium's host
// candidates come 1–7 ms after setLocalDescription) and goes out in the same POST, so the
// other side gets both in one poll response instead of polling again for the candidates:
// until no candidate came for this long, at most CANDIDATE_BATCH_DELAY_MS after it.
const CANDIDATE_BURST_GAP_MS = 5;
const DESCRIPTION_TYPES = new Set(["offer", "answer"]);
const BACKOFF_BASE_MS = 250;
const BACKOFF_MAX_MS = 10_000;
const SEND_MAX_ATTEMPTS = 8;
// How long past its `wait` a poll may take before we give up on it and poll again.
const POLL_GRACE_S = 15;
// An empty poll comes round no sooner than this after the last one started: with a
// `maxWait` (or `wait`) of 0 the server answers at once, and the loop must not spin.
const MIN_EMPTY_POLL_INTERVAL_MS = 500;
// close(): how long queued posts may take to go out, and a rejoin's join to come back.
const CLOSE_DRAIN_MS = 2000;
const CLOSE_REJOIN_WAIT_MS = 5000;
// Enough to recognise every replay the server can produce (it returns at most 100
// messages per poll) without growing forever on a long call.
const SEEN_IDS_KEPT = 4096;
const EVENT_BUFFER_MAX = 1000;
// Event types held back until their first listener is attached (see #emit).
const BUFFERED_TYPES = ["message", "peer-joined", "peer-left"];

let activePolls = 0;

// ---- many tabs, one server: is this browser likely out of connections? ----
//
// Over HTTP/1.1 a browser opens at most six connections per host, shared by every tab of a
// profile that is on the same site (Chromium and Firefox key their connection pools by the
// top-level site), and every polling channel holds one for its whole long poll. A seventh
// request to that host, a join or a post, waits for a poll to end. Over HTTP/2 all of them
// share one connection. So each page keeps a census of the channels polling one server
// across its tabs, over a BroadcastChannel (which reaches the tabs of this page's origin):
//   {kind: "census", tab}         a tab that starts polling asks the others to answer;
//   {kind: "state", tab, polls}   a tab's number of polling channels, sent when it
//                                 changes, every CENSUS_HEARTBEAT_MS, and to answer a
//                                 census; polls 0 is a goodbye.
// A tab that vanishes without a goodbye (a crash) drops out after CENSUS_EXPIRY_MS.
// Over HTTP/1.1, with more than CONNECTIONS_PER_HOST_HTTP1 - 1 channels polling, each tab
// with a polling channel warns once on its console. The census never changes what the
// channels send.
const CONNECTIONS_PER_HOST_HTTP1 = 6;
const CENSUS_HEARTBEAT_MS = 10_000;
// Longer than a long poll (maxWait 25 s) and its margin: a hidden tab whose timers the
// browser throttles to one a minute still says it is alive at every poll it starts.
const CENSUS_EXPIRY_MS = 45_000;

/**
 * The census of the channels polling one server origin, as this page sees it. One per
 * origin per page, and only in a page (a document): Node's fetch has no six-connection cap.
 */
class OriginCensus {
  static #byOrigin = new Map();

  /** The census for `baseUrl`'s origin, or null where there is nothing to count. */
  static of(baseUrl) {
    if (typeof document === "undefined" || typeof BroadcastChannel !== "function") return null;
    let origin;
    try { origin = new URL(baseUrl, document.baseURI).origin; } catch { return null; }
    let census = OriginCensus.#byOrigin.get(origin);
    if (!census) {
      census = new OriginCensus(origin);
      OriginCensus.#byOrigin.set(origin, census);
    }
    return census;
  }

  #origin; #tab = randomId(12); #broadcast = null; #heartbeat = null;
  /** Polling channels of this page. */
  #local = 0;
  /** tab id -> {polls, seenAt}: the other tabs with polling channels. */
  #others = new Map();
  #lastAnnounced = 0;
  #warned = false;

  constructor(origin) { this.#origin = origin; }

  /** A channel of this page started its poll loop. */
  pollingStarted() {
    if (++this.#local === 1) this.#open();
    this.#announce();
    this.#check();
  }

  /** A channel of this page stopped polling (closed, hidden, or gave up). */
  pollingStopped() {
    if (--this.#local > 0) { this.#announce(); return; }
    this.#announce();
    this.#broadcast?.close();
    this.#broadcast = null;
    clearInterval(this.#heartbeat);
    this.#heartbeat = null;
    this.#others.clear();
  }

  /** A poll is starting: a heartbeat that timer throttling in hidden tabs cannot delay. */
  polled() {
    if (Date.now() - this.#lastAnnounced >= CENSUS_HEARTBEAT_MS) this.#announce();
  }

  #open() {
    this.#broadcast = new BroadcastChannel(`signalpost-census:${this.#origin}`);
    this.#broadcast.onmessage = ({ data }) => this.#heard(data);
    this.#heartbeat = setInterval(() => { this.#announce(); this.#check(); }, CENSUS_HEARTBEAT_MS);
    this.#post({ kind: "census", tab: this.#tab });
  }

  #announce() {
    this.#lastAnnounced = Date.now();
    this.#post({ kind: "state", tab: this.#tab, polls: this.#local });
  }

  #post(message) {
    try { this.#broadcast?.postMessage(message); } catch { /* closed while the page unloads */ }
  }

  #heard(message) {
    if (!message || typeof message.tab !== "string" || message.tab === this.#tab) return;
    if (message.kind === "census") {
      if (this.#local > 0) this.#announce();
    } else if (message.kind === "state") {
      const polls = Number(message.polls);
      if (Number.isInteger(polls) && polls > 0) this.#others.set(message.tab, { polls, seenAt: Date.now() });
      else this.#others.delete(message.tab);
      this.#check();
    }
  }

  /** Channels polling this origin across the tabs heard from recently, this page included. */
  #total() {
    const now = Date.now();
    let total = this.#local;
    for (const [tab, { polls, seenAt }] of this.#others) {
      if (now - seenAt > CENSUS_EXPIRY_MS) this.#others.delete(tab);
      else total += polls;
    }
    return total;
  }

  #check() {
    if (this.#warned || this.#local === 0) return;
    const total = this.#total();
    if (total < CONNECTIONS_PER_HOST_HTTP1 || !this.#overHttp1()) return;
    this.#warned = true;
    console.warn(`signalpost: ${total} channels are long-polling ${this.#origin} over HTTP/1.1 from tabs `
      + `of this browser. A browser opens at most ${CONNECTIONS_PER_HOST_HTTP1} HTTP/1.1 connections to a `
      + "host, and each polling channel holds one, so joins and posts wait for a poll to end. "
      + "Serve signalpost over HTTPS with HTTP/2, which shares one connection: set SIGNALPOST_TLS_CERT "
      + "and SIGNALPOST_TLS_KEY on the standalone server, put a reverse proxy that speaks HTTP/2 in "
      + "front of it, or on AWS deploy the template with EnableCloudFront=true "
      + "(README, \"Many tabs: HTTP/2 and TLS\").");
  }

  /**
   * Whether this page's requests to the origin go over HTTP/1.x: the newest resource
   * timing entry that names a protocol decides. A cross-origin server that sends no
   * Timing-Allow-Origin names none; then plain http: is HTTP/1.1 (browsers speak HTTP/2
   * only over TLS), and https: is unknown, so no warning.
   */
  #overHttp1() {
    const entries = typeof performance?.getEntriesByType === "function"
      ? performance.getEntriesByType("resource") : [];
    for (let i = entries.length - 1; i >= 0; i--) {
      const { name, nextHopProtocol } = entries[i];
      if (nextHopProtocol && name.startsWith(`${this.#origin}/`)) return /^http\/1/.test(nextHopProtocol);
    }
    return this.#origin.startsWith("http:");
  }
}

/** An HTTP failure the client gives up on, with the problem document's stable code. */
export class SignalingError extends Error {
  constructor(status, code, detail) {
    super(`signalpost: ${status} ${code}${detail ? `: ${detail}` : ""}`);
    this.name = "SignalingError";
    this.status = status;
    this.code = code;
  }
}

const closedError = () => new SignalingError(0, "closed", "channel is closed");
const staleError = () => new SignalingError(0, "rejoined",
  "the channel joined again as a new peer; this message belonged to the old one and was not sent");

/** Resolves after `ms`, or at once when `signal` aborts (or already has). */
const sleep = (ms, signal) =>
  new Promise((resolve) => {
    if (signal?.aborted) { resolve(); return; }
    const done = () => {
      clearTimeout(timer);
      // Removed on every path, or each retry would leave a listener on a long-lived signal.
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });

/** Exponential backoff with jitter; a server's Retry-After is a floor, never shortened. */
function retryDelay(attempt, retryAfterHeader) {
  const exp = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** attempt);
  // "Equal jitter": never less than half the step, so clients spread without hammering.
  const jittered = exp / 2 + Math.random() * (exp / 2);
  const retryAfter = parseRetryAfter(retryAfterHeader);
  if (retryAfter === null) return jittered;
  // A little jitter on top so a crowd told "1 s" does not return in the same millisecond,
  // and still the growing step if that is longer (a server repeating "1 s" under load).
  return Math.max(retryAfter + Math.random() * Math.min(250, retryAfter / 4 + 50), jittered);
}

function parseRetryAfter(value) {
  if (!value) return null;
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000;
  const date = Date.parse(value);
  return Number.isNaN(date) ? null : Math.max(0, date - Date.now());
}

const RETRYABLE = new Set([429, 500, 502, 503, 504]);
/** The token's peer has left or timed out (410), or the token expired (401): join again. */
const GONE = new Set([401, 410]);

function randomId(length) {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  const bytes = crypto.getRandomValues(new Uint8Array(length));
  return Array.from(bytes, (b) => alphabet[b % alphabet.length]).join("");
}

async function problemOf(response) {
  try {
    const body = await response.json();
    const code = String(body.type ?? "").replace(/^urn:signalpost:/, "") || "http-error";
    return new SignalingError(response.status, code, body.detail ?? body.title);
  } catch {
    return new SignalingError(response.status, "http-error");
  }
}

/**
 * One membership of the room under one server-minted peer id: its token, and the cursor of
 * its own inbox. A rejoin replaces the whole session, so anything that was started under
 * the old one (a poll, a queued send, a late 410) can tell that it is stale by identity.
 */
class Session {
  constructor(joined) {
    this.peer = joined.peer;
    this.token = joined.token;
    this.cursor = null;
    /** Set once the server said 410/401 for this token: there is nothing left to DELETE. */
    this.gone = false;
  }
}

/**
 * A peer's membership of one room: join with `SignalingChannel.join`, then listen for
 * `message` (every polled message), `peer-joined` and `peer-left` events, whose `data` is
 * the message object as polled. Also dispatches `rejoin` (after a 410 the channel joined
 * again under a new peer id; `detail.previousPeer`), `error` (`detail` a SignalingError
 * the poll loop cannot get past) and `close`.
 */
export class SignalingChannel extends EventTarget {
  #base; #room; #options; #fetch;
  /** @type {Session | null} */
  #session = null;
  #seen = new Set(); #seenOrder = [];
  #initialPeers = new Set(); #formerSelves = new Set();
  #buffers = new Map(BUFFERED_TYPES.map((t) => [t, []]));
  #live = new Set(); #flushing = new Set();
  #onmessageFn = null;
  #outbox = []; #flushTimer = null; #sending = false;
  /** While a queued offer or answer waits for its candidates: the latest it may go (ms). */
  #burstDeadline = null;
  #msgCounter = 0; #clientPrefix = randomId(8);
  #abort = new AbortController();
  /** The open long poll's controller: a rejoin aborts it, its answer is the old inbox's. */
  #pollAbort = null;
  #rejoining = null; #closing = null;
  /** Join attempts whose response may have been lost after the server created a peer. */
  #lostJoins = 0;
  #closed = false; #polling = false; #hidden = false;
  #onPageHide = (event) => this.#pageHide(event);
  #onPageShow = (event) => this.#pageShow(event);

  /** The server-minted id of this peer (changes if the channel has to rejoin). */
  peer = null;
  /** Whether the server made this peer polite toward the peers already in the room. */
  polite = false;
  /** Peers in the room when this peer joined: `[{peer, name}]`. */
  peers = [];
  /** RTCIceServer entries for `new RTCPeerConnection({iceServers})`. */
  iceServers = [];
  expiresAt = null;
  maxWait = 20;

  /**
   * Join `room` on the server at `baseUrl` and start long-polling.
   * options: `name`, `joinToken`, `fetch` (a replacement for the global fetch),
   * `wait` (long-poll seconds, capped by the server's maxWait), `leaveOnPageHide` (default true).
   */
  static async join(baseUrl, room, options = {}) {
    if (!ID_RE.test(room)) throw new TypeError(`signalpost: bad room name ${JSON.stringify(room)}`);
    const channel = new SignalingChannel(baseUrl, room, options);
    channel.#install(await channel.#joinRequest());
    channel.#startPolling();
    return channel;
  }

  constructor(baseUrl, room, options) {
    super();
    this.#base = String(baseUrl).replace(/\/+$/, "");
    this.#room = room;
    this.#options = options;
    this.#fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
    if (options.leaveOnPageHide !== false && typeof window !== "undefined") {
      window.addEventListener("pagehide", this.#onPageHide);
      window.addEventListener("pageshow", this.#onPageShow);
    }
  }

  get room() { return this.#room; }
  get closed() { return this.#closed; }

  /**
   * The politeness rule of the contract, per remote peer: polite toward the peers that
   * were in the room when this peer joined, impolite toward every later one.
   */
  isPolite(remotePeer) { return this.#initialPeers.has(remotePeer); }

  addEventListener(type, listener, options) {
    super.addEventListener(type, listener, options);
    if (listener && this.#buffers.has(type) && !this.#live.has(type) && !this.#flushing.has(type)) {
      this.#goLive(type);
    }
  }

  /** `onmessage` as a convenience; assigning it counts as attaching a listener. */
  set onmessage(fn) {
    if (this.#onmessageFn) super.removeEventListener("message", this.#onmessageFn);
    this.#onmessageFn = typeof fn === "function" ? fn : null;
    if (this.#onmessageFn) this.addEventListener("message", this.#onmessageFn);
  }
  get onmessage() { return this.#onmessageFn; }

  /**
   * Post one message `{to, type, data, id?}`; resolves with the server's id. Messages are
   * posted in call order; candidates sent close together share one batch request, and an
   * offer or answer waits a few milliseconds for the candidates that follow it. An `id`
   * is added when missing so that retries are idempotent. A message belongs to the peer id
   * the channel has when `send` is called: if the channel rejoins before it is posted, it
   * is rejected with code `rejoined` rather than sent under the new id.
   */
  send(message) {
    if (this.#closed) return Promise.reject(closedError());
    const msg = { ...message };
    if (msg.id === undefined) msg.id = `${this.#clientPrefix}-${++this.#msgCounter}`;
    else if (!ID_RE.test(msg.id)) return Promise.reject(new TypeError("signalpost: bad message id"));
    return new Promise((resolve, reject) => {
      this.#outbox.push({ msg, session: this.#session, resolve, reject });
      this.#queued(msg.type);
    });
  }

  /** Fresh TURN credentials from `GET /v1/ice-servers`; also updates `iceServers`. */
  async refreshIceServers() {
    const body = await this.#request("GET", "/v1/ice-servers", undefined,
      { session: this.#session, retries: 3 });
    this.iceServers = body.iceServers ?? [];
    return this.iceServers;
  }

  /**
   * Leave the room: stops polling, waits briefly for queued posts, then DELETEs the peer.
   * Calling it again returns the same promise: one DELETE, one `close` event.
   */
  close() {
    this.#closing ??= this.#closeOnce();
    return this.#closing;
  }

  async #closeOnce() {
    const deadline = Date.now() + CLOSE_DRAIN_MS;
    while ((this.#outbox.length || this.#sending) && Date.now() < deadline) await sleep(20);
    const rejoin = this.#rejoining;
    this.#shutdown();
    // A rejoin whose join is still out leaves the new peer itself once the join answers
    // (see #rejoin); waiting for it here means `close` comes after that, not before.
    if (rejoin) await Promise.race([rejoin, sleep(CLOSE_REJOIN_WAIT_MS)]);
    const session = this.#session;
    try {
      if (!session.gone) {
        const res = await this.#fetch(this.#url(`/v1/rooms/${this.#room}/peers/${session.peer}`), {
          method: "DELETE", headers: { Authorization: `Bearer ${session.token}` },
        });
        if (!res.ok && !GONE.has(res.status)) throw await problemOf(res);
      }
    } finally {
      this.dispatchEvent(new Event("close"));
    }
  }

  // ---- joining ----

  /** POST a join; resolves with the new Session (not yet installed) and the join response. */
  async #joinRequest() {
    const body = {};
    if (this.#options.name !== undefined) body.name = this.#options.name;
    if (this.#options.joinToken !== undefined) body.joinToken = this.#options.joinToken;
    const joined = await this.#request("POST", `/v1/rooms/${this.#room}/peers`, body, {
      retries: SEND_MAX_ATTEMPTS,
      onNetworkError: () => { this.#lostJoins++; },
    });
    return { session: new Session(joined), joined };
  }

  /** Make a join's peer the channel's identity. */
  #install({ session, joined }) {
    this.#session = session;
    this.peer = session.peer;
    this.expiresAt = joined.expiresAt;
    this.polite = Boolean(joined.polite);
    this.#forgetLostJoins(joined.peers ?? []);
    // After a rejoin our own former id can still be listed (the server has not timed it
    // out yet): it is not someone to call.
    this.peers = (joined.peers ?? []).filter((p) => !this.#formerSelves.has(p.peer));
    this.iceServers = joined.iceServers ?? [];
    this.maxWait = joined.maxWait ?? 20;
    this.#initialPeers = new Set(this.peers.map((p) => p.peer));
  }

  /**
   * Joins are not idempotent: a join whose response was lost made a peer we hold no token
   * for, and the retry lists it among the peers already present. It never polls, so calling
   * it would only hang until it times out. It carries our name; server ids sort by creation
   * time (ULIDs), so the newest peers of that name, one per lost attempt, are those ghosts.
   * Without a name they cannot be told apart from real peers and stay listed.
   */
  #forgetLostJoins(peers) {
    const lost = this.#lostJoins;
    this.#lostJoins = 0;
    const name = this.#options.name;
    if (!lost || name === undefined) return;
    const sameName = peers.filter((p) => p.name === name).map((p) => p.peer).sort();
    for (const ghost of sameName.slice(-lost)) this.#formerSelves.add(ghost);
  }

  /**
   * The server answered 410/401 for `session`'s token. Only the current session's answer
   * means anything: a late one from before the last rejoin must not start another.
   */
  #sessionGone(session) {
    session.gone = true;
    if (session !== this.#session) return Promise.resolve(!this.#closed);
    return this.#rejoin();
  }

  /** Join again after 410 (peer gone) or 401 (token expired); one rejoin at a time. */
  #rejoin() {
    this.#rejoining ??= (async () => {
      const previous = this.#session;
      this.#formerSelves.add(previous.peer);
      // The open poll reads the old inbox: its answer must not reach the new session.
      this.#pollAbort?.abort();
      let attempt = 0;
      while (!this.#closed) {
        try {
          const joined = await this.#joinRequest();
          if (this.#closed) {
            // close() ran while the join was out: leave at once rather than stay a ghost.
            this.#leave(joined.session);
            return false;
          }
          this.#install(joined);
          // If the old id is in fact still present (a 410 from a confused proxy, or a page
          // back from the bfcache), leaving it now spares the others a ghost until timeout.
          this.#leave(previous);
          this.#rejectStaleSends();
          this.dispatchEvent(new CustomEvent("rejoin", { detail: { previousPeer: previous.peer, peer: this.peer } }));
          // A poll loop that stopped (an error it could not get past) starts again.
          if (!this.#hidden) this.#startPolling();
          return true;
        } catch (err) {
          if (this.#closed) return false;
          // Room full or a bad join token will not fix itself: report and stop.
          if (err instanceof SignalingError && !RETRYABLE.has(err.status)) {
            this.#fail(err);
            return false;
          }
          await sleep(retryDelay(attempt++), this.#abort.signal);
        }
      }
      return false;
    })().finally(() => { this.#rejoining = null; });
    return this.#rejoining;
  }

  /** DELETE a session's peer without waiting; failures only cost a timeout. */
  #leave(session) {
    this.#fetch(this.#url(`/v1/rooms/${this.#room}/peers/${session.peer}`), {
      method: "DELETE", headers: { Authorization: `Bearer ${session.token}` },
    }).catch(() => {});
  }

  // ---- receiving ----

  #startPolling() {
    if (this.#polling || this.#closed) return;
    this.#polling = true;
    this.#pollLoop().finally(() => { this.#polling = false; });
  }

  async #pollLoop() {
    if (++activePolls > 1) {
      // Browsers allow six connections per origin; every held poll takes one for ~25 s.
      console.warn("signalpost: more than one channel is polling in this page");
    }
    const census = OriginCensus.of(this.#base);
    census?.pollingStarted();
    try {
      let attempt = 0;
      while (!this.#closed && !this.#hidden) {
        if (this.#rejoining) {
          if (!(await this.#rejoining)) return;
          continue;
        }
        const session = this.#session;
        const startedAt = Date.now();
        census?.polled();
        let result;
        try {
          result = await this.#pollOnce(session);
        } catch {
          if (this.#closed || this.#hidden) return;
          if (session !== this.#session || this.#rejoining) continue; // aborted by a rejoin
          await sleep(retryDelay(attempt++), this.#abort.signal);
          continue;
        }
        // A rejoin happened while this poll was out: its messages and cursor are the old
        // inbox's. Applied, they would move the new inbox's cursor (a `400 after is ahead`
        // or skipped messages) and replay a `peer-joined` of our own new id.
        if (session !== this.#session) continue;
        const { status, body, retryAfter } = result;
        if (status === 200) {
          attempt = 0;
          const messages = body.messages ?? [];
          for (const message of messages) this.#receive(message);
          if (body.cursor) session.cursor = body.cursor;
          // A server whose maxWait is 0 (or `wait: 0`) answers at once: do not spin.
          const early = startedAt + MIN_EMPTY_POLL_INTERVAL_MS - Date.now();
          if (!messages.length && early > 0) await sleep(early, this.#abort.signal);
        } else if (GONE.has(status)) {
          if (!(await this.#sessionGone(session))) return;
        } else if (RETRYABLE.has(status)) {
          await sleep(retryDelay(attempt++, retryAfter), this.#abort.signal);
        } else {
          this.#fail(body);
          return;
        }
      }
    } finally {
      activePolls--;
      census?.pollingStopped();
    }
  }

  /**
   * One long poll of `session`'s inbox. A deadline a little past `wait` guards against a
   * proxy that holds the request forever: the loop must always come round again.
   */
  async #pollOnce(session) {
    const wait = Math.min(this.#options.wait ?? this.maxWait, this.maxWait);
    const after = session.cursor ? `&after=${encodeURIComponent(session.cursor)}` : "";
    const controller = new AbortController();
    this.#pollAbort = controller;
    const stop = () => controller.abort();
    const outer = this.#abort.signal;
    outer.addEventListener("abort", stop, { once: true });
    const deadline = setTimeout(stop, (wait + POLL_GRACE_S) * 1000);
    try {
      const response = await this.#fetch(this.#url(`/v1/rooms/${this.#room}/messages?wait=${wait}${after}`), {
        headers: { Authorization: `Bearer ${session.token}` }, cache: "no-store", signal: controller.signal,
      });
      if (response.ok) return { status: 200, body: await response.json() };
      const retryAfter = response.headers.get("Retry-After");
      return { status: response.status, retryAfter, body: await problemOf(response) };
    } finally {
      clearTimeout(deadline);
      outer.removeEventListener("abort", stop);
      if (this.#pollAbort === controller) this.#pollAbort = null;
    }
  }

  #receive(message) {
    if (!message || this.#seen.has(message.id)) return;
    this.#seen.add(message.id);
    this.#seenOrder.push(message.id);
    if (this.#seenOrder.length > SEEN_IDS_KEPT) this.#seen.delete(this.#seenOrder.shift());
    this.#emit("message", message);
    if (message.type === "peer-joined" || message.type === "peer-left") this.#emit(message.type, message);
  }

  /**
   * Events of a buffered type are held until that type's first listener is attached, so
   * a listener added a little after `join` resolves still sees everything from the start.
   */
  #emit(type, message) {
    if (this.#live.has(type)) {
      this.dispatchEvent(new MessageEvent(type, { data: message }));
      return;
    }
    const buffer = this.#buffers.get(type);
    if (buffer.length < EVENT_BUFFER_MAX) buffer.push(message);
  }

  #goLive(type) {
    // Flush in a microtask, so listeners attached in the same turn all see the backlog;
    // anything arriving before the flush runs queues behind the backlog, keeping order.
    this.#flushing.add(type);
    queueMicrotask(() => {
      const buffer = this.#buffers.get(type);
      while (buffer.length) this.dispatchEvent(new MessageEvent(type, { data: buffer.shift() }));
      this.#flushing.delete(type);
      this.#live.add(type);
    });
  }

  // ---- sending ----

  /** When to post what was just queued: see CANDIDATE_BATCH_DELAY_MS and CANDIDATE_BURST_GAP_MS. */
  #queued(type) {
    const now = Date.now();
    if (DESCRIPTION_TYPES.has(type)) this.#burstDeadline = now + CANDIDATE_BATCH_DELAY_MS;
    if (this.#burstDeadline !== null && (type === "candidate" || DESCRIPTION_TYPES.has(type))) {
      this.#armFlush(Math.min(CANDIDATE_BURST_GAP_MS, this.#burstDeadline - now));
    } else {
      this.#scheduleFlush(type === "candidate" ? CANDIDATE_BATCH_DELAY_MS : 0);
    }
  }

  #scheduleFlush(delay) {
    if (this.#sending) return; // the running flush picks the queue up when it finishes
    if (this.#flushTimer !== null && delay > 0) return;
    this.#armFlush(delay);
  }

  /** Posts the queue in `delay` ms, whatever an earlier timer said. */
  #armFlush(delay) {
    if (this.#sending) return;
    clearTimeout(this.#flushTimer);
    this.#flushTimer = setTimeout(() => { this.#flushTimer = null; this.#flush(); }, Math.max(0, delay));
  }

  /** One POST in flight at a time keeps the server's view of our order equal to call order. */
  async #flush() {
    if (this.#sending) return;
    this.#sending = true;
    this.#burstDeadline = null;
    try {
      while (this.#outbox.length && !this.#closed) {
        // Everything queued now belongs to the identity being replaced: wait, then drop it.
        if (this.#rejoining) await this.#rejoining;
        this.#rejectStaleSends();
        const batch = this.#outbox.splice(0, MAX_BATCH);
        if (batch.length) await this.#postBatch(batch);
      }
    } finally {
      this.#sending = false;
      // A description queued during the posts went with them: nothing waits for a burst.
      this.#burstDeadline = null;
    }
  }

  /** Reject queued messages of an earlier session: they must not go out under a new peer id. */
  #rejectStaleSends() {
    const current = this.#outbox.filter((entry) => entry.session === this.#session);
    for (const entry of this.#outbox) if (entry.session !== this.#session) entry.reject(staleError());
    this.#outbox = current;
  }

  async #postBatch(batch) {
    const body = batch.length === 1 ? batch[0].msg : { messages: batch.map((b) => b.msg) };
    const { session } = batch[0];
    try {
      const result = await this.#request("POST", `/v1/rooms/${this.#room}/messages`, body,
        { session, retries: SEND_MAX_ATTEMPTS });
      batch.forEach((b, i) => b.resolve(result.ids?.[i]));
    } catch (err) {
      // A batch is all-or-nothing: one bad message (or a recipient that left) must not
      // sink the others, so split and let each succeed or fail alone.
      if (batch.length > 1 && err instanceof SignalingError && [400, 404, 413].includes(err.status)) {
        for (const one of batch) await this.#postBatch([one]);
      } else {
        // Gone (410/401): #request has started the rejoin; the batch was the old peer's.
        const reason = err instanceof SignalingError && GONE.has(err.status) ? staleError() : err;
        batch.forEach((b) => b.reject(reason));
      }
    }
  }

  // ---- plumbing ----

  #url(path) { return `${this.#base}${path}`; }

  /**
   * A JSON request with retries on network errors, 429, 503 and other 5xx. With a
   * `session`, every attempt carries that session's token (never a newer one), and a
   * 410/401 starts a rejoin if that session is still the current one, then throws.
   */
  async #request(method, path, body, { session = null, retries = 0, onNetworkError = null } = {}) {
    for (let attempt = 0; ; attempt++) {
      // A retry must not go out after close(): its sleep was cut short by the abort.
      if (this.#closed) throw closedError();
      const headers = {};
      if (session) headers.Authorization = `Bearer ${session.token}`;
      if (body !== undefined) headers["Content-Type"] = "application/json";
      let response;
      try {
        response = await this.#fetch(this.#url(path), {
          method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store",
        });
      } catch (err) {
        onNetworkError?.(err);
        if (attempt >= retries || this.#closed) throw err;
        await sleep(retryDelay(attempt), this.#abort.signal);
        continue;
      }
      if (response.ok) return response.status === 204 ? null : response.json();
      if (session && GONE.has(response.status)) {
        const problem = await problemOf(response);
        this.#sessionGone(session);
        throw problem;
      }
      if (RETRYABLE.has(response.status) && attempt < retries && !this.#closed) {
        await sleep(retryDelay(attempt, response.headers.get("Retry-After")), this.#abort.signal);
        continue;
      }
      throw await problemOf(response);
    }
  }

  #fail(err) {
    this.dispatchEvent(new CustomEvent("error", { detail: err }));
  }

  #shutdown() {
    this.#closed = true;
    this.#abort.abort();
    clearTimeout(this.#flushTimer);
    this.#flushTimer = null;
    for (const { reject } of this.#outbox.splice(0)) reject(closedError());
    if (typeof window !== "undefined") {
      window.removeEventListener("pagehide", this.#onPageHide);
      window.removeEventListener("pageshow", this.#onPageShow);
    }
  }

  /** The page is going away (or into the back/forward cache): leave without waiting. */
  #pageHide() {
    if (this.#closed || !this.#session) return;
    // sendBeacon cannot set headers, hence the token in the body; a string is sent as
    // text/plain, which also avoids a CORS preflight the unloading page could not wait for.
    navigator.sendBeacon(this.#url(`/v1/rooms/${this.#room}/peers/${this.#session.peer}/leave`),
      JSON.stringify({ token: this.#session.token }));
    this.#hidden = true;
    this.#abort.abort();
    this.#abort = new AbortController();
  }

  /** Back from the back/forward cache: we left on the way out, so join again. */
  #pageShow(event) {
    if (!event.persisted || !this.#hidden || this.#closed) return;
    this.#hidden = false;
    this.#session.gone = true;
    this.#rejoin().then(() => this.#startPolling());
  }
}

/**
 * One RTCPeerConnection toward one remote peer, negotiated over a SignalingChannel with
 * the perfect negotiation pattern. Usually created by PeerMesh.
 */
export class PeerLink extends EventTarget {
  #channel; #makingOffer = false; #ignoreOffer = false; #answerPending = false;
  #pendingCandidates = []; #queue = Promise.resolve(); #restartTimer = null; #closed = false;

  constructor(channel, remotePeer, { polite = channel.isPolite(remotePeer), rtcConfig = {},
    localStream = null, dataChannel = "data", name = null } = {}) {
    super();
    this.#channel = channel;
    this.peer = remotePeer;
    this.name = name;
    this.polite = polite;
    this.pc = new RTCPeerConnection({ iceServers: channel.iceServers, ...rtcConfig });
    // Negotiated (id 0) so both sides create "the same" channel without an extra round.
    this.dataChannel = dataChannel === null ? null
      : this.pc.createDataChannel(dataChannel, { negotiated: true, id: 0 });
    for (const track of localStream?.getTracks() ?? []) this.pc.addTrack(track, localStream);

    this.pc.onnegotiationneeded = () => this.#negotiate();
    this.pc.onicecandidate = ({ candidate }) => {
      // The null "end of candidates" is not needed by browsers; not sending it saves a post.
      if (candidate && candidate.candidate) this.#send("candidate", candidate.toJSON());
    };
    this.pc.onconnectionstatechange = () => this.#onConnectionState();
  }

  get state() { return this.pc.connectionState; }

  /** Feed one signalling message from this remote peer; handled strictly in arrival order. */
  handle(message) {
    this.#queue = this.#queue.then(() => this.#handle(message)).catch((err) => {
      this.dispatchEvent(new CustomEvent("error", { detail: err }));
    });
    return this.#queue;
  }

  restartIce() { this.pc.restartIce(); }

  close() {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#restartTimer);
    this.pc.close();
    this.dispatchEvent(new Event("close"));
  }

  async #negotiate() {
    try {
      this.#makingOffer = true;
      await this.pc.setLocalDescription();
      // Not awaited, as in the standard pattern: `makingOffer` covers creating the offer,
      // not its POST. Held across a slow POST (and its retries) it would make the
      // impolite side ignore a valid offer that arrives meanwhile, stalling negotiation.
      this.#send(this.pc.localDescription.type, this.pc.localDescription.toJSON());
    } catch (err) {
      this.dispatchEvent(new CustomEvent("error", { detail: err }));
    } finally {
      this.#makingOffer = false;
    }
  }

  async #handle({ type, data }) {
    if (this.pc.signalingState === "closed") return;
    if (type === "offer" || type === "answer") {
      const readyForOffer = !this.#makingOffer
        && (this.pc.signalingState === "stable" || this.#answerPending);
      const collision = type === "offer" && !readyForOffer;
      this.#ignoreOffer = !this.polite && collision;
      if (this.#ignoreOffer) return;
      this.#answerPending = type === "answer";
      // On a collision the polite side rolls its own offer back implicitly here.
      await this.pc.setRemoteDescription(data);
      this.#answerPending = false;
      for (const c of this.#pendingCandidates.splice(0)) await this.#addCandidate(c);
      if (type === "offer") {
        await this.pc.setLocalDescription();
        await this.#send("answer", this.pc.localDescription.toJSON());
      }
    } else if (type === "candidate") {
      // Candidates can overtake nothing (delivery is ordered) but a rollback or a pending
      // offer can leave us without a remote description: hold them until there is one.
      if (!this.pc.remoteDescription) this.#pendingCandidates.push(data);
      else await this.#addCandidate(data);
    } else if (type === "bye") {
      this.close();
    }
  }

  async #addCandidate(candidate) {
    try {
      await this.pc.addIceCandidate(candidate);
    } catch (err) {
      // Candidates of an offer we ignored (impolite side of a glare) are expected to fail.
      if (!this.#ignoreOffer) throw err;
    }
  }

  #onConnectionState() {
    const state = this.pc.connectionState;
    clearTimeout(this.#restartTimer);
    if (state === "failed") {
      this.restartIce();
    } else if (state === "disconnected") {
      // "disconnected" often heals by itself; restart only if it lingers.
      this.#restartTimer = setTimeout(() => {
        if (this.pc.connectionState === "disconnected") this.restartIce();
      }, 4000);
    }
    this.dispatchEvent(new Event("statechange"));
  }

  #send(type, data) {
    return this.#channel.send({ to: this.peer, type, data }).catch((err) => {
      // The remote peer is no longer in the room (it left before we heard of it): nobody
      // will ever answer this link.
      if (err?.status === 404) { this.close(); return; }
      // A link closed meanwhile (hang-up, rejoin, channel closed) has no use for the error.
      if (this.#closed) return;
      this.dispatchEvent(new CustomEvent("error", { detail: err }));
    });
  }
}

/**
 * A full mesh over one channel: a PeerLink per remote peer. The newcomer calls every peer
 * already in the room (from the join response); peers joining later call us, and their
 * first offer creates our link. Dispatches `link` (detail: the new PeerLink), `track`
 * (detail: {link, track, streams}), `statechange` (detail: link) and `linkclosed`.
 */
export class PeerMesh extends EventTarget {
  #channel; #options; #names = new Map();
  /** Peers whose `peer-left` we have seen: ids are never reused, so never call them. */
  #departed = new Set();
  /** Detaches this mesh's channel listeners on close(). */
  #listening = new AbortController();
  #closed = false;
  /** @type {Map<string, PeerLink>} */
  links = new Map();

  /** options: `localStream`, `rtcConfig`, `dataChannel` (label or null), `autoConnect` (default true). */
  constructor(channel, options = {}) {
    super();
    this.#channel = channel;
    this.#options = options;
    const { signal } = this.#listening;
    // A mesh built after an await gets the channel's buffered backlog first (in a
    // microtask queued by this listener), so a `peer-left` already received is known
    // before #connectAll below runs.
    channel.addEventListener("message", (event) => this.#onMessage(event.data), { signal });
    channel.addEventListener("rejoin", () => this.#onRejoin(), { signal });
    channel.addEventListener("close", () => this.close(), { signal });
    this.#rememberNames(channel.peers);
    // In a microtask, so `link` listeners attached right after construction see these links.
    if (options.autoConnect !== false) queueMicrotask(() => this.#connectAll());
  }

  /** Start (or return) the link toward `remotePeer`; adding the tracks starts an offer. */
  connect(remotePeer) {
    return this.links.get(remotePeer) ?? this.#createLink(remotePeer);
  }

  /** Close every link and stop listening to the channel (which stays open). */
  close() {
    this.#closed = true;
    this.#listening.abort();
    this.#closeLinks();
  }

  #closeLinks() {
    for (const link of [...this.links.values()]) link.close();
  }

  #createLink(remotePeer) {
    const link = new PeerLink(this.#channel, remotePeer, {
      localStream: this.#options.localStream,
      rtcConfig: this.#options.rtcConfig,
      dataChannel: this.#options.dataChannel === undefined ? "data" : this.#options.dataChannel,
      name: this.#names.get(remotePeer) ?? null,
    });
    this.links.set(remotePeer, link);
    link.pc.addEventListener("track", ({ track, streams }) =>
      this.dispatchEvent(new CustomEvent("track", { detail: { link, track, streams } })));
    link.addEventListener("statechange", () =>
      this.dispatchEvent(new CustomEvent("statechange", { detail: link })));
    link.addEventListener("close", () => {
      if (this.links.get(remotePeer) === link) this.links.delete(remotePeer);
      this.dispatchEvent(new CustomEvent("linkclosed", { detail: link }));
    });
    this.dispatchEvent(new CustomEvent("link", { detail: link }));
    return link;
  }

  #rememberNames(peers) {
    for (const p of peers) if (p.name) this.#names.set(p.peer, p.name);
  }

  #onMessage(message) {
    const { from, type } = message;
    if (type === "peer-joined") {
      if (message.data?.name) this.#names.set(from, message.data.name);
      return;
    }
    if (type === "peer-left") {
      this.#departed.add(from);
      this.links.get(from)?.close();
      return;
    }
    if (!["offer", "answer", "candidate", "bye"].includes(type)) return;
    let link = this.links.get(from);
    // Only an offer may open a link (delivery is in sender order, so a call's candidates
    // come after its offer); a stray candidate, answer or bye for a link we already closed
    // must not resurrect it, or it would start calling a peer that hung up.
    if (!link && type === "offer") link = this.#createLink(from);
    link?.handle(message);
  }

  #onRejoin() {
    // A new peer id: every remote sees us as a newcomer, so start over as one.
    this.#closeLinks();
    this.#rememberNames(this.#channel.peers);
    if (this.#options.autoConnect !== false) this.#connectAll();
  }

  #connectAll() {
    for (const p of this.#channel.peers) {
      if (this.#closed || this.#channel.closed) return;
      if (!this.#departed.has(p.peer)) this.connect(p.peer);
    }
  }
}
