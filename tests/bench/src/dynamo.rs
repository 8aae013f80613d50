//! The DynamoDB deployment's figures, against the DynamoDB- and SQS-compatible endpoints of
//! the AWS variables (run through `tests/with-moto.sh`). Signalling instances share one table
//! but not their in-process wake-ups, as Lambda execution environments do (see
//! [`crate::deployment`]): a post on one reaches a poll on another through the SQS wake-up
//! queue of the poll's instance, or, with wake-ups off, through the poll's fallback reads.
//!
//! Reported, with wake-ups on and off side by side: delivery latency across instances; the
//! requests of each kind (DynamoDB reads and writes, SQS sends and receives) per delivered
//! message in a realistic negotiation; and per idle waiting peer-minute, with one poll per
//! instance (classic Lambda) and with every poll in one instance (Managed Instances).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use signalpost_shared::store::dynamo::RequestCounts;

use crate::deployment::{Counts, Deployment};
use crate::latency::{self, Peer, join};

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

/// What idle waiting peers cost, per peer-minute.
#[derive(Clone, Copy, Debug)]
pub struct Idle {
    /// Signalling instances (execution environments) the peers' polls were spread over.
    pub instances: usize,
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
    /// SQS requests: `ReceiveMessage`, and all of them (creates included).
    pub sqs_receives: f64,
    pub sqs: f64,
}

/// When a poll was sent, and when its answer came (`None` while it is open).
type PollSpan = (Instant, Option<Instant>);

