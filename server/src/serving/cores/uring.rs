//! The io_uring UDP path (`dns.udp_io = "io_uring"`, the default): one
//! ring per core for all its UDP sockets, beside glommio's own, driven from
//! this core's executor.
//!
//! - While datagrams keep coming, each turn is one `io_uring_enter` that
//!   sends the last turn's replies and sleeps until the next datagram, as
//!   the batched path sleeps in `recvmmsg`; then every completion is reaped
//!   and answered. A timeout request every [`UDP_FLOWING_WAIT_MS`] (the
//!   tick) bounds the sleep.
//! - After a whole tick without a datagram, or while forwarded replies wait
//!   on glommio's reactor, the task parks on an eventfd the ring signals,
//!   read through that reactor, so an idle core costs nothing and its other
//!   tasks (TCP, updates, forwarded replies) run.
//! - Where names are forwarded, the forwarder's kept upstream sockets ride
//!   on the same ring
//!   (`udp_pool::Readiness::use_ring`): their queries leave, their replies
//!   arrive and the clients' replies leave in the enters the loop makes
//!   anyway, so a forwarded miss costs no system call of its own. The loop
//!   then sleeps in the ring while queries wait upstream, and runs the
//!   tasks their replies wake before it enters again.
//! - While a stream connection (TCP, TLS, HTTPS) is busy, the ring also
//!   polls the core's epoll set of connections, and
//!   the loop wakes those with bytes, as the batched path's `poll` does
//!   (`streams`), so their queries do not wait for glommio's reactor.
//! - Where the kernel refuses the ring, one log line says why and the
//!   sockets are served by the batched path.

use super::{
    Failures, Outbox, QueryBuf, QueryLog, Rcode, Shared, UDP_FLOWING_WAIT_MS, UdpSocket, Verdict,
    Work, YIELD_EVERY, answer_udp, apply_updates, elapsed_ns, serve_udp_batched, spawn_udp_resolve,
};
use kubewire_udp::uring::{Options, RingError, UdpRing};
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Whether the fallback has been logged: once per process, not per socket.
static FALLBACK_LOGGED: AtomicBool = AtomicBool::new(false);

/// Receive buffers for the forwarder's upstream sockets on a ring: replies
/// taken per turn at most (4 KiB each).
const UPSTREAM_BUFFERS: u16 = 64;

/// A core's UDP sockets, each with its index among the listen addresses.
pub(super) type Listening = Vec<(Rc<UdpSocket>, usize)>;

/// One ring for all of `sockets` (at least one), or `None` (logged) where
/// the kernel refuses it. `forwards`: the forwarder's upstream sockets ride
/// on it too.
pub(super) fn ring_for(sockets: &Listening, forwards: bool) -> Option<UdpRing> {
    let options = Options {
        watched_buffers: if forwards { UPSTREAM_BUFFERS } else { 0 },
        ..Options::default()
    };
    let (first, others) = sockets.split_first()?;
    match UdpRing::new(&*first.0, options) {
        Ok(mut ring) => {
            for (socket, _) in others {
                ring.listen_also(&**socket);
            }
            Some(ring)
        }
        Err(error) => {
            log_fallback(&error);
            None
        }
    }
}

/// Serves `sockets` the batched way, one task each: where the kernel
/// refuses the ring. Returns when the first socket's task does.
pub(super) async fn serve_batched(sockets: Listening, shared: Shared) {
    let exclusive = sockets.len() == 1;
    let mut tasks = sockets.into_iter().map(|(socket, listen)| {
        glommio::spawn_local(serve_udp_batched(socket, shared.clone(), exclusive, listen))
    });
    let first = tasks.next();
    tasks.for_each(|task| {
        task.detach();
    });
    if let Some(first) = first {
        first.await;
    }
}

/// One of the ring's sockets, at the ring's index of it.
struct Served {
    fd: std::os::fd::RawFd,
    /// Its index among the listen addresses (metrics, dnstap).
    listen: usize,
    /// Its resolved replies.
    outbox: Rc<Outbox>,
    /// Replies queued on it this turn.
    replied: u64,
}

