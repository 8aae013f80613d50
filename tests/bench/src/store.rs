//! The embedded store over time: how long requests stall while housekeeping deletes millions
//! of expired rows, and how large the files grow over a long run with accelerated TTLs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::latency::{Peer, join};
use crate::server::Target;

/// Bytes of `data` in each filler row: a typical ICE candidate.
const FILLER_DATA: usize = 120;

fn file_bytes(database: &Path) -> u64 {
    ["", "-wal", "-shm"]
        .iter()
        .map(|suffix| {
            std::fs::metadata(format!("{}{suffix}", database.display()))
                .map_or(0, |meta| meta.len())
        })
        .sum()
}

fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1_000_000.0)
}

fn expired_rows(database: &Path) -> i64 {
    rusqlite::Connection::open_with_flags(database, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|connection| {
            connection.query_row(
                "SELECT COUNT(*) FROM messages WHERE expires_at <= 1",
                [],
                |row| row.get(0),
            )
        })
        .unwrap_or(-1)
}

/// Creates the schema (as the server would) and fills it with `rows` messages that expired
/// long ago, in one transaction.
fn prefill(database: &Path, rows: u64) {
    drop(
        signalpost_shared::store::sqlite::SqliteStore::open(database)
            .expect("the store creates its file"),
    );
    let mut connection = rusqlite::Connection::open(database).expect("opens");
    let transaction = connection.transaction().expect("begins");
    {
        let mut insert = transaction
            .prepare(
                "INSERT INTO messages (room, recipient, seq, id, sender, kind, data, sent_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'candidate', ?6, 0, 1)",
            )
            .expect("prepares");
        let data = format!("\"{}\"", "c".repeat(FILLER_DATA - 2));
        for n in 0..rows {
            // Rooms of two, 1,000 messages per inbox: the shape of real traffic.
            let inbox = n / 1_000;
            insert
                .execute(rusqlite::params![
                    format!("old-room-{}", inbox / 2),
                    format!("old-peer-{inbox}"),
                    (n % 1_000) as i64 + 1,
                    format!("01JOLDMESSAGE{n:013}"),
                    format!("old-peer-{}", inbox ^ 1),
                    data
                ])
                .expect("inserts");
        }
    }
    transaction.commit().expect("commits");
    connection
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .expect("checkpoints");
}

/// Latencies of `wait=0` polls and of posts while housekeeping deletes `rows` expired rows.
pub async fn housekeeping(server_bin: &str, rows: u64) {
    let directory = tempfile::tempdir_in(".").expect("temporary directory");
    let database = directory.path().join("housekeeping.db");
    let started = Instant::now();
    prefill(&database, rows);
    println!(
        "prefilled {rows} expired rows in {:.0} s: files {}",
        started.elapsed().as_secs_f64(),
        megabytes(file_bytes(&database))
    );
    let path = database.to_string_lossy().into_owned();
    // Housekeeping's first round starts as the server starts.
    let server = Target::start(
        server_bin,
        &[
            ("SIGNALPOST_DB", path.as_str()),
            ("SIGNALPOST_RATE_LIMIT", "100000"),
            // The polls here acknowledge nothing (no cursor): room for every post.
            ("SIGNALPOST_MAX_INBOX", "100000"),
        ],
    );
    let started = Instant::now();
    let http = reqwest::Client::new();
    let alice = join(&http, &server.base, "stall").await;
    let bob = join(&http, &server.base, "stall").await;
    let mut polls = Vec::new();
    let mut posts = Vec::new();
    let mut n = 0_u64;
    loop {
        let sent = Instant::now();
        let response = http
            .post(format!("{}/v1/rooms/stall/messages", server.base))
            .bearer_auth(&alice.token)
            .json(&json!({"to": bob.id, "type": "message", "data": n}))
            .send()
            .await
            .expect("post");
        assert!(
            response.status().is_success(),
            "post: {}",
            response.status()
        );
        posts.push(sent.elapsed());
        // Both poll, so that neither times out however long housekeeping takes.
        for peer in [&bob, &alice] {
            let asked = Instant::now();
            let response = http
                .get(format!("{}/v1/rooms/stall/messages?wait=0", server.base))
                .bearer_auth(&peer.token)
                .send()
                .await
                .expect("poll");
            assert!(
                response.status().is_success(),
                "poll: {}",
                response.status()
            );
            polls.push(asked.elapsed());
        }
        n += 1;
        if n.is_multiple_of(50) && expired_rows(&database) == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3_600),
            "housekeeping did not finish in an hour"
        );
    }
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let worst = |times: &mut Vec<Duration>| {
        times.sort();
        let p99 = times[times.len() * 99 / 100];
        (times[times.len() - 1], p99)
    };
    let (poll_max, poll_p99) = worst(&mut polls);
    let (post_max, post_p99) = worst(&mut posts);
    println!(
        "| expired rows | housekeeping took | polls | worst poll | p99 poll | worst post | p99 post | files after |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n| {rows} | {:.1} s | {} | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms | {} |",
        took.as_secs_f64(),
        polls.len(),
        poll_max.as_secs_f64() * 1e3,
        poll_p99.as_secs_f64() * 1e3,
        post_max.as_secs_f64() * 1e3,
        post_p99.as_secs_f64() * 1e3,
        megabytes(file_bytes(&database)),
    );
}

