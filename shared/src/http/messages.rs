//! Sending messages and the long poll that receives them.

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::AppState;
use super::extract::{Bearer, PathParams, body, in_room, require_json};
use crate::cursor::Cursor;
use crate::error::ApiError;
use crate::ids::MessageId;
use crate::message::{Delivered, InvalidPost, parse_post};

#[derive(Serialize)]
pub struct SendResponse {
    ids: Vec<MessageId>,
}

/// `POST /v1/rooms/{room}/messages`
pub async fn send(
    State(state): State<AppState>,
    params: PathParams,
    Bearer(grant): Bearer,
    headers: HeaderMap,
    request: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<SendResponse>), ApiError> {
    let grant = in_room(grant, &params.room()?)?;
    let request = body(request)?;
    require_json(&headers)?;
    let messages = parse_post(&request).map_err(|error| match error {
        InvalidPost::DataTooLarge { .. } => ApiError::PayloadTooLarge(error.to_string()),
        _ => ApiError::InvalidRequest(error.to_string()),
    })?;
    let ids = state.signalling.post(&grant, messages).await?;
    Ok((StatusCode::ACCEPTED, Json(SendResponse { ids })))
}

#[derive(Serialize)]
struct PollResponse<'a> {
    messages: Vec<Delivered<'a>>,
    cursor: String,
}

/// `GET /v1/rooms/{room}/messages?after=<cursor>&wait=<seconds>`
pub async fn poll(
    State(state): State<AppState>,
    params: PathParams,
    Bearer(grant): Bearer,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let grant = in_room(grant, &params.room()?)?;
    let Query(query) =
        query.map_err(|_| ApiError::InvalidRequest("the query string is malformed".into()))?;
    let after = query
        .get("after")
        .map(|text| {
            Cursor::parse(text).ok_or_else(|| {
                ApiError::InvalidRequest("after must be a cursor from a previous poll".into())
            })
        })
        .transpose()?;
    let wait = state
        .signalling
        .parse_wait(query.get("wait").map(String::as_str))?;
    let polled = state.signalling.poll(&grant, after, wait).await?;
    let messages = polled
        .messages
        .iter()
        .map(|message| message.delivered())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| {
            tracing::error!(%error, "a stored message's data is not JSON");
            ApiError::Internal
        })?;
    let response = PollResponse {
        messages,
        cursor: polled.cursor.encode(),
    };
    // Serialised straight to bytes: `data` is emitted as stored, however deeply it nests.
    Ok(Json(response).into_response())
}
