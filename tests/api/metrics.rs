//! The standalone server's Prometheus metrics (issue 13): served on
//! `SIGNALPOST_METRICS_LISTEN` only, parsed with a real Prometheus text parser, and moving
//! with the traffic sent.

use std::collections::HashMap;

use prometheus_parse::{Sample, Scrape, Value as Metric};
use serde_json::json;

use crate::support::{Server, http, join, room, standalone_only};

/// Scrapes and parses the metrics endpoint at `url`.
async fn scrape(url: &str) -> Scrape {
    let response = http().get(url).send().await.expect("scrape");
    assert_eq!(response.status(), 200);
    let text = response.text().await.expect("text");
    Scrape::parse(text.lines().map(|line| Ok(line.to_owned()))).expect("valid Prometheus text")
}

/// The value of the sample named `name` whose labels include `labels` (0 when absent).
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|sample: &&Sample| sample.metric == name)
        .filter(|sample| {
            labels
                .iter()
                .all(|(key, wanted)| sample.labels.get(key) == Some(wanted))
        })
        .map(|sample| match &sample.value {
            Metric::Counter(value) | Metric::Gauge(value) | Metric::Untyped(value) => *value,
            Metric::Histogram(_) | Metric::Summary(_) => 0.0,
        })
        .sum()
}

/// The sample count of the histogram named `name`.
fn histogram_count(scrape: &Scrape, name: &str) -> u64 {
    scrape
        .samples
        .iter()
        .filter(|sample| sample.metric == name)
        .map(|sample| match &sample.value {
            Metric::Histogram(buckets) => buckets
                .iter()
                .map(|bucket| bucket.count as u64)
                .max()
                .unwrap_or(0),
            _ => 0,
        })
        .sum()
}

#[tokio::test]
async fn counters_move_with_the_traffic_and_metrics_stay_off_the_public_listener() {
    if standalone_only("the standalone server's metrics endpoint") {
        return;
    }
    let metrics_port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        probe.local_addr().expect("address").port()
    };
    let metrics_address = format!("127.0.0.1:{metrics_port}");
    let server = Server::start_with(&[("SIGNALPOST_METRICS_LISTEN", &metrics_address)]);
    let url = format!("http://{metrics_address}/metrics");
    let before = scrape(&url).await;

    let room = room();
    let mut alice = join(&server, &room, "alice").await;
    let bob = join(&server, &room, "bob").await;
    bob.send(json!({"messages": [
        {"to": alice.id, "type": "message", "data": 1},
        {"to": alice.id, "type": "message", "data": 2},
        {"to": alice.id, "type": "message", "data": 3},
    ]}))
    .await;
    // peer-joined and the three messages.
    let received = alice.collect("message", 3).await;
    assert_eq!(
        received
            .iter()
            .filter(|message| message["type"] == "message")
            .count(),
        3
    );
    let public = http()
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("request");
    assert_eq!(public.status(), 404, "no metrics on the public listener");

    let after = scrape(&url).await;
    let moved = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels) - value(&before, name, labels)
    };
    assert_eq!(moved("signalpost_joins_total", &[]), 2.0);
    assert_eq!(moved("signalpost_messages_posted_total", &[]), 3.0);
    assert!(moved("signalpost_messages_delivered_total", &[]) >= 4.0);
    assert!(
        histogram_count(&after, "signalpost_delivery_latency_seconds")
            >= histogram_count(&before, "signalpost_delivery_latency_seconds") + 4,
        "a latency per delivered message"
    );
    assert_eq!(
        moved(
            "signalpost_requests_total",
            &[
                ("route", "POST /v1/rooms/:room/peers"),
                ("status_class", "2xx")
            ]
        ),
        2.0
    );
    assert_eq!(
        moved(
            "signalpost_requests_total",
            &[("route", "unmatched"), ("status_class", "4xx")]
        ),
        1.0
    );
    assert!(moved("signalpost_store_operations_total", &[("op", "post")]) >= 1.0);
    assert_eq!(value(&after, "signalpost_waiting_polls", &[]), 0.0);
    // No label carries a room name.
    let labels: HashMap<_, _> = after
        .samples
        .iter()
        .flat_map(|sample| sample.labels.iter().map(|(k, v)| (k.clone(), v.clone())))
        .collect();
    assert!(labels.values().all(|value| !value.contains(&room)));
}
