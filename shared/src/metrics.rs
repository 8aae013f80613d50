//! What signalpost measures: every metric's name, and one helper per event, called where the
//! work happens (signalling, the store, the wake-ups, the HTTP layer) through the `metrics`
//! facade. Each deployment installs its own recorder once at start: Prometheus text on the
//! standalone server (`SIGNALPOST_METRICS_LISTEN`), CloudWatch Embedded Metric Format on
//! Lambda ([`emf`]). With no recorder installed every call here is a no-op.
//!
//! | metric (Prometheus name) | kind | labels | meaning |
//! |---|---|---|---|
//! | `signalpost_requests_total` | counter | `route`, `status_class` | HTTP requests answered, by route template (`POST /v1/rooms/:room/messages`; `web`, `preflight` or `unmatched` otherwise) and `2xx`…`5xx` |
//! | `signalpost_messages_posted_total` | counter | | messages accepted by posts (`202`) |
//! | `signalpost_messages_delivered_total` | counter | | messages returned by polls (replays after a lost response count again) |
//! | `signalpost_delivery_latency_seconds` | histogram | | for each message a poll returns: now minus the message's post time |
//! | `signalpost_waiting_polls` | gauge | | long polls in progress in this process |
//! | `signalpost_joins_total` | counter | | peers that joined |
//! | `signalpost_leaves_total` | counter | | peers that left (a second leave of the same peer is not counted) |
//! | `signalpost_presence_timeouts_total` | counter | | peers removed because they stopped polling |
//! | `signalpost_store_operations_total` | counter | `op` | store calls: `join`, `post`, `touch`, `read`, `sweep`, `leave`, `housekeeping`, `health` |
//! | `signalpost_store_errors_total` | counter | `kind` | failed store calls: `throttled` (DynamoDB throttling, after the SDK's retries), `unavailable` (busy, locked, timed out, a 5xx), `failed`, `corrupt` |
//! | `signalpost_wakeups_sent_total` | counter | | wake-ups sent to polls in other processes (one per process rung) |
//! | `signalpost_wakeups_received_total` | counter | | wake-ups received from other processes |
//! | `signalpost_wakeups_missed_total` | counter | | polls that found messages by a fallback read that no wake-up announced |
//! | `signalpost_wakeup_errors_total` | counter | | wake-ups that could not be sent or received, or took longer than their budget |
//! | `signalpost_rate_limited_total` | counter | `limit` | `429`s, by limit: `posts`, `inbox`, `joins-per-client`, `joins-per-room` |
//!
//! In EMF the names drop the `signalpost_` prefix and the `_total` suffix (`wakeup_errors`).
//!
//! The hot path stays cheap: metrics without labels use static keys (no allocation), and a
//! poll takes its latency histogram once and records each message into it.

pub mod emf;

use std::time::Duration;

use ::metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge};

use crate::clock::Millis;

pub const REQUESTS: &str = "signalpost_requests_total";
pub const MESSAGES_POSTED: &str = "signalpost_messages_posted_total";
pub const MESSAGES_DELIVERED: &str = "signalpost_messages_delivered_total";
pub const DELIVERY_LATENCY: &str = "signalpost_delivery_latency_seconds";
pub const WAITING_POLLS: &str = "signalpost_waiting_polls";
pub const JOINS: &str = "signalpost_joins_total";
pub const LEAVES: &str = "signalpost_leaves_total";
pub const PRESENCE_TIMEOUTS: &str = "signalpost_presence_timeouts_total";
pub const STORE_OPERATIONS: &str = "signalpost_store_operations_total";
pub const STORE_ERRORS: &str = "signalpost_store_errors_total";
pub const WAKEUPS_SENT: &str = "signalpost_wakeups_sent_total";
pub const WAKEUPS_RECEIVED: &str = "signalpost_wakeups_received_total";
pub const WAKEUPS_MISSED: &str = "signalpost_wakeups_missed_total";
pub const WAKEUP_ERRORS: &str = "signalpost_wakeup_errors_total";
pub const RATE_LIMITED: &str = "signalpost_rate_limited_total";

/// Bucket bounds of the delivery latency histogram, in seconds: a message delivered to a
/// waiting poll takes milliseconds; one found by a fallback read, up to 10 s; one that waited
/// for its recipient's next poll, up to the message TTL.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0, 600.0,
];

