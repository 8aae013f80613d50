//! The black-box harness: starts the real `signalpost` binary on a free loopback port with its
//! own store, and speaks HTTP to it like any client would.
//!
//! `SIGNALPOST_TEST_STORE` chooses that store: `sqlite` (the default) gives every server its
//! own SQLite file, `dynamodb` its own table on the DynamoDB-compatible endpoint of the AWS
//! variables (run the suite through `tests/with-moto.sh`). Any other value fails every test.
//!
//! With `SIGNALPOST_TEST_TLS=1` every standalone server serves HTTPS with a certificate from
//! its own `signalpost dev-cert`, which the test clients trust: [`http`] then speaks HTTP/2
//! (ALPN), and [`connect_raw`] HTTP/1.1 over TLS. Any other value but `0` fails every test.
//!
//! With `SIGNALPOST_TEST_TARGET=watch` the same tests run against the Lambda functions under
//! `cargo lambda watch` instead (see [`watch`] and `tests/watch/run.sh`), on the store that
//! `SIGNALPOST_TABLE` chooses there.

pub mod watch;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

/// The secret every test server signs with, so tests can mint tokens of their own. It is the
/// development secret of `[workspace.metadata.lambda.env]` in the root Cargo.toml, because
/// `cargo lambda watch` gives the functions that value whatever else it is told.
pub const SECRET: &str = "local-development-secret-not-for-production";
/// The longest a server may take to print its address.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `signalpost` process, or a `cargo lambda watch` serving the functions.
pub struct Server {
    child: Option<Child>,
    /// Under `SIGNALPOST_TEST_TARGET=watch`: the (possibly shared) watch instance.
    watch: Option<std::sync::Arc<watch::Watch>>,
    pub base: String,
    listen: String,
    env: Vec<(String, String)>,
    directory: tempfile::TempDir,
    /// The DynamoDB table under `SIGNALPOST_TEST_STORE=dynamodb`: created once, kept across
    /// restarts like the SQLite file in `directory`.
    table: Option<String>,
    /// The server's stderr (its logs) when captured, else `None` (inherited).
    stderr: Option<Arc<Mutex<String>>>,
}

/// The store `SIGNALPOST_TEST_STORE` chooses. An unknown value panics, so that a typo cannot
/// quietly run the suite on SQLite.
#[derive(Clone, Copy, PartialEq, Eq)]
enum TestStore {
    Sqlite,
    Dynamodb,
}

impl TestStore {
    fn from_env() -> Self {
        match std::env::var("SIGNALPOST_TEST_STORE").as_deref() {
            Ok("sqlite") | Err(std::env::VarError::NotPresent) => Self::Sqlite,
            Ok("dynamodb") => Self::Dynamodb,
            Ok(other) => panic!("SIGNALPOST_TEST_STORE={other:?}: expected sqlite or dynamodb"),
            Err(error) => panic!("SIGNALPOST_TEST_STORE: {error}"),
        }
    }
}

