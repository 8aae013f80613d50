//! HTTPS on the standalone server: start-up refuses bad certificate files naming them,
//! `dev-cert` writes a usable pair, ALPN picks HTTP/2 or HTTP/1.1, and the deadlines hold over
//! HTTP/2 (a stalled stream, an idle connection, a trickled body) and over the handshake.
//! The rest of the suite runs over HTTPS too with `SIGNALPOST_TEST_TLS=1` (tests/run.sh).

use std::process::Command;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{Request, Version};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::support::{Server, connect_tls, dev_cert, standalone_only, tls_client_config};

/// A server on HTTPS with the test certificate, whatever `SIGNALPOST_TEST_TLS` says.
fn https_server() -> Server {
    let (cert, key) = dev_cert();
    Server::start_with(&[
        ("SIGNALPOST_TLS_CERT", cert.to_str().expect("utf-8 path")),
        ("SIGNALPOST_TLS_KEY", key.to_str().expect("utf-8 path")),
    ])
}

/// A reqwest client that trusts the test certificate and offers only `alpn`.
fn client(alpn: &[&[u8]]) -> reqwest::Client {
    reqwest::Client::builder()
        .use_preconfigured_tls((*tls_client_config(alpn)).clone())
        .timeout(Duration::from_secs(40))
        .build()
        .expect("client")
}

