// Starts the five Lambda functions under `cargo lambda watch` (as tests/support/watch.rs and
// tests/watch/run.sh do) for Node scripts: a fresh directory per watch, where the relative
// SIGNALPOST_DB of `[workspace.metadata.lambda.env]` puts the SQLite file its function
// processes share; with `SIGNALPOST_TABLE` in `env` the functions use that DynamoDB table
// (endpoint and credentials from the AWS variables already in the environment, e.g. from
// tests/with-moto.sh). `cargo lambda` must be on PATH (tests/ensure-cargo-lambda.sh).
import { spawn } from "node:child_process";
import { mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { freePort } from "./server.mjs";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
/** The first start may compile the functions; built beforehand it takes seconds. */
const READY_TIMEOUT_MS = 600_000;
/**
 * Processes per function (WATCH_CONCURRENCY overrides). Every waiting long poll holds one: a
 * call has two, and a closed page's poll runs on until its `wait` (20 s), so up to six at
 * once in measure-connect.mjs. No more than that: cargo-lambda 1.9 starts all of them and
 * hands requests to them in turn, so with 16 each request ran in a process that had not run
 * for 16 requests, its code and data cold, several milliseconds slower than in a process in
 * use (measure-requests.mjs, README "In the browser"). Lambda gives a function's sequential
 * requests the environments it has warm, not a fresh one each time.
 */
const CONCURRENCY = Number(process.env.WATCH_CONCURRENCY ?? 8);
/** How long the emulator may take to start all its function processes (see #settled). */
const SETTLE_TIMEOUT_MS = 300_000;
/** No process started, and all ready, for this long: the emulator has settled. */
const SETTLED_FOR_MS = 2000;
/** The functions log `ready` once their store is open (shared/src/lambda.rs). */
const FUNCTION_LOG = "warn,signalpost_shared::lambda=info";

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function status(url, init = {}) {
  try {
    const response = await fetch(url, { ...init, signal: AbortSignal.timeout(60_000) });
    await response.arrayBuffer();
    return response.status;
  } catch {
    return null;
  }
}

/**
 * Start a watch; resolves with `{ url, log(), stop(), settled() }` once the emulator has
 * settled (see #settled; `settle: false` returns before, and `settled()` waits for it). `env` goes to every function through
 * `--env-file` (watch gives its workspace metadata precedence over the shell, not over the
 * env file); `SIGNALPOST_TABLE` goes through the shell, as the test harness passes it.
 */
export async function startWatch(env = {}, { settle = true, concurrency = CONCURRENCY } = {}) {
  const { SIGNALPOST_TABLE: table, ...functionEnv } = env;
  const dir = mkdtempSync(path.join(tmpdir(), "signalpost-watch-"));
  const envFile = path.join(dir, "functions.env");
  const logFile = path.join(dir, "watch.log");
  writeFileSync(envFile, Object.entries({ RUST_LOG: FUNCTION_LOG, ...functionEnv })
    .map(([k, v]) => `${k}=${JSON.stringify(String(v))}\n`).join(""));  // quoted: RUST_LOG holds `=` and `:`
  const port = await freePort();
  const shellEnv = Object.fromEntries(Object.entries(process.env)
    .filter(([name]) => !name.startsWith("SIGNALPOST_")));
  if (table) shellEnv.SIGNALPOST_TABLE = table;
  const out = openSync(logFile, "a");
  // detached: the watch leads its own process group, so one kill stops cargo and every
  // function process. --ignore-changes: the SQLite file is written below the watch's
  // directory, which it would otherwise take for code changes and restart the functions.
  const child = spawn("cargo", ["lambda", "watch", "--manifest-path", path.join(ROOT, "Cargo.toml"),
    "--invoke-address", "127.0.0.1", "--invoke-port", String(port), "--disable-cors",
    "--concurrency", String(concurrency), "--env-file", envFile, "--ignore-changes", "--quiet"], {
    cwd: dir, env: shellEnv, detached: true, stdio: ["ignore", out, out],
  });
  const url = `http://127.0.0.1:${port}`;
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      try { process.kill(-child.pid, "SIGTERM"); } catch { /* already gone */ }
      await sleep(1000);
      try { process.kill(-child.pid, "SIGKILL"); } catch { /* already gone */ }
    }
    rmSync(dir, { recursive: true, force: true });
  };
  const log = () => { try { return readFileSync(logFile, "utf8"); } catch { return ""; } };
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while ((await status(`${url}/v1/health`)) !== 200) {
    if (child.exitCode !== null || Date.now() > deadline) {
      const text = log();
      await stop();
      throw new Error(`cargo lambda watch did not become ready; its log:\n${text}`);
    }
    await sleep(1000);
  }
  // Start each function's first process now (watch starts one with `cargo run` on its first
  // call). Requests without a token, or a join with a body that is not JSON, change nothing.
  for (const [method, route] of [
    ["POST", "/v1/rooms/warm-up/peers/x/leave"], ["POST", "/v1/rooms/warm-up/messages"],
    ["GET", "/v1/rooms/warm-up/messages"], ["PUT", "/v1/rooms/warm-up/peers"],
  ]) await status(`${url}${route}`, { method });
  await status(`${url}/v1/rooms/warm-up/peers`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: "not json",
  });
  if (settle) await settled(log);
  return { url, log, stop, settled: () => settled(log) };
}

const count = (text, pattern) => text.match(pattern)?.length ?? 0;

/**
 * Waits until the emulator has stopped starting function processes and every one it started
 * has opened its store. cargo-lambda 1.9 starts `--concurrency` processes of each function
 * within seconds of its first calls, busy or not (its instance pool never counts an instance
 * idle again once it has served an event), each with a `cargo run`: 80 of them here, which
 * hold both cores of a small machine for tens of seconds. Figures taken meanwhile measure
 * that start-up, not the functions. Bounded: past SETTLE_TIMEOUT_MS it goes on regardless.
 */
async function settled(log) {
  const started = Date.now();
  const deadline = started + SETTLE_TIMEOUT_MS;
  let seen = "";
  let since = Date.now();
  while (Date.now() < deadline) {
    const text = log();
    const state = `${count(text, /spawning function instance/g)}/${count(text, /\bready function="/g)}`;
    const [spawned, ready] = state.split("/").map(Number);
    if (state !== seen || ready < spawned) {
      seen = state;
      since = Date.now();
    } else if (Date.now() - since >= SETTLED_FOR_MS) {
      console.log(`  (cargo lambda watch: ${ready} function processes ready after ${((Date.now() - started) / 1000).toFixed(0)} s)`);
      return;
    }
    await sleep(250);
  }
  console.warn(`cargo lambda watch: still starting function processes after ${SETTLE_TIMEOUT_MS / 1000} s (started/ready ${seen}); going on`);
}
