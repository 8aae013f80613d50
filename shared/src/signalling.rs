//! The contract's rules, independent of HTTP: join, send, long-poll, leave, ICE servers.
//!
//! Handlers in [`crate::http`] parse requests into domain types and call these methods; the
//! methods talk to the [`Store`] and wake waiting polls. Nothing here knows which store or
//! which deployment it runs in.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;

use crate::clock::{Millis, duration_millis, now_millis, rfc3339_seconds};
use crate::config::Config;
use crate::cursor::Cursor;
use crate::error::ApiError;
use crate::ice::{IceServer, ice_servers};
use crate::ids::{MessageId, PeerId, RoomId};
use crate::limits::{ClientLimits, ClientRequest, RoomJoinRate};
use crate::message::{Outgoing, StoredMessage};
use crate::metrics;
use crate::store::metered::Metered;
use crate::store::{
    Departures, Doorbell, JoinRequest, PollRecord, PostRequest, RateLimit, ReadLimit, Store,
    Timing, Waiting,
};
use crate::token::{PeerGrant, TokenError, TokenKeys};
use crate::wakeup::{self, InProcess, PollSchedule, SweepSchedule, Wakeup, Wakeups};

/// Most messages one poll returns.
pub const MAX_MESSAGES_PER_POLL: usize = 100;
/// Most bytes of message data (plus a fixed allowance per message for its other fields,
/// [`StoredMessage::poll_cost`]) one poll returns, unless its first message alone is larger:
/// the rest comes with the next poll. 100 messages of 32 KiB would otherwise make one
/// response over 3 MB, which a client that never reads leaves in the server's memory. The
/// store's read stops at it too ([`ReadLimit`]), so a poll reads no more than it sends.
pub const MAX_POLL_BYTES: usize = 256 * 1024;
/// What one poll may read and return.
pub const POLL_READ_LIMIT: ReadLimit = ReadLimit {
    messages: MAX_MESSAGES_PER_POLL,
    bytes: MAX_POLL_BYTES,
};
/// The shortest time between two sweeps of one room for peers that stopped polling, by the
/// polls of one process. A sweep also says when the next one is due: when the first
/// remaining member could time out.
const SWEEP_INTERVAL: Duration = Duration::from_secs(5);
/// How long an empty read keeps being repeated quickly after a wake-up, or after `touch`
/// showed the inbox head past the cursor: a writer allocated positions it has not yet
/// committed (DynamoDB), which takes milliseconds, or the gap timeout at worst.
const EAGER_AFTER_SIGN: Duration = Duration::from_millis(2500);
/// The pause between those quick reads.
const EAGER_INTERVAL: Duration = Duration::from_millis(50);
/// The default long-poll wait when the client names none.
const DEFAULT_WAIT: u64 = 20;
/// How often the embedded store drops expired messages and silent peers.
pub const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(30);
/// The window `SIGNALPOST_RATE_LIMIT` counts a peer's posts in.
pub const RATE_WINDOW: Duration = Duration::from_secs(10);

/// The signalling service over one store.
pub struct Signalling {
    config: Config,
    store: Arc<dyn Store>,
    keys: TokenKeys,
    /// Polls waiting in this process.
    wakeups: Arc<Wakeups>,
    /// The path to polls waiting in other processes.
    wakeup: Arc<dyn Wakeup>,
    schedule: PollSchedule,
    sweeps: SweepSchedule,
    clients: ClientLimits,
    shutdown: watch::Sender<bool>,
}

/// The join response body.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Joined {
    pub peer: PeerId,
    pub token: String,
    pub expires_at: String,
    pub polite: bool,
    pub peers: Vec<PeerSummary>,
    pub ice_servers: Vec<IceServer>,
    pub max_wait: u64,
}

/// Another member, as listed in the join response.
#[derive(Serialize)]
pub struct PeerSummary {
    pub peer: PeerId,
    pub name: Option<String>,
}

/// The ICE servers response body.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IceServers {
    pub ice_servers: Vec<IceServer>,
    pub expires_at: String,
}

/// What a poll found: messages in order, and the cursor to resume after them.
pub struct Polled {
    pub messages: Vec<StoredMessage>,
    pub cursor: Cursor,
}

