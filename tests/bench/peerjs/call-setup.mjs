// Two-browser call setup, signalpost vs PeerJS, in one run on one machine (issue 7).
//
// One headless Chromium (Debian's), a fresh context with two pages per run. Both pages open
// their fake camera and microphone first; the clock (performance.timeOrigin + now(), so the
// two pages' stamps compare) starts when the second page starts joining, and stops when the
// later of the two RTCPeerConnections reports connectionState "connected".
//   signalpost: pages on the signalpost server's origin import /signalpost.js from it;
//     alice joins and runs a PeerMesh; bob (clock starts) joins, and his PeerMesh calls her.
//   PeerJS:     pages load the peerjs package's browser bundle from a local static server;
//     alice's Peer is open and answers calls with her stream; bob (clock starts) creates a
//     Peer (server-assigned id: GET /peerjs/id, then the WebSocket) and, on open, peer.call()s
//     alice with his stream.
// Same ICE configuration on both sides: {iceServers: []}, host candidates on loopback. Same
// media: audio + video from the fake devices, no data channel (PeerJS's MediaConnection has
// none; DATA_CHANNEL=1 gives PeerMesh its default negotiated channel).
// Runs alternate which system goes first. Env: RUNS (default 10), SIGNALPOST_BIN (required),
// SIGNALPOST_WEB_DIR (where the server reads signalpost.js; default this checkout's web/),
// CHROMIUM, JSON=path.
import http from "node:http";
import { readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { startSignalpost, startPeerServer } from "./lib/servers.mjs";
import { summarize, ms } from "./lib/stats.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const RUNS = Number(process.env.RUNS ?? 10);
const CONNECT_TIMEOUT_MS = 30_000;
const DATA_CHANNEL = process.env.DATA_CHANNEL === "1";
const CHROMIUM_ARGS = [
  "--headless", "--no-sandbox",
  "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
  "--disable-features=WebRtcHideLocalIpsWithMdns",
  "--disable-background-networking", "--disable-component-update", "--no-first-run", "--disable-gpu",
];

/** Static files for the PeerJS pages: a blank page and the peerjs browser bundle. */
function startStatic() {
  const bundle = readFileSync(path.join(HERE, "node_modules/peerjs/dist/peerjs.min.js"));
  const page = `<!doctype html><meta charset="utf-8"><title>peerjs bench</title><script src="/peerjs.min.js"></script>`;
  const server = http.createServer((req, res) => {
    if (req.url === "/peerjs.min.js") res.writeHead(200, { "Content-Type": "text/javascript" }).end(bundle);
    else if (req.url === "/bench.html") res.writeHead(200, { "Content-Type": "text/html" }).end(page);
    else res.writeHead(404).end();
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve({
    url: `http://127.0.0.1:${server.address().port}`,
    stop: () => new Promise((r) => { server.closeAllConnections(); server.close(r); }),
  })));
}

// With TRACE=1 every page logs its signalling traffic and RTCPeerConnection events into
// window.benchEvents, and each run prints both pages' timelines relative to bob's start.
const TRACE = process.env.TRACE === "1";
const TRACE_SETUP = `
window.benchEvents = [];
window.benchLog = (what) => window.benchEvents.push([performance.timeOrigin + performance.now(), what]);
window.benchWatchPc = (pc) => {
  pc.addEventListener("icecandidate", (e) => window.benchLog(e.candidate ? "candidate gathered" : "gathering done"));
  pc.addEventListener("signalingstatechange", () => window.benchLog("signaling " + pc.signalingState));
  pc.addEventListener("iceconnectionstatechange", () => window.benchLog("ice " + pc.iceConnectionState));
  pc.addEventListener("connectionstatechange", () => window.benchLog("pc " + pc.connectionState));
};
const describe = (body) => {
  try { const b = JSON.parse(body); return b.messages ? b.messages.map((m) => m.type).join("+") : (b.type ?? ""); }
  catch { return ""; }
};
const NativeWebSocket = window.WebSocket;
window.WebSocket = class extends NativeWebSocket {
  constructor(...args) {
    super(...args);
    this.addEventListener("message", (e) => window.benchLog("ws ← " + describe(e.data)));
  }
  send(data) { window.benchLog("ws → " + describe(data)); super.send(data); }
};
window.benchFetch = async (url, init = {}) => {
  const method = init.method ?? "GET";
  const what = method + " " + new URL(url, location.href).pathname.split("/").slice(4).join("/") + " " + describe(init.body);
  if (method !== "GET") window.benchLog(what + " →");
  const res = await fetch(url, init);
  if (method !== "GET") window.benchLog(what + " ← " + res.status);
  return res;
};
const nativeFetch = window.fetch.bind(window);
window.fetch = (url, init = {}) => {
  const method = init?.method ?? "GET";
  const what = "fetch " + method + " " + new URL(String(url), location.href).pathname;
  window.benchLog(what + " →");
  return nativeFetch(url, init).then((r) => { window.benchLog(what + " ← " + r.status); return r; });
};`;

function newPage(context) {
  return context.newPage().then(async (page) => {
    page.on("pageerror", (err) => console.error(`[page error] ${err.message}`));
    if (TRACE) await page.addInitScript({ content: TRACE_SETUP });
    return page;
  });
}

// Milestones of a call in the TRACE timelines: [who, event] per system, first match wins.
const MILESTONES = {
  ours: { joined: ["bob", "POST peers  ← 201"], joinResolved: ["bob", "joined"],
    localOffer: ["bob", "signaling have-local-offer"], offerOut: ["bob", "POST messages offer →"],
    offerIn: ["alice", "poll ← offer"], answerOut: ["alice", "POST messages answer →"],
    answerIn: ["bob", "poll ← answer"], candidatesInAlice: ["alice", "poll ← candidate"],
    candidatesInBob: ["bob", "poll ← candidate"] },
  peerjs: { joined: ["bob", "ws ← OPEN"], joinResolved: ["bob", "ws ← OPEN"],
    localOffer: ["bob", "signaling have-local-offer"], offerOut: ["bob", "ws → OFFER"], offerIn: ["alice", "ws ← OFFER"],
    answerOut: ["alice", "ws → ANSWER"], answerIn: ["bob", "ws ← ANSWER"],
    candidatesInAlice: ["alice", "ws ← CANDIDATE"], candidatesInBob: ["bob", "ws ← CANDIDATE"] },
};
const PHASES = [
  ["join (ours: 201 headers; PeerJS: GET /id + OPEN)", null, "joined"],
  ["join response body read (ours only)", "joined", "joinResolved"],
  ["joined → local offer set", "joinResolved", "localOffer"], ["local offer → offer sent", "localOffer", "offerOut"],
  ["offer transit", "offerOut", "offerIn"],
  ["offer in → answer out", "offerIn", "answerOut"], ["answer transit", "answerOut", "answerIn"],
  ["answer in → both connected", "answerIn", "connected"],
  ["(bob's first candidate reaches alice)", null, "candidatesInAlice"], ["(alice's first candidate reaches bob)", null, "candidatesInBob"],
];
const phases = { ours: [], peerjs: [], proto: [] };

async function printTrace(alice, bob, which, total) {
  if (!TRACE) return;
  const start = await bob.evaluate(() => window.bench.startedAt);
  const events = [];
  for (const [who, page] of [["alice", alice], ["bob", bob]]) {
    for (const [t, what] of await page.evaluate(() => window.benchEvents)) events.push([t - start, who, what]);
  }
  events.sort((x, y) => x[0] - y[0]);
  if (process.env.TRACE_EVENTS === "1") {
    for (const [t, who, what] of events) if (t >= -1) console.log(`  ${t.toFixed(1).padStart(7)} ms  ${who.padEnd(5)}  ${what}`);
  }
  const at = { connected: total };
  for (const [name, [who, what]] of Object.entries(MILESTONES[which === "proto" ? "ours" : which])) {
    at[name] = events.find(([t, w, e]) => t >= 0 && w === who && e.trim() === what.trim())?.[0] ?? NaN;
  }
  phases[which].push(Object.fromEntries(PHASES.map(([label, from, to]) => [label, at[to] - (from ? at[from] : 0)])));
}

function printPhases() {
  if (!TRACE) return;
  console.log("\nwhere the time goes (TRACE=1), median ms over the runs, from bob's join start\n");
  const withProto = phases.proto.length > 0;
  console.log(`| phase | signalpost | PeerJS |${withProto ? " prototype |" : ""}`);
  console.log(`|---|---:|---:|${withProto ? "---:|" : ""}`);
  for (const [label] of PHASES) {
    const med = (which) => {
      const v = phases[which].map((p) => p[label]).filter((x) => !Number.isNaN(x));
      return v.length ? summarize(v).median.toFixed(1) : "–";
    };
    console.log(`| ${label} | ${med("ours")} | ${med("peerjs")} |${withProto ? ` ${med("proto")} |` : ""}`);
  }
}

/** A page on the signalpost origin (no request interception) with the library as window.sp. */
async function signalpostPage(context, base) {
  const page = await newPage(context);
  await page.goto(`${base}/v1/health`);
  await page.addScriptTag({ type: "module", content: `import * as sp from "/signalpost.js"; window.sp = sp;` });
  await page.waitForFunction(() => window.sp !== undefined, null, { timeout: 10_000 });
  await page.evaluate(async () => {
    window.bench = { stream: await navigator.mediaDevices.getUserMedia({ audio: true, video: true }), connectedAt: null };
  });
  return page;
}

/** Join and run a PeerMesh; stamps `bench.startedAt` before the join, `bench.connectedAt` on connected. */
function signalpostJoin(page, base, room, dataChannel) {
  return page.evaluate(async ({ base, room, dataChannel }) => {
    const now = () => performance.timeOrigin + performance.now();
    const { SignalingChannel, PeerMesh } = window.sp;
    const bench = window.bench;
    bench.startedAt = now();
    const channel = await SignalingChannel.join(base, room, window.benchFetch ? { fetch: window.benchFetch } : {});
    if (window.benchLog) {
      window.benchLog("joined");
      channel.addEventListener("message", ({ data }) => window.benchLog(`poll ← ${data.type}`));
    }
    const mesh = new PeerMesh(channel, {
      localStream: bench.stream, rtcConfig: { iceServers: [] }, dataChannel: dataChannel ? "data" : null,
    });
    if (window.benchWatchPc) mesh.addEventListener("link", ({ detail: link }) => window.benchWatchPc(link.pc));
    mesh.addEventListener("statechange", ({ detail: link }) => {
      if (link.state === "connected") bench.connectedAt ??= now();
    });
    Object.assign(bench, { channel, mesh });
  }, { base, room, dataChannel });
}

async function runSignalpost(browser, base, run, which = "ours") {
  const context = await browser.newContext();
  try {
    const [alice, bob] = [await signalpostPage(context, base), await signalpostPage(context, base)];
    const room = `call-${process.pid}-${run}`;
    await signalpostJoin(alice, base, room, DATA_CHANNEL);
    await signalpostJoin(bob, base, room, DATA_CHANNEL);
    const t = await finish(alice, bob);
    await printTrace(alice, bob, which, t);
    return t;
  } finally {
    await context.close();
  }
}

async function peerjsPage(context, staticUrl) {
  const page = await newPage(context);
  await page.goto(`${staticUrl}/bench.html`);
  await page.waitForFunction(() => window.peerjs?.Peer !== undefined, null, { timeout: 10_000 });
  await page.evaluate(async () => {
    window.bench = { stream: await navigator.mediaDevices.getUserMedia({ audio: true, video: true }), connectedAt: null };
  });
  return page;
}

/** In a PeerJS page: create a Peer on the local server; resolves with its id once open. */
const PEER_SETUP = `
window.benchPeer = (server) => {
  const now = () => performance.timeOrigin + performance.now();
  const bench = window.bench;
  const watch = (pc) => {
    window.benchWatchPc?.(pc);
    const check = () => { if (pc.connectionState === "connected") bench.connectedAt ??= now(); };
    pc.addEventListener("connectionstatechange", check);
    check();
  };
  bench.watch = watch;
  bench.startedAt = now();
  const peer = new window.peerjs.Peer({ host: "127.0.0.1", port: server.port, path: "/", key: "peerjs",
    secure: false, config: { iceServers: [] } });
  bench.peer = peer;
  peer.on("call", (call) => { call.answer(bench.stream); watch(call.peerConnection); });
  peer.on("error", (err) => console.error("peerjs error " + err.type));
  return new Promise((resolve, reject) => { peer.on("open", resolve); peer.on("error", reject); });
};`;

async function runPeerjs(browser, staticUrl, peerUrl) {
  const context = await browser.newContext();
  try {
    const [alice, bob] = [await peerjsPage(context, staticUrl), await peerjsPage(context, staticUrl)];
    const server = { port: Number(new URL(peerUrl).port) };
    for (const page of [alice, bob]) await page.addScriptTag({ content: PEER_SETUP });
    const aliceId = await alice.evaluate((server) => window.benchPeer(server), server);
    await bob.evaluate(({ server, aliceId }) => {
      // Clock starts inside benchPeer, before the Peer is created.
      window.benchPeer(server).then(() => {
        const call = window.bench.peer.call(aliceId, window.bench.stream);
        window.bench.watch(call.peerConnection);
      });
    }, { server, aliceId });
    const t = await finish(alice, bob);
    await printTrace(alice, bob, "peerjs", t);
    return t;
  } finally {
    await context.close();
  }
}

/** Wait until both pages are connected; the figure is max(connectedAt) − bob's startedAt. */
async function finish(alice, bob) {
  const wait = (page) => page.waitForFunction(() => window.bench.connectedAt !== null, null,
    { timeout: CONNECT_TIMEOUT_MS, polling: 50 });
  await Promise.all([wait(alice), wait(bob)]);
  const a = await alice.evaluate(() => window.bench.connectedAt);
  const b = await bob.evaluate(() => [window.bench.startedAt, window.bench.connectedAt]);
  return Math.max(a, b[1]) - b[0];
}

// The server serves /signalpost.js from SIGNALPOST_WEB_DIR: this checkout's web/ unless set
// (as tests/e2e does; a binary's embedded copy can lag behind the checkout).
const WEB_DIR = path.resolve(process.env.SIGNALPOST_WEB_DIR ?? path.join(HERE, "../../../web"));
const sp = await startSignalpost({ SIGNALPOST_WEB_DIR: WEB_DIR });
// PROTO_WEB_DIR: a third series, "proto", with the signalpost.js found there (a prototype of
// a client change), served by a second signalpost server so that the two never share a store.
const PROTO_WEB_DIR = process.env.PROTO_WEB_DIR ? path.resolve(process.env.PROTO_WEB_DIR) : null;
const spProto = PROTO_WEB_DIR ? await startSignalpost({ SIGNALPOST_WEB_DIR: PROTO_WEB_DIR }) : null;
const pj = await startPeerServer();
const statics = await startStatic();
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium", args: CHROMIUM_ARGS, timeout: 30_000,
});
const SERIES = spProto ? ["ours", "peerjs", "proto"] : ["ours", "peerjs"];
const times = Object.fromEntries(SERIES.map((k) => [k, []]));
const runOne = (which, run) => (which === "peerjs" ? runPeerjs(browser, statics.url, pj.url)
  : runSignalpost(browser, which === "proto" ? spProto.url : sp.url, run, which));
