// Many tabs of one browser polling one server over plain HTTP (so HTTP/1.1): signalpost.js
// counts the polling channels across tabs (a BroadcastChannel census) and, from six on, each
// tab with a polling channel warns once on its console with the remedy. Five tabs, tabs
// that closed and a tab that crashed (dropped after the census expiry) do not count.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startServer } from "./lib/server.mjs";
import { launchBrowser, libraryPage, freshRoom, closeContext } from "./lib/browser.mjs";

// signalpost.js's CENSUS_EXPIRY_MS plus one heartbeat (10 s), after which a silent tab is gone.
const CRASHED_TAB_FORGOTTEN_MS = 45_000 + 10_000 + 2_000;
// Time for every tab to hear every other's announcement before asserting that none warned.
const SETTLE_MS = 1500;

let server, browser;
before(async () => {
  // Short polls keep the tabs' own requests flowing while six polls hold every connection.
  server = await startServer({ SIGNALPOST_MAX_WAIT: "5" });
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** A tab with one channel polling its own room; `warnings` collects its starvation warnings. */
async function openTab(context, label) {
  const page = await libraryPage(context, server.url);
  const tab = { label, page, warnings: [] };
  page.on("console", (msg) => {
    if (msg.type() === "warning" && msg.text().includes("over HTTP/1.1")) tab.warnings.push(msg.text());
  });
  await page.evaluate(async ({ base, room }) => {
    window.channel = await window.sp.SignalingChannel.join(base, room);
  }, { base: server.url, room: freshRoom(`tabs-${label}`) });
  return tab;
}

/**
 * A page of the same origin that takes no part but asks for a census and adds up the
 * answers: the channels polling right now in live tabs (a crashed tab cannot answer).
 */
async function openProbe(context) {
  const page = await context.newPage();
  await page.route(`${server.url}/__probe__.html`, (route) => route.fulfill({
    contentType: "text/html", body: "<!doctype html><title>probe</title>",
  }));
  await page.goto(`${server.url}/__probe__.html`);
  return {
    count: () => page.evaluate((origin) => new Promise((resolve) => {
      const census = new BroadcastChannel(`signalpost-census:${origin}`);
      const polls = new Map();
      census.onmessage = ({ data }) => { if (data.kind === "state") polls.set(data.tab, data.polls); };
      census.postMessage({ kind: "census", tab: "probe" });
      setTimeout(() => {
        census.close();
        resolve([...polls.values()].reduce((a, b) => a + b, 0));
      }, 400);
    }), new URL(server.url).origin),
    async waitForCount(want, timeout = 15_000) {
      const deadline = Date.now() + timeout;
      let seen;
      while ((seen = await this.count()) !== want) {
        if (Date.now() > deadline) assert.fail(`census counted ${seen} polling channels, expected ${want}`);
        await sleep(200);
      }
    },
  };
}

const warningsOf = (tabs) => Object.fromEntries(tabs.map((t) => [t.label, t.warnings.length]));

test("six tabs polling one origin over HTTP/1.1 warn once each; five, closed and crashed tabs do not", async (t) => {
  const context = await browser.newContext();
  try {
    const probe = await openProbe(context);
    const live = [];
    for (const label of ["1", "2", "3", "4", "5"]) live.push(await openTab(context, label));
    await probe.waitForCount(5);
    await sleep(SETTLE_MS);
    assert.deepEqual(warningsOf(live), { 1: 0, 2: 0, 3: 0, 4: 0, 5: 0 }, "five polling tabs must not warn");

    await t.test("closed tabs stop counting at once", async () => {
      for (const tab of live.splice(3, 2)) await tab.page.close();
      await probe.waitForCount(3);
      for (const label of ["6", "7"]) live.push(await openTab(context, label));
      await probe.waitForCount(5);
      await sleep(SETTLE_MS);
      // Had tabs 1-3 kept the closed tabs 4 and 5, they would count 7 and warn.
      assert.deepEqual(warningsOf(live), { 1: 0, 2: 0, 3: 0, 6: 0, 7: 0 });
    });

    await t.test("a tab that crashed, saying no goodbye, stops counting after the census expiry", async () => {
      const crashed = live.splice(3, 1)[0];
      const gone = new Promise((resolve) => crashed.page.once("crash", resolve));
      const cdp = await context.newCDPSession(crashed.page);
      cdp.send("Page.crash").catch(() => {});
      await gone;
      for (const tab of live) assert.equal(await tab.page.evaluate(() => 1 + 1), 2, `tab ${tab.label} crashed too`);
      await probe.waitForCount(4);
      await sleep(CRASHED_TAB_FORGOTTEN_MS);
      live.push(await openTab(context, "8"));
      await probe.waitForCount(5);
      await sleep(SETTLE_MS);
      // Had tabs 1-3 and 7 kept the crashed tab 6, they would count 6 and warn.
      assert.deepEqual(warningsOf(live), { 1: 0, 2: 0, 3: 0, 7: 0, 8: 0 });
    });

    await t.test("the sixth polling tab makes every polling tab warn, once", async () => {
      live.push(await openTab(context, "9"));
      await probe.waitForCount(6);
      const deadline = Date.now() + 15_000;
      while (live.some((tab) => tab.warnings.length === 0) && Date.now() < deadline) await sleep(200);
      // Heartbeats and polls go on (maxWait 5 s): no tab may warn a second time.
      await sleep(12_000);
      assert.deepEqual(warningsOf(live), { 1: 1, 2: 1, 3: 1, 7: 1, 8: 1, 9: 1 });
      const [warning] = live[0].warnings;
      assert.match(warning, /6 channels are long-polling http:\/\/127\.0\.0\.1:\d+ over HTTP\/1\.1/);
      for (const remedy of ["HTTP/2", "SIGNALPOST_TLS_CERT", "SIGNALPOST_TLS_KEY", "reverse proxy", "EnableCloudFront=true"]) {
        assert.ok(warning.includes(remedy), `the warning names ${remedy}: ${warning}`);
      }
    });

    // Channels that close say goodbye: nothing polls any more.
    for (const tab of live) await tab.page.evaluate(() => window.channel.close());
    await probe.waitForCount(0);
  } finally {
    await closeContext(context);
  }
});
