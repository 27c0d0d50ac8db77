//! The manifests in `deploy/cluster-dns/` and `deploy/node-local/` agree with
//! each other and with the server:
//! - every document parses as the API type of its kind;
//! - every selector selects: a workload's its own pod template, a Service's
//!   and a PodDisruptionBudget's some workload's, and a Service's ports are
//!   that workload's container ports;
//! - probes and container ports are the ones the workload's kubewire.toml
//!   serves on;
//! - the ClusterRoles grant exactly what the watchers use
//!   (`server/src/sources/watch.rs`), and bind the workloads' ServiceAccounts;
//! - every kubewire.toml passes `Config::parse`, which is what
//!   `kubewire config check` runs;
//! - the seccomp profile the pods name exists and allows io_uring.
//!
//! Nothing is started: these tests read files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, PodSpec, PodTemplateSpec, Probe, Service, ServiceAccount,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kubewire::operations::config::Config;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

/// The folders checked, under `deploy/`.
const FOLDERS: &[&str] = &["cluster-dns", "node-local"];
/// The ConfigMap key that holds kubewire's configuration.
const CONFIG_KEY: &str = "kubewire.toml";
/// The container that runs kubewire, in every workload.
const CONTAINER: &str = "kubewire";
/// The seccomp profile every kubewire container runs under, in `deploy/seccomp/`.
const SECCOMP_PROFILE: &str = "kubewire-io-uring.json";
/// The cluster DNS Service, whose address node-local takes over.
const KUBE_DNS: &str = "kube-dns";
/// DNS's port, which every listen address and container uses.
const DNS_PORT: u16 = 53;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// One object and where it came from.
#[derive(Debug)]
struct Found<T> {
    /// `deploy/<folder>/<file>:<line>`, the line of the document's start.
    file: String,
    /// `Kind namespace/name`.
    what: String,
    object: T,
}

impl<T> Found<T> {
    /// Where and what, for messages.
    fn at(&self) -> String {
        format!("{}: {}", self.file, self.what)
    }
}

/// Every object in the checked folders, by kind.
#[derive(Debug, Default)]
struct Manifests {
    services: Vec<Found<Service>>,
    service_accounts: Vec<Found<ServiceAccount>>,
    cluster_roles: Vec<Found<ClusterRole>>,
    bindings: Vec<Found<ClusterRoleBinding>>,
    config_maps: Vec<Found<ConfigMap>>,
    deployments: Vec<Found<Deployment>>,
    daemon_sets: Vec<Found<DaemonSet>>,
    budgets: Vec<Found<PodDisruptionBudget>>,
}

/// The YAML files of the checked folders, as (`deploy/<folder>/<file>`, path).
fn yaml_files() -> Vec<(String, PathBuf)> {
    let mut files = Vec::new();
    for folder in FOLDERS {
        let dir = deploy_dir().join(folder);
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("deploy/{folder}: {e}"));
        for entry in entries {
            let path = entry.unwrap().path();
            if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            ) {
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                files.push((format!("deploy/{folder}/{name}"), path));
            }
        }
    }
    files.sort();
    files
}

/// The documents of a YAML file, split on `---` lines, each with the line it
/// starts on. A part with nothing but comments is no document.
fn documents(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut line = 1;
    for part in text.split("\n---") {
        let start = line;
        line += part.matches('\n').count() + 1;
        let body = part.strip_prefix("---").unwrap_or(part);
        let empty = body.lines().all(|l| {
            let l = l.trim();
            l.is_empty() || l.starts_with('#')
        });
        if !empty {
            out.push((start, body));
        }
    }
    out
}

/// A document as the API type of its kind, as `server/src/sources/manifests.rs`
/// reads manifests: the YAML into a JSON value, then into the type, whose
/// reader checks `apiVersion` and `kind`.
fn found<T: serde::de::DeserializeOwned>(file: &str, what: &str, value: Value) -> Found<T> {
    let object = serde_json::from_value(value)
        .unwrap_or_else(|e| panic!("{file}: {what}: not a valid object of its kind: {e}"));
    Found {
        file: file.to_string(),
        what: what.to_string(),
        object,
    }
}

