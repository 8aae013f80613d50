// SignalingChannel on its own (no WebRTC): late listeners, batching of trickled candidates
// (and of an offer or answer with the candidates right behind it),
// and retries against injected 429 / 503 / network failures with exactly-once delivery.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startServer } from "./lib/server.mjs";
import { launchBrowser, libraryPage, freshRoom, closeContext, joinQuietly, waitForPolled } from "./lib/browser.mjs";

let server, browser;
before(async () => {
  server = await startServer();
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

test("messages that arrive before the first listener are still delivered", async () => {
  const room = freshRoom("late");
  const context = await browser.newContext();
  try {
    const alice = await libraryPage(context, server.url);
    const bob = await libraryPage(context, server.url);
    const alicePeer = await joinQuietly(alice, server.url, room, "alice");
    await joinQuietly(bob, server.url, room, "bob");
    await bob.evaluate((to) => window.channel.send({ to, type: "message", data: { hello: "alice" } }), alicePeer);

    // Alice's poll has received both the peer-joined and the message, with nobody listening.
    await waitForPolled(alice, "message");
    const delivered = await alice.evaluate(async () => {
      const got = { message: [], joined: [] };
      window.channel.addEventListener("message", (e) => got.message.push(e.data.type));
      window.channel.addEventListener("peer-joined", (e) => got.joined.push(e.data.data?.name));
      // The backlog is flushed in a microtask: a macrotask later it has all been dispatched.
      await new Promise((resolve) => setTimeout(resolve, 0));
      return got;
    });
    assert.deepEqual(delivered.message, ["peer-joined", "message"]);
    assert.deepEqual(delivered.joined, ["bob"]);
  } finally {
    await closeContext(context);
  }
});

/** Alice and Bob in `room`, each quietly joined; `posts` collects the bodies of Bob's POSTs. */
async function bobPostingToAlice(context, room) {
  const alice = await libraryPage(context, server.url);
  const bob = await libraryPage(context, server.url);
  const alicePeer = await joinQuietly(alice, server.url, room, "alice");
  await joinQuietly(bob, server.url, room, "bob");
  const posts = [];
  bob.on("request", (r) => { if (r.method() === "POST" && r.url().endsWith("/messages")) posts.push(JSON.parse(r.postData())); });
  return { bob, alicePeer, posts };
}

test("candidates sent in quick succession share one batch request", async () => {
  const room = freshRoom("batch");
  const context = await browser.newContext();
  try {
    const { bob, alicePeer, posts } = await bobPostingToAlice(context, room);
    const ids = await bob.evaluate((to) => Promise.all(Array.from({ length: 60 }, (_, i) => window.channel.send({
      to, type: "candidate",
      data: { candidate: `candidate:${i} 1 udp 2122260223 127.0.0.1 ${50000 + i} typ host`, sdpMid: "0", sdpMLineIndex: 0 },
    }))), alicePeer);
    assert.equal(new Set(ids).size, 60, "one server id per message");
    // 60 candidates: a full batch of 50 and the rest, never more than 50 per request.
    assert.ok(posts.length <= 3, `posted in ${posts.length} requests`);
    for (const body of posts) assert.ok(body.messages === undefined || body.messages.length <= 50);
    assert.ok(posts.some((b) => b.messages?.length === 50));
    for (const body of posts) for (const m of body.messages ?? [body]) assert.match(m.id, /^[A-Za-z0-9_-]{1,64}$/);
  } finally {
    await closeContext(context);
  }
});

test("an offer waits for the burst of candidates that follows it and shares their request", async () => {
  const room = freshRoom("burst");
  const context = await browser.newContext();
  try {
    const { bob, alicePeer, posts } = await bobPostingToAlice(context, room);
    // As setLocalDescription and gathering do: the offer, then a candidate every millisecond
    // (timers run in due order, so a busy page cannot let the 5 ms pause pass in between).
    await bob.evaluate(async (to) => {
      const sent = [window.channel.send({ to, type: "offer", data: { type: "offer", sdp: "v=0\r\n" } })];
      for (let i = 0; i < 4; i++) {
        await new Promise((resolve) => setTimeout(resolve, 1));
        sent.push(window.channel.send({
          to, type: "candidate",
          data: { candidate: `candidate:${i} 1 udp 2122260223 127.0.0.1 ${50000 + i} typ host`, sdpMid: "0", sdpMLineIndex: 0 },
        }));
      }
      await Promise.all(sent);
      // Then an answer that no candidate follows: it goes alone, after its pause.
      await window.channel.send({ to, type: "answer", data: { type: "answer", sdp: "v=0\r\n" } });
    }, alicePeer);
    const bodies = posts.map((b) => (b.messages ?? [b]).map((m) => m.type));
    assert.deepEqual(bodies, [["offer", "candidate", "candidate", "candidate", "candidate"], ["answer"]]);
  } finally {
    await closeContext(context);
  }
});

test("retries 429/503/network failures, honours Retry-After, delivers each message once", async () => {
  const room = freshRoom("retry");
  const context = await browser.newContext();
  try {
    const alice = await libraryPage(context, server.url);
    const bob = await libraryPage(context, server.url);
    const problem = (status) => ({
      status, contentType: "application/problem+json", headers: { "Retry-After": "1", "Cache-Control": "no-store" },
      body: JSON.stringify({ type: `urn:signalpost:${status === 429 ? "rate-limited" : "unavailable"}`, title: "injected", status }),
    });

    // Alice's join: a 503 first. Her polls: 429, network error, 503, then two responses the
    // server produced but the browser never got, then one whose cursor does not advance
    // (so its messages come again), then normal.
    const joinTimes = [];
    await alice.route(`${server.url}/v1/rooms/*/peers`, async (route) => {
      joinTimes.push(Date.now());
      if (joinTimes.length === 1) return route.fulfill(problem(503));
      return route.continue();
    });
    const pollTimes = [];
    let lostResponses = 0;
    let replayed = false;
    await alice.route(`${server.url}/v1/rooms/*/messages?*`, async (route) => {
      pollTimes.push(Date.now());
      const n = pollTimes.length;
      if (n === 1) return route.fulfill(problem(429));
      if (n === 2) return route.abort("connectionreset");
      if (n === 3) return route.fulfill(problem(503));
      // Later polls: lose the first two responses that carry messages, after the server sent them.
      const response = await route.fetch({ timeout: 60_000 }).catch(() => null);
      if (!response) return route.abort("connectionreset");
      const body = await response.text();
      if (lostResponses < 2 && body.includes('"type":"message"')) {
        lostResponses++;
        return route.abort("connectionreset");
      }
      if (!replayed && body.includes('"type":"message"')) {
        // Deliver it, but hand back the request's own cursor: the next poll gets the same
        // messages again (at-least-once), and only the client's dedupe by id saves the day.
        replayed = true;
        const parsed = JSON.parse(body);
        const after = new URL(route.request().url()).searchParams.get("after");
        if (after) parsed.cursor = after; else delete parsed.cursor;
        return route.fulfill({ response, body: JSON.stringify(parsed) });
      }
      return route.fulfill({ response, body });
    });

    // Bob's posts: network error before the server, a lost response after the server stored
    // the batch (so the retry must be deduplicated by id), a 429, then normal.
    let postCount = 0;
    await bob.route(`${server.url}/v1/rooms/*/messages`, async (route) => {
      if (route.request().method() !== "POST") return route.continue();
      postCount++;
      if (postCount === 1) return route.abort("connectionrefused");
      if (postCount === 2) {
        await route.fetch();
        return route.abort("connectionreset");
      }
      if (postCount === 3) return route.fulfill(problem(429));
      return route.continue();
    });

    const start = Date.now();
    const alicePeer = await alice.evaluate(async ({ base, room }) => {
      window.got = [];
      window.channel = await window.sp.SignalingChannel.join(base, room, { name: "alice" });
      window.channel.addEventListener("message", (e) => { if (e.data.type === "message") window.got.push(e.data.data.n); });
      return window.channel.peer;
    }, { base: server.url, room });
    assert.equal(joinTimes.length, 2, "join retried once after 503");
    assert.ok(joinTimes[1] - joinTimes[0] >= 1000, `join retry waited ${joinTimes[1] - joinTimes[0]} ms, Retry-After is 1 s`);

    await bob.evaluate(async ({ base, room }) => {
      window.channel = await window.sp.SignalingChannel.join(base, room, { name: "bob" });
    }, { base: server.url, room });
    const total = 30;
    await bob.evaluate(async ({ to, total }) => {
      // Fired together so they share batches; awaited so every one must succeed.
      await Promise.all(Array.from({ length: total }, (_, n) => window.channel.send({ to, type: "message", data: { n } })));
    }, { to: alicePeer, total });
    assert.ok(postCount >= 4, `bob's posts were retried (${postCount} requests)`);

    await alice.waitForFunction((total) => window.got.length >= total, total, { timeout: 30_000, polling: 100 });
    await alice.waitForTimeout(1500); // any duplicate would show up within a poll or two
    const got = await alice.evaluate(() => window.got);
    assert.deepEqual(got, Array.from({ length: total }, (_, n) => n), "every message exactly once, in order");

    assert.ok(pollTimes[1] - pollTimes[0] >= 1000, `poll after 429 waited ${pollTimes[1] - pollTimes[0]} ms`);
    assert.ok(pollTimes[3] - pollTimes[2] >= 1000, `poll after 503 waited ${pollTimes[3] - pollTimes[2]} ms`);
    assert.equal(lostResponses, 2);
    assert.ok(replayed, "a replayed response was delivered");
    assert.ok(Date.now() - start < 60_000);
  } finally {
    await closeContext(context);
  }
});