/// Describes every metric to the installed recorder (units, help texts); call once after
/// installing it.
pub fn describe() {
    describe_counter!(
        REQUESTS,
        Unit::Count,
        "HTTP requests answered, by route template and status class"
    );
    describe_counter!(MESSAGES_POSTED, Unit::Count, "Messages accepted by posts");
    describe_counter!(
        MESSAGES_DELIVERED,
        Unit::Count,
        "Messages returned by polls, replays included"
    );
    describe_histogram!(
        DELIVERY_LATENCY,
        Unit::Seconds,
        "From a message's post to the poll that returns it"
    );
    describe_gauge!(
        WAITING_POLLS,
        Unit::Count,
        "Long polls in progress in this process"
    );
    describe_counter!(JOINS, Unit::Count, "Peers that joined a room");
    describe_counter!(LEAVES, Unit::Count, "Peers that left a room");
    describe_counter!(
        PRESENCE_TIMEOUTS,
        Unit::Count,
        "Peers removed because they stopped polling"
    );
    describe_counter!(STORE_OPERATIONS, Unit::Count, "Store calls, by operation");
    describe_counter!(STORE_ERRORS, Unit::Count, "Failed store calls, by kind");
    describe_counter!(
        WAKEUPS_SENT,
        Unit::Count,
        "Wake-ups sent to polls in other processes"
    );
    describe_counter!(
        WAKEUPS_RECEIVED,
        Unit::Count,
        "Wake-ups received from other processes"
    );
    describe_counter!(
        WAKEUPS_MISSED,
        Unit::Count,
        "Polls that found messages by a fallback read no wake-up announced"
    );
    describe_counter!(
        WAKEUP_ERRORS,
        Unit::Count,
        "Wake-ups not sent or received, or over their time budget"
    );
    describe_counter!(RATE_LIMITED, Unit::Count, "429 answers, by limit");
}

/// The `2xx`…`5xx` class of an HTTP status (`1xx` for the rest, which we never send).
pub fn status_class(status: u16) -> &'static str {
    match status {
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "1xx",
    }
}

/// One HTTP request answered.
pub fn request(route: &'static str, status: u16) {
    counter!(REQUESTS, "route" => route, "status_class" => status_class(status)).increment(1);
}

/// `count` messages accepted by one post.
pub fn messages_posted(count: usize) {
    counter!(MESSAGES_POSTED).increment(count as u64);
}

/// A poll returns messages posted at `sent_at` (Unix ms each): counts them and records each
/// one's latency as of `now`. A clock behind the poster's counts as zero.
pub fn messages_delivered(sent_at: impl ExactSizeIterator<Item = Millis>, now: Millis) {
    counter!(MESSAGES_DELIVERED).increment(sent_at.len() as u64);
    let latency = ::metrics::histogram!(DELIVERY_LATENCY);
    for sent in sent_at {
        let millis = u64::try_from(now.saturating_sub(sent)).unwrap_or(0);
        latency.record(Duration::from_millis(millis).as_secs_f64());
    }
}

/// A long poll in progress: counted in [`WAITING_POLLS`] until dropped.
pub struct WaitingPoll(());

impl WaitingPoll {
    pub fn start() -> Self {
        gauge!(WAITING_POLLS).increment(1.0);
        Self(())
    }
}

impl Drop for WaitingPoll {
    fn drop(&mut self) {
        gauge!(WAITING_POLLS).decrement(1.0);
    }
}

pub fn joined() {
    counter!(JOINS).increment(1);
}

/// `count` peers left by their own request.
pub fn left(count: usize) {
    counter!(LEAVES).increment(count as u64);
}

/// `count` peers removed for not polling.
pub fn timed_out(count: usize) {
    counter!(PRESENCE_TIMEOUTS).increment(count as u64);
}

/// One store call, `op` naming the [`crate::store::Store`] method.
pub fn store_operation(op: &'static str) {
    counter!(STORE_OPERATIONS, "op" => op).increment(1);
}

/// One failed store call, by kind (see the table above).
pub fn store_error(kind: &'static str) {
    counter!(STORE_ERRORS, "kind" => kind).increment(1);
}

/// `count` wake-ups sent to other processes.
pub fn wakeups_sent(count: usize) {
    counter!(WAKEUPS_SENT).increment(count as u64);
}

pub fn wakeup_received() {
    counter!(WAKEUPS_RECEIVED).increment(1);
}

pub fn wakeup_missed() {
    counter!(WAKEUPS_MISSED).increment(1);
}

pub fn wakeup_error() {
    counter!(WAKEUP_ERRORS).increment(1);
}

/// A `429`, `limit` naming the limit that refused the request.
pub fn rate_limited(limit: &'static str) {
    counter!(RATE_LIMITED, "limit" => limit).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes() {
        assert_eq!(status_class(202), "2xx");
        assert_eq!(status_class(304), "3xx");
        assert_eq!(status_class(429), "4xx");
        assert_eq!(status_class(503), "5xx");
    }
}
