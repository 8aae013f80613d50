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

use crate::faults::{FaultPlan, FaultyStore};
use crate::scenario::run_rooms;
use crate::support::{SECRET, Server, Stop};

/// Serves the whole API in this process over `store`, on a free loopback port.
async fn serve_in_process(store: Arc<dyn Store>) -> String {
    let vars: HashMap<&str, &str> = HashMap::from([("SIGNALPOST_SECRET", SECRET)]);
    let config = Config::from_lookup(Deployment::Standalone, |name| {
        vars.get(name).map(|value| (*value).to_owned())
    })
    .expect("valid configuration");
    let router = standalone_router(Arc::new(Signalling::new(config, store)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, router.into_make_service()).await });
    base
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_negotiations_lose_nothing() {
    let server = Server::start();
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
    let server = Server::start();
    // Every third poll response is thrown away unread.
    run_rooms(&server.base, 60, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_run_loses_nothing_it_accepted() {
    let mut server = Server::start();
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
