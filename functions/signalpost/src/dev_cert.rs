//! `signalpost dev-cert`: a self-signed certificate for local development, so that the
//! standalone server can serve HTTPS, which browsers need before they speak HTTP/2.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

/// The names the pair is written under.
pub const CERT_FILE: &str = "dev-cert.pem";
pub const KEY_FILE: &str = "dev-key.pem";

/// The names the certificate is valid for: the addresses the server's first command prints.
const NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Writes a fresh pair into `directory` and says where it went and how to use it. Existing
/// files are left alone: they may be a real key.
pub fn write(directory: &Path) -> Result<(), String> {
    let pair = rcgen::generate_simple_self_signed(NAMES.map(str::to_owned).to_vec())
        .map_err(|error| format!("cannot make a certificate: {error}"))?;
    std::fs::create_dir_all(directory)
        .map_err(|error| format!("cannot create {}: {error}", directory.display()))?;
    let directory = directory
        .canonicalize()
        .map_err(|error| format!("cannot find {}: {error}", directory.display()))?;
    let (cert, key) = (directory.join(CERT_FILE), directory.join(KEY_FILE));
    for path in [&cert, &key] {
        if path.exists() {
            return Err(format!(
                "{} already exists: remove it, or pass --out-dir to write elsewhere",
                path.display()
            ));
        }
    }
    create(&cert, pair.cert.pem().as_bytes(), 0o644)?;
    create(&key, pair.signing_key.serialize_pem().as_bytes(), 0o600)?;
    println!(
        "wrote a self-signed certificate for {} (for development only):",
        NAMES.join(", ")
    );
    println!("  certificate: {}", cert.display());
    println!("  private key: {}", key.display());
    println!("serve HTTPS, with HTTP/2 for browsers, with:");
    println!(
        "  SIGNALPOST_TLS_CERT={} SIGNALPOST_TLS_KEY={} cargo run --release -p signalpost-server",
        cert.display(),
        key.display()
    );
    println!(
        "browsers warn that no authority signed it: accept the warning once, or trust {} (README, \"Many tabs: HTTP/2 and TLS\")",
        cert.display()
    );
    Ok(())
}

/// Creates `path` (never overwriting) with `contents`, readable by `mode` on Unix.
fn create(path: &Path, contents: &[u8], mode: u32) -> Result<(), String> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    options
        .open(path)
        .and_then(|mut file| file.write_all(contents))
        .map_err(|error| format!("cannot write {}: {error}", path.display()))
}
