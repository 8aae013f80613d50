//! The store: rooms, members and per-recipient inboxes, behind one trait with two
//! implementations — [`sqlite`] (embedded, the default) and DynamoDB.
//!
//! An inbox is a sequence numbered 1, 2, 3… per recipient. Reads never delete: a poll asks for
//! everything after a sequence number (the cursor), so a lost response is simply asked for
//! again, and expiry is what removes messages. Each implementation must guarantee that a
//! reader never sees sequence `n + 1` before `n` is readable or known never to exist; that is
//! what keeps every sender's order at the recipient when writers commit concurrently.
//!
//! Rules that need no storage (who a message goes to, whether a recipient exists) are decided
//! by [`resolve_recipients`], shared by both stores.

use std::collections::HashSet;
use std::error::Error as StdError;

use async_trait::async_trait;
use thiserror::Error;

use crate::clock::Millis;
use crate::ids::{MessageId, PeerId, RoomId};
use crate::limits::RoomJoinRate;
use crate::message::{MESSAGE_OVERHEAD_BYTES, Outgoing, StoredMessage};

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod dynamo;
pub mod metered;
pub mod sqlite;

/// Opens the store the configuration names: DynamoDB when `SIGNALPOST_TABLE` is set (endpoint,
/// region and credentials from the standard AWS variables), otherwise SQLite at `SIGNALPOST_DB`.
pub async fn open(config: &crate::config::Config) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    Ok(match &config.table {
        Some(table) => std::sync::Arc::new(dynamo::DynamoStore::connect(table.clone()).await?),
        None => std::sync::Arc::new(sqlite::SqliteStore::open(&config.db_path)?),
    })
}

/// A position in one inbox: the sequence number of the last message read.
pub type Seq = u64;

/// A recipient whose long poll recorded where it waits (see [`Store::touch_waiting`]): the
/// wake-up address to ring after a write, so that a poll in another process wakes at once.
///
/// A doorbell that names a poll (`ends`) does not wake the inbox: it tells the process at
/// `address` that this poll of `peer` was superseded by a newer one, which it ends as
/// [`crate::poll_slots::PollSlots`] ends an older poll of its own (see [`PollRecord`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Doorbell {
    pub peer: PeerId,
    pub address: String,
    pub ends: Option<String>,
}

impl Doorbell {
    /// Wakes `peer`'s waiting poll at `address`: its inbox has something new.
    pub fn wake(peer: PeerId, address: String) -> Self {
        Self {
            peer,
            address,
            ends: None,
        }
    }

    /// Ends poll `poll` of `peer`, waiting at `address`: a newer poll replaced it.
    pub fn supersede(peer: PeerId, address: String, poll: String) -> Self {
        Self {
            peer,
            address,
            ends: Some(poll),
        }
    }
}

/// The long poll recording itself on its member in the presence update
/// ([`Store::touch_waiting`]): where it waits, which poll it is, and when its wait ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Waiting<'a> {
    /// This process's wake-up address.
    pub address: &'a str,
    /// A fresh id per poll, so that a doorbell ends that poll and no later one.
    pub poll: &'a str,
    /// When the poll's wait ends at the latest (Unix ms).
    pub until: Millis,
}

/// The poll recorded on a member before the presence update that replaced it: the cap of
/// one waiting poll per peer across processes. The newer poll rings its doorbell
/// ([`Doorbell::supersede`]) if it may still wait ([`PollRecord::may_wait`]) in another
/// process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PollRecord {
    pub poll: String,
    pub address: String,
    pub until: Millis,
}

impl PollRecord {
    /// Whether the poll may still be waiting at `now`: its wait has not run out. A poll that
    /// returned early (with messages) looks the same: ending it is then a no-op.
    pub fn may_wait(&self, now: Millis) -> bool {
        self.until > now
    }
}

/// A member of a room, as the others see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub peer: PeerId,
    pub name: Option<String>,
}

