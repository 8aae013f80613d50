//! The command line: `--help`, `token`, and gated rooms that need its join tokens.

use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::support::{SECRET, Server, assert_problem, http, room};

fn signalpost(args: &[&str], secret: Option<&str>) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_signalpost"));
    command.args(args).env_remove("SIGNALPOST_SECRET");
    if let Some(secret) = secret {
        command.env("SIGNALPOST_SECRET", secret);
    }
    command.output().expect("signalpost runs")
}

#[test]
fn help_describes_the_commands() {
    let output = signalpost(&["--help"], None);
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(
        help.contains("token") && help.contains("SIGNALPOST_"),
        "{help}"
    );
}

#[test]
fn token_needs_the_real_secret() {
    let output = signalpost(&["token", "--room", "r"], None);
    assert!(
        !output.status.success(),
        "a random secret would mint useless tokens"
    );
    let output = signalpost(&["token", "--room", "bad room"], Some(SECRET));
    assert!(!output.status.success());
}

/// A guessable secret gives away every token: the server and `token` refuse one under 32
/// bytes, say how to make a good one, and never echo the weak one.
#[test]
fn short_secrets_are_refused_at_start() {
    let weak = "hunter2";
    let runs = [
        ("SIGNALPOST_SECRET", weak, vec!["token", "--room", "r"]),
        ("SIGNALPOST_SECRET", weak, vec![]),
        ("SIGNALPOST_TURN_SECRET", weak, vec![]),
    ];
    for (name, value, args) in runs {
        let mut command = Command::new(env!("CARGO_BIN_EXE_signalpost"));
        command
            .args(&args)
            .env("SIGNALPOST_SECRET", SECRET)
            .env("SIGNALPOST_LISTEN", "127.0.0.1:0")
            .env("SIGNALPOST_DB", ":memory:")
            .env("SIGNALPOST_TURN_URLS", "turn:turn.example.org")
            .env("SIGNALPOST_TURN_SECRET", SECRET)
            .env(name, value)
            .stdin(std::process::Stdio::null());
        // A server that accepted the secret would run until killed: bound the wait.
        let (status, stderr) = crate::support::exit_within(&mut command, Duration::from_secs(10));
        assert!(
            status.is_some_and(|status| !status.success()),
            "{name}={value} {args:?} was accepted"
        );
        assert!(
            stderr.contains(name) && stderr.contains("openssl rand") && !stderr.contains(value),
            "{stderr}"
        );
    }
}

#[tokio::test]
async fn gated_rooms_admit_only_holders_of_a_join_token_for_that_room() {
    let server = Server::start_with(&[("SIGNALPOST_GATED", "true")]);
    let (room, other) = (room(), room());
    let mint = |room: &str| {
        let output = signalpost(&["token", "--room", room, "--ttl", "600"], Some(SECRET));
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout)
            .expect("utf-8")
            .trim()
            .to_owned()
    };
    let client = http();
    let url = server.url(&format!("/v1/rooms/{room}/peers"));
    assert_problem(
        client.post(&url).send().await.expect("request"),
        401,
        "unauthorized",
    )
    .await;
    let response = client
        .post(&url)
        .json(&json!({"joinToken": "nonsense"}))
        .send()
        .await
        .expect("request");
    assert_problem(response, 401, "unauthorized").await;
    let response = client
        .post(&url)
        .json(&json!({"joinToken": mint(&other)}))
        .send()
        .await
        .expect("request");
    assert_problem(response, 403, "forbidden").await;
    let response = client
        .post(&url)
        .json(&json!({"joinToken": mint(&room), "name": "a"}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 201);
}
