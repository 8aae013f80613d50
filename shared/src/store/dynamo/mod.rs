//! The DynamoDB store: one table, keys `pk` (S) and `sk` (S), TTL on `expiresAt` (Unix seconds).
//!
//! DynamoDB deletes expired items lazily (and local servers such as moto never do), so every
//! item also carries its exact expiry `expiresAtMs` and every read filters by it. Nothing ever
//! Scans: each access is a key lookup or a Query of one partition, and never touches another
//! room's or peer's data.
//!
//! | item | `pk` | `sk` | holds |
//! |---|---|---|---|
//! | room | `ROOM#{room}` | `#ROOM` | `version`: a token every join (and every departure that keeps posts) replaces; `joinTat`: the join limit; `spentWindow`, `spentCount`: departed members' posts in a window still open |
//! | member | `ROOM#{room}` | `PEER#{peer}` | `name`, `joinedAt`, `lastSeen`, `lastSeq` (inbox head), `lastSeqAt`, `ackedSeq`, `waitsAt` (wake-up address of its latest poll), its own lifetime |
//! | inbox | `INBOX#{room}#{peer}` | `SEQ#{last:020}` | one post's messages for one recipient, numbered `first..=last`; or a tombstone (`void`) |
//! | sent id | `SENT#{room}#{sender}` | `ID#{clientId}` | `messageId`: what a client id was given |
//!
//! **Capacity.** A join Queries the room partition, sweeps timed-out members, counts the live
//! ones and then, in one transaction, adds its member item and replaces the room item's
//! `version` on condition that it is still the one it read. Joins therefore serialise per
//! room, and a count can only be too high (a concurrent leave), never too low. The room holds
//! no member count: TTL deletes the items of members nobody swept, and a count would then stay
//! wrong for ever, where the version needs no repair.
//!
//! **Inbox order.** Each member item's `lastSeq` is its inbox head. A post (1) Queries the
//! room's members, resolves recipients and checks inbox limits, (2) allocates a range of
//! sequence numbers per recipient with `ADD lastSeq :k`, dating it in `lastSeqAt` (the time of
//! that allocation, never moved back), and (3) writes, in ONE `TransactWriteItems` (a plain
//! conditional put when that is one item), one inbox item per recipient (conditional on its
//! key being free and, for a range of several numbers, on no tombstone at its first number)
//! plus the idempotency items of its client ids. Writers can commit out of order, so a reader
//! returns only the contiguous run after its cursor. A gap whose newest allocation is older
//! than [`GAP_TIMEOUT_MS`] (longer than a commit can take) means a writer stalled or died: the
//! reader writes a tombstone on each missing number, in one transaction of conditional puts,
//! and a late writer then fails its commit, allocates afresh and retries, so nothing accepted
//! is lost and no sender's order breaks. A writer that gives up an allocation writes a
//! tombstone over it itself so readers need not wait. The age of a gap's newest allocation is
//! known when `lastSeqAt` is that old (every allocation is then older), or when this process
//! saw a number at or above the gap's top already allocated that long ago (numbers are
//! allocated in order).
//!
//! Inbox items are keyed by the LAST number they cover, so a Query for `sk > SEQ#{cursor}`
//! finds the item a cursor points into the middle of (a read may stop part-way through a
//! batch), with no extra read.
//!
//! **Why a tombstone never hides a committed message.** Allocations are disjoint ranges
//! `[a, b]`, each committed (if ever) as one item keyed at `b`. A reader tombstones a range
//! `[f, l]` only when its Query found nothing in it and an item `B` starting at `l + 1`; it
//! writes one tombstone per number, each on condition that its key is free, all or nothing.
//! When the range is longer than a transaction holds, it keeps the top hundred numbers
//! (`f = max(f, l - 99)`), so it always ends at `l`; the next round continues below.
//!
//! *Claim:* if the transaction succeeds, every allocation `A = [a, b]` it touches has its key
//! `b` in `[f, l]`, or had `b` tombstoned by an earlier transaction. Suppose `b > l`. Then
//! `A` holds `l + 1`, B's first number. B is not a message item nor a writer's own tombstone:
//! each of those covers exactly one allocation, which would overlap `A`. So B is a reader's
//! tombstone at `l + 1`, written by an earlier successful transaction that touched `A`; by
//! induction (over transactions in commit order) that one covered `b` or came after one that
//! did.
//!
//! *Hence:* if `A` committed before the transaction, its item at `b` makes the transaction
//! fail (or `b` was tombstoned first, and `A` never committed); if not, the tombstone at `b`
//! makes `A`'s commit fail, and `A` allocates afresh. Either way no tombstone lies on a number
//! of a committed item, so a reader never skips a message that was answered `202`. (Cut the
//! other way, keeping the bottom, the range could end inside a batch whose key is above it: a
//! batch committed between the reader's Query and its transaction then lost its first
//! numbers.)
//! Expiry does not change this: TTL removes only expired items, whose numbers hold nothing
//! readable, and a tombstone outlives any commit that could still come
//! ([`TOMBSTONE_MIN_LIFE_MS`]).
//!
//! **Idempotency.** A sent-id item is put in the same transaction as the messages, on
//! condition that none is live. If the transaction fails on one, the post reads the earlier
//! ids, tombstones its allocations and runs again without the repeats: repeats cost more, the
//! ordinary post costs no read. A post refused for its recipients, an inbox limit or the flood
//! limit also reads its client ids first, since a retry of a post that committed may meet a
//! refusal its first attempt did not; a post that delivers nothing (repeats only) takes back
//! its flood count. The SDK retries a request whose response was lost: a transaction carries
//! an idempotency token, and a single put that finds its own messages already there counts as
//! done.
//!
//! **Inbox limit.** Only unexpired unacknowledged messages count, `peer-joined` notices
//! included (a join is refused when a member's inbox is full), so join/leave cycling cannot
//! flood an inbox. The member item's `lastSeq - ackedSeq` decides when it is well under the
//! limit; otherwise a Query of the inbox counts the live messages (see `inbox_limit.rs`).
//!
//! **Presence.** `touch` updates the member item (`lastSeen`, `ackedSeq`, expiry) and returns
//! its `lastSeq`. Departures are conditional deletes of member items: only the caller whose
//! delete succeeded sends `peer-left`. Member items expire (presence timeout + message TTL)
//! after the last poll, and an expired member counts as gone everywhere. `housekeeping` has
//! nothing to do: TTL removes what is left.
//!
//! One transaction holds at most 100 items: a post needs one per recipient (two for a batch)
//! plus one per client id (at most 50), so rooms of up to 25 peers fit.
//!
//! Throttling, timeouts and server errors are [`StoreError::Unavailable`]; items that do not
//! decode are [`StoreError::Corrupt`]. Errors name attributes, never item contents.

