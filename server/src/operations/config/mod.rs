//! The configuration: a TOML file (`--config`), overridden by `KUBEWIRE_*`
//! environment variables and then by flags.
//!
//! Every setting is listed in [`KEYS`] with what it allows and whether
//! it changes live; its default is whatever [`Config::default`] holds, so
//! the two cannot drift apart (a unit test checks that they name the same
//! keys). `kubewire config print` writes the effective configuration with
//! that documentation as comments.
//!
//! Errors name the file, the line, the key and what is allowed:
//!
//! ```text
//! kubewire.toml:3: unknown key "dns.ttl"; did you mean "dns.ttl_seconds"? The keys of [dns] are: listen, cores, zones, ttl_seconds, udp_io
//! kubewire.toml:7: kubernetes.pods: pod mode "strict" is not one of: disabled, insecure, verified
//! ```

mod load;
mod reference;
#[cfg(test)]
mod tests;
mod values;

pub use load::{ConfigCause, ConfigError};
pub use reference::{KEYS, KeyDoc, env_var};
pub use values::{DnsName, DnsNameError, Protocol, Upstream, UpstreamEntry, UpstreamSpecError};

use kubewire_answer::PodMode;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Display;
use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;

/// The whole configuration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// What is served, and where.
    pub dns: Dns,
    /// How cluster objects become records.
    pub kubernetes: Kubernetes,
    /// Services' external addresses in zones of their own.
    pub k8s_external: K8sExternal,
    /// Where the objects come from.
    pub source: SourceConfig,
    /// The HTTP endpoints.
    pub http: Http,
    /// Shutdown.
    pub lifecycle: Lifecycle,
    /// Logging.
    pub log: Log,
    /// TCP limits.
    pub tcp: Tcp,
    /// DNS over TLS, served.
    pub tls: TlsServing,
    /// Forwarding of names outside the cluster zones.
    pub forward: Forward,
    /// The cache of forwarded answers.
    pub cache: Cache,
    /// Node-local mode: the per-node cache on a link-local address.
    pub node_local: NodeLocal,
    /// dnstap: every query and upstream exchange, to a collector.
    pub dnstap: Dnstap,
}

/// `[dnstap]`, as CoreDNS's `dnstap` plugin.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Dnstap {
    /// `unix:///PATH` or `tcp://IP:PORT`; empty: off.
    pub to: String,
    /// With the DNS messages themselves.
    pub full: bool,
    /// Sent as `identity`; empty: the host name.
    pub identity: String,
    /// Sent as `version`; empty: `kubewire VERSION`.
    pub version: String,
    /// Sent as `extra`; empty: none.
    pub extra: String,
}

/// `[dns]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Dns {
    /// Addresses served over UDP and TCP.
    pub listen: Vec<SocketAddr>,
    /// `all`, a count, or a CPU list.
    #[serde(with = "as_text")]
    pub cores: CoreSpec,
    /// Cluster zones.
    pub zones: Vec<DnsName>,
    /// TTL of every record, in seconds.
    pub ttl_seconds: u32,
    /// UDP I/O mode.
    pub udp_io: UdpIo,
}

impl Default for Dns {
    fn default() -> Dns {
        Dns {
            listen: vec![SocketAddr::from((Ipv4Addr::LOCALHOST, 5353))],
            cores: CoreSpec::All,
            zones: vec![DnsName::from_static("cluster.local")],
            ttl_seconds: 5,
            udp_io: UdpIo::IoUring,
        }
    }
}

/// `[kubernetes]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Kubernetes {
    /// Pod records.
    #[serde(with = "as_text")]
    pub pods: PodMode,
    /// Name endpoints without a hostname after their pod.
    pub endpoint_pod_names: bool,
    /// ClusterIP Services without a ready endpoint are NXDOMAIN.
    pub ignore_empty_service: bool,
    /// Answer `<zone>.pin._zone.…` and `<zone>.prefer._zone.…` names.
    pub zonal: bool,
    /// Complete pods' search paths on the server.
    pub autopath: bool,
    /// Where autopath reads the host's search domains; empty: none.
    pub autopath_resolv_conf: String,
    /// Namespaces served; empty means all.
    pub namespaces: Vec<String>,
    /// Label selector for Services; empty means all.
    pub labels: String,
    /// How long to wait for the first sync before answering anyway.
    pub startup_timeout_ms: u64,
    /// Zones whose unknown names go on to forwarding instead of NXDOMAIN.
    pub fallthrough: Vec<DnsName>,
    /// Zones (among `dns.zones`) answered from ServiceImports.
    pub multicluster: Vec<DnsName>,
}

