//! DNS over TLS (RFC 7858): a handshake within its timeout, then the TCP
//! path's framing, limits and answers over the TLS stream. DNS over HTTPS
//! (`https.rs`) shares the handshake.

use super::streams::DrivenStream;
use super::*;
use crate::operations::metrics::Handshake;
use crate::operations::tls::Certificates;

/// What TLS and HTTPS connections on a core share.
#[derive(Clone)]
pub(super) struct Tls {
    pub(super) tcp: Tcp,
    /// The certificate in use: new connections take the newest.
    pub(super) certificates: Rc<RefCell<Certificates>>,
    pub(super) reloads: Rc<crossbeam_channel::Receiver<Certificates>>,
    pub(super) handshake_timeout_ms: u64,
    pub(super) https_max_streams: u32,
}

/// Which protocol a TLS listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Served {
    /// DNS over TLS.
    Dot,
    /// DNS over HTTPS.
    Doh,
}

impl Tls {
    /// An acceptor with the newest certificate.
    fn acceptor(&self, served: Served) -> futures_rustls::TlsAcceptor {
        let mut certificates = self.certificates.borrow_mut();
        while let Ok(newer) = self.reloads.try_recv() {
            *certificates = newer;
        }
        futures_rustls::TlsAcceptor::from(Arc::clone(match served {
            Served::Dot => &certificates.dot,
            Served::Doh => &certificates.doh,
        }))
    }

    fn count(&self, outcome: Handshake) {
        if let Some(metrics) = &self.tcp.shared.metrics {
            metrics.handshake(self.tcp.listen, outcome);
        }
    }

    /// The TLS handshake, within its timeout, counted; `None` when it
    /// failed or took too long (the connection is then closed).
    pub(super) async fn handshake(
        &self,
        stream: TcpStream,
        client: Option<std::net::SocketAddr>,
        served: Served,
    ) -> Option<futures_rustls::server::TlsStream<DrivenStream>> {
        let acceptor = self.acceptor(served);
        let stream = DrivenStream::new(stream, Rc::clone(&self.tcp.shared.streams), false);
        let handshake =
            glommio::timer::timeout(Duration::from_millis(self.handshake_timeout_ms), async {
                Ok(acceptor.accept(stream).await)
            })
            .await;
        match handshake {
            Ok(Ok(mut stream)) => {
                self.count(Handshake::Done);
                stream.get_mut().0.drive();
                Some(stream)
            }
            Ok(Err(error)) => {
                self.count(Handshake::Failed);
                tracing::debug!(?client, %error, "TLS handshake failed; closing");
                None
            }
            Err(_) => {
                self.count(Handshake::TimedOut);
                tracing::debug!(
                    ?client,
                    timeout_ms = self.handshake_timeout_ms,
                    "TLS handshake too slow; closing"
                );
                None
            }
        }
    }
}

pub(super) async fn accept_tls(
    listener: TcpListener,
    tls: Tls,
    served: Served,
    connections: Rc<Cell<usize>>,
) {
    let max = tls.tcp.limits.max_connections;
    accept_capped(listener, max, connections, |stream, guard| {
        let tls = tls.clone();
        match served {
            Served::Dot => glommio::spawn_local(serve_dot(stream, tls, guard)).detach(),
            Served::Doh => {
                glommio::spawn_local(super::https::serve_doh(stream, tls, guard)).detach()
            }
        };
    })
    .await;
}

async fn serve_dot(stream: TcpStream, tls: Tls, guard: ConnectionGuard) {
    let _ = stream.set_nodelay(true);
    let client = stream.peer_addr().ok();
    if let Some(stream) = tls.handshake(stream, client, Served::Dot).await {
        serve_stream(stream, client, &tls.tcp, guard).await;
    }
}
