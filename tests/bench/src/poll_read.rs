//! What one poll of an inbox full of large offers reads from DynamoDB (run through
//! `tests/with-moto.sh`): 100 offers of 32 KiB wait, and the poll's store read is measured
//! twice on the same inbox, side by side: without a byte budget (100 messages, as the poll read
//! before the store took the budget, trimming the response afterwards) and with the poll's own
//! [`POLL_READ_LIMIT`]. Query pages, items and response bytes are counted by an SDK
//! interceptor, so the figures are what went over the wire, not what the store thinks it read.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_dynamodb::operation::query::QueryOutput;
use signalpost_shared::clock::now_millis;
use signalpost_shared::ids::{MessageId, PeerId, RoomId};
use signalpost_shared::limits::RoomJoinRate;
use signalpost_shared::message::{MessageKind, Outgoing};
use signalpost_shared::signalling::{MAX_MESSAGES_PER_POLL, POLL_READ_LIMIT};
use signalpost_shared::store::dynamo::DynamoStore;
use signalpost_shared::store::{JoinRequest, PostRequest, RateLimit, ReadLimit, Store, Timing};

/// Query responses seen by the clients it is added to.
#[derive(Clone, Debug, Default)]
struct CountQueries {
    pages: Arc<AtomicU64>,
    items: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
}

/// Query pages, the items they held and their response bytes.
#[derive(Clone, Copy, Debug)]
struct QueryCounts {
    pages: u64,
    items: u64,
    bytes: u64,
}

impl CountQueries {
    fn counts(&self) -> QueryCounts {
        QueryCounts {
            pages: self.pages.load(Ordering::Relaxed),
            items: self.items.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }
}

impl aws_sdk_dynamodb::config::Intercept for CountQueries {
    fn name(&self) -> &'static str {
        "CountQueries"
    }

    fn read_after_deserialization(
        &self,
        context: &aws_sdk_dynamodb::config::interceptors::AfterDeserializationInterceptorContextRef<
            '_,
        >,
        _components: &aws_sdk_dynamodb::config::RuntimeComponents,
        _cfg: &mut aws_sdk_dynamodb::config::ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        let Ok(output) = context.output_or_error() else {
            return Ok(());
        };
        let Some(query) = output.downcast_ref::<QueryOutput>() else {
            return Ok(());
        };
        let bytes = context.response().body().bytes().map_or(0, <[u8]>::len);
        self.pages.fetch_add(1, Ordering::Relaxed);
        self.items
            .fetch_add(u64::try_from(query.count).unwrap_or(0), Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        Ok(())
    }
}

fn timing() -> Timing {
    let now = now_millis();
    Timing {
        now,
        expires_at: now + 600_000,
        stale_before: now - 60_000,
        post_window_ms: 10_000,
    }
}

async fn join(store: &DynamoStore, room: &RoomId, peer: &PeerId) {
    store
        .join(JoinRequest {
            room: room.clone(),
            peer: peer.clone(),
            name: None,
            capacity: 2,
            inbox_limit: 1_000,
            join_rate: RoomJoinRate {
                burst: 100,
                period_ms: 1,
            },
            timing: timing(),
        })
        .await
        .expect("join");
}

/// An offer of about 32 KiB, as the black-box byte-budget test sends.
fn large_offer(to: &PeerId) -> (MessageId, Outgoing) {
    let sdp = format!("v=0\r\na={}\r\n", "x".repeat(32_000));
    let data = serde_json::json!({"type": "offer", "sdp": sdp}).to_string();
    (
        MessageId::mint(),
        Outgoing {
            to: Some(to.clone()),
            kind: MessageKind::Offer,
            data,
            client_id: None,
        },
    )
}

pub async fn run() {
    let queries = CountQueries::default();
    let config = aws_sdk_dynamodb::config::Builder::from(&DynamoStore::sdk_config().await)
        .interceptor(queries.clone())
        .build();
    let table = format!("bench-{}", ulid::Ulid::new().to_string().to_lowercase());
    let store = DynamoStore::from_client(aws_sdk_dynamodb::Client::from_conf(config), table)
        .expect("a valid table name");
    store
        .create_table()
        .await
        .expect("DynamoDB endpoint (run through tests/with-moto.sh)");
    let room = RoomId::parse("poll-read").expect("room");
    let (reader, writer) = (PeerId::mint(), PeerId::mint());
    join(&store, &room, &reader).await;
    join(&store, &room, &writer).await;
    for _ in 0..100 {
        store
            .post(PostRequest {
                room: room.clone(),
                sender: writer.clone(),
                messages: vec![large_offer(&reader)],
                inbox_limit: 1_000,
                rate_limit: RateLimit {
                    posts: 1_000,
                    window_ms: 10_000,
                },
                timing: timing(),
            })
            .await
            .expect("post");
    }
    println!(
        "One poll of an inbox of 100 offers of 32 KiB on DynamoDB (moto), from its start:\n\n\
         | store read | Query pages | items read | bytes read | messages returned |\n\
         |---|---:|---:|---:|---:|"
    );
    for (label, limit) in [
        (
            "100 messages, no byte budget (before)",
            ReadLimit::messages(MAX_MESSAGES_PER_POLL),
        ),
        ("within the poll's byte budget (after)", POLL_READ_LIMIT),
    ] {
        let before = queries.counts();
        let read = store
            .read(&room, &reader, 0, limit, now_millis())
            .await
            .expect("read");
        let after = queries.counts();
        println!(
            "| {label} | {} | {} | {} | {} |",
            after.pages - before.pages,
            after.items - before.items,
            after.bytes - before.bytes,
            read.messages.len()
        );
    }
}