impl Default for Kubernetes {
    fn default() -> Kubernetes {
        Kubernetes {
            pods: PodMode::Insecure,
            endpoint_pod_names: false,
            ignore_empty_service: false,
            zonal: false,
            autopath: false,
            autopath_resolv_conf: "/etc/resolv.conf".into(),
            namespaces: Vec::new(),
            labels: String::new(),
            startup_timeout_ms: 5_000,
            fallthrough: Vec::new(),
            multicluster: Vec::new(),
        }
    }
}

/// `[k8s_external]`: as CoreDNS's `k8s_external` plugin.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct K8sExternal {
    /// External zones; empty means off.
    pub zones: Vec<DnsName>,
    /// The label of the zones' own name server, `ns1.<apex>.<zone>`.
    pub apex: String,
    /// TTL of external records and of the SOA.
    pub ttl_seconds: u32,
    /// Headless Services without external addresses answer with endpoints.
    pub headless: bool,
    /// External zones whose unknown names go on to forwarding.
    pub fallthrough: Vec<DnsName>,
}

impl Default for K8sExternal {
    fn default() -> K8sExternal {
        K8sExternal {
            zones: Vec::new(),
            apex: "dns".into(),
            ttl_seconds: 5,
            headless: false,
            fallthrough: Vec::new(),
        }
    }
}

/// The names of a list of zones, lowercase.
fn names(list: &[DnsName]) -> Vec<kubewire_wire::NameBuf> {
    list.iter().map(|zone| *zone.name()).collect()
}

impl Config {
    /// The zones answered from objects: `dns.zones`, or none when node-local
    /// mode forwards them to kube-dns.
    pub fn answered_zones(&self) -> &[DnsName] {
        if self.node_local.forwards_cluster_names() {
            &[]
        } else {
            &self.dns.zones
        }
    }

    /// The compiler's settings: the one mapping from the configuration,
    /// used at start and at every reload (which changes only live keys).
    pub fn compiler_settings(&self) -> kubewire_answer::Settings {
        let reverse = [
            DnsName::from_static("in-addr.arpa"),
            DnsName::from_static("ip6.arpa"),
        ];
        // A reverse zone holds PTR records alone, served with authority.
        let (reverse_authoritative, zones): (Vec<_>, Vec<_>) = names(self.answered_zones())
            .into_iter()
            .partition(|zone| reverse.iter().any(|r| zone.ends_with(r.name())));
        kubewire_answer::Settings {
            zones,
            reverse_authoritative,
            fallthrough: names(&self.kubernetes.fallthrough),
            ttl: self.dns.ttl_seconds,
            pod_mode: self.kubernetes.pods,
            endpoint_pod_names: self.kubernetes.endpoint_pod_names,
            ignore_empty_service: self.kubernetes.ignore_empty_service,
            zonal: self.kubernetes.zonal,
            autopath: self.kubernetes.autopath,
            external: self.k8s_external.settings(),
            multicluster: names(&self.kubernetes.multicluster),
            own_ips: crate::operations::preflight::own_addresses(),
            ..kubewire_answer::Settings::default()
        }
    }
}

impl K8sExternal {
    /// The compiler's settings, or `None` when off.
    pub fn settings(&self) -> Option<kubewire_answer::ExternalZones> {
        (!self.zones.is_empty()).then(|| kubewire_answer::ExternalZones {
            zones: names(&self.zones),
            apex: self.apex.to_ascii_lowercase().into_bytes().into(),
            ttl: self.ttl_seconds,
            headless: self.headless,
            fallthrough: names(&self.fallthrough),
        })
    }
}

/// Where objects come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// The Kubernetes API.
    #[default]
    Cluster,
    /// A watched manifest file or directory.
    Manifests,
    /// The embedded demo cluster.
    Demo,
}

