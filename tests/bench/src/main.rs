//! `bench`: measures a real signalpost over loopback HTTP and prints its figures.
//!
//! It starts the server binary itself (release build recommended) on a free port with a fresh
//! SQLite file, or drives one already running (`--url`). Every run is bounded in messages and
//! time, and talks to 127.0.0.1 only.

mod cost;
mod deployment;
mod dynamo;
mod latency;
mod poll_read;
mod prices;
mod server;
mod store;
mod throughput;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Benchmarks of signalpost over loopback HTTP")]
struct Cli {
    /// The signalpost binary to start.
    #[arg(long, default_value = "target/release/signalpost", global = true)]
    server_bin: String,
    /// Use this running server instead of starting one.
    #[arg(long, global = true)]
    url: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Post→delivery latency with the recipient's long poll already waiting.
    Latency {
        /// Peers holding a waiting long poll (in rooms of two) while messages are measured.
        #[arg(long, default_value_t = 2)]
        waiting: usize,
        /// Messages measured, one at a time.
        #[arg(long, default_value_t = 1000)]
        messages: usize,
    },
    /// The DynamoDB store's figures against local endpoints (run via tests/with-moto.sh): with
    /// SQS wake-ups between instances and without, side by side.
    Dynamo {
        /// Messages measured one at a time during the active exchange.
        #[arg(long, default_value_t = 200)]
        messages: usize,
        /// Idle waiting peers whose requests are counted.
        #[arg(long, default_value_t = 10)]
        idle_peers: usize,
        /// Seconds the idle peers are counted.
        #[arg(long, default_value_t = 60)]
        idle_seconds: u64,
    },
    /// What a deployment costs: measured request counts (DynamoDB on a local endpoint, run via
    /// tests/with-moto.sh) times the price table of tests/bench/src/prices.rs.
    Cost(cost::Settings),
    /// What one poll of 100 offers of 32 KiB reads from DynamoDB (Query pages, items, bytes),
    /// without the byte budget in the store read and with it (run via tests/with-moto.sh).
    PollRead,
    /// Poll and post latency while housekeeping deletes many expired rows (SQLite).
    Housekeeping {
        /// Expired rows put in the file before the server starts.
        #[arg(long, default_value_t = 5_000_000)]
        rows: u64,
    },
    /// The SQLite files' size over a long run with a 10 s TTL (60x the default).
    Soak {
        /// Minutes to run (24 simulate a day).
        #[arg(long, default_value_t = 24)]
        minutes: u64,
        /// Rooms negotiating over and over at once.
        #[arg(long, default_value_t = 8)]
        rooms: usize,
    },
    /// Delivered messages per second with many rooms sending flat out.
    Throughput {
        /// Sender/receiver pairs.
        #[arg(long, default_value_t = 50)]
        rooms: usize,
        /// Seconds measured (after one second of warm-up).
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    if let Command::Cost(settings) = cli.command {
        cost::run(settings).await;
        return;
    }
    if let Command::Dynamo {
        messages,
        idle_peers,
        idle_seconds,
    } = cli.command
    {
        dynamo::run(messages, idle_peers, idle_seconds).await;
        return;
    }
    match cli.command {
        Command::PollRead => return poll_read::run().await,
        Command::Housekeeping { rows } => return store::housekeeping(&cli.server_bin, rows).await,
        Command::Soak { minutes, rooms } => {
            return store::soak(&cli.server_bin, minutes, rooms).await;
        }
        _ => {}
    }
    let server = match &cli.url {
        Some(url) => server::Target::external(url),
        // The benchmark posts far faster than the flood limit lets one peer, and joins and
        // connects hundreds of peers from one address; it measures delivery, not the limits.
        None => server::Target::start(
            &cli.server_bin,
            &[
                ("SIGNALPOST_RATE_LIMIT", "100000"),
                ("SIGNALPOST_JOIN_LIMIT", "off"),
                ("SIGNALPOST_POLL_LIMIT", "off"),
                ("SIGNALPOST_POST_LIMIT", "off"),
                ("SIGNALPOST_MAX_CLIENT_CONNECTIONS", "100000"),
            ],
        ),
    };
    match cli.command {
        Command::Latency { waiting, messages } => {
            let figures = latency::run(&server, waiting, messages).await;
            println!("{figures}");
        }
        Command::Dynamo { .. }
        | Command::Cost(_)
        | Command::Housekeeping { .. }
        | Command::PollRead
        | Command::Soak { .. } => unreachable!("handled above"),
        Command::Throughput { rooms, seconds } => {
            let rate = throughput::run(&server, rooms, seconds).await;
            println!("| rooms | delivered messages/s |\n|---:|---:|\n| {rooms} | {rate:.0} |");
        }
    }
    if let Some(memory) = server.memory() {
        println!("\nserver memory: {memory}");
    }
}
