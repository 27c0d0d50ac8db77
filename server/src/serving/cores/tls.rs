//! DNS over TLS (RFC 7858): a handshake within its timeout, then the TCP
//! path's framing, limits and answers over the TLS stream.

use super::*;
use crate::operations::metrics::Handshake;

/// What TLS connections on a core share.
#[derive(Clone)]
pub(super) struct Tls {
    pub(super) tcp: Tcp,
    /// The certificate in use: new connections take the newest.
    pub(super) config: Rc<RefCell<Arc<rustls::ServerConfig>>>,
    pub(super) reloads: Rc<crossbeam_channel::Receiver<Arc<rustls::ServerConfig>>>,
    pub(super) handshake_timeout_ms: u64,
}

impl Tls {
    /// An acceptor with the newest certificate.
    fn acceptor(&self) -> futures_rustls::TlsAcceptor {
        let mut config = self.config.borrow_mut();
        while let Ok(newer) = self.reloads.try_recv() {
            *config = newer;
        }
        futures_rustls::TlsAcceptor::from(Arc::clone(&config))
    }

    fn count(&self, outcome: Handshake) {
        if let Some(metrics) = &self.tcp.shared.metrics {
            metrics.handshake(self.tcp.listen, outcome);
        }
    }
}

pub(super) async fn accept_tls(listener: TcpListener, tls: Tls, connections: Rc<Cell<usize>>) {
    let max = tls.tcp.limits.max_connections;
    accept_capped(listener, max, connections, |stream, guard| {
        glommio::spawn_local(serve_tls(stream, tls.clone(), guard)).detach();
    })
    .await;
}

async fn serve_tls(stream: TcpStream, tls: Tls, guard: ConnectionGuard) {
    let _ = stream.set_nodelay(true);
    let client = stream.peer_addr().ok();
    let acceptor = tls.acceptor();
    let handshake =
        glommio::timer::timeout(Duration::from_millis(tls.handshake_timeout_ms), async {
            Ok(acceptor.accept(stream).await)
        })
        .await;
    match handshake {
        Ok(Ok(stream)) => {
            tls.count(Handshake::Done);
            serve_stream(stream, client, &tls.tcp, guard).await;
        }
        Ok(Err(error)) => {
            tls.count(Handshake::Failed);
            tracing::debug!(?client, %error, "TLS handshake failed; closing");
        }
        Err(_) => {
            tls.count(Handshake::TimedOut);
            tracing::debug!(
                ?client,
                timeout_ms = tls.handshake_timeout_ms,
                "TLS handshake too slow; closing"
            );
        }
    }
}
