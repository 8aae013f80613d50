//! Hostile clients, beyond the malformed input of `errors.rs`: forged and borrowed tokens on
//! every route, spoofed senders, path tricks sent byte for byte, unicode and control
//! characters, extreme query values, slow and oversized bodies, floods and full inboxes. For
//! each: no 5xx, no internals in any body, and well-behaved peers lose nothing.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use signalpost_shared::clock::now_millis;
use signalpost_shared::ids::{PeerId, RoomId};
use signalpost_shared::token::TokenKeys;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{
    Peer, RawIo, SECRET, Server, assert_problem, candidate, connect_raw, description, http, join,
    room,
};

/// Text that must never reach a client: the secret, source paths, SQL, panics.
fn assert_clean(body: &str) {
    for needle in [
        SECRET,
        "/work/",
        "/tmp/",
        ".rs:",
        "src/",
        "SELECT ",
        "INSERT ",
        "sqlite",
        "rusqlite",
        "panicked",
        "thread '",
        "stack backtrace",
    ] {
        assert!(
            !body
                .to_ascii_lowercase()
                .contains(&needle.to_ascii_lowercase()),
            "a response reveals {needle:?}: {body}"
        );
    }
}

/// Asserts a client error (never 5xx) with clean text; returns the status and body.
async fn client_error(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body = response.text().await.expect("body");
    assert!((400..500).contains(&status), "{status}: {body}");
    assert_clean(&body);
    (status, body)
}

/// A request written byte for byte on a fresh connection (over TLS under
/// `SIGNALPOST_TEST_TLS=1`), so nothing normalises the path;
/// returns the status (0 if the server closed without answering) and the whole response.
async fn raw(server: &Server, head: &str, body: &[u8]) -> (u16, String) {
    let mut stream = connect_raw(server).await;
    stream.write_all(head.as_bytes()).await.expect("writes");
    stream.write_all(body).await.expect("writes");
    read_response(stream).await
}

async fn read_response(mut stream: Box<dyn RawIo>) -> (u16, String) {
    let mut response = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut response));
    // A reset after the answer (the server closing on an unread body) still leaves the answer.
    let _ = read.await.expect("the server answers or closes in time");
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    (status, text)
}

fn grant_parts(server_room: &str, peer: &str) -> (RoomId, PeerId) {
    (
        RoomId::parse(server_room).expect("valid room"),
        PeerId::parse(peer).expect("valid peer"),
    )
}

/// Every route that takes a token, called with `token` as `peer` in `room`.
async fn call_every_route(server: &Server, room: &str, peer: &str, token: &str) -> Vec<u16> {
    let client = http();
    let mut statuses = Vec::new();
    let requests = [
        client
            .post(server.url(&format!("/v1/rooms/{room}/messages")))
            .bearer_auth(token)
            .json(&json!({"type": "message", "data": "hi"})),
        client
            .get(server.url(&format!("/v1/rooms/{room}/messages?wait=0")))
            .bearer_auth(token),
        client.get(server.url("/v1/ice-servers")).bearer_auth(token),
        client
            .delete(server.url(&format!("/v1/rooms/{room}/peers/{peer}")))
            .bearer_auth(token),
        client
            .post(server.url(&format!("/v1/rooms/{room}/peers/{peer}/leave")))
            .header("content-type", "text/plain")
            .body(json!({ "token": token }).to_string()),
    ];
    for request in requests {
        let response = request.send().await.expect("request");
        statuses.push(response.status().as_u16());
        let body = response.text().await.expect("body");
        assert_clean(&body);
    }
    statuses
}

/// `segment` with its first base64url character replaced: the first character carries six
/// whole bits of the first byte, so the decoded bytes always change.
fn change_first_character(segment: &str) -> String {
    let replacement = if segment.starts_with('A') { "B" } else { "A" };
    format!("{replacement}{}", &segment[1..])
}

