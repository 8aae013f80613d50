//! Wake-ups between processes sharing a DynamoDB table (Lambda execution environments,
//! standalone servers): one SQS standard queue per process, long-polled by one receiver that
//! every waiting poll of the process shares.
//!
//! - **Name:** `{table}-wake-{random}`, so only `SIGNALPOST_TABLE` and the standard AWS
//!   variables (`AWS_ENDPOINT_URL_SQS` locally) are needed, and IAM can scope the queues to
//!   the prefix `{table}-wake-`. Created when the process's first poll waits, not before: a
//!   process that only posts never has one.
//! - **Doorbells** need no delete: the queue keeps a message 60 s (`MessageRetentionPeriod`,
//!   SQS's least) and a receive hides it for 12 h (`VisibilityTimeout`), so each is received
//!   once and then expires.
//! - **Receiving:** `ReceiveMessage` with `WaitTimeSeconds` 20 returns as soon as a doorbell
//!   arrives; the loop runs while any poll of the process waits, so an idle waiting process
//!   costs three requests a minute and a process with no poll costs none.
//! - **Faults:** a queue that is gone (deleted, or not yet visible after `CreateQueue`) is
//!   created again by the receiver; a failing send is logged and forgotten. Either way the
//!   polls' fallback reads deliver.
//! - **Shutdown:** [`Wakeup::close`] deletes the queue, and from then on nothing creates it
//!   again. The standalone server calls it on a graceful shutdown, and the poll function on
//!   the SIGTERM Lambda sends before ending its environment (`crate::lambda`). Where neither
//!   happens (a kill, a failed extension registration) the queue is left behind, and SQS
//!   deletes a queue unused for 30 days.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::QueueAttributeName;
use tokio::sync::Mutex;

use super::{Listening, RING_BUDGET, Wakeup, Wakeups, deliver, payloads};
use crate::ids::RoomId;
use crate::store::Doorbell;

/// SQS's longest long poll.
const RECEIVE_WAIT_SECONDS: i32 = 20;
/// SQS's shortest retention: a doorbell older than a minute wakes nothing useful.
const RETENTION_SECONDS: &str = "60";
/// SQS's longest visibility timeout: a received doorbell never comes back before it expires.
const VISIBILITY_SECONDS: &str = "43200";
/// The longest queue name SQS accepts.
const MAX_QUEUE_NAME: usize = 80;
/// How long a poll waits for its process's queue to be created before it waits without it.
const CREATE_BUDGET: Duration = Duration::from_secs(2);
/// The pause after a failed receive or create, so a broken service is not hammered.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Requests this adapter sent, for measuring cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SqsCounts {
    pub create: u64,
    pub receive: u64,
    pub send: u64,
    pub delete: u64,
}

#[derive(Default)]
struct Counters {
    create: AtomicUsize,
    receive: AtomicUsize,
    send: AtomicUsize,
    delete: AtomicUsize,
}

/// One SQS queue per process.
pub struct SqsWakeup {
    shared: Arc<Shared>,
}

struct Shared {
    client: Client,
    name: String,
    wakeups: Arc<Wakeups>,
    /// The queue's URL once created; `None` before, or after the last attempt failed.
    queue: Mutex<QueueState>,
    url: std::sync::OnceLock<Arc<str>>,
    listeners: AtomicUsize,
    receiving: AtomicBool,
    /// Set by `close`: the queue is deleted and must not be created again.
    closed: AtomicBool,
    counters: Counters,
}

#[derive(Default)]
struct QueueState {
    created: bool,
    failed_at: Option<Instant>,
}

/// Keeps the receiver going while held.
struct Hold(Arc<Shared>);

