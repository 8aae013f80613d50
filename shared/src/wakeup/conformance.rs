//! The wake-up conformance suite: what every [`Wakeup`] adapter must do, run by each adapter's
//! tests with two adapters standing for two processes (each with its own [`Wakeups`]).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Listening, Wakeup, Wakeups};
use crate::ids::{PeerId, RoomId};
use crate::store::Doorbell;

/// How long a doorbell may take to arrive here, on a loaded test machine.
const ARRIVAL: Duration = Duration::from_secs(3);

/// Two "processes": an adapter and the registry it delivers into.
pub struct Process {
    pub wakeups: Arc<Wakeups>,
    pub adapter: Arc<dyn Wakeup>,
}

/// Runs every case. `make` builds one process's adapter over the given registry;
/// `dead_address` is an address of this adapter's kind where nobody listens.
pub async fn run_all<F, Fut>(make: F, dead_address: &str)
where
    F: Fn(Arc<Wakeups>) -> Fut,
    Fut: Future<Output = Arc<dyn Wakeup>>,
{
    let process = |wakeups: Arc<Wakeups>| {
        let adapter = make(Arc::clone(&wakeups));
        async move {
            Process {
                wakeups,
                adapter: adapter.await,
            }
        }
    };
    let poster = process(Arc::default()).await;
    let poller = process(Arc::default()).await;
    a_doorbell_wakes_only_the_named_inboxes_in_the_other_process(&poster, &poller).await;
    a_burst_of_doorbells_wakes_every_inbox(&poster, &poller).await;
    ringing_where_nobody_listens_neither_fails_nor_hangs(&poster, dead_address).await;
    a_process_does_not_ring_its_own_address(&poller).await;
    a_doorbell_ends_the_superseded_poll_in_the_other_process(&poster, &poller).await;
}

/// The process's address, listening while the result is held.
async fn listening(process: &Process) -> Listening {
    process
        .adapter
        .listen()
        .await
        .expect("the poller has an address")
}

fn room() -> RoomId {
    RoomId::parse(&format!("wake-{}", ulid::Ulid::new())).expect("valid")
}

/// Waits for `peer`'s inbox to be woken in `process`, ringing with `ring` once subscribed.
async fn woken_within(
    process: &Process,
    room: &RoomId,
    peer: &PeerId,
    limit: Duration,
    ring: impl Future<Output = ()>,
) -> Option<Duration> {
    let subscription = process.wakeups.subscribe(room, peer);
    let woken = subscription.notify().notified();
    tokio::pin!(woken);
    woken.as_mut().enable();
    let started = Instant::now();
    ring.await;
    tokio::time::timeout(limit, woken)
        .await
        .ok()
        .map(|()| started.elapsed())
}

pub async fn a_doorbell_wakes_only_the_named_inboxes_in_the_other_process(
    poster: &Process,
    poller: &Process,
) {
    let listening = listening(poller).await;
    let room = room();
    let (alice, bob) = (PeerId::mint(), PeerId::mint());
    let bob_subscription = poller.wakeups.subscribe(&room, &bob);
    let bob_woken = bob_subscription.notify().notified();
    tokio::pin!(bob_woken);
    bob_woken.as_mut().enable();
    let doorbell = Doorbell::wake(alice.clone(), listening.address.to_string());
    let waited = woken_within(
        poller,
        &room,
        &alice,
        ARRIVAL,
        poster.adapter.ring(&room, std::slice::from_ref(&doorbell)),
    )
    .await;
    assert!(
        waited.is_some(),
        "alice's poll in the other process was not woken"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(200), bob_woken)
            .await
            .is_err(),
        "bob was woken by a doorbell for alice"
    );
}

