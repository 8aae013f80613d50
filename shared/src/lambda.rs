//! Running as a Lambda function: the cold-start wiring every function binary shares, so each
//! `main` is one line naming its [`Function`].
//!
//! At cold start, once: logs, the secrets (the signing secret from `SIGNALPOST_SECRET`, the
//! TURN secret from `SIGNALPOST_TURN_SECRET`, or each fetched from Secrets Manager when only
//! its `…_ARN` variable is set), the configuration, the store and the function's router. Then the Lambda runtime feeds it API Gateway (payload 2.0) events
//! until the sandbox goes away. The router is the same axum router the standalone server
//! uses, limited to this function's routes, so routing, extractors and the tower layers
//! (CORS, body limit, panic guard) are the same code in every deployment.
//!
//! Metrics go to stdout in CloudWatch Embedded Metric Format ([`crate::metrics::emf`]), with
//! the function's name as the `function` dimension. They are flushed after each invocation's
//! response has been posted to the Runtime API (a layer outside the runtime's own, whose
//! future ends with that post), so the flush never adds to a request's latency, and before
//! the runtime asks for the next event (when Lambda may freeze the environment). The request
//! log's id is the invocation's request id.
//!
//! The poll function, the only one that waits and so the only one with a wake-up queue,
//! registers a no-op internal extension ([`extension`]) so that Lambda sends it SIGTERM
//! before ending the environment; it then deletes its queue and exits
//! ([`give_back_on_shutdown`]).

mod extension;

use std::process::ExitCode;
use std::sync::Arc;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_sdk_secretsmanager::error::DisplayErrorContext;

use lambda_http::lambda_runtime::{LambdaInvocation, layers::TracingLayer};
use tower::Service;

use crate::config::{Config, ConfigError, Deployment};
use crate::http::observe::RequestId;
use crate::http::{Function, api_router};
use crate::metrics::emf::Emf;
use crate::signalling::Signalling;
use crate::store;

/// The variable naming the Secrets Manager secret that holds the token signing secret.
pub const SECRET_ARN_VAR: &str = "SIGNALPOST_SECRET_ARN";

/// A secret a function may be given by value or by the ARN of a Secrets Manager secret.
struct SecretVariable {
    /// The variable holding the value, which wins when set.
    value: &'static str,
    /// The variable holding the ARN (or name) of the secret to fetch otherwise.
    arn: &'static str,
    /// What it is, for messages.
    what: &'static str,
}

const SECRETS: [SecretVariable; 2] = [
    SecretVariable {
        value: "SIGNALPOST_SECRET",
        arn: SECRET_ARN_VAR,
        what: "the signing secret",
    },
    SecretVariable {
        value: "SIGNALPOST_TURN_SECRET",
        arn: "SIGNALPOST_TURN_SECRET_ARN",
        what: "the TURN secret",
    },
];

/// What the Lambda runtime client needs from the environment; checked first, so that starting
/// a function binary by hand says what is wrong instead of panicking inside the runtime.
const RUNTIME_VARS: [&str; 4] = [
    "AWS_LAMBDA_RUNTIME_API",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
];

