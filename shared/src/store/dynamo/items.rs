//! The table's items: their keys, and the mapping between items and the store's types. Nothing
//! outside this file knows an attribute name.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use crate::clock::Millis;
use crate::ids::{MessageId, PeerId, RoomId};
use crate::message::{MessageKind, StoredMessage};
use crate::store::{Seq, SpentPosts, StoreError};

/// One item as the SDK holds it.
pub(super) type Item = HashMap<String, AttributeValue>;

pub(super) const PK: &str = "pk";
pub(super) const SK: &str = "sk";
/// The TTL attribute (Unix seconds) that DynamoDB deletes by, lazily.
pub(super) const EXPIRES_AT: &str = "expiresAt";
/// The exact expiry (Unix milliseconds) every read filters by.
pub(super) const EXPIRES_AT_MS: &str = "expiresAtMs";

pub(super) const ROOM_SK: &str = "#ROOM";
const MEMBER_PREFIX: &str = "PEER#";
const SEQ_PREFIX: &str = "SEQ#";

pub(super) fn room_pk(room: &RoomId) -> String {
    format!("ROOM#{room}")
}

pub(super) fn member_sk(peer: &PeerId) -> String {
    format!("{MEMBER_PREFIX}{peer}")
}

pub(super) fn inbox_pk(room: &RoomId, peer: &PeerId) -> String {
    format!("INBOX#{room}#{peer}")
}

/// Zero-padded so that the sort key orders like the number.
pub(super) fn seq_sk(seq: Seq) -> String {
    format!("{SEQ_PREFIX}{seq:020}")
}

pub(super) fn sent_pk(room: &RoomId, sender: &PeerId) -> String {
    format!("SENT#{room}#{sender}")
}

pub(super) fn sent_sk(client_id: &str) -> String {
    format!("ID#{client_id}")
}

/// The TTL attribute for an exact expiry: never earlier than it, so TTL cannot delete an item
/// that reads still count as live.
pub(super) fn ttl_seconds(millis: Millis) -> i64 {
    millis.div_euclid(1000) + 1
}

pub(super) fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub(super) fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

pub(super) fn key(pk: String, sk: String) -> Item {
    HashMap::from([(PK.to_owned(), s(pk)), (SK.to_owned(), s(sk))])
}

/// The two expiry attributes for an item that expires at `millis`.
pub(super) fn expiry(item: &mut Item, millis: Millis) {
    item.insert(EXPIRES_AT_MS.to_owned(), n(millis));
    item.insert(EXPIRES_AT.to_owned(), n(ttl_seconds(millis)));
}

fn corrupt(what: &str) -> StoreError {
    // Names the attribute only: item contents are never logged or returned.
    StoreError::Corrupt(format!("DynamoDB item with a missing or malformed {what}"))
}

pub(super) fn get_s<'a>(item: &'a Item, name: &str) -> Result<&'a str, StoreError> {
    match item.get(name) {
        Some(AttributeValue::S(value)) => Ok(value),
        _ => Err(corrupt(name)),
    }
}

pub(super) fn get_opt_s<'a>(item: &'a Item, name: &str) -> Result<Option<&'a str>, StoreError> {
    match item.get(name) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(AttributeValue::S(value)) => Ok(Some(value)),
        _ => Err(corrupt(name)),
    }
}

pub(super) fn get_n<T: std::str::FromStr>(item: &Item, name: &str) -> Result<T, StoreError> {
    match item.get(name) {
        Some(AttributeValue::N(value)) => value.parse().map_err(|_| corrupt(name)),
        _ => Err(corrupt(name)),
    }
}

/// Whether an item with an exact expiry is past it (or has none, which no writer leaves).
pub(super) fn expired(item: &Item, now: Millis) -> bool {
    get_n::<Millis>(item, EXPIRES_AT_MS).map_or(true, |at| at <= now)
}

/// Where those of `peers` among `members` wait, for those whose polls recorded it.
pub(super) fn doorbells(members: &[MemberItem], peers: &[PeerId]) -> Vec<crate::store::Doorbell> {
    members
        .iter()
        .filter(|member| peers.contains(&member.peer))
        .filter_map(|member| {
            Some(crate::store::Doorbell::wake(
                member.peer.clone(),
                member.waits_at.clone()?,
            ))
        })
        .collect()
}