/// `[source]`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceConfig {
    /// Which source.
    pub kind: SourceKind,
    /// Kubeconfig path for `cluster`; empty means search.
    pub kubeconfig: String,
    /// Manifest path for `manifests`.
    pub manifests: String,
}

/// `dns.cores`: which CPUs serve, one pinned core each.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum CoreSpec {
    /// Every CPU in the affinity mask.
    #[default]
    All,
    /// The first this many of them.
    Count(usize),
    /// Exactly these CPUs, in order, without repeats.
    List(Vec<usize>),
}

impl FromStr for CoreSpec {
    type Err = String;
    fn from_str(text: &str) -> Result<CoreSpec, String> {
        let text = text.trim();
        if text == "all" {
            return Ok(CoreSpec::All);
        }
        if !text.contains([',', '-'])
            && let Ok(count) = text.parse::<usize>()
        {
            if count == 0 {
                return Err("at least one core is needed".into());
            }
            return Ok(CoreSpec::Count(count));
        }
        let mut cpus = Vec::new();
        for part in text.split(',') {
            let part = part.trim();
            let (first, last) = part.split_once('-').unwrap_or((part, part));
            let (Ok(first), Ok(last)) =
                (first.trim().parse::<usize>(), last.trim().parse::<usize>())
            else {
                return Err(format!(
                    "{part:?} is not a CPU number or range; write \"all\", a count such as \"2\", or a list such as \"0,2-3\""
                ));
            };
            if first > last {
                return Err(format!("range {part:?} runs backwards"));
            }
            for cpu in first..=last {
                if !cpus.contains(&cpu) {
                    cpus.push(cpu);
                }
            }
        }
        Ok(CoreSpec::List(cpus))
    }
}

impl Display for CoreSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CoreSpec::All => f.write_str("all"),
            CoreSpec::Count(count) => write!(f, "{count}"),
            CoreSpec::List(cpus) => {
                // Runs as ranges; a lone CPU as "N-N", which a count is not.
                let mut runs: Vec<(usize, usize)> = Vec::new();
                for &cpu in cpus {
                    match runs.last_mut() {
                        Some((_, last)) if *last + 1 == cpu => *last = cpu,
                        _ => runs.push((cpu, cpu)),
                    }
                }
                let text: Vec<String> = runs
                    .iter()
                    .map(|&(a, b)| {
                        if a == b && runs.len() > 1 {
                            a.to_string()
                        } else {
                            format!("{a}-{b}")
                        }
                    })
                    .collect();
                f.write_str(&text.join(","))
            }
        }
    }
}

/// An HTTP listen address, or none (`""`). `:PORT` means every interface,
/// as in a Corefile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OptionalAddr(pub Option<SocketAddr>);

impl FromStr for OptionalAddr {
    type Err = String;
    fn from_str(text: &str) -> Result<OptionalAddr, String> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(OptionalAddr(None));
        }
        let full = match text.strip_prefix(':') {
            Some(port) => format!("0.0.0.0:{port}"),
            None => text.to_string(),
        };
        full.parse().map(|a| OptionalAddr(Some(a))).map_err(|_| {
            format!("{text:?} is not an address; write IP:PORT, :PORT, or \"\" to turn it off")
        })
    }
}

impl Display for OptionalAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(addr) => write!(f, "{addr}"),
            None => Ok(()),
        }
    }
}

/// `[http]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Http {
    /// `/health`.
    #[serde(with = "as_text")]
    pub health_addr: OptionalAddr,
    /// `/ready`.
    #[serde(with = "as_text")]
    pub ready_addr: OptionalAddr,
    /// `/metrics`.
    #[serde(with = "as_text")]
    pub metrics_addr: OptionalAddr,
    /// `/debug/explain` and `/debug/top`, read-only; off by default.
    #[serde(with = "as_text")]
    pub debug_addr: OptionalAddr,
    /// A file holding the bearer token the debug endpoint asks for; empty:
    /// none (then it must listen on loopback).
    pub debug_token_file: String,
    /// Most debug requests a second, over all clients.
    pub debug_requests_per_second: u32,
}

impl Default for Http {
    fn default() -> Http {
        let all = |port| OptionalAddr(Some(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))));
        Http {
            health_addr: all(8080),
            ready_addr: all(8181),
            metrics_addr: all(9153),
            debug_addr: OptionalAddr(None),
            debug_token_file: String::new(),
            debug_requests_per_second: 20,
        }
    }
}

