//! The DynamoDB store's figures, against the DynamoDB- and SQS-compatible endpoints of the AWS
//! variables (run through `tests/with-moto.sh`). Two signalling instances in this process
//! share one table but not their in-process wake-ups, as two Lambda instances would: a post on
//! one reaches a poll on the other through the SQS wake-up queue of the poll's instance (or,
//! failing that, the poll's fallback reads of the store).
//!
//! Reported: delivery latency during an active exchange; DynamoDB requests per delivered
//! message in a realistic negotiation; and requests per idle waiting peer per minute.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use signalpost_shared::config::{Config, Deployment};
use signalpost_shared::http::{Function, api_router};
use signalpost_shared::signalling::Signalling;
use signalpost_shared::store::Store;
use signalpost_shared::store::dynamo::{DynamoStore, RequestCounts};
use signalpost_shared::wakeup::sqs::SqsWakeup;
use signalpost_shared::wakeup::{Wakeup, Wakeups};

use crate::latency::{self, Peer, join};

/// Serves the API over `store` on a free loopback port, with its own SQS wake-up queue;
/// returns its base URL and the adapter (for its request counts).
async fn instance(store: Arc<dyn Store>, table: &str) -> (String, Arc<SqsWakeup>) {
    // One sender posts back to back here: lift the flood limit, as for the standalone bench.
    let vars = HashMap::from([
        ("SIGNALPOST_SECRET", "benchmark-secret"),
        ("SIGNALPOST_RATE_LIMIT", "100000"),
    ]);
    let config = Config::from_lookup(Deployment::Lambda, |name| {
        vars.get(name).map(|value| (*value).to_owned())
    })
    .expect("valid configuration");
    let wakeups = Arc::new(Wakeups::default());
    let sqs = Arc::new(
        SqsWakeup::connect(table, Arc::clone(&wakeups))
            .await
            .expect("SQS endpoint (run through tests/with-moto.sh)"),
    );
    let adapter: Arc<dyn Wakeup> = Arc::clone(&sqs) as Arc<dyn Wakeup>;
    let router = api_router(
        Arc::new(Signalling::with_wakeup(config, store, wakeups, adapter)),
        &Function::ALL,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, router.into_make_service()).await });
    (base, sqs)
}

/// SQS requests of both instances.
fn sqs_total(instances: &[&Arc<SqsWakeup>]) -> (u64, u64, u64) {
    instances
        .iter()
        .fold((0, 0, 0), |(create, receive, send), sqs| {
            let counts = sqs.counts();
            (
                create + counts.create,
                receive + counts.receive,
                send + counts.send,
            )
        })
}

fn per(count: u64, messages: usize) -> f64 {
    count as f64 / messages.max(1) as f64
}

fn since(before: RequestCounts, after: RequestCounts) -> (u64, u64) {
    (after.reads - before.reads, after.writes - before.writes)
}

/// One negotiation as the browser client sends it: offer, answer, candidates trickled in
/// small batches each way, both peers long-polling on the other instance. Returns the
/// messages delivered.
async fn negotiation(post_base: &str, poll_base: &str) -> usize {
    let http = reqwest::Client::new();
    let room = format!("negotiation-{}", ulid::Ulid::new());
    let first = join(&http, post_base, &room).await;
    let newcomer = join(&http, post_base, &room).await;
    let send = |from: &Peer, messages: Vec<Value>| {
        let request = http
            .post(format!("{post_base}/v1/rooms/{}/messages", from.room))
            .bearer_auth(&from.token)
            .json(&json!({ "messages": messages }));
        async move { assert_eq!(request.send().await.expect("post").status(), 202) }
    };
    let receiver = |peer: &Peer, expect: usize| {
        let (http, url, token) = (
            http.clone(),
            format!("{poll_base}/v1/rooms/{}/messages", peer.room),
            peer.token.clone(),
        );
        tokio::spawn(async move {
            let (mut cursor, mut got) = (String::new(), 0);
            while got < expect {
                let query = if cursor.is_empty() {
                    "wait=20".to_owned()
                } else {
                    format!("wait=20&after={cursor}")
                };
                let body: Value = http
                    .get(format!("{url}?{query}"))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .expect("poll")
                    .json()
                    .await
                    .expect("json");
                cursor = body["cursor"].as_str().unwrap_or_default().to_owned();
                got += body["messages"].as_array().map_or(0, |messages| {
                    messages
                        .iter()
                        .filter(|message| {
                            !message["type"].as_str().unwrap_or("").starts_with("peer-")
                        })
                        .count()
                });
            }
            got
        })
    };
    let candidate = |to: &str, n: usize| json!({"to": to, "type": "candidate", "data": {"candidate": format!("candidate:{n} 1 udp 1 127.0.0.1 {} typ host", 40000 + n), "sdpMid": "0", "sdpMLineIndex": 0}});
    let description = |kind: &str, to: &str| json!({"to": to, "type": kind, "data": {"type": kind, "sdp": "v=0\r\n"}});
    let at_first = receiver(&first, 21);
    let at_newcomer = receiver(&newcomer, 21);
    send(&newcomer, vec![description("offer", &first.id)]).await;
    let mut n = 0;
    for size in [1, 2, 3, 4, 5, 5] {
        tokio::time::sleep(Duration::from_millis(20)).await;
        send(
            &newcomer,
            (n..n + size).map(|i| candidate(&first.id, i)).collect(),
        )
        .await;
        n += size;
    }
    send(&first, vec![description("answer", &newcomer.id)]).await;
    n = 0;
    for size in [1, 2, 3, 4, 5, 5] {
        tokio::time::sleep(Duration::from_millis(20)).await;
        send(
            &first,
            (n..n + size).map(|i| candidate(&newcomer.id, i)).collect(),
        )
        .await;
        n += size;
    }
    at_first.await.expect("first") + at_newcomer.await.expect("newcomer")
}

