//! A [`Store`] that counts the calls and failures of another: every deployment's store is
//! wrapped in one by [`crate::signalling::Signalling`], so the SQLite and DynamoDB stores are
//! measured by the same code (`signalpost_store_operations_total{op}`,
//! `signalpost_store_errors_total{kind}`).
//!
//! Only the store's own failures count as errors; its answers to the request (a peer gone, a
//! full room or inbox, the flood limit) are not.

use std::sync::Arc;

use async_trait::async_trait;

use super::{
    Departures, InboxRead, JoinRequest, Joined, PostRequest, Posted, Presence, ReadLimit, Seq,
    Store, StoreError, Timing, Waiting,
};
use crate::clock::Millis;
use crate::ids::{PeerId, RoomId};
use crate::metrics;

/// Counts the calls of the store it wraps.
pub struct Metered(pub Arc<dyn Store>);

/// The metrics' `kind` of a store failure, or `None` for an answer to the request.
pub fn error_kind(error: &StoreError) -> Option<&'static str> {
    match error {
        StoreError::Throttled(_) => Some("throttled"),
        StoreError::Unavailable(_) => Some("unavailable"),
        StoreError::Failed(_) => Some("failed"),
        StoreError::Corrupt(_) => Some("corrupt"),
        StoreError::PeerGone
        | StoreError::NoSuchRecipient(_)
        | StoreError::RoomFull
        | StoreError::InboxFull(_)
        | StoreError::RateLimited { .. }
        | StoreError::JoinsLimited { .. } => None,
    }
}

fn counted<T>(op: &'static str, result: Result<T, StoreError>) -> Result<T, StoreError> {
    metrics::store_operation(op);
    if let Some(kind) = result.as_ref().err().and_then(error_kind) {
        metrics::store_error(kind);
    }
    result
}

#[async_trait]
impl Store for Metered {
    async fn join(&self, request: JoinRequest) -> Result<Joined, StoreError> {
        counted("join", self.0.join(request).await)
    }

    async fn post(&self, request: PostRequest) -> Result<Posted, StoreError> {
        counted("post", self.0.post(request).await)
    }

    async fn touch(
        &self,
        room: &RoomId,
        peer: &PeerId,
        acked: Seq,
        now: Millis,
    ) -> Result<Seq, StoreError> {
        counted("touch", self.0.touch(room, peer, acked, now).await)
    }

    async fn touch_waiting(
        &self,
        room: &RoomId,
        peer: &PeerId,
        acked: Seq,
        now: Millis,
        waiting: Option<Waiting<'_>>,
    ) -> Result<Presence, StoreError> {
        counted(
            "touch",
            self.0.touch_waiting(room, peer, acked, now, waiting).await,
        )
    }

    async fn read(
        &self,
        room: &RoomId,
        peer: &PeerId,
        after: Seq,
        limit: ReadLimit,
        now: Millis,
    ) -> Result<InboxRead, StoreError> {
        counted("read", self.0.read(room, peer, after, limit, now).await)
    }

    async fn sweep(&self, room: &RoomId, timing: Timing) -> Result<Departures, StoreError> {
        counted("sweep", self.0.sweep(room, timing).await)
    }

    async fn leave(
        &self,
        room: &RoomId,
        peer: &PeerId,
        timing: Timing,
    ) -> Result<Departures, StoreError> {
        counted("leave", self.0.leave(room, peer, timing).await)
    }

    async fn housekeeping(&self, timing: Timing) -> Result<Vec<(RoomId, Departures)>, StoreError> {
        counted("housekeeping", self.0.housekeeping(timing).await)
    }

    async fn health(&self) -> Result<(), StoreError> {
        counted("health", self.0.health().await)
    }
}

#[cfg(test)]
mod tests {
    use ::metrics::with_local_recorder;

    use super::*;
    use crate::metrics::emf::Emf;
    use crate::store::sqlite::SqliteStore;

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn counts_calls_and_only_the_stores_own_failures() {
        assert_eq!(
            error_kind(&StoreError::Throttled("t".into())),
            Some("throttled")
        );
        assert_eq!(error_kind(&StoreError::RoomFull), None);
        let directory = tempfile::tempdir().expect("temporary directory");
        let store = Metered(Arc::new(
            SqliteStore::open(&directory.path().join("m.db")).expect("opens"),
        ));
        let room = RoomId::parse("r").expect("valid");
        let peer = PeerId::mint();
        let emf = Emf::new("test");
        // A touch of a stranger is an answer (peer gone), not a store error.
        let touched = store.touch(&room, &peer, 0, 0);
        let result = with_local_recorder(&emf, || futures_lite(touched));
        assert!(matches!(result, Err(StoreError::PeerGone)));
        let mut out = Vec::new();
        emf.flush(&mut out, 0);
        let text = String::from_utf8(out).expect("UTF-8");
        assert!(text.contains(r#""op":"touch""#), "{text}");
        assert!(!text.contains("store_errors"), "{text}");
    }

    /// Runs a future to completion on this thread (the local recorder is per thread).
    fn futures_lite<F: std::future::Future>(future: F) -> F::Output {
        tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(future))
    }
}