mod inbox_limit;
mod items;
mod posting;
mod presence;
mod reading;
mod table;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{Put, TransactWriteItem};

use self::items::{Item, key, s};
use super::{
    Departures, InboxRead, JoinRequest, Joined, PostRequest, Posted, Presence, ReadLimit, Seq,
    Store, StoreError, Timing, Waiting,
};
use crate::clock::Millis;
use crate::ids::{PeerId, RoomId};
use crate::message::LeaveReason;

/// Each request's limit, retries included (see [`DynamoStore::timeouts`]).
const OPERATION_TIMEOUT: Duration = Duration::from_secs(3);
/// Attempts of each request (the first and two retries).
const REQUEST_ATTEMPTS: u32 = 3;
/// How long a reader waits for an allocated sequence number to be written before it gives up
/// on it with a tombstone: longer than a commit can take (the operation timeout covers its
/// retries already; times the attempts for margin, plus a second), so that a writer that is
/// still working is not overtaken. Giving up on a live writer loses nothing (its commit fails
/// and it allocates again), but repeated, it ends in `503`.
pub const GAP_TIMEOUT_MS: Millis =
    OPERATION_TIMEOUT.as_millis() as Millis * REQUEST_ATTEMPTS as Millis + 1_000;
/// DynamoDB's limit on the items of one transaction.
const MAX_TRANSACTION_ITEMS: u64 = 100;
/// Allocate-and-commit attempts of one delivery before giving up (each retry follows a
/// tombstone or a transaction conflict).
const MAX_COMMIT_ATTEMPTS: u32 = 4;
/// Runs of a post: each extra one follows the discovery of repeated client ids.
const MAX_POST_ROUNDS: u32 = 3;
/// Attempts of a join against concurrent joins and sweeps.
const MAX_JOIN_ATTEMPTS: u32 = 6;
/// Rounds of reading and tombstoning gaps within one read.
const MAX_READ_ROUNDS: u32 = 3;
/// The shortest life of a tombstone.
const TOMBSTONE_MIN_LIFE_MS: Millis = 600_000;
/// Gaps remembered by this process, beyond which the oldest are forgotten.
const MAX_NOTICED_GAPS: usize = 10_000;

