//! Routes about the service rather than a room: ICE servers, health, the OpenAPI document.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::extract::Bearer;
use crate::error::ApiError;
use crate::signalling::IceServers;

/// `GET /v1/ice-servers`: fresh TURN credentials for the token's peer, while it is a member.
pub async fn ice_servers(
    State(state): State<AppState>,
    Bearer(grant): Bearer,
) -> Result<Json<IceServers>, ApiError> {
    Ok(Json(state.signalling.ice_servers(&grant).await?))
}

/// `GET /v1/health`: 200 when the store answers.
pub async fn health(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    state.signalling.health().await?;
    Ok(Json(serde_json::json!({ "status": "ok" })))
}

/// `GET /v1/openapi.yaml`: the contract as OpenAPI 3.1.
pub async fn openapi() -> Response {
    let mut response = include_str!("../../openapi.yaml").into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/yaml"),
    );
    response
}
