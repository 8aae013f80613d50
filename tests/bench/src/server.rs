//! The server under test: started here with a fresh SQLite file, or already running.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A signalpost to measure.
pub struct Target {
    pub base: String,
    child: Option<Child>,
    _directory: Option<tempfile::TempDir>,
}

impl Target {
    /// A server someone else runs.
    pub fn external(url: &str) -> Self {
        Self {
            base: url.trim_end_matches('/').to_owned(),
            child: None,
            _directory: None,
        }
    }

    /// Starts `binary` on a free loopback port with `env` on top of benchmark defaults.
    pub fn start(binary: &str, env: &[(&str, &str)]) -> Self {
        let directory = tempfile::tempdir().expect("temporary directory");
        let mut child = Command::new(binary)
            .env("SIGNALPOST_LISTEN", "127.0.0.1:0")
            .env("SIGNALPOST_DB", directory.path().join("bench.db"))
            .env("SIGNALPOST_SECRET", "benchmark-secret-of-at-least-32-bytes")
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {binary} ({error}): build it with `cargo build --release -p signalpost-server`"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (found, address) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let _ = found.send(
                        rest.split_whitespace()
                            .next()
                            .unwrap_or_default()
                            .to_owned(),
                    );
                }
            }
        });
        let base = address
            .recv_timeout(Duration::from_secs(20))
            .expect("the server printed its address");
        Self {
            base,
            child: Some(child),
            _directory: Some(directory),
        }
    }

    /// The server's resident memory now and at its peak, from /proc (Linux), when this
    /// benchmark started it.
    pub fn memory(&self) -> Option<String> {
        let pid = self.child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find(|line| line.starts_with(name))
                .map(|line| line[name.len()..].trim().to_owned())
        };
        Some(format!(
            "RSS {}, peak RSS {}",
            field("VmRSS:")?,
            field("VmHWM:")?
        ))
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
