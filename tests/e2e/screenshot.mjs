// Takes screenshots of the demo page mid-call (three parties), for a human to look at:
// `SIGNALPOST_BIN=... node screenshot.mjs [out-dir]` writes demo-*.png (default: /tmp).
import { startServer } from "./lib/server.mjs";
import { launchBrowser, waitForDemoPeers } from "./lib/browser.mjs";

const outDir = process.argv[2] ?? "/tmp";
const server = await startServer();
const browser = await launchBrowser();
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const url = `${server.url}/?room=screenshot`;
  const lonely = await context.newPage();
  await lonely.goto(`${server.url}/?room=alone&name=ada`);
  await lonely.waitForFunction(() => document.documentElement.dataset.state === "waiting", null, { timeout: 15_000 });
  await lonely.screenshot({ path: `${outDir}/demo-waiting.png` });
  await lonely.close();
  const pages = [];
  for (const name of ["ada", "grace", "linus"]) {
    const page = await context.newPage();
    await page.goto(`${url}&name=${name}`);
    pages.push(page);
  }
  for (const page of pages) await waitForDemoPeers(page, 2);
  await new Promise((r) => setTimeout(r, 1500)); // let a few frames render
  await pages[0].screenshot({ path: `${outDir}/demo-call.png` });
  console.log(`wrote ${outDir}/demo-waiting.png and ${outDir}/demo-call.png`);
} finally {
  await browser.close();
  await server.stop();
}
