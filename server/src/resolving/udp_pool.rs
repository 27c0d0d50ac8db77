//! Upstream UDP sockets, kept and reused: per core and per upstream, a few
//! sockets, each with one reader task that hands every reply to the query
//! waiting for its ID.
//!
//! Opening and closing a socket per upstream query cost a sixth of a
//! forwarded miss's CPU (`bench/results/forwarding.md`). RFC 5452's
//! defences stay:
//! - every query has a random ID, unique among those waiting on its socket;
//! - source ports change: a socket is replaced after [`RENEW_AFTER_QUERIES`]
//!   queries or [`RENEW_AFTER`], whichever comes first, so a spoofer who
//!   learns a port has little time and few queries to aim at;
//! - a reply counts only if it comes from the upstream's address and its ID
//!   and question match a query waiting on that socket. Anything else is
//!   dropped and counted, and the query waits on until its timeout.
//!
//! The sockets are bound, not connected, so that a reply from a wrong
//! address reaches the reader and is counted, as before.
//!
//! While client traffic flows, the serving loop sleeps in one `poll` on
//! its client socket and these sockets together ([`Readiness`]), and wakes
//! the reader of a socket that has replies: no reactor round trip per reply.
//! When the loop parks on glommio's reactor, each reader waits there itself.
//!
//! On the io_uring path (`dns.udp_io = "io_uring"`) the sockets ride on the
//! core's ring instead ([`Readiness::use_ring`]): each is armed there with a
//! multishot receive and has no reader task; queries to the upstream are
//! queued and leave in the serving loop's next `io_uring_enter`, and the
//! loop hands each reply to [`Readiness::deliver`]. A forwarded miss then
//! costs the core no system call of its own.
//!
//! Timeouts are not a timer per query (each would be an io_uring timeout
//! added, and cancelled when the reply comes): one sweeper task per pool
//! runs every [`SWEEP_TICK`] while queries wait, and fails those past their
//! deadline.
#![allow(unsafe_code)] // recvmmsg into buffers the reader owns; handing our socket to glommio

use crate::operations::metrics::ForwardMetrics;
use futures::channel::oneshot;
use glommio::net::UdpSocket;
use kubewire_udp::mmsg::{Headers, zeroed};
use kubewire_udp::uring::{UdpRing, Watch};
use kubewire_wire::{CheckedReply, HEADER_LEN, UpstreamError};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

/// Sockets per upstream, per core: queries take them in turn.
const SOCKETS: usize = 4;
/// A socket is replaced after this many queries...
pub const RENEW_AFTER_QUERIES: u32 = 256;
/// ...or once it is this old, whichever comes first.
pub const RENEW_AFTER: Duration = Duration::from_secs(5);
/// The largest UDP reply taken from an upstream. We advertise 1232 bytes;
/// a larger reply is read as truncated and asked again over TCP.
pub const MAX_UDP_REPLY: usize = 4096;
/// Replies read per `recvmmsg`.
const READ_BATCH: usize = 16;
/// How often waiting queries are checked against their deadlines: the most
/// a timeout can be late.
pub const SWEEP_TICK: Duration = Duration::from_millis(5);

