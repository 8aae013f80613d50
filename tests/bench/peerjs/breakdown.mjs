// Where a signalpost ping-pong round trip's time goes. A diagnostic for README.md's
// analysis, not part of run.sh's table. Interleaved samples (M each, default 500, with a
// SETTLE_MS pause before each so that every long poll is parked):
//   round trip through signalpost, with Node's fetch (undici) and with node:http
//   round trip through lib/lp-relay.mjs (a bare in-memory HTTP long-poll relay), both clients,
//   and through the same relay receiving over a server-sent-event stream instead of polls
//   round trip through the PeerJS server (WebSocket)
//   GET /v1/health on signalpost: one HTTP exchange with the server, no store
// and each server's CPU time (user + system) per round trip, from /proc.
import { performance } from "node:perf_hooks";
import os from "node:os";
import { SignalpostClient, PeerjsClient, httpRequester, sleep } from "./lib/clients.mjs";
import { startSignalpost, startPeerServer, startRelay, cpuMs } from "./lib/servers.mjs";
import { summarize, ms } from "./lib/stats.mjs";

const M = Number(process.env.M ?? 500);
const SETTLE_MS = Number(process.env.SETTLE_MS ?? 5);
const CANDIDATE = { candidate: "candidate:842163049 1 udp 1677729535 127.0.0.1 51234 typ host generation 0 ufrag EsAw network-id 1 network-cost 999", sdpMid: "0", sdpMLineIndex: 0 };

const servers = { signalpost: await startSignalpost(), relay: await startRelay(), peerjs: await startPeerServer() };
const pending = new Map();
let seq = 0;
const pong = (n, t) => { const f = pending.get(n); if (f) { pending.delete(n); f(t); } };
function roundTrip(send) {
  const n = ++seq;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`round trip ${n} timed out`)), 10_000);
    const t0 = performance.now();
    pending.set(n, (t) => { clearTimeout(timer); resolve(t - t0); });
    send(n);
  });
}

try {
  const probes = [];
  const clients = [];
  for (const target of ["signalpost", "relay", "relay-stream"]) {
    for (const http of ["fetch", "node"]) {
      const server = servers[target === "relay-stream" ? "relay" : target];
      const room = `bd-${http}-${process.pid}`;
      const a = new SignalpostClient(server.url, room, { http });
      const b = new SignalpostClient(server.url, room, { http });
      await a.join(); await b.join();
      b.onMessage = (m) => { if (m.data?.ping) b.send(m.from, { pong: m.data.ping, ...CANDIDATE }); };
      a.onMessage = (m, t) => { if (m.data?.pong) pong(m.data.pong, t); };
      if (target === "relay-stream") { a.startStream(); b.startStream(); } else { a.startPolling(); b.startPolling(); }
      clients.push(a, b);
      const label = target === "relay-stream" ? "relay, SSE stream instead of polls" : target;
      probes.push([`${label}, ${http === "fetch" ? "fetch" : "node:http"}`, target,
        () => roundTrip((n) => a.send(b.peer, { ping: n, ...CANDIDATE }))]);
    }
  }
  const pa = new PeerjsClient(servers.peerjs.url, `bda${process.pid}`);
  const pb = new PeerjsClient(servers.peerjs.url, `bdb${process.pid}`);
  await pa.open(); await pb.open();
  pb.onMessage = (m) => { if (m.payload?.ping) pb.send(m.src, "ANSWER", { pong: m.payload.ping, ...CANDIDATE }); };
  pa.onMessage = (m, t) => { if (m.payload?.pong) pong(m.payload.pong, t); };
  probes.push(["PeerJS server, ws", "peerjs", () => roundTrip((n) => pa.send(pb.id, "OFFER", { ping: n, ...CANDIDATE }))]);
  for (const http of ["fetch", "node"]) {
    const req = httpRequester(http);
    probes.push([`signalpost GET /v1/health only, ${http === "fetch" ? "fetch" : "node:http"}`, "signalpost", async () => {
      const t0 = performance.now();
      await req("GET", `${servers.signalpost.url}/v1/health`, {});
      return performance.now() - t0;
    }]);
  }
  await sleep(300);

  const samples = Object.fromEntries(probes.map(([name]) => [name, []]));
  let cpu0 = null;
  for (let i = -50; i < M; i++) {
    if (i === 0) cpu0 = Object.fromEntries(Object.entries(servers).map(([k, s]) => [k, cpuMs(s.pid)]));
    for (let p = 0; p < probes.length; p++) {
      const [name, , fn] = probes[(p + i + 1000 * probes.length) % probes.length];
      await sleep(SETTLE_MS);
      const t = await fn();
      if (i >= 0) samples[name].push(t);
    }
  }
  const cpu = Object.fromEntries(Object.entries(servers).map(([k, s]) => [k, cpuMs(s.pid) - cpu0[k]]));
  const roundTrips = { signalpost: 2 * M, relay: 4 * M, peerjs: M };

  console.log(`\nbreakdown, M=${M} each, interleaved, ${SETTLE_MS} ms pause before each; `
    + `${os.cpus().length} CPUs, load ${os.loadavg().map((x) => x.toFixed(2)).join(" ")}\n`);
  console.log("| probe | median ms | p90 ms | p99 ms |");
  console.log("|---|---:|---:|---:|");
  for (const [name, v] of Object.entries(samples)) {
    const f = summarize(v);
    console.log(`| ${name} | ${ms(f.median)} | ${ms(f.p90)} | ${ms(f.p99)} |`);
  }
  console.log(`\nserver CPU per round trip: signalpost ${(cpu.signalpost / roundTrips.signalpost * 1000).toFixed(0)} µs `
    + `(health GETs included), relay ${(cpu.relay / roundTrips.relay * 1000).toFixed(0)} µs (polls and streams), `
    + `PeerJS ${(cpu.peerjs / roundTrips.peerjs * 1000).toFixed(0)} µs`);
  await Promise.all(clients.map((c) => c.stop()));
  pa.stop(); pb.stop();
} finally {
  for (const s of Object.values(servers)) await s.stop();
}
process.exit(0);