/// The poll a member item records (`pollId`, `waitsAt`, `pollUntil`), if it records one:
/// items written before polls had ids have none.
pub(super) fn poll_record(item: &Item) -> Result<Option<crate::store::PollRecord>, StoreError> {
    let (Some(poll), Some(address)) = (
        get_opt_s(item, member::POLL_ID)?,
        get_opt_s(item, member::WAITS_AT)?,
    ) else {
        return Ok(None);
    };
    Ok(Some(crate::store::PollRecord {
        poll: poll.to_owned(),
        address: address.to_owned(),
        until: get_n(item, member::POLL_UNTIL)?,
    }))
}

/// Attributes of the room item besides its version token and expiry.
pub(super) mod room {
    /// The join limit's theoretical arrival time (see [`crate::limits::RoomJoinRate`]).
    pub const JOIN_TAT: &str = "joinTat";
    /// Departed members' busiest open flood-limit window, and the posts made in it.
    pub const SPENT_WINDOW: &str = "spentWindow";
    pub const SPENT_COUNT: &str = "spentCount";
}

/// The room item's limits: what a join reads to admit a newcomer, and a departure updates.
#[derive(Clone, Debug, Default)]
pub(super) struct RoomLimits {
    pub join_tat: Option<Millis>,
    pub spent: SpentPosts,
    pub expires_at_ms: Millis,
}

impl RoomLimits {
    pub fn from_item(item: &Item) -> Result<Self, StoreError> {
        let optional = |name: &str| match item.get(name) {
            None => Ok(None),
            Some(_) => get_n::<Millis>(item, name).map(Some),
        };
        Ok(Self {
            join_tat: optional(room::JOIN_TAT)?,
            spent: SpentPosts {
                window: optional(room::SPENT_WINDOW)?.unwrap_or(0),
                count: optional(room::SPENT_COUNT)?
                    .map_or(0, |count| u64::try_from(count).unwrap_or(0)),
            },
            expires_at_ms: optional(EXPIRES_AT_MS)?.unwrap_or(0),
        })
    }
}

/// The posts a departed member item (as a delete returned it) made in its flood-limit window.
pub(super) fn spent_posts(item: &Item) -> SpentPosts {
    SpentPosts {
        window: get_n(item, member::RATE_WINDOW).unwrap_or(0),
        count: get_n(item, member::RATE_COUNT).unwrap_or(0),
    }
}

/// A room member, as the member item holds it.
#[derive(Clone, Debug)]
pub(super) struct MemberItem {
    pub peer: PeerId,
    pub name: Option<String>,
    pub joined_at: Millis,
    pub last_seen: Millis,
    /// The inbox head: the newest sequence number allocated.
    pub last_seq: Seq,
    pub acked_seq: Seq,
    pub expires_at_ms: Millis,
    /// The wake-up address its latest poll recorded.
    pub waits_at: Option<String>,
}

pub(super) mod member {
    pub const NAME: &str = "name";
    pub const JOINED_AT: &str = "joinedAt";
    pub const LAST_SEEN: &str = "lastSeen";
    pub const LAST_SEQ: &str = "lastSeq";
    pub const LAST_SEQ_AT: &str = "lastSeqAt";
    pub const ACKED_SEQ: &str = "ackedSeq";
    pub const WAITS_AT: &str = "waitsAt";
    /// The latest poll's id and when its wait ends (Unix ms), recorded with `waitsAt`: a
    /// newer poll learns of it from the same update (see [`crate::store::PollRecord`]).
    /// Items from before have neither, and read as "no earlier poll".
    pub const POLL_ID: &str = "pollId";
    pub const POLL_UNTIL: &str = "pollUntil";
    /// The flood limit: when the member's window opened, and its posts in it.
    pub const RATE_WINDOW: &str = "rateWindow";
    pub const RATE_COUNT: &str = "rateCount";
    /// How long the member item lives after a poll (presence timeout + message TTL), in ms and
    /// in whole seconds: `touch` only knows the time, so the item carries its own lifetime.
    pub const LIFE_MS: &str = "lifeMs";
    pub const LIFE_SECONDS: &str = "lifeSeconds";
}

impl MemberItem {
    pub fn is_member_item(item: &Item) -> bool {
        matches!(item.get(SK), Some(AttributeValue::S(sk)) if sk.starts_with(MEMBER_PREFIX))
    }

