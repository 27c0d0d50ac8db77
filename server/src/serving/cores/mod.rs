//! A serving core: one glommio executor pinned to one CPU, owning its answer
//! table, its UDP sockets and its TCP listeners.
//!
//! Tasks on a core share the table through `Rc<RefCell<_>>`: one thread, no
//! lock. Updates from the control plane are applied by the core's root task
//! when woken, and by the UDP loops between two batches while datagrams
//! flow (`apply_waiting_updates`), so an update never lands in the middle
//! of a batch.
#![allow(unsafe_code)] // wrapping our own raw socket fds for glommio

use crate::operations::config::UdpIo;
use crate::operations::failure::CORE_THREAD_PREFIX;
use crate::operations::metrics::{Answered, CoreMetrics, Plugin, Proto};
use crate::operations::preflight::UDP_FLOWING_WAIT_MS;
use crate::operations::top::TopCounts;
use crate::resolving::autopath::{self, AutopathPlan};
use crate::resolving::cache::{CacheMessage, CachePlan, CoreCache, Lookup, Mailboxes};
use crate::resolving::forward::Forwarder;
use crate::resolving::probe::LoopProbes;
use crate::resolving::resolver::{Resolved, Resolver, Work};
use crate::resolving::udp_pool::Readiness;
use crate::serving::batch::{Outbox, UdpBatch};
use crate::serving::querylog::{QueryLog, QueryLogSampling};

mod answer;
mod https;
mod streams;
mod tcp;
mod tls;
mod udp;
mod uring;

use answer::*;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream, UdpSocket, UnixStream};
use glommio::{LocalExecutorBuilder, Placement};
use kubewire_answer::{AnswerTable, DeltaReceiver, Response};
use kubewire_wire::{QueryBuf, Rcode, Transport};
use std::cell::{Cell, RefCell};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tcp::*;
use tls::*;
use udp::*;

/// Test-only fault injection, compiled into debug builds alone: with
/// `KUBEWIRE_TEST_PANIC_ON` set to a name, a query for it panics the core.
#[cfg(debug_assertions)]
fn injected_panic(query: &[u8]) {
    static NAME: std::sync::OnceLock<Option<Vec<u8>>> = std::sync::OnceLock::new();
    let name = NAME.get_or_init(|| {
        let text = std::env::var("KUBEWIRE_TEST_PANIC_ON").ok()?;
        kubewire_wire::NameBuf::from_text(&text)
            .ok()
            .map(|n| n.as_wire().to_vec())
    });
    if let Some(name) = name
        && query.len() > kubewire_wire::HEADER_LEN
        && query[kubewire_wire::HEADER_LEN..].starts_with(name)
    {
        panic!("KUBEWIRE_TEST_PANIC_ON: injected panic");
    }
}

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
    pub udp_fds: Vec<OwnedFd>,
    /// One TCP listener per listen address (SO_REUSEPORT).
    pub tcp_fds: Vec<OwnedFd>,
    /// When set, the sockets above are unbound: the core binds them to
    /// these addresses once its table holds the first sync (the TLS
    /// listeners to theirs).
    pub bind_when_synced: Option<Vec<std::net::SocketAddr>>,
    /// DNS over TLS and HTTPS; `None` when neither is served.
    pub tls: Option<TlsSetup>,
    /// This core's end of the delta hub.
    pub updates: DeltaReceiver,
    /// Readable when updates are waiting or shutdown has begun.
    pub wake_fd: OwnedFd,
    /// Set when the server stops.
    pub shutdown: Arc<AtomicBool>,
    /// UDP I/O mode.
    pub udp_io: UdpIo,
    /// TCP limits.
    pub tcp: TcpLimits,
    /// This core's counters; `None` when metrics are off.
    pub metrics: Option<Arc<CoreMetrics>>,
    /// How the query log samples, shared by every core.
    pub query_log: Arc<QueryLogSampling>,
    /// What is forwarded, and where; `None` when nothing is.
    pub forward: Option<Arc<crate::resolving::ForwardPlan>>,
    /// This core's forwarding counters; `None` when metrics or forwarding are off.
    pub forward_metrics: Option<Arc<crate::operations::metrics::ForwardMetrics>>,
    /// The cache: its plan, every core's mailbox, and this core's inbox;
    /// `None` when nothing is cached.
    pub cache: Option<CacheSetup>,
    /// Autopath's plan; `None` when autopath is off.
    pub autopath: Option<Arc<AutopathPlan>>,
    /// dnstap; `None` when off.
    pub dnstap: Option<ServedTap>,
    /// Where `kubewire top`'s counts are published; `None` when the debug
    /// endpoint is off (then nothing is counted).
    pub top: Option<crate::operations::top::Published>,
}

