// Glare: both sides create an offer at the same moment. The offers are held at the network
// until both exist, so each side really receives an offer while in have-local-offer; perfect
// negotiation (the polite side rolls back) must still connect the call.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startServer } from "./lib/server.mjs";
import { launchBrowser, libraryPage, startLibraryCall, waitForLink, freshRoom, closeContext } from "./lib/browser.mjs";

let server, browser;
before(async () => {
  server = await startServer();
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

/** Holds each page's first POST that carries an offer until `release()` is called. */
function offerBarrier(count) {
  let held = 0;
  let onAllHeld, release;
  const allHeld = new Promise((resolve) => { onAllHeld = resolve; });
  const released = new Promise((resolve) => { release = resolve; });
  return {
    allHeld,
    release,
    async install(page) {
      let done = false;
      await page.route(`${server.url}/v1/rooms/*/messages`, async (route) => {
        const body = route.request().postData() ?? "";
        if (!done && route.request().method() === "POST" && body.includes('"type":"offer"')) {
          done = true;
          if (++held === count) onAllHeld();
          await released;
        }
        await route.continue();
      });
    },
  };
}

test("both sides offer at once and still connect", async () => {
  const room = freshRoom("glare");
  const context = await browser.newContext();
  try {
    const alice = await libraryPage(context, server.url);
    const bob = await libraryPage(context, server.url);
    const barrier = offerBarrier(2);
    await barrier.install(alice);
    await barrier.install(bob);
    // autoConnect off: nobody calls on join, so the two offers below are the only ones.
    const alicePeer = await startLibraryCall(alice, server.url, room, { autoConnect: false });
    const bobPeer = await startLibraryCall(bob, server.url, room, { autoConnect: false });

    await Promise.all([
      alice.evaluate((p) => { window.e2e.mesh.connect(p); }, bobPeer),
      bob.evaluate((p) => { window.e2e.mesh.connect(p); }, alicePeer),
    ]);
    await barrier.allHeld;
    const signalingState = (page, peer) => page.evaluate((p) => window.e2e.mesh.links.get(p).pc.signalingState, peer);
    // Both offers exist before either is delivered: a real collision.
    assert.equal(await signalingState(alice, bobPeer), "have-local-offer");
    assert.equal(await signalingState(bob, alicePeer), "have-local-offer");
    // From here on, record each side's signalling states and the descriptions it applies.
    const record = (page, peer) => page.evaluate((p) => {
      const pc = window.e2e.mesh.links.get(p).pc;
      window.e2e.glare = { states: [], remote: [] };
      pc.addEventListener("signalingstatechange", () => window.e2e.glare.states.push(pc.signalingState));
      const setRemoteDescription = pc.setRemoteDescription.bind(pc);
      pc.setRemoteDescription = (description) => {
        window.e2e.glare.remote.push(description?.type);
        return setRemoteDescription(description);
      };
    }, peer);
    await record(alice, bobPeer);
    await record(bob, alicePeer);
    barrier.release();

    await waitForLink(alice, bobPeer);
    await waitForLink(bob, alicePeer);
    assert.deepEqual(await alice.evaluate(() => window.e2e.errors), []);
    assert.deepEqual(await bob.evaluate(() => window.e2e.errors), []);
    // Bob is the polite one (he joined second): he yielded, so Alice's offer won.
    assert.equal(await bob.evaluate((p) => window.e2e.mesh.links.get(p).polite, alicePeer), true);
    assert.equal(await alice.evaluate((p) => window.e2e.mesh.links.get(p).polite, bobPeer), false);
    const glare = (page) => page.evaluate(() => window.e2e.glare);
    const [aliceSaw, bobSaw] = [await glare(alice), await glare(bob)];
    // Bob rolled his offer back (implicitly, by applying Alice's) and answered it ...
    assert.deepEqual(bobSaw.remote, ["offer"], `Bob applied ${bobSaw.remote}`);
    assert.deepEqual(bobSaw.states.filter((state) => state !== "stable"), ["have-remote-offer"],
      `Bob's signalling states: ${bobSaw.states}`);
    assert.equal(bobSaw.states.at(-1), "stable");
    // ... while Alice ignored Bob's offer and applied only Bob's answer to her own.
    assert.deepEqual(aliceSaw.remote, ["answer"], `Alice applied ${aliceSaw.remote}`);
    assert.deepEqual(aliceSaw.states, ["stable"], `Alice's signalling states: ${aliceSaw.states}`);
    const descriptions = (page, peer) => page.evaluate((p) => {
      const pc = window.e2e.mesh.links.get(p).pc;
      return [pc.currentLocalDescription?.type, pc.currentRemoteDescription?.type];
    }, peer);
    assert.deepEqual(await descriptions(alice, bobPeer), ["offer", "answer"]);
    assert.deepEqual(await descriptions(bob, alicePeer), ["answer", "offer"]);
  } finally {
    await closeContext(context);
  }
});
