// The demo page as people use it: a three-party mesh, and a reload in the middle of a call.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startServer } from "./lib/server.mjs";
import { launchBrowser, waitForDemoPeers, freshRoom, closeContext } from "./lib/browser.mjs";

let server, browser;
before(async () => {
  server = await startServer();
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

async function openDemo(context, room, name) {
  const page = await context.newPage();
  page.on("pageerror", (err) => console.error(`[${name}] ${err.message}`));
  await page.goto(`${server.url}/?room=${room}&name=${name}`);
  return page;
}

const linkedPeers = (page) => page.evaluate(() => [...window.signalpost.mesh.links.keys()].sort());

test("three pages form a full mesh on the demo page", async () => {
  const room = freshRoom("mesh");
  const context = await browser.newContext();
  try {
    const pages = [];
    for (const name of ["ada", "grace", "linus"]) pages.push(await openDemo(context, room, name));
    await Promise.all(pages.map((page) => waitForDemoPeers(page, 2)));
    for (const page of pages) {
      assert.equal(await page.getAttribute("html", "data-peers"), "2");
      assert.equal(await page.locator(".tile.remote .state[data-state=connected]").count(), 2);
    }
    // Every page is linked to exactly the two others.
    const ids = await Promise.all(pages.map((p) => p.evaluate(() => window.signalpost.channel.peer)));
    for (const [i, page] of pages.entries()) {
      assert.deepEqual(await linkedPeers(page), ids.filter((_, j) => j !== i).sort());
    }
  } finally {
    await closeContext(context);
  }
});

test("a page reloaded mid-call rejoins and the call recovers", async () => {
  const room = freshRoom("reload");
  const context = await browser.newContext();
  try {
    const ada = await openDemo(context, room, "ada");
    const grace = await openDemo(context, room, "grace");
    await waitForDemoPeers(ada, 1);
    await waitForDemoPeers(grace, 1);
    const before = await grace.evaluate(() => window.signalpost.channel.peer);

    await grace.reload();
    await waitForDemoPeers(grace, 1);
    const afterReload = await grace.evaluate(() => window.signalpost.channel.peer);
    assert.notEqual(afterReload, before, "the reloaded page joined as a new peer");

    // Ada dropped the old peer (beacon leave → peer-left) and is connected to the new one only.
    await ada.waitForFunction((peer) => window.signalpost.mesh.links.get(peer)?.state === "connected"
      && window.signalpost.mesh.links.size === 1, afterReload, { timeout: 30_000, polling: 100 });
    await waitForDemoPeers(ada, 1);
    assert.equal(await ada.locator(".tile.remote").count(), 1);
  } finally {
    await closeContext(context);
  }
});