/// A long run at an accelerated clock: `rooms` rooms negotiate over and over (offer, answer,
/// ten candidates each way), half of them leaving and half going silent, with a 10 s message
/// TTL and presence timeout (60× and 6× the defaults). Prints the files' size as it goes.
pub async fn soak(server_bin: &str, minutes: u64, rooms: usize) {
    let directory = tempfile::tempdir_in(".").expect("temporary directory");
    let database: PathBuf = directory.path().join("soak.db");
    let path = database.to_string_lossy().into_owned();
    let server = Arc::new(Target::start(
        server_bin,
        &[
            ("SIGNALPOST_DB", path.as_str()),
            ("SIGNALPOST_MESSAGE_TTL", "10"),
            ("SIGNALPOST_PRESENCE_TIMEOUT", "10"),
            ("SIGNALPOST_MAX_WAIT", "5"),
            ("SIGNALPOST_RATE_LIMIT", "100000"),
        ],
    ));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let stop = Arc::new(AtomicBool::new(false));
    let delivered = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..rooms)
        .map(|r| {
            let (http, base, stop, delivered) = (
                http.clone(),
                server.base.clone(),
                Arc::clone(&stop),
                Arc::clone(&delivered),
            );
            tokio::spawn(async move {
                let mut round = 0_u64;
                while !stop.load(Ordering::Relaxed) {
                    let room = format!("soak-{r}-{round}");
                    let got = negotiate(&http, &base, &room, round.is_multiple_of(2)).await;
                    delivered.fetch_add(got, Ordering::Relaxed);
                    round += 1;
                }
            })
        })
        .collect();
    let started = Instant::now();
    let mut largest = 0;
    println!("| minute | messages delivered | files |\n|---:|---:|---:|");
    for minute in 1..=minutes {
        for _ in 0..6 {
            tokio::time::sleep(Duration::from_secs(10)).await;
            largest = largest.max(file_bytes(&database));
        }
        if minute % 4 == 0 || minute == minutes {
            println!(
                "| {minute} | {} | {} |",
                delivered.load(Ordering::Relaxed),
                megabytes(file_bytes(&database))
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = task.await;
    }
    println!(
        "\n{} s at 60x the default TTL ({:.1} simulated hours): largest {}, at the end {}",
        started.elapsed().as_secs(),
        started.elapsed().as_secs_f64() * 60.0 / 3_600.0,
        megabytes(largest),
        megabytes(file_bytes(&database))
    );
    if let Some(memory) = server.memory() {
        println!("server memory: {memory}");
    }
}

/// One negotiation in a fresh room; returns the messages delivered.
async fn negotiate(http: &reqwest::Client, base: &str, room: &str, leave: bool) -> u64 {
    let alice = join(http, base, room).await;
    let bob = join(http, base, room).await;
    let post = |from: &Peer, to: &Peer, kind: &'static str, data: Value| {
        http.post(format!("{base}/v1/rooms/{room}/messages"))
            .bearer_auth(&from.token)
            .json(&json!({"to": to.id, "type": kind, "data": data}))
            .send()
    };
    let mut delivered = 0;
    let description = |kind: &str| json!({"type": kind, "sdp": "v=0\r\n".repeat(40)});
    let candidate = json!({"candidate": "candidate:1 1 udp 2122260223 192.0.2.1 54321 typ host", "sdpMid": "0", "sdpMLineIndex": 0});
    let _ = post(&alice, &bob, "offer", description("offer")).await;
    let _ = post(&bob, &alice, "answer", description("answer")).await;
    for _ in 0..10 {
        let _ = post(&alice, &bob, "candidate", candidate.clone()).await;
        let _ = post(&bob, &alice, "candidate", candidate.clone()).await;
    }
    for peer in [&alice, &bob] {
        if let Ok(response) = http
            .get(format!("{base}/v1/rooms/{room}/messages?wait=0"))
            .bearer_auth(&peer.token)
            .send()
            .await
            && let Ok(body) = response.json::<Value>().await
        {
            delivered += body["messages"].as_array().map_or(0, Vec::len) as u64;
        }
    }
    if leave {
        for peer in [&alice, &bob] {
            let _ = http
                .delete(format!("{base}/v1/rooms/{room}/peers/{}", peer.id))
                .bearer_auth(&peer.token)
                .send()
                .await;
        }
    }
    delivered
}
