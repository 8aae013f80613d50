// Minimal clients of the two servers for Node benchmarks: SignalpostClient (join, one long
// poll always outstanding, POST messages) and PeerjsClient (the PeerJS server's WebSocket
// protocol, as the peerjs browser client speaks it).
import http from "node:http";
import { performance } from "node:perf_hooks";
import WebSocket from "ws";

/** "fetch" (Node's global fetch: undici, keep-alive by default) or "node" (node:http, keep-alive agent). */
export const HTTP_CLIENT = process.env.HTTP ?? "fetch";
export const sleep = (t) => new Promise((r) => setTimeout(r, t));
const POLLS_DEADLINE = Date.now() + Number(process.env.DEADLINE_S ?? 600) * 1000;

// ---- HTTP: Node's fetch (default) or node:http with a keep-alive agent per client ----

export function httpRequester(kind = HTTP_CLIENT) {
  if (kind === "fetch") {
    return async (method, url, headers, body) => {
      const res = await fetch(url, { method, headers, body });
      const text = await res.text();
      return { status: res.status, text };
    };
  }
  const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
  return (method, url, headers, body) => new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers, agent }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (c) => { text += c; });
      res.on("end", () => resolve({ status: res.statusCode, text }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.setNoDelay(true);
    req.end(body);
  });
}

// ---- signalpost client ----

export class SignalpostClient {
  peer = null; #token = null; #cursor = null; #stopped = false; #counter = 0;
  #request;
  pollsSent = 0; pollsAnswered = 0;
  onMessage = () => {};

  constructor(base, room, { http = HTTP_CLIENT } = {}) {
    this.base = base; this.room = room; this.http = http; this.#request = httpRequester(http);
  }

  async join() {
    const res = await this.#request("POST", `${this.base}/v1/rooms/${this.room}/peers`,
      { "Content-Type": "application/json" }, "{}");
    if (res.status !== 201) throw new Error(`join: ${res.status} ${res.text}`);
    const body = JSON.parse(res.text);
    this.peer = body.peer;
    this.#token = body.token;
  }

  startPolling() {
    (async () => {
      while (!this.#stopped && Date.now() < POLLS_DEADLINE) {
        const after = this.#cursor ? `&after=${encodeURIComponent(this.#cursor)}` : "";
        this.pollsSent++;
        let res;
        try {
          res = await this.#request("GET", `${this.base}/v1/rooms/${this.room}/messages?wait=20${after}`,
            { Authorization: `Bearer ${this.#token}` });
        } catch (err) {
          if (!this.#stopped) console.error(`poll failed: ${err.message}`);
          await sleep(100);
          continue;
        }
        this.pollsAnswered++;
        if (res.status !== 200) { console.error(`poll: ${res.status} ${res.text}`); await sleep(100); continue; }
        const body = JSON.parse(res.text);
        const arrived = performance.now();
        if (body.cursor) this.#cursor = body.cursor;
        for (const m of body.messages) this.onMessage(m, arrived);
      }
    })();
  }

  /**
   * Only against lib/lp-relay.mjs: receive over one server-sent-event stream instead of
   * long polls (what a streaming extension of the API would look like to a client).
   */
  startStream() {
    const url = `${this.base}/v1/rooms/${this.room}/events`;
    const headers = { Authorization: `Bearer ${this.#token}` };
    let buffer = "";
    const onText = (text) => {
      buffer += text;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const frame = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        if (frame.startsWith("data: ")) this.onMessage(JSON.parse(frame.slice(6)), performance.now());
      }
    };
    if (this.http === "fetch") {
      (async () => {
        const res = await fetch(url, { headers });
        const decoder = new TextDecoder();
        for await (const chunk of res.body) { if (this.#stopped) break; onText(decoder.decode(chunk, { stream: true })); }
      })().catch(() => {});
    } else {
      http.get(url, { headers }, (res) => { res.setEncoding("utf8"); res.on("data", onText); }).on("error", () => {});
    }
  }

  async send(to, data) {
    const res = await this.#request("POST", `${this.base}/v1/rooms/${this.room}/messages`,
      { Authorization: `Bearer ${this.#token}`, "Content-Type": "application/json" },
      JSON.stringify({ to, type: "message", data, id: `b-${++this.#counter}` }));
    if (res.status !== 202) throw new Error(`post: ${res.status} ${res.text}`);
  }

  async stop() {
    this.#stopped = true;
    await this.#request("DELETE", `${this.base}/v1/rooms/${this.room}/peers/${this.peer}`,
      { Authorization: `Bearer ${this.#token}` }).catch(() => {});
  }
}

// ---- PeerJS protocol client ----

export class PeerjsClient {
  #ws = null; #heartbeat = null;
  onMessage = () => {};
  constructor(base, id) { this.base = base; this.id = id; }

  open() {
    const url = `${this.base.replace(/^http/, "ws")}/peerjs?key=peerjs&id=${this.id}&token=${Math.random().toString(36).slice(2)}`;
    this.#ws = new WebSocket(url, { perMessageDeflate: false });
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("peerjs: no OPEN within 10 s")), 10_000);
      this.#ws.on("error", reject);
      this.#ws.on("message", (raw) => {
        const message = JSON.parse(raw.toString());
        const arrived = performance.now();
        if (message.type === "OPEN") {
          clearTimeout(timer);
          // What the PeerJS client does every 5 s to stay alive.
          this.#heartbeat = setInterval(() => this.#ws.send(JSON.stringify({ type: "HEARTBEAT" })), 5000);
          resolve();
        } else if (message.type === "ERROR" || message.type === "ID-TAKEN") {
          reject(new Error(`peerjs: ${raw}`));
        } else {
          this.onMessage(message, arrived);
        }
      });
    });
  }

  send(dst, type, payload) { this.#ws.send(JSON.stringify({ type, payload, dst })); }

  stop() { clearInterval(this.#heartbeat); this.#ws?.close(); }
}