fn load() -> Manifests {
    let mut m = Manifests::default();
    let files = yaml_files();
    assert!(!files.is_empty(), "no YAML files in deploy/{FOLDERS:?}");
    for (name, path) in files {
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let parts = documents(&text);
        assert!(!parts.is_empty(), "{name}: no documents");
        for (line, body) in parts {
            let file = format!("{name}:{line}");
            let value: Value = serde_saphyr::from_str(body)
                .unwrap_or_else(|e| panic!("{file}: not valid YAML: {e}"));
            let kind = value
                .get("kind")
                .and_then(Value::as_str)
                .unwrap_or_else(|| panic!("{file}: a document without `kind`"))
                .to_string();
            let meta = value.get("metadata");
            let field = |key: &str| meta.and_then(|m| m.get(key)).and_then(Value::as_str);
            let object_name =
                field("name").unwrap_or_else(|| panic!("{file}: {kind} without a name"));
            let cluster_wide = matches!(kind.as_str(), "ClusterRole" | "ClusterRoleBinding");
            let what = match field("namespace") {
                Some(namespace) => {
                    assert!(
                        !cluster_wide,
                        "{file}: {kind} {object_name} has a namespace"
                    );
                    format!("{kind} {namespace}/{object_name}")
                }
                None => {
                    // Without one, kubectl would use the current context's.
                    assert!(
                        cluster_wide,
                        "{file}: {kind} {object_name} names no namespace"
                    );
                    format!("{kind} {object_name}")
                }
            };
            match kind.as_str() {
                "Service" => m.services.push(found(&file, &what, value)),
                "ServiceAccount" => m.service_accounts.push(found(&file, &what, value)),
                "ClusterRole" => m.cluster_roles.push(found(&file, &what, value)),
                "ClusterRoleBinding" => m.bindings.push(found(&file, &what, value)),
                "ConfigMap" => m.config_maps.push(found(&file, &what, value)),
                "Deployment" => m.deployments.push(found(&file, &what, value)),
                "DaemonSet" => m.daemon_sets.push(found(&file, &what, value)),
                "PodDisruptionBudget" => m.budgets.push(found(&file, &what, value)),
                other => panic!("{file}: {what}: kind {other} is not one these tests check"),
            }
        }
    }
    assert!(
        !m.deployments.is_empty() && !m.daemon_sets.is_empty(),
        "deploy/ should hold the cluster DNS Deployment and the node-local DaemonSet"
    );
    m
}

/// A Deployment's or a DaemonSet's pod template.
#[derive(Debug)]
struct Workload<'a> {
    /// Where and what, for messages.
    at: String,
    namespace: &'a str,
    selector: &'a LabelSelector,
    template: &'a PodTemplateSpec,
}

impl<'a> Workload<'a> {
    fn labels(&self) -> Option<&'a BTreeMap<String, String>> {
        self.template.metadata.as_ref()?.labels.as_ref()
    }

    fn pod(&self) -> &'a PodSpec {
        self.template
            .spec
            .as_ref()
            .unwrap_or_else(|| panic!("{}: the pod template has no spec", self.at))
    }

    fn container(&self) -> &'a Container {
        self.pod()
            .containers
            .iter()
            .find(|c| c.name == CONTAINER)
            .unwrap_or_else(|| panic!("{}: no container named {CONTAINER}", self.at))
    }

    fn host_network(&self) -> bool {
        self.pod().host_network == Some(true)
    }
}

