//! Waking long polls, a port with one adapter per deployment, as the store is.
//!
//! A poll waits on its inbox's in-process signal ([`Wakeups`]). A write wakes the polls of
//! its own process directly, and rings the recipients' doorbells for polls waiting in other
//! processes: each poll records where it waits (its process's wake-up address) on its member
//! with the presence update it makes anyway ([`crate::store::Store::touch_waiting`]), and
//! every write already reads the members it writes to, so the writer learns where to ring
//! without another read. The adapter of the receiving process turns a doorbell back into an
//! in-process wake-up.
//!
//! | deployment | adapter | address |
//! |---|---|---|
//! | one process alone, or no Unix sockets | [`InProcess`] | none |
//! | processes sharing a SQLite file (`cargo lambda watch`, several servers) | [`socket::SocketWakeup`] | a Unix datagram socket per process, beside the database |
//! | processes sharing a DynamoDB table (Lambda, servers) | [`sqs::SqsWakeup`] | an SQS queue per process (execution environment), long-polled |
//!
//! A wake-up is only a hint: the inbox stays the truth. A lost or late one costs latency
//! until the poll's next fallback read ([`PollSchedule::WITH_WAKEUPS`]), and a failing
//! wake-up path never fails the write that rang it. A process that knows it is alone on its
//! store ([`Wakeup::alone`]) wakes its polls in-process for every write, so its polls make no
//! fallback reads ([`PollSchedule::ALONE`]).

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod local;
mod schedule;
#[cfg(unix)]
pub mod socket;
pub mod sqs;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;

pub use self::local::{InProcess, Subscription, Wakeups};
pub use self::schedule::{PollSchedule, SweepSchedule};
use crate::config::Config;
use crate::ids::{PeerId, RoomId};
use crate::store::Doorbell;

/// How long a write waits for its doorbells to be sent: a slow wake-up service must not hold
/// the write's answer for long (on Lambda the sends must finish before the answer, as the
/// environment may be frozen right after it).
pub const RING_BUDGET: std::time::Duration = std::time::Duration::from_millis(500);

/// How long giving the adapter's queue or socket back may take at shutdown: a stalled
/// wake-up service must not hold a graceful shutdown. It also fits Lambda's SHUTDOWN phase
/// (500 ms with an internal extension registered), where the poll function calls it (`crate::lambda`).
pub const CLOSE_BUDGET: std::time::Duration = std::time::Duration::from_millis(300);

/// Carries wake-ups to polls waiting in other processes. Received wake-ups go to the
/// [`Wakeups`] the adapter was built with. Implementations are shared as `Arc<dyn Wakeup>`.
#[async_trait]
pub trait Wakeup: Send + Sync + 'static {
    /// This process's wake-up address, with its receiver listening until the returned
    /// [`Listening`] (and every other one) is dropped. `None` when there is no address: the
    /// poll then relies on its fallback reads.
    async fn listen(&self) -> Option<Listening>;

    /// Rings each doorbell at another process's address. Best effort: a failure is logged,
    /// never returned, and costs the recipient only latency.
    async fn ring(&self, room: &RoomId, doorbells: &[Doorbell]);

    /// Gives back what the adapter holds (its queue, its socket) before the process ends; no
    /// address comes back to life afterwards. Callers bound it by [`CLOSE_BUDGET`].
    async fn close(&self) {}

    /// Whether this process is known to be the only one using the store: then every write
    /// wakes its polls in-process, and they need no fallback reads (the standalone server
    /// alone on its SQLite file). `false` whenever that cannot be known.
    fn alone(&self) -> bool {
        false
    }
}

/// A poll's hold on its process's receiver.
pub struct Listening {
    /// Where this process receives wake-ups: recorded on the poll's member.
    pub address: Arc<str>,
    /// Keeps the receiver going while held.
    _hold: Option<Box<dyn Send + Sync>>,
}

impl Listening {
    /// An address whose receiver needs no hold (it listens for the process's lifetime).
    pub fn always(address: Arc<str>) -> Self {
        Self {
            address,
            _hold: None,
        }
    }

    /// An address whose receiver listens while `hold` lives.
    pub fn held(address: Arc<str>, hold: impl Send + Sync + 'static) -> Self {
        Self {
            address,
            _hold: Some(Box::new(hold)),
        }
    }
}

