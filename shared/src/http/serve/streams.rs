//! Deadlines on an HTTP/2 connection, where hyper has none of its own.
//!
//! Over HTTP/1.1 hyper closes a connection whose request headers are late (which also ends idle
//! keep-alive connections), and [`super::WriteDeadline`] closes one whose client leaves a
//! response unread. Over HTTP/2 neither holds: headers arrive in one frame, a connection may
//! idle between streams for ever, and a client that never grants flow-control window stalls
//! a stream's response inside hyper while still reading the socket, so no write ever blocks.
//! [`ConnectionActivity`] watches every request of one HTTP/2 connection instead:
//!
//! - **a stalled response**: a response body not taken within [`WRITE_DEADLINE`] of being
//!   ready closes the whole connection, which frees every stream's buffers. Bodies are fed to
//!   hyper in slices of at most [`SLICE_BYTES`], each only once the one before had window, so
//!   at most one slice per stream sits in hyper's buffers beyond what the client has taken;
//! - **an idle connection**: no request in flight for [`HEADER_DEADLINE`] ends it with a
//!   `GOAWAY`, as hyper ends an idle HTTP/1.1 keep-alive connection. A connection still open
//!   [`CLOSING_GRACE`] after its `GOAWAY` with nothing in flight is dropped.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use http_body::{Frame, SizeHint};
use tokio::sync::Notify;
use tokio::time::{Instant, sleep_until};

use super::{HEADER_DEADLINE, WRITE_DEADLINE};

/// The largest piece of a response body handed to hyper at once.
pub const SLICE_BYTES: usize = 16 * 1024;

/// How long a connection that was sent `GOAWAY` may take to finish once nothing is in flight.
pub const CLOSING_GRACE: Duration = Duration::from_secs(1);

/// What the watch found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expired {
    /// A response was not taken in time: drop the connection.
    Stalled,
    /// Nothing in flight for the idle time: send `GOAWAY` (or, if closing, drop).
    Idle,
}

/// The requests in flight on one connection, and their responses' age.
#[derive(Default)]
pub struct ConnectionActivity {
    state: Mutex<State>,
    changed: Notify,
}

struct State {
    in_flight: usize,
    /// When the last request in flight ended (or the connection opened, or began closing).
    idle_since: Instant,
    closing: bool,
    /// Responses not yet taken by hyper, by the order they became ready.
    unsent: BTreeMap<u64, Instant>,
    next_response: u64,
}

impl Default for State {
    fn default() -> Self {
        Self {
            in_flight: 0,
            idle_since: Instant::now(),
            closing: false,
            unsent: BTreeMap::new(),
            next_response: 0,
        }
    }
}

impl ConnectionActivity {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A request has arrived; it is in flight until the returned guard is dropped.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.state().in_flight += 1;
        self.changed.notify_one();
        InFlight {
            activity: Arc::clone(self),
            response: None,
        }
    }

    /// The connection was sent `GOAWAY`: from now on, idle means [`CLOSING_GRACE`].
    pub fn closing(&self) {
        let mut state = self.state();
        state.closing = true;
        state.idle_since = Instant::now();
        drop(state);
        self.changed.notify_one();
    }

    /// The next moment something may expire, and what: `None` when nothing can.
    fn next_deadline(&self) -> Option<(Instant, Expired)> {
        let state = self.state();
        let stalled = state
            .unsent
            .values()
            .next()
            .map(|ready| (*ready + WRITE_DEADLINE, Expired::Stalled));
        let idle_time = if state.closing {
            CLOSING_GRACE
        } else {
            HEADER_DEADLINE
        };
        let idle = (state.in_flight == 0).then(|| (state.idle_since + idle_time, Expired::Idle));
        match (stalled, idle) {
            (Some(stalled), Some(idle)) => Some(if stalled.0 <= idle.0 { stalled } else { idle }),
            (one, other) => one.or(other),
        }
    }

    /// Completes once a response has stalled or the connection has been idle too long.
    pub async fn expired(&self) -> Expired {
        loop {
            let changed = self.changed.notified();
            match self.next_deadline() {
                Some((at, what)) if at <= Instant::now() => return what,
                Some((at, _)) => {
                    tokio::select! {
                        () = sleep_until(at) => {}
                        () = changed => {}
                    }
                }
                None => changed.await,
            }
        }
    }
}

