//! Synthetic clusters for benchmarks (`kubewire-bench scenario`).
//!
//! [`generate`] builds a cluster of namespaces, ClusterIP and headless
//! services, their EndpointSlices and pods, and renders it three ways: the
//! manifests that `kubewire --manifests` reads, an RFC 1035 zone file with
//! the records kubewire serves for that cluster (for NSD and Knot DNS), and a
//! dnsperf query file with a realistic mix of hits, NODATA, NXDOMAIN and the
//! search-path misses that `ndots:5` causes.
//!
//! The manifests are one `kind: List` JSON document in `manifests.json`:
//! kubewire reads `.json` files with serde_json, which has no size budget,
//! where a `.yaml` file is held to serde-saphyr's default (1,024 documents
//! and 250,000 nodes), which large scenarios exceed.

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// The cluster zone, as kubewire serves it by default.
const ZONE: &str = "cluster.local";
/// Addresses of the generated ClusterIP services (inside 10.96.0.0/12, clear
/// of the well-known 10.96.0.1 and 10.96.0.10).
const SERVICE_NETWORK: Ipv4Addr = Ipv4Addr::new(10, 97, 0, 0);
/// Addresses of pods and endpoints.
const POD_NETWORK: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 0);
/// The cluster IP of `kube-dns.kube-system`, also the zone's name server.
const DNS_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
/// Kubernetes puts at most 100 endpoints in one EndpointSlice.
const MAX_ENDPOINTS_PER_SLICE: usize = 100;
/// Names outside the cluster that pods resolve through the search path.
const EXTERNAL_NAMES: [&str; 8] = [
    "api.example.com",
    "www.google.com",
    "s3.amazonaws.com",
    "registry-1.docker.io",
    "github.com",
    "sts.amazonaws.com",
    "login.microsoftonline.com",
    "pypi.org",
];

/// What to generate (also the flags of `kubewire-bench scenario`).
#[derive(Clone, Debug, clap::Args)]
pub struct ScenarioConfig {
    /// Total services, spread round-robin over the namespaces.
    #[arg(long, default_value_t = 1000)]
    pub services: usize,
    /// Every Nth service is headless (e.g. 5); 0 = none.
    #[arg(long, default_value_t = 5)]
    pub headless_every: usize,
    /// Ready endpoints per headless service, each with a hostname and a pod.
    #[arg(long, default_value_t = 10)]
    pub endpoints_per_headless: usize,
    /// Extra running pods (pod records) besides the endpoints' pods.
    #[arg(long, default_value_t = 1000)]
    pub pods: usize,
    /// Number of namespaces (at least 1 is used), named `ns-0`, `ns-1`, ...
    #[arg(long, default_value_t = 10)]
    pub namespaces: usize,
    /// Lines in the query file.
    #[arg(long, default_value_t = 100_000)]
    pub queries: usize,
    /// Seed of the query mix.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

impl Default for ScenarioConfig {
    fn default() -> ScenarioConfig {
        ScenarioConfig {
            services: 1000,
            headless_every: 5,
            endpoints_per_headless: 10,
            pods: 1000,
            namespaces: 10,
            queries: 100_000,
            seed: 1,
        }
    }
}

/// The generated files' contents.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Kubernetes manifests for `kubewire --manifests`.
    pub manifests: String,
    /// The `cluster.local` zone file for NSD and Knot DNS.
    pub zone: String,
    /// dnsperf queries, `name TYPE` per line.
    pub queries: String,
}

/// Generates the cluster described by `config` and its three files.
pub fn generate(config: &ScenarioConfig) -> Scenario {
    let cluster = Cluster::new(config);
    Scenario {
        manifests: manifests(&cluster),
        zone: zone_file(&cluster),
        queries: query_file(&cluster, config),
    }
}

/// Writes manifests.json, cluster.local.zone and queries.txt into `dir`
/// (created if needed); returns their paths in that order.
pub fn write(config: &ScenarioConfig, dir: &Path) -> std::io::Result<[PathBuf; 3]> {
    std::fs::create_dir_all(dir)?;
    let scenario = generate(config);
    let paths = [
        dir.join("manifests.json"),
        dir.join("cluster.local.zone"),
        dir.join("queries.txt"),
    ];
    let texts = [&scenario.manifests, &scenario.zone, &scenario.queries];
    for (path, text) in paths.iter().zip(texts) {
        std::fs::write(path, text)?;
    }
    Ok(paths)
}

