//! Reliability under load and faults: nothing accepted is ever lost, duplicated, reordered or
//! misdelivered. Hundreds of rooms run realistic negotiations at once while the store fails,
//! responses get lost, or the server is killed, and every recipient's inbox is checked against
//! what was accepted for it.

#[path = "../support/mod.rs"]
mod support;

mod client;
mod faults;
mod scenario;
mod tests;