impl Drop for Hold {
    fn drop(&mut self) {
        self.0.listeners.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The queue name prefix of a table's wake-up queues, if the table's name fits in one.
pub fn queue_prefix(table: &str) -> Result<String, String> {
    let prefix = format!("{table}-wake-");
    let valid = table
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
    if !valid {
        return Err(format!(
            "the table name {table:?} has characters an SQS queue name cannot hold (only A-Z, a-z, 0-9, '-' and '_')"
        ));
    }
    if prefix.len() + 26 > MAX_QUEUE_NAME {
        return Err(format!(
            "the table name {table:?} is too long for SQS queue names derived from it (at most {} characters)",
            MAX_QUEUE_NAME - 26 - "-wake-".len()
        ));
    }
    Ok(prefix)
}

impl SqsWakeup {
    /// Connects with the standard AWS configuration (region, credentials,
    /// `AWS_ENDPOINT_URL_SQS`); the queue is created on first use.
    pub async fn connect(table: &str, wakeups: Arc<Wakeups>) -> Result<Self, String> {
        Self::from_client(Client::new(&Self::sdk_config().await), table, wakeups)
    }

    /// The SDK configuration [`SqsWakeup::connect`] builds its client from: the standard AWS
    /// variables, this adapter's timeouts and retries. Public so that a measurement can build
    /// the same client with an interceptor added (`bench dynamo` counts requests that way).
    pub async fn sdk_config() -> aws_config::SdkConfig {
        crate::aws::with_https_client(aws_config::defaults(BehaviorVersion::latest()))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(1))
                    // A receive waits up to 20 s for a doorbell.
                    .operation_timeout(Duration::from_secs(25))
                    .build(),
            )
            .retry_config(RetryConfig::standard().with_max_attempts(2))
            .load()
            .await
    }

    /// Uses an SDK client built elsewhere.
    pub fn from_client(client: Client, table: &str, wakeups: Arc<Wakeups>) -> Result<Self, String> {
        let name = format!(
            "{}{}",
            queue_prefix(table)?,
            ulid::Ulid::new().to_string().to_lowercase()
        );
        Ok(Self {
            shared: Arc::new(Shared {
                client,
                name,
                wakeups,
                queue: Mutex::default(),
                url: std::sync::OnceLock::new(),
                listeners: AtomicUsize::new(0),
                receiving: AtomicBool::new(false),
                closed: AtomicBool::new(false),
                counters: Counters::default(),
            }),
        })
    }

    /// This process's queue name.
    pub fn queue_name(&self) -> &str {
        &self.shared.name
    }

    /// The requests sent so far.
    pub fn counts(&self) -> SqsCounts {
        let counters = &self.shared.counters;
        SqsCounts {
            create: counters.create.load(Ordering::Relaxed) as u64,
            receive: counters.receive.load(Ordering::Relaxed) as u64,
            send: counters.send.load(Ordering::Relaxed) as u64,
            delete: counters.delete.load(Ordering::Relaxed) as u64,
        }
    }
}

impl Shared {
    /// Creates the queue unless it is known to exist; `false` if it cannot now.
    async fn ensure_queue(&self, again: bool) -> bool {
        let mut state = self.queue.lock().await;
        if self.closed.load(Ordering::SeqCst) {
            return false;
        }
        if state.created && !again {
            return true;
        }
        if !again
            && state
                .failed_at
                .is_some_and(|failed| failed.elapsed() < RETRY_PAUSE * 10)
        {
            return false;
        }
        self.counters.create.fetch_add(1, Ordering::Relaxed);
        let created = self
            .client
            .create_queue()
            .queue_name(&self.name)
            .attributes(
                QueueAttributeName::MessageRetentionPeriod,
                RETENTION_SECONDS,
            )
            .attributes(QueueAttributeName::VisibilityTimeout, VISIBILITY_SECONDS)
            .send()
            .await;
        match created.map(|output| output.queue_url) {
            Ok(Some(url)) => {
                let _ = self.url.set(url.into());
                state.created = true;
                state.failed_at = None;
                true
            }
            Ok(None) => {
                state.failed_at = Some(Instant::now());
                false
            }
            Err(error) => {
                crate::metrics::wakeup_error();
                tracing::warn!(error = %DisplayErrorContext(&error), queue = %self.name, "cannot create the wake-up queue; polls fall back to store reads");
                state.created = false;
                state.failed_at = Some(Instant::now());
                false
            }
        }
    }

    /// Receives doorbells while any poll of the process waits.
    async fn receive_loop(self: Arc<Self>) {
        loop {
            while self.listeners.load(Ordering::SeqCst) > 0 {
                let Some(url) = self.url.get().cloned() else {
                    return;
                };
                self.counters.receive.fetch_add(1, Ordering::Relaxed);
                let received = self
                    .client
                    .receive_message()
                    .queue_url(&*url)
                    .wait_time_seconds(RECEIVE_WAIT_SECONDS)
                    .max_number_of_messages(10)
                    .send()
                    .await;
                match received {
                    Ok(output) => {
                        for message in output.messages.unwrap_or_default() {
                            if let Some(body) = message.body {
                                deliver(&self.wakeups, &body);
                            }
                        }
                    }
                    Err(error) => {
                        crate::metrics::wakeup_error();
                        let gone = error
                            .as_service_error()
                            .is_some_and(|error| error.is_queue_does_not_exist());
                        tracing::debug!(error = %DisplayErrorContext(&error), gone, "a wake-up receive failed");
                        tokio::time::sleep(RETRY_PAUSE).await;
                        if gone {
                            // Deleted under us, or not yet visible: the same name again.
                            self.ensure_queue(true).await;
                        }
                    }
                }
            }
            self.receiving.store(false, Ordering::SeqCst);
            // A poll that arrived between the last check and now found the loop running.
            if self.listeners.load(Ordering::SeqCst) == 0
                || self
                    .receiving
                    .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
                    .is_err()
            {
                return;
            }
        }
    }
}

