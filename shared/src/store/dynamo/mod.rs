//! The DynamoDB store: one table, keys `pk` (S) and `sk` (S), TTL on `expiresAt` (Unix seconds).
//!
//! DynamoDB deletes expired items lazily (and local servers such as moto never do), so every
//! item also carries its exact expiry `expiresAtMs` and every read filters by it. Nothing ever
//! Scans: each access is a key lookup or a Query of one partition, and never touches another
//! room's or peer's data.
//!
//! | item | `pk` | `sk` | holds |
//! |---|---|---|---|
//! | room | `ROOM#{room}` | `#ROOM` | `version`: a token every join replaces |
//! | member | `ROOM#{room}` | `PEER#{peer}` | `name`, `joinedAt`, `lastSeen`, `lastSeq` (inbox head), `lastSeqAt`, `ackedSeq`, its own lifetime |
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
//! sequence numbers per recipient with `ADD lastSeq :k`, and (3) writes, in ONE
//! `TransactWriteItems` (a plain conditional put when that is one item), one inbox item per
//! recipient (conditional on its key being free and,
//! for a range of several numbers, on no tombstone at its first number) plus the idempotency
//! items of its client ids. Writers can commit out of order, so a reader returns only the
//! contiguous run after its cursor. A gap that lasts [`GAP_TIMEOUT_MS`] (the allocation is
//! that old, or this process noticed the gap that long ago) means a writer stalled or died:
//! the reader writes a tombstone on each missing number, in one transaction of conditional
//! puts, and a late writer then fails its commit, allocates afresh and retries, so nothing
//! accepted is lost and no sender's order breaks. A writer that gives up an allocation writes
//! a tombstone over it itself so readers need not wait.
//!
//! Inbox items are keyed by the LAST number they cover, so a Query for `sk > SEQ#{cursor}`
//! finds the item a cursor points into the middle of (a read may stop part-way through a
//! batch), with no extra read.
//!
//! **Idempotency.** A sent-id item is put in the same transaction as the messages, on
//! condition that none is live. If the transaction fails on one, the post reads the earlier
//! ids, tombstones its allocations and runs again without the repeats: repeats cost more, the
//! ordinary post costs no read.
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

mod items;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::future::Future;
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
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, ConditionCheck, KeySchemaElement, KeyType, Put, ReturnValue,
    ScalarAttributeType, TableStatus, TimeToLiveSpecification, TimeToLiveStatus, TransactWriteItem,
    Update,
};

use self::items::{
    EXPIRES_AT, EXPIRES_AT_MS, Entry, InboxItem, Item, MemberItem, PK, ROOM_SK, SENT_MESSAGE_ID,
    get_n, get_s, inbox_pk, key, member, member_sk, message_item, n, room_pk, s, sent_item,
    sent_pk, sent_sk, seq_sk, ttl_seconds, void_item,
};
use super::{
    Departures, JoinRequest, Joined, Member, PostRequest, Posted, RateLimit, Seq, Store,
    StoreError, Timing, distinct_recipients, resolve_recipients,
};
use crate::clock::Millis;
use crate::ids::{MessageId, PeerId, RoomId};
use crate::message::{LeaveReason, MessageKind, StoredMessage, peer_joined_data};

/// How long a reader waits for an allocated sequence number to be written before it gives up
/// on it with a tombstone.
pub const GAP_TIMEOUT_MS: Millis = 2_000;
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

/// A hook run between allocation and commit, so tests can stall a writer there.
type BeforeCommit<'a> =
    Option<&'a (dyn Fn(u32) -> Pin<Box<dyn Future<Output = ()> + Send>> + Sync)>;

/// DynamoDB requests sent by one store, for measuring cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestCounts {
    /// Query, GetItem and DescribeTable requests.
    pub reads: u64,
    /// PutItem, UpdateItem, DeleteItem and TransactWriteItems requests.
    pub writes: u64,
    /// Items written, counting each item of a transaction (a transaction is one write).
    pub write_items: u64,
}

#[derive(Debug, Default)]
struct Counters {
    reads: AtomicU64,
    writes: AtomicU64,
    write_items: AtomicU64,
}

/// The DynamoDB implementation of [`Store`]. Cheap to clone: clones share the SDK client,
/// the request counters and the gaps this process has noticed.
#[derive(Clone, Debug)]
pub struct DynamoStore {
    client: Client,
    table: String,
    counters: Arc<Counters>,
    /// When this process first saw each unfilled inbox position: `(inbox key, seq) → now`.
    noticed_gaps: Arc<Mutex<HashMap<(String, Seq), Millis>>>,
}

/// A range of sequence numbers allocated in one recipient's inbox, with the messages for it.
#[derive(Clone, Debug)]
struct Allocation {
    recipient: PeerId,
    first: Seq,
    entries: Vec<Entry>,
}

