//! Delivered messages per second at saturation: in each room a sender posts batches
//! back to back while its receiver long-polls; the count is of messages the receivers got,
//! not of posts accepted.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::latency::{Peer, join};
use crate::server::Target;

/// Messages per post: a trickling client with batching sends a few candidates at once.
const BATCH: usize = 10;

/// Runs `rooms` sender/receiver pairs for `seconds` and returns delivered messages per second.
pub async fn run(server: &Target, rooms: usize, seconds: u64) -> f64 {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(rooms * 2 + 16)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    let delivered = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for r in 0..rooms {
        let room = format!("throughput-{r}");
        let sender = join(&http, &server.base, &room).await;
        let receiver = join(&http, &server.base, &room).await;
        tasks.push(tokio::spawn(send_until(
            http.clone(),
            server.base.clone(),
            sender,
            receiver.id.clone(),
            Arc::clone(&stop),
        )));
        tasks.push(tokio::spawn(receive_until(
            http.clone(),
            server.base.clone(),
            receiver,
            Arc::clone(&delivered),
            Arc::clone(&stop),
        )));
    }
    // Count only the steady state: skip the first second.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = Instant::now();
    let before = delivered.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let count = delivered.load(Ordering::Relaxed) - before;
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.abort();
    }
    count as f64 / elapsed.as_secs_f64()
}

async fn send_until(
    http: reqwest::Client,
    base: String,
    sender: Peer,
    to: String,
    stop: Arc<AtomicBool>,
) {
    let url = format!("{base}/v1/rooms/{}/messages", sender.room);
    let batch: Vec<Value> = (0..BATCH)
        .map(|n| json!({"to": to, "type": "candidate", "data": {"candidate": format!("candidate:{n} 1 udp 2122260223 127.0.0.1 {} typ host", 50000 + n), "sdpMid": "0", "sdpMLineIndex": 0}}))
        .collect();
    let body = json!({ "messages": batch });
    while !stop.load(Ordering::Relaxed) {
        match http
            .post(&url)
            .bearer_auth(&sender.token)
            .json(&body)
            .send()
            .await
        {
            // A full inbox is back-pressure, not failure: wait as told.
            Ok(response) if response.status() == 429 => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

async fn receive_until(
    http: reqwest::Client,
    base: String,
    receiver: Peer,
    delivered: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) {
    let mut cursor: Option<String> = None;
    while !stop.load(Ordering::Relaxed) {
        let mut url = format!("{base}/v1/rooms/{}/messages?wait=20", receiver.room);
        if let Some(cursor) = &cursor {
            url.push_str("&after=");
            url.push_str(cursor);
        }
        let Ok(response) = http.get(url).bearer_auth(&receiver.token).send().await else {
            return;
        };
        let Ok(body) = response.json::<Value>().await else {
            return;
        };
        cursor = body["cursor"].as_str().map(str::to_owned);
        let count = body["messages"].as_array().map_or(0, |messages| {
            messages
                .iter()
                .filter(|message| message["type"] == "candidate")
                .count()
        });
        delivered.fetch_add(count as u64, Ordering::Relaxed);
    }
}
