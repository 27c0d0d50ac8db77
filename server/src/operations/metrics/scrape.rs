//! The scrape: every core's counters read and summed, and written in the
//! Prometheus text format under CoreDNS's names and labels.

use super::*;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Everything a scrape reads.
#[derive(Debug)]
pub struct Scrape {
    /// `server` label per listen address.
    pub servers: Vec<String>,
    /// How many of them serve TLS or HTTPS (the last ones).
    pub tls_servers: usize,
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
    /// dnstap events dropped; `None` when dnstap is off.
    pub dnstap_dropped: Option<Arc<std::sync::atomic::AtomicU64>>,
    /// The top namespaces' query rates (at most [`TOP_NAMESPACES`] series),
    /// as the control plane last placed them; `None` when the debug
    /// endpoint (and so `kubewire top`'s counting) is off.
    #[allow(clippy::disallowed_types)] // written every few seconds, read per scrape
    top_namespaces: Option<std::sync::Mutex<Vec<(String, f64)>>>,
}

/// Namespaces in the top namespaces' gauge: a bounded set of series.
const TOP_NAMESPACES: usize = 10;

impl Scrape {
    /// Labels for the listen addresses, plain (`dns://`), DNS over TLS
    /// (`tls://`), then DNS over HTTPS (`https://`), in the order the cores
    /// count them.
    pub fn new(
        listen: &[SocketAddr],
        tls_listen: &[SocketAddr],
        https_listen: &[SocketAddr],
        cores: Vec<(usize, Arc<CoreMetrics>, Arc<CoreStatus>)>,
        control: Arc<ControlMetrics>,
        forward: (Vec<String>, Vec<Arc<ForwardMetrics>>),
        cache: Vec<Arc<CacheMetrics>>,
    ) -> Scrape {
        Scrape {
            forward,
            cache,
            servers: listen
                .iter()
                .map(|a| format!("dns://{a}"))
                .chain(tls_listen.iter().map(|a| format!("tls://{a}")))
                .chain(https_listen.iter().map(|a| format!("https://{a}")))
                .collect(),
            tls_servers: tls_listen.len() + https_listen.len(),
            families: listen
                .iter()
                .chain(tls_listen)
                .chain(https_listen)
                .map(|a| if a.is_ipv4() { "1" } else { "2" })
                .collect(),
            cores,
            control,
            autopath: false,
            dnstap_dropped: None,
            top_namespaces: None,
        }
    }

    /// Exports the top namespaces' query rates too (when `kubewire top`
    /// counts).
    pub fn with_top(mut self, on: bool) -> Scrape {
        self.top_namespaces = on.then(Default::default);
        self
    }

    /// The top namespaces' query rates for the next scrapes, largest first.
    pub fn set_top_namespaces(&self, mut rates: Vec<(String, f64)>) {
        rates.truncate(TOP_NAMESPACES);
        if let Some(held) = &self.top_namespaces {
            *held
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = rates;
        }
    }

    /// Exports `coredns_dnstap_dropped_total` too.
    pub fn with_dnstap(mut self, dropped: Option<Arc<std::sync::atomic::AtomicU64>>) -> Scrape {
        self.dnstap_dropped = dropped;
        self
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

    fn encode_handshakes(&self, encoder: &mut DescriptorEncoder<'_>) -> Encoded {
        if self.tls_servers == 0 {
            return Ok(());
        }
        let mut family = encoder.encode_descriptor(
            "kubewire_tls_handshakes",
            "TLS handshakes per DNS-over-TLS and DNS-over-HTTPS server, by outcome: done, failed, timed_out.",
            None,
            MetricType::Counter,
        )?;
        let first = self.servers.len() - self.tls_servers;
        for (listen, server) in self.servers.iter().enumerate().skip(first) {
            for outcome in Handshake::ALL {
                let count = self.sum(
                    |m| &m.handshakes,
                    listen * Handshake::ALL.len() + outcome as usize,
                );
                let labels = [("server", server.as_str()), ("outcome", outcome.label())];
                ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }

    fn encode_own(&self, encoder: &mut DescriptorEncoder<'_>) -> Encoded {
        self.encode_handshakes(encoder)?;
        if let Some(dropped) = &self.dnstap_dropped {
            let family = encoder.encode_descriptor(
                "coredns_dnstap_dropped",
                "dnstap events dropped (CoreDNS's name): the queue to the writer was full, or the collector could not be reached.",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(read(dropped)).encode(family)?;
        }
        if let Some(held) = &self.top_namespaces {
            let mut family = encoder.encode_descriptor(
                "kubewire_top_namespace_queries_per_second",
                "Queries a second from the pods of the namespaces that send the most (at most 10, from a sample of the queries over the last one to two minutes, placed by the pod index every 2 s; pods must be watched: autopath, or pods verified).",
                None,
                MetricType::Gauge,
            )?;
            let rates = held
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            for (namespace, rate) in rates {
                let labels = [("namespace", namespace.as_str())];
                ConstGauge::new(rate).encode(family.encode_family(&labels)?)?;
            }
        }
        self.encode_forward(encoder)?;
        self.encode_cache(encoder)?;
        type PerCore = fn(&CoreMetrics, &CoreStatus) -> u64;
        let per_core: [(&str, &str, MetricType, PerCore); 8] = [
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
                "kubewire_core_driven_stream_wakes",
                "TCP, TLS and HTTPS connections woken with bytes to read by the serving core's own poll (while a connection is busy) rather than by glommio's reactor, per serving core.",
                MetricType::Counter,
                |m, _| read(&m.driven_stream_wakes),
            ),
            (
                "kubewire_core_udp_ring_dropped",
                "Datagrams the io_uring UDP path dropped unanswered (longer than its receive buffers), per serving core.",
                MetricType::Counter,
                |m, _| read(&m.ring_dropped),
            ),
            (
                "kubewire_core_udp_ring_direct_replies",
                "Replies the io_uring UDP path sent with a plain sendto because every send slot was taken (a burst), per serving core.",
                MetricType::Counter,
                |m, _| read(&m.ring_direct_replies),
            ),
            (
                "kubewire_core_table_names",
                "Names in each serving core's answer table.",
                MetricType::Gauge,
                |_, status| status.names(),
            ),
            (
                "kubewire_core_table_bytes",
                "Heap bytes each serving core holds for itself: its name changes since the index of every name that the cores share (entries and the index are counted once, not per core).",
                MetricType::Gauge,
                |_, status| status.own_bytes(),
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
                    .encode(family.encode_family(&[("kind", kind.name())])?)?;
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