impl Allocation {
    fn last(&self) -> Seq {
        self.first + self.entries.len() as u64 - 1
    }
}

/// Why a commit did not happen.
#[derive(Debug)]
enum CommitError {
    /// An inbox position was tombstoned by a reader, or another transaction got in the way:
    /// allocate again.
    Conflict,
    /// These sent-id items (indices into the commit's list) already hold a live id.
    Repeats(Vec<usize>),
    Store(StoreError),
}

/// What a delivery did.
enum Outcome {
    Delivered(Vec<PeerId>),
    Repeats(Vec<usize>),
}

/// The messages of one delivery, per recipient in first-seen order.
struct Delivery<'a> {
    room: &'a RoomId,
    from: &'a PeerId,
    plan: Vec<(PeerId, Vec<Entry>)>,
    /// Sent-id items to write with the messages.
    sent: Vec<Item>,
    /// Whether a recipient that is gone fails the delivery (client posts) or is skipped
    /// (messages the server sends about joins and departures).
    strict: bool,
    timing: Timing,
}

fn unavailable<E: std::error::Error + Send + Sync + 'static>(error: E) -> StoreError {
    StoreError::Unavailable(Box::new(error))
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
    result.map_err(unavailable)
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
        let config = crate::aws::with_https_client(aws_config::defaults(BehaviorVersion::latest()))
            .timeout_config(Self::timeouts())
            .retry_config(RetryConfig::standard().with_max_attempts(3))
            .load()
            .await;
        Self::from_client(Client::new(&config), table)
    }

    /// Timeouts for every request: a poll's budget is seconds, so no request may hang.
    pub fn timeouts() -> TimeoutConfig {
        TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(1))
            .operation_timeout(Duration::from_secs(3))
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

    /// Creates the table (on-demand capacity, the keys above), waits until it is active and
    /// turns TTL on for `expiresAt`. Does nothing that is already done.
    pub async fn create_table(&self) -> Result<(), StoreError> {
        let attribute = |name: &str| {
            built(
                AttributeDefinition::builder()
                    .attribute_name(name)
                    .attribute_type(ScalarAttributeType::S)
                    .build(),
            )
        };
        let key_element = |name: &str, kind: KeyType| {
            built(
                KeySchemaElement::builder()
                    .attribute_name(name)
                    .key_type(kind)
                    .build(),
            )
        };
        let created = self
            .client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attribute(PK)?)
            .attribute_definitions(attribute(items::SK)?)
            .key_schema(key_element(PK, KeyType::Hash)?)
            .key_schema(key_element(items::SK, KeyType::Range)?)
            .send()
            .await;
        if let Err(error) = created {
            let exists = error
                .as_service_error()
                .is_some_and(|error| error.is_resource_in_use_exception());
            if !exists {
                return Err(unavailable(error));
            }
        }
        let mut active = false;
        for _ in 0..120 {
            let described = self
                .client
                .describe_table()
                .table_name(&self.table)
                .send()
                .await
                .map_err(unavailable)?;
            if described.table().and_then(|table| table.table_status())
                == Some(&TableStatus::Active)
            {
                active = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if !active {
            return Err(unavailable_because(
                "the table did not become active in 60 s",
            ));
        }
        let ttl = self
            .client
            .describe_time_to_live()
            .table_name(&self.table)
            .send()
            .await
            .map_err(unavailable)?;
        let status = ttl
            .time_to_live_description()
            .and_then(|description| description.time_to_live_status());
        if !matches!(
            status,
            Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
        ) {
            self.client
                .update_time_to_live()
                .table_name(&self.table)
                .time_to_live_specification(built(
                    TimeToLiveSpecification::builder()
                        .attribute_name(EXPIRES_AT)
                        .enabled(true)
                        .build(),
                )?)
                .send()
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }

    /// Every item of one partition, read consistently, from `sk_after` (exclusive) on.
    async fn query_partition(
        &self,
        pk: String,
        sk_after: Option<String>,
        page_size: Option<i32>,
        mut keep_going: impl FnMut(&[Item]) -> bool,
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
            if !keep_going(page.items.as_deref().unwrap_or_default()) {
                return Ok(());
            }
            match page.last_evaluated_key {
                Some(last) if !last.is_empty() => start = Some(last),
                _ => return Ok(()),
            }
        }
    }

    /// The room's version token and member items (expired ones included).
    async fn room_view(
        &self,
        room: &RoomId,
    ) -> Result<(Option<String>, Vec<MemberItem>), StoreError> {
        let mut raw = Vec::new();
        self.query_partition(room_pk(room), None, None, |page| {
            raw.extend_from_slice(page);
            true
        })
        .await?;
        let mut version = None;
        let mut members = Vec::new();
        for item in &raw {
            if MemberItem::is_member_item(item) {
                members.push(MemberItem::from_item(item)?);
            } else if get_s(item, items::SK)? == ROOM_SK {
                version = Some(get_s(item, ROOM_VERSION)?.to_owned());
            }
        }
        members.sort_by(|a, b| (a.joined_at, &a.peer).cmp(&(b.joined_at, &b.peer)));
        Ok((version, members))
    }

    /// The room's members whose items have not expired, oldest first.
    async fn live_members(
        &self,
        room: &RoomId,
        now: Millis,
    ) -> Result<Vec<MemberItem>, StoreError> {
        let (_, members) = self.room_view(room).await?;
        Ok(members
            .into_iter()
            .filter(|member| member.expires_at_ms > now)
            .collect())
    }

    /// Allocates `count` sequence numbers in `recipient`'s inbox; the first of them, or `None`
    /// if the recipient is not a member.
    async fn allocate(
        &self,
        room: &RoomId,
        recipient: &PeerId,
        count: usize,
        now: Millis,
    ) -> Result<Option<Seq>, StoreError> {
        self.count_write(1);
        let updated = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(room_pk(room), member_sk(recipient))))
            .update_expression("ADD lastSeq :count SET lastSeqAt = :now")
            .condition_expression("attribute_exists(pk) AND expiresAtMs > :now")
            .expression_attribute_values(":count", n(count))
            .expression_attribute_values(":now", n(now))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await;
        match updated {
            Ok(output) => {
                let head: Seq = get_n(&output.attributes.unwrap_or_default(), member::LAST_SEQ)?;
                Ok(Some(head + 1 - count as u64))
            }
            Err(error) if condition_failed(&error) => Ok(None),
            Err(error) => Err(unavailable(error)),
        }
    }

    /// Writes allocated messages and sent-id items in one transaction.
    async fn commit(
        &self,
        room: &RoomId,
        from: &PeerId,
        allocations: &[Allocation],
        sent: &[Item],
        timing: Timing,
    ) -> Result<(), CommitError> {
        if let ([allocation], []) = (allocations, sent)
            && allocation.entries.len() == 1
        {
            // One message to one inbox, the usual trickled candidate: a conditional put does
            // it at half the cost of a transaction.
            let item = message_item(
                inbox_pk(room, &allocation.recipient),
                allocation.first,
                from,
                timing.now,
                timing.expires_at,
                &allocation.entries,
            );
            return match self.put_if_absent(item).await {
                Ok(true) => Ok(()),
                Ok(false) => Err(CommitError::Conflict),
                Err(error) => Err(CommitError::Store(error)),
            };
        }
        let mut transaction = Vec::new();
        for allocation in allocations {
            let pk = inbox_pk(room, &allocation.recipient);
            if allocation.entries.len() > 1 {
                // The item is keyed by its last number; a reader that gave up on the range
                // tombstoned its first number, which is checked here.
                let check = ConditionCheck::builder()
                    .table_name(&self.table)
                    .set_key(Some(key(pk.clone(), seq_sk(allocation.first))))
                    .condition_expression("attribute_not_exists(pk)")
                    .build()
                    .map_err(|error| CommitError::Store(unavailable(error)))?;
                transaction.push(TransactWriteItem::builder().condition_check(check).build());
            }
            let item = message_item(
                pk,
                allocation.first,
                from,
                timing.now,
                timing.expires_at,
                &allocation.entries,
            );
            transaction.push(
                conditional_put(&self.table, item, "attribute_not_exists(pk)", None)
                    .map_err(CommitError::Store)?,
            );
        }
        let inbox_items = transaction.len();
        for item in sent {
            let values = HashMap::from([(":now".to_owned(), n(timing.now))]);
            transaction.push(
                conditional_put(
                    &self.table,
                    item.clone(),
                    "attribute_not_exists(pk) OR expiresAtMs <= :now",
                    Some(values),
                )
                .map_err(CommitError::Store)?,
            );
        }
        if transaction.is_empty() {
            return Ok(());
        }
        if transaction.len() as u64 > MAX_TRANSACTION_ITEMS {
            return Err(CommitError::Store(unavailable_because(
                "a post needs more items than one DynamoDB transaction holds",
            )));
        }
        self.count_write(transaction.len());
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(transaction))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) => match cancellation(&error) {
                Some(failed) => {
                    let repeats: Vec<usize> = failed
                        .iter()
                        .skip(inbox_items)
                        .enumerate()
                        .filter(|(_, failed)| **failed)
                        .map(|(index, _)| index)
                        .collect();
                    if repeats.is_empty() {
                        Err(CommitError::Conflict)
                    } else {
                        Err(CommitError::Repeats(repeats))
                    }
                }
                None => Err(CommitError::Store(unavailable(error))),
            },
        }
    }

    /// Gives up allocations, best effort: tombstones them so that readers need not wait for
    /// the gap timeout. A tombstone only goes where nothing is (a commit that did happen
    /// after all keeps its messages).
    async fn abandon(&self, room: &RoomId, allocations: &[Allocation], timing: Timing) {
        for allocation in allocations {
            let item = void_item(
                inbox_pk(room, &allocation.recipient),
                allocation.first,
                allocation.last(),
                timing.expires_at.max(timing.now + TOMBSTONE_MIN_LIFE_MS),
            );
            if let Err(error) = self.put_if_absent(item).await {
                tracing::debug!(%error, "could not tombstone an abandoned allocation");
            }
        }
    }

    /// Puts `item` unless an item with its key exists (a reader's tombstone, or a commit that
    /// already happened): `Ok(false)` then.
    async fn put_if_absent(&self, item: Item) -> Result<bool, StoreError> {
        self.count_write(1);
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(error) if condition_failed(&error) => Ok(false),
            Err(error) => Err(unavailable(error)),
        }
    }

    /// Allocates and commits a delivery, allocating afresh when a reader tombstoned the
    /// previous allocation.
    async fn deliver(
        &self,
        delivery: &Delivery<'_>,
        before_commit: BeforeCommit<'_>,
    ) -> Result<Outcome, StoreError> {
        let Delivery {
            room, from, timing, ..
        } = *delivery;
        for attempt in 0..MAX_COMMIT_ATTEMPTS {
            let mut allocations = Vec::with_capacity(delivery.plan.len());
            for (recipient, entries) in &delivery.plan {
                match self
                    .allocate(room, recipient, entries.len(), timing.now)
                    .await
                {
                    Ok(Some(first)) => allocations.push(Allocation {
                        recipient: recipient.clone(),
                        first,
                        entries: entries.clone(),
                    }),
                    Ok(None) if !delivery.strict => {}
                    Ok(None) => {
                        self.abandon(room, &allocations, timing).await;
                        return Err(StoreError::NoSuchRecipient(recipient.clone()));
                    }
                    Err(error) => {
                        self.abandon(room, &allocations, timing).await;
                        return Err(error);
                    }
                }
            }
            if let Some(hook) = before_commit {
                hook(attempt).await;
            }
            match self
                .commit(room, from, &allocations, &delivery.sent, timing)
                .await
            {
                Ok(()) => {
                    return Ok(Outcome::Delivered(
                        allocations
                            .into_iter()
                            .map(|allocation| allocation.recipient)
                            .collect(),
                    ));
                }
                Err(CommitError::Conflict) => self.abandon(room, &allocations, timing).await,
                Err(CommitError::Repeats(repeats)) => {
                    self.abandon(room, &allocations, timing).await;
                    return Ok(Outcome::Repeats(repeats));
                }
                Err(CommitError::Store(error)) => {
                    self.abandon(room, &allocations, timing).await;
                    return Err(error);
                }
            }
        }
        Err(unavailable_because("inbox writes kept conflicting"))
    }

    /// Sends one server-made message from `from` to each of `recipients` still present;
    /// returns those it reached.
    async fn notify(
        &self,
        room: &RoomId,
        from: &PeerId,
        recipients: &[PeerId],
        kind: MessageKind,
        data: String,
        timing: Timing,
    ) -> Result<Vec<PeerId>, StoreError> {
        if recipients.is_empty() {
            return Ok(Vec::new());
        }
        let entry = Entry {
            id: MessageId::mint(),
            kind,
            data,
        };
        let delivery = Delivery {
            room,
            from,
            plan: recipients
                .iter()
                .map(|recipient| (recipient.clone(), vec![entry.clone()]))
                .collect(),
            sent: Vec::new(),
            strict: false,
            timing,
        };
        match self.deliver(&delivery, None).await? {
            Outcome::Delivered(reached) => Ok(reached),
            Outcome::Repeats(_) => Err(unavailable_because("a server message had a client id")),
        }
    }

    /// Removes each of `candidates` whose member item still meets the condition (timed out
    /// before `stale_before`, or present at all) and tells the remaining members.
    async fn depart(
        &self,
        room: &RoomId,
        candidates: &[PeerId],
        stale_before: Option<Millis>,
        reason: LeaveReason,
        timing: Timing,
    ) -> Result<Departures, StoreError> {
        let mut gone = Vec::new();
        for peer in candidates {
            self.count_write(1);
            let mut delete = self
                .client
                .delete_item()
                .table_name(&self.table)
                .set_key(Some(key(room_pk(room), member_sk(peer))));
            delete = match stale_before {
                Some(stale_before) => delete
                    .condition_expression("lastSeen < :stale")
                    .expression_attribute_values(":stale", n(stale_before)),
                None => delete
                    .condition_expression("attribute_exists(pk) AND expiresAtMs > :now")
                    .expression_attribute_values(":now", n(timing.now)),
            };
            match delete.send().await {
                Ok(_) => gone.push(peer.clone()),
                Err(error) if condition_failed(&error) => {}
                Err(error) => return Err(unavailable(error)),
            }
        }
        if gone.is_empty() {
            return Ok(Departures::default());
        }
        let remaining: Vec<PeerId> = self
            .live_members(room, timing.now)
            .await?
            .into_iter()
            .map(|member| member.peer)
            .filter(|peer| !gone.contains(peer))
            .collect();
        let mut notified: Vec<PeerId> = Vec::new();
        for peer in &gone {
            let reached = self
                .notify(
                    room,
                    peer,
                    &remaining,
                    MessageKind::PeerLeft,
                    reason.data(),
                    timing,
                )
                .await?;
            for peer in reached {
                if !notified.contains(&peer) {
                    notified.push(peer);
                }
            }
        }
        Ok(Departures { gone, notified })
    }

    async fn sweep_members(
        &self,
        room: &RoomId,
        members: &[MemberItem],
        timing: Timing,
    ) -> Result<Departures, StoreError> {
        let stale: Vec<PeerId> = members
            .iter()
            .filter(|member| member.last_seen < timing.stale_before)
            .map(|member| member.peer.clone())
            .collect();
        if stale.is_empty() {
            return Ok(Departures::default());
        }
        self.depart(
            room,
            &stale,
            Some(timing.stale_before),
            LeaveReason::Timeout,
            timing,
        )
        .await
    }

    /// The server id `sender`'s client id was given, if still remembered.
    async fn sent_id(
        &self,
        room: &RoomId,
        sender: &PeerId,
        client_id: &str,
        now: Millis,
    ) -> Result<Option<MessageId>, StoreError> {
        self.count_read();
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(sent_pk(room, sender), sent_sk(client_id))))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        let Some(item) = output.item else {
            return Ok(None);
        };
        if items::expired(&item, now) {
            return Ok(None);
        }
        let id = get_s(&item, SENT_MESSAGE_ID)?;
        MessageId::parse(id)
            .map(Some)
            .map_err(|_| StoreError::Corrupt("a sent-id item with a malformed messageId".into()))
    }

    /// Counts one post against `sender`'s flood limit on its member item: one more in the
    /// open window, or a new window opened by this post once the last has ended. Refuses the
    /// post when the window is full. Each step is one conditional update, so processes
    /// sharing the table agree on the count; a concurrent change retries (bounded).
    async fn count_post(
        &self,
        room: &RoomId,
        sender: &PeerId,
        limit: RateLimit,
        now: Millis,
    ) -> Result<(), StoreError> {
        let member = key(room_pk(room), member_sk(sender));
        // A window that opened after this is still open.
        let open_after = now - limit.window_ms;
        for _ in 0..3 {
            self.count_write(1);
            let within = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(member.clone()))
                .update_expression("ADD rateCount :one")
                .condition_expression(
                    "attribute_exists(pk) AND rateWindow > :open_after AND rateCount < :posts",
                )
                .expression_attribute_values(":one", n(1))
                .expression_attribute_values(":open_after", n(open_after))
                .expression_attribute_values(":posts", n(limit.posts))
                .send()
                .await;
            match within {
                Ok(_) => return Ok(()),
                Err(error) if condition_failed(&error) => {}
                Err(error) => return Err(unavailable(error)),
            }
            self.count_write(1);
            let fresh = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(member.clone()))
                .update_expression("SET rateWindow = :now, rateCount = :one")
                .condition_expression(
                    "attribute_exists(pk) AND (attribute_not_exists(rateWindow) OR rateWindow <= :open_after)",
                )
                .expression_attribute_values(":now", n(now))
                .expression_attribute_values(":one", n(1))
                .expression_attribute_values(":open_after", n(open_after))
                .send()
                .await;
            match fresh {
                Ok(_) => return Ok(()),
                Err(error) if condition_failed(&error) => {}
                Err(error) => return Err(unavailable(error)),
            }
            // Neither: the window is full, the sender is gone, or another post changed the
            // window between the two updates. Read which.
            self.count_read();
            let item = self
                .client
                .get_item()
                .table_name(&self.table)
                .set_key(Some(member.clone()))
                .consistent_read(true)
                .send()
                .await
                .map_err(unavailable)?
                .item;
            let Some(item) = item else {
                return Err(StoreError::PeerGone);
            };
            let window: Millis = get_n(&item, "rateWindow").unwrap_or(0);
            let count: u64 = get_n(&item, "rateCount").unwrap_or(0);
            if window > open_after && count >= limit.posts {
                return Err(StoreError::RateLimited {
                    retry_after: limit.retry_after(window, now),
                });
            }
        }
        Err(unavailable_because("the rate-limit count kept changing"))
    }

    /// A post, with a hook between allocation and commit for tests.
    async fn post_with(
        &self,
        request: PostRequest,
        before_commit: BeforeCommit<'_>,
    ) -> Result<Posted, StoreError> {
        let PostRequest {
            room,
            sender,
            messages,
            inbox_limit,
            rate_limit,
            timing,
        } = request;
        // Client ids found already used, with the server id they were given.
        let mut earlier: HashMap<String, MessageId> = HashMap::new();
        let mut counted = false;
        for _ in 0..MAX_POST_ROUNDS {
            let mut in_this_post: HashMap<&str, MessageId> = HashMap::new();
            let mut previous = Vec::with_capacity(messages.len());
            let mut sent = Vec::new();
            let mut sent_client_ids = Vec::new();
            for (id, message) in &messages {
                let Some(client_id) = &message.client_id else {
                    previous.push(None);
                    continue;
                };
                let client_id = client_id.as_str();
                if let Some(earlier) = earlier.get(client_id).or(in_this_post.get(client_id)) {
                    previous.push(Some(earlier.clone()));
                    continue;
                }
                in_this_post.insert(client_id, id.clone());
                sent.push(sent_item(&room, &sender, client_id, id, timing.expires_at));
                sent_client_ids.push(client_id);
                previous.push(None);
            }
            let ids: Vec<MessageId> = messages
                .iter()
                .zip(&previous)
                .map(|((id, _), previous)| previous.clone().unwrap_or_else(|| id.clone()))
                .collect();
            let fresh: Vec<_> = messages
                .iter()
                .zip(&previous)
                .filter(|(_, previous)| previous.is_none())
                .map(|(message, _)| message.clone())
                .collect();
            if fresh.is_empty() {
                return Ok(Posted {
                    ids,
                    recipients: Vec::new(),
                });
            }
            let members = self.live_members(&room, timing.now).await?;
            let member_ids: Vec<PeerId> =
                members.iter().map(|member| member.peer.clone()).collect();
            let deliveries = match resolve_recipients(&member_ids, &sender, &fresh) {
                Ok(deliveries) => deliveries,
                Err(StoreError::NoSuchRecipient(peer)) => {
                    // A retry of a post whose first attempt committed may name a peer that
                    // has left since: its client ids say so, and it gets its first ids back
                    // (as on SQLite, which looks them up before the recipients).
                    let mut repeats = false;
                    for client_id in &sent_client_ids {
                        if let Some(id) =
                            self.sent_id(&room, &sender, client_id, timing.now).await?
                        {
                            earlier.insert((*client_id).to_owned(), id);
                            repeats = true;
                        }
                    }
                    if repeats {
                        continue;
                    }
                    return Err(StoreError::NoSuchRecipient(peer));
                }
                Err(other) => return Err(other),
            };
            let recipients = distinct_recipients(&deliveries);
            let mut plan = Vec::with_capacity(recipients.len());
            for recipient in &recipients {
                let entries: Vec<Entry> = deliveries
                    .iter()
                    .filter(|(_, peer)| peer == recipient)
                    .map(|(index, _)| {
                        let (id, message) = &fresh[*index];
                        Entry {
                            id: id.clone(),
                            kind: message.kind,
                            data: message.data.clone(),
                        }
                    })
                    .collect();
                let unread = members
                    .iter()
                    .find(|member| &member.peer == recipient)
                    .map_or(0, |member| member.last_seq.saturating_sub(member.acked_seq));
                if unread + entries.len() as u64 > inbox_limit {
                    return Err(StoreError::InboxFull(recipient.clone()));
                }
                plan.push((recipient.clone(), entries));
            }
            // Counted once the post has passed every other check, so refused posts do not
            // use up the window (and once, however many rounds repeats cost).
            if !counted {
                self.count_post(&room, &sender, rate_limit, timing.now)
                    .await?;
                counted = true;
            }
            let delivery = Delivery {
                room: &room,
                from: &sender,
                plan,
                sent,
                strict: true,
                timing,
            };
            match self.deliver(&delivery, before_commit).await? {
                Outcome::Delivered(_) => return Ok(Posted { ids, recipients }),
                Outcome::Repeats(repeats) => {
                    for index in repeats {
                        let Some(client_id) = sent_client_ids.get(index) else {
                            continue;
                        };
                        if let Some(id) =
                            self.sent_id(&room, &sender, client_id, timing.now).await?
                        {
                            earlier.insert((*client_id).to_owned(), id);
                        }
                    }
                }
            }
        }
        Err(unavailable_because("client ids kept conflicting"))
    }

    /// Whether the unfilled position `seq` of an inbox has waited long enough to give up on.
    async fn gap_is_abandoned(
        &self,
        room: &RoomId,
        peer: &PeerId,
        inbox: &str,
        seq: Seq,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let noticed = {
            let mut gaps = self
                .noticed_gaps
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if gaps.len() >= MAX_NOTICED_GAPS {
                gaps.retain(|_, noticed| now - *noticed < 60_000);
                if gaps.len() >= MAX_NOTICED_GAPS {
                    gaps.clear();
                }
            }
            *gaps.entry((inbox.to_owned(), seq)).or_insert(now)
        };
        if now - noticed >= GAP_TIMEOUT_MS {
            return Ok(true);
        }
        // Every allocation in this inbox is at least as old as the newest one.
        self.count_read();
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(room_pk(room), member_sk(peer))))
            .consistent_read(true)
            .projection_expression("lastSeqAt")
            .send()
            .await
            .map_err(unavailable)?;
        match output.item {
            Some(item) => Ok(now - get_n::<Millis>(&item, member::LAST_SEQ_AT)? >= GAP_TIMEOUT_MS),
            None => Ok(true),
        }
    }

    /// Tombstones each position of `first..=last` (at most a transaction's worth) that is
    /// still empty, all or nothing: if a late writer got one in first, nothing is written.
    async fn tombstone(
        &self,
        inbox: &str,
        first: Seq,
        last: Seq,
        expires_at: Millis,
    ) -> Result<(), StoreError> {
        let last = last.min(first + MAX_TRANSACTION_ITEMS - 1);
        let transaction = (first..=last)
            .map(|seq| {
                conditional_put(
                    &self.table,
                    void_item(inbox.to_owned(), seq, seq, expires_at),
                    "attribute_not_exists(pk)",
                    None,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.count_write(transaction.len());
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(transaction))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) if cancellation(&error).is_some() => Ok(()),
            Err(error) => Err(unavailable(error)),
        }
    }

    async fn read_inbox(
        &self,
        room: &RoomId,
        peer: &PeerId,
        after: Seq,
        limit: usize,
        now: Millis,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let inbox = inbox_pk(room, peer);
        let page_size = i32::try_from(limit.min(1_000)).unwrap_or(1_000);
        for _ in 0..MAX_READ_ROUNDS {
            let mut messages = Vec::new();
            let mut expected = after + 1;
            let mut blocked: Option<InboxItem> = None;
            let mut failure = None;
            self.query_partition(
                inbox.clone(),
                Some(seq_sk(after)),
                Some(page_size),
                |page| {
                    for raw in page {
                        let item = match InboxItem::from_item(raw, now) {
                            Ok(item) => item,
                            Err(error) => {
                                failure = Some(error);
                                return false;
                            }
                        };
                        if item.last < expected {
                            continue;
                        }
                        if item.first > expected {
                            blocked = Some(item);
                            return false;
                        }
                        for seq in expected.max(item.first)..=item.last {
                            if let Some(message) = item.message(seq, peer) {
                                messages.push(message);
                                if messages.len() >= limit {
                                    return false;
                                }
                            }
                        }
                        expected = item.last + 1;
                    }
                    true
                },
            )
            .await?;
            if let Some(error) = failure {
                return Err(error);
            }
            let Some(blocked) = blocked else {
                return Ok(messages);
            };
            if !messages.is_empty() {
                // Deliver what is ready; the gap is dealt with by the next read.
                return Ok(messages);
            }
            if !self
                .gap_is_abandoned(room, peer, &inbox, expected, now)
                .await?
            {
                return Ok(messages);
            }
            let expires_at = blocked.expires_at_ms.max(now + TOMBSTONE_MIN_LIFE_MS);
            self.tombstone(&inbox, expected, blocked.first - 1, expires_at)
                .await?;
        }
        Ok(Vec::new())
    }
}