/// dnstap as a core sends it: the tap, and each listen address (in the
/// metrics' order) with the protocol its stream connections speak.
#[derive(Clone, Debug)]
pub struct ServedTap {
    pub tap: crate::operations::dnstap::Tap,
    pub listens: Arc<[(std::net::SocketAddr, crate::operations::dnstap::Protocol)]>,
}

impl ServedTap {
    /// A client's query and its reply, which took from `started` to now.
    #[cold]
    fn client(
        &self,
        listen: usize,
        proto: Proto,
        client: Option<std::net::SocketAddr>,
        query: &[u8],
        reply: &[u8],
        started: std::time::Instant,
    ) {
        use crate::operations::dnstap::{Exchange, Protocol};
        let (answerer, stream) = self
            .listens
            .get(listen)
            .map_or((None, Protocol::Tcp), |&(addr, protocol)| {
                (Some(addr), protocol)
            });
        let response_time = std::time::SystemTime::now();
        self.tap.client(&Exchange {
            asker: client,
            answerer,
            protocol: match proto {
                Proto::Udp => Protocol::Udp,
                Proto::Tcp => stream,
            },
            query,
            query_time: response_time
                .checked_sub(started.elapsed())
                .unwrap_or(response_time),
            response: reply,
            response_time,
        });
    }
}

/// A core's part of DNS over TLS and HTTPS.
#[derive(Debug)]
pub struct TlsSetup {
    /// One TCP listener per `tls.listen` address (SO_REUSEPORT), in order.
    pub dot_fds: Vec<OwnedFd>,
    /// One TCP listener per `tls.https_listen` address, in order.
    pub doh_fds: Vec<OwnedFd>,
    /// Their addresses, to bind late with the rest.
    pub dot_addrs: Vec<std::net::SocketAddr>,
    pub doh_addrs: Vec<std::net::SocketAddr>,
    /// The certificate at start.
    pub certificates: crate::operations::tls::Certificates,
    /// Every certificate loaded after.
    pub reloads: crossbeam_channel::Receiver<crate::operations::tls::Certificates>,
    /// A handshake must finish within this.
    pub handshake_timeout_ms: u64,
    /// Most HTTP/2 streams at once on one connection.
    pub https_max_streams: u32,
}

/// A core's part of the cache.
#[derive(Debug)]
pub struct CacheSetup {
    /// What is cached, and how long.
    pub plan: Arc<CachePlan>,
    /// Every core's mailbox.
    pub mailboxes: Arc<Mailboxes>,
    /// This core's inbox.
    pub inbox: crossbeam_channel::Receiver<CacheMessage>,
    /// This core's cache counters; `None` when metrics are off.
    pub metrics: Option<Arc<crate::operations::metrics::CacheMetrics>>,
}

/// Logs an I/O failure once per cause: the first time, then again only when
/// the cause changes or a minute has passed, with how often it repeated.
#[derive(Debug, Default)]
struct Failures {
    last: Option<(&'static str, String, std::time::Instant)>,
    repeats: u64,
}

impl Failures {
    fn record(&mut self, what: &'static str, error: &dyn std::fmt::Display) {
        let now = std::time::Instant::now();
        let cause = error.to_string();
        match &self.last {
            Some((last_what, last_cause, at))
                if *last_what == what
                    && *last_cause == cause
                    && now.duration_since(*at) < Duration::from_secs(60) =>
            {
                self.repeats += 1;
            }
            _ => {
                tracing::warn!(error = %cause, repeats_since_last_log = self.repeats, "{what}");
                self.last = Some((what, cause, now));
                self.repeats = 0;
            }
        }
    }
}

/// What the serving tasks of one core share.
#[derive(Clone)]
struct Shared {
    table: Table,
    updates: Rc<DeltaReceiver>,
    metrics: Option<Arc<CoreMetrics>>,
    query_log_sampling: Arc<QueryLogSampling>,
    query_log: Rc<RefCell<QueryLog>>,
    /// Everything the table cannot finish alone goes here.
    resolver: Rc<Resolver>,
    /// A second handle on the core's wake-up socket, watched by the driven
    /// UDP loop's `poll`: updates and other cores' cache messages arrive
    /// through it, and are read on glommio's reactor.
    wake_watch: Option<Rc<OwnedFd>>,
    /// dnstap; `None` when off.
    dnstap: Option<Rc<ServedTap>>,
    /// `kubewire top`'s sampled counts; `None` when off.
    top: Option<Rc<RefCell<TopCounts>>>,
    /// Stream connections, for the UDP loop to drive while they are busy.
    streams: Rc<streams::Streams>,
}

impl Shared {
    /// Counts a query `kubewire top` picked.
    #[cold]
    fn count_top(&self, query: &[u8], client: Option<std::net::SocketAddr>, rcode: Rcode) {
        let Some(top) = &self.top else { return };
        let table = self.table.borrow();
        let ip = client.map(|c| c.ip());
        let namespace = ip.and_then(|ip| table.client_namespace(ip));
        top.borrow_mut().record(query, ip, namespace, rcode, &table);
    }

