//! Abuse limits found by a hostile review (issue 15): clients that never read their poll
//! responses, join/leave cycling, forged cursors, concurrent polls of one peer, and tokens that
//! outlive their membership. Each test failed before its limit existed.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::support::{Server, assert_problem, http, join, room, standalone_only};

/// An offer just under the contract's 32 KiB, the largest message data.
fn large_offer() -> Value {
    let sdp = format!("v=0\r\na={}\r\n", "x".repeat(32_000));
    json!({"type": "offer", "sdp": sdp})
}

/// Fills `to`'s inbox with 100 offers of 32 KiB from `from`.
async fn fill_with_large_messages(from: &crate::support::Peer, to: &str) {
    let data = large_offer();
    let mut slowest = Duration::ZERO;
    for _ in 0..100 {
        let started = Instant::now();
        from.send(json!({"to": to, "type": "offer", "data": data}))
            .await;
        slowest = slowest.max(started.elapsed());
    }
    eprintln!("the slowest of 100 posts of 32 KiB took {slowest:?}");
}

/// A connection from the loopback address `127.0.0.<host>`, so one test can act as many
/// clients (Linux routes all of 127/8 to loopback).
async fn connect_from(server: &Server, host: u8) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, host)),
        0,
    ))?;
    socket
        .connect(server.address().parse().expect("a socket address"))
        .await
}

/// The server's resident memory, from /proc.
fn resident_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .expect("VmRSS");
    kib * 1024
}