/// The adapter for the configured deployment: SQS beside a DynamoDB table, Unix sockets
/// beside a SQLite file, in-process otherwise (or when `SIGNALPOST_WAKEUPS=off`).
pub async fn open(config: &Config, wakeups: Arc<Wakeups>) -> Arc<dyn Wakeup> {
    if !config.wakeups {
        return Arc::new(InProcess);
    }
    if let Some(table) = &config.table {
        return match sqs::SqsWakeup::connect(table, wakeups).await {
            Ok(adapter) => Arc::new(adapter),
            Err(reason) => {
                tracing::warn!(%reason, "no SQS wake-ups: polls in other processes wake on their fallback reads");
                Arc::new(InProcess)
            }
        };
    }
    #[cfg(unix)]
    {
        let adapter = socket::SocketWakeup::beside(&config.db_path, wakeups);
        // Bound now, not at the first poll: a process that only writes (the `post` function
        // under watch) must be visible to the others' `alone`.
        let _ = adapter.listen().await;
        Arc::new(adapter)
    }
    #[cfg(not(unix))]
    {
        let _ = wakeups;
        Arc::new(InProcess)
    }
}

/// The doorbells to ring elsewhere, one payload per address: a line `room peer` per inbox to
/// wake, and `room peer poll` per superseded poll to end. Room and peer ids hold no spaces or
/// line breaks, nor do poll ids (ULIDs), so the format needs no escaping; a receiver from
/// before poll ids finds no valid peer in a three-word line and ignores it.
pub(crate) fn payloads(
    room: &RoomId,
    doorbells: &[Doorbell],
    own: Option<&str>,
) -> BTreeMap<String, String> {
    let mut payloads: BTreeMap<String, String> = BTreeMap::new();
    for doorbell in doorbells {
        // Polls of this process were woken in-process already.
        if Some(doorbell.address.as_str()) == own {
            continue;
        }
        let payload = payloads.entry(doorbell.address.clone()).or_default();
        let line = match &doorbell.ends {
            None => format!("{} {}\n", room.as_str(), doorbell.peer.as_str()),
            Some(poll) => format!("{} {} {poll}\n", room.as_str(), doorbell.peer.as_str()),
        };
        if !payload.contains(&line) {
            payload.push_str(&line);
        }
    }
    payloads
}

/// Wakes the inboxes and ends the superseded polls a payload names (one wake-up received,
/// however many it names); returns how many lines it acted on. Lines that do not parse are
/// ignored (a wake-up is only a hint, and nothing here trusts its sender: ending a poll needs
/// its id, which only the store's member record holds).
pub(crate) fn deliver(wakeups: &Wakeups, payload: &str) -> usize {
    crate::metrics::wakeup_received();
    let mut acted = 0;
    for line in payload.lines() {
        let mut words = line.split(' ');
        let (Some(room), Some(peer)) = (words.next(), words.next()) else {
            continue;
        };
        let (Ok(room), Ok(peer)) = (RoomId::parse(room), PeerId::parse(peer)) else {
            continue;
        };
        match (words.next(), words.next()) {
            (None, _) => {
                wakeups.wake(&room, [&peer]);
                acted += 1;
            }
            (Some(poll), None) if !poll.is_empty() => {
                wakeups.polls().supersede(&room, &peer, poll);
                acted += 1;
            }
            _ => {}
        }
    }
    acted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_group_by_address_and_skip_our_own() {
        let room = RoomId::parse("r").expect("valid");
        let (a, b, c) = (PeerId::mint(), PeerId::mint(), PeerId::mint());
        let bell = |peer: &PeerId, address: &str| Doorbell::wake(peer.clone(), address.into());
        let ends = Doorbell::supersede(c.clone(), "x".into(), "p1".into());
        let payloads = payloads(
            &room,
            &[
                bell(&a, "x"),
                bell(&b, "x"),
                bell(&a, "x"),
                bell(&c, "me"),
                ends,
            ],
            Some("me"),
        );
        assert_eq!(payloads.len(), 1);
        assert_eq!(payloads["x"], format!("r {a}\nr {b}\nr {c} p1\n"));
        let wakeups = Wakeups::default();
        let held = wakeups.polls().take(&room, &c, "p1");
        assert_eq!(deliver(&wakeups, &payloads["x"]), 3);
        drop(held);
        assert_eq!(
            deliver(&wakeups, "garbage\nr not/a/peer\nr a p1 extra\nr a \n"),
            0
        );
    }
}
