//! A no-op internal Lambda extension, registered by hand, so that Lambda sends the function
//! process SIGTERM before it shuts its execution environment down. Without any extension
//! Lambda ends the process with SIGKILL alone; with an internal one it sends SIGTERM and waits
//! up to 500 ms first, time enough to give the wake-up queue back (`wakeup::CLOSE_BUDGET`).
//!
//! Two requests to the Extensions API, on the Runtime API client the runtime links anyway
//! (`lambda_runtime_api_client`, so the binary grows by this code only):
//! - `POST /2020-01-01/extension/register`, named by `Lambda-Extension-Name`, subscribing to
//!   no events (an internal extension cannot have SHUTDOWN; the signal is what it gets);
//! - `GET /2020-01-01/extension/event/next`, held open in a task: it tells Lambda that the
//!   extension is ready (Init ends only once the runtime and every extension have asked for
//!   their next event), and with no events subscribed it never answers.
//!
//! lambda_runtime's `graceful-shutdown` feature does the same through the lambda-extension
//! crate, which brings chrono with it and took every function over the 8 MB size target.
//! Registration must happen during Init, before the runtime's first `invocation/next`.

use std::time::Duration;

use axum::http::{Method, Uri, header};
use lambda_runtime_api_client::body::Body;
use lambda_runtime_api_client::{Client, build_request};

/// The extension's name: unique among the function's extensions, as Lambda requires.
pub const NAME: &str = "signalpost-graceful-shutdown";

const NAME_HEADER: &str = "Lambda-Extension-Name";
const ID_HEADER: &str = "Lambda-Extension-Identifier";

/// How long registration may take. The Runtime API is local and answers at once; an API that
/// does not (an emulator without the Extensions API) must not hold the function's start-up.
const REGISTER_BUDGET: Duration = Duration::from_secs(2);

/// Registers the extension with the Runtime API at `runtime_api` (the value of
/// `AWS_LAMBDA_RUNTIME_API`: `host:port`, possibly with a base path) and spawns the task that
/// holds its `event/next`. An error says why not; the function then serves without the
/// shutdown signal.
pub async fn register(runtime_api: &str) -> Result<(), String> {
    let base: Uri = format!("http://{runtime_api}").parse().map_err(|error| {
        format!("AWS_LAMBDA_RUNTIME_API {runtime_api:?} is no address: {error}")
    })?;
    let client = Client::builder()
        .with_endpoint(base)
        .build()
        .map_err(|error| error.to_string())?;
    let request = build_request()
        .method(Method::POST)
        .uri("/2020-01-01/extension/register")
        .header(NAME_HEADER, NAME)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"events":[]}"#))
        .map_err(|error| error.to_string())?;
    let response = tokio::time::timeout(REGISTER_BUDGET, client.call(request))
        .await
        .map_err(|_| format!("no answer within {REGISTER_BUDGET:?}"))?
        .map_err(|error| error.to_string())?;
    if !response.status().is_success() {
        return Err(format!("the Extensions API answered {}", response.status()));
    }
    let id = response
        .headers()
        .get(ID_HEADER)
        .and_then(|id| id.to_str().ok())
        .ok_or_else(|| format!("the Extensions API answered without {ID_HEADER}"))?
        .to_owned();
    tokio::spawn(wait_for_events(client, id));
    Ok(())
}

/// Asks for the extension's next event, which never comes (none are subscribed); asks again
/// should one come anyway. Ends quietly when the API fails: the process is then past caring.
async fn wait_for_events(client: Client, id: String) {
    loop {
        let request = match build_request()
            .method(Method::GET)
            .uri("/2020-01-01/extension/event/next")
            .header(ID_HEADER, &id)
            .body(Body::empty())
        {
            Ok(request) => request,
            Err(error) => {
                tracing::warn!(%error, "cannot ask for the shutdown extension's next event");
                return;
            }
        };
        match client.call(request).await {
            Ok(response) if response.status().is_success() => {
                tracing::debug!("the shutdown extension got an event it did not subscribe to");
            }
            Ok(response) => {
                // `cargo lambda watch` answers an extension with no events so; registered is
                // what counts for the signal.
                tracing::debug!(status = %response.status(), "the Extensions API refused the shutdown extension's next event");
                return;
            }
            Err(error) => {
                tracing::debug!(%error, "the shutdown extension's next event failed");
                return;
            }
        }
    }
}