impl Manifests {
    /// The Deployments and DaemonSets. `load` checked that each names its
    /// namespace.
    fn workloads(&self) -> Vec<Workload<'_>> {
        let mut out = Vec::new();
        for d in &self.deployments {
            out.push(Workload {
                at: d.at(),
                namespace: d.object.metadata.namespace.as_deref().unwrap_or_default(),
                selector: &d.object.spec.selector,
                template: &d.object.spec.template,
            });
        }
        for d in &self.daemon_sets {
            out.push(Workload {
                at: d.at(),
                namespace: d.object.metadata.namespace.as_deref().unwrap_or_default(),
                selector: &d.object.spec.selector,
                template: &d.object.spec.template,
            });
        }
        out
    }

    /// The ConfigMap `namespace/name`.
    fn config_map(&self, namespace: &str, name: &str) -> Option<&Found<ConfigMap>> {
        self.config_maps.iter().find(|c| {
            c.object.metadata.namespace.as_deref() == Some(namespace)
                && c.object.metadata.name.as_deref() == Some(name)
        })
    }

    /// The workload's configuration: the ConfigMap key that its container's
    /// `--config=` path reads through a ConfigMap volume, parsed.
    fn config_of(&self, w: &Workload<'_>) -> (String, Config) {
        let container = w.container();
        let path = container
            .args
            .iter()
            .flatten()
            .find_map(|a| a.strip_prefix("--config="))
            .unwrap_or_else(|| panic!("{}: container {CONTAINER} has no --config= argument", w.at));
        let (dir, key) = path
            .rsplit_once('/')
            .unwrap_or_else(|| panic!("{}: --config={path} is not an absolute path", w.at));
        assert_eq!(
            key, CONFIG_KEY,
            "{}: --config={path} reads another key",
            w.at
        );
        let mount = container
            .volume_mounts
            .iter()
            .flatten()
            .find(|v| v.mount_path.trim_end_matches('/') == dir)
            .unwrap_or_else(|| {
                panic!(
                    "{}: nothing is mounted at {dir}, which --config reads",
                    w.at
                )
            });
        let volume = w
            .pod()
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == mount.name)
            .unwrap_or_else(|| panic!("{}: no volume {} for the mount at {dir}", w.at, mount.name));
        let source = volume
            .config_map
            .as_ref()
            .unwrap_or_else(|| panic!("{}: volume {} is not a ConfigMap", w.at, volume.name));
        assert!(
            source.items.is_none(),
            "{}: volume {} maps keys to other paths; --config={path} expects the key's own name",
            w.at,
            volume.name
        );
        let found = self
            .config_map(w.namespace, &source.name)
            .unwrap_or_else(|| {
                panic!(
                    "{}: no ConfigMap {}/{} in deploy/",
                    w.at, w.namespace, source.name
                )
            });
        let text = found
            .object
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .unwrap_or_else(|| panic!("{}: no key {key}, which {} reads", found.at(), w.at));
        let origin = format!("{}: {key}", found.at());
        let config = Config::parse(&origin, text).unwrap_or_else(|e| panic!("{e}"));
        (origin, config)
    }
}

/// Whether every label of `selector` is in `labels`; an empty selector
/// selects nothing here.
fn selects(selector: &BTreeMap<String, String>, labels: Option<&BTreeMap<String, String>>) -> bool {
    !selector.is_empty()
        && labels.is_some_and(|labels| selector.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// A label selector's labels, which must be all of it: these tests do not
/// evaluate matchExpressions.
fn match_labels<'a>(at: &str, selector: &'a LabelSelector) -> &'a BTreeMap<String, String> {
    assert!(
        selector
            .match_expressions
            .as_ref()
            .is_none_or(Vec::is_empty),
        "{at}: matchExpressions are not checked here; use matchLabels"
    );
    selector
        .match_labels
        .as_ref()
        .filter(|labels| !labels.is_empty())
        .unwrap_or_else(|| panic!("{at}: the selector has no matchLabels"))
}

/// The container's ports of a protocol (TCP when unset, as the API's default).
fn container_ports(container: &Container, protocol: &str) -> BTreeSet<u16> {
    container
        .ports
        .iter()
        .flatten()
        .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == protocol)
        .map(|p| u16::try_from(p.container_port).unwrap())
        .collect()
}

