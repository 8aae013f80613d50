//! One waiting poll per peer: a newer poll ends the older one, which returns empty at once —
//! what a client sees anyway when a poll times out, so it simply polls again.
//!
//! Without this, one token could hold any number of concurrent polls, each reading the store
//! on its own schedule (and, on Lambda, each holding an execution environment): a cheap way
//! to multiply the server's (and, on DynamoDB, the operator's) cost. A browser never needs
//! two: a reload's new poll replaces the old page's.
//!
//! These slots hold the polls of this process, each under its poll id. A newer poll in the
//! same process ends the older one here directly; one in another process learns the older
//! poll's id and address from its presence update and rings a doorbell there
//! ([`crate::store::Doorbell::supersede`]), which the receiving adapter turns into
//! [`PollSlots::supersede`]. The id makes a late doorbell harmless: it ends that poll only,
//! never a newer one of the same peer that took the slot since.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

use crate::ids::{PeerId, RoomId};

type Key = (RoomId, PeerId);

/// The waiting poll of each peer, under its id.
#[derive(Default)]
pub struct PollSlots {
    holders: Mutex<HashMap<Key, Holder>>,
}

struct Holder {
    poll: Arc<str>,
    superseded: Arc<Notify>,
}

/// A poll's hold on its peer's slot; released on drop.
pub struct PollSlot<'a> {
    slots: &'a PollSlots,
    key: Key,
    superseded: Arc<Notify>,
}

impl PollSlots {
    /// Takes the slot of `peer` for poll `poll`, ending the poll that held it.
    pub fn take(&self, room: &RoomId, peer: &PeerId, poll: &str) -> PollSlot<'_> {
        let key = (room.clone(), peer.clone());
        let superseded = Arc::new(Notify::new());
        let previous = self
            .holders
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                key.clone(),
                Holder {
                    poll: poll.into(),
                    superseded: Arc::clone(&superseded),
                },
            );
        if let Some(previous) = previous {
            // notify_one keeps a permit, so the old poll ends even if it is between waits.
            previous.superseded.notify_one();
        }
        PollSlot {
            slots: self,
            key,
            superseded,
        }
    }

    /// Ends poll `poll` of `peer` if it holds the slot here (a newer poll in another process
    /// replaced it); whether it did. Any other poll, or none, is left alone.
    pub fn supersede(&self, room: &RoomId, peer: &PeerId, poll: &str) -> bool {
        let mut holders = self.holders.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (room.clone(), peer.clone());
        if holders.get(&key).is_none_or(|holder| &*holder.poll != poll) {
            return false;
        }
        if let Some(holder) = holders.remove(&key) {
            holder.superseded.notify_one();
        }
        true
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
            .is_some_and(|holder| Arc::ptr_eq(&holder.superseded, &self.superseded))
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
        let first = slots.take(&room, &alice, "1");
        let other = slots.take(&room, &bob, "2");
        let second = slots.take(&room, &alice, "3");
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

    #[tokio::test]
    async fn a_doorbell_ends_the_named_poll_only() {
        let slots = PollSlots::default();
        let room = RoomId::parse("r").expect("valid");
        let (alice, bob) = (
            PeerId::parse("alice").expect("valid"),
            PeerId::parse("bob").expect("valid"),
        );
        let held = slots.take(&room, &alice, "new");
        let other = slots.take(&room, &bob, "old");
        // A late doorbell for an older poll of alice, and one for a poll of nobody here.
        assert!(!slots.supersede(&room, &alice, "old"));
        assert!(!slots.supersede(&room, &PeerId::mint(), "new"));
        let quiet = Duration::from_millis(50);
        assert!(
            tokio::time::timeout(quiet, held.superseded())
                .await
                .is_err()
        );
        assert!(slots.supersede(&room, &alice, "new"));
        tokio::time::timeout(Duration::from_secs(1), held.superseded())
            .await
            .expect("the named poll is told");
        assert!(
            tokio::time::timeout(quiet, other.superseded())
                .await
                .is_err()
        );
        drop(held);
        assert_eq!(slots.holders.lock().expect("lock").len(), 1);
    }
}
