//! Prometheus metrics, with CoreDNS's names and labels so that its
//! dashboards and alerts keep working, plus kubewire's own under `kubewire_`.
//!
//! Counting on the query path is plain per-core integers: each core owns a
//! [`CoreMetrics`] and is its only writer, so an increment is a relaxed load
//! and store (two `mov`s on x86, no locked instruction). A scrape reads every
//! core's counters and sums them; nothing is merged before that.
//!
//! Label values follow CoreDNS with the kubeadm Corefile (`.:53 { … }`):
//! `zone` is always `"."` (the server block's zone, not the cluster zone),
//! `view` is `""`, `server` is `dns://<listen address>`.

mod scrape;
#[cfg(test)]
mod tests;

pub use scrape::Scrape;

use kubewire_answer::{CoreStatus, Kind};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

/// Query types CoreDNS counts by name; the rest are `other`.
pub const MONITORED_TYPES: [u16; 19] = {
    use kubewire_wire::rtype::*;
    [
        A, AAAA, CNAME, DNSKEY, DS, MX, NSEC3, NSEC, NS, PTR, RRSIG, SOA, SRV, TXT, HTTPS, SVCB,
        IXFR, AXFR, ANY,
    ]
};
const TYPE_SLOTS: usize = MONITORED_TYPES.len() + 1;
use kubewire_wire::RCODE_NAMES;
const RCODE_SLOTS: usize = RCODE_NAMES.len();
/// Declares [`Plugin`] with its `plugin` label values, so the variants,
/// their order in the counters and their labels cannot drift apart.
macro_rules! plugins {
    ($($(#[doc = $doc:literal])* $variant:ident => $label:literal,)*) => {
        /// Which part of kubewire answered a query: the `plugin` label.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Plugin {
            $($(#[doc = $doc])* $variant,)*
        }

        impl Plugin {
            /// Every plugin, in the counters' order (`plugin as usize`).
            pub const ALL: &[Plugin] = &[$(Plugin::$variant,)*];

            /// The `plugin` label, as CoreDNS names the plugin.
            pub const fn label(self) -> &'static str {
                match self {
                    $(Plugin::$variant => $label,)*
                }
            }
        }
    };
}

plugins! {
    /// A cluster zone (CoreDNS's `kubernetes`).
    Kubernetes => "kubernetes",
    /// An upstream (CoreDNS's `forward`).
    Forward => "forward",
    /// Nothing: refused, outside every zone (an empty label, as CoreDNS's
    /// server gives).
    None => "",
    /// The cache of forwarded answers (CoreDNS's `cache`).
    Cache => "cache",
    /// A pod's search path, completed on the server (CoreDNS's `autopath`).
    Autopath => "autopath",
}

/// CoreDNS's `plugin.TimeBuckets`: 0.25 ms doubling to 8.192 s, in ns.
const DURATION_BOUNDS_NS: [u64; 16] = {
    let mut bounds = [0u64; 16];
    let mut i = 0;
    while i < 16 {
        bounds[i] = 250_000 << i;
        i += 1;
    }
    bounds
};
/// CoreDNS's size buckets, in bytes.
const SIZE_BOUNDS: [u64; 14] = [
    0, 100, 200, 300, 400, 511, 1023, 2047, 4095, 8291, 16_000, 32_000, 48_000, 64_000,
];
/// Delta publish-to-applied latency buckets: 10 µs doubling to about 1.3 s, in ns.
const DELTA_BOUNDS_NS: [u64; 18] = {
    let mut bounds = [0u64; 18];
    let mut i = 0;
    while i < 18 {
        bounds[i] = 10_000 << i;
        i += 1;
    }
    bounds
};

/// Transport of a query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// UDP.
    Udp = 0,
    /// TCP.
    Tcp = 1,
}

fn type_slot(qtype: u16) -> usize {
    MONITORED_TYPES
        .iter()
        .position(|&t| t == qtype)
        .unwrap_or(MONITORED_TYPES.len())
}

fn bucket(bounds: &[u64], value: u64) -> usize {
    bounds
        .iter()
        .position(|&bound| value <= bound)
        .unwrap_or(bounds.len())
}

/// Adds to a counter this thread alone writes.
#[inline]
fn bump(counter: &AtomicU64, by: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(by),
        Ordering::Relaxed,
    );
}