/// One request in flight on a watched connection; its response body carries it.
pub struct InFlight {
    activity: Arc<ConnectionActivity>,
    /// Set once the response is ready, until hyper has taken all of its body.
    response: Option<u64>,
}

impl InFlight {
    /// `body`, fed to hyper in slices and watched until hyper has taken all of it.
    pub fn watch_response(mut self, body: Body) -> Body {
        let mut state = self.activity.state();
        let id = state.next_response;
        state.next_response += 1;
        state.unsent.insert(id, Instant::now());
        drop(state);
        self.response = Some(id);
        self.activity.changed.notify_one();
        Body::new(WatchedBody {
            body,
            rest: Bytes::new(),
            in_flight: Some(self),
        })
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = self.activity.state();
        if let Some(id) = self.response {
            state.unsent.remove(&id);
        }
        state.in_flight -= 1;
        if state.in_flight == 0 {
            state.idle_since = Instant::now();
        }
        drop(state);
        self.activity.changed.notify_one();
    }
}

/// A response body handed out in slices; its request stays in flight until the body ends.
struct WatchedBody {
    body: Body,
    /// What is left of the last data frame.
    rest: Bytes,
    /// `None` once the body has ended.
    in_flight: Option<InFlight>,
}

impl http_body::Body for WatchedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        loop {
            if !this.rest.is_empty() {
                let take = this.rest.len().min(SLICE_BYTES);
                return Poll::Ready(Some(Ok(Frame::data(this.rest.split_to(take)))));
            }
            if this.in_flight.is_none() {
                return Poll::Ready(None);
            }
            match std::task::ready!(Pin::new(&mut this.body).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => this.rest = data,
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                Some(Err(error)) => return Poll::Ready(Some(Err(error))),
                None => {
                    // Hyper asks for the next frame only once the last slice had window, so
                    // the response is as good as taken.
                    this.in_flight = None;
                    return Poll::Ready(None);
                }
            }
        }
    }

    /// Never ends early: hyper polls once more after the last slice, which is how the body
    /// learns that the slice had window.
    fn is_end_stream(&self) -> bool {
        self.in_flight.is_none() && self.rest.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        let rest = self.rest.len() as u64;
        let inner = self.body.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + rest);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + rest);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test(start_paused = true)]
    async fn an_untaken_response_expires_and_idleness_is_measured_between_requests() {
        let activity = Arc::new(ConnectionActivity::default());
        let request = activity.begin();
        assert!(
            activity.next_deadline().is_none(),
            "a request in flight, no response yet"
        );
        let body = request.watch_response(Body::from(vec![7u8; 40 * 1024]));
        let started = Instant::now();
        assert_eq!(activity.expired().await, Expired::Stalled);
        assert_eq!(started.elapsed(), WRITE_DEADLINE);

        let collected = body.collect().await.expect("body").to_bytes();
        assert_eq!(collected.len(), 40 * 1024, "every slice arrives");
        let idle = Instant::now();
        assert_eq!(activity.expired().await, Expired::Idle);
        assert_eq!(idle.elapsed(), HEADER_DEADLINE);
        activity.closing();
        let closing = Instant::now();
        assert_eq!(activity.expired().await, Expired::Idle);
        assert_eq!(closing.elapsed(), CLOSING_GRACE);
    }

    #[tokio::test]
    async fn bodies_are_handed_out_in_slices() {
        let activity = Arc::new(ConnectionActivity::default());
        let mut body = activity
            .begin()
            .watch_response(Body::from(vec![1u8; SLICE_BYTES * 2 + 1]));
        let mut sizes = Vec::new();
        while let Some(frame) = body.frame().await {
            sizes.push(frame.expect("frame").into_data().expect("data").len());
        }
        assert_eq!(sizes, [SLICE_BYTES, SLICE_BYTES, 1]);
        assert_eq!(
            activity.state().in_flight,
            0,
            "an ended body ends its request"
        );
    }
}
