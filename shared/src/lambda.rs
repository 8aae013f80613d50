//! Running as a Lambda function: the cold-start wiring every function binary shares, so each
//! `main` is one line naming its [`Function`].
//!
//! At cold start, once: logs, the signing secret (from `SIGNALPOST_SECRET`, or fetched from
//! Secrets Manager when only `SIGNALPOST_SECRET_ARN` is set), the configuration, the store and
//! the function's router. Then the Lambda runtime feeds it API Gateway (payload 2.0) events
//! until the sandbox goes away. The router is the same axum router the standalone server
//! uses, limited to this function's routes, so routing, extractors and the tower layers
//! (CORS, body limit, panic guard) are the same code in every deployment.

use std::process::ExitCode;
use std::sync::Arc;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_sdk_secretsmanager::error::DisplayErrorContext;

use crate::config::{Config, ConfigError, Deployment};
use crate::http::{Function, api_router};
use crate::signalling::Signalling;
use crate::store;

/// The variable naming the Secrets Manager secret that holds the token signing secret.
pub const SECRET_ARN_VAR: &str = "SIGNALPOST_SECRET_ARN";

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
    let router = match start(function).await {
        Ok(router) => router,
        Err(message) => {
            eprintln!("signalpost {name}: cannot start: {message}");
            return ExitCode::FAILURE;
        }
    };
    match lambda_http::run(router).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("signalpost {name}: the Lambda runtime stopped: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Everything done once per sandbox: configuration, store and router.
async fn start(function: Function) -> Result<axum::Router, String> {
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
    let fetched = match secret_arn()? {
        Some(arn) => Some(fetch_secret(&arn).await?),
        None => None,
    };
    let config = Config::from_env_with_secret(Deployment::Lambda, fetched).map_err(|error| {
        match error {
            ConfigError::Missing("SIGNALPOST_SECRET") => format!(
                "SIGNALPOST_SECRET (the token signing secret) or {SECRET_ARN_VAR} (a Secrets Manager secret holding it) is required: every instance must sign with the same secret"
            ),
            other => other.to_string(),
        }
    })?;
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
    // Wake-ups between execution environments (SQS beside DynamoDB, Unix sockets beside
    // SQLite under `cargo lambda watch`).
    let signalling = Arc::new(Signalling::open(config, store).await);
    Ok(api_router(signalling, &[function]))
}

/// The secret's ARN (or name) when the secret is to be fetched: `SIGNALPOST_SECRET_ARN` set
/// and `SIGNALPOST_SECRET` unset or empty (the value, where given, wins).
fn secret_arn() -> Result<Option<String>, String> {
    let set = |name: &str| {
        std::env::var(name)
            .ok()
            .filter(|value| !value.trim().is_empty())
    };
    if set("SIGNALPOST_SECRET").is_some() {
        return Ok(None);
    }
    Ok(set(SECRET_ARN_VAR).map(|arn| arn.trim().to_owned()))
}

/// Reads the secret's current value (GetSecretValue) with the standard AWS configuration from
/// the environment (region, credentials, `AWS_ENDPOINT_URL_SECRETS_MANAGER`). The value is
/// never logged: errors name the secret, not its contents.
async fn fetch_secret(arn: &str) -> Result<String, String> {
    let config = aws_config::defaults(BehaviorVersion::latest())
        // The store client's settings: a stuck endpoint fails the init quickly.
        .timeout_config(crate::store::dynamo::DynamoStore::timeouts())
        .retry_config(RetryConfig::standard().with_max_attempts(3))
        .load()
        .await;
    let client = aws_sdk_secretsmanager::Client::new(&config);
    let output = client
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|error| {
            format!(
                "cannot read the signing secret {arn} from Secrets Manager: {}",
                DisplayErrorContext(&error)
            )
        })?;
    let value = match (output.secret_string(), output.secret_binary()) {
        (Some(text), _) => text.to_owned(),
        (None, Some(bytes)) => String::from_utf8(bytes.as_ref().to_vec())
            .map_err(|_| format!("the signing secret {arn} is binary, not UTF-8 text"))?,
        (None, None) => return Err(format!("the signing secret {arn} has no value")),
    };
    if value.trim().is_empty() {
        return Err(format!("the signing secret {arn} is empty"));
    }
    tracing::info!(secret = arn, "read the signing secret from Secrets Manager");
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
