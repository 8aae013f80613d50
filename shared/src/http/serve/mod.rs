//! The standalone server's accept loop: the router over hyper-util's connections, HTTP/1.1
//! over plain TCP, or HTTP/2 and HTTP/1.1 over TLS (chosen by ALPN), with deadlines on request
//! headers and on response writes, caps on open connections, and a graceful shutdown.
//!
//! `axum::serve` sets no header deadline, so a client that trickles header bytes (slowloris)
//! holds a connection and its task for as long as it likes. Here hyper closes an HTTP/1.1
//! connection whose request headers are not complete within [`HEADER_DEADLINE`]; the same
//! deadline bounds how long an idle keep-alive connection is kept, and how long an HTTP/2
//! connection may idle with no request in flight ([`streams`]). A TLS handshake has
//! [`tls::HANDSHAKE_DEADLINE`]. Bodies have their own deadline ([`super::deadline`]), which
//! also holds where API Gateway or `cargo lambda watch` serves.
//!
//! The other way round, a client that sends requests and never reads the responses leaves
//! each response in memory: [`WRITE_DEADLINE`] closes a connection whose response the client
//! has not taken within it (over HTTP/2 also one whose stream the client starves of
//! flow-control window, see [`streams`]), and [`ConnectionLimits`] cap how many connections
//! one address, and everyone together, may hold open. A connection over a cap is closed at
//! once, unanswered. An HTTP/2 connection carries at most [`MAX_CONCURRENT_STREAMS`] requests
//! at once.

pub mod streams;
pub mod tls;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulConnection;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::{Sleep, sleep};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use streams::{ConnectionActivity, Expired};

use crate::proxy::TrustProxy;

/// How long a client has to send a request's headers, and how long an idle keep-alive
/// connection stays open (hyper's default, once a timer is set); over HTTP/2, how long a
/// connection may stay open with no request in flight.
pub const HEADER_DEADLINE: Duration = Duration::from_secs(30);

/// How long a response may wait for the client to read it, from the first write the client's
/// connection cannot take until the whole response has been handed to the network (over
/// HTTP/2: from the response being ready until hyper has taken its whole body). A poll
/// response is at most about 256 KiB, seconds even on a slow mobile link.
pub const WRITE_DEADLINE: Duration = Duration::from_secs(20);

/// Requests one HTTP/2 connection may have in flight at once: a tab holds one long poll and
/// now and then a post, so this serves dozens of tabs; it is the RFC 9113's recommended floor.
pub const MAX_CONCURRENT_STREAMS: u32 = 100;

/// HTTP/2 flow-control windows for what clients send: a stream's covers the largest request
/// body twice, so a client cannot park more than that per stream in the server's memory.
const STREAM_WINDOW: u32 = 2 * super::MAX_BODY_BYTES as u32;
const CONNECTION_WINDOW: u32 = 1024 * 1024;

/// The largest header block an HTTP/2 request may have (hyper's HTTP/1.1 buffer is larger,
/// but no route needs more).
const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;

/// HTTP/2 pings after this much silence; no answer within it closes the connection, so a
/// vanished client's streams do not wait for TCP to notice.
pub const KEEP_ALIVE: Duration = Duration::from_secs(20);

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
/// for the requests in flight. With `tls`, every connection is TLS and speaks the protocol
/// the client chose by ALPN (HTTP/2 or HTTP/1.1); without, HTTP/1.1.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) {
    let protocols = Protocols::new();
    let (stop, stopping) = watch::channel(false);
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
        let connection = Connection {
            router: router.clone(),
            protocols: protocols.clone(),
            client,
            stopping: stopping.clone(),
        };
        let tls = tls.clone();
        tokio::spawn(async move {
            connection.run(stream, tls).await;
            drop(admitted);
        });
    }
    drop(listener);
    drop(stopping);
    // Every connection finishes its requests in flight, then drops its receiver.
    stop.send_replace(true);
    stop.closed().await;
}

/// hyper-util's builders, one per protocol, so that no connection waits to sniff its version.
#[derive(Clone)]
struct Protocols {
    http1: auto::Builder<TokioExecutor>,
    http2: auto::Builder<TokioExecutor>,
}

impl Protocols {
    fn new() -> Self {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_DEADLINE);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_header_list_size(MAX_HEADER_LIST_BYTES)
            .keep_alive_interval(KEEP_ALIVE)
            .keep_alive_timeout(KEEP_ALIVE);
        Self {
            http1: builder.clone().http1_only(),
            http2: builder.http2_only(),
        }
    }
}

/// One accepted connection.
struct Connection {
    router: Router,
    protocols: Protocols,
    client: SocketAddr,
    /// Becomes `true` when the server shuts down.
    stopping: watch::Receiver<bool>,
}

impl Connection {
    async fn run(mut self, stream: TcpStream, tls: Option<TlsAcceptor>) {
        let stream = WriteDeadline::new(stream);
        let Some(tls) = tls else {
            return self.http1(stream).await;
        };
        let handshake = tokio::time::timeout(tls::HANDSHAKE_DEADLINE, tls.accept(stream));
        let stream = tokio::select! {
            done = handshake => match done {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    tracing::debug!(client = %self.client, %error, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(client = %self.client, "TLS handshake too slow: closed");
                    return;
                }
            },
            _ = self.stopping.wait_for(|stopping| *stopping) => return,
        };
        if stream.get_ref().1.alpn_protocol() == Some(tls::ALPN_H2) {
            self.http2(stream).await;
        } else {
            self.http1(stream).await;
        }
    }

    async fn http1<I>(self, io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let client = self.client;
        // Handlers see the client's address as axum's `ConnectInfo`, as with `axum::serve`.
        let service = self
            .router
            .map_request(move |request: Request<Incoming>| with_client(request, client));
        let connection = self
            .protocols
            .http1
            .serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
        drive(connection, self.stopping, None).await;
    }

    async fn http2<I>(self, io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let client = self.client;
        let activity = Arc::new(ConnectionActivity::default());
        let router = self.router;
        let service = {
            let activity = Arc::clone(&activity);
            tower::service_fn(move |request: Request<Incoming>| {
                let in_flight = activity.begin();
                let response = router.clone().oneshot(with_client(request, client));
                async move {
                    let response = response.await?;
                    Ok::<_, Infallible>(response.map(|body| in_flight.watch_response(body)))
                }
            })
        };
        let connection = self
            .protocols
            .http2
            .serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
        drive(connection, self.stopping, Some(activity)).await;
    }
}

fn with_client(mut request: Request<Incoming>, client: SocketAddr) -> Request<Incoming> {
    request
        .extensions_mut()
        .insert(ConnectInfo::<SocketAddr>(client));
    request
}

/// Runs `connection` to its end: a graceful close (`GOAWAY` over HTTP/2) when the server
/// stops or, over HTTP/2, when the connection idles; dropped at once when a response stalls.
async fn drive(
    connection: impl GracefulConnection,
    mut stopping: watch::Receiver<bool>,
    activity: Option<Arc<ConnectionActivity>>,
) {
    tokio::pin!(connection);
    let mut closing = false;
    loop {
        let expired = async {
            match &activity {
                Some(activity) => activity.expired().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            // A client that goes away mid-request is not the server's error.
            _ = connection.as_mut() => return,
            _ = stopping.wait_for(|stopping| *stopping), if !closing => {}
            expired = expired => if expired == Expired::Stalled || closing {
                tracing::debug!(?expired, "HTTP/2 connection dropped");
                return;
            }
        }
        connection.as_mut().graceful_shutdown();
        closing = true;
        if let Some(activity) = &activity {
            activity.closing();
        }
    }
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
