// Where a signalpost ping-pong's time goes, next to the PeerJS server's one-way relay.
// Not part of run.sh's table: a diagnostic for the analysis in README.md.
// Interleaved samples (M each, default 300, SETTLE_MS pause before each so polls are parked):
//   health        GET /v1/health: HTTP request floor (client + hyper + axum, no store)
//   post→202      POST one message to B while B's poll waits: the sender's wait
//   one-way       POST start → B's waiting poll has the message parsed
//   pj one-way    PeerJS: ws.send → B has the message parsed
// each with Node's fetch (undici) and with node:http (keep-alive agent).
import { performance } from "node:perf_hooks";
import os from "node:os";
import { SignalpostClient, PeerjsClient, httpRequester, sleep } from "./lib/clients.mjs";
import { startSignalpost, startPeerServer } from "./lib/servers.mjs";
import { summarize, ms } from "./lib/stats.mjs";

const M = Number(process.env.M ?? 300);
const SETTLE_MS = Number(process.env.SETTLE_MS ?? 5);
const CANDIDATE = { candidate: "candidate:842163049 1 udp 1677729535 127.0.0.1 51234 typ host generation 0 ufrag EsAw network-id 1 network-cost 999", sdpMid: "0", sdpMLineIndex: 0 };

const sp = await startSignalpost();
const pj = await startPeerServer();
const arrivals = new Map();
const waitArrival = (key) => new Promise((resolve, reject) => {
  const timer = setTimeout(() => reject(new Error(`no arrival ${key}`)), 10_000);
  arrivals.set(key, (t) => { clearTimeout(timer); resolve(t); });
});
const arrive = (key, t) => { const f = arrivals.get(key); if (f) { arrivals.delete(key); f(t); } };

try {
  const setups = {};
  for (const kind of ["fetch", "node"]) {
    const room = `bd-${kind}-${process.pid}`;
    const a = new SignalpostClient(sp.url, room, { http: kind });
    const b = new SignalpostClient(sp.url, room, { http: kind });
    await a.join(); await b.join();
    b.onMessage = (m, t) => { if (m.data?.k) arrive(m.data.k, t); };
    a.startPolling(); b.startPolling();
    setups[kind] = { a, b, req: httpRequester(kind) };
  }
  const pa = new PeerjsClient(pj.url, `bda${process.pid}`);
  const pb = new PeerjsClient(pj.url, `bdb${process.pid}`);
  await pa.open(); await pb.open();
  pb.onMessage = (m, t) => { if (m.payload?.k) arrive(m.payload.k, t); };
  await sleep(300);

  let key = 0;
  const probes = [];
  for (const kind of ["fetch", "node"]) {
    const { a, b, req } = setups[kind];
    probes.push([`health (${kind})`, async () => {
      const t0 = performance.now();
      await req("GET", `${sp.url}/v1/health`, {});
      return performance.now() - t0;
    }]);
    probes.push([`post→202 (${kind})`, async () => {
      const k = ++key;
      const arrived = waitArrival(k);
      const t0 = performance.now();
      await a.send(b.peer, { k, ...CANDIDATE });
      const t = performance.now() - t0;
      await arrived;
      return t;
    }]);
    probes.push([`one-way (${kind})`, async () => {
      const k = ++key;
      const arrived = waitArrival(k);
      const t0 = performance.now();
      a.send(b.peer, { k, ...CANDIDATE });
      return (await arrived) - t0;
    }]);
  }
  probes.push(["pj one-way (ws)", async () => {
    const k = ++key;
    const arrived = waitArrival(k);
    const t0 = performance.now();
    pa.send(pb.id, "OFFER", { k, ...CANDIDATE });
    return (await arrived) - t0;
  }]);

  const samples = Object.fromEntries(probes.map(([name]) => [name, []]));
  for (let i = -30; i < M; i++) {
    for (let p = 0; p < probes.length; p++) {
      const [name, fn] = probes[(p + i + 1000 * probes.length) % probes.length];
      await sleep(SETTLE_MS);
      const t = await fn();
      if (i >= 0) samples[name].push(t);
    }
  }
  console.log(`\nbreakdown, M=${M} each, ${SETTLE_MS} ms pause before each; load ${os.loadavg().map((x) => x.toFixed(2)).join(" ")}\n`);
  console.log("| probe | median ms | p90 ms | p99 ms |");
  console.log("|---|---:|---:|---:|");
  for (const [name, v] of Object.entries(samples)) {
    const f = summarize(v);
    console.log(`| ${name} | ${ms(f.median)} | ${ms(f.p90)} | ${ms(f.p99)} |`);
  }
  for (const { a, b } of Object.values(setups)) await Promise.all([a.stop(), b.stop()]);
  pa.stop(); pb.stop();
} finally {
  await sp.stop();
  await pj.stop();
}
process.exit(0);
