// SignalingChannel under the rare interleavings of issue 16, run in Node against a real
// server: each test holds, loses or fails chosen requests (lib/net.mjs) to force one race,
// and checks what the other peers and the channel's own events observe.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { startServer, WEB_DIR } from "./lib/server.mjs";
import { freshRoom } from "./lib/browser.mjs";
import {
  faultyNet, gate, waitFor, holdRequest, holdResponse, loseResponse, respond,
  isPoll, isPost, isJoin, isLeave, rawPeer, leaveAs,
} from "./lib/net.mjs";

const { SignalingChannel } = await import(pathToFileURL(path.join(WEB_DIR, "signalpost.js")).href);

let server;
const open = [];
before(async () => { server = await startServer(); });
after(async () => {
  await Promise.allSettled(open.map((channel) => channel.close()));
  await server?.stop();
});

/** Join through a faulty net; `events` records rejoin/error/close in order. */
async function joinChannel(room, net, options = {}) {
  const channel = await SignalingChannel.join(server.url, room, { name: "alice", fetch: net.fetch, ...options });
  open.push(channel);
  const events = [];
  const messages = [];
  channel.addEventListener("rejoin", (e) => events.push({ type: "rejoin", ...e.detail }));
  channel.addEventListener("error", (e) => events.push({ type: "error", detail: String(e.detail) }));
  channel.addEventListener("close", () => events.push({ type: "close" }));
  channel.addEventListener("message", (e) => messages.push(e.data));
  return { channel, events, messages };
}

/** A send's outcome, handled at once (a rejection handled later is reported as unhandled). */
const settle = (promise) => promise.then((id) => ({ id }), (err) => ({ err }));

/** The token of the channel's current session, as its latest poll carried it. */
const currentToken = (net, channel) => net.log.filter((r) => isPoll(r) && r.token).at(-1).token;

/** Make the channel's peer gone on the server (a real 410 from then on). */
async function removeOnServer(net, channel) {
  const res = await leaveAs(server.url, channel.room, channel.peer, currentToken(net, channel));
  assert.equal(res.status, 204);
}

test("item 5: a poll still out when a send rejoins does not move the new inbox's cursor", async (t) => {
  // Both halves of the fix: the rejoin aborts the open poll (a slow downlink that honours
  // the abort), and a result that arrives anyway is dropped (one already read, which an
  // abort cannot stop).
  for (const honourAbort of [true, false]) {
    await t.test(honourAbort ? "poll aborted" : "poll answer already on its way", async () => {
      const room = freshRoom("stale-poll");
      const net = faultyNet();
      // Alice's first poll is answered when bob joins (his peer-joined and the old inbox's
      // cursor); that answer is held on its way back.
      const downlink = gate();
      const answered = gate();
      net.on(isPoll, holdResponse(downlink, { honourAbort, onAnswered: answered.open }));
      const { channel: alice, events, messages } = await joinChannel(room, net);
      const oldPeer = alice.peer;
      const bob = await rawPeer(server.url, room, "bob");
      await answered.promise;

      // Her token dies (the server forgets her), and a send finds out first and rejoins.
      await removeOnServer(net, alice);
      const sent = settle(alice.send({ to: bob.peer, type: "message", data: "hello" }));
      await waitFor(() => events.find((e) => e.type === "rejoin"), "the rejoin");
      assert.notEqual(alice.peer, oldPeer);
      await sent;

      // The old poll comes back now, carrying the old inbox's cursor.
      downlink.open();
      await bob.send(alice.peer, "to the new alice");
      await waitFor(() => messages.find((m) => m.type === "message" && m.data === "to the new alice")
        || events.find((e) => e.type === "error"), "bob's message to the new peer id", 15_000);
      assert.deepEqual(events.filter((e) => e.type === "error"), [], "the poll loop hit an error");
      assert.ok(messages.some((m) => m.data === "to the new alice"));
      await alice.close();
    });
  }
});

test("item 5: a rejoin restarts a poll loop that had stopped on an error", async () => {
  const room = freshRoom("dead-loop");
  const net = faultyNet();
  const { channel: alice, events, messages } = await joinChannel(room, net, { wait: 1 });
  const bob = await rawPeer(server.url, room, "bob");
  // A poll answer the loop cannot get past (a 400) stops it, as a stale cursor once did.
  net.on(isPoll, respond(400));
  await waitFor(() => events.find((e) => e.type === "error"), "the poll loop's error");

  // Her token dies; a send rejoins. The new peer id must be polled again.
  await removeOnServer(net, alice);
  await settle(alice.send({ to: bob.peer, type: "message", data: "anyone?" }));
  await waitFor(() => events.find((e) => e.type === "rejoin"), "the rejoin");
  await bob.send(alice.peer, "welcome back");
  await waitFor(() => messages.find((m) => m.data === "welcome back"), "bob's message to the new peer id", 10_000);
  await alice.close();
});

