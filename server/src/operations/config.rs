//! The configuration: a TOML file (`--config`), overridden by `KUBEWIRE_*`
//! environment variables and then by flags.
//!
//! Every setting is listed in [`SETTINGS`] with what it allows and whether
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

use kubewire_answer::PodMode;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Display;
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::Range;
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
    /// Forwarding of names outside the cluster zones.
    pub forward: Forward,
    /// The cache of forwarded answers.
    pub cache: Cache,
    /// Node-local mode: the per-node cache on a link-local address.
    pub node_local: NodeLocal,
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
    pub zones: Vec<String>,
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
            zones: vec!["cluster.local".into()],
            ttl_seconds: 5,
            udp_io: UdpIo::Batched,
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
    pub fallthrough: Vec<String>,
    /// Zones (among `dns.zones`) answered from ServiceImports.
    pub multicluster: Vec<String>,
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
    pub zones: Vec<String>,
    /// The label of the zones' own name server, `ns1.<apex>.<zone>`.
    pub apex: String,
    /// TTL of external records and of the SOA.
    pub ttl_seconds: u32,
    /// Headless Services without external addresses answer with endpoints.
    pub headless: bool,
    /// External zones whose unknown names go on to forwarding.
    pub fallthrough: Vec<String>,
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

impl K8sExternal {
    /// The compiler's settings, or `None` when off. Names were checked by
    /// [`Config::validate`]; one that does not parse is left out.
    pub fn settings(&self) -> Option<kubewire_answer::ExternalZones> {
        let names = |list: &[String]| -> Vec<kubewire_wire::NameBuf> {
            list.iter()
                .filter_map(|z| kubewire_wire::NameBuf::from_text(z).ok())
                .map(|z| z.to_lowercase())
                .collect()
        };
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
}

impl Default for Http {
    fn default() -> Http {
        let all = |port| OptionalAddr(Some(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))));
        Http {
            health_addr: all(8080),
            ready_addr: all(8181),
            metrics_addr: all(9153),
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
    pub to: Vec<String>,
    /// Upstreams per zone (kube-dns's stubDomains); the longest zone wins.
    pub stub_domains: BTreeMap<String, Vec<String>>,
    /// Zones never forwarded (REFUSED, as without forwarding).
    pub except: Vec<String>,
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
    /// `recvmmsg`/`sendmmsg` on the raw socket, driven inside the executor.
    Batched,
    /// glommio's `recv_from`/`send_to`.
    Glommio,
    /// An io_uring per socket: a multishot `recvmsg` over provided buffers,
    /// and replies as `send` requests. Where the kernel refuses io_uring,
    /// kubewire logs why once and serves with `batched`.
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
    pub cluster_upstreams: Vec<String>,
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
    pub fn cluster_upstreams(&self) -> Result<Vec<String>, String> {
        if !self.cluster_upstreams.is_empty() {
            return Ok(self.cluster_upstreams.clone());
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
        Ok(vec![match std::env::var(&port_variable) {
            Ok(port) if !port.trim().is_empty() => match host.parse::<std::net::IpAddr>() {
                Ok(std::net::IpAddr::V6(ip)) => format!("[{ip}]:{}", port.trim()),
                _ => format!("{host}:{}", port.trim()),
            },
            _ => host.to_string(),
        }])
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

/// One documented setting.
#[derive(Clone, Copy, Debug)]
pub struct Setting {
    /// `section.key`.
    pub key: &'static str,
    /// What values are allowed.
    pub allowed: &'static str,
    /// Whether a reload applies it without a restart.
    pub live: bool,
    /// The command-line flags that set it (each also a `KUBEWIRE_*`
    /// variable); a test proves these and the clap flags agree.
    pub flags: &'static [&'static str],
    /// What it does.
    pub doc: &'static str,
}

const fn setting(
    key: &'static str,
    allowed: &'static str,
    live: bool,
    flags: &'static [&'static str],
    doc: &'static str,
) -> Setting {
    Setting {
        key,
        allowed,
        live,
        flags,
        doc,
    }
}

/// Every setting, in the order `config print` writes them.
pub const SETTINGS: &[Setting] = &[
    setting(
        "dns.listen",
        "a list of IP:PORT",
        false,
        &["--listen"],
        "Addresses served over UDP and TCP.",
    ),
    setting(
        "dns.cores",
        "\"all\", a count such as \"2\", or a CPU list such as \"0,2-3\" (one CPU: \"1-1\")",
        false,
        &["--cores"],
        "Serving cores, one pinned executor each. \"all\" is every CPU in the affinity mask.",
    ),
    setting(
        "dns.zones",
        "a non-empty list of DNS names",
        false,
        &["--zone"],
        "Cluster zones served.",
    ),
    setting(
        "dns.ttl_seconds",
        "0 to 3600",
        true,
        &["--ttl"],
        "TTL of every record, and the SOA minimum.",
    ),
    setting(
        "dns.udp_io",
        "\"batched\", \"io_uring\" or \"glommio\"",
        false,
        &["--udp-io"],
        "UDP I/O: recvmmsg/sendmmsg batches, an io_uring per socket, or glommio's one-datagram calls.",
    ),
    setting(
        "kubernetes.pods",
        "\"disabled\", \"insecure\" or \"verified\"",
        false,
        &["--pods"],
        "Pod records, as CoreDNS's `pods` option.",
    ),
    setting(
        "kubernetes.endpoint_pod_names",
        "true or false",
        true,
        &["--endpoint-pod-names"],
        "Name endpoints without a hostname after their pod.",
    ),
    setting(
        "kubernetes.ignore_empty_service",
        "true or false",
        true,
        &[],
        "A ClusterIP Service with no ready endpoint is NXDOMAIN, as if it did not exist (CoreDNS's `ignore_empty_service`), so a client's search list goes on; its cluster IPs' PTR records stay.",
    ),
    setting(
        "kubernetes.zonal",
        "true or false",
        true,
        &[],
        "Topology-zone names for headless Services, as CoreDNS's `zonal`: `<zone>.pin._zone.<svc>.<ns>.svc.<cluster-zone>` answers the ready endpoints whose EndpointSlice `zone` is `<zone>` (NODATA when none is), and `<zone>.prefer._zone.…` those, or every endpoint when none is in the zone.",
    ),
    setting(
        "kubernetes.autopath",
        "true or false",
        false,
        &[],
        "Complete a pod's search path on the server, as CoreDNS's `autopath @kubernetes`: a query for the first search candidate of the namespace whose pod sent it is answered from the first candidate that is not NXDOMAIN, behind a CNAME. Watches Pods (in node-local mode, only this node's, by $NODE_NAME).",
    ),
    setting(
        "kubernetes.autopath_resolv_conf",
        "a resolv.conf path; empty means none",
        false,
        &[],
        "Autopath tries this file's search domains after the cluster's, as CoreDNS reads its own pod's resolv.conf.",
    ),
    setting(
        "kubernetes.namespaces",
        "a list of namespace names; empty means all",
        true,
        &["--namespaces"],
        "Serve only these namespaces, as CoreDNS's `namespaces` (cluster and manifests sources).",
    ),
    setting(
        "kubernetes.labels",
        "a label selector such as \"app=web,tier!=db\"; empty means all",
        true,
        &["--labels"],
        "Serve only Services (and their EndpointSlices) matching this, as CoreDNS's `labels` (cluster and manifests sources).",
    ),
    setting(
        "kubernetes.startup_timeout_ms",
        "milliseconds",
        false,
        &["--startup-timeout-ms"],
        "After this long without a first sync, answer from what is known; /ready still waits.",
    ),
    setting(
        "kubernetes.fallthrough",
        "a list of zones; \".\" means every zone; empty means none",
        false,
        &[],
        "In these zones, a name that no object answers goes on to forwarding instead of NXDOMAIN, as CoreDNS's `fallthrough`. Reverse names no object owns are always forwarded.",
    ),
    setting(
        "kubernetes.multicluster",
        "a list of zones that are also in dns.zones, such as [\"clusterset.local\"]; empty means none",
        false,
        &[],
        "Answer these zones from the Multi-Cluster Services API, as CoreDNS's `multicluster`: `<svc>.<ns>.svc.<zone>` from ServiceImports (multicluster.x-k8s.io/v1alpha1: ClusterSetIP `spec.ips`, or a headless import's ready endpoints in every cluster), SRV, and `<endpoint>.<cluster>.<svc>.<ns>.svc.<zone>` from the EndpointSlices labelled multicluster.kubernetes.io/service-name and source-cluster. Local Services are not answered there. Watches ServiceImports; without their CRD, says so and serves the other zones.",
    ),
    setting(
        "k8s_external.zones",
        "a list of zones; empty means off",
        true,
        &[],
        "Serve Services' externalIPs and load balancer ingress addresses (never cluster IPs) as `<svc>.<ns>.<zone>` in these zones, with SRV `_port._proto.<svc>.<ns>.<zone>`, an SOA and NS at the apex and `ns1.<apex>.<zone>`, as CoreDNS's `k8s_external`. A load balancer known only by hostname answers with a CNAME to it. A reverse zone listed (such as in-addr.arpa) serves the external IPs' PTR records.",
    ),
    setting(
        "k8s_external.apex",
        "a DNS label",
        true,
        &[],
        "The external zones' name server is `ns1.<apex>.<zone>`, and their SOA's mailbox `hostmaster.<apex>.<zone>`.",
    ),
    setting(
        "k8s_external.ttl_seconds",
        "0 to 3600",
        true,
        &[],
        "TTL of external records, and the external SOA's TTL and minimum.",
    ),
    setting(
        "k8s_external.headless",
        "true or false",
        true,
        &[],
        "A headless Service without external addresses answers in the external zones with its ready endpoints, and `<endpoint>.<svc>.<ns>.<zone>` names each.",
    ),
    setting(
        "k8s_external.fallthrough",
        "a list of zones; \".\" means every external zone; empty means none",
        true,
        &[],
        "In these external zones, a name no Service answers goes on to forwarding instead of NXDOMAIN.",
    ),
    setting(
        "source.kind",
        "\"cluster\", \"manifests\" or \"demo\"",
        false,
        &["--demo", "--manifests", "--kubeconfig"],
        "Where objects come from. A cluster that cannot be reached is an error, never demo data.",
    ),
    setting(
        "source.kubeconfig",
        "a file path; empty means $KUBECONFIG, ~/.kube/config, then in-cluster",
        false,
        &["--kubeconfig"],
        "Kubeconfig for the cluster source.",
    ),
    setting(
        "source.manifests",
        "a file or directory path",
        false,
        &["--manifests"],
        "Manifests for the manifests source, watched for edits.",
    ),
    setting(
        "http.health_addr",
        "IP:PORT, :PORT, or \"\" for none",
        false,
        &["--health-addr"],
        "/health answers 200 while the process serves.",
    ),
    setting(
        "http.ready_addr",
        "IP:PORT, :PORT, or \"\" for none",
        false,
        &["--ready-addr"],
        "/ready answers 200 once every core holds the first sync, 503 before and in lameduck.",
    ),
    setting(
        "http.metrics_addr",
        "IP:PORT, :PORT, or \"\" for none (no counting at all)",
        false,
        &["--metrics-addr"],
        "Prometheus /metrics, with CoreDNS's metric names.",
    ),
    setting(
        "lifecycle.lameduck_ms",
        "milliseconds",
        false,
        &["--lameduck-ms"],
        "After SIGTERM, keep serving this long with /ready at 503, then stop; SIGINT stops at once.",
    ),
    setting(
        "log.level",
        "a tracing filter such as \"info\" or \"info,kubewire::sources::control=debug\"",
        true,
        &["--log-level"],
        "Log filter; RUST_LOG wins if set.",
    ),
    setting(
        "log.format",
        "\"text\" or \"json\"",
        false,
        &["--log-format"],
        "Log line format.",
    ),
    setting(
        "log.query_log_sample",
        "0 (off) or N to log one query in N",
        true,
        &["--query-log-sample"],
        "Query log: client, name, type, RCODE and duration, at info under target kubewire::query.",
    ),
    setting(
        "log.query_log_max_per_second",
        "lines per second per core",
        true,
        &["--query-log-max-per-second"],
        "Rate limit of the query log.",
    ),
    setting(
        "tcp.idle_timeout_ms",
        "milliseconds, at least 1",
        false,
        &["--tcp-idle-timeout-ms"],
        "Close a TCP connection idle this long.",
    ),
    setting(
        "tcp.max_connections",
        "at least 1",
        false,
        &["--tcp-max-connections"],
        "Most TCP connections per core; more are closed at once.",
    ),
    setting(
        "forward.to",
        "a list of upstreams: IP, IP:PORT, [IPv6]:PORT, tls://IP[:PORT] (DNS over TLS, port 853), or a resolv.conf path such as \"/etc/resolv.conf\"; empty means no forwarding",
        false,
        &["--forward"],
        "Upstream servers for every name outside the cluster zones, as CoreDNS's `forward .`. Empty: such names get REFUSED.",
    ),
    setting(
        "forward.stub_domains",
        "a table of zone = [upstreams], such as { \"corp.example\" = [\"10.0.0.1\"] }",
        false,
        &[],
        "Upstreams per zone, as kube-dns's stubDomains or CoreDNS's `forward ZONE`; the longest matching zone wins over forward.to.",
    ),
    setting(
        "forward.except",
        "a list of DNS names",
        false,
        &[],
        "Zones never forwarded; their names get REFUSED, as CoreDNS's `except`.",
    ),
    setting(
        "forward.policy",
        "\"random\", \"round_robin\" or \"sequential\"",
        false,
        &[],
        "The order in which a query tries a zone's upstreams, as CoreDNS's `policy`.",
    ),
    setting(
        "forward.timeout_ms",
        "milliseconds, at least 1",
        false,
        &[],
        "How long one attempt waits for an upstream's reply before the next upstream is tried.",
    ),
    setting(
        "forward.max_attempts",
        "at least 1",
        false,
        &[],
        "Attempts per query, each on the next upstream; then SERVFAIL. A client waits at most timeout_ms times this.",
    ),
    setting(
        "forward.max_fails",
        "0 (never mark down) or more",
        false,
        &[],
        "Consecutive failures that mark an upstream down, as CoreDNS's `max_fails`.",
    ),
    setting(
        "forward.health_check_ms",
        "milliseconds, at least 1",
        false,
        &[],
        "How often an upstream marked down is sent `. IN NS`; it is up again when it answers, as CoreDNS's `health_check`.",
    ),
    setting(
        "forward.failfast_all_unhealthy_upstreams",
        "true or false",
        false,
        &[],
        "With every upstream down, answer SERVFAIL at once instead of trying one anyway.",
    ),
    setting(
        "forward.max_concurrent_per_core",
        "at least 1",
        false,
        &[],
        "Forwarded queries in flight per serving core; above it a query gets REFUSED and is counted, as CoreDNS's `max_concurrent`.",
    ),
    setting(
        "forward.force_tcp",
        "true or false",
        false,
        &[],
        "Send every upstream query over TCP (NodeLocal DNSCache does, to keep DNS out of conntrack).",
    ),
    setting(
        "forward.prefer_udp",
        "true or false",
        false,
        &[],
        "Do not retry a truncated UDP reply over TCP; pass it on with TC set, as CoreDNS's `prefer_udp`.",
    ),
    setting(
        "forward.tls_servername",
        "a DNS name; needed with tls:// upstreams",
        false,
        &[],
        "The name tls:// upstreams' certificates must be for, as CoreDNS's `tls_servername`.",
    ),
    setting(
        "forward.tls_ca_file",
        "a PEM file path; empty means the system's root certificates",
        false,
        &[],
        "The CAs trusted for tls:// upstreams.",
    ),
    setting(
        "cache.enabled",
        "true or false",
        false,
        &[],
        "Cache forwarded answers, pre-encoded, node-wide: one upstream query per name per TTL. Cluster names are never cached; they are always live.",
    ),
    setting(
        "cache.max_ttl_s",
        "seconds, at least 1",
        false,
        &[],
        "Positive answers are cached at most this long, as the TTL of CoreDNS's `cache 30` (kubeadm's) or `success`.",
    ),
    setting(
        "cache.min_ttl_s",
        "seconds, at most max_ttl_s",
        false,
        &[],
        "Positive answers are cached at least this long (CoreDNS's MINTTL, 5 s).",
    ),
    setting(
        "cache.denial_max_ttl_s",
        "seconds, at least 1",
        false,
        &[],
        "NXDOMAIN and NODATA are cached for the smaller of the SOA's TTL and MINIMUM (RFC 2308), at most this long (CoreDNS's `denial`; `cache 30` sets 30).",
    ),
    setting(
        "cache.denial_min_ttl_s",
        "seconds, at most denial_max_ttl_s",
        false,
        &[],
        "Negative answers are cached at least this long. A negative answer without an SOA is never cached.",
    ),
    setting(
        "cache.servfail_ttl_s",
        "seconds, 0 to 300",
        false,
        &[],
        "An upstream's SERVFAIL is cached this long; 0 turns it off (CoreDNS's `servfail`).",
    ),
    setting(
        "cache.max_entries",
        "at least 1",
        false,
        &[],
        "Most cached answers; above it the least recently used are evicted. Every core holds the same entries.",
    ),
    setting(
        "cache.max_bytes",
        "bytes, at least 65536",
        false,
        &[],
        "Most bytes of cached answers; above it the least recently used are evicted.",
    ),
    setting(
        "cache.prefetch_amount",
        "0 (off) or more",
        false,
        &[],
        "An entry hit this many times, each within prefetch_window_s of the last, is refreshed before it expires (CoreDNS's `prefetch AMOUNT`).",
    ),
    setting(
        "cache.prefetch_window_s",
        "seconds, at least 1",
        false,
        &[],
        "Hits further apart than this start the prefetch count again (CoreDNS's prefetch DURATION).",
    ),
    setting(
        "cache.prefetch_percent",
        "10 to 90",
        false,
        &[],
        "A popular entry is refreshed when this share of its TTL is left (CoreDNS's prefetch PERCENTAGE).",
    ),
    setting(
        "cache.serve_stale_s",
        "seconds; 0 turns it off",
        false,
        &[],
        "An expired entry may be served this long after it expired while its upstreams fail (RFC 8767; CoreDNS's `serve_stale`).",
    ),
    setting(
        "cache.serve_stale_mode",
        "\"immediate\" or \"verify\"",
        false,
        &[],
        "immediate: an expired entry is answered at once and refreshed behind. verify: the upstream is asked first, and the stale entry answers only if it fails.",
    ),
    setting(
        "cache.stale_ttl_s",
        "seconds",
        false,
        &[],
        "The TTL of a stale answer (RFC 8767 suggests 30).",
    ),
    setting(
        "cache.keep_ttl",
        "true or false",
        false,
        &[],
        "Answer hits with the TTLs as stored, not lowered by the entry's age (CoreDNS's `keepttl`).",
    ),
    setting(
        "node_local.enabled",
        "true or false",
        false,
        &[],
        "Run as the node's DNS cache (NodeLocal DNSCache's job): put node_local.addresses on a dummy interface, keep DNS to them out of conntrack, and serve them (list them in dns.listen). Needs CAP_NET_ADMIN. dns.listen may then be shared with a second instance (SO_REUSEPORT), as an HA pair.",
    ),
    setting(
        "node_local.addresses",
        "a list of IPs; default [\"169.254.20.10\"], plus the kube-dns ClusterIP to take over its address",
        false,
        &[],
        "Addresses put on the interface, as node-cache's -localip.",
    ),
    setting(
        "node_local.interface",
        "an interface name of 1 to 15 characters",
        false,
        &[],
        "The interface created to hold the addresses (node-cache's -interfacename).",
    ),
    setting(
        "node_local.interface_kind",
        "\"dummy\" or \"bridge\"",
        false,
        &[],
        "dummy, as node-cache; bridge (with no ports) where the kernel has no dummy driver.",
    ),
    setting(
        "node_local.notrack",
        "\"auto\", \"nftables\", \"iptables\" or \"off\"",
        false,
        &[],
        "Rules in the raw table that keep DNS to and from the addresses out of conntrack. auto: nftables where `nft` works, else iptables.",
    ),
    setting(
        "node_local.skip_teardown",
        "true or false",
        false,
        &[],
        "Leave the interface and rules at exit, for the second instance of an HA pair (node-cache's -skipteardown).",
    ),
    setting(
        "node_local.check_interval_s",
        "seconds, at least 1",
        false,
        &[],
        "How often the interface and rules are checked and repaired (node-cache's -syncinterval); failures count in coredns_nodecache_setup_errors_total.",
    ),
    setting(
        "node_local.cluster_names",
        "\"watch\" or \"forward\"",
        false,
        &[],
        "watch: answer cluster names from this instance's own source, live. forward: send the cluster zones to kube-dns over TCP and cache them, as NodeLocal DNSCache does (no API access needed).",
    ),
    setting(
        "node_local.cluster_upstreams",
        "a list of upstreams (IP or IP:PORT); empty means node_local.upstream_service",
        false,
        &[],
        "Where forward mode sends the cluster zones, always over TCP.",
    ),
    setting(
        "node_local.upstream_service",
        "a Service name",
        false,
        &[],
        "In forward mode without cluster_upstreams, the Service whose <NAME>_SERVICE_HOST variable gives the address (node-cache's -upstreamsvc).",
    ),
];

/// The environment variable of a flag (`--ttl`: `KUBEWIRE_TTL`), as clap
/// declares it.
pub fn env_var(flag: &str) -> String {
    let command = <crate::operations::cli::Cli as clap::CommandFactory>::command();
    command
        .get_arguments()
        .find(|arg| arg.get_long() == flag.strip_prefix("--"))
        .and_then(|arg| arg.get_env())
        .map(|env| env.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn find_setting(key: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.key == key)
}

fn sections() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for s in SETTINGS {
        let section = section_of(s.key);
        if !out.contains(&section) {
            out.push(section);
        }
    }
    out
}

fn section_of(key: &'static str) -> &'static str {
    key.split_once('.').map_or(key, |(section, _)| section)
}

fn keys_of(section: &str) -> Vec<&'static str> {
    SETTINGS
        .iter()
        .filter_map(|s| {
            let (sec, key) = s.key.split_once('.')?;
            (sec == section).then_some(key)
        })
        .collect()
}

/// A configuration error. Its text is whole and ready to print (place,
/// key, problem and what is allowed, with the cause's own words where there
/// is one); the cause itself stays reachable as its `source`.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ConfigError {
    message: String,
    #[source]
    cause: Option<ConfigCause>,
}

/// What lies under a [`ConfigError`], where something does.
#[derive(Debug, thiserror::Error)]
pub enum ConfigCause {
    /// The file could not be read.
    #[error(transparent)]
    Read(#[from] std::io::Error),
    /// The text is not valid TOML, or a value has the wrong type.
    #[error(transparent)]
    Toml(#[from] toml::de::Error),
}

impl ConfigError {
    /// An error that is only its text.
    pub fn new(message: impl Into<String>) -> ConfigError {
        ConfigError {
            message: message.into(),
            cause: None,
        }
    }

    fn caused(message: impl Into<String>, cause: impl Into<ConfigCause>) -> ConfigError {
        ConfigError {
            message: message.into(),
            cause: Some(cause.into()),
        }
    }
}

/// Where each key sits in the file.
#[derive(Debug, Default)]
struct Spans {
    origin: String,
    text: String,
    keys: HashMap<String, Range<usize>>,
}

impl Spans {
    fn line_of(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .bytes()
            .filter(|&b| b == b'\n')
            .count()
            + 1
    }

    fn at(&self, offset: usize) -> String {
        format!("{}:{}", self.origin, self.line_of(offset))
    }

    /// The key whose `key = value` holds `offset`, innermost first.
    fn key_at(&self, offset: usize) -> Option<&str> {
        self.keys
            .iter()
            .filter(|(_, span)| span.contains(&offset))
            .min_by_key(|(_, span)| span.len())
            .map(|(key, _)| key.as_str())
    }

    fn error(&self, key: &str, message: &str) -> ConfigError {
        let place = match self.keys.get(key) {
            Some(span) => self.at(span.start),
            None => match find_setting(key).and_then(|s| s.flags.first()) {
                Some(flag) => format!("{flag} (or its KUBEWIRE_ variable)"),
                None => format!("{} (flags or environment)", self.origin),
            },
        };
        let allowed = find_setting(key)
            .map(|s| format!(" (allowed: {})", s.allowed))
            .unwrap_or_default();
        ConfigError::new(format!("{place}: {key}: {message}{allowed}"))
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            let message = format!(
                "{}: cannot read the config file: {e}; check the path given to --config",
                path.display()
            );
            ConfigError::caused(message, e)
        })?;
        Config::parse(&path.display().to_string(), &text)
    }