/// Sends `request`, again while it is answered `503` (within a minute); returns the JSON body
/// of the success.
async fn call(request: reqwest::RequestBuilder) -> Value {
    let started = Instant::now();
    loop {
        let response = request
            .try_clone()
            .expect("a cloneable request")
            .send()
            .await
            .expect("request");
        if response.status() != 503 || started.elapsed() > Duration::from_secs(60) {
            assert!(
                response.status().is_success(),
                "{}: {:?}",
                response.status(),
                response.text().await
            );
            return response.json().await.expect("json");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A poll response carries at most about 256 KiB; the rest comes with the next polls, in
/// order and complete.
#[tokio::test]
async fn a_poll_response_has_a_byte_budget_and_the_rest_follows() {
    let server = Server::start_with(&[("SIGNALPOST_RATE_LIMIT", "1000")]);
    let room = room();
    let mut reader = join(&server, &room, "reader").await;
    let writer = join(&server, &room, "writer").await;
    reader.collect("peer-joined", 1).await;
    let filling = Instant::now();
    fill_with_large_messages(&writer, &reader.id).await;
    eprintln!("100 posts of 32 KiB took {:?}", filling.elapsed());
    let mut received = 0;
    let mut polls = 0;
    while received < 100 {
        let polling = Instant::now();
        let response = reader
            .poll_raw(&format!(
                "wait=0&after={}",
                reader.cursor.as_deref().expect("a cursor")
            ))
            .await;
        let status = response.status();
        let body = response.bytes().await.expect("body");
        eprintln!(
            "poll {polls}: {status}, {} bytes in {:?}",
            body.len(),
            polling.elapsed()
        );
        assert_eq!(
            status,
            200,
            "poll {polls} after {received} messages: {}\nserver log:\n{}",
            String::from_utf8_lossy(&body),
            server.logs()
        );
        assert!(
            body.len() <= 256 * 1024 + 64 * 1024,
            "one poll response is {} bytes",
            body.len()
        );
        let body: Value = serde_json::from_slice(&body).expect("json");
        let messages = body["messages"].as_array().expect("messages");
        assert!(
            !messages.is_empty(),
            "a poll with messages waiting returned none"
        );
        received += messages.len();
        reader.cursor = Some(body["cursor"].as_str().expect("cursor").to_owned());
        polls += 1;
    }
    assert_eq!(received, 100, "nothing lost, nothing repeated");
    assert!(polls >= 10, "100 messages of 32 KiB came in {polls} polls");
}

/// Hundreds of connections that ask for a large poll response and never read it: memory stays
/// bounded, a normal peer is served meanwhile, and the unread responses are cut off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_read_cannot_exhaust_memory() {
    if standalone_only("connection handling is the standalone server's") {
        return;
    }
    /// Non-reading connections, spread over a few addresses (each under the per-address cap).
    const CONNECTIONS: usize = 200;
    const ADDRESSES: usize = 4;
    /// Growth allowed while they are held. Measured on a debug build: 25 MB before, about
    /// 45 MB while held; without the byte budget (responses of 100 offers of 32 KiB, 3.2 MB)
    /// 26 MB grew to 270 MB, the rest of those responses sitting in kernel socket buffers.
    const GROWTH_BOUND: u64 = 100 * 1024 * 1024;
    let server = Server::start_with(&[("SIGNALPOST_RATE_LIMIT", "1000")]);
    let room = room();
    let victim = join(&server, &room, "victim").await;
    let writer = join(&server, &room, "writer").await;
    fill_with_large_messages(&writer, &victim.id).await;
    let before = resident_bytes(server.pid());

    let request = format!(
        "GET /v1/rooms/{room}/messages?wait=0 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
        victim.token
    );
    let mut held = Vec::new();
    for index in 0..CONNECTIONS {
        let host = 2 + u8::try_from(index % ADDRESSES).expect("small");
        let mut stream = connect_from(&server, host).await.expect("connects");
        stream.write_all(request.as_bytes()).await.expect("writes");
        held.push(stream);
    }
    // Let every response be produced and stall.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let during = resident_bytes(server.pid());
    eprintln!(
        "{CONNECTIONS} unread poll responses: server RSS {} MB before, {} MB while held",
        before / 1_000_000,
        during / 1_000_000
    );

    // Meanwhile a normal peer in another room goes through: a call between two peers, each
    // request retried on 503 as the contract asks (a local DynamoDB server that answers one
    // request at a time is busy with the held polls' reads for a while).
    let other = crate::support::room();
    let joins = server.url(&format!("/v1/rooms/{other}/peers"));
    let alice = call(http().post(&joins).json(&json!({"name": "alice"}))).await;
    let bob = call(http().post(&joins).json(&json!({"name": "bob"}))).await;
    let messages = server.url(&format!("/v1/rooms/{other}/messages"));
    let bearer = |peer: &Value| peer["token"].as_str().expect("token").to_owned();
    call(
        http()
            .post(&messages)
            .bearer_auth(bearer(&bob))
            .json(&json!({"to": alice["peer"], "type": "message", "data": "hello"})),
    )
    .await;
    let polled = call(
        http()
            .get(format!("{messages}?wait=5&after=1.0"))
            .bearer_auth(bearer(&alice)),
    )
    .await;
    assert_eq!(polled["messages"][0]["data"], "hello", "{polled}");
    assert!(
        during.saturating_sub(before) < GROWTH_BOUND,
        "{CONNECTIONS} unread responses grew the server from {} MB to {} MB",
        before / 1_000_000,
        during / 1_000_000
    );

    drop(held);

    // The write deadline: a connection that pipelines more responses than the network buffers
    // hold, and reads none, is closed once its response has waited WRITE_DEADLINE (20 s);
    // without it, the server would wait for the reader as long as the reader likes.
    // Each asks for the last 11 offers only (still a full 256 KiB response), so that the
    // responses come quickly on every store.
    let near_the_end = request.replace("?wait=0", "?wait=0&after=90.0");
    let mut stream = connect_from(&server, 2).await.expect("connects");
    stream
        .write_all(near_the_end.repeat(40).as_bytes())
        .await
        .expect("writes");
    tokio::time::sleep(Duration::from_secs(30)).await;
    let mut response = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response));
    // Ok(Ok) is a close, Ok(Err) a reset (the server closed with requests unread): both end it.
    assert!(
        read.await.is_ok(),
        "a connection with unread responses was still open after the write deadline"
    );
    let answered = String::from_utf8_lossy(&response)
        .matches("HTTP/1.1 200")
        .count();
    assert!(answered < 40, "all 40 responses were written: {answered}");
}