/// Runs the three measurements and prints their table.
pub async fn run(messages: usize, idle_peers: usize, idle_seconds: u64) {
    let table = format!("bench-{}", ulid::Ulid::new().to_string().to_lowercase());
    let store = DynamoStore::connect(table.clone())
        .await
        .expect("DynamoDB endpoint (run through tests/with-moto.sh)");
    store.create_table().await.expect("table created");
    let shared: Arc<dyn Store> = Arc::new(store.clone());
    let (posting, posting_sqs) = instance(Arc::clone(&shared), &table).await;
    let (polling, polling_sqs) = instance(shared, &table).await;
    let both = [&posting_sqs, &polling_sqs];

    let before = store.request_counts();
    let figures = latency::run_split(&posting, &polling, 2, messages).await;
    let (reads, writes) = since(before, store.request_counts());
    println!(
        "Active exchange, one message at a time, poller waiting on another instance:\n{figures}"
    );
    println!(
        "requests per delivered message: {:.2} reads, {:.2} writes\n",
        per(reads, messages),
        per(writes, messages)
    );

    let before = store.request_counts();
    let sqs_before = sqs_total(&both);
    let rounds = 5;
    let mut delivered = 0;
    for _ in 0..rounds {
        delivered += negotiation(&posting, &polling).await;
    }
    let (reads, writes) = since(before, store.request_counts());
    let sqs_after = sqs_total(&both);
    println!(
        "| negotiation (offer, answer, 20 candidates each way in batches) | delivered | DynamoDB reads/message | DynamoDB writes/message | SQS sends/message | SQS receives/message |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    println!(
        "| {rounds} rounds, 2 peers, 2 instances, joins included | {delivered} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
        per(reads, delivered),
        per(writes, delivered),
        per(sqs_after.2 - sqs_before.2, delivered),
        per(sqs_after.1 - sqs_before.1, delivered)
    );

    let http = reqwest::Client::new();
    let mut pollers = Vec::new();
    for i in 0..idle_peers {
        let peer = join(&http, &polling, &format!("idle-{i}-{}", ulid::Ulid::new())).await;
        let (http, url) = (
            http.clone(),
            format!("{polling}/v1/rooms/{}/messages", peer.room),
        );
        pollers.push(tokio::spawn(async move {
            let mut cursor = String::new();
            loop {
                let query = if cursor.is_empty() {
                    "wait=25".to_owned()
                } else {
                    format!("wait=25&after={cursor}")
                };
                let Ok(response) = http
                    .get(format!("{url}?{query}"))
                    .bearer_auth(&peer.token)
                    .send()
                    .await
                else {
                    return;
                };
                let Ok(body) = response.json::<Value>().await else {
                    return;
                };
                cursor = body["cursor"].as_str().unwrap_or_default().to_owned();
            }
        }));
    }
    // Let the first poll's eager phase pass: a fresh join counts as activity.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let before = store.request_counts();
    let sqs_before = sqs_total(&both);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(idle_seconds)).await;
    let (reads, writes) = since(before, store.request_counts());
    let sqs_after = sqs_total(&both);
    let sqs_requests =
        (sqs_after.0 + sqs_after.1 + sqs_after.2) - (sqs_before.0 + sqs_before.1 + sqs_before.2);
    let peer_minutes = idle_peers as f64 * started.elapsed().as_secs_f64() / 60.0;
    for poller in pollers {
        poller.abort();
    }
    println!(
        "| idle waiting peers | seconds | DynamoDB reads per peer-minute | DynamoDB writes per peer-minute | SQS requests per peer-minute |"
    );
    println!("|---:|---:|---:|---:|---:|");
    println!(
        "| {idle_peers} | {idle_seconds} | {:.1} | {:.1} | {:.2} |",
        reads as f64 / peer_minutes,
        writes as f64 / peer_minutes,
        sqs_requests as f64 / peer_minutes
    );
}