/// Keeps `peers` idle peers (each alone in its room) long-polling with `wait`, spread over
/// `instances` instances of `deployment` (fresh ones: 1 is what Managed Instances does, one
/// environment holding every poll; `peers` is classic Lambda's one poll per environment), and
/// counts what they cost over `seconds`, after the eager phase that follows a join.
pub async fn idle(
    deployment: &Deployment,
    instances: usize,
    peers: usize,
    seconds: u64,
    wait: u64,
) -> Idle {
    let mut bases = Vec::with_capacity(instances);
    for _ in 0..instances.max(1) {
        bases.push(deployment.instance().await);
    }
    let http = reqwest::Client::new();
    // (start, end) of every poll sent, so the window can count the polls started in it and
    // the time polls were held in it, including those still open when it closes.
    let polls: Arc<Mutex<Vec<PollSpan>>> = Arc::default();
    let mut pollers = Vec::new();
    for i in 0..peers {
        let base = &bases[i % bases.len()];
        let peer = join(&http, base, &format!("idle-{i}-{}", ulid::Ulid::new())).await;
        let (http, url, polls) = (
            http.clone(),
            format!("{base}/v1/rooms/{}/messages", peer.room),
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
    // Let the first poll's eager phase pass: a fresh join counts as activity. The queues are
    // created meanwhile, once per instance.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let before = deployment.counts();
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let after = deployment.counts();
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
    let sqs = after.sqs.since(before.sqs);
    let rate = |count: u64| count as f64 / peer_minutes;
    Idle {
        instances: bases.len(),
        polls: sent as f64 / peer_minutes,
        held: held / (peer_minutes * 60.0),
        reads: rate(after.dynamo.reads - before.dynamo.reads),
        writes: rate(after.dynamo.writes - before.dynamo.writes),
        write_units: rate(write_units(before.dynamo, after.dynamo)),
        sqs_receives: rate(sqs.receive),
        sqs: rate(sqs.total()),
    }
}

/// Write units between two counts, at one unit per item (items of 1 KB or less) and two per
/// item of a transaction.
pub fn write_units(before: RequestCounts, after: RequestCounts) -> u64 {
    (after.write_items - before.write_items) + (after.transaction_items - before.transaction_items)
}

/// Requests of each kind per delivered message.
#[derive(Clone, Copy, Debug, Default)]
struct PerMessage {
    reads: f64,
    writes: f64,
    sends: f64,
    receives: f64,
}

impl PerMessage {
    fn between(before: Counts, after: Counts, delivered: usize) -> Self {
        let sqs = after.sqs.since(before.sqs);
        Self {
            reads: per(after.dynamo.reads - before.dynamo.reads, delivered),
            writes: per(after.dynamo.writes - before.dynamo.writes, delivered),
            sends: per(sqs.send, delivered),
            receives: per(sqs.receive, delivered),
        }
    }
}

/// One deployment's figures: wake-ups on or off.
struct Measured {
    latency: latency::Figures,
    one_at_a_time: PerMessage,
    negotiation: PerMessage,
    delivered: usize,
    idle_classic: Idle,
    idle_shared: Idle,
}

const ROUNDS: usize = 5;

/// Each measurement on a deployment of its own, so that polls left open by the one before
/// (they run to their `wait`) do not count in the next.
async fn measure(wakeups: bool, messages: usize, idle_peers: usize, idle_seconds: u64) -> Measured {
    let mode = if wakeups { "on" } else { "off" };
    eprintln!("wake-ups {mode}: {messages} messages one at a time");
    let deployment = Deployment::start(wakeups).await;
    let before = deployment.counts();
    let latency = latency::run_split(&deployment.posting, &deployment.polling, 2, messages).await;
    let one_at_a_time = PerMessage::between(before, deployment.counts(), messages);

    eprintln!("wake-ups {mode}: {ROUNDS} negotiations");
    let deployment = Deployment::start(wakeups).await;
    let before = deployment.counts();
    let tally = Tally::default();
    let mut delivered = 0;
    for _ in 0..ROUNDS {
        delivered += negotiation(&deployment.posting, &deployment.polling, &tally).await;
    }
    let negotiation = PerMessage::between(before, deployment.counts(), delivered);

    eprintln!("wake-ups {mode}: {idle_peers} idle peers, one per instance, {idle_seconds} s");
    let deployment = Deployment::start(wakeups).await;
    let idle_classic = idle(&deployment, idle_peers, idle_peers, idle_seconds, 25).await;
    eprintln!("wake-ups {mode}: {idle_peers} idle peers on one instance, {idle_seconds} s");
    let deployment = Deployment::start(wakeups).await;
    let idle_shared = idle(&deployment, 1, idle_peers, idle_seconds, 25).await;
    Measured {
        latency,
        one_at_a_time,
        negotiation,
        delivered,
        idle_classic,
        idle_shared,
    }
}

/// Measures with SQS wake-ups and without (the fallback reads alone), and prints the figures
/// side by side.
pub async fn run(messages: usize, idle_peers: usize, idle_seconds: u64) {
    let on = measure(true, messages, idle_peers, idle_seconds).await;
    let off = measure(false, messages, idle_peers, idle_seconds).await;
    println!(
        "| measure | wake-ups on (SQS) | wake-ups off (fallback reads: 50 ms active, 2 s idle) | target |"
    );
    println!("|---|---:|---:|---:|");
    let row = |name: &str, figure: &dyn Fn(&Measured) -> String, target: &str| {
        println!("| {name} | {} | {} | {target} |", figure(&on), figure(&off));
    };
    row(
        "delivery across instances, one message at a time, median / p99 ms",
        &|m| format!("{:.1} / {:.1}", m.latency.at(0.5), m.latency.at(0.99)),
        "",
    );
    let kinds = |p: &PerMessage| {
        format!(
            "{:.2} / {:.2} / {:.2} / {:.2}",
            p.reads, p.writes, p.sends, p.receives
        )
    };
    row(
        &format!(
            "negotiation ({ROUNDS} calls: joins, offer, answer, 20 candidates each way in 6 batches, leaves), per delivered message: DynamoDB reads / writes / SQS sends / receives"
        ),
        &|m| kinds(&m.negotiation),
        "",
    );
    row(
        "messages delivered in those negotiations",
        &|m| m.delivered.to_string(),
        "",
    );
    row(
        "one message per post and per poll (the latency run), per delivered message: DynamoDB reads / writes / SQS sends / receives",
        &|m| kinds(&m.one_at_a_time),
        "",
    );
    for (shape, pick) in [
        (
            format!(
                "idle waiting peer, {idle_peers} peers each on its own instance (classic Lambda)"
            ),
            (|m: &Measured| m.idle_classic) as fn(&Measured) -> Idle,
        ),
        (
            format!("idle waiting peer, {idle_peers} peers on one instance (Managed Instances)"),
            |m: &Measured| m.idle_shared,
        ),
    ] {
        row(
            &format!("{shape}: DynamoDB reads per minute"),
            &|m| format!("{:.1}", pick(m).reads),
            "≤ 6",
        );
        row(
            &format!("{shape}: SQS requests per minute (receives)"),
            &|m| format!("{:.2} ({:.2})", pick(m).sqs, pick(m).sqs_receives),
            "≤ 4",
        );
        row(
            &format!("{shape}: DynamoDB writes, polls per minute"),
            &|m| format!("{:.1}, {:.2}", pick(m).writes, pick(m).polls),
            "",
        );
    }
    println!("\n({idle_seconds} s counted per idle measurement, after 12 s of warm-up.)");
}
