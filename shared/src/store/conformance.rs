//! The store conformance suite: the behaviour every [`Store`] must show, written once and run
//! against each implementation with [`store_conformance_tests!`](crate::store_conformance_tests).
//!
//! Each case takes a fresh store and uses its own room names, so cases may share a backend.

use std::collections::HashMap;
use std::sync::Arc;

use super::{
    Doorbell, JoinRequest, PollRecord, PostRequest, Posted, RateLimit, ReadLimit, Store,
    StoreError, Timing, Waiting,
};
use crate::clock::now_millis;
use crate::ids::{ClientMessageId, MessageId, PeerId, RoomId};
use crate::limits::RoomJoinRate;
use crate::message::{MessageKind, Outgoing, StoredMessage};

/// Generates one `#[tokio::test]` per conformance case for a store opened by `$open`, an
/// async function returning `(Arc<dyn Store>, guard)`; the guard lives as long as the test.
#[macro_export]
macro_rules! store_conformance_tests {
    ($open:path) => {
        $crate::store_conformance_tests!(@cases $open;
            join_lists_members_and_announces_the_newcomer,
            join_refuses_a_full_room,
            post_delivers_in_order_with_contiguous_sequence,
            broadcast_reaches_every_other_member,
            batch_with_a_stranger_stores_nothing,
            non_member_cannot_post,
            repeated_client_ids_are_stored_once,
            a_repeat_to_a_peer_who_left_gets_its_first_ids,
            a_repeat_to_a_full_inbox_gets_its_first_ids,
            repeats_at_the_flood_limit_get_their_first_ids_and_do_not_count,
            a_retried_post_of_repeats_is_not_counted_again,
            reads_replay_from_any_cursor,
            a_read_stops_at_its_byte_budget,
            expired_messages_are_never_read,
            touch_reports_head_and_acknowledgements_free_the_inbox,
            a_waiting_poll_learns_the_poll_it_replaces,
            sweep_removes_silent_peers_and_tells_the_rest,
            leave_tells_the_rest_and_is_idempotent,
            concurrent_senders_keep_their_own_order,
            rate_limit_counts_each_members_posts_per_window,
            expired_unread_messages_free_the_inbox,
            notices_of_joins_count_against_the_inbox_limit,
            the_join_limit_is_kept_per_room,
            rejoining_continues_the_departed_members_post_count,
            housekeeping_sweeps_abandoned_rooms,
            health_answers
        );
    };
    (@cases $open:path; $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let (store, _guard) = $open().await;
                $crate::store::conformance::$case(store).await;
            }
        )*
    };
}

/// A join limit no case reaches unless it means to.
pub const OPEN_JOINS: RoomJoinRate = RoomJoinRate {
    burst: 10_000,
    period_ms: 1,
};

/// A timing `offset_ms` from now, with a 10-minute message TTL, a 60-second presence timeout and
/// a 10-second flood-limit window.
pub fn timing(offset_ms: i64) -> Timing {
    let now = now_millis() + offset_ms;
    Timing {
        now,
        expires_at: now + 600_000,
        stale_before: now - 60_000,
        post_window_ms: 10_000,
    }
}

fn unique_room(case: &str) -> RoomId {
    RoomId::parse(&format!("{case}-{}", ulid::Ulid::new())).expect("valid room")
}

/// Joins `peer` to `room` (capacity 8), panicking on failure.
pub async fn join(store: &dyn Store, room: &RoomId, peer: &PeerId) -> Vec<PeerId> {
    join_at(store, room, peer, timing(0)).await
}

async fn join_at(store: &dyn Store, room: &RoomId, peer: &PeerId, timing: Timing) -> Vec<PeerId> {
    store
        .join(JoinRequest {
            room: room.clone(),
            peer: peer.clone(),
            name: Some(format!("name-{peer}")),
            capacity: 8,
            inbox_limit: 10_000,
            join_rate: OPEN_JOINS,
            timing,
        })
        .await
        .expect("join succeeds")
        .others
        .into_iter()
        .map(|member| member.peer)
        .collect()
}

pub fn app_message(
    to: Option<&PeerId>,
    text: &str,
    client_id: Option<&str>,
) -> (MessageId, Outgoing) {
    (
        MessageId::mint(),
        Outgoing {
            to: to.cloned(),
            kind: MessageKind::Message,
            data: serde_json::Value::from(text).to_string(),
            client_id: client_id.map(|id| ClientMessageId::parse(id).expect("valid id")),
        },
    )
}

pub fn post_request(
    room: &RoomId,
    sender: &PeerId,
    messages: Vec<(MessageId, Outgoing)>,
) -> PostRequest {
    PostRequest {
        room: room.clone(),
        sender: sender.clone(),
        messages,
        inbox_limit: 10_000,
        rate_limit: RateLimit {
            posts: 10_000,
            window_ms: 10_000,
        },
        timing: timing(0),
    }
}

/// Posts one app message whose data is the JSON string `text`, panicking on failure.
pub async fn post_one(
    store: &dyn Store,
    room: &RoomId,
    from: &PeerId,
    to: Option<&PeerId>,
    text: &str,
) -> Posted {
    store
        .post(post_request(room, from, vec![app_message(to, text, None)]))
        .await
        .expect("post succeeds")
}

async fn read_all(store: &dyn Store, room: &RoomId, peer: &PeerId) -> Vec<StoredMessage> {
    store
        .read(room, peer, 0, ReadLimit::messages(1000), timing(0).now)
        .await
        .expect("read succeeds")
        .messages
}

fn texts(messages: &[StoredMessage], kind: MessageKind) -> Vec<String> {
    messages
        .iter()
        .filter(|message| message.kind == kind)
        .map(|message| {
            serde_json::from_str::<String>(&message.data).unwrap_or_else(|_| message.data.clone())
        })
        .collect()
}