/// The time of one operation and the limits that follow from it, all in Unix milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    pub now: Millis,
    /// Messages written now expire at this time.
    pub expires_at: Millis,
    /// Members whose last poll is older than this have timed out.
    pub stale_before: Millis,
    /// The flood limit's window ([`RateLimit::window_ms`]): a departure keeps the posts its
    /// member made in a window still open on the room ([`SpentPosts`]).
    pub post_window_ms: Millis,
}

/// A join, decided atomically: sweep timed-out members, check capacity, add the newcomer and
/// tell every member already present.
#[derive(Clone, Debug)]
pub struct JoinRequest {
    pub room: RoomId,
    pub peer: PeerId,
    pub name: Option<String>,
    pub capacity: usize,
    /// Most unacknowledged messages an inbox may hold: the `peer-joined` this join sends
    /// counts against each member's inbox like any message, so join/leave cycling cannot
    /// flood an inbox past it.
    pub inbox_limit: u64,
    /// The room's join limit, kept on the room and counted in the join's own transaction,
    /// so every process sharing the store agrees. A refused join changes nothing.
    pub join_rate: RoomJoinRate,
    pub timing: Timing,
}

/// What a join did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Joined {
    /// The members already present, oldest first; each received `peer-joined`.
    pub others: Vec<Member>,
    /// Members that had timed out and were removed first.
    pub departures: Departures,
    /// Where the members told with `peer-joined` wait, for those that recorded it.
    pub doorbells: Vec<Doorbell>,
}

/// A post of validated messages from `sender`, all or nothing.
#[derive(Clone, Debug)]
pub struct PostRequest {
    pub room: RoomId,
    pub sender: PeerId,
    /// The messages with the server ids minted for them, in the sender's order.
    pub messages: Vec<(MessageId, Outgoing)>,
    /// Most unacknowledged messages an inbox may hold.
    pub inbox_limit: u64,
    /// How many posts the sender may make per window.
    pub rate_limit: RateLimit,
    pub timing: Timing,
}

/// A flood limit on one member's posts: at most `posts` per fixed window of `window_ms`,
/// counted on the sender's membership so that every process sharing the store agrees.
///
/// A window opens with the first post after the previous one ended; a post that would be
/// number `posts + 1` in its window is refused with [`StoreError::RateLimited`] and changes
/// nothing, and a post that fails for another reason is not counted either: the count is
/// written in the post's own transaction. (On DynamoDB: an `Update` of the sender's member
/// item in the commit's `TransactWriteItems`, conditioned on the window and count read with
/// the members, so a concurrent post makes the commit fail and retry rather than overcount.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    pub posts: u64,
    pub window_ms: Millis,
}

impl RateLimit {
    /// Whole seconds until a window that opened at `window_start` ends, at least 1: the
    /// `Retry-After` of a refused post.
    pub fn retry_after(self, window_start: Millis, now: Millis) -> u64 {
        let remaining = window_start
            .saturating_add(self.window_ms)
            .saturating_sub(now);
        u64::try_from(remaining).map_or(1, |millis| millis.div_ceil(1000).max(1))
    }
}

/// The posts a member made in its flood-limit window: a departure leaves them on the room, and
/// the next member to join starts from them, so leaving and rejoining does not earn a fresh
/// post budget within the window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpentPosts {
    /// When the window opened (Unix ms); 0 with a count of 0 is none.
    pub window: Millis,
    pub count: u64,
}

impl SpentPosts {
    /// What the room keeps once a member that spent `leaving` departs, given what it kept:
    /// of the two, the window still open at `now` with more posts (the later on a tie); none
    /// once both windows have closed. A newcomer thus continues the busiest open window of
    /// the members that left, whichever order they left in.
    pub fn keep(self, leaving: Self, now: Millis, window_ms: Millis) -> Self {
        let open = |spent: &Self| spent.count > 0 && now < spent.window.saturating_add(window_ms);
        [self, leaving]
            .into_iter()
            .filter(open)
            .max_by_key(|spent| (spent.count, spent.window))
            .unwrap_or_default()
    }
}

