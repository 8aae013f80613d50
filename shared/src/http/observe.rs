//! The request log and the request metric: one structured line per request (request id,
//! route, status, duration) and `signalpost_requests_total{route,status_class}`, in every
//! deployment.
//!
//! The route is the contract's route template (`GET /v1/rooms/:room/messages`), never the
//! path, so no room name or peer id reaches the logs or the metrics' labels, and the labels
//! stay a small fixed set. Requests outside [`super::ROUTES`] are `preflight` (CORS),
//! `web` (the demo page's files) or `unmatched` (an unknown path, or a known one with another
//! method). Tokens are in headers and bodies, which are never logged.
//!
//! The request id is Lambda's (its invocation's id, put in the request's extensions by
//! `crate::lambda`) or a fresh ULID, and is returned in the `x-request-id` response header so
//! that a client's report can be matched with the log line.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;

use super::ROUTES;
use crate::metrics;

/// The response header carrying the request id (an extension of the contract).
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A request id given by the deployment (Lambda's), used instead of a generated one.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// The middleware: times the request, then logs it, counts it and returns its id.
pub async fn observe(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = route_label(
        request.method(),
        request
            .extensions()
            .get::<MatchedPath>()
            .map(MatchedPath::as_str),
    );
    let id = request
        .extensions()
        .get::<RequestId>()
        .map_or_else(|| ulid::Ulid::new().to_string(), |id| id.0.clone());
    let mut response = next.run(request).await;
    let status = response.status().as_u16();
    metrics::request(route, status);
    tracing::info!(
        target: "signalpost::request",
        request_id = %id,
        route,
        status,
        duration_ms = started.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

/// The route's name for logs and metrics, from the method and the matched route template.
pub fn route_label(method: &Method, matched: Option<&str>) -> &'static str {
    let Some(path) = matched else {
        return "unmatched";
    };
    if let Some(route) = ROUTES
        .iter()
        .find(|route| route.path == path && route.method == method)
    {
        return route.label;
    }
    if method == Method::OPTIONS {
        "preflight"
    } else if ROUTES.iter().any(|route| route.path == path) {
        "unmatched"
    } else {
        "web"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_labelled_by_its_method_and_template() {
        for route in &ROUTES {
            let template = route.path.replace('{', ":").replace('}', "");
            assert_eq!(route.label, format!("{} {template}", route.method));
            assert_eq!(route_label(&route.method, Some(route.path)), route.label);
        }
        let messages = Some("/v1/rooms/{room}/messages");
        assert_eq!(route_label(&Method::PUT, messages), "unmatched");
        assert_eq!(route_label(&Method::OPTIONS, messages), "preflight");
        assert_eq!(route_label(&Method::GET, Some("/signalpost.js")), "web");
        assert_eq!(route_label(&Method::GET, None), "unmatched");
    }
}
