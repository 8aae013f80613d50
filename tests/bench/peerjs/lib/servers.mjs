// Starts the two servers under comparison on free 127.0.0.1 ports, each as a child process:
// the signalpost binary (SIGNALPOST_BIN, throwaway SQLite file) and the PeerJS server
// (peer-server.mjs). Both resolve once the child prints its "listening on" line.
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const READY_TIMEOUT_MS = 20_000;

function startChild(label, command, args, env, readyRe) {
  const child = spawn(command, args, { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let log = "";
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => fail(new Error(`${label} did not say "listening on" within ${READY_TIMEOUT_MS} ms`)), READY_TIMEOUT_MS);
    function fail(err) {
      clearTimeout(timer);
      child.kill("SIGKILL");
      reject(new Error(`${err.message}\n--- ${label} output ---\n${log}`));
    }
    child.stdout.on("data", (chunk) => {
      log += chunk;
      const match = readyRe.exec(log);
      if (match) {
        clearTimeout(timer);
        child.removeAllListeners("exit");
        // Keep draining the pipes so a chatty server never blocks on a full pipe.
        child.stdout.removeAllListeners("data");
        child.stdout.on("data", (c) => { log = (log + c).slice(-20_000); });
        resolve({ url: match[1], pid: child.pid, log: () => log, stop: () => stopChild(child) });
      }
    });
    child.stderr.on("data", (chunk) => { log = (log + chunk).slice(-20_000); });
    child.once("error", fail);
    child.once("exit", (code, signal) => fail(new Error(`${label} exited early (code ${code}, signal ${signal})`)));
  });
}

async function stopChild(child) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once("exit", resolve));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
  await exited;
  clearTimeout(timer);
}

/** signalpost on 127.0.0.1:0; `env` adds variables (e.g. SIGNALPOST_WEB_DIR). */
export async function startSignalpost(env = {}) {
  const bin = process.env.SIGNALPOST_BIN;
  if (!bin) throw new Error("SIGNALPOST_BIN is not set: e.g. SIGNALPOST_BIN=/work/main/target/release/signalpost");
  const dir = mkdtempSync(path.join(tmpdir(), "signalpost-bench-"));
  const server = await startChild("signalpost", bin, [], {
    SIGNALPOST_LISTEN: "127.0.0.1:0",
    SIGNALPOST_DB: path.join(dir, "signalpost.db"),
    SIGNALPOST_SECRET: "peerjs-bench-secret-of-at-least-32-bytes",
    // Every page connects from 127.0.0.1: per-client limits would measure themselves.
    SIGNALPOST_JOIN_LIMIT: "off",
    SIGNALPOST_POLL_LIMIT: "off",
    SIGNALPOST_POST_LIMIT: "off",
    SIGNALPOST_MAX_CLIENT_CONNECTIONS: "100000",
    ...env,
  }, /listening on (http:\/\/127\.0\.0\.1:\d+)/);
  const stop = server.stop;
  server.stop = async () => { await stop(); rmSync(dir, { recursive: true, force: true }); };
  return server;
}

/** The PeerJS server (npm `peer`, default options: key "peerjs", path "/"). */
export function startPeerServer() {
  return startChild("peerjs", process.execPath, [path.join(HERE, "..", "peer-server.mjs"), "0"], {},
    /peerjs listening on (http:\/\/127\.0\.0\.1:\d+)/);
}

/** The reference in-memory HTTP long-poll relay (lib/lp-relay.mjs), for breakdown.mjs. */
export function startRelay() {
  return startChild("relay", process.execPath, [path.join(HERE, "lp-relay.mjs")], {},
    /relay listening on (http:\/\/127\.0\.0\.1:\d+)/);
}

/** CPU time (user + system, ms) a process has used so far, from /proc (Linux); null elsewhere. */
export function cpuMs(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // utime and stime are fields 14 and 15 of the whole line, in clock ticks (USER_HZ, 100).
    return (Number(fields[11]) + Number(fields[12])) * 10;
  } catch {
    return null;
  }
}
