//! The embedded store: one SQLite file, shared safely by every process that opens it (the
//! standalone server, or each function under `cargo lambda watch`).
//!
//! Every change runs in one `BEGIN IMMEDIATE` transaction on the process's one write
//! connection, which takes SQLite's write lock up front: sequence numbers are assigned and
//! messages inserted under that lock, so an inbox's sequence commits in order and a reader
//! can never see a gap. Reads, the sweep's pre-check and housekeeping's look-ups use a small
//! pool of read-only connections: WAL lets them proceed while a write (this process's or
//! another's) holds or waits for the lock. A committed transaction survives the process being
//! killed.
//!
//! Errors: busy, locked and a full disk are [`StoreError::Unavailable`] (a retry can succeed);
//! every other SQLite error (a read-only or damaged file, a bug) is [`StoreError::Failed`].

mod housekeeping;
mod schema;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use rusqlite::{
    Connection, ErrorCode, OptionalExtension, Transaction, TransactionBehavior, params,
};

pub use self::schema::SCHEMA_VERSION;
use super::{
    Collected, Departures, Doorbell, InboxRead, JoinRequest, Joined, Member, PollRecord,
    PostRequest, Posted, Presence, ReadLimit, Seq, SpentPosts, Store, StoreError, Timing, Waiting,
    distinct_recipients, fits_in_inbox, resolve_recipients,
};
use crate::clock::{Millis, duration_millis};
use crate::ids::{MessageId, PeerId, RoomId};
use crate::message::{LeaveReason, MessageKind, StoredMessage, peer_joined_data};

/// Idle read connections kept open for the next read.
const IDLE_READERS: usize = 4;

/// The SQLite implementation of [`Store`].
#[derive(Clone)]
pub struct SqliteStore {
    /// Taken asynchronously, so writes queued behind a slow lock wait without holding a
    /// blocking thread that a read could use.
    writer: Arc<tokio::sync::Mutex<Connection>>,
    readers: Arc<ReadPool>,
    /// Who this process is in the housekeeping lease.
    holder: String,
}