/// One address cannot hold more than its share of connections; others are still served.
#[tokio::test]
async fn connections_are_capped_per_client_address() {
    if standalone_only("connection handling is the standalone server's") {
        return;
    }
    let server = Server::start_with(&[("SIGNALPOST_MAX_CLIENT_CONNECTIONS", "20")]);
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(connect_from(&server, 9).await.expect("connects"));
    }
    // Accepted only to be closed: the read ends at once, with nothing.
    let mut refused = connect_from(&server, 9).await.expect("connects");
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), refused.read(&mut byte)).await;
    assert!(
        matches!(read, Ok(Ok(0) | Err(_))),
        "the 21st connection of one address stayed open: {read:?}"
    );
    let response = http()
        .get(server.url("/v1/health"))
        .send()
        .await
        .expect("another address is served");
    assert_eq!(response.status(), 200);
    drop(held);
}

/// Join/leave cycling in one room is cut off with 429: it can neither flood a member's inbox
/// with peer-joined/peer-left nor earn fresh post budgets beyond one per window.
#[tokio::test]
async fn join_leave_cycling_is_limited_per_room() {
    // The per-room join limit is kept in the store, so it holds under watch too, where the
    // joins spread over several `join` processes.
    let server = Server::start_with(&[
        ("SIGNALPOST_MAX_PEERS", "2"),
        ("SIGNALPOST_JOIN_LIMIT", "100000"),
    ]);
    let room = room();
    let victim = join(&server, &room, "victim").await;
    let client = http();
    let url = server.url(&format!("/v1/rooms/{room}/peers"));
    let mut accepted_posts = 0;
    let mut refused = None;
    let started = Instant::now();
    for _ in 0..30 {
        let response = client
            .post(&url)
            .json(&json!({}))
            .send()
            .await
            .expect("join");
        if response.status() == 429 {
            refused = Some(response);
            break;
        }
        assert_eq!(response.status(), 201);
        let joined: Value = response.json().await.expect("json");
        let token = joined["token"].as_str().expect("token");
        for _ in 0..150 {
            let response = client
                .post(server.url(&format!("/v1/rooms/{room}/messages")))
                .bearer_auth(token)
                .json(&json!({"to": victim.id, "type": "message"}))
                .send()
                .await
                .expect("post");
            if response.status() != 202 {
                break;
            }
            accepted_posts += 1;
        }
        let response = client
            .delete(format!("{url}/{}", joined["peer"].as_str().expect("peer")))
            .bearer_auth(token)
            .send()
            .await
            .expect("leave");
        assert_eq!(response.status(), 204);
    }
    let refused = refused.expect("30 join/leave cycles in a room of 2 were all admitted");
    let problem = assert_problem(refused, 429, "rate-limited").await;
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|detail| detail.contains("room")),
        "{problem}"
    );
    // A room of 2 admits 4 joins at once (the victim's among them), and each rejoin continues
    // the count of the member that left: one post budget per 10 s window in all. A fast run
    // (standalone) stays in one window; a slow one (under watch on a busy machine, where 100
    // posts can outlast a window) has earned one more budget per window it spanned, as the
    // flood limit allows any peer.
    let windows = started.elapsed().as_secs() / 10 + 1;
    assert!(
        accepted_posts <= 100 * windows,
        "rejoining handed out {accepted_posts} posts in {windows} window(s) of 10 s"
    );
    // The victim, and later joins, are not locked out of other rooms.
    join(&server, &crate::support::room(), "elsewhere").await;
}

/// Leaving and joining again does not earn a fresh post budget: join, post up to the limit,
/// leave, rejoin, post: 429 within the same window, in every deployment.
#[tokio::test]
async fn rejoining_does_not_reset_the_post_limit() {
    // A budget of 20 keeps the whole sequence well inside one 10 s window even on a busy
    // machine: with the default 100, CI once spent over 10 s on the posts (DynamoDB on moto,
    // two cores), the window closed, and the rejoin rightly started a fresh one.
    const BUDGET: usize = 20;
    let server = Server::start_with(&[("SIGNALPOST_RATE_LIMIT", "20")]);
    let room = room();
    let victim = join(&server, &room, "victim").await;
    let client = http();
    let post = |token: String| {
        let request = client
            .post(server.url(&format!("/v1/rooms/{room}/messages")))
            .bearer_auth(token)
            .json(&json!({"to": victim.id, "type": "message"}));
        async move { request.send().await.expect("post") }
    };
    let flooder = join(&server, &room, "flooder").await;
    for index in 0..BUDGET {
        let response = post(flooder.token.clone()).await;
        assert_eq!(response.status(), 202, "post {index} within the limit");
    }
    let response = client
        .delete(server.url(&format!("/v1/rooms/{room}/peers/{}", flooder.id)))
        .bearer_auth(&flooder.token)
        .send()
        .await
        .expect("leave");
    assert_eq!(response.status(), 204);
    let again = join(&server, &room, "flooder").await;
    let refused = post(again.token.clone()).await;
    let retry_after: u64 = refused
        .headers()
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0);
    let problem = assert_problem(refused, 429, "rate-limited").await;
    assert!(
        (1..=10).contains(&retry_after),
        "Retry-After {retry_after}: {problem}"
    );
}

