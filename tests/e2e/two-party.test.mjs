// Two pages join one room through signalpost.js and PeerMesh and get a real call: both
// RTCPeerConnections connected, audio and video arriving, a data channel round trip.
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

test("two pages connect with audio, video, a data channel round trip and an ICE restart", async () => {
  const room = freshRoom("two");
  const context = await browser.newContext();
  try {
    const alice = await libraryPage(context, server.url);
    const bob = await libraryPage(context, server.url);
    const alicePeer = await startLibraryCall(alice, server.url, room, { name: "alice" });
    const bobPeer = await startLibraryCall(bob, server.url, room, { name: "bob" });

    // Politeness comes from the server: bob joined second, so he is polite toward alice.
    assert.equal(await bob.evaluate((p) => window.e2e.channel.isPolite(p), alicePeer), true);
    assert.equal(await alice.evaluate((p) => window.e2e.channel.isPolite(p), bobPeer), false);

    await waitForLink(alice, bobPeer);
    await waitForLink(bob, alicePeer);

    const kinds = (page, peer) => page.waitForFunction(
      (p) => (window.e2e.tracks[p] ?? []).length >= 2 && window.e2e.tracks[p], peer, { timeout: 10_000 })
      .then((h) => h.jsonValue());
    assert.deepEqual((await kinds(alice, bobPeer)).sort(), ["audio", "video"]);
    assert.deepEqual((await kinds(bob, alicePeer)).sort(), ["audio", "video"]);

    // The data channel is negotiated (id 0): it opens with the connection on both sides.
    await alice.waitForFunction((p) => window.e2e.mesh.links.get(p)?.dataChannel.readyState === "open",
      bobPeer, { timeout: 10_000 });
    await alice.evaluate((p) => window.e2e.mesh.links.get(p).dataChannel.send("ping:hello"), bobPeer);
    await alice.waitForFunction(() => window.e2e.received.includes("pong:hello"), null, { timeout: 10_000 });
    assert.deepEqual(await bob.evaluate(() => window.e2e.received), ["ping:hello"]);

    // Video is really flowing, not just negotiated.
    await bob.waitForFunction(async (p) => {
      const stats = await window.e2e.mesh.links.get(p).pc.getStats();
      return [...stats.values()].some((s) => s.type === "inbound-rtp" && s.kind === "video" && s.framesDecoded > 0);
    }, alicePeer, { timeout: 15_000, polling: 250 });

    // An ICE restart (what PeerLink does when a connection fails) renegotiates new ICE
    // credentials over the channel, and the call stays up.
    const ufrag = (page, peer) => page.evaluate((p) =>
      /a=ice-ufrag:(\S+)/.exec(window.e2e.mesh.links.get(p).pc.remoteDescription.sdp)[1], peer);
    const before = await ufrag(bob, alicePeer);
    await alice.evaluate((p) => window.e2e.mesh.links.get(p).restartIce(), bobPeer);
    await bob.waitForFunction(({ p, old }) => !window.e2e.mesh.links.get(p).pc.remoteDescription.sdp.includes(`a=ice-ufrag:${old}`),
      { p: alicePeer, old: before }, { timeout: 10_000 });
    await waitForLink(alice, bobPeer);
    await waitForLink(bob, alicePeer);

    await alice.evaluate(() => window.e2e.channel.close());
    // Bob learns that alice left and drops the link.
    await bob.waitForFunction((p) => !window.e2e.mesh.links.has(p), alicePeer, { timeout: 10_000 });
  } finally {
    await closeContext(context);
  }
});

test("a 410 on the poll makes the page join again and the call recovers", async () => {
  const room = freshRoom("gone");
  const context = await browser.newContext();
  try {
    const alice = await libraryPage(context, server.url);
    const bob = await libraryPage(context, server.url);
    let inject410 = false;
    await alice.route(`${server.url}/v1/rooms/*/messages?*`, (route) => {
      if (!inject410) return route.continue();
      inject410 = false;
      return route.fulfill({
        status: 410, contentType: "application/problem+json",
        body: JSON.stringify({ type: "urn:signalpost:peer-gone", title: "Gone", status: 410 }),
      });
    });
    const alicePeer = await startLibraryCall(alice, server.url, room, { name: "alice" });
    const bobPeer = await startLibraryCall(bob, server.url, room, { name: "bob" });
    await waitForLink(alice, bobPeer);
    await waitForLink(bob, alicePeer);
    await alice.evaluate(() => {
      window.rejoins = [];
      window.e2e.channel.addEventListener("rejoin", (e) => window.rejoins.push(e.detail));
    });

    // The next poll of Alice's gets 410; a message from Bob ends her current held poll.
    inject410 = true;
    await bob.evaluate((to) => window.e2e.channel.send({ to, type: "message", data: "wake up" }), alicePeer);

    const rejoin = await alice.waitForFunction(() => window.rejoins[0], null, { timeout: 15_000 }).then((h) => h.jsonValue());
    assert.equal(rejoin.previousPeer, alicePeer);
    assert.notEqual(rejoin.peer, alicePeer);
    // As a newcomer she calls Bob again (and not her own former id); Bob drops the old link.
    await waitForLink(alice, bobPeer);
    await waitForLink(bob, rejoin.peer);
    assert.deepEqual(await alice.evaluate(() => [...window.e2e.mesh.links.keys()]), [bobPeer]);
    await bob.waitForFunction((old) => !window.e2e.mesh.links.has(old), alicePeer, { timeout: 10_000 });
  } finally {
    await closeContext(context);
  }
});
