// Many tabs in ONE browser context: 10 pages, 5 rooms of 2, against the standalone server
// over HTTPS, where Chromium speaks HTTP/2 and multiplexes every tab's long poll on one
// connection. Every call must connect, with a data-channel round trip, and the pages' requests
// must have gone over h2. The same run over plain HTTP/1.1 (6 connections per host, shared by
// all tabs) is measured and printed, not asserted: README "Many tabs: HTTP/2 and TLS".
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { startServer } from "./lib/server.mjs";
import { launchBrowser, libraryPage, startLibraryCall, waitForLink, freshRoom, closeContext } from "./lib/browser.mjs";

const ROOMS = 5;
/** How long the first tabs idle in their polls before the second tabs join. */
const IDLE_FIRST_MS = 3_000;
/** How long the HTTP/1.1 run may take before it is reported as not all connected. */
const HTTP1_BOUND_MS = 120_000;

const certDir = mkdtempSync(path.join(tmpdir(), "signalpost-dev-cert-"));
after(() => rmSync(certDir, { recursive: true, force: true }));

/**
 * Opens 2 × ROOMS pages in one context of a fresh browser against `server`, starts every call
 * as below, and waits for every link and a data-channel round trip in each room. Resolves with
 * the time from the second tabs' joins to the last link connected, and the pages' protocols.
 */
async function manyTabs(server, { browserArgs = [], timeout = 60_000 } = {}) {
  const browser = await launchBrowser(browserArgs);
  const context = await browser.newContext();
  try {
    const pages = [];
    for (let i = 0; i < 2 * ROOMS; i++) pages.push(await libraryPage(context, server.url));
    const rooms = Array.from({ length: ROOMS }, () => freshRoom("tabs"));
    // As tabs are opened over time: the first tab of every room joins and idles in its long
    // poll (holding a connection over HTTP/1.1), then the second tabs join all at once.
    const start = (i) => startLibraryCall(pages[i], server.url, rooms[Math.floor(i / 2)], { name: `tab-${i}` });
    const peers = [];
    await Promise.all(pages.map(async (_, i) => { if (i % 2 === 0) peers[i] = await start(i); }));
    await new Promise((resolve) => setTimeout(resolve, IDLE_FIRST_MS));
    const started = Date.now();
    await Promise.all(pages.map(async (_, i) => { if (i % 2 === 1) peers[i] = await start(i); }));
    await Promise.all(pages.map((page, i) => waitForLink(page, peers[i ^ 1], timeout)));
    const connectedMs = Date.now() - started;
    // A data-channel round trip in every room, from its first page.
    await Promise.all(rooms.map(async (_, r) => {
      const [page, other] = [pages[2 * r], peers[2 * r + 1]];
      await page.waitForFunction((p) => window.e2e.mesh.links.get(p)?.dataChannel.readyState === "open",
        other, { timeout });
      await page.evaluate((p) => window.e2e.mesh.links.get(p).dataChannel.send(`ping:${p}`), other);
      await page.waitForFunction((p) => window.e2e.received.includes(`pong:${p}`), other, { timeout });
    }));
    const protocols = await Promise.all(pages.map((page) => page.evaluate(() => [...new Set(
      performance.getEntriesByType("resource")
        .filter((entry) => new URL(entry.name).pathname.startsWith("/v1/"))
        .map((entry) => entry.nextHopProtocol))])));
    return { connectedMs, protocols: [...new Set(protocols.flat())] };
  } finally {
    await closeContext(context);
    await browser.close();
  }
}

test("10 tabs of one browser, 5 calls, over HTTPS/2: every call connects", async () => {
  const bin = process.env.SIGNALPOST_BIN;
  execFileSync(bin, ["dev-cert", "--out-dir", certDir]);
  const server = await startServer({
    SIGNALPOST_TLS_CERT: path.join(certDir, "dev-cert.pem"),
    SIGNALPOST_TLS_KEY: path.join(certDir, "dev-key.pem"),
  });
  try {
    assert.match(server.url, /^https:/);
    // The self-signed certificate is accepted in this test only.
    const { connectedMs, protocols } = await manyTabs(server, { browserArgs: ["--ignore-certificate-errors"] });
    assert.deepEqual(protocols, ["h2"]);
    console.log(`HTTP/2 (HTTPS): ${2 * ROOMS} tabs in one context, all ${ROOMS} calls connected in ${connectedMs} ms`);
  } finally {
    await server.stop();
  }
});

test("10 tabs over plain HTTP/1.1, measured only", async () => {
  const server = await startServer();
  try {
    const { connectedMs, protocols } = await manyTabs(server, { timeout: HTTP1_BOUND_MS });
    console.log(`HTTP/1.1 (plain): ${2 * ROOMS} tabs in one context, all ${ROOMS} calls connected in ${connectedMs} ms (${protocols.join(", ")})`);
  } catch (error) {
    console.log(`HTTP/1.1 (plain): not every call connected within ${HTTP1_BOUND_MS} ms: ${error.message.split("\n")[0]}`);
  } finally {
    await server.stop();
  }
});
