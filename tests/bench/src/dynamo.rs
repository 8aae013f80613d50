//! The DynamoDB store's figures, against the DynamoDB-compatible endpoint of the AWS variables
//! (run through `tests/with-moto.sh`). Two signalling instances in this process share one
//! table but not their in-process wake-ups, as two Lambda instances would: a post on one
//! reaches a poll on the other only through the poll's adaptive reads of the store.
//!
//! Reported: delivery latency during an active exchange; DynamoDB requests per delivered
//! message in a realistic negotiation; and requests per idle waiting peer per minute.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use signalpost_shared::config::{Config, Deployment};
use signalpost_shared::http::{Function, api_router};
use signalpost_shared::signalling::Signalling;
use signalpost_shared::store::Store;
use signalpost_shared::store::dynamo::{DynamoStore, RequestCounts};

use crate::latency::{self, Peer, join};

/// Serves the API over `store` on a free loopback port; returns its base URL.
async fn instance(store: Arc<dyn Store>) -> String {
    // One sender posts back to back here: lift the flood limit, as for the standalone bench.
    let vars = HashMap::from([
        ("SIGNALPOST_SECRET", "benchmark-secret-of-at-least-32-bytes"),
        ("SIGNALPOST_RATE_LIMIT", "100000"),
    ]);
    let config = Config::from_lookup(Deployment::Lambda, |name| {
        vars.get(name).map(|value| (*value).to_owned())
    })
    .expect("valid configuration");
    let router = api_router(Arc::new(Signalling::new(config, store)), &Function::ALL);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, router.into_make_service()).await });
    base
}

/// HTTP requests a client made, per Lambda function, with the time each took: what API
/// Gateway bills per request and classic Lambda bills per GB-second.
#[derive(Clone, Default)]
pub struct Tally {
    calls: Arc<Mutex<HashMap<&'static str, (u64, Duration)>>>,
}

impl Tally {
    /// Times `request` and counts it against `function`.
    pub async fn time<T>(&self, function: &'static str, request: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let result = request.await;
        let took = started.elapsed();
        let mut calls = self
            .calls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = calls.entry(function).or_default();
        entry.0 += 1;
        entry.1 += took;
        result
    }

