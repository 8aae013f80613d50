//! The black-box suite against the Lambda functions: `SIGNALPOST_TEST_TARGET=watch` makes
//! [`super::Server::start_with`] hand out a `cargo lambda watch` serving the workspace's
//! functions through the watch router, instead of a standalone server.
//!
//! One watch runs per distinct test environment and is shared by every test asking for that
//! environment (rooms are unique per test, so they do not meet): the plain configuration
//! serves most of the suite, and each special one (`SIGNALPOST_MAX_PEERS=3`, ...) gets its own.
//! Each watch runs in its own directory, where the relative `SIGNALPOST_DB` of
//! `[workspace.metadata.lambda.env]` puts a fresh SQLite file that its function processes
//! share. With `SIGNALPOST_TABLE` set in the environment the functions use DynamoDB instead
//! (endpoint and credentials from the usual AWS variables, passed through).
//!
//! Watches live as long as the test process: each is started by a small shell that holds a
//! pipe from this process and kills the watch's process group when the pipe closes, so no
//! watch outlives the tests, however they end.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a watch may take to answer its first health check: the first one may compile the
/// functions (tests/watch/run.sh builds them beforehand, so it is normally seconds).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(600);
/// Instances per function: every waiting long poll holds one.
const CONCURRENCY: &str = "16";

/// Whether the tests run against `cargo lambda watch`.
pub fn enabled() -> bool {
    std::env::var("SIGNALPOST_TEST_TARGET").is_ok_and(|target| target == "watch")
}

/// A running `cargo lambda watch`.
pub struct Watch {
    pub base: String,
    log: PathBuf,
    /// The shell that stops the watch when this pipe closes (at process exit).
    _guard: Mutex<Child>,
    _directory: tempfile::TempDir,
}

type Instances = Mutex<HashMap<String, Arc<OnceLock<Arc<Watch>>>>>;

/// The watch for `env`, started on first use.
pub fn instance(env: &[(&str, &str)]) -> Arc<Watch> {
    static INSTANCES: OnceLock<Instances> = OnceLock::new();
    let mut env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    env.sort();
    let key = env
        .iter()
        .map(|(k, v)| format!("{k}={v}\n"))
        .collect::<String>();
    let slot = {
        let mut instances = INSTANCES
            .get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(instances.entry(key.clone()).or_default())
    };
    // Outside the map's lock: different environments start in parallel, the same one once.
    Arc::clone(slot.get_or_init(|| Arc::new(Watch::start(&key))))
}

impl Watch {
    /// The SQLite file its functions share: the workspace's relative `SIGNALPOST_DB`
    /// (`[workspace.metadata.lambda.env]`) below the watch's directory.
    pub fn database(&self) -> PathBuf {
        self._directory.path().join("target/signalpost-watch.db")
    }

    fn start(env_file: &str) -> Self {
        let directory = tempfile::tempdir().expect("temporary directory");
        let root = workspace_root();
        let env_path = directory.path().join("test.env");
        let log = directory.path().join("watch.log");
        std::fs::write(&env_path, format!("RUST_LOG=warn\n{env_file}")).expect("env file");
        let port = free_port();
        let watch = format!(
            "cargo lambda watch --manifest-path {manifest} --invoke-address 127.0.0.1 --invoke-port {port} \
             --disable-cors --concurrency {CONCURRENCY} --env-file {env} --ignore-changes --quiet",
            manifest = shell_quote(&root.join("Cargo.toml")),
            env = shell_quote(&env_path),
        );
        // setsid: the watch leads its own process group, so one kill stops it, cargo and every
        // function process. `cat` returns when this test process exits and closes the pipe;
        // the shell ignores the signals a runner like `timeout` sends to its whole group, so
        // that it lives to stop the watch. --ignore-changes: the functions' SQLite file and the
        // log are written below the watch's directory, which it would otherwise take for code
        // changes and restart the functions over and over.
        let script = format!(
            "trap '' INT TERM HUP\n\
             (trap - INT TERM HUP; exec setsid {watch} >{log} 2>&1 </dev/null) & watch=$!\n\
             cat >/dev/null\n\
             kill -TERM -$watch 2>/dev/null; sleep 1; kill -KILL -$watch 2>/dev/null\n\
             rm -rf {directory}\n",
            log = shell_quote(&log),
            directory = shell_quote(directory.path()),
        );
        let mut command = Command::new("sh");
        command.arg("-c").arg(script).current_dir(directory.path());
        for (name, _) in std::env::vars() {
            // The test's own variables only; SIGNALPOST_TABLE (DynamoDB) passes through.
            if name.starts_with("SIGNALPOST_") && name != "SIGNALPOST_TABLE" {
                command.env_remove(name);
            }
        }
        let guard = command
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("sh starts cargo lambda watch");
        let watch = Self {
            base: format!("http://127.0.0.1:{port}"),
            log,
            _guard: Mutex::new(guard),
            _directory: directory,
        };
        watch.wait_until_ready(port);
        watch
    }

    /// Everything the watch and its function processes have written so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log)
            .unwrap_or_else(|error| panic!("{}: {error}", self.log.display()))
    }

    fn wait_until_ready(&self, port: u16) {
        let started = Instant::now();
        while started.elapsed() < STARTUP_TIMEOUT {
            if request(port, "GET", "/v1/health") == Some(200) {
                // Start each function's first process now (watch starts them with `cargo
                // run` on first call, seconds on a busy machine), so tests that time their
                // calls do not time that. Requests without a token change nothing.
                for (method, path) in [
                    ("POST", "/v1/rooms/warm-up/peers/x/leave"),
                    ("POST", "/v1/rooms/warm-up/messages"),
                    ("GET", "/v1/rooms/warm-up/messages"),
                    ("PUT", "/v1/rooms/warm-up/peers"),
                ] {
                    request(port, method, path);
                }
                // join: a body that is not JSON is refused before anything is stored.
                request(
                    port,
                    "POST",
                    "/v1/rooms/warm-up/peers\r\nContent-Type: text/html",
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!(
            "cargo lambda watch did not answer /v1/health within {STARTUP_TIMEOUT:?}; its log:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }
}

/// The status of a bodiless request, if the port answers at all. `target` is the path,
/// optionally followed by more header lines.
fn request(port: u16, method: &str, target: &str) -> Option<u16> {
    let (path, headers) = target.split_once("\r\n").unwrap_or((target, ""));
    let headers = if headers.is_empty() {
        String::new()
    } else {
        format!("{headers}\r\n")
    };
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    // The first call may wait for cargo to build or check the function.
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .ok()?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split_whitespace().nth(1)?.parse().ok()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

fn workspace_root() -> PathBuf {
    // This package is functions/signalpost.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

fn shell_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}