    pub fn from_item(item: &Item) -> Result<Self, StoreError> {
        let sk = get_s(item, SK)?;
        let peer = sk
            .strip_prefix(MEMBER_PREFIX)
            .and_then(|peer| PeerId::parse(peer).ok())
            .ok_or_else(|| corrupt(SK))?;
        Ok(Self {
            peer,
            name: get_opt_s(item, member::NAME)?.map(str::to_owned),
            joined_at: get_n(item, member::JOINED_AT)?,
            last_seen: get_n(item, member::LAST_SEEN)?,
            last_seq: get_n(item, member::LAST_SEQ)?,
            acked_seq: get_n(item, member::ACKED_SEQ)?,
            expires_at_ms: get_n(item, EXPIRES_AT_MS)?,
            waits_at: get_opt_s(item, member::WAITS_AT)?.map(str::to_owned),
        })
    }

    /// The member item of a newcomer whose item lives `life_ms` after each poll, and whose
    /// flood-limit count continues `spent`.
    pub fn new_item(
        room: &RoomId,
        peer: &PeerId,
        name: Option<&str>,
        now: Millis,
        life_ms: Millis,
        spent: SpentPosts,
    ) -> Item {
        let mut item = key(room_pk(room), member_sk(peer));
        if spent.count > 0 {
            item.insert(member::RATE_WINDOW.to_owned(), n(spent.window));
            item.insert(member::RATE_COUNT.to_owned(), n(spent.count));
        }
        if let Some(name) = name {
            item.insert(member::NAME.to_owned(), s(name));
        }
        for attribute in [member::JOINED_AT, member::LAST_SEEN, member::LAST_SEQ_AT] {
            item.insert(attribute.to_owned(), n(now));
        }
        item.insert(member::LAST_SEQ.to_owned(), n(0));
        item.insert(member::ACKED_SEQ.to_owned(), n(0));
        item.insert(member::LIFE_MS.to_owned(), n(life_ms));
        item.insert(member::LIFE_SECONDS.to_owned(), n(ttl_seconds(life_ms)));
        expiry(&mut item, now + life_ms);
        item
    }
}

/// Attributes of inbox items. An inbox item covers the consecutive sequence numbers
/// `first..=last` and is keyed by `last`; it holds either messages (one per number, all from
/// `from`) or nothing (`void`: a tombstone).
pub(super) mod inbox {
    pub const FIRST: &str = "first";
    pub const COUNT: &str = "count";
    pub const FROM: &str = "from";
    pub const SENT_AT: &str = "sentAt";
    pub const MESSAGES: &str = "messages";
    pub const VOID: &str = "void";
    pub const ID: &str = "id";
    pub const KIND: &str = "kind";
    pub const DATA: &str = "data";
}

/// One message of an inbox item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Entry {
    pub id: MessageId,
    pub kind: MessageKind,
    pub data: String,
}

/// An inbox item, decoded.
#[derive(Clone, Debug)]
pub(super) struct InboxItem {
    pub first: Seq,
    pub last: Seq,
    /// `None` for a tombstone or an expired item: numbers that will never hold a message.
    pub messages: Option<(PeerId, Millis, Vec<Entry>)>,
    pub expires_at_ms: Millis,
}

pub(super) fn message_item(
    inbox_pk: String,
    first: Seq,
    from: &PeerId,
    sent_at: Millis,
    expires_at: Millis,
    entries: &[Entry],
) -> Item {
    let count = entries.len() as u64;
    let mut item = key(inbox_pk, seq_sk(first + count - 1));
    item.insert(inbox::FIRST.to_owned(), n(first));
    item.insert(inbox::COUNT.to_owned(), n(count));
    item.insert(inbox::FROM.to_owned(), s(from.as_str()));
    item.insert(inbox::SENT_AT.to_owned(), n(sent_at));
    let messages = entries
        .iter()
        .map(|entry| {
            AttributeValue::M(HashMap::from([
                (inbox::ID.to_owned(), s(entry.id.as_str())),
                (inbox::KIND.to_owned(), s(entry.kind.as_str())),
                (inbox::DATA.to_owned(), s(entry.data.as_str())),
            ]))
        })
        .collect();
    item.insert(inbox::MESSAGES.to_owned(), AttributeValue::L(messages));
    expiry(&mut item, expires_at);
    item
}

