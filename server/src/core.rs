//! A serving core: one glommio executor pinned to one CPU, owning its answer
//! table, its UDP sockets and its TCP listeners.
//!
//! Tasks on a core share the table through `Rc<RefCell<_>>`: one thread, no
//! lock. Updates from the control plane are applied by the core's root task,
//! which only runs when the query tasks yield, so an update never lands in
//! the middle of a batch.
#![allow(unsafe_code)] // wrapping our own raw socket fds for glommio

use crate::batch::UdpBatch;
use crate::cli::UdpIo;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream, UdpSocket, UnixStream};
use glommio::{LocalExecutorBuilder, Placement};
use kubewire_control_plane::{AnswerTable, DeltaReceiver, Response};
use kubewire_wire::Transport;
use std::cell::{Cell, RefCell};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// glommio's preemption period, in milliseconds (its default is 100).
const PREEMPT_MS: u64 = 5;

/// TCP limits, per core.
#[derive(Clone, Copy, Debug)]
pub struct TcpLimits {
    /// Close a connection idle this long.
    pub idle_timeout_ms: u64,
    /// Most open connections; more are closed at once.
    pub max_connections: usize,
}

/// Longest TCP query accepted; longer ones close the connection. Real
/// queries are a few hundred bytes even with padding and cookies.
const MAX_TCP_QUERY: usize = 4096;
/// Once a TCP query's length has arrived, its body must follow within this.
const TCP_BODY_TIMEOUT_MS: u64 = 2_000;
/// A reply must be taken by the client within this.
const TCP_WRITE_TIMEOUT_MS: u64 = 5_000;

/// Everything a core needs, handed over from the main thread.
#[derive(Debug)]
pub struct CoreSetup {
    /// Index, for names and logs.
    pub index: usize,
    /// The CPU to pin to.
    pub cpu: usize,
    /// One UDP socket per listen address (SO_REUSEPORT).
    pub udp_fds: Vec<RawFd>,
    /// One TCP listener per listen address (SO_REUSEPORT).
    pub tcp_fds: Vec<RawFd>,
    /// This core's end of the delta hub.
    pub updates: DeltaReceiver,
    /// Readable when updates are waiting or shutdown has begun.
    pub wake_fd: RawFd,
    /// Set when the server stops.
    pub shutdown: Arc<AtomicBool>,
    /// UDP I/O mode.
    pub udp_io: UdpIo,
    /// TCP limits.
    pub tcp: TcpLimits,
}

/// Starts a core on its own pinned thread.
pub fn spawn(setup: CoreSetup) -> glommio::Result<glommio::ExecutorJoinHandle<()>, ()> {
    LocalExecutorBuilder::new(Placement::Fixed(setup.cpu))
        .name(&format!("kubewire-core-{}", setup.index))
        // Keep pinned memory small: RLIMIT_MEMLOCK is often 8 MiB or less,
        // and no DMA file I/O happens here.
        .io_memory(64 << 10)
        .ring_depth(256)
        // While UDP traffic flows the executor rarely goes idle, and glommio
        // reaps other tasks' I/O (TCP, the wake-up socket) at preemption: this
        // bounds how long they can wait.
        .preempt_timer(Duration::from_millis(PREEMPT_MS))
        .spawn(move || run(setup))
}

type Table = Rc<RefCell<AnswerTable>>;
/// One 64 KiB reply buffer per core, for TCP replies: filled and copied out
/// without an await in between, so connections never hold it.
type Scratch = Rc<RefCell<Vec<u8>>>;