/// What a post did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Posted {
    /// One server id per message: a repeated client id gets the first post's id back.
    pub ids: Vec<MessageId>,
    /// Inboxes that received something.
    pub recipients: Vec<PeerId>,
    /// Where those recipients wait, for those that recorded it.
    pub doorbells: Vec<Doorbell>,
}

/// What a poll's presence update ([`Store::touch_waiting`]) learns of the poller's inbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Presence {
    /// The newest sequence number of the inbox.
    pub head: Seq,
    /// When the inbox last had a message written to it (Unix ms), or its member joined if it
    /// never had one: what the server knows of the inbox's activity, which bounds the
    /// activity a client's cursor may claim.
    pub last_activity: Millis,
    /// The poll this update replaced on the member, when the update recorded a new one and
    /// the member held a record of an earlier poll.
    pub previous: Option<PollRecord>,
}

/// What a read of an inbox found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InboxRead {
    /// Unexpired messages after the cursor, in order, without gaps.
    pub messages: Vec<StoredMessage>,
    /// The position a cursor may move to when `messages` is empty: every number up to it is
    /// read, expired or will never hold a message. At least the cursor read from, so that
    /// acknowledging it frees an inbox whose unread messages expired.
    pub through: Seq,
}

/// How much one read of an inbox may return: at most `messages` messages, of at most `bytes`
/// of poll response in all ([`StoredMessage::poll_cost`]), except that the first message is
/// always returned, however large. A store stops reading once either is reached, so a poll's
/// byte budget bounds what it reads from the store, not only what it sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadLimit {
    pub messages: usize,
    pub bytes: usize,
}

impl ReadLimit {
    /// A limit on the number of messages only.
    pub const fn messages(messages: usize) -> Self {
        Self {
            messages,
            bytes: usize::MAX,
        }
    }
}

/// The messages a read collects, in inbox order, within its [`ReadLimit`]: the one place a
/// read's budget is counted, for every store.
#[derive(Debug)]
pub struct Collected {
    limit: ReadLimit,
    messages: Vec<StoredMessage>,
    bytes: usize,
}

impl Collected {
    pub fn new(limit: ReadLimit) -> Self {
        Self {
            limit,
            messages: Vec::new(),
            bytes: 0,
        }
    }

    /// Takes the next message of the inbox if it fits (the first always does). `false`: it
    /// does not, and the read ends before it, which the next read then starts with.
    pub fn take(&mut self, message: StoredMessage) -> bool {
        let bytes = self.bytes.saturating_add(message.poll_cost());
        if self.is_full() || (!self.messages.is_empty() && bytes > self.limit.bytes) {
            return false;
        }
        self.bytes = bytes;
        self.messages.push(message);
        true
    }

    /// Whether no further message could fit: the count is reached, or too few bytes are left
    /// for even the smallest message.
    pub fn is_full(&self) -> bool {
        self.messages.len() >= self.limit.messages
            || (!self.messages.is_empty()
                && self.bytes.saturating_add(MESSAGE_OVERHEAD_BYTES) >= self.limit.bytes)
    }

    /// The bytes of the budget still free.
    pub fn bytes_left(&self) -> usize {
        self.limit.bytes.saturating_sub(self.bytes)
    }

    /// The messages the limit still admits by count.
    pub fn messages_left(&self) -> usize {
        self.limit.messages.saturating_sub(self.messages.len())
    }

    /// The average cost of the messages taken so far, if any.
    pub fn average_cost(&self) -> Option<usize> {
        self.bytes.checked_div(self.messages.len())
    }

    pub fn messages(&self) -> &[StoredMessage] {
        &self.messages
    }

    pub fn into_messages(self) -> Vec<StoredMessage> {
        self.messages
    }
}

/// Peers removed from a room and the members told about it with `peer-left`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Departures {
    pub gone: Vec<PeerId>,
    pub notified: Vec<PeerId>,
    /// Where the notified members wait, for those that recorded it.
    pub doorbells: Vec<Doorbell>,
    /// From a sweep: when the first remaining member times out unless it polls again, so
    /// that the room need not be swept before then.
    pub stale_at: Option<Millis>,
}

