//! Wake-ups between processes sharing one SQLite file: a Unix datagram socket per process,
//! in a directory beside the database (`<db>.wakeup/`), bound when the process starts
//! ([`super::open`]). A doorbell is one datagram naming the inboxes; sending never blocks,
//! and a full or vanished receiver costs only that wake-up.
//!
//! The directory also tells a process whether it is alone on the file: if no other live
//! socket is there, every write is its own, and its polls need no fallback reads. A process
//! sharing the file with wake-ups off (`SIGNALPOST_WAKEUPS=false`) binds no socket, so its
//! writes reach such a poll only when the poll ends: at the next poll's presence update.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use tokio::net::UnixDatagram;
use tokio::sync::OnceCell;

use super::{Listening, Wakeup, Wakeups, deliver, payloads};
use crate::ids::RoomId;
use crate::store::Doorbell;

/// The longest socket path Unix allows, less some margin (`sun_path` is 108 bytes on Linux,
/// 104 on macOS).
const MAX_SOCKET_PATH: usize = 100;
/// The largest doorbell read at once; a room holds at most 25 peers, a line under 100 bytes.
const MAX_DATAGRAM: usize = 8192;

/// Unix datagram sockets beside the database.
pub struct SocketWakeup {
    directory: PathBuf,
    wakeups: Arc<Wakeups>,
    /// This process's socket, bound on first use; `None` if binding failed.
    bound: OnceCell<Option<Bound>>,
    /// A plain non-blocking socket: sending is one system call that never waits, and needs
    /// no readiness from the runtime's reactor.
    sender: std::sync::OnceLock<Option<std::os::unix::net::UnixDatagram>>,
}

struct Bound {
    address: Arc<str>,
    receiver: tokio::task::JoinHandle<()>,
}

impl SocketWakeup {
    /// Sockets in `<database>.wakeup/` (or, if that path is too long for a socket, in the
    /// temporary directory under a name derived from the database's path).
    pub fn beside(database: &Path, wakeups: Arc<Wakeups>) -> Self {
        let mut name = database.as_os_str().to_owned();
        name.push(".wakeup");
        let mut directory = PathBuf::from(name);
        if let Ok(absolute) = std::path::absolute(&directory) {
            directory = absolute;
        }
        if directory.as_os_str().len() + 1 + 26 > MAX_SOCKET_PATH {
            use std::hash::{Hash, Hasher};
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            directory.hash(&mut hasher);
            directory =
                std::env::temp_dir().join(format!("signalpost-{:016x}.wakeup", hasher.finish()));
        }
        Self {
            directory,
            wakeups,
            bound: OnceCell::new(),
            sender: std::sync::OnceLock::new(),
        }
    }

    async fn bind(&self) -> Option<Bound> {
        if let Err(error) = std::fs::create_dir_all(&self.directory) {
            tracing::warn!(%error, directory = %self.directory.display(), "no wake-up socket: polls of other processes wake on their fallback reads");
            return None;
        }
        let path = self
            .directory
            .join(ulid::Ulid::new().to_string().to_lowercase());
        let socket = match UnixDatagram::bind(&path) {
            Ok(socket) => socket,
            Err(error) => {
                tracing::warn!(%error, path = %path.display(), "cannot bind the wake-up socket");
                return None;
            }
        };
        let wakeups = Arc::clone(&self.wakeups);
        let receiver = tokio::spawn(async move {
            let mut buffer = vec![0u8; MAX_DATAGRAM];
            loop {
                match socket.recv(&mut buffer).await {
                    Ok(length) => {
                        if let Ok(payload) = std::str::from_utf8(&buffer[..length]) {
                            deliver(&wakeups, payload);
                        }
                    }
                    Err(error) => {
                        crate::metrics::wakeup_error();
                        tracing::warn!(%error, "the wake-up socket failed; polls fall back to store reads");
                        return;
                    }
                }
            }
        });
        Some(Bound {
            address: path.to_string_lossy().into(),
            receiver,
        })
    }

    /// A plain non-blocking socket to send from, made once.
    fn sender(&self) -> Option<&std::os::unix::net::UnixDatagram> {
        self.sender
            .get_or_init(|| {
                let socket = std::os::unix::net::UnixDatagram::unbound().ok()?;
                socket.set_nonblocking(true).ok()?;
                Some(socket)
            })
            .as_ref()
    }

    fn own_address(&self) -> Option<&str> {
        self.bound
            .get()
            .and_then(Option::as_ref)
            .map(|bound| &*bound.address)
    }
}

