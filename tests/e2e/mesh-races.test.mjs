// PeerLink and PeerMesh under the races of issue 16, in real Chromium pages: a slow offer
// POST during renegotiation, a mesh built after its peer already left, and a closed mesh.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startServer } from "./lib/server.mjs";
import {
  launchBrowser, libraryPage, startLibraryCall, waitForLink, freshRoom, closeContext, joinQuietly, waitForPolled,
} from "./lib/browser.mjs";
import { gate, rawPeer } from "./lib/net.mjs";

let server, browser;
before(async () => {
  server = await startServer();
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

/** The ICE ufrag of the remote description a page's link toward `peer` holds. */
const remoteUfrag = (page, peer) => page.evaluate((p) =>
  /a=ice-ufrag:(\S+)/.exec(window.e2e.mesh.links.get(p)?.pc.remoteDescription?.sdp ?? "")?.[1] ?? null, peer);

test("item 7: a slow offer POST does not make the impolite side ignore the next valid offer", async () => {
  const room = freshRoom("slow-offer");
  const context = await browser.newContext();
  try {
    const alice = await libraryPage(context, server.url);
    const bob = await libraryPage(context, server.url);
    const alicePeer = await startLibraryCall(alice, server.url, room, { name: "alice" });
    const bobPeer = await startLibraryCall(bob, server.url, room, { name: "bob" });
    await waitForLink(alice, bobPeer);
    await waitForLink(bob, alicePeer);
    // Alice came first, so she is the impolite side toward bob.
    assert.equal(await alice.evaluate((p) => window.e2e.mesh.links.get(p).polite, bobPeer), false);

    // Alice's next offer reaches the server at once, but its 202 takes until `release`.
    const release = gate();
    const held = gate();
    let holding = true;
    await alice.route(`${server.url}/v1/rooms/*/messages`, async (route) => {
      const request = route.request();
      if (!holding || request.method() !== "POST" || !request.postData()?.includes('"type":"offer"')) {
        return route.continue();
      }
      holding = false;
      const response = await route.fetch();
      held.open();
      await release.promise;
      return route.fulfill({ response });
    });

    try {
      // Alice renegotiates (an ICE restart); bob answers while her POST is still out.
      const bobUfragBefore = await remoteUfrag(alice, bobPeer);
      await alice.evaluate((p) => window.e2e.mesh.links.get(p).restartIce(), bobPeer);
      await held.promise;
      await alice.waitForFunction(({ p, old }) => {
        const pc = window.e2e.mesh.links.get(p).pc;
        return pc.signalingState === "stable" && !pc.remoteDescription.sdp.includes(`a=ice-ufrag:${old}`);
      }, { p: bobPeer, old: bobUfragBefore }, { timeout: 15_000, polling: 50 });

      // Now bob renegotiates. His offer is valid (alice is stable): she must take it, even
      // though the POST of her own earlier offer has not been answered yet.
      const afterAnswer = await remoteUfrag(alice, bobPeer);
      await bob.evaluate((p) => window.e2e.mesh.links.get(p).restartIce(), alicePeer);
      await alice.waitForFunction(({ p, old }) => {
        const sdp = window.e2e.mesh.links.get(p).pc.remoteDescription?.sdp ?? "";
        return /a=ice-ufrag:/.test(sdp) && !sdp.includes(`a=ice-ufrag:${old}`);
      }, { p: bobPeer, old: afterAnswer }, { timeout: 15_000, polling: 50 });
    } finally {
      release.open();
    }
    // Her answer went out behind the held POST; bob's offer completes and the call holds.
    await bob.waitForFunction((p) => window.e2e.mesh.links.get(p).pc.signalingState === "stable",
      alicePeer, { timeout: 15_000, polling: 50 });
    await waitForLink(alice, bobPeer);
    await waitForLink(bob, alicePeer);
  } finally {
    await closeContext(context);
  }
});

test("item 10: a mesh built after its peer left does not call it, and a 404 closes a link", async () => {
  const room = freshRoom("departed");
  const context = await browser.newContext();
  try {
    const bob = await rawPeer(server.url, room, "bob");
    const alice = await libraryPage(context, server.url);
    // Alice joins and, like an app awaiting getUserMedia, attaches nothing for a while.
    await joinQuietly(alice, server.url, room, "alice");
    assert.deepEqual(await alice.evaluate(() => window.channel.peers.map((p) => p.peer)), [bob.peer]);
    const left = await bob.leave();
    assert.equal(left.status, 204);
    await waitForPolled(alice, "peer-left");

    // Only now is the mesh built: the backlog (with bob's peer-left) reaches it first.
    const links = await alice.evaluate(async () => {
      const mesh = new window.sp.PeerMesh(window.channel);
      window.mesh = mesh;
      window.closedLinks = [];
      mesh.addEventListener("linkclosed", ({ detail }) => window.closedLinks.push(detail.peer));
      await new Promise((resolve) => setTimeout(resolve, 0)); // after the construction microtasks
      return [...mesh.links.keys()];
    });
    assert.deepEqual(links, [], "the mesh called a peer that had already left");

    // An explicit call to a peer that is not in the room: its offer gets 404, which ends it.
    await alice.evaluate((p) => window.mesh.connect(p), bob.peer);
    await alice.waitForFunction((p) => window.closedLinks.includes(p), bob.peer, { timeout: 15_000 });
    assert.equal(await alice.evaluate(() => window.mesh.links.size), 0);
  } finally {
    await closeContext(context);
  }
});

test("item 11: a closed PeerMesh no longer listens to its channel", async () => {
  const room = freshRoom("mesh-closed");
  const context = await browser.newContext();
  try {
    const alice = await libraryPage(context, server.url);
    const bob = await libraryPage(context, server.url);
    await startLibraryCall(alice, server.url, room, { name: "alice" });
    await alice.evaluate(() => {
      window.e2e.mesh.close();
      // Attached after the mesh's own listener, so it runs after the mesh saw each message.
      window.offersSeen = [];
      window.e2e.channel.addEventListener("message", ({ data }) => {
        if (data.type === "offer") window.offersSeen.push(window.e2e.mesh.links.size);
      });
    });
    // Bob arrives and calls alice; her channel still receives his offer.
    await startLibraryCall(bob, server.url, room, { name: "bob" });
    const sizes = await alice.waitForFunction(() => window.offersSeen.length && window.offersSeen, null, { timeout: 15_000 })
      .then((h) => h.jsonValue());
    assert.deepEqual(sizes, [0], "the closed mesh opened a link for the offer");
  } finally {
    await closeContext(context);
  }
});
