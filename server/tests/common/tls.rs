//! DNS over TLS on the client's side, for the tests that serve it: a test
//! CA and its certificates, kubewire serving TLS, and a rustls client.

use super::*;
use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub const SERVER_NAME: &str = "dns.example";

/// A test CA and the certificates it signs, as PEM files in a directory.
pub struct Pki {
    pub dir: TempDir,
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Pki {
    pub fn new(tag: &str, ca_name: &str) -> Pki {
        let dir = tempdir(tag);
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, ca_name);
        let ca = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap())
            .unwrap();
        std::fs::write(dir.join("ca.crt"), ca.pem()).unwrap();
        Pki { dir, ca }
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// A certificate for `names`, as (certificate PEM, key PEM).
    pub fn leaf(&self, common_name: &str, names: &[&str]) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        let cert = params.signed_by(&key, &self.ca).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// Writes a serving certificate named `common_name` to `tls.crt` and
    /// `tls.key` (as a Secret's files are replaced: written aside, renamed).
    pub fn write_serving(&self, common_name: &str) {
        let (cert, key) = self.leaf(common_name, &[SERVER_NAME, "127.0.0.1"]);
        replace(&self.dir.join("tls.key"), &key);
        replace(&self.dir.join("tls.crt"), &cert);
    }

    pub fn args(&self) -> Vec<String> {
        vec![
            "--demo".into(),
            "--tls-cert-file".into(),
            self.dir.join("tls.crt").display().to_string(),
            "--tls-key-file".into(),
            self.dir.join("tls.key").display().to_string(),
        ]
    }
}

pub fn replace(path: &Path, text: &str) {
    let aside = path.with_extension("new");
    std::fs::write(&aside, text).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

/// kubewire serving DNS over TLS on a free port (with `extra` arguments);
/// returns it and the TLS address.
pub fn serve_tls(pki: &Pki, extra: &[&str]) -> (Server, SocketAddr) {
    serve_listening(pki, "--tls-listen", extra)
}

/// kubewire with `pki`'s certificate and `listen_flag` (`--tls-listen` or
/// `--https-listen`) on a free port, with `extra` arguments; returns it and
/// that address.
pub fn serve_listening(pki: &Pki, listen_flag: &str, extra: &[&str]) -> (Server, SocketAddr) {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut args = pki.args();
    args.extend([listen_flag.to_string(), addr.to_string()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    (Server::start(&args), addr)
}

/// A rustls client trusting `ca_file`, with a client certificate if given.
pub fn client_config(
    ca_file: &Path,
    client: Option<(String, String)>,
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let mut config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
    };
    config.alpn_protocols = vec![b"dot".to_vec()];
    Arc::new(config)
}

/// [`client_config`] offering `alpn` instead of `dot`.
pub fn client_config_alpn(ca_file: &Path, alpn: &[u8]) -> Arc<rustls::ClientConfig> {
    let mut config = (*client_config(ca_file, None)).clone();
    config.alpn_protocols = vec![alpn.to_vec()];
    Arc::new(config)
}

pub type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A finished handshake, or rustls's or the socket's error.
pub fn connect(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> std::io::Result<TlsStream> {
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    let connection =
        rustls::ClientConnection::new(config, ServerName::try_from(SERVER_NAME).unwrap())
            .map_err(std::io::Error::other)?;
    let mut stream = rustls::StreamOwned::new(connection, tcp);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    Ok(stream)
}

/// One query and its reply, two-byte framed, on an open connection.
pub fn ask(stream: &mut TlsStream, name: &str, qtype: RecordType) -> std::io::Result<Message> {
    let query = build_query(name, qtype, None);
    let mut framed = (query.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&query);
    stream.write_all(&framed)?;
    stream.flush()?;
    let mut prefix = [0u8; 2];
    stream.read_exact(&mut prefix)?;
    let mut reply = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
    stream.read_exact(&mut reply)?;
    Ok(Message::from_vec(&reply).unwrap())
}