fn counters(count: usize) -> Box<[AtomicU64]> {
    (0..count).map(|_| AtomicU64::new(0)).collect()
}

fn read(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// One answered query, as the metrics see it.
#[derive(Clone, Copy, Debug)]
pub struct Answered {
    /// Which listen address (index into the server's list).
    pub listen: usize,
    /// Transport.
    pub proto: Proto,
    /// Query type.
    pub qtype: u16,
    /// Reply RCODE.
    pub rcode: kubewire_wire::Rcode,
    /// Who answered.
    pub plugin: Plugin,
    /// Query bytes.
    pub request_len: usize,
    /// Reply bytes.
    pub response_len: usize,
}

/// How a TLS handshake ended (`kubewire_tls_handshakes_total`'s `outcome`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handshake {
    /// Done: the connection serves queries.
    Done,
    /// Refused or broken (no shared version or cipher, a bad client
    /// certificate, not TLS at all).
    Failed,
    /// Not finished within `tls.handshake_timeout_ms`.
    TimedOut,
}

impl Handshake {
    /// Every outcome, in counter order.
    pub const ALL: [Handshake; 3] = [Handshake::Done, Handshake::Failed, Handshake::TimedOut];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Handshake::Done => "done",
            Handshake::Failed => "failed",
            Handshake::TimedOut => "timed_out",
        }
    }
}

/// One core's counters. Written only by that core.
#[derive(Debug)]
pub struct CoreMetrics {
    listens: usize,
    /// `[listen][proto][type]`
    requests: Box<[AtomicU64]>,
    /// `[listen][plugin][rcode]`
    responses: Box<[AtomicU64]>,
    /// `[listen][bucket]`, and the sum per listen.
    duration: Box<[AtomicU64]>,
    duration_sum_ns: Box<[AtomicU64]>,
    /// `[listen][proto][bucket]`, and the sum per `[listen][proto]`.
    request_size: Box<[AtomicU64]>,
    request_size_sum: Box<[AtomicU64]>,
    response_size: Box<[AtomicU64]>,
    response_size_sum: Box<[AtomicU64]>,
    /// Datagrams that were not DNS queries and got no reply.
    dropped: AtomicU64,
    /// Stream connections woken by the UDP loop's own poll.
    driven_stream_wakes: AtomicU64,
    /// Datagrams the io_uring path dropped unanswered.
    ring_dropped: AtomicU64,
    /// Replies the io_uring path sent with a plain `sendto`.
    ring_direct_replies: AtomicU64,
    /// `[listen][outcome]`: TLS handshakes.
    handshakes: Box<[AtomicU64]>,
    /// `[listen]`: queries autopath answered from a later search candidate.
    autopath_success: Box<[AtomicU64]>,
    delta_latency: Box<[AtomicU64]>,
    delta_latency_sum_ns: AtomicU64,
}

impl CoreMetrics {
    /// Counters for a core serving `listens` addresses.
    pub fn new(listens: usize) -> CoreMetrics {
        let size_slots = SIZE_BOUNDS.len() + 1;
        CoreMetrics {
            listens,
            requests: counters(listens * 2 * TYPE_SLOTS),
            responses: counters(listens * Plugin::ALL.len() * RCODE_SLOTS),
            duration: counters(listens * (DURATION_BOUNDS_NS.len() + 1)),
            duration_sum_ns: counters(listens),
            request_size: counters(listens * 2 * size_slots),
            request_size_sum: counters(listens * 2),
            response_size: counters(listens * 2 * size_slots),
            response_size_sum: counters(listens * 2),
            dropped: AtomicU64::new(0),
            driven_stream_wakes: AtomicU64::new(0),
            ring_dropped: AtomicU64::new(0),
            ring_direct_replies: AtomicU64::new(0),
            handshakes: counters(listens * Handshake::ALL.len()),
            autopath_success: counters(listens),
            delta_latency: counters(DELTA_BOUNDS_NS.len() + 1),
            delta_latency_sum_ns: AtomicU64::new(0),
        }
    }