/// `[lifecycle]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Lifecycle {
    /// How long to keep serving after SIGTERM, with `/ready` at 503.
    pub lameduck_ms: u64,
}

impl Default for Lifecycle {
    fn default() -> Lifecycle {
        Lifecycle { lameduck_ms: 5_000 }
    }
}

/// `[log]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// A tracing filter.
    pub level: String,
    /// Text or JSON.
    pub format: LogFormat,
    /// Log one query in this many; 0 turns the query log off.
    pub query_log_sample: u32,
    /// At most this many query log lines per second per core.
    pub query_log_max_per_second: u32,
}

impl Default for Log {
    fn default() -> Log {
        Log {
            level: "info".into(),
            format: LogFormat::Text,
            query_log_sample: 0,
            query_log_max_per_second: 100,
        }
    }
}

/// `[tcp]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tcp {
    /// Close a connection idle this long.
    pub idle_timeout_ms: u64,
    /// Most open connections per core.
    pub max_connections: usize,
}

impl Default for Tcp {
    fn default() -> Tcp {
        Tcp {
            idle_timeout_ms: 10_000,
            max_connections: 1024,
        }
    }
}

/// `[tls]`: DNS over TLS (RFC 7858) and over HTTPS (RFC 8484) served, from
/// the same table, forwarding and cache as UDP and TCP, under the TCP
/// limits (one connection cap per core for all three).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsServing {
    /// Addresses served over DNS over TLS; empty: none.
    pub listen: Vec<SocketAddr>,
    /// Addresses served over DNS over HTTPS (`/dns-query`); empty: none.
    pub https_listen: Vec<SocketAddr>,
    /// Most HTTP/2 streams at once on one DNS-over-HTTPS connection.
    pub https_max_streams: u32,
    /// The certificate chain, PEM, leaf first.
    pub cert_file: String,
    /// Its private key, PEM.
    pub key_file: String,
    /// CAs a client certificate must chain to; empty: none is asked.
    pub client_ca_file: String,
    /// A handshake must finish within this.
    pub handshake_timeout_ms: u64,
    /// How often the files are checked for a new certificate.
    pub reload_check_ms: u64,
}

impl Default for TlsServing {
    fn default() -> TlsServing {
        TlsServing {
            listen: Vec::new(),
            https_listen: Vec::new(),
            https_max_streams: 100,
            cert_file: String::new(),
            key_file: String::new(),
            client_ca_file: String::new(),
            handshake_timeout_ms: 5_000,
            reload_check_ms: 2_000,
        }
    }
}

/// How a forwarded query picks among a zone's upstreams.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// A random order per query (CoreDNS's default).
    #[default]
    Random,
    /// Each query starts at the next upstream.
    RoundRobin,
    /// Always in the order given.
    Sequential,
}

/// `[forward]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Forward {
    /// Upstreams for every name outside the cluster zones; empty: none.
    pub to: Vec<UpstreamEntry>,
    /// Upstreams per zone (kube-dns's stubDomains); the longest zone wins.
    pub stub_domains: BTreeMap<DnsName, Vec<UpstreamEntry>>,
    /// Zones never forwarded (REFUSED, as without forwarding).
    pub except: Vec<DnsName>,
    /// Order in which upstreams are tried.
    pub policy: Policy,
    /// How long one attempt waits for a reply.
    pub timeout_ms: u64,
    /// Attempts per query, each on the next upstream in order.
    pub max_attempts: u32,
    /// Consecutive failures that mark an upstream down.
    pub max_fails: u32,
    /// How often a down upstream is health-checked.
    pub health_check_ms: u64,
    /// With every upstream down: SERVFAIL at once instead of trying one.
    pub failfast_all_unhealthy_upstreams: bool,
    /// Forwarded queries in flight per core; more get REFUSED.
    pub max_concurrent_per_core: usize,
    /// Send every upstream query over TCP.
    pub force_tcp: bool,
    /// Retry a truncated UDP reply over TCP only if this is false.
    pub prefer_udp: bool,
    /// The name `tls://` upstreams' certificates must be for.
    pub tls_servername: String,
    /// PEM file of the CAs trusted for `tls://` upstreams; empty: the system's.
    pub tls_ca_file: String,
}

