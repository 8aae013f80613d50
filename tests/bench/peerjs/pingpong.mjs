// Message ping-pong through each server, in one run on one machine (issue 7).
//
// Two clients per server, A and B, both in this process. A sends a small message (an ICE
// candidate's worth of JSON) to B through the server; B, on receipt, sends one back; A
// measures from just before its send to the moment the reply is parsed.
//   signalpost: A and B joined to one room, each with one long poll always outstanding
//     (Node's fetch; undici keeps connections alive), sends are POST /v1/rooms/R/messages
//     of type "message", with a client id as signalpost.js adds one.
//   PeerJS:     A and B are WebSocket clients of the `peer` server speaking its protocol
//     (/peerjs?key=peerjs&id=..&token=..; OPEN; {type, payload, dst}); the ping is an OFFER
//     and the pong an ANSWER, which the server relays to the socket of `dst`.
// Series, interleaved round trip by round trip so that machine noise hits all of them:
//   ours, peerjs             the next ping goes out as soon as the previous round trip ends
//                            (of either server): the recipient's new poll may still be on
//                            its way, exactly what a busy negotiation looks like;
//   ours-waiting, peerjs-idle  before each ping both clients pause SETTLE_MS (default 5) so
//                            that both of ours' polls are parked in the server (the latency
//                            bench's condition); PeerJS gets the same pause.
// Env: N (default 1000), WARMUP (default 100), SETTLE_MS, SIGNALPOST_BIN (required),
//      JSON=path (write the raw figures), HTTP=fetch|node (node: node:http keep-alive agents).
import { performance } from "node:perf_hooks";
import { writeFileSync } from "node:fs";
import os from "node:os";
import { SignalpostClient, PeerjsClient, HTTP_CLIENT, sleep } from "./lib/clients.mjs";
import { startSignalpost, startPeerServer, cpuMs } from "./lib/servers.mjs";
import { summarize, ms } from "./lib/stats.mjs";

const N = Number(process.env.N ?? 1000);
const WARMUP = Number(process.env.WARMUP ?? 100);
const SETTLE_MS = Number(process.env.SETTLE_MS ?? 5);
const RT_TIMEOUT_MS = 10_000;
const RUN_DEADLINE = Date.now() + Number(process.env.DEADLINE_S ?? 600) * 1000;

const CANDIDATE = {
  candidate: "candidate:842163049 1 udp 1677729535 127.0.0.1 51234 typ host generation 0 ufrag EsAw network-id 1 network-cost 999",
  sdpMid: "0", sdpMLineIndex: 0, usernameFragment: "EsAw",
};

// ---- the two round trips ----

/** Pending round trips by sequence number: resolve(t) on the pong's arrival. */
const pending = new Map();
let seq = 0;

function pongArrived(n, arrived) {
  const done = pending.get(n);
  if (done) { pending.delete(n); done(arrived); }
}

/** One round trip: `start(n)` sends ping n; resolves with ms from just before it to the pong. */
function measure(start) {
  const n = ++seq;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { pending.delete(n); reject(new Error(`round trip ${n} timed out`)); }, RT_TIMEOUT_MS);
    const t0 = performance.now();
    pending.set(n, (arrived) => { clearTimeout(timer); resolve(arrived - t0); });
    start(n);
  });
}

