// Per-request latency, the standalone server beside the functions under `cargo lambda watch`,
// on SQLite, in one run: where browser call setup's time goes request by request (README,
// "In the browser"). Not a test: it asserts nothing, it prints figures.
//   SIGNALPOST_BIN=target/debug/signalpost node tests/e2e/measure-requests.mjs
//   (`cargo lambda` on PATH: tests/ensure-cargo-lambda.sh; the functions built, dev profile)
// Node's fetch, one request at a time, the two deployments taking turns so that the machine's
// load falls on both alike. Each round: two peers join a fresh room, the first long-polls
// (idle for IDLE_MS) and the second posts an offer to it. For each request the figure is the
// client's time and the server's own (the `duration_ms` of the request log line matched by
// its `x-request-id`): what is neither is the transport, which under watch is the emulator
// (router, Runtime API, and the runtime client in the function process).
//
// Environment: ROUNDS (default 30), IDLE_MS (default 1000); CONCURRENCY, comma-separated:
// one watch per value, with that `--concurrency` (processes per function; default 16,2);
// DURING_START=1 first measures
// ROUNDS rounds while the emulator is still starting its function processes (see
// lib/watch.mjs, `settled`), then the same once it has settled: both tables in one run.
import { startServer } from "./lib/server.mjs";
import { startWatch } from "./lib/watch.mjs";

const ROUNDS = Number(process.env.ROUNDS ?? 30);
const IDLE_MS = Number(process.env.IDLE_MS ?? 1000);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const now = () => performance.now();

/** The server's own time for a request id, from its request log line (or NaN). */
function serverMs(log, id) {
  if (!id) return NaN;
  // The standalone server colours its log; the functions do not.
  const line = log().replace(/\x1b\[[0-9;]*m/g, "").split("\n").find((l) => l.includes(id) && l.includes("duration_ms"));
  const match = line && /duration_ms=([\d.]+)/.exec(line);
  return match ? Number(match[1]) : NaN;
}

/** One timed request: `{ms, status, body, id}`. */
async function timed(base, method, path, { token, body } = {}) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const started = now();
  const response = await fetch(`${base}${path}`, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  const ms = now() - started;
  return {
    ms, status: response.status, body: text ? JSON.parse(text) : null, id: response.headers.get("x-request-id"), end: now(),
  };
}

/** One round on one deployment; resolves with its figures (ms). */
async function round(target, n) {
  const { url, log } = target;
  const room = `req-${process.pid}-${n}`;
  const figures = {};
  const record = (name, result) => {
    figures[`${name}, client`] = result.ms;
    figures[`${name}, server`] = serverMs(log, result.id);
  };
  record("health", await timed(url, "GET", "/v1/health"));
  record("preflight", await timed(url, "OPTIONS", `/v1/rooms/${room}/messages`));
  const a = await timed(url, "POST", `/v1/rooms/${room}/peers`, { body: { name: "a" } });
  const b = await timed(url, "POST", `/v1/rooms/${room}/peers`, { body: { name: "b" } });
  record("join", b);
  const first = await timed(url, "GET", `/v1/rooms/${room}/messages?wait=0`, { token: a.body.token });
  record("poll answering at once", first);
  const cursor = encodeURIComponent(first.body.cursor);
  const poll = timed(url, "GET", `/v1/rooms/${room}/messages?wait=20&after=${cursor}`, { token: a.body.token });
  await sleep(IDLE_MS);
  const offer = { to: a.body.peer, type: "offer", data: { type: "offer", sdp: "v=0\r\n" } };
  const post = await timed(url, "POST", `/v1/rooms/${room}/messages`, { token: b.body.token, body: offer });
  record("post", post);
  const polled = await poll;
  figures["post 202 → waiting poll answers"] = polled.end - post.end;
  figures["post sent → waiting poll answers"] = polled.end - (post.end - post.ms);
  await timed(url, "DELETE", `/v1/rooms/${room}/peers/${a.body.peer}`, { token: a.body.token });
  await timed(url, "DELETE", `/v1/rooms/${room}/peers/${b.body.peer}`, { token: b.body.token });
  return figures;
}

const median = (values) => {
  const sorted = values.filter(Number.isFinite).sort((x, y) => x - y);
  if (!sorted.length) return NaN;
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
};

/** ROUNDS rounds, the deployments taking turns; prints the table of medians. */
async function measure(targets, title) {
  const all = Object.fromEntries(targets.map((t) => [t.name, {}]));
  for (let n = 0; n < ROUNDS; n++) {
    // Each deployment first and last alike: rotate the order every round.
    const order = targets.map((_, i) => targets[(i + n) % targets.length]);
    for (const target of order) {
      for (const [name, value] of Object.entries(await round(target, `${target.name.replace(/\W/g, "")}-${title.length}-${n}`))) {
        (all[target.name][name] ??= []).push(value);
      }
    }
  }
  const [base, ...others] = targets.map((t) => t.name);
  console.log(`\n${title}: per request, medians of ${ROUNDS} rounds (ms); SQLite, debug builds, Node fetch, waiting poll idle ${IDLE_MS} ms`);
  console.log(`| request | ${base} | ${others.map((o) => `${o} | ÷ ${base}`).join(" | ")} |`);
  console.log(`|---|---:|${others.map(() => "---:|---:").join("|")}|`);
  for (const name of Object.keys(all[base])) {
    const s = median(all[base][name]);
    const cells = others.map((o) => {
      const w = median(all[o][name]);
      return `${w.toFixed(1)} | ${(w / s).toFixed(2)}×`;
    });
    console.log(`| ${name} | ${s.toFixed(1)} | ${cells.join(" | ")} |`);
  }
}

const duringStart = process.env.DURING_START === "1";
const concurrencies = (process.env.CONCURRENCY ?? "16,2").split(",").map(Number);
const [server, ...watches] = await Promise.all([
  startServer({ RUST_LOG: "info" }),
  ...concurrencies.map((concurrency) => startWatch({ RUST_LOG: "info" }, { settle: !duringStart, concurrency })),
]);
const targets = [
  { name: "standalone", ...server },
  ...watches.map((watch, i) => ({ name: `watch ×${concurrencies[i]}`, ...watch })),
];
try {
  // Warm-up: under watch a function's first call starts its process.
  for (const target of targets) await round(target, `warm-${target.name.replace(/\W/g, "")}`);
  if (duringStart) {
    await measure(targets, "while the emulator starts its function processes");
    await Promise.all(watches.map((watch) => watch.settled()));
  }
  await measure(targets, "once the emulator has settled");
} finally {
  await Promise.all(targets.map((t) => t.stop()));
}
