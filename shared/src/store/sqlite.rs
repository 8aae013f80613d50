//! The embedded store: one SQLite file, shared safely by every process that opens it (the
//! standalone server, or each function under `cargo lambda watch`).
//!
//! Every change runs in one `BEGIN IMMEDIATE` transaction, which takes SQLite's write lock up
//! front: sequence numbers are assigned and messages inserted under that lock, so an inbox's
//! sequence commits in order and a reader can never see a gap. WAL mode lets reads proceed
//! during writes, and a committed transaction survives the process being killed.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use super::{
    Departures, Doorbell, JoinRequest, Joined, Member, PostRequest, Posted, Seq, Store, StoreError,
    Timing, distinct_recipients, resolve_recipients,
};
use crate::clock::Millis;
use crate::ids::{MessageId, PeerId, RoomId};
use crate::message::{LeaveReason, MessageKind, StoredMessage, peer_joined_data};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS members (
    room TEXT NOT NULL,
    peer TEXT NOT NULL,
    name TEXT,
    joined_at INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    last_seq INTEGER NOT NULL DEFAULT 0,  -- newest message in this peer's inbox
    acked_seq INTEGER NOT NULL DEFAULT 0, -- newest message this peer has confirmed reading
    rate_window INTEGER NOT NULL DEFAULT 0, -- when this peer's current rate-limit window opened
    rate_count INTEGER NOT NULL DEFAULT 0,  -- posts it made in that window
    waits_at TEXT,                          -- wake-up address of its latest poll
    PRIMARY KEY (room, peer)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS members_last_seen ON members (last_seen);
CREATE TABLE IF NOT EXISTS messages (
    room TEXT NOT NULL,
    recipient TEXT NOT NULL,
    seq INTEGER NOT NULL,
    id TEXT NOT NULL,
    sender TEXT NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL,
    sent_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (room, recipient, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS messages_expires_at ON messages (expires_at);
CREATE TABLE IF NOT EXISTS sent_ids (
    room TEXT NOT NULL,
    sender TEXT NOT NULL,
    client_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (room, sender, client_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sent_ids_expires_at ON sent_ids (expires_at);
";

/// The SQLite implementation of [`Store`].
#[derive(Clone)]
pub struct SqliteStore {
    connection: Arc<Mutex<Connection>>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut connection = Connection::open(path).map_err(unavailable)?;
        // Other processes may hold the write lock briefly; wait rather than fail.
        connection
            .busy_timeout(Duration::from_secs(5))
            .map_err(unavailable)?;
        connection
            .execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")
            .map_err(unavailable)?;
        connection.execute_batch(SCHEMA).map_err(unavailable)?;
        migrate(&mut connection)?;
        Ok(Self {
            connection: Arc::new(Mutex::new(connection)),
        })
    }

    /// Runs `work` on the connection off the async runtime.
    async fn with<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let connection = Arc::clone(&self.connection);
        tokio::task::spawn_blocking(move || {
            // A panic mid-transaction rolled it back as it unwound, so the connection is usable.
            let mut connection = connection
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            work(&mut connection)
        })
        .await
        .map_err(|error| StoreError::Unavailable(Box::new(error)))?
    }

    /// Runs `work` in a write transaction, committed only if it succeeds.
    async fn write<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.with(move |connection| {
            let transaction = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(unavailable)?;
            let result = work(&transaction)?;
            transaction.commit().map_err(unavailable)?;
            Ok(result)
        })
        .await
    }
}

/// Columns added to `members` after the first release, for files created before them.
const ADDED_MEMBER_COLUMNS: [(&str, &str); 3] = [
    ("rate_window", "INTEGER NOT NULL DEFAULT 0"),
    ("rate_count", "INTEGER NOT NULL DEFAULT 0"),
    ("waits_at", "TEXT"),
];

/// Brings an older database file up to [`SCHEMA`]. Runs under the write lock, so processes
/// opening the same file at once do not both add a column.
fn migrate(connection: &mut Connection) -> Result<(), StoreError> {
    let transaction = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(unavailable)?;
    let present: Vec<String> = transaction
        .prepare("SELECT name FROM pragma_table_info('members')")
        .map_err(unavailable)?
        .query_map([], |row| row.get(0))
        .map_err(unavailable)?
        .collect::<Result<_, _>>()
        .map_err(unavailable)?;
    for (column, definition) in ADDED_MEMBER_COLUMNS {
        if !present.iter().any(|name| name == column) {
            transaction
                .execute_batch(&format!(
                    "ALTER TABLE members ADD COLUMN {column} {definition}"
                ))
                .map_err(unavailable)?;
        }
    }
    transaction.commit().map_err(unavailable)
}

fn unavailable(error: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(Box::new(error))
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
        .map_err(unavailable)?;
    let rows = statement
        .query_map(params![room.as_str()], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, Option<String>>(1)?))
        })
        .map_err(unavailable)?;
    rows.map(|row| {
        let (peer, name) = row.map_err(unavailable)?;
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
        .map_err(unavailable)?;
    let rows = statement
        .query_map(params![room.as_str()], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })
        .map_err(unavailable)?;
    let mut found = Vec::new();
    for row in rows {
        let (peer, address) = row.map_err(unavailable)?;
        let peer = parse_id(PeerId::parse, &peer)?;
        if peers.contains(&peer) {
            found.push(Doorbell { peer, address });
        }
    }
    Ok(found)
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
            "UPDATE members SET last_seq = last_seq + 1 WHERE room = ?1 AND peer = ?2 RETURNING last_seq",
        )
        .map_err(unavailable)?
        .query_row(params![room.as_str(), recipient.as_str()], |row| row.get(0))
        .map_err(unavailable)?;
    transaction
        .prepare_cached(
            "INSERT INTO messages (room, recipient, seq, id, sender, kind, data, sent_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )
        .map_err(unavailable)?
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
        .map_err(unavailable)?;
    Ok(())
}

