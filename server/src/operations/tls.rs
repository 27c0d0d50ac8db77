//! The certificate DNS over TLS and over HTTPS are served with: read from
//! PEM files at start, and read again whenever they change (a mounted
//! Secret rotated), on a thread of its own. Each new pair of rustls
//! `ServerConfig`s goes to every core over a channel; a connection keeps the
//! one its handshake began with. A bad new certificate keeps the one in
//! use, and the log says why.

use crate::operations::config::TlsServing;
use crossbeam_channel::Sender;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

/// ALPN for DNS over TLS (RFC 7858, as registered by IANA).
pub const ALPN_DOT: &[u8] = b"dot";
/// ALPN for DNS over HTTPS: HTTP/2 first (RFC 8484 §5.2), then HTTP/1.1.
pub const ALPN_DOH: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// One certificate, as each served protocol's TLS setup.
#[derive(Clone, Debug)]
pub struct Certificates {
    /// DNS over TLS.
    pub dot: Arc<ServerConfig>,
    /// DNS over HTTPS.
    pub doh: Arc<ServerConfig>,
}

/// Why a certificate cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    /// A file could not be read or holds no valid PEM.
    #[error("{key} {path}: cannot read it as PEM")]
    Pem {
        /// The config key that names it.
        key: &'static str,
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// The certificate file holds no certificate.
    #[error("tls.cert_file {0}: no certificate in it; give the PEM chain, leaf first")]
    NoCertificate(String),
    /// The client CA file holds nothing usable.
    #[error("tls.client_ca_file {path}: no usable CA certificate in it")]
    ClientCa {
        /// The file.
        path: String,
        /// Why, when rustls said.
        #[source]
        source: Option<rustls::server::VerifierBuilderError>,
    },
    /// rustls refuses the pair (a key that does not match the certificate,
    /// or of a kind it cannot sign with).
    #[error(
        "tls.cert_file {cert} with tls.key_file {key}: cannot serve them (is the key the certificate's?)"
    )]
    Config {
        /// The certificate file.
        cert: String,
        /// The key file.
        key: String,
        /// Why.
        #[source]
        source: rustls::Error,
    },
}

/// Reads the files and builds the server side of DNS over TLS and HTTPS.
pub fn certificates(tls: &TlsServing) -> Result<Certificates, CertificateError> {
    let pem = |key, path: &str| {
        let path = path.to_string();
        move |source| CertificateError::Pem { key, path, source }
    };
    let chain = CertificateDer::pem_file_iter(&tls.cert_file)
        .map_err(pem("tls.cert_file", &tls.cert_file))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem("tls.cert_file", &tls.cert_file))?;
    if chain.is_empty() {
        return Err(CertificateError::NoCertificate(tls.cert_file.clone()));
    }
    let key =
        PrivateKeyDer::from_pem_file(&tls.key_file).map_err(pem("tls.key_file", &tls.key_file))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|source| CertificateError::Config {
            cert: tls.cert_file.clone(),
            key: tls.key_file.clone(),
            source,
        })?;
    let builder = if tls.client_ca_file.is_empty() {
        builder.with_no_client_auth()
    } else {
        let path = &tls.client_ca_file;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(path).map_err(pem("tls.client_ca_file", path))? {
            let cert = cert.map_err(pem("tls.client_ca_file", path))?;
            // A certificate rustls cannot use is skipped; none at all fails below.
            let _ = roots.add(cert);
        }
        let client_ca = |source| CertificateError::ClientCa {
            path: path.clone(),
            source,
        };
        if roots.is_empty() {
            return Err(client_ca(None));
        }
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| client_ca(Some(e)))?;
        builder.with_client_cert_verifier(verifier)
    };
    let mut config =
        builder
            .with_single_cert(chain, key)
            .map_err(|source| CertificateError::Config {
                cert: tls.cert_file.clone(),
                key: tls.key_file.clone(),
                source,
            })?;
    let mut doh = config.clone();
    config.alpn_protocols = vec![ALPN_DOT.to_vec()];
    doh.alpn_protocols = ALPN_DOH.iter().map(|p| p.to_vec()).collect();
    Ok(Certificates {
        dot: Arc::new(config),
        doh: Arc::new(doh),
    })
}

/// What identifies a version of a file: following symlinks (a Secret's
/// files are links into a directory swapped whole), its inode, size and
/// modification time. `None` while it cannot be read.
type Stamp = Option<(u64, u64, SystemTime)>;

/// The versions of the certificate, key and client CA files.
pub type FileStamps = [Stamp; 3];

fn stamp(path: &str) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    if path.is_empty() {
        return None;
    }
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.ino(), meta.len(), meta.modified().ok()?))
}

/// The files' versions now: taken before they are read, so that a change
/// while they are read is seen at the next check.
pub fn stamps(tls: &TlsServing) -> FileStamps {
    [
        stamp(&tls.cert_file),
        stamp(&tls.key_file),
        stamp(&tls.client_ca_file),
    ]
}

/// Checks the files every `tls.reload_check_ms` and sends each new
/// certificate that loads to every core, until `shutdown`. A certificate
/// and key written one after the other may be read half-changed: that
/// fails, is logged, and the next check (once both are written) succeeds.
pub fn spawn_reloader(
    tls: TlsServing,
    loaded: FileStamps,
    cores: Vec<Sender<Certificates>>,
    shutdown: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("kubewire-tls".into())
        .spawn(move || {
            let interval = Duration::from_millis(tls.reload_check_ms);
            let mut loaded = loaded;
            let mut failed = None;
            while !shutdown.load(Ordering::Acquire) {
                std::thread::sleep(interval);
                let now = stamps(&tls);
                if now == loaded || failed.as_ref() == Some(&now) {
                    continue;
                }
                match certificates(&tls) {
                    Ok(certificates) => {
                        for core in &cores {
                            let _ = core.send(certificates.clone());
                        }
                        tracing::info!(cert_file = %tls.cert_file, "DNS over TLS and HTTPS: a new certificate loaded; new connections get it");
                        loaded = now;
                        failed = None;
                    }
                    Err(error) => {
                        tracing::error!(error = %crate::operations::failure::Chain(&error), "DNS over TLS and HTTPS: the changed certificate files cannot be served; keeping the certificate in use");
                        failed = Some(now);
                    }
                }
            }
        })
}