/// Why a UDP exchange gave no reply.
#[derive(Debug, thiserror::Error)]
pub enum UdpError {
    /// No socket could be opened.
    #[error("opening a UDP socket")]
    Socket(#[source] std::io::Error),
    /// The query could not be sent.
    #[error("sending over UDP")]
    Send(#[source] std::io::Error),
    /// Nothing matching came in time.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The reply matched but was larger than [`MAX_UDP_REPLY`].
    #[error("UDP reply larger than {MAX_UDP_REPLY} bytes")]
    TooLarge,
    /// The reply matched but is broken.
    #[error("malformed reply: {0}")]
    Malformed(UpstreamError),
}

/// What the reader hands a waiting query.
type Delivery = Result<CheckedReply, UdpError>;

/// A query waiting on a socket.
struct Waiter {
    /// Which registration this is: an ID freed by a delivered reply may be
    /// taken by the next query before the first one's task has run.
    serial: u64,
    /// The question sent: a reply must echo it.
    question: Box<[u8]>,
    reply: oneshot::Sender<Delivery>,
    /// When the attempt gives up.
    deadline: Instant,
    /// Its timeout, for the error.
    timeout: Duration,
}

/// One kept socket.
struct Pooled {
    socket: UdpSocket,
    waiting: RefCell<HashMap<u16, Waiter>>,
    queries: Cell<u32>,
    opened: Instant,
    /// Replaced: takes no new query, and closes once none waits.
    retired: Cell<bool>,
    /// The reader, parked until a reply comes or the socket closes.
    reader: Cell<Option<Waker>>,
    /// The serving loop saw replies waiting: the reader is to read them.
    kicked: Cell<bool>,
    /// Registrations so far, for [`Waiter::serial`].
    serials: Cell<u64>,
    /// The upstream: a reply must come from it.
    upstream: SocketAddr,
    /// The upstream's address as the kernel takes it, for the ring's sends.
    upstream_raw: (libc::sockaddr_storage, libc::socklen_t),
    metrics: Option<Arc<ForwardMetrics>>,
    /// On the ring: the core's wiring, and the socket's receive there once
    /// armed.
    ring: Option<Rc<Readiness>>,
    watch: Cell<Option<Watch>>,
}

impl Drop for Pooled {
    /// A socket on the ring is unwatched there: the kernel holds it open
    /// until its receive is cancelled.
    fn drop(&mut self) {
        if let (Some(readiness), Some(watch)) = (&self.ring, self.watch.get()) {
            readiness.to_unwatch.borrow_mut().push(watch);
            readiness.nudge();
        }
    }
}

impl Pooled {
    fn stale(&self, now: Instant) -> bool {
        self.queries.get() >= RENEW_AFTER_QUERIES || now.duration_since(self.opened) >= RENEW_AFTER
    }

    fn closing(&self) -> bool {
        self.retired.get() && self.waiting.borrow().is_empty()
    }

    /// Wakes the reader if the socket is to close.
    fn wake_if_closing(&self) {
        if self.closing()
            && let Some(waker) = self.reader.take()
        {
            waker.wake();
        }
    }

    /// Resolves when the serving loop kicks the reader (replies are
    /// waiting) or the socket is to close.
    async fn signal(&self) -> Signal {
        std::future::poll_fn(|cx| {
            if self.closing() {
                Poll::Ready(Signal::Close)
            } else if self.kicked.replace(false) {
                Poll::Ready(Signal::Read)
            } else {
                self.reader.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await
    }

    /// Has the reader read what is waiting.
    fn kick(&self) {
        self.kicked.set(true);
        if let Some(waker) = self.reader.take() {
            waker.wake();
        }
    }

    /// Hands a datagram that came to this socket to the query waiting for
    /// it, if it comes from the upstream and matches one; otherwise counts
    /// it as mismatched. `too_large`: longer than [`MAX_UDP_REPLY`].
    fn deliver(&self, reply: &[u8], too_large: bool, from: Option<SocketAddr>) {
        let mismatch = || {
            if let Some(metrics) = &self.metrics {
                metrics.mismatched();
            }
        };
        if from != Some(self.upstream) || reply.len() < HEADER_LEN {
            mismatch();
            return;
        }
        let id = u16::from_be_bytes([reply[0], reply[1]]);
        let mut waiting = self.waiting.borrow_mut();
        let Some(waiter) = waiting.get(&id) else {
            mismatch();
            return;
        };
        let delivery = if too_large {
            Err(UdpError::TooLarge)
        } else {
            match CheckedReply::check(reply, id, &waiter.question) {
                Ok(checked) => Ok(checked),
                Err(error) if error.is_mismatch() => {
                    mismatch();
                    return;
                }
                Err(error) => Err(UdpError::Malformed(error)),
            }
        };
        if let Some(waiter) = waiting.remove(&id) {
            let _ = waiter.reply.send(delivery);
        }
    }
}

/// Wakes the serving loop when it parked with work queued for it.
#[derive(Default)]
struct Nudge {
    nudged: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

/// What wakes a reader.
enum Signal {
    /// Replies may be waiting.
    Read,
    /// The socket is retired and no query waits on it.
    Close,
}

/// One core's kept upstream sockets, for its serving loop: while client
/// traffic flows and queries wait upstream, the loop sleeps in one `poll`
/// on its client socket and these together, and kicks the readers whose
/// sockets have replies ("driven"); otherwise each reader waits on glommio's
/// reactor itself.
#[derive(Default)]
pub struct Readiness {
    driven: Cell<bool>,
    sockets: RefCell<Vec<std::rc::Weak<Pooled>>>,
    /// The sockets ride on the serving loop's io_uring.
    ring: Cell<bool>,
    /// For the ring: sockets to arm, receives to cancel, and queries to
    /// send (their bytes in `send_bytes`), taken by [`Readiness::feed`].
    to_watch: RefCell<Vec<std::rc::Weak<Pooled>>>,
    to_unwatch: RefCell<Vec<Watch>>,
    to_send: RefCell<Vec<(Rc<Pooled>, std::ops::Range<usize>)>>,
    send_bytes: RefCell<Vec<u8>>,
    nudge: Nudge,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness")
            .field("driven", &self.driven.get())
            .field("sockets", &self.sockets.borrow().len())
            .finish()
    }
}

impl Readiness {
    /// Whether the serving loop polls the sockets. Turning it off kicks
    /// every reader, so that each goes back to waiting on the reactor.
    pub fn set_driven(&self, driven: bool) {
        if self.driven.replace(driven) && !driven {
            for pooled in self
                .sockets
                .borrow()
                .iter()
                .filter_map(std::rc::Weak::upgrade)
            {
                pooled.kick();
            }
        }
    }

    /// Appends a `pollfd` for each socket a query waits on.
    pub fn append_pollfds(&self, fds: &mut Vec<libc::pollfd>) {
        let mut sockets = self.sockets.borrow_mut();
        sockets.retain(|pooled| pooled.strong_count() > 0);
        for pooled in sockets.iter().filter_map(std::rc::Weak::upgrade) {
            if !pooled.waiting.borrow().is_empty() {
                fds.push(libc::pollfd {
                    fd: pooled.socket.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
            }
        }
    }

    /// Kicks the readers of the sockets `poll` found readable in `fds`;
    /// returns how many.
    pub fn kick_ready(&self, fds: &[libc::pollfd]) -> usize {
        let mut kicked = 0;
        for fd in fds.iter().filter(|fd| fd.revents != 0) {
            for pooled in self
                .sockets
                .borrow()
                .iter()
                .filter_map(std::rc::Weak::upgrade)
            {
                if pooled.socket.as_raw_fd() == fd.fd {
                    pooled.kick();
                    kicked += 1;
                }
            }
        }
        kicked
    }

    fn add(&self, pooled: &Rc<Pooled>) {
        let mut sockets = self.sockets.borrow_mut();
        sockets.retain(|pooled| pooled.strong_count() > 0);
        sockets.push(Rc::downgrade(pooled));
    }

    /// From now on, sockets opened ride on the serving loop's ring, which
    /// feeds them ([`Readiness::feed`]) and hands their replies on
    /// ([`Readiness::deliver`]).
    pub fn use_ring(&self) {
        self.ring.set(true);
    }

    /// The ring is gone (its loop serves another way): every socket on it
    /// gets a reader task again, and sockets opened from now on too.
    pub fn leave_ring(self: &Rc<Self>) {
        if !self.ring.replace(false) {
            return;
        }
        self.to_watch.borrow_mut().clear();
        self.to_unwatch.borrow_mut().clear();
        let queued = std::mem::take(&mut *self.to_send.borrow_mut());
        let bytes = std::mem::take(&mut *self.send_bytes.borrow_mut());
        for (pooled, range) in queued {
            if let Err(error) = send_to(&pooled.socket, &bytes[range], pooled.upstream) {
                tracing::debug!(%error, upstream = %pooled.upstream, "upstream UDP query not sent");
            }
        }
        let sockets: Vec<Rc<Pooled>> = self
            .sockets
            .borrow()
            .iter()
            .filter_map(std::rc::Weak::upgrade)
            .collect();
        for pooled in sockets {
            if pooled.watch.take().is_some() {
                glommio::spawn_local(read_replies(Rc::clone(&pooled), Rc::clone(self))).detach();
            }
        }
    }

    /// Whether the sockets ride on the ring.
    pub fn on_ring(&self) -> bool {
        self.ring.get()
    }

    /// Wakes the serving loop if it waits in [`Readiness::nudged`].
    pub fn nudge(&self) {
        self.nudge.nudged.set(true);
        if let Some(waker) = self.nudge.waker.take() {
            waker.wake();
        }
    }

    /// Resolves once [`Readiness::nudge`] was called since the last time.
    pub async fn nudged(&self) {
        std::future::poll_fn(|cx| {
            if self.nudge.nudged.replace(false) {
                Poll::Ready(())
            } else {
                self.nudge.waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await;
    }

    /// Whether work was queued for the ring since the last call.
    pub fn take_nudge(&self) -> bool {
        self.nudge.nudged.replace(false)
    }

    /// Queues a query for the ring; it leaves in the loop's next enter.
    fn queue_send(&self, pooled: &Rc<Pooled>, query: &[u8]) {
        let mut bytes = self.send_bytes.borrow_mut();
        let start = bytes.len();
        bytes.extend_from_slice(query);
        self.to_send
            .borrow_mut()
            .push((Rc::clone(pooled), start..bytes.len()));
        drop(bytes);
        self.nudge();
    }

    /// Hands the ring what was queued for it: sockets to arm, receives to
    /// cancel, queries to send. A query the ring has no room for is sent
    /// at once instead.
    pub fn feed(self: &Rc<Self>, ring: &mut UdpRing) {
        let to_watch = std::mem::take(&mut *self.to_watch.borrow_mut());
        for pooled in to_watch.iter().filter_map(std::rc::Weak::upgrade) {
            match ring.watch(pooled.socket.as_raw_fd()) {
                Some(watch) => pooled.watch.set(Some(watch)),
                // A ring made without room for watched sockets: read it
                // the other way.
                None => {
                    glommio::spawn_local(read_replies(Rc::clone(&pooled), Rc::clone(self)))
                        .detach();
                }
            }
        }
        let to_unwatch = std::mem::take(&mut *self.to_unwatch.borrow_mut());
        for &watch in &to_unwatch {
            ring.unwatch(watch);
        }
        let mut to_send = std::mem::take(&mut *self.to_send.borrow_mut());
        let mut bytes = std::mem::take(&mut *self.send_bytes.borrow_mut());
        for (pooled, range) in to_send.drain(..) {
            let query = &bytes[range];
            let (to, to_len) = &pooled.upstream_raw;
            if !ring.send_to(pooled.socket.as_raw_fd(), query, to, *to_len)
                && let Err(error) = send_to(&pooled.socket, query, pooled.upstream)
            {
                tracing::debug!(%error, upstream = %pooled.upstream, "upstream UDP query not sent");
            }
        }
        bytes.clear();
        // Keep the allocations for the next turn, unless more was queued
        // meanwhile (a socket dropped above unwatches itself).
        let mut kept = self.to_send.borrow_mut();
        if kept.is_empty() {
            *kept = to_send;
        }
        let mut kept = self.send_bytes.borrow_mut();
        if kept.is_empty() {
            *kept = bytes;
        }
    }

    /// Hands a datagram the ring received on watched socket `watch` to the
    /// query waiting for it. `truncated`: longer than the ring's buffer.
    pub fn deliver(&self, watch: Watch, reply: &[u8], truncated: bool, from: Option<SocketAddr>) {
        let pooled = self
            .sockets
            .borrow()
            .iter()
            .filter_map(std::rc::Weak::upgrade)
            .find(|pooled| pooled.watch.get() == Some(watch));
        match pooled {
            Some(pooled) => {
                pooled.deliver(reply, truncated || reply.len() > MAX_UDP_REPLY, from);
            }
            // A socket already closed: nobody waits on it.
            None => tracing::trace!(?from, "a datagram for a closed upstream socket"),
        }
    }
}

/// Removes a query's entry when its wait ends, however it ends: its own
/// entry, not a later query's that took the ID since.
struct Registered<'a> {
    pooled: &'a Pooled,
    id: u16,
    serial: u64,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        let mut waiting = self.pooled.waiting.borrow_mut();
        if waiting
            .get(&self.id)
            .is_some_and(|waiter| waiter.serial == self.serial)
        {
            waiting.remove(&self.id);
        }
        drop(waiting);
        self.pooled.wake_if_closing();
    }
}

/// One upstream's kept sockets on one core.
pub struct UdpPool {
    upstream: SocketAddr,
    /// The upstream's index, for its metrics.
    index: usize,
    sockets: RefCell<Vec<Rc<Pooled>>>,
    /// Replaced sockets that queries still wait on.
    retired: RefCell<Vec<Rc<Pooled>>>,
    next: Cell<usize>,
    metrics: Option<Arc<ForwardMetrics>>,
    /// The sweeper task runs.
    sweeping: Cell<bool>,
    /// The core's sockets, as its serving loop sees them.
    readiness: Rc<Readiness>,
}

impl std::fmt::Debug for UdpPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpPool")
            .field("upstream", &self.upstream)
            .field("sockets", &self.sockets.borrow().len())
            .finish()
    }
}

impl UdpPool {
    /// A pool for upstream `index` at `upstream`; sockets open when first used.
    pub fn new(
        upstream: SocketAddr,
        index: usize,
        metrics: Option<Arc<ForwardMetrics>>,
        readiness: Rc<Readiness>,
    ) -> UdpPool {
        UdpPool {
            upstream,
            index,
            sockets: RefCell::new(Vec::new()),
            retired: RefCell::new(Vec::new()),
            next: Cell::new(0),
            metrics,
            sweeping: Cell::new(false),
            readiness,
        }
    }

    /// Sends `query` and waits until `deadline` for its checked reply. The
    /// query's ID is set here, from `random`, to one no other query waits
    /// for on the socket it goes out on.
    pub async fn exchange(
        self: &Rc<Self>,
        query: &mut [u8],
        question: &[u8],
        timeout: Duration,
        deadline: Instant,
        mut random: impl FnMut() -> u16,
    ) -> Result<CheckedReply, UdpError> {
        let pooled = self.socket()?;
        let id = loop {
            let id = random();
            if !pooled.waiting.borrow().contains_key(&id) {
                break id;
            }
        };
        query[..2].copy_from_slice(&id.to_be_bytes());
        let (sender, receiver) = oneshot::channel();
        let serial = pooled.serials.get() + 1;
        pooled.serials.set(serial);
        pooled.waiting.borrow_mut().insert(
            id,
            Waiter {
                serial,
                question: question.into(),
                reply: sender,
                deadline,
                timeout,
            },
        );
        let _registered = Registered {
            pooled: &pooled,
            id,
            serial,
        };
        if pooled.ring.is_some() && self.readiness.on_ring() {
            self.readiness.queue_send(&pooled, query);
        } else {
            send_to(&pooled.socket, query, self.upstream).map_err(UdpError::Send)?;
        }
        if !self.sweeping.replace(true) {
            glommio::spawn_local(Rc::clone(self).sweep()).detach();
        }
        // The reader, or the sweeper at the deadline, answers; a sender
        // dropped without a word (its socket gone) is a timeout too.
        receiver.await.unwrap_or(Err(UdpError::Timeout(timeout)))
    }

    /// Fails the queries past their deadline, every [`SWEEP_TICK`], until
    /// none waits.
    async fn sweep(self: Rc<Self>) {
        loop {
            glommio::timer::sleep(SWEEP_TICK).await;
            let now = Instant::now();
            let mut any = false;
            for pooled in self
                .sockets
                .borrow()
                .iter()
                .chain(self.retired.borrow().iter())
            {
                let mut waiting = pooled.waiting.borrow_mut();
                let late: Vec<u16> = waiting
                    .iter()
                    .filter(|(_, waiter)| waiter.deadline <= now)
                    .map(|(&id, _)| id)
                    .collect();
                for id in late {
                    if let Some(waiter) = waiting.remove(&id) {
                        let _ = waiter.reply.send(Err(UdpError::Timeout(waiter.timeout)));
                    }
                }
                any |= !waiting.is_empty();
                drop(waiting);
                pooled.wake_if_closing();
            }
            self.retired.borrow_mut().retain(|pooled| !pooled.closing());
            if !any {
                self.sweeping.set(false);
                return;
            }
        }
    }

    /// The next socket in turn, renewed if it has served its share.
    fn socket(&self) -> Result<Rc<Pooled>, UdpError> {
        let now = Instant::now();
        let mut sockets = self.sockets.borrow_mut();
        let slot = self.next.get() % SOCKETS;
        self.next.set(slot + 1);
        if let Some(pooled) = sockets.get(slot)
            && !pooled.stale(now)
        {
            pooled.queries.set(pooled.queries.get() + 1);
            if let Some(metrics) = &self.metrics {
                metrics.conn_hit(self.index, false);
            }
            return Ok(Rc::clone(pooled));
        }
        let on_ring = self.readiness.on_ring();
        let pooled = Rc::new(Pooled {
            socket: open(self.upstream).map_err(UdpError::Socket)?,
            waiting: RefCell::new(HashMap::new()),
            queries: Cell::new(1),
            opened: now,
            retired: Cell::new(false),
            reader: Cell::new(None),
            kicked: Cell::new(false),
            serials: Cell::new(0),
            upstream: self.upstream,
            upstream_raw: kubewire_udp::socket_address(self.upstream),
            metrics: self.metrics.clone(),
            ring: on_ring.then(|| Rc::clone(&self.readiness)),
            watch: Cell::new(None),
        });
        self.readiness.add(&pooled);
        if let Some(metrics) = &self.metrics {
            metrics.conn_miss(self.index, false);
        }
        if on_ring {
            self.readiness
                .to_watch
                .borrow_mut()
                .push(Rc::downgrade(&pooled));
            self.readiness.nudge();
        } else {
            glommio::spawn_local(read_replies(Rc::clone(&pooled), Rc::clone(&self.readiness)))
                .detach();
        }
        if slot < sockets.len() {
            let old = std::mem::replace(&mut sockets[slot], Rc::clone(&pooled));
            old.retired.set(true);
            old.wake_if_closing();
            if !old.closing() {
                self.retired.borrow_mut().push(old);
            }
        } else {
            sockets.push(Rc::clone(&pooled));
        }
        Ok(pooled)
    }
}

/// A UDP socket on a port of its own.
///
/// Not glommio's `UdpSocket::bind`: that sets `SO_REUSEPORT`, with which
/// the kernel may give two sockets bound to port 0 the same port, so that
/// one socket's replies land on the other's.
fn open(upstream: SocketAddr) -> std::io::Result<UdpSocket> {
    let domain = socket2::Domain::for_address(upstream);
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    let local: SocketAddr = if upstream.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    socket.bind(&local.into())?;
    socket.set_nonblocking(true)?;
    let fd = std::os::fd::IntoRawFd::into_raw_fd(socket);
    // SAFETY: `fd` is the UDP socket just created, whose ownership
    // `into_raw_fd` gave up; glommio's socket takes it over and closes it.
    Ok(unsafe { <UdpSocket as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// One `sendto`, without waiting: a full buffer is a failed attempt.
fn send_to(socket: &UdpSocket, query: &[u8], to: SocketAddr) -> std::io::Result<usize> {
    // SAFETY: the fd belongs to `socket`, which the caller holds for the call.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(socket.as_raw_fd()) };
    socket2::SockRef::from(&fd).send_to_with_flags(
        query,
        &socket2::SockAddr::from(to),
        libc::MSG_DONTWAIT,
    )
}

/// Buffers for [`READ_BATCH`] replies, allocated once per socket.
struct ReplyBatch {
    buffers: Box<[[u8; MAX_UDP_REPLY + 1]]>,
    peers: Box<[libc::sockaddr_storage]>,
    headers: Headers,
}

impl ReplyBatch {
    fn new() -> ReplyBatch {
        ReplyBatch {
            buffers: vec![[0u8; MAX_UDP_REPLY + 1]; READ_BATCH].into_boxed_slice(),
            peers: zeroed(READ_BATCH),
            headers: Headers::new(READ_BATCH),
        }
    }

    /// Takes what is waiting, without blocking; 0 when nothing is.
    fn receive(&mut self, socket: &UdpSocket) -> std::io::Result<usize> {
        let name_len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        for i in 0..READ_BATCH {
            let (buffer, peer) = (self.buffers[i].as_mut_ptr(), &mut self.peers[i]);
            self.headers
                .point(i, buffer, MAX_UDP_REPLY + 1, peer, name_len);
        }
        // SAFETY: every header points at buffers owned by `self` (boxed, so
        // they never move), alive and not borrowed during the call.
        unsafe {
            self.headers
                .receive(socket.as_raw_fd(), READ_BATCH, libc::MSG_DONTWAIT)
        }
    }

    /// Received reply `i` and its sender.
    fn reply(&self, i: usize) -> (&[u8], Option<SocketAddr>) {
        let len = self.headers.received_len(i).min(MAX_UDP_REPLY + 1);
        let from = kubewire_udp::Peer::new(&self.peers[i], self.headers.name_len(i)).address();
        (&self.buffers[i][..len], from)
    }
}

/// A socket's reader: hands each reply to the query waiting for it, until
/// the socket is retired and no query waits on it.
async fn read_replies(pooled: Rc<Pooled>, readiness: Rc<Readiness>) {
    let mut batch = ReplyBatch::new();
    let mut peek = [0u8; 1];
    let upstream = pooled.upstream;
    loop {
        // Driven, the serving loop's `poll` watches the socket; otherwise
        // the reader waits on the reactor for a datagram, without taking it.
        let signal = if readiness.driven.get() {
            Ok(pooled.signal().await)
        } else {
            futures_lite::future::or(
                async {
                    let peeked = pooled.socket.peek_from(&mut peek).await;
                    peeked.map(|_| Signal::Read)
                },
                async { Ok(pooled.signal().await) },
            )
            .await
        };
        match signal {
            Ok(Signal::Close) => return,
            Ok(Signal::Read) => {}
            Err(error) => {
                tracing::debug!(%error, %upstream, "upstream UDP receive failed; retrying");
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        }
        loop {
            let count = match batch.receive(&pooled.socket) {
                Ok(count) => count,
                Err(error) => {
                    tracing::debug!(%error, %upstream, "upstream UDP receive failed");
                    0
                }
            };
            for i in 0..count {
                let (reply, from) = batch.reply(i);
                pooled.deliver(reply, reply.len() > MAX_UDP_REPLY, from);
            }
            if count < READ_BATCH {
                break;
            }
        }
    }
}
