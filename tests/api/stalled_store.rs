//! A DynamoDB endpoint that accepts connections and never answers: the server's own SDK
//! operation timeout (3 s, `DynamoStore::timeouts`) must turn every stalled store call into a
//! prompt `503` with `Retry-After`, never a request that hangs. This is the real SDK client
//! of the real binary, configured as in production, against a real stalled socket; the
//! reliability suite's stalls are a sleeping wrapper around the store.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::net::TcpListener;

use crate::support::{Server, assert_problem, http, room};

/// The SDK's operation timeout is 3 s for all attempts together: a stalled call must end
/// after about that, and not much later, whatever the retries.
const SHORTEST: Duration = Duration::from_millis(2_500);
const LONGEST: Duration = Duration::from_secs(10);

/// A loopback endpoint that accepts every connection, reads nothing and answers nothing.
/// Returns its URL and the number of connections it has accepted so far.
async fn stalled_endpoint() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds loopback");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            held.push(stream);
        }
    });
    (url, accepted)
}

#[tokio::test]
async fn a_stalled_dynamodb_endpoint_is_a_prompt_503() {
    if crate::support::standalone_only("the server's own DynamoDB client configuration") {
        return;
    }
    let (endpoint, accepted) = stalled_endpoint().await;
    let server = Server::start_with(&[
        ("SIGNALPOST_TABLE", "stalled-table"),
        ("AWS_ENDPOINT_URL_DYNAMODB", endpoint.as_str()),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
    ]);
    let client = http();
    let room = room();
    let calls = [
        ("health", client.get(server.url("/v1/health"))),
        (
            "join",
            client
                .post(server.url(&format!("/v1/rooms/{room}/peers")))
                .json(&json!({"name": "alice"})),
        ),
    ];
    for (what, request) in calls {
        let started = Instant::now();
        let response = request.send().await.expect("the server answers");
        let took = started.elapsed();
        assert_problem(response, 503, "unavailable").await;
        assert!(
            (SHORTEST..LONGEST).contains(&took),
            "{what}: 503 after {took:?}, expected the 3 s operation timeout"
        );
    }
    assert!(
        accepted.load(Ordering::SeqCst) > 0,
        "the server's DynamoDB client reached the stalled endpoint"
    );
}
