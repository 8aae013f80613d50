//! Post→delivery latency: the recipient's long poll is already waiting when the message is
//! posted, and the clock runs from just before the POST is sent to the poll's response arriving.
//! Other peers hold waiting polls meanwhile, so the figure reflects a server with that many
//! clients connected.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};

use crate::server::Target;

/// Percentiles of the measured latencies.
pub struct Figures {
    waiting: usize,
    samples: Vec<Duration>,
}

impl Figures {
    /// The `q` quantile (0.5: the median) in milliseconds.
    pub fn at(&self, q: f64) -> f64 {
        let index = ((self.samples.len() as f64 - 1.0) * q).round() as usize;
        self.samples[index].as_secs_f64() * 1000.0
    }
}

impl fmt::Display for Figures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = |q: f64| self.at(q);
        writeln!(
            f,
            "| waiting peers | messages | median ms | p90 ms | p99 ms | max ms |"
        )?;
        writeln!(f, "|---:|---:|---:|---:|---:|---:|")?;
        write!(
            f,
            "| {} | {} | {:.3} | {:.3} | {:.3} | {:.3} |",
            self.waiting,
            self.samples.len(),
            at(0.5),
            at(0.9),
            at(0.99),
            at(1.0)
        )
    }
}

/// A joined peer.
pub struct Peer {
    pub id: String,
    pub token: String,
    pub room: String,
}

/// Joins `room`.
pub async fn join(http: &reqwest::Client, base: &str, room: &str) -> Peer {
    let joined: Value = http
        .post(format!("{base}/v1/rooms/{room}/peers"))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .expect("join")
        .json()
        .await
        .expect("join body");
    Peer {
        id: joined["peer"].as_str().expect("peer").to_owned(),
        token: joined["token"].as_str().expect("token").to_owned(),
        room: room.to_owned(),
    }
}

/// Keeps a long poll waiting for `peer`; reports each arrival (its index in the data) with
/// the moment the response came in, and signals `ready` each time a new poll is sent.
async fn keep_polling(
    http: reqwest::Client,
    base: String,
    peer: Peer,
    arrivals: mpsc::UnboundedSender<(u64, Instant)>,
    ready: Arc<Notify>,
) {
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{base}/v1/rooms/{}/messages?wait=20", peer.room);
        if let Some(cursor) = &cursor {
            url.push_str("&after=");
            url.push_str(cursor);
        }
        let request = http.get(url).bearer_auth(&peer.token).send();
        ready.notify_one();
        let Ok(response) = request.await else { return };
        let arrived = Instant::now();
        let Ok(body) = response.json::<Value>().await else {
            return;
        };
        cursor = body["cursor"].as_str().map(str::to_owned);
        for message in body["messages"].as_array().into_iter().flatten() {
            if let Some(index) = message["data"]["i"].as_u64()
                && arrivals.send((index, arrived)).is_err()
            {
                return;
            }
        }
    }
}

/// Measures `messages` deliveries with `waiting` peers holding a poll.
pub async fn run(server: &Target, waiting: usize, messages: usize) -> Figures {
    run_split(&server.base, &server.base, waiting, messages).await
}

/// As [`run`], but posting to `post_base` and polling `poll_base`: two server processes (or
/// Lambda instances) sharing a store, so only the store carries the message across.
pub async fn run_split(
    post_base: &str,
    poll_base: &str,
    waiting: usize,
    messages: usize,
) -> Figures {
    let rooms = waiting.max(1);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(rooms * 2 + 16)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    let mut senders = Vec::with_capacity(rooms);
    let mut pollers = Vec::with_capacity(rooms);
    let mut ready_signals = Vec::with_capacity(rooms);
    let (arrivals_tx, mut arrivals) = mpsc::unbounded_channel();
    for r in 0..rooms {
        let room = format!("bench-{r}");
        let sender = join(&http, post_base, &room).await;
        let receiver = join(&http, post_base, &room).await;
        let ready = Arc::new(Notify::new());
        let receiver_id = receiver.id.clone();
        pollers.push(tokio::spawn(keep_polling(
            http.clone(),
            poll_base.to_owned(),
            receiver,
            arrivals_tx.clone(),
            Arc::clone(&ready),
        )));
        ready_signals.push(ready);
        senders.push((sender, receiver_id));
    }
    // Give every poll time to reach the server and start waiting.
    tokio::time::sleep(Duration::from_millis(500 + rooms as u64 / 2)).await;

    let mut samples = Vec::with_capacity(messages);
    for i in 0..messages {
        let r = i % rooms;
        let (sender, receiver_id) = &senders[r];
        let ready = ready_signals[r].notified();
        let body = json!({"to": receiver_id, "type": "message", "data": {"i": i}});
        let started = Instant::now();
        let response = http
            .post(format!("{post_base}/v1/rooms/{}/messages", sender.room))
            .bearer_auth(&sender.token)
            .json(&body)
            .send()
            .await
            .expect("post");
        assert_eq!(response.status(), 202, "post refused");
        let (index, arrived) = tokio::time::timeout(Duration::from_secs(30), arrivals.recv())
            .await
            .expect("delivered within 30 s")
            .expect("poller alive");
        assert_eq!(index, i as u64, "delivered out of turn");
        samples.push(arrived - started);
        // Let the recipient's next poll reach the server before measuring it again.
        let _ = tokio::time::timeout(Duration::from_secs(5), ready).await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    for poller in pollers {
        poller.abort();
    }
    samples.sort();
    Figures { waiting, samples }
}