/// For a standalone server: `None` on SQLite, or a fresh table on the DynamoDB-compatible
/// endpoint of the AWS variables (see `tests/with-moto.sh`).
fn dynamodb_table() -> Option<String> {
    if TestStore::from_env() == TestStore::Sqlite {
        return None;
    }
    let table = format!("blackbox-{}", ulid::Ulid::new().to_string().to_lowercase());
    // moto answers one request at a time, and the suite's tests start servers in parallel:
    // on a busy machine a create-table can outlast the store's 3 s operation timeout. That is
    // the transient "unavailable" answer, so try again (a few times, then fail loudly).
    let mut output;
    let mut attempts = 0;
    loop {
        let mut command = Command::new(env!("CARGO_BIN_EXE_signalpost"));
        remove_signalpost_variables(&mut command);
        output = command
            .arg("create-table")
            .env("SIGNALPOST_TABLE", &table)
            .output()
            .expect("signalpost create-table runs");
        attempts += 1;
        let transient = String::from_utf8_lossy(&output.stderr).contains("unavailable");
        if output.status.success() || !transient || attempts == 3 {
            break;
        }
    }
    assert!(
        output.status.success(),
        "create-table failed (run the suite through tests/with-moto.sh): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(table)
}

/// Whether `SIGNALPOST_TEST_TLS` asks for HTTPS. An unknown value panics, so that a typo
/// cannot quietly run the suite over plain HTTP.
pub fn tls_enabled() -> bool {
    match std::env::var("SIGNALPOST_TEST_TLS").as_deref() {
        Ok("1") => true,
        Ok("0") | Err(std::env::VarError::NotPresent) => false,
        Ok(other) => panic!("SIGNALPOST_TEST_TLS={other:?}: expected 1 or 0"),
        Err(error) => panic!("SIGNALPOST_TEST_TLS: {error}"),
    }
}

/// The certificate and key every HTTPS test server uses: written once per test process by the
/// binary's own `dev-cert` command.
pub fn dev_cert() -> &'static (PathBuf, PathBuf) {
    static PAIR: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    PAIR.get_or_init(|| {
        let directory = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "dev-cert-{}",
            ulid::Ulid::new().to_string().to_lowercase()
        ));
        let output = Command::new(env!("CARGO_BIN_EXE_signalpost"))
            .arg("dev-cert")
            .arg("--out-dir")
            .arg(&directory)
            .output()
            .expect("signalpost dev-cert runs");
        assert!(
            output.status.success(),
            "dev-cert failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        (
            directory.join("dev-cert.pem"),
            directory.join("dev-key.pem"),
        )
    })
}

/// A TLS client configuration that trusts [`dev_cert`] only and offers `alpn`.
pub fn tls_client_config(alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(&dev_cert().0).expect("the dev certificate"))
        .expect("a usable certificate");
    let mut config = ClientConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    Arc::new(config)
}

/// A TLS connection to `server` offering `alpn` (the server must serve HTTPS).
#[allow(dead_code)] // tests/api only
pub async fn connect_tls(server: &Server, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(server.address())
        .await
        .expect("connects");
    TlsConnector::from(tls_client_config(alpn))
        .connect(
            ServerName::try_from("127.0.0.1").expect("a server name"),
            tcp,
        )
        .await
        .expect("TLS handshake")
}

/// Runs `command` (stdin and stdout closed, stderr kept) until it exits or `bound` passes, then
/// kills it: a server that accepted its configuration would run until killed. Returns its exit
/// status (`None` if it had to be killed) and its stderr.
#[allow(dead_code)] // tests/api only
pub fn exit_within(
    command: &mut Command,
    bound: Duration,
) -> (Option<std::process::ExitStatus>, String) {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("signalpost runs");
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if started.elapsed() > bound {
            child.kill().expect("kill");
            child.wait().expect("wait");
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("piped"), &mut stderr)
        .expect("stderr");
    (status, stderr)
}

/// Any connection a raw test can write HTTP/1.1 bytes to.
pub trait RawIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> RawIo for T {}

/// A fresh connection to `server` for requests written byte for byte: plain TCP, or TLS
/// offering only HTTP/1.1 under `SIGNALPOST_TEST_TLS=1`.
#[allow(dead_code)] // tests/api only
pub async fn connect_raw(server: &Server) -> Box<dyn RawIo> {
    if tls_enabled() {
        Box::new(connect_tls(server, &[b"http/1.1"]).await)
    } else {
        Box::new(
            TcpStream::connect(server.address())
                .await
                .expect("connects"),
        )
    }
}

/// Keeps the test process's own `SIGNALPOST_*` variables away from a server it starts: each
/// server gets exactly the configuration its test asks for.
fn remove_signalpost_variables(command: &mut Command) {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("SIGNALPOST_") {
            command.env_remove(name);
        }
    }
}

/// How to stop a server.
#[derive(Clone, Copy)]
pub enum Stop {
    /// SIGTERM: a graceful shutdown.
    Terminate,
    /// SIGKILL: the process dies mid-flight.
    Kill,
}