async fn run(setup: CoreSetup) {
    let table: Table = Rc::new(RefCell::new(AnswerTable::new()));
    let updates = Rc::new(setup.updates);
    apply_updates(&updates, &table);

    let exclusive = setup.udp_fds.len() == 1;
    for &fd in &setup.udp_fds {
        // SAFETY: the fd is a bound UDP socket created for this core alone.
        let socket = unsafe { UdpSocket::from_raw_fd(fd) };
        match setup.udp_io {
            UdpIo::Batched => glommio::spawn_local(serve_udp_batched(
                socket,
                Rc::clone(&table),
                exclusive,
                Rc::clone(&updates),
            ))
            .detach(),
            UdpIo::Glommio => {
                glommio::spawn_local(serve_udp_glommio(socket, Rc::clone(&table))).detach()
            }
        };
    }
    let connections = Rc::new(Cell::new(0usize));
    let scratch: Scratch = Rc::new(RefCell::new(vec![0u8; 2 + usize::from(u16::MAX)]));
    for &fd in &setup.tcp_fds {
        // SAFETY: the fd is a listening TCP socket created for this core alone.
        let listener = unsafe { TcpListener::from_raw_fd(fd) };
        let tcp = Tcp {
            table: Rc::clone(&table),
            scratch: Rc::clone(&scratch),
            limits: setup.tcp,
        };
        glommio::spawn_local(accept_tcp(listener, tcp, Rc::clone(&connections))).detach();
    }

    // The root task: apply updates whenever woken, until shutdown. When it
    // returns, the executor stops and drops the serving tasks.
    // SAFETY: the fd is one end of a socket pair created for this core alone.
    let mut wake = unsafe { UnixStream::from_raw_fd(setup.wake_fd) };
    let mut buf = [0u8; 64];
    loop {
        apply_updates(&updates, &table);
        if setup.shutdown.load(Ordering::Acquire) {
            break;
        }
        match wake.read(&mut buf).await {
            Ok(0) => break,
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(core = setup.index, %error, "wake-up channel failed; polling for updates");
                glommio::timer::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    tracing::debug!(core = setup.index, "core stopped");
}

fn apply_updates(updates: &DeltaReceiver, table: &Table) {
    let mut applied = false;
    let mut table = table.borrow_mut();
    while let Ok(update) = updates.receiver().try_recv() {
        applied |= table.apply(&update);
    }
    if applied {
        updates
            .status()
            .record(table.revision(), table.synced(), table.len() as u64);
    }
}

/// Answers one datagram into `out`; `None` means send nothing.
fn answer_udp(table: &mut AnswerTable, query: &[u8], out: &mut [u8]) -> Option<usize> {
    match table.respond(query, Transport::Udp, out) {
        Response::Reply { len, .. } | Response::NotOurs { len } => Some(len),
        Response::Drop => None,
    }
}

/// How long a core may sleep in `recvmmsg` while traffic flows, before it
/// goes back to waiting on the reactor (set as the socket's SO_RCVTIMEO).
pub const UDP_FLOWING_WAIT_MS: u64 = 1;
/// While traffic flows, the core yields to its other tasks (TCP, updates)
/// this often. Yielding sends glommio round its reactor, which costs a
/// system call, so it is paced by time rather than done every batch.
const YIELD_EVERY: Duration = Duration::from_micros(500);

/// The batched UDP path. While datagrams keep coming the core sleeps in
/// `recvmmsg(MSG_WAITFORONE)` itself, as a bare UDP responder would: one
/// receive and one send system call per batch. When the socket has been
/// quiet for [`UDP_FLOWING_WAIT_MS`], it parks on glommio's reactor instead,
/// so an idle core costs nothing and its other tasks run at once.
async fn serve_udp_batched(
    socket: UdpSocket,
    table: Table,
    exclusive: bool,
    updates: Rc<DeltaReceiver>,
) {
    let fd = socket.as_raw_fd();
    let mut batch = UdpBatch::new();
    let mut peek = [0u8; 1];
    let mut flowing = false;
    let mut last_yield = std::time::Instant::now();
    loop {
        if !flowing {
            // Wait on the reactor until a datagram is there, without taking it.
            if let Err(error) = socket.peek_from(&mut peek).await {
                tracing::warn!(%error, "UDP receive failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        }
        // Sleeping in the kernel blocks the core's other tasks, so only a
        // core's only UDP socket does it; others poll.
        let received = if exclusive {
            batch.receive_waiting(fd)
        } else {
            batch.receive(fd)
        };
        let count = match received {
            Ok(count) => count,
            Err(error) => {
                tracing::warn!(%error, "recvmmsg failed");
                0
            }
        };
        if count == 0 {
            flowing = false;
            glommio::executor().yield_if_needed().await;
            continue;
        }
        flowing = true;
        {
            let mut table = table.borrow_mut();
            batch.answer(count, |query, out| answer_udp(&mut table, query, out));
        }
        send_all(&mut batch, fd).await;
        if last_yield.elapsed() >= YIELD_EVERY || glommio::executor().need_preempt() {
            // Updates are applied here too: while traffic flows the root
            // task's wake-up may not be reaped until the next preemption.
            apply_updates(&updates, &table);
            glommio::executor().yield_now().await;
            last_yield = std::time::Instant::now();
        }
    }
}

/// Sends every queued reply. A full socket buffer is waited out briefly; a
/// reply that still cannot go is dropped, as the network would drop it.
async fn send_all(batch: &mut UdpBatch, fd: RawFd) {
    let mut first = 0usize;
    let mut stalls = 0u32;
    while first < batch.queued() {
        match batch.send(fd, first) {
            Ok(0) => {
                stalls += 1;
                if stalls > 20 {
                    tracing::debug!(
                        dropped = batch.queued() - first,
                        "UDP send buffer full; replies dropped"
                    );
                    return;
                }
                glommio::timer::sleep(Duration::from_micros(50)).await;
            }
            Ok(sent) => first += sent,
            Err(error) => {
                // This one reply cannot go (an unreachable peer, say): skip it.
                tracing::debug!(%error, "UDP reply not sent");
                first += 1;
            }
        }
    }
}

async fn serve_udp_glommio(socket: UdpSocket, table: Table) {
    let mut query = vec![0u8; 65_536];
    let mut out = vec![0u8; crate::batch::TX_BUF];
    loop {
        let (len, peer) = match socket.recv_from(&mut query).await {
            Ok(received) => received,
            Err(error) => {
                tracing::warn!(%error, "UDP receive failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let reply = answer_udp(&mut table.borrow_mut(), &query[..len], &mut out);
        if let Some(reply) = reply
            && let Err(error) = socket.send_to(&out[..reply], peer).await
        {
            tracing::debug!(%error, "UDP reply not sent");
        }
    }
}

/// What TCP connections on a core share.
#[derive(Clone)]
struct Tcp {
    table: Table,
    scratch: Scratch,
    limits: TcpLimits,
}

async fn accept_tcp(listener: TcpListener, tcp: Tcp, connections: Rc<Cell<usize>>) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                if connections.get() >= tcp.limits.max_connections {
                    tracing::debug!(
                        limit = tcp.limits.max_connections,
                        "TCP connection limit reached; closing new connection"
                    );
                    drop(stream);
                    continue;
                }
                connections.set(connections.get() + 1);
                let guard = ConnectionGuard(Rc::clone(&connections));
                glommio::spawn_local(serve_tcp(stream, tcp.clone(), guard)).detach();
            }
            Err(error) => {
                // Out of file descriptors, most likely: back off, keep serving UDP.
                tracing::warn!(%error, "TCP accept failed");
                glommio::timer::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Counts a connection while it lives.
struct ConnectionGuard(Rc<Cell<usize>>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

/// Runs `io` with a deadline; `None` on timeout, error or end of stream.
async fn within<T>(
    ms: u64,
    io: impl std::future::Future<Output = std::io::Result<T>>,
) -> Option<T> {
    glommio::timer::timeout(Duration::from_millis(ms), async {
        io.await.map_err(glommio::GlommioError::from)
    })
    .await
    .ok()
}

/// RFC 7766: two-byte length framing, any number of queries, each answered
/// as soon as it is read. A client idle too long, sending a query too slowly,
/// announcing one too large, or not reading its replies is disconnected.
async fn serve_tcp(mut stream: TcpStream, tcp: Tcp, _guard: ConnectionGuard) {
    let _ = stream.set_nodelay(true);
    let mut query = Vec::new();
    let mut reply = Vec::new();
    loop {
        let mut prefix = [0u8; 2];
        if within(tcp.limits.idle_timeout_ms, stream.read_exact(&mut prefix))
            .await
            .is_none()
        {
            return;
        }
        let len = usize::from(u16::from_be_bytes(prefix));
        if len > MAX_TCP_QUERY {
            tracing::debug!(len, "TCP query too long; closing connection");
            return;
        }
        query.resize(len, 0);
        if within(TCP_BODY_TIMEOUT_MS, stream.read_exact(&mut query))
            .await
            .is_none()
        {
            return;
        }
        {
            let mut scratch = tcp.scratch.borrow_mut();
            let reply_len =
                match tcp
                    .table
                    .borrow_mut()
                    .respond(&query, Transport::Tcp, &mut scratch[2..])
                {
                    Response::Reply { len, .. } | Response::NotOurs { len } => len,
                    // Not a query at all: a DNS peer would not send this.
                    Response::Drop => return,
                };
            scratch[..2].copy_from_slice(&(reply_len as u16).to_be_bytes());
            reply.clear();
            reply.extend_from_slice(&scratch[..2 + reply_len]);
        }
        if within(TCP_WRITE_TIMEOUT_MS, stream.write_all(&reply))
            .await
            .is_none()
        {
            return;
        }
    }
}