/// The room item's version token.
const ROOM_VERSION: &str = "version";

#[async_trait]
impl Store for DynamoStore {
    async fn join(&self, request: JoinRequest) -> Result<Joined, StoreError> {
        let JoinRequest {
            room,
            peer,
            name,
            capacity,
            timing,
        } = request;
        let life = (timing.now - timing.stale_before) + (timing.expires_at - timing.now);
        let mut departures = Departures::default();
        for _ in 0..MAX_JOIN_ATTEMPTS {
            let (version, members) = self.room_view(&room).await?;
            if members
                .iter()
                .any(|member| member.last_seen < timing.stale_before)
            {
                // Whoever removed them (this join or another caller), count the room again.
                let swept = self.sweep_members(&room, &members, timing).await?;
                if !swept.gone.is_empty() {
                    departures.gone.extend(swept.gone);
                    departures.notified = swept.notified;
                }
                continue;
            }
            let present: Vec<&MemberItem> = members
                .iter()
                .filter(|member| member.expires_at_ms > timing.now)
                .collect();
            if present.len() >= capacity {
                return Err(StoreError::RoomFull);
            }
            let mut values = HashMap::from([
                (":new".to_owned(), s(ulid::Ulid::new().to_string())),
                (":expiresMs".to_owned(), n(timing.now + life)),
                (":expires".to_owned(), n(ttl_seconds(timing.now + life))),
            ]);
            let condition = match version {
                Some(version) => {
                    values.insert(":old".to_owned(), s(version));
                    "#version = :old"
                }
                None => "attribute_not_exists(pk)",
            };
            let update = built(
                Update::builder()
                    .table_name(&self.table)
                    .set_key(Some(key(room_pk(&room), ROOM_SK.to_owned())))
                    .update_expression(format!(
                        "SET #version = :new, {EXPIRES_AT_MS} = :expiresMs, {EXPIRES_AT} = :expires"
                    ))
                    .condition_expression(condition)
                    .expression_attribute_names("#version", ROOM_VERSION)
                    .set_expression_attribute_values(Some(values))
                    .build(),
            )?;
            let newcomer = MemberItem::new_item(&room, &peer, name.as_deref(), timing.now, life);
            let transaction = vec![
                TransactWriteItem::builder().update(update).build(),
                conditional_put(&self.table, newcomer, "attribute_not_exists(pk)", None)?,
            ];
            self.count_write(transaction.len());
            let result = self
                .client
                .transact_write_items()
                .set_transact_items(Some(transaction))
                .send()
                .await;
            match result {
                Ok(_) => {}
                // Another join changed the room since it was read: count again.
                Err(error) if cancellation(&error).is_some() => continue,
                Err(error) => return Err(unavailable(error)),
            }
            let others: Vec<Member> = present
                .iter()
                .map(|member| Member {
                    peer: member.peer.clone(),
                    name: member.name.clone(),
                })
                .collect();
            let recipients: Vec<PeerId> = others.iter().map(|member| member.peer.clone()).collect();
            self.notify(
                &room,
                &peer,
                &recipients,
                MessageKind::PeerJoined,
                peer_joined_data(name.as_deref()),
                timing,
            )
            .await?;
            return Ok(Joined { others, departures });
        }
        Err(unavailable_because(
            "the room kept changing during the join",
        ))
    }

