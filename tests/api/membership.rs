//! Joining and leaving: roles, capacity, presence messages, both leave forms.

use serde_json::{Value, json};

use crate::support::{Server, assert_problem, http, join, room};

#[tokio::test]
async fn join_returns_the_contract_shape_and_announces_the_newcomer() {
    let server = Server::start_with(&[("SIGNALPOST_STUN_URLS", "stun:stun.example.org:3478")]);
    let room = room();
    let mut alice = join(&server, &room, "alice").await;
    let bob = join(&server, &room, "bob").await;

    let joined = &bob.joined;
    assert_eq!(joined["polite"], true, "the newcomer is polite");
    assert_eq!(
        joined["peers"],
        json!([{"peer": alice.id, "name": "alice"}])
    );
    assert_eq!(joined["maxWait"], 25);
    assert_eq!(
        joined["iceServers"],
        json!([{"urls": ["stun:stun.example.org:3478"]}])
    );
    let expires = joined["expiresAt"].as_str().expect("expiresAt");
    assert!(expires.ends_with('Z') && expires.len() == 20, "{expires}");
    assert_eq!(alice.joined["peers"], json!([]));

    let messages = alice.collect("peer-joined", 1).await;
    let announced = &messages[0];
    assert_eq!(announced["from"], bob.id.as_str());
    assert_eq!(announced["to"], alice.id.as_str());
    assert_eq!(announced["data"], json!({"name": "bob"}));
    assert!(announced["sentAt"].as_str().expect("sentAt").ends_with('Z'));
}

