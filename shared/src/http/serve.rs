//! The standalone server's accept loop: the router over hyper's HTTP/1.1 connections, with a
//! deadline on request headers and a graceful shutdown.
//!
//! `axum::serve` sets no header deadline, so a client that trickles header bytes (slowloris)
//! holds a connection and its task for as long as it likes. Here hyper closes a connection
//! whose request headers are not complete within [`HEADER_DEADLINE`]; the same deadline bounds
//! how long an idle keep-alive connection is kept. Bodies have their own deadline
//! ([`super::deadline`]), which also holds where API Gateway or `cargo lambda watch` serves.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

/// How long a client has to send a request's headers, and how long an idle keep-alive
/// connection stays open (hyper's default, once a timer is set).
pub const HEADER_DEADLINE: Duration = Duration::from_secs(30);

/// Serves `router` on `listener` until `shutdown` completes, then stops accepting and waits
/// for the requests in flight.
pub async fn serve(listener: TcpListener, router: Router, shutdown: impl Future<Output = ()>) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_DEADLINE);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors, say: wait for some to close rather than spin.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let connection = builder.serve_connection(
            TokioIo::new(stream),
            TowerToHyperService::new(router.clone()),
        );
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // A client that goes away mid-request is not the server's error.
            let _ = connection.await;
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
