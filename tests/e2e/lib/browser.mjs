// Launches Debian's Chromium through playwright-core (never a downloaded browser) and
// gives tests small helpers: a blank same-origin page that can import /signalpost.js,
// and bounded waits.
import { chromium } from "playwright-core";

export const CHROMIUM_ARGS = [
  "--headless", "--no-sandbox",
  "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
  // Without this Chromium hides host candidates behind mDNS names that loopback cannot resolve.
  "--disable-features=WebRtcHideLocalIpsWithMdns",
  "--disable-background-networking", "--disable-component-update", "--no-first-run", "--disable-gpu",
];

/** `extraArgs` adds Chromium flags for one test (e.g. `--ignore-certificate-errors`). */
export function launchBrowser(extraArgs = []) {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: [...CHROMIUM_ARGS, ...extraArgs],
    timeout: 30_000,
  });
}

/**
 * A page at `${base}/__e2e__.html` (served by page.route, so it shares the server's origin
 * without the server knowing about it) with the client library loaded as `window.sp`.
 * `served`: load the server's own demo page instead (without `?room=` it joins nothing). A
 * page fulfilled by page.route has no address, so Chromium's Local Network Access refuses
 * its cross-origin requests to loopback; a served one may call another loopback port.
 */
export async function libraryPage(context, base, { served = false } = {}) {
  const page = await context.newPage();
  page.on("pageerror", (err) => console.error(`[page error] ${err.message}`));
  if (served) {
    await page.goto(`${base}/`);
    await page.evaluate(async () => { window.sp = await import("/signalpost.js"); });
    return page;
  }
  await page.route(`${base}/__e2e__.html`, (route) => route.fulfill({
    contentType: "text/html",
    body: `<!doctype html><meta charset="utf-8"><title>e2e</title>
<script type="module">import * as sp from "/signalpost.js"; window.sp = sp;</script>`,
  }));
  await page.goto(`${base}/__e2e__.html`);
  await page.waitForFunction(() => window.sp !== undefined, null, { timeout: 10_000 });
  return page;
}

/** Wait until `html[data-state=connected]` and `data-peers >= n` on a demo page. */
export async function waitForDemoPeers(page, n, timeout = 30_000) {
  await page.waitForFunction(
    (want) => document.documentElement.dataset.state === "connected"
      && Number(document.documentElement.dataset.peers) >= want,
    n, { timeout, polling: 100 });
}

/**
 * On a libraryPage: camera + microphone (fake devices), join `room`, start a PeerMesh and
 * record what happens in `window.e2e` (link states, remote track kinds, data channel
 * messages; "ping:x" is answered with "pong:x"). Resolves with this page's peer id.
 * `trace`: also list every request the channel makes in `window.e2e.requests`
 * (`{method, path, start, end, status, types}`, epoch milliseconds; `types`: the message
 * types a post sent or a poll received).
 */