    /// Counts an answered query (everything but its duration).
    #[inline]
    pub fn answered(&self, a: &Answered) {
        let listen = a.listen.min(self.listens.saturating_sub(1));
        let proto = a.proto as usize;
        let lp = listen * 2 + proto;
        if let Some(c) = self.requests.get(lp * TYPE_SLOTS + type_slot(a.qtype)) {
            bump(c, 1);
        }
        let plugin = a.plugin as usize;
        let rcode = usize::from(a.rcode.0).min(RCODE_SLOTS - 1);
        if let Some(c) = self
            .responses
            .get((listen * Plugin::ALL.len() + plugin) * RCODE_SLOTS + rcode)
        {
            bump(c, 1);
        }
        let size_slots = SIZE_BOUNDS.len() + 1;
        let request_len = a.request_len as u64;
        let response_len = a.response_len as u64;
        if let Some(c) = self
            .request_size
            .get(lp * size_slots + bucket(&SIZE_BOUNDS, request_len))
        {
            bump(c, 1);
        }
        if let Some(c) = self.request_size_sum.get(lp) {
            bump(c, request_len);
        }
        if let Some(c) = self
            .response_size
            .get(lp * size_slots + bucket(&SIZE_BOUNDS, response_len))
        {
            bump(c, 1);
        }
        if let Some(c) = self.response_size_sum.get(lp) {
            bump(c, response_len);
        }
    }

    /// Counts `count` queries on `listen` that each took `duration_ns`.
    #[inline]
    pub fn took(&self, listen: usize, count: u64, duration_ns: u64) {
        let listen = listen.min(self.listens.saturating_sub(1));
        let slots = DURATION_BOUNDS_NS.len() + 1;
        if let Some(c) = self
            .duration
            .get(listen * slots + bucket(&DURATION_BOUNDS_NS, duration_ns))
        {
            bump(c, count);
        }
        if let Some(c) = self.duration_sum_ns.get(listen) {
            bump(c, duration_ns.saturating_mul(count));
        }
    }

    /// Autopath answered a query from a later search candidate.
    pub fn autopath_success(&self, listen: usize) {
        if let Some(counter) = self.autopath_success.get(listen) {
            bump(counter, 1);
        }
    }

    /// A datagram that was not a DNS query got no reply.
    pub fn dropped(&self) {
        bump(&self.dropped, 1);
    }

    /// The io_uring path dropped `dropped` datagrams unanswered (longer
    /// than its buffers), and sent `direct` replies with a plain `sendto`
    /// (every send slot taken).
    pub fn udp_ring(&self, dropped: u64, direct: u64) {
        bump(&self.ring_dropped, dropped);
        bump(&self.ring_direct_replies, direct);
    }

    /// The UDP loop's poll woke `count` stream connections with bytes.
    pub fn driven_stream_wakes(&self, count: u64) {
        bump(&self.driven_stream_wakes, count);
    }

    /// A TLS handshake on `listen` ended so.
    pub fn handshake(&self, listen: usize, outcome: Handshake) {
        if let Some(counter) = self
            .handshakes
            .get(listen * Handshake::ALL.len() + outcome as usize)
        {
            bump(counter, 1);
        }
    }

    /// Records how long an update took from publication to applied.
    pub fn delta_applied(&self, latency_ns: u64) {
        if let Some(c) = self.delta_latency.get(bucket(&DELTA_BOUNDS_NS, latency_ns)) {
            bump(c, 1);
        }
        bump(&self.delta_latency_sum_ns, latency_ns);
    }

    fn queries(&self) -> u64 {
        self.requests.iter().map(read).sum()
    }
}

/// What the control plane counts (it alone writes these).
#[derive(Debug)]
pub struct ControlMetrics {
    started: Instant,
    watch_events: [AtomicU64; KINDS.len()],
    relists: [AtomicU64; KINDS.len()],
    synced: AtomicBool,
    /// Nanoseconds after `started` of the last good contact with the API
    /// server; `u64::MAX` before the first.
    last_api_contact_ns: AtomicU64,
    cluster: bool,
    /// Node-local setup failures, by [`SETUP_ERROR_TYPES`]; reported only
    /// in node-local mode.
    setup_errors: [AtomicU64; 3],
    node_local: bool,
    /// Per kind of [`KINDS`]: whether it is watched, so that its series
    /// are exported.
    watched: [bool; KINDS.len()],
}

