//! Request-rate limits keyed by who or what a request is about, with `governor`'s GCRA (a token
//! bucket that needs no timer task): over the limit is `429` with `Retry-After` and a problem
//! document.
//!
//! Two kinds of limit:
//! - [`ClientLimits`]: joins, polls and posts per client address a minute, where the address is
//!   known (the standalone server: the connection's peer, or behind proxies named by
//!   `SIGNALPOST_TRUST_PROXY` the address they saw, see [`crate::proxy`]), in memory here and
//!   checked by a route layer before the request is read (`crate::http`). In Lambda, API
//!   Gateway's throttling does this job;
//! - per room: a burst of twice the room's capacity, then one join per post-rate window
//!   ([`crate::signalling::RATE_WINDOW`]), so join/leave cycling cannot flood a member's inbox
//!   with `peer-joined` and `peer-left`. It must hold across processes (Lambda instances, the
//!   functions under `cargo lambda watch`), so it lives in the store, on the room, written in
//!   the join's own transaction: [`RoomJoinRate`] is its arithmetic, the stores only keep its
//!   one number.

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::clock::Millis;
use crate::error::ApiError;

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

/// The requests a client address is limited in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientRequest {
    Join,
    Poll,
    Post,
}

/// Joins, polls and posts per client address a minute, each all at once if saved up; a limit
/// that is `None` is off.
pub struct ClientLimits {
    joins: Option<KeyedLimit<IpAddr>>,
    polls: Option<KeyedLimit<IpAddr>>,
    posts: Option<KeyedLimit<IpAddr>>,
}

impl ClientLimits {
    /// The limits per minute.
    pub fn new(
        joins: Option<NonZeroU32>,
        polls: Option<NonZeroU32>,
        posts: Option<NonZeroU32>,
    ) -> Self {
        let per_minute = |limit: Option<NonZeroU32>, what| {
            limit.map(|limit| KeyedLimit::new(Quota::per_minute(limit), what))
        };
        Self {
            joins: per_minute(joins, "joins from this address"),
            polls: per_minute(polls, "polls from this address"),
            posts: per_minute(posts, "posts from this address"),
        }
    }

    /// Counts one `request` from `client`, or refuses it with `429`.
    pub fn check(&self, request: ClientRequest, client: IpAddr) -> Result<(), ApiError> {
        let limit = match request {
            ClientRequest::Join => &self.joins,
            ClientRequest::Poll => &self.polls,
            ClientRequest::Post => &self.posts,
        };
        limit.as_ref().map_or(Ok(()), |limit| limit.check(&client))
    }

    /// Forgets clients whose budgets are full again.
    pub fn forget_idle(&self) {
        for limit in [&self.joins, &self.polls, &self.posts]
            .into_iter()
            .flatten()
        {
            limit.forget_idle();
        }
    }
}

/// The per-room join limit, as a GCRA ("generic cell rate algorithm", what `governor` runs in
/// memory) over one stored number per room: its theoretical arrival time (TAT), the time at
/// which the room's budget would be full again. A join at `now` is admitted while the TAT is
/// at most `(burst - 1) × period` ahead of `now`, and moves it one `period` on. No stored TAT
/// (a new room, or a row that expired once the budget was full) is a full budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoomJoinRate {
    /// Joins admitted at once when the budget is full.
    pub burst: u32,
    /// One more join is earned per period, in milliseconds.
    pub period_ms: Millis,
}

impl RoomJoinRate {
    /// Twice `capacity` at once, then one join per `window`.
    pub fn for_room(capacity: usize, window: Duration) -> Self {
        Self {
            burst: u32::try_from(capacity.saturating_mul(2))
                .unwrap_or(u32::MAX)
                .max(1),
            period_ms: Millis::try_from(window.as_millis())
                .unwrap_or(Millis::MAX)
                .max(1),
        }
    }

    /// Admits one join at `now` given the stored TAT: the TAT to store, or the `Retry-After`
    /// (whole seconds) of a refusal, which changes nothing.
    pub fn admit(self, tat: Option<Millis>, now: Millis) -> Result<Millis, u64> {
        let tat = tat.unwrap_or(now).max(now);
        let tolerance = self
            .period_ms
            .saturating_mul(Millis::from(self.burst.saturating_sub(1)));
        let ahead = tat.saturating_sub(now);
        if ahead > tolerance {
            let wait = u64::try_from(ahead - tolerance).unwrap_or(u64::MAX);
            return Err(whole_seconds(Duration::from_millis(wait)));
        }
        Ok(tat.saturating_add(self.period_ms))
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
    fn each_request_kind_has_its_own_budget_per_client_and_off_is_unlimited() {
        let two = NonZeroU32::new(2);
        let limits = ClientLimits::new(two, two, None);
        let (a, b): (IpAddr, IpAddr) = ([127, 0, 0, 1].into(), [127, 0, 0, 2].into());
        for _ in 0..2 {
            limits.check(ClientRequest::Join, a).expect("within");
            limits.check(ClientRequest::Poll, a).expect("within");
        }
        for request in [ClientRequest::Join, ClientRequest::Poll] {
            assert!(matches!(
                limits.check(request, a),
                Err(ApiError::RateLimited { .. })
            ));
            limits
                .check(request, b)
                .expect("another address has its own");
        }
        for _ in 0..1000 {
            limits.check(ClientRequest::Post, a).expect("posts are off");
        }
        limits.forget_idle();
    }

    #[test]
    fn a_room_admits_twice_its_capacity_at_once_then_one_per_window() {
        let rate = RoomJoinRate::for_room(3, Duration::from_secs(10));
        let now = 1_000_000;
        let mut tat = None;
        for _ in 0..6 {
            tat = Some(rate.admit(tat, now).expect("within the burst"));
        }
        assert_eq!(
            rate.admit(tat, now),
            Err(10),
            "the seventh waits a whole window"
        );
        assert_eq!(rate.admit(tat, now + 9_001), Err(1));
        let later = rate.admit(tat, now + 10_000).expect("one more per window");
        assert_eq!(rate.admit(Some(later), now + 10_000), Err(10));
        // A budget left unused for long is full again, never more than full.
        let rested = (0..6).try_fold(Some(later), |tat, _| {
            rate.admit(tat, now + 600_000).map(Some)
        });
        assert_eq!(
            rate.admit(rested.expect("a full burst"), now + 600_000),
            Err(10)
        );
    }
}
