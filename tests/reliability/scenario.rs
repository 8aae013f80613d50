//! One realistic negotiation per room, and the checks on what each peer received.
//!
//! The newcomer (B) offers, trickles candidates, sends app messages and a `bye` carrying how
//! many messages it sent; the first peer (A) answers once the offer arrives and does the same.
//! Every message carries its position in its sender's stream, so a recipient can check that
//! it got exactly the accepted stream: all of it, once, in order, and only its own.

use std::time::Duration;

use serde_json::{Value, json};

use crate::client::Client;

/// Counts from one finished room.
#[derive(Default, Debug)]
pub struct Outcome {
    pub delivered: usize,
    pub retries: u64,
}

fn description(kind: &str, seq: usize) -> Value {
    json!({"type": kind, "sdp": format!("v=0\r\no=- {seq} 1 IN IP4 127.0.0.1\r\ns=seq-{seq}\r\n")})
}

fn candidate(seq: usize) -> Value {
    json!({"candidate": format!("candidate:{seq} 1 udp 2122260223 127.0.0.1 {} typ host", 40000 + seq), "sdpMid": "0", "sdpMLineIndex": 0})
}

/// The position a message holds in its sender's stream, read back from its data.
fn position(message: &Value) -> Option<usize> {
    let data = &message["data"];
    let parse = |text: &str, prefix: &str, end: char| {
        text.split(prefix).nth(1)?.split(end).next()?.parse().ok()
    };
    match message["type"].as_str()? {
        "offer" | "answer" => parse(data["sdp"].as_str()?, "s=seq-", '\r'),
        "candidate" => parse(data["candidate"].as_str()?, "candidate:", ' '),
        "message" => data["seq"].as_u64().map(|seq| seq as usize),
        _ => None,
    }
}

/// The messages after the description: candidates in small batches, then app messages.
fn trickle(to: &str, first: usize, candidates: usize) -> Vec<Vec<Value>> {
    let mut batches = Vec::new();
    let mut seq = first;
    let mut size = 1;
    while seq < first + candidates {
        let end = (seq + size).min(first + candidates);
        batches.push((seq..end).map(|n| json!({"to": to, "type": "candidate", "data": candidate(n), "id": format!("c-{n}")})).collect());
        seq = end;
        size = size % 5 + 1;
    }
    for n in seq..seq + 3 {
        batches.push(vec![json!({"to": to, "type": "message", "data": {"seq": n, "for": to}, "id": format!("m-{n}")})]);
    }
    batches
}

async fn send_all(client: &mut Client, batches: Vec<Vec<Value>>) -> usize {
    let mut sent = 0;
    for batch in batches {
        sent += batch.len();
        client.send(batch).await;
    }
    sent
}

/// Polls until the other side's `bye`, then checks the stream and returns how many arrived.
async fn receive_stream(client: &mut Client, from: &str, mut received: Vec<Value>) -> usize {
    for _ in 0..200 {
        if received
            .iter()
            .any(|message| message["type"] == "bye" && message["from"] == from)
        {
            break;
        }
        received.extend(client.poll(2).await);
    }
    for message in &received {
        assert_eq!(
            message["to"],
            client.peer.as_str(),
            "delivered to the wrong inbox: {message}"
        );
    }
    let stream: Vec<&Value> = received
        .iter()
        .filter(|message| {
            message["from"] == from && !message["type"].as_str().unwrap_or("").starts_with("peer-")
        })
        .collect();
    let (bye, body) = stream.split_last().expect("the stream ends with bye");
    assert_eq!(bye["type"], "bye", "bye is last: {bye}");
    let positions: Vec<Option<usize>> = body.iter().map(|message| position(message)).collect();
    let expected: Vec<Option<usize>> = (0..body.len()).map(Some).collect();
    assert_eq!(
        positions, expected,
        "room {}: the stream from {from} is incomplete, repeated or reordered",
        client.room
    );
    assert_eq!(
        bye["data"]["count"],
        body.len(),
        "room {}: messages lost before bye",
        client.room
    );
    stream.len()
}

/// Runs one room's negotiation between two fresh peers.
pub async fn negotiate(base: String, room: String, candidates: usize, lose_every: u64) -> Outcome {
    let mut first = Client::join(&base, &room).await;
    let mut newcomer = Client::join(&base, &room).await;
    first.lose_every = lose_every;
    newcomer.lose_every = lose_every;
    let (first_id, newcomer_id) = (first.peer.clone(), newcomer.peer.clone());

    let caller = tokio::spawn(async move {
        let offer = json!({"to": first_id, "type": "offer", "data": description("offer", 0), "id": "offer"});
        newcomer.send(vec![offer]).await;
        let sent = 1 + send_all(&mut newcomer, trickle(&first_id, 1, candidates)).await;
        newcomer
            .send(vec![
                json!({"to": first_id, "type": "bye", "data": {"count": sent}, "id": "bye"}),
            ])
            .await;
        let delivered = receive_stream(&mut newcomer, &first_id, Vec::new()).await;
        newcomer.leave().await;
        (delivered, newcomer.retries)
    });
    let answerer = tokio::spawn(async move {
        let mut received = Vec::new();
        for _ in 0..200 {
            if received
                .iter()
                .any(|message: &Value| message["type"] == "offer")
            {
                break;
            }
            received.extend(first.poll(2).await);
        }
        let answer = json!({"to": newcomer_id, "type": "answer", "data": description("answer", 0), "id": "answer"});
        first.send(vec![answer]).await;
        let sent = 1 + send_all(&mut first, trickle(&newcomer_id, 1, candidates + 3)).await;
        first
            .send(vec![
                json!({"to": newcomer_id, "type": "bye", "data": {"count": sent}, "id": "bye"}),
            ])
            .await;
        let delivered = receive_stream(&mut first, &newcomer_id, received).await;
        first.leave().await;
        (delivered, first.retries)
    });
    let (a, b) = (
        caller.await.expect("caller"),
        answerer.await.expect("answerer"),
    );
    Outcome {
        delivered: a.0 + b.0,
        retries: a.1 + b.1,
    }
}

/// Runs `rooms` negotiations at once (20 to 40 candidates each way) and sums their outcomes.
pub async fn run_rooms(base: &str, rooms: usize, lose_every: u64) -> Outcome {
    let run = async {
        let tasks: Vec<_> = (0..rooms)
            .map(|r| {
                let room = format!("load-{r}-{}", ulid::Ulid::new());
                tokio::spawn(negotiate(base.to_owned(), room, 20 + r % 21, lose_every))
            })
            .collect();
        let mut total = Outcome::default();
        for task in tasks {
            let outcome = task.await.expect("a room's negotiation failed");
            total.delivered += outcome.delivered;
            total.retries += outcome.retries;
        }
        total
    };
    tokio::time::timeout(Duration::from_secs(240), run)
        .await
        .expect("the load finished in time")
}
