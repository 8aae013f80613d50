//! Sending and receiving: the offer/answer exchange, broadcast, ordering, replay, idempotency
//! and the long poll's timing behaviour.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Server, assert_problem, candidate, description, join, room};

fn of_type<'a>(messages: &'a [Value], kind: &str) -> Vec<&'a Value> {
    messages
        .iter()
        .filter(|message| message["type"] == kind)
        .collect()
}

#[tokio::test]
async fn two_peers_swap_offer_answer_and_candidates() {
    let server = Server::start();
    let room = room();
    let mut alice = join(&server, &room, "alice").await;
    let mut bob = join(&server, &room, "bob").await;

    let offer_ids = bob
        .send(json!({"to": alice.id, "type": "offer", "data": description("offer"), "id": "o-1"}))
        .await;
    assert_eq!(offer_ids.len(), 1);
    let received = alice.collect("offer", 1).await;
    let offer = of_type(&received, "offer")[0];
    assert_eq!(offer["id"], offer_ids[0].as_str());
    assert_eq!(offer["from"], bob.id.as_str());
    assert_eq!(offer["to"], alice.id.as_str());
    assert_eq!(
        offer["data"],
        description("offer"),
        "the SDP passes through untouched"
    );

    alice
        .send(json!({"to": bob.id, "type": "answer", "data": description("answer")}))
        .await;
    let candidates: Vec<Value> = (0..3)
        .map(|n| json!({"to": bob.id, "type": "candidate", "data": candidate(n)}))
        .chain([json!({"to": bob.id, "type": "candidate", "data": {"candidate": ""}})])
        .collect();
    alice.send(json!({ "messages": candidates })).await;
    let received = bob.collect("candidate", 4).await;
    assert_eq!(of_type(&received, "answer").len(), 1);
    let kinds: Vec<_> = received
        .iter()
        .map(|message| message["type"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        kinds,
        ["answer", "candidate", "candidate", "candidate", "candidate"]
    );
    assert_eq!(received[4]["data"], json!({"candidate": ""}));
}

#[tokio::test]
async fn three_peers_broadcast_and_address_each_other() {
    let server = Server::start();
    let room = room();
    let mut alice = join(&server, &room, "alice").await;
    let mut bob = join(&server, &room, "bob").await;
    let mut carol = join(&server, &room, "carol").await;
    assert_eq!(carol.joined["peers"].as_array().map(Vec::len), Some(2));

    let ids = carol
        .send(json!({"type": "message", "data": {"hello": "all"}}))
        .await;
    for peer in [&mut alice, &mut bob] {
        let received = peer.collect("message", 1).await;
        let hello = of_type(&received, "message");
        assert_eq!(hello.len(), 1);
        assert_eq!(hello[0]["id"], ids[0].as_str(), "one id, every inbox");
        assert_eq!(hello[0]["data"], json!({"hello": "all"}));
    }
    alice
        .send(json!({"to": carol.id, "type": "offer", "data": description("offer")}))
        .await;
    bob.send(json!({"to": carol.id, "type": "offer", "data": description("offer")}))
        .await;
    let offers = carol.collect("offer", 2).await;
    let mut senders: Vec<_> = of_type(&offers, "offer")
        .iter()
        .map(|m| m["from"].as_str().unwrap_or("").to_owned())
        .collect();
    senders.sort();
    let mut expected = vec![alice.id.clone(), bob.id.clone()];
    expected.sort();
    assert_eq!(senders, expected);
    assert!(
        of_type(&carol.poll(0).await, "message").is_empty(),
        "no echo to the sender"
    );
    let bye = bob.send(json!({"type": "bye"})).await;
    assert_eq!(bye.len(), 1);
}

#[tokio::test]
async fn two_hundred_candidates_arrive_in_sender_order() {
    let server = Server::start();
    let room = room();
    let mut alice = join(&server, &room, "alice").await;
    let bob = join(&server, &room, "bob").await;
    let message = |n: usize| json!({"to": alice.id, "type": "candidate", "data": candidate(n), "id": format!("c-{n}")});
    // Singles and batches mixed, as a trickling browser with a batching client would send.
    let mut n = 0;
    while n < 200 {
        if n % 3 == 0 {
            let batch: Vec<Value> = (n..(n + 50).min(200)).map(message).collect();
            n += batch.len();
            bob.send(json!({ "messages": batch })).await;
        } else {
            bob.send(message(n)).await;
            n += 1;
        }
    }
    let mut received = Vec::new();
    for _ in 0..20 {
        let batch = alice.poll(1).await;
        assert!(batch.len() <= 100, "at most 100 per response");
        received.extend(batch);
        if of_type(&received, "candidate").len() == 200 {
            break;
        }
    }
    let ports: Vec<_> = of_type(&received, "candidate")
        .iter()
        .map(|message| {
            message["data"]["candidate"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    let expected: Vec<_> = (0..200)
        .map(|n| candidate(n)["candidate"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(ports, expected);
}

#[tokio::test]
async fn an_old_cursor_replays_what_a_lost_response_carried() {
    let server = Server::start();
    let room = room();
    let mut alice = join(&server, &room, "alice").await;
    let bob = join(&server, &room, "bob").await;
    alice.poll(0).await;
    let before = alice.cursor.clone().expect("cursor");
    bob.send(json!({"to": alice.id, "type": "offer", "data": description("offer")}))
        .await;
    let first = alice.poll(5).await;
    assert_eq!(of_type(&first, "offer").len(), 1);
    // The response above was "lost": poll again with the cursor from before it.
    alice.cursor = Some(before.clone());
    let again = alice.poll(5).await;
    assert_eq!(first, again, "replay returns the same messages, same ids");
    let without_cursor = alice
        .poll_raw("wait=0")
        .await
        .json::<Value>()
        .await
        .expect("json");
    assert!(
        without_cursor["messages"].as_array().expect("list").len() >= 2,
        "from the first message held"
    );
    assert!(
        alice.poll(0).await.is_empty(),
        "after the newest cursor, nothing"
    );
}

#[tokio::test]
async fn a_repeated_client_id_is_delivered_once_with_one_server_id() {
    let server = Server::start();
    let room = room();
    let mut alice = join(&server, &room, "alice").await;
    let bob = join(&server, &room, "bob").await;
    let offer =
        json!({"to": alice.id, "type": "offer", "data": description("offer"), "id": "offer-1"});
    let first = bob.send(offer.clone()).await;
    let retry = bob.send(offer).await;
    assert_eq!(first, retry);
    bob.send(json!({"to": alice.id, "type": "message", "data": "after", "id": "m-2"}))
        .await;
    let received = alice.collect("message", 1).await;
    assert_eq!(of_type(&received, "offer").len(), 1);
}

/// A post wakes a waiting poll at once: it is not merely found by the poll's next fallback
/// read of the store. The poll holds an idle cursor (its inbox quiet for a minute), so the
/// server's fallback reads are seconds apart (every 2 s today; a cross-process wake-up
/// mechanism may space them further), and the post lands mid-way between two of them. Only a
/// wake-up returns the poll within [`WOKEN_WITHIN`] of the post; three rounds, so that one
/// lucky read cannot pass the test. Standalone only: under `cargo lambda watch` the post and
/// the poll run in different processes.
#[tokio::test]
async fn a_waiting_poll_wakes_when_a_message_arrives() {
    /// Well under the idle fallback interval (2 s), well over a wake-up on a loaded machine.
    const WOKEN_WITHIN: Duration = Duration::from_millis(500);
    /// How long the poll waits before the post: past its first read, mid-way to its next.
    const POST_AFTER: Duration = Duration::from_millis(1000);
    if crate::support::standalone_only("in-process wake-up timing") {
        return;
    }
    let server = Server::start();
    let room = room();
    let mut alice = join(&server, &room, "alice").await;
    let bob = join(&server, &room, "bob").await;
    alice.poll(0).await;
    let alice_id = alice.id.clone();
    for round in 0..3 {
        // The cursor is `<sequence>.<last activity ms>`: the same position, quiet for 60 s.
        let cursor = alice.cursor.clone().expect("a cursor");
        let (sequence, _) = cursor.split_once('.').expect("cursor shape");
        let quiet_since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis()
            - 60_000;
        alice.cursor = Some(format!("{sequence}.{quiet_since}"));
        let started = Instant::now();
        let poll = alice.poll(20);
        let post = async {
            tokio::time::sleep(POST_AFTER).await;
            let sent = Instant::now();
            bob.send(json!({"to": alice_id, "type": "message", "data": round}))
                .await;
            sent
        };
        let (messages, sent) = tokio::join!(poll, post);
        let woken_after = sent.elapsed();
        assert_eq!(of_type(&messages, "message").len(), 1, "{messages:?}");
        assert!(
            started.elapsed() >= POST_AFTER,
            "round {round}: the poll returned before the post"
        );
        assert!(
            woken_after < WOKEN_WITHIN,
            "round {round}: the poll returned {woken_after:?} after the post, so a fallback \
             read found the message, not a wake-up"
        );
    }
}

#[tokio::test]
async fn an_empty_poll_returns_after_wait() {
    let server = Server::start();
    let mut alice = join(&server, &room(), "alice").await;
    let started = Instant::now();
    assert!(alice.poll(1).await.is_empty());
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    let started = Instant::now();
    assert!(alice.poll(0).await.is_empty());
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn poll_parameters_are_checked() {
    let server = Server::start_with(&[("SIGNALPOST_MAX_WAIT", "10")]);
    let alice = join(&server, &room(), "alice").await;
    assert_eq!(alice.joined["maxWait"], 10);
    for query in [
        "wait=11",
        "wait=-1",
        "wait=abc",
        "wait=1.5",
        "wait=",
        "wait=%2B1",
        "wait=99999999999999999999999",
        "after=garbage",
        "after=",
        "after=1.2.3",
        "after=99999999999999999999999.1",
        "after=%00",
    ] {
        assert_problem(alice.poll_raw(query).await, 400, "invalid-request").await;
    }
    assert_problem(
        alice.poll_raw("after=5000.0&wait=0").await,
        400,
        "invalid-request",
    )
    .await;
    assert_eq!(alice.poll_raw("wait=0&unrelated=1").await.status(), 200);
}

#[tokio::test]
async fn expired_messages_are_never_returned() {
    let server = Server::start_with(&[("SIGNALPOST_MESSAGE_TTL", "10")]);
    let room = room();
    let mut alice = join(&server, &room, "alice").await;
    let bob = join(&server, &room, "bob").await;
    bob.send(json!({"to": alice.id, "type": "message", "data": "soon gone"}))
        .await;
    tokio::time::sleep(Duration::from_millis(10_500)).await;
    let held = alice.poll(0).await;
    assert!(of_type(&held, "message").is_empty(), "{held:?}");
}