#[tokio::test]
async fn forged_tokens_are_refused_on_every_route_and_the_peer_stays() {
    let server = Server::start();
    let room = room();
    let mut alice = join(&server, &room, "alice").await;
    let bob = join(&server, &room, "bob").await;
    let (room_id, alice_id) = grant_parts(&room, &alice.id);
    let keys = TokenKeys::new(SECRET.as_bytes());
    let later = now_millis() / 1000 + 600;
    let segments: Vec<&str> = alice.token.split('.').collect();
    let unsigned_claims = URL_SAFE_NO_PAD
        .encode(json!({"typ": "peer", "room": room, "sub": alice.id, "exp": later}).to_string());
    let bob_claims = URL_SAFE_NO_PAD
        .encode(json!({"typ": "peer", "room": room, "sub": bob.id, "exp": later}).to_string());
    let forged = [
        // alg "none", no signature.
        format!(
            "{}.{unsigned_claims}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#)
        ),
        // Alice's header and signature around claims naming Bob.
        format!("{}.{bob_claims}.{}", segments[0], segments[2]),
        // Segments swapped, and the signature alone.
        format!("{}.{}.{}", segments[1], segments[0], segments[2]),
        segments[2].to_owned(),
        // Signed by another secret, and a join token (the wrong kind) signed by the right one.
        TokenKeys::new(b"guessed").issue_peer(&room_id, &alice_id, later),
        keys.issue_join(&room_id, later),
        // Expired by one second.
        keys.issue_peer(&room_id, &alice_id, now_millis() / 1000 - 1),
        // The real token with one character appended.
        format!("{}x", alice.token),
    ];
    // The real token with one character changed in each segment in turn: the header, the
    // claims, the signature.
    let forged = forged.into_iter().chain((0..3).map(|segment| {
        let mut changed: Vec<String> = segments.iter().map(|part| (*part).to_owned()).collect();
        changed[segment] = change_first_character(&changed[segment]);
        changed.join(".")
    }));
    for token in forged {
        let token = &token;
        let statuses = call_every_route(&server, &room, &alice.id, token).await;
        // The beacon answers 400 when the text is not a header-safe token; all else is 401.
        assert!(
            statuses
                .iter()
                .all(|&status| status == 401 || status == 400),
            "{token}: {statuses:?}"
        );
        assert_eq!(&statuses[..4], [401; 4], "{token}");
    }
    // None of that removed Alice: she still polls, and Bob can still reach her.
    bob.send(json!({"to": alice.id, "type": "message", "data": "still here?"}))
        .await;
    let held = alice.collect("message", 1).await;
    assert!(held.iter().any(|message| message["data"] == "still here?"));
}

#[tokio::test]
async fn a_token_cannot_act_for_another_peer_or_room() {
    let server = Server::start();
    let (room_a, room_b) = (room(), room());
    let alice = join(&server, &room_a, "alice").await;
    let bob = join(&server, &room_a, "bob").await;
    let mut carol = join(&server, &room_b, "carol").await;
    // Alice's token with Bob's id in the path, on both leave forms, and Bob's id in lower case.
    for peer in [bob.id.clone(), alice.id.to_lowercase()] {
        let statuses = call_every_route(&server, &room_a, &peer, &alice.token).await;
        assert_eq!(statuses[3..], [403, 403], "{peer}");
    }
    // Alice's token on room B, where her peer id does not exist.
    let statuses = call_every_route(&server, &room_b, &alice.id, &alice.token).await;
    assert_eq!(statuses[..2], [403, 403]);
    assert_eq!(statuses[3..], [403, 403]);
    // Messages to a peer of another room are not delivered there.
    let response = alice
        .post(&json!({"to": carol.id, "type": "message", "data": "cross-room"}))
        .await;
    assert_problem(response, 404, "not-found").await;
    assert!(carol.poll(0).await.is_empty(), "nothing crossed rooms");
    bob.poll_raw("wait=0")
        .await
        .error_for_status()
        .expect("bob is still in the room");
}

#[tokio::test]
async fn the_sender_is_always_the_token_peer() {
    let server = Server::start();
    let room = room();
    let mut alice = join(&server, &room, "alice").await;
    let bob = join(&server, &room, "bob").await;
    let carol = join(&server, &room, "carol").await;
    // Fields that would name another sender are refused, at the top level and in a batch.
    for body in [
        json!({"messages": [{"to": alice.id, "type": "message", "from": carol.id}]}),
        json!({"to": alice.id, "type": "message", "sender": carol.id}),
        json!({"to": alice.id, "type": "peer-joined", "data": {"name": "mallory"}}),
        json!({"to": alice.id, "type": "peer-left", "data": {"reason": "left"}}),
    ] {
        let response = bob.post(&body).await;
        let problem = assert_problem(response, 400, "invalid-request").await;
        assert_clean(&problem.to_string());
    }
    bob.send(json!({"to": alice.id, "type": "message", "data": "from bob"}))
        .await;
    let messages = alice.collect("message", 1).await;
    let received: Vec<&Value> = messages
        .iter()
        .filter(|message| message["type"] == "message")
        .collect();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0]["from"], bob.id.as_str());
    let joined: Vec<&Value> = messages
        .iter()
        .filter(|message| message["type"] == "peer-joined")
        .collect();
    assert_eq!(joined.len(), 2, "only the server's own announcements");
}

