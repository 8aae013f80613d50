//! The reliability tests: the same negotiation load under each kind of trouble.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use signalpost_shared::config::{Config, Deployment};
use signalpost_shared::http::standalone_router;
use signalpost_shared::signalling::Signalling;
use signalpost_shared::store::Store;
use signalpost_shared::store::sqlite::SqliteStore;

use crate::faults::{FaultPlan, FaultyStore, FaultyWakeup, WakeupFault};
use crate::scenario::run_rooms;
use crate::support::{SECRET, Server, Stop};

/// The load here comes from one address, hundreds of peers at once: lift the per-client
/// limits on joins, polls, posts and connections, which are tested in `tests/api/limits.rs`.
const ONE_ADDRESS_LOAD: [(&str, &str); 4] = [
    ("SIGNALPOST_JOIN_LIMIT", "off"),
    ("SIGNALPOST_POLL_LIMIT", "off"),
    ("SIGNALPOST_POST_LIMIT", "off"),
    ("SIGNALPOST_MAX_CLIENT_CONNECTIONS", "100000"),
];

/// The configuration of the in-process servers.
fn test_config() -> Config {
    // The scenario's caller polls only once it has sent everything; on a slow local DynamoDB
    // with injected faults that can take longer than the default 60 s presence timeout.
    let vars: HashMap<&str, &str> = HashMap::from([
        ("SIGNALPOST_SECRET", SECRET),
        ("SIGNALPOST_PRESENCE_TIMEOUT", "600"),
    ]);
    Config::from_lookup(Deployment::Standalone, |name| {
        vars.get(name).map(|value| (*value).to_owned())
    })
    .expect("valid configuration")
}