/// Runs `function` under the Lambda runtime until the runtime stops it. Start-up failures are
/// printed to stderr (which Lambda logs too) and end the process with a non-zero status, which Lambda reports as an
/// init error.
pub async fn run(function: Function) -> ExitCode {
    init_tracing();
    let name = function.name();
    // Before anything records a metric.
    let emf = Emf::install(name);
    let (router, signalling) = match start(function).await {
        Ok(started) => started,
        Err(message) => {
            eprintln!("signalpost {name}: cannot start: {message}");
            return ExitCode::FAILURE;
        }
    };
    if holds_a_wakeup_queue(function) {
        // During Init: Lambda takes extensions only before the runtime's first `next`.
        give_back_on_shutdown(signalling).await;
    }
    // Sequential with AWS_LAMBDA_MAX_CONCURRENCY unset or 1 (classic Lambda); that many
    // concurrent invocations in this one process above 1 (Lambda Managed Instances). The
    // router, its Signalling and the store are built once above and shared by every
    // invocation, so waiting polls share the in-process wake-ups.
    let runtime = lambda_http::runtime_concurrent(buffered(router))
        .layer(TracingLayer::new())
        .layer(tower::layer::layer_fn(move |inner| FlushMetrics {
            inner,
            emf: emf.clone(),
        }));
    match runtime.run_concurrent().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("signalpost {name}: the Lambda runtime stopped: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The router with each response body read into memory. `run_concurrent` needs responses that
/// are `Sync`, which axum's streaming body is not; the runtime reads the whole body before
/// answering anyway (responses are not streamed), so nothing is lost. A body that fails to
/// read (none of ours can) becomes a logged 500 rather than the runtime's panic.
fn buffered(
    router: axum::Router,
) -> impl tower::Service<
    lambda_http::Request,
    Response = lambda_http::Response<lambda_http::Body>,
    Error = std::convert::Infallible,
    Future = impl Future + Send + 'static,
> + Clone
+ Send
+ 'static {
    use tower::ServiceExt;
    let router = ServiceExt::<lambda_http::Request>::map_request(
        router,
        |mut request: lambda_http::Request| {
            use lambda_http::RequestExt;
            if let Some(context) = request.lambda_context_ref() {
                let id = RequestId(context.request_id.clone());
                request.extensions_mut().insert(id);
            }
            request
        },
    );
    ServiceExt::<lambda_http::Request>::map_future(router, |response| async move {
        let response: axum::response::Response = match response.await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let (parts, body) = response.into_parts();
        let body = match axum::body::to_bytes(body, usize::MAX).await {
            Ok(bytes) => lambda_http::Body::from(bytes.to_vec()),
            Err(error) => {
                tracing::error!(error = %crate::error::error_chain(&error), "cannot read a response body");
                let mut failed = lambda_http::Response::new(lambda_http::Body::Empty);
                *failed.status_mut() = axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                return Ok(failed);
            }
        };
        Ok::<_, std::convert::Infallible>(lambda_http::Response::from_parts(parts, body))
    })
}

/// The runtime's service, flushing the metrics once each invocation has been answered.
#[derive(Clone)]
struct FlushMetrics<S> {
    inner: S,
    emf: Option<Emf>,
}

impl<S> Service<LambdaInvocation> for FlushMetrics<S>
where
    S: Service<LambdaInvocation, Response = (), Error = lambda_http::Error>,
    S::Future: Send + 'static,
{
    type Response = ();
    type Error = lambda_http::Error;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<(), Self::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, invocation: LambdaInvocation) -> Self::Future {
        // The inner future ends once the response has been posted to the Runtime API.
        let answered = self.inner.call(invocation);
        let emf = self.emf.clone();
        Box::pin(async move {
            let result = answered.await;
            if let Some(emf) = emf {
                emf.flush_to_stdout();
            }
            result
        })
    }
}

/// Whether the function's process ever creates a wake-up queue (or socket): only polls listen
/// for wake-ups ([`crate::wakeup::Wakeup::listen`]); the other functions only ring.
fn holds_a_wakeup_queue(function: Function) -> bool {
    matches!(function, Function::Poll)
}