#[tokio::test]
async fn path_tricks_are_refused_byte_for_byte() {
    // Raw TCP against the standalone server's own HTTP handling; under watch (and on AWS)
    // the platform's front server parses requests.
    if crate::support::standalone_only("raw TCP requests") {
        return;
    }
    let server = Server::start();
    let room = room();
    let alice = join(&server, &room, "alice").await;
    let long = "r".repeat(10_000);
    let paths = [
        "/v1/rooms/../peers".to_owned(),
        "/v1/rooms/%2e%2e/peers".to_owned(),
        "/v1/rooms/..%2F..%2Fetc%2Fpasswd/peers".to_owned(),
        "/v1/rooms/a%2Fb/messages".to_owned(),
        "/v1/rooms/room%00/peers".to_owned(),
        "/v1/rooms/room%0d%0aX-Injected:%201/peers".to_owned(),
        "/v1/rooms/r%20/peers".to_owned(),
        "/v1/rooms/r;x=1/peers".to_owned(),
        "/v1/rooms/a\\b/peers".to_owned(),
        "/v1/rooms/%D1%80%D0%BE%D0%BE%D0%BC/peers".to_owned(),
        "/v1/rooms/%F0%9F%A6%80/peers".to_owned(),
        "/v1/rooms/%C0%AE%C0%AE/peers".to_owned(),
        "/v1/rooms/%25/peers".to_owned(),
        format!("/v1/rooms/{}/peers", "r".repeat(65)),
        format!("/v1/rooms/{long}/peers"),
        format!("/v1/rooms/{room}/peers/..%2F{}/leave", alice.id),
        format!("/v1/rooms/{room}/peers/{}%00/leave", alice.id),
        format!("/v1/rooms/{room}/peers/{}/../leave", alice.id),
        format!("/v1/rooms/{room}/peers/{long}"),
        format!("//v1/rooms/{room}/peers"),
        format!("/v1//rooms/{room}/peers"),
        format!("/V1/rooms/{room}/peers"),
    ];
    for path in &paths {
        let body = json!({"token": alice.token}).to_string();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let (status, response) = raw(&server, &head, body.as_bytes()).await;
        assert!((400..500).contains(&status), "{path}: {status}\n{response}");
        assert!(!response.contains("X-Injected"), "{path}: {response}");
        assert_clean(&response);
        if response.contains("\r\ncontent-type:") {
            assert!(
                response.contains("content-type: application/problem+json"),
                "{path}: {response}"
            );
        }
    }
    // A raw request line the HTTP parser refuses outright, and one with a 100 KB path.
    for head in [
        "POST /v1/rooms/a b/peers HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_owned(),
        format!(
            "GET /v1/rooms/{}/messages HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            "r".repeat(100_000)
        ),
    ] {
        let (status, response) = raw(&server, &head, b"").await;
        assert!(
            status == 0 || (400..500).contains(&status),
            "{status}: {response}"
        );
    }
    // Alice was not removed by any of them.
    assert_eq!(alice.poll_raw("wait=0").await.status(), 200);
    assert_eq!(
        http()
            .get(server.url("/v1/health"))
            .send()
            .await
            .expect("request")
            .status(),
        200
    );
}