#[async_trait]
impl Wakeup for SocketWakeup {
    async fn listen(&self) -> Option<Listening> {
        let bound = self.bound.get_or_init(|| self.bind()).await.as_ref()?;
        if bound.receiver.is_finished() {
            return None;
        }
        Some(Listening::always(Arc::clone(&bound.address)))
    }

    async fn ring(&self, room: &RoomId, doorbells: &[Doorbell]) {
        let payloads = payloads(room, doorbells, self.own_address());
        if payloads.is_empty() {
            return;
        }
        let Some(sender) = self.sender() else {
            return;
        };
        for (address, payload) in payloads {
            // Only addresses in our directory: the address came from the store, and a
            // datagram elsewhere is no business of ours.
            let path = Path::new(&address);
            if path.parent() != Some(self.directory.as_path()) {
                continue;
            }
            match sender.send_to(payload.as_bytes(), path) {
                Ok(_) => crate::metrics::wakeups_sent(1),
                Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => {
                    // Nobody is bound there: a process that ended without removing it.
                    crate::metrics::wakeup_error();
                    let _ = std::fs::remove_file(path);
                }
                Err(error) => {
                    crate::metrics::wakeup_error();
                    tracing::debug!(%error, "a wake-up was not sent");
                }
            }
        }
    }

    async fn close(&self) {
        if let Some(Some(bound)) = self.bound.get() {
            bound.receiver.abort();
            let _ = std::fs::remove_file(&*bound.address);
        }
    }

    /// Alone when our socket is bound and listening and no other live socket is in the
    /// directory. An empty datagram probes each other socket (its receiver ignores it): one
    /// left by a process that ended without removing it refuses the connection, and is
    /// removed, so a crash does not cost the next server its quiet.
    fn alone(&self) -> bool {
        let (Some(Some(bound)), Some(sender)) = (self.bound.get(), self.sender()) else {
            return false;
        };
        if bound.receiver.is_finished() {
            return false;
        }
        let Ok(entries) = std::fs::read_dir(&self.directory) else {
            return false;
        };
        entries.filter_map(Result::ok).all(|entry| {
            let path = entry.path();
            if path.as_os_str() == std::ffi::OsStr::new(&*bound.address) {
                return true;
            }
            match sender.send_to(b"", &path) {
                Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => {
                    let _ = std::fs::remove_file(&path);
                    true
                }
                _ => false,
            }
        })
    }
}

impl Drop for SocketWakeup {
    fn drop(&mut self) {
        if let Some(Some(bound)) = self.bound.get() {
            bound.receiver.abort();
            let _ = std::fs::remove_file(&*bound.address);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wakeup::conformance;

    #[tokio::test]
    async fn passes_the_wakeup_conformance_suite() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let database = directory.path().join("signalpost.db");
        let dead = format!("{}.wakeup/nobody-here", database.display());
        conformance::run_all(
            |wakeups| {
                let adapter: Arc<dyn Wakeup> = Arc::new(SocketWakeup::beside(&database, wakeups));
                async move { adapter }
            },
            &dead,
        )
        .await;
    }

    #[tokio::test]
    async fn a_process_is_alone_until_another_binds_beside_it() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let database = directory.path().join("signalpost.db");
        let first = SocketWakeup::beside(&database, Arc::default());
        assert!(!first.alone(), "not listening yet: nothing is known");
        let _listening = first.listen().await.expect("bound");
        assert!(first.alone());
        let second = SocketWakeup::beside(&database, Arc::default());
        second.listen().await.expect("bound");
        assert!(!first.alone() && !second.alone());
        second.close().await;
        assert!(first.alone(), "the other process has gone");
        // A socket left by a process that ended without removing it.
        let stale = first.directory.join("left-behind");
        drop(std::os::unix::net::UnixDatagram::bind(&stale).expect("bound"));
        assert!(stale.exists());
        assert!(
            first.alone(),
            "a socket nobody listens on is no other process"
        );
        assert!(!stale.exists(), "and it is removed");
        first.close().await;
    }

    #[tokio::test]
    async fn a_database_path_too_long_for_a_socket_gets_a_short_directory() {
        let long = Path::new("/tmp")
            .join("x".repeat(120))
            .join("signalpost.db");
        let adapter = SocketWakeup::beside(&long, Arc::default());
        assert!(adapter.directory.as_os_str().len() < MAX_SOCKET_PATH - 27);
        let listening = adapter.listen().await.expect("bound");
        assert!(listening.address.len() <= MAX_SOCKET_PATH);
        adapter.close().await;
    }
}