#[derive(Clone, Copy, Debug)]
struct Port {
    name: &'static str,
    port: u16,
    /// The endpoints' port, as the EndpointSlice lists it.
    target_port: u16,
    protocol: &'static str,
}

impl Port {
    const fn new(name: &'static str, port: u16, target_port: u16, protocol: &'static str) -> Port {
        Port {
            name,
            port,
            target_port,
            protocol,
        }
    }
}

const HTTP: Port = Port::new("http", 80, 80, "TCP");

#[derive(Clone, Debug)]
struct Endpoint {
    ip: Ipv4Addr,
    hostname: Option<String>,
    pod: Option<String>,
}

#[derive(Clone, Debug)]
struct Service {
    namespace: String,
    name: String,
    /// `None` for a headless service.
    cluster_ip: Option<Ipv4Addr>,
    ports: Vec<Port>,
    endpoints: Vec<Endpoint>,
}

impl Service {
    /// `<svc>.<ns>.svc`, relative to the zone.
    fn relative_name(&self) -> String {
        format!("{}.{}.svc", self.name, self.namespace)
    }
}

#[derive(Clone, Debug)]
struct Pod {
    namespace: String,
    name: String,
    ip: Ipv4Addr,
}

#[derive(Clone, Debug)]
struct Cluster {
    /// Every namespace, the system ones first.
    namespaces: Vec<String>,
    /// The generated `ns-N` namespaces, where the query clients live.
    workload_namespaces: Vec<String>,
    /// Never empty: `kubernetes.default` and `kube-dns.kube-system` come first.
    services: Vec<Service>,
    pods: Vec<Pod>,
}

/// Hands out unique addresses after a base, skipping `.0` and `.255`.
#[derive(Debug)]
struct AddressPool {
    base: Ipv4Addr,
    taken: usize,
}

impl AddressPool {
    fn take(&mut self) -> Ipv4Addr {
        self.taken += 1;
        nth_host(self.base, self.taken - 1)
    }
}

/// The `index`th address after `base` whose last octet is 1 to 254.
fn nth_host(base: Ipv4Addr, index: usize) -> Ipv4Addr {
    let offset = (index / 254) * 256 + index % 254 + 1;
    Ipv4Addr::from(u32::from(base).wrapping_add(offset as u32))
}

impl Cluster {
    fn new(config: &ScenarioConfig) -> Cluster {
        let workload_namespaces: Vec<String> = (0..config.namespaces.max(1))
            .map(|n| format!("ns-{n}"))
            .collect();
        let mut pod_ips = AddressPool {
            base: POD_NETWORK,
            taken: 0,
        };
        let mut pods = Vec::new();
        let mut add_pod = |namespace: &str, name: String| {
            let ip = pod_ips.take();
            pods.push(Pod {
                namespace: namespace.to_string(),
                name,
                ip,
            });
            ip
        };
        let coredns_ip = add_pod("kube-system", "coredns-0".to_string());
        let mut services = vec![
            Service {
                namespace: "default".into(),
                name: "kubernetes".into(),
                cluster_ip: Some(Ipv4Addr::new(10, 96, 0, 1)),
                ports: vec![Port::new("https", 443, 6443, "TCP")],
                endpoints: vec![Endpoint {
                    ip: Ipv4Addr::new(172, 18, 0, 2),
                    hostname: None,
                    pod: None,
                }],
            },
            Service {
                namespace: "kube-system".into(),
                name: "kube-dns".into(),
                cluster_ip: Some(DNS_SERVICE_IP),
                ports: vec![
                    Port::new("dns", 53, 53, "UDP"),
                    Port::new("dns-tcp", 53, 53, "TCP"),
                ],
                endpoints: vec![Endpoint {
                    ip: coredns_ip,
                    hostname: None,
                    pod: Some("coredns-0".into()),
                }],
            },
        ];
        for index in 0..config.services {
            let namespace = workload_namespaces[index % workload_namespaces.len()].clone();
            let name = format!("svc-{index}");
            let headless = config.headless_every > 0 && (index + 1) % config.headless_every == 0;
            let mut endpoints = Vec::new();
            if headless {
                for number in 0..config.endpoints_per_headless {
                    let pod_name = format!("{name}-{number}");
                    let ip = add_pod(&namespace, pod_name.clone());
                    let hostname = Some(format!("ep-{number}"));
                    endpoints.push(Endpoint {
                        ip,
                        hostname,
                        pod: Some(pod_name),
                    });
                }
            }
            let cluster_ip = (!headless).then(|| nth_host(SERVICE_NETWORK, index));
            services.push(Service {
                namespace,
                name,
                cluster_ip,
                ports: vec![HTTP],
                endpoints,
            });
        }
        for index in 0..config.pods {
            let namespace = &workload_namespaces[index % workload_namespaces.len()];
            add_pod(namespace, format!("pod-{index}"));
        }
        let mut namespaces = vec!["default".to_string(), "kube-system".to_string()];
        namespaces.extend(workload_namespaces.iter().cloned());
        Cluster {
            namespaces,
            workload_namespaces,
            services,
            pods,
        }
    }
}