/// A port by number, or by the name of one of the container's ports.
fn port_number(at: &str, container: &Container, port: &IntOrString) -> u16 {
    match port {
        IntOrString::Int(number) => u16::try_from(*number).unwrap(),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| u16::try_from(p.container_port).unwrap())
            .unwrap_or_else(|| panic!("{at}: no container port named {name}")),
    }
}

/// Checks an HTTP probe against the address the config serves it on.
fn check_probe(
    at: &str,
    which: &str,
    probe: Option<&Probe>,
    path: &str,
    key: &str,
    addr: Option<SocketAddr>,
    container: &Container,
) {
    let probe = probe.unwrap_or_else(|| panic!("{at}: no {which}"));
    let get = probe
        .http_get
        .as_ref()
        .unwrap_or_else(|| panic!("{at}: the {which} is not an httpGet"));
    assert_eq!(get.path.as_deref(), Some(path), "{at}: the {which}'s path");
    let addr =
        addr.unwrap_or_else(|| panic!("{at}: the {which} asks for {path}, but {key} is off"));
    assert_eq!(
        port_number(at, container, &get.port),
        addr.port(),
        "{at}: the {which}'s port is not {key}'s ({addr})"
    );
    // An address of every interface is reached at the pod's IP, the probe's
    // default; a single address must be named.
    let host = (!addr.ip().is_unspecified()).then(|| addr.ip().to_string());
    assert_eq!(
        get.host, host,
        "{at}: the {which}'s host, for {key} = {addr}"
    );
}

#[test]
fn every_document_parses_as_its_kind() {
    let m = load();
    for (kind, count) in [
        ("Service", m.services.len()),
        ("ServiceAccount", m.service_accounts.len()),
        ("ClusterRole", m.cluster_roles.len()),
        ("ClusterRoleBinding", m.bindings.len()),
        ("ConfigMap", m.config_maps.len()),
        ("PodDisruptionBudget", m.budgets.len()),
    ] {
        assert!(count > 0, "no {kind} in deploy/{FOLDERS:?}");
    }
}

#[test]
fn workload_selectors_match_their_pod_templates() {
    let m = load();
    for w in m.workloads() {
        let selector = match_labels(&w.at, w.selector);
        assert!(
            selects(selector, w.labels()),
            "{}: the selector {selector:?} does not match the pod template's labels {:?}",
            w.at,
            w.labels()
        );
    }
}

#[test]
fn services_and_budgets_select_a_workload_and_services_reach_its_ports() {
    let m = load();
    let workloads = m.workloads();
    for s in &m.services {
        let at = s.at();
        let namespace = s.object.metadata.namespace.as_deref().unwrap_or_default();
        let spec = s
            .object
            .spec
            .as_ref()
            .unwrap_or_else(|| panic!("{at}: no spec"));
        let selector = spec
            .selector
            .as_ref()
            .unwrap_or_else(|| panic!("{at}: no selector"));
        let selected: Vec<&Workload<'_>> = workloads
            .iter()
            .filter(|w| w.namespace == namespace && selects(selector, w.labels()))
            .collect();
        assert!(
            !selected.is_empty(),
            "{at}: the selector {selector:?} matches no workload's pod template in deploy/"
        );
        let ports = spec.ports.as_deref().unwrap_or_default();
        assert!(!ports.is_empty(), "{at}: no ports");
        for w in selected {
            let container = w.container();
            for port in ports {
                let protocol = port.protocol.as_deref().unwrap_or("TCP");
                let target = port
                    .target_port
                    .clone()
                    .unwrap_or(IntOrString::Int(port.port));
                let number = port_number(&at, container, &target);
                assert!(
                    container_ports(container, protocol).contains(&number),
                    "{at}: port {} goes to {protocol} {number}, which {} does not declare",
                    port.name.as_deref().unwrap_or("(unnamed)"),
                    w.at
                );
            }
        }
    }
    for b in &m.budgets {
        let at = b.at();
        let namespace = b.object.metadata.namespace.as_deref().unwrap_or_default();
        let spec = b
            .object
            .spec
            .as_ref()
            .unwrap_or_else(|| panic!("{at}: no spec"));
        let selector = match_labels(
            &at,
            spec.selector
                .as_ref()
                .unwrap_or_else(|| panic!("{at}: no selector")),
        );
        assert!(
            workloads
                .iter()
                .any(|w| w.namespace == namespace && selects(selector, w.labels())),
            "{at}: the selector {selector:?} matches no workload's pod template in deploy/"
        );
    }
}

