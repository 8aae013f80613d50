//! `ice-servers`: the Lambda function serving GET /v1/ice-servers and /v1/health, and every unknown route.
//! Everything but the choice of routes lives in `signalpost_shared::lambda`.

use signalpost_shared::http::Function;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    signalpost_shared::lambda::run(Function::IceServers).await
}
