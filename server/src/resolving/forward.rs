//! The per-core forwarder: sends a client's query to its zone's upstreams
//! over UDP (TCP after TC=1, or always with `force_tcp`), on the core's own
//! executor, and builds the client's reply from the first sound answer.
//!
//! - UDP queries go out from a few kept sockets per upstream, renewed
//!   often ([`super::udp_pool`]), with an ID drawn from a keyed PRF (SipHash
//!   with random keys). A reply counts only if it comes from the upstream's
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
use super::ForwardPlan;
use super::probe::Probe;
use super::tcp::{TcpError, TcpPool};
use super::udp_pool::{Readiness, UdpError, UdpPool};
use crate::operations::config::Policy;
use crate::operations::metrics::ForwardMetrics;
use kubewire_wire::{
    CheckedReply, HEADER_LEN, MAX_UPSTREAM_QUERY, PreparedAnswer, Query, Rcode, Transport,
    UpstreamError, assemble_reply, sent_question, write_forwarded_reply, write_probe_query,
    write_upstream_query,
};
use std::cell::Cell;
use std::hash::BuildHasher;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A kept upstream TCP connection idle this long is closed (CoreDNS's
/// `expire` default).
const TCP_IDLE: Duration = Duration::from_secs(10);

/// An upstream's health as one core sees it.
#[derive(Debug, Default)]
struct Health {
    fails: Cell<u32>,
    down: Cell<bool>,
}

/// What carried an upstream's reply: dnstap names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Carrier {
    /// A UDP datagram.
    Datagram,
    /// A TCP (or TLS) connection: the upstream speaks only streams, or
    /// its UDP reply was truncated.
    Stream,
}

/// An upstream's health as one core sees it, for `explain`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamHealth {
    /// The upstream, as configured.
    pub upstream: String,
    /// Marked down (failed `max_fails` times in a row), health-checked until
    /// it answers.
    pub down: bool,
    /// Failures in a row.
    pub fails: u32,
}

/// A forwarded query's result: the client's reply and its RCODE.
#[derive(Debug)]
pub struct Forwarded {
    /// The reply, ready to send (no TCP length prefix).
    pub reply: Vec<u8>,
    /// Its RCODE.
    pub rcode: Rcode,
}

/// What [`Forwarder::fetch`] got.
#[derive(Debug)]
pub enum Fetched {
    /// A sound upstream reply, and the index of the upstream that gave it.
    Reply(CheckedReply, usize),
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
    /// Per upstream, its kept UDP sockets.
    udp: Vec<Rc<UdpPool>>,
    /// dnstap, when on: every upstream exchange.
    dnstap: Option<crate::operations::dnstap::Tap>,
}

