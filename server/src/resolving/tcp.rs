//! Upstream TCP connections, kept and reused with queries pipelined on them
//! (RFC 7766): one connection per upstream per core, opened on first use.
//! A `tls://` upstream's connection is DNS over TLS (RFC 7858): the same
//! framing inside a TLS session (rustls, through `futures-rustls`).
//!
//! A query registers its ID, writes its framed message (writers take turns
//! through a one-permit semaphore), and waits for the reader task to hand
//! it the reply with that ID. Replies may come in any order. A connection
//! that fails, or the upstream closes, fails every query waiting on it and
//! is replaced on next use; one left idle for `idle` is closed.

use super::{Protocol, TlsClient, Upstream};
use futures_lite::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel::{self, LocalSender};
use glommio::net::TcpStream;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Why a TCP exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum TcpError {
    /// The deadline passed.
    #[error("no reply in time")]
    Timeout,
    /// Writing failed.
    #[error("writing the query failed")]
    Write(#[source] std::io::Error),
    /// Connecting failed.
    #[error("connecting failed")]
    Connect(#[source] glommio::GlommioError<()>),
    /// The TLS handshake failed.
    #[error("the TLS handshake failed")]
    Handshake(#[source] glommio::GlommioError<()>),
    /// The pool has no such upstream, or no TLS settings for it: a bug.
    #[error("no such upstream in the pool, or no TLS settings for it")]
    NoUpstream,
    /// The connection closed or failed while the query waited.
    #[error("the connection closed before the reply")]
    Closed,
    /// Another query on this connection holds the same ID (1 in 65536).
    #[error("query ID already in flight on the connection")]
    IdInUse,
}

/// A connection's byte stream: plain TCP, or TLS over TCP.
trait Stream: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> Stream for T {}
type BoxedStream = Box<dyn Stream>;

/// One kept connection.
struct Conn {
    writer: RefCell<Option<WriteHalf<BoxedStream>>>,
    turn: glommio::sync::Semaphore,
    pending: RefCell<HashMap<u16, LocalSender<Vec<u8>>>>,
    dead: Cell<bool>,
}

impl Conn {
    fn fail_all(&self) {
        self.dead.set(true);
        // Dropping the senders ends every waiting receive with `None`.
        self.pending.borrow_mut().clear();
    }
}

/// A core's kept TCP connections, one slot per upstream.
pub struct TcpPool {
    upstreams: Vec<Upstream>,
    tls: Option<TlsClient>,
    conns: RefCell<Vec<Option<Rc<Conn>>>>,
    /// Per upstream: one connect at a time, so queries that arrive together
    /// share the connection the first one opens.
    connecting: Vec<glommio::sync::Semaphore>,
    idle: Duration,
    /// Replies that matched no waiting query, for the mismatch counter.
    pub unmatched: Rc<Cell<u64>>,
}

impl std::fmt::Debug for TcpPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpPool")
            .field("upstreams", &self.conns.borrow().len())
            .finish()
    }
}

impl TcpPool {
    /// A slot per upstream; idle connections close after `idle`. `tls` is
    /// needed for `tls://` upstreams.
    pub fn new(upstreams: &[Upstream], idle: Duration, tls: Option<TlsClient>) -> TcpPool {
        TcpPool {
            upstreams: upstreams.to_vec(),
            tls,
            conns: RefCell::new(upstreams.iter().map(|_| None).collect()),
            connecting: upstreams
                .iter()
                .map(|_| glommio::sync::Semaphore::new(1))
                .collect(),
            idle,
            unmatched: Rc::new(Cell::new(0)),
        }
    }

    /// Sends `query` (with ID `id`) to upstream `index` and returns the
    /// reply with that ID, before `deadline`. The second value says whether
    /// a kept connection was reused.
    pub async fn exchange(
        &self,
        index: usize,
        query: &[u8],
        id: u16,
        deadline: Instant,
    ) -> Result<(Vec<u8>, bool), TcpError> {
        let (conn, reused) = self.connection(index, deadline).await?;
        let (sender, receiver) = local_channel::new_bounded(1);
        {
            let mut pending = conn.pending.borrow_mut();
            if pending.contains_key(&id) {
                return Err(TcpError::IdInUse);
            }
            pending.insert(id, sender);
        }
        let mut framed = Vec::with_capacity(2 + query.len());
        framed.extend_from_slice(&(query.len() as u16).to_be_bytes());
        framed.extend_from_slice(query);
        let left = left(deadline)?;
        let written = glommio::timer::timeout(left, async {
            let _turn = conn.turn.acquire_permit(1).await?;
            let Some(mut writer) = conn.writer.borrow_mut().take() else {
                return Ok(Err(TcpError::Closed));
            };
            let result = writer.write_all(&framed).await;
            *conn.writer.borrow_mut() = Some(writer);
            Ok(result.map_err(TcpError::Write))
        })
        .await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                conn.fail_all();
                return Err(error);
            }
            Err(_) => {
                conn.pending.borrow_mut().remove(&id);
                return Err(TcpError::Timeout);
            }
        }
        let left = left_or(deadline, &conn, id)?;
        let reply = glommio::timer::timeout(left, async { Ok(receiver.recv().await) }).await;
        match reply {
            Ok(Some(reply)) => Ok((reply, reused)),
            Ok(None) => Err(TcpError::Closed),
            Err(_) => {
                conn.pending.borrow_mut().remove(&id);
                Err(TcpError::Timeout)
            }
        }
    }

    /// The kept connection to upstream `index`, or a new one.
    async fn connection(
        &self,
        index: usize,
        deadline: Instant,
    ) -> Result<(Rc<Conn>, bool), TcpError> {
        let Some(&upstream) = self.upstreams.get(index) else {
            return Err(TcpError::NoUpstream);
        };
        if let Some(conn) = self.kept(index) {
            return Ok((conn, true));
        }
        let Some(connecting) = self.connecting.get(index) else {
            return Err(TcpError::NoUpstream);
        };
        let _turn = glommio::timer::timeout(left(deadline)?, connecting.acquire_permit(1))
            .await
            .map_err(|_| TcpError::Timeout)?;
        // Another query may have connected while this one waited.
        if let Some(conn) = self.kept(index) {
            return Ok((conn, true));
        }
        let stream = TcpStream::connect_timeout(upstream.addr, left(deadline)?)
            .await
            .map_err(|e| match e {
                glommio::GlommioError::TimedOut(_) => TcpError::Timeout,
                other => TcpError::Connect(other),
            })?;
        let _ = stream.set_nodelay(true);
        let stream: BoxedStream = if upstream.protocol == Protocol::Tls {
            let Some(tls) = &self.tls else {
                return Err(TcpError::NoUpstream);
            };
            let connector = futures_rustls::TlsConnector::from(std::sync::Arc::clone(&tls.config));
            let handshake = connector.connect(tls.server_name.clone(), stream);
            let tls_stream = glommio::timer::timeout(left(deadline)?, async {
                handshake.await.map_err(glommio::GlommioError::from)
            })
            .await
            .map_err(|e| match e {
                glommio::GlommioError::TimedOut(_) => TcpError::Timeout,
                other => TcpError::Handshake(other),
            })?;
            Box::new(tls_stream)
        } else {
            Box::new(stream)
        };
        let (reader, writer) = futures_lite::io::split(stream);
        let conn = Rc::new(Conn {
            writer: RefCell::new(Some(writer)),
            turn: glommio::sync::Semaphore::new(1),
            pending: RefCell::new(HashMap::new()),
            dead: Cell::new(false),
        });
        glommio::spawn_local(read_replies(
            reader,
            Rc::clone(&conn),
            self.idle,
            Rc::clone(&self.unmatched),
        ))
        .detach();
        if let Some(slot) = self.conns.borrow_mut().get_mut(index) {
            *slot = Some(Rc::clone(&conn));
        }
        Ok((conn, false))
    }
}

