// Browser call setup, join → both RTCPeerConnections `connected`, on one or more deployment
// shapes in one run. Not a test: it asserts nothing, it prints figures.
//   SIGNALPOST_BIN=/path/to/signalpost node measure-connect.mjs          # standalone, SQLite
//   tests/bench/browser-connect.sh                                      # every shape (README)
// Each run: two pages of one headless Chromium make the seed's call (audio, video and a data
// channel) through web/signalpost.js. The callee joins and waits alone in its long poll for
// ALONE_MS (default 10,000); then the caller joins and, as the newcomer, calls. The time runs
// from the caller starting its join request (its camera already open) to the later of the two
// sides' `connected`; timestamps are taken in the pages (epoch-based, so comparable).
//
// Environment:
//   SHAPES   comma-separated, default `standalone-sqlite`; each one also with the suffix
//            `-nowake` (SIGNALPOST_WAKEUPS=false: wake-ups across processes off):
//            standalone-sqlite, watch-sqlite, standalone-dynamodb, watch-dynamodb; a
//            standalone shape also with `-xorigin`: its pages from another server, as under
//            watch (cross-origin, so CORS preflights).
//            `watch-*` runs the five functions under `cargo lambda watch` (on PATH; see
//            tests/ensure-cargo-lambda.sh); the pages then come from a standalone server and
//            send the API cross-origin to the watch port. `*-dynamodb` needs the variables
//            tests/with-moto.sh sets (DynamoDB and SQS endpoints), and makes a table per shape.
//            A shape may end in `@<dir>`: its pages (and so signalpost.js) come from that
//            directory instead of web/, e.g. another version of the client to compare.
//   RUNS     measured runs per shape (default 10), after WARMUP unmeasured ones (default 1:
//            under watch a function's first call starts its process).
//   ALONE_MS how long the callee waits alone before the caller joins (default 10000).
//   TRACE=1  print each measured run's requests (both pages), relative to the caller's join.
import { execFileSync } from "node:child_process";
import { startServer } from "./lib/server.mjs";
import { startWatch } from "./lib/watch.mjs";
import { launchBrowser, libraryPage, startLibraryCall, waitForLink, freshRoom, closeContext } from "./lib/browser.mjs";

const RUNS = Number(process.env.RUNS ?? 10);
const WARMUP = Number(process.env.WARMUP ?? 1);
const ALONE_MS = Number(process.env.ALONE_MS ?? 10_000);
const TRACE = process.env.TRACE === "1";
const SHAPES = (process.env.SHAPES ?? "standalone-sqlite").split(",").map((s) => s.trim()).filter(Boolean);

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Creates a DynamoDB table of its own for one shape (moto keeps it until it stops). */
function createTable(label) {
  if (!process.env.AWS_ENDPOINT_URL_DYNAMODB) {
    throw new Error(`${label} needs DynamoDB and SQS: run it under tests/with-moto.sh`);
  }
  const table = `signalpost-bench-${process.pid}-${label}`.slice(0, 48);
  execFileSync(process.env.SIGNALPOST_BIN, ["create-table"], {
    env: { ...process.env, SIGNALPOST_TABLE: table }, stdio: ["ignore", "ignore", "inherit"],
  });
  return table;
}

/**
 * Starts a shape; resolves with `{ pageBase, apiBase, stop() }`: the pages load from
 * `pageBase` and send the API to `apiBase`.
 */
async function startShape(shape) {
  const match = /^(standalone|watch)-(sqlite|dynamodb)(-nowake)?(-xorigin)?(?:@(.+))?$/.exec(shape);
  if (!match) throw new Error(`unknown shape ${shape}`);
  const [, kind, store, nowake, xorigin, webDir] = match;
  const env = {};
  const pagesEnv = webDir ? { SIGNALPOST_WEB_DIR: webDir } : {};
  if (nowake) env.SIGNALPOST_WAKEUPS = "false";
  if (store === "dynamodb") env.SIGNALPOST_TABLE = createTable(shape.replace(/@.*/, ""));
  if (kind === "standalone" && !xorigin) {
    const server = await startServer({ ...env, ...pagesEnv });
    return { pageBase: server.url, apiBase: server.url, log: server.log, stop: () => server.stop() };
  }
  if (kind === "standalone") {
    // As under watch: pages from another origin, so every new request URL costs a preflight.
    const [pages, server] = await Promise.all([startServer(pagesEnv), startServer(env)]);
    return {
      pageBase: pages.url, apiBase: server.url, log: server.log, stop: () => Promise.all([pages.stop(), server.stop()]),
    };
  }
  // The page host is a standalone server on SQLite of its own; the call never touches it.
  const [pages, watch] = await Promise.all([startServer(pagesEnv), startWatch(env)]);
  return {
    pageBase: pages.url,
    apiBase: watch.url,
    log: watch.log,
    stop: () => Promise.all([pages.stop(), watch.stop()]),
  };
}

