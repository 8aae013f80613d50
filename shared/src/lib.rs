//! signalpost's core, shared by the standalone server and every Lambda function.
//!
//! The data flow reads top to bottom: an HTTP request reaches a handler in [`http`], which
//! parses it into the domain types of [`ids`] and [`message`], checks the bearer [`token`],
//! and calls [`signalling`], which applies the contract's rules over a [`store::Store`]
//! (SQLite or DynamoDB) and wakes waiting long polls through [`wakeup`].

pub mod aws;
pub mod clock;
pub mod config;
pub mod cursor;
pub mod error;
pub mod http;
pub mod ice;
pub mod ids;
#[cfg(feature = "lambda")]
pub mod lambda;
pub mod limits;
pub mod message;
pub mod metrics;
pub mod poll_slots;
pub mod proxy;
pub mod shutdown;
pub mod signalling;
pub mod store;
pub mod token;
pub mod wakeup;