// ---- manifests ---------------------------------------------------------------

/// One `kind: List` JSON document, one object per line.
fn manifests(cluster: &Cluster) -> String {
    let mut items: Vec<Value> = Vec::new();
    for namespace in &cluster.namespaces {
        items.push(
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}),
        );
    }
    for service in &cluster.services {
        items.push(service_object(service));
        items.extend(slice_objects(service));
    }
    for pod in &cluster.pods {
        items.push(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod.name, "namespace": pod.namespace},
            "spec": {"containers": []},
            "status": {
                "phase": "Running",
                "podIP": pod.ip.to_string(), "podIPs": [{"ip": pod.ip.to_string()}]
            }
        }));
    }
    let mut text = String::from("{\"apiVersion\": \"v1\", \"kind\": \"List\", \"items\": [\n");
    for (index, item) in items.iter().enumerate() {
        if index > 0 {
            text.push_str(",\n");
        }
        text.push_str(&item.to_string());
    }
    text.push_str("\n]}\n");
    text
}

fn service_object(service: &Service) -> Value {
    let cluster_ip = service
        .cluster_ip
        .map_or_else(|| "None".to_string(), |ip| ip.to_string());
    let ports: Vec<Value> = service
        .ports
        .iter()
        .map(|port| {
            json!({
                "name": port.name, "port": port.port,
                "targetPort": port.target_port, "protocol": port.protocol
            })
        })
        .collect();
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": service.name, "namespace": service.namespace},
        "spec": {"clusterIP": cluster_ip, "clusterIPs": [cluster_ip], "ports": ports}
    })
}

/// The service's EndpointSlices, at most 100 endpoints each.
fn slice_objects(service: &Service) -> Vec<Value> {
    let ports: Vec<Value> = service
        .ports
        .iter()
        .map(|port| json!({"name": port.name, "port": port.target_port, "protocol": port.protocol}))
        .collect();
    let slices = service
        .endpoints
        .chunks(MAX_ENDPOINTS_PER_SLICE)
        .enumerate();
    slices
        .map(|(number, chunk)| {
            let endpoints: Vec<Value> = chunk
                .iter()
                .map(|endpoint| {
                    let mut object = json!({
                        "addresses": [endpoint.ip.to_string()], "conditions": {"ready": true}
                    });
                    if let Some(hostname) = &endpoint.hostname {
                        object["hostname"] = json!(hostname);
                    }
                    if let Some(pod) = &endpoint.pod {
                        object["targetRef"] =
                            json!({"kind": "Pod", "name": pod, "namespace": service.namespace});
                    }
                    object
                })
                .collect();
            json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {
                    "name": format!("{}-{number}", service.name), "namespace": service.namespace,
                    "labels": {"kubernetes.io/service-name": service.name}
                },
                "addressType": "IPv4", "ports": ports, "endpoints": endpoints
            })
        })
        .collect()
}

// ---- zone file ---------------------------------------------------------------

fn add_record(zone: &mut String, owner: &str, rtype: &str, rdata: &str) {
    zone.push_str(&format!("{owner} IN {rtype} {rdata}\n"));
}

/// `10-244-0-1`: an address as one label, as in pod names.
fn dashed(ip: Ipv4Addr) -> String {
    ip.to_string().replace('.', "-")
}

fn zone_file(cluster: &Cluster) -> String {
    let mut zone = String::from(
        "; The records kubewire serves (--ttl 5) for manifests.json, for NSD and Knot DNS.\n\
         ; PTR records live in reverse zones and are left out: reverse queries are not\n\
         ; answered from this file. The SOA serial differs (kubewire uses the time).\n",
    );
    // kubewire gives dns-version CoreDNS's TTL, not --ttl.
    zone.push_str(&format!(
        "$ORIGIN {ZONE}.\n$TTL 5\n\
         @ IN SOA ns.dns hostmaster 1 7200 1800 86400 5\n\
         @ IN NS ns.dns\n\
         ns.dns IN A {DNS_SERVICE_IP}\n\
         dns-version 28800 IN TXT \"1.1.0\"\n"
    ));
    for service in &cluster.services {
        service_records(service, &mut zone);
    }
    for pod in &cluster.pods {
        let owner = format!("{}.{}.pod", dashed(pod.ip), pod.namespace);
        add_record(&mut zone, &owner, "A", &pod.ip.to_string());
    }
    zone
}

