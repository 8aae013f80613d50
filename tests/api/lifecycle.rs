//! The server's life: restarts keep undelivered messages, shutdown does not wait out polls.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{Server, Stop, description, http, join, room, standalone_only};

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

/// Where the server receives wake-ups from other processes: its SQS queues (DynamoDB, through
/// the SQS endpoint `tests/with-moto.sh` serves) or its Unix sockets beside the SQLite file.
async fn wakeup_addresses(server: &Server) -> Vec<String> {
    let Some(table) = server.table() else {
        let directory = format!(
            "{}.wakeup",
            server.directory().join("signalpost.db").display()
        );
        return std::fs::read_dir(directory)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|entry| entry.path().display().to_string())
                    .collect()
            })
            .unwrap_or_default();
    };
    let endpoint = std::env::var("AWS_ENDPOINT_URL_SQS")
        .expect("AWS_ENDPOINT_URL_SQS: run the DynamoDB leg through tests/with-moto.sh");
    // SQS's query protocol. moto checks no signature, but picks the service from the
    // Authorization header's credential scope.
    let listed = http()
        .post(endpoint)
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/sqs/aws4_request, \
             SignedHeaders=host, Signature=0",
        )
        .form(&[
            ("Action", "ListQueues"),
            ("Version", "2012-11-05"),
            ("QueueNamePrefix", &format!("{table}-wake-")),
        ])
        .send()
        .await
        .expect("ListQueues")
        .text()
        .await
        .expect("ListQueues body");
    listed
        .split("<QueueUrl>")
        .skip(1)
        .filter_map(|rest| rest.split("</QueueUrl>").next())
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn a_graceful_shutdown_gives_back_the_wake_up_queue() {
    if standalone_only("graceful shutdown of the server process") {
        return;
    }
    let mut server = Server::start();
    let mut alice = join(&server, &room(), "alice").await;
    // A poll that waits listens for wake-ups: the queue (or socket) exists from then on.
    alice.poll(1).await;
    assert_eq!(
        wakeup_addresses(&server).await.len(),
        1,
        "one wake-up address while the server runs"
    );
    let exit = server.stop(Stop::Terminate);
    assert_eq!(
        wakeup_addresses(&server).await,
        Vec::<String>::new(),
        "the wake-up queue or socket outlived the server"
    );
    assert!(exit < Duration::from_secs(10), "exit took {exit:?}");
}