/// One address cannot join rooms without limit (SIGNALPOST_JOIN_LIMIT a minute).
#[tokio::test]
async fn joins_are_limited_per_client_address() {
    if standalone_only("the client address is the standalone server's to see") {
        return;
    }
    let server = Server::start_with(&[("SIGNALPOST_JOIN_LIMIT", "5")]);
    for _ in 0..5 {
        join(&server, &room(), "ok").await;
    }
    let response = http()
        .post(server.url(&format!("/v1/rooms/{}/peers", room())))
        .send()
        .await
        .expect("join");
    assert_limited_per_address(response, "joins").await;
}

/// With SIGNALPOST_TRUST_PROXY the address is the proxy's last X-Forwarded-For entry.
#[tokio::test]
async fn behind_a_proxy_joins_are_limited_per_forwarded_address() {
    if standalone_only("the client address is the standalone server's to see") {
        return;
    }
    let server = Server::start_with(&[
        ("SIGNALPOST_JOIN_LIMIT", "2"),
        ("SIGNALPOST_TRUST_PROXY", "true"),
    ]);
    let join_as = |forwarded: &'static str| {
        let url = server.url(&format!("/v1/rooms/{}/peers", room()));
        async move {
            http()
                .post(url)
                .header("x-forwarded-for", forwarded)
                .send()
                .await
                .expect("join")
                .status()
                .as_u16()
        }
    };
    // The first entry is the client's to invent; the last is what the proxy saw.
    assert_eq!(join_as("1.1.1.1, 203.0.113.7").await, 201);
    assert_eq!(join_as("2.2.2.2, 203.0.113.7").await, 201);
    assert_eq!(join_as("3.3.3.3, 203.0.113.7").await, 429);
    assert_eq!(join_as("203.0.113.8").await, 201);
}

/// An HTTP client whose connections come from the loopback address `127.0.0.<host>`.
fn http_from(host: u8) -> reqwest::Client {
    crate::support::http_builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, host)))
        .build()
        .expect("HTTP client")
}

/// Sends `request` until it is refused; returns the refusal and how many went through.
async fn until_refused(request: impl Fn() -> reqwest::RequestBuilder) -> (reqwest::Response, u32) {
    for accepted in 0..500 {
        let response = request().send().await.expect("request");
        if response.status() == 429 {
            return (response, accepted);
        }
    }
    panic!("500 requests from one address were all admitted");
}

/// Asserts a per-address refusal: `429`, a `Retry-After`, and a problem naming the address.
async fn assert_limited_per_address(response: reqwest::Response, what: &str) {
    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
        .expect("a Retry-After in seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let problem = assert_problem(response, 429, "rate-limited").await;
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(what) && detail.contains("address"),
        "{problem}"
    );
}