#[test]
fn probes_and_ports_are_the_ones_the_config_serves() {
    let m = load();
    let kube_dns_ip = m
        .services
        .iter()
        .find(|s| s.object.metadata.name.as_deref() == Some(KUBE_DNS))
        .and_then(|s| -> Option<IpAddr> {
            s.object.spec.as_ref()?.cluster_ip.as_deref()?.parse().ok()
        });
    for w in m.workloads() {
        let (origin, config) = m.config_of(&w);
        let at = format!("{} (config {origin})", w.at);
        let container = w.container();

        check_probe(
            &at,
            "livenessProbe",
            container.liveness_probe.as_ref(),
            "/health",
            "http.health_addr",
            config.http.health_addr.0,
            container,
        );
        check_probe(
            &at,
            "readinessProbe",
            container.readiness_probe.as_ref(),
            "/ready",
            "http.ready_addr",
            config.http.ready_addr.0,
            container,
        );

        // DNS on 53, over UDP and TCP, and nothing else but metrics.
        let listen: BTreeSet<u16> = config.dns.listen.iter().map(SocketAddr::port).collect();
        assert_eq!(
            listen,
            BTreeSet::from([DNS_PORT]),
            "{at}: dns.listen should serve port {DNS_PORT} only"
        );
        assert_eq!(
            container_ports(container, "UDP"),
            listen,
            "{at}: the container's UDP ports are not dns.listen's"
        );
        let mut tcp = listen.clone();
        if let Some(metrics) = config.http.metrics_addr.0 {
            tcp.insert(metrics.port());
        }
        assert_eq!(
            container_ports(container, "TCP"),
            tcp,
            "{at}: the container's TCP ports are not dns.listen's and http.metrics_addr's"
        );

        // On the host's network, kubewire serves the node-local addresses,
        // the kube-dns address among them; in a pod's own, never.
        let node_local = &config.node_local;
        if !w.host_network() {
            assert!(
                !node_local.enabled,
                "{at}: node_local is on, but the pod is not on the host's network"
            );
            continue;
        }
        assert!(
            node_local.enabled,
            "{at}: on the host's network, but node_local is off"
        );
        let addresses = &node_local.addresses;
        for addr in &config.dns.listen {
            assert!(
                addresses.contains(&addr.ip()),
                "{at}: dns.listen {addr} is not one of node_local.addresses {addresses:?}"
            );
        }
        for (key, addr) in [
            ("http.health_addr", config.http.health_addr.0),
            ("http.ready_addr", config.http.ready_addr.0),
        ] {
            if let Some(addr) = addr {
                assert!(
                    addresses.contains(&addr.ip()),
                    "{at}: {key} {addr} is not one of node_local.addresses {addresses:?}, \
                     so it would take the port on every address of the node"
                );
            }
        }
        let kube_dns_ip =
            kube_dns_ip.unwrap_or_else(|| panic!("{at}: no Service {KUBE_DNS} with a clusterIP"));
        assert!(
            addresses.contains(&kube_dns_ip),
            "{at}: node_local.addresses {addresses:?} lack the {KUBE_DNS} clusterIP {kube_dns_ip}"
        );
    }
}

