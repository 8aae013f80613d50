//! Black-box tests of the HTTP API against the real `signalpost` binary over loopback HTTP.
//! Every test starts its own server (own port, own SQLite file), so they run in parallel.

#[path = "../support/mod.rs"]
mod support;

mod cli;
mod conventions;
mod delivery;
mod errors;
mod hostile;
mod housekeeping;
mod lifecycle;
mod limits;
mod membership;
mod metrics;
mod stalled_store;
mod tls;
