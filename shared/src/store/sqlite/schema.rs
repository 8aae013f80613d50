//! The embedded store's file: opening it (checks and pragmas) and its schema, versioned with
//! `PRAGMA user_version` and brought forward one explicit step at a time.
//!
//! A file whose version is newer than [`SCHEMA_VERSION`] was written by a newer release and
//! is refused: an older binary would misread what it does not know. A file created before
//! versioning has version 0 and goes through every step, the first of which only adds what
//! such a file may lack.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};

use super::store_error;
use crate::store::StoreError;

/// How long a connection waits for another connection's lock before the call fails as busy.
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// The write-ahead log is cut back to this size after each checkpoint, so one burst of
/// writes does not leave a large file behind for ever.
const JOURNAL_SIZE_LIMIT: i64 = 32 * 1024 * 1024;

/// One step per version: `MIGRATIONS[n]` brings a file from version `n` to `n + 1`. Append
/// new steps; never edit a released one.
const MIGRATIONS: &[fn(&Transaction<'_>) -> rusqlite::Result<()>] =
    &[baseline, leases, wake_addresses, room_limits, poll_ids];

/// The schema version this binary writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The schema of the first release, before versioning.
pub(super) const BASELINE_SCHEMA: &str = "
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

/// Columns added to `members` after the first release, for files created before them.
const ADDED_MEMBER_COLUMNS: [(&str, &str); 2] = [
    ("rate_window", "INTEGER NOT NULL DEFAULT 0"),
    ("rate_count", "INTEGER NOT NULL DEFAULT 0"),
];

/// Version 1: the tables of the first release, and the rate-limit columns that files created
/// before them lack.
fn baseline(transaction: &Transaction<'_>) -> rusqlite::Result<()> {
    transaction.execute_batch(BASELINE_SCHEMA)?;
    let present: Vec<String> = transaction
        .prepare("SELECT name FROM pragma_table_info('members')")?
        .query_map([], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    for (column, definition) in ADDED_MEMBER_COLUMNS {
        if !present.iter().any(|name| name == column) {
            transaction.execute_batch(&format!(
                "ALTER TABLE members ADD COLUMN {column} {definition}"
            ))?;
        }
    }
    Ok(())
}

/// Version 2: leases (one process at a time runs housekeeping) and the row health writes.
fn leases(transaction: &Transaction<'_>) -> rusqlite::Result<()> {
    transaction.execute_batch(
        "CREATE TABLE leases (
             name TEXT PRIMARY KEY,
             holder TEXT NOT NULL,
             expires_at INTEGER NOT NULL
         ) WITHOUT ROWID;
         CREATE TABLE health_probe (
             id INTEGER PRIMARY KEY CHECK (id = 1),
             written_at INTEGER NOT NULL
         );",
    )
}

/// Version 3: where each member's latest poll waits (its wake-up address), so that writers
/// learn where to ring from the member rows they read anyway.
fn wake_addresses(transaction: &Transaction<'_>) -> rusqlite::Result<()> {
    transaction.execute_batch("ALTER TABLE members ADD COLUMN waits_at TEXT")
}

/// Version 4: limits that must hold across processes kept per room (the join limit's
/// theoretical arrival time, and the posts of departed members in a window still open), and
/// each inbox's last activity, which bounds what a poll cursor may claim. A room row expires
/// once it says nothing any more (the join budget full again, the window closed); files from
/// before start with every room's budget full and every inbox active as of its last poll.
fn room_limits(transaction: &Transaction<'_>) -> rusqlite::Result<()> {
    transaction.execute_batch(
        "CREATE TABLE rooms (
             room TEXT PRIMARY KEY,
             join_tat INTEGER NOT NULL DEFAULT 0,    -- the join limit's theoretical arrival time
             spent_window INTEGER NOT NULL DEFAULT 0, -- departed members' busiest open window
             spent_count INTEGER NOT NULL DEFAULT 0,  -- and the posts made in it
             expires_at INTEGER NOT NULL
         ) WITHOUT ROWID;
         CREATE INDEX rooms_expires_at ON rooms (expires_at);
         ALTER TABLE members ADD COLUMN last_activity INTEGER NOT NULL DEFAULT 0;
         UPDATE members SET last_activity = last_seen;",
    )
}

/// Version 5: the latest poll's id and when its wait ends, beside where it waits, so that a
/// newer poll of the peer learns of it in the presence update and ends it in whichever
/// process it waits (one waiting poll per peer). Rows from before have none: no older poll.
fn poll_ids(transaction: &Transaction<'_>) -> rusqlite::Result<()> {
    transaction.execute_batch(
        "ALTER TABLE members ADD COLUMN poll_id TEXT;
         ALTER TABLE members ADD COLUMN poll_until INTEGER NOT NULL DEFAULT 0;",
    )
}

fn refused(message: String) -> StoreError {
    StoreError::Failed(message.into())
}

/// Opens the write connection to `path`, creating the file if needed; refuses a file it
/// cannot write, one that cannot use WAL, and one written by a newer release.
pub(super) fn open_writer(path: &Path) -> Result<Connection, StoreError> {
    let mut connection = Connection::open(path).map_err(store_error)?;
    connection.busy_timeout(BUSY_TIMEOUT).map_err(store_error)?;
    check_writable(&connection, path)?;
    // Takes effect on a new file only (before its first table); frees pages as housekeeping
    // deletes rows instead of keeping them for ever.
    connection
        .execute_batch("PRAGMA auto_vacuum = INCREMENTAL")
        .map_err(store_error)?;
    let mode: String = connection
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(store_error)?;
    check_journal_mode(&mode, path)?;
    connection
        .execute_batch(&format!(
            "PRAGMA synchronous = NORMAL; PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT};"
        ))
        .map_err(store_error)?;
    migrate(&mut connection, path)?;
    Ok(connection)
}

/// Opens a read-only connection to a file [`open_writer`] has opened.
pub(super) fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let connection = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(store_error)?;
    connection.busy_timeout(BUSY_TIMEOUT).map_err(store_error)?;
    Ok(connection)
}