    /// Parses and validates config text; `origin` names it in errors.
    pub fn parse(origin: &str, text: &str) -> Result<Config, ConfigError> {
        let mut spans = Spans {
            origin: origin.to_string(),
            text: text.to_string(),
            keys: HashMap::new(),
        };
        let document = toml::de::DeTable::parse(text).map_err(|e| {
            let place = e.span().map_or(origin.to_string(), |s| spans.at(s.start));
            let message = format!("{place}: not valid TOML: {}", e.message().trim_end());
            ConfigError::caused(message, e)
        })?;
        for (section_key, section_value) in document.get_ref() {
            let section = section_key.get_ref().as_ref();
            if !sections().contains(&section) {
                return Err(unknown_key(&spans, section_key.span().start, section, None));
            }
            let Some(table) = section_value.get_ref().as_table() else {
                return Err(ConfigError::new(format!(
                    "{}: \"{section}\" must be a table: write [{section}] and its keys below it",
                    spans.at(section_key.span().start)
                )));
            };
            for (key, value) in table {
                let full = format!("{section}.{}", key.get_ref());
                if find_setting(&full).is_none() {
                    return Err(unknown_key(&spans, key.span().start, &full, Some(section)));
                }
                spans
                    .keys
                    .insert(full, key.span().start..value.span().end.max(key.span().end));
            }
        }
        let config: Config = toml::from_str(text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            let message = e.message().trim_end().to_string();
            let located = match spans.key_at(offset) {
                Some(key) => spans.error(key, &message).message,
                None => format!("{}: {message}", spans.at(offset)),
            };
            ConfigError::caused(located, e)
        })?;
        config.validate_with(&spans)?;
        Ok(config)
    }

