//! `signalpost`: the standalone server (every route, the demo page and the client library, on
//! the embedded SQLite store unless `SIGNALPOST_TABLE` is set), plus its admin commands.

mod call_link;
mod dev_cert;
mod prometheus;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use signalpost_shared::clock::now_millis;
use signalpost_shared::config::{Config, Deployment};
use signalpost_shared::error::error_chain;
use signalpost_shared::http::serve::{ConnectionLimits, tls};
use signalpost_shared::http::standalone_router;
use signalpost_shared::ids::RoomId;
use signalpost_shared::signalling::Signalling;
use signalpost_shared::store;
use signalpost_shared::store::dynamo::DynamoStore;

/// Threads for blocking store calls: SQLite writes are serialised on one connection (and
/// wait for it without a thread), reads share a few connections, so more threads only cost
/// memory: with thousands of waiting polls, tokio's default (512) grew the server by ~60 KB
/// per waiting peer.
const BLOCKING_THREADS: usize = 8;

/// WebRTC signalling over plain HTTP: clients POST offers, answers and ICE candidates and
/// long-poll for the other side's.
///
/// Without a command, serves the API, the demo call page at / and the client library at
/// /signalpost.js. Configuration comes from the SIGNALPOST_* environment variables (see the
/// README); the embedded database is SIGNALPOST_DB (default ./signalpost.db).
#[derive(Parser)]
#[command(name = "signalpost", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Create the DynamoDB table SIGNALPOST_TABLE (keys and TTL as in infra/template.yaml), for
    /// local DynamoDB-compatible servers; endpoint and credentials from the AWS variables.
    CreateTable,
    /// Write a self-signed certificate and key for localhost, 127.0.0.1 and ::1, to serve HTTPS
    /// (and so HTTP/2) in development: SIGNALPOST_TLS_CERT and SIGNALPOST_TLS_KEY name them.
    DevCert {
        /// The directory to write dev-cert.pem and dev-key.pem into.
        #[arg(long, default_value = ".")]
        out_dir: PathBuf,
    },
    /// Print a join token for a gated room (SIGNALPOST_GATED=true), signed with SIGNALPOST_SECRET.
    Token {
        /// The room the token opens.
        #[arg(long)]
        room: String,
        /// Seconds the token is valid.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
    },
}

fn main() -> ExitCode {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        .build()
    {
        Ok(runtime) => runtime.block_on(run()),
        Err(error) => {
            eprintln!("signalpost: cannot start the async runtime: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tower_http=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let config = match Config::from_env(Deployment::Standalone) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("signalpost: {error}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        None => serve(config).await,
        Some(Command::Token { room, ttl }) => print_join_token(&config, &room, ttl),
        Some(Command::CreateTable) => create_table(&config).await,
        Some(Command::DevCert { out_dir }) => dev_cert::write(&out_dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("signalpost: {message}");
            ExitCode::FAILURE
        }
    }
}

fn print_join_token(config: &Config, room: &str, ttl: u64) -> Result<(), String> {
    if config.secret_generated {
        return Err("set SIGNALPOST_SECRET to the server's secret: a token signed with anything else is refused".into());
    }
    let room = RoomId::parse(room).map_err(|error| error.to_string())?;
    let expires_at = now_millis() / 1000 + i64::try_from(ttl).map_err(|_| "--ttl is too large")?;
    let keys = signalpost_shared::token::TokenKeys::new(config.secret.expose());
    println!("{}", keys.issue_join(&room, expires_at));
    Ok(())
}

async fn create_table(config: &Config) -> Result<(), String> {
    let table = config
        .table
        .clone()
        .ok_or("set SIGNALPOST_TABLE to the table to create")?;
    let store = DynamoStore::connect(table.clone())
        .await
        .map_err(|error| error.to_string())?;
    store
        .create_table()
        .await
        .map_err(|error| format!("cannot create {table}: {}", error_chain(&error)))?;
    println!("table {table} is ready");
    Ok(())
}

async fn serve(config: Config) -> Result<(), String> {
    if config.secret_generated {
        tracing::warn!(
            "SIGNALPOST_SECRET is not set: using a random secret, so tokens stop working when this process restarts"
        );
    }
    // Before anything records: metrics recorded earlier would go nowhere.
    let metrics_address = match config.metrics_listen {
        Some(address) => Some(prometheus::serve(address).await?),
        None => None,
    };
    // Before the store: a bad certificate should not leave a fresh database behind.
    let tls = match &config.tls {
        Some(files) => {
            Some(tls::acceptor(&files.cert, &files.key).map_err(|error| error.to_string())?)
        }
        None => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let store = store::open(&config)
        .await
        .map_err(|error| format!("cannot open the store: {}", error_chain(&error)))?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|error| format!("cannot listen on {}: {error}", config.listen))?;
    let address = listener.local_addr().map_err(|error| error.to_string())?;
    let limits = ConnectionLimits {
        total: config.max_connections,
        per_client: config.max_client_connections,
        proxies: config.trust_proxy.clone(),
    };
    let signalling = Arc::new(Signalling::open(config, store).await);
    let router = standalone_router(Arc::clone(&signalling));

    let housekeeping = signalling.spawn_housekeeping();

    // Listening from before the first line, so that a stop asked for as soon as it shows is
    // graceful too.
    let requested = signalpost_shared::shutdown::requested();
    // Tests and scripts wait for the first line, and the browser tests open the second one's
    // URL; both go to stdout, unlike the logs.
    println!("signalpost listening on {scheme}://{address}");
    let room = call_link::fresh_room(&mut rand::rng());
    let elsewhere = if address.ip().is_unspecified() {
        " (from another machine, put this machine's address in place of the loopback one)"
    } else {
        ""
    };
    println!(
        "open {} in two browser tabs for a video call{elsewhere}",
        call_link::call_url(scheme, address, &room)
    );
    if let Some(metrics_address) = metrics_address {
        println!("metrics at http://{metrics_address}/metrics");
    }
    let shutdown = {
        let signalling = Arc::clone(&signalling);
        async move {
            requested.await;
            tracing::info!("shutting down: ending long polls, finishing requests in flight");
            signalling.begin_shutdown();
        }
    };
    signalpost_shared::http::serve::serve(listener, router, limits, tls, shutdown).await;
    housekeeping.abort();
    // Its wake-up socket or queue goes with it.
    signalling.close().await;
    Ok(())
}
