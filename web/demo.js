// signalpost demo: joins the room from ?room= on the server from ?server= (default: this
// page's origin) and runs a mesh video call with PeerMesh. Without ?room= it shows the
// "Start a call" step instead, which opens a fresh room's link (keeping ?server=).
// For tests, <html data-state> is "start" on that step, "connected" while at least one
// remote peer's RTCPeerConnection is connected, and <html data-peers> counts the connected ones.
import { SignalingChannel, PeerMesh } from "./signalpost.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const server = params.get("server") || location.origin;
const room = params.get("room") || null;
const name = params.get("name") || `guest-${Math.floor(Math.random() * 900 + 100)}`;

/** This page's link for `room`: the room and a non-default server, not this person's name. */
function roomLink(room) {
  const linkParams = new URLSearchParams({ room });
  if (params.get("server")) linkParams.set("server", server);
  return `${location.origin}${location.pathname}?${linkParams}`;
}

function showStartStep() {
  setStatus("No call yet", "start");
  const freshRoom = () => `room-${crypto.getRandomValues(new Uint32Array(2)).reduce((s, n) => s + n.toString(36), "")}`;
  $("start-call").addEventListener("click", () => location.assign(roomLink(freshRoom())));
  $("join-form").addEventListener("submit", (event) => {
    event.preventDefault();
    location.assign(roomLink($("join-room").value.trim()));
  });
  $("start-call").focus();
}

function setStatus(text, state) {
  $("status").textContent = text;
  if (state) document.documentElement.dataset.state = state;
}

$("copy").addEventListener("click", async () => {
  $("room-link").select();
  try {
    await navigator.clipboard.writeText($("room-link").value);
  } catch {
    document.execCommand("copy"); // older browsers and non-secure origins
  }
  $("copy").textContent = "Copied";
  setTimeout(() => { $("copy").textContent = "Copy link"; }, 1500);
});

async function localMedia() {
  try {
    return await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: 640, height: 480 } });
  } catch (err) {
    // Without a camera the call still works one way: we receive, and the data channel
    // alone is enough to negotiate.
    console.warn("no local media:", err);
    $("local-tile").classList.add("no-media");
    return null;
  }
}

const tiles = new Map(); // remote peer id -> tile element

function tileFor(link) {
  let tile = tiles.get(link.peer);
  if (!tile) {
    tile = $("remote-tile").content.firstElementChild.cloneNode(true);
    tile.querySelector(".name").textContent = link.name || `peer ${link.peer.slice(-6)}`;
    tile.dataset.peer = link.peer;
    $("tiles").append(tile);
    tiles.set(link.peer, tile);
  }
  return tile;
}

function render(mesh) {
  for (const [peer, tile] of tiles) {
    const link = mesh.links.get(peer);
    if (!link) { tile.remove(); tiles.delete(peer); continue; }
    const badge = tile.querySelector(".state");
    badge.textContent = link.state;
    badge.dataset.state = link.state;
  }
  const connected = [...mesh.links.values()].filter((l) => l.state === "connected").length;
  document.documentElement.dataset.peers = String(connected);
  if (connected > 0) setStatus(`Connected · ${connected} ${connected === 1 ? "peer" : "peers"}`, "connected");
  else if (mesh.links.size > 0) setStatus("Connecting…", "connecting");
  else setStatus("Waiting for others", "waiting");
  $("hint").hidden = mesh.links.size > 0;
}

async function main() {
  $("room-link").value = roomLink(room);
  $("local-name").textContent = `${name} (you)`;
  setStatus("Starting camera…", "starting");
  const stream = await localMedia();
  if (stream) $("local-video").srcObject = stream;

  setStatus("Joining…", "joining");
  const channel = await SignalingChannel.join(server, room, { name });
  const mesh = new PeerMesh(channel, { localStream: stream });

  mesh.addEventListener("link", ({ detail: link }) => { tileFor(link); render(mesh); });
  mesh.addEventListener("statechange", () => render(mesh));
  mesh.addEventListener("linkclosed", () => render(mesh));
  mesh.addEventListener("track", ({ detail: { link, track, streams } }) => {
    const video = tileFor(link).querySelector("video");
    video.srcObject = streams[0] ?? new MediaStream([track]);
  });
  channel.addEventListener("peer-joined", ({ data }) => console.info("peer joined:", data.from, data.data?.name));
  channel.addEventListener("error", ({ detail }) => setStatus(`Signalling stopped: ${detail.message}`, "error"));
  render(mesh);

  $("mic").addEventListener("click", () => toggle("mic", stream?.getAudioTracks(), "Mic"));
  $("cam").addEventListener("click", () => toggle("cam", stream?.getVideoTracks(), "Camera"));
  $("leave").addEventListener("click", async () => {
    mesh.close();
    await channel.close();
    stream?.getTracks().forEach((t) => t.stop());
    setStatus("Left the room", "left");
    document.documentElement.dataset.peers = "0";
    for (const button of document.querySelectorAll(".controls button")) button.disabled = true;
  });
  // Handy in the console and for tests.
  window.signalpost = { channel, mesh };
}

function toggle(id, tracks, label) {
  if (!tracks?.length) return;
  const on = !tracks[0].enabled;
  for (const t of tracks) t.enabled = on;
  $(id).setAttribute("aria-pressed", String(on));
  $(id).textContent = `${label} ${on ? "on" : "off"}`;
}

if (room === null) {
  showStartStep();
} else {
  main().catch((err) => {
    console.error(err);
    setStatus(`Could not join: ${err.message}`, "error");
  });
}
