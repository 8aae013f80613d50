//! `poll`: the Lambda function serving GET /v1/rooms/{room}/messages: the long poll.
//! Everything but the choice of routes lives in `signalpost_shared::lambda`.

use signalpost_shared::http::Function;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    signalpost_shared::lambda::run(Function::Poll).await
}