/// Why one attempt failed.
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    #[error("over UDP")]
    Udp(#[from] UdpError),
    #[error("over TCP")]
    Tcp(#[from] TcpError),
    #[error("malformed reply: {0}")]
    Malformed(UpstreamError),
}

impl Forwarder {
    /// A forwarder for core `core`.
    pub fn new(
        plan: Arc<ForwardPlan>,
        metrics: Option<Arc<ForwardMetrics>>,
        core: usize,
        readiness: &Rc<Readiness>,
    ) -> Forwarder {
        let health = plan.upstreams.iter().map(|_| Health::default()).collect();
        let tcp = TcpPool::new(&plan.upstreams, TCP_IDLE, plan.tls.clone());
        let udp = plan
            .upstreams
            .iter()
            .enumerate()
            .map(|(index, upstream)| {
                let readiness = Rc::clone(readiness);
                Rc::new(UdpPool::new(
                    upstream.addr,
                    index,
                    metrics.clone(),
                    readiness,
                ))
            })
            .collect();
        Forwarder {
            dnstap: None,
            tcp,
            udp,
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

    /// Each upstream as this core sees it: its address, whether it is
    /// marked down, and its failures in a row (for `explain`).
    pub fn health(&self) -> Vec<UpstreamHealth> {
        self.plan
            .upstreams
            .iter()
            .zip(&self.health)
            .map(|(upstream, health)| UpstreamHealth {
                upstream: upstream.to_string(),
                down: health.down.get(),
                fails: health.fails.get(),
            })
            .collect()
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

    /// Forwards `query` and returns the client's reply.
    pub async fn forward(
        self: &Rc<Self>,
        query: &Query<'_>,
        transport: Transport,
    ) -> Option<Forwarded> {
        match self.fetch(query).await {
            Fetched::Reply(reply, _) => self.client_reply(query, &reply, transport),
            Fetched::Failed(rcode) => self.fixed(query, transport, rcode),
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
            let Ok(len) = write_upstream_query(query, self.random() as u16, &mut sent) else {
                break;
            };
            let started = Instant::now();
            match self
                .exchange(upstream, &mut sent[..len], self.plan.timeout)
                .await
            {
                Ok((reply, carrier)) => {
                    if let Some(tap) = &self.dnstap {
                        self.tap(tap, upstream, carrier, (&sent[..len], &reply), started);
                    }
                    self.record(upstream, true);
                    if let Some(metrics) = &self.metrics {
                        metrics.request(upstream, reply.rcode().0, started.elapsed());
                    }
                    return Fetched::Reply(reply, upstream);
                }
                Err(error) => {
                    tracing::debug!(core = self.core, upstream = %self.plan.upstreams[upstream], error = %crate::operations::failure::Chain(&error), "upstream attempt failed");
                    self.record(upstream, false);
                }
            }
        }
        Fetched::Failed(Rcode::SERVFAIL)
    }

    /// Sends an upstream exchange to dnstap.
    #[cold]
    fn tap(
        &self,
        tap: &crate::operations::dnstap::Tap,
        upstream: usize,
        carrier: Carrier,
        (sent, reply): (&[u8], &CheckedReply),
        started: Instant,
    ) {
        use crate::operations::config::Protocol as Upstream;
        use crate::operations::dnstap::{Exchange, Protocol};
        let address = &self.plan.upstreams[upstream];
        let protocol = match (address.protocol, carrier) {
            (Upstream::Tls, _) => Protocol::Dot,
            (_, Carrier::Stream) => Protocol::Tcp,
            (_, Carrier::Datagram) => Protocol::Udp,
        };
        let response_time = std::time::SystemTime::now();
        tap.forwarder(&Exchange {
            asker: None,
            answerer: Some(address.addr),
            protocol,
            query: sent,
            query_time: response_time
                .checked_sub(started.elapsed())
                .unwrap_or(response_time),
            response: reply.view().packet(),
            response_time,
        });
    }

    /// Sends every upstream exchange to `tap` from now on.
    pub fn with_dnstap(mut self, tap: Option<crate::operations::dnstap::Tap>) -> Forwarder {
        self.dnstap = tap;
        self
    }

    /// The client's reply to `query` from an upstream reply that
    /// [`Forwarder::fetch`] accepted.
    pub fn client_reply(
        &self,
        query: &Query<'_>,
        reply: &CheckedReply,
        transport: Transport,
    ) -> Option<Forwarded> {
        let checked = reply.view();
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
    /// (unless `prefer_udp`), or TCP alone with `force_tcp`. `query` is the
    /// upstream query; over UDP its ID is set to one free on the socket.
    /// Each of UDP and TCP waits at most `timeout`.
    async fn exchange(
        &self,
        upstream: usize,
        query: &mut [u8],
        timeout: Duration,
    ) -> Result<(CheckedReply, Carrier), AttemptError> {
        let question: Box<[u8]> = sent_question(query).into();
        let deadline = Instant::now() + timeout;
        let address = self.plan.upstreams[upstream];
        if address.stream_only(self.plan.force_tcp) {
            let reply = self.over_tcp(upstream, query, &question, deadline).await?;
            return Ok((reply, Carrier::Stream));
        }
        let udp = &self.udp[upstream];
        let reply = match udp
            .exchange(query, &question, timeout, deadline, || self.random() as u16)
            .await
        {
            // Too large for UDP: as if truncated.
            Err(UdpError::TooLarge) if !self.plan.prefer_udp => None,
            other => Some(other?),
        };
        match reply {
            Some(reply) if !reply.truncated() || self.plan.prefer_udp => {
                Ok((reply, Carrier::Datagram))
            }
            _ => {
                // Truncated (or too large): the same query again over TCP.
                let deadline = Instant::now() + timeout;
                let reply = self.over_tcp(upstream, query, &question, deadline).await?;
                Ok((reply, Carrier::Stream))
            }
        }
    }

    async fn over_tcp(
        &self,
        upstream: usize,
        query: &[u8],
        question: &[u8],
        deadline: Instant,
    ) -> Result<CheckedReply, AttemptError> {
        let id = u16::from_be_bytes([query[0], query[1]]);
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
        CheckedReply::check(reply, id, question).map_err(|error| {
            if error.is_mismatch() {
                self.mismatch();
            }
            AttemptError::Malformed(error)
        })
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
                let Ok(len) = write_probe_query(self.random() as u16, &mut probe) else {
                    continue;
                };
                let address = self.plan.upstreams[upstream];
                let timeout = self.plan.timeout.min(self.plan.health_check);
                let result = self.exchange(upstream, &mut probe[..len], timeout).await;
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
                        tracing::debug!(core = self.core, upstream = %address, error = %crate::operations::failure::Chain(&error), "health check failed");
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
        Transport::Udp => usize::from(kubewire_wire::OUR_UDP_PAYLOAD),
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
            to: ["192.0.2.1", "192.0.2.2", "192.0.2.3"]
                .iter()
                .map(|u| u.parse().unwrap())
                .collect(),
            policy,
            ..Forward::default()
        };
        let plan = ForwardPlan::build(&config, &[], &[]).unwrap().unwrap();
        Forwarder::new(Arc::new(plan), None, 0, &Rc::default())
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