    /// Whether `kubewire top` counts this query (one in a few, at random).
    #[inline]
    fn top_picks(&self) -> bool {
        self.top.as_ref().is_some_and(|top| top.borrow_mut().pick())
    }
}

/// Starts a core on its own pinned thread.
pub fn spawn(setup: CoreSetup) -> glommio::Result<glommio::ExecutorJoinHandle<()>, ()> {
    LocalExecutorBuilder::new(Placement::Fixed(setup.cpu))
        .name(&format!("{CORE_THREAD_PREFIX}{}", setup.index))
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

async fn run(mut setup: CoreSetup) {
    let readiness = Rc::new(Readiness::default());
    let forwarder = setup.forward.map(|plan| {
        Forwarder::new(plan, setup.forward_metrics, setup.index, &readiness)
            .with_dnstap(setup.dnstap.as_ref().map(|d| d.tap.clone()))
    });
    let mut table = AnswerTable::new();
    table.set_recursion_available(forwarder.is_some());
    let cache = setup
        .cache
        .map(|c| CoreCache::new(c.plan, setup.index, c.mailboxes, c.inbox, c.metrics));
    let table = Rc::new(RefCell::new(table));
    let resolver = Resolver::new(
        Rc::clone(&table),
        forwarder,
        cache,
        setup.autopath.take(),
        readiness,
    );
    let wake_watch = match setup.wake_fd.try_clone() {
        Ok(fd) => Some(Rc::new(fd)),
        Err(error) => {
            tracing::debug!(%error, "cannot watch the wake-up socket from the UDP loop");
            None
        }
    };
    let top = setup.top.take().map(|published| {
        let seed = (setup.index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
        let top = Rc::new(RefCell::new(TopCounts::new(published, seed)));
        let publishing = Rc::clone(&top);
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(crate::operations::top::PUBLISH_EVERY).await;
                publishing.borrow_mut().publish(std::time::Instant::now());
            }
        })
        .detach();
        top
    });
    let shared = Shared {
        top,
        dnstap: setup.dnstap.take().map(Rc::new),
        wake_watch,
        table,
        updates: Rc::new(setup.updates),
        metrics: setup.metrics,
        query_log_sampling: setup.query_log,
        query_log: Rc::new(RefCell::new(QueryLog::default())),
        resolver: Rc::new(resolver),
        streams: Rc::new(streams::Streams::new()),
    };
    apply_updates(&shared);
    shared.resolver.start_tasks();

    let listeners = Listeners {
        udp: std::mem::take(&mut setup.udp_fds),
        tcp: std::mem::take(&mut setup.tcp_fds),
        tls: setup.tls.take(),
    };
    // Sockets left to bind once the first sync is in, and where.
    let mut waiting = None;
    let mut udp_sockets = Vec::new();
    match setup.bind_when_synced.take() {
        Some(addrs) => waiting = Some((listeners, addrs)),
        None => udp_sockets = start_serving(listeners, setup.udp_io, setup.tcp, &shared),
    }