export function startLibraryCall(page, base, room, { name = "e2e", autoConnect = true, trace = false } = {}) {
  return page.evaluate(async ({ base, room, name, autoConnect, trace }) => {
    const { SignalingChannel, PeerMesh } = window.sp;
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
    const now = () => performance.timeOrigin + performance.now(); // comparable across pages
    const requests = [];
    const traced = async (input, init = {}) => {
      const entry = { method: init.method ?? "GET", path: new URL(String(input)).pathname, start: now() };
      // What a post sends and a poll receives, by message type ("offer", "candidate"...).
      const types = (body) => [body].flat().flatMap((b) => b?.messages ?? [b]).map((m) => m?.type).filter(Boolean);
      if (typeof init.body === "string") entry.types = types(JSON.parse(init.body));
      requests.push(entry);
      try {
        const response = await window.fetch(input, init);
        entry.end = now();
        entry.status = response.status;
        if (entry.method === "GET" && response.ok) {
          entry.types = types(await response.clone().json().catch(() => null));
        }
        return response;
      } finally {
        entry.end ??= now();
      }
    };
    const joinStartedAt = now();
    const channel = await SignalingChannel.join(base, room, { name, ...(trace ? { fetch: traced } : {}) });
    const mesh = new PeerMesh(channel, { localStream: stream, autoConnect });
    const e2e = { channel, mesh, states: {}, tracks: {}, received: [], errors: [], joinStartedAt, connectedAt: {}, requests };
    window.e2e = e2e;
    mesh.addEventListener("link", ({ detail: link }) => {
      link.addEventListener("error", ({ detail }) => e2e.errors.push(String(detail)));
      link.dataChannel.addEventListener("message", ({ data }) => {
        e2e.received.push(data);
        if (data.startsWith("ping:")) link.dataChannel.send(`pong:${data.slice(5)}`);
      });
    });
    mesh.addEventListener("statechange", ({ detail: link }) => {
      e2e.states[link.peer] = link.state;
      if (link.state === "connected") e2e.connectedAt[link.peer] ??= now();
    });
    // pc.close() fires no state event: forget a closed link's state so waits see the new one.
    mesh.addEventListener("linkclosed", ({ detail: link }) => {
      if (!mesh.links.has(link.peer)) delete e2e.states[link.peer];
    });
    mesh.addEventListener("track", ({ detail }) => {
      (e2e.tracks[detail.link.peer] ??= []).push(detail.track.kind);
    });
    return channel.peer;
  }, { base, room, name, autoConnect, trace });
}

/** Wait until this library page's link toward `remotePeer` is `connected`. */
export function waitForLink(page, remotePeer, timeout = 30_000) {
  return page.waitForFunction((peer) => window.e2e?.states[peer] === "connected",
    remotePeer, { timeout, polling: 100 });
}

let roomCounter = 0;
/** A fresh room name per test, so tests sharing a server never see each other. */
export const freshRoom = (label) => `${label}-${process.pid}-${++roomCounter}`;

/**
 * Close a context whose pages may still have route handlers waiting on held long polls:
 * without `ignoreErrors` those handlers fail after the close and the whole file is
 * reported as failed by an unhandled rejection.
 */
export async function closeContext(context) {
  for (const page of context.pages()) await page.unrouteAll({ behavior: "ignoreErrors" }).catch(() => {});
  await context.close();
}

/**
 * On a libraryPage: join `room` as `window.channel` without attaching any listener, as an
 * app busy awaiting something else would. `window.seen` lists the types of polled
 * messages; `window.polls` counts polls started, and `window.pollsBefore[type]` is that
 * count when a poll's answer first carried `type`. Resolves with the peer id.
 */
export function joinQuietly(page, base, room, name) {
  return page.evaluate(async ({ base, room, name }) => {
    window.seen = [];
    window.polls = 0;
    window.pollsBefore = {};
    // Wrap fetch to see what the poll loop received before any listener exists.
    const fetch = async (...args) => {
      const isPoll = String(args[0]).includes("/messages?");
      if (isPoll) window.polls++;
      const started = window.polls;
      const response = await window.fetch(...args);
      if (isPoll) {
        response.clone().json().then((b) => {
          for (const m of b.messages ?? []) {
            window.seen.push(m.type);
            window.pollsBefore[m.type] ??= started;
          }
        }).catch(() => {});
      }
      return response;
    };
    window.channel = await window.sp.SignalingChannel.join(base, room, { name, fetch });
    return window.channel.peer;
  }, { base, room, name });
}

/**
 * Wait until a joinQuietly channel has taken in a polled message of `type`. The poll loop
 * starts its next poll only after handling the previous answer, so once a poll later than
 * the one that carried it has started, the channel holds the message (no sleep needed).
 */
export function waitForPolled(page, type, timeout = 15_000) {
  return page.waitForFunction((t) => window.seen.includes(t) && window.polls > window.pollsBefore[t],
    type, { timeout });
}