pub async fn join_lists_members_and_announces_the_newcomer(store: Arc<dyn Store>) {
    let room = unique_room("join");
    // Members who joined in the same millisecond are listed by id: these ids sort in join
    // order, so the test does not depend on the clock ticking between joins.
    let base = ulid::Ulid::new();
    let [alice, bob, carol] =
        ["1", "2", "3"].map(|n| PeerId::parse(&format!("{base}-{n}")).expect("valid peer"));
    assert!(join(&*store, &room, &alice).await.is_empty());
    assert_eq!(
        join(&*store, &room, &bob).await,
        std::slice::from_ref(&alice)
    );
    assert_eq!(
        join(&*store, &room, &carol).await,
        [alice.clone(), bob.clone()]
    );

    let inbox = read_all(&*store, &room, &alice).await;
    let joined: Vec<_> = inbox
        .iter()
        .map(|message| (message.kind, message.from.clone()))
        .collect();
    assert_eq!(
        joined,
        [
            (MessageKind::PeerJoined, bob.clone()),
            (MessageKind::PeerJoined, carol.clone())
        ]
    );
    assert_eq!(inbox[0].data, format!(r#"{{"name":"name-{bob}"}}"#));
    assert_eq!(inbox[0].to, alice);
    assert_eq!(
        read_all(&*store, &room, &bob).await.len(),
        1,
        "bob hears of carol only"
    );
    assert!(read_all(&*store, &room, &carol).await.is_empty());
    assert!(
        read_all(&*store, &unique_room("other"), &alice)
            .await
            .is_empty(),
        "another room's inbox of the same peer is separate"
    );
}

pub async fn join_refuses_a_full_room(store: Arc<dyn Store>) {
    let room = unique_room("full");
    for _ in 0..2 {
        let request = JoinRequest {
            room: room.clone(),
            peer: PeerId::mint(),
            name: None,
            capacity: 2,
            inbox_limit: 10_000,
            join_rate: OPEN_JOINS,
            timing: timing(0),
        };
        store.join(request).await.expect("room has space");
    }
    let third = JoinRequest {
        room: room.clone(),
        peer: PeerId::mint(),
        name: None,
        capacity: 2,
        inbox_limit: 10_000,
        join_rate: OPEN_JOINS,
        timing: timing(0),
    };
    assert!(matches!(
        store.join(third.clone()).await,
        Err(StoreError::RoomFull)
    ));
    let other_room = JoinRequest {
        room: unique_room("not-full"),
        ..third
    };
    assert!(store.join(other_room).await.is_ok(), "capacity is per room");
}

pub async fn post_delivers_in_order_with_contiguous_sequence(store: Arc<dyn Store>) {
    let room = unique_room("order");
    let (alice, bob) = (PeerId::mint(), PeerId::mint());
    join(&*store, &room, &alice).await;
    join(&*store, &room, &bob).await;
    let batch: Vec<_> = (0..30)
        .map(|i| app_message(Some(&bob), &format!("m{i}"), None))
        .collect();
    let minted: Vec<_> = batch.iter().map(|(id, _)| id.clone()).collect();
    let posted = store
        .post(post_request(&room, &alice, batch))
        .await
        .expect("post succeeds");
    assert_eq!(posted.ids, minted);
    assert_eq!(posted.recipients, std::slice::from_ref(&bob));
    for i in 30..40 {
        post_one(&*store, &room, &alice, Some(&bob), &format!("m{i}")).await;
    }
    let inbox = read_all(&*store, &room, &bob).await;
    let expected: Vec<_> = (0..40).map(|i| format!("m{i}")).collect();
    assert_eq!(texts(&inbox, MessageKind::Message), expected);
    let seqs: Vec<_> = inbox.iter().map(|message| message.seq).collect();
    assert_eq!(
        seqs,
        (1..=40).collect::<Vec<_>>(),
        "sequence numbers are contiguous from 1"
    );
    assert!(
        inbox
            .iter()
            .all(|message| message.from == alice && message.to == bob)
    );
    assert!(
        texts(
            &read_all(&*store, &room, &alice).await,
            MessageKind::Message
        )
        .is_empty(),
        "the sender's inbox is untouched"
    );
}

pub async fn broadcast_reaches_every_other_member(store: Arc<dyn Store>) {
    let room = unique_room("broadcast");
    let peers = [PeerId::mint(), PeerId::mint(), PeerId::mint()];
    for peer in &peers {
        join(&*store, &room, peer).await;
    }
    let posted = post_one(&*store, &room, &peers[0], None, "hello all").await;
    assert_eq!(posted.recipients.len(), 2);
    for peer in &peers[1..] {
        let inbox = read_all(&*store, &room, peer).await;
        let hello: Vec<_> = inbox
            .iter()
            .filter(|message| message.kind == MessageKind::Message)
            .collect();
        assert_eq!(hello.len(), 1);
        assert_eq!(hello[0].id, posted.ids[0], "one server id in every inbox");
        assert_eq!(&hello[0].to, peer);
    }
    assert!(
        texts(
            &read_all(&*store, &room, &peers[0]).await,
            MessageKind::Message
        )
        .is_empty()
    );
}

pub async fn batch_with_a_stranger_stores_nothing(store: Arc<dyn Store>) {
    let room = unique_room("stranger");
    let (alice, bob, stranger) = (PeerId::mint(), PeerId::mint(), PeerId::mint());
    join(&*store, &room, &alice).await;
    join(&*store, &room, &bob).await;
    let batch = vec![
        app_message(Some(&bob), "first", Some("c-1")),
        app_message(Some(&stranger), "second", None),
    ];
    let result = store.post(post_request(&room, &alice, batch)).await;
    assert!(matches!(result, Err(StoreError::NoSuchRecipient(peer)) if peer == stranger));
    assert!(texts(&read_all(&*store, &room, &bob).await, MessageKind::Message).is_empty());
    let retry = store
        .post(post_request(
            &room,
            &alice,
            vec![app_message(Some(&bob), "first", Some("c-1"))],
        ))
        .await
        .expect("post succeeds");
    assert_eq!(
        texts(&read_all(&*store, &room, &bob).await, MessageKind::Message),
        ["first"],
        "the failed batch did not record its client id"
    );
    assert_eq!(retry.ids.len(), 1);
}

pub async fn non_member_cannot_post(store: Arc<dyn Store>) {
    let room = unique_room("outsider");
    let (alice, outsider) = (PeerId::mint(), PeerId::mint());
    join(&*store, &room, &alice).await;
    let result = store
        .post(post_request(
            &room,
            &outsider,
            vec![app_message(Some(&alice), "hi", None)],
        ))
        .await;
    assert!(matches!(result, Err(StoreError::PeerGone)));
    assert!(matches!(
        store.touch(&room, &outsider, 0, timing(0).now).await,
        Err(StoreError::PeerGone)
    ));
}

pub async fn repeated_client_ids_are_stored_once(store: Arc<dyn Store>) {
    let room = unique_room("idempotent");
    let (alice, bob, carol) = (PeerId::mint(), PeerId::mint(), PeerId::mint());
    join(&*store, &room, &alice).await;
    join(&*store, &room, &bob).await;
    join(&*store, &room, &carol).await;
    let first = store
        .post(post_request(
            &room,
            &alice,
            vec![app_message(Some(&bob), "once", Some("c-17"))],
        ))
        .await
        .expect("post succeeds");
    let again = store
        .post(post_request(
            &room,
            &alice,
            vec![app_message(Some(&bob), "once", Some("c-17"))],
        ))
        .await
        .expect("repeat succeeds");
    assert_eq!(first.ids, again.ids);
    let batch = vec![
        app_message(Some(&bob), "twice in one batch", Some("c-18")),
        app_message(Some(&bob), "twice in one batch", Some("c-18")),
        app_message(Some(&bob), "once", Some("c-17")),
    ];
    let batched = store
        .post(post_request(&room, &alice, batch))
        .await
        .expect("post succeeds");
    assert_eq!(batched.ids[0], batched.ids[1]);
    assert_eq!(batched.ids[2], first.ids[0]);
    assert_eq!(
        texts(&read_all(&*store, &room, &bob).await, MessageKind::Message),
        ["once", "twice in one batch"]
    );
    let from_carol = store
        .post(post_request(
            &room,
            &carol,
            vec![app_message(Some(&bob), "carol's own", Some("c-17"))],
        ))
        .await
        .expect("post succeeds");
    assert_ne!(from_carol.ids, first.ids, "client ids are per sender");
}

pub async fn a_repeat_to_a_peer_who_left_gets_its_first_ids(store: Arc<dyn Store>) {
    // The first attempt committed but its answer was lost; the recipient read it and left;
    // the sender's retry must not be told that the recipient does not exist.
    let room = unique_room("repeat-after-leave");
    let (alice, bob) = (PeerId::mint(), PeerId::mint());
    join(&*store, &room, &alice).await;
    join(&*store, &room, &bob).await;
    let bye = || vec![app_message(Some(&bob), "bye", Some("bye-1"))];
    let first = store
        .post(post_request(&room, &alice, bye()))
        .await
        .expect("post succeeds");
    store
        .leave(&room, &bob, timing(0))
        .await
        .expect("bob leaves");
    let retry = store
        .post(post_request(&room, &alice, bye()))
        .await
        .expect("the retry is answered as the first attempt was");
    assert_eq!(retry.ids, first.ids);
    let fresh = store
        .post(post_request(
            &room,
            &alice,
            vec![app_message(Some(&bob), "new", Some("m-2"))],
        ))
        .await;
    assert!(
        matches!(fresh, Err(StoreError::NoSuchRecipient(_))),
        "a new message to bob is still refused"
    );
}

pub async fn a_repeat_to_a_full_inbox_gets_its_first_ids(store: Arc<dyn Store>) {
    // The first attempt filled bob's inbox but its answer was lost: the retry is recognised
    // before the inbox limit is checked.
    let room = unique_room("repeat-full-inbox");
    let (alice, bob) = (PeerId::mint(), PeerId::mint());
    join(&*store, &room, &alice).await;
    join(&*store, &room, &bob).await;
    let post = |text: &str, client_id: &str| PostRequest {
        inbox_limit: 1,
        ..post_request(
            &room,
            &alice,
            vec![app_message(Some(&bob), text, Some(client_id))],
        )
    };
    let first = store
        .post(post("fills", "f-1"))
        .await
        .expect("post succeeds");
    let retry = store
        .post(post("fills", "f-1"))
        .await
        .expect("the retry is answered as the first attempt was");
    assert_eq!(retry.ids, first.ids);
    let fresh = store.post(post("more", "f-2")).await;
    assert!(
        matches!(fresh, Err(StoreError::InboxFull(ref peer)) if *peer == bob),
        "a new message to the full inbox is still refused: {fresh:?}"
    );
    assert_eq!(
        texts(&read_all(&*store, &room, &bob).await, MessageKind::Message),
        ["fills"]
    );
}

pub async fn repeats_at_the_flood_limit_get_their_first_ids_and_do_not_count(
    store: Arc<dyn Store>,
) {
    // Issue 19, item 8: a retried post near the flood limit gets its original ids, and a
    // post made only of repeats does not use up the window.
    let room = unique_room("repeat-flood");
    let (alice, bob) = (PeerId::mint(), PeerId::mint());
    join(&*store, &room, &alice).await;
    join(&*store, &room, &bob).await;
    let post = |text: &str, client_id: &str| {
        let request = PostRequest {
            rate_limit: RateLimit {
                posts: 3,
                window_ms: 60_000,
            },
            ..post_request(
                &room,
                &alice,
                vec![app_message(Some(&bob), text, Some(client_id))],
            )
        };
        let store = Arc::clone(&store);
        async move { store.post(request).await }
    };
    let first = post("p1", "r-1").await.expect("1st post of 3");
    let again = post("p1", "r-1").await.expect("a repeat is answered");
    assert_eq!(again.ids, first.ids);
    post("p2", "r-2").await.expect("2nd post of 3");
    let third = post("p3", "r-3")
        .await
        .expect("3rd post of 3: the repeat did not count");
    let at_limit = post("p3", "r-3").await;
    assert!(
        matches!(at_limit, Ok(ref posted) if posted.ids == third.ids),
        "a repeat at the limit gets its first ids, not 429: {at_limit:?}"
    );
    assert!(
        matches!(post("p4", "r-4").await, Err(StoreError::RateLimited { .. })),
        "a new post is still refused"
    );
    assert_eq!(
        texts(&read_all(&*store, &room, &bob).await, MessageKind::Message),
        ["p1", "p2", "p3"]
    );
}

pub async fn reads_replay_from_any_cursor(store: Arc<dyn Store>) {
    let room = unique_room("replay");
    let (alice, bob) = (PeerId::mint(), PeerId::mint());
    join(&*store, &room, &alice).await;
    join(&*store, &room, &bob).await;
    for i in 0..5 {
        post_one(&*store, &room, &alice, Some(&bob), &format!("m{i}")).await;
    }
    let now = timing(0).now;
    let first = store
        .read(&room, &bob, 0, ReadLimit::messages(2), now)
        .await
        .expect("read")
        .messages;
    assert_eq!(texts(&first, MessageKind::Message), ["m0", "m1"]);
    let again = store
        .read(&room, &bob, 0, ReadLimit::messages(2), now)
        .await
        .expect("read")
        .messages;
    assert_eq!(first, again, "reads do not consume");
    let rest = store
        .read(&room, &bob, first[1].seq, ReadLimit::messages(100), now)
        .await
        .expect("read")
        .messages;
    assert_eq!(texts(&rest, MessageKind::Message), ["m2", "m3", "m4"]);
    assert!(
        store
            .read(&room, &bob, rest[2].seq, ReadLimit::messages(100), now)
            .await
            .expect("read")
            .messages
            .is_empty()
    );
}

/// A read returns no more than its byte budget admits (the first message always), and reading
/// on from its last message returns every message once, in order, cut anywhere: between posts
/// or inside one post's batch (one item on DynamoDB).
pub async fn a_read_stops_at_its_byte_budget(store: Arc<dyn Store>) {
    let room = unique_room("budget");
    let (alice, bob) = (PeerId::mint(), PeerId::mint());
    join(&*store, &room, &alice).await;
    join(&*store, &room, &bob).await;
    let text = |i: usize| format!("{i:02}{}", "x".repeat(10_000));
    for i in 0..4 {
        post_one(&*store, &room, &alice, Some(&bob), &text(i)).await;
    }
    let batch = (4..8)
        .map(|i| app_message(Some(&bob), &text(i), None))
        .collect();
    store
        .post(post_request(&room, &alice, batch))
        .await
        .expect("post succeeds");
    for i in 8..10 {
        post_one(&*store, &room, &alice, Some(&bob), &text(i)).await;
    }
    let all = read_all(&*store, &room, &bob).await;
    assert_eq!(all.len(), 10);
    let cost = all[0].poll_cost();
    let now = timing(0).now;
    // Room for three messages and half of a fourth.
    let budget = ReadLimit {
        messages: 100,
        bytes: 3 * cost + cost / 2,
    };
    let first = store.read(&room, &bob, 0, budget, now).await.expect("read");
    assert_eq!(first.messages, all[..3], "a read stops at its byte budget");
    assert_eq!(
        first.through, all[2].seq,
        "a read cut by its budget moves a cursor no further than its last message"
    );
    let mut received = first.messages;
    for _ in 0..10 {
        let cursor = received.last().expect("some").seq;
        let next = store
            .read(&room, &bob, cursor, budget, now)
            .await
            .expect("read");
        if next.messages.is_empty() {
            break;
        }
        assert!(next.messages.len() <= 3, "{} messages", next.messages.len());
        received.extend(next.messages);
    }
    assert_eq!(received, all, "every message once, in order");
    // A message larger than the whole budget still comes, alone.
    let small = ReadLimit {
        messages: 100,
        bytes: cost / 2,
    };
    let alone = store.read(&room, &bob, 0, small, now).await.expect("read");
    assert_eq!(alone.messages, all[..1]);
    assert_eq!(alone.through, all[0].seq);
    // The count limit still holds within a budget.
    let two = ReadLimit {
        messages: 2,
        bytes: 100 * cost,
    };
    let counted = store.read(&room, &bob, 0, two, now).await.expect("read");
    assert_eq!(counted.messages, all[..2]);
}

pub async fn expired_messages_are_never_read(store: Arc<dyn Store>) {
    let room = unique_room("expiry");
    let (alice, bob) = (PeerId::mint(), PeerId::mint());
    join(&*store, &room, &alice).await;
    join(&*store, &room, &bob).await;
    let mut short_lived = post_request(&room, &alice, vec![app_message(Some(&bob), "short", None)]);
    short_lived.timing.expires_at = short_lived.timing.now + 1_000;
    store.post(short_lived).await.expect("post succeeds");
    post_one(&*store, &room, &alice, Some(&bob), "long").await;
    let later = timing(2_000).now;
    let held = store
        .read(&room, &bob, 0, ReadLimit::messages(100), later)
        .await
        .expect("read");
    assert_eq!(texts(&held.messages, MessageKind::Message), ["long"]);
}

pub async fn touch_reports_head_and_acknowledgements_free_the_inbox(store: Arc<dyn Store>) {
    let room = unique_room("inbox");
    let (alice, bob) = (PeerId::mint(), PeerId::mint());
    join(&*store, &room, &alice).await;
    join(&*store, &room, &bob).await;
    let limited = |text: &str| PostRequest {
        inbox_limit: 3,
        ..post_request(&room, &alice, vec![app_message(Some(&bob), text, None)])
    };
    for i in 0..3 {
        store
            .post(limited(&format!("m{i}")))
            .await
            .expect("inbox has room");
    }
    assert!(
        matches!(store.post(limited("m3")).await, Err(StoreError::InboxFull(peer)) if peer == bob)
    );
    let head = store
        .touch(&room, &bob, 0, timing(0).now)
        .await
        .expect("bob is present");
    assert_eq!(head, 3);
    assert!(
        store.post(limited("m3")).await.is_err(),
        "polling without a cursor acknowledges nothing"
    );
    store
        .touch(&room, &bob, 2, timing(0).now)
        .await
        .expect("bob is present");
    store
        .post(limited("m3"))
        .await
        .expect("two acknowledged, so room for more");
    store
        .touch(&room, &bob, 99, timing(0).now)
        .await
        .expect("bob is present");
    assert!(store.post(limited("m4")).await.is_ok());
    assert_eq!(
        texts(&read_all(&*store, &room, &bob).await, MessageKind::Message),
        ["m0", "m1", "m2", "m3", "m4"]
    );
}

pub async fn sweep_removes_silent_peers_and_tells_the_rest(store: Arc<dyn Store>) {
    let room = unique_room("sweep");
    let (silent, talker, listener) = (PeerId::mint(), PeerId::mint(), PeerId::mint());
    // All three join two minutes ago; then only two of them poll.
    for peer in [&silent, &talker, &listener] {
        join_at(&*store, &room, peer, timing(-120_000)).await;
    }
    for peer in [&talker, &listener] {
        store
            .touch(&room, peer, 0, timing(0).now)
            .await
            .expect("present");
    }
    let departures = store.sweep(&room, timing(0)).await.expect("sweep");
    assert_eq!(departures.gone, std::slice::from_ref(&silent));
    assert_eq!(departures.notified.len(), 2);
    for peer in [&talker, &listener] {
        let left: Vec<_> = read_all(&*store, &room, peer)
            .await
            .into_iter()
            .filter(|message| message.kind == MessageKind::PeerLeft)
            .collect();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].from, silent);
        assert_eq!(left[0].data, r#"{"reason":"timeout"}"#);
    }
    assert!(matches!(
        store.touch(&room, &silent, 0, timing(0).now).await,
        Err(StoreError::PeerGone)
    ));
    assert!(
        store
            .sweep(&room, timing(0))
            .await
            .expect("sweep")
            .gone
            .is_empty(),
        "only once"
    );
    let result = store
        .post(post_request(
            &room,
            &talker,
            vec![app_message(Some(&silent), "hello?", None)],
        ))
        .await;
    assert!(matches!(result, Err(StoreError::NoSuchRecipient(_))));
}

pub async fn leave_tells_the_rest_and_is_idempotent(store: Arc<dyn Store>) {
    let room = unique_room("leave");
    let (alice, bob) = (PeerId::mint(), PeerId::mint());
    join(&*store, &room, &alice).await;
    join(&*store, &room, &bob).await;
    let departures = store.leave(&room, &bob, timing(0)).await.expect("leave");
    assert_eq!(departures.gone, std::slice::from_ref(&bob));
    assert_eq!(departures.notified, std::slice::from_ref(&alice));
    let left: Vec<_> = read_all(&*store, &room, &alice)
        .await
        .into_iter()
        .filter(|message| message.kind == MessageKind::PeerLeft)
        .collect();
    assert_eq!(left.len(), 1);
    assert_eq!(
        (left[0].from.clone(), left[0].data.as_str()),
        (bob.clone(), r#"{"reason":"left"}"#)
    );
    assert_eq!(
        store
            .leave(&room, &bob, timing(0))
            .await
            .expect("leave again"),
        Default::default()
    );
    assert!(matches!(
        store.touch(&room, &bob, 0, timing(0).now).await,
        Err(StoreError::PeerGone)
    ));
}

pub async fn concurrent_senders_keep_their_own_order(store: Arc<dyn Store>) {
    let room = unique_room("concurrent");
    let recipient = PeerId::mint();
    join(&*store, &room, &recipient).await;
    let senders: Vec<PeerId> = (0..4).map(|_| PeerId::mint()).collect();
    for sender in &senders {
        join(&*store, &room, sender).await;
    }
    let tasks: Vec<_> = senders
        .iter()
        .map(|sender| {
            let (store, room, sender, recipient) = (
                Arc::clone(&store),
                room.clone(),
                sender.clone(),
                recipient.clone(),
            );
            tokio::spawn(async move {
                for i in 0..25 {
                    post_one(
                        &*store,
                        &room,
                        &sender,
                        Some(&recipient),
                        &format!("{sender}/{i}"),
                    )
                    .await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("sender finished");
    }
    let inbox: Vec<_> = read_all(&*store, &room, &recipient)
        .await
        .into_iter()
        .filter(|message| message.kind == MessageKind::Message)
        .collect();
    assert_eq!(inbox.len(), 100);
    let mut next: HashMap<PeerId, usize> = HashMap::new();
    for message in &inbox {
        let text: String = serde_json::from_str(&message.data).expect("a string");
        let expected = next.entry(message.from.clone()).or_default();
        assert_eq!(
            text,
            format!("{}/{expected}", message.from),
            "sender order broken"
        );
        *expected += 1;
    }
    let seqs: Vec<_> = inbox.iter().map(|message| message.seq).collect();
    assert!(seqs.windows(2).all(|pair| pair[0] < pair[1]));
}

pub async fn housekeeping_sweeps_abandoned_rooms(store: Arc<dyn Store>) {
    // Stores that expire data themselves may do nothing here; either way the next join must
    // find the abandoned room empty, and the silent peers gone.
    let room = unique_room("abandoned");
    let (alice, bob) = (PeerId::mint(), PeerId::mint());
    join_at(&*store, &room, &alice, timing(-120_000)).await;
    join_at(&*store, &room, &bob, timing(-120_000)).await;
    store.housekeeping(timing(0)).await.expect("housekeeping");
    let fresh = PeerId::mint();
    assert!(
        join(&*store, &room, &fresh).await.is_empty(),
        "the room starts afresh"
    );
    for peer in [&alice, &bob] {
        assert!(matches!(
            store.touch(&room, peer, 0, timing(0).now).await,
            Err(StoreError::PeerGone)
        ));
    }
}

pub async fn health_answers(store: Arc<dyn Store>) {
    store.health().await.expect("healthy");
}

pub async fn rate_limit_counts_each_members_posts_per_window(store: Arc<dyn Store>) {
    let room = unique_room("flood");
    let (alice, bob, carol) = (PeerId::mint(), PeerId::mint(), PeerId::mint());
    for peer in [&alice, &bob, &carol] {
        join(&*store, &room, peer).await;
    }
    let start = timing(0);
    let at = |offset_ms: i64| Timing {
        now: start.now + offset_ms,
        expires_at: start.expires_at + offset_ms,
        stale_before: start.stale_before + offset_ms,
        post_window_ms: start.post_window_ms,
    };
    let limit = RateLimit {
        posts: 3,
        window_ms: 10_000,
    };
    let post = |from: &PeerId, to: &PeerId, text: &str, offset_ms: i64| {
        let request = PostRequest {
            rate_limit: limit,
            timing: at(offset_ms),
            ..post_request(&room, from, vec![app_message(Some(to), text, None)])
        };
        let store = Arc::clone(&store);
        async move { store.post(request).await }
    };

    for i in 0..3 {
        post(&alice, &bob, &format!("a{i}"), i * 100)
            .await
            .expect("within the limit");
    }
    let refused = post(&alice, &bob, "a3", 1_000).await;
    assert!(
        matches!(refused, Err(StoreError::RateLimited { retry_after: 9 })),
        "the fourth post in 10 s is refused until the window ends: {refused:?}"
    );
    assert!(
        matches!(
            post(&alice, &bob, "a3", 9_999).await,
            Err(StoreError::RateLimited { retry_after: 1 })
        ),
        "a refused post does not count, and Retry-After is at least 1 s"
    );
    post(&bob, &alice, "b0", 1_000)
        .await
        .expect("the limit is per sender");

    let elsewhere = unique_room("flood-elsewhere");
    join(&*store, &elsewhere, &alice).await;
    join(&*store, &elsewhere, &bob).await;
    let other_room = PostRequest {
        rate_limit: limit,
        timing: at(1_000),
        ..post_request(&elsewhere, &alice, vec![app_message(Some(&bob), "x", None)])
    };
    store
        .post(other_room)
        .await
        .expect("the limit is per room membership");

    // Posts that fail for another reason do not use up the window.
    post(&carol, &bob, "c0", 0).await.expect("within the limit");
    post(&carol, &bob, "c1", 0).await.expect("within the limit");
    let stranger = PeerId::mint();
    assert!(matches!(
        post(&carol, &stranger, "lost", 0).await,
        Err(StoreError::NoSuchRecipient(_))
    ));
    post(&carol, &bob, "c2", 0)
        .await
        .expect("the failed post was not counted");
    assert!(matches!(
        post(&carol, &bob, "c3", 0).await,
        Err(StoreError::RateLimited { .. })
    ));

    post(&alice, &bob, "a4", 10_000)
        .await
        .expect("a new window opens when the last one ends");
    post(&alice, &bob, "a5", 10_001)
        .await
        .expect("within the new window");
    let inbox = read_all(&*store, &room, &bob).await;
    assert_eq!(
        texts(&inbox, MessageKind::Message),
        ["a0", "a1", "a2", "c0", "c1", "c2", "a4", "a5"],
        "refused posts stored nothing"
    );
}

pub async fn a_retried_post_of_repeats_is_not_counted_again(store: Arc<dyn Store>) {
    // The first attempt committed but its answer was lost; the retry comes with the flood
    // window full, and must get its first ids, not a 429.
    let room = unique_room("retry-at-limit");
    let (alice, bob) = (PeerId::mint(), PeerId::mint());
    join(&*store, &room, &alice).await;
    join(&*store, &room, &bob).await;
    let request = || PostRequest {
        rate_limit: RateLimit {
            posts: 1,
            window_ms: 10_000,
        },
        ..post_request(
            &room,
            &alice,
            vec![app_message(Some(&bob), "offer", Some("offer-1"))],
        )
    };
    let first = store.post(request()).await.expect("within the limit");
    let retry = store
        .post(request())
        .await
        .expect("a retry of repeats is answered, not counted");
    assert_eq!(retry.ids, first.ids);
    assert_eq!(
        texts(&read_all(&*store, &room, &bob).await, MessageKind::Message),
        ["offer"]
    );
}

pub async fn expired_unread_messages_free_the_inbox(store: Arc<dyn Store>) {
    // The recipient pauses past the TTL: what expired unread no longer counts, and an empty
    // read lets its cursor move past the expired numbers.
    let room = unique_room("expired-inbox");
    let (alice, bob) = (PeerId::mint(), PeerId::mint());
    join(&*store, &room, &alice).await;
    join(&*store, &room, &bob).await;
    let head = store
        .touch(&room, &bob, 0, timing(0).now)
        .await
        .expect("bob is present");
    let start = timing(0);
    let limited = |text: &str, offset_ms: i64, ttl_ms: i64| {
        let now = start.now + offset_ms;
        PostRequest {
            inbox_limit: 3,
            timing: Timing {
                now,
                expires_at: now + ttl_ms,
                stale_before: now - 60_000,
                post_window_ms: 10_000,
            },
            ..post_request(&room, &alice, vec![app_message(Some(&bob), text, None)])
        }
    };
    for i in 0..3 {
        store
            .post(limited(&format!("short{i}"), 0, 1_000))
            .await
            .expect("inbox has room");
    }
    assert!(matches!(
        store.post(limited("refused", 500, 600_000)).await,
        Err(StoreError::InboxFull(_))
    ));
    store
        .post(limited("after expiry", 2_000, 600_000))
        .await
        .expect("expired messages no longer fill the inbox");

    let read = store
        .read(
            &room,
            &bob,
            head,
            ReadLimit::messages(100),
            start.now + 2_000,
        )
        .await
        .expect("read");
    assert_eq!(
        texts(&read.messages, MessageKind::Message),
        ["after expiry"]
    );
    let capped = store
        .read(&room, &bob, head, ReadLimit::messages(2), start.now + 2_000)
        .await
        .expect("read");
    assert_eq!(capped.messages.len(), 1, "the live one, after the expired");
    let past = store
        .read(
            &room,
            &bob,
            read.through,
            ReadLimit::messages(100),
            start.now + 2_000,
        )
        .await
        .expect("read");
    assert!(past.messages.is_empty());
    assert_eq!(past.through, read.through, "nothing newer to skip to");
    assert_eq!(read.through, head + 4);

    // With only expired messages after the cursor, an empty read moves it past them.
    for i in 0..2 {
        store
            .post(limited(&format!("late{i}"), 3_000, 1_000))
            .await
            .expect("inbox has room");
    }
    let skipped = store
        .read(
            &room,
            &bob,
            read.through,
            ReadLimit::messages(100),
            start.now + 5_000,
        )
        .await
        .expect("read");
    assert!(skipped.messages.is_empty());
    assert_eq!(skipped.through, read.through + 2);
    store
        .touch(&room, &bob, skipped.through, start.now + 5_000)
        .await
        .expect("acknowledges through the expired numbers");
}

pub async fn notices_of_joins_count_against_the_inbox_limit(store: Arc<dyn Store>) {
    // Join/leave cycling must not flood a member's inbox past its limit with peer-joined and
    // peer-left notices.
    let room = unique_room("cycling");
    let victim = PeerId::mint();
    join(&*store, &room, &victim).await;
    let join_limited = |peer: &PeerId| JoinRequest {
        room: room.clone(),
        peer: peer.clone(),
        name: None,
        capacity: 8,
        inbox_limit: 4,
        join_rate: OPEN_JOINS,
        timing: timing(0),
    };
    let mut refused = None;
    for _ in 0..10 {
        let cycler = PeerId::mint();
        match store.join(join_limited(&cycler)).await {
            Ok(_) => {
                store
                    .leave(&room, &cycler, timing(0))
                    .await
                    .expect("leaves");
            }
            Err(error) => {
                refused = Some(error);
                break;
            }
        }
    }
    assert!(
        matches!(&refused, Some(StoreError::InboxFull(peer)) if *peer == victim),
        "joins went on past a full inbox: {refused:?}"
    );
    let held = read_all(&*store, &room, &victim).await;
    assert!(
        held.len() <= 5,
        "the victim holds {} notices with a limit of 4",
        held.len()
    );
    let last = held.last().map_or(0, |message| message.seq);
    store
        .touch(&room, &victim, last, timing(0).now)
        .await
        .expect("the victim reads");
    store
        .join(join_limited(&PeerId::mint()))
        .await
        .expect("a join once the victim has read");
}

/// `start` moved on by `offset_ms`: cases whose arithmetic is exact count from one instant,
/// however long the store takes between their calls.
fn shifted(start: Timing, offset_ms: i64) -> Timing {
    Timing {
        now: start.now + offset_ms,
        expires_at: start.expires_at + offset_ms,
        stale_before: start.stale_before + offset_ms,
        post_window_ms: start.post_window_ms,
    }
}

/// A join to `room` (capacity 2) under `rate` at `timing`.
fn rated_join(room: &RoomId, peer: &PeerId, rate: RoomJoinRate, timing: Timing) -> JoinRequest {
    JoinRequest {
        room: room.clone(),
        peer: peer.clone(),
        name: None,
        capacity: 2,
        inbox_limit: 10_000,
        join_rate: rate,
        timing,
    }
}

pub async fn the_join_limit_is_kept_per_room(store: Arc<dyn Store>) {
    // Kept in the store, so every process sharing it (Lambda instances, the functions under
    // watch) counts the same joins: a burst, then one join per period.
    let room = unique_room("join-limit");
    let rate = RoomJoinRate {
        burst: 3,
        period_ms: 10_000,
    };
    let start = timing(0);
    let at = |offset_ms| shifted(start, offset_ms);
    for _ in 0..3 {
        let peer = PeerId::mint();
        store
            .join(rated_join(&room, &peer, rate, at(0)))
            .await
            .expect("within the burst");
        store.leave(&room, &peer, at(0)).await.expect("leaves");
    }
    let refused = store
        .join(rated_join(&room, &PeerId::mint(), rate, at(0)))
        .await;
    assert!(
        matches!(refused, Err(StoreError::JoinsLimited { retry_after: 10 })),
        "the fourth join at once waits a whole period: {refused:?}"
    );
    let refused = store
        .join(rated_join(&room, &PeerId::mint(), rate, at(9_500)))
        .await;
    assert!(
        matches!(refused, Err(StoreError::JoinsLimited { retry_after: 1 })),
        "a refused join does not count, and Retry-After is at least 1 s: {refused:?}"
    );
    store
        .join(rated_join(&room, &PeerId::mint(), rate, at(10_000)))
        .await
        .expect("one more join per period");
    store
        .join(rated_join(
            &unique_room("join-limit-elsewhere"),
            &PeerId::mint(),
            rate,
            at(0),
        ))
        .await
        .expect("the limit is per room");

    // A join refused for another reason (the room is full) does not spend the budget.
    let full = unique_room("join-limit-full");
    for _ in 0..2 {
        store
            .join(rated_join(&full, &PeerId::mint(), rate, at(0)))
            .await
            .expect("room has space");
    }
    assert!(matches!(
        store
            .join(rated_join(&full, &PeerId::mint(), rate, at(0)))
            .await,
        Err(StoreError::RoomFull)
    ));
    assert!(
        matches!(
            store
                .join(rated_join(&full, &PeerId::mint(), rate, at(0)))
                .await,
            Err(StoreError::RoomFull)
        ),
        "still full, not limited: the refused join was not counted"
    );
}

pub async fn rejoining_continues_the_departed_members_post_count(store: Arc<dyn Store>) {
    // Leaving and joining again must not earn a fresh post budget within the window.
    let room = unique_room("rejoin-posts");
    let (victim, alice) = (PeerId::mint(), PeerId::mint());
    join(&*store, &room, &victim).await;
    join(&*store, &room, &alice).await;
    let limit = RateLimit {
        posts: 3,
        window_ms: 10_000,
    };
    let start = timing(0);
    let at = |offset_ms| shifted(start, offset_ms);
    let post = |from: &PeerId, text: &str, offset_ms: i64| {
        let request = PostRequest {
            rate_limit: limit,
            timing: at(offset_ms),
            ..post_request(&room, from, vec![app_message(Some(&victim), text, None)])
        };
        let store = Arc::clone(&store);
        async move { store.post(request).await }
    };
    for i in 0..3 {
        post(&alice, &format!("a{i}"), 0)
            .await
            .expect("within the limit");
    }
    store.leave(&room, &alice, at(0)).await.expect("leaves");
    let again = PeerId::mint();
    join(&*store, &room, &again).await;
    let refused = post(&again, "again", 1_000).await;
    assert!(
        matches!(refused, Err(StoreError::RateLimited { retry_after: 9 })),
        "the rejoined member continues the count of the one that left: {refused:?}"
    );
    // Handed on once more by its departure, then to nobody after the window.
    store.leave(&room, &again, at(1_000)).await.expect("leaves");
    let third = PeerId::mint();
    join(&*store, &room, &third).await;
    assert!(matches!(
        post(&third, "third", 2_000).await,
        Err(StoreError::RateLimited { .. })
    ));
    post(&third, "later", 10_000)
        .await
        .expect("a new window opens when the departed one ends");
    post(&victim, "victim", 0)
        .await
        .expect("the member that stayed keeps its own count");

    // A member that leaves after its window closed hands on nothing.
    let quiet = unique_room("rejoin-quiet");
    let (bob, carol) = (PeerId::mint(), PeerId::mint());
    join(&*store, &quiet, &victim).await;
    join(&*store, &quiet, &bob).await;
    let post_quiet = |from: &PeerId, offset_ms: i64| PostRequest {
        rate_limit: limit,
        timing: at(offset_ms),
        ..post_request(&quiet, from, vec![app_message(Some(&victim), "q", None)])
    };
    for _ in 0..3 {
        store
            .post(post_quiet(&bob, -20_000))
            .await
            .expect("within the limit");
    }
    store.leave(&quiet, &bob, at(0)).await.expect("leaves");
    join(&*store, &quiet, &carol).await;
    store
        .post(post_quiet(&carol, 0))
        .await
        .expect("the departed member's window had closed");
}

/// The cross-process poll cap's store half: each waiting poll's presence update records it
/// and returns the poll it replaced, in the same request; a touch that records no poll (ICE
/// servers) keeps the record; writers still ring the recorded address.
pub async fn a_waiting_poll_learns_the_poll_it_replaces(store: Arc<dyn Store>) {
    let room = unique_room("poll-record");
    let (alice, bob) = (PeerId::mint(), PeerId::mint());
    join(&*store, &room, &alice).await;
    join(&*store, &room, &bob).await;
    let now = timing(0).now;
    let waiting = |address, poll, until| {
        Some(Waiting {
            address,
            poll,
            until,
        })
    };
    let first = store
        .touch_waiting(&room, &bob, 0, now, waiting("here", "p1", now + 20_000))
        .await
        .expect("first poll");
    assert_eq!(first.previous, None, "no poll before the first");
    store
        .touch(&room, &bob, 0, now + 1)
        .await
        .expect("a touch without a poll");
    let second = store
        .touch_waiting(
            &room,
            &bob,
            0,
            now + 2,
            waiting("there", "p2", now + 30_000),
        )
        .await
        .expect("second poll");
    assert_eq!(
        second.previous,
        Some(PollRecord {
            poll: "p1".into(),
            address: "here".into(),
            until: now + 20_000,
        }),
        "the newer poll learns the older one, kept through the plain touch"
    );
    assert!(
        second
            .previous
            .as_ref()
            .is_some_and(|p| p.may_wait(now + 2))
    );
    let posted = store
        .post(PostRequest {
            room: room.clone(),
            sender: alice.clone(),
            messages: vec![app_message(Some(&bob), "ring", None)],
            inbox_limit: 1_000,
            rate_limit: RateLimit {
                posts: 100,
                window_ms: 10_000,
            },
            timing: timing(3),
        })
        .await
        .expect("posts");
    assert_eq!(
        posted.doorbells,
        [Doorbell::wake(bob.clone(), "there".into())],
        "writers ring where the latest poll waits"
    );
    let third = store
        .touch_waiting(
            &room,
            &bob,
            0,
            now + 4,
            waiting("there", "p3", now + 40_000),
        )
        .await
        .expect("third poll");
    assert_eq!(
        third.previous.map(|previous| previous.poll),
        Some("p2".into())
    );
}