/// The one log line for a refused ring, with what to do about it.
fn log_fallback(error: &RingError) {
    if FALLBACK_LOGGED.swap(true, Ordering::Relaxed) {
        return;
    }
    let why = match error.source.raw_os_error() {
        Some(libc::EPERM | libc::ENOSYS | libc::EACCES) => {
            "io_uring is blocked here: a seccomp profile without the io_uring calls (deploy/seccomp/kubewire-io-uring.json allows them) or kernel.io_uring_disabled"
        }
        Some(libc::EINVAL) => {
            "this kernel lacks a feature the path needs: provided-buffer rings (Linux 5.19) or multishot recvmsg (Linux 6.0)"
        }
        Some(libc::ENOMEM) => {
            "the kernel refused the ring's memory: raise RLIMIT_MEMLOCK (kernels before 5.12 charge rings to it)"
        }
        _ => "the kernel refused the ring",
    };
    tracing::warn!(
        error = %error,
        "dns.udp_io = \"io_uring\" is unavailable, so UDP is served with recvmmsg batches: {why}; set dns.udp_io = \"batched\" to choose that outright"
    );
}

/// Lets the tasks that are ready run: a query woken by its reply, then the
/// cache's waiters behind it.
async fn settle() {
    for _ in 0..super::SETTLE_YIELDS {
        glommio::executor().yield_now().await;
    }
}

/// The eventfd a parked ring signals, as a file glommio's reactor can read.
fn notifier(ring: &mut UdpRing) -> Result<glommio::io::BufferedFile, RingError> {
    let raw = ring.notifier()?;
    // SAFETY: `raw` is the ring's open eventfd, borrowed for the dup.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(raw) };
    let own = borrowed.try_clone_to_owned().map_err(|source| RingError {
        step: "duplicating the ring's eventfd",
        source,
    })?;
    // SAFETY: a descriptor of our own whose ownership passes to glommio.
    Ok(unsafe { glommio::io::BufferedFile::from_raw_fd(OwnedFd::into_raw_fd(own)) })
}