    /// Validates settings given by flags or the environment (no file lines).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_with(&Spans {
            origin: "configuration".into(),
            ..Spans::default()
        })
    }

    fn validate_with(&self, spans: &Spans) -> Result<(), ConfigError> {
        let fail = |key: &str, message: &str| Err(spans.error(key, message));
        if self.dns.listen.is_empty() {
            return fail("dns.listen", "at least one address is needed");
        }
        if self.dns.zones.is_empty() {
            return fail("dns.zones", "at least one zone is needed");
        }
        for zone in &self.dns.zones {
            if let Err(error) = kubewire_wire::NameBuf::from_text(zone) {
                return fail("dns.zones", &format!("{zone:?} is not a DNS name: {error}"));
            }
        }
        for zone in &self.kubernetes.fallthrough {
            if let Err(error) = kubewire_wire::NameBuf::from_text(zone) {
                return fail(
                    "kubernetes.fallthrough",
                    &format!("{zone:?} is not a DNS name: {error}"),
                );
            }
        }
        self.validate_k8s_external(&fail)?;
        for zone in &self.kubernetes.multicluster {
            let listed = kubewire_wire::NameBuf::from_text(zone).is_ok_and(|name| {
                self.dns.zones.iter().any(|z| {
                    kubewire_wire::NameBuf::from_text(z)
                        .is_ok_and(|z| z.to_lowercase() == name.to_lowercase())
                })
            });
            if !listed {
                return fail(
                    "kubernetes.multicluster",
                    &format!(
                        "{zone:?} is not one of dns.zones; add it there too, so kubewire is authoritative for it (as CoreDNS requires)"
                    ),
                );
            }
        }
        if let Err(error) = kubewire_answer::selector::LabelSelector::parse(&self.kubernetes.labels)
        {
            return fail("kubernetes.labels", &error);
        }
        if self.dns.ttl_seconds > 3600 {
            return fail(
                "dns.ttl_seconds",
                &format!("{} is too large", self.dns.ttl_seconds),
            );
        }
        match self.source.kind {
            SourceKind::Manifests if self.source.manifests.is_empty() => {
                return fail(
                    "source.manifests",
                    "source.kind is \"manifests\" but no path is given",
                );
            }
            SourceKind::Demo | SourceKind::Manifests if !self.source.kubeconfig.is_empty() => {
                return fail(
                    "source.kubeconfig",
                    "a kubeconfig is only used with source.kind = \"cluster\"",
                );
            }
            _ => {}
        }
        if let Err(error) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return fail("log.level", &format!("{:?}: {error}", self.log.level));
        }
        if self.tcp.idle_timeout_ms == 0 {
            return fail("tcp.idle_timeout_ms", "must be at least 1");
        }
        if self.tcp.max_connections == 0 {
            return fail("tcp.max_connections", "must be at least 1");
        }
        self.validate_forward(&fail)?;
        self.validate_cache(&fail)?;
        self.validate_node_local(&fail)
    }

    fn validate_node_local(
        &self,
        fail: &dyn Fn(&str, &str) -> Result<(), ConfigError>,
    ) -> Result<(), ConfigError> {
        let n = &self.node_local;
        if self.kubernetes.autopath && n.forwards_cluster_names() {
            return fail(
                "kubernetes.autopath",
                "autopath needs this instance's own pod watch, and node_local.cluster_names = \"forward\" has none; use \"watch\"",
            );
        }
        if !n.enabled {
            return Ok(());
        }
        if n.addresses.is_empty() {
            return fail("node_local.addresses", "at least one address is needed");
        }
        if n.interface.is_empty() || n.interface.len() > 15 || n.interface.contains(['/', ' ', ':'])
        {
            return fail(
                "node_local.interface",
                &format!("{:?} is not an interface name", n.interface),
            );
        }
        if n.check_interval_s == 0 {
            return fail("node_local.check_interval_s", "must be at least 1");
        }
        for address in &n.addresses {
            let served = self.dns.listen.iter().any(|l| {
                l.ip() == *address || (l.ip().is_unspecified() && l.is_ipv4() == address.is_ipv4())
            });
            if !served {
                return fail(
                    "node_local.addresses",
                    &format!(
                        "{address} is not served: add \"{}\" to dns.listen",
                        std::net::SocketAddr::new(*address, 53)
                    ),
                );
            }
        }
        for entry in &n.cluster_upstreams {
            if let Err(error) = crate::resolving::parse_upstream(entry) {
                return fail("node_local.cluster_upstreams", &error.to_string());
            }
        }
        Ok(())
    }

    fn validate_cache(
        &self,
        fail: &dyn Fn(&str, &str) -> Result<(), ConfigError>,
    ) -> Result<(), ConfigError> {
        let c = &self.cache;
        if c.max_ttl_s == 0 {
            return fail("cache.max_ttl_s", "must be at least 1");
        }
        if c.min_ttl_s > c.max_ttl_s {
            return fail("cache.min_ttl_s", "must be at most cache.max_ttl_s");
        }
        if c.denial_max_ttl_s == 0 {
            return fail("cache.denial_max_ttl_s", "must be at least 1");
        }
        if c.denial_min_ttl_s > c.denial_max_ttl_s {
            return fail(
                "cache.denial_min_ttl_s",
                "must be at most cache.denial_max_ttl_s",
            );
        }
        if c.servfail_ttl_s > 300 {
            return fail("cache.servfail_ttl_s", "must be at most 300");
        }
        if c.max_entries == 0 {
            return fail("cache.max_entries", "must be at least 1");
        }
        if c.max_bytes < 65_536 {
            return fail("cache.max_bytes", "must be at least 65536");
        }
        if c.prefetch_window_s == 0 {
            return fail("cache.prefetch_window_s", "must be at least 1");
        }
        if !(10..=90).contains(&c.prefetch_percent) {
            return fail("cache.prefetch_percent", "must be from 10 to 90");
        }
        Ok(())
    }

    fn validate_k8s_external(
        &self,
        fail: &dyn Fn(&str, &str) -> Result<(), ConfigError>,
    ) -> Result<(), ConfigError> {
        let e = &self.k8s_external;
        let cluster: Vec<kubewire_wire::NameBuf> = self
            .dns
            .zones
            .iter()
            .filter_map(|z| kubewire_wire::NameBuf::from_text(z).ok())
            .collect();
        for (key, zones) in [
            ("k8s_external.zones", &e.zones),
            ("k8s_external.fallthrough", &e.fallthrough),
        ] {
            for zone in zones {
                let name = match kubewire_wire::NameBuf::from_text(zone) {
                    Ok(name) => name,
                    Err(error) => {
                        return fail(key, &format!("{zone:?} is not a DNS name: {error}"));
                    }
                };
                if key == "k8s_external.zones" && cluster.contains(&name.to_lowercase()) {
                    return fail(
                        key,
                        &format!(
                            "{zone:?} is also a cluster zone (dns.zones); give the external zone a name of its own"
                        ),
                    );
                }
            }
        }
        let apex = e.apex.as_bytes();
        if apex.is_empty()
            || apex.len() > 63
            || !apex
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
        {
            return fail(
                "k8s_external.apex",
                &format!(
                    "{:?} is not one DNS label (letters, digits, '-' or '_', at most 63)",
                    e.apex
                ),
            );
        }
        if e.ttl_seconds > 3600 {
            return fail(
                "k8s_external.ttl_seconds",
                &format!("{} is too large", e.ttl_seconds),
            );
        }
        Ok(())
    }

    fn validate_forward(
        &self,
        fail: &dyn Fn(&str, &str) -> Result<(), ConfigError>,
    ) -> Result<(), ConfigError> {
        let f = &self.forward;
        for upstream in &f.to {
            if let Err(error) = crate::resolving::parse_upstream(upstream) {
                return fail("forward.to", &error.to_string());
            }
        }
        for (zone, upstreams) in &f.stub_domains {
            if let Err(error) = kubewire_wire::NameBuf::from_text(zone) {
                return fail(
                    "forward.stub_domains",
                    &format!("{zone:?} is not a DNS name: {error}"),
                );
            }
            if upstreams.is_empty() {
                return fail(
                    "forward.stub_domains",
                    &format!("{zone:?} has no upstreams"),
                );
            }
            for upstream in upstreams {
                if let Err(error) = crate::resolving::parse_upstream(upstream) {
                    return fail("forward.stub_domains", &format!("{zone:?}: {error}"));
                }
            }
        }
        for zone in &f.except {
            if let Err(error) = kubewire_wire::NameBuf::from_text(zone) {
                return fail(
                    "forward.except",
                    &format!("{zone:?} is not a DNS name: {error}"),
                );
            }
        }
        if f.timeout_ms == 0 {
            return fail("forward.timeout_ms", "must be at least 1");
        }
        if f.max_attempts == 0 {
            return fail("forward.max_attempts", "must be at least 1");
        }
        if f.health_check_ms == 0 {
            return fail("forward.health_check_ms", "must be at least 1");
        }
        if f.max_concurrent_per_core == 0 {
            return fail("forward.max_concurrent_per_core", "must be at least 1");
        }
        let any_tls =
            f.to.iter()
                .chain(f.stub_domains.values().flatten())
                .any(|u| u.trim().starts_with("tls://"));
        if any_tls && f.tls_servername.is_empty() {
            return fail(
                "forward.tls_servername",
                "tls:// upstreams need the name their certificate is for",
            );
        }
        if f.force_tcp && f.prefer_udp {
            return fail(
                "forward.prefer_udp",
                "forward.force_tcp and forward.prefer_udp cannot both be true",
            );
        }
        Ok(())
    }

    /// Every setting as `section.key` → value.
    pub fn flatten(&self) -> BTreeMap<String, toml::Value> {
        let mut out = BTreeMap::new();
        if let Ok(toml::Value::Table(sections)) = toml::Value::try_from(self) {
            for (section, table) in sections {
                if let toml::Value::Table(table) = table {
                    for (key, value) in table {
                        out.insert(format!("{section}.{key}"), value);
                    }
                }
            }
        }
        out
    }

    /// The keys whose values differ from `other`'s.
    pub fn changed_keys(&self, other: &Config) -> Vec<&'static str> {
        let (mine, theirs) = (self.flatten(), other.flatten());
        SETTINGS
            .iter()
            .filter(|s| mine.get(s.key) != theirs.get(s.key))
            .map(|s| s.key)
            .collect()
    }

    /// The configuration as a TOML file, each key with its documentation.
    pub fn to_documented_toml(&self) -> String {
        let values = self.flatten();
        let mut out = String::from(
            "# kubewire configuration. Flags and KUBEWIRE_* environment variables override it.\n\
             # Keys marked \"live\" change on SIGHUP or when this file changes; the rest need a restart.\n",
        );
        let mut section = "";
        for s in SETTINGS {
            let (sec, key) = s.key.split_once('.').unwrap_or(("", s.key));
            if sec != section {
                section = sec;
                out.push_str(&format!("\n[{sec}]\n"));
            }
            let live = if s.live { "live" } else { "restart" };
            out.push_str(&format!(
                "# {}\n# Allowed: {}. ({live})\n",
                s.doc, s.allowed
            ));
            if !s.flags.is_empty() {
                let variables: Vec<String> = s.flags.iter().map(|f| env_var(f)).collect();
                out.push_str(&format!(
                    "# Flag: {} (or {}).\n",
                    s.flags.join(", "),
                    variables.join(", ")
                ));
            }
            match values.get(s.key) {
                Some(value) => out.push_str(&format!("{key} = {value}\n")),
                None => out.push_str(&format!("# {key} is unset\n")),
            }
        }
        out
    }
}

