//! Prometheus metrics for the standalone server: the recorder, installed once at start, and
//! `GET /metrics` served on `SIGNALPOST_METRICS_LISTEN` only.
//!
//! A separate address, off unless set, because the main listener is the public one: the
//! metrics tell anyone who can read them how busy the server is and how its store fares, and
//! an operator scrapes from inside (a loopback or private address, a firewall rule), which a
//! separate address makes the default rather than a proxy rule to remember.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::http::header;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use signalpost_shared::metrics::{DELIVERY_LATENCY, LATENCY_BUCKETS, describe};
use tokio::net::TcpListener;

/// How often the recorder drains recorded histogram values into its buckets between scrapes,
/// so that rare scrapes do not let them pile up.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Installs the Prometheus recorder, binds `address` and serves `GET /metrics` there until
/// the process ends. Returns the bound address (for a port 0) once it listens.
pub async fn serve(address: SocketAddr) -> Result<SocketAddr, String> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(DELIVERY_LATENCY.into()), &LATENCY_BUCKETS)
        .and_then(PrometheusBuilder::install_recorder)
        .map_err(|error| format!("cannot install the metrics recorder: {error}"))?;
    describe();
    let listener = TcpListener::bind(address).await.map_err(|error| {
        format!("cannot listen on {address} (SIGNALPOST_METRICS_LISTEN): {error}")
    })?;
    let bound = listener.local_addr().map_err(|error| error.to_string())?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(UPKEEP_INTERVAL);
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router(handle)).await {
            tracing::error!(%error, "the metrics endpoint stopped");
        }
    });
    Ok(bound)
}

fn router(handle: PrometheusHandle) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let handle = handle.clone();
            async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    handle.render(),
                )
            }
        }),
    )
}