impl Default for Forward {
    fn default() -> Forward {
        Forward {
            to: Vec::new(),
            stub_domains: BTreeMap::new(),
            except: Vec::new(),
            policy: Policy::Random,
            timeout_ms: 2_000,
            max_attempts: 3,
            max_fails: 2,
            health_check_ms: 500,
            failfast_all_unhealthy_upstreams: false,
            max_concurrent_per_core: 1_000,
            force_tcp: false,
            prefer_udp: false,
            tls_servername: String::new(),
            tls_ca_file: String::new(),
        }
    }
}

impl Forward {
    /// Whether any name is forwarded.
    pub fn enabled(&self) -> bool {
        !self.to.is_empty() || !self.stub_domains.is_empty()
    }
}

/// How the UDP path does its I/O.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UdpIo {
    /// `recvmmsg`/`sendmmsg` on the raw socket, driven inside the executor:
    /// what `io_uring` falls back to.
    Batched,
    /// glommio's `recv_from`/`send_to`.
    Glommio,
    /// The default. One io_uring per core for all its listen sockets: a
    /// multishot `recvmsg` over provided buffers, and replies as `send`
    /// requests. The forwarder's upstream sockets ride on the same ring.
    /// Where the kernel refuses the ring, kubewire logs why once and serves
    /// with `batched`.
    #[value(name = "io_uring")]
    #[serde(rename = "io_uring")]
    IoUring,
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// How serve-stale refreshes an expired entry (CoreDNS's `REFRESH_MODE`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StaleMode {
    /// Answer stale at once, and refresh behind.
    #[default]
    Immediate,
    /// Ask the upstream first; answer stale only if it fails.
    Verify,
}

/// `[cache]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Cache {
    /// Cache forwarded answers (when anything is forwarded).
    pub enabled: bool,
    /// Positive answers live at most this long.
    pub max_ttl_s: u32,
    /// Positive answers live at least this long.
    pub min_ttl_s: u32,
    /// Negative answers live at most this long.
    pub denial_max_ttl_s: u32,
    /// Negative answers live at least this long.
    pub denial_min_ttl_s: u32,
    /// SERVFAIL lives this long; 0 does not cache it.
    pub servfail_ttl_s: u32,
    /// Most entries; more evict the least recently used.
    pub max_entries: usize,
    /// Most bytes of entries; more evict the least recently used.
    pub max_bytes: usize,
    /// Hits that make an entry popular; 0 turns prefetch off.
    pub prefetch_amount: u32,
    /// Hits further apart than this start the count again.
    pub prefetch_window_s: u32,
    /// Refresh a popular entry when this share of its TTL is left.
    pub prefetch_percent: u32,
    /// Serve an expired entry this long when upstreams fail; 0: never.
    pub serve_stale_s: u32,
    /// How serve-stale refreshes.
    pub serve_stale_mode: StaleMode,
    /// The TTL of a stale answer.
    pub stale_ttl_s: u32,
    /// Answer with the stored TTLs, not aged.
    pub keep_ttl: bool,
}

impl Default for Cache {
    fn default() -> Cache {
        Cache {
            enabled: true,
            max_ttl_s: 30,
            min_ttl_s: 5,
            denial_max_ttl_s: 30,
            denial_min_ttl_s: 5,
            servfail_ttl_s: 5,
            max_entries: 10_000,
            max_bytes: 16 << 20,
            prefetch_amount: 0,
            prefetch_window_s: 60,
            prefetch_percent: 10,
            serve_stale_s: 0,
            serve_stale_mode: StaleMode::Immediate,
            stale_ttl_s: 30,
            keep_ttl: false,
        }
    }
}

/// Which tool manages node-local's NOTRACK rules.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Notrack {
    /// nftables if `nft` works on this node, else iptables.
    #[default]
    Auto,
    /// A table of kubewire's own, through `nft`.
    Nftables,
    /// Rules in the raw table, through `iptables` and `ip6tables`.
    Iptables,
    /// No rules: DNS to the node-local addresses stays in conntrack.
    Off,
}

/// The kind of interface that holds node-local's addresses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InterfaceKind {
    /// A dummy interface, as node-cache makes (needs the kernel's dummy driver).
    #[default]
    Dummy,
    /// A bridge with no ports: holds local addresses just as well, on
    /// kernels built without the dummy driver.
    Bridge,
}

