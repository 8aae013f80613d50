//! The DynamoDB store against a local DynamoDB-compatible server: the conformance suite, then
//! what only this store has (commits out of order, writers that die, grouped inbox items).
//! Run through `tests/with-moto.sh`, which starts the server and sets
//! `SIGNALPOST_TEST_DYNAMODB_ENDPOINT`; without it these tests fail on purpose.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodb::config::{Credentials, Region};
use tokio::sync::{OnceCell, oneshot};

use super::*;
use crate::clock::now_millis;
use crate::ids::MessageId;
use crate::message::{MessageKind, Outgoing, StoredMessage};
use crate::store::conformance::{join, post_one, timing};

/// One table per test process, created on first use.
static TABLE: OnceCell<String> = OnceCell::const_new();

async fn client() -> Client {
    let endpoint = std::env::var("SIGNALPOST_TEST_DYNAMODB_ENDPOINT").unwrap_or_else(|_| {
        panic!(
            "SIGNALPOST_TEST_DYNAMODB_ENDPOINT is not set: the DynamoDB store tests need a local \
             DynamoDB-compatible server; run them through tests/with-moto.sh, e.g. \
             `tests/with-moto.sh cargo test -p signalpost-shared`"
        )
    });
    let config = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            "testing",
            "testing",
            None,
            None,
            "signalpost-tests",
        ))
        // moto serves one request at a time and copies the table for each transaction item, so
        // a request can queue for longer than production's timeout allows.
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_timeout(Duration::from_secs(60))
                .build(),
        )
        .load()
        .await;
    Client::new(&config)
}

/// A store on this process's table. Each test gets its own client, since each runs its own
/// Tokio runtime.
async fn test_store() -> DynamoStore {
    let client = client().await;
    let table = TABLE
        .get_or_init(|| async {
            let table = format!("signalpost-test-{}", ulid::Ulid::new());
            DynamoStore::from_client(client.clone(), table.clone())
                .expect("valid table name")
                .create_table()
                .await
                .expect("creates the test table");
            table
        })
        .await;
    DynamoStore::from_client(client, table.clone()).expect("valid table name")
}

async fn open_store() -> (Arc<dyn Store>, ()) {
    (Arc::new(test_store().await), ())
}

crate::store_conformance_tests!(open_store);

fn unique_room(case: &str) -> RoomId {
    RoomId::parse(&format!("{case}-{}", ulid::Ulid::new())).expect("valid room")
}

fn text_post(room: &RoomId, from: &PeerId, to: &PeerId, texts: &[&str]) -> PostRequest {
    PostRequest {
        room: room.clone(),
        sender: from.clone(),
        messages: texts
            .iter()
            .map(|text| {
                (
                    MessageId::mint(),
                    Outgoing {
                        to: Some(to.clone()),
                        kind: MessageKind::Message,
                        data: serde_json::Value::from(*text).to_string(),
                        client_id: None,
                    },
                )
            })
            .collect(),
        inbox_limit: 1_000,
        rate_limit: crate::store::RateLimit {
            posts: 10_000,
            window_ms: 10_000,
        },
        timing: timing(0),
    }
}

fn texts(messages: &[StoredMessage]) -> Vec<String> {
    messages
        .iter()
        .filter(|message| message.kind == MessageKind::Message)
        .map(|message| serde_json::from_str(&message.data).expect("a JSON string"))
        .collect()
}

fn seqs(messages: &[StoredMessage]) -> Vec<Seq> {
    messages.iter().map(|message| message.seq).collect()
}

/// A writer hook that, on the first attempt, says it has allocated and then waits to be
/// let go.
struct Stall {
    allocated: Mutex<Option<oneshot::Sender<()>>>,
    go: Mutex<Option<oneshot::Receiver<()>>>,
}

impl Stall {
    fn new() -> (Arc<Self>, oneshot::Receiver<()>, oneshot::Sender<()>) {
        let (allocated, allocated_rx) = oneshot::channel();
        let (go_tx, go) = oneshot::channel();
        let stall = Arc::new(Self {
            allocated: Mutex::new(Some(allocated)),
            go: Mutex::new(Some(go)),
        });
        (stall, allocated_rx, go_tx)
    }

    async fn pause(&self, attempt: u32) {
        if attempt > 0 {
            return;
        }
        let allocated = self.allocated.lock().expect("lock").take();
        if let Some(allocated) = allocated {
            let _ = allocated.send(());
        }
        let go = self.go.lock().expect("lock").take();
        if let Some(go) = go {
            let _ = go.await;
        }
    }
}