    // The root task: apply updates whenever woken, until shutdown. When it
    // returns, the executor stops and drops the serving tasks.
    // SAFETY: one end of a socket pair created for this core alone, whose
    // ownership passes from the OwnedFd to glommio's stream.
    let mut wake = unsafe { UnixStream::from_raw_fd(setup.wake_fd.into_raw_fd()) };
    let mut buf = [0u8; 64];
    loop {
        apply_updates(&shared);
        if waiting.is_some()
            && shared.table.borrow().synced()
            && let Some((listeners, addrs)) = waiting.take()
        {
            match listeners.bind(&addrs) {
                Ok(()) => {
                    tracing::info!(
                        core = setup.index,
                        "first sync in hand: joining the listen addresses"
                    );
                    udp_sockets = start_serving(listeners, setup.udp_io, setup.tcp, &shared);
                }
                Err(error) => {
                    tracing::error!(core = setup.index, error = %crate::operations::failure::Chain(&error), "cannot bind the listen addresses; stopping");
                    setup.shutdown.store(true, Ordering::Release);
                }
            }
        }
        shared.resolver.drain();
        if setup.shutdown.load(Ordering::Acquire) {
            hand_over(&udp_sockets, &shared).await;
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

/// A core's sockets, not yet serving.
struct Listeners {
    udp: Vec<OwnedFd>,
    tcp: Vec<OwnedFd>,
    tls: Option<TlsSetup>,
}

impl Listeners {
    /// Binds sockets created unbound, in listen-address order.
    fn bind(
        &self,
        addrs: &[std::net::SocketAddr],
    ) -> Result<(), crate::operations::preflight::StartupError> {
        for (fd, &addr) in self.udp.iter().zip(addrs) {
            crate::operations::preflight::bind_late(fd, addr, false)?;
        }
        for (fd, &addr) in self.tcp.iter().zip(addrs) {
            crate::operations::preflight::bind_late(fd, addr, true)?;
        }
        if let Some(tls) = &self.tls {
            let fds = tls.dot_fds.iter().chain(&tls.doh_fds);
            for (fd, &addr) in fds.zip(tls.dot_addrs.iter().chain(&tls.doh_addrs)) {
                crate::operations::preflight::bind_late(fd, addr, true)?;
            }
        }
        Ok(())
    }
}

/// Starts the UDP and TCP serving tasks; returns the UDP sockets, for the
/// handover at shutdown.
fn start_serving(
    listeners: Listeners,
    udp_io: UdpIo,
    limits: TcpLimits,
    shared: &Shared,
) -> Vec<Rc<UdpSocket>> {
    let exclusive = listeners.udp.len() == 1;
    // TLS listeners' metrics come after the plain ones'.
    let plain_listens = listeners.udp.len();
    let mut udp_sockets = Vec::new();
    let mut ring_sockets = uring::Listening::new();
    for (listen, fd) in listeners.udp.into_iter().enumerate() {
        // SAFETY: a bound UDP socket created for this core alone, whose
        // ownership passes from the OwnedFd to glommio's socket.
        let socket = Rc::new(unsafe { UdpSocket::from_raw_fd(fd.into_raw_fd()) });
        udp_sockets.push(Rc::clone(&socket));
        match udp_io {
            UdpIo::Batched => {
                glommio::spawn_local(serve_udp_batched(socket, shared.clone(), exclusive, listen))
                    .detach();
            }
            UdpIo::Glommio => {
                glommio::spawn_local(serve_udp_glommio(socket, shared.clone(), listen)).detach();
            }
            // One ring for all of them, below.
            UdpIo::IoUring => ring_sockets.push((socket, listen)),
        }
    }
    if !ring_sockets.is_empty() {
        match uring::ring_for(&ring_sockets, shared.resolver.forwarder().is_some()) {
            Some(ring) => {
                glommio::spawn_local(uring::serve_udp_uring(ring_sockets, shared.clone(), ring))
                    .detach();
            }
            None => {
                glommio::spawn_local(uring::serve_batched(ring_sockets, shared.clone())).detach();
            }
        }
    }
    let connections = Rc::new(Cell::new(0usize));
    let scratch: Scratch = Rc::new(RefCell::new(vec![0u8; kubewire_wire::MAX_MESSAGE]));
    for (listen, fd) in listeners.tcp.into_iter().enumerate() {
        shared.streams.listen(fd.as_raw_fd());
        // SAFETY: a listening TCP socket created for this core alone, whose
        // ownership passes from the OwnedFd to glommio's listener.
        let listener = unsafe { TcpListener::from_raw_fd(fd.into_raw_fd()) };
        let tcp = Tcp {
            shared: shared.clone(),
            scratch: Rc::clone(&scratch),
            limits,
            listen,
        };
        glommio::spawn_local(accept_tcp(listener, tcp, Rc::clone(&connections))).detach();
    }
    if let Some(setup) = listeners.tls {
        let certificates = Rc::new(RefCell::new(setup.certificates));
        let reloads = Rc::new(setup.reloads);
        let served = std::iter::repeat(Served::Dot)
            .zip(setup.dot_fds)
            .chain(std::iter::repeat(Served::Doh).zip(setup.doh_fds));
        // Metrics count DoT listeners after the plain ones, then DoH's.
        for (index, (served, fd)) in served.enumerate() {
            shared.streams.listen(fd.as_raw_fd());
            // SAFETY: as for the TCP listeners above.
            let listener = unsafe { TcpListener::from_raw_fd(fd.into_raw_fd()) };
            let tls = Tls {
                tcp: Tcp {
                    shared: shared.clone(),
                    scratch: Rc::clone(&scratch),
                    limits,
                    listen: plain_listens + index,
                },
                certificates: Rc::clone(&certificates),
                reloads: Rc::clone(&reloads),
                handshake_timeout_ms: setup.handshake_timeout_ms,
                https_max_streams: setup.https_max_streams,
            };
            glommio::spawn_local(accept_tls(listener, tls, served, Rc::clone(&connections)))
                .detach();
        }
    }
    udp_sockets
}

/// Longest a stopping core keeps answering what its sockets already hold.
const HANDOVER_DRAIN: Duration = Duration::from_millis(500);

/// At shutdown, takes this core's UDP sockets out of their `SO_REUSEPORT`
/// groups, then answers what they already hold, so that closing them loses
/// nothing. Linux never picks a connected UDP socket of a reuseport group
/// for a new flow (checked on 6.18), so connecting each to its own address sends new
/// datagrams to the sockets that stay: another core's, or the other
/// instance's of an HA pair. Forwarded queries in flight finish too.
async fn hand_over(sockets: &[Rc<UdpSocket>], shared: &Shared) {
    for socket in sockets {
        let Ok(local) = socket.local_addr() else {
            continue;
        };
        let to = match local.ip() {
            std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
                std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, local.port()))
            }
            std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
                std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, local.port()))
            }
            _ => local,
        };
        if let Err(error) = socket.connect(to).await {
            tracing::debug!(%local, %error, "could not leave the SO_REUSEPORT group; closing as is");
        }
    }
    let deadline = std::time::Instant::now() + HANDOVER_DRAIN;
    // An io_uring path has taken datagrams off its sockets (FIONREAD no
    // longer sees them) that it may not have answered yet; it does within
    // its turn, at most UDP_FLOWING_WAIT_MS.
    glommio::timer::sleep(Duration::from_millis(2 * UDP_FLOWING_WAIT_MS)).await;
    while std::time::Instant::now() < deadline {
        let queued = sockets.iter().any(|s| bytes_queued(s.as_raw_fd()) > 0);
        if !queued && shared.resolver.in_progress() == 0 {
            break;
        }
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
}