/// Serves the whole API in this process over `store`, on a free loopback port.
async fn serve_in_process(store: Arc<dyn Store>) -> String {
    let router = standalone_router(Arc::new(Signalling::new(test_config(), store)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, router.into_make_service()).await });
    base
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_negotiations_lose_nothing() {
    let server = Server::start_with(&ONE_ADDRESS_LOAD);
    let outcome = run_rooms(&server.base, 200, 0).await;
    // 200 rooms, each way: offer/answer, 20-40 candidates, 3 app messages, bye.
    assert!(outcome.delivered > 200 * 2 * 25, "{outcome:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_failures_cost_retries_not_messages() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let sqlite = SqliteStore::open(&directory.path().join("faulty.db")).expect("opens");
    let store = Arc::new(FaultyStore::new(
        Arc::new(sqlite),
        FaultPlan {
            fail_before_every: 17,
            fail_after_every: 13,
            stall_every: 101,
        },
    ));
    let base = serve_in_process(Arc::clone(&store) as Arc<dyn Store>).await;
    let outcome = run_rooms(&base, 60, 0).await;
    let injected = store.injected.load(Ordering::Relaxed);
    assert!(injected > 100, "the faults really happened ({injected})");
    assert!(
        outcome.retries > 50,
        "clients saw 503s and retried: {outcome:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_poll_responses_are_replayed_from_the_old_cursor() {
    let server = Server::start_with(&ONE_ADDRESS_LOAD);
    // Every third poll response is thrown away unread.
    run_rooms(&server.base, 60, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_run_loses_nothing_it_accepted() {
    let mut server = Server::start_with(&ONE_ADDRESS_LOAD);
    let base = server.base.clone();
    let load = tokio::spawn(async move { run_rooms(&base, 60, 0).await });
    tokio::time::sleep(Duration::from_millis(700)).await;
    server.restart(Stop::Kill);
    tokio::time::sleep(Duration::from_millis(700)).await;
    server.restart(Stop::Kill);
    let outcome = load.await.expect("every room finished after two kills");
    assert!(
        outcome.retries > 0,
        "clients noticed the kills: {outcome:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_failures_cost_retries_not_messages() {
    let Ok(endpoint) = std::env::var("SIGNALPOST_TEST_DYNAMODB_ENDPOINT") else {
        panic!("SIGNALPOST_TEST_DYNAMODB_ENDPOINT is not set: run through tests/with-moto.sh");
    };
    assert!(
        endpoint.starts_with("http://127.0.0.1"),
        "loopback only: {endpoint}"
    );
    let table = format!(
        "reliability-{}",
        ulid::Ulid::new().to_string().to_lowercase()
    );
    let dynamo = signalpost_shared::store::dynamo::DynamoStore::connect(table)
        .await
        .expect("endpoint");
    dynamo.create_table().await.expect("table");
    let store = Arc::new(FaultyStore::new(
        Arc::new(dynamo),
        FaultPlan {
            fail_before_every: 19,
            fail_after_every: 23,
            stall_every: 151,
        },
    ));
    let base = serve_in_process(Arc::clone(&store) as Arc<dyn Store>).await;
    let outcome = run_rooms(&base, 12, 0).await;
    assert!(
        store.injected.load(Ordering::Relaxed) > 20,
        "the faults really happened"
    );
    assert!(
        outcome.retries > 5,
        "clients saw 503s and retried: {outcome:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_times_out_and_its_inbox_stops_growing() {
    let server = Server::start_with(&[
        ("SIGNALPOST_MAX_WAIT", "1"),
        ("SIGNALPOST_PRESENCE_TIMEOUT", "6"),
    ]);
    let room = crate::support::room();
    let mut talker = crate::support::join(&server, &room, "talker").await;
    let silent = crate::support::join(&server, &room, "silent").await;
    let to_silent =
        serde_json::json!({"to": silent.id, "type": "message", "data": "are you there?"});
    assert_eq!(talker.post(&to_silent).await.status(), 202);
    talker.collect("peer-left", 1).await;
    let response = talker.post(&to_silent).await;
    assert_eq!(
        response.status(),
        404,
        "nothing more is stored for a peer that timed out"
    );
    assert_eq!(silent.poll_raw("wait=0").await.status(), 410);
}

/// Resident memory (kB) and open files of a process, from /proc.
/// The server's resident memory (kB) and open file descriptors, from `/proc`. Panics when
/// they cannot be read: a figure of 0 would make every "stays flat" check below pass.
fn process_figures(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|error| panic!("/proc/{pid}/status: {error}"));
    let rss = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status:\n{status}"));
    let files = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|error| panic!("/proc/{pid}/fd: {error}"))
        .count();
    (rss, files)
}

/// The size of the server's SQLite files (database, journal and WAL).
fn database_bytes(directory: &std::path::Path) -> u64 {
    std::fs::read_dir(directory)
        .unwrap_or_else(|error| panic!("{}: {error}", directory.display()))
        .flatten()
        .filter_map(|entry| entry.metadata().ok())
        .map(|metadata| metadata.len())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soak_keeps_memory_files_and_the_database_flat() {
    // Steady traffic for a minute: wave after wave of rooms negotiate and leave, with a short
    // message TTL, so expiry and clean-up must keep up for the figures to stay flat.
    let server = Server::start_with(&[
        ("SIGNALPOST_MESSAGE_TTL", "10"),
        ONE_ADDRESS_LOAD[0],
        ONE_ADDRESS_LOAD[1],
        ONE_ADDRESS_LOAD[2],
        ONE_ADDRESS_LOAD[3],
    ]);
    let started = std::time::Instant::now();
    let mut samples = Vec::new();
    while started.elapsed() < Duration::from_secs(60) {
        run_rooms(&server.base, 20, 0).await;
        let (rss, files) = process_figures(server.pid());
        samples.push((
            started.elapsed().as_secs(),
            rss,
            files,
            database_bytes(server.directory()),
        ));
    }
    for (seconds, rss, files, bytes) in &samples {
        println!("soak t={seconds:>3}s rss={rss} kB open files={files} database={bytes} bytes");
    }
    assert!(
        samples.len() >= 6,
        "enough waves to judge: {}",
        samples.len()
    );
    // Every figure was really measured: a zero would make the flatness checks vacuous.
    for sample in &samples {
        assert!(
            sample.1 > 0 && sample.2 > 0 && sample.3 > 0,
            "a figure is zero (rss kB, open files, database bytes): {sample:?}"
        );
    }
    let third = samples.len() / 3;
    let peak = |range: &[(u64, u64, usize, u64)], pick: fn(&(u64, u64, usize, u64)) -> u64| {
        range.iter().map(pick).max().unwrap_or(0)
    };
    let (early, late) = (&samples[third..2 * third], &samples[2 * third..]);
    let rss = (peak(early, |s| s.1), peak(late, |s| s.1));
    let files = (peak(early, |s| s.2 as u64), peak(late, |s| s.2 as u64));
    let bytes = (peak(early, |s| s.3), peak(late, |s| s.3));
    assert!(
        rss.1 <= rss.0 * 5 / 4 + 2048,
        "memory keeps growing: {rss:?}"
    );
    assert!(files.1 <= files.0 + 8, "open files keep growing: {files:?}");
    assert!(
        bytes.1 <= bytes.0 * 3 / 2 + 65_536,
        "the database keeps growing: {bytes:?}"
    );
}

/// Two "processes" over one SQLite file, each with its own wake-ups: every poll goes to the
/// second, everything else to the first, so each message reaches its poll only through the
/// cross-process wake-up path (here behind `fault`) or the poll's fallback reads.
async fn serve_split(database: &std::path::Path, fault: WakeupFault) -> String {
    use signalpost_shared::wakeup::{Wakeup, Wakeups, socket::SocketWakeup};
    use tower::ServiceExt;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(database).expect("database"));
    let config = test_config();
    let process = |faulty: bool| {
        let wakeups = Arc::new(Wakeups::default());
        let socket: Arc<dyn Wakeup> =
            Arc::new(SocketWakeup::beside(database, Arc::clone(&wakeups)));
        let adapter: Arc<dyn Wakeup> = if faulty {
            Arc::new(FaultyWakeup::new(socket, fault))
        } else {
            socket
        };
        standalone_router(Arc::new(Signalling::with_wakeup(
            config.clone(),
            Arc::clone(&store),
            wakeups,
            adapter,
        )))
    };
    // The fault sits on both sides: the poster's sending and the poller's listening.
    let (poster, poller) = (process(true), process(true));
    let split = tower::service_fn(move |request: axum::extract::Request| {
        let is_poll = request.method() == axum::http::Method::GET
            && request.uri().path().ends_with("/messages");
        let router = if is_poll {
            poller.clone()
        } else {
            poster.clone()
        };
        router.oneshot(request)
    });
    let router = axum::Router::new().fallback_service(split);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, router.into_make_service()).await });
    base
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_wakeup_path_costs_latency_not_messages() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let faults = [
        WakeupFault::Down,
        WakeupFault::Slow(Duration::from_secs(3)),
        WakeupFault::Dropping,
    ];
    let mut runs = Vec::new();
    for (index, fault) in faults.into_iter().enumerate() {
        let database = directory.path().join(format!("wakeups-{index}.db"));
        runs.push(tokio::spawn(async move {
            let base = serve_split(&database, fault).await;
            (fault, run_rooms(&base, 4, 0).await)
        }));
    }
    for run in runs {
        let (fault, outcome) = run.await.expect("a run failed");
        // run_rooms checks every stream position by position; a post that failed would have
        // been retried, and none may be: the store never failed.
        assert_eq!(outcome.retries, 0, "{fault:?}: posts failed: {outcome:?}");
        assert!(outcome.delivered > 0, "{fault:?}: {outcome:?}");
    }
}

/// How many inbox reads an idle poll of 13 s makes in a process on a SQLite file, alone on it
/// or beside another process.
async fn idle_poll_reads(beside_another: bool) -> u64 {
    use signalpost_shared::clock::now_millis;
    use signalpost_shared::cursor::Cursor;
    use signalpost_shared::ids::RoomId;
    use signalpost_shared::wakeup::{Wakeup, Wakeups, socket::SocketWakeup};
    let directory = tempfile::tempdir().expect("temporary directory");
    let database = directory.path().join("idle.db");
    let no_faults = FaultPlan {
        fail_before_every: 0,
        fail_after_every: 0,
        stall_every: 0,
    };
    let store = Arc::new(FaultyStore::new(
        Arc::new(SqliteStore::open(&database).expect("database")),
        no_faults,
    ));
    let other = SocketWakeup::beside(&database, Arc::default());
    if beside_another {
        other
            .listen()
            .await
            .expect("the other process's socket is bound");
    }
    let wakeups = Arc::new(Wakeups::default());
    let adapter: Arc<dyn Wakeup> = Arc::new(SocketWakeup::beside(&database, Arc::clone(&wakeups)));
    let signalling = Signalling::with_wakeup(
        test_config(),
        Arc::clone(&store) as Arc<dyn Store>,
        wakeups,
        adapter,
    );
    let room = RoomId::parse("idle").expect("valid");
    let joined = signalling.join(room, None, None).await.expect("joins");
    let grant = signalling
        .verify_peer_token(&joined.token)
        .expect("its own token");
    // Idle for a minute already: the poll is past its eager phase from the start.
    let cursor = Cursor {
        seq: 0,
        activity: now_millis() - 60_000,
    };
    let before = store.reads.load(Ordering::Relaxed);
    let polled = signalling
        .poll(&grant, Some(cursor), Duration::from_secs(13))
        .await
        .expect("polls");
    assert!(polled.messages.is_empty());
    store.reads.load(Ordering::Relaxed) - before
}

/// Issue 11: a process alone on its SQLite file (the standalone server) sees every write
/// itself and wakes its polls in-process, so an idle poll reads nothing; beside another
/// process a poll keeps its fallback read, at most one per 10 s while idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_poll_reads_the_store_only_when_another_process_shares_it() {
    let (alone, shared) = tokio::join!(idle_poll_reads(false), idle_poll_reads(true));
    assert_eq!(alone, 0, "alone on the file, an idle poll read the store");
    assert!(
        (1..=2).contains(&shared),
        "beside another process, an idle 13 s poll read {shared} times (one fallback read per 10 s)"
    );
}
