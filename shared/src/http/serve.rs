//! The standalone server's accept loop: the router over hyper's HTTP/1.1 connections, with a
//! deadline on request headers and on response writes, caps on open connections, and a
//! graceful shutdown.
//!
//! `axum::serve` sets no header deadline, so a client that trickles header bytes (slowloris)
//! holds a connection and its task for as long as it likes. Here hyper closes a connection
//! whose request headers are not complete within [`HEADER_DEADLINE`]; the same deadline bounds
//! how long an idle keep-alive connection is kept. Bodies have their own deadline
//! ([`super::deadline`]), which also holds where API Gateway or `cargo lambda watch` serves.
//!
//! The other way round, a client that sends requests and never reads the responses leaves
//! each response in memory: [`WRITE_DEADLINE`] closes a connection whose response the client
//! has not taken within it, and [`ConnectionLimits`] cap how many connections one address, and
//! everyone together, may hold open. A connection over a cap is closed at once, unanswered.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Sleep, sleep};
use tower::ServiceExt;

use crate::proxy::TrustProxy;

/// How long a client has to send a request's headers, and how long an idle keep-alive
/// connection stays open (hyper's default, once a timer is set).
pub const HEADER_DEADLINE: Duration = Duration::from_secs(30);

/// How long a response may wait for the client to read it, from the first write the client's
/// connection cannot take until the whole response has been handed to the network. A poll
/// response is at most about 256 KiB, seconds even on a slow mobile link.
pub const WRITE_DEADLINE: Duration = Duration::from_secs(20);

/// Caps on open connections.
#[derive(Clone, Debug)]
pub struct ConnectionLimits {
    pub total: usize,
    /// Per client address.
    pub per_client: usize,
    /// Addresses the per-client cap does not apply to: the trusted proxies, whose connections
    /// carry many clients.
    pub proxies: TrustProxy,
}

/// Serves `router` on `listener` until `shutdown` completes, then stops accepting and waits
/// for the requests in flight.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_DEADLINE);
    let graceful = GracefulShutdown::new();
    let open = OpenConnections::new(limits);
    tokio::pin!(shutdown);
    loop {
        let (stream, client) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, say: wait for some to close rather than spin.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(admitted) = open.admit(client.ip()) else {
            tracing::debug!(%client, "over the connection limit: closed");
            continue;
        };
        // Handlers see the client's address as axum's `ConnectInfo`, as with `axum::serve`.
        let service = router.clone().map_request(move |mut request: Request<_>| {
            request
                .extensions_mut()
                .insert(ConnectInfo::<SocketAddr>(client));
            request
        });
        let connection = builder.serve_connection(
            TokioIo::new(WriteDeadline::new(stream)),
            TowerToHyperService::new(service),
        );
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // A client that goes away mid-request is not the server's error.
            let _ = connection.await;
            drop(admitted);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Counts open connections, in total and per client address.
#[derive(Clone)]
struct OpenConnections {
    limits: ConnectionLimits,
    counts: Arc<Mutex<Counts>>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_client: HashMap<IpAddr, usize>,
}

/// One admitted connection; counted until dropped.
struct Admitted {
    open: OpenConnections,
    client: IpAddr,
}

impl OpenConnections {
    fn new(limits: ConnectionLimits) -> Self {
        Self {
            limits,
            counts: Arc::default(),
        }
    }

    fn admit(&self, client: IpAddr) -> Option<Admitted> {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let of_client = counts.per_client.get(&client).copied().unwrap_or(0);
        if counts.total >= self.limits.total
            || (of_client >= self.limits.per_client && !self.limits.proxies.is_proxy(client))
        {
            return None;
        }
        counts.total += 1;
        counts.per_client.insert(client, of_client + 1);
        Some(Admitted {
            open: self.clone(),
            client,
        })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut counts = self
            .open
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        counts.total -= 1;
        if let Some(count) = counts.per_client.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                counts.per_client.remove(&self.client);
            }
        }
    }
}

/// A connection whose writes fail once the client has left a response unread for
/// [`WRITE_DEADLINE`]: hyper then closes it and frees the response.
struct WriteDeadline {
    stream: TcpStream,
    /// Running from the first write the socket could not take until the next flush (hyper
    /// flushes once its buffer is drained, that is, once the response is out).
    deadline: Option<Pin<Box<Sleep>>>,
}

impl WriteDeadline {
    fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            deadline: None,
        }
    }

    /// A write the socket cannot take now: pending until the deadline, then an error.
    fn blocked(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let deadline = self
            .deadline
            .get_or_insert_with(|| Box::pin(sleep(WRITE_DEADLINE)));
        deadline.as_mut().poll(cx).map(|()| {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client did not read its response in time",
            ))
        })
    }
}

impl AsyncRead for WriteDeadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteDeadline {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.stream).poll_write(cx, buf) {
            Poll::Pending => self.blocked(cx),
            ready => ready,
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.stream).poll_write_vectored(cx, bufs) {
            Poll::Pending => self.blocked(cx),
            ready => ready,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let flushed = Pin::new(&mut self.stream).poll_flush(cx);
        if flushed.is_ready() {
            self.deadline = None;
        }
        flushed
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_connections_per_client_and_in_total() {
        let open = OpenConnections::new(ConnectionLimits {
            total: 5,
            per_client: 2,
            proxies: "127.0.0.9".parse().expect("valid"),
        });
        let (a, b): (IpAddr, IpAddr) = ([127, 0, 0, 2].into(), [127, 0, 0, 3].into());
        let first = open.admit(a).expect("admitted");
        let _second = open.admit(a).expect("admitted");
        assert!(open.admit(a).is_none(), "a third from one address");
        let _other = open.admit(b).expect("another address");
        let proxy = [127, 0, 0, 9].into();
        let _proxied = [open.admit(proxy), open.admit(proxy)]
            .map(|admitted| admitted.expect("a trusted proxy has no per-client cap"));
        assert!(open.admit(b).is_none(), "over the total");
        drop(first);
        assert!(
            open.admit(a).is_some(),
            "a closed connection frees its place"
        );
    }
}