try {
  // One unmeasured run each: the first call in a fresh browser pays one-off start-up costs.
  for (const which of SERIES) await runOne(which, 0);
  for (const which of SERIES) phases[which] = [];
  for (let run = 1; run <= RUNS; run++) {
    // Rotate (two series: alternate) which goes first.
    const order = SERIES.map((_, k) => SERIES[(k + run) % SERIES.length]);
    const line = [];
    for (const which of order) {
      const t = await runOne(which, run);
      times[which].push(t);
      line.push(`${which} ${t.toFixed(0)} ms`);
    }
    console.log(`run ${String(run).padStart(2)}: ${line.join(", ")}`);
  }
} finally {
  await browser.close();
  await statics.stop();
  await sp.stop();
  await spProto?.stop();
  await pj.stop();
}

const s = Object.fromEntries(SERIES.map((k) => [k, summarize(times[k])]));
const load = os.loadavg().map((x) => x.toFixed(2)).join(" ");
console.log(`\ncall setup (second page's join → both RTCPeerConnections connected), ${RUNS} runs each, alternated; `
  + `${os.cpus().length} CPUs, load ${load}${DATA_CHANNEL ? ", PeerMesh with data channel" : ""}\n`);
console.log("| client + server | median ms | min ms | max ms |");
console.log("|---|---:|---:|---:|");
console.log(`| signalpost.js PeerMesh + signalpost | ${ms(s.ours.median, 0)} | ${ms(s.ours.min, 0)} | ${ms(s.ours.max, 0)} |`);
console.log(`| peerjs peer.call() + PeerJS server | ${ms(s.peerjs.median, 0)} | ${ms(s.peerjs.min, 0)} | ${ms(s.peerjs.max, 0)} |`);
if (s.proto) console.log(`| prototype signalpost.js (${path.relative(process.cwd(), PROTO_WEB_DIR) || "."}) + signalpost | ${ms(s.proto.median, 0)} | ${ms(s.proto.min, 0)} | ${ms(s.proto.max, 0)} |`);
const paired = summarize(times.ours.map((t, i) => t - times.peerjs[i]));
console.log(`\nratio ours/PeerJS: median ${(s.ours.median / s.peerjs.median).toFixed(2)}× (target ≤ 1.1×); `
  + `paired runs, median of (ours − PeerJS): ${paired.median.toFixed(0)} ms`);
if (s.proto) {
  const pairedProto = summarize(times.proto.map((t, i) => t - times.ours[i]));
  console.log(`prototype/PeerJS: median ${(s.proto.median / s.peerjs.median).toFixed(2)}×; paired runs, median of (prototype − ours): ${pairedProto.median.toFixed(0)} ms`);
}
printPhases();
if (process.env.JSON) writeFileSync(process.env.JSON, JSON.stringify({ RUNS, load, times, paired, summary: s, phases }, null, 1));
process.exit(0);