/// An HTTP/2 connection with `window` as every stream's initial flow-control window; the
/// connection runs in its task, which ends when the server closes it.
async fn http2(
    server: &Server,
    window: u32,
) -> (
    h2::client::SendRequest<Bytes>,
    JoinHandle<Result<(), h2::Error>>,
) {
    let tls = connect_tls(server, &[b"h2"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (send, connection) = h2::client::Builder::new()
        .initial_window_size(window)
        .handshake(tls)
        .await
        .expect("HTTP/2 handshake");
    (send, tokio::spawn(connection))
}

fn get(server: &Server, path: &str) -> Request<()> {
    Request::get(format!("https://{}{path}", server.address()))
        .body(())
        .expect("request")
}

/// Runs the binary with `env` (over the test's own); it must exit with an error within 10 s.
/// Returns its stderr.
fn start_fails(env: &[(&str, &std::path::Path)]) -> String {
    let directory = tempfile::tempdir().expect("temporary directory");
    let mut command = Command::new(env!("CARGO_BIN_EXE_signalpost"));
    command
        .env_remove("SIGNALPOST_TLS_CERT")
        .env_remove("SIGNALPOST_TLS_KEY")
        .env("SIGNALPOST_LISTEN", "127.0.0.1:0")
        .env("SIGNALPOST_DB", directory.path().join("signalpost.db"))
        .env("SIGNALPOST_SECRET", crate::support::SECRET);
    for (name, value) in env {
        command.env(name, value);
    }
    let (status, stderr) = crate::support::exit_within(&mut command, Duration::from_secs(10));
    assert!(
        status.is_some_and(|status| !status.success()),
        "started with {env:?}: {stderr}"
    );
    assert!(
        !directory.path().join("signalpost.db").exists(),
        "a refused start left a database behind"
    );
    stderr
}

#[test]
fn bad_or_missing_certificate_files_stop_start_up_naming_the_file() {
    let (cert, key) = dev_cert();
    let directory = tempfile::tempdir().expect("temporary directory");
    let missing = directory.path().join("missing.pem");
    let garbage = directory.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").expect("write");
    // A second pair, so that a certificate meets a key not its own.
    let other = directory.path().join("other");
    let output = Command::new(env!("CARGO_BIN_EXE_signalpost"))
        .args(["dev-cert", "--out-dir"])
        .arg(&other)
        .output()
        .expect("dev-cert runs");
    assert!(output.status.success());
    let other_key = other.join("dev-key.pem");
    for (env, named) in [
        (
            vec![
                ("SIGNALPOST_TLS_CERT", missing.as_path()),
                ("SIGNALPOST_TLS_KEY", key),
            ],
            vec!["SIGNALPOST_TLS_CERT", missing.to_str().expect("utf-8")],
        ),
        (
            vec![
                ("SIGNALPOST_TLS_CERT", cert.as_path()),
                ("SIGNALPOST_TLS_KEY", &missing),
            ],
            vec!["SIGNALPOST_TLS_KEY", missing.to_str().expect("utf-8")],
        ),
        (
            vec![
                ("SIGNALPOST_TLS_CERT", garbage.as_path()),
                ("SIGNALPOST_TLS_KEY", key),
            ],
            vec!["SIGNALPOST_TLS_CERT", garbage.to_str().expect("utf-8")],
        ),
        (
            vec![
                ("SIGNALPOST_TLS_CERT", cert.as_path()),
                ("SIGNALPOST_TLS_KEY", &garbage),
            ],
            vec!["SIGNALPOST_TLS_KEY", garbage.to_str().expect("utf-8")],
        ),
        // A key where the certificate belongs: no certificate in it.
        (
            vec![
                ("SIGNALPOST_TLS_CERT", key.as_path()),
                ("SIGNALPOST_TLS_KEY", key),
            ],
            vec!["SIGNALPOST_TLS_CERT", key.to_str().expect("utf-8")],
        ),
        (
            vec![
                ("SIGNALPOST_TLS_CERT", cert.as_path()),
                ("SIGNALPOST_TLS_KEY", &other_key),
            ],
            vec![
                cert.to_str().expect("utf-8"),
                other_key.to_str().expect("utf-8"),
            ],
        ),
        (
            vec![("SIGNALPOST_TLS_CERT", cert.as_path())],
            vec!["SIGNALPOST_TLS_KEY"],
        ),
    ] {
        let stderr = start_fails(&env);
        for name in named {
            assert!(
                stderr.contains(name),
                "{env:?}: {name} not named in {stderr}"
            );
        }
    }
}

#[test]
fn dev_cert_writes_a_pair_says_how_to_use_it_and_never_overwrites() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_signalpost"))
            .args(["dev-cert", "--out-dir"])
            .arg(directory.path())
            .output()
            .expect("dev-cert runs")
    };
    let output = run();
    assert!(output.status.success());
    let said = String::from_utf8_lossy(&output.stdout);
    let cert = directory
        .path()
        .canonicalize()
        .expect("path")
        .join("dev-cert.pem");
    let key = cert.with_file_name("dev-key.pem");
    assert!(
        said.contains(&format!("SIGNALPOST_TLS_CERT={}", cert.display()))
            && said.contains(&format!("SIGNALPOST_TLS_KEY={}", key.display()))
            && said.contains("localhost"),
        "{said}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).expect("key").permissions().mode();
        assert_eq!(mode & 0o077, 0, "the key is readable by others: {mode:o}");
    }
    let written = std::fs::read(&key).expect("key");
    let again = run();
    assert!(!again.status.success(), "a second run overwrote the pair");
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    assert_eq!(std::fs::read(&key).expect("key"), written);
}

#[tokio::test]
async fn alpn_chooses_http2_or_http1() {
    if standalone_only("TLS is the standalone server's") {
        return;
    }
    let server = https_server();
    assert!(server.base.starts_with("https://"), "{}", server.base);
    for (alpn, version) in [
        (&[&b"h2"[..], b"http/1.1"][..], Version::HTTP_2),
        (&[&b"http/1.1"[..]][..], Version::HTTP_11),
        (&[][..], Version::HTTP_11),
    ] {
        let response = client(alpn)
            .get(server.url("/v1/health"))
            .send()
            .await
            .expect("request");
        assert_eq!(
            (response.status().as_u16(), response.version()),
            (200, version)
        );
    }
}

