//! The demo call page and the client library, built into the standalone binary so one command
//! serves everything. `SIGNALPOST_WEB_DIR` serves them from disk instead, for editing the page
//! without rebuilding.

use std::path::PathBuf;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AppState;
use crate::error::ApiError;

/// `(URL path, file in web/, content type, built-in copy)`.
const FILES: [(&str, &str, &str, &str); 5] = [
    (
        "/",
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../../../web/index.html"),
    ),
    (
        "/demo.js",
        "demo.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../web/demo.js"),
    ),
    (
        "/demo.css",
        "demo.css",
        "text/css; charset=utf-8",
        include_str!("../../../web/demo.css"),
    ),
    (
        "/signalpost.js",
        "signalpost.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../web/signalpost.js"),
    ),
    (
        "/signalpost.d.ts",
        "signalpost.d.ts",
        "text/plain; charset=utf-8",
        include_str!("../../../web/signalpost.d.ts"),
    ),
];

/// Routes for the web files, from `web_dir` when set.
pub fn routes(web_dir: Option<PathBuf>) -> Router<AppState> {
    FILES.iter().fold(
        Router::new(),
        |router, &(path, file, content_type, built_in)| {
            let web_dir = web_dir.clone();
            router.route(
                path,
                get(move || async move {
                    let body = match web_dir {
                        Some(directory) => tokio::fs::read_to_string(directory.join(file))
                            .await
                            .map_err(|_| {
                                ApiError::NotFound(format!("{file} is not in SIGNALPOST_WEB_DIR"))
                            })?,
                        None => built_in.to_owned(),
                    };
                    let mut response: Response = body.into_response();
                    response
                        .headers_mut()
                        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
                    Ok::<_, ApiError>(response)
                }),
            )
        },
    )
}
