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

use kubewire_answer::{CoreStatus, Kind};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
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

fn kind_label(kind: Kind) -> &'static str {
    match kind {
        Kind::Service => "Service",
        Kind::Slice => "EndpointSlice",
        Kind::Pod => "Pod",
        Kind::Namespace => "Namespace",
        Kind::Import => "ServiceImport",
    }
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

/// Everything a scrape reads.
#[derive(Debug)]
pub struct Scrape {
    /// `server` label per listen address.
    pub servers: Vec<String>,
    /// `family` label per listen address.
    pub families: Vec<&'static str>,
    /// Per core: its CPU, its counters and its status.
    pub cores: Vec<(usize, Arc<CoreMetrics>, Arc<CoreStatus>)>,
    /// The control plane's counters.
    pub control: Arc<ControlMetrics>,
    /// Upstream addresses (the `to` label) and each core's forwarding
    /// counters; empty when nothing is forwarded.
    pub forward: (Vec<String>, Vec<Arc<ForwardMetrics>>),
    /// Each core's cache counters; empty when nothing is cached.
    pub cache: Vec<Arc<CacheMetrics>>,
    /// Whether autopath is on: CoreDNS exports its counter only with the
    /// plugin, and a zero would say autopath ran and never helped.
    pub autopath: bool,
}

impl Scrape {
    /// Labels for the listen addresses.
    pub fn new(
        listen: &[SocketAddr],
        cores: Vec<(usize, Arc<CoreMetrics>, Arc<CoreStatus>)>,
        control: Arc<ControlMetrics>,
        forward: (Vec<String>, Vec<Arc<ForwardMetrics>>),
        cache: Vec<Arc<CacheMetrics>>,
    ) -> Scrape {
        Scrape {
            forward,
            cache,
            servers: listen.iter().map(|a| format!("dns://{a}")).collect(),
            families: listen
                .iter()
                .map(|a| if a.is_ipv4() { "1" } else { "2" })
                .collect(),
            cores,
            control,
            autopath: false,
        }
    }

    /// Exports `coredns_autopath_success_total` too.
    pub fn with_autopath(mut self, autopath: bool) -> Scrape {
        self.autopath = autopath;
        self
    }

    /// The whole exposition, in OpenMetrics text.
    pub fn render(self: &Arc<Scrape>) -> Result<String, std::fmt::Error> {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(Arc::clone(self)));
        let mut body = String::new();
        prometheus_client::encoding::text::encode(&mut body, &registry)?;
        Ok(body)
    }

    fn sum(&self, pick: impl Fn(&CoreMetrics) -> &[AtomicU64], index: usize) -> u64 {
        self.cores
            .iter()
            .filter_map(|(_, m, _)| pick(m).get(index).map(read))
            .sum()
    }
}

type Encoded = Result<(), std::fmt::Error>;

