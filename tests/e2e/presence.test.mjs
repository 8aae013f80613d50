// A page that vanishes without its beacon leave (a crash, a lost network): the others learn
// it through the server's presence timeout (peer-left, reason "timeout") and drop its tile.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startServer } from "./lib/server.mjs";
import { launchBrowser, waitForDemoPeers, freshRoom, closeContext } from "./lib/browser.mjs";

let server, browser;
before(async () => {
  // The server requires presence timeout >= max wait + 5: short polls make a short timeout
  // legal, and the client must follow the maxWait the join response reports.
  server = await startServer({ SIGNALPOST_MAX_WAIT: "2", SIGNALPOST_PRESENCE_TIMEOUT: "7" });
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

test("a peer that disappears without leaving is dropped after the presence timeout", async () => {
  const room = freshRoom("vanish");
  const context = await browser.newContext();
  try {
    const ada = await context.newPage();
    await ada.goto(`${server.url}/?room=${room}&name=ada`);
    const grace = await context.newPage();
    await grace.goto(`${server.url}/?room=${room}&name=grace`);
    await waitForDemoPeers(ada, 1);
    await waitForDemoPeers(grace, 1);
    const gracePeer = await grace.evaluate(() => window.signalpost.channel.peer);
    assert.equal(await grace.evaluate(() => window.signalpost.channel.maxWait), 2);
    await ada.evaluate(() => {
      window.left = [];
      window.signalpost.channel.addEventListener("peer-left", (e) => window.left.push(e.data));
    });

    // Grace's beacon never goes out, as if her machine had lost power. (Routing cannot
    // catch it: a beacon outlives its page.)
    await grace.evaluate(() => { navigator.sendBeacon = () => true; });
    await grace.close();
    const left = await ada.waitForFunction(() => window.left[0], null, { timeout: 30_000 }).then((h) => h.jsonValue());
    assert.equal(left.from, gracePeer);
    assert.equal(left.data.reason, "timeout");
    await ada.waitForFunction(() => document.querySelectorAll(".tile.remote").length === 0, null, { timeout: 5_000 });
    assert.equal(await ada.getAttribute("html", "data-peers"), "0");
  } finally {
    await closeContext(context);
  }
});