/// A service's names as kubewire's compiler makes them: the service's
/// addresses, one name per endpoint, and SRV sets at `_port._proto.<svc>`
/// and at the bare service name, weight `floor(100 / N)`.
fn service_records(service: &Service, zone: &mut String) {
    let base = service.relative_name();
    // SRV records by owner: (port, target).
    let mut srv: BTreeMap<String, Vec<(u16, String)>> = BTreeMap::new();
    let mut add_srv = |port: &Port, port_number: u16, target: String| {
        let named = format!(
            "_{}._{}.{base}",
            port.name,
            port.protocol.to_ascii_lowercase()
        );
        srv.entry(named)
            .or_default()
            .push((port_number, target.clone()));
        srv.entry(base.clone())
            .or_default()
            .push((port_number, target));
    };
    match service.cluster_ip {
        Some(ip) => {
            add_record(zone, &base, "A", &ip.to_string());
            for port in &service.ports {
                add_srv(port, port.port, format!("{base}.{ZONE}."));
            }
        }
        None => {
            for endpoint in &service.endpoints {
                add_record(zone, &base, "A", &endpoint.ip.to_string());
            }
        }
    }
    for endpoint in &service.endpoints {
        let label = endpoint
            .hostname
            .clone()
            .unwrap_or_else(|| dashed(endpoint.ip));
        let name = format!("{label}.{base}");
        add_record(zone, &name, "A", &endpoint.ip.to_string());
        if service.cluster_ip.is_none() {
            for port in &service.ports {
                add_srv(port, port.target_port, format!("{name}.{ZONE}."));
            }
        }
    }
    for (owner, mut records) in srv {
        records.sort();
        records.dedup();
        let weight = 100 / records.len().max(1);
        for (port, target) in records {
            add_record(zone, &owner, "SRV", &format!("0 {weight} {port} {target}"));
        }
    }
}

// ---- queries -----------------------------------------------------------------

/// SplitMix64: a small, fast, seedable generator; good enough for a mix.
#[derive(Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (0 when `bound` is 0).
    fn below(&mut self, bound: usize) -> usize {
        if bound == 0 {
            0
        } else {
            (self.next_u64() % bound as u64) as usize
        }
    }

    /// An item, skewed as real traffic is: half the picks go to the first
    /// tenth (the system services and the lowest-numbered ones).
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        let hot = (items.len() / 10).max(1);
        let index = if self.below(2) == 0 {
            self.below(hot)
        } else {
            self.below(items.len())
        };
        &items[index]
    }
}

/// `d.c.b.a.in-addr.arpa`.
fn reverse_name(ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("{d}.{c}.{b}.{a}.in-addr.arpa")
}

/// Line shares, in percent: A hits 60, AAAA 10, SRV 5, PTR 5, NXDOMAIN 5;
/// the rest (about 15) are search-path sequences, kept in order and shuffled
/// as units among the single queries.
fn query_file(cluster: &Cluster, config: &ScenarioConfig) -> String {
    let total = config.queries;
    let share = |percent: usize| total * percent / 100;
    let mut rng = SplitMix64(config.seed);
    let services = &cluster.services;
    let with_ip: Vec<&Service> = services.iter().filter(|s| s.cluster_ip.is_some()).collect();
    let mut units: Vec<Vec<String>> = Vec::with_capacity(total);
    for _ in 0..share(60) {
        let service = rng.pick(services);
        units.push(vec![format!("{}.{ZONE} A", service.relative_name())]);
    }
    for _ in 0..share(10) {
        let service = rng.pick(services);
        units.push(vec![format!("{}.{ZONE} AAAA", service.relative_name())]);
    }
    for _ in 0..share(5) {
        let service = rng.pick(services);
        let port = &service.ports[rng.below(service.ports.len())];
        let protocol = port.protocol.to_ascii_lowercase();
        let name = format!(
            "_{}._{protocol}.{}.{ZONE}",
            port.name,
            service.relative_name()
        );
        units.push(vec![format!("{name} SRV")]);
    }
    for _ in 0..share(5) {
        if let Some(ip) = rng.pick(&with_ip).cluster_ip {
            units.push(vec![format!("{} PTR", reverse_name(ip))]);
        }
    }
    for _ in 0..share(5) {
        let namespace = rng.pick(&cluster.namespaces);
        let missing = rng.below(1_000_000);
        units.push(vec![format!("missing-{missing}.{namespace}.svc.{ZONE} A")]);
    }
    let mut search_lines = total.saturating_sub(units.len());
    while search_lines > 0 {
        let mut unit = search_path_sequence(&mut rng, cluster);
        unit.truncate(search_lines);
        search_lines -= unit.len();
        units.push(unit);
    }
    for index in (1..units.len()).rev() {
        let other = rng.below(index + 1);
        units.swap(index, other);
    }
    let mut text = String::new();
    for line in units.iter().flatten() {
        text.push_str(line);
        text.push('\n');
    }
    text
}