fn unknown_key(spans: &Spans, offset: usize, key: &str, section: Option<&str>) -> ConfigError {
    let (leaf, candidates): (&str, Vec<String>) = match section {
        Some(_) => (
            key.split_once('.').map_or(key, |(_, k)| k),
            SETTINGS.iter().map(|s| s.key.to_string()).collect(),
        ),
        None => (key, sections().iter().map(|s| s.to_string()).collect()),
    };
    let suggestion = candidates
        .iter()
        .map(|candidate| {
            let candidate_leaf = candidate.split_once('.').map_or(&candidate[..], |(_, k)| k);
            let score = strsim::jaro_winkler(leaf, candidate_leaf)
                .max(strsim::jaro_winkler(key, candidate));
            (score, candidate)
        })
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, candidate)| format!("; did you mean \"{candidate}\"?"))
        .unwrap_or_default();
    let listing = match section {
        Some(section) => format!(
            " The keys of [{section}] are: {}",
            keys_of(section).join(", ")
        ),
        None => format!(" The sections are: {}", sections().join(", ")),
    };
    let what = if section.is_some() { "key" } else { "section" };
    ConfigError::new(format!(
        "{}: unknown {what} \"{key}\"{suggestion}{}",
        spans.at(offset),
        if suggestion.is_empty() {
            format!(".{listing}")
        } else {
            listing
        }
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn every_setting_is_documented_and_every_documented_setting_exists() {
        let keys: Vec<String> = Config::default().flatten().into_keys().collect();
        let mut documented: Vec<String> = SETTINGS.iter().map(|s| s.key.to_string()).collect();
        documented.sort();
        // An empty string or list still serializes, so every key appears.
        assert_eq!(keys, documented);
    }

    #[test]
    fn the_printed_default_parses_back_to_the_default() {
        let text = Config::default().to_documented_toml();
        assert_eq!(Config::parse("printed", &text).unwrap(), Config::default());
    }

    #[test]
    fn errors_keep_their_causes() {
        use std::error::Error;
        let missing = Config::load(std::path::Path::new("/nonexistent/kubewire.toml")).unwrap_err();
        assert!(
            missing
                .to_string()
                .contains("check the path given to --config")
        );
        let cause = missing.source().expect("the read error is kept");
        let io = cause.downcast_ref::<ConfigCause>().unwrap();
        assert!(matches!(io, ConfigCause::Read(e) if e.kind() == std::io::ErrorKind::NotFound));
        let syntax = Config::parse("k.toml", "[dns\n").unwrap_err();
        assert!(matches!(
            syntax
                .source()
                .and_then(|c| c.downcast_ref::<ConfigCause>()),
            Some(ConfigCause::Toml(_))
        ));
        let typed = Config::parse("k.toml", "[dns]\nttl_seconds = \"x\"\n").unwrap_err();
        assert!(
            typed.to_string().starts_with("k.toml:2: dns.ttl_seconds:"),
            "{typed}"
        );
        assert!(typed.source().is_some());
        // A rule of kubewire's own has no cause below it.
        let rule = Config::parse("k.toml", "[dns]\nttl_seconds = 4000\n").unwrap_err();
        assert!(rule.source().is_none());
    }

    #[test]
    fn an_empty_file_is_the_default() {
        assert_eq!(Config::parse("empty", "").unwrap(), Config::default());
    }

    #[test]
    fn errors_name_the_line_the_key_and_what_is_allowed() {
        let error = Config::parse("k.toml", "[dns]\nlisten = [\"127.0.0.1:53\"]\nttl = 30\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "k.toml:3: unknown key \"dns.ttl\"; did you mean \"dns.ttl_seconds\"? \
             The keys of [dns] are: listen, cores, zones, ttl_seconds, udp_io"
        );
        let error = Config::parse("k.toml", "[kubernetes]\n\npods = \"strict\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("k.toml:3: kubernetes.pods: pod mode \"strict\" is not one of"),
            "{error}"
        );
        let error = Config::parse("k.toml", "[dns]\nttl_seconds = 7200\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "k.toml:2: dns.ttl_seconds: 7200 is too large (allowed: 0 to 3600)"
        );
        let error = Config::parse("k.toml", "[dns]\nttl_seconds = \"5\"\n")
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("k.toml:2: dns.ttl_seconds: "), "{error}");
        let error = Config::parse("k.toml", "[lifecycle]\nlameduck = 5\n")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("did you mean \"lifecycle.lameduck_ms\""),
            "{error}"
        );
        let error = Config::parse("k.toml", "[metrics]\naddr = \":9153\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("k.toml:1: unknown section \"metrics\""),
            "{error}"
        );
        let error = Config::parse("k.toml", "[dns\n").unwrap_err().to_string();
        assert!(error.starts_with("k.toml:1: not valid TOML"), "{error}");
    }

    #[test]
    fn k8s_external_settings_are_checked() {
        let config = Config::parse(
            "k.toml",
            "[k8s_external]\nzones = [\"Example.org\", \"in-addr.arpa\"]\nheadless = true\n",
        )
        .unwrap();
        let settings = config.k8s_external.settings().unwrap();
        assert_eq!(settings.forward_zones().count(), 1);
        assert_eq!(settings.reverse_zones().count(), 1);
        assert_eq!(&*settings.apex, b"dns");
        assert!(Config::default().k8s_external.settings().is_none());
        for (text, want) in [
            (
                "[k8s_external]\nzones = [\"cluster.local\"]\n",
                "k.toml:2: k8s_external.zones: \"cluster.local\" is also a cluster zone (dns.zones)",
            ),
            (
                "[k8s_external]\nzones = [\"example.org\"]\napex = \"ns.dns\"\n",
                "k.toml:3: k8s_external.apex: \"ns.dns\" is not one DNS label",
            ),
            (
                "[k8s_external]\nzones = [\"example.org\"]\n\nttl_seconds = 4000\n",
                "k.toml:4: k8s_external.ttl_seconds: 4000 is too large",
            ),
            (
                "[k8s_external]\nfallthrough = [\"a..b\"]\n",
                "k.toml:2: k8s_external.fallthrough: \"a..b\" is not a DNS name",
            ),
        ] {
            let error = Config::parse("k.toml", text).unwrap_err().to_string();
            assert!(error.starts_with(want), "{error}");
        }
    }

    #[test]
    fn multicluster_zones_must_be_served_zones() {
        let config = Config::parse(
            "k.toml",
            "[dns]\nzones = [\"cluster.local\", \"ClusterSet.local\"]\n[kubernetes]\nmulticluster = [\"clusterset.local\"]\n",
        )
        .unwrap();
        assert_eq!(config.kubernetes.multicluster, ["clusterset.local"]);
        let error = Config::parse(
            "k.toml",
            "[kubernetes]\nmulticluster = [\"clusterset.local\"]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.starts_with("k.toml:2: kubernetes.multicluster: \"clusterset.local\" is not one of dns.zones; add it there too"),
            "{error}"
        );
    }

    #[test]
    fn changed_keys_lists_what_differs() {
        let mut other = Config::default();
        other.dns.ttl_seconds = 30;
        other.dns.listen = vec!["0.0.0.0:53".parse().unwrap()];
        assert_eq!(
            Config::default().changed_keys(&other),
            vec!["dns.listen", "dns.ttl_seconds"]
        );
    }

    #[test]
    fn corefile_style_addresses_are_accepted() {
        let config = Config::parse(
            "k.toml",
            "[http]\nmetrics_addr = \":9153\"\nready_addr = \"\"\n",
        )
        .unwrap();
        assert_eq!(
            config.http.metrics_addr.0,
            Some("0.0.0.0:9153".parse().unwrap())
        );
        assert_eq!(config.http.ready_addr.0, None);
    }
}