/** One call; resolves with its figures (milliseconds) and both pages' request traces. */
async function oneCall(browser, { pageBase, apiBase }) {
  const context = await browser.newContext();
  try {
    const room = freshRoom("measure");
    // Served pages on every shape, so that all load alike (see libraryPage).
    const callee = await libraryPage(context, pageBase, { served: true });
    const caller = await libraryPage(context, pageBase, { served: true });
    for (const page of [callee, caller]) {
      page.on("console", (m) => { if (m.type() === "error") console.error(`  [page] ${m.text()}`); });
    }
    const calleePeer = await startLibraryCall(callee, apiBase, room, { name: "callee", trace: true });
    await sleep(ALONE_MS);
    const callerPeer = await startLibraryCall(caller, apiBase, room, { name: "caller", trace: true });
    await Promise.all([waitForLink(caller, calleePeer), waitForLink(callee, callerPeer)]);
    const c = await caller.evaluate((p) => ({
      started: window.e2e.joinStartedAt, connected: window.e2e.connectedAt[p], requests: window.e2e.requests,
    }), calleePeer);
    const e = await callee.evaluate((p) => ({
      connected: window.e2e.connectedAt[p], requests: window.e2e.requests,
    }), callerPeer);
    return {
      ms: Math.max(c.connected, e.connected) - c.started,
      caller: c.connected - c.started,
      callee: e.connected - c.started,
      trace: [
        ...c.requests.map((r) => ({ ...r, who: "caller" })),
        ...e.requests.map((r) => ({ ...r, who: "callee" })),
      ].filter((r) => r.end >= c.started - 1 || r.start >= c.started - 1)
        .map((r) => ({ ...r, start: r.start - c.started, end: r.end - c.started }))
        .sort((a, b) => a.start - b.start),
    };
  } finally {
    await closeContext(context);
  }
}

function printTrace(trace) {
  for (const r of trace) {
    const span = `${r.start.toFixed(0).padStart(6)} → ${(r.end ?? NaN).toFixed(0).padStart(6)} ms`;
    const types = r.types?.length ? ` [${[...new Set(r.types)].join(",")}×${r.types.length}]` : "";
    console.log(`      ${span}  ${r.who.padEnd(6)} ${r.method.padEnd(4)} ${r.path.replace(/^\/v1\/rooms\/[^/]+/, "…")} ${r.status ?? "-"}${types}`);
  }
}

/**
 * From one call's trace: how long the caller's join and each post took (the request itself),
 * and how late the offer and the answer reached the other side's waiting poll after their
 * post's `202` (the delivery, wake-up included).
 */
function breakdown(trace) {
  const sent = (who, type) => trace.find((r) => r.who === who && r.method === "POST" && r.types?.includes(type));
  const got = (who, type) => trace.find((r) => r.who === who && r.method === "GET" && r.types?.includes(type));
  const posts = trace.filter((r) => r.method === "POST" && r.path.endsWith("/messages"));
  const join = trace.find((r) => r.who === "caller" && r.method === "POST" && r.path.endsWith("/peers"));
  const [offer, answer] = [sent("caller", "offer"), sent("callee", "answer")];
  const [offerIn, answerIn] = [got("callee", "offer"), got("caller", "answer")];
  return {
    "join request": join ? join.end - join.start : NaN,
    "post request": stats(posts.map((r) => r.end - r.start)).median,
    "offer 202 → callee's poll": offer && offerIn ? offerIn.end - offer.end : NaN,
    "answer 202 → caller's poll": answer && answerIn ? answerIn.end - answer.end : NaN,
  };
}

const stats = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  const median = sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
  return { median, min: sorted[0], max: sorted.at(-1), n: sorted.length };
};

const results = [];
const browser = await launchBrowser();
try {
  for (const shape of SHAPES) {
    console.log(`\n=== ${shape}: callee alone ${ALONE_MS} ms, ${WARMUP} warm-up + ${RUNS} measured runs`);
    const started = await startShape(shape);
    try {
      const times = [];
      const parts = {};
      for (let run = 1 - WARMUP; run <= RUNS; run++) {
        const call = await oneCall(browser, started);
        const label = run < 1 ? "warm-up" : `run ${String(run).padStart(2)}`;
        console.log(`  ${label}: ${call.ms.toFixed(0)} ms (caller ${call.caller.toFixed(0)}, callee ${call.callee.toFixed(0)})`);
        if (TRACE) printTrace(call.trace);
        if (run >= 1) {
          times.push(call.ms);
          for (const [name, value] of Object.entries(breakdown(call.trace))) (parts[name] ??= []).push(value);
        }
      }
      const s = stats(times);
      results.push({ shape, ...s });
      console.log(`  ${shape}: median ${s.median.toFixed(0)} ms, min ${s.min.toFixed(0)}, max ${s.max.toFixed(0)} (n=${s.n})`);
      console.log(`  where the time goes (medians, ms): ${Object.entries(parts)
        .map(([name, values]) => `${name} ${stats(values.filter(Number.isFinite)).median?.toFixed(0)}`).join(", ")}`);
    } catch (err) {
      console.error(`${shape} failed; the end of its log:\n${started.log().slice(-6000)}`);
      throw err;
    } finally {
      await started.stop();
    }
  }
} finally {
  await browser.close();
}

console.log(`\njoin → both connected, callee alone ${ALONE_MS / 1000} s, ${RUNS} runs each (after ${WARMUP} warm-up)`);
console.log("| shape | median ms | min ms | max ms | median / standalone on that store |");
console.log("|---|---:|---:|---:|---:|");
for (const r of results) {
  const [name, webDir] = r.shape.split("@");
  const baseName = name.replace(/^watch-/, "standalone-").replace(/(-nowake)?(-xorigin)?$/, "");
  const base = results.find((b) => b.shape === (webDir ? `${baseName}@${webDir}` : baseName));
  const ratio = base ? `${(r.median / base.median).toFixed(2)}×` : "";
  console.log(`| ${r.shape} | ${r.median.toFixed(0)} | ${r.min.toFixed(0)} | ${r.max.toFixed(0)} | ${ratio} |`);
}
