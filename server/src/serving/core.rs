//! A serving core: one glommio executor pinned to one CPU, owning its answer
//! table, its UDP sockets and its TCP listeners.
//!
//! Tasks on a core share the table through `Rc<RefCell<_>>`: one thread, no
//! lock. Updates from the control plane are applied by the core's root task,
//! which only runs when the query tasks yield, so an update never lands in
//! the middle of a batch.
#![allow(unsafe_code)] // wrapping our own raw socket fds for glommio

use crate::operations::config::UdpIo;
use crate::operations::failure::CORE_THREAD_PREFIX;
use crate::operations::metrics::{Answered, CoreMetrics, Plugin, Proto};
use crate::operations::preflight::UDP_FLOWING_WAIT_MS;
use crate::resolving::autopath::{self, AutopathPlan};
use crate::resolving::cache::{CacheMessage, CachePlan, CoreCache, Lookup, Mailboxes};
use crate::resolving::forward::Forwarder;
use crate::resolving::probe::LoopProbes;
use crate::resolving::resolver::{Resolved, Resolver, Work};
use crate::resolving::udp_pool::Readiness;
use crate::serving::batch::{Outbox, UdpBatch};
use crate::serving::querylog::{QueryLog, QueryLogSettings};

mod uring;
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
    /// these addresses once its table holds the first sync.
    pub bind_when_synced: Option<Vec<std::net::SocketAddr>>,
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
    /// Query log settings, shared by every core.
    pub query_log: Arc<QueryLogSettings>,
    /// What is forwarded, and where; `None` when nothing is.
    pub forward: Option<Arc<crate::resolving::ForwardPlan>>,
    /// This core's forwarding counters; `None` when metrics or forwarding are off.
    pub forward_metrics: Option<Arc<crate::operations::metrics::ForwardMetrics>>,
    /// The cache: its plan, every core's mailbox, and this core's inbox;
    /// `None` when nothing is cached.
    pub cache: Option<CacheSetup>,
    /// Autopath's plan; `None` when autopath is off.
    pub autopath: Option<Arc<AutopathPlan>>,
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
    query_log_settings: Arc<QueryLogSettings>,
    query_log: Rc<RefCell<QueryLog>>,
    /// Everything the table cannot finish alone goes here.
    resolver: Rc<Resolver>,
    /// A second handle on the core's wake-up socket, watched by the driven
    /// UDP loop's `poll`: updates and other cores' cache messages arrive
    /// through it, and are read on glommio's reactor.
    wake_watch: Option<Rc<OwnedFd>>,
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
    let forwarder = setup
        .forward
        .map(|plan| Forwarder::new(plan, setup.forward_metrics, setup.index, &readiness));
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
    let shared = Shared {
        wake_watch,
        table,
        updates: Rc::new(setup.updates),
        metrics: setup.metrics,
        query_log_settings: setup.query_log,
        query_log: Rc::new(RefCell::new(QueryLog::default())),
        resolver: Rc::new(resolver),
    };
    apply_updates(&shared);
    shared.resolver.start_tasks();

    let listeners = Listeners {
        udp: std::mem::take(&mut setup.udp_fds),
        tcp: std::mem::take(&mut setup.tcp_fds),
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
    let mut udp_sockets = Vec::new();
    for (listen, fd) in listeners.udp.into_iter().enumerate() {
        // SAFETY: a bound UDP socket created for this core alone, whose
        // ownership passes from the OwnedFd to glommio's socket.
        let socket = Rc::new(unsafe { UdpSocket::from_raw_fd(fd.into_raw_fd()) });
        udp_sockets.push(Rc::clone(&socket));
        match udp_io {
            UdpIo::Batched => {
                glommio::spawn_local(serve_udp_batched(socket, shared.clone(), exclusive, listen))
                    .detach()
            }
            UdpIo::Glommio => {
                glommio::spawn_local(serve_udp_glommio(socket, shared.clone(), listen)).detach()
            }
            UdpIo::IoUring => match uring::ring_for(&socket) {
                Some(ring) => glommio::spawn_local(uring::serve_udp_uring(
                    socket,
                    shared.clone(),
                    exclusive,
                    listen,
                    ring,
                ))
                .detach(),
                None => glommio::spawn_local(serve_udp_batched(
                    socket,
                    shared.clone(),
                    exclusive,
                    listen,
                ))
                .detach(),
            },
        };
    }
    let connections = Rc::new(Cell::new(0usize));
    let scratch: Scratch = Rc::new(RefCell::new(vec![0u8; 2 + kubewire_wire::MAX_MESSAGE]));
    for (listen, fd) in listeners.tcp.into_iter().enumerate() {
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
        shared
            .updates
            .status()
            .record(table.revision(), table.synced(), table.len() as u64);
    }
}