test("item 6: a late 410 from a request made with the old token does not rejoin again", async () => {
  const room = freshRoom("late-410");
  const net = faultyNet();
  const { channel: alice, events } = await joinChannel(room, net, { wait: 1 });
  const bob = await rawPeer(server.url, room, "bob");

  // A post leaves late (slow uplink), with the token alice has now.
  const uplink = gate();
  const held = net.on(isPost, holdRequest(uplink));
  const sent = settle(alice.send({ to: bob.peer, type: "message", data: "old" }));
  await waitFor(() => held.seen.length, "the held post");

  // Meanwhile her poll learns she is gone and rejoins.
  await removeOnServer(net, alice);
  await waitFor(() => events.find((e) => e.type === "rejoin"), "the first rejoin");
  const newPeer = alice.peer;

  // The old post reaches the server now and gets 410 for the old token.
  uplink.open();
  const outcome = await sent;
  assert.equal(events.filter((e) => e.type === "rejoin").length, 1, `rejoined twice: ${JSON.stringify(events)}`);
  assert.equal(alice.peer, newPeer);
  assert.equal(outcome.err?.code, "rejoined", "the old identity's post is refused, not resent");
  // The fresh peer is still a member: bob can reach it.
  await bob.send(newPeer, "still there?");
  await alice.close();
});

test("item 8: sends queued by the old identity are not posted under the new one", async () => {
  const room = freshRoom("stale-send");
  const net = faultyNet();
  const { channel: alice, events } = await joinChannel(room, net, { wait: 1 });
  const bob = await rawPeer(server.url, room, "bob");

  // Her rejoin's join is slow to leave; while it is out, an old link sends its ICE-restart
  // offer (here a plain message, which the server accepts to any member).
  const uplink = gate();
  const heldJoin = net.on(isJoin, holdRequest(uplink));
  await removeOnServer(net, alice);
  await waitFor(() => heldJoin.seen.length, "the rejoin's join");
  const stale = settle(alice.send({ to: bob.peer, type: "message", data: "from-the-old-alice" }));
  uplink.open();
  await waitFor(() => events.find((e) => e.type === "rejoin"), "the rejoin");

  const outcome = await stale;
  assert.equal(outcome.err?.code, "rejoined", `the old identity's send went out: ${JSON.stringify(outcome)}`);

  // A send made after the rejoin does go out, and is all bob gets from the new alice.
  await alice.send({ to: bob.peer, type: "message", data: "from-the-new-alice" });
  await waitFor(async () => (await bob.poll(), bob.received.some((m) => m.data === "from-the-new-alice")), "the new send at bob");
  assert.deepEqual(bob.received.filter((m) => m.type === "message").map((m) => m.data), ["from-the-new-alice"]);
  await alice.close();
});

test("item 9: close() during a rejoin leaves no ghost and fires no rejoin after close", async () => {
  const room = freshRoom("close-rejoin");
  const net = faultyNet();
  const { channel: alice, events } = await joinChannel(room, net, { wait: 1 });
  const bob = await rawPeer(server.url, room, "bob");

  // The rejoin's join reaches the server (a new peer exists) but its answer is slow.
  const downlink = gate();
  const answered = gate();
  let ghost = null;
  net.on(isJoin, holdResponse(downlink, {
    onAnswered: async (res) => { ghost = (await res.json()).peer; answered.open(); },
  }));
  await removeOnServer(net, alice);
  await answered.promise;

  const closing = alice.close();
  downlink.open();
  await closing;
  // Bob sees the peer the late join made leave again (not a member until its timeout).
  await waitFor(async () => (await bob.poll(), bob.received.some((m) => m.type === "peer-left" && m.from === ghost)),
    `peer-left for the rejoin's peer ${ghost}`, 10_000);
  assert.ok(net.log.some((r) => isLeave(r) && r.path.endsWith(`/peers/${ghost}`)));
  assert.deepEqual(events.map((e) => e.type), ["close"], "events after close()");
});

test("item 11: with maxWait 0 the poll loop pauses between empty polls", async () => {
  const quick = await startServer({ SIGNALPOST_MAX_WAIT: "0" });
  try {
    const net = faultyNet();
    const alice = await SignalingChannel.join(quick.url, freshRoom("spin"), { fetch: net.fetch });
    assert.equal(alice.maxWait, 0);
    const start = Date.now();
    await new Promise((resolve) => setTimeout(resolve, 2000));
    const polls = net.log.filter((r) => isPoll(r) && r.at >= start).length;
    await alice.close();
    // 500 ms apart: about 4 in 2 s. Unfixed it was thousands.
    assert.ok(polls <= 8, `${polls} polls in 2 s`);
  } finally {
    await quick.stop();
  }
});