#[async_trait]
impl Wakeup for SqsWakeup {
    async fn listen(&self) -> Option<Listening> {
        let shared = &self.shared;
        let ready = tokio::time::timeout(CREATE_BUDGET, shared.ensure_queue(false))
            .await
            .unwrap_or(false);
        if !ready {
            return None;
        }
        let url = shared.url.get()?.clone();
        shared.listeners.fetch_add(1, Ordering::SeqCst);
        let hold = Hold(Arc::clone(shared));
        if shared
            .receiving
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            tokio::spawn(Arc::clone(shared).receive_loop());
        }
        Some(Listening::held(url, hold))
    }

    async fn ring(&self, room: &RoomId, doorbells: &[Doorbell]) {
        let own = self.shared.url.get().cloned();
        let payloads = payloads(room, doorbells, own.as_deref());
        if payloads.is_empty() {
            return;
        }
        let mut sends = tokio::task::JoinSet::new();
        for (queue, body) in payloads {
            self.shared.counters.send.fetch_add(1, Ordering::Relaxed);
            let request = self
                .shared
                .client
                .send_message()
                .queue_url(queue)
                .message_body(body);
            sends.spawn(async move {
                match request.send().await {
                    Ok(_) => crate::metrics::wakeups_sent(1),
                    Err(error) => {
                        // The queue of a process that has ended, or a failing service.
                        crate::metrics::wakeup_error();
                        tracing::debug!(error = %DisplayErrorContext(&error), "a wake-up was not sent");
                    }
                }
            });
        }
        // Dropping the set on timeout abandons the sends still in flight.
        if tokio::time::timeout(RING_BUDGET, sends.join_all())
            .await
            .is_err()
        {
            crate::metrics::wakeup_error();
            tracing::debug!("wake-ups took too long to send; left to the fallback reads");
        }
    }

    async fn close(&self) {
        // Under the lock, so that a create in flight finishes first and none starts after.
        let _state = self.shared.queue.lock().await;
        self.shared.closed.store(true, Ordering::SeqCst);
        let Some(url) = self.shared.url.get() else {
            return;
        };
        self.shared.counters.delete.fetch_add(1, Ordering::Relaxed);
        match self
            .shared
            .client
            .delete_queue()
            .queue_url(&**url)
            .send()
            .await
        {
            Ok(_) => tracing::info!(queue = %self.shared.name, "deleted the wake-up queue"),
            Err(error) => {
                tracing::warn!(error = %DisplayErrorContext(&error), queue = %self.shared.name, "the wake-up queue was not deleted")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Against a local SQS-compatible server: run through `tests/with-moto.sh`, which starts a
    //! moto of its own for SQS (a waiting receive would block the DynamoDB one) and sets
    //! `AWS_ENDPOINT_URL_SQS`; without it these tests fail on purpose.
    use super::*;
    use crate::ids::PeerId;
    use crate::wakeup::conformance;

    fn table() -> String {
        assert!(
            std::env::var_os("AWS_ENDPOINT_URL_SQS").is_some(),
            "AWS_ENDPOINT_URL_SQS is not set: the SQS wake-up tests need a local SQS-compatible \
             server; run them through tests/with-moto.sh"
        );
        format!("wake-test-{}", &ulid::Ulid::new().to_string()[20..])
    }

    #[tokio::test]
    async fn passes_the_wakeup_conformance_suite() {
        let table = table();
        let endpoint = std::env::var("AWS_ENDPOINT_URL_SQS").unwrap_or_default();
        let dead = format!("{endpoint}/123456789012/{table}-wake-nobody");
        conformance::run_all(
            |wakeups| {
                let table = table.clone();
                async move {
                    let adapter: Arc<dyn Wakeup> = Arc::new(
                        SqsWakeup::connect(&table, wakeups)
                            .await
                            .expect("valid table name"),
                    );
                    adapter
                }
            },
            &dead,
        )
        .await;
    }

    #[tokio::test]
    async fn a_deleted_queue_is_created_again_and_wake_ups_resume() {
        let table = table();
        let poller_wakeups = Arc::new(Wakeups::default());
        let poller = SqsWakeup::connect(&table, Arc::clone(&poller_wakeups))
            .await
            .expect("valid");
        let poster = SqsWakeup::connect(&table, Arc::default())
            .await
            .expect("valid");
        let listening = poller.listen().await.expect("queue created");
        // Someone else deletes the queue under the running receiver.
        let url = poller.shared.url.get().expect("created").to_string();
        poster
            .shared
            .client
            .delete_queue()
            .queue_url(url)
            .send()
            .await
            .expect("deleted");
        let room = RoomId::parse("deleted").expect("valid");
        let peer = PeerId::mint();
        let subscription = poller_wakeups.subscribe(&room, &peer);
        let doorbell = Doorbell::wake(peer.clone(), listening.address.to_string());
        // Ring until a doorbell gets through: the first ones go to a queue that is gone
        // and must neither fail nor hang. A receive already waiting when the queue was
        // deleted may hold its whole RECEIVE_WAIT_SECONDS before it fails and the receiver
        // creates the queue again, so the bound leaves room for that plus the retry pause.
        let started = Instant::now();
        let mut arrived = false;
        let bound = Duration::from_secs(RECEIVE_WAIT_SECONDS as u64) * 2 + RETRY_PAUSE;
        while started.elapsed() < bound && !arrived {
            let woken = subscription.notify().notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let ring_started = Instant::now();
            poster.ring(&room, std::slice::from_ref(&doorbell)).await;
            assert!(ring_started.elapsed() < Duration::from_secs(2));
            arrived = tokio::time::timeout(Duration::from_millis(1500), woken)
                .await
                .is_ok();
        }
        assert!(
            arrived,
            "wake-ups did not resume after the queue was deleted"
        );
        assert!(poller.counts().create >= 2, "the queue was created again");
        drop(listening);
        poller.close().await;
    }

    /// The queue names of `table`'s wake-up queues that exist now.
    async fn queues_of(adapter: &SqsWakeup, table: &str) -> Vec<String> {
        let listed = adapter
            .shared
            .client
            .list_queues()
            .queue_name_prefix(queue_prefix(table).expect("valid"))
            .send()
            .await
            .expect("ListQueues");
        listed.queue_urls.unwrap_or_default()
    }

    #[tokio::test]
    async fn close_deletes_the_queue_and_nothing_creates_it_again() {
        let table = table();
        let wakeups = Arc::new(Wakeups::default());
        let adapter = SqsWakeup::connect(&table, Arc::clone(&wakeups))
            .await
            .expect("valid");
        let listening = adapter.listen().await.expect("queue created");
        assert_eq!(queues_of(&adapter, &table).await.len(), 1);
        // A receive is waiting in the receiver while the queue goes: it fails with "no such
        // queue", which must not bring the queue back.
        tokio::time::sleep(Duration::from_millis(200)).await;
        tokio::time::timeout(crate::wakeup::CLOSE_BUDGET, adapter.close())
            .await
            .expect("close within its budget");
        assert_eq!(adapter.counts().delete, 1);
        assert!(queues_of(&adapter, &table).await.is_empty(), "deleted");
        assert!(adapter.listen().await.is_none(), "no queue after close");
        tokio::time::sleep(Duration::from_secs(RECEIVE_WAIT_SECONDS as u64) + RETRY_PAUSE * 2)
            .await;
        assert!(
            queues_of(&adapter, &table).await.is_empty(),
            "the receiver created the queue again"
        );
        assert_eq!(adapter.counts().create, 1);
        drop(listening);
    }

    #[test]
    fn queue_names_derive_from_the_table_and_fit_sqs() {
        assert_eq!(
            queue_prefix("signalpost-Table-1A2B").as_deref(),
            Ok("signalpost-Table-1A2B-wake-")
        );
        assert!(queue_prefix("with.dot").is_err());
        assert!(queue_prefix(&"t".repeat(60)).is_err());
        let adapter = SqsWakeup::from_client(
            Client::from_conf(
                aws_sdk_sqs::Config::builder()
                    .behavior_version(BehaviorVersion::latest())
                    .build(),
            ),
            &"t".repeat(48),
            Arc::default(),
        )
        .expect("fits");
        assert!(adapter.queue_name().len() <= MAX_QUEUE_NAME);
    }
}
