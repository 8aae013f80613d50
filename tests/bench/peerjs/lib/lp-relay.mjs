// A reference point, not a product: the smallest HTTP long-poll relay that speaks enough of
// signalpost's API for lib/clients.mjs (join, post, long poll with a cursor), in memory, in
// plain node:http, no validation, no store, no auth beyond "the token is the peer id".
// It shows what HTTP long polling itself costs on this machine, apart from signalpost's
// implementation. GET .../events is the same inbox as a server-sent-event stream (one held
// response, one `data:` line per message), to show what a streaming receive would save.   node lib/lp-relay.mjs   prints "relay listening on http://127.0.0.1:PORT"
import http from "node:http";

const inboxes = new Map(); // peer -> { messages: [{seq, ...}], waiting: [res, after] | null, stream: res | null }
let nextPeer = 0;
let nextSeq = 0;

function answer(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(text), "Cache-Control": "no-store", "Access-Control-Allow-Origin": "*" });
  res.end(text);
}

function deliver(inbox) {
  if (inbox.stream) {
    for (const m of inbox.messages.filter((x) => x.seq > inbox.streamed)) inbox.stream.write(`data: ${JSON.stringify(m)}\n\n`);
    inbox.streamed = inbox.messages.at(-1)?.seq ?? inbox.streamed;
    return;
  }
  if (!inbox.waiting) return;
  const [res, after, timer] = inbox.waiting;
  const messages = inbox.messages.filter((m) => m.seq > after);
  if (!messages.length) return;
  clearTimeout(timer);
  inbox.waiting = null;
  answer(res, 200, { messages, cursor: String(messages.at(-1).seq) });
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, "http://x");
  // Browsers' EventSource cannot set headers: the token may come as ?token= instead.
  const peer = (req.headers.authorization ?? "").replace(/^Bearer /, "") || (url.searchParams.get("token") ?? "");
  if (req.method === "OPTIONS") {
    return res.writeHead(204, { "Access-Control-Allow-Origin": "*", "Access-Control-Allow-Headers": "authorization, content-type",
      "Access-Control-Allow-Methods": "GET, POST, DELETE", "Access-Control-Max-Age": "600" }).end();
  }
  let body = "";
  req.on("data", (c) => { body += c; });
  req.on("end", () => {
    if (req.method === "POST" && url.pathname.endsWith("/peers")) {
      const id = `p${++nextPeer}`;
      inboxes.set(id, { messages: [], waiting: null, stream: null, streamed: 0 });
      return answer(res, 201, { peer: id, token: id, peers: [], iceServers: [], maxWait: 25 });
    }
    const inbox = inboxes.get(peer);
    if (!inbox) return answer(res, 401, {});
    if (req.method === "POST" && url.pathname.endsWith("/messages")) {
      const m = JSON.parse(body);
      const target = inboxes.get(m.to);
      if (!target) return answer(res, 404, {});
      const seq = ++nextSeq;
      target.messages.push({ id: `m${seq}`, seq, from: peer, to: m.to, type: m.type, data: m.data });
      if (target.messages.length > 100) target.messages.shift();
      answer(res, 202, { ids: [`m${seq}`] });
      return deliver(target);
    }
    if (req.method === "GET" && url.pathname.endsWith("/messages")) {
      const after = Number(url.searchParams.get("after") ?? 0);
      const wait = Number(url.searchParams.get("wait") ?? 20);
      if (inbox.waiting) answer(inbox.waiting[0], 200, { messages: [], cursor: String(inbox.waiting[1]) });
      const timer = setTimeout(() => { inbox.waiting = null; answer(res, 200, { messages: [], cursor: String(after) }); }, wait * 1000);
      inbox.waiting = [res, after, timer];
      return deliver(inbox);
    }
    if (req.method === "GET" && url.pathname.endsWith("/events")) {
      res.writeHead(200, { "Content-Type": "text/event-stream", "Cache-Control": "no-store", "Access-Control-Allow-Origin": "*" });
      res.flushHeaders();
      inbox.stream = res;
      req.socket.setNoDelay(true);
      res.on("close", () => { if (inbox.stream === res) inbox.stream = null; });
      return deliver(inbox);
    }
    if (req.method === "DELETE") return res.writeHead(204).end();
    answer(res, 404, {});
  });
});
server.listen(0, "127.0.0.1", () => console.log(`relay listening on http://127.0.0.1:${server.address().port}`));
for (const signal of ["SIGTERM", "SIGINT"]) process.on(signal, () => process.exit(0));