/// The `errortype` labels of `coredns_nodecache_setup_errors_total`.
pub const SETUP_ERROR_TYPES: [&str; 3] = ["interface_add", "interface_check", "iptables"];

const KINDS: [Kind; 5] = [
    Kind::Service,
    Kind::Slice,
    Kind::Pod,
    Kind::Namespace,
    Kind::Import,
];

fn kind_slot(kind: Kind) -> usize {
    KINDS.iter().position(|&k| k == kind).unwrap_or(0)
}

impl ControlMetrics {
    /// `cluster`: whether the source is the Kubernetes API (the API contact
    /// age is reported only then).
    pub fn new(cluster: bool) -> ControlMetrics {
        ControlMetrics {
            started: Instant::now(),
            watch_events: Default::default(),
            relists: Default::default(),
            synced: AtomicBool::new(false),
            last_api_contact_ns: AtomicU64::new(u64::MAX),
            cluster,
            setup_errors: Default::default(),
            node_local: false,
            watched: [true; KINDS.len()],
        }
    }
    /// Leaves out the per-kind series of the kinds that are not watched:
    /// Pods without verified pod records or autopath, ServiceImports
    /// without multicluster. A zero for them would read as "watched, and
    /// nothing came".
    pub fn with_watched(mut self, pods: bool, service_imports: bool) -> ControlMetrics {
        self.watched[kind_slot(Kind::Pod)] = pods;
        self.watched[kind_slot(Kind::Import)] = service_imports;
        self
    }
    /// Reports node-local setup errors too.
    pub fn with_node_local(mut self, node_local: bool) -> ControlMetrics {
        self.node_local = node_local;
        self
    }
    /// A node-local setup or check failed.
    pub fn setup_error(&self, errortype: &str) {
        let slot = SETUP_ERROR_TYPES
            .iter()
            .position(|&t| t == errortype)
            .unwrap_or(2);
        self.setup_errors[slot].fetch_add(1, Ordering::Relaxed);
    }
    /// A watch event of `kind` arrived (the API answered).
    pub fn watch_event(&self, kind: Kind) {
        self.watch_events[kind_slot(kind)].fetch_add(1, Ordering::Relaxed);
        self.api_contact();
    }
    /// A list of `kind` completed.
    pub fn relisted(&self, kind: Kind) {
        self.relists[kind_slot(kind)].fetch_add(1, Ordering::Relaxed);
        self.api_contact();
    }
    fn api_contact(&self) {
        let ns = self
            .started
            .elapsed()
            .as_nanos()
            .min(u128::from(u64::MAX - 1)) as u64;
        self.last_api_contact_ns.store(ns, Ordering::Relaxed);
    }
    /// Whether the first sync is complete.
    pub fn set_synced(&self, synced: bool) {
        self.synced.store(synced, Ordering::Relaxed);
    }
}

/// Panics anywhere in the process, for `coredns_panics_total`.
pub static PANICS: AtomicU64 = AtomicU64::new(0);

/// Counts panics (then runs the default hook, which prints them).
pub fn count_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::Relaxed);
        super::failure::note_panic();
        default(info);
    }));
}

/// One core's forwarding counters. Written only by that core.
#[derive(Debug)]
pub struct ForwardMetrics {
    /// `[upstream][rcode][bucket]`
    duration: Box<[AtomicU64]>,
    /// `[upstream][rcode]`, nanoseconds.
    duration_sum_ns: Box<[AtomicU64]>,
    /// `[upstream]`
    healthcheck_failures: Box<[AtomicU64]>,
    /// `[upstream][proto]`: a new socket or connection for a query.
    conn_misses: Box<[AtomicU64]>,
    /// `[upstream][proto]`: a kept connection reused for a query.
    conn_hits: Box<[AtomicU64]>,
    broken: AtomicU64,
    max_concurrent_rejects: AtomicU64,
    mismatched: AtomicU64,
}

