//! Request-rate limits keyed by who or what a request is about, with `governor`'s GCRA (a token
//! bucket that needs no timer task): over the limit is `429` with `Retry-After` and a problem
//! document.
//!
//! Two limits on joins today, both in [`crate::signalling::Signalling::join`] so they hold in
//! every deployment:
//! - per client address, where the address is known (the standalone server: the connection's
//!   peer, or with `SIGNALPOST_TRUST_PROXY` the address its proxy saw). In Lambda, API
//!   Gateway's throttling does this job;
//! - per room: a burst of twice the room's capacity, then one join per post-rate window
//!   ([`crate::signalling::RATE_WINDOW`]). Join/leave cycling then cannot flood a member's
//!   inbox with `peer-joined` and `peer-left`, and since each membership has its own post
//!   budget, rejoining earns a fresh one at most once per window however many addresses the
//!   flooder has: a room's members together post at most (capacity + 1) budgets per window.
//!   It is per process: several processes (Lambda instances) each allow the same rate.
//!
//! Per-client limits on other routes (polls, posts) are one more [`KeyedLimit`] each.

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::error::ApiError;
use crate::ids::RoomId;

/// A rate limit per key.
pub struct KeyedLimit<K: Hash + Eq + Clone> {
    limiter: DefaultKeyedRateLimiter<K>,
    what: &'static str,
}

impl<K: Hash + Eq + Clone> KeyedLimit<K> {
    /// `quota` per key; `what` names the limit in the `429`'s detail.
    pub fn new(quota: Quota, what: &'static str) -> Self {
        Self {
            limiter: RateLimiter::keyed(quota),
            what,
        }
    }

    /// Counts one request for `key`, or refuses it with `429` and how long to wait.
    pub fn check(&self, key: &K) -> Result<(), ApiError> {
        self.limiter.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::RateLimited {
                detail: format!("too many {}: retry later", self.what),
                retry_after: whole_seconds(wait),
            }
        })
    }

    /// Forgets keys whose budget is full again, so the map does not grow without bound.
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

/// The limits on joins.
pub struct JoinLimits {
    pub per_client: KeyedLimit<IpAddr>,
    pub per_room: KeyedLimit<RoomId>,
}

impl JoinLimits {
    /// `per_client` joins a minute per client address (all at once if saved up); per room,
    /// twice `capacity` at once and then one per `window`.
    pub fn new(per_client: NonZeroU32, capacity: usize, window: Duration) -> Self {
        let burst = u32::try_from(capacity.saturating_mul(2))
            .ok()
            .and_then(NonZeroU32::new)
            .unwrap_or(NonZeroU32::MIN);
        let per_room = Quota::with_period(window)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        Self {
            per_client: KeyedLimit::new(Quota::per_minute(per_client), "joins from this address"),
            per_room: KeyedLimit::new(per_room, "joins to this room"),
        }
    }

    /// Forgets idle clients and rooms.
    pub fn forget_idle(&self) {
        self.per_client.forget_idle();
        self.per_room.forget_idle();
    }
}

/// Whole seconds, at least 1: a `Retry-After` value.
fn whole_seconds(wait: Duration) -> u64 {
    wait.as_millis()
        .div_ceil(1000)
        .max(1)
        .try_into()
        .unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_over_the_limit_per_key_with_a_retry_after() {
        let limit = KeyedLimit::new(
            Quota::per_minute(NonZeroU32::new(2).expect("non-zero")),
            "things",
        );
        for _ in 0..2 {
            limit.check(&"a").expect("within the limit");
        }
        match limit.check(&"a") {
            Err(ApiError::RateLimited {
                retry_after,
                detail,
            }) => {
                assert!((1..=30).contains(&retry_after), "{retry_after}");
                assert!(detail.contains("things"), "{detail}");
            }
            other => panic!("not refused: {other:?}"),
        }
        limit.check(&"b").expect("another key has its own budget");
    }

    #[test]
    fn a_room_admits_twice_its_capacity_at_once_then_one_per_window() {
        let limits = JoinLimits::new(NonZeroU32::MAX, 3, Duration::from_secs(10));
        let room = RoomId::parse("r").expect("valid");
        for _ in 0..6 {
            limits.per_room.check(&room).expect("within the burst");
        }
        match limits.per_room.check(&room) {
            Err(ApiError::RateLimited { retry_after, .. }) => {
                assert!((1..=10).contains(&retry_after), "{retry_after}");
            }
            other => panic!("not refused: {other:?}"),
        }
    }
}
