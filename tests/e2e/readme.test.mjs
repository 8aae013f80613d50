// The README's "In a page" block, run as written: served as call.html by a plain static
// server on another loopback port (as `python3 -m http.server` would serve the reader's
// folder) and opened in two tabs, it makes a call. Only the server's address changes, from
// the README's 127.0.0.1:8080 to this test's server.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createServer } from "node:http";
import { startServer } from "./lib/server.mjs";
import { launchBrowser, closeContext } from "./lib/browser.mjs";

const README = new URL("../../README.md", import.meta.url);
const README_SERVER = "http://127.0.0.1:8080";

/** The ```html block of the README's "In a page" section. */
function readmePage() {
  const readme = readFileSync(README, "utf8");
  const section = readme.split(/^### In a page$/m)[1];
  assert.ok(section, "the README has an 'In a page' section");
  const block = /^```html\n([\s\S]*?)^```$/m.exec(section.split(/^#{2,3} /m)[0]);
  assert.ok(block, "the 'In a page' section has an html block");
  assert.ok(block[1].includes(README_SERVER), `the block names ${README_SERVER}`);
  return block[1];
}

/** A static server for one page at /call.html; resolves with its URL and a close(). */
function servePage(html) {
  const pages = createServer((request, response) => {
    if (request.url === "/call.html") response.writeHead(200, { "content-type": "text/html" }).end(html);
    else response.writeHead(404).end();
  });
  return new Promise((resolve) => pages.listen(0, "127.0.0.1", () => resolve({
    url: `http://127.0.0.1:${pages.address().port}/call.html`,
    close: () => new Promise((done) => { pages.closeAllConnections(); pages.close(done); }),
  })));
}

let server, browser, page;
before(async () => {
  [server, browser] = await Promise.all([startServer(), launchBrowser()]);
  page = await servePage(readmePage().replaceAll(README_SERVER, server.url));
});
after(async () => {
  await page?.close();
  await browser?.close();
  await server?.stop();
});

test("the README's page, opened in two tabs, connects a call", async () => {
  const context = await browser.newContext();
  let timer;
  try {
    const connected = [];
    for (const name of ["first", "second"]) {
      const tab = await context.newPage();
      connected.push(new Promise((resolve) => tab.on("console", (message) => {
        if (message.text() === "call: connected") resolve();
      })));
      tab.on("pageerror", (err) => console.error(`[${name}] ${err.message}`));
      await tab.goto(page.url);
    }
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error("no 'call: connected' in both tabs within 30 s")), 30_000);
    });
    await Promise.race([Promise.all(connected), timeout]);
  } finally {
    clearTimeout(timer);
    await closeContext(context);
  }
});