pub async fn a_burst_of_doorbells_wakes_every_inbox(poster: &Process, poller: &Process) {
    let listening = listening(poller).await;
    let room = room();
    let peers: Vec<PeerId> = (0..5).map(|_| PeerId::mint()).collect();
    let subscriptions: Vec<_> = peers
        .iter()
        .map(|peer| poller.wakeups.subscribe(&room, peer))
        .collect();
    let mut waiting = Vec::new();
    for subscription in &subscriptions {
        let mut woken = Box::pin(subscription.notify().notified());
        woken.as_mut().enable();
        waiting.push(woken);
    }
    // One post to several recipients, then one post per recipient.
    let doorbells: Vec<Doorbell> = peers
        .iter()
        .map(|peer| Doorbell::wake(peer.clone(), listening.address.to_string()))
        .collect();
    poster.adapter.ring(&room, &doorbells[..2]).await;
    for doorbell in &doorbells[2..] {
        poster
            .adapter
            .ring(&room, std::slice::from_ref(doorbell))
            .await;
    }
    for (index, woken) in waiting.into_iter().enumerate() {
        assert!(
            tokio::time::timeout(ARRIVAL, woken).await.is_ok(),
            "peer {index} of the burst was not woken"
        );
    }
}

pub async fn ringing_where_nobody_listens_neither_fails_nor_hangs(
    poster: &Process,
    dead_address: &str,
) {
    let started = Instant::now();
    let doorbell = Doorbell::wake(PeerId::mint(), dead_address.to_owned());
    poster.adapter.ring(&room(), &[doorbell]).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "ringing a dead address took {:?}",
        started.elapsed()
    );
}

pub async fn a_process_does_not_ring_its_own_address(process: &Process) {
    // Its polls were woken in-process already; a doorbell to itself would wake them twice.
    let listening = process.adapter.listen().await.expect("an address");
    let room = room();
    let peer = PeerId::mint();
    let doorbell = Doorbell::wake(peer.clone(), listening.address.to_string());
    let waited = woken_within(
        process,
        &room,
        &peer,
        Duration::from_millis(500),
        process.adapter.ring(&room, &[doorbell]),
    )
    .await;
    assert!(waited.is_none(), "a process rang its own address");
}

pub async fn a_doorbell_ends_the_superseded_poll_in_the_other_process(
    poster: &Process,
    poller: &Process,
) {
    let listening = listening(poller).await;
    let room = room();
    let (alice, bob) = (PeerId::mint(), PeerId::mint());
    let older = poller.wakeups.polls().take(&room, &alice, "older");
    let bobs = poller.wakeups.polls().take(&room, &bob, "older");
    // Alice's inbox is not woken by it: ending a poll is not news for her inbox.
    let subscription = poller.wakeups.subscribe(&room, &alice);
    let woken = subscription.notify().notified();
    tokio::pin!(woken);
    woken.as_mut().enable();
    let address = listening.address.to_string();
    poster
        .adapter
        .ring(
            &room,
            &[Doorbell::supersede(
                alice.clone(),
                address.clone(),
                "older".into(),
            )],
        )
        .await;
    assert!(
        tokio::time::timeout(ARRIVAL, older.superseded())
            .await
            .is_ok(),
        "the superseded poll in the other process was not ended"
    );
    let quiet = Duration::from_millis(200);
    assert!(
        tokio::time::timeout(quiet, bobs.superseded())
            .await
            .is_err(),
        "bob's poll was ended by a doorbell for alice's"
    );
    assert!(
        tokio::time::timeout(quiet, woken).await.is_err(),
        "ending a poll woke the inbox"
    );
    drop(older);
    // A late doorbell for a poll that a newer one of the same process replaced since ends
    // nothing.
    let newer = poller.wakeups.polls().take(&room, &alice, "newer");
    poster
        .adapter
        .ring(
            &room,
            &[Doorbell::supersede(alice.clone(), address, "older".into())],
        )
        .await;
    assert!(
        tokio::time::timeout(Duration::from_millis(500), newer.superseded())
            .await
            .is_err(),
        "a doorbell for an older poll ended the newer one"
    );
}
