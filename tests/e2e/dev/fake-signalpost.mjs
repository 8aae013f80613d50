#!/usr/bin/env node
// A small in-memory stand-in for the signalpost binary, speaking the API.md contract closely
// enough to develop the web client before the Rust server exists. NOT the product and not
// what the tests are meant for: point SIGNALPOST_BIN at the real binary. Honours
// SIGNALPOST_LISTEN and SIGNALPOST_WEB_DIR, prints "listening on http://..." like the real one.
import http from "node:http";
import { readFile } from "node:fs/promises";
import { randomBytes } from "node:crypto";
import path from "node:path";

const [host, port] = (process.env.SIGNALPOST_LISTEN ?? "127.0.0.1:8080").split(":");
const webDir = process.env.SIGNALPOST_WEB_DIR;
const MAX_WAIT = 25;
const rooms = new Map(); // room -> Map(peer -> {name, inbox: [], waiters: Set, gone})
const tokens = new Map(); // token -> {room, peer}
let seq = 0;
const newId = () => `${Date.now().toString(36)}${(++seq).toString(36).padStart(6, "0")}`.toUpperCase();

function problem(res, status, code, detail) {
  res.writeHead(status, { "Content-Type": "application/problem+json", "Cache-Control": "no-store" });
  res.end(JSON.stringify({ type: `urn:signalpost:${code}`, title: code, status, detail }));
}
function json(res, status, body) {
  res.writeHead(status, { "Content-Type": "application/json", "Cache-Control": "no-store" });
  res.end(JSON.stringify(body));
}
async function readBody(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  return Buffer.concat(chunks).toString("utf8");
}
function deliver(room, to, message) {
  const member = rooms.get(room)?.get(to);
  if (!member || member.gone) return;
  member.inbox.push({ seq: ++seq, message: { ...message, to } });
  for (const wake of member.waiters) wake();
}
function auth(req, room) {
  const token = (req.headers.authorization ?? "").replace(/^Bearer /, "");
  const who = tokens.get(token);
  if (!who) return { status: 401 };
  if (who.room !== room) return { status: 403 };
  if (rooms.get(room)?.get(who.peer)?.gone !== false) return { status: 410 };
  return who;
}
function leave(room, peer) {
  const member = rooms.get(room)?.get(peer);
  if (!member || member.gone) return;
  member.gone = true;
  for (const other of rooms.get(room).keys()) {
    if (other !== peer) deliver(room, other, { id: newId(), from: peer, type: "peer-left", data: { reason: "left" }, sentAt: new Date().toISOString() });
  }
}

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, "http://x");
  const parts = url.pathname.split("/").filter(Boolean);
  try {
    if (parts[0] !== "v1") {
      if (!webDir) return problem(res, 404, "not-found");
      const file = url.pathname === "/" ? "index.html" : url.pathname.slice(1);
      const type = { ".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".ts": "text/plain" }[path.extname(file)];
      try {
        const body = await readFile(path.join(webDir, path.basename(file)));
        res.writeHead(200, { "Content-Type": type ?? "application/octet-stream", "Cache-Control": "no-store" });
        return res.end(body);
      } catch { return problem(res, 404, "not-found"); }
    }
    if (parts[1] === "health") return json(res, 200, { status: "ok" });
    if (parts[1] === "ice-servers") return json(res, 200, { iceServers: [], expiresAt: new Date(Date.now() + 3600e3).toISOString() });
    const room = parts[2];
    if (parts[1] !== "rooms" || !/^[A-Za-z0-9_-]{1,64}$/.test(room ?? "")) return problem(res, 404, "not-found");
    if (!rooms.has(room)) rooms.set(room, new Map());
    const members = rooms.get(room);
    const present = () => [...members].filter(([, m]) => !m.gone);

    if (parts[3] === "peers" && parts.length === 4 && req.method === "POST") {
      const text = await readBody(req);
      const body = text ? JSON.parse(text) : {};
      if (present().length >= 8) return problem(res, 409, "room-full");
      const peer = newId();
      const token = randomBytes(16).toString("hex");
      const peers = present().map(([p, m]) => ({ peer: p, name: m.name }));
      members.set(peer, { name: body.name ?? null, inbox: [], waiters: new Set(), gone: false, sent: new Map() });
      tokens.set(token, { room, peer });
      for (const { peer: other } of peers) deliver(room, other, { id: newId(), from: peer, type: "peer-joined", data: { name: body.name ?? null }, sentAt: new Date().toISOString() });
      return json(res, 201, { peer, token, expiresAt: new Date(Date.now() + 86400e3).toISOString(), polite: peers.length > 0, peers, iceServers: [], maxWait: MAX_WAIT });
    }
    if (parts[3] === "peers" && parts[5] === "leave" && req.method === "POST") {
      const who = tokens.get(JSON.parse(await readBody(req)).token);
      if (!who || who.peer !== parts[4]) return problem(res, 403, "forbidden");
      leave(room, who.peer);
      res.writeHead(204); return res.end();
    }
    if (parts[3] === "peers" && parts.length === 5 && req.method === "DELETE") {
      const who = tokens.get((req.headers.authorization ?? "").replace(/^Bearer /, ""));
      if (!who) return problem(res, 401, "unauthorized");
      if (who.peer !== parts[4]) return problem(res, 403, "forbidden");
      leave(room, who.peer);
      res.writeHead(204); return res.end();
    }
    if (parts[3] === "messages") {
      const who = auth(req, room);
      if (who.status) return problem(res, who.status, { 401: "unauthorized", 403: "forbidden", 410: "peer-gone" }[who.status]);
      const me = members.get(who.peer);
      if (req.method === "POST") {
        const body = JSON.parse(await readBody(req));
        const batch = Array.isArray(body.messages) ? body.messages : [body];
        for (const m of batch) if (m.to && members.get(m.to)?.gone !== false) return problem(res, 404, "not-found", `no peer ${m.to}`);
        const ids = batch.map((m) => {
          if (m.id && me.sent.has(m.id)) return me.sent.get(m.id);
          const id = newId();
          if (m.id) me.sent.set(m.id, id);
          const msg = { id, from: who.peer, type: m.type, data: m.data ?? null, sentAt: new Date().toISOString() };
          for (const [p] of present()) if (p !== who.peer && (!m.to || m.to === p)) deliver(room, p, msg);
          return id;
        });
        return json(res, 202, { ids });
      }
      const after = Number(url.searchParams.get("after") ?? 0);
      const wait = Number(url.searchParams.get("wait") ?? 20);
      const ready = () => me.inbox.filter((e) => e.seq > after).slice(0, 100);
      if (!ready().length && wait > 0) {
        await new Promise((resolve) => {
          const timer = setTimeout(done, wait * 1000);
          function done() { clearTimeout(timer); me.waiters.delete(done); resolve(); }
          me.waiters.add(done);
          req.on("close", done);
        });
      }
      const out = ready();
      return json(res, 200, { messages: out.map((e) => e.message), cursor: String(out.length ? out.at(-1).seq : after) });
    }
    return problem(res, 404, "not-found");
  } catch (err) {
    return problem(res, 400, "invalid-request", String(err.message));
  }
});
server.listen(Number(port), host, () => console.log(`fake signalpost listening on http://${host}:${server.address().port}`));