/// Where node-local mode gets cluster names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClusterNames {
    /// From its own watch of the API (or the configured source), live.
    #[default]
    Watch,
    /// Forwarded to the kube-dns Service over TCP, and cached.
    Forward,
}

/// `[node_local]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeLocal {
    /// Run as the node's DNS cache, on the addresses below.
    pub enabled: bool,
    /// Addresses put on the interface.
    pub addresses: Vec<std::net::IpAddr>,
    /// The interface that holds them.
    pub interface: String,
    /// Its kind.
    pub interface_kind: InterfaceKind,
    /// How DNS to those addresses skips conntrack.
    pub notrack: Notrack,
    /// Leave the interface and rules in place at exit.
    pub skip_teardown: bool,
    /// How often the interface and rules are checked and repaired.
    pub check_interval_s: u64,
    /// Where cluster names come from.
    pub cluster_names: ClusterNames,
    /// Upstreams of the cluster zones in forward mode; empty: the Service below.
    pub cluster_upstreams: Vec<UpstreamEntry>,
    /// The Service whose `*_SERVICE_HOST` variable names the cluster upstream.
    pub upstream_service: String,
}

impl Default for NodeLocal {
    fn default() -> NodeLocal {
        NodeLocal {
            enabled: false,
            addresses: vec![std::net::IpAddr::V4(Ipv4Addr::new(169, 254, 20, 10))],
            interface: "nodelocaldns".into(),
            interface_kind: InterfaceKind::Dummy,
            notrack: Notrack::Auto,
            skip_teardown: false,
            check_interval_s: 60,
            cluster_names: ClusterNames::Watch,
            cluster_upstreams: Vec::new(),
            upstream_service: "kube-dns-upstream".into(),
        }
    }
}

impl NodeLocal {
    /// The environment variable that holds `upstream_service`'s ClusterIP,
    /// as kubelet sets it for Services of the pod's namespace.
    pub fn service_host_variable(&self) -> String {
        format!(
            "{}_SERVICE_HOST",
            self.upstream_service.to_uppercase().replace('-', "_")
        )
    }

    /// The cluster zones' upstreams in forward mode: `cluster_upstreams`,
    /// or the address in `upstream_service`'s variables (`*_SERVICE_HOST`,
    /// and `*_SERVICE_PORT` when set).
    pub fn cluster_upstreams(&self) -> Result<Vec<Upstream>, String> {
        if !self.cluster_upstreams.is_empty() {
            return Ok(UpstreamEntry::all_servers(&self.cluster_upstreams).collect());
        }
        let variable = self.service_host_variable();
        let host = std::env::var(&variable).unwrap_or_default();
        let host = host.trim();
        if host.is_empty() {
            return Err(format!(
                "cluster_names = \"forward\" needs an upstream: ${variable} is not set (is the {:?} Service in the pod's namespace?); \
                 create that Service, or list the kube-dns address in node_local.cluster_upstreams",
                self.upstream_service
            ));
        }
        let port_variable = variable.replace("_HOST", "_PORT");
        let entry = match std::env::var(&port_variable) {
            Ok(port) if !port.trim().is_empty() => match host.parse::<std::net::IpAddr>() {
                Ok(std::net::IpAddr::V6(ip)) => format!("[{ip}]:{}", port.trim()),
                _ => format!("{host}:{}", port.trim()),
            },
            _ => host.to_string(),
        };
        entry
            .parse::<UpstreamEntry>()
            .map(|entry| entry.servers().to_vec())
            .map_err(|e| format!("${variable} and ${port_variable}: {e}"))
    }

    /// Whether cluster names are forwarded rather than watched.
    pub fn forwards_cluster_names(&self) -> bool {
        self.enabled && self.cluster_names == ClusterNames::Forward
    }
}

/// Serde through `FromStr` and `Display`, so a value's error message is the
/// type's own (which lists what is allowed).
mod as_text {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::fmt::Display;
    use std::str::FromStr;

    pub(super) fn serialize<T: Display, S: Serializer>(
        value: &T,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_str(value)
    }

    pub(super) fn deserialize<'de, T, D>(deserializer: D) -> Result<T, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}
