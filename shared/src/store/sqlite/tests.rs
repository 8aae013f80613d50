//! The SQLite store: the conformance suite, plus what only a file shows — durability,
//! migrations, housekeeping, concurrency with other connections, and refusals at start.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags, params};

use super::housekeeping::{BATCH_ROWS, LEASE_MS};
use super::schema::{BASELINE_SCHEMA, check_writable};
use super::*;
use crate::store::conformance::{join, post_one, timing};

async fn open_store() -> (Arc<dyn Store>, tempfile::TempDir) {
    let directory = tempfile::tempdir().expect("temporary directory");
    let store = SqliteStore::open(&directory.path().join("test.db")).expect("opens");
    (Arc::new(store), directory)
}

crate::store_conformance_tests!(open_store);

fn fresh(name: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let directory = tempfile::tempdir().expect("temporary directory");
    let path = directory.path().join(name);
    (directory, path)
}

/// Rows of `table`, counted by a connection of its own.
fn count(path: &Path, table: &str) -> i64 {
    Connection::open(path)
        .and_then(|connection| {
            connection.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |row| {
                row.get(0)
            })
        })
        .expect("counts")
}

/// Fills the file with `rows` messages that expired long ago, each carrying `size` bytes.
fn insert_expired(path: &Path, rows: usize, size: usize) {
    let mut connection = Connection::open(path).expect("opens");
    let transaction = connection.transaction().expect("begins");
    {
        let mut insert = transaction
            .prepare(
                "INSERT INTO messages (room, recipient, seq, id, sender, kind, data, sent_at, expires_at)
                 VALUES ('old', 'gone', ?1, 'id', 'someone', 'message', ?2, 0, 1)",
            )
            .expect("prepares");
        let data = "x".repeat(size);
        for seq in 0..rows {
            insert.execute(params![seq as i64, data]).expect("inserts");
        }
    }
    transaction.commit().expect("commits");
}

fn file_bytes(path: &Path) -> u64 {
    ["", "-wal"]
        .iter()
        .map(|suffix| {
            std::fs::metadata(format!("{}{suffix}", path.display())).map_or(0, |meta| meta.len())
        })
        .sum()
}

#[tokio::test]
async fn committed_messages_survive_reopening_the_file() {
    let (_directory, path) = fresh("durable.db");
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
        .read(&room, &bob, 0, ReadLimit::messages(100), timing(0).now)
        .await
        .expect("reads");
    assert_eq!(
        held.messages.last().map(|message| message.data.as_str()),
        Some("\"kept\"")
    );
}

#[tokio::test]
async fn opens_a_file_from_before_the_rate_limit_columns_and_versioning() {
    let (_directory, path) = fresh("old.db");
    let old_schema = BASELINE_SCHEMA
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
    let version: i64 = Connection::open(&path)
        .and_then(|connection| connection.query_row("PRAGMA user_version", [], |row| row.get(0)))
        .expect("reads the version");
    assert_eq!(version, SCHEMA_VERSION);
    let room = RoomId::parse("migrated").expect("valid");
    let (alice, bob) = (PeerId::mint(), PeerId::mint());
    join(&store, &room, &alice).await;
    join(&store, &room, &bob).await;
    post_one(&store, &room, &alice, Some(&bob), "counted").await;
    store.health().await.expect("the new tables are there");
    // The poll-record columns (version 5) are there: a poll learns the one it replaced.
    let now = timing(0).now;
    for (poll, previous) in [("p1", None), ("p2", Some("p1"))] {
        let waiting = crate::store::Waiting {
            address: "here",
            poll,
            until: now + 20_000,
        };
        let presence = store
            .touch_waiting(&room, &bob, 0, now, Some(waiting))
            .await
            .expect("a poll on the migrated file");
        assert_eq!(
            presence.previous.map(|record| record.poll),
            previous.map(str::to_owned)
        );
    }
}

#[test]
fn refuses_a_file_from_a_newer_release() {
    let (_directory, path) = fresh("newer.db");
    SqliteStore::open(&path).expect("creates");
    Connection::open(&path)
        .and_then(|connection| connection.pragma_update(None, "user_version", SCHEMA_VERSION + 1))
        .expect("a newer release's file");
    let Err(error) = SqliteStore::open(&path) else {
        panic!("an older binary must not open a newer file");
    };
    let message = crate::error::error_chain(&error);
    assert!(matches!(error, StoreError::Failed(_)));
    assert!(
        message.contains("newer release") && message.contains(&format!("{}", SCHEMA_VERSION + 1)),
        "{message}"
    );
}

