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
use crate::store::ReadLimit;
use crate::store::conformance::{OPEN_JOINS, join, post_one, timing};

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
    let config = crate::aws::with_https_client(aws_config::defaults(BehaviorVersion::latest()))
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
        // One window for the whole test, however slowly a loaded machine runs it, so that
        // request counts do not depend on speed.
        rate_limit: crate::store::RateLimit {
            posts: 10_000,
            window_ms: 3_600_000,
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

    async fn pause(&self, step: Step) {
        if step != (Step::Commit { attempt: 0 }) {
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
        let hook = move |step: Step| -> Pin<Box<dyn Future<Output = ()> + Send>> {
            let stall = Arc::clone(&stall);
            Box::pin(async move { stall.pause(step).await })
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
        .read(&room, &bob, 0, ReadLimit::messages(100), before)
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
            .read(&room, &bob, 1, ReadLimit::messages(100), before)
            .await
            .expect("reads")
            .messages
            .is_empty()
    );

    go.send(()).expect("the writer waits");
    writer.await.expect("writer ran").expect("post succeeds");
    let inbox = store
        .read(&room, &bob, 0, ReadLimit::messages(100), now_millis())
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
        .read(&room, &bob, 1, ReadLimit::messages(100), before)
        .await
        .expect("reads")
        .messages;
    assert!(
        waiting.is_empty(),
        "within the gap timeout the reader waits"
    );

    let later = now_millis() + GAP_TIMEOUT_MS + 500;
    let delivered = store
        .read(&room, &bob, 1, ReadLimit::messages(100), later)
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
        .read(&room, &bob, 0, ReadLimit::messages(100), now_millis())
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
        .read(&room, &bob, 5, ReadLimit::messages(100), now_millis())
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
            .read(&room, &bob, cursor, ReadLimit::messages(2), now)
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
                        join_rate: OPEN_JOINS,
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
            .read(&room, peer, 0, ReadLimit::messages(100), now_millis())
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
        .read(
            &room,
            &alice,
            alice_head,
            ReadLimit::messages(100),
            now_millis(),
        )
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

/// A hook that runs `action` the first time the store reaches `at`.
fn hook_at<F, Fut>(at: Step, action: F) -> impl Fn(Step) -> Pin<Box<dyn Future<Output = ()> + Send>>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let action = Arc::new(Mutex::new(Some(action)));
    move |step: Step| -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let action = if step == at {
            action.lock().expect("lock").take()
        } else {
            None
        };
        Box::pin(async move {
            if let Some(action) = action {
                action().await;
            }
        })
    }
}

fn numbered(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}{i}")).collect()
}

fn batch_post(room: &RoomId, from: &PeerId, to: &PeerId, texts: &[String]) -> PostRequest {
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    text_post(room, from, to, &texts)
}