/// A point inside a post or a read where tests can stall the store, to force an interleaving.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// A delivery is about to allocate (the post has read the room's members).
    Allocate { attempt: u32 },
    /// A delivery has allocated and is about to commit.
    Commit { attempt: u32 },
    /// A read has Queried the inbox and is about to tombstone a gap.
    Tombstone,
}

/// A hook run at each [`Step`]; `None` outside tests.
pub(super) type Hook<'a> =
    Option<&'a (dyn Fn(Step) -> Pin<Box<dyn Future<Output = ()> + Send>> + Sync)>;

/// DynamoDB requests sent by one store, for measuring cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestCounts {
    /// Query, GetItem and DescribeTable requests.
    pub reads: u64,
    /// PutItem, UpdateItem, DeleteItem and TransactWriteItems requests.
    pub writes: u64,
    /// Items written, counting each item of a transaction (a transaction is one write).
    pub write_items: u64,
    /// Of `write_items`, those written inside a TransactWriteItems, which DynamoDB bills at
    /// twice the write units of a plain write.
    pub transaction_items: u64,
}

#[derive(Debug, Default)]
struct Counters {
    reads: AtomicU64,
    writes: AtomicU64,
    write_items: AtomicU64,
    transaction_items: AtomicU64,
}

/// The DynamoDB implementation of [`Store`]. Cheap to clone: clones share the SDK client,
/// the request counters and the gaps this process has noticed.
#[derive(Clone, Debug)]
pub struct DynamoStore {
    client: Client,
    table: String,
    counters: Arc<Counters>,
    /// When this process first saw each inbox position already allocated but unfilled (the
    /// top of a gap): `(inbox key, seq) → now`. Ordered, so that a read can ask for the
    /// earliest sighting of any position at or above its own.
    noticed_gaps: Arc<Mutex<BTreeMap<(String, Seq), Millis>>>,
}

/// A failed request: [`StoreError::Throttled`] when DynamoDB refused it for capacity (still so
/// after the SDK's retries), [`StoreError::Unavailable`] otherwise.
fn unavailable<E>(error: E) -> StoreError
where
    E: std::error::Error + aws_sdk_dynamodb::error::ProvideErrorMetadata + Send + Sync + 'static,
{
    if is_throttle(error.code(), error.message()) {
        StoreError::Throttled(Box::new(error))
    } else {
        StoreError::Unavailable(Box::new(error))
    }
}

/// Whether an error code (and message) is DynamoDB throttling: the throughput and request
/// limits, or a transaction cancelled because one of its items was throttled.
fn is_throttle(code: Option<&str>, message: Option<&str>) -> bool {
    match code {
        Some(
            "ProvisionedThroughputExceededException"
            | "ThrottlingException"
            | "RequestLimitExceeded",
        ) => true,
        Some("TransactionCanceledException") => {
            message.is_some_and(|message| message.contains("ThrottlingError"))
        }
        _ => false,
    }
}

fn unavailable_because(reason: &str) -> StoreError {
    StoreError::Unavailable(reason.into())
}

