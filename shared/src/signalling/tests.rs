//! The long poll's store reads, counted through a wrapper around the real SQLite store.

use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;

use super::*;
use crate::config::Deployment;
use crate::store::sqlite::SqliteStore;
use crate::store::{
    InboxRead, Joined as StoreJoined, Posted, Presence, ReadLimit, Seq, StoreError, Waiting,
};

/// The SQLite store, counting inbox reads.
struct CountingStore {
    inner: SqliteStore,
    reads: AtomicU64,
}

#[async_trait]
impl Store for CountingStore {
    async fn join(&self, request: JoinRequest) -> Result<StoreJoined, StoreError> {
        self.inner.join(request).await
    }

    async fn post(&self, request: PostRequest) -> Result<Posted, StoreError> {
        self.inner.post(request).await
    }

    async fn touch_waiting(
        &self,
        room: &RoomId,
        peer: &PeerId,
        acked: Seq,
        now: Millis,
        waiting: Option<Waiting<'_>>,
    ) -> Result<Presence, StoreError> {
        self.inner
            .touch_waiting(room, peer, acked, now, waiting)
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
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.inner.read(room, peer, after, limit, now).await
    }

    async fn sweep(&self, room: &RoomId, timing: Timing) -> Result<Departures, StoreError> {
        self.inner.sweep(room, timing).await
    }

    async fn leave(
        &self,
        room: &RoomId,
        peer: &PeerId,
        timing: Timing,
    ) -> Result<Departures, StoreError> {
        self.inner.leave(room, peer, timing).await
    }

    async fn housekeeping(&self, timing: Timing) -> Result<Vec<(RoomId, Departures)>, StoreError> {
        self.inner.housekeeping(timing).await
    }

    async fn health(&self) -> Result<(), StoreError> {
        self.inner.health().await
    }
}

fn config() -> Config {
    Config::from_lookup(Deployment::Standalone, |name| {
        (name == "SIGNALPOST_SECRET").then(|| "a-test-secret-of-at-least-32-bytes!".to_owned())
    })
    .expect("valid configuration")
}

/// A cursor that claims the inbox was busy a moment ago, when the server knows it has been
/// quiet for a minute, cannot make the poll read the store every 50 ms for its whole wait: the
/// claim is clamped to the inbox's last activity, which the poll's presence update returned.
#[tokio::test]
async fn a_forged_cursor_cannot_make_a_quiet_inbox_read_eagerly() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let store = Arc::new(CountingStore {
        inner: SqliteStore::open(&directory.path().join("db")).expect("opens"),
        reads: AtomicU64::new(0),
    });
    let signalling = Signalling::new(config(), store.clone());
    let room = RoomId::parse("quiet").expect("valid");
    let peer = PeerId::mint();
    // Joined a minute ago, nothing written to its inbox since.
    let a_minute_ago = now_millis() - 60_000;
    store
        .join(JoinRequest {
            room: room.clone(),
            peer: peer.clone(),
            name: None,
            capacity: 8,
            inbox_limit: 1_000,
            join_rate: RoomJoinRate::for_room(8, RATE_WINDOW),
            timing: Timing {
                now: a_minute_ago,
                expires_at: a_minute_ago + 600_000,
                stale_before: a_minute_ago - 600_000,
                post_window_ms: 10_000,
            },
        })
        .await
        .expect("joins");
    let grant = PeerGrant {
        room,
        peer,
        expires_at: i64::MAX,
    };
    let forged = Cursor {
        seq: 0,
        activity: now_millis(),
    };
    let polled = signalling
        .poll(&grant, Some(forged), Duration::from_secs(2))
        .await
        .expect("polls");
    assert!(polled.messages.is_empty());
    let reads = store.reads.load(Ordering::Relaxed);
    // Quiet for a minute: one read every 2 s (the idle interval); believing the cursor, one
    // every 50 ms, about 40 in the wait.
    assert!(
        reads <= 3,
        "a 2 s poll with a forged cursor read {reads} times"
    );
    assert!(
        polled.cursor.activity <= a_minute_ago,
        "the answer's cursor carries the server's activity, not the forged one"
    );
}
