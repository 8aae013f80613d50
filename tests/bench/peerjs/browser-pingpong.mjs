// A diagnostic for README.md's analysis: the message round trip of pingpong.mjs, but
// between two pages of headless Chromium, where users run the client. Not in run.sh's table.
//   signalpost: signalpost.js SignalingChannel in both pages (its own long polls and POSTs);
//     A sends {type: "message"} to B, B's "message" listener sends one back.
//   PeerJS:     a WebSocket per page to the PeerJS server, speaking its protocol (as the
//     peerjs client does underneath); OFFER there, ANSWER back.
//   relay, long poll / relay, SSE: lib/lp-relay.mjs (bare in-memory HTTP relay) with a
//     minimal page client: fetch POST to send; receive by long poll, or by one EventSource.
//     What HTTP itself costs in the browser, and what a streaming receive would save.
// Interleaved, M round trips each (default 200) after 20 unmeasured, SETTLE_MS (default 5)
// pause before each. Env: SIGNALPOST_BIN (required), SIGNALPOST_WEB_DIR, CHROMIUM.
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { startSignalpost, startPeerServer, startRelay } from "./lib/servers.mjs";
import { summarize, ms } from "./lib/stats.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const M = Number(process.env.M ?? 200);
const SETTLE_MS = Number(process.env.SETTLE_MS ?? 5);
const WEB_DIR = path.resolve(process.env.SIGNALPOST_WEB_DIR ?? path.join(HERE, "../../../web"));
const CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-background-networking",
  "--disable-component-update", "--no-first-run", "--disable-gpu"];

