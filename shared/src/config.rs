//! Configuration, read once at start from the contract's environment variables into a typed
//! struct. Every value is checked here, so a bad one stops the process with a clear message
//! instead of surfacing later as a confusing error.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::str::FromStr;

use rand::RngCore;
use thiserror::Error;

use crate::ice::TurnConfig;
use crate::proxy::{NotAnAddress, TrustProxy};

/// Where the code runs, which decides what a missing secret means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deployment {
    /// One process: a missing secret gets a random one, with a warning.
    Standalone,
    /// A Lambda function: instances must agree on the secret, so it is required.
    Lambda,
}

/// The largest room: a broadcast batch to every member must fit one DynamoDB transaction
/// (100 items: one inbox item per recipient plus the post's idempotency records).
pub const MAX_ROOM_CAPACITY: u64 = 25;

/// The longest long poll API Gateway's 30 s integration timeout leaves room for.
pub const MAX_WAIT_CEILING: u64 = 25;

/// The token signing secret; never printed.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// The secret's bytes, for the token keys.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Which origins may call the API from a browser.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CorsOrigins {
    Any,
    List(Vec<String>),
}

/// Everything the server reads from the environment.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub db_path: PathBuf,
    pub table: Option<String>,
    pub secret: Secret,
    /// True when no secret was configured and a random one is in use.
    pub secret_generated: bool,
    /// Seconds a peer token is valid.
    pub token_ttl: u64,
    pub gated: bool,
    pub max_peers: usize,
    /// Longest long poll, seconds.
    pub max_wait: u64,
    /// Seconds an undelivered message is kept.
    pub message_ttl: u64,
    /// Seconds without a poll before a peer is gone.
    pub presence_timeout: u64,
    /// Most messages an inbox holds beyond what its peer has acknowledged by polling.
    pub max_inbox: u64,
    /// Most posts one peer may make per 10 seconds.
    pub rate_limit: u64,
    /// Most joins, polls and posts per minute from one client address (where the address is
    /// known: the standalone server); `None` when switched off.
    pub join_limit: Option<NonZeroU32>,
    pub poll_limit: Option<NonZeroU32>,
    pub post_limit: Option<NonZeroU32>,
    /// The proxies whose `X-Forwarded-For` names the client.
    pub trust_proxy: TrustProxy,
    /// Most open connections of the standalone server, in total and per client address.
    pub max_connections: usize,
    pub max_client_connections: usize,
    pub cors_origins: CorsOrigins,
    pub stun_urls: Vec<String>,
    pub turn: Option<TurnConfig>,
    /// Serve the demo page from this directory instead of the copy built in (development).
    pub web_dir: Option<PathBuf>,
    /// Serve HTTPS (HTTP/2 and HTTP/1.1) with these PEM files (standalone server).
    pub tls: Option<TlsFiles>,
    /// Wake polls in other processes sharing the store (`SIGNALPOST_WAKEUPS`, default on):
    /// SQS beside DynamoDB, Unix sockets beside SQLite.
    pub wakeups: bool,
    /// Standalone: serve Prometheus metrics at `GET /metrics` on this address, and only
    /// there (`SIGNALPOST_METRICS_LISTEN`; unset: no metrics endpoint at all).
    pub metrics_listen: Option<SocketAddr>,
}

/// The standalone server's certificate chain and private key, PEM files named by
/// `SIGNALPOST_TLS_CERT` and `SIGNALPOST_TLS_KEY`; read (and checked) when the server starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A variable with a value the server cannot use.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("{name}={value:?} is not valid: {reason}")]
    Invalid {
        name: &'static str,
        value: String,
        reason: String,
    },
    #[error("{0} is required")]
    Missing(&'static str),
    /// Never carries the value: a secret must not reach a log, even a weak one.
    #[error(
        "{name} is {length} bytes: it must be at least {MIN_SECRET_BYTES} random bytes, or one \
         token is enough to guess it offline; make one with `openssl rand -base64 32`"
    )]
    WeakSecret { name: &'static str, length: usize },
}

/// The shortest signing or TURN secret accepted: 256 bits, so that a peer token (a signature
/// an attacker can test guesses against offline) does not give the secret away.
pub const MIN_SECRET_BYTES: usize = 32;

