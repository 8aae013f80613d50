// Type declarations for signalpost.js, the browser client of the signalpost HTTP API.

/** A peer in the room, as listed by the join response. */
export interface RoomPeer {
  peer: string;
  name?: string | null;
}

/** The message types of the contract; servers create `peer-joined` and `peer-left`. */
export type MessageType = "offer" | "answer" | "candidate" | "bye" | "message" | "peer-joined" | "peer-left";

/** One message as polled from `GET /v1/rooms/{room}/messages`. */
export interface SignalMessage<T = unknown> {
  /** Server id; the channel drops repeats by it. */
  id: string;
  from: string;
  to?: string;
  type: MessageType;
  data: T;
  sentAt: string;
}

export interface PeerJoinedMessage extends SignalMessage<{ name?: string | null }> { type: "peer-joined" }
export interface PeerLeftMessage extends SignalMessage<{ reason: "left" | "timeout" }> { type: "peer-left" }

/** What `send` accepts: `to` is required for offer, answer and candidate. */
export type OutgoingMessage =
  | { to: string; type: "offer" | "answer"; data: RTCSessionDescriptionInit; id?: string }
  | { to: string; type: "candidate"; data: RTCIceCandidateInit; id?: string }
  | { to?: string; type: "bye"; data?: object; id?: string }
  | { to?: string; type: "message"; data: unknown; id?: string };

export interface JoinOptions {
  /** Shown to the other peers; at most 64 characters. */
  name?: string;
  /** Needed when the server gates rooms (`SIGNALPOST_GATED=true`). */
  joinToken?: string;
  /** A replacement for the global `fetch` (tests, instrumentation). */
  fetch?: typeof fetch;
  /** Long-poll seconds; capped by the server's `maxWait`. */
  wait?: number;
  /** Send the beacon leave on `pagehide` (default true). */
  leaveOnPageHide?: boolean;
}

/**
 * An HTTP failure the client gives up on; `code` is the problem document's stable code.
 * Two codes come from the client itself, with `status` 0: `closed` (the channel was
 * closed) and `rejoined` (the message was sent by the peer id the channel had before a
 * rejoin, and was dropped rather than posted under the new one).
 */
export class SignalingError extends Error {
  readonly status: number;
  readonly code: string;
}

export interface SignalingChannelEventMap {
  /** Every polled message, once, in order. Buffered until the first listener is attached. */
  message: MessageEvent<SignalMessage>;
  /** Buffered until the first listener is attached. */
  "peer-joined": MessageEvent<PeerJoinedMessage>;
  /** Buffered until the first listener is attached. */
  "peer-left": MessageEvent<PeerLeftMessage>;
  /**
   * The peer was gone (410) or its token expired (401), and the channel joined again under
   * a new id. Nothing from the old id reaches the new one: its open poll is dropped and
   * its unsent messages are rejected with code `rejoined`. Never fired after `close`.
   */
  rejoin: CustomEvent<{ previousPeer: string; peer: string }>;
  /** The poll loop stopped on an error that retrying cannot fix. */
  error: CustomEvent<SignalingError>;
  close: Event;
}

export class SignalingChannel extends EventTarget {
  /** Join `room` on the server at `baseUrl` and start long-polling. */
  static join(baseUrl: string, room: string, options?: JoinOptions): Promise<SignalingChannel>;

  readonly room: string;
  readonly closed: boolean;
  /** This peer's server-minted id (changes after a rejoin). */
  peer: string;
  /** Whether this peer is polite toward the peers already in the room. */
  polite: boolean;
  /** Peers in the room at join time. */
  peers: RoomPeer[];
  iceServers: RTCIceServer[];
  expiresAt: string;
  maxWait: number;
  onmessage: ((event: MessageEvent<SignalMessage>) => void) | null;

  /** Polite toward peers that were in the room at join time, impolite toward later ones. */
  isPolite(remotePeer: string): boolean;
  /**
   * Post a message (batched with neighbours, retried idempotently); resolves with the
   * server id. Rejects with code `rejoined` if the channel rejoins before it is posted,
   * and `closed` after `close()`.
   */
  send(message: OutgoingMessage): Promise<string>;
  /** Fresh TURN credentials from `GET /v1/ice-servers`. */
  refreshIceServers(): Promise<RTCIceServer[]>;
  /**
   * Leave the room (`DELETE`), after queued posts have gone out (at most 2 s). Calling it
   * again returns the same promise; a rejoin under way leaves its new peer too.
   */
  close(): Promise<void>;

  addEventListener<K extends keyof SignalingChannelEventMap>(
    type: K, listener: (this: SignalingChannel, ev: SignalingChannelEventMap[K]) => unknown,
    options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions): void;
}

export interface PeerLinkOptions {
  /** Default: `channel.isPolite(remotePeer)`. */
  polite?: boolean;
  /** Merged over `{ iceServers: channel.iceServers }`. */
  rtcConfig?: RTCConfiguration;
  localStream?: MediaStream | null;
  /** Label of a negotiated data channel (id 0); `null` for none. Default `"data"`. */
  dataChannel?: string | null;
  name?: string | null;
}

/** One RTCPeerConnection toward one remote peer, negotiated with perfect negotiation. */
export class PeerLink extends EventTarget {
  constructor(channel: SignalingChannel, remotePeer: string, options?: PeerLinkOptions);
  readonly peer: string;
  readonly name: string | null;
  readonly polite: boolean;
  readonly pc: RTCPeerConnection;
  readonly dataChannel: RTCDataChannel | null;
  /** `pc.connectionState`. */
  readonly state: RTCPeerConnectionState;
  /** Feed a signalling message from this remote peer (handled in arrival order). */
  handle(message: SignalMessage): Promise<void>;
  restartIce(): void;
  /** Close the connection; also happens on `bye` and when a post to the peer gets `404`. Idempotent. */
  close(): void;
}

export interface PeerMeshOptions {
  localStream?: MediaStream | null;
  rtcConfig?: RTCConfiguration;
  /** Label of a negotiated data channel on every link; `null` for none. Default `"data"`. */
  dataChannel?: string | null;
  /** Call the peers already in the room, except those whose `peer-left` has arrived (default true). */
  autoConnect?: boolean;
}

export interface PeerMeshEventMap {
  link: CustomEvent<PeerLink>;
  track: CustomEvent<{ link: PeerLink; track: MediaStreamTrack; streams: readonly MediaStream[] }>;
  statechange: CustomEvent<PeerLink>;
  linkclosed: CustomEvent<PeerLink>;
}

/** A full mesh of PeerLinks over one channel. */
export class PeerMesh extends EventTarget {
  constructor(channel: SignalingChannel, options?: PeerMeshOptions);
  readonly links: Map<string, PeerLink>;
  /** Start (or return) the link toward `remotePeer`. */
  connect(remotePeer: string): PeerLink;
  /** Close every link and stop listening to the channel (the channel stays open). */
  close(): void;

  addEventListener<K extends keyof PeerMeshEventMap>(
    type: K, listener: (this: PeerMesh, ev: PeerMeshEventMap[K]) => unknown,
    options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions): void;
}
