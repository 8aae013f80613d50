//! A well-behaved client, as `web/signalpost.js` is: it retries every request on network
//! errors, 429 and 503 (after `Retry-After`, shortened for test speed), reuses its message ids
//! so retried posts are idempotent, and drops repeats by server id when polling.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};

/// How many attempts one request gets before the test fails.
const ATTEMPTS: usize = 200;
/// The longest pause between attempts; the server asks for more, but the test has no time.
const MAX_PAUSE: Duration = Duration::from_millis(200);

/// A client's view of its peer in one room.
pub struct Client {
    pub base: String,
    pub room: String,
    pub peer: String,
    token: String,
    http: reqwest::Client,
    cursor: Option<String>,
    seen: HashSet<String>,
    polls: u64,
    /// Every n-th poll response is thrown away, as if lost in transit (0: none).
    pub lose_every: u64,
    /// Responses that said 503 or 429, and requests that failed on the network.
    pub retries: u64,
}

async fn pause(attempt: usize, retry_after: Option<&reqwest::header::HeaderValue>) {
    let asked = retry_after
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok())
        .map_or(Duration::from_millis(20), Duration::from_secs);
    let backoff = Duration::from_millis(10 * (attempt as u64 + 1));
    tokio::time::sleep(asked.min(MAX_PAUSE).max(backoff.min(MAX_PAUSE))).await;
}

impl Client {
    /// Joins `room`, retrying until the server answers.
    pub async fn join(base: &str, room: &str) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        for attempt in 0..ATTEMPTS {
            match http
                .post(format!("{base}/v1/rooms/{room}/peers"))
                .send()
                .await
            {
                Ok(response) if response.status() == 201 => {
                    let joined: Value = response.json().await.expect("join body");
                    return Self {
                        base: base.to_owned(),
                        room: room.to_owned(),
                        peer: joined["peer"].as_str().expect("peer").to_owned(),
                        token: joined["token"].as_str().expect("token").to_owned(),
                        http,
                        cursor: None,
                        seen: HashSet::new(),
                        polls: 0,
                        lose_every: 0,
                        retries: 0,
                    };
                }
                Ok(response) if matches!(response.status().as_u16(), 429 | 503) => {
                    pause(attempt, response.headers().get("retry-after")).await;
                }
                Ok(response) => panic!(
                    "join refused: {} {:?}",
                    response.status(),
                    response.text().await
                ),
                Err(_) => pause(attempt, None).await,
            }
        }
        panic!("join never succeeded");
    }

    /// Posts `messages` as one batch until it is accepted; the ids make retries idempotent.
    pub async fn send(&mut self, messages: Vec<Value>) -> Vec<String> {
        let url = format!("{}/v1/rooms/{}/messages", self.base, self.room);
        let body = json!({ "messages": messages });
        for attempt in 0..ATTEMPTS {
            match self
                .http
                .post(&url)
                .bearer_auth(&self.token)
                .json(&body)
                .send()
                .await
            {
                Ok(response) if response.status() == 202 => {
                    let accepted: Value = response.json().await.expect("ids");
                    return accepted["ids"]
                        .as_array()
                        .expect("ids")
                        .iter()
                        .map(|id| id.as_str().unwrap_or_default().to_owned())
                        .collect();
                }
                Ok(response) if matches!(response.status().as_u16(), 429 | 503) => {
                    assert!(
                        response.headers().contains_key("retry-after"),
                        "{} without Retry-After",
                        response.status()
                    );
                    self.retries += 1;
                    pause(attempt, response.headers().get("retry-after")).await;
                }
                Ok(response) => panic!(
                    "post refused: {} {:?}",
                    response.status(),
                    response.text().await
                ),
                Err(_) => {
                    self.retries += 1;
                    pause(attempt, None).await;
                }
            }
        }
        panic!("post never accepted");
    }

    /// One long poll (retried until answered); returns the messages not seen before.
    pub async fn poll(&mut self, wait: u64) -> Vec<Value> {
        for attempt in 0..ATTEMPTS {
            let mut url = format!("{}/v1/rooms/{}/messages?wait={wait}", self.base, self.room);
            if let Some(cursor) = &self.cursor {
                url.push_str("&after=");
                url.push_str(cursor);
            }
            let response = match self.http.get(&url).bearer_auth(&self.token).send().await {
                Ok(response) => response,
                Err(_) => {
                    self.retries += 1;
                    pause(attempt, None).await;
                    continue;
                }
            };
            if matches!(response.status().as_u16(), 429 | 503) {
                assert!(response.headers().contains_key("retry-after"));
                self.retries += 1;
                pause(attempt, response.headers().get("retry-after")).await;
                continue;
            }
            assert_eq!(
                response.status(),
                200,
                "poll refused: {:?}",
                response.text().await
            );
            let Ok(body) = response.json::<Value>().await else {
                self.retries += 1;
                continue;
            };
            self.polls += 1;
            if self.lose_every > 0 && self.polls.is_multiple_of(self.lose_every) {
                // Lost in transit: the client never saw it, so its cursor stays put.
                continue;
            }
            self.cursor = body["cursor"].as_str().map(str::to_owned);
            return body["messages"]
                .as_array()
                .expect("messages")
                .iter()
                .filter(|message| {
                    self.seen
                        .insert(message["id"].as_str().unwrap_or_default().to_owned())
                })
                .cloned()
                .collect();
        }
        panic!("poll never answered");
    }

    /// Leaves, retrying until the server confirms.
    pub async fn leave(&mut self) {
        let url = format!("{}/v1/rooms/{}/peers/{}", self.base, self.room, self.peer);
        for attempt in 0..ATTEMPTS {
            match self.http.delete(&url).bearer_auth(&self.token).send().await {
                Ok(response) if response.status() == 204 => return,
                Ok(response) if matches!(response.status().as_u16(), 429 | 503) => {
                    pause(attempt, response.headers().get("retry-after")).await;
                }
                Ok(response) => panic!("leave refused: {}", response.status()),
                Err(_) => pause(attempt, None).await,
            }
        }
        panic!("leave never confirmed");
    }
}