/// On SIGTERM or SIGINT, ends the waiting polls, gives back the wake-up queue (within
/// [`crate::wakeup::CLOSE_BUDGET`], inside the 500 ms Lambda allows after SIGTERM) and exits 0.
/// Lambda sends SIGTERM only with an extension registered, so this registers one; when that
/// fails the function serves all the same, and its queue is left behind when the environment
/// ends (SQS deletes a queue unused for 30 days). The signal is handled either way, as it
/// costs nothing and covers whoever else sends it (`cargo lambda watch` stopping).
async fn give_back_on_shutdown(signalling: Arc<Signalling>) {
    // Listening before registering: from registration on, Lambda may signal.
    let requested = crate::shutdown::requested();
    tokio::spawn(async move {
        requested.await;
        tracing::info!("shutting down: giving back the wake-up queue");
        signalling.begin_shutdown();
        signalling.close().await;
        std::process::exit(0);
    });
    let runtime_api = std::env::var("AWS_LAMBDA_RUNTIME_API").unwrap_or_default();
    match extension::register(&runtime_api).await {
        Ok(()) => tracing::debug!(
            extension = extension::NAME,
            "registered: Lambda signals before shutting down"
        ),
        Err(reason) => tracing::warn!(
            %reason,
            "cannot register the graceful-shutdown extension: serving without it, so this environment's wake-up queue is left behind when it ends"
        ),
    }
}

/// Everything done once per sandbox: configuration, store, the signalling service and the
/// router over it.
async fn start(function: Function) -> Result<(axum::Router, Arc<Signalling>), String> {
    let missing: Vec<&str> = RUNTIME_VARS
        .into_iter()
        .filter(|name| std::env::var_os(name).is_none())
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "not inside a Lambda runtime ({} unset); run the functions with `cargo lambda watch`, or the standalone `signalpost` server",
            missing.join(", ")
        ));
    }
    let config =
        Config::from_env_with_secrets(Deployment::Lambda, fetch_secrets().await?).map_err(
            |error| match error {
                ConfigError::Missing("SIGNALPOST_SECRET") => format!(
                    "SIGNALPOST_SECRET (the token signing secret) or {SECRET_ARN_VAR} (a Secrets Manager secret holding it) is required: every instance must sign with the same secret"
                ),
                ConfigError::Missing(name) if name.starts_with("SIGNALPOST_TURN_SECRET ") => {
                    format!("{error}; or SIGNALPOST_TURN_SECRET_ARN, a Secrets Manager secret holding it")
                }
                other => other.to_string(),
            },
        )?;
    if config.table.is_none() {
        // The embedded store (under `cargo lambda watch`): its file may sit in a directory that
        // does not exist yet, such as `target/` before the first build into it.
        if let Some(directory) = config
            .db_path
            .parent()
            .filter(|dir| !dir.as_os_str().is_empty())
        {
            std::fs::create_dir_all(directory).map_err(|error| {
                format!(
                    "cannot create {} for SIGNALPOST_DB: {error}",
                    directory.display()
                )
            })?;
        }
    }
    let store = store::open(&config).await.map_err(|error| {
        format!(
            "cannot open the store: {}",
            crate::error::error_chain(&error)
        )
    })?;
    match &config.table {
        Some(table) => tracing::info!(function = function.name(), table, "ready"),
        None => tracing::info!(
            function = function.name(),
            db = %config.db_path.display(),
            "ready"
        ),
    }
    let embedded = config.table.is_none();
    // Wake-ups between execution environments (SQS beside DynamoDB, Unix sockets beside
    // SQLite under `cargo lambda watch`).
    let signalling = Arc::new(Signalling::open(config, store).await);
    if embedded {
        // Under `cargo lambda watch` nothing else cleans the shared file; the store's lease
        // lets one function process at a time do it. (On AWS the store is DynamoDB, whose TTL
        // does this.)
        drop(signalling.spawn_housekeeping());
    }
    Ok((api_router(Arc::clone(&signalling), &[function]), signalling))
}