impl Server {
    /// A server with the default configuration.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// A server with extra `SIGNALPOST_*` variables.
    pub fn start_with(env: &[(&str, &str)]) -> Self {
        if watch::enabled() {
            assert!(
                !tls_enabled(),
                "SIGNALPOST_TEST_TLS=1 is for the standalone server"
            );
            // The functions under watch use the table of SIGNALPOST_TABLE (tests/watch/run.sh).
            assert!(
                TestStore::from_env() == TestStore::Sqlite
                    || std::env::var_os("SIGNALPOST_TABLE").is_some(),
                "SIGNALPOST_TEST_STORE=dynamodb under watch needs SIGNALPOST_TABLE"
            );
            let watch = watch::instance(env);
            return Self {
                child: None,
                base: watch.base.clone(),
                listen: String::new(),
                env: Vec::new(),
                directory: tempfile::tempdir().expect("temporary directory"),
                table: None,
                stderr: None,
                watch: Some(watch),
            };
        }
        Self::start_inner(env, false)
    }

    /// A server with extra variables whose logs are kept for [`Server::logs`]: the process's
    /// stderr, or under watch the output of every function process of the watch.
    pub fn start_capturing_logs(env: &[(&str, &str)]) -> Self {
        if watch::enabled() {
            return Self::start_with(env);
        }
        Self::start_inner(env, true)
    }

    fn start_inner(env: &[(&str, &str)], capture_logs: bool) -> Self {
        let mut server = Self {
            child: None,
            watch: None,
            base: String::new(),
            listen: "127.0.0.1:0".into(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            directory: tempfile::tempdir().expect("temporary directory"),
            table: dynamodb_table(),
            stderr: capture_logs.then(Default::default),
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_signalpost"));
        remove_signalpost_variables(&mut command);
        if let Some(table) = &self.table {
            command.env("SIGNALPOST_TABLE", table);
        }
        command
            .env("SIGNALPOST_LISTEN", &self.listen)
            .env("SIGNALPOST_DB", self.directory.path().join("signalpost.db"))
            .env("SIGNALPOST_SECRET", SECRET)
            .env("RUST_LOG", "warn");
        if tls_enabled() {
            let (cert, key) = dev_cert();
            command
                .env("SIGNALPOST_TLS_CERT", cert)
                .env("SIGNALPOST_TLS_KEY", key);
        }
        command
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(if self.stderr.is_some() {
                Stdio::piped()
            } else {
                Stdio::inherit()
            });
        let mut child = command.spawn().expect("the signalpost binary starts");
        if let (Some(logs), Some(stderr)) = (&self.stderr, child.stderr.take()) {
            let logs = Arc::clone(logs);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let mut logs = logs
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    logs.push_str(&line);
                    logs.push('\n');
                }
            });
        }
        let stdout = child.stdout.take().expect("piped stdout");
        let (found, address) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let url = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    let _ = found.send(url);
                }
            }
        });
        let base = address
            .recv_timeout(STARTUP_TIMEOUT)
            .expect("signalpost printed the address it listens on");
        self.listen = base
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .to_owned();
        self.base = base;
        self.child = Some(child);
    }

    /// Stops the process and waits for it to exit; returns how long exiting took.
    pub fn stop(&mut self, how: Stop) -> Duration {
        assert!(
            self.watch.is_none(),
            "stopping the server is standalone only: guard the test with standalone_only()"
        );
        let Some(mut child) = self.child.take() else {
            return Duration::ZERO;
        };
        let started = std::time::Instant::now();
        match how {
            Stop::Kill => child.kill().expect("kill"),
            Stop::Terminate => {
                let status = Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .status()
                    .expect("kill -TERM runs");
                assert!(status.success());
            }
        }
        child.wait().expect("the server exits");
        started.elapsed()
    }

    /// Stops the process and starts it again on the same port and database.
    pub fn restart(&mut self, how: Stop) {
        self.stop(how);
        self.spawn();
    }

    /// The server's process id.
    #[allow(dead_code)] // tests/reliability only
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The directory holding its SQLite file.
    #[allow(dead_code)] // tests/reliability only
    pub fn directory(&self) -> &std::path::Path {
        self.directory.path()
    }

    /// The SQLite file the server (or every function of the watch) uses; `None` on DynamoDB.
    pub fn database(&self) -> Option<std::path::PathBuf> {
        if std::env::var("SIGNALPOST_TEST_STORE").as_deref() == Ok("dynamodb") {
            return None;
        }
        // Under watch the DynamoDB leg is chosen by SIGNALPOST_TABLE, which the functions get.
        if self.watch.is_some() && std::env::var_os("SIGNALPOST_TABLE").is_some() {
            return None;
        }
        Some(match &self.watch {
            Some(watch) => watch.database(),
            None => self.directory.path().join("signalpost.db"),
        })
    }

    /// Everything the server has written to stderr so far (only with
    /// [`Server::start_capturing_logs`]); under watch, everything its functions have written
    /// (the watch of this test's environment, shared only with tests of the same environment).
    pub fn logs(&self) -> String {
        if let Some(watch) = &self.watch {
            return watch.logs();
        }
        self.stderr.as_ref().map_or_else(String::new, |logs| {
            logs.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone()
        })
    }

    /// The DynamoDB table of a standalone server on `SIGNALPOST_TEST_STORE=dynamodb`.
    pub fn table(&self) -> Option<&str> {
        self.table.as_deref()
    }

    /// The `host:port` the server listens on, for raw TCP clients.
    pub fn address(&self) -> &str {
        &self.listen
    }

    /// The full URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// True, with a note on stderr, when the tests run against `cargo lambda watch`, where `what`
