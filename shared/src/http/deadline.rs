//! A deadline on the whole request body, against clients that send their headers and then
//! trickle the body (slowloris): each such request would otherwise hold a connection and a
//! task for as long as the client likes.
//!
//! tower-http's `RequestBodyTimeoutLayer` is not enough here: its timeout restarts with every
//! chunk, so one byte every few seconds never trips it. This deadline runs from the moment
//! the request reaches the router (its headers are in) to the end of the body, and a body
//! still incomplete then fails to read, which the handlers answer with `400`.
//!
//! A declared `Content-Length` far over the limit is refused here at once (`413`): the body
//! limit itself only counts bytes as they arrive, so such a request would otherwise be read
//! until the deadline. Bodies just over the limit are still read up to it first, because
//! answering while the client is still writing makes the connection close under it, and the
//! client (a browser, say) then sees a network error instead of the `413`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::header;
use http_body::{Frame, SizeHint};
use thiserror::Error;
use tokio::time::{Sleep, sleep};

use super::MAX_BODY_BYTES;
use crate::error::ApiError;

/// How long a client has to send its whole body (at most 64 KiB, so even a slow mobile link
/// needs well under a second).
pub const BODY_DEADLINE: Duration = Duration::from_secs(10);

/// A declared body this large is refused before reading any of it.
const REFUSE_UNREAD_BYTES: u64 = 1024 * 1024;

/// The error a body read fails with once the deadline has passed.
#[derive(Debug, Error)]
#[error("the request body did not arrive within {} seconds", .0.as_secs())]
pub struct BodyTooSlow(Duration);

/// Whether a body-read error, anywhere in its source chain, is a missed deadline.
pub fn is_too_slow(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if error.is::<BodyTooSlow>() {
            return true;
        }
        next = error.source();
    }
    false
}

/// Refuses a declared body far over [`MAX_BODY_BYTES`], and wraps the body so that reading it
/// fails after [`BODY_DEADLINE`]; a middleware for `axum::middleware::map_request`.
pub async fn body_deadline(request: Request) -> Result<Request, ApiError> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    if declared.is_some_and(|length| length > REFUSE_UNREAD_BYTES) {
        return Err(ApiError::PayloadTooLarge(format!(
            "request bodies are limited to {} KiB",
            MAX_BODY_BYTES / 1024
        )));
    }
    Ok(request.map(|body| {
        Body::new(DeadlineBody {
            body,
            deadline: Box::pin(sleep(BODY_DEADLINE)),
        })
    }))
}

struct DeadlineBody {
    body: Body,
    deadline: Pin<Box<Sleep>>,
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        if this.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(axum::Error::new(BodyTooSlow(BODY_DEADLINE)))));
        }
        Pin::new(&mut this.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