/// One address floods joins, polls and posts and is cut off with `429`; meanwhile a call
/// between two peers on another address (127.0.0.2) negotiates and loses nothing.
#[tokio::test]
async fn a_flooding_address_is_limited_while_another_keeps_its_call() {
    if standalone_only("per-client limits are the standalone server's") {
        return;
    }
    let server = Server::start_with(&[
        ("SIGNALPOST_JOIN_LIMIT", "20"),
        ("SIGNALPOST_POLL_LIMIT", "40"),
        ("SIGNALPOST_POST_LIMIT", "40"),
    ]);
    assert!(
        server.address().starts_with("127.0.0.1:"),
        "the server listens on 127.0.0.1"
    );
    let caller = http_from(2);
    let room = room();
    let joins = server.url(&format!("/v1/rooms/{room}/peers"));
    let messages = server.url(&format!("/v1/rooms/{room}/messages"));
    let join_as = |name: &str| caller.post(&joins).json(&json!({"name": name})).send();
    let alice: Value = join_as("alice")
        .await
        .expect("join")
        .json()
        .await
        .expect("json");
    let bob: Value = join_as("bob")
        .await
        .expect("join")
        .json()
        .await
        .expect("json");
    let token = |peer: &Value| peer["token"].as_str().expect("token").to_owned();
    let id = |peer: &Value| peer["peer"].as_str().expect("peer").to_owned();

    // The flood, from 127.0.0.1: a member of the call's room, then joins to fresh rooms, polls
    // and posts.
    let flooding = join(&server, &room, "flooder").await;
    let flooder = http();
    let (refused, _) = until_refused(|| {
        flooder.post(server.url(&format!("/v1/rooms/{}/peers", crate::support::room())))
    })
    .await;
    assert_limited_per_address(refused, "joins").await;
    let (refused, _) = until_refused(|| {
        flooder
            .get(format!("{messages}?wait=0"))
            .bearer_auth(&flooding.token)
    })
    .await;
    assert_limited_per_address(refused, "polls").await;
    let (refused, accepted) = until_refused(|| {
        flooder
            .post(&messages)
            .bearer_auth(&flooding.token)
            .json(&json!({"to": id(&alice), "type": "message", "data": "spam"}))
    })
    .await;
    assert_limited_per_address(refused, "posts").await;
    assert!(accepted <= 40, "{accepted} posts before the limit");

    // The call from 127.0.0.2 goes on: offer and candidates one way, answer and candidates
    // back, every message delivered in order.
    let send = |from: &Value, to: &Value, kind: &str, data: Value| {
        caller
            .post(&messages)
            .bearer_auth(token(from))
            .json(&json!({"to": id(to), "type": kind, "data": data}))
            .send()
    };
    // What `peer` receives from `sender`, in order (the flooder's spam aside).
    let receive = |peer: Value, sender: String, kinds: Vec<&'static str>| {
        let caller = caller.clone();
        let messages = messages.clone();
        async move {
            let mut cursor: Option<String> = None;
            let mut seen = Vec::new();
            for _ in 0..20 {
                let after = cursor
                    .as_ref()
                    .map(|c| format!("&after={c}"))
                    .unwrap_or_default();
                let response = caller
                    .get(format!("{messages}?wait=2{after}"))
                    .bearer_auth(token(&peer))
                    .send()
                    .await
                    .expect("poll");
                assert_eq!(response.status(), 200, "{:?}", response.text().await);
                let body: Value = response.json().await.expect("json");
                cursor = body["cursor"].as_str().map(str::to_owned);
                seen.extend(
                    body["messages"]
                        .as_array()
                        .expect("messages")
                        .iter()
                        .filter(|m| m["from"] == sender.as_str() && m["type"] != "peer-joined")
                        .map(|m| m["type"].as_str().expect("type").to_owned()),
                );
                if seen.len() >= kinds.len() {
                    break;
                }
            }
            assert_eq!(seen, kinds, "what {} received", peer["peer"]);
        }
    };
    for (from, to, description) in [(&alice, &bob, "offer"), (&bob, &alice, "answer")] {
        let mut sent = vec![(description, crate::support::description(description))];
        sent.extend((0..5).map(|n| ("candidate", crate::support::candidate(n))));
        for (kind, data) in &sent {
            let status = send(from, to, kind, data.clone())
                .await
                .expect("send")
                .status();
            assert_eq!(status, 202, "{kind}");
        }
        let kinds = sent.iter().map(|(kind, _)| *kind).collect();
        receive(to.clone(), id(from), kinds).await;
    }
}

