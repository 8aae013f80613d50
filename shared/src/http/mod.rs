//! HTTP: the contract's routes as one table, the handlers behind them, and the tower layers
//! every deployment shares (CORS, `Cache-Control: no-store`, body size and time limits, panic
//! guard, the request log and metrics).
//!
//! The standalone server mounts every route plus the demo page; each Lambda function mounts
//! only its own routes from the same table, so the two can never drift apart.

pub mod deadline;
pub mod extract;
mod messages;
mod meta;
pub mod observe;
mod peers;
pub mod serve;
mod web;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, delete, get, on, post};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

use crate::config::CorsOrigins;
use crate::error::ApiError;
use crate::limits::ClientRequest;
use crate::signalling::Signalling;
use extract::ClientAddress;

/// Largest request body the API reads.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// How long browsers may cache a CORS preflight (Chromium caps it at two hours).
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(7200);

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub signalling: Arc<Signalling>,
}

/// The Lambda functions; each serves some of the routes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Function {
    Join,
    Post,
    Poll,
    Leave,
    IceServers,
}

impl Function {
    /// The request a client address is limited in that this function serves, if any.
    fn limited_as(self) -> Option<ClientRequest> {
        match self {
            Self::Join => Some(ClientRequest::Join),
            Self::Post => Some(ClientRequest::Post),
            Self::Poll => Some(ClientRequest::Poll),
            Self::Leave | Self::IceServers => None,
        }
    }

    /// Every function.
    pub const ALL: [Self; 5] = [
        Self::Join,
        Self::Post,
        Self::Poll,
        Self::Leave,
        Self::IceServers,
    ];

    /// The binary name, as in the watch router and the SAM template.
    pub fn name(self) -> &'static str {
        match self {
            Self::Join => "join",
            Self::Post => "post",
            Self::Poll => "poll",
            Self::Leave => "leave",
            Self::IceServers => "ice-servers",
        }
    }
}

/// One route of the contract.
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    /// `METHOD path`, with `:name` for a path parameter: the route's name in request logs and
    /// metrics. Not `{name}`: simple Prometheus text parsers (`prometheus-parse`) end a label
    /// set at the first `}`, even inside a quoted value.
    pub label: &'static str,
    pub function: Function,
    handler: fn() -> MethodRouter<AppState>,
}

impl Route {
    /// The route's handler, behind its per-client limit where it has one: counted before the
    /// request is read or its token checked, so a flood of any kind is cut off cheaply.
    fn method_router(&self, state: &AppState) -> MethodRouter<AppState> {
        let handler = (self.handler)();
        let Some(limited) = self.function.limited_as() else {
            return handler;
        };
        handler.route_layer(from_fn_with_state(
            state.clone(),
            move |State(state): State<AppState>,
                  ClientAddress(client): ClientAddress,
                  request: Request,
                  next: Next| async move {
                if let Some(client) = client {
                    state.signalling.limit_client(limited, client)?;
                }
                Ok::<_, ApiError>(next.run(request).await)
            },
        ))
    }
}

/// Every route of the contract and the function that serves it.
pub const ROUTES: [Route; 8] = [
    Route {
        method: Method::POST,
        path: "/v1/rooms/{room}/peers",
        label: "POST /v1/rooms/:room/peers",
        function: Function::Join,
        handler: || post(peers::join),
    },
    Route {
        method: Method::POST,
        path: "/v1/rooms/{room}/messages",
        label: "POST /v1/rooms/:room/messages",
        function: Function::Post,
        handler: || post(messages::send),
    },
    Route {
        method: Method::GET,
        path: "/v1/rooms/{room}/messages",
        label: "GET /v1/rooms/:room/messages",
        function: Function::Poll,
        handler: || get(messages::poll),
    },
    Route {
        method: Method::DELETE,
        path: "/v1/rooms/{room}/peers/{peer}",
        label: "DELETE /v1/rooms/:room/peers/:peer",
        function: Function::Leave,
        handler: || delete(peers::leave),
    },
    Route {
        method: Method::POST,
        path: "/v1/rooms/{room}/peers/{peer}/leave",
        label: "POST /v1/rooms/:room/peers/:peer/leave",
        function: Function::Leave,
        handler: || post(peers::beacon_leave),
    },
    Route {
        method: Method::GET,
        path: "/v1/ice-servers",
        label: "GET /v1/ice-servers",
        function: Function::IceServers,
        handler: || get(meta::ice_servers),
    },
    Route {
        method: Method::GET,
        path: "/v1/health",
        label: "GET /v1/health",
        function: Function::IceServers,
        handler: || get(meta::health),
    },
    Route {
        method: Method::GET,
        path: "/v1/openapi.yaml",
        label: "GET /v1/openapi.yaml",
        function: Function::IceServers,
        handler: || get(meta::openapi),
    },
];

/// The API routes served by `functions`, with the shared layers. Other functions' paths are
/// known but serve no method, so a wrong method is a 405 here too (API Gateway sends unknown
/// routes to one function).
pub fn api_router(signalling: Arc<Signalling>, functions: &[Function]) -> Router {
    let state = AppState { signalling };
    let routes = ROUTES.iter().fold(Router::new(), |router, route| {
        if functions.contains(&route.function) {
            router.route(route.path, route.method_router(&state))
        } else {
            // Registered with its real method so that a 405 here names it in `Allow`.
            let elsewhere = MethodFilter::try_from(route.method.clone()).map_or_else(
                |_| MethodRouter::new(),
                |method| on(method, || async { ApiError::MethodNotAllowed }),
            );
            router.route(route.path, elsewhere)
        }
    });
    finish(routes, state)
}

/// Every route plus the demo page and client library: the standalone server.
pub fn standalone_router(signalling: Arc<Signalling>) -> Router {
    let state = AppState { signalling };
    let routes = ROUTES.iter().fold(Router::new(), |router, route| {
        router.route(route.path, route.method_router(&state))
    });
    let routes = routes.merge(web::routes(state.signalling.config().web_dir.clone()));
    finish(routes, state)
}

fn finish(routes: Router<AppState>, state: AppState) -> Router {
    let cors = cors_layer(&state.signalling.config().cors_origins);
    routes
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::map_request(deadline::body_deadline))
        .layer(TraceLayer::new_for_http())
        .layer(CatchPanicLayer::custom(|_panic| -> Response {
            tracing::error!("a handler panicked");
            ApiError::Internal.into_response()
        }))
        .layer(cors)
        .layer(SetResponseHeaderLayer::overriding(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
        // Outermost, so that its log line and metric see the status the client gets.
        .layer(axum::middleware::from_fn(observe::observe))
        .with_state(state)
}

fn cors_layer(origins: &CorsOrigins) -> CorsLayer {
    let allow_origin = match origins {
        CorsOrigins::Any => AllowOrigin::any(),
        CorsOrigins::List(origins) => AllowOrigin::list(
            origins
                .iter()
                .filter_map(|origin| HeaderValue::from_str(origin).ok()),
        ),
    };
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .expose_headers([HeaderName::from_static("retry-after"), observe::REQUEST_ID])
        .max_age(PREFLIGHT_MAX_AGE)
}
