//! Reliability under load and faults: nothing accepted is ever lost, duplicated, reordered or
//! misdelivered. Hundreds of rooms run realistic negotiations at once while the store fails,
//! responses get lost, or the server is killed, and every recipient's inbox is checked against
//! what was accepted for it.

// The harness is written for the black-box API suite (tests/api), which uses all of it and
// checks it for dead code; this suite uses a part.
#[allow(dead_code)]
#[path = "../support/mod.rs"]
mod support;

mod client;
mod faults;
mod scenario;
mod tests;