/// Refuses a secret shorter than [`MIN_SECRET_BYTES`].
fn strong_secret(name: &'static str, secret: String) -> Result<String, ConfigError> {
    if secret.len() < MIN_SECRET_BYTES {
        return Err(ConfigError::WeakSecret {
            name,
            length: secret.len(),
        });
    }
    Ok(secret)
}

/// The default embedded database file, relative to the working directory.
pub const DEFAULT_DB: &str = "signalpost.db";

impl Config {
    /// Reads the process environment.
    pub fn from_env(deployment: Deployment) -> Result<Self, ConfigError> {
        Self::from_lookup(deployment, |name| std::env::var(name).ok())
    }

    /// Reads the process environment, with each `(variable, value)` of `fetched` in place of
    /// that variable: a Lambda function fetches its secrets (`SIGNALPOST_SECRET`,
    /// `SIGNALPOST_TURN_SECRET`) from Secrets Manager at cold start, by the ARN it is given, so
    /// they never sit in the function's configuration.
    pub fn from_env_with_secrets(
        deployment: Deployment,
        fetched: Vec<(&'static str, String)>,
    ) -> Result<Self, ConfigError> {
        Self::from_lookup(
            deployment,
            with_fetched(fetched, |name| std::env::var(name).ok()),
        )
    }

    /// Reads configuration through `lookup`, so tests need not touch the environment.
    pub fn from_lookup(
        deployment: Deployment,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let var = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        let list = |name: &str| {
            var(name).map_or_else(Vec::new, |value| {
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|item| !item.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
        };

        let (secret, secret_generated) = match var("SIGNALPOST_SECRET") {
            Some(secret) => (
                Secret(strong_secret("SIGNALPOST_SECRET", secret)?.into_bytes()),
                false,
            ),
            None if deployment == Deployment::Standalone => {
                let mut random = vec![0u8; 32];
                rand::rng().fill_bytes(&mut random);
                (Secret(random), true)
            }
            None => return Err(ConfigError::Missing("SIGNALPOST_SECRET")),
        };

        let max_wait = number(
            &var,
            "SIGNALPOST_MAX_WAIT",
            MAX_WAIT_CEILING,
            0..=MAX_WAIT_CEILING,
        )?;
        let presence_timeout = number(&var, "SIGNALPOST_PRESENCE_TIMEOUT", 60, 1..=86_400)?;
        if presence_timeout < max_wait + 5 {
            return Err(ConfigError::Invalid {
                name: "SIGNALPOST_PRESENCE_TIMEOUT",
                value: presence_timeout.to_string(),
                reason: format!(
                    "must be at least SIGNALPOST_MAX_WAIT + 5 ({}), or a peer in a long poll would time out",
                    max_wait + 5
                ),
            });
        }

        let turn_urls = list("SIGNALPOST_TURN_URLS");
        let turn = match (turn_urls.is_empty(), var("SIGNALPOST_TURN_SECRET")) {
            (true, None) => None,
            (false, Some(secret)) => Some(TurnConfig {
                urls: turn_urls,
                secret: strong_secret("SIGNALPOST_TURN_SECRET", secret)?,
                ttl: number(&var, "SIGNALPOST_TURN_TTL", 3600, 60..=7 * 86_400)?,
            }),
            (false, None) => {
                return Err(ConfigError::Missing(
                    "SIGNALPOST_TURN_SECRET (with SIGNALPOST_TURN_URLS)",
                ));
            }
            (true, Some(_)) => {
                return Err(ConfigError::Missing(
                    "SIGNALPOST_TURN_URLS (with SIGNALPOST_TURN_SECRET)",
                ));
            }
        };

        let cors_origins = match list("SIGNALPOST_CORS_ORIGINS") {
            origins if origins.is_empty() || origins.iter().any(|origin| origin == "*") => {
                CorsOrigins::Any
            }
            origins => CorsOrigins::List(origins),
        };

        let tls = match (var("SIGNALPOST_TLS_CERT"), var("SIGNALPOST_TLS_KEY")) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: PathBuf::from(cert),
                key: PathBuf::from(key),
            }),
            (Some(_), None) => {
                return Err(ConfigError::Missing(
                    "SIGNALPOST_TLS_KEY (with SIGNALPOST_TLS_CERT)",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::Missing(
                    "SIGNALPOST_TLS_CERT (with SIGNALPOST_TLS_KEY)",
                ));
            }
        };

        let listen = var("SIGNALPOST_LISTEN").unwrap_or_else(|| "127.0.0.1:8080".into());
        let address = |name: &'static str, value: String| {
            SocketAddr::from_str(&value).map_err(|error| ConfigError::Invalid {
                name,
                value: value.clone(),
                reason: error.to_string(),
            })
        };
        Ok(Self {
            listen: address("SIGNALPOST_LISTEN", listen)?,
            metrics_listen: var("SIGNALPOST_METRICS_LISTEN")
                .map(|value| address("SIGNALPOST_METRICS_LISTEN", value))
                .transpose()?,
            db_path: var("SIGNALPOST_DB").map_or_else(|| PathBuf::from(DEFAULT_DB), PathBuf::from),
            table: var("SIGNALPOST_TABLE"),
            secret,
            secret_generated,
            token_ttl: number(&var, "SIGNALPOST_TOKEN_TTL", 86_400, 60..=30 * 86_400)?,
            gated: boolean(&var, "SIGNALPOST_GATED")?,
            max_peers: usize::try_from(number(
                &var,
                "SIGNALPOST_MAX_PEERS",
                8,
                2..=MAX_ROOM_CAPACITY,
            )?)
            .unwrap_or(8),
            max_wait,
            message_ttl: number(&var, "SIGNALPOST_MESSAGE_TTL", 600, 10..=7 * 86_400)?,
            presence_timeout,
            max_inbox: number(&var, "SIGNALPOST_MAX_INBOX", 1000, 10..=100_000)?,
            // Trickle ICE with batching needs a few dozen posts per negotiation; a flooder
            // wants thousands.
            rate_limit: number(&var, "SIGNALPOST_RATE_LIMIT", 100, 1..=100_000)?,
            join_limit: per_minute(&var, "SIGNALPOST_JOIN_LIMIT", 60)?,
            // Above what 8 peers behind one address do even at their own post limit
            // (SIGNALPOST_RATE_LIMIT, 600 a minute each), and far above a call's few dozen.
            poll_limit: per_minute(&var, "SIGNALPOST_POLL_LIMIT", 6000)?,
            post_limit: per_minute(&var, "SIGNALPOST_POST_LIMIT", 6000)?,
            trust_proxy: var("SIGNALPOST_TRUST_PROXY")
                .map(|value| {
                    value
                        .parse()
                        .map_err(|error: NotAnAddress| ConfigError::Invalid {
                            name: "SIGNALPOST_TRUST_PROXY",
                            value,
                            reason: format!(
                                "{:?} is not an address or a network: expected true, false, or a \
                             comma-separated list of proxy addresses and CIDRs",
                                error.0
                            ),
                        })
                })
                .transpose()?
                .unwrap_or_default(),
            max_connections: usize::try_from(number(
                &var,
                "SIGNALPOST_MAX_CONNECTIONS",
                4096,
                1..=1_000_000,
            )?)
            .unwrap_or(4096),
            max_client_connections: usize::try_from(number(
                &var,
                "SIGNALPOST_MAX_CLIENT_CONNECTIONS",
                256,
                1..=1_000_000,
            )?)
            .unwrap_or(256),
            cors_origins,
            stun_urls: list("SIGNALPOST_STUN_URLS"),
            turn,
            web_dir: var("SIGNALPOST_WEB_DIR").map(PathBuf::from),
            tls,
            wakeups: var("SIGNALPOST_WAKEUPS").is_none() || boolean(&var, "SIGNALPOST_WAKEUPS")?,
        })
    }
}