/// does not apply (a test of the standalone process itself): the test then returns early.
pub fn standalone_only(what: &str) -> bool {
    let skip = watch::enabled();
    if skip {
        eprintln!("standalone only, skipped under cargo lambda watch: {what}");
    }
    skip
}

/// An HTTP client with a timeout longer than any long poll; under `SIGNALPOST_TEST_TLS=1`
/// it trusts the test servers' certificate and speaks HTTP/2 to them.
pub fn http() -> reqwest::Client {
    http_builder().build().expect("HTTP client")
}

/// The test client's builder: a 40 s timeout and, over HTTPS, trust in the suite's
/// certificate. Tests that need more (a local address) add it here rather than start over.
pub fn http_builder() -> reqwest::ClientBuilder {
    let builder = reqwest::Client::builder().timeout(Duration::from_secs(40));
    if tls_enabled() {
        builder.use_preconfigured_tls((*tls_client_config(&[b"h2", b"http/1.1"])).clone())
    } else {
        builder
    }
}

/// A room name no other test uses.
pub fn room() -> String {
    format!("room-{}", ulid::Ulid::new())
}

/// A peer that has joined a room, with its own poll cursor.
pub struct Peer {
    pub id: String,
    pub token: String,
    pub room: String,
    pub joined: Value,
    pub cursor: Option<String>,
    base: String,
    http: reqwest::Client,
}

/// Joins `room` as `name`, asserting 201.
pub async fn join(server: &Server, room: &str, name: &str) -> Peer {
    let http = http();
    let response = http
        .post(server.url(&format!("/v1/rooms/{room}/peers")))
        .json(&json!({ "name": name }))
        .send()
        .await
        .expect("join request");
    assert_eq!(
        response.status(),
        201,
        "join failed: {:?}",
        response.text().await
    );
    let joined: Value = response.json().await.expect("join body");
    Peer {
        id: joined["peer"].as_str().expect("peer id").to_owned(),
        token: joined["token"].as_str().expect("token").to_owned(),
        room: room.to_owned(),
        joined,
        cursor: None,
        base: server.base.clone(),
        http,
    }
}