    async fn post(&self, request: PostRequest) -> Result<Posted, StoreError> {
        self.post_with(request, None).await
    }

    async fn touch(
        &self,
        room: &RoomId,
        peer: &PeerId,
        acked: Seq,
        now: Millis,
    ) -> Result<Seq, StoreError> {
        const PRESENT: &str = "SET lastSeen = :now, expiresAtMs = :now + lifeMs, expiresAt = :nowSeconds + lifeSeconds";
        const ALIVE: &str = "attribute_exists(pk) AND expiresAtMs > :now";
        let member_key = key(room_pk(room), member_sk(peer));
        let update = |expression: String, condition: String| {
            self.count_write(1);
            self.client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(member_key.clone()))
                .update_expression(expression)
                .condition_expression(condition)
                .expression_attribute_values(":now", n(now))
                .expression_attribute_values(":nowSeconds", n(ttl_seconds(now)))
                .return_values(ReturnValue::AllNew)
        };
        // The usual poll acknowledges what it read, a number between the stored
        // acknowledgement and the head: one request.
        let usual = update(
            format!("{PRESENT}, ackedSeq = :acked"),
            format!("{ALIVE} AND ackedSeq <= :acked AND lastSeq >= :acked"),
        )
        .expression_attribute_values(":acked", n(acked))
        .send()
        .await;
        let output = match usual {
            Ok(output) => output,
            Err(error) if condition_failed(&error) => {
                match update(PRESENT.to_owned(), ALIVE.to_owned()).send().await {
                    Ok(output) => output,
                    Err(error) if condition_failed(&error) => return Err(StoreError::PeerGone),
                    Err(error) => return Err(unavailable(error)),
                }
            }
            Err(error) => return Err(unavailable(error)),
        };
        let item = output.attributes.unwrap_or_default();
        let head: Seq = get_n(&item, member::LAST_SEQ)?;
        let stored: Seq = get_n(&item, member::ACKED_SEQ)?;
        // A cursor beyond the head acknowledges the head.
        let target = acked.min(head);
        if target > stored {
            self.count_write(1);
            let result = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(member_key))
                .update_expression("SET ackedSeq = :acked")
                .condition_expression("ackedSeq < :acked")
                .expression_attribute_values(":acked", n(target))
                .send()
                .await;
            if let Err(error) = result
                && !condition_failed(&error)
            {
                return Err(unavailable(error));
            }
        }
        Ok(head)
    }

    async fn read(
        &self,
        room: &RoomId,
        peer: &PeerId,
        after: Seq,
        limit: usize,
        now: Millis,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        self.read_inbox(room, peer, after, limit, now).await
    }

    async fn sweep(&self, room: &RoomId, timing: Timing) -> Result<Departures, StoreError> {
        let (_, members) = self.room_view(room).await?;
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