/// What [`answer`] did with a query: the one verdict, for UDP and TCP.
#[derive(Debug)]
enum Verdict {
    /// A reply of this length and RCODE is in the buffer.
    Reply(usize, Rcode),
    /// The table could not finish it: the resolver does the rest, with the
    /// query parsed here.
    Resolve(Box<QueryBuf>, Work),
    /// Send nothing.
    Drop,
}

/// Answers one query into `out` and counts it, or says what the resolver
/// must do with it.
#[inline]
#[allow(clippy::too_many_arguments)]
fn answer(
    table: &mut AnswerTable,
    outside: Outside<'_>,
    metrics: Option<&CoreMetrics>,
    listen: usize,
    proto: Proto,
    query: &[u8],
    out: &mut [u8],
    client: impl FnOnce() -> Option<std::net::IpAddr>,
) -> Verdict {
    #[cfg(debug_assertions)]
    injected_panic(query);
    let transport = match proto {
        Proto::Udp => Transport::Udp,
        Proto::Tcp => Transport::Tcp,
    };
    // Parsed once, here: a name the table does not hold goes on, parsed,
    // to the forwarder's zones, the cache and the resolver. A malformed
    // query is left to `respond`, which writes its error reply.
    let parsed = kubewire_wire::parse_query(query);
    let response = match &parsed {
        Ok(parsed) => table.respond_to(parsed, transport, out),
        Err(_) => table.respond(query, transport, out),
    };
    let (len, rcode, qtype, plugin) = match response {
        Response::Reply {
            len,
            rcode,
            qtype,
            chase,
        } => {
            if chase && let Ok(parsed) = &parsed {
                return Verdict::Resolve(
                    Box::new(parsed.to_buf()),
                    Work::Chase(out[..len].to_vec()),
                );
            }
            if rcode == Rcode::NXDOMAIN
                && let Some(_) = outside.autopath
                && let Ok(parsed) = &parsed
                && let Some(candidate) = autopath_candidate(table, parsed, client)
            {
                let work = Work::Autopath(out[..len].to_vec(), Box::new(candidate));
                return Verdict::Resolve(Box::new(parsed.to_buf()), work);
            }
            (len, rcode, qtype, Plugin::Kubernetes)
        }
        Response::NotOurs { len, qtype } => {
            let forwarded = match (outside.forwarder, &parsed) {
                (Some(forwarder), Ok(parsed)) => forwarder.wants_query(parsed).then_some(parsed),
                _ => None,
            };
            let Some(parsed) = forwarded else {
                let refused = Rcode::REFUSED;
                let len = count(
                    metrics,
                    listen,
                    proto,
                    query,
                    len,
                    qtype,
                    refused,
                    Plugin::None,
                );
                return Verdict::Reply(len, refused);
            };
            let Some(cache) = outside.cache else {
                return Verdict::Resolve(Box::new(parsed.to_buf()), Work::Forward);
            };
            if LoopProbes::is_probe(parsed.key()) {
                return Verdict::Resolve(Box::new(parsed.to_buf()), Work::Forward);
            }
            let now = outside.now.unwrap_or_else(std::time::Instant::now);
            match cache.borrow_mut().answer(parsed, now, transport, out) {
                Lookup::Hit { len, rcode } => (len, rcode, qtype, Plugin::Cache),
                Lookup::Miss => return Verdict::Resolve(Box::new(parsed.to_buf()), Work::Forward),
            }
        }
        Response::Drop => {
            if let Some(metrics) = metrics {
                metrics.dropped();
            }
            return Verdict::Drop;
        }
    };
    Verdict::Reply(
        count(metrics, listen, proto, query, len, qtype, rcode, plugin),
        rcode,
    )
}