/// Removes `gone` from the room with its inbox and tells the remaining members.
fn depart(
    transaction: &Transaction<'_>,
    room: &RoomId,
    gone: Vec<PeerId>,
    reason: LeaveReason,
    timing: Timing,
) -> Result<Departures, StoreError> {
    for peer in &gone {
        transaction
            .prepare_cached("DELETE FROM members WHERE room = ?1 AND peer = ?2")
            .map_err(unavailable)?
            .execute(params![room.as_str(), peer.as_str()])
            .map_err(unavailable)?;
        transaction
            .prepare_cached("DELETE FROM messages WHERE room = ?1 AND recipient = ?2")
            .map_err(unavailable)?
            .execute(params![room.as_str(), peer.as_str()])
            .map_err(unavailable)?;
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
        .map_err(unavailable)?
        .query_map(params![room.as_str(), timing.stale_before], |row| {
            row.get(0)
        })
        .map_err(unavailable)?
        .collect::<Result<_, _>>()
        .map_err(unavailable)?;
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
        .map_err(unavailable)?;
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
            .map_err(unavailable)?;
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
        .map_err(unavailable)?
        .query_row(
            params![
                request.room.as_str(),
                request.sender.as_str(),
                now,
                limit.window_ms
            ],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .map_err(unavailable)?;
    if u64::try_from(count).unwrap_or(u64::MAX) > limit.posts {
        return Err(StoreError::RateLimited {
            retry_after: limit.retry_after(window_start, now),
        });
    }
    Ok(())
}

fn post(transaction: &Transaction<'_>, request: PostRequest) -> Result<Posted, StoreError> {
    let room = &request.room;
    let previous = previous_ids(transaction, &request)?;
    let fresh: Vec<_> = request
        .messages
        .iter()
        .zip(&previous)
        .filter(|(_, previous)| previous.is_none())
        .map(|(message, _)| message.clone())
        .collect();
    let member_ids: Vec<PeerId> = members(transaction, room)?
        .into_iter()
        .map(|member| member.peer)
        .collect();
    let deliveries = resolve_recipients(&member_ids, &request.sender, &fresh)?;
    count_post(transaction, &request)?;
    let recipients = distinct_recipients(&deliveries);

    for recipient in &recipients {
        let incoming = deliveries
            .iter()
            .filter(|(_, peer)| peer == recipient)
            .count() as u64;
        let unread: i64 = transaction
            .prepare_cached(
                "SELECT last_seq - acked_seq FROM members WHERE room = ?1 AND peer = ?2",
            )
            .map_err(unavailable)?
            .query_row(params![room.as_str(), recipient.as_str()], |row| row.get(0))
            .map_err(unavailable)?;
        if u64::try_from(unread).unwrap_or(0) + incoming > request.inbox_limit {
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
                .map_err(unavailable)?
                .execute(params![
                    room.as_str(),
                    request.sender.as_str(),
                    client_id.as_str(),
                    id.as_str(),
                    request.timing.expires_at
                ])
                .map_err(unavailable)?;
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
    let ids = request
        .messages
        .iter()
        .zip(previous)
        .map(|((id, _), previous)| previous.unwrap_or_else(|| id.clone()))
        .collect();
    let doorbells = doorbells(transaction, room, &recipients)?;
    Ok(Posted {
        ids,
        recipients,
        doorbells,
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn join(&self, request: JoinRequest) -> Result<Joined, StoreError> {
        self.write(move |transaction| {
            let room = &request.room;
            let departures = sweep(transaction, room, request.timing)?;
            let others = members(transaction, room)?;
            if others.len() >= request.capacity {
                return Err(StoreError::RoomFull);
            }
            transaction
                .prepare_cached(
                    "INSERT INTO members (room, peer, name, joined_at, last_seen) VALUES (?1, ?2, ?3, ?4, ?4)",
                )
                .map_err(unavailable)?
                .execute(params![room.as_str(), request.peer.as_str(), request.name, request.timing.now])
                .map_err(unavailable)?;
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

    async fn touch(
        &self,
        room: &RoomId,
        peer: &PeerId,
        acked: Seq,
        now: Millis,
    ) -> Result<Seq, StoreError> {
        self.touch_waiting(room, peer, acked, now, None).await
    }

    async fn touch_waiting(
        &self,
        room: &RoomId,
        peer: &PeerId,
        acked: Seq,
        now: Millis,
        waits_at: Option<&str>,
    ) -> Result<Seq, StoreError> {
        let (room, peer) = (room.clone(), peer.clone());
        let waits_at = waits_at.map(str::to_owned);
        let acked = i64::try_from(acked).unwrap_or(i64::MAX);
        self.with(move |connection| {
            let head: Option<i64> = connection
                .prepare_cached(
                    "UPDATE members SET last_seen = ?3, acked_seq = MAX(acked_seq, MIN(?4, last_seq)),
                     waits_at = COALESCE(?5, waits_at)
                     WHERE room = ?1 AND peer = ?2 RETURNING last_seq",
                )
                .map_err(unavailable)?
                .query_row(params![room.as_str(), peer.as_str(), now, acked, waits_at], |row| row.get(0))
                .optional()
                .map_err(unavailable)?;
            head.map(|head| Seq::try_from(head).unwrap_or(0)).ok_or(StoreError::PeerGone)
        })
        .await
    }

    async fn read(
        &self,
        room: &RoomId,
        peer: &PeerId,
        after: Seq,
        limit: usize,
        now: Millis,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let (room, peer) = (room.clone(), peer.clone());
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with(move |connection| {
            let mut statement = connection
                .prepare_cached(
                    "SELECT seq, id, sender, kind, data, sent_at FROM messages
                     WHERE room = ?1 AND recipient = ?2 AND seq > ?3 AND expires_at > ?4
                     ORDER BY seq LIMIT ?5",
                )
                .map_err(unavailable)?;
            let rows = statement
                .query_map(
                    params![room.as_str(), peer.as_str(), after, now, limit],
                    |row| {
                        Ok((
                            row.get::<_, i64>(0)?,
                            row.get::<_, String>(1)?,
                            row.get::<_, String>(2)?,
                            row.get::<_, String>(3)?,
                            row.get::<_, String>(4)?,
                            row.get::<_, i64>(5)?,
                        ))
                    },
                )
                .map_err(unavailable)?;
            rows.map(|row| {
                let (seq, id, sender, kind, data, sent_at) = row.map_err(unavailable)?;
                Ok(StoredMessage {
                    seq: Seq::try_from(seq)
                        .map_err(|_| StoreError::Corrupt(format!("sequence {seq}")))?,
                    id: parse_id(MessageId::parse, &id)?,
                    from: parse_id(PeerId::parse, &sender)?,
                    to: peer.clone(),
                    kind: MessageKind::parse(&kind)
                        .ok_or_else(|| StoreError::Corrupt(format!("kind {kind:?}")))?,
                    data,
                    sent_at,
                })
            })
            .collect()
        })
        .await
    }

    async fn sweep(&self, room: &RoomId, timing: Timing) -> Result<Departures, StoreError> {
        // Every waiting poll sweeps its room every few seconds, and almost always finds
        // nobody stale: look first without taking the write lock.
        let check_room = room.clone();
        let oldest: Option<Millis> = self
            .with(move |connection| {
                connection
                    .prepare_cached("SELECT MIN(last_seen) FROM members WHERE room = ?1")
                    .map_err(unavailable)?
                    .query_row(params![check_room.as_str()], |row| row.get(0))
                    .map_err(unavailable)
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
        self.write(move |transaction| {
            transaction
                .execute(
                    "DELETE FROM messages WHERE expires_at <= ?1",
                    params![timing.now],
                )
                .map_err(unavailable)?;
            transaction
                .execute(
                    "DELETE FROM sent_ids WHERE expires_at <= ?1",
                    params![timing.now],
                )
                .map_err(unavailable)?;
            let rooms: Vec<String> = transaction
                .prepare("SELECT DISTINCT room FROM members WHERE last_seen < ?1")
                .map_err(unavailable)?
                .query_map(params![timing.stale_before], |row| row.get(0))
                .map_err(unavailable)?
                .collect::<Result<_, _>>()
                .map_err(unavailable)?;
            rooms
                .iter()
                .map(|room| {
                    let room = parse_id(RoomId::parse, room)?;
                    let departures = sweep(transaction, &room, timing)?;
                    Ok((room, departures))
                })
                .collect()
        })
        .await
    }

    async fn health(&self) -> Result<(), StoreError> {
        self.with(|connection| {
            connection
                .query_row("SELECT 1", [], |_| Ok(()))
                .map_err(unavailable)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn open_store() -> (Arc<dyn Store>, tempfile::TempDir) {
        let directory = tempfile::tempdir().expect("temporary directory");
        let store = SqliteStore::open(&directory.path().join("test.db")).expect("opens");
        (Arc::new(store), directory)
    }

    crate::store_conformance_tests!(open_store);

    #[tokio::test]
    async fn committed_messages_survive_reopening_the_file() {
        use crate::store::conformance::{join, post_one, timing};
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("durable.db");
        let room = RoomId::parse("durable").expect("valid");
        let (alice, bob) = (PeerId::mint(), PeerId::mint());
        {
            let store = SqliteStore::open(&path).expect("opens");
            join(&store, &room, &alice).await;
            join(&store, &room, &bob).await;
            post_one(&store, &room, &alice, Some(&bob), "kept").await;
        }
        let store = SqliteStore::open(&path).expect("reopens");
        let held = store
            .read(&room, &bob, 0, 100, timing(0).now)
            .await
            .expect("reads");
        assert_eq!(
            held.last().map(|message| message.data.as_str()),
            Some("\"kept\"")
        );
    }

    #[tokio::test]
    async fn opens_a_file_from_before_the_rate_limit_columns() {
        use crate::store::conformance::{join, post_one};
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("old.db");
        let old_schema = SCHEMA
            .replace(
                "    rate_window INTEGER NOT NULL DEFAULT 0, -- when this peer's current rate-limit window opened\n",
                "",
            )
            .replace(
                "    rate_count INTEGER NOT NULL DEFAULT 0,  -- posts it made in that window\n",
                "",
            );
        assert!(
            !old_schema.contains("rate_"),
            "the test strips both columns"
        );
        Connection::open(&path)
            .and_then(|connection| connection.execute_batch(&old_schema))
            .expect("an old file");
        let store = SqliteStore::open(&path).expect("opens and migrates");
        SqliteStore::open(&path).expect("opening again changes nothing");
        let room = RoomId::parse("migrated").expect("valid");
        let (alice, bob) = (PeerId::mint(), PeerId::mint());
        join(&store, &room, &alice).await;
        join(&store, &room, &bob).await;
        post_one(&store, &room, &alice, Some(&bob), "counted").await;
    }

    #[tokio::test]
    async fn housekeeping_drops_expired_rows_and_silent_members() {
        use crate::store::conformance::{join, post_one, timing};
        let directory = tempfile::tempdir().expect("temporary directory");
        let store = SqliteStore::open(&directory.path().join("housekeeping.db")).expect("opens");
        let room = RoomId::parse("kept-small").expect("valid");
        let (alice, bob) = (PeerId::mint(), PeerId::mint());
        join(&store, &room, &alice).await;
        join(&store, &room, &bob).await;
        post_one(&store, &room, &alice, Some(&bob), "old").await;
        let count = |table: &'static str| {
            let store = store.clone();
            async move {
                store
                    .with(move |connection| {
                        connection
                            .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |row| {
                                row.get::<_, i64>(0)
                            })
                            .map_err(unavailable)
                    })
                    .await
                    .expect("counts")
            }
        };
        assert_eq!((count("members").await, count("messages").await), (2, 2));
        // Eleven minutes later: every message has expired and both peers have timed out.
        let departures = store
            .housekeeping(timing(660_000))
            .await
            .expect("housekeeping");
        assert_eq!(departures.len(), 1);
        assert_eq!(departures[0].1.gone.len(), 2);
        assert_eq!((count("members").await, count("messages").await), (0, 0));
    }
}
