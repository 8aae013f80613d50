//! Waking long polls: an instant in-process signal per inbox, and the adaptive schedule of
//! store reads that covers writes made by other processes (Lambda instances, or functions
//! under `cargo lambda watch`).
//!
//! Every read of a DynamoDB inbox costs money, so a waiting poll reads often only while its
//! inbox is busy: right after a message, when a negotiation is in flight, and then backs off
//! to the idle interval.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::ids::{PeerId, RoomId};

type InboxKey = (RoomId, PeerId);

/// In-process wake-ups, one [`Notify`] per inbox that has a waiting poll.
#[derive(Default)]
pub struct Wakeups {
    inboxes: Mutex<HashMap<InboxKey, Arc<Notify>>>,
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

    /// Inboxes with a waiting poll, for tests and metrics.
    pub fn waiting_inboxes(&self) -> usize {
        self.inboxes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }
}

/// When each room was last swept for silent peers by this process, so that its polls together
/// sweep it once per interval instead of each poll on its own (every poll of a busy room
/// would otherwise add a store call).
pub struct SweepSchedule {
    interval: Duration,
    last: Mutex<HashMap<RoomId, Instant>>,
}

impl SweepSchedule {
    /// Rooms are swept at most once per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: Mutex::default(),
        }
    }

    /// Whether `room` is due a sweep now; if so, the sweep is taken as done.
    pub fn due(&self, room: &RoomId) -> bool {
        let now = Instant::now();
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last
            .get(room)
            .is_some_and(|swept| now.duration_since(*swept) < self.interval)
        {
            return false;
        }
        // Forget rooms not swept lately, so the map holds only rooms being polled.
        if last.len() >= 4096 {
            last.retain(|_, swept| now.duration_since(*swept) < self.interval);
        }
        last.insert(room.clone(), now);
        true
    }
}

/// How often a waiting poll reads its inbox from the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PollSchedule {
    /// Interval while the inbox is busy.
    pub active: Duration,
    /// Interval once it has been quiet for `idle_after`.
    pub idle: Duration,
    /// Quiet time after which the inbox counts as idle.
    pub idle_after: Duration,
}

impl Default for PollSchedule {
    /// 50 ms while a negotiation is in flight (median delivery well under 100 ms), easing
    /// to one read every 2 s after 10 quiet seconds: with the presence sweep every 5 s,
    /// an idle waiting peer costs under one read per second.
    fn default() -> Self {
        Self {
            active: Duration::from_millis(50),
            idle: Duration::from_secs(2),
            idle_after: Duration::from_secs(10),
        }
    }
}

impl PollSchedule {
    /// The pause before the next read, given how long the inbox has been quiet: constant at
    /// first, then growing linearly to the idle interval.
    pub fn interval(&self, quiet: Duration) -> Duration {
        let ramp_start = self.idle_after / 2;
        if quiet <= ramp_start {
            return self.active;
        }
        if quiet >= self.idle_after {
            return self.idle;
        }
        let progress =
            (quiet - ramp_start).as_secs_f64() / (self.idle_after - ramp_start).as_secs_f64();
        self.active + (self.idle - self.active).mul_f64(progress)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn each_room_is_swept_once_per_interval() {
        let sweeps = SweepSchedule::new(Duration::from_millis(50));
        let (a, b) = (
            RoomId::parse("a").expect("valid"),
            RoomId::parse("b").expect("valid"),
        );
        assert!(sweeps.due(&a));
        assert!(!sweeps.due(&a), "the next poll of the same room skips it");
        assert!(sweeps.due(&b), "rooms are independent");
        std::thread::sleep(Duration::from_millis(60));
        assert!(sweeps.due(&a));
    }

    #[test]
    fn schedule_eases_from_active_to_idle() {
        let schedule = PollSchedule::default();
        assert_eq!(schedule.interval(Duration::ZERO), Duration::from_millis(50));
        assert_eq!(
            schedule.interval(Duration::from_secs(5)),
            Duration::from_millis(50)
        );
        let middle = schedule.interval(Duration::from_millis(7500));
        assert!(middle > Duration::from_millis(50) && middle < Duration::from_secs(2));
        assert_eq!(
            schedule.interval(Duration::from_secs(60)),
            Duration::from_secs(2)
        );
    }
}