/// [`answer`] for a UDP query from `peer`, whose address is only read if
/// autopath asks for it.
#[inline]
fn answer_udp(
    table: &mut AnswerTable,
    outside: Outside<'_>,
    metrics: Option<&CoreMetrics>,
    listen: usize,
    query: &[u8],
    out: &mut [u8],
    peer: kubewire_udp::Peer<'_>,
) -> Verdict {
    answer(
        table,
        outside,
        metrics,
        listen,
        Proto::Udp,
        query,
        out,
        || peer.ip(),
    )
}

/// Whether an NXDOMAIN'd query is the first search candidate of the pod
/// that sent it (the client's address is only looked at here).
#[cold]
fn autopath_candidate(
    table: &AnswerTable,
    query: &kubewire_wire::Query<'_>,
    client: impl FnOnce() -> Option<std::net::IpAddr>,
) -> Option<autopath::Candidate> {
    let namespace = table.client_namespace(client()?)?;
    autopath::first_candidate(table, query.key(), namespace)
}

/// Counts one reply of `len` bytes; returns `len`.
#[allow(clippy::too_many_arguments)]
#[inline]
fn count(
    metrics: Option<&CoreMetrics>,
    listen: usize,
    proto: Proto,
    query: &[u8],
    len: usize,
    qtype: u16,
    rcode: Rcode,
    plugin: Plugin,
) -> usize {
    if let Some(metrics) = metrics {
        metrics.answered(&Answered {
            listen,
            proto,
            qtype,
            rcode,
            plugin,
            request_len: query.len(),
            response_len: len,
        });
    }
    len
}

/// Where names outside the cluster zones go, for [`answer`].
#[derive(Clone, Copy)]
struct Outside<'a> {
    forwarder: Option<&'a Forwarder>,
    cache: Option<&'a RefCell<CoreCache>>,
    autopath: Option<&'a AutopathPlan>,
    /// The time for the cache's lookups, read once for a whole batch; the
    /// clock is read per query where this is `None`.
    now: Option<std::time::Instant>,
}

impl Shared {
    fn outside(&self) -> Outside<'_> {
        Outside {
            forwarder: self.resolver.forwarder(),
            cache: self.resolver.cache(),
            autopath: self.resolver.autopath(),
            now: None,
        }
    }

    /// [`Shared::outside`] for a batch of UDP queries: with the cache on,
    /// the clock is read once for the batch (or its start, `started`, is
    /// taken), not once per query.
    fn outside_for_batch(&self, started: Option<std::time::Instant>) -> Outside<'_> {
        let mut outside = self.outside();
        if outside.cache.is_some() {
            outside.now = Some(started.unwrap_or_else(std::time::Instant::now));
        }
        outside
    }
}

/// Has the resolver finish a query and counts its reply; `None` when there
/// is nothing to send.
async fn resolve(
    shared: &Shared,
    listen: usize,
    proto: Proto,
    query: &QueryBuf,
    work: Work,
) -> Option<Resolved> {
    let transport = match proto {
        Proto::Udp => Transport::Udp,
        Proto::Tcp => Transport::Tcp,
    };
    let resolved = shared.resolver.resolve(query, work, transport).await?;
    if let Some(metrics) = &shared.metrics {
        if resolved.plugin == Plugin::Autopath {
            metrics.autopath_success(listen);
        }
        let query = query.query();
        metrics.answered(&Answered {
            listen,
            proto,
            qtype: query.qtype(),
            rcode: resolved.rcode,
            plugin: resolved.plugin,
            request_len: query.packet().len(),
            response_len: resolved.reply.len(),
        });
    }
    Some(resolved)
}