#[test]
fn refuses_a_connection_that_cannot_write() {
    let (_directory, path) = fresh("read-only.db");
    SqliteStore::open(&path).expect("creates");
    let read_only =
        Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).expect("opens");
    let Err(error) = check_writable(&read_only, &path) else {
        panic!("a read-only connection must be refused");
    };
    assert!(crate::error::error_chain(&error).contains("read-only"));
}

/// A read-only mount, where the machine allows one (root in a container usually does).
#[test]
fn refuses_a_file_on_a_read_only_mount() {
    let (directory, path) = fresh("mounted.db");
    SqliteStore::open(&path).expect("creates");
    let mount_point = directory.path().join("ro");
    std::fs::create_dir(&mount_point).expect("mount point");
    let mounted = |arguments: &[&str]| {
        std::process::Command::new("mount")
            .args(arguments)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    };
    let source = directory.path().to_string_lossy().into_owned();
    let target = mount_point.to_string_lossy().into_owned();
    if !mounted(&["--bind", &source, &target]) {
        eprintln!("skipped: this machine does not allow bind mounts");
        return;
    }
    let result = if mounted(&["-o", "remount,bind,ro", &target]) {
        Some(SqliteStore::open(&mount_point.join("mounted.db")).map(|_| ()))
    } else {
        None
    };
    let _ = std::process::Command::new("umount").arg(&target).status();
    let Some(result) = result else {
        eprintln!("skipped: this machine does not allow read-only remounts");
        return;
    };
    let Err(error) = result else {
        panic!("a file on a read-only mount must be refused");
    };
    assert!(crate::error::error_chain(&error).contains("read-only"));
}

#[test]
fn only_busy_locked_and_full_are_transient() {
    let failure = |code, extended| {
        store_error(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(extended),
            Some(format!("{code:?}")),
        ))
    };
    use rusqlite::ffi;
    for code in [ffi::SQLITE_BUSY, ffi::SQLITE_LOCKED, ffi::SQLITE_FULL] {
        assert!(matches!(failure(code, code), StoreError::Unavailable(_)));
    }
    for code in [
        ffi::SQLITE_READONLY,
        ffi::SQLITE_CORRUPT,
        ffi::SQLITE_NOTADB,
    ] {
        assert!(matches!(failure(code, code), StoreError::Failed(_)));
    }
}

#[tokio::test]
async fn housekeeping_drops_expired_rows_and_silent_members() {
    let (_directory, path) = fresh("housekeeping.db");
    let store = SqliteStore::open(&path).expect("opens");
    let room = RoomId::parse("kept-small").expect("valid");
    let (alice, bob) = (PeerId::mint(), PeerId::mint());
    join(&store, &room, &alice).await;
    join(&store, &room, &bob).await;
    post_one(&store, &room, &alice, Some(&bob), "old").await;
    assert_eq!((count(&path, "members"), count(&path, "messages")), (2, 2));
    // Eleven minutes later: every message has expired and both peers have timed out.
    let departures = store
        .housekeeping(timing(660_000))
        .await
        .expect("housekeeping");
    assert_eq!(departures.len(), 1);
    assert_eq!(departures[0].1.gone.len(), 2);
    assert_eq!((count(&path, "members"), count(&path, "messages")), (0, 0));
}

/// Another connection watching the table while housekeeping runs sees it shrink in steps:
/// each batch committed alone, so writers waited for one batch, not for the whole delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn housekeeping_deletes_in_short_transactions() {
    let (_directory, path) = fresh("batches.db");
    let store = SqliteStore::open(&path).expect("opens");
    let rows = 40 * BATCH_ROWS as usize;
    insert_expired(&path, rows, 10);
    let watcher = {
        let path = path.clone();
        std::thread::spawn(move || {
            let connection = Connection::open(&path).expect("opens");
            let mut seen = std::collections::BTreeSet::new();
            let started = Instant::now();
            loop {
                let left: i64 = connection
                    .query_row("SELECT COUNT(*) FROM messages", [], |row| row.get(0))
                    .expect("counts");
                seen.insert(left);
                if left == 0 || started.elapsed() > Duration::from_secs(60) {
                    return seen;
                }
            }
        })
    };
    store.housekeeping(timing(0)).await.expect("housekeeping");
    let seen = watcher.join().expect("watcher");
    let between = seen
        .iter()
        .filter(|left| **left > 0 && **left < rows as i64)
        .count();
    assert!(
        between >= 2,
        "a watcher saw the table only at {seen:?}: the delete was one transaction"
    );
}

#[tokio::test]
async fn the_files_shrink_after_housekeeping() {
    let (_directory, path) = fresh("shrinks.db");
    let store = SqliteStore::open(&path).expect("opens");
    insert_expired(&path, 20_000, 1_000);
    let full = file_bytes(&path);
    assert!(full > 20_000_000, "the file holds the rows: {full} bytes");
    store.housekeeping(timing(0)).await.expect("housekeeping");
    let after = file_bytes(&path);
    assert!(
        after < 2_000_000,
        "database and log hold {after} bytes after housekeeping (were {full})"
    );
}