#[tokio::test]
async fn join_accepts_an_empty_body_and_refuses_bad_ones() {
    let server = Server::start();
    let client = http();
    let url = server.url(&format!("/v1/rooms/{}/peers", room()));
    let response = client.post(&url).send().await.expect("request");
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.expect("json");
    assert!(body["peer"].is_string());

    let cases: [(&str, &str, u16, &str); 7] = [
        ("application/json", "{not json", 400, "invalid-request"),
        ("application/json", r#"{"name": 7}"#, 400, "invalid-request"),
        (
            "application/json",
            r#"{"nmae": "typo"}"#,
            400,
            "invalid-request",
        ),
        (
            "application/json",
            &format!(r#"{{"name": "{}"}}"#, "x".repeat(65)),
            400,
            "invalid-request",
        ),
        (
            "application/json",
            r#"{"name": "bell\u0007"}"#,
            400,
            "invalid-request",
        ),
        ("application/json", "[]", 400, "invalid-request"),
        (
            "text/html",
            r#"{"name": "alice"}"#,
            415,
            "unsupported-media-type",
        ),
    ];
    for (content_type, body, status, code) in cases {
        let response = client
            .post(&url)
            .header("content-type", content_type)
            .body(body.to_owned())
            .send()
            .await
            .expect("request");
        assert_problem(response, status, code).await;
    }
    let unicode = client
        .post(&url)
        .json(&json!({"name": "Zoë 🦀 ".repeat(8)}))
        .send()
        .await
        .expect("request");
    assert_eq!(unicode.status(), 201, "64 characters of unicode are fine");
    // ("%2e%2e" never reaches a server: clients normalise it away.)
    for bad_room in ["a%20b", "a.b", &"r".repeat(65), "caf%C3%A9"] {
        let response = client
            .post(server.url(&format!("/v1/rooms/{bad_room}/peers")))
            .send()
            .await
            .expect("request");
        assert_problem(response, 400, "invalid-request").await;
    }
}

#[tokio::test]
async fn a_full_room_refuses_one_more() {
    let server = Server::start_with(&[("SIGNALPOST_MAX_PEERS", "3")]);
    let room = room();
    for name in ["a", "b", "c"] {
        join(&server, &room, name).await;
    }
    let response = http()
        .post(server.url(&format!("/v1/rooms/{room}/peers")))
        .send()
        .await
        .expect("request");
    assert_problem(response, 409, "room-full").await;
    join(&server, &crate::support::room(), "elsewhere").await;
}

#[tokio::test]
async fn leaving_tells_the_others_and_twice_is_fine() {
    let server = Server::start();
    let room = room();
    let mut alice = join(&server, &room, "alice").await;
    let bob = join(&server, &room, "bob").await;
    bob.leave().await;
    bob.leave().await;
    let left: Vec<_> = alice
        .collect("peer-left", 1)
        .await
        .into_iter()
        .filter(|message| message["type"] == "peer-left")
        .collect();
    assert_eq!(left[0]["from"], bob.id.as_str());
    assert_eq!(left[0]["data"], json!({"reason": "left"}));
    assert_problem(bob.poll_raw("wait=0").await, 410, "peer-gone").await;
    assert_problem(
        bob.post(&json!({"type": "message"})).await,
        410,
        "peer-gone",
    )
    .await;
    let response = alice.post(&json!({"to": bob.id, "type": "message"})).await;
    assert_problem(response, 404, "not-found").await;
}

#[tokio::test]
async fn a_peer_can_only_remove_itself() {
    let server = Server::start();
    let room = room();
    let alice = join(&server, &room, "alice").await;
    let bob = join(&server, &room, "bob").await;
    let response = http()
        .delete(server.url(&format!("/v1/rooms/{room}/peers/{}", bob.id)))
        .bearer_auth(&alice.token)
        .send()
        .await
        .expect("request");
    assert_problem(response, 403, "forbidden").await;
    assert_eq!(
        bob.poll_raw("wait=0").await.status(),
        200,
        "bob is still there"
    );
    let response = http()
        .delete(server.url(&format!("/v1/rooms/{room}/peers/{}", bob.id)))
        .send()
        .await
        .expect("request");
    assert_problem(response, 401, "unauthorized").await;
}

#[tokio::test]
async fn beacon_leave_takes_the_token_in_a_text_body() {
    let server = Server::start();
    let room = room();
    let mut alice = join(&server, &room, "alice").await;
    let bob = join(&server, &room, "bob").await;
    let client = http();
    let url = server.url(&format!("/v1/rooms/{room}/peers/{}/leave", bob.id));
    let post = |content_type: &'static str, body: String| {
        client
            .post(&url)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let response = post(
        "application/x-www-form-urlencoded",
        format!("token={}", bob.token),
    )
    .await
    .expect("request");
    assert_problem(response, 415, "unsupported-media-type").await;
    let response = post("text/plain", r#"{"token": "forged"}"#.into())
        .await
        .expect("request");
    assert_problem(response, 401, "unauthorized").await;
    let response = post("text/plain", r#"{"token": 1}"#.into())
        .await
        .expect("request");
    assert_problem(response, 400, "invalid-request").await;
    let alices_url = server.url(&format!("/v1/rooms/{room}/peers/{}/leave", alice.id));
    let response = client
        .post(alices_url)
        .header("content-type", "text/plain")
        .body(json!({"token": bob.token}).to_string())
        .send()
        .await
        .expect("request");
    assert_problem(response, 403, "forbidden").await;

    let response = post(
        "text/plain;charset=UTF-8",
        json!({"token": bob.token}).to_string(),
    )
    .await
    .expect("request");
    assert_eq!(response.status(), 204);
    let response = post("application/json", json!({"token": bob.token}).to_string())
        .await
        .expect("request");
    assert_eq!(response.status(), 204, "leaving twice is not an error");
    alice.collect("peer-left", 1).await;
}

#[tokio::test]
async fn silent_peers_time_out_and_the_others_hear_of_it() {
    let server = Server::start_with(&[
        ("SIGNALPOST_MAX_WAIT", "1"),
        ("SIGNALPOST_PRESENCE_TIMEOUT", "6"),
    ]);
    let room = room();
    let mut alice = join(&server, &room, "alice").await;
    let bob = join(&server, &room, "bob").await;
    // Alice keeps polling; Bob never does.
    let messages = alice.collect("peer-left", 1).await;
    let left = messages
        .iter()
        .find(|message| message["type"] == "peer-left")
        .expect("peer-left");
    assert_eq!(left["from"], bob.id.as_str());
    assert_eq!(left["data"], json!({"reason": "timeout"}));
    assert_problem(bob.poll_raw("wait=0").await, 410, "peer-gone").await;
    assert_eq!(
        alice.poll_raw("wait=0").await.status(),
        200,
        "alice, who polls, stays"
    );
}

#[tokio::test]
async fn ice_servers_hand_out_turn_credentials_in_the_coturn_convention() {
    let server = Server::start_with(&[
        ("SIGNALPOST_STUN_URLS", "stun:stun.example.org"),
        (
            "SIGNALPOST_TURN_URLS",
            "turn:turn.example.org:3478,turns:turn.example.org:5349",
        ),
        (
            "SIGNALPOST_TURN_SECRET",
            "north-turn-secret-of-at-least-32-bytes",
        ),
        ("SIGNALPOST_TURN_TTL", "600"),
    ]);
    let alice = join(&server, &room(), "alice").await;
    let response = http()
        .get(server.url("/v1/ice-servers"))
        .bearer_auth(&alice.token)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    let servers = body["iceServers"].as_array().expect("list");
    assert_eq!(servers[0], json!({"urls": ["stun:stun.example.org"]}));
    let turn = &servers[1];
    let username = turn["username"].as_str().expect("username");
    let (expiry, peer) = username.split_once(':').expect("expiry:peer");
    assert_eq!(peer, alice.id);
    let expiry: i64 = expiry.parse().expect("unix time");
    let now = signalpost_shared::clock::now_millis() / 1000;
    assert!(
        (now + 590..=now + 610).contains(&expiry),
        "{expiry} vs {now}"
    );
    assert_eq!(
        turn["credential"].as_str().expect("credential"),
        signalpost_shared::ice::turn_credential("north-turn-secret-of-at-least-32-bytes", username)
    );
    assert!(body["expiresAt"].is_string());
    assert_eq!(
        alice.joined["iceServers"].as_array().map(Vec::len),
        Some(2),
        "join has them too"
    );
    let response = http()
        .get(server.url("/v1/ice-servers"))
        .send()
        .await
        .expect("request");
    assert_problem(response, 401, "unauthorized").await;
}