impl Peer {
    fn messages_url(&self) -> String {
        format!("{}/v1/rooms/{}/messages", self.base, self.room)
    }

    /// Posts a body to the room's messages route.
    pub async fn post(&self, body: &Value) -> reqwest::Response {
        self.http
            .post(self.messages_url())
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .expect("post request")
    }

    /// Posts a body and asserts 202; returns the server ids.
    pub async fn send(&self, body: Value) -> Vec<String> {
        let response = self.post(&body).await;
        assert_eq!(
            response.status(),
            202,
            "send failed: {:?}",
            response.text().await
        );
        let accepted: Value = response.json().await.expect("send body");
        accepted["ids"]
            .as_array()
            .expect("ids")
            .iter()
            .map(|id| id.as_str().expect("id").to_owned())
            .collect()
    }

    /// A poll request with explicit parameters.
    pub async fn poll_raw(&self, query: &str) -> reqwest::Response {
        self.http
            .get(format!("{}?{query}", self.messages_url()))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("poll request")
    }

    /// Polls after the stored cursor, asserts 200, advances the cursor, returns the messages.
    pub async fn poll(&mut self, wait: u64) -> Vec<Value> {
        let query = match &self.cursor {
            Some(cursor) => format!("wait={wait}&after={cursor}"),
            None => format!("wait={wait}"),
        };
        let response = self.poll_raw(&query).await;
        assert_eq!(
            response.status(),
            200,
            "poll failed: {:?}",
            response.text().await
        );
        let body: Value = response.json().await.expect("poll body");
        self.cursor = Some(body["cursor"].as_str().expect("cursor").to_owned());
        body["messages"].as_array().expect("messages").clone()
    }

    /// Drops pooled connections, as a client does after its server restarted.
    pub fn reconnect(&mut self) {
        self.http = http();
    }

    /// Polls until `count` messages of `kind` have arrived (bounded), returning all messages
    /// seen on the way.
    pub async fn collect(&mut self, kind: &str, count: usize) -> Vec<Value> {
        let wait = self.joined["maxWait"].as_u64().unwrap_or(2).min(2);
        let mut seen = Vec::new();
        for _ in 0..50 {
            seen.extend(self.poll(wait).await);
            if seen
                .iter()
                .filter(|message| message["type"] == kind)
                .count()
                >= count
            {
                return seen;
            }
        }
        panic!("{count} `{kind}` messages never arrived; saw {seen:?}");
    }

    /// Leaves with `DELETE`, asserting 204.
    pub async fn leave(&self) {
        let response = self
            .http
            .delete(format!(
                "{}/v1/rooms/{}/peers/{}",
                self.base, self.room, self.id
            ))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("leave request");
        assert_eq!(response.status(), 204);
    }
}

/// Asserts that `response` is the contract's problem document for `status` and `code`, and
/// returns its body.
pub async fn assert_problem(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status(), status, "wrong status for {code}");
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json",
        "problem content type for {code}"
    );
    assert_eq!(response.headers()["cache-control"], "no-store");
    if status == 429 || status == 503 {
        assert!(
            response.headers().contains_key("retry-after"),
            "Retry-After on {status}"
        );
    }
    let problem: Value = response.json().await.expect("problem body");
    assert_eq!(
        problem["type"],
        format!("urn:signalpost:{code}"),
        "{problem}"
    );
    assert_eq!(problem["status"], status);
    assert!(
        problem["title"].is_string() && problem["detail"].is_string(),
        "{problem}"
    );
    problem
}

/// An SDP-shaped description.
pub fn description(kind: &str) -> Value {
    json!({ "type": kind, "sdp": format!("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns={kind}\r\n") })
}

/// An ICE candidate numbered `n`.
pub fn candidate(n: usize) -> Value {
    json!({
        "candidate": format!("candidate:{n} 1 udp 2122260223 127.0.0.1 {} typ host", 50000 + n),
        "sdpMid": "0",
        "sdpMLineIndex": 0,
        "usernameFragment": "abcd"
    })
}