impl TcpPool {
    fn kept(&self, index: usize) -> Option<Rc<Conn>> {
        match self.conns.borrow().get(index) {
            Some(Some(conn)) if !conn.dead.get() => Some(Rc::clone(conn)),
            _ => None,
        }
    }
}

/// Hands each reply to the query waiting for its ID, until the connection
/// fails, the upstream closes it, or it stays idle for `idle`.
async fn read_replies(
    mut reader: ReadHalf<BoxedStream>,
    conn: Rc<Conn>,
    idle: Duration,
    unmatched: Rc<Cell<u64>>,
) {
    loop {
        let mut prefix = [0u8; 2];
        let read = glommio::timer::timeout(idle, async {
            reader.read_exact(&mut prefix).await?;
            let mut reply = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
            reader.read_exact(&mut reply).await?;
            Ok(reply)
        })
        .await;
        let reply = match read {
            Ok(reply) => reply,
            Err(glommio::GlommioError::TimedOut(_)) if conn.pending.borrow().is_empty() => break,
            Err(glommio::GlommioError::TimedOut(_)) => continue,
            Err(_) => break,
        };
        let Some(id) = reply.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]])) else {
            unmatched.set(unmatched.get() + 1);
            continue;
        };
        let waiting = conn.pending.borrow_mut().remove(&id);
        match waiting {
            Some(sender) => {
                let _ = sender.try_send(reply);
            }
            None => unmatched.set(unmatched.get() + 1),
        }
    }
    conn.fail_all();
}

fn left(deadline: Instant) -> Result<Duration, TcpError> {
    super::time_left(deadline).ok_or(TcpError::Timeout)
}

fn left_or(deadline: Instant, conn: &Conn, id: u16) -> Result<Duration, TcpError> {
    left(deadline).inspect_err(|_| {
        conn.pending.borrow_mut().remove(&id);
    })
}