/// Resolves a UDP query on its own task; the reply goes out through
/// `outbox`, with the others that finish in the same turn.
fn spawn_udp_resolve(
    shared: &Shared,
    outbox: &Rc<Outbox>,
    listen: usize,
    query: Box<QueryBuf>,
    work: Work,
    peer: std::net::SocketAddr,
) {
    let shared = shared.clone();
    let outbox = Rc::clone(outbox);
    let in_progress = shared.resolver.start();
    glommio::spawn_local(async move {
        let _in_progress = in_progress;
        let started = std::time::Instant::now();
        let Some(resolved) = resolve(&shared, listen, Proto::Udp, &query, work).await else {
            return;
        };
        let rcode = resolved.rcode;
        outbox.push(resolved.reply, peer);
        finish_one(
            &shared,
            listen,
            started,
            Some(peer),
            query.query().packet(),
            rcode,
        );
    })
    .detach();
}

fn elapsed_ns(since: std::time::Instant) -> u64 {
    u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// While traffic flows, the core yields to its other tasks (TCP, updates)
/// this often. Yielding sends glommio round its reactor, which costs a
/// system call, so it is paced by time rather than done every batch.
const YIELD_EVERY: Duration = Duration::from_micros(500);

/// The batched UDP path. While datagrams keep coming the core sleeps in
/// `recvmmsg(MSG_WAITFORONE)` itself, as a bare UDP responder would: one
/// receive and one send system call per batch. When the socket has been
/// quiet for [`UDP_FLOWING_WAIT_MS`], it parks on glommio's reactor instead,
/// so an idle core costs nothing and its other tasks run at once.
async fn serve_udp_batched(socket: Rc<UdpSocket>, shared: Shared, exclusive: bool, listen: usize) {
    let fd = socket.as_raw_fd();
    // Queries of this batch the table could not finish, by index.
    let mut to_resolve: Vec<(usize, Box<QueryBuf>, Work)> = Vec::new();
    let outbox = Outbox::new(&socket);
    let mut batch = UdpBatch::new();
    let mut peek = [0u8; 1];
    let mut flowing = false;
    let mut last_yield = std::time::Instant::now();
    // Queries of this batch picked for the query log: index and RCODE.
    let mut picked: Vec<(usize, Rcode)> = Vec::with_capacity(crate::serving::batch::BATCH);
    let mut failures = Failures::default();
    let mut pollfds: Vec<libc::pollfd> = Vec::new();
    let readiness = shared.resolver.readiness();
    loop {
        let waiting_upstream = shared.resolver.in_progress() > 0;
        // Clients keep sending while queries wait upstream: the core's only
        // UDP socket sleeps in one `poll` on itself and the kept upstream
        // sockets, and kicks the readers of those with replies, instead of
        // going round glommio's reactor for each datagram.
        let drive = flowing && exclusive && waiting_upstream;
        readiness.set_driven(drive);
        if drive {
            // Before sleeping in the kernel, let the tasks that are ready
            // run: a kicked reader wakes the queries it answers, which
            // queue their replies; each yield runs one more step of that
            // chain. Then their replies leave, in one `sendmmsg`.
            for _ in 0..SETTLE_YIELDS {
                glommio::executor().yield_now().await;
            }
            outbox.flush();
            pollfds.clear();
            for watched in [Some(fd), shared.wake_watch.as_ref().map(|w| w.as_raw_fd())] {
                pollfds.push(libc::pollfd {
                    fd: watched.unwrap_or(-1),
                    events: libc::POLLIN,
                    revents: 0,
                });
            }
            readiness.append_pollfds(&mut pollfds);
            if let Err(error) = poll(&mut pollfds, UDP_FLOWING_WAIT_MS) {
                failures.record("poll failed; retrying", &error);
            }
            let kicked = readiness.kick_ready(&pollfds[2..]);
            if pollfds[1].revents != 0 {
                // An update or another core's cache message is waiting, to
                // be read on the reactor, which a driven loop never parks
                // on: wait there a moment, so that the root task runs now
                // rather than at the next preemption.
                glommio::timer::sleep(Duration::from_micros(1)).await;
            }
            if pollfds[0].revents == 0 {
                // No client datagram: a whole tick of nothing ends the
                // flow; replies that came let their queries run.
                flowing = kicked > 0;
                glommio::executor().yield_now().await;
                continue;
            }
        } else if !flowing || waiting_upstream {
            // While forwarded or chased queries wait for upstream replies,
            // the core waits on the reactor, which also reaps those
            // replies; it does not sleep in the kernel, where they would
            // wait for it.
            // Wait on the reactor until a datagram is there, without taking it.
            if let Err(error) = socket.peek_from(&mut peek).await {
                failures.record("UDP receive failed; retrying", &error);
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        }
        // Replies resolved since the last turn leave before the loop can
        // sleep in the kernel below.
        outbox.flush();
        // Sleeping in the kernel blocks the core's other tasks, so only a
        // core's only UDP socket does it, and only while no forwarded or
        // chased query waits on the reactor for its upstream's reply;
        // otherwise it takes what is there.
        let received = if exclusive && !waiting_upstream {
            batch.receive_waiting(fd)
        } else {
            batch.receive(fd)
        };
        let count = match received {
            Ok(count) => count,
            Err(error) => {
                failures.record("recvmmsg failed; retrying", &error);
                0
            }
        };
        if count == 0 {
            flowing = false;
            glommio::executor().yield_if_needed().await;
            continue;
        }
        flowing = true;
        // Every query of a batch is charged the batch's time, from its
        // arrival in our hands to its reply leaving: one clock read per
        // batch, not two per query.
        let log_interval = QueryLog::interval(&shared.query_log_settings);
        let started =
            (shared.metrics.is_some() || log_interval.is_some()).then(std::time::Instant::now);
        {
            let mut table = shared.table.borrow_mut();
            let metrics = shared.metrics.as_deref();
            let outside = shared.outside_for_batch(started);
            crate::serving::warm::warm_batch(&batch, count, &table, outside.cache);
            let mut query_log = shared.query_log.borrow_mut();
            batch.answer(count, |i, query, out, peer| {
                let verdict = answer_udp(&mut table, outside, metrics, listen, query, out, peer);
                let (len, rcode) = match verdict {
                    Verdict::Reply(len, rcode) => (len, rcode),
                    Verdict::Resolve(query, work) => {
                        to_resolve.push((i, query, work));
                        return None;
                    }
                    Verdict::Drop => return None,
                };
                if let Some(interval) = log_interval
                    && query_log.pick(interval)
                {
                    picked.push((i, rcode));
                }
                Some(len)
            });
        }
        let answered = batch.queued() as u64;
        send_all(&mut batch, fd).await;
        // Resolving tasks (and readers the poll kicked) run before the
        // loop sleeps in the kernel again.
        let resolving = !to_resolve.is_empty() || drive;
        for (i, query, work) in to_resolve.drain(..) {
            if let Some(peer) = batch.peer(i) {
                spawn_udp_resolve(&shared, &outbox, listen, query, work, peer);
            }
        }
        if let (Some(metrics), Some(started)) = (&shared.metrics, started) {
            metrics.took(listen, answered, elapsed_ns(started));
        }
        if !picked.is_empty() {
            let mut query_log = shared.query_log.borrow_mut();
            let took = started.map(|s| s.elapsed()).unwrap_or_default();
            for &(i, rcode) in &picked {
                query_log.write(
                    &shared.query_log_settings,
                    batch.peer(i),
                    batch.query(i),
                    rcode,
                    took,
                );
            }
            picked.clear();
        }
        if resolving || last_yield.elapsed() >= YIELD_EVERY || glommio::executor().need_preempt() {
            // Updates are applied here too: while traffic flows the root
            // task's wake-up may not be reaped until the next preemption.
            apply_updates(&shared);
            glommio::executor().yield_now().await;
            last_yield = std::time::Instant::now();
        }
    }
}

/// Yields before the driven UDP loop sleeps in `poll`: enough for a kicked
/// reader, the query it wakes, and a cache's waiters behind it, to run.
const SETTLE_YIELDS: usize = 3;

/// `poll(2)` on `fds` for at most `timeout_ms`; the result is in each
/// entry's `revents`.
fn poll(fds: &mut [libc::pollfd], timeout_ms: u64) -> std::io::Result<()> {
    let timeout = libc::c_int::try_from(timeout_ms).unwrap_or(libc::c_int::MAX);
    // SAFETY: `fds` is a live, exclusive slice of `pollfd`s, and its length
    // is passed with it.
    let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
    if ready < 0 {
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
    Ok(())
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

async fn serve_udp_glommio(socket: Rc<UdpSocket>, shared: Shared, listen: usize) {
    let mut query = vec![0u8; 65_536];
    let mut out = vec![0u8; usize::from(kubewire_wire::OUR_UDP_PAYLOAD)];
    let outbox = Outbox::new(&socket);
    let mut failures = Failures::default();
    loop {
        let (len, peer) = match socket.recv_from(&mut query).await {
            Ok(received) => received,
            Err(error) => {
                failures.record("UDP receive failed; retrying", &error);
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let started = std::time::Instant::now();
        let answered = answer(
            &mut shared.table.borrow_mut(),
            shared.outside(),
            shared.metrics.as_deref(),
            listen,
            Proto::Udp,
            &query[..len],
            &mut out,
            || Some(peer.ip()),
        );
        let (reply, rcode) = match answered {
            Verdict::Reply(reply, rcode) => (reply, rcode),
            Verdict::Resolve(query, work) => {
                spawn_udp_resolve(&shared, &outbox, listen, query, work, peer);
                continue;
            }
            Verdict::Drop => continue,
        };
        if let Err(error) = socket.send_to(&out[..reply], peer).await {
            tracing::debug!(%error, "UDP reply not sent");
        }
        finish_one(&shared, listen, started, Some(peer), &query[..len], rcode);
    }
}

/// Times one query and offers it to the query log.
fn finish_one(
    shared: &Shared,
    listen: usize,
    started: std::time::Instant,
    client: Option<std::net::SocketAddr>,
    query: &[u8],
    rcode: Rcode,
) {
    if let Some(metrics) = &shared.metrics {
        metrics.took(listen, 1, elapsed_ns(started));
    }
    if let Some(interval) = QueryLog::interval(&shared.query_log_settings) {
        let mut query_log = shared.query_log.borrow_mut();
        if query_log.pick(interval) {
            query_log.write(
                &shared.query_log_settings,
                client,
                query,
                rcode,
                started.elapsed(),
            );
        }
    }
}

/// What TCP connections on a core share.
#[derive(Clone)]
struct Tcp {
    shared: Shared,
    scratch: Scratch,
    limits: TcpLimits,
    listen: usize,
}

async fn accept_tcp(listener: TcpListener, tcp: Tcp, connections: Rc<Cell<usize>>) {
    let mut failures = Failures::default();
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
                failures.record("TCP accept failed (out of file descriptors? raise the limit or lower tcp.max_connections); retrying", &error);
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
    let client = stream.peer_addr().ok();
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
        let started = std::time::Instant::now();
        let verdict = {
            let mut scratch = tcp.scratch.borrow_mut();
            let verdict = answer(
                &mut tcp.shared.table.borrow_mut(),
                tcp.shared.outside(),
                tcp.shared.metrics.as_deref(),
                tcp.listen,
                Proto::Tcp,
                &query,
                &mut scratch[2..],
                || client.map(|c| c.ip()),
            );
            if let Verdict::Reply(reply_len, _) = verdict {
                scratch[..2].copy_from_slice(&(reply_len as u16).to_be_bytes());
                reply.clear();
                reply.extend_from_slice(&scratch[..2 + reply_len]);
            }
            verdict
        };
        let rcode = match verdict {
            Verdict::Reply(_, rcode) => rcode,
            Verdict::Resolve(parsed, work) => {
                // Counted, so that the UDP loop does not sleep in the kernel
                // while this query's upstream reply waits on the reactor.
                let _in_progress = tcp.shared.resolver.start();
                let Some(resolved) =
                    resolve(&tcp.shared, tcp.listen, Proto::Tcp, &parsed, work).await
                else {
                    return;
                };
                reply.clear();
                reply.extend_from_slice(&(resolved.reply.len() as u16).to_be_bytes());
                reply.extend_from_slice(&resolved.reply);
                resolved.rcode
            }
            // Not a query at all: a DNS peer would not send this.
            Verdict::Drop => return,
        };
        if within(TCP_WRITE_TIMEOUT_MS, stream.write_all(&reply))
            .await
            .is_none()
        {
            return;
        }
        finish_one(&tcp.shared, tcp.listen, started, client, &query, rcode);
    }
}