const sp = await startSignalpost();
const pj = await startPeerServer();
try {
  const room = `pingpong-${process.pid}`;
  const spA = new SignalpostClient(sp.url, room);
  const spB = new SignalpostClient(sp.url, room);
  await spA.join();
  await spB.join();
  spB.onMessage = (m) => {
    if (m.type === "message" && m.data?.ping) {
      spB.send(m.from, { pong: m.data.ping, ...CANDIDATE }).catch((err) => console.error(err.message));
    }
  };
  spA.onMessage = (m, arrived) => { if (m.type === "message" && m.data?.pong) pongArrived(m.data.pong, arrived); };
  spA.startPolling();
  spB.startPolling();

  const pjA = new PeerjsClient(pj.url, `a${process.pid}`);
  const pjB = new PeerjsClient(pj.url, `b${process.pid}`);
  await pjA.open();
  await pjB.open();
  pjB.onMessage = (m) => {
    if (m.type === "OFFER" && m.payload?.ping) pjB.send(m.src, "ANSWER", { pong: m.payload.ping, ...CANDIDATE });
  };
  pjA.onMessage = (m, arrived) => { if (m.type === "ANSWER" && m.payload?.pong) pongArrived(m.payload.pong, arrived); };
  await sleep(300); // let both polls reach the server

  const ours = () => measure((n) => {
    spA.send(spB.peer, { ping: n, ...CANDIDATE }).catch((err) => console.error(err.message));
  });
  const theirs = () => measure((n) => pjA.send(pjB.id, "OFFER", { ping: n, ...CANDIDATE }));

  const series = { ours: [], peerjs: [], "ours-waiting": [], "peerjs-idle": [] };
  const kinds = [
    ["ours", ours, 0], ["peerjs", theirs, 0],
    ["ours-waiting", ours, SETTLE_MS], ["peerjs-idle", theirs, SETTLE_MS],
  ];
  let t0 = Date.now();
  let cpu0 = null;
  for (let i = -WARMUP; i < N; i++) {
    if (Date.now() > RUN_DEADLINE) throw new Error("run deadline passed");
    if (i === 0) { t0 = Date.now(); cpu0 = { sp: cpuMs(sp.pid), pj: cpuMs(pj.pid), bench: process.cpuUsage() }; }
    // Rotate the order each round so no series always follows the same one.
    for (let k = 0; k < kinds.length; k++) {
      const [name, fn, settle] = kinds[(k + (i & 3)) % kinds.length];
      if (settle) await sleep(settle);
      const rt = await fn();
      if (i >= 0) series[name].push(rt);
    }
  }
  const elapsed = (Date.now() - t0) / 1000;
  // Each server only ever serves its own two series, so its CPU divides by 2N round trips.
  const cpu = { sp: cpuMs(sp.pid) - cpu0.sp, pj: cpuMs(pj.pid) - cpu0.pj };
  const benchCpu = process.cpuUsage(cpu0.bench);

  await Promise.all([spA.stop(), spB.stop()]);
  pjA.stop(); pjB.stop();

  const s = Object.fromEntries(Object.entries(series).map(([k, v]) => [k, summarize(v)]));
  const load = os.loadavg().map((x) => x.toFixed(2)).join(" ");
  console.log(`\nping-pong round trip, N=${N} each (warm-up ${WARMUP}), interleaved; `
    + `${os.cpus().length} CPUs, load ${load}, ${elapsed.toFixed(1)} s, HTTP client: ${HTTP_CLIENT}\n`);
  console.log("| series | median ms | p90 ms | p99 ms | max ms |");
  console.log("|---|---:|---:|---:|---:|");
  const label = {
    ours: "signalpost (next ping at once)",
    peerjs: "PeerJS server (next ping at once)",
    "ours-waiting": `signalpost, recipient's poll already waiting (${SETTLE_MS} ms pause)`,
    "peerjs-idle": `PeerJS server, same ${SETTLE_MS} ms pause`,
  };
  for (const [k, f] of Object.entries(s)) {
    console.log(`| ${label[k]} | ${ms(f.median)} | ${ms(f.p90)} | ${ms(f.p99)} | ${ms(f.max)} |`);
  }
  const ratio = (a, b) => (a / b).toFixed(2);
  console.log(`\nratio ours/PeerJS: median ${ratio(s.ours.median, s.peerjs.median)}×, p99 ${ratio(s.ours.p99, s.peerjs.p99)}× `
    + `(target ≤ 1.5×); poll already waiting: median ${ratio(s["ours-waiting"].median, s["peerjs-idle"].median)}×, `
    + `p99 ${ratio(s["ours-waiting"].p99, s["peerjs-idle"].p99)}×`);
  if (cpu0.sp !== null) {
    console.log(`server CPU per round trip (user+system, over all ${2 * N} of each): signalpost ${(cpu.sp / (2 * N) * 1000).toFixed(0)} µs, `
      + `PeerJS ${(cpu.pj / (2 * N) * 1000).toFixed(0)} µs; this process (both clients) ${((benchCpu.user + benchCpu.system) / 1000 / (4 * N) * 1000).toFixed(0)} µs`);
  }
  console.log(`polls answered: A ${spA.pollsAnswered}, B ${spB.pollsAnswered}`);
  if (process.env.JSON) writeFileSync(process.env.JSON, JSON.stringify({ N, WARMUP, SETTLE_MS, HTTP_CLIENT, load, cpu, summary: s }, null, 1));
} finally {
  await sp.stop();
  await pj.stop();
}
process.exit(0);
