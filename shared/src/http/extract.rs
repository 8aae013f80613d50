//! Extractors that turn request parts into domain values, answering with the contract's
//! problem documents instead of axum's plain-text rejections.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};

use super::AppState;
use crate::error::ApiError;
use crate::ids::{PeerId, RoomId};
use crate::token::PeerGrant;

/// The caller's address, where this deployment knows it: the connection's peer in the
/// standalone server or, when that is a proxy `SIGNALPOST_TRUST_PROXY` names, the address the
/// proxies saw (see [`crate::proxy`]). `None` in Lambda, where API Gateway's throttling
/// limits clients.
pub struct ClientAddress(pub Option<IpAddr>);

impl FromRequestParts<AppState> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(address)| address.ip());
        let forwarded: Vec<&str> = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .collect();
        Ok(Self(
            state
                .signalling
                .config()
                .trust_proxy
                .client(peer, forwarded.into_iter()),
        ))
    }
}

/// The peer a valid `Authorization: Bearer` token speaks for.
pub struct Bearer(pub PeerGrant);

impl FromRequestParts<AppState> for Bearer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let missing = || {
            ApiError::Unauthorized(
                "send the token from join as `Authorization: Bearer <token>`".into(),
            )
        };
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(missing)?;
        let (scheme, token) = value
            .to_str()
            .ok()
            .and_then(|text| text.split_once(' '))
            .ok_or_else(missing)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(missing());
        }
        state.signalling.verify_peer_token(token.trim()).map(Self)
    }
}

/// The path's parameters, parsed on demand into identifiers.
pub struct PathParams(HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for PathParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map(|Path(params)| Self(params))
            .map_err(|_| ApiError::InvalidRequest("the path is malformed".into()))
    }
}

impl PathParams {
    fn get(&self, name: &str) -> &str {
        self.0.get(name).map_or("", String::as_str)
    }

    /// The `{room}` parameter.
    pub fn room(&self) -> Result<RoomId, ApiError> {
        RoomId::parse(self.get("room")).map_err(|error| ApiError::InvalidRequest(error.to_string()))
    }

    /// The `{peer}` parameter.
    pub fn peer(&self) -> Result<PeerId, ApiError> {
        PeerId::parse(self.get("peer")).map_err(|error| ApiError::InvalidRequest(error.to_string()))
    }
}

/// Checks that a grant is for the room in the path.
pub fn in_room(grant: PeerGrant, room: &RoomId) -> Result<PeerGrant, ApiError> {
    if &grant.room == room {
        Ok(grant)
    } else {
        Err(ApiError::Forbidden("this token is for another room".into()))
    }
}

/// The body, or 413 when it is over the limit, or 400 when it missed its deadline.
pub fn body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if super::deadline::is_too_slow(&rejection) {
            ApiError::InvalidRequest(format!(
                "the body arrived too slowly: send it within {} seconds",
                super::deadline::BODY_DEADLINE.as_secs()
            ))
        } else if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(format!(
                "request bodies are limited to {} KiB",
                super::MAX_BODY_BYTES / 1024
            ))
        } else {
            ApiError::InvalidRequest("the body could not be read".into())
        }
    })
}

/// Whether the request's `Content-Type` is one of `essences` (parameters such as `charset`
/// are allowed).
pub fn has_media_type(headers: &HeaderMap, essences: &[&str]) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|essence| {
            essences
                .iter()
                .any(|expected| essence.trim().eq_ignore_ascii_case(expected))
        })
}

/// 415 unless the body is declared as JSON.
pub fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    if has_media_type(headers, &["application/json"]) {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(
            "send the body as application/json".into(),
        ))
    }
}
