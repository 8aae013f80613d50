// Measures how long two pages take from join to a connected RTCPeerConnection, over
// `RUNS` runs (default 10) against one signalpost server, and prints median, min and max.
// Not a test: it asserts nothing, it prints figures.
//   SIGNALPOST_BIN=/path/to/signalpost node measure-connect.mjs
// Timing: from the moment the second page starts its join (the first is already in the
// room, idle in its long poll; both cameras already open) to the moment both sides'
// RTCPeerConnections report "connected".
import { startServer } from "./lib/server.mjs";
import { launchBrowser, libraryPage, startLibraryCall, waitForLink, freshRoom } from "./lib/browser.mjs";

const RUNS = Number(process.env.RUNS ?? 10);
const server = await startServer();
const browser = await launchBrowser();
const times = [];
try {
  for (let run = 1; run <= RUNS; run++) {
    const context = await browser.newContext();
    try {
      const room = freshRoom("measure");
      const alice = await libraryPage(context, server.url);
      const bob = await libraryPage(context, server.url);
      const alicePeer = await startLibraryCall(alice, server.url, room, { name: "alice" });
      // Timestamps are taken in the pages (epoch-based, so comparable): bob's clock starts
      // after his camera is open, right before his join request.
      const bobPeer = await startLibraryCall(bob, server.url, room, { name: "bob" });
      await Promise.all([waitForLink(bob, alicePeer), waitForLink(alice, bobPeer)]);
      const started = await bob.evaluate(() => window.e2e.joinStartedAt);
      const bobConnected = await bob.evaluate((p) => window.e2e.connectedAt[p], alicePeer);
      const aliceConnected = await alice.evaluate((p) => window.e2e.connectedAt[p], bobPeer);
      const ms = Math.max(bobConnected, aliceConnected) - started;
      times.push(ms);
      console.log(`run ${String(run).padStart(2)}: ${ms.toFixed(0)} ms`);
    } finally {
      await context.close();
    }
  }
} finally {
  await browser.close();
  await server.stop();
}
const sorted = [...times].sort((a, b) => a - b);
const mid = sorted.length >> 1;
const median = sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
console.log(`join → connected over ${times.length} runs: median ${median.toFixed(0)} ms, `
  + `min ${sorted[0].toFixed(0)} ms, max ${sorted.at(-1).toFixed(0)} ms`);
