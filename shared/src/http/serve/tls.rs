//! TLS for the standalone server: the certificate and key from `SIGNALPOST_TLS_CERT` and
//! `SIGNALPOST_TLS_KEY` (PEM), rustls on *ring* (the crypto library token signing and the AWS
//! clients already use), and ALPN offering HTTP/2 before HTTP/1.1.
//!
//! Browsers speak HTTP/2 only over TLS, and HTTP/2 carries every tab's requests on one
//! connection: over HTTP/1.1 a browser opens at most 6 connections per host, shared by all its
//! tabs, and each waiting long poll holds one (README, "Many tabs: HTTP/2 and TLS").

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// How long a client has for its TLS handshake, like [`super::HEADER_DEADLINE`] for headers:
/// a client that opens connections and stalls the handshake holds nothing for long.
pub const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);

/// The ALPN protocol ids the server offers, most preferred first.
pub const ALPN_H2: &[u8] = b"h2";
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// Why the certificate or key cannot be used; each names its variable and file.
#[derive(Debug, Error)]
pub enum TlsError {
    #[error("cannot read {variable} file {}: {source}", path.display())]
    Read {
        variable: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{variable} file {} holds no {what} in PEM form (-----BEGIN ...-----): {detail}", path.display())]
    NotPem {
        variable: &'static str,
        path: PathBuf,
        what: &'static str,
        detail: String,
    },
    #[error(
        "cannot use the certificate in {} with the key in {} (SIGNALPOST_TLS_CERT, SIGNALPOST_TLS_KEY): {reason}",
        cert.display(),
        key.display()
    )]
    Unusable {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
}

/// The acceptor for the certificate chain in `cert` and the private key in `key`.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let chain = read("SIGNALPOST_TLS_CERT", cert)?;
    let chain = CertificateDer::pem_slice_iter(&chain)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| not_pem("SIGNALPOST_TLS_CERT", cert, "certificate", error))
        .and_then(|chain| {
            if chain.is_empty() {
                Err(not_pem(
                    "SIGNALPOST_TLS_CERT",
                    cert,
                    "certificate",
                    "no CERTIFICATE section",
                ))
            } else {
                Ok(chain)
            }
        })?;
    let private_key = PrivateKeyDer::from_pem_slice(&read("SIGNALPOST_TLS_KEY", key)?)
        .map_err(|error| not_pem("SIGNALPOST_TLS_KEY", key, "private key", error))?;
    let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .and_then(|builder| {
            builder
                .with_no_client_auth()
                .with_single_cert(chain, private_key)
        })
        .map_err(|error| TlsError::Unusable {
            cert: cert.to_owned(),
            key: key.to_owned(),
            reason: error.to_string(),
        })?;
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn read(variable: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        variable,
        path: path.to_owned(),
        source,
    })
}

fn not_pem(
    variable: &'static str,
    path: &Path,
    what: &'static str,
    detail: impl ToString,
) -> TlsError {
    TlsError::NotPem {
        variable,
        path: path.to_owned(),
        what,
        detail: detail.to_string(),
    }
}