/// Read-only connections, opened on demand and kept while idle (up to [`IDLE_READERS`]).
struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl ReadPool {
    fn take(&self) -> Result<Connection, StoreError> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop();
        match idle {
            Some(connection) => Ok(connection),
            None => schema::open_reader(&self.path),
        }
    }

    fn give_back(&self, connection: Connection) {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if idle.len() < IDLE_READERS {
            idle.push(connection);
        }
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`. Refuses a file it cannot write, one
    /// that cannot use WAL, and one written by a newer release, each with a message that says
    /// what to do.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let writer = schema::open_writer(path)?;
        let readers = ReadPool {
            path: path.to_owned(),
            idle: Mutex::new(Vec::new()),
        };
        // Fail now, not at the first poll, if the file cannot be read that way.
        readers.give_back(readers.take()?);
        Ok(Self {
            writer: Arc::new(tokio::sync::Mutex::new(writer)),
            readers: Arc::new(readers),
            holder: ulid::Ulid::new().to_string(),
        })
    }

    /// Runs `work` on the write connection off the async runtime.
    async fn with_writer<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let mut connection = Arc::clone(&self.writer).lock_owned().await;
        tokio::task::spawn_blocking(move || work(&mut connection))
            .await
            .map_err(|error| StoreError::Failed(Box::new(error)))?
    }

    /// Runs `work` in a write transaction, committed only if it succeeds.
    async fn write<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.with_writer(move |connection| {
            let transaction = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(store_error)?;
            let result = work(&transaction)?;
            transaction.commit().map_err(store_error)?;
            Ok(result)
        })
        .await
    }

    /// Runs `work` in a read transaction (one consistent snapshot) on a read connection.
    async fn read_with<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let readers = Arc::clone(&self.readers);
        tokio::task::spawn_blocking(move || {
            let mut connection = readers.take()?;
            let result = connection
                .transaction()
                .map_err(store_error)
                .and_then(|transaction| work(&transaction));
            // The transaction has ended (rolled back on drop: it only read).
            readers.give_back(connection);
            result
        })
        .await
        .map_err(|error| StoreError::Failed(Box::new(error)))?
    }
}

/// Busy, locked and a full disk can pass; anything else will not mend on a retry.
fn store_error(error: rusqlite::Error) -> StoreError {
    let transient = matches!(
        error.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked | ErrorCode::DiskFull)
    );
    if transient {
        StoreError::Unavailable(Box::new(error))
    } else {
        StoreError::Failed(Box::new(error))
    }
}

fn parse_id<T>(
    parse: fn(&str) -> Result<T, crate::ids::InvalidId>,
    text: &str,
) -> Result<T, StoreError> {
    parse(text).map_err(|error| StoreError::Corrupt(format!("stored id {text:?}: {error}")))
}

fn members(transaction: &Transaction<'_>, room: &RoomId) -> Result<Vec<Member>, StoreError> {
    let mut statement = transaction
        .prepare_cached("SELECT peer, name FROM members WHERE room = ?1 ORDER BY joined_at, peer")
        .map_err(store_error)?;
    let rows = statement
        .query_map(params![room.as_str()], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, Option<String>>(1)?))
        })
        .map_err(store_error)?;
    rows.map(|row| {
        let (peer, name) = row.map_err(store_error)?;
        Ok(Member {
            peer: parse_id(PeerId::parse, &peer)?,
            name,
        })
    })
    .collect()
}

/// Where those of `peers` whose polls recorded a wake-up address wait.
fn doorbells(
    transaction: &Transaction<'_>,
    room: &RoomId,
    peers: &[PeerId],
) -> Result<Vec<Doorbell>, StoreError> {
    if peers.is_empty() {
        return Ok(Vec::new());
    }
    let mut statement = transaction
        .prepare_cached(
            "SELECT peer, waits_at FROM members WHERE room = ?1 AND waits_at IS NOT NULL",
        )
        .map_err(store_error)?;
    let rows = statement
        .query_map(params![room.as_str()], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })
        .map_err(store_error)?;
    let mut found = Vec::new();
    for row in rows {
        let (peer, address) = row.map_err(store_error)?;
        let peer = parse_id(PeerId::parse, &peer)?;
        if peers.contains(&peer) {
            found.push(Doorbell::wake(peer, address));
        }
    }
    Ok(found)
}

/// The poll a member row records, if any: rows from before poll ids have none.
fn recorded_poll(
    transaction: &Transaction<'_>,
    room: &RoomId,
    peer: &PeerId,
) -> Result<Option<PollRecord>, StoreError> {
    let record: Option<(Option<String>, Option<String>, Millis)> = transaction
        .prepare_cached(
            "SELECT poll_id, waits_at, poll_until FROM members WHERE room = ?1 AND peer = ?2",
        )
        .map_err(store_error)?
        .query_row(params![room.as_str(), peer.as_str()], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })
        .optional()
        .map_err(store_error)?;
    Ok(match record {
        Some((Some(poll), Some(address), until)) => Some(PollRecord {
            poll,
            address,
            until,
        }),
        _ => None,
    })
}

/// Appends one message to `recipient`'s inbox at its next sequence number.
fn enqueue(
    transaction: &Transaction<'_>,
    room: &RoomId,
    recipient: &PeerId,
    message: (&MessageId, &PeerId, MessageKind, &str),
    timing: Timing,
) -> Result<(), StoreError> {
    let (id, sender, kind, data) = message;
    let seq: i64 = transaction
        .prepare_cached(
            "UPDATE members SET last_seq = last_seq + 1, last_activity = ?3
             WHERE room = ?1 AND peer = ?2 RETURNING last_seq",
        )
        .map_err(store_error)?
        .query_row(
            params![room.as_str(), recipient.as_str(), timing.now],
            |row| row.get(0),
        )
        .map_err(store_error)?;
    transaction
        .prepare_cached(
            "INSERT INTO messages (room, recipient, seq, id, sender, kind, data, sent_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )
        .map_err(store_error)?
        .execute(params![
            room.as_str(),
            recipient.as_str(),
            seq,
            id.as_str(),
            sender.as_str(),
            kind.as_str(),
            data,
            timing.now,
            timing.expires_at
        ])
        .map_err(store_error)?;
    Ok(())
}

/// What the store keeps on a room beyond its members: the join limit's theoretical arrival
/// time and the posts departed members made in a window still open.
#[derive(Default)]
struct RoomLimits {
    join_tat: Option<Millis>,
    spent: SpentPosts,
}

fn room_limits(transaction: &Transaction<'_>, room: &RoomId) -> Result<RoomLimits, StoreError> {
    let row: Option<(Millis, Millis, i64)> = transaction
        .prepare_cached("SELECT join_tat, spent_window, spent_count FROM rooms WHERE room = ?1")
        .map_err(store_error)?
        .query_row(params![room.as_str()], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })
        .optional()
        .map_err(store_error)?;
    Ok(
        row.map_or_else(RoomLimits::default, |(join_tat, window, count)| {
            RoomLimits {
                join_tat: Some(join_tat),
                spent: SpentPosts {
                    window,
                    count: u64::try_from(count).unwrap_or(0),
                },
            }
        }),
    )
}

/// Writes a room's limits; the row expires once it says nothing more than a missing one (the
/// join budget full again, the spent window closed), for housekeeping to delete.
fn save_room_limits(
    transaction: &Transaction<'_>,
    room: &RoomId,
    limits: &RoomLimits,
    post_window_ms: Millis,
) -> Result<(), StoreError> {
    let join_tat = limits.join_tat.unwrap_or(0);
    let expires_at = join_tat.max(limits.spent.window.saturating_add(post_window_ms));
    transaction
        .prepare_cached(
            "INSERT INTO rooms (room, join_tat, spent_window, spent_count, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (room) DO UPDATE SET join_tat = excluded.join_tat,
                 spent_window = excluded.spent_window, spent_count = excluded.spent_count,
                 expires_at = excluded.expires_at",
        )
        .map_err(store_error)?
        .execute(params![
            room.as_str(),
            join_tat,
            limits.spent.window,
            i64::try_from(limits.spent.count).unwrap_or(i64::MAX),
            expires_at
        ])
        .map_err(store_error)?;
    Ok(())
}

/// Removes `gone` from the room with its inbox and tells the remaining members. The posts each
/// made in its flood-limit window stay on the room for the next member to join.
fn depart(
    transaction: &Transaction<'_>,
    room: &RoomId,
    gone: Vec<PeerId>,
    reason: LeaveReason,
    timing: Timing,
) -> Result<Departures, StoreError> {
    let mut limits = None;
    for peer in &gone {
        let spent: Option<(Millis, i64)> = transaction
            .prepare_cached(
                "DELETE FROM members WHERE room = ?1 AND peer = ?2
                 RETURNING rate_window, rate_count",
            )
            .map_err(store_error)?
            .query_row(params![room.as_str(), peer.as_str()], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .optional()
            .map_err(store_error)?;
        if let Some((window, count)) = spent {
            let limits = match &mut limits {
                Some(limits) => limits,
                None => limits.insert(room_limits(transaction, room)?),
            };
            let leaving = SpentPosts {
                window,
                count: u64::try_from(count).unwrap_or(0),
            };
            limits.spent = limits
                .spent
                .keep(leaving, timing.now, timing.post_window_ms);
        }
        transaction
            .prepare_cached("DELETE FROM messages WHERE room = ?1 AND recipient = ?2")
            .map_err(store_error)?
            .execute(params![room.as_str(), peer.as_str()])
            .map_err(store_error)?;
    }
    if let Some(limits) = &limits {
        save_room_limits(transaction, room, limits, timing.post_window_ms)?;
    }
    if gone.is_empty() {
        return Ok(Departures::default());
    }
    let notified: Vec<PeerId> = members(transaction, room)?
        .into_iter()
        .map(|member| member.peer)
        .collect();
    let data = reason.data();
    for peer in &gone {
        let id = MessageId::mint();
        for recipient in &notified {
            enqueue(
                transaction,
                room,
                recipient,
                (&id, peer, MessageKind::PeerLeft, &data),
                timing,
            )?;
        }
    }
    let doorbells = doorbells(transaction, room, &notified)?;
    Ok(Departures {
        gone,
        notified,
        doorbells,
        stale_at: None,
    })
}

fn sweep(
    transaction: &Transaction<'_>,
    room: &RoomId,
    timing: Timing,
) -> Result<Departures, StoreError> {
    let stale: Vec<String> = transaction
        .prepare_cached(
            "SELECT peer FROM members WHERE room = ?1 AND last_seen < ?2 ORDER BY joined_at, peer",
        )
        .map_err(store_error)?
        .query_map(params![room.as_str(), timing.stale_before], |row| {
            row.get(0)
        })
        .map_err(store_error)?
        .collect::<Result<_, _>>()
        .map_err(store_error)?;
    let stale = stale
        .iter()
        .map(|peer| parse_id(PeerId::parse, peer))
        .collect::<Result<_, _>>()?;
    depart(transaction, room, stale, LeaveReason::Timeout, timing)
}

/// Message ids already given to `sender`'s client ids that are still remembered.
fn previous_ids(
    transaction: &Transaction<'_>,
    request: &PostRequest,
) -> Result<Vec<Option<MessageId>>, StoreError> {
    let mut in_this_post: HashMap<&str, MessageId> = HashMap::new();
    let mut lookup = transaction
        .prepare_cached(
            "SELECT message_id FROM sent_ids
             WHERE room = ?1 AND sender = ?2 AND client_id = ?3 AND expires_at > ?4",
        )
        .map_err(store_error)?;
    let mut previous = Vec::with_capacity(request.messages.len());
    for (id, message) in &request.messages {
        let Some(client_id) = &message.client_id else {
            previous.push(None);
            continue;
        };
        if let Some(earlier) = in_this_post.get(client_id.as_str()) {
            previous.push(Some(earlier.clone()));
            continue;
        }
        let stored: Option<String> = lookup
            .query_row(
                params![
                    request.room.as_str(),
                    request.sender.as_str(),
                    client_id.as_str(),
                    request.timing.now
                ],
                |row| row.get(0),
            )
            .optional()
            .map_err(store_error)?;
        match stored {
            Some(stored) => previous.push(Some(parse_id(MessageId::parse, &stored)?)),
            None => {
                in_this_post.insert(client_id.as_str(), id.clone());
                previous.push(None);
            }
        }
    }
    Ok(previous)
}

/// Counts this post in the sender's rate-limit window, opening a new window if the last one
/// has ended; refuses it if the window is full. A refusal rolls the count back with the rest
/// of the transaction.
fn count_post(transaction: &Transaction<'_>, request: &PostRequest) -> Result<(), StoreError> {
    let limit = request.rate_limit;
    let now = request.timing.now;
    let (window_start, count): (i64, i64) = transaction
        .prepare_cached(
            "UPDATE members SET
                 rate_count = CASE WHEN ?3 >= rate_window + ?4 THEN 1 ELSE rate_count + 1 END,
                 rate_window = CASE WHEN ?3 >= rate_window + ?4 THEN ?3 ELSE rate_window END
             WHERE room = ?1 AND peer = ?2 RETURNING rate_window, rate_count",
        )
        .map_err(store_error)?
        .query_row(
            params![
                request.room.as_str(),
                request.sender.as_str(),
                now,
                limit.window_ms
            ],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .map_err(store_error)?;
    if u64::try_from(count).unwrap_or(u64::MAX) > limit.posts {
        return Err(StoreError::RateLimited {
            retry_after: limit.retry_after(window_start, now),
        });
    }
    Ok(())
}

/// Whether `recipient`'s inbox has room for `incoming` more messages. Only unexpired unread
/// messages count: the cheap count (`last_seq - acked_seq`) includes expired ones, so when it
/// says full, the live ones are counted exactly.
fn inbox_has_room(
    transaction: &Transaction<'_>,
    room: &RoomId,
    recipient: &PeerId,
    incoming: u64,
    limit: u64,
    now: Millis,
) -> Result<bool, StoreError> {
    let (head, acked): (i64, i64) = transaction
        .prepare_cached("SELECT last_seq, acked_seq FROM members WHERE room = ?1 AND peer = ?2")
        .map_err(store_error)?
        .query_row(params![room.as_str(), recipient.as_str()], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .map_err(store_error)?;
    let unread = u64::try_from(head - acked).unwrap_or(0);
    if fits_in_inbox(unread, incoming, limit) {
        return Ok(true);
    }
    let live: i64 = transaction
        .prepare_cached(
            "SELECT COUNT(*) FROM messages
             WHERE room = ?1 AND recipient = ?2 AND seq > ?3 AND expires_at > ?4",
        )
        .map_err(store_error)?
        .query_row(
            params![room.as_str(), recipient.as_str(), acked, now],
            |row| row.get(0),
        )
        .map_err(store_error)?;
    Ok(fits_in_inbox(
        u64::try_from(live).unwrap_or(0),
        incoming,
        limit,
    ))
}

fn post(transaction: &Transaction<'_>, request: PostRequest) -> Result<Posted, StoreError> {
    let room = &request.room;
    let previous = previous_ids(transaction, &request)?;
    let ids: Vec<MessageId> = request
        .messages
        .iter()
        .zip(&previous)
        .map(|((id, _), previous)| previous.clone().unwrap_or_else(|| id.clone()))
        .collect();
    let fresh: Vec<_> = request
        .messages
        .iter()
        .zip(&previous)
        .filter(|(_, previous)| previous.is_none())
        .map(|(message, _)| message.clone())
        .collect();
    if fresh.is_empty() {
        // A retry of a post that was stored: its first ids, and no count against the flood
        // limit (as on DynamoDB).
        return Ok(Posted {
            ids,
            recipients: Vec::new(),
            doorbells: Vec::new(),
        });
    }
    let member_ids: Vec<PeerId> = members(transaction, room)?
        .into_iter()
        .map(|member| member.peer)
        .collect();
    let deliveries = resolve_recipients(&member_ids, &request.sender, &fresh)?;
    // A post made only of repeats (a retry) delivers nothing, so it does not count.
    if !fresh.is_empty() {
        count_post(transaction, &request)?;
    }
    let recipients = distinct_recipients(&deliveries);

    for recipient in &recipients {
        let incoming = deliveries
            .iter()
            .filter(|(_, peer)| peer == recipient)
            .count() as u64;
        if !inbox_has_room(
            transaction,
            room,
            recipient,
            incoming,
            request.inbox_limit,
            request.timing.now,
        )? {
            return Err(StoreError::InboxFull(recipient.clone()));
        }
    }
    for (id, message) in &fresh {
        if let Some(client_id) = &message.client_id {
            transaction
                .prepare_cached(
                    "INSERT OR REPLACE INTO sent_ids (room, sender, client_id, message_id, expires_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(store_error)?
                .execute(params![
                    room.as_str(),
                    request.sender.as_str(),
                    client_id.as_str(),
                    id.as_str(),
                    request.timing.expires_at
                ])
                .map_err(store_error)?;
        }
    }
    for (index, recipient) in &deliveries {
        let (id, message) = &fresh[*index];
        enqueue(
            transaction,
            room,
            recipient,
            (id, &request.sender, message.kind, &message.data),
            request.timing,
        )?;
    }
    let doorbells = doorbells(transaction, room, &recipients)?;
    Ok(Posted {
        ids,
        recipients,
        doorbells,
    })
}

/// Reads `peer`'s inbox after `after` in one snapshot: its head and the unexpired messages
/// `limit` admits. Rows are stepped one at a time, so a read cut short by the limit reads no
/// further row than the one that did not fit.
fn read_inbox(
    transaction: &Transaction<'_>,
    room: &RoomId,
    peer: &PeerId,
    after: Seq,
    limit: ReadLimit,
    now: Millis,
) -> Result<InboxRead, StoreError> {
    let after_number = i64::try_from(after).unwrap_or(i64::MAX);
    let head: Option<i64> = transaction
        .prepare_cached("SELECT last_seq FROM members WHERE room = ?1 AND peer = ?2")
        .map_err(store_error)?
        .query_row(params![room.as_str(), peer.as_str()], |row| row.get(0))
        .optional()
        .map_err(store_error)?;
    let mut statement = transaction
        .prepare_cached(
            "SELECT seq, id, sender, kind, data, sent_at FROM messages
             WHERE room = ?1 AND recipient = ?2 AND seq > ?3 AND expires_at > ?4
             ORDER BY seq LIMIT ?5",
        )
        .map_err(store_error)?;
    let mut rows = statement
        .query(params![
            room.as_str(),
            peer.as_str(),
            after_number,
            now,
            i64::try_from(limit.messages).unwrap_or(i64::MAX)
        ])
        .map_err(store_error)?;
    let mut collected = Collected::new(limit);
    // Whether the limit ended the read rather than the inbox.
    let mut cut = false;
    loop {
        // Checked before stepping, so a full read steps no further row.
        if collected.is_full() {
            cut = true;
            break;
        }
        let Some(row) = rows.next().map_err(store_error)? else {
            break;
        };
        let seq: i64 = row.get(0).map_err(store_error)?;
        let id: String = row.get(1).map_err(store_error)?;
        let sender: String = row.get(2).map_err(store_error)?;
        let kind: String = row.get(3).map_err(store_error)?;
        let message = StoredMessage {
            seq: Seq::try_from(seq).map_err(|_| StoreError::Corrupt(format!("sequence {seq}")))?,
            id: parse_id(MessageId::parse, &id)?,
            from: parse_id(PeerId::parse, &sender)?,
            to: peer.clone(),
            kind: MessageKind::parse(&kind)
                .ok_or_else(|| StoreError::Corrupt(format!("kind {kind:?}")))?,
            data: row.get(4).map_err(store_error)?,
            sent_at: row.get(5).map_err(store_error)?,
        };
        if !collected.take(message) {
            cut = true;
            break;
        }
    }
    let last_read = collected
        .messages()
        .last()
        .map_or(after, |message| message.seq);
    // Positions commit in order under the write lock, so when the read ended with the inbox
    // rather than its limit every number up to the head it saw is read or expired.
    let through = if cut {
        last_read
    } else {
        head.and_then(|head| Seq::try_from(head).ok())
            .unwrap_or(0)
            .max(last_read)
    };
    Ok(InboxRead {
        messages: collected.into_messages(),
        through,
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn join(&self, request: JoinRequest) -> Result<Joined, StoreError> {
        self.write(move |transaction| {
            let room = &request.room;
            let departures = sweep(transaction, room, request.timing)?;
            let mut limits = room_limits(transaction, room)?;
            limits.join_tat = Some(
                request
                    .join_rate
                    .admit(limits.join_tat, request.timing.now)
                    .map_err(|retry_after| StoreError::JoinsLimited { retry_after })?,
            );
            let others = members(transaction, room)?;
            if others.len() >= request.capacity {
                return Err(StoreError::RoomFull);
            }
            // The `peer-joined` counts like any message: join/leave cycling cannot flood an
            // inbox past its limit (the `peer-left` that follows a counted join is bounded by it).
            for other in &others {
                if !inbox_has_room(
                    transaction,
                    room,
                    &other.peer,
                    1,
                    request.inbox_limit,
                    request.timing.now,
                )? {
                    return Err(StoreError::InboxFull(other.peer.clone()));
                }
            }
            // The newcomer continues the count of departed members' posts in their window.
            transaction
                .prepare_cached(
                    "INSERT INTO members (room, peer, name, joined_at, last_seen, last_activity,
                         rate_window, rate_count)
                     VALUES (?1, ?2, ?3, ?4, ?4, ?4, ?5, ?6)",
                )
                .map_err(store_error)?
                .execute(params![
                    room.as_str(),
                    request.peer.as_str(),
                    request.name,
                    request.timing.now,
                    limits.spent.window,
                    i64::try_from(limits.spent.count).unwrap_or(i64::MAX)
                ])
                .map_err(store_error)?;
            limits.spent = SpentPosts::default();
            save_room_limits(transaction, room, &limits, request.timing.post_window_ms)?;
            let id = MessageId::mint();
            let data = peer_joined_data(request.name.as_deref());
            for other in &others {
                enqueue(
                    transaction,
                    room,
                    &other.peer,
                    (&id, &request.peer, MessageKind::PeerJoined, &data),
                    request.timing,
                )?;
            }
            let told: Vec<PeerId> = others.iter().map(|other| other.peer.clone()).collect();
            let doorbells = doorbells(transaction, room, &told)?;
            Ok(Joined {
                others,
                departures,
                doorbells,
            })
        })
        .await
    }

    async fn post(&self, request: PostRequest) -> Result<Posted, StoreError> {
        self.write(move |transaction| post(transaction, request))
            .await
    }

    async fn touch_waiting(
        &self,
        room: &RoomId,
        peer: &PeerId,
        acked: Seq,
        now: Millis,
        waiting: Option<Waiting<'_>>,
    ) -> Result<Presence, StoreError> {
        let (room, peer) = (room.clone(), peer.clone());
        let (waits_at, poll_id, poll_until) = match waiting {
            Some(waiting) => (
                Some(waiting.address.to_owned()),
                Some(waiting.poll.to_owned()),
                Some(waiting.until),
            ),
            None => (None, None, None),
        };
        let acked = i64::try_from(acked).unwrap_or(i64::MAX);
        let asked = Instant::now();
        self.write(move |transaction| {
            // Stamped as of when the lock was won: time spent waiting for another writer must
            // not come out of this peer's presence margin.
            let waited = duration_millis(asked.elapsed());
            let seen = now.saturating_add(waited);
            // The poll this one replaces, read under the same write lock as the update.
            let previous = match poll_id {
                Some(_) => recorded_poll(transaction, &room, &peer)?,
                None => None,
            };
            let presence: Option<(i64, Millis)> = transaction
                .prepare_cached(
                    "UPDATE members SET last_seen = MAX(last_seen, ?3),
                         acked_seq = MAX(acked_seq, MIN(?4, last_seq)),
                         waits_at = COALESCE(?5, waits_at),
                         poll_id = COALESCE(?6, poll_id),
                         poll_until = COALESCE(?7, poll_until)
                     WHERE room = ?1 AND peer = ?2 RETURNING last_seq, last_activity",
                )
                .map_err(store_error)?
                .query_row(
                    params![
                        room.as_str(),
                        peer.as_str(),
                        seen,
                        acked,
                        waits_at,
                        poll_id,
                        poll_until
                    ],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()
                .map_err(store_error)?;
            presence
                .map(|(head, last_activity)| Presence {
                    head: Seq::try_from(head).unwrap_or(0),
                    last_activity,
                    previous,
                })
                .ok_or(StoreError::PeerGone)
        })
        .await
    }

    async fn read(
        &self,
        room: &RoomId,
        peer: &PeerId,
        after: Seq,
        limit: ReadLimit,
        now: Millis,
    ) -> Result<InboxRead, StoreError> {
        if limit.messages == 0 {
            return Ok(InboxRead {
                messages: Vec::new(),
                through: after,
            });
        }
        let (room, peer) = (room.clone(), peer.clone());
        self.read_with(move |transaction| read_inbox(transaction, &room, &peer, after, limit, now))
            .await
    }

    async fn sweep(&self, room: &RoomId, timing: Timing) -> Result<Departures, StoreError> {
        // Every waiting poll sweeps its room every few seconds, and almost always finds
        // nobody stale: look first without taking the write lock.
        let check_room = room.clone();
        let oldest: Option<Millis> = self
            .read_with(move |transaction| {
                transaction
                    .prepare_cached("SELECT MIN(last_seen) FROM members WHERE room = ?1")
                    .map_err(store_error)?
                    .query_row(params![check_room.as_str()], |row| row.get(0))
                    .map_err(store_error)
            })
            .await?;
        let anyone_stale = oldest.is_some_and(|oldest| oldest < timing.stale_before);
        if !anyone_stale {
            return Ok(Departures {
                stale_at: oldest.map(|oldest| oldest + (timing.now - timing.stale_before)),
                ..Departures::default()
            });
        }
        let room = room.clone();
        self.write(move |transaction| sweep(transaction, &room, timing))
            .await
    }

    async fn leave(
        &self,
        room: &RoomId,
        peer: &PeerId,
        timing: Timing,
    ) -> Result<Departures, StoreError> {
        let (room, peer) = (room.clone(), peer.clone());
        self.write(move |transaction| {
            let present = members(transaction, &room)?
                .iter()
                .any(|member| member.peer == peer);
            let gone = if present { vec![peer] } else { Vec::new() };
            depart(transaction, &room, gone, LeaveReason::Left, timing)
        })
        .await
    }

    async fn housekeeping(&self, timing: Timing) -> Result<Vec<(RoomId, Departures)>, StoreError> {
        self.housekeep(timing).await
    }

    async fn health(&self) -> Result<(), StoreError> {
        // A real write, so a read-only file, a full disk or a lock held for good shows here.
        self.write(|transaction| {
            transaction
                .prepare_cached(
                    "INSERT INTO health_probe (id, written_at) VALUES (1, ?1)
                     ON CONFLICT (id) DO UPDATE SET written_at = excluded.written_at",
                )
                .map_err(store_error)?
                .execute(params![crate::clock::now_millis()])
                .map_err(store_error)?;
            Ok(())
        })
        .await
    }
}