/// SQLite opens a file it may not write read-only without a word; every join would then fail.
pub(super) fn check_writable(connection: &Connection, path: &Path) -> Result<(), StoreError> {
    if connection
        .is_readonly(rusqlite::MAIN_DB)
        .map_err(store_error)?
    {
        return Err(refused(format!(
            "{} is read-only (file permissions or a read-only mount): signalpost must write to its database; give it a writable file with SIGNALPOST_DB",
            path.display()
        )));
    }
    Ok(())
}

/// Processes sharing the file need WAL: without it a write blocks every reader.
fn check_journal_mode(mode: &str, path: &Path) -> Result<(), StoreError> {
    if mode.eq_ignore_ascii_case("wal") {
        return Ok(());
    }
    Err(refused(format!(
        "{} cannot use write-ahead logging (its journal mode stays {mode:?}): put SIGNALPOST_DB on a local file system that supports shared memory",
        path.display()
    )))
}

/// Brings the file to [`SCHEMA_VERSION`], under the write lock so that processes opening the
/// same file at once do not both run a step.
fn migrate(connection: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let transaction = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(store_error)?;
    let version: i64 = transaction
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(store_error)?;
    if version > SCHEMA_VERSION {
        return Err(refused(format!(
            "{} has schema version {version}, but this signalpost knows versions up to {SCHEMA_VERSION}: a newer release wrote it. Run that release, or point SIGNALPOST_DB at another file",
            path.display()
        )));
    }
    let from = usize::try_from(version).unwrap_or(0);
    if from == MIGRATIONS.len() {
        return Ok(());
    }
    for step in &MIGRATIONS[from..] {
        step(&transaction).map_err(store_error)?;
    }
    transaction
        .pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(store_error)?;
    transaction.commit().map_err(store_error)
}
