//! Request-rate limits keyed by who or what a request is about, with `governor`'s GCRA (a token
//! bucket that needs no timer task): over the limit is `429` with `Retry-After` and a problem
//! document.
//!
//! - [`ClientLimits`]: joins, polls and posts per client address a minute, where the address is
//!   known (the standalone server: the connection's peer, or behind proxies named by
//!   `SIGNALPOST_TRUST_PROXY` the address they saw, see [`crate::proxy`]). Checked by a route
//!   layer before the request is read (`crate::http`). In Lambda, API Gateway's throttling
//!   does this job;
//! - per room, in [`crate::signalling::Signalling::join`] so it holds in every deployment: a burst of twice the room's capacity, then one join per post-rate window
//!   ([`crate::signalling::RATE_WINDOW`]). Join/leave cycling then cannot flood a member's
//!   inbox with `peer-joined` and `peer-left`, and since each membership has its own post
//!   budget, rejoining earns a fresh one at most once per window however many addresses the
//!   flooder has: a room's members together post at most (capacity + 1) budgets per window.
//!   It is per process: several processes (Lambda instances) each allow the same rate.

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

/// The limit on joins per room.
pub struct JoinLimits {
    pub per_room: KeyedLimit<RoomId>,
}

impl JoinLimits {
    /// Per room, twice `capacity` at once and then one per `window`.
    pub fn new(capacity: usize, window: Duration) -> Self {
        let burst = u32::try_from(capacity.saturating_mul(2))
            .ok()
            .and_then(NonZeroU32::new)
            .unwrap_or(NonZeroU32::MIN);
        let per_room = Quota::with_period(window)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        Self {
            per_room: KeyedLimit::new(per_room, "joins to this room"),
        }
    }

    /// Forgets idle rooms.
    pub fn forget_idle(&self) {
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
        let limits = JoinLimits::new(3, Duration::from_secs(10));
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
