//! Housekeeping of the embedded store: dropping expired messages and sent ids, sweeping rooms
//! nobody polls, and giving the freed space back to the file system.
//!
//! Every step is a short transaction of its own: rows go in batches of [`BATCH_ROWS`], each
//! room is swept alone, free pages are returned [`VACUUM_PAGES`] at a time, so a write from a
//! post, a join or a poll waits for one batch, never for the whole clean-up. A lease row makes
//! one process at a time do it when several share the file (two servers, or the functions
//! under `cargo lambda watch`, which all run it).

use rusqlite::params;

use super::{SqliteStore, parse_id, store_error, sweep};
use crate::clock::Millis;
use crate::ids::RoomId;
use crate::store::{Departures, StoreError, Timing};

/// Rows deleted per transaction: a few milliseconds of the write lock.
pub(super) const BATCH_ROWS: i64 = 1_000;
/// Free pages returned to the file system per transaction.
const VACUUM_PAGES: i64 = 1_000;
/// How long a process holds the housekeeping lease after taking it. The holder renews it at
/// each round; if it dies, another process takes over once this has passed.
pub const LEASE_MS: Millis = 300_000;
const LEASE: &str = "housekeeping";

/// The tables housekeeping empties of expired rows, with their primary key columns.
const EXPIRING: [(&str, &str); 3] = [
    ("messages", "room, recipient, seq"),
    ("sent_ids", "room, sender, client_id"),
    ("rooms", "room"),
];

impl SqliteStore {
    /// One round of housekeeping, if this process holds (or can take) the lease.
    pub(super) async fn housekeep(
        &self,
        timing: Timing,
    ) -> Result<Vec<(RoomId, Departures)>, StoreError> {
        if !self.take_lease(timing.now).await? {
            return Ok(Vec::new());
        }
        for (table, key) in EXPIRING {
            self.delete_expired(table, key, timing.now).await?;
        }
        let stale_before = timing.stale_before;
        let rooms: Vec<String> = self
            .read_with(move |transaction| {
                transaction
                    .prepare("SELECT DISTINCT room FROM members WHERE last_seen < ?1")
                    .map_err(store_error)?
                    .query_map(params![stale_before], |row| row.get(0))
                    .map_err(store_error)?
                    .collect::<Result<_, _>>()
                    .map_err(store_error)
            })
            .await?;
        let mut departures = Vec::with_capacity(rooms.len());
        for room in rooms {
            let room = parse_id(RoomId::parse, &room)?;
            let swept = {
                let room = room.clone();
                self.write(move |transaction| sweep(transaction, &room, timing))
                    .await?
            };
            departures.push((room, swept));
        }
        self.shrink().await?;
        Ok(departures)
    }

    /// Takes or renews the lease; `false` while another process holds it.
    async fn take_lease(&self, now: Millis) -> Result<bool, StoreError> {
        let holder = self.holder.clone();
        self.write(move |transaction| {
            let changed = transaction
                .prepare_cached(
                    "INSERT INTO leases (name, holder, expires_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (name) DO UPDATE
                         SET holder = excluded.holder, expires_at = excluded.expires_at
                         WHERE leases.holder = excluded.holder OR leases.expires_at <= ?4",
                )
                .map_err(store_error)?
                .execute(params![LEASE, holder, now + LEASE_MS, now])
                .map_err(store_error)?;
            Ok(changed == 1)
        })
        .await
    }

    /// Deletes the rows of `table` that expired by `now`, one batch per transaction.
    async fn delete_expired(
        &self,
        table: &'static str,
        key: &'static str,
        now: Millis,
    ) -> Result<(), StoreError> {
        loop {
            let deleted = self
                .write(move |transaction| {
                    transaction
                        .prepare_cached(&format!(
                            "DELETE FROM {table} WHERE ({key}) IN
                                 (SELECT {key} FROM {table} WHERE expires_at <= ?1 LIMIT ?2)"
                        ))
                        .map_err(store_error)?
                        .execute(params![now, BATCH_ROWS])
                        .map_err(store_error)
                })
                .await?;
            if i64::try_from(deleted).unwrap_or(i64::MAX) < BATCH_ROWS {
                return Ok(());
            }
        }
    }

    /// Returns free pages to the file system in small steps, then checkpoints the write-ahead
    /// log and truncates it, so the files shrink after a burst instead of staying at their
    /// largest.
    async fn shrink(&self) -> Result<(), StoreError> {
        loop {
            let (before, after) = self
                .with_writer(|connection| {
                    let free = |connection: &rusqlite::Connection| {
                        connection
                            .query_row("PRAGMA freelist_count", [], |row| row.get::<_, i64>(0))
                            .map_err(store_error)
                    };
                    let before = free(connection)?;
                    if before > 0 {
                        connection
                            .execute_batch(&format!("PRAGMA incremental_vacuum({VACUUM_PAGES})"))
                            .map_err(store_error)?;
                    }
                    Ok((before, free(connection)?))
                })
                .await?;
            // A file made before incremental auto-vacuum keeps its free pages: stop there.
            if after == 0 || after >= before {
                break;
            }
        }
        self.with_writer(|connection| {
            // Busy (1) when a reader still uses the log: the next round finishes the job.
            connection
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
                    row.get::<_, i64>(0)
                })
                .map_err(store_error)
        })
        .await?;
        Ok(())
    }
}