/// What a pod's resolver sends with `ndots:5` for a name with fewer dots:
/// an external name misses three search domains before it goes out (the
/// query upstream is not ours); `<svc>.<other-ns>` misses the pod's own
/// namespace first, then hits.
fn search_path_sequence(rng: &mut SplitMix64, cluster: &Cluster) -> Vec<String> {
    let client_namespace = rng.pick(&cluster.workload_namespaces);
    if rng.below(2) == 0 {
        let external = EXTERNAL_NAMES[rng.below(EXTERNAL_NAMES.len())];
        vec![
            format!("{external}.{client_namespace}.svc.{ZONE} A"),
            format!("{external}.svc.{ZONE} A"),
            format!("{external}.{ZONE} A"),
        ]
    } else {
        let service = rng.pick(&cluster.services);
        let short = format!("{}.{}", service.name, service.namespace);
        vec![
            format!("{short}.{client_namespace}.svc.{ZONE} A"),
            format!("{short}.svc.{ZONE} A"),
        ]
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn small() -> ScenarioConfig {
        ScenarioConfig {
            services: 10,
            headless_every: 5,
            endpoints_per_headless: 3,
            pods: 4,
            namespaces: 2,
            queries: 10_000,
            seed: 7,
        }
    }

    fn kinds(manifests: &str) -> BTreeMap<String, usize> {
        let list: Value = serde_json::from_str(manifests).unwrap();
        let mut counts = BTreeMap::new();
        for item in list["items"].as_array().unwrap() {
            *counts
                .entry(item["kind"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
        counts
    }

    #[test]
    fn manifests_hold_every_object() {
        let counts = kinds(&generate(&small()).manifests);
        assert_eq!(counts["Namespace"], 4);
        assert_eq!(counts["Service"], 12);
        // kubernetes, kube-dns and the two headless services.
        assert_eq!(counts["EndpointSlice"], 4);
        // coredns, 2 x 3 endpoint pods, 4 extra pods.
        assert_eq!(counts["Pod"], 11);

        let big = ScenarioConfig {
            endpoints_per_headless: 150,
            ..small()
        };
        assert_eq!(kinds(&generate(&big).manifests)["EndpointSlice"], 6);
    }

    /// kubewire reads `.yaml` with serde-saphyr's default budget.
    #[test]
    fn default_manifests_fit_the_yaml_budget() {
        fn nodes(value: &Value) -> usize {
            match value {
                Value::Array(items) => 1 + items.iter().map(nodes).sum::<usize>(),
                Value::Object(map) => 1 + map.values().map(|v| 1 + nodes(v)).sum::<usize>(),
                _ => 1,
            }
        }
        let config = ScenarioConfig {
            queries: 0,
            ..ScenarioConfig::default()
        };
        let list: Value = serde_json::from_str(&generate(&config).manifests).unwrap();
        assert!(nodes(&list) < 250_000, "{} nodes", nodes(&list));
    }

    #[test]
    fn zone_has_the_served_records() {
        let zone = generate(&small()).zone;
        let lines: Vec<&str> = zone.lines().collect();
        for expected in [
            "svc-0.ns-0.svc IN A 10.97.0.1",
            "svc-0.ns-0.svc IN SRV 0 100 80 svc-0.ns-0.svc.cluster.local.",
            "_http._tcp.svc-0.ns-0.svc IN SRV 0 100 80 svc-0.ns-0.svc.cluster.local.",
            // svc-4 is headless; coredns took 10.244.0.1.
            "svc-4.ns-0.svc IN A 10.244.0.2",
            "ep-0.svc-4.ns-0.svc IN A 10.244.0.2",
            "_http._tcp.svc-4.ns-0.svc IN SRV 0 33 80 ep-0.svc-4.ns-0.svc.cluster.local.",
            "_dns._udp.kube-dns.kube-system.svc IN SRV 0 100 53 kube-dns.kube-system.svc.cluster.local.",
            "10-244-0-1.kube-dns.kube-system.svc IN A 10.244.0.1",
            "10-244-0-2.ns-0.pod IN A 10.244.0.2",
            // pod-0 comes after coredns and the six endpoint pods.
            "10-244-0-8.ns-0.pod IN A 10.244.0.8",
            "dns-version 28800 IN TXT \"1.1.0\"",
        ] {
            assert!(lines.contains(&expected), "missing {expected:?}");
        }
        // dns and dns-tcp share port and target: one record at the bare name.
        let bare =
            "kube-dns.kube-system.svc IN SRV 0 100 53 kube-dns.kube-system.svc.cluster.local.";
        assert_eq!(lines.iter().filter(|l| **l == bare).count(), 1);
        assert_eq!(
            lines.iter().filter(|l| l.contains(".pod IN A ")).count(),
            11
        );
    }

    #[test]
    fn queries_have_the_asked_count_and_format() {
        for queries in [0, 1, 2, 7, 10_000] {
            let text = generate(&ScenarioConfig { queries, ..small() }).queries;
            assert_eq!(text.lines().count(), queries);
            for line in text.lines() {
                let fields: Vec<&str> = line.split(' ').collect();
                assert_eq!(fields.len(), 2, "{line:?}");
                assert!(["A", "AAAA", "SRV", "PTR"].contains(&fields[1]), "{line:?}");
            }
        }
    }

    #[test]
    fn queries_are_deterministic_per_seed() {
        let config = small();
        assert_eq!(generate(&config).queries, generate(&config).queries);
        let other = ScenarioConfig { seed: 8, ..small() };
        assert_ne!(generate(&config).queries, generate(&other).queries);
    }

    #[test]
    fn queries_follow_the_mix() {
        let scenario = generate(&ScenarioConfig {
            queries: 20_000,
            ..ScenarioConfig::default()
        });
        let owners_with = |rtype: &str| -> HashSet<String> {
            let marker = format!(" IN {rtype} ");
            scenario
                .zone
                .lines()
                .filter_map(|l| {
                    l.split_once(&marker)
                        .map(|(owner, _)| format!("{owner}.{ZONE}"))
                })
                .collect()
        };
        let (addresses, srv) = (owners_with("A"), owners_with("SRV"));
        let total = scenario.queries.lines().count() as f64;
        let share = |wanted: &dyn Fn(&str, &str) -> bool| {
            let lines = scenario.queries.lines().filter_map(|l| l.split_once(' '));
            lines.filter(|&(name, rtype)| wanted(name, rtype)).count() as f64 / total
        };
        let hits = share(&|name: &str, rtype: &str| rtype == "A" && addresses.contains(name));
        assert!((0.5..0.7).contains(&hits), "A hits {hits}");
        let misses = share(&|name: &str, rtype: &str| rtype == "A" && !addresses.contains(name));
        assert!((0.15..0.25).contains(&misses), "NXDOMAIN {misses}");
        let aaaa = share(&|_: &str, rtype: &str| rtype == "AAAA");
        assert!((0.08..0.12).contains(&aaaa), "AAAA {aaaa}");
        let srv_hits = share(&|name: &str, rtype: &str| rtype == "SRV" && srv.contains(name));
        assert!((0.04..0.06).contains(&srv_hits), "SRV {srv_hits}");
        let ptr =
            share(&|name: &str, rtype: &str| rtype == "PTR" && name.ends_with(".in-addr.arpa"));
        assert!((0.04..0.06).contains(&ptr), "PTR {ptr}");
    }

    #[test]
    fn write_creates_the_three_files() {
        let dir = std::env::temp_dir().join(format!("kubewire-scenario-{}", std::process::id()));
        let config = ScenarioConfig {
            queries: 100,
            ..small()
        };
        let paths = write(&config, &dir.join("nested")).unwrap();
        let names: Vec<&str> = paths
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["manifests.json", "cluster.local.zone", "queries.txt"]
        );
        let scenario = generate(&config);
        assert_eq!(
            std::fs::read_to_string(&paths[0]).unwrap(),
            scenario.manifests
        );
        assert_eq!(
            std::fs::read_to_string(&paths[2]).unwrap().lines().count(),
            100
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
