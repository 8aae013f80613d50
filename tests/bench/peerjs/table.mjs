// Prints the Markdown table for the README from the JSON figures that pingpong.mjs and
// call-setup.mjs wrote (run.sh passes the paths): node table.mjs pingpong.json call-setup.json
import { readFileSync } from "node:fs";
import { execFileSync } from "node:child_process";
import os from "node:os";

const [pingpongPath, callPath] = process.argv.slice(2);
const pp = JSON.parse(readFileSync(pingpongPath, "utf8"));
const cs = JSON.parse(readFileSync(callPath, "utf8"));
const f = (x, d = 2) => x.toFixed(d);
const ratio = (a, b) => `${(a / b).toFixed(2)}×`;
const version = (pkg) => JSON.parse(readFileSync(new URL(`./node_modules/${pkg}/package.json`, import.meta.url), "utf8")).version;
let chromium = "chromium";
try { chromium = execFileSync(process.env.CHROMIUM ?? "/usr/bin/chromium", ["--version"], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim(); } catch {}

const s = pp.summary;
const c = cs.summary;
console.log(`| measure | signalpost | PeerJS server | ours / PeerJS | target |`);
console.log(`|---|---:|---:|---:|---:|`);
console.log(`| message round trip, median ms (N=${pp.N}) | ${f(s.ours.median)} | ${f(s.peerjs.median)} | ${ratio(s.ours.median, s.peerjs.median)} | ≤ 1.5× |`);
console.log(`| message round trip, p99 ms | ${f(s.ours.p99)} | ${f(s.peerjs.p99)} | ${ratio(s.ours.p99, s.peerjs.p99)} | |`);
console.log(`| round trip with the recipient's poll already waiting, median ms (both after a ${pp.SETTLE_MS} ms pause) | ${f(s["ours-waiting"].median)} | ${f(s["peerjs-idle"].median)} | ${ratio(s["ours-waiting"].median, s["peerjs-idle"].median)} | |`);
console.log(`| same, p99 ms | ${f(s["ours-waiting"].p99)} | ${f(s["peerjs-idle"].p99)} | ${ratio(s["ours-waiting"].p99, s["peerjs-idle"].p99)} | |`);
console.log(`| call setup, join → both connected, median ms (min–max, ${cs.RUNS} runs) | ${f(c.ours.median, 0)} (${f(c.ours.min, 0)}–${f(c.ours.max, 0)}) | ${f(c.peerjs.median, 0)} (${f(c.peerjs.min, 0)}–${f(c.peerjs.max, 0)}) | ${ratio(c.ours.median, c.peerjs.median)} | ≤ 1.1× |`);
console.log();
console.log(`${os.cpus().length} CPUs (${os.cpus()[0]?.model?.trim()}), load during ping-pong ${pp.load}, during call setup ${cs.load}; `
  + `Node ${process.version} (${pp.HTTP_CLIENT === "fetch" ? "fetch" : "node:http"} for signalpost), ${chromium}, `
  + `peer ${version("peer")}, peerjs ${version("peerjs")}, all on 127.0.0.1.`);