/// Serves a core's UDP sockets through `ring` ([`ring_for`]); see the
/// module's description.
pub(super) async fn serve_udp_uring(sockets: Listening, shared: Shared, mut ring: UdpRing) {
    let notifier = match notifier(&mut ring) {
        Ok(file) => file,
        Err(error) => {
            log_fallback(&error);
            drop(ring);
            return serve_batched(sockets, shared).await;
        }
    };
    let readiness = Rc::clone(shared.resolver.readiness());
    let mut served: Vec<Served> = sockets
        .iter()
        .map(|(socket, listen)| Served {
            fd: std::os::fd::AsRawFd::as_raw_fd(&**socket),
            listen: *listen,
            outbox: Outbox::new(socket),
            replied: 0,
        })
        .collect();
    // Queries of this turn the table could not finish, with their socket
    // (the ring's index) and senders.
    let mut to_resolve: Vec<(usize, Box<QueryBuf>, Work, std::net::SocketAddr)> = Vec::new();
    // The forwarder's sockets and the resolved replies ride on this ring.
    let forwards_here = shared.resolver.forwarder().is_some() && ring.watch_capacity();
    if forwards_here {
        readiness.use_ring();
        for socket in &served {
            socket.outbox.drained_by(Rc::clone(&readiness));
        }
    }
    // Queries of this turn picked for the query log.
    let mut picked: Vec<(Option<std::net::SocketAddr>, Vec<u8>, Rcode)> = Vec::new();
    let mut picked_top: Vec<(Option<std::net::SocketAddr>, Vec<u8>, Rcode)> = Vec::new();
    let mut failures = Failures::default();
    // Datagrams keep coming: the core waits for them in the ring.
    let mut flowing = false;
    // A datagram came since the tick last fired: a tick ends the flow only
    // after a whole period without one.
    let mut received_since_tick = false;
    // How long the loop was parked, just after it woke. After a short park
    // (queries come every millisecond or more often) its datagrams start a
    // flow, which the first tick without another ends; after a long one
    // they do not, and the loop parks again once they are answered, so a
    // sparse query costs no tick.
    let mut unparked: Option<Duration> = None;
    let mut last_yield = std::time::Instant::now();
    let flowing_wait = Duration::from_millis(UDP_FLOWING_WAIT_MS);
    // The ring's counters as last read, for the metrics' increments.
    let mut counted = ring.stats();
    let streams = &shared.streams;
    // The ring polls the stream connections' epoll set.
    let mut driving = false;
    loop {
        // The core's one ring drives the connections while one is busy.
        let drive = streams.busy();
        if drive != driving {
            driving = drive;
            streams.set_driven(drive);
            match streams.epoll_fd() {
                Some(fd) if drive => ring.watch_readable(fd),
                _ => ring.unwatch_readable(),
            }
        }
        if forwards_here {
            readiness.feed(&mut ring);
            for socket in &served {
                let fd = socket.fd;
                socket
                    .outbox
                    .drain(|reply, to, to_len| ring.send_to(fd, reply, to, to_len));
            }
        }
        // Sleeping in the kernel blocks the core's other tasks, so the ring
        // does it only while no forwarded or chased query waits on the
        // reactor for its upstream's reply (on this ring, upstream replies
        // wake it; a query that waits on the reactor, over TCP say, waits
        // for the tick at most).
        let sleep_in_ring = forwards_here || shared.resolver.in_progress() == 0;
        let entered = if (flowing || driving) && sleep_in_ring {
            ring.arm_tick(flowing_wait);
            ring.submit_and_wait(None)
        } else {
            ring.flush()
        };
        if let Err(error) = entered {
            failures.record("io_uring_enter failed; retrying", &error);
            glommio::timer::sleep(Duration::from_millis(10)).await;
            continue;
        }
        let log_interval = QueryLog::interval(&shared.query_log_sampling);
        let started =
            (shared.metrics.is_some() || log_interval.is_some() || shared.dnstap.is_some())
                .then(std::time::Instant::now);
        super::apply_waiting_updates(&shared);
        let turn = {
            let mut table = shared.table.borrow_mut();
            let metrics = shared.metrics.as_deref();
            let outside = shared.outside_for_batch(started);
            let mut query_log = shared.query_log.borrow_mut();
            ring.process_with(
                |index, query, out, peer| {
                    let socket = &mut served[index];
                    let listen = socket.listen;
                    match answer_udp(&mut table, outside, metrics, listen, query, out, peer) {
                        Verdict::Reply(len, rcode) => {
                            socket.replied += 1;
                            if let (Some(dnstap), Some(started)) = (&shared.dnstap, started) {
                                let reply = &out[..len];
                                dnstap.client(
                                    listen,
                                    super::Proto::Udp,
                                    peer.address(),
                                    query,
                                    reply,
                                    started,
                                );
                            }
                            if let Some(interval) = log_interval
                                && query_log.pick(interval)
                            {
                                picked.push((peer.address(), query.to_vec(), rcode));
                            }
                            if shared.top_picks() {
                                picked_top.push((peer.address(), query.to_vec(), rcode));
                            }
                            Some(len)
                        }
                        Verdict::Resolve(query, work) => {
                            if let Some(address) = peer.address() {
                                to_resolve.push((index, query, work, address));
                            }
                            None
                        }
                        Verdict::Drop => None,
                    }
                },
                |watch, reply, truncated, from| {
                    readiness.deliver(watch, reply, truncated, from.address());
                },
            )
        };
        let turn = match turn {
            Ok(turn) => turn,
            Err(error) => {
                // The kernel cannot run the receive at all (an old kernel):
                // serve the sockets the other way.
                log_fallback(&error);
                drop(ring);
                readiness.leave_ring();
                return serve_batched(sockets, shared).await;
            }
        };
        if let Some(metrics) = &shared.metrics {
            let stats = ring.stats();
            if (stats.dropped, stats.sent_directly) != (counted.dropped, counted.sent_directly) {
                metrics.udp_ring(
                    stats.dropped - counted.dropped,
                    stats.sent_directly - counted.sent_directly,
                );
                counted = stats;
            }
        }
        if let Some(error) = ring.take_send_error() {
            failures.record("UDP reply not sent", &error);
        }
        if turn.ticked {
            if !received_since_tick && turn.received == 0 {
                flowing = false;
            }
            received_since_tick = false;
        }
        if driving {
            let (kicked, to_accept) = if turn.readable {
                streams.kick_ready()
            } else {
                (0, false)
            };
            if kicked > 0 {
                if let Some(metrics) = &shared.metrics {
                    metrics.driven_stream_wakes(kicked as u64);
                }
                settle().await;
            }
            if to_accept {
                // glommio accepts on its reactor, which a driving loop
                // visits only when it yields: go there for a moment.
                glommio::timer::sleep(Duration::from_micros(1)).await;
            }
            streams.settle(kicked);
        }
        if turn.watched > 0 {
            // Upstream replies woke their queries: let those (and the
            // cache's waiters behind them) run, so that their replies leave
            // in the next enter.
            settle().await;
        }
        if turn.received == 0 {
            if ((flowing || driving) && sleep_in_ring) || turn.watched > 0 || readiness.take_nudge()
            {
                // Only send completions, or a tick within the flow, or
                // replies and queries to hand the ring: enter again.
                continue;
            }
            // Quiet, or the reactor has other work waiting (a forwarded
            // query's reply, say): park until the ring signals, or a task
            // queues something for it.
            match ring.park() {
                Ok(true) => {
                    let parked_at = std::time::Instant::now();
                    let woken = futures_lite::future::or(
                        async { notifier.read_at(0, 8).await.map(|_| ()) },
                        async {
                            futures_lite::future::or(readiness.nudged(), async {
                                // Driving already, the ring's poll of the
                                // connections signals the eventfd.
                                if !driving {
                                    streams.until_busy().await;
                                } else {
                                    std::future::pending::<()>().await;
                                }
                            })
                            .await;
                            Ok(())
                        },
                    )
                    .await;
                    if let Err(error) = woken {
                        failures.record("reading the io_uring eventfd failed; retrying", &error);
                        glommio::timer::sleep(Duration::from_millis(1)).await;
                    }
                    ring.unpark();
                    unparked = Some(parked_at.elapsed());
                }
                Ok(false) => {}
                Err(error) => failures.record("io_uring_enter failed; retrying", &error),
            }
            continue;
        }
        match unparked.take() {
            Some(parked) => {
                flowing = parked < 2 * flowing_wait;
                received_since_tick = false;
            }
            None => {
                flowing = true;
                received_since_tick = true;
            }
        }
        let resolving = !to_resolve.is_empty();
        for (index, query, work, peer) in to_resolve.drain(..) {
            let socket = &served[index];
            spawn_udp_resolve(&shared, &socket.outbox, socket.listen, query, work, peer);
        }
        if forwards_here && resolving {
            // The new queries' tasks run now and queue their upstream
            // queries (or, from the cache, their replies) for the next enter.
            settle().await;
        }
        // A turn's queries are charged the time from taking them in to
        // queuing their replies, which leave in the next io_uring_enter.
        if let (Some(metrics), Some(started)) = (&shared.metrics, started) {
            let took = elapsed_ns(started);
            for socket in served.iter().filter(|socket| socket.replied > 0) {
                metrics.took(socket.listen, socket.replied, took);
            }
        }
        served.iter_mut().for_each(|socket| socket.replied = 0);
        for (client, query, rcode) in picked_top.drain(..) {
            shared.count_top(&query, client, rcode);
        }
        if !picked.is_empty() {
            let mut query_log = shared.query_log.borrow_mut();
            let took = started.map(|s| s.elapsed()).unwrap_or_default();
            for (client, query, rcode) in picked.drain(..) {
                query_log.write(&shared.query_log_sampling, client, &query, rcode, took);
            }
        }
        if last_yield.elapsed() >= YIELD_EVERY || glommio::executor().need_preempt() {
            // Replies go out before other tasks run, not after.
            if let Err(error) = ring.flush() {
                failures.record("io_uring_enter failed; retrying", &error);
            }
            apply_updates(&shared);
            glommio::executor().yield_now().await;
            last_yield = std::time::Instant::now();
        }
    }
}
