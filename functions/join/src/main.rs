//! `join`: the Lambda function serving POST /v1/rooms/{room}/peers: join a room.
//! Everything but the choice of routes lives in `signalpost_shared::lambda`.

use signalpost_shared::http::Function;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    signalpost_shared::lambda::run(Function::Join).await
}