/// `X-Forwarded-For` counts only from a proxy `SIGNALPOST_TRUST_PROXY` names: from any other
/// address it is ignored (each forged value would otherwise be a fresh budget).
#[tokio::test]
async fn forwarded_addresses_are_believed_only_from_named_proxies() {
    if standalone_only("the client address is the standalone server's to see") {
        return;
    }
    let server = Server::start_with(&[
        ("SIGNALPOST_JOIN_LIMIT", "2"),
        ("SIGNALPOST_TRUST_PROXY", "127.0.0.3, 10.0.0.0/8"),
    ]);
    let join_via = |host: u8, forwarded: String| {
        let url = server.url(&format!("/v1/rooms/{}/peers", room()));
        async move {
            http_from(host)
                .post(url)
                .header("x-forwarded-for", forwarded)
                .send()
                .await
                .expect("join")
                .status()
                .as_u16()
        }
    };
    // 127.0.0.2 is no proxy: a new forged address each time changes nothing.
    for (n, expected) in [(1, 201), (2, 201), (3, 429)] {
        assert_eq!(join_via(2, format!("198.51.100.{n}")).await, expected);
    }
    // Through the named proxy (and a proxy of its network behind it), the client is the
    // first address from the right that no trusted proxy holds; the forged entry left of it
    // is ignored.
    assert_eq!(
        join_via(3, "1.1.1.1, 203.0.113.7, 10.1.2.3".into()).await,
        201
    );
    assert_eq!(join_via(3, "2.2.2.2, 203.0.113.7".into()).await, 201);
    assert_eq!(
        join_via(3, "3.3.3.3, 203.0.113.7, 10.9.9.9".into()).await,
        429
    );
    assert_eq!(join_via(3, "203.0.113.8".into()).await, 201);
}

/// A forged cursor cannot claim activity in the future: the server answers with what it
/// believes, never later than now.
#[tokio::test]
async fn a_forged_cursor_activity_is_clamped_to_now() {
    let server = Server::start();
    let mut alice = join(&server, &room(), "alice").await;
    let body: Value = alice
        .poll_raw("wait=0&after=0.9000000000000000")
        .await
        .json()
        .await
        .expect("json");
    let cursor = body["cursor"].as_str().expect("cursor");
    let activity: i64 = cursor
        .split_once('.')
        .and_then(|(_, activity)| activity.parse().ok())
        .expect("seq.activity");
    let now = signalpost_shared::clock::now_millis();
    assert!(
        activity <= now,
        "the cursor kept the forged activity: {cursor}"
    );
    alice.cursor = Some(cursor.to_owned());
    alice.poll(0).await;
}

/// A peer has one waiting poll: a newer one ends the older with an empty response at once.
#[tokio::test]
async fn a_newer_poll_ends_the_older_one_of_the_same_peer() {
    // Under watch the two polls land on different function instances (processes): the newer
    // one ends the older through its doorbell.
    let server = Server::start();
    let room = room();
    let alice = join(&server, &room, "alice").await;
    let bob = join(&server, &room, "bob").await;
    let first = tokio::spawn({
        let url = server.url(&format!("/v1/rooms/{room}/messages?wait=10&after=0.1"));
        let token = bob.token.clone();
        async move {
            let started = Instant::now();
            let response = http()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("poll");
            (
                response.status(),
                response.json::<Value>().await.expect("json"),
                started.elapsed(),
            )
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = tokio::spawn({
        let url = server.url(&format!("/v1/rooms/{room}/messages?wait=10&after=0.1"));
        let token = bob.token.clone();
        async move {
            http()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("poll")
        }
    });
    let (status, body, took) = first.await.expect("first poll");
    assert_eq!(status, 200);
    assert_eq!(body["messages"], json!([]));
    assert!(
        took < Duration::from_secs(5),
        "the older poll waited {took:?}"
    );
    // The newer one still waits, and gets what comes.
    alice
        .send(json!({"to": bob.id, "type": "message", "data": "late"}))
        .await;
    let body: Value = second
        .await
        .expect("second poll")
        .json()
        .await
        .expect("json");
    assert_eq!(body["messages"][0]["data"], "late");
}

/// A token outlives its membership; ICE credentials do not: 410 once the peer has left.
#[tokio::test]
async fn ice_servers_refuse_a_peer_that_left() {
    let server = Server::start();
    let alice = join(&server, &room(), "alice").await;
    let ask = || {
        http()
            .get(server.url("/v1/ice-servers"))
            .bearer_auth(&alice.token)
            .send()
    };
    assert_eq!(ask().await.expect("request").status(), 200);
    alice.leave().await;
    assert_problem(ask().await.expect("request"), 410, "peer-gone").await;
}