/// Fetches every secret of [`SECRETS`] given by ARN only (its value variable unset or empty:
/// the value, where given, wins), as `(value variable, value)` pairs for the configuration.
async fn fetch_secrets() -> Result<Vec<(&'static str, String)>, String> {
    let set = |name: &str| {
        std::env::var(name)
            .ok()
            .map(|value| value.trim().to_owned())
            .filter(|value| !value.is_empty())
    };
    let wanted: Vec<(&SecretVariable, String)> = SECRETS
        .iter()
        .filter(|secret| set(secret.value).is_none())
        .filter_map(|secret| set(secret.arn).map(|arn| (secret, arn)))
        .collect();
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let config = crate::aws::with_https_client(aws_config::defaults(BehaviorVersion::latest()))
        // The store client's settings: a stuck endpoint fails the init quickly.
        .timeout_config(crate::store::dynamo::DynamoStore::timeouts())
        .retry_config(RetryConfig::standard().with_max_attempts(3))
        .load()
        .await;
    let client = aws_sdk_secretsmanager::Client::new(&config);
    let mut fetched = Vec::with_capacity(wanted.len());
    for (secret, arn) in wanted {
        fetched.push((
            secret.value,
            fetch_secret(&client, &arn, secret.what).await?,
        ));
    }
    Ok(fetched)
}

/// Reads one secret's current value (GetSecretValue) with the standard AWS configuration from
/// the environment (region, credentials, `AWS_ENDPOINT_URL_SECRETS_MANAGER`). The value is
/// never logged: errors name the secret, not its contents.
async fn fetch_secret(
    client: &aws_sdk_secretsmanager::Client,
    arn: &str,
    what: &str,
) -> Result<String, String> {
    let output = client
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|error| {
            format!(
                "cannot read {what} {arn} from Secrets Manager: {}",
                DisplayErrorContext(&error)
            )
        })?;
    let value = match (output.secret_string(), output.secret_binary()) {
        (Some(text), _) => text.to_owned(),
        (None, Some(bytes)) => String::from_utf8(bytes.as_ref().to_vec())
            .map_err(|_| format!("{what} {arn} is binary, not UTF-8 text"))?,
        (None, None) => return Err(format!("{what} {arn} has no value")),
    };
    if value.trim().is_empty() {
        return Err(format!("{what} {arn} is empty"));
    }
    tracing::info!(secret = arn, "read {what} from Secrets Manager");
    Ok(value)
}

/// Logs to stdout, where Lambda collects them: JSON lines when the function's log format is
/// JSON (`AWS_LAMBDA_LOG_FORMAT`, Lambda's advanced logging controls), compact text otherwise;
/// never ANSI colours, which CloudWatch shows as garbage. The level comes from
/// `AWS_LAMBDA_LOG_LEVEL`, else `RUST_LOG`, else `info`.
fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("AWS_LAMBDA_LOG_LEVEL")
        .ok()
        .filter(|level| !level.trim().is_empty())
        .map(|level| level.to_ascii_lowercase())
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info")))
        .with_ansi(false)
        .with_target(false)
        // Lambda stamps every line itself.
        .without_time()
        .with_writer(std::io::stdout);
    let json = std::env::var("AWS_LAMBDA_LOG_FORMAT")
        .is_ok_and(|format| format.trim().eq_ignore_ascii_case("json"));
    // try_init: a second call (tests) keeps the first subscriber instead of panicking.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.compact().try_init()
    };
}

#[cfg(test)]
mod tests {
    use axum::http::{StatusCode, header};
    use axum::routing::get;
    use tower::ServiceExt;

    use super::buffered;

    /// The buffered router answers as the router does: status, headers and body bytes.
    #[tokio::test]
    async fn buffered_responses_keep_status_headers_and_body() {
        let router = axum::Router::new().route(
            "/v1/thing",
            get(|| async {
                (
                    StatusCode::CREATED,
                    [(header::CONTENT_TYPE, "application/problem+json")],
                    "{\"title\":\"made\"}",
                )
            }),
        );
        let request = lambda_http::Request::new(lambda_http::Body::Empty);
        let (mut parts, body) = request.into_parts();
        parts.uri = "/v1/thing".parse().expect("uri");
        let request = lambda_http::Request::from_parts(parts, body);
        let Ok(response) = buffered(router).oneshot(request).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        assert_eq!(response.body().as_ref(), b"{\"title\":\"made\"}");
    }
}