/// Whether an error is the service saying a condition did not hold.
fn condition_failed<E>(error: &SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    error
        .as_service_error()
        .and_then(aws_sdk_dynamodb::error::ProvideErrorMetadata::code)
        == Some("ConditionalCheckFailedException")
}

/// For a cancelled transaction, whether each of its items failed its condition.
fn cancellation(
    error: &SdkError<TransactWriteItemsError, aws_sdk_dynamodb::config::http::HttpResponse>,
) -> Option<Vec<bool>> {
    match error.as_service_error() {
        Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) => Some(
            cancelled
                .cancellation_reasons()
                .iter()
                .map(|reason| reason.code() == Some("ConditionalCheckFailed"))
                .collect(),
        ),
        _ => None,
    }
}

fn built<T>(result: Result<T, aws_sdk_dynamodb::error::BuildError>) -> Result<T, StoreError> {
    result.map_err(|error| StoreError::Unavailable(Box::new(error)))
}

fn conditional_put(
    table: &str,
    item: Item,
    condition: &str,
    values: Option<HashMap<String, aws_sdk_dynamodb::types::AttributeValue>>,
) -> Result<TransactWriteItem, StoreError> {
    let put = built(
        Put::builder()
            .table_name(table)
            .set_item(Some(item))
            .condition_expression(condition)
            .set_expression_attribute_values(values)
            .build(),
    )?;
    Ok(TransactWriteItem::builder().put(put).build())
}

impl DynamoStore {
    /// Connects to `table` with the standard AWS configuration from the environment (region,
    /// credentials, `AWS_ENDPOINT_URL_DYNAMODB`), short timeouts and three attempts per request.
    pub async fn connect(table: String) -> Result<Self, StoreError> {
        Self::from_client(Client::new(&Self::sdk_config().await), table)
    }

    /// The SDK configuration [`DynamoStore::connect`] uses, for a client built elsewhere
    /// (a benchmark adds an interceptor to it).
    pub async fn sdk_config() -> aws_config::SdkConfig {
        crate::aws::with_https_client(aws_config::defaults(BehaviorVersion::latest()))
            .timeout_config(Self::timeouts())
            .retry_config(RetryConfig::standard().with_max_attempts(REQUEST_ATTEMPTS))
            .load()
            .await
    }

    /// Timeouts for every request: a poll's budget is seconds, so no request may hang.
    pub fn timeouts() -> TimeoutConfig {
        TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(1))
            .operation_timeout(OPERATION_TIMEOUT)
            .build()
    }

    /// Uses an SDK client built elsewhere.
    pub fn from_client(client: Client, table: String) -> Result<Self, StoreError> {
        let valid = (3..=255).contains(&table.len())
            && table
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || b"_.-".contains(&byte));
        if !valid {
            return Err(unavailable_because(
                "a DynamoDB table name is 3 to 255 characters of A-Z, a-z, 0-9, '_', '-' and '.'",
            ));
        }
        Ok(Self {
            client,
            table,
            counters: Arc::default(),
            noticed_gaps: Arc::default(),
        })
    }

    /// The requests this store (and its clones) has sent so far.
    pub fn request_counts(&self) -> RequestCounts {
        RequestCounts {
            reads: self.counters.reads.load(Ordering::Relaxed),
            writes: self.counters.writes.load(Ordering::Relaxed),
            write_items: self.counters.write_items.load(Ordering::Relaxed),
            transaction_items: self.counters.transaction_items.load(Ordering::Relaxed),
        }
    }

    fn count_read(&self) {
        self.counters.reads.fetch_add(1, Ordering::Relaxed);
    }

    fn count_write(&self, items: usize) {
        self.counters.writes.fetch_add(1, Ordering::Relaxed);
        self.counters
            .write_items
            .fetch_add(items as u64, Ordering::Relaxed);
    }

    fn count_transaction(&self, items: usize) {
        self.count_write(items);
        self.counters
            .transaction_items
            .fetch_add(items as u64, Ordering::Relaxed);
    }

    /// Every item of one partition, read consistently, from `sk_after` (exclusive) on, a
    /// page at a time: after each page `next` says whether to stop or to read on, and with
    /// which `Limit` (`page_size` is the first page's; `None`: DynamoDB's 1 MB page).
    async fn query_partition(
        &self,
        pk: String,
        sk_after: Option<String>,
        mut page_size: Option<i32>,
        mut next: impl FnMut(&[Item]) -> ControlFlow<(), Option<i32>>,
    ) -> Result<(), StoreError> {
        let mut start = None;
        loop {
            self.count_read();
            let mut query = self
                .client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .expression_attribute_values(":pk", s(pk.clone()))
                .set_limit(page_size)
                .set_exclusive_start_key(start);
            query = match &sk_after {
                Some(after) => query
                    .key_condition_expression("pk = :pk AND sk > :after")
                    .expression_attribute_values(":after", s(after.clone())),
                None => query.key_condition_expression("pk = :pk"),
            };
            let page = query.send().await.map_err(unavailable)?;
            match next(page.items.as_deref().unwrap_or_default()) {
                ControlFlow::Break(()) => return Ok(()),
                ControlFlow::Continue(size) => page_size = size,
            }
            match page.last_evaluated_key {
                Some(last) if !last.is_empty() => start = Some(last),
                _ => return Ok(()),
            }
        }
    }
}

