//! The contract's errors: each variant is one row of the error table in API.md, and
//! [`IntoResponse`] turns it into an RFC 9457 problem document. This is the only place
//! errors become HTTP responses.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use thiserror::Error;

use crate::store::StoreError;

/// Seconds a client should wait before retrying after a store failure.
const STORE_RETRY_AFTER: u64 = 2;

/// An API failure, as the client sees it. `detail` texts never reveal internals.
#[derive(Debug, Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("this route does not accept that method")]
    MethodNotAllowed,
    #[error("the room is full")]
    RoomFull,
    #[error("this peer has left the room or timed out: join again")]
    PeerGone,
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{detail}")]
    RateLimited { detail: String, retry_after: u64 },
    #[error("the message store is unavailable: retry shortly")]
    Unavailable,
    #[error("an internal error occurred")]
    Internal,
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: String,
}

impl ApiError {
    /// The stable code, the last part of the problem `type`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) => "invalid-request",
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not-found",
            Self::MethodNotAllowed => "method-not-allowed",
            Self::RoomFull => "room-full",
            Self::PeerGone => "peer-gone",
            Self::PayloadTooLarge(_) => "payload-too-large",
            Self::UnsupportedMediaType(_) => "unsupported-media-type",
            Self::RateLimited { .. } => "rate-limited",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::RoomFull => StatusCode::CONFLICT,
            Self::PeerGone => StatusCode::GONE,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn retry_after(&self) -> Option<u64> {
        match self {
            Self::RateLimited { retry_after, .. } => Some(*retry_after),
            Self::Unavailable => Some(STORE_RETRY_AFTER),
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let problem = Problem {
            kind: format!("urn:signalpost:{}", self.code()),
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: self.to_string(),
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(seconds) = self.retry_after() {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    /// Store failures are logged here, once, with their source chain, and the store's refusals
    /// counted by limit.
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::PeerGone => Self::PeerGone,
            StoreError::NoSuchRecipient(peer) => {
                Self::NotFound(format!("peer {peer} is not in this room"))
            }
            StoreError::RoomFull => Self::RoomFull,
            StoreError::InboxFull(peer) => {
                crate::metrics::rate_limited("inbox");
                Self::RateLimited {
                    detail: format!(
                        "the inbox of {peer} is full: wait until it reads its messages"
                    ),
                    retry_after: 2,
                }
            }
            StoreError::RateLimited { retry_after } => {
                crate::metrics::rate_limited("posts");
                Self::RateLimited {
                    detail: format!("this peer is posting too fast: post again in {retry_after} s"),
                    retry_after,
                }
            }
            StoreError::JoinsLimited { retry_after } => {
                crate::metrics::rate_limited("joins-per-room");
                Self::RateLimited {
                    detail: "too many joins to this room: retry later".into(),
                    retry_after,
                }
            }
            StoreError::Throttled(source) => {
                tracing::warn!(error = %error_chain(&*source), "store throttled");
                Self::Unavailable
            }
            StoreError::Unavailable(source) => {
                tracing::warn!(error = %error_chain(&*source), "store unavailable");
                Self::Unavailable
            }
            StoreError::Failed(source) => {
                tracing::error!(error = %error_chain(&*source), "store failed");
                Self::Internal
            }
            StoreError::Corrupt(what) => {
                tracing::error!(what, "store returned unreadable data");
                Self::Internal
            }
        }
    }
}

/// An error and its sources on one line.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_is_a_problem_document() {
        let response = ApiError::RateLimited {
            detail: "slow down".into(),
            retry_after: 3,
        }
        .into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        assert_eq!(response.headers()[header::RETRY_AFTER], "3");
        assert_eq!(
            ApiError::Unavailable.into_response().headers()[header::RETRY_AFTER],
            "2"
        );
    }

    #[test]
    fn only_transient_store_failures_ask_for_a_retry() {
        let failed = ApiError::from(StoreError::Failed(
            "attempt to write a readonly database".into(),
        ))
        .into_response();
        assert_eq!(failed.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(failed.headers().get(header::RETRY_AFTER).is_none());
        let busy =
            ApiError::from(StoreError::Unavailable("database is locked".into())).into_response();
        assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(busy.headers()[header::RETRY_AFTER], "2");
    }

    #[test]
    fn internal_details_stay_inside() {
        let error = ApiError::from(StoreError::Corrupt("row 7 of table secrets".into()));
        assert!(!error.to_string().contains("secrets"));
        assert_eq!(error.code(), "internal");
    }
}