const sp = await startSignalpost({ SIGNALPOST_WEB_DIR: WEB_DIR });
const pj = await startPeerServer();
const relay = await startRelay();
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium", args: CHROMIUM_ARGS, timeout: 30_000 });
try {
  const context = await browser.newContext();
  const pages = [];
  for (let i = 0; i < 2; i++) {
    const page = await context.newPage();
    page.on("pageerror", (err) => console.error(`[page error] ${err.message}`));
    await page.goto(`${sp.url}/v1/health`);
    await page.addScriptTag({ type: "module", content: `import * as sp from "/signalpost.js"; window.sp = sp;` });
    await page.waitForFunction(() => window.sp !== undefined, null, { timeout: 10_000 });
    pages.push(page);
  }
  const [a, b] = pages;
  const room = `bpp-${process.pid}`;
  const setup = ({ base, room, ws, id, relay }) => {
    // Both transports feed the same `pending` table; replies echo the sequence number.
    window.pending = new Map();
    window.arrive = (n) => { const f = window.pending.get(n); if (f) { window.pending.delete(n); f(performance.now()); } };
    return (async () => {
      // Stamps (epoch ms, comparable across pages) of each leg's steps, by sequence number.
      const now = () => performance.timeOrigin + performance.now();
      window.stamps = [];
      const stamp = (what, n) => window.stamps.push([what, n, now()]);
      const tracedFetch = async (url, init = {}) => {
        let n = null;
        try { const d = JSON.parse(init.body).data; n = d.ping ?? d.pong ?? null; } catch {}
        if (n !== null) stamp("post start", n);
        const res = await fetch(url, init);
        if (n !== null) stamp("post 202", n);
        return res;
      };
      window.stamp = stamp;
      const channel = await window.sp.SignalingChannel.join(base, room, { fetch: tracedFetch });
      channel.addEventListener("message", ({ data: m }) => {
        if (m.type !== "message") return;
        stamp("received", m.data.ping ?? m.data.pong);
        if (m.data.ping) stamp("send() called", m.data.ping);
        if (m.data.ping) channel.send({ to: m.from, type: "message", data: { pong: m.data.ping } });
        else if (m.data.pong) window.arrive(m.data.pong);
      });
      const socket = new WebSocket(`${ws}/peerjs?key=peerjs&id=${id}&token=t${id}`);
      await new Promise((resolve, reject) => {
        socket.onmessage = ({ data }) => {
          const m = JSON.parse(data);
          if (m.type === "OPEN") resolve();
          else if (m.type === "OFFER") socket.send(JSON.stringify({ type: "ANSWER", dst: m.src, payload: { pong: m.payload.ping } }));
          else if (m.type === "ANSWER") window.arrive(m.payload.pong);
        };
        socket.onerror = reject;
      });
      // The relay, twice: one identity receiving by long poll, one by EventSource. Sends are
      // text/plain with the token in the query, so no request needs a CORS preflight.
      const relayIds = {};
      window.relaySend = {};
      for (const mode of ["poll", "sse"]) {
        const r = `${room}-${mode}`;
        const joined = await (await fetch(`${relay}/v1/rooms/${r}/peers`, { method: "POST", body: "{}" })).json();
        relayIds[mode] = joined.peer;
        const send = (to, data) => fetch(`${relay}/v1/rooms/${r}/messages?token=${joined.peer}`,
          { method: "POST", body: JSON.stringify({ to, type: "message", data }) });
        window.relaySend[mode] = send;
        const onMessage = (m) => { if (m.data.ping) send(m.from, { pong: m.data.ping }); else if (m.data.pong) window.arrive(m.data.pong); };
        if (mode === "sse") {
          const source = new EventSource(`${relay}/v1/rooms/${r}/events?token=${joined.peer}`);
          await new Promise((resolve) => { source.onopen = resolve; });
          source.onmessage = ({ data }) => onMessage(JSON.parse(data));
        } else {
          (async () => {
            let cursor = 0;
            for (let i = 0; i < 100_000; i++) {
              const res = await fetch(`${relay}/v1/rooms/${r}/messages?wait=20&after=${cursor}&token=${joined.peer}`, { cache: "no-store" });
              const body = await res.json();
              cursor = body.cursor;
              for (const m of body.messages) onMessage(m);
            }
          })();
        }
      }
      Object.assign(window, { channel, socket });
      return { peer: channel.peer, relayIds };
    })();
  };
  const ws = pj.url.replace(/^http/, "ws");
  const aId = `pa${process.pid}`, bId = `pb${process.pid}`;
  await a.evaluate(setup, { base: sp.url, room, ws, id: aId, relay: relay.url });
  const { peer: bPeer, relayIds: bRelay } = await b.evaluate(setup, { base: sp.url, room, ws, id: bId, relay: relay.url });

  const run = (which, n) => a.evaluate(({ which, n, bPeer, bId, bRelay, settle }) => new Promise((resolve, reject) => {
    setTimeout(() => {
      const timer = setTimeout(() => reject(new Error(`round trip ${n} timed out`)), 10_000);
      const t0 = performance.now();
      window.pending.set(n, (t) => { clearTimeout(timer); resolve(t - t0); });
      if (which === "ours") window.stamp("send() called", n);
      if (which === "ours") window.channel.send({ to: bPeer, type: "message", data: { ping: n } });
      else if (which === "peerjs") window.socket.send(JSON.stringify({ type: "OFFER", dst: bId, payload: { ping: n } }));
      else window.relaySend[which](bRelay[which], { ping: n });
    }, settle);
  }), { which, n, bPeer, bId, bRelay, settle: SETTLE_MS });

  await new Promise((r) => setTimeout(r, 300));
  const kinds = ["ours", "peerjs", "poll", "sse"];
  const times = Object.fromEntries(kinds.map((k) => [k, []]));
  let n = 0;
  for (let i = -20; i < M; i++) {
    for (let k = 0; k < kinds.length; k++) {
      const which = kinds[(k + i + 100 * kinds.length) % kinds.length];
      const t = await run(which, ++n);
      if (i >= 0) times[which].push(t);
    }
  }
  const s = Object.fromEntries(kinds.map((k) => [k, summarize(times[k])]));
  // Per leg of ours (A→B ping and B→A pong alike): where the time goes.
  const stamps = new Map();
  for (const page of [a, b]) {
    for (const [what, n, t] of await page.evaluate(() => window.stamps)) {
      if (!stamps.has(n)) stamps.set(n, {});
      // Each step happens once per leg; the ping leg and the pong leg share n but not pages.
      const key = `${what}@${page === a ? "a" : "b"}`;
      stamps.get(n)[key] = t;
    }
  }
  const legs = { "send() called → POST starts": [], "POST start → 202 (sender)": [], "POST start → message event at recipient": [] };
  for (const st of stamps.values()) {
    for (const [from, to] of [["a", "b"], ["b", "a"]]) {
      const [call, start, done, recv] = [st[`send() called@${from}`], st[`post start@${from}`], st[`post 202@${from}`], st[`received@${to}`]];
      if ([call, start, done, recv].some((x) => x === undefined)) continue;
      legs["send() called → POST starts"].push(start - call);
      legs["POST start → 202 (sender)"].push(done - start);
      legs["POST start → message event at recipient"].push(recv - start);
    }
  }
  console.log(`\nbrowser ping-pong (two Chromium pages), M=${M} each, interleaved, ${SETTLE_MS} ms pause before each; `
    + `${os.cpus().length} CPUs, load ${os.loadavg().map((x) => x.toFixed(2)).join(" ")}\n`);
  console.log("| series | median ms | p90 ms | p99 ms |");
  console.log("|---|---:|---:|---:|");
  console.log(`| signalpost.js SignalingChannel + signalpost | ${ms(s.ours.median)} | ${ms(s.ours.p90)} | ${ms(s.ours.p99)} |`);
  console.log(`| WebSocket + PeerJS server | ${ms(s.peerjs.median)} | ${ms(s.peerjs.p90)} | ${ms(s.peerjs.p99)} |`);
  console.log(`| reference relay: fetch POST + long poll | ${ms(s.poll.median)} | ${ms(s.poll.p90)} | ${ms(s.poll.p99)} |`);
  console.log(`| reference relay: fetch POST + EventSource | ${ms(s.sse.median)} | ${ms(s.sse.p90)} | ${ms(s.sse.p99)} |`);
  console.log(`\nratio ours/PeerJS: median ${(s.ours.median / s.peerjs.median).toFixed(2)}×, p99 ${(s.ours.p99 / s.peerjs.p99).toFixed(2)}×`);
  console.log("\nsignalpost legs (both directions), median ms:");
  for (const [label, v] of Object.entries(legs)) if (v.length) console.log(`  ${label}: ${ms(summarize(v).median, 2)} (n=${v.length})`);
} finally {
  await browser.close();
  await sp.stop();
  await pj.stop();
  await relay.stop();
}
process.exit(0);
