//! The per-core forwarder: sends a client's query to its zone's upstreams
//! over UDP (TCP after TC=1, or always with `force_tcp`), on the core's own
//! executor, and builds the client's reply from the first sound answer.
//!
//! - Every upstream query goes out from a new socket, so the kernel picks a
//!   random source port, with an ID drawn from a keyed PRF (SipHash with
//!   random keys). A reply counts only if it comes from the upstream's
//!   address and its ID and question match; anything else is dropped,
//!   counted, and the wait goes on until the attempt's timeout.
//! - A timeout, a refused connection or a malformed reply is a failure of
//!   that upstream; the next attempt takes the next upstream in policy order.
//!   `max_fails` failures in a row mark an upstream down; a background task
//!   sends it `. IN NS` every `health_check` until it answers.
//! - At most `max_concurrent` queries are in flight per core; more get
//!   REFUSED, so a flood of unique names keeps the state bounded.
//!
//! The client's reply comes from the pure functions in
//! [`kubewire_wire::upstream`].
#![allow(unsafe_code)] // handing our own UDP socket to glommio

use super::ForwardPlan;
use super::probe::Probe;
use super::tcp::{TcpError, TcpPool};
use crate::operations::config::Policy;
use crate::operations::metrics::ForwardMetrics;
use glommio::net::UdpSocket;
use kubewire_wire::{
    HEADER_LEN, MAX_UPSTREAM_QUERY, PreparedAnswer, Query, Rcode, Transport, UpstreamError,
    assemble_reply, check_upstream_reply, parse_query, sent_question, write_forwarded_reply,
    write_probe_query, write_upstream_query,
};
use std::cell::Cell;
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The largest UDP reply taken from an upstream. We advertise 1232 bytes;
/// a larger reply is read as truncated and asked again over TCP.
const MAX_UDP_REPLY: usize = 4096;
/// A kept upstream TCP connection idle this long is closed (CoreDNS's
/// `expire` default).
const TCP_IDLE: Duration = Duration::from_secs(10);

/// An upstream's health as one core sees it.
#[derive(Debug, Default)]
struct Health {
    fails: Cell<u32>,
    down: Cell<bool>,
}

/// A forwarded query's result: the client's reply and its RCODE.
#[derive(Debug)]
pub struct Forwarded {
    /// The reply, ready to send (no TCP length prefix).
    pub reply: Vec<u8>,
    /// Its RCODE.
    pub rcode: Rcode,
}

