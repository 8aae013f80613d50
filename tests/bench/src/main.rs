//! `bench`: measures a real signalpost over loopback HTTP and prints its figures.
//!
//! It starts the server binary itself (release build recommended) on a free port with a fresh
//! SQLite file, or drives one already running (`--url`). Every run is bounded in messages and
//! time, and talks to 127.0.0.1 only.

mod latency;
mod server;

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
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let server = match &cli.url {
        Some(url) => server::Target::external(url),
        // The benchmark posts far faster than the flood limit lets one peer; it measures
        // delivery, not the limiter.
        None => server::Target::start(&cli.server_bin, &[("SIGNALPOST_RATE_LIMIT", "100000")]),
    };
    match cli.command {
        Command::Latency { waiting, messages } => {
            let figures = latency::run(&server, waiting, messages).await;
            println!("{figures}");
        }
    }
}