/// Whether `item` is a message item holding exactly `entries` (compared by their ids, which
/// are minted afresh for every post).
pub(super) fn holds_entries(item: &Item, entries: &[Entry]) -> bool {
    let Some(AttributeValue::L(list)) = item.get(inbox::MESSAGES) else {
        return false;
    };
    list.len() == entries.len()
        && list.iter().zip(entries).all(|(value, entry)| {
            matches!(value, AttributeValue::M(stored)
                if matches!(stored.get(inbox::ID), Some(AttributeValue::S(id)) if id == entry.id.as_str()))
        })
}

/// A tombstone for `first..=last`: the numbers will never hold a message.
pub(super) fn void_item(inbox_pk: String, first: Seq, last: Seq, expires_at: Millis) -> Item {
    let mut item = key(inbox_pk, seq_sk(last));
    item.insert(inbox::FIRST.to_owned(), n(first));
    item.insert(inbox::COUNT.to_owned(), n(last - first + 1));
    item.insert(inbox::VOID.to_owned(), AttributeValue::Bool(true));
    expiry(&mut item, expires_at);
    item
}

impl InboxItem {
    pub fn from_item(item: &Item, now: Millis) -> Result<Self, StoreError> {
        let last = get_s(item, SK)?
            .strip_prefix(SEQ_PREFIX)
            .and_then(|seq| seq.parse::<Seq>().ok())
            .ok_or_else(|| corrupt(SK))?;
        let first: Seq = get_n(item, inbox::FIRST)?;
        let count: Seq = get_n(item, inbox::COUNT)?;
        if count == 0 || first.checked_add(count - 1) != Some(last) {
            return Err(corrupt(inbox::COUNT));
        }
        let expires_at_ms = get_n(item, EXPIRES_AT_MS)?;
        let void = matches!(item.get(inbox::VOID), Some(AttributeValue::Bool(true)));
        if void || expires_at_ms <= now {
            return Ok(Self {
                first,
                last,
                messages: None,
                expires_at_ms,
            });
        }
        let from = PeerId::parse(get_s(item, inbox::FROM)?).map_err(|_| corrupt(inbox::FROM))?;
        let sent_at = get_n(item, inbox::SENT_AT)?;
        let Some(AttributeValue::L(list)) = item.get(inbox::MESSAGES) else {
            return Err(corrupt(inbox::MESSAGES));
        };
        if list.len() as u64 != count {
            return Err(corrupt(inbox::MESSAGES));
        }
        let entries = list
            .iter()
            .map(|value| {
                let AttributeValue::M(entry) = value else {
                    return Err(corrupt(inbox::MESSAGES));
                };
                Ok(Entry {
                    id: MessageId::parse(get_s(entry, inbox::ID)?)
                        .map_err(|_| corrupt(inbox::ID))?,
                    kind: MessageKind::parse(get_s(entry, inbox::KIND)?)
                        .ok_or_else(|| corrupt(inbox::KIND))?,
                    data: get_s(entry, inbox::DATA)?.to_owned(),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            first,
            last,
            messages: Some((from, sent_at, entries)),
            expires_at_ms,
        })
    }

    /// The message at `seq`, which this item covers, addressed to `to`.
    pub fn message(&self, seq: Seq, to: &PeerId) -> Option<StoredMessage> {
        let (from, sent_at, entries) = self.messages.as_ref()?;
        let entry = entries.get(usize::try_from(seq - self.first).ok()?)?;
        Some(StoredMessage {
            seq,
            id: entry.id.clone(),
            from: from.clone(),
            to: to.clone(),
            kind: entry.kind,
            data: entry.data.clone(),
            sent_at: *sent_at,
        })
    }
}

/// Attributes of idempotency items: the server id a sender's client id was given.
pub(super) const SENT_MESSAGE_ID: &str = "messageId";

pub(super) fn sent_item(
    room: &RoomId,
    sender: &PeerId,
    client_id: &str,
    id: &MessageId,
    expires_at: Millis,
) -> Item {
    let mut item = key(sent_pk(room, sender), sent_sk(client_id));
    item.insert(SENT_MESSAGE_ID.to_owned(), s(id.as_str()));
    expiry(&mut item, expires_at);
    item
}
