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
/** Instances per function: every waiting long poll holds one. */
const CONCURRENCY = 16;

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
 * Start a watch; resolves with `{ url, log(), stop() }`. `env` goes to every function through
 * `--env-file` (watch gives its workspace metadata precedence over the shell, not over the
 * env file); `SIGNALPOST_TABLE` goes through the shell, as the test harness passes it.
 */
export async function startWatch(env = {}) {
  const { SIGNALPOST_TABLE: table, ...functionEnv } = env;
  const dir = mkdtempSync(path.join(tmpdir(), "signalpost-watch-"));
  const envFile = path.join(dir, "functions.env");
  const logFile = path.join(dir, "watch.log");
  writeFileSync(envFile, Object.entries({ RUST_LOG: "warn", ...functionEnv })
    .map(([k, v]) => `${k}=${v}\n`).join(""));
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
    "--concurrency", String(CONCURRENCY), "--env-file", envFile, "--ignore-changes", "--quiet"], {
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
  return { url, log, stop };
}
