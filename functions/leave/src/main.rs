//! `leave`: the Lambda function serving DELETE /v1/rooms/{room}/peers/{peer} and the beacon POST .../leave: leave a room.
//! Everything but the choice of routes lives in `signalpost_shared::lambda`.

use signalpost_shared::http::Function;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    signalpost_shared::lambda::run(Function::Leave).await
}