impl Signalling {
    /// The service over `store`, configured by `config`, waking only polls of this process
    /// at once (polls elsewhere find writes by their fallback reads).
    pub fn new(config: Config, store: Arc<dyn Store>) -> Self {
        Self::with_wakeup(config, store, Arc::default(), Arc::new(InProcess))
    }

    /// The service with the wake-up adapter the configuration calls for (see
    /// [`wakeup::open`]).
    pub async fn open(config: Config, store: Arc<dyn Store>) -> Self {
        let wakeups = Arc::new(Wakeups::default());
        let adapter = wakeup::open(&config, Arc::clone(&wakeups)).await;
        Self::with_wakeup(config, store, wakeups, adapter)
    }

    /// The service with a given wake-up adapter, which delivers into `wakeups`.
    pub fn with_wakeup(
        config: Config,
        store: Arc<dyn Store>,
        wakeups: Arc<Wakeups>,
        wakeup: Arc<dyn Wakeup>,
    ) -> Self {
        let clients = ClientLimits::new(config.join_limit, config.poll_limit, config.post_limit);
        Self {
            keys: TokenKeys::new(config.secret.expose()),
            config,
            // Every deployment's store is measured here, once.
            store: Arc::new(Metered(store)),
            wakeups,
            wakeup,
            schedule: PollSchedule::default(),
            sweeps: SweepSchedule::new(SWEEP_INTERVAL),
            clients,
            shutdown: watch::Sender::new(false),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    fn timing(&self) -> Timing {
        let now = now_millis();
        Timing {
            now,
            expires_at: now + seconds_to_millis(self.config.message_ttl),
            stale_before: now - seconds_to_millis(self.config.presence_timeout),
            post_window_ms: seconds_to_millis(RATE_WINDOW.as_secs()),
        }
    }

    /// Checks a bearer token.
    pub fn verify_peer_token(&self, token: &str) -> Result<PeerGrant, ApiError> {
        self.keys.verify_peer(token).map_err(|error| match error {
            TokenError::Expired => {
                ApiError::Unauthorized("the token has expired: join again".into())
            }
            TokenError::Invalid => ApiError::Unauthorized(error.to_string()),
        })
    }

    /// Counts a request from `client` against its address's limit for `request`, or refuses
    /// it with `429`.
    pub fn limit_client(&self, request: ClientRequest, client: IpAddr) -> Result<(), ApiError> {
        self.clients.check(request, client).inspect_err(|_| {
            metrics::rate_limited(match request {
                ClientRequest::Join => "joins-per-client",
                ClientRequest::Poll => "polls-per-client",
                ClientRequest::Post => "posts-per-client",
            })
        })
    }

    /// Joins `room`: mints a peer, tells the members present, and hands out a token.
    pub async fn join(
        &self,
        room: RoomId,
        name: Option<String>,
        join_token: Option<&str>,
    ) -> Result<Joined, ApiError> {
        if self.config.gated {
            let token = join_token.ok_or_else(|| {
                ApiError::Unauthorized(
                    "this server's rooms are gated: a joinToken is required".into(),
                )
            })?;
            let opens = self
                .keys
                .verify_join(token)
                .map_err(|error| ApiError::Unauthorized(error.to_string()))?;
            if opens != room {
                return Err(ApiError::Forbidden(
                    "the joinToken is for another room".into(),
                ));
            }
        }
        let peer = PeerId::mint();
        let timing = self.timing();
        let joined = self
            .store
            .join(JoinRequest {
                room: room.clone(),
                peer: peer.clone(),
                name: name.clone(),
                capacity: self.config.max_peers,
                inbox_limit: self.config.max_inbox,
                // Checked by the store after the gate: in a gated room, only token holders
                // spend the room's join budget.
                join_rate: RoomJoinRate::for_room(self.config.max_peers, RATE_WINDOW),
                timing,
            })
            .await?;
        metrics::joined();
        metrics::timed_out(joined.departures.gone.len());
        self.wakeups
            .wake(&room, joined.others.iter().map(|member| &member.peer));
        self.ring(&room, &joined.doorbells).await;
        self.wake_departures(&room, &joined.departures).await;

        let expires_at =
            timing.now / 1000 + i64::try_from(self.config.token_ttl).unwrap_or(i64::MAX);
        let (ice_servers, _) = self.ice_servers_for(&peer, timing.now);
        Ok(Joined {
            token: self.keys.issue_peer(&room, &peer, expires_at),
            peer,
            expires_at: rfc3339_seconds(expires_at),
            polite: true,
            peers: joined
                .others
                .into_iter()
                .map(|member| PeerSummary {
                    peer: member.peer,
                    name: member.name,
                })
                .collect(),
            ice_servers,
            max_wait: self.config.max_wait,
        })
    }

    /// Stores validated messages from the grant's peer; returns one server id per message.
    pub async fn post(
        &self,
        grant: &PeerGrant,
        messages: Vec<Outgoing>,
    ) -> Result<Vec<MessageId>, ApiError> {
        let posted = self
            .store
            .post(PostRequest {
                room: grant.room.clone(),
                sender: grant.peer.clone(),
                messages: messages
                    .into_iter()
                    .map(|message| (MessageId::mint(), message))
                    .collect(),
                inbox_limit: self.config.max_inbox,
                rate_limit: RateLimit {
                    posts: self.config.rate_limit,
                    window_ms: seconds_to_millis(RATE_WINDOW.as_secs()),
                },
                timing: self.timing(),
            })
            .await?;
        metrics::messages_posted(posted.ids.len());
        self.wakeups.wake(&grant.room, &posted.recipients);
        self.ring(&grant.room, &posted.doorbells).await;
        Ok(posted.ids)
    }

    /// Parses the `wait` query value: a whole number of seconds up to `maxWait`.
    pub fn parse_wait(&self, wait: Option<&str>) -> Result<Duration, ApiError> {
        let max = self.config.max_wait;
        let Some(text) = wait else {
            return Ok(Duration::from_secs(DEFAULT_WAIT.min(max)));
        };
        match text.parse::<u64>() {
            Ok(seconds) if seconds <= max && text.bytes().all(|byte| byte.is_ascii_digit()) => {
                Ok(Duration::from_secs(seconds))
            }
            _ => Err(ApiError::InvalidRequest(format!(
                "wait must be a whole number of seconds from 0 to {max}"
            ))),
        }
    }

    /// The long poll: returns as soon as the grant's inbox has messages after `after`, or
    /// empty once `wait` has passed (or the server is shutting down).
    ///
    /// The poll subscribes to its inbox's wake-ups in this process, makes sure the process
    /// listens for wake-ups from others and records that address on its member with the
    /// presence update, then reads only when there is reason to: `touch` showed something
    /// past the cursor, a wake-up came, or the fallback schedule says so.
    pub async fn poll(
        &self,
        grant: &PeerGrant,
        after: Option<Cursor>,
        wait: Duration,
    ) -> Result<Polled, ApiError> {
        let (room, peer) = (&grant.room, &grant.peer);
        let _waiting = metrics::WaitingPoll::start();
        let started = Instant::now();
        let deadline = started + wait;
        let subscription = self.wakeups.subscribe(room, peer);
        // One waiting poll per peer: the slot ends an older poll in this process; the presence
        // update below names one waiting elsewhere.
        let poll_id = ulid::Ulid::new().to_string();
        let slot = self.wakeups.polls().take(room, peer, &poll_id);
        let mut shutdown = self.shutdown.subscribe();
        let listening = self.wakeup.listen().await;
        let schedule = match &listening {
            None => self.schedule,
            Some(_) if self.wakeup.alone() => PollSchedule::ALONE,
            Some(_) => PollSchedule::WITH_WAKEUPS,
        };
        let after_seq = after.map_or(0, |cursor| cursor.seq);
        let touched_at = now_millis();
        let presence = self
            .store
            .touch_waiting(
                room,
                peer,
                after_seq,
                touched_at,
                listening.as_ref().map(|listening| Waiting {
                    address: &listening.address,
                    poll: &poll_id,
                    until: touched_at.saturating_add(duration_millis(wait)),
                }),
            )
            .await?;
        if let Some(previous) = presence.previous {
            self.supersede(room, peer, previous, touched_at).await;
        }
        let head = presence.head;
        if after_seq > head {
            return Err(ApiError::InvalidRequest(
                "after is ahead of this inbox (a cursor from an earlier session?): poll without it"
                    .into(),
            ));
        }
        // A first poll counts as activity: a negotiation usually follows a join. A cursor's
        // activity is the client's word: never later than what the server knows, now and the
        // inbox's last message (or its member's join), which the presence update returned.
        let activity = after.map_or_else(now_millis, |cursor| {
            cursor.activity_until(now_millis().min(presence.last_activity))
        });
        let quiet = || Duration::from_millis(u64::try_from(now_millis() - activity).unwrap_or(0));
        // Nothing past the cursor: no read until a wake-up or the fallback.
        let (mut next_read, mut eager_until) = if head > after_seq {
            (started, started + EAGER_AFTER_SIGN)
        } else {
            (started + schedule.interval(quiet()), started)
        };
        // Whether the next read is only the fallback: nothing announced a message, neither
        // the presence update's inbox head nor a wake-up (nor a recent sign of either).
        let mut fallback = head <= after_seq;
        // How far an empty answer may move the cursor (past numbers that expired unread).
        let mut through = after_seq;
        let mut first_wait = true;
        loop {
            let woken = subscription.notify().notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if self.sweeps.due(room) {
                self.sweep(room).await?;
            }
            let now = Instant::now();
            if now >= next_read {
                let read = self
                    .store
                    .read(room, peer, after_seq, POLL_READ_LIMIT, now_millis())
                    .await?;
                if let Some(last) = read.messages.last() {
                    if fallback {
                        metrics::wakeup_missed();
                    }
                    metrics::messages_delivered(
                        read.messages.iter().map(|message| message.sent_at),
                        now_millis(),
                    );
                    // The last message returned: `read.through` may lie past it, over
                    // numbers that expired unread, which a cursor need not name.
                    let cursor = Cursor {
                        seq: last.seq,
                        activity: last.sent_at,
                    };
                    return Ok(Polled {
                        messages: read.messages,
                        cursor,
                    });
                }
                through = through.max(read.through);
                let now = Instant::now();
                fallback = now >= eager_until;
                next_read = now
                    + if fallback {
                        schedule.interval(quiet())
                    } else {
                        EAGER_INTERVAL
                    };
            }
            let now = Instant::now();
            if now >= deadline || *shutdown.borrow() {
                // Past any expired numbers: acknowledging them frees the inbox for good.
                let cursor = Cursor {
                    seq: through,
                    activity,
                };
                return Ok(Polled {
                    messages: Vec::new(),
                    cursor,
                });
            }
            if first_wait {
                // From here on only a wake-up or a later read returns the poll: tests that
                // time wake-ups across processes wait for this event before they post
                // (tests/watch/cross_process_wakeup.py).
                tracing::debug!(%room, %peer, "long poll waiting");
                first_wait = false;
            }
            // Sweeps ride on the poll's own timer: an idle poll costs its fallback reads plus
            // a sweep when a member could have timed out, not an extra read after each.
            let until = next_read.min(deadline).min(self.sweeps.next_due(room));
            tokio::select! {
                () = &mut woken => {
                    let now = Instant::now();
                    next_read = now;
                    eager_until = now + EAGER_AFTER_SIGN;
                    fallback = false;
                }
                () = tokio::time::sleep_until(until.into()) => {}
                _ = shutdown.changed() => {}
                () = slot.superseded() => {
                    let cursor = Cursor { seq: after_seq, activity };
                    return Ok(Polled { messages: Vec::new(), cursor });
                }
            }
        }
    }

    /// Ends the peer's previous poll where it waits, if it may still be waiting in another
    /// process (this process's slot ended it already if it waits here, and the adapter does
    /// not ring its own address). Best effort like every doorbell: if this one is lost, the
    /// older poll ends with its own wait (at most `maxWait` seconds), as it would have without
    /// the cap, and it has delivered nothing this poll could then miss or repeat out of order.
    async fn supersede(&self, room: &RoomId, peer: &PeerId, previous: PollRecord, now: Millis) {
        if previous.may_wait(now) {
            let doorbell = Doorbell::supersede(peer.clone(), previous.address, previous.poll);
            self.ring(room, &[doorbell]).await;
        }
    }

    async fn sweep(&self, room: &RoomId) -> Result<(), ApiError> {
        let departures = self.store.sweep(room, self.timing()).await?;
        metrics::timed_out(departures.gone.len());
        self.sweeps.swept(room, departures.stale_at);
        self.wake_departures(room, &departures).await;
        Ok(())
    }

    async fn wake_departures(&self, room: &RoomId, departures: &Departures) {
        if !departures.gone.is_empty() {
            self.wakeups.wake(room, &departures.notified);
            self.ring(room, &departures.doorbells).await;
        }
    }

    /// Rings the doorbells of polls in other processes; never fails the write that rang.
    async fn ring(&self, room: &RoomId, doorbells: &[Doorbell]) {
        if !doorbells.is_empty()
            && tokio::time::timeout(wakeup::RING_BUDGET, self.wakeup.ring(room, doorbells))
                .await
                .is_err()
        {
            metrics::wakeup_error();
            tracing::debug!("wake-ups took too long to send; left to the fallback reads");
        }
    }

    /// Removes the grant's peer from its room; leaving twice is not an error.
    pub async fn leave(&self, grant: &PeerGrant) -> Result<(), ApiError> {
        let departures = self
            .store
            .leave(&grant.room, &grant.peer, self.timing())
            .await?;
        metrics::left(departures.gone.len());
        self.wake_departures(&grant.room, &departures).await;
        Ok(())
    }

    fn ice_servers_for(&self, peer: &PeerId, now: Millis) -> (Vec<IceServer>, i64) {
        ice_servers(
            &self.config.stun_urls,
            self.config.turn.as_ref(),
            peer,
            now / 1000,
        )
    }

    /// Fresh ICE servers (TURN credentials) for the grant's peer, while it is a member: a peer
    /// that left (or timed out) gets `410`, as on the other peer routes, so a token outliving
    /// its membership cannot keep minting TURN credentials. The check is the poll's presence
    /// touch (acknowledging nothing new): asking for credentials is a sign of life too.
    pub async fn ice_servers(&self, grant: &PeerGrant) -> Result<IceServers, ApiError> {
        let now = now_millis();
        self.store.touch(&grant.room, &grant.peer, 0, now).await?;
        let (ice_servers, expires_at) = self.ice_servers_for(&grant.peer, now);
        Ok(IceServers {
            ice_servers,
            expires_at: rfc3339_seconds(expires_at),
        })
    }

    /// Whether the store answers and can write. Any failure is `503`, as the contract says
    /// of health, including those that are `500` on other routes.
    pub async fn health(&self) -> Result<(), ApiError> {
        self.store
            .health()
            .await
            .map_err(|error| match ApiError::from(error) {
                ApiError::Internal => ApiError::Unavailable,
                other => other,
            })
    }

    /// Runs [`Self::housekeeping`] every [`HOUSEKEEPING_INTERVAL`] (or half the message TTL,
    /// if shorter) until the task is aborted. Every process on an embedded store runs it (the
    /// standalone server, each function under `cargo lambda watch`); the store's lease makes
    /// one of them at a time do the work.
    pub fn spawn_housekeeping(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let signalling = Arc::clone(self);
        tokio::spawn(async move {
            // Often enough that expired messages never pile up for long past their TTL.
            let ttl = Duration::from_secs(signalling.config.message_ttl);
            let mut every = tokio::time::interval(HOUSEKEEPING_INTERVAL.min(ttl / 2));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                // A failure is logged where it becomes an ApiError; the next round retries.
                let _ = signalling.housekeeping().await;
            }
        })
    }

    /// Periodic clean-up for stores that need it (the embedded one).
    pub async fn housekeeping(&self) -> Result<(), ApiError> {
        self.clients.forget_idle();
        for (room, departures) in self.store.housekeeping(self.timing()).await? {
            metrics::timed_out(departures.gone.len());
            self.wake_departures(&room, &departures).await;
        }
        Ok(())
    }

    /// Ends every waiting poll now (with whatever it has) and makes new ones return at once,
    /// so a graceful shutdown does not wait out 25-second polls.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Gives back the wake-up adapter's queue or socket, within [`wakeup::CLOSE_BUDGET`];
    /// call once polls have ended.
    pub async fn close(&self) {
        if tokio::time::timeout(wakeup::CLOSE_BUDGET, self.wakeup.close())
            .await
            .is_err()
        {
            tracing::warn!(
                "the wake-up queue or socket was not given back in time; it is left behind"
            );
        }
    }
}

fn seconds_to_millis(seconds: u64) -> Millis {
    i64::try_from(seconds)
        .unwrap_or(i64::MAX / 1000)
        .saturating_mul(1000)
}

#[cfg(test)]
mod tests;
