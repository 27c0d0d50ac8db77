//! The TCP path: accept with a connection cap, then length-prefixed
//! queries with idle, body and write timeouts.

use super::streams::DrivenStream;
use super::*;

/// What TCP connections on a core share.
#[derive(Clone)]
pub(super) struct Tcp {
    pub(super) shared: Shared,
    pub(super) scratch: Scratch,
    pub(super) limits: TcpLimits,
    pub(super) listen: usize,
}

pub(super) async fn accept_tcp(listener: TcpListener, tcp: Tcp, connections: Rc<Cell<usize>>) {
    let max = tcp.limits.max_connections;
    accept_capped(listener, max, connections, |stream, guard| {
        glommio::spawn_local(serve_tcp(stream, tcp.clone(), guard)).detach();
    })
    .await;
}

/// Accepts connections while fewer than `max` (TCP and TLS together) are
/// open on this core, handing each to `serve` with its guard; closes the
/// rest at once.
pub(super) async fn accept_capped(
    listener: TcpListener,
    max: usize,
    connections: Rc<Cell<usize>>,
    serve: impl Fn(TcpStream, ConnectionGuard),
) {
    let mut failures = Failures::default();
    loop {
        match listener.accept().await {
            Ok(stream) => {
                if connections.get() >= max {
                    tracing::debug!(
                        limit = max,
                        "TCP connection limit reached; closing new connection"
                    );
                    drop(stream);
                    continue;
                }
                connections.set(connections.get() + 1);
                serve(stream, ConnectionGuard(Rc::clone(&connections)));
            }
            Err(error) => {
                // Out of file descriptors, most likely: back off, keep serving UDP.
                failures.record("TCP accept failed (out of file descriptors? raise the limit or lower tcp.max_connections); retrying", &error);
                glommio::timer::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Counts a connection while it lives.
pub(super) struct ConnectionGuard(Rc<Cell<usize>>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

/// Runs `io` with a deadline; `None` on timeout, error or end of stream.
pub(super) async fn within<T>(
    ms: u64,
    io: impl std::future::Future<Output = std::io::Result<T>>,
) -> Option<T> {
    glommio::timer::timeout(Duration::from_millis(ms), async {
        io.await.map_err(glommio::GlommioError::from)
    })
    .await
    .ok()
}

/// RFC 7766: two-byte length framing, any number of queries, answered in
/// order as soon as they are read. A client idle too long, sending a query too slowly,
/// announcing one too large, or not reading its replies is disconnected.
pub(super) async fn serve_tcp(stream: TcpStream, tcp: Tcp, guard: ConnectionGuard) {
    let _ = stream.set_nodelay(true);
    let client = stream.peer_addr().ok();
    let stream = DrivenStream::new(stream, Rc::clone(&tcp.shared.streams), true);
    serve_stream(stream, client, &tcp, guard).await;
}

/// The framing loop over any byte stream: plain TCP, or TLS over it.
pub(super) async fn serve_stream<S>(
    mut stream: S,
    client: Option<std::net::SocketAddr>,
    tcp: &Tcp,
    _guard: ConnectionGuard,
) where
    S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin,
{
    // What has been read and not yet answered, from `start` on.
    // (Allocated at the first read: an idle connection holds little.)
    let mut received: Vec<u8> = Vec::new();
    let mut start = 0;
    // Replies not yet written, each with its length prefix.
    let mut replies: Vec<u8> = Vec::new();
    let mut reply = Vec::new();
    // When the query being read must be whole: its length is known.
    let mut body_deadline: Option<std::time::Instant> = None;
    loop {
        // Every query already read is answered before the next read, and
        // their replies leave together: a pipelining client (or a TLS
        // record holding several queries) costs one write, and over TLS
        // one record, not one per query.
        while let Some(len) = framed_len(&received[start..]) {
            if len > MAX_TCP_QUERY {
                tracing::debug!(len, "TCP query too long; closing connection");
                return;
            }
            if received.len() - start < 2 + len {
                break;
            }
            let query = &received[start + 2..start + 2 + len];
            let started = std::time::Instant::now();
            // Not a query at all (a DNS peer would not send this), or no
            // reply to give: the connection ends.
            let answered = match answer_from_table(tcp, client, query, &mut reply, 2) {
                Ok(answered) => answered,
                Err((parsed, work)) => {
                    // Replies already made do not wait for the resolver.
                    if !send_replies(&mut stream, &mut replies).await {
                        return;
                    }
                    resolve_into(tcp, &parsed, work, &mut reply).await
                }
            };
            let StreamAnswer::Reply(rcode) = answered else {
                send_replies(&mut stream, &mut replies).await;
                return;
            };
            // Every reply fits a length prefix (each source is capped at
            // MAX_MESSAGE); one that did not would end the connection.
            let Ok(reply_len) = u16::try_from(reply.len() - 2) else {
                return;
            };
            reply[..2].copy_from_slice(&reply_len.to_be_bytes());
            replies.extend_from_slice(&reply);
            finish_one(
                &tcp.shared,
                tcp.listen,
                started,
                client,
                (query, &reply[2..]),
                (Proto::Tcp, rcode),
            );
            start += 2 + len;
            if replies.len() >= WRITE_BATCH {
                break;
            }
        }
        if !replies.is_empty() {
            if !send_replies(&mut stream, &mut replies).await {
                return;
            }
            if framed_len(&received[start..]).is_some_and(|len| received.len() - start >= 2 + len) {
                // More complete queries wait (the batch was full).
                continue;
            }
        }
        if start > 0 {
            received.drain(..start);
            start = 0;
            body_deadline = None;
        }
        // A client idle too long between queries, or sending one too
        // slowly once its length is known (however it spreads the bytes),
        // is disconnected.
        let timeout_ms = if received.len() >= 2 {
            let now = std::time::Instant::now();
            let deadline =
                *body_deadline.get_or_insert(now + Duration::from_millis(TCP_BODY_TIMEOUT_MS));
            match u64::try_from(deadline.saturating_duration_since(now).as_millis()) {
                Ok(0) | Err(_) => return,
                Ok(ms) => ms,
            }
        } else {
            tcp.limits.idle_timeout_ms
        };
        let filled = received.len();
        received.resize(filled + READ_CHUNK, 0);
        match within(timeout_ms, stream.read(&mut received[filled..])).await {
            Some(read) if read > 0 => received.truncate(filled + read),
            _ => return,
        }
    }
}

/// Bytes read from a stream at a time, at most.
const READ_CHUNK: usize = 4 << 10;
/// Replies are written once this many bytes of them are ready, even if
/// more queries wait: a client that pipelines without reading is bounded.
const WRITE_BATCH: usize = 64 << 10;

/// The length a two-byte prefix announces, once both bytes are there.
fn framed_len(bytes: &[u8]) -> Option<usize> {
    Some(usize::from(u16::from_be_bytes([
        *bytes.first()?,
        *bytes.get(1)?,
    ])))
}

/// Writes the replies made so far, if any, and flushes (a TLS stream holds
/// what is written until flushed), within the write limit; empties them.
/// Whether the connection may go on.
async fn send_replies<S>(stream: &mut S, replies: &mut Vec<u8>) -> bool
where
    S: futures_lite::AsyncWrite + Unpin,
{
    if replies.is_empty() {
        return true;
    }
    let written = async {
        stream.write_all(replies).await?;
        stream.flush().await
    };
    let sent = within(TCP_WRITE_TIMEOUT_MS, written).await.is_some();
    replies.clear();
    sent
}

/// What became of one query read from a stream.
pub(super) enum StreamAnswer {
    /// `reply` holds the reply, with this RCODE.
    Reply(Rcode),
    /// Not a DNS query at all: nothing to answer.
    NotAQuery,
    /// The resolver gave no reply to send.
    NoReply,
}

/// Answers one query read from a stream (TCP, TLS or HTTPS) into `reply`,
/// after `reserve` bytes left for the caller (TCP's length prefix).
pub(super) async fn answer_one(
    tcp: &Tcp,
    client: Option<std::net::SocketAddr>,
    query: &[u8],
    reply: &mut Vec<u8>,
    reserve: usize,
) -> StreamAnswer {
    match answer_from_table(tcp, client, query, reply, reserve) {
        Ok(answered) => answered,
        // Boxed: the resolver's state is large, and hyper spawns a task
        // per DoH request holding this future; the table's answers should
        // not copy it about.
        Err((parsed, work)) => Box::pin(resolve_into(tcp, &parsed, work, reply)).await,
    }
}

/// The table's part of [`answer_one`], without waiting; `Err` with what the
/// resolver must finish.
pub(super) fn answer_from_table(
    tcp: &Tcp,
    client: Option<std::net::SocketAddr>,
    query: &[u8],
    reply: &mut Vec<u8>,
    reserve: usize,
) -> Result<StreamAnswer, (Box<QueryBuf>, Work)> {
    reply.clear();
    reply.resize(reserve, 0);
    let mut scratch = tcp.scratch.borrow_mut();
    let verdict = answer(
        &mut tcp.shared.table.borrow_mut(),
        tcp.shared.outside(),
        tcp.shared.metrics.as_deref(),
        tcp.listen,
        Proto::Tcp,
        query,
        &mut scratch[..],
        || client.map(|c| c.ip()),
    );
    match verdict {
        Verdict::Reply(reply_len, rcode) => {
            reply.extend_from_slice(&scratch[..reply_len]);
            Ok(StreamAnswer::Reply(rcode))
        }
        Verdict::Resolve(parsed, work) => Err((parsed, work)),
        Verdict::Drop => Ok(StreamAnswer::NotAQuery),
    }
}

/// The resolver's part of [`answer_one`]: `reply` keeps what is reserved.
pub(super) async fn resolve_into(
    tcp: &Tcp,
    parsed: &QueryBuf,
    work: Work,
    reply: &mut Vec<u8>,
) -> StreamAnswer {
    // Counted, so that the UDP loop does not sleep in the kernel while
    // this query's upstream reply waits on the reactor.
    let _in_progress = tcp.shared.resolver.start();
    match resolve(&tcp.shared, tcp.listen, Proto::Tcp, parsed, work).await {
        Some(resolved) => {
            reply.extend_from_slice(&resolved.reply);
            StreamAnswer::Reply(resolved.rcode)
        }
        None => StreamAnswer::NoReply,
    }
}