/// Rules as (API groups, resources, verbs), each sorted, and sorted.
fn rule_set(at: &str, rules: &[PolicyRule]) -> Vec<(Vec<String>, Vec<String>, Vec<String>)> {
    let sorted = |list: Option<&Vec<String>>| {
        let mut list = list.cloned().unwrap_or_default();
        list.sort();
        list
    };
    let mut out: Vec<_> = rules
        .iter()
        .map(|rule| {
            assert!(
                rule.resource_names.is_none() && rule.non_resource_urls.is_none(),
                "{at}: resourceNames and nonResourceURLs are not used by the watchers"
            );
            (
                sorted(rule.api_groups.as_ref()),
                sorted(rule.resources.as_ref()),
                sorted(Some(&rule.verbs)),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn cluster_roles_grant_exactly_what_the_watchers_use() {
    let m = load();
    // server/src/sources/watch.rs: kube's watcher lists, then watches,
    // Services, EndpointSlices, Namespaces, Pods in verified mode, and
    // ServiceImports with `multicluster`.
    let read = strings(&["list", "watch"]);
    let expected = vec![
        (
            strings(&[""]),
            strings(&["namespaces", "pods", "services"]),
            read.clone(),
        ),
        (
            strings(&["discovery.k8s.io"]),
            strings(&["endpointslices"]),
            read.clone(),
        ),
        (
            strings(&["multicluster.x-k8s.io"]),
            strings(&["serviceimports"]),
            read,
        ),
    ];
    for role in &m.cluster_roles {
        let at = role.at();
        let rules = role.object.rules.as_deref().unwrap_or_default();
        assert_eq!(rule_set(&at, rules), expected, "{at}: the rules");
    }

    for binding in &m.bindings {
        let at = binding.at();
        let role = &binding.object.role_ref;
        assert_eq!(role.kind, "ClusterRole", "{at}: roleRef.kind");
        assert_eq!(
            role.api_group.as_deref(),
            Some("rbac.authorization.k8s.io"),
            "{at}: roleRef.apiGroup"
        );
        assert!(
            m.cluster_roles
                .iter()
                .any(|r| r.object.metadata.name.as_deref() == Some(role.name.as_str())),
            "{at}: roleRef names ClusterRole {}, which deploy/ does not hold",
            role.name
        );
        let subjects = binding.object.subjects.as_deref().unwrap_or_default();
        assert!(!subjects.is_empty(), "{at}: no subjects");
        for subject in subjects {
            assert_eq!(subject.kind, "ServiceAccount", "{at}: a subject's kind");
            let namespace = subject.namespace.as_deref().unwrap_or_else(|| {
                panic!("{at}: ServiceAccount {} has no namespace", subject.name)
            });
            assert!(
                m.service_accounts.iter().any(|a| {
                    a.object.metadata.name.as_deref() == Some(subject.name.as_str())
                        && a.object.metadata.namespace.as_deref() == Some(namespace)
                }),
                "{at}: ServiceAccount {namespace}/{}, which deploy/ does not hold",
                subject.name
            );
        }
    }

    // Each workload that reads the API runs as its own ServiceAccount,
    // bound to one of them. Node-local's forward mode reads nothing.
    for w in m.workloads() {
        if m.config_of(&w).1.node_local.forwards_cluster_names() {
            continue;
        }
        let account =
            w.pod().service_account_name.as_deref().unwrap_or_else(|| {
                panic!("{}: no serviceAccountName; `default` has no rights", w.at)
            });
        let bound = m.bindings.iter().any(|b| {
            b.object.subjects.iter().flatten().any(|s| {
                s.kind == "ServiceAccount"
                    && s.name == account
                    && s.namespace.as_deref() == Some(w.namespace)
            })
        });
        assert!(
            bound,
            "{}: no ClusterRoleBinding binds its ServiceAccount {}/{account}",
            w.at, w.namespace
        );
    }
}

#[test]
fn every_config_passes_config_check() {
    let m = load();
    for c in &m.config_maps {
        let text = c
            .object
            .data
            .as_ref()
            .and_then(|d| d.get(CONFIG_KEY))
            .unwrap_or_else(|| panic!("{}: no key {CONFIG_KEY}", c.at()));
        // `kubewire config check FILE` is Config::load, which reads the file
        // and runs this.
        if let Err(error) = Config::parse(&format!("{}: {CONFIG_KEY}", c.at()), text) {
            panic!("{error}");
        }
    }
    // Every one is some workload's.
    let used: Vec<String> = m.workloads().iter().map(|w| m.config_of(w).0).collect();
    for c in &m.config_maps {
        let origin = format!("{}: {CONFIG_KEY}", c.at());
        assert!(used.contains(&origin), "{}: no workload reads it", c.at());
    }
}

#[test]
fn the_seccomp_profile_exists_and_allows_io_uring() {
    let m = load();
    let folder = deploy_dir().join("seccomp");
    for w in m.workloads() {
        let container = w.container();
        let from_container = container
            .security_context
            .as_ref()
            .and_then(|s| s.seccomp_profile.as_ref());
        let from_pod = w
            .pod()
            .security_context
            .as_ref()
            .and_then(|s| s.seccomp_profile.as_ref());
        let profile = from_container.or(from_pod).unwrap_or_else(|| {
            panic!(
                "{}: no seccompProfile; the runtime's default blocks io_uring",
                w.at
            )
        });
        assert_eq!(profile.type_, "Localhost", "{}: seccompProfile.type", w.at);
        assert_eq!(
            profile.localhost_profile.as_deref(),
            Some(SECCOMP_PROFILE),
            "{}: seccompProfile.localhostProfile",
            w.at
        );
    }

    let file = format!("deploy/seccomp/{SECCOMP_PROFILE}");
    let text = std::fs::read_to_string(folder.join(SECCOMP_PROFILE))
        .unwrap_or_else(|e| panic!("{file}: {e}"));
    let profile: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file}: not valid JSON: {e}"));
    assert_eq!(
        profile["defaultAction"], "SCMP_ACT_ERRNO",
        "{file}: what is not listed must fail, as in the runtime's default"
    );
    // containerd reads a Localhost profile as the OCI runtime spec's
    // LinuxSeccomp and drops any other key without a word: moby's `includes`
    // and `excludes` would then stop restricting what they guard.
    let oci_top = [
        "defaultAction",
        "defaultErrnoRet",
        "architectures",
        "flags",
        "listenerPath",
        "listenerMetadata",
        "syscalls",
    ];
    let oci_rule = ["names", "action", "errnoRet", "args"];
    let top = profile
        .as_object()
        .unwrap_or_else(|| panic!("{file}: not a JSON object"));
    for key in top.keys() {
        assert!(
            oci_top.contains(&key.as_str()),
            "{file}: key {key:?} is not the OCI runtime spec's; containerd ignores it"
        );
    }
    let rules = profile["syscalls"]
        .as_array()
        .unwrap_or_else(|| panic!("{file}: syscalls is not a list"));
    let mut allowed = BTreeSet::new();
    for (index, rule) in rules.iter().enumerate() {
        let rule = rule
            .as_object()
            .unwrap_or_else(|| panic!("{file}: syscalls[{index}] is not an object"));
        for key in rule.keys() {
            assert!(
                oci_rule.contains(&key.as_str()),
                "{file}: syscalls[{index}] has key {key:?}, which is not the OCI runtime spec's; \
                 containerd ignores it"
            );
        }
        let unconditional = rule
            .get("args")
            .is_none_or(|a| a.as_array().is_some_and(Vec::is_empty));
        if rule.get("action").and_then(Value::as_str) == Some("SCMP_ACT_ALLOW") && unconditional {
            for name in rule
                .get("names")
                .and_then(Value::as_array)
                .unwrap_or_else(|| panic!("{file}: syscalls[{index}] has no names"))
            {
                allowed.insert(
                    name.as_str()
                        .unwrap_or_else(|| {
                            panic!("{file}: syscalls[{index}]: a name is not a string")
                        })
                        .to_string(),
                );
            }
        }
    }
    for call in ["io_uring_setup", "io_uring_enter", "io_uring_register"] {
        assert!(allowed.contains(call), "{file}: {call} is not allowed");
    }
    // A few that every Rust program makes, so that an empty list fails too.
    for call in ["read", "write", "mmap", "futex", "exit_group"] {
        assert!(allowed.contains(call), "{file}: {call} is not allowed");
    }
}
