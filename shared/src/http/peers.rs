//! Room membership: join, and leave in both its forms (`DELETE` with a bearer token, and the
//! `POST …/leave` beacon a page can send while unloading, when it cannot set headers).

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;

use super::AppState;
use super::extract::{Bearer, PathParams, body, has_media_type, in_room, require_json};
use crate::error::ApiError;
use crate::signalling::Joined;
use crate::token::PeerGrant;

/// Longest display name, in characters.
const MAX_NAME_CHARS: usize = 64;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct JoinBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    join_token: Option<String>,
}

/// `POST /v1/rooms/{room}/peers`
pub async fn join(
    State(state): State<AppState>,
    params: PathParams,
    headers: HeaderMap,
    request: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Joined>), ApiError> {
    let room = params.room()?;
    let request = body(request)?;
    let request: JoinBody = if request.iter().all(u8::is_ascii_whitespace) {
        JoinBody::default()
    } else {
        require_json(&headers)?;
        // serde would also accept a JSON array for a struct; the contract says object.
        if request.trim_ascii_start().first() != Some(&b'{') {
            return Err(ApiError::InvalidRequest(
                "the join body must be a JSON object".into(),
            ));
        }
        serde_json::from_slice(&request).map_err(|error| {
            ApiError::InvalidRequest(format!("the join body is not valid: {error}"))
        })?
    };
    if let Some(name) = &request.name
        && (name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control))
    {
        return Err(ApiError::InvalidRequest(format!(
            "name must be at most {MAX_NAME_CHARS} characters, without control characters"
        )));
    }
    let joined = state
        .signalling
        .join(room, request.name, request.join_token.as_deref())
        .await?;
    Ok((StatusCode::CREATED, Json(joined)))
}

/// `DELETE /v1/rooms/{room}/peers/{peer}`
pub async fn leave(
    State(state): State<AppState>,
    params: PathParams,
    Bearer(grant): Bearer,
) -> Result<StatusCode, ApiError> {
    leave_as(&state, &params, grant).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BeaconBody {
    token: String,
}

/// `POST /v1/rooms/{room}/peers/{peer}/leave`, for `navigator.sendBeacon`: the token travels
/// in the body, as JSON or as text/plain (which needs no CORS preflight).
pub async fn beacon_leave(
    State(state): State<AppState>,
    params: PathParams,
    headers: HeaderMap,
    request: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let request = body(request)?;
    if !has_media_type(&headers, &["application/json", "text/plain"]) {
        return Err(ApiError::UnsupportedMediaType(
            "send {\"token\": ...} as application/json or text/plain".into(),
        ));
    }
    // serde would also read the struct from an array (`["<token>"]`); the contract says object.
    if request.trim_ascii_start().first() != Some(&b'{') {
        return Err(ApiError::InvalidRequest(
            "the body must be {\"token\": \"...\"}".into(),
        ));
    }
    let beacon: BeaconBody = serde_json::from_slice(&request).map_err(|error| {
        ApiError::InvalidRequest(format!("the body must be {{\"token\": \"...\"}}: {error}"))
    })?;
    let grant = state.signalling.verify_peer_token(&beacon.token)?;
    leave_as(&state, &params, grant).await
}

async fn leave_as(
    state: &AppState,
    params: &PathParams,
    grant: PeerGrant,
) -> Result<StatusCode, ApiError> {
    let grant = in_room(grant, &params.room()?)?;
    if grant.peer != params.peer()? {
        return Err(ApiError::Forbidden("a peer can only remove itself".into()));
    }
    state.signalling.leave(&grant).await?;
    Ok(StatusCode::NO_CONTENT)
}