/// `lookup`, except for the variables `fetched` gives values for.
fn with_fetched(
    fetched: Vec<(&'static str, String)>,
    lookup: impl Fn(&str) -> Option<String>,
) -> impl Fn(&str) -> Option<String> {
    move |name| {
        fetched
            .iter()
            .find(|(variable, _)| *variable == name)
            .map(|(_, value)| value.clone())
            .or_else(|| lookup(name))
    }
}

fn number(
    var: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, ConfigError> {
    let Some(value) = var(name) else {
        return Ok(default);
    };
    match value.trim().parse::<u64>() {
        Ok(number) if range.contains(&number) => Ok(number),
        _ => Err(ConfigError::Invalid {
            name,
            value,
            reason: format!(
                "expected a whole number from {} to {}",
                range.start(),
                range.end()
            ),
        }),
    }
}

/// A per-minute limit, or `None` for `off`.
fn per_minute(
    var: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: u32,
) -> Result<Option<NonZeroU32>, ConfigError> {
    if var(name).is_some_and(|value| value.trim() == "off") {
        return Ok(None);
    }
    let limit = number(var, name, u64::from(default), 1..=1_000_000)?;
    Ok(u32::try_from(limit).ok().and_then(NonZeroU32::new))
}

fn boolean(var: &impl Fn(&str) -> Option<String>, name: &'static str) -> Result<bool, ConfigError> {
    match var(name).as_deref().map(str::trim) {
        None => Ok(false),
        Some("true" | "1" | "yes") => Ok(true),
        Some("false" | "0" | "no") => Ok(false),
        Some(other) => Err(ConfigError::Invalid {
            name,
            value: other.to_owned(),
            reason: "expected true or false".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A secret of exactly the minimum length.
    const STRONG: &str = "0123456789abcdef0123456789abcdef";

    fn config(deployment: Deployment, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup(deployment, |name| vars.get(name).cloned())
    }

    #[test]
    fn defaults_follow_the_contract() {
        let config = config(Deployment::Standalone, &[]).expect("defaults are valid");
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!((config.max_peers, config.max_wait), (8, 25));
        assert_eq!(
            (
                config.message_ttl,
                config.presence_timeout,
                config.token_ttl
            ),
            (600, 60, 86_400)
        );
        assert_eq!(config.cors_origins, CorsOrigins::Any);
        assert!(config.secret_generated && !config.gated && config.turn.is_none());
        assert_eq!(
            config.tls, None,
            "plain HTTP unless both TLS files are named"
        );
        assert!(!format!("{config:?}").contains(&format!("{:?}", config.secret.expose())));
    }

    #[test]
    fn lambda_requires_a_secret() {
        assert!(matches!(
            config(Deployment::Lambda, &[]),
            Err(ConfigError::Missing("SIGNALPOST_SECRET"))
        ));
        assert!(config(Deployment::Lambda, &[("SIGNALPOST_SECRET", STRONG)]).is_ok());
    }

    #[test]
    fn fetched_secrets_stand_in_for_their_variables() {
        let fetched = Config::from_lookup(
            Deployment::Lambda,
            with_fetched(
                vec![
                    (
                        "SIGNALPOST_SECRET",
                        format!("from-secrets-manager-{STRONG}"),
                    ),
                    (
                        "SIGNALPOST_TURN_SECRET",
                        format!("turn-from-secrets-manager-{STRONG}"),
                    ),
                ],
                |name| (name == "SIGNALPOST_TURN_URLS").then(|| "turn:t".into()),
            ),
        )
        .expect("the fetched secrets satisfy Lambda and TURN");
        assert_eq!(
            fetched.secret.expose(),
            format!("from-secrets-manager-{STRONG}").as_bytes()
        );
        assert!(!fetched.secret_generated);
        assert_eq!(
            fetched.turn.as_ref().map(|turn| turn.secret.as_str()),
            Some(format!("turn-from-secrets-manager-{STRONG}").as_str())
        );
        assert!(!format!("{fetched:?}").contains("from-secrets-manager"));
        let unset = Config::from_lookup(Deployment::Lambda, with_fetched(Vec::new(), |_| None));
        assert!(matches!(
            unset,
            Err(ConfigError::Missing("SIGNALPOST_SECRET"))
        ));
    }

    #[test]
    fn empty_values_mean_unset() {
        let config = config(
            Deployment::Lambda,
            &[
                ("SIGNALPOST_SECRET", STRONG),
                ("SIGNALPOST_STUN_URLS", ""),
                ("SIGNALPOST_TURN_URLS", ""),
                ("SIGNALPOST_TURN_SECRET", ""),
                ("SIGNALPOST_TABLE", ""),
                ("SIGNALPOST_CORS_ORIGINS", " "),
            ],
        )
        .expect("empty values are the defaults");
        assert!(config.stun_urls.is_empty() && config.turn.is_none() && config.table.is_none());
        assert_eq!(config.cors_origins, CorsOrigins::Any);
    }

    #[test]
    fn refuses_bad_values() {
        for (name, value) in [
            ("SIGNALPOST_MAX_WAIT", "26"),
            ("SIGNALPOST_MAX_WAIT", "-1"),
            ("SIGNALPOST_RATE_LIMIT", "0"),
            ("SIGNALPOST_MAX_PEERS", "lots"),
            ("SIGNALPOST_MAX_PEERS", "26"),
            ("SIGNALPOST_GATED", "maybe"),
            ("SIGNALPOST_LISTEN", "nowhere"),
            ("SIGNALPOST_METRICS_LISTEN", "9090"),
            ("SIGNALPOST_PRESENCE_TIMEOUT", "20"),
            ("SIGNALPOST_TURN_URLS", "turn:x"),
            ("SIGNALPOST_POLL_LIMIT", "0"),
            ("SIGNALPOST_POST_LIMIT", "none"),
            ("SIGNALPOST_TRUST_PROXY", "10.0.0.0/8, proxy.example"),
            ("SIGNALPOST_TLS_CERT", "cert.pem"),
            ("SIGNALPOST_TLS_KEY", "key.pem"),
        ] {
            assert!(
                config(Deployment::Standalone, &[(name, value)]).is_err(),
                "{name}={value} accepted"
            );
        }
    }

    #[test]
    fn refuses_short_secrets_without_printing_them() {
        let short = &STRONG[1..];
        for (deployment, vars) in [
            (Deployment::Lambda, vec![("SIGNALPOST_SECRET", short)]),
            (
                Deployment::Standalone,
                vec![("SIGNALPOST_SECRET", "secret")],
            ),
            (
                Deployment::Standalone,
                vec![
                    ("SIGNALPOST_TURN_URLS", "turn:t"),
                    ("SIGNALPOST_TURN_SECRET", short),
                ],
            ),
        ] {
            let error = config(deployment, &vars).expect_err("a short secret is refused");
            let message = error.to_string();
            assert!(
                matches!(error, ConfigError::WeakSecret { .. })
                    && message.contains("openssl rand")
                    && !message.contains(short)
                    && !message.contains("\"secret\""),
                "{message}"
            );
        }
    }

    #[test]
    fn per_client_limits_have_defaults_and_switch_off() {
        let defaults = config(Deployment::Standalone, &[]).expect("valid");
        let per_minute = |limit: Option<NonZeroU32>| limit.map(NonZeroU32::get);
        assert_eq!(
            (
                per_minute(defaults.join_limit),
                per_minute(defaults.poll_limit),
                per_minute(defaults.post_limit)
            ),
            (Some(60), Some(6000), Some(6000))
        );
        assert_eq!(defaults.trust_proxy, TrustProxy::Nobody);
        let set = config(
            Deployment::Standalone,
            &[
                ("SIGNALPOST_JOIN_LIMIT", "off"),
                ("SIGNALPOST_POLL_LIMIT", "120"),
                ("SIGNALPOST_POST_LIMIT", " off "),
                ("SIGNALPOST_TRUST_PROXY", "10.0.0.0/8,192.0.2.1"),
            ],
        )
        .expect("valid");
        assert_eq!(
            (set.join_limit, per_minute(set.poll_limit), set.post_limit),
            (None, Some(120), None)
        );
        assert!(matches!(set.trust_proxy, TrustProxy::Named(ref proxies) if proxies.len() == 2));
        let legacy = config(
            Deployment::Standalone,
            &[("SIGNALPOST_TRUST_PROXY", "true")],
        );
        assert_eq!(legacy.expect("valid").trust_proxy, TrustProxy::AnyPeer);
    }

    #[test]
    fn reads_lists_and_turn() {
        let config = config(
            Deployment::Standalone,
            &[
                (
                    "SIGNALPOST_CORS_ORIGINS",
                    "https://a.example, https://b.example",
                ),
                ("SIGNALPOST_STUN_URLS", "stun:a,stun:b"),
                ("SIGNALPOST_TURN_URLS", "turn:t"),
                ("SIGNALPOST_TURN_SECRET", STRONG),
                ("SIGNALPOST_GATED", "true"),
                ("SIGNALPOST_TLS_CERT", "cert.pem"),
                ("SIGNALPOST_TLS_KEY", "key.pem"),
            ],
        )
        .expect("valid");
        assert_eq!(
            config.tls,
            Some(TlsFiles {
                cert: "cert.pem".into(),
                key: "key.pem".into()
            })
        );
        assert_eq!(
            config.cors_origins,
            CorsOrigins::List(vec!["https://a.example".into(), "https://b.example".into()])
        );
        assert_eq!(config.stun_urls, ["stun:a", "stun:b"]);
        assert_eq!(config.turn.map(|turn| turn.ttl), Some(3600));
        assert!(config.gated);
    }
}