/// Bytes of the next datagram waiting on a UDP socket (0: none).
fn bytes_queued(fd: RawFd) -> libc::c_int {
    let mut bytes: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through the pointer, which points at
    // a live local; `fd` is a socket this core holds open.
    let status = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut bytes) };
    if status == 0 { bytes } else { 0 }
}

/// Applies waiting updates between two batches of a UDP loop. While
/// datagrams keep coming, glommio reaps the wake-up socket only when the
/// loop yields (every [`YIELD_EVERY`]) or at preemption, so an update would
/// wait for that; here it waits for the next batch at most. A batch is
/// answered whole from one table, so a core still never serves half an
/// update. Costs one atomic load when nothing waits.
fn apply_waiting_updates(shared: &Shared) {
    if !shared.updates.receiver().is_empty() {
        apply_updates(shared);
    }
}

fn apply_updates(shared: &Shared) {
    let mut applied = false;
    let mut table = shared.table.borrow_mut();
    while let Ok(update) = shared.updates.receiver().try_recv() {
        if table.apply(&update) {
            applied = true;
            if let Some(metrics) = &shared.metrics {
                let latency = update.created().elapsed().as_nanos();
                metrics.delta_applied(u64::try_from(latency).unwrap_or(u64::MAX));
            }
        }
    }
    if applied {
        shared.updates.status().record(
            table.revision(),
            table.synced(),
            table.len() as u64,
            table.table_bytes() as u64,
        );
        tracing::debug!(
            target: crate::operations::logging::PROPAGATION_TARGET,
            revision = table.revision(),
            "delta applied"
        );
    }
}