fn histogram(
    encoder: &mut prometheus_client::encoding::MetricEncoder<'_>,
    labels: &[(&str, &str)],
    bounds: &[f64],
    counts: &[u64],
    sum: f64,
) -> Encoded {
    let buckets: Vec<(f64, u64)> = bounds
        .iter()
        .copied()
        .chain(std::iter::once(f64::INFINITY))
        .zip(counts.iter().copied())
        .collect();
    let count = counts.iter().sum();
    encoder
        .encode_family(&labels)?
        .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Encoded {
        let proto_names = ["udp", "tcp"];
        let size_slots = SIZE_BOUNDS.len() + 1;
        let size_bounds: Vec<f64> = SIZE_BOUNDS.iter().map(|&b| b as f64).collect();

        if self.autopath {
            let mut family = encoder.encode_descriptor(
                "coredns_autopath_success",
                "Counter of requests that did autopath.",
                None,
                MetricType::Counter,
            )?;
            for (listen, server) in self.servers.iter().enumerate() {
                let count = self.sum(|m| &m.autopath_success, listen);
                ConstCounter::new(count)
                    .encode(family.encode_family(&[("server", server.as_str())])?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "coredns_dns_requests",
            "Counter of DNS requests made per zone, protocol and family.",
            None,
            MetricType::Counter,
        )?;
        for (listen, server) in self.servers.iter().enumerate() {
            for (proto, proto_name) in proto_names.iter().enumerate() {
                for slot in 0..TYPE_SLOTS {
                    let count = self.sum(|m| &m.requests, (listen * 2 + proto) * TYPE_SLOTS + slot);
                    if count == 0 {
                        continue;
                    }
                    let type_name = MONITORED_TYPES
                        .get(slot)
                        .and_then(|&t| kubewire_wire::rtype::name(t))
                        .unwrap_or("other");
                    let labels = [
                        ("server", server.as_str()),
                        ("zone", "."),
                        ("view", ""),
                        ("proto", proto_name),
                        ("family", self.families[listen]),
                        ("type", type_name),
                    ];
                    ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
                }
            }
        }

        let mut family = encoder.encode_descriptor(
            "coredns_dns_responses",
            "Counter of response status codes.",
            None,
            MetricType::Counter,
        )?;
        for (listen, server) in self.servers.iter().enumerate() {
            for (plugin, plugin_name) in Plugin::ALL.iter().map(|p| p.label()).enumerate() {
                for (rcode, rcode_name) in RCODE_NAMES.iter().enumerate() {
                    let index = (listen * Plugin::ALL.len() + plugin) * RCODE_SLOTS + rcode;
                    let count = self.sum(|m| &m.responses, index);
                    if count == 0 {
                        continue;
                    }
                    let labels = [
                        ("server", server.as_str()),
                        ("zone", "."),
                        ("view", ""),
                        ("rcode", rcode_name),
                        ("plugin", plugin_name),
                    ];
                    ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
                }
            }
        }

        let mut family = encoder.encode_descriptor(
            "coredns_dns_request_duration_seconds",
            "Histogram of the time (in seconds) each request took per zone.",
            None,
            MetricType::Histogram,
        )?;
        let duration_bounds: Vec<f64> =
            DURATION_BOUNDS_NS.iter().map(|&b| b as f64 / 1e9).collect();
        let duration_slots = DURATION_BOUNDS_NS.len() + 1;
        for (listen, server) in self.servers.iter().enumerate() {
            let counts: Vec<u64> = (0..duration_slots)
                .map(|b| self.sum(|m| &m.duration, listen * duration_slots + b))
                .collect();
            let sum = self.sum(|m| &m.duration_sum_ns, listen) as f64 / 1e9;
            let labels = [("server", server.as_str()), ("zone", "."), ("view", "")];
            histogram(&mut family, &labels, &duration_bounds, &counts, sum)?;
        }

        for (name, help, buckets, sums) in [
            (
                "coredns_dns_request_size_bytes",
                "Size of the EDNS0 UDP buffer in bytes (64K for TCP) per zone and protocol.",
                (|m: &CoreMetrics| &m.request_size[..]) as fn(&CoreMetrics) -> &[AtomicU64],
                (|m: &CoreMetrics| &m.request_size_sum[..]) as fn(&CoreMetrics) -> &[AtomicU64],
            ),
            (
                "coredns_dns_response_size_bytes",
                "Size of the returned response in bytes.",
                |m: &CoreMetrics| &m.response_size[..],
                |m: &CoreMetrics| &m.response_size_sum[..],
            ),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
            for (listen, server) in self.servers.iter().enumerate() {
                for (proto, proto_name) in proto_names.iter().enumerate() {
                    let lp = listen * 2 + proto;
                    let counts: Vec<u64> = (0..size_slots)
                        .map(|b| self.sum(buckets, lp * size_slots + b))
                        .collect();
                    if counts.iter().all(|&c| c == 0) {
                        continue;
                    }
                    let sum = self.sum(sums, lp) as f64;
                    let labels = [
                        ("server", server.as_str()),
                        ("zone", "."),
                        ("view", ""),
                        ("proto", proto_name),
                    ];
                    histogram(&mut family, &labels, &size_bounds, &counts, sum)?;
                }
            }
        }

        let family = encoder.encode_descriptor(
            "coredns_panics",
            "A metrics that counts the number of panics.",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(PANICS.load(Ordering::Relaxed)).encode(family)?;

        let mut family = encoder.encode_descriptor(
            "coredns_build_info",
            "A metric with a constant '1' value labeled by version, revision, and goversion from which CoreDNS was built.",
            None,
            MetricType::Gauge,
        )?;
        let labels = [
            ("version", env!("CARGO_PKG_VERSION")),
            (
                "revision",
                option_env!("KUBEWIRE_GIT_REVISION").unwrap_or("unknown"),
            ),
            ("goversion", "none (kubewire is written in Rust)"),
        ];
        ConstGauge::new(1i64).encode(family.encode_family(&labels)?)?;

        self.encode_own(&mut encoder)
    }
}

impl Scrape {
    fn encode_forward(&self, encoder: &mut DescriptorEncoder<'_>) -> Encoded {
        let (upstreams, cores) = &self.forward;
        if cores.is_empty() {
            return Ok(());
        }
        let sum = |pick: fn(&ForwardMetrics) -> &[AtomicU64], index: usize| -> u64 {
            cores
                .iter()
                .filter_map(|m| pick(m).get(index).map(read))
                .sum()
        };
        let slots = DURATION_BOUNDS_NS.len() + 1;
        let bounds: Vec<f64> = DURATION_BOUNDS_NS.iter().map(|&b| b as f64 / 1e9).collect();
        let mut family = encoder.encode_descriptor(
            "coredns_proxy_request_duration_seconds",
            "Histogram of the time each request took.",
            None,
            MetricType::Histogram,
        )?;
        for (upstream, to) in upstreams.iter().enumerate() {
            for (rcode, rcode_name) in RCODE_NAMES.iter().enumerate() {
                let series = upstream * RCODE_SLOTS + rcode;
                let counts: Vec<u64> = (0..slots)
                    .map(|b| sum(|m| &m.duration, series * slots + b))
                    .collect();
                if counts.iter().all(|&c| c == 0) {
                    continue;
                }
                let total = sum(|m| &m.duration_sum_ns, series) as f64 / 1e9;
                let labels = [
                    ("proxy_name", "forward"),
                    ("to", to.as_str()),
                    ("rcode", rcode_name),
                ];
                histogram(&mut family, &labels, &bounds, &counts, total)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "coredns_proxy_healthcheck_failures",
            "Counter of the number of failed healthchecks.",
            None,
            MetricType::Counter,
        )?;
        for (upstream, to) in upstreams.iter().enumerate() {
            let labels = [("proxy_name", "forward"), ("to", to.as_str())];
            ConstCounter::new(sum(|m| &m.healthcheck_failures, upstream))
                .encode(family.encode_family(&labels)?)?;
        }
        for (name, help, pick) in [
            (
                "coredns_proxy_conn_cache_hits",
                "Counter of connection cache hits per upstream and protocol (a kept UDP socket or TCP connection reused).",
                (|m| &m.conn_hits) as fn(&ForwardMetrics) -> &[AtomicU64],
            ),
            (
                "coredns_proxy_conn_cache_misses",
                "Counter of connection cache misses per upstream and protocol (a UDP socket opened or renewed, a new TCP connection when none is kept).",
                |m| &m.conn_misses,
            ),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (upstream, to) in upstreams.iter().enumerate() {
                for (proto, proto_name) in ["udp", "tcp"].iter().enumerate() {
                    let labels = [
                        ("proxy_name", "forward"),
                        ("to", to.as_str()),
                        ("proto", proto_name),
                    ];
                    ConstCounter::new(sum(pick, upstream * 2 + proto))
                        .encode(family.encode_family(&labels)?)?;
                }
            }
        }
        for (name, help, pick) in [
            (
                "coredns_forward_healthcheck_broken",
                "Counter of the number of complete failures of the healthchecks.",
                (|m| &m.broken) as fn(&ForwardMetrics) -> &AtomicU64,
            ),
            (
                "coredns_forward_max_concurrent_rejects",
                "Counter of the number of queries rejected because the concurrent queries were at maximum.",
                |m| &m.max_concurrent_rejects,
            ),
            (
                "kubewire_forward_mismatched_replies",
                "Datagrams dropped while waiting for an upstream reply: wrong source, ID or question.",
                |m| &m.mismatched,
            ),
        ] {
            let family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            let total: u64 = cores.iter().map(|m| read(pick(m))).sum();
            ConstCounter::new(total).encode(family)?;
        }
        Ok(())
    }

    fn encode_cache(&self, encoder: &mut DescriptorEncoder<'_>) -> Encoded {
        if self.cache.is_empty() {
            return Ok(());
        }
        let server = self.servers.first().map_or("", String::as_str);
        let base = [("server", server), ("zones", "."), ("view", "")];
        let types = ["success", "denial"];
        let sum = |pick: &dyn Fn(&CacheMetrics) -> &AtomicU64| -> u64 {
            self.cache.iter().map(|m| read(pick(m))).sum()
        };
        // Every core holds the same entries: a table's size is the node's.
        let most = |pick: &dyn Fn(&CacheMetrics) -> &AtomicU64| -> u64 {
            self.cache.iter().map(|m| read(pick(m))).max().unwrap_or(0)
        };
        let mut family = encoder.encode_descriptor(
            "coredns_cache_entries",
            "The number of elements in the cache.",
            None,
            MetricType::Gauge,
        )?;
        for (index, name) in types.iter().enumerate() {
            let labels = [base[0], ("type", name), base[1], base[2]];
            ConstGauge::new(most(&|m| &m.entries[index]) as i64)
                .encode(family.encode_family(&labels)?)?;
        }
        for (name, help, per_type) in [
            ("coredns_cache_hits", "The count of cache hits.", 0usize),
            (
                "coredns_cache_evictions",
                "The count of cache evictions.",
                1,
            ),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (index, type_name) in types.iter().enumerate() {
                let labels = [base[0], ("type", type_name), base[1], base[2]];
                let count = if per_type == 0 {
                    sum(&|m| &m.hits[index])
                } else {
                    most(&|m| &m.evictions[index])
                };
                ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
            }
        }
        let hits: u64 = sum(&|m| &m.hits[0]) + sum(&|m| &m.hits[1]);
        let requests = sum(&|m| &m.requests);
        for (name, help, count) in [
            (
                "coredns_cache_requests",
                "The count of cache requests.",
                requests,
            ),
            (
                "coredns_cache_misses",
                "The count of cache misses. Deprecated, derive misses from cache hits/requests counters.",
                requests.saturating_sub(hits),
            ),
            (
                "coredns_cache_prefetch",
                "The number of times the cache has prefetched a cached item.",
                sum(&|m| &m.prefetches),
            ),
            (
                "coredns_cache_served_stale",
                "The number of requests served from stale cache entries.",
                sum(&|m| &m.served_stale),
            ),
            (
                "coredns_cache_drops",
                "The number responses that are not cached, because the reply is malformed.",
                sum(&|m| &m.drops),
            ),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(count).encode(family.encode_family(&base)?)?;
        }
        let family = encoder.encode_descriptor(
            "kubewire_cache_bytes",
            "Bytes held by one core's cache table (every core holds the same entries; their records are stored once).",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(most(&|m| &m.bytes) as i64).encode(family)?;
        Ok(())
    }

    fn encode_own(&self, encoder: &mut DescriptorEncoder<'_>) -> Encoded {
        self.encode_forward(encoder)?;
        self.encode_cache(encoder)?;
        type PerCore = fn(&CoreMetrics, &CoreStatus) -> u64;
        let per_core: [(&str, &str, MetricType, PerCore); 4] = [
            (
                "kubewire_core_queries",
                "DNS queries answered per serving core.",
                MetricType::Counter,
                |m, _| m.queries(),
            ),
            (
                "kubewire_core_dropped",
                "Datagrams that were not DNS queries and got no reply, per serving core.",
                MetricType::Counter,
                |m, _| read(&m.dropped),
            ),
            (
                "kubewire_core_table_names",
                "Names in each serving core's answer table.",
                MetricType::Gauge,
                |_, status| status.names(),
            ),
            (
                "kubewire_core_table_revision",
                "Revision of the answer table each serving core holds.",
                MetricType::Gauge,
                |_, status| status.applied_revision(),
            ),
        ];
        for (name, help, metric_type, value) in per_core {
            let mut family = encoder.encode_descriptor(name, help, None, metric_type)?;
            for (cpu, metrics, status) in &self.cores {
                let cpu = cpu.to_string();
                let labels = [("cpu", cpu.as_str())];
                let series = family.encode_family(&labels)?;
                let value = value(metrics, status);
                match metric_type {
                    MetricType::Counter => ConstCounter::new(value).encode(series)?,
                    _ => ConstGauge::new(value).encode(series)?,
                }
            }
        }
        let mut family = encoder.encode_descriptor(
            "kubewire_delta_apply_latency_seconds",
            "Time from an update's publication by the control plane to its application on a core.",
            None,
            MetricType::Histogram,
        )?;
        let bounds: Vec<f64> = DELTA_BOUNDS_NS.iter().map(|&b| b as f64 / 1e9).collect();
        for (cpu, metrics, _) in &self.cores {
            let cpu = cpu.to_string();
            let counts: Vec<u64> = metrics.delta_latency.iter().map(read).collect();
            let sum = read(&metrics.delta_latency_sum_ns) as f64 / 1e9;
            histogram(&mut family, &[("cpu", cpu.as_str())], &bounds, &counts, sum)?;
        }
        let control = &self.control;
        for (name, help, values) in [
            (
                "kubewire_watch_events",
                "Watch events received from the Kubernetes API, per kind.",
                &control.watch_events,
            ),
            (
                "kubewire_relists",
                "Completed lists (the first sync, and relists after 410 Gone or a restart), per kind.",
                &control.relists,
            ),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for kind in KINDS.into_iter().filter(|&k| control.watched[kind_slot(k)]) {
                ConstCounter::new(read(&values[kind_slot(kind)]))
                    .encode(family.encode_family(&[("kind", kind_label(kind))])?)?;
            }
        }
        let family = encoder.encode_descriptor(
            "kubewire_synced",
            "1 once the first full sync is in the answers, else 0.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(i64::from(control.synced.load(Ordering::Relaxed))).encode(family)?;
        if control.cluster {
            let family = encoder.encode_descriptor(
                "kubewire_api_contact_age_seconds",
                "Seconds since the Kubernetes API last delivered a list or watch event (-1: never).",
                None,
                MetricType::Gauge,
            )?;
            let at = read(&control.last_api_contact_ns);
            let age = if at == u64::MAX {
                -1.0
            } else {
                (control.started.elapsed().as_nanos() as f64 - at as f64).max(0.0) / 1e9
            };
            ConstGauge::new(age).encode(family)?;
        }
        if control.node_local {
            let mut family = encoder.encode_descriptor(
                "coredns_nodecache_setup_errors",
                "Node-local setup and check failures, by type (node-cache's metric; nftables failures count as iptables).",
                None,
                MetricType::Counter,
            )?;
            for (slot, errortype) in SETUP_ERROR_TYPES.iter().enumerate() {
                ConstCounter::new(read(&control.setup_errors[slot]))
                    .encode(family.encode_family(&[("errortype", *errortype)])?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn counts_are_summed_across_cores_at_scrape() {
        let a = Arc::new(CoreMetrics::new(1));
        let b = Arc::new(CoreMetrics::new(1));
        let query = Answered {
            listen: 0,
            proto: Proto::Udp,
            qtype: 1,
            rcode: kubewire_wire::Rcode::NXDOMAIN,
            plugin: Plugin::Kubernetes,
            request_len: 50,
            response_len: 120,
        };
        a.answered(&query);
        b.answered(&query);
        b.answered(&Answered {
            qtype: 99,
            proto: Proto::Tcp,
            ..query
        });
        a.took(0, 2, 100_000);
        let scrape = Arc::new(Scrape::new(
            &["127.0.0.1:53".parse().unwrap()],
            vec![
                (0, a, Arc::new(CoreStatus::default())),
                (1, b, Arc::new(CoreStatus::default())),
            ],
            Arc::new(ControlMetrics::new(false)),
            (Vec::new(), Vec::new()),
            Vec::new(),
        ));
        let text = scrape.render().unwrap();
        assert!(text.contains("coredns_dns_requests_total{server=\"dns://127.0.0.1:53\",zone=\".\",view=\"\",proto=\"udp\",family=\"1\",type=\"A\"} 2\n"), "{text}");
        assert!(text.contains("type=\"other\"} 1\n"), "{text}");
        assert!(text.contains("coredns_dns_responses_total{server=\"dns://127.0.0.1:53\",zone=\".\",view=\"\",rcode=\"NXDOMAIN\",plugin=\"kubernetes\"} 3\n"), "{text}");
        assert!(text.contains("coredns_dns_request_duration_seconds_count{server=\"dns://127.0.0.1:53\",zone=\".\",view=\"\"} 2\n"), "{text}");
        assert!(
            text.contains("kubewire_core_queries_total{cpu=\"1\"} 2\n"),
            "{text}"
        );
        assert!(!text.contains("kubewire_api_contact_age_seconds"), "{text}");
        assert!(!text.contains("coredns_autopath_success"), "{text}");
        let with_autopath = Arc::new(Arc::try_unwrap(scrape).unwrap().with_autopath(true));
        let text = with_autopath.render().unwrap();
        assert!(
            text.contains("coredns_autopath_success_total{server=\"dns://127.0.0.1:53\"} 0\n"),
            "{text}"
        );
    }

    #[test]
    fn kinds_not_watched_have_no_series() {
        let scrape = |control: ControlMetrics| {
            Arc::new(Scrape::new(
                &["127.0.0.1:53".parse().unwrap()],
                Vec::new(),
                Arc::new(control),
                (Vec::new(), Vec::new()),
                Vec::new(),
            ))
            .render()
            .unwrap()
        };
        let all = scrape(ControlMetrics::new(true));
        let some = scrape(ControlMetrics::new(true).with_watched(false, false));
        for kind in ["Service", "EndpointSlice", "Namespace"] {
            let series = format!("kubewire_watch_events_total{{kind=\"{kind}\"}} 0\n");
            assert!(all.contains(&series) && some.contains(&series), "{some}");
        }
        for kind in ["Pod", "ServiceImport"] {
            let series = format!("kubewire_relists_total{{kind=\"{kind}\"}} 0\n");
            assert!(all.contains(&series), "{all}");
            assert!(!some.contains(&format!("kind=\"{kind}\"")), "{some}");
        }
    }

    #[test]
    fn buckets_are_inclusive_upper_bounds() {
        assert_eq!(bucket(&SIZE_BOUNDS, 0), 0);
        assert_eq!(bucket(&SIZE_BOUNDS, 100), 1);
        assert_eq!(bucket(&SIZE_BOUNDS, 101), 2);
        assert_eq!(bucket(&SIZE_BOUNDS, 70_000), SIZE_BOUNDS.len());
        assert_eq!(bucket(&DURATION_BOUNDS_NS, 250_000), 0);
        assert_eq!(bucket(&DURATION_BOUNDS_NS, 250_001), 1);
    }
}