/// A store failure. The first six are answers to the request; the last four are the store's.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("the peer has left the room or timed out")]
    PeerGone,
    #[error("{0} is not in the room")]
    NoSuchRecipient(PeerId),
    #[error("the room is full")]
    RoomFull,
    #[error("the inbox of {0} is full")]
    InboxFull(PeerId),
    /// The sender has used up its [`RateLimit`]; its window ends in `retry_after` seconds.
    #[error("the sender is over its rate limit")]
    RateLimited { retry_after: u64 },
    /// The room has used up its [`RoomJoinRate`]; the next join is possible in `retry_after`
    /// seconds.
    #[error("the room is over its join limit")]
    JoinsLimited { retry_after: u64 },
    /// The store refused for lack of capacity (DynamoDB throttling, after the SDK's retries):
    /// transient like [`StoreError::Unavailable`], told apart for the metrics.
    #[error("the store is throttling requests")]
    Throttled(#[source] Box<dyn StdError + Send + Sync>),
    /// Transient (busy, locked, timed out, a server error): the client should retry.
    #[error("the store is unavailable")]
    Unavailable(#[source] Box<dyn StdError + Send + Sync>),
    /// A failure a retry will not mend (a read-only or damaged file, a bug): a `500`.
    #[error("the store failed")]
    Failed(#[source] Box<dyn StdError + Send + Sync>),
    /// Data the store cannot read back: a bug, not a passing fault.
    #[error("the store holds data it cannot read")]
    Corrupt(String),
}

/// The storage every deployment shares. Implementations are cheap to share (`Arc<dyn Store>`).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Adds `request.peer` to the room unless it is full.
    async fn join(&self, request: JoinRequest) -> Result<Joined, StoreError>;

    /// Appends messages to their recipients' inboxes; every recipient must be a member.
    async fn post(&self, request: PostRequest) -> Result<Posted, StoreError>;

    /// Records that `peer` is present (it is polling) and has read up to `acked`; returns the
    /// newest sequence number of its inbox. [`StoreError::PeerGone`] if it is not a member.
    async fn touch(
        &self,
        room: &RoomId,
        peer: &PeerId,
        acked: Seq,
        now: Millis,
    ) -> Result<Seq, StoreError> {
        Ok(self.touch_waiting(room, peer, acked, now, None).await?.head)
    }

    /// [`Store::touch`], also recording `waiting` (this poll's wake-up address, id and end)
    /// on the member, so that writers learn where to ring from the member list they read
    /// anyway, and a newer poll learns of an older one (`None` leaves a recorded poll as it
    /// is); returns the inbox's head, when it last had a message and the poll record it
    /// replaced, all from the same update.
    async fn touch_waiting(
        &self,
        room: &RoomId,
        peer: &PeerId,
        acked: Seq,
        now: Millis,
        waiting: Option<Waiting<'_>>,
    ) -> Result<Presence, StoreError>;

    /// The unexpired messages of `peer`'s inbox after `after` that `limit` admits, in order,
    /// without gaps, and how far a cursor may skip when none are left. A read stops reading
    /// the store once its limit is reached.
    async fn read(
        &self,
        room: &RoomId,
        peer: &PeerId,
        after: Seq,
        limit: ReadLimit,
        now: Millis,
    ) -> Result<InboxRead, StoreError>;

    /// Removes members that stopped polling and tells the rest with `peer-left` (`timeout`).
    async fn sweep(&self, room: &RoomId, timing: Timing) -> Result<Departures, StoreError>;

    /// Removes `peer` and tells the rest with `peer-left` (`left`); nothing if already gone.
    async fn leave(
        &self,
        room: &RoomId,
        peer: &PeerId,
        timing: Timing,
    ) -> Result<Departures, StoreError>;

    /// Clean-up a store cannot leave to its own expiry: drops expired data and sweeps rooms
    /// nobody polls any more. Returns the departures per room.
    async fn housekeeping(&self, timing: Timing) -> Result<Vec<(RoomId, Departures)>, StoreError>;

    /// Whether the store answers and can write.
    async fn health(&self) -> Result<(), StoreError>;
}

/// Each message's recipients, as `(message index, recipient)` in post order: the named peer,
/// or every member but the sender. Checks that the sender and every named recipient are
/// members.
pub fn resolve_recipients(
    members: &[PeerId],
    sender: &PeerId,
    messages: &[(MessageId, Outgoing)],
) -> Result<Vec<(usize, PeerId)>, StoreError> {
    if !members.contains(sender) {
        return Err(StoreError::PeerGone);
    }
    let mut deliveries = Vec::new();
    for (index, (_, message)) in messages.iter().enumerate() {
        match &message.to {
            Some(to) if members.contains(to) => deliveries.push((index, to.clone())),
            Some(to) => return Err(StoreError::NoSuchRecipient(to.clone())),
            None => deliveries.extend(
                members
                    .iter()
                    .filter(|member| *member != sender)
                    .map(|member| (index, member.clone())),
            ),
        }
    }
    Ok(deliveries)
}

/// Whether an inbox holding `unread` unacknowledged unexpired messages may take `incoming`
/// more under `limit`.
pub fn fits_in_inbox(unread: u64, incoming: u64, limit: u64) -> bool {
    unread.saturating_add(incoming) <= limit
}

/// The distinct recipients of some deliveries, in first-seen order.
pub fn distinct_recipients(deliveries: &[(usize, PeerId)]) -> Vec<PeerId> {
    let mut seen = HashSet::new();
    deliveries
        .iter()
        .filter(|(_, peer)| seen.insert(peer.clone()))
        .map(|(_, peer)| peer.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::MessageKind;

    fn peer(name: &str) -> PeerId {
        PeerId::parse(name).expect("valid")
    }

    fn message(to: Option<&str>) -> (MessageId, Outgoing) {
        (
            MessageId::mint(),
            Outgoing {
                to: to.map(peer),
                kind: MessageKind::Message,
                data: "null".into(),
                client_id: None,
            },
        )
    }

    #[test]
    fn resolves_named_and_broadcast_recipients_in_order() {
        let members = [peer("a"), peer("b"), peer("c")];
        let deliveries =
            resolve_recipients(&members, &peer("a"), &[message(Some("c")), message(None)])
                .expect("valid");
        assert_eq!(deliveries, [(0, peer("c")), (1, peer("b")), (1, peer("c"))]);
        assert_eq!(distinct_recipients(&deliveries), [peer("c"), peer("b")]);
    }

    #[test]
    fn a_departure_keeps_the_busiest_open_window() {
        let spent = |window, count| SpentPosts { window, count };
        let none = SpentPosts::default();
        assert_eq!(
            none.keep(spent(1_000, 100), 5_000, 10_000),
            spent(1_000, 100)
        );
        // Whichever order they leave in, the busier open window is kept.
        let busy = spent(1_000, 100);
        let light = spent(4_000, 3);
        assert_eq!(busy.keep(light, 5_000, 10_000), busy);
        assert_eq!(light.keep(busy, 5_000, 10_000), busy);
        // A closed window counts for nothing.
        assert_eq!(busy.keep(light, 11_000, 10_000), light);
        assert_eq!(busy.keep(light, 14_000, 10_000), none);
        assert_eq!(none.keep(spent(0, 0), 5_000, 10_000), none);
    }

    #[test]
    fn refuses_strangers() {
        let members = [peer("a"), peer("b")];
        assert!(matches!(
            resolve_recipients(&members, &peer("a"), &[message(Some("z"))]),
            Err(StoreError::NoSuchRecipient(p)) if p == peer("z")
        ));
        assert!(matches!(
            resolve_recipients(&members, &peer("z"), &[message(None)]),
            Err(StoreError::PeerGone)
        ));
    }
}