/// A client that grants no flow-control window leaves its response inside the server; the
/// connection is dropped at the write deadline (20 s), which frees it, while others are served.
#[tokio::test]
async fn a_stalled_http2_stream_loses_its_connection() {
    if standalone_only("TLS is the standalone server's") {
        return;
    }
    let server = https_server();
    let (send, connection) = http2(&server, 0).await;
    let mut send = send.ready().await.expect("ready");
    let mut pending = Vec::new();
    for _ in 0..10 {
        let (response, _) = send
            .send_request(get(&server, "/signalpost.js"), true)
            .expect("request");
        pending.push(response);
    }
    for response in pending {
        // The headers need no window; the body never gets any.
        assert_eq!(response.await.expect("response headers").status(), 200);
    }
    let started = Instant::now();
    let other = client(&[b"h2"])
        .get(server.url("/v1/health"))
        .send()
        .await
        .expect("another client is served meanwhile");
    assert_eq!(other.status(), 200);
    let closed = tokio::time::timeout(Duration::from_secs(45), connection).await;
    let elapsed = started.elapsed();
    assert!(
        closed.is_ok(),
        "a stalled connection was still open after {elapsed:?}"
    );
    assert!(
        elapsed >= Duration::from_secs(15),
        "closed after {elapsed:?}"
    );
    drop(send);
}

/// An HTTP/2 connection with nothing in flight is closed (`GOAWAY`) after the header
/// deadline (30 s), as an idle HTTP/1.1 keep-alive connection is.
#[tokio::test]
async fn an_idle_http2_connection_is_closed() {
    if standalone_only("TLS is the standalone server's") {
        return;
    }
    let server = https_server();
    let (send, connection) = http2(&server, 65_535).await;
    let mut send = send.ready().await.expect("ready");
    let (response, _) = send
        .send_request(get(&server, "/v1/health"), true)
        .expect("request");
    let mut body = response.await.expect("response").into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("chunk");
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    let started = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(60), connection).await;
    let elapsed = started.elapsed();
    assert!(
        closed.is_ok(),
        "an idle connection was still open after {elapsed:?}"
    );
    assert!(
        elapsed >= Duration::from_secs(25),
        "closed too early: {elapsed:?}"
    );
    drop(send);
}

/// A request body trickled over HTTP/2 is cut off at the body deadline (10 s) with a 400.
#[tokio::test]
async fn a_trickled_http2_body_is_cut_off_at_the_deadline() {
    if standalone_only("TLS is the standalone server's") {
        return;
    }
    let server = https_server();
    let (send, _connection) = http2(&server, 65_535).await;
    let mut send = send.ready().await.expect("ready");
    let request = Request::post(format!(
        "https://{}/v1/rooms/{}/peers",
        server.address(),
        crate::support::room()
    ))
    .header("content-type", "application/json")
    .body(())
    .expect("request");
    let (response, mut body) = send.send_request(request, false).expect("request");
    let started = Instant::now();
    let trickle = tokio::spawn(async move {
        for byte in br#"{"name": "a slow joiner"}"# {
            tokio::time::sleep(Duration::from_secs(2)).await;
            body.reserve_capacity(1);
            if body.send_data(Bytes::from(vec![*byte]), false).is_err() {
                break;
            }
        }
    });
    let response = tokio::time::timeout(Duration::from_secs(30), response)
        .await
        .expect("answered in time")
        .expect("response");
    let elapsed = started.elapsed();
    trickle.abort();
    assert_eq!(response.status(), 400);
    assert!(
        elapsed >= Duration::from_secs(8) && elapsed < Duration::from_secs(25),
        "answered after {elapsed:?}"
    );
}

/// A client that opens a connection and never starts its TLS handshake is closed after the
/// handshake deadline (10 s).
#[tokio::test]
async fn a_silent_tls_client_is_closed_after_the_handshake_deadline() {
    if standalone_only("TLS is the standalone server's") {
        return;
    }
    let server = https_server();
    let mut stream = TcpStream::connect(server.address())
        .await
        .expect("connects");
    let started = Instant::now();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut byte)).await;
    let elapsed = started.elapsed();
    assert!(
        matches!(read, Ok(Ok(0) | Err(_))),
        "still open after {elapsed:?}: {read:?}"
    );
    assert!(
        elapsed >= Duration::from_secs(8),
        "closed after {elapsed:?}"
    );
}
