//! A store that fails on purpose: every n-th call fails before reaching the real store, every
//! m-th fails after it committed (the client sees an error for work that was done, and must
//! retry without duplicating it), and every k-th stalls before failing, as a timeout would.
//! And a wake-up path that is down, slow or drops doorbells.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use signalpost_shared::clock::Millis;
use signalpost_shared::ids::{PeerId, RoomId};
use signalpost_shared::store::{
    Departures, Doorbell, InboxRead, JoinRequest, Joined, PostRequest, Posted, Presence, ReadLimit,
    Seq, Store, StoreError, Timing, Waiting,
};
use signalpost_shared::wakeup::{Listening, Wakeup};

/// Which calls fail.
pub struct FaultPlan {
    pub fail_before_every: u64,
    pub fail_after_every: u64,
    pub stall_every: u64,
}

/// Wraps a store with a [`FaultPlan`].
pub struct FaultyStore {
    inner: Arc<dyn Store>,
    plan: FaultPlan,
    calls: AtomicU64,
    pub injected: AtomicU64,
    /// Inbox reads asked of the store.
    pub reads: AtomicU64,
}

fn injected(what: &str) -> StoreError {
    StoreError::Unavailable(Box::new(std::io::Error::other(format!(
        "injected fault: {what}"
    ))))
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn Store>, plan: FaultPlan) -> Self {
        Self {
            inner,
            plan,
            calls: AtomicU64::new(0),
            injected: AtomicU64::new(0),
            reads: AtomicU64::new(0),
        }
    }

    /// Decides the fate of the next call: `Err` to fail it now, `Ok(fail_after)` otherwise.
    async fn before(&self) -> Result<bool, StoreError> {
        let call = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        let every = |n: u64| n > 0 && call.is_multiple_of(n);
        if every(self.plan.stall_every) {
            self.injected.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(300)).await;
            return Err(injected("timed out"));
        }
        if every(self.plan.fail_before_every) {
            self.injected.fetch_add(1, Ordering::Relaxed);
            return Err(injected("before"));
        }
        Ok(every(self.plan.fail_after_every))
    }

    fn after<T>(&self, fail: bool, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if fail && result.is_ok() {
            self.injected.fetch_add(1, Ordering::Relaxed);
            return Err(injected("after commit"));
        }
        result
    }
}

#[async_trait]
impl Store for FaultyStore {
    async fn join(&self, request: JoinRequest) -> Result<Joined, StoreError> {
        // Only before: a join that succeeded but answered an error would leave a second peer
        // behind on retry, which is the client's known trade-off, not the store's.
        self.before().await?;
        self.inner.join(request).await
    }

    async fn post(&self, request: PostRequest) -> Result<Posted, StoreError> {
        let fail = self.before().await?;
        self.after(fail, self.inner.post(request).await)
    }

    async fn touch_waiting(
        &self,
        room: &RoomId,
        peer: &PeerId,
        acked: Seq,
        now: Millis,
        waiting: Option<Waiting<'_>>,
    ) -> Result<Presence, StoreError> {
        let fail = self.before().await?;
        let presence = self
            .inner
            .touch_waiting(room, peer, acked, now, waiting)
            .await;
        self.after(fail, presence)
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
        let fail = self.before().await?;
        self.after(fail, self.inner.read(room, peer, after, limit, now).await)
    }

    async fn sweep(&self, room: &RoomId, timing: Timing) -> Result<Departures, StoreError> {
        let fail = self.before().await?;
        self.after(fail, self.inner.sweep(room, timing).await)
    }

    async fn leave(
        &self,
        room: &RoomId,
        peer: &PeerId,
        timing: Timing,
    ) -> Result<Departures, StoreError> {
        let fail = self.before().await?;
        self.after(fail, self.inner.leave(room, peer, timing).await)
    }

    async fn housekeeping(&self, timing: Timing) -> Result<Vec<(RoomId, Departures)>, StoreError> {
        self.inner.housekeeping(timing).await
    }

    async fn health(&self) -> Result<(), StoreError> {
        self.inner.health().await
    }
}

/// How a wake-up path misbehaves.
#[derive(Clone, Copy, Debug)]
pub enum WakeupFault {
    /// Sends nothing, and the receiving side has no address: every wake-up is lost.
    Down,
    /// Every doorbell takes this long to send.
    Slow(Duration),
    /// Every other doorbell is dropped.
    Dropping,
}

/// Wraps a wake-up adapter with a [`WakeupFault`].
pub struct FaultyWakeup {
    pub inner: Arc<dyn Wakeup>,
    pub fault: WakeupFault,
    rung: AtomicU64,
}

impl FaultyWakeup {
    pub fn new(inner: Arc<dyn Wakeup>, fault: WakeupFault) -> Self {
        Self {
            inner,
            fault,
            rung: AtomicU64::new(0),
        }
    }
}

#[async_trait]
impl Wakeup for FaultyWakeup {
    async fn listen(&self) -> Option<Listening> {
        match self.fault {
            WakeupFault::Down => None,
            _ => self.inner.listen().await,
        }
    }

    async fn ring(&self, room: &RoomId, doorbells: &[Doorbell]) {
        let call = self.rung.fetch_add(1, Ordering::Relaxed);
        match self.fault {
            WakeupFault::Down => {}
            WakeupFault::Slow(delay) => {
                tokio::time::sleep(delay).await;
                self.inner.ring(room, doorbells).await;
            }
            WakeupFault::Dropping if call.is_multiple_of(2) => {}
            WakeupFault::Dropping => self.inner.ring(room, doorbells).await,
        }
    }
}
