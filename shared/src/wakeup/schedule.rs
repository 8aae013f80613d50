//! When a waiting poll goes to the store on its own, without a wake-up: the fallback reads
//! that cover a lost or late wake-up, and the sweeps that find peers who stopped polling.
//!
//! Every read of a DynamoDB inbox costs money. With a wake-up path, a fallback read is only
//! insurance, so an idle poll reads at most once per [`PollSchedule::WITH_WAKEUPS`]' idle
//! interval; without one, it reads often while its inbox is busy and backs off when idle.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::clock::{Millis, now_millis};
use crate::ids::RoomId;

/// When each room is next due a sweep for silent peers in this process, so that its polls
/// together sweep it once instead of each poll on its own, and only when a member may have
/// timed out.
pub struct SweepSchedule {
    /// The shortest time between two sweeps of one room.
    interval: Duration,
    next: Mutex<HashMap<RoomId, Instant>>,
}

impl SweepSchedule {
    /// Rooms are swept at most once per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            next: Mutex::default(),
        }
    }

    /// Whether `room` is due a sweep now; if so, the sweep is taken as begun, and the next
    /// one is due in `interval` unless [`SweepSchedule::swept`] says later.
    pub fn due(&self, room: &RoomId) -> bool {
        let now = Instant::now();
        let mut next = self
            .next
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if next.get(room).is_some_and(|due| now < *due) {
            return false;
        }
        // Forget rooms long past due, so the map holds only rooms being polled.
        if next.len() >= 4096 {
            next.retain(|_, due| *due > now);
        }
        next.insert(room.clone(), now + self.interval);
        true
    }

    /// Records a sweep's finding: no remaining member can time out before `stale_at`
    /// (Unix ms) unless it polls again, so the room needs no sweep before then.
    pub fn swept(&self, room: &RoomId, stale_at: Option<Millis>) {
        let Some(stale_at) = stale_at else {
            return;
        };
        let until = Duration::from_millis(u64::try_from(stale_at - now_millis()).unwrap_or(0));
        let at = Instant::now() + until.max(self.interval);
        self.next
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(room.clone(), at);
    }

    /// When `room` is next due a sweep (now, if never swept here).
    pub fn next_due(&self, room: &RoomId) -> Instant {
        self.next
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(room)
            .copied()
            .unwrap_or_else(Instant::now)
    }
}

/// How often a waiting poll reads its inbox from the store on its own.
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
    /// Without a wake-up path (writes from other processes are seen only by reading): 50 ms
    /// while a negotiation is in flight, easing to one read every 2 s after 10 quiet seconds.
    fn default() -> Self {
        Self {
            active: Duration::from_millis(50),
            idle: Duration::from_secs(2),
            idle_after: Duration::from_secs(10),
        }
    }
}

impl PollSchedule {
    /// With a wake-up path the reads are insurance against a lost wake-up: once a second
    /// while a negotiation is in flight (a wake-up rung at an address the poll has just
    /// left costs at most that), easing to once per 10 s when idle.
    pub const WITH_WAKEUPS: Self = Self {
        active: Duration::from_secs(1),
        idle: Duration::from_secs(10),
        idle_after: Duration::from_secs(10),
    };

    /// A process alone on its store sees every write itself, and wakes its polls in-process:
    /// no fallback reads (an hour is longer than any poll). A poll still reads when woken,
    /// when its presence update shows the inbox head past its cursor, and so at the start of
    /// the next poll should a write have gone unnoticed.
    pub const ALONE: Self = Self {
        active: Duration::from_secs(3600),
        idle: Duration::from_secs(3600),
        idle_after: Duration::from_secs(10),
    };

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
    fn a_room_whose_members_polled_lately_is_not_swept_before_one_could_time_out() {
        let sweeps = SweepSchedule::new(Duration::from_millis(50));
        let room = RoomId::parse("r").expect("valid");
        assert!(sweeps.due(&room));
        sweeps.swept(&room, Some(now_millis() + 60_000));
        std::thread::sleep(Duration::from_millis(60));
        assert!(!sweeps.due(&room), "nobody can have timed out yet");
        assert!(sweeps.next_due(&room) > Instant::now() + Duration::from_secs(59));
        sweeps.swept(&room, Some(now_millis() - 1));
        std::thread::sleep(Duration::from_millis(60));
        assert!(sweeps.due(&room), "the interval still bounds how often");
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
        assert_eq!(
            PollSchedule::WITH_WAKEUPS.interval(Duration::from_secs(60)),
            Duration::from_secs(10)
        );
    }
}
