// Starts one signalpost server (the binary named by SIGNALPOST_BIN) on a free loopback
// port with a throwaway SQLite file, waits for its "listening on" and "open <call link>"
// lines, and stops it.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const WEB_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../../web");
const READY_TIMEOUT_MS = 20_000;

/** A free loopback TCP port (the probe closes before the caller binds it). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

/**
 * Start a server; resolves with `{ url, callUrl, stop() }`. `env` adds or overrides variables
 * (e.g. SIGNALPOST_PRESENCE_TIMEOUT). Web files come from this checkout's web/ folder.
 */
export async function startServer(env = {}) {
  const bin = process.env.SIGNALPOST_BIN;
  if (!bin) {
    throw new Error("SIGNALPOST_BIN is not set: point it at the signalpost binary, "
      + "e.g. SIGNALPOST_BIN=$(realpath ../../target/debug/signalpost) npm test (from tests/e2e)");
  }
  const port = await freePort();
  const dir = mkdtempSync(path.join(tmpdir(), "signalpost-e2e-"));
  const child = spawn(bin, [], {
    env: {
      ...process.env,
      SIGNALPOST_LISTEN: `127.0.0.1:${port}`,
      SIGNALPOST_DB: path.join(dir, "signalpost.db"),
      SIGNALPOST_SECRET: "e2e-test-secret-of-at-least-32-bytes",
      SIGNALPOST_WEB_DIR: WEB_DIR,
      ...env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let log = "";
  const { url, callUrl } = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => fail(new Error(`server did not print its "listening on" and "open" lines within ${READY_TIMEOUT_MS} ms`)), READY_TIMEOUT_MS);
    function fail(err) {
      clearTimeout(timer);
      child.kill("SIGKILL");
      reject(new Error(`${err.message}\n--- server output ---\n${log}`));
    }
    const onData = (chunk) => {
      log += chunk;
      const listening = /listening on (https?:\/\/127\.0\.0\.1:\d+)/.exec(log);
      const call = /^open (\S+) in two browser tabs/m.exec(log);
      if (listening && call) { clearTimeout(timer); resolve({ url: listening[1], callUrl: call[1] }); }
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", (chunk) => { log += chunk; });
    child.once("error", fail);
    child.once("exit", (code, signal) => fail(new Error(`server exited early (code ${code}, signal ${signal})`)));
  });
  // Keep draining the pipes so a chatty server never blocks on a full pipe.
  child.stdout.removeAllListeners("data");
  child.stdout.on("data", (chunk) => { log = (log + chunk).slice(-20_000); });
  child.stderr.on("data", (chunk) => { log = (log + chunk).slice(-20_000); });
  child.removeAllListeners("exit");

  return {
    url,
    /** The demo-call link the server printed for a newcomer to open (a fresh room). */
    callUrl,
    log: () => log,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((resolve) => child.once("exit", resolve));
        child.kill("SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
        await exited;
        clearTimeout(timer);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