/// Posts `request` with a writer that stalls between allocating and committing.
fn stalled_post(
    store: &DynamoStore,
    request: PostRequest,
    stall: Arc<Stall>,
) -> tokio::task::JoinHandle<Result<Posted, StoreError>> {
    let store = store.clone();
    tokio::spawn(async move {
        let hook = move |attempt: u32| -> Pin<Box<dyn Future<Output = ()> + Send>> {
            let stall = Arc::clone(&stall);
            Box::pin(async move { stall.pause(attempt).await })
        };
        store.post_with(request, Some(&hook)).await
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_writer_holds_back_later_messages_until_it_commits() {
    let store = test_store().await;
    let room = unique_room("stalled");
    let (alice, bob, carol) = (PeerId::mint(), PeerId::mint(), PeerId::mint());
    for peer in [&alice, &bob, &carol] {
        join(&store, &room, peer).await;
    }
    // Bob's inbox: 1 is carol's peer-joined; alice's writer takes 2 and stalls. Reads are
    // dated before the allocation, so however slow the server, the gap is never given up on.
    let before = now_millis();
    let (stall, allocated, go) = Stall::new();
    let writer = stalled_post(&store, text_post(&room, &alice, &bob, &["first"]), stall);
    allocated.await.expect("the writer allocated");
    post_one(&store, &room, &carol, Some(&bob), "second").await;

    let early = store
        .read(&room, &bob, 0, 100, before)
        .await
        .expect("reads")
        .messages;
    assert_eq!(
        seqs(&early),
        [1],
        "nothing after the unwritten position: {early:?}"
    );
    assert!(texts(&early).is_empty());
    assert!(
        store
            .read(&room, &bob, 1, 100, before)
            .await
            .expect("reads")
            .messages
            .is_empty()
    );

    go.send(()).expect("the writer waits");
    writer.await.expect("writer ran").expect("post succeeds");
    let inbox = store
        .read(&room, &bob, 0, 100, now_millis())
        .await
        .expect("reads")
        .messages;
    assert_eq!(texts(&inbox), ["first", "second"]);
    assert_eq!(seqs(&inbox), [1, 2, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_writer_is_tombstoned_after_the_gap_timeout_and_its_late_commit_moves_on() {
    let store = test_store().await;
    let room = unique_room("dead");
    let (alice, bob, carol) = (PeerId::mint(), PeerId::mint(), PeerId::mint());
    for peer in [&alice, &bob, &carol] {
        join(&store, &room, peer).await;
    }
    // Alice's writer takes 2..=4 for a batch of three and "dies"; carol's message is 5.
    let before = now_millis();
    let (stall, allocated, go) = Stall::new();
    let batch = text_post(&room, &alice, &bob, &["a1", "a2", "a3"]);
    let writer = stalled_post(&store, batch, stall);
    allocated.await.expect("the writer allocated");
    post_one(&store, &room, &carol, Some(&bob), "c1").await;

    let waiting = store
        .read(&room, &bob, 1, 100, before)
        .await
        .expect("reads")
        .messages;
    assert!(
        waiting.is_empty(),
        "within the gap timeout the reader waits"
    );

    let later = now_millis() + GAP_TIMEOUT_MS + 500;
    let delivered = store
        .read(&room, &bob, 1, 100, later)
        .await
        .expect("reads")
        .messages;
    assert_eq!(texts(&delivered), ["c1"], "the gap was given up on");
    assert_eq!(seqs(&delivered), [5]);

    // The writer wakes: its commit hits the tombstones, so it allocates again and succeeds.
    go.send(()).expect("the writer waits");
    let posted = writer.await.expect("writer ran").expect("post succeeds");
    assert_eq!(posted.recipients, std::slice::from_ref(&bob));
    let inbox = store
        .read(&room, &bob, 0, 100, now_millis())
        .await
        .expect("reads")
        .messages;
    assert_eq!(
        texts(&inbox),
        ["c1", "a1", "a2", "a3"],
        "nothing accepted is lost"
    );
    assert_eq!(seqs(&inbox), [1, 5, 6, 7, 8]);
    let replay = store
        .read(&room, &bob, 5, 100, now_millis())
        .await
        .expect("reads")
        .messages;
    assert_eq!(texts(&replay), ["a1", "a2", "a3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cursor_inside_a_batch_reads_the_rest_of_it() {
    let store = test_store().await;
    let room = unique_room("batch");
    let (alice, bob) = (PeerId::mint(), PeerId::mint());
    join(&store, &room, &alice).await;
    join(&store, &room, &bob).await;
    let batch: Vec<String> = (0..5).map(|i| format!("m{i}")).collect();
    let batch: Vec<&str> = batch.iter().map(String::as_str).collect();
    store
        .post(text_post(&room, &alice, &bob, &batch))
        .await
        .expect("post succeeds");
    let now = now_millis();
    let mut cursor = 0;
    let mut read = Vec::new();
    for _ in 0..3 {
        let page = store
            .read(&room, &bob, cursor, 2, now)
            .await
            .expect("reads")
            .messages;
        cursor = page.last().map_or(cursor, |message| message.seq);
        read.extend(page);
    }
    assert_eq!(texts(&read), batch);
    assert_eq!(seqs(&read), [1, 2, 3, 4, 5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_joins_never_exceed_capacity() {
    let store = test_store().await;
    let room = unique_room("crowd");
    let joins: Vec<_> = (0..6)
        .map(|_| {
            let (store, room) = (store.clone(), room.clone());
            tokio::spawn(async move {
                store
                    .join(JoinRequest {
                        room,
                        peer: PeerId::mint(),
                        name: None,
                        capacity: 4,
                        inbox_limit: 10_000,
                        timing: timing(0),
                    })
                    .await
            })
        })
        .collect();
    let mut admitted = 0;
    for join in joins {
        match join.await.expect("join ran") {
            Ok(_) => admitted += 1,
            Err(StoreError::RoomFull) => {}
            Err(error) => panic!("unexpected join failure: {error:?}"),
        }
    }
    assert_eq!(admitted, 4, "admitted");
    let members = store
        .live_members(&room, now_millis())
        .await
        .expect("reads");
    assert_eq!(members.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_expired_member_is_gone_even_before_ttl_deletes_it() {
    let store = test_store().await;
    let room = unique_room("expired-member");
    let (alice, bob) = (PeerId::mint(), PeerId::mint());
    join(&store, &room, &alice).await;
    join(&store, &room, &bob).await;
    // Presence timeout (60 s) plus message TTL (600 s) after its last poll.
    let much_later = now_millis() + 700_000;
    assert!(matches!(
        store.touch(&room, &bob, 0, much_later).await,
        Err(StoreError::PeerGone)
    ));
    let mut request = text_post(&room, &alice, &bob, &["anyone?"]);
    request.timing.now = much_later;
    assert!(store.post(request).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn counts_requests_for_a_two_peer_negotiation() {
    let store = test_store().await;
    let room = unique_room("counts");
    let (alice, bob) = (PeerId::mint(), PeerId::mint());
    let before = store.request_counts();
    join(&store, &room, &alice).await;
    join(&store, &room, &bob).await;
    let joined = store.request_counts();
    let mut sends = Vec::new();
    sends.push((alice.clone(), bob.clone(), "offer"));
    sends.push((bob.clone(), alice.clone(), "answer"));
    for i in 0..20 {
        sends.push((
            alice.clone(),
            bob.clone(),
            if i == 0 { "candidate" } else { "c" },
        ));
        sends.push((bob.clone(), alice.clone(), "c"));
    }
    for (from, to, text) in &sends {
        store
            .post(text_post(&room, from, to, &[text]))
            .await
            .expect("post succeeds");
    }
    let posted = store.request_counts();
    // Each side then polls once for everything: touch + read.
    let mut delivered = 0;
    let mut alice_head = 0;
    for peer in [&alice, &bob] {
        let head = store
            .touch(&room, peer, 0, now_millis())
            .await
            .expect("touch");
        let messages = store
            .read(&room, peer, 0, 100, now_millis())
            .await
            .expect("read")
            .messages;
        assert_eq!(messages.last().map(|message| message.seq), Some(head));
        delivered += messages.len();
        if peer == &alice {
            alice_head = head;
        }
    }
    let polled = store.request_counts();
    // An idle poll: touch + read that finds nothing.
    store
        .touch(&room, &alice, alice_head, now_millis())
        .await
        .expect("touch");
    let nothing = store
        .read(&room, &alice, alice_head, 100, now_millis())
        .await
        .expect("read")
        .messages;
    assert!(nothing.is_empty());
    let idle = store.request_counts();
    let diff = |a: RequestCounts, b: RequestCounts| {
        (
            b.reads - a.reads,
            b.writes - a.writes,
            b.write_items - a.write_items,
        )
    };
    eprintln!(
        "requests (reads, writes, items written): 2 joins {:?}; {} posts {:?}; 2 polls delivering {} {:?}; 1 idle poll {:?}",
        diff(before, joined),
        sends.len(),
        diff(joined, posted),
        delivered,
        diff(posted, polled),
        diff(polled, idle),
    );
    // Each post: a members Query, an allocation update, a conditional put, and the flood
    // limit's count on the sender's member item. Each sender's first post opens its window,
    // which takes a second update (the in-window one fails first): 2 more.
    assert_eq!(
        diff(joined, posted),
        (42, 128, 128),
        "one read and three writes per post, plus one per window opened"
    );
    assert_eq!(
        diff(polled, idle),
        (1, 1, 1),
        "an idle poll is one read and one write"
    );
}