/// A UDP socket on a port of its own, for one upstream query.
///
/// Not glommio's `UdpSocket::bind`: that sets `SO_REUSEPORT`, with which
/// the kernel may give two sockets bound to port 0 the same port, so that
/// one query's reply lands on the other's socket and is lost.
fn upstream_socket(upstream: SocketAddr) -> std::io::Result<UdpSocket> {
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

/// What [`Forwarder::fetch`] got.
#[derive(Debug)]
pub enum Fetched {
    /// A sound upstream reply, with the ID and question it was checked
    /// against.
    Reply {
        /// The reply's bytes.
        reply: Vec<u8>,
        /// The ID sent.
        id: u16,
        /// The question sent (name, type, class).
        question: Vec<u8>,
    },
    /// No upstream reply to pass on: answer with this RCODE.
    Failed(Rcode),
}

/// One core's forwarder.
#[derive(Debug)]
pub struct Forwarder {
    plan: Arc<ForwardPlan>,
    health: Vec<Health>,
    in_flight: Cell<usize>,
    next: Cell<usize>,
    ids: std::hash::RandomState,
    counter: Cell<u64>,
    metrics: Option<Arc<ForwardMetrics>>,
    core: usize,
    servfail: PreparedAnswer,
    refused: PreparedAnswer,
    tcp: TcpPool,
}

/// Why one attempt failed.
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    #[error("UDP socket")]
    Socket(#[source] std::io::Error),
    #[error("UDP")]
    Udp(#[source] glommio::GlommioError<()>),
    #[error("over TCP")]
    Tcp(#[from] TcpError),
    #[error("malformed reply: {0}")]
    Malformed(UpstreamError),
    #[error("UDP reply larger than {MAX_UDP_REPLY} bytes")]
    TooLarge,
}

impl Forwarder {
    /// A forwarder for core `core`.
    pub fn new(
        plan: Arc<ForwardPlan>,
        metrics: Option<Arc<ForwardMetrics>>,
        core: usize,
    ) -> Forwarder {
        let health = plan.upstreams.iter().map(|_| Health::default()).collect();
        let tcp = TcpPool::new(&plan.upstreams, TCP_IDLE, plan.tls.clone());
        Forwarder {
            tcp,
            plan,
            health,
            in_flight: Cell::new(0),
            next: Cell::new(core),
            ids: std::hash::RandomState::new(),
            counter: Cell::new(0),
            metrics,
            core,
            servfail: PreparedAnswer::empty(Rcode::SERVFAIL, false),
            refused: PreparedAnswer::empty(Rcode::REFUSED, false),
        }
    }

    /// Whether `query`, which the table says is not ours, is to be
    /// forwarded.
    pub fn wants_query(&self, query: &Query<'_>) -> bool {
        self.plan.route(query.key()).is_some()
    }

    /// A fresh unpredictable 64-bit value.
    fn random(&self) -> u64 {
        let n = self.counter.get().wrapping_add(1);
        self.counter.set(n);
        self.ids.hash_one(n)
    }

    /// The upstreams to try for `route`, in policy order, healthy first.
    /// Empty when every one is down and `failfast` is set.
    fn order(&self, upstreams: &[usize]) -> Vec<usize> {
        let mut order: Vec<usize> = upstreams.to_vec();
        match self.plan.policy {
            Policy::Sequential => {}
            Policy::RoundRobin => {
                let start = self.next.get();
                self.next.set(start.wrapping_add(1));
                let len = order.len().max(1);
                order.rotate_left(start % len);
            }
            Policy::Random => {
                for i in (1..order.len()).rev() {
                    let j = (self.random() % (i as u64 + 1)) as usize;
                    order.swap(i, j);
                }
            }
        }
        order.retain(|&u| !self.plan.probes.looped(u));
        if order.is_empty() {
            return order;
        }
        let healthy: Vec<usize> = order
            .iter()
            .copied()
            .filter(|&u| !self.health[u].down.get())
            .collect();
        if !healthy.is_empty() {
            return healthy;
        }
        if let Some(metrics) = &self.metrics {
            metrics.broken();
        }
        if self.plan.failfast {
            return Vec::new();
        }
        // Every upstream is down: try one anyway, as CoreDNS does.
        order.truncate(1);
        order
    }

    fn record(&self, upstream: usize, ok: bool) {
        let health = &self.health[upstream];
        if ok {
            health.fails.set(0);
            return;
        }
        let fails = health.fails.get().saturating_add(1);
        health.fails.set(fails);
        if self.plan.max_fails > 0 && fails >= self.plan.max_fails && !health.down.get() {
            health.down.set(true);
            tracing::warn!(
                core = self.core,
                upstream = %self.plan.upstreams[upstream],
                fails,
                health_check_ms = self.plan.health_check.as_millis() as u64,
                "upstream marked down after failing in a row; health-checking it"
            );
        }
    }

    /// Forwards `packet` and returns the client's reply; `None` when the
    /// packet is not a query (the table already dropped those).
    pub async fn resolve(
        self: &Rc<Self>,
        packet: &[u8],
        transport: Transport,
    ) -> Option<Forwarded> {
        let query = parse_query(packet).ok()?;
        match self.fetch(&query).await {
            Fetched::Reply {
                reply,
                id,
                question,
            } => self.client_reply(&query, &reply, id, &question, transport),
            Fetched::Failed(rcode) => self.fixed(&query, transport, rcode),
        }
    }

    /// Sends `query` to its zone's upstreams, in policy order, until one
    /// gives a sound reply.
    pub async fn fetch(self: &Rc<Self>, query: &Query<'_>) -> Fetched {
        let Some(route) = self.plan.route(query.key()) else {
            return Fetched::Failed(Rcode::REFUSED);
        };
        let probe = self
            .plan
            .probes
            .check(query.key(), |u| self.plan.upstreams[u].to_string());
        // The start's loop probes (one per upstream) do not take a slot.
        if probe == Probe::No && self.in_flight.get() >= self.plan.max_concurrent {
            if let Some(metrics) = &self.metrics {
                metrics.max_concurrent_reject();
            }
            return Fetched::Failed(Rcode::REFUSED);
        }
        let _in_flight = (probe == Probe::No).then(|| {
            self.in_flight.set(self.in_flight.get() + 1);
            InFlight(Rc::clone(self))
        });
        let order = match probe {
            Probe::No => self.order(&route.upstreams),
            Probe::Send(upstream) => vec![upstream],
            // It came back: answering ends the loop.
            Probe::Looped(_) => return Fetched::Failed(Rcode::SERVFAIL),
        };
        let mut sent = [0u8; MAX_UPSTREAM_QUERY];
        for attempt in 0..self.plan.max_attempts as usize {
            let Some(&upstream) = order.get(attempt % order.len().max(1)) else {
                break;
            };
            let id = self.random() as u16;
            let Ok(len) = write_upstream_query(query, id, &mut sent) else {
                break;
            };
            let started = Instant::now();
            let question = sent_question(&sent[..len]);
            match self.exchange(upstream, &sent[..len], id, question).await {
                Ok((reply, rcode)) => {
                    self.record(upstream, true);
                    if let Some(metrics) = &self.metrics {
                        metrics.request(upstream, rcode.0, started.elapsed());
                    }
                    return Fetched::Reply {
                        reply,
                        id,
                        question: question.to_vec(),
                    };
                }
                Err(error) => {
                    tracing::debug!(core = self.core, upstream = %self.plan.upstreams[upstream], error = %super::Chain(&error), "upstream attempt failed");
                    self.record(upstream, false);
                }
            }
        }
        Fetched::Failed(Rcode::SERVFAIL)
    }

    /// The client's reply to `query` from an upstream reply that
    /// [`Forwarder::fetch`] accepted.
    pub fn client_reply(
        &self,
        query: &Query<'_>,
        reply: &[u8],
        id: u16,
        question: &[u8],
        transport: Transport,
    ) -> Option<Forwarded> {
        let Ok(checked) = check_upstream_reply(reply, id, question) else {
            return self.fixed(query, transport, Rcode::SERVFAIL);
        };
        // Sized to the reply: zeroing 64 KiB per query showed in profiles.
        let needed = HEADER_LEN + query.question_bytes().len() + checked.records().len() + 11;
        let mut out = vec![0u8; reply_buffer(transport, needed)];
        let len = write_forwarded_reply(query, &checked, transport, &mut out).ok()?;
        out.truncate(len);
        Some(Forwarded {
            reply: out,
            rcode: checked.rcode(),
        })
    }

    /// A query refused because `max_concurrent` were in flight or waiting.
    pub fn reject_over_limit(&self, query: &Query<'_>, transport: Transport) -> Option<Forwarded> {
        if let Some(metrics) = &self.metrics {
            metrics.max_concurrent_reject();
        }
        self.fixed(query, transport, Rcode::REFUSED)
    }

    /// The most queries a core forwards at once.
    pub fn max_concurrent(&self) -> usize {
        self.plan.max_concurrent
    }

    /// How long [`Forwarder::fetch`] can take at most.
    pub fn longest_fetch(&self) -> Duration {
        // A TCP retry after TC restarts an attempt's clock.
        self.plan.timeout * 2 * self.plan.max_attempts
    }

    /// A reply with no records and `rcode` (SERVFAIL or REFUSED).
    pub fn fixed(
        &self,
        query: &Query<'_>,
        transport: Transport,
        rcode: Rcode,
    ) -> Option<Forwarded> {
        let answer = if rcode == Rcode::SERVFAIL {
            &self.servfail
        } else {
            &self.refused
        };
        let mut out = vec![0u8; kubewire_wire::MIN_REPLY_BUF];
        let len = assemble_reply(query, answer.as_ref(), 0, transport, true, &mut out).ok()?;
        out.truncate(len);
        Some(Forwarded { reply: out, rcode })
    }

    /// One attempt at one upstream: UDP, then TCP if the reply is truncated
    /// (unless `prefer_udp`), or TCP alone with `force_tcp`. Returns the
    /// checked reply's bytes.
    async fn exchange(
        &self,
        upstream: usize,
        query: &[u8],
        id: u16,
        question: &[u8],
    ) -> Result<(Vec<u8>, Rcode), AttemptError> {
        let deadline = Instant::now() + self.plan.timeout;
        if self.plan.force_tcp
            || self.plan.upstreams[upstream].tls
            || self.plan.upstreams[upstream].tcp
        {
            return self.over_tcp(upstream, query, id, question, deadline).await;
        }
        let reply = match self.over_udp(upstream, query, id, question, deadline).await {
            // Too large for UDP: as if truncated.
            Err(AttemptError::TooLarge) if !self.plan.prefer_udp => {
                let deadline = Instant::now() + self.plan.timeout;
                return self.over_tcp(upstream, query, id, question, deadline).await;
            }
            other => other?,
        };
        let truncated = reply.0.get(2).is_some_and(|flags| flags & 0x02 != 0);
        if truncated && !self.plan.prefer_udp {
            let deadline = Instant::now() + self.plan.timeout;
            return self.over_tcp(upstream, query, id, question, deadline).await;
        }
        Ok(reply)
    }

    async fn over_udp(
        &self,
        upstream: usize,
        query: &[u8],
        id: u16,
        question: &[u8],
        deadline: Instant,
    ) -> Result<(Vec<u8>, Rcode), AttemptError> {
        let address = self.plan.upstreams[upstream].addr;
        if let Some(metrics) = &self.metrics {
            metrics.conn_miss(upstream, false);
        }
        // A new socket per query: the kernel picks a random source port.
        let socket = upstream_socket(address).map_err(AttemptError::Socket)?;
        socket
            .send_to(query, address)
            .await
            .map_err(AttemptError::Udp)?;
        // One byte more than we take, to see a reply that is too large.
        let mut buf = vec![0u8; MAX_UDP_REPLY + 1];
        loop {
            let left =
                super::time_left(deadline).ok_or(AttemptError::Timeout(self.plan.timeout))?;
            let received = glommio::timer::timeout(left, socket.recv_from(&mut buf)).await;
            let (len, from) = match received {
                Ok(received) => received,
                Err(glommio::GlommioError::TimedOut(_)) => {
                    return Err(AttemptError::Timeout(self.plan.timeout));
                }
                Err(error) => return Err(AttemptError::Udp(error)),
            };
            if from != address {
                self.mismatch();
                continue;
            }
            if len > MAX_UDP_REPLY {
                return Err(AttemptError::TooLarge);
            }
            match check_upstream_reply(&buf[..len], id, question) {
                Ok(checked) => {
                    let rcode = checked.rcode();
                    buf.truncate(len);
                    return Ok((buf, rcode));
                }
                Err(error) if error.is_mismatch() => self.mismatch(),
                Err(error) => return Err(AttemptError::Malformed(error)),
            }
        }
    }

    async fn over_tcp(
        &self,
        upstream: usize,
        query: &[u8],
        id: u16,
        question: &[u8],
        deadline: Instant,
    ) -> Result<(Vec<u8>, Rcode), AttemptError> {
        let exchanged = self.tcp.exchange(upstream, query, id, deadline).await;
        let unmatched = self.tcp.unmatched.replace(0);
        if let Some(metrics) = &self.metrics {
            for _ in 0..unmatched {
                metrics.mismatched();
            }
        }
        let (reply, reused) = exchanged?;
        if let Some(metrics) = &self.metrics {
            if reused {
                metrics.conn_hit(upstream, true);
            } else {
                metrics.conn_miss(upstream, true);
            }
        }
        let checked = check_upstream_reply(&reply, id, question).map(|c| c.rcode());
        match checked {
            Ok(rcode) => Ok((reply, rcode)),
            Err(error) => {
                if error.is_mismatch() {
                    self.mismatch();
                }
                Err(AttemptError::Malformed(error))
            }
        }
    }

    fn mismatch(&self) {
        if let Some(metrics) = &self.metrics {
            metrics.mismatched();
        }
    }

    /// Health-checks the upstreams marked down, every `health_check`, until
    /// the core stops. One task per core, started with the core.
    pub async fn health_checks(self: Rc<Self>) {
        let mut probe = [0u8; MAX_UPSTREAM_QUERY];
        loop {
            glommio::timer::sleep(self.plan.health_check).await;
            for (upstream, health) in self.health.iter().enumerate() {
                if !health.down.get() {
                    continue;
                }
                let id = self.random() as u16;
                let Ok(len) = write_probe_query(id, &mut probe) else {
                    continue;
                };
                let question = sent_question(&probe[..len]);
                let deadline = Instant::now() + self.plan.timeout.min(self.plan.health_check);
                let address = self.plan.upstreams[upstream];
                let result = if self.plan.force_tcp || address.tls || address.tcp {
                    self.over_tcp(upstream, &probe[..len], id, question, deadline)
                        .await
                } else {
                    self.over_udp(upstream, &probe[..len], id, question, deadline)
                        .await
                };
                match result {
                    Ok(_) => {
                        health.down.set(false);
                        health.fails.set(0);
                        tracing::info!(core = self.core, upstream = %address, "upstream answers its health check again; back in use");
                    }
                    Err(error) => {
                        if let Some(metrics) = &self.metrics {
                            metrics.healthcheck_failure(upstream);
                        }
                        tracing::debug!(core = self.core, upstream = %address, error = %super::Chain(&error), "health check failed");
                    }
                }
            }
        }
    }
}

/// Releases an in-flight slot when a forwarded query ends, however it ends.
struct InFlight(Rc<Forwarder>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0
            .in_flight
            .set(self.0.in_flight.get().saturating_sub(1));
    }
}

/// A client reply buffer for a reply of `needed` bytes: never less than
/// the smallest a reply must fit in, never more than the transport allows.
pub(crate) fn reply_buffer(transport: Transport, needed: usize) -> usize {
    let most = match transport {
        Transport::Udp => crate::serving::batch::TX_BUF,
        Transport::Tcp => kubewire_wire::MAX_MESSAGE,
    };
    needed.min(most).max(kubewire_wire::MIN_REPLY_BUF)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::operations::config::Forward;

    fn forwarder(policy: Policy) -> Forwarder {
        let config = Forward {
            to: vec!["192.0.2.1".into(), "192.0.2.2".into(), "192.0.2.3".into()],
            policy,
            ..Forward::default()
        };
        let plan = ForwardPlan::build(&config, &[], &[]).unwrap().unwrap();
        Forwarder::new(Arc::new(plan), None, 0)
    }

    #[test]
    fn policies_order_the_upstreams() {
        let sequential = forwarder(Policy::Sequential);
        for _ in 0..5 {
            assert_eq!(sequential.order(&[0, 1, 2]), [0, 1, 2]);
        }
        let round_robin = forwarder(Policy::RoundRobin);
        let firsts: Vec<usize> = (0..6).map(|_| round_robin.order(&[0, 1, 2])[0]).collect();
        assert_eq!(firsts, [0, 1, 2, 0, 1, 2]);
        let random = forwarder(Policy::Random);
        let mut seen_first = [0u32; 3];
        for _ in 0..300 {
            let mut order = random.order(&[0, 1, 2]);
            seen_first[order[0]] += 1;
            order.sort();
            assert_eq!(order, [0, 1, 2], "a permutation");
        }
        assert!(seen_first.iter().all(|&n| n > 50), "{seen_first:?}");
        // A down upstream is skipped; with all down, one is tried anyway,
        // or none with failfast.
        sequential.health[0].down.set(true);
        assert_eq!(sequential.order(&[0, 1, 2]), [1, 2]);
        sequential.health[1].down.set(true);
        sequential.health[2].down.set(true);
        assert_eq!(sequential.order(&[0, 1, 2]).len(), 1);
    }
}
