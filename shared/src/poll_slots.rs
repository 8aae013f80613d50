//! One waiting poll per peer (per process): a newer poll ends the older one, which returns
//! empty at once — what a client sees anyway when a poll times out, so it simply polls again.
//!
//! Without this, one token could hold any number of concurrent polls, each reading the store
//! on its own schedule: a cheap way to multiply the server's (and, on DynamoDB, the
//! operator's) cost. A browser never needs two: a reload's new poll replaces the old page's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

use crate::ids::{PeerId, RoomId};

type Key = (RoomId, PeerId);

/// The waiting poll of each peer.
#[derive(Default)]
pub struct PollSlots {
    holders: Mutex<HashMap<Key, Arc<Notify>>>,
}

/// A poll's hold on its peer's slot; released on drop.
pub struct PollSlot<'a> {
    slots: &'a PollSlots,
    key: Key,
    superseded: Arc<Notify>,
}

impl PollSlots {
    /// Takes the slot of `peer`, ending the poll that held it.
    pub fn take(&self, room: &RoomId, peer: &PeerId) -> PollSlot<'_> {
        let key = (room.clone(), peer.clone());
        let superseded = Arc::new(Notify::new());
        let previous = self
            .holders
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.clone(), Arc::clone(&superseded));
        if let Some(previous) = previous {
            // notify_one keeps a permit, so the old poll ends even if it is between waits.
            previous.notify_one();
        }
        PollSlot {
            slots: self,
            key,
            superseded,
        }
    }
}

impl PollSlot<'_> {
    /// Completes once a newer poll of the same peer has taken the slot.
    pub async fn superseded(&self) {
        self.superseded.notified().await;
    }
}

impl Drop for PollSlot<'_> {
    fn drop(&mut self) {
        let mut holders = self
            .slots
            .holders
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if holders
            .get(&self.key)
            .is_some_and(|holder| Arc::ptr_eq(holder, &self.superseded))
        {
            holders.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_newer_poll_ends_the_older_and_only_its_own_peers() {
        let slots = PollSlots::default();
        let room = RoomId::parse("r").expect("valid");
        let (alice, bob) = (
            PeerId::parse("alice").expect("valid"),
            PeerId::parse("bob").expect("valid"),
        );
        let first = slots.take(&room, &alice);
        let other = slots.take(&room, &bob);
        let second = slots.take(&room, &alice);
        tokio::time::timeout(Duration::from_secs(1), first.superseded())
            .await
            .expect("the older poll is told");
        let quiet = Duration::from_millis(50);
        assert!(
            tokio::time::timeout(quiet, second.superseded())
                .await
                .is_err()
        );
        assert!(
            tokio::time::timeout(quiet, other.superseded())
                .await
                .is_err()
        );
        drop(first);
        assert_eq!(
            slots.holders.lock().expect("lock").len(),
            2,
            "the newer keeps it"
        );
        drop((second, other));
        assert!(slots.holders.lock().expect("lock").is_empty());
    }
}