test("item 11: a join whose response was lost does not list its ghost among the peers", async () => {
  const room = freshRoom("lost-join");
  const bob = await rawPeer(server.url, room, "bob");
  const net = faultyNet();
  net.on(isJoin, loseResponse());
  const { channel: alice } = await joinChannel(room, net);
  assert.equal(net.log.filter(isJoin).length, 2, "the join was retried");
  assert.deepEqual(alice.peers.map((p) => p.peer), [bob.peer], "the lost join's peer is not someone to call");
  await alice.close();
});

test("item 11: no post goes out after close()", async () => {
  const room = freshRoom("post-after-close");
  const net = faultyNet();
  const { channel: alice } = await joinChannel(room, net);
  const bob = await rawPeer(server.url, room, "bob");
  // Every post is refused with a long Retry-After: close() stops waiting for it after 2 s.
  const postsWhileClosed = [];
  net.on(isPost, (real, signal, req) => {
    if (alice.closed) postsWhileClosed.push(req);
    return respond(503, { "Retry-After": "5" })();
  }, { times: Infinity });
  const sent = settle(alice.send({ to: bob.peer, type: "message", data: "never" }));
  await waitFor(() => net.log.some(isPost), "the first post");
  await alice.close();
  const outcome = await sent;
  assert.ok(outcome.err, "the send failed");
  assert.deepEqual(postsWhileClosed, [], "posts made after close()");
});

test("item 11: two concurrent close() calls leave once and fire one close", async () => {
  const net = faultyNet();
  const room = freshRoom("close-twice");
  const { channel: alice, events } = await joinChannel(room, net);
  const bob = await rawPeer(server.url, room, "bob");
  // A post still out makes close() wait for it: both calls are then inside that wait.
  const uplink = gate();
  const held = net.on(isPost, holdRequest(uplink));
  const sent = settle(alice.send({ to: bob.peer, type: "message", data: "last words" }));
  await waitFor(() => held.seen.length, "the held post");
  const closing = Promise.all([alice.close(), alice.close()]);
  uplink.open();
  await closing;
  assert.ok((await sent).id, "the queued post went out before the leave");
  assert.equal(net.log.filter(isLeave).length, 1, "DELETE requests");
  assert.deepEqual(events.map((e) => e.type), ["close"]);
});

test("item 11: retry pauses leave no abort listeners behind and end at once when already aborted", async () => {
  // Count live "abort" listeners per signal, and listeners added to an aborted signal.
  const live = new Map();
  let addedWhenAborted = 0;
  const { addEventListener: add, removeEventListener: remove } = AbortSignal.prototype;
  AbortSignal.prototype.addEventListener = function (type, listener, options) {
    if (type === "abort") {
      if (this.aborted) addedWhenAborted++;
      const set = live.get(this) ?? new Set();
      set.add(listener);
      live.set(this, set);
    }
    return add.call(this, type, listener, options);
  };
  AbortSignal.prototype.removeEventListener = function (type, listener, options) {
    if (type === "abort") live.get(this)?.delete(listener);
    return remove.call(this, type, listener, options);
  };
  try {
    const room = freshRoom("sleep");
    const net = faultyNet();
    const { channel: alice, events } = await joinChannel(room, net, { wait: 1 });
    const bob = await rawPeer(server.url, room, "bob");
    // Four refusals with Retry-After 0 mean four retry pauses on the channel's signal.
    net.on(isPost, respond(503, { "Retry-After": "0" }), { times: 4 });
    await alice.send({ to: bob.peer, type: "message", data: "after four retries" });
    const most = Math.max(...[...live.values()].map((set) => set.size));
    assert.ok(most <= 2, `${most} abort listeners left on one signal`);

    // A rejoin's join refused after close(): its pause must not wait on an aborted signal.
    const downlink = gate();
    const answered = gate();
    net.on(isJoin, (real, signal) => holdResponse(downlink, { onAnswered: answered.open })(
      () => respond(503, { "Retry-After": "0" })(), signal));
    await removeOnServer(net, alice);
    await answered.promise;
    const closing = alice.close();
    downlink.open();
    await closing;
    await waitFor(() => events.some((e) => e.type === "close"), "close");
    // Give the rejoin loop the time it would have slept (at most 250 ms) to show itself.
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal(addedWhenAborted, 0, "listeners added to an already aborted signal");
  } finally {
    AbortSignal.prototype.addEventListener = add;
    AbortSignal.prototype.removeEventListener = remove;
  }
});
