//! The server's life: restarts keep undelivered messages, shutdown does not wait out polls.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{Server, Stop, description, join, room, standalone_only};

async fn survives(stop: Stop) {
    let mut server = Server::start();
    let room = room();
    let mut alice = join(&server, &room, "alice").await;
    let mut bob = join(&server, &room, "bob").await;
    alice.poll(0).await;
    let ids = bob
        .send(json!({"to": alice.id, "type": "offer", "data": description("offer"), "id": "o-1"}))
        .await;
    server.restart(stop);
    alice.reconnect();
    bob.reconnect();
    let messages = alice.collect("offer", 1).await;
    let offer = messages
        .iter()
        .find(|message| message["type"] == "offer")
        .expect("offer kept");
    assert_eq!(offer["id"], ids[0].as_str());
    assert_eq!(
        bob.send(
            json!({"to": alice.id, "type": "offer", "data": description("offer"), "id": "o-1"})
        )
        .await,
        ids,
        "idempotency records survive too"
    );
}

#[tokio::test]
async fn a_graceful_restart_keeps_undelivered_messages() {
    if standalone_only("restarting the server process (a function's restart is every cold start)") {
        return;
    }
    survives(Stop::Terminate).await;
}

#[tokio::test]
async fn a_killed_server_keeps_accepted_messages() {
    if standalone_only("killing the server process (a function's restart is every cold start)") {
        return;
    }
    survives(Stop::Kill).await;
}

#[tokio::test]
async fn shutdown_ends_waiting_polls_at_once() {
    if standalone_only("graceful shutdown of the server process") {
        return;
    }
    let mut server = Server::start();
    let mut alice = join(&server, &room(), "alice").await;
    let poller = tokio::spawn(async move {
        let started = Instant::now();
        let messages = alice.poll(25).await;
        (messages, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let exit = server.stop(Stop::Terminate);
    let (messages, waited) = poller.await.expect("poll completed with 200");
    assert!(messages.is_empty());
    assert!(
        waited < Duration::from_secs(10),
        "the poll ended with the server ({waited:?})"
    );
    assert!(exit < Duration::from_secs(10), "exit took {exit:?}");
}