/// Everything `peer` can read at `now`, following the cursor.
async fn read_everything(
    store: &DynamoStore,
    room: &RoomId,
    peer: &PeerId,
    now: Millis,
) -> Vec<StoredMessage> {
    let mut cursor = 0;
    let mut read = Vec::new();
    for _ in 0..20 {
        let page = store
            .read(room, peer, cursor, ReadLimit::messages(1_000), now)
            .await
            .expect("reads")
            .messages;
        let Some(last) = page.last() else {
            break;
        };
        cursor = last.seq;
        read.extend(page);
    }
    read
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_readers_tombstone_never_hides_the_start_of_a_committed_batch() {
    // Issue 16, item 1. Bob's cursor is 0; a dead writer holds 1, live writers hold 2..=51
    // and 52..=91, writer C holds 92..=141 (50 messages) and D has committed 142. A reader
    // that gives up on 1..=141 Queries, then C commits, then the reader tombstones.
    let store = test_store().await;
    let room = unique_room("tombstone-range");
    let (alice, bob) = (PeerId::mint(), PeerId::mint());
    join(&store, &room, &alice).await;
    join(&store, &room, &bob).await;
    let c_texts = numbered("c", 50);
    let mut stalled = Vec::new();
    for (name, count) in [("dead", 1), ("live-a", 50), ("live-b", 40), ("c", 50)] {
        let texts = if name == "c" {
            c_texts.clone()
        } else {
            numbered(name, count)
        };
        let (stall, allocated, go) = Stall::new();
        let writer = stalled_post(&store, batch_post(&room, &alice, &bob, &texts), stall);
        allocated.await.expect("the writer allocated");
        stalled.push((go, writer));
    }
    post_one(&store, &room, &alice, Some(&bob), "d").await;

    let (c_go, c_writer) = stalled.pop().expect("writer C");
    let c_commit = Arc::new(Mutex::new(None));
    let c_result = Arc::clone(&c_commit);
    let commit_c = move || async move {
        c_go.send(()).expect("C waits");
        let posted = c_writer.await.expect("C ran");
        *c_result.lock().expect("lock") = Some(posted);
    };
    let hook = hook_at(Step::Tombstone, commit_c);
    let later = now_millis() + GAP_TIMEOUT_MS + 500;
    store
        .read_inbox(
            &room,
            &bob,
            0,
            ReadLimit::messages(1_000),
            later,
            Some(&hook),
        )
        .await
        .expect("reads");
    let c_outcome = c_commit.lock().expect("lock").take();
    assert!(
        matches!(c_outcome, Some(Ok(_))),
        "C's commit, between the reader's Query and its tombstones, is answered Ok: {c_outcome:?}"
    );
    for (go, writer) in stalled {
        go.send(()).expect("the writer waits");
        writer.await.expect("writer ran").expect("post succeeds");
    }

    let inbox = read_everything(&store, &room, &bob, later + 1).await;
    let received: Vec<String> = texts(&inbox)
        .into_iter()
        .filter(|text| text.starts_with('c'))
        .collect();
    assert_eq!(
        received.len(),
        50,
        "every message of C's committed batch is delivered, in order"
    );
    assert_eq!(received, c_texts);
}

/// An interceptor that, when armed, makes the SDK believe the next PutItem failed after
/// DynamoDB applied it, as when its response is lost: the SDK retries it.
#[derive(Clone, Debug, Default)]
struct LoseNextPutResponse {
    armed: Arc<std::sync::atomic::AtomicBool>,
    /// Set while the armed PutItem is on the wire.
    losing: Arc<std::sync::atomic::AtomicBool>,
}

impl aws_sdk_dynamodb::config::Intercept for LoseNextPutResponse {
    fn name(&self) -> &'static str {
        "LoseNextPutResponse"
    }

    fn read_before_transmit(
        &self,
        context: &aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _components: &aws_sdk_dynamodb::config::RuntimeComponents,
        _cfg: &mut aws_sdk_dynamodb::config::ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        let is_put = context
            .request()
            .headers()
            .get("x-amz-target")
            .is_some_and(|target| target.ends_with(".PutItem"));
        if is_put && self.armed.swap(false, Ordering::SeqCst) {
            self.losing.store(true, Ordering::SeqCst);
        }
        Ok(())
    }

    fn modify_before_deserialization(
        &self,
        context: &mut aws_sdk_dynamodb::config::interceptors::BeforeDeserializationInterceptorContextMut<'_>,
        _components: &aws_sdk_dynamodb::config::RuntimeComponents,
        _cfg: &mut aws_sdk_dynamodb::config::ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        if self.losing.swap(false, Ordering::SeqCst) {
            *context.response_mut().status_mut() = 500u16.try_into().expect("a status code");
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_put_whose_response_was_lost_is_not_delivered_twice() {
    // Issue 16, item 3: one message to one inbox goes through a single conditional put.
    let table = test_store().await.table.clone();
    let lose = LoseNextPutResponse::default();
    let config = client()
        .await
        .config()
        .to_builder()
        .interceptor(lose.clone())
        .build();
    let store = DynamoStore::from_client(Client::from_conf(config), table).expect("valid name");
    let room = unique_room("lost-put");
    let (alice, bob) = (PeerId::mint(), PeerId::mint());
    join(&store, &room, &alice).await;
    join(&store, &room, &bob).await;
    lose.armed.store(true, Ordering::SeqCst);
    store
        .post(text_post(&room, &alice, &bob, &["once"]))
        .await
        .expect("post succeeds");
    assert!(!lose.armed.load(Ordering::SeqCst), "a response was lost");
    let inbox = store
        .read(&room, &bob, 0, ReadLimit::messages(100), now_millis())
        .await
        .expect("reads")
        .messages;
    assert_eq!(texts(&inbox), ["once"], "delivered once: {inbox:?}");
}

fn client_id_post(
    room: &RoomId,
    from: &PeerId,
    to: &PeerId,
    text: &str,
    client_id: &str,
) -> PostRequest {
    let mut request = text_post(room, from, to, &[text]);
    request.messages[0].1.client_id =
        Some(crate::ids::ClientMessageId::parse(client_id).expect("valid client id"));
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_whose_recipient_leaves_mid_post_gets_its_first_ids() {
    // Issue 16, item 4: the recipient leaves between the member Query and the allocation.
    let store = test_store().await;
    let room = unique_room("retry-leaves");
    let (alice, bob) = (PeerId::mint(), PeerId::mint());
    join(&store, &room, &alice).await;
    join(&store, &room, &bob).await;
    let first = store
        .post(client_id_post(&room, &alice, &bob, "bye", "bye-1"))
        .await
        .expect("post succeeds");
    let (leaver, room_of) = (store.clone(), room.clone());
    let bob_leaves = bob.clone();
    let hook = hook_at(Step::Allocate { attempt: 0 }, move || async move {
        leaver
            .leave(&room_of, &bob_leaves, timing(0))
            .await
            .expect("bob leaves");
    });
    let retry = store
        .post_with(
            client_id_post(&room, &alice, &bob, "bye", "bye-1"),
            Some(&hook),
        )
        .await
        .expect("the retry is answered as its first attempt was");
    assert_eq!(retry.ids, first.ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broadcast_skips_a_member_who_leaves_mid_post() {
    // Issue 16, item 4: carol leaves between the member Query and the allocations.
    let store = test_store().await;
    let room = unique_room("broadcast-leaves");
    let (alice, bob, carol) = (PeerId::mint(), PeerId::mint(), PeerId::mint());
    for peer in [&alice, &bob, &carol] {
        join(&store, &room, peer).await;
    }
    let (leaver, room_of, carol_leaves) = (store.clone(), room.clone(), carol.clone());
    let hook = hook_at(Step::Allocate { attempt: 0 }, move || async move {
        leaver
            .leave(&room_of, &carol_leaves, timing(0))
            .await
            .expect("carol leaves");
    });
    let mut broadcast = text_post(&room, &alice, &bob, &["to all"]);
    broadcast.messages[0].1.to = None;
    let posted = store
        .post_with(broadcast, Some(&hook))
        .await
        .expect("a broadcast skips members who left");
    assert_eq!(posted.recipients, std::slice::from_ref(&bob));
    let inbox = store
        .read(&room, &bob, 0, ReadLimit::messages(100), now_millis())
        .await
        .expect("reads")
        .messages;
    assert_eq!(texts(&inbox), ["to all"]);
}

/// The `lastSeqAt` of `peer`'s member item.
async fn last_seq_at(store: &DynamoStore, room: &RoomId, peer: &PeerId) -> Millis {
    let item = store
        .client
        .get_item()
        .table_name(&store.table)
        .set_key(Some(key(items::room_pk(room), items::member_sk(peer))))
        .consistent_read(true)
        .send()
        .await
        .expect("reads")
        .item
        .expect("a member item");
    items::get_n(&item, items::member::LAST_SEQ_AT).expect("a lastSeqAt")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_allocation_is_dated_when_it_is_made_and_the_date_never_goes_back() {
    // Issue 16, item 2: readers judge a gap by the newest allocation's date.
    let store = test_store().await;
    let room = unique_room("allocation-date");
    let (alice, bob) = (PeerId::mint(), PeerId::mint());
    join(&store, &room, &alice).await;
    join(&store, &room, &bob).await;
    let slow = text_post(&room, &alice, &bob, &["slow"]);
    let started = slow.timing.now;
    let hook = hook_at(Step::Allocate { attempt: 0 }, || async {
        tokio::time::sleep(Duration::from_millis(300)).await;
    });
    store.post_with(slow, Some(&hook)).await.expect("posts");
    let dated = last_seq_at(&store, &room, &bob).await;
    assert!(
        dated >= started + 300,
        "dated when it allocated, 300 ms into the post: {} ms",
        dated - started
    );

    // A process whose clock is 30 s behind allocates next.
    let mut behind = text_post(&room, &alice, &bob, &["behind"]);
    behind.timing = timing(-30_000);
    store.post(behind).await.expect("posts");
    assert!(
        last_seq_at(&store, &room, &bob).await >= dated,
        "the newest allocation's date never goes back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gap_is_judged_by_its_newest_allocation_not_by_when_its_start_was_noticed() {
    // Issue 16, item 2. A dead writer holds 1 and carol's message at 2 blocks the reader, who
    // notices the gap at 1. Carol's message expires and TTL deletes it. Long after, a live
    // writer allocates 3 and dave commits 4: the reader must not give up on 3 yet.
    let store = test_store().await;
    let room = unique_room("gap-age");
    let (alice, carol, dave, bob) = (
        PeerId::mint(),
        PeerId::mint(),
        PeerId::mint(),
        PeerId::mint(),
    );
    for peer in [&alice, &carol, &dave, &bob] {
        join(&store, &room, peer).await;
    }
    let (dead_stall, allocated, _dead_go) = Stall::new();
    let dead = stalled_post(
        &store,
        text_post(&room, &alice, &bob, &["dead"]),
        dead_stall,
    );
    allocated.await.expect("the dead writer allocated");
    let mut short_lived = text_post(&room, &carol, &bob, &["expires"]);
    short_lived.timing.expires_at = short_lived.timing.now + 1;
    store.post(short_lived).await.expect("posts");
    let noticed_at = now_millis();
    assert!(
        store
            .read(&room, &bob, 0, ReadLimit::messages(100), noticed_at)
            .await
            .expect("reads")
            .messages
            .is_empty()
    );
    store
        .client
        .delete_item()
        .table_name(&store.table)
        .set_key(Some(key(items::inbox_pk(&room, &bob), items::seq_sk(2))))
        .send()
        .await
        .expect("deletes the expired item, as TTL does");

    let much_later = noticed_at + GAP_TIMEOUT_MS + 100;
    let (live_stall, allocated, live_go) = Stall::new();
    let mut live_post = text_post(&room, &dave, &bob, &["live"]);
    live_post.timing = timing(much_later - now_millis());
    let live = stalled_post(&store, live_post, live_stall);
    allocated.await.expect("the live writer allocated");
    let mut after_live = text_post(&room, &dave, &bob, &["after"]);
    after_live.timing = timing(much_later - now_millis());
    store.post(after_live).await.expect("posts");

    let early = store
        .read(&room, &bob, 0, ReadLimit::messages(100), much_later + 10)
        .await
        .expect("reads")
        .messages;
    assert!(
        early.is_empty(),
        "3 was allocated 10 ms ago: the reader waits for it: {early:?}"
    );
    live_go.send(()).expect("the live writer waits");
    live.await.expect("writer ran").expect("post succeeds");
    dead.abort();
    let inbox = read_everything(&store, &room, &bob, much_later + 2 * GAP_TIMEOUT_MS).await;
    assert_eq!(
        texts(&inbox),
        ["live", "after"],
        "dave's order is kept: {inbox:?}"
    );
}