#[tokio::test]
async fn one_process_at_a_time_holds_the_housekeeping_lease() {
    let (_directory, path) = fresh("lease.db");
    let first = SqliteStore::open(&path).expect("opens");
    let second = SqliteStore::open(&path).expect("opens again, as another process would");
    first
        .housekeeping(timing(0))
        .await
        .expect("takes the lease");
    insert_expired(&path, 10, 10);
    second.housekeeping(timing(0)).await.expect("housekeeping");
    assert_eq!(
        count(&path, "messages"),
        10,
        "the lease is held by the first"
    );
    first.housekeeping(timing(0)).await.expect("renews");
    assert_eq!(count(&path, "messages"), 0);
    insert_expired(&path, 10, 10);
    second
        .housekeeping(timing(LEASE_MS + 60_000))
        .await
        .expect("takes over an expired lease");
    assert_eq!(count(&path, "messages"), 0);
}

/// While a write of this process waits for another process's lock, its reads still answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_do_not_queue_behind_a_waiting_write() {
    let (_directory, path) = fresh("readers.db");
    let store = SqliteStore::open(&path).expect("opens");
    let room = RoomId::parse("readers").expect("valid");
    let (alice, bob) = (PeerId::mint(), PeerId::mint());
    join(&store, &room, &alice).await;
    join(&store, &room, &bob).await;
    post_one(&store, &room, &alice, Some(&bob), "before").await;

    let other_process = Connection::open(&path).expect("opens");
    other_process
        .execute_batch("BEGIN IMMEDIATE")
        .expect("takes the write lock");
    let waiting_write = {
        let store = store.clone();
        let (room, alice, bob) = (room.clone(), alice.clone(), bob.clone());
        tokio::spawn(async move {
            store
                .post(crate::store::conformance::post_request(
                    &room,
                    &alice,
                    vec![crate::store::conformance::app_message(
                        Some(&bob),
                        "after",
                        None,
                    )],
                ))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let read = store
        .read(&room, &bob, 0, ReadLimit::messages(100), timing(0).now)
        .await
        .expect("reads");
    let anyone_stale = store.sweep(&room, timing(0)).await.expect("pre-checks");
    let took = started.elapsed();
    other_process.execute_batch("COMMIT").expect("releases");
    assert!(waiting_write.await.expect("joined").is_ok());
    assert_eq!(read.messages.len(), 1, "the first post");
    assert!(anyone_stale.gone.is_empty());
    assert!(
        took < Duration::from_secs(2),
        "a read and a sweep pre-check took {took:?} behind a write waiting for the lock"
    );
}

/// A poll stamps its presence as of when it won the write lock, not when it asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_delayed_by_the_lock_keeps_its_presence_margin() {
    let (_directory, path) = fresh("presence.db");
    let store = SqliteStore::open(&path).expect("opens");
    let room = RoomId::parse("presence").expect("valid");
    let alice = PeerId::mint();
    join(&store, &room, &alice).await;
    let other_process = Connection::open(&path).expect("opens");
    other_process
        .execute_batch("BEGIN IMMEDIATE")
        .expect("takes the write lock");
    let asked_at = timing(0).now;
    let touch = {
        let (store, room, alice) = (store.clone(), room.clone(), alice.clone());
        tokio::spawn(async move { store.touch(&room, &alice, 0, asked_at).await })
    };
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    other_process.execute_batch("COMMIT").expect("releases");
    touch.await.expect("joined").expect("touches");
    let last_seen: i64 = Connection::open(&path)
        .and_then(|connection| {
            connection.query_row(
                "SELECT last_seen FROM members WHERE peer = ?1",
                params![alice.as_str()],
                |row| row.get(0),
            )
        })
        .expect("reads");
    assert!(
        last_seen >= asked_at + 1_400,
        "stamped {} ms after the poll asked, though it waited 1.5 s for the lock",
        last_seen - asked_at
    );
}

/// Health writes: a lock nobody releases fails it, where a read would still pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_fails_when_nothing_can_be_written() {
    let (_directory, path) = fresh("health.db");
    let store = SqliteStore::open(&path).expect("opens");
    store.health().await.expect("healthy");
    let other_process = Connection::open(&path).expect("opens");
    other_process
        .execute_batch("BEGIN IMMEDIATE")
        .expect("takes the write lock");
    let result = store.health().await;
    other_process.execute_batch("COMMIT").expect("releases");
    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "health answered {result:?} while no write was possible"
    );
    store.health().await.expect("healthy again");
}