/// The room item's version token.
const ROOM_VERSION: &str = "version";

#[async_trait]
impl Store for DynamoStore {
    async fn join(&self, request: JoinRequest) -> Result<Joined, StoreError> {
        self.join_room(request).await
    }

    async fn post(&self, request: PostRequest) -> Result<Posted, StoreError> {
        self.post_with(request, None).await
    }

    async fn touch_waiting(
        &self,
        room: &RoomId,
        peer: &PeerId,
        acked: Seq,
        now: Millis,
        waiting: Option<Waiting<'_>>,
    ) -> Result<Presence, StoreError> {
        self.touch_member(room, peer, acked, now, waiting).await
    }

    async fn read(
        &self,
        room: &RoomId,
        peer: &PeerId,
        after: Seq,
        limit: ReadLimit,
        now: Millis,
    ) -> Result<InboxRead, StoreError> {
        self.read_inbox(room, peer, after, limit, now, None).await
    }

    async fn sweep(&self, room: &RoomId, timing: Timing) -> Result<Departures, StoreError> {
        let (_, _, members) = self.room_view(room).await?;
        self.sweep_members(room, &members, timing).await
    }

    async fn leave(
        &self,
        room: &RoomId,
        peer: &PeerId,
        timing: Timing,
    ) -> Result<Departures, StoreError> {
        self.depart(
            room,
            std::slice::from_ref(peer),
            None,
            LeaveReason::Left,
            timing,
        )
        .await
    }

    async fn housekeeping(&self, _timing: Timing) -> Result<Vec<(RoomId, Departures)>, StoreError> {
        // TTL deletes what expires, and joins and polls sweep their own rooms.
        Ok(Vec::new())
    }

    async fn health(&self) -> Result<(), StoreError> {
        self.count_read();
        self.client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key("HEALTH".to_owned(), "#".to_owned())))
            .send()
            .await
            .map(|_| ())
            .map_err(unavailable)
    }
}

#[cfg(test)]
mod throttle_tests {
    use super::is_throttle;

    #[test]
    fn throttling_codes_are_throttles_and_other_failures_are_not() {
        assert!(is_throttle(
            Some("ProvisionedThroughputExceededException"),
            None
        ));
        assert!(is_throttle(Some("ThrottlingException"), Some("slow down")));
        assert!(is_throttle(
            Some("TransactionCanceledException"),
            Some(
                "Transaction cancelled, please refer cancellation reasons for specific reasons [None, ThrottlingError]"
            )
        ));
        assert!(!is_throttle(
            Some("TransactionCanceledException"),
            Some("Transaction cancelled [ConditionalCheckFailed]")
        ));
        assert!(!is_throttle(Some("InternalServerError"), None));
        assert!(!is_throttle(None, None));
    }
}
