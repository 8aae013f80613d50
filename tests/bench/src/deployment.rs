//! Signalling instances on one DynamoDB table, as Lambda execution environments are, with
//! every AWS request they send counted.
//!
//! Each instance is a whole API router in this process with its own in-process wake-ups, so
//! a post on one reaches a poll on another only across the store, as between two Lambda
//! environments. With wake-ups on, each instance also has its own SQS wake-up queue
//! (`shared/src/wakeup/sqs.rs`, the adapter the functions use); with them off, a poll finds
//! another instance's post by its fallback store reads alone (every 2 s when idle), which is
//! how a deployment behaved before the cross-process wake-ups.
//!
//! DynamoDB requests are counted by the store itself; SQS requests by an SDK interceptor on
//! every instance's SQS client, once per attempt on the wire, which is what SQS bills.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use signalpost_shared::config::{Config, Deployment as Shape};
use signalpost_shared::http::{Function, api_router};
use signalpost_shared::signalling::Signalling;
use signalpost_shared::store::Store;
use signalpost_shared::store::dynamo::{DynamoStore, RequestCounts};
use signalpost_shared::wakeup::sqs::SqsWakeup;
use signalpost_shared::wakeup::{Wakeup, Wakeups};

/// SQS requests by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SqsCounts {
    /// `SendMessage`: doorbells.
    pub send: u64,
    /// `ReceiveMessage`: the long polls of each instance's receive loop.
    pub receive: u64,
    /// Everything else (`CreateQueue` once per instance, `DeleteQueue`).
    pub other: u64,
}

impl SqsCounts {
    /// Every request.
    pub fn total(self) -> u64 {
        self.send + self.receive + self.other
    }

    /// The requests sent after `before` was taken.
    pub fn since(self, before: Self) -> Self {
        Self {
            send: self.send - before.send,
            receive: self.receive - before.receive,
            other: self.other - before.other,
        }
    }
}

/// Counts the SQS requests of the clients it is added to, by the operation named in their
/// `X-Amz-Target` header (SQS's JSON protocol).
#[derive(Clone, Debug, Default)]
struct CountSqsRequests {
    send: Arc<AtomicU64>,
    receive: Arc<AtomicU64>,
    other: Arc<AtomicU64>,
}

impl CountSqsRequests {
    fn counts(&self) -> SqsCounts {
        SqsCounts {
            send: self.send.load(Ordering::Relaxed),
            receive: self.receive.load(Ordering::Relaxed),
            other: self.other.load(Ordering::Relaxed),
        }
    }
}

impl aws_sdk_sqs::config::Intercept for CountSqsRequests {
    fn name(&self) -> &'static str {
        "CountSqsRequests"
    }

    // Before transmit, not before execution: a retried request is billed again.
    fn read_before_transmit(
        &self,
        context: &aws_sdk_sqs::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _components: &aws_sdk_sqs::config::RuntimeComponents,
        _cfg: &mut aws_sdk_sqs::config::ConfigBag,
    ) -> Result<(), aws_sdk_sqs::error::BoxError> {
        let target = context
            .request()
            .headers()
            .get("x-amz-target")
            .unwrap_or_default();
        let counter = match target.rsplit('.').next() {
            Some("SendMessage" | "SendMessageBatch") => &self.send,
            Some("ReceiveMessage") => &self.receive,
            _ => &self.other,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// What a deployment has sent so far.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counts {
    pub dynamo: RequestCounts,
    pub sqs: SqsCounts,
}

/// A fresh table on the endpoint of the AWS variables, and signalling instances on it.
pub struct Deployment {
    /// The store every instance shares (its clones share the request counts).
    pub store: DynamoStore,
    /// The instance that takes the posts.
    pub posting: String,
    /// The instance that takes the polls.
    pub polling: String,
    table: String,
    sqs: CountSqsRequests,
    sqs_config: Option<aws_sdk_sqs::Config>,
}

impl Deployment {
    /// A fresh table and two instances on it, with SQS wake-ups between them or without.
    pub async fn start(wakeups: bool) -> Self {
        let table = format!("bench-{}", ulid::Ulid::new().to_string().to_lowercase());
        let store = DynamoStore::connect(table.clone())
            .await
            .expect("DynamoDB endpoint (run through tests/with-moto.sh)");
        store.create_table().await.expect("table created");
        let sqs = CountSqsRequests::default();
        let sqs_config = if wakeups {
            assert!(
                std::env::var_os("AWS_ENDPOINT_URL_SQS").is_some(),
                "AWS_ENDPOINT_URL_SQS is not set: run through tests/with-moto.sh, which starts a local SQS"
            );
            Some(
                aws_sdk_sqs::config::Builder::from(&SqsWakeup::sdk_config().await)
                    .interceptor(sqs.clone())
                    .build(),
            )
        } else {
            None
        };
        let mut deployment = Self {
            store,
            posting: String::new(),
            polling: String::new(),
            table,
            sqs,
            sqs_config,
        };
        deployment.posting = deployment.instance().await;
        deployment.polling = deployment.instance().await;
        deployment
    }

    /// Another instance on the same table (with a wake-up queue of its own, if wake-ups are
    /// on); returns its base URL.
    pub async fn instance(&self) -> String {
        // One sender posts back to back here: lift the flood limit, as for the standalone bench.
        let vars = HashMap::from([
            ("SIGNALPOST_SECRET", "benchmark-secret-of-at-least-32-bytes"),
            ("SIGNALPOST_RATE_LIMIT", "100000"),
        ]);
        let config = Config::from_lookup(Shape::Lambda, |name| {
            vars.get(name).map(|value| (*value).to_owned())
        })
        .expect("valid configuration");
        let store: Arc<dyn Store> = Arc::new(self.store.clone());
        let signalling = match &self.sqs_config {
            Some(sqs_config) => {
                let wakeups = Arc::new(Wakeups::default());
                let adapter: Arc<dyn Wakeup> = Arc::new(
                    SqsWakeup::from_client(
                        aws_sdk_sqs::Client::from_conf(sqs_config.clone()),
                        &self.table,
                        Arc::clone(&wakeups),
                    )
                    .expect("the bench's table name fits a queue name"),
                );
                Signalling::with_wakeup(config, store, wakeups, adapter)
            }
            None => Signalling::new(config, store),
        };
        let router = api_router(Arc::new(signalling), &Function::ALL);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        tokio::spawn(async move { axum::serve(listener, router.into_make_service()).await });
        base
    }

    /// The requests every instance has sent so far.
    pub fn counts(&self) -> Counts {
        Counts {
            dynamo: self.store.request_counts(),
            sqs: self.sqs.counts(),
        }
    }
}