#[tokio::test]
async fn unicode_and_control_characters_are_refused_in_ids_and_kept_in_data() {
    let server = Server::start();
    let room = room();
    let client = http();
    let url = server.url(&format!("/v1/rooms/{room}/peers"));
    for name in [
        "nul\u{0}",
        "del\u{7f}",
        "c1\u{85}",
        "tab\t",
        "esc\u{1b}[31m",
        // Invisible and direction-control characters: a name must show all it holds.
        "alice\u{200b}",
        "\u{202e}ecila",
        "\u{00ad}\u{00ad}\u{00ad}\u{00ad}\u{00ad}\u{00ad}\u{00ad}\u{00ad}",
        "evil\u{feff}",
        "\u{3164}",
        "line\u{2028}break",
        "tag\u{e0041}",
    ] {
        let response = client
            .post(&url)
            .json(&json!({ "name": name }))
            .send()
            .await
            .expect("request");
        assert_problem(response, 400, "invalid-request").await;
    }
    // Visible unicode is shown as given, byte for byte, joiners in emoji sequences included.
    let tricky = "Zoë 李 👩\u{200d}💻 🦀";
    let mut alice = join(&server, &room, "alice").await;
    let bob = join(&server, &room, tricky).await;
    let announced = alice.collect("peer-joined", 1).await;
    assert_eq!(announced[0]["data"]["name"], tricky);

    for id in ["é", "a\u{0}", "a b", "\u{202e}", "🦀", "a.b", "a/b"] {
        let response = bob
            .post(&json!({"to": alice.id, "type": "message", "id": id}))
            .await;
        assert_problem(response, 400, "invalid-request").await;
        let response = bob.post(&json!({"to": id, "type": "message"})).await;
        assert_problem(response, 400, "invalid-request").await;
    }
    let data = json!({
        "nul": "\u{0}", "separators": "\u{2028}\u{2029}", "rtl": tricky,
        "sql": "'); DROP TABLE members; --", "html": "<script>alert(1)</script>",
        "json": "\"}]}", "big": "ő".repeat(1000),
    });
    bob.send(json!({"to": alice.id, "type": "message", "data": data}))
        .await;
    let received = alice.collect("message", 1).await;
    let message = received
        .iter()
        .find(|message| message["type"] == "message")
        .expect("the message");
    assert_eq!(message["data"], data, "data comes back exactly");
    // Escaped lone surrogates are not valid Unicode: refused, or kept exactly as sent.
    let lone = format!(
        r#"{{"to":"{}","type":"message","data":"\ud800 and \udfff"}}"#,
        alice.id
    );
    let response = client
        .post(server.url(&format!("/v1/rooms/{room}/messages")))
        .bearer_auth(&bob.token)
        .header("content-type", "application/json")
        .body(lone)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    assert!(status == 202 || status == 400, "{status}");
    if status == 202 {
        let text = alice.poll_raw("wait=0").await.text().await.expect("text");
        assert!(text.contains(r#""\ud800 and \udfff""#), "{text}");
    }
    // The tables survived the SQL-looking data: everyone still works.
    bob.send(json!({"to": alice.id, "type": "message", "data": "after"}))
        .await;
    assert_eq!(
        http()
            .get(server.url("/v1/health"))
            .send()
            .await
            .expect("request")
            .status(),
        200
    );
}

#[tokio::test]
async fn extreme_poll_values_are_answered_at_once() {
    let server = Server::start();
    let room = room();
    let alice = join(&server, &room, "alice").await;
    let refused = [
        "wait=26",
        "wait=18446744073709551616",
        "wait=1e3",
        "wait=0x10",
        "wait=%EF%BC%91",
        "after=18446744073709551615.0&wait=0",
        "after=18446744073709551616.0",
        "after=1.9223372036854775808",
        "after=0.99999999999999999999",
        "after=-0.0",
        "after=0.0.0",
        "after=%C2%B9.0",
        &format!("after={}", "9".repeat(10_000)),
    ];
    // Repeated and unknown parameters: answered either way, never held for long.
    let answered = [
        "wait=0&wait=999",
        &format!("wait=0&after=0.0&{}", "x=1&".repeat(2_000)),
    ];
    for query in refused.iter().chain(&answered) {
        let started = Instant::now();
        let response = alice.poll_raw(query).await;
        let status = response.status().as_u16();
        let body = response.text().await.expect("body");
        assert_clean(&body);
        assert!(
            status == 400 || (status == 200 && answered.contains(query)),
            "{query}: {status} {body}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{query} waited {:?}",
            started.elapsed()
        );
    }
    // The largest activity a cursor can carry: a valid cursor, answered, not stuck.
    let started = Instant::now();
    let response = alice.poll_raw("after=0.9223372036854775807&wait=1").await;
    assert_eq!(response.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn slow_bodies_are_cut_off_while_others_are_served() {
    // Raw TCP against the standalone server's own HTTP handling; under watch (and on AWS)
    // the platform's front server parses requests.
    if crate::support::standalone_only("raw TCP requests") {
        return;
    }
    let server = Server::start();
    let room = room();
    let mut alice = join(&server, &room, "alice").await;
    let bob = join(&server, &room, "bob").await;
    let body = json!({"to": alice.id, "type": "message", "data": "slow"}).to_string();
    let head = format!(
        "POST /v1/rooms/{room}/messages HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        bob.token,
        body.len()
    );

    // A body delivered in pieces but well within the deadline is fine.
    let mut stream = connect_raw(&server).await;
    stream.write_all(head.as_bytes()).await.expect("writes");
    for piece in body.as_bytes().chunks(body.len() / 4 + 1) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        stream.write_all(piece).await.expect("writes");
    }
    assert_eq!(read_response(stream).await.0, 202);

    // A byte every few seconds never finishes in time: cut off at the deadline with a 400.
    let mut stream = connect_raw(&server).await;
    stream.write_all(head.as_bytes()).await.expect("writes");
    let started = Instant::now();
    let (mut reader, mut writer) = tokio::io::split(stream);
    let trickle = tokio::spawn(async move {
        for byte in body.bytes() {
            if writer.write_all(&[byte]).await.is_err() {
                break;
            }
            // Slow enough that no byte arrives just as the server gives up and closes (which
            // would reset the connection before the answer is read).
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
    });
    // Meanwhile the server keeps serving everyone else.
    bob.send(json!({"to": alice.id, "type": "message", "data": "meanwhile"}))
        .await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), reader.read_to_end(&mut response))
        .await
        .expect("answered before the client finished");
    let elapsed = started.elapsed();
    trickle.abort();
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    assert!(response.contains("application/problem+json"), "{response}");
    assert!(response.contains("too slowly"), "{response}");
    assert!(
        elapsed >= Duration::from_secs(9) && elapsed < Duration::from_secs(15),
        "{elapsed:?}"
    );
    let texts: Vec<Value> = alice
        .collect("message", 2)
        .await
        .into_iter()
        .filter(|message| message["type"] == "message")
        .map(|message| message["data"].clone())
        .collect();
    assert_eq!(
        texts,
        ["slow", "meanwhile"],
        "the cut-off body stored nothing"
    );
}

#[tokio::test]
async fn oversized_requests_are_refused_without_reading_them() {
    // Raw TCP against the standalone server's own HTTP handling; under watch (and on AWS)
    // the platform's front server parses requests.
    if crate::support::standalone_only("raw TCP requests") {
        return;
    }
    let server = Server::start();
    let room = room();
    let bob = join(&server, &room, "bob").await;
    // A Content-Length of 10 GB with a few bytes behind it: refused at once.
    let head = format!(
        "POST /v1/rooms/{room}/messages HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n",
        bob.token
    );
    let started = Instant::now();
    let (status, response) = raw(&server, &head, b"{\"type\":").await;
    assert_eq!(status, 413, "{response}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // Chunked, with no length, just past the limit (all of it read before the answer).
    let head = format!(
        "POST /v1/rooms/{room}/messages HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
        bob.token
    );
    let chunk = format!("{:x}\r\n{}\r\n", 16 * 1024, " ".repeat(16 * 1024));
    let body = chunk.repeat(4) + "64\r\n" + &" ".repeat(100) + "\r\n0\r\n\r\n";
    let (status, response) = raw(&server, &head, body.as_bytes()).await;
    assert_eq!(status, 413, "{response}");
    // A 1 MB header.
    let response = http()
        .get(server.url(&format!("/v1/rooms/{room}/messages?wait=0")))
        .header("authorization", format!("Bearer {}", "A".repeat(1 << 20)))
        .send()
        .await;
    if let Ok(response) = response {
        client_error(response).await;
    }
    // A batch of 50 that fits in 64 KiB is fine; the server still serves.
    let batch: Vec<Value> = (0..50)
        .map(|i| json!({"type": "message", "data": "x".repeat(1200), "id": format!("c-{i}")}))
        .collect();
    bob.send(json!({ "messages": batch })).await;
}

/// Polls `peer` until it has `count` messages of type `kind` from `from`, in a bounded
/// number of polls; returns their data in arrival order.
async fn messages_from(peer: &mut Peer, kind: &str, from: &str, count: usize) -> Vec<Value> {
    let mut data = Vec::new();
    for _ in 0..30 {
        for message in peer.poll(1).await {
            if message["type"] == kind && message["from"] == from {
                data.push(message["data"].clone());
            }
        }
        if data.len() >= count {
            break;
        }
    }
    data
}

#[tokio::test]
async fn a_flooder_is_limited_while_everyone_else_keeps_talking() {
    let server = Server::start_with(&[("SIGNALPOST_RATE_LIMIT", "20")]);
    let (room_a, room_b) = (room(), room());
    let flooder = join(&server, &room_a, "flooder").await;
    let good = join(&server, &room_a, "good").await;
    let mut listener = join(&server, &room_a, "listener").await;
    let xavier = join(&server, &room_b, "xavier").await;
    let mut yvonne = join(&server, &room_b, "yvonne").await;

    let flood = {
        let to = listener.id.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let mut accepted = Vec::new();
            let mut limited = 0;
            for i in 0..80 {
                let response = flooder
                    .post(&json!({"to": to, "type": "candidate", "data": candidate(i)}))
                    .await;
                match response.status().as_u16() {
                    202 => accepted.push(i),
                    429 => {
                        let retry_after: u64 = response.headers()["retry-after"]
                            .to_str()
                            .expect("text")
                            .parse()
                            .expect("seconds");
                        assert!((1..=10).contains(&retry_after), "{retry_after}");
                        assert_problem(response, 429, "rate-limited").await;
                        limited += 1;
                    }
                    other => panic!("flooder got {other}"),
                }
            }
            (flooder, accepted, limited, started.elapsed())
        })
    };
    // Meanwhile a well-behaved peer in the same room, and a pair in another room, send 15
    // messages each, a little apart: all accepted.
    let talk = |peer: &Peer, to: String, tag: &'static str| {
        let (http, token, url) = (
            http(),
            peer.token.clone(),
            server.url(&format!("/v1/rooms/{}/messages", peer.room)),
        );
        async move {
            for i in 0..15 {
                let response = http
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&json!({"to": to, "type": "message", "data": format!("{tag}{i}")}))
                    .send()
                    .await
                    .expect("request");
                assert_eq!(response.status(), 202, "{tag}{i}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    tokio::join!(
        talk(&good, listener.id.clone(), "g"),
        talk(&xavier, yvonne.id.clone(), "x"),
    );
    let (flooder, accepted, limited, took) = flood.await.expect("flood finished");
    // 80 posts take well under a second; on a machine slow enough to need the 10 s window,
    // a second window may have let up to 20 more through.
    if took < Duration::from_secs(10) {
        assert_eq!(accepted.len(), 20, "exactly the limit got through");
        assert_eq!(limited, 60);
    } else {
        assert!(
            (20..=40).contains(&accepted.len()),
            "{accepted:?} in {took:?}"
        );
    }
    assert_eq!(
        accepted[..20],
        (0..20).collect::<Vec<_>>(),
        "the first 20, in order"
    );

    let expected =
        |tag: &str| -> Vec<Value> { (0..15).map(|i| json!(format!("{tag}{i}"))).collect() };
    assert_eq!(
        messages_from(&mut yvonne, "message", &xavier.id, 15).await,
        expected("x")
    );
    assert_eq!(
        messages_from(&mut listener, "message", &good.id, 15).await,
        expected("g")
    );
    listener.cursor = None;
    let flooded = messages_from(&mut listener, "candidate", &flooder.id, accepted.len()).await;
    let sent: Vec<Value> = accepted.iter().map(|&i| candidate(i)).collect();
    assert_eq!(flooded, sent, "the accepted flood arrived once, in order");

    // The window ends: the flooder may post again.
    tokio::time::sleep(Duration::from_secs(10)).await;
    flooder
        .send(json!({"to": listener.id, "type": "bye"}))
        .await;
}

#[tokio::test]
async fn a_full_inbox_is_429_until_its_peer_reads() {
    let server = Server::start_with(&[("SIGNALPOST_MAX_INBOX", "10")]);
    let room = room();
    let mut alice = join(&server, &room, "alice").await;
    let bob = join(&server, &room, "bob").await;
    let carol = join(&server, &room, "carol").await;
    // Alice's inbox already holds two peer-joined messages.
    let mut accepted = 0;
    let problem = loop {
        let response = bob
            .post(&json!({"to": alice.id, "type": "offer", "data": description("offer")}))
            .await;
        if response.status() == 202 {
            accepted += 1;
            assert!(accepted <= 10, "the inbox limit never applied");
            continue;
        }
        let retry_after = response.headers().get("retry-after").cloned();
        let problem = assert_problem(response, 429, "rate-limited").await;
        assert!(retry_after.is_some());
        break problem;
    };
    assert_eq!(accepted, 8, "10 minus the two announcements");
    assert!(
        problem["detail"].as_str().unwrap_or("").contains("inbox"),
        "{problem}"
    );
    // Another sender cannot reach the full inbox either, but Bob's own inbox is open.
    let response = carol
        .post(&json!({"to": alice.id, "type": "message"}))
        .await;
    assert_problem(response, 429, "rate-limited").await;
    carol
        .send(json!({"to": bob.id, "type": "message", "data": "to bob"}))
        .await;
    // Alice reads; polling on from her cursor acknowledges, which frees the inbox.
    assert_eq!(alice.poll(0).await.len(), 10);
    assert!(alice.poll(0).await.is_empty());
    bob.send(json!({"to": alice.id, "type": "message", "data": "room again"}))
        .await;
}

#[tokio::test]
async fn secrets_never_reach_the_logs() {
    const TURN_SECRET: &str = "turn-shared-secret-for-the-log-test";
    let server = Server::start_capturing_logs(&[
        ("RUST_LOG", "debug"),
        ("SIGNALPOST_GATED", "true"),
        ("SIGNALPOST_TURN_URLS", "turn:turn.example.org:3478"),
        ("SIGNALPOST_TURN_SECRET", TURN_SECRET),
    ]);
    let room = room();
    let keys = TokenKeys::new(SECRET.as_bytes());
    let join_token = keys.issue_join(
        &RoomId::parse(&room).expect("valid"),
        now_millis() / 1000 + 600,
    );
    let client = http();
    let mut tokens = vec![join_token.clone()];
    let mut peers = Vec::new();
    for name in ["alice", "bob"] {
        let response = client
            .post(server.url(&format!("/v1/rooms/{room}/peers")))
            .json(&json!({"name": name, "joinToken": join_token}))
            .send()
            .await
            .expect("join");
        assert_eq!(response.status(), 201);
        let joined: Value = response.json().await.expect("json");
        tokens.push(joined["token"].as_str().expect("token").to_owned());
        let credential = joined["iceServers"][0]["credential"]
            .as_str()
            .expect("a TURN credential")
            .to_owned();
        tokens.push(credential);
        peers.push(joined);
    }
    let (alice, bob) = (&peers[0], &peers[1]);
    let (alice_token, bob_token) = (
        alice["token"].as_str().expect("token"),
        bob["token"].as_str().expect("token"),
    );
    let messages = server.url(&format!("/v1/rooms/{room}/messages"));
    client
        .post(&messages)
        .bearer_auth(bob_token)
        .json(&json!({"to": alice["peer"], "type": "offer", "data": description("offer")}))
        .send()
        .await
        .expect("post");
    client
        .get(format!("{messages}?wait=0"))
        .bearer_auth(alice_token)
        .send()
        .await
        .expect("poll");
    client
        .get(server.url("/v1/ice-servers"))
        .bearer_auth(alice_token)
        .send()
        .await
        .expect("ice servers");
    // Refused tokens are not logged either.
    let forged = format!("{alice_token}tampered");
    client
        .get(format!("{messages}?wait=0"))
        .bearer_auth(&forged)
        .send()
        .await
        .expect("poll");
    tokens.push(forged);
    client
        .post(server.url(&format!(
            "/v1/rooms/{room}/peers/{}/leave",
            bob["peer"].as_str().expect("peer")
        )))
        .header("content-type", "text/plain")
        .body(json!({ "token": bob_token }).to_string())
        .send()
        .await
        .expect("beacon");
    client
        .delete(server.url(&format!(
            "/v1/rooms/{room}/peers/{}",
            alice["peer"].as_str().expect("peer")
        )))
        .bearer_auth(alice_token)
        .send()
        .await
        .expect("leave");

    tokio::time::sleep(Duration::from_millis(300)).await;
    // Under watch these are the logs of every function process (tests/support/watch.rs).
    let logs = server.logs();
    assert!(
        logs.lines().count() > 3 && logs.contains(&room),
        "debug logging is on and the requests are logged, so there is something to check: {logs}"
    );
    if crate::support::watch::enabled() {
        for function in ["join", "post", "poll", "leave", "ice-servers"] {
            assert!(
                logs.contains(&format!("function=\"{function}\"")),
                "the {function} function's output is among the logs checked:\n{logs}"
            );
        }
    }
    // One request log line per request, naming its route by template (issue 13).
    for route in [
        "POST /v1/rooms/:room/peers",
        "POST /v1/rooms/:room/messages",
        "GET /v1/rooms/:room/messages",
        "GET /v1/ice-servers",
        "POST /v1/rooms/:room/peers/:peer/leave",
        "DELETE /v1/rooms/:room/peers/:peer",
    ] {
        assert!(
            logs.lines()
                .any(|line| line.contains("request_id") && line.contains(route)),
            "no request log line for {route}:\n{logs}"
        );
    }
    for secret in [SECRET, TURN_SECRET] {
        assert!(!logs.contains(secret), "a secret is in the logs:\n{logs}");
    }
    for token in &tokens {
        assert!(
            !logs.contains(token.as_str()),
            "{token} is in the logs:\n{logs}"
        );
        // Not even the signature part of one.
        if let Some(signature) = token.rsplit('.').next().filter(|part| part.len() > 20) {
            assert!(
                !logs.contains(signature),
                "a signature is in the logs:\n{logs}"
            );
        }
    }
}

#[tokio::test]
async fn slow_headers_lose_their_connection() {
    // Raw TCP against the standalone server's own HTTP handling; under watch (and on AWS)
    // the platform's front server parses requests.
    if crate::support::standalone_only("raw TCP requests") {
        return;
    }
    let server = Server::start();
    let mut stream = connect_raw(&server).await;
    stream
        .write_all(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .expect("writes");
    let started = Instant::now();
    let (mut reader, mut writer) = tokio::io::split(stream);
    let trickle = tokio::spawn(async move {
        for _ in 0..60 {
            tokio::time::sleep(Duration::from_secs(2)).await;
            if writer.write_all(b"a").await.is_err() {
                break;
            }
        }
    });
    // The server keeps answering others meanwhile.
    let health = http()
        .get(server.url("/v1/health"))
        .send()
        .await
        .expect("request");
    assert_eq!(health.status(), 200);
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(45), reader.read_to_end(&mut response))
        .await
        .expect("the server closed the connection");
    let elapsed = started.elapsed();
    trickle.abort();
    assert!(
        elapsed >= Duration::from_secs(25) && elapsed < Duration::from_secs(40),
        "closed after {elapsed:?}"
    );
    let response = String::from_utf8_lossy(&response);
    assert!(
        !response.contains("200 OK"),
        "the request never completed: {response}"
    );
}

#[tokio::test]
async fn arrays_never_pass_for_objects() {
    // serde reads a struct from a JSON array of its fields, so each object the contract names
    // is checked to be one.
    let server = Server::start();
    let room = room();
    let alice = join(&server, &room, "alice").await;
    let mut bob = join(&server, &room, "bob").await;
    for body in [
        json!({"to": bob.id, "type": "candidate", "data": ["candidate:1 1 udp 1 127.0.0.1 9 typ host"]}),
        json!({"to": bob.id, "type": "offer", "data": ["offer", "v=0\r\n"]}),
        json!({"to": bob.id, "type": "answer", "data": ["answer", "v=0\r\n"]}),
        json!({"messages": [[bob.id, "message"]]}),
    ] {
        assert_problem(alice.post(&body).await, 400, "invalid-request").await;
    }
    let response = http()
        .post(server.url(&format!("/v1/rooms/{room}/peers/{}/leave", alice.id)))
        .header("content-type", "text/plain")
        .body(json!([alice.token]).to_string())
        .send()
        .await
        .expect("request");
    assert_problem(response, 400, "invalid-request").await;
    let held = bob.poll(0).await;
    assert!(
        held.iter().all(|message| message["type"] == "peer-joined"),
        "nothing was delivered and alice did not leave: {held:?}"
    );
}