impl ForwardMetrics {
    /// Counters for `upstreams` upstreams.
    pub fn new(upstreams: usize) -> ForwardMetrics {
        let slots = DURATION_BOUNDS_NS.len() + 1;
        ForwardMetrics {
            duration: counters(upstreams * RCODE_SLOTS * slots),
            duration_sum_ns: counters(upstreams * RCODE_SLOTS),
            healthcheck_failures: counters(upstreams),
            conn_misses: counters(upstreams * 2),
            conn_hits: counters(upstreams * 2),
            broken: AtomicU64::new(0),
            max_concurrent_rejects: AtomicU64::new(0),
            mismatched: AtomicU64::new(0),
        }
    }

    /// An upstream answered with `rcode` after `took`.
    pub fn request(&self, upstream: usize, rcode: u16, took: std::time::Duration) {
        let rcode = usize::from(rcode).min(RCODE_SLOTS - 1);
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let slots = DURATION_BOUNDS_NS.len() + 1;
        let series = upstream * RCODE_SLOTS + rcode;
        if let Some(c) = self
            .duration
            .get(series * slots + bucket(&DURATION_BOUNDS_NS, ns))
        {
            bump(c, 1);
        }
        if let Some(c) = self.duration_sum_ns.get(series) {
            bump(c, ns);
        }
    }

    /// A new UDP socket (`tcp` false) or TCP connection for one query.
    pub fn conn_miss(&self, upstream: usize, tcp: bool) {
        if let Some(c) = self.conn_misses.get(upstream * 2 + usize::from(tcp)) {
            bump(c, 1);
        }
    }

    /// A kept TCP connection reused for one query.
    pub fn conn_hit(&self, upstream: usize, tcp: bool) {
        if let Some(c) = self.conn_hits.get(upstream * 2 + usize::from(tcp)) {
            bump(c, 1);
        }
    }

    /// A health check of a down upstream failed.
    pub fn healthcheck_failure(&self, upstream: usize) {
        if let Some(c) = self.healthcheck_failures.get(upstream) {
            bump(c, 1);
        }
    }

    /// Every upstream of a query's zone was down.
    pub fn broken(&self) {
        bump(&self.broken, 1);
    }

    /// A query refused because `max_concurrent_per_core` were in flight.
    pub fn max_concurrent_reject(&self) {
        bump(&self.max_concurrent_rejects, 1);
    }

    /// A datagram that was not the reply awaited (wrong source, ID or
    /// question), dropped.
    pub fn mismatched(&self) {
        bump(&self.mismatched, 1);
    }
}

/// One core's cache counters. Written only by that core.
#[derive(Debug, Default)]
pub struct CacheMetrics {
    requests: AtomicU64,
    /// `[success, denial]`
    hits: [AtomicU64; 2],
    prefetches: AtomicU64,
    served_stale: AtomicU64,
    /// `[success, denial]`
    evictions: [AtomicU64; 2],
    drops: AtomicU64,
    /// `[success, denial]`: this core's table; every core holds the same.
    entries: [AtomicU64; 2],
    bytes: AtomicU64,
}

/// The `type` label: SERVFAIL entries count as denial, as in CoreDNS.
fn cache_type(kind: kubewire_wire::CacheKind) -> usize {
    usize::from(kind != kubewire_wire::CacheKind::Success)
}

impl CacheMetrics {
    /// A forwarded name looked up.
    pub fn request(&self) {
        bump(&self.requests, 1);
    }
    /// Answered from the cache.
    pub fn hit(&self, kind: kubewire_wire::CacheKind) {
        bump(&self.hits[cache_type(kind)], 1);
    }
    /// A refresh asked before expiry (or behind a stale answer).
    pub fn prefetch(&self) {
        bump(&self.prefetches, 1);
    }
    /// Answered from an expired entry.
    pub fn served_stale(&self) {
        bump(&self.served_stale, 1);
    }
    /// An entry evicted for room.
    pub fn evicted(&self, kind: kubewire_wire::CacheKind) {
        bump(&self.evictions[cache_type(kind)], 1);
    }
    /// An upstream reply not cached because it is malformed.
    pub fn dropped(&self) {
        bump(&self.drops, 1);
    }
    /// The table now holds this many entries and bytes.
    pub fn set_entries(&self, success: usize, denial: usize, bytes: usize) {
        self.entries[0].store(success as u64, Ordering::Relaxed);
        self.entries[1].store(denial as u64, Ordering::Relaxed);
        self.bytes.store(bytes as u64, Ordering::Relaxed);
    }
}
