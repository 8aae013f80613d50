//! In-process wake-ups: one [`Notify`] per inbox with a waiting poll, and the slot of each
//! peer's waiting poll. Every adapter delivers into this registry, and [`InProcess`] is the adapter of a process with nobody to share
//! wake-ups with (a platform without Unix sockets, or a test).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use async_trait::async_trait;

use super::{Listening, Wakeup};
use crate::ids::{PeerId, RoomId};
use crate::poll_slots::PollSlots;
use crate::store::Doorbell;

type InboxKey = (RoomId, PeerId);

/// In-process wake-ups, one [`Notify`] per inbox that has a waiting poll, and the waiting
/// poll of each peer ([`PollSlots`]), which a doorbell from another process may end.
#[derive(Default)]
pub struct Wakeups {
    inboxes: Mutex<HashMap<InboxKey, Arc<Notify>>>,
    polls: PollSlots,
}

/// A waiting poll's hold on its inbox's signal; dropping it forgets the inbox when no other
/// poll waits on it, so the map holds only inboxes being polled right now.
pub struct Subscription<'a> {
    wakeups: &'a Wakeups,
    key: InboxKey,
    notify: Arc<Notify>,
}

impl Subscription<'_> {
    /// The signal to wait on.
    pub fn notify(&self) -> &Notify {
        &self.notify
    }
}

impl Drop for Subscription<'_> {
    fn drop(&mut self) {
        let mut inboxes = self
            .wakeups
            .inboxes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Two references: ours and the map's. More means another poll still waits.
        if Arc::strong_count(&self.notify) <= 2 {
            inboxes.remove(&self.key);
        }
    }
}

impl Wakeups {
    /// Subscribes to `peer`'s inbox.
    pub fn subscribe(&self, room: &RoomId, peer: &PeerId) -> Subscription<'_> {
        let key = (room.clone(), peer.clone());
        let notify = {
            let mut inboxes = self
                .inboxes
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            Arc::clone(inboxes.entry(key.clone()).or_default())
        };
        Subscription {
            wakeups: self,
            key,
            notify,
        }
    }

    /// Wakes every poll waiting on these inboxes in this process.
    pub fn wake<'p>(&self, room: &RoomId, peers: impl IntoIterator<Item = &'p PeerId>) {
        let inboxes = self
            .inboxes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for peer in peers {
            if let Some(notify) = inboxes.get(&(room.clone(), peer.clone())) {
                notify.notify_waiters();
            }
        }
    }

    /// The waiting poll of each peer in this process.
    pub fn polls(&self) -> &PollSlots {
        &self.polls
    }

    /// Inboxes with a waiting poll, for tests and metrics.
    pub fn waiting_inboxes(&self) -> usize {
        self.inboxes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }
}

/// The wake-up path of a process that shares its store with no other: nothing leaves the
/// process, so polls have no address to record and rely on their fallback store reads for
/// any write made elsewhere.
#[derive(Default)]
pub struct InProcess;

#[async_trait]
impl Wakeup for InProcess {
    async fn listen(&self) -> Option<Listening> {
        None
    }

    async fn ring(&self, _room: &RoomId, _doorbells: &[Doorbell]) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn wakes_only_the_named_inbox_and_forgets_it_after() {
        let wakeups = Wakeups::default();
        let room = RoomId::parse("r").expect("valid");
        let (alice, bob) = (PeerId::mint(), PeerId::mint());
        let alice_sub = wakeups.subscribe(&room, &alice);
        let bob_sub = wakeups.subscribe(&room, &bob);
        {
            let alice_woken = alice_sub.notify().notified();
            let bob_woken = bob_sub.notify().notified();
            tokio::pin!(alice_woken, bob_woken);
            alice_woken.as_mut().enable();
            bob_woken.as_mut().enable();
            wakeups.wake(&room, [&alice]);
            tokio::time::timeout(Duration::from_secs(1), alice_woken)
                .await
                .expect("alice woken");
            assert!(
                tokio::time::timeout(Duration::from_millis(50), bob_woken)
                    .await
                    .is_err(),
                "bob not woken"
            );
        }
        assert_eq!(wakeups.waiting_inboxes(), 2);
        drop(alice_sub);
        drop(bob_sub);
        assert_eq!(wakeups.waiting_inboxes(), 0);
    }
}