    /// (requests, total time) per function.
    pub fn calls(&self) -> HashMap<&'static str, (u64, Duration)> {
        self.calls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// A realistic SDP of `bytes` (an audio and video offer or answer from a browser is 3–6 KB),
/// so the message items cost the write and read units a real negotiation's do.
fn sdp(bytes: usize) -> String {
    let line = "a=rtcp-fb:96 nack pli\r\n";
    let mut text = String::from("v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n");
    while text.len() + line.len() <= bytes {
        text.push_str(line);
    }
    text
}

fn per(count: u64, messages: usize) -> f64 {
    count as f64 / messages.max(1) as f64
}

fn since(before: RequestCounts, after: RequestCounts) -> (u64, u64) {
    (after.reads - before.reads, after.writes - before.writes)
}

/// One call as the browser client sets it up: two joins; offer, answer (SDPs of browser
/// size) and candidates trickled in small batches each way, both peers long-polling on the
/// other instance; then both leave. Returns the messages delivered; `tally` counts the HTTP
/// requests.
pub async fn negotiation(post_base: &str, poll_base: &str, tally: &Tally) -> usize {
    let http = reqwest::Client::new();
    let room = format!("negotiation-{}", ulid::Ulid::new());
    let first = tally.time("join", join(&http, post_base, &room)).await;
    let newcomer = tally.time("join", join(&http, post_base, &room)).await;
    let send = |from: &Peer, messages: Vec<Value>| {
        let request = http
            .post(format!("{post_base}/v1/rooms/{}/messages", from.room))
            .bearer_auth(&from.token)
            .json(&json!({ "messages": messages }));
        let tally = tally.clone();
        async move {
            let response = tally.time("post", request.send()).await;
            assert_eq!(response.expect("post").status(), 202);
        }
    };
    let receiver = |peer: &Peer, expect: usize| {
        let (http, url, token, tally) = (
            http.clone(),
            format!("{poll_base}/v1/rooms/{}/messages", peer.room),
            peer.token.clone(),
            tally.clone(),
        );
        tokio::spawn(async move {
            let (mut cursor, mut got) = (String::new(), 0);
            while got < expect {
                let query = if cursor.is_empty() {
                    "wait=20".to_owned()
                } else {
                    format!("wait=20&after={cursor}")
                };
                let request = http.get(format!("{url}?{query}")).bearer_auth(&token);
                let body: Value = tally
                    .time("poll", async { request.send().await?.json().await })
                    .await
                    .expect("poll");
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
    let description = |kind: &str, to: &str, bytes: usize| json!({"to": to, "type": kind, "data": {"type": kind, "sdp": sdp(bytes)}});
    let at_first = receiver(&first, 21);
    let at_newcomer = receiver(&newcomer, 21);
    send(
        &newcomer,
        vec![description("offer", &first.id, OFFER_BYTES)],
    )
    .await;
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
    send(
        &first,
        vec![description("answer", &newcomer.id, ANSWER_BYTES)],
    )
    .await;
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
    let delivered = at_first.await.expect("first") + at_newcomer.await.expect("newcomer");
    for peer in [&first, &newcomer] {
        let request = http
            .delete(format!(
                "{post_base}/v1/rooms/{}/peers/{}",
                peer.room, peer.id
            ))
            .bearer_auth(&peer.token);
        let response = tally.time("leave", request.send()).await;
        assert!(response.expect("leave").status().is_success());
    }
    delivered
}

/// Sizes of the offer's and the answer's SDP in the negotiation: Chromium's for one audio
/// and one video track with the usual codecs.
pub const OFFER_BYTES: usize = 4500;
/// See [`OFFER_BYTES`].
pub const ANSWER_BYTES: usize = 3500;

/// A fresh table on the endpoint of the AWS variables, and two signalling instances on it:
/// one takes the posts, the other the polls. Returns the store (for its request counts) and
/// the two base URLs.
pub async fn deployment() -> (DynamoStore, String, String) {
    let table = format!("bench-{}", ulid::Ulid::new().to_string().to_lowercase());
    let store = DynamoStore::connect(table)
        .await
        .expect("DynamoDB endpoint (run through tests/with-moto.sh)");
    store.create_table().await.expect("table created");
    let shared: Arc<dyn Store> = Arc::new(store.clone());
    let posting = instance(Arc::clone(&shared)).await;
    let polling = instance(shared).await;
    (store, posting, polling)
}

/// What idle waiting peers cost, per peer-minute.
#[derive(Clone, Copy, Debug)]
pub struct Idle {
    /// Long polls sent.
    pub polls: f64,
    /// Seconds a poll was held open, per second: the share of the time an execution
    /// environment is busy on classic Lambda.
    pub held: f64,
    /// DynamoDB requests (reads: Query/GetItem; writes: requests, and the write units they
    /// cost at 1 KB per item with transactions counted double).
    pub reads: f64,
    pub writes: f64,
    pub write_units: f64,
}

/// When a poll was sent, and when its answer came (`None` while it is open).
type PollSpan = (Instant, Option<Instant>);

/// Keeps `peers` idle peers (each alone in its room) long-polling `polling` with `wait`, and
/// counts what they cost over `seconds`, after the eager phase that follows a join.
pub async fn idle(
    store: &DynamoStore,
    polling: &str,
    peers: usize,
    seconds: u64,
    wait: u64,
) -> Idle {
    let http = reqwest::Client::new();
    // (start, end) of every poll sent, so the window can count the polls started in it and
    // the time polls were held in it, including those still open when it closes.
    let polls: Arc<Mutex<Vec<PollSpan>>> = Arc::default();
    let mut pollers = Vec::new();
    for i in 0..peers {
        let peer = join(&http, polling, &format!("idle-{i}-{}", ulid::Ulid::new())).await;
        let (http, url, polls) = (
            http.clone(),
            format!("{polling}/v1/rooms/{}/messages", peer.room),
            Arc::clone(&polls),
        );
        pollers.push(tokio::spawn(async move {
            let mut cursor = String::new();
            loop {
                let query = if cursor.is_empty() {
                    format!("wait={wait}")
                } else {
                    format!("wait={wait}&after={cursor}")
                };
                let index = {
                    let mut polls = polls
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    polls.push((Instant::now(), None));
                    polls.len() - 1
                };
                let request = http.get(format!("{url}?{query}")).bearer_auth(&peer.token);
                let answer = async { request.send().await?.json::<Value>().await }.await;
                polls
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)[index]
                    .1 = Some(Instant::now());
                let Ok(body) = answer else { return };
                cursor = body["cursor"].as_str().unwrap_or_default().to_owned();
            }
        }));
    }
    // Let the first poll's eager phase pass: a fresh join counts as activity.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let before = store.request_counts();
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let after = store.request_counts();
    let ended = Instant::now();
    for poller in pollers {
        poller.abort();
    }
    let peer_minutes = peers as f64 * ended.duration_since(started).as_secs_f64() / 60.0;
    let polls = polls
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let sent = polls
        .iter()
        .filter(|(start, _)| *start >= started && *start < ended)
        .count();
    let held: f64 = polls
        .iter()
        .map(|(start, end)| {
            let (from, to) = ((*start).max(started), end.unwrap_or(ended).min(ended));
            to.saturating_duration_since(from).as_secs_f64()
        })
        .sum();
    Idle {
        polls: sent as f64 / peer_minutes,
        held: held / (peer_minutes * 60.0),
        reads: (after.reads - before.reads) as f64 / peer_minutes,
        writes: (after.writes - before.writes) as f64 / peer_minutes,
        write_units: write_units(before, after) as f64 / peer_minutes,
    }
}

/// Write units between two counts, at one unit per item (items of 1 KB or less) and two per
/// item of a transaction.
pub fn write_units(before: RequestCounts, after: RequestCounts) -> u64 {
    (after.write_items - before.write_items) + (after.transaction_items - before.transaction_items)
}

/// Runs the three measurements and prints their table.
pub async fn run(messages: usize, idle_peers: usize, idle_seconds: u64) {
    let (store, posting, polling) = deployment().await;

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
    let rounds = 5;
    let mut delivered = 0;
    let tally = Tally::default();
    for _ in 0..rounds {
        delivered += negotiation(&posting, &polling, &tally).await;
    }
    let (reads, writes) = since(before, store.request_counts());
    println!(
        "| negotiation (offer, answer, 20 candidates each way in batches) | delivered | reads/message | writes/message |"
    );
    println!("|---|---:|---:|---:|");
    println!(
        "| {rounds} rounds, 2 peers, 2 instances, joins and leaves included | {delivered} | {:.2} | {:.2} |\n",
        per(reads, delivered),
        per(writes, delivered)
    );

    let idle = idle(&store, &polling, idle_peers, idle_seconds, 25).await;
    println!("| idle waiting peers | seconds | reads per peer-minute | writes per peer-minute |");
    println!("|---:|---:|---:|---:|");
    println!(
        "| {idle_peers} | {idle_seconds} | {:.1} | {:.1} |",
        idle.reads, idle.writes
    );
}
