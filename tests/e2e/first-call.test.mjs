// A newcomer's first call, exactly as the README tells it: the URL the server prints, opened
// in two tabs, is a call; the page without ?room= offers a "Start a call" step; and
// ?server= points the page at another signalpost (as with `cargo lambda watch`).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startServer } from "./lib/server.mjs";
import { launchBrowser, waitForDemoPeers, closeContext } from "./lib/browser.mjs";

let server, apiServer, browser;
before(async () => {
  [server, apiServer, browser] = await Promise.all([startServer(), startServer(), launchBrowser()]);
});
after(async () => {
  await browser?.close();
  await server?.stop();
  await apiServer?.stop();
});

async function open(context, url) {
  const page = await context.newPage();
  page.on("pageerror", (err) => console.error(`[${url}] ${err.message}`));
  await page.goto(url);
  return page;
}

const waitForStartStep = (page) => page.waitForFunction(
  () => document.documentElement.dataset.state === "start", null, { timeout: 10_000 });

/** On a page at the Start a call step: press it, open the link it leads to in a second tab. */
async function startCallInTwoTabs(context, first) {
  await first.click("#start-call");
  await first.waitForURL(/\?room=/, { timeout: 10_000 });
  const second = await open(context, first.url());
  await Promise.all([waitForDemoPeers(first, 1), waitForDemoPeers(second, 1)]);
  return second;
}

test("the URL the server prints, opened in two tabs, is a call", async () => {
  assert.match(server.callUrl, /^http:\/\/127\.0\.0\.1:\d+\/\?room=[a-z]+-[a-z]+$/);
  const context = await browser.newContext();
  try {
    const first = await open(context, server.callUrl);
    const second = await open(context, server.callUrl);
    await Promise.all([waitForDemoPeers(first, 1), waitForDemoPeers(second, 1)]);
    for (const page of [first, second]) {
      assert.equal(await page.getAttribute("html", "data-state"), "connected");
    }
  } finally {
    await closeContext(context);
  }
});

test("without ?room= the page offers to start a call, and its link makes one", async () => {
  const context = await browser.newContext();
  try {
    const joins = [];
    context.on("request", (request) => {
      if (request.method() === "POST" && request.url().endsWith("/peers")) joins.push(request.url());
    });
    const first = await open(context, `${server.url}/`);
    await waitForStartStep(first);
    assert.ok(await first.isVisible("text=Start a call"), "the Start a call step is shown");
    assert.ok(!(await first.isVisible("#tiles")), "no empty call is shown");
    assert.deepEqual(joins, [], "nothing is joined before the person asks for a call");

    const second = await startCallInTwoTabs(context, first);
    assert.equal(await second.inputValue("#room-link"), first.url(), "the room link shown is the one opened");
  } finally {
    await closeContext(context);
  }
});

test("?server= runs the call on another signalpost, and the started room keeps it", async () => {
  const context = await browser.newContext();
  try {
    const apiRequests = [];
    context.on("request", (request) => {
      if (new URL(request.url()).pathname.startsWith("/v1/")) apiRequests.push(request.url());
    });
    const first = await open(context, `${server.url}/?server=${apiServer.url}`);
    await waitForStartStep(first);
    await startCallInTwoTabs(context, first);
    assert.equal(new URL(first.url()).searchParams.get("server"), apiServer.url);
    assert.ok(apiRequests.length > 0);
    for (const url of apiRequests) assert.ok(url.startsWith(`${apiServer.url}/`), `${url} went to the API server`);
  } finally {
    await closeContext(context);
  }
});
