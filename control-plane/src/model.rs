//! The compact cluster model.
//!
//! Every Kubernetes object is turned into one of these small structs as soon
//! as it arrives, keeping only what DNS needs; the API object is dropped.

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::net::IpAddr;

/// The label that links an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label that links an EndpointSlice to its ServiceImport (the
/// Multi-Cluster Services API).
pub const IMPORT_NAME_LABEL: &str = "multicluster.kubernetes.io/service-name";
/// The label naming the cluster an imported EndpointSlice's endpoints are in.
pub const SOURCE_CLUSTER_LABEL: &str = "multicluster.kubernetes.io/source-cluster";

/// Namespace and name of an object.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// The namespace (empty for cluster-scoped objects).
    pub namespace: String,
    /// The name.
    pub name: String,
}

impl ObjectKey {
    /// Makes a key.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> ObjectKey {
        ObjectKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

/// How a Service is exposed in DNS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceKind {
    /// Has cluster IPs (ClusterIP, NodePort and LoadBalancer all count).
    ClusterIp(Vec<IpAddr>),
    /// `clusterIP: None`: answers with endpoint addresses.
    Headless,
    /// Answers with a CNAME to this name.
    ExternalName(String),
}

/// A service port.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortModel {
    /// The port name; unnamed ports get no SRV names of their own.
    pub name: String,
    /// `tcp`, `udp` or `sctp`, lower-cased.
    pub protocol: String,
    /// The port number.
    pub port: u16,
}

/// What DNS needs of a Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceModel {
    /// Namespace and name.
    pub key: ObjectKey,
    /// ClusterIP, headless or ExternalName.
    pub kind: ServiceKind,
    /// The service's ports.
    pub ports: Vec<PortModel>,
    /// Publish endpoints that are not ready.
    pub publish_not_ready_addresses: bool,
    /// `spec.externalIPs` and the load balancer's ingress points, for
    /// `k8s_external`; `None` for nearly every Service, so it costs a word.
    pub external: Option<Box<ExternalAddresses>>,
}

/// Where a Service is reached from outside the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExternalAddresses {
    /// `spec.externalIPs`, then each ingress point's `ip`, in that order.
    pub ips: Vec<IpAddr>,
    /// The `hostname` of each ingress point that has no `ip` (cloud load
    /// balancers known by name).
    pub hostnames: Vec<Box<str>>,
}

/// How a ServiceImport is answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImportKind {
    /// `ClusterSetIP` (or no type): answers with `spec.ips`.
    ClusterSetIp(Vec<IpAddr>),
    /// `Headless`: answers with the ready endpoints of its slices in every
    /// cluster.
    Headless,
}

/// What DNS needs of a ServiceImport (`multicluster.x-k8s.io/v1alpha1`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportModel {
    /// Namespace and name: the Service's, in every cluster of the set.
    pub key: ObjectKey,
    /// ClusterSetIP or headless.
    pub kind: ImportKind,
    /// `spec.ports`.
    pub ports: Vec<PortModel>,
}

/// An EndpointSlice's link to a ServiceImport.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportLink {
    /// The ServiceImport's name (`multicluster.kubernetes.io/service-name`).
    pub service: String,
    /// The cluster its endpoints are in
    /// (`multicluster.kubernetes.io/source-cluster`), lowercase; empty if
    /// the label is missing.
    pub cluster: Box<str>,
}

/// One endpoint of a slice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointModel {
    /// Its addresses (in practice one).
    pub addresses: Addresses,
    /// The `ready` condition; a missing condition means ready.
    pub ready: bool,
    /// The endpoint's `hostname`, if set.
    pub hostname: Option<Box<str>>,
    /// The name of the pod in `targetRef`, if it refers to a pod.
    pub pod_name: Option<Box<str>>,
    /// The endpoint's topology zone (`zone`), for `zonal` names: an index
    /// into its slice's [`SliceModel::zones`], so that an endpoint holds two
    /// bytes, not a string (a cluster has a handful of zones and tens of
    /// thousands of endpoints).
    pub zone: Option<u8>,
}

/// An endpoint's addresses: one kept inline, with no allocation of its own
/// (a cluster holds tens of thousands of endpoints for as long as it runs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Addresses {
    /// The usual case.
    One(IpAddr),
    /// None, or several.
    Other(Box<[IpAddr]>),
}

impl std::ops::Deref for Addresses {
    type Target = [IpAddr];
    fn deref(&self) -> &[IpAddr] {
        match self {
            Addresses::One(ip) => std::slice::from_ref(ip),
            Addresses::Other(ips) => ips,
        }
    }
}

impl From<Vec<IpAddr>> for Addresses {
    fn from(ips: Vec<IpAddr>) -> Addresses {
        match ips[..] {
            [only] => Addresses::One(only),
            _ => Addresses::Other(ips.into_boxed_slice()),
        }
    }
}

impl<'a> IntoIterator for &'a Addresses {
    type Item = &'a IpAddr;
    type IntoIter = std::slice::Iter<'a, IpAddr>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// What DNS needs of an EndpointSlice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceModel {
    /// Namespace and name of the slice itself.
    pub key: ObjectKey,
    /// The service it belongs to, from the `kubernetes.io/service-name` label.
    pub service: Option<String>,
    /// `IPv4`, `IPv6` or `FQDN`.
    pub address_type: String,
    /// The endpoint ports.
    pub ports: Vec<PortModel>,
    /// The endpoints.
    pub endpoints: Vec<EndpointModel>,
    /// The topology zones of its endpoints, lowercase, each once.
    pub zones: Box<[Box<str>]>,
    /// The ServiceImport it belongs to, for a slice of the Multi-Cluster
    /// Services API; `None` for nearly all, so it costs a word.
    pub import: Option<Box<ImportLink>>,
}

impl SliceModel {
    /// The zone of one of its endpoints, if it has one.
    pub fn zone_of(&self, endpoint: &EndpointModel) -> Option<&str> {
        endpoint
            .zone
            .and_then(|i| self.zones.get(usize::from(i)))
            .map(|z| &**z)
    }
}

/// What DNS needs of a Pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodModel {
    /// Namespace and name.
    pub key: ObjectKey,
    /// The pod's IPs.
    pub ips: Vec<IpAddr>,
    /// `Pending`, `Running`, ...
    pub phase: String,
    /// Whether it uses the node's network.
    pub host_network: bool,
}

/// Any object the model holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Object {
    /// A Service.
    Service(ServiceModel),
    /// An EndpointSlice.
    Slice(SliceModel),
    /// A Pod.
    Pod(PodModel),
    /// A Namespace (only its name matters).
    Namespace(String),
    /// A ServiceImport.
    Import(ImportModel),
}

/// The kinds of object the model holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Services.
    Service,
    /// EndpointSlices.
    Slice,
    /// Pods.
    Pod,
    /// Namespaces.
    Namespace,
    /// ServiceImports (`multicluster`).
    Import,
}

impl Object {
    /// The object's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Object::Service(_) => Kind::Service,
            Object::Slice(_) => Kind::Slice,
            Object::Pod(_) => Kind::Pod,
            Object::Namespace(_) => Kind::Namespace,
            Object::Import(_) => Kind::Import,
        }
    }
    /// The object's namespace (empty for a Namespace) and name, borrowed.
    pub fn key_parts(&self) -> (&str, &str) {
        match self {
            Object::Service(s) => (&s.key.namespace, &s.key.name),
            Object::Slice(s) => (&s.key.namespace, &s.key.name),
            Object::Pod(p) => (&p.key.namespace, &p.key.name),
            Object::Namespace(name) => ("", name),
            Object::Import(i) => (&i.key.namespace, &i.key.name),
        }
    }

    /// The object's namespace and name.
    pub fn key(&self) -> ObjectKey {
        match self {
            Object::Service(s) => s.key.clone(),
            Object::Slice(s) => s.key.clone(),
            Object::Pod(p) => p.key.clone(),
            Object::Namespace(name) => ObjectKey::new("", name.clone()),
            Object::Import(i) => i.key.clone(),
        }
    }
}

/// The keys a list returned, end to end in one buffer: a watcher keeps
/// these while a relist streams in, to tell at its end which objects went.
/// One growing buffer, not a `String` pair per object: 100k pods listed
/// would otherwise leave 200k small blocks among the long-lived model.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListedKeys {
    text: String,
    /// Where each key's namespace ends and its name ends, in `text`.
    ends: Vec<(u32, u32)>,
}

impl ListedKeys {
    /// No keys.
    pub fn new() -> ListedKeys {
        ListedKeys::default()
    }

    /// Adds a key (the namespace is empty for a Namespace).
    pub fn push(&mut self, namespace: &str, name: &str) {
        self.text.push_str(namespace);
        let namespace_end = self.text.len() as u32;
        self.text.push_str(name);
        self.ends.push((namespace_end, self.text.len() as u32));
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Each key as (namespace, name).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        let mut start = 0usize;
        self.ends.iter().map(move |&(namespace_end, end)| {
            let (namespace_end, end) = (namespace_end as usize, end as usize);
            let key = (
                &self.text[start..namespace_end],
                &self.text[namespace_end..end],
            );
            start = end;
            key
        })
    }
}

impl<'a> FromIterator<&'a Object> for ListedKeys {
    fn from_iter<I: IntoIterator<Item = &'a Object>>(objects: I) -> ListedKeys {
        let mut keys = ListedKeys::new();
        for object in objects {
            let (namespace, name) = object.key_parts();
            keys.push(namespace, name);
        }
        keys
    }
}

/// Why an object could not be turned into the model.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// `metadata.name` is missing.
    #[error("object has no metadata.name")]
    NoName,
    /// `metadata.namespace` is missing on a namespaced object.
    #[error("{0} has no metadata.namespace")]
    NoNamespace(String),
    /// An IP that does not parse.
    #[error("{object}: {field} {value:?} is not an IP address")]
    BadIp {
        /// The object.
        object: String,
        /// Which field.
        field: &'static str,
        /// The bad value.
        value: String,
    },
    /// A `spec` that does not have the shape of its kind.
    #[error("{object}: spec is not valid: {error}")]
    BadSpec {
        /// The object.
        object: String,
        /// What serde found wrong.
        error: String,
    },
    /// A port number outside 1–65535.
    #[error("{object}: port {port} out of range 1-65535")]
    BadPort {
        /// The object.
        object: String,
        /// The bad number.
        port: i32,
    },
}

fn key_of(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Result<ObjectKey, ModelError> {
    let name = meta.name.clone().ok_or(ModelError::NoName)?;
    let namespace = meta
        .namespace
        .clone()
        .ok_or_else(|| ModelError::NoNamespace(name.clone()))?;
    Ok(ObjectKey { namespace, name })
}

fn parse_ip(object: &ObjectKey, field: &'static str, value: &str) -> Result<IpAddr, ModelError> {
    value.parse().map_err(|_| ModelError::BadIp {
        object: object.to_string(),
        field,
        value: value.to_string(),
    })
}

fn port_number(object: &ObjectKey, port: i32) -> Result<u16, ModelError> {
    u16::try_from(port)
        .ok()
        .filter(|&p| p != 0)
        .ok_or(ModelError::BadPort {
            object: object.to_string(),
            port,
        })
}

/// A port of a Service or an EndpointSlice; the protocol defaults to TCP.
fn port_model(
    object: &ObjectKey,
    name: Option<&str>,
    protocol: Option<&str>,
    port: i32,
) -> Result<PortModel, ModelError> {
    Ok(PortModel {
        name: name.unwrap_or_default().to_string(),
        protocol: protocol.unwrap_or("TCP").to_ascii_lowercase(),
        port: port_number(object, port)?,
    })
}

impl ServiceModel {
    /// Keeps what DNS needs of a Service.
    pub fn from_api(service: &Service) -> Result<ServiceModel, ModelError> {
        let key = key_of(&service.metadata)?;
        let spec = service.spec.clone().unwrap_or_default();
        let kind = if spec.type_.as_deref() == Some("ExternalName") {
            ServiceKind::ExternalName(spec.external_name.clone().unwrap_or_default())
        } else {
            let mut ips: Vec<String> = spec.cluster_ips.clone().unwrap_or_default();
            if ips.is_empty()
                && let Some(ip) = &spec.cluster_ip
            {
                ips.push(ip.clone());
            }
            if ips.is_empty() || ips.iter().any(|ip| ip == "None") {
                ServiceKind::Headless
            } else {
                let ips = ips
                    .iter()
                    .map(|ip| parse_ip(&key, "spec.clusterIPs", ip))
                    .collect::<Result<Vec<_>, _>>()?;
                ServiceKind::ClusterIp(ips)
            }
        };
        let ports = spec
            .ports
            .unwrap_or_default()
            .iter()
            .map(|p| port_model(&key, p.name.as_deref(), p.protocol.as_deref(), p.port))
            .collect::<Result<Vec<_>, ModelError>>()?;
        let mut ports = ports;
        ports.shrink_to_fit();
        let mut external = ExternalAddresses::default();
        for ip in spec.external_ips.as_deref().unwrap_or_default() {
            external.ips.push(parse_ip(&key, "spec.externalIPs", ip)?);
        }
        let ingress = service
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_deref())
            .unwrap_or_default();
        for point in ingress {
            match (point.ip.as_deref(), point.hostname.as_deref()) {
                (Some(ip), _) if !ip.is_empty() => {
                    external
                        .ips
                        .push(parse_ip(&key, "status.loadBalancer.ingress[].ip", ip)?)
                }
                (_, Some(hostname)) if !hostname.is_empty() => {
                    external.hostnames.push(hostname.into());
                }
                _ => {}
            }
        }
        let external = (!external.ips.is_empty() || !external.hostnames.is_empty())
            .then(|| Box::new(external));
        Ok(ServiceModel {
            key,
            kind,
            ports,
            publish_not_ready_addresses: spec.publish_not_ready_addresses.unwrap_or(false),
            external,
        })
    }
}

impl SliceModel {
    /// Keeps what DNS needs of an EndpointSlice.
    pub fn from_api(slice: &EndpointSlice) -> Result<SliceModel, ModelError> {
        let key = key_of(&slice.metadata)?;
        let service = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
            .cloned();
        let ports = slice
            .ports
            .as_deref()
            .unwrap_or_default()
            .iter()
            .filter_map(|p| {
                Some(port_model(
                    &key,
                    p.name.as_deref(),
                    p.protocol.as_deref(),
                    p.port?,
                ))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let fqdn = slice.address_type == "FQDN";
        let api_endpoints = slice.endpoints.as_deref().unwrap_or_default();
        let mut endpoints = Vec::with_capacity(api_endpoints.len());
        let mut zones: Vec<Box<str>> = Vec::new();
        for endpoint in api_endpoints {
            // A slice's zones are few; past 256 of them, an endpoint is zoneless.
            let zone = endpoint
                .zone
                .as_deref()
                .filter(|z| !z.is_empty())
                .map(str::to_ascii_lowercase)
                .and_then(|zone| match zones.iter().position(|z| **z == *zone) {
                    Some(i) => u8::try_from(i).ok(),
                    None => {
                        let i = u8::try_from(zones.len()).ok()?;
                        zones.push(zone.into());
                        Some(i)
                    }
                });
            // FQDN slices carry names, not addresses; DNS has nothing to publish from them.
            let addresses = if fqdn {
                Vec::new()
            } else {
                endpoint
                    .addresses
                    .iter()
                    .map(|a| parse_ip(&key, "endpoints[].addresses", a))
                    .collect::<Result<Vec<_>, _>>()?
            };
            let pod_name = endpoint
                .target_ref
                .as_ref()
                .filter(|r| r.kind.as_deref() == Some("Pod"))
                .and_then(|r| r.name.as_deref().map(Box::from));
            endpoints.push(EndpointModel {
                addresses: addresses.into(),
                ready: endpoint
                    .conditions
                    .as_ref()
                    .and_then(|c| c.ready)
                    .unwrap_or(true),
                hostname: endpoint.hostname.as_deref().map(Box::from),
                pod_name,
                zone,
            });
        }
        let mut ports = ports;
        ports.shrink_to_fit();
        let labels = slice.metadata.labels.as_ref();
        let import = labels
            .and_then(|l| l.get(IMPORT_NAME_LABEL))
            .map(|service| {
                Box::new(ImportLink {
                    service: service.clone(),
                    cluster: labels
                        .and_then(|l| l.get(SOURCE_CLUSTER_LABEL))
                        .map(|c| c.to_ascii_lowercase())
                        .unwrap_or_default()
                        .into(),
                })
            });
        Ok(SliceModel {
            key,
            import,
            service,
            address_type: slice.address_type.clone(),
            ports,
            endpoints,
            zones: zones.into_boxed_slice(),
        })
    }
}

impl PodModel {
    /// Keeps what DNS needs of a Pod.
    pub fn from_api(pod: &Pod) -> Result<PodModel, ModelError> {
        let key = key_of(&pod.metadata)?;
        let status = pod.status.as_ref();
        let mut ips = Vec::new();
        if let Some(list) = status.and_then(|s| s.pod_ips.as_ref()) {
            for ip in list {
                ips.push(parse_ip(&key, "status.podIPs", &ip.ip)?);
            }
        }
        if ips.is_empty()
            && let Some(ip) = status.and_then(|s| s.pod_ip.as_ref())
        {
            ips.push(parse_ip(&key, "status.podIP", ip)?);
        }
        Ok(PodModel {
            key,
            ips,
            phase: status.and_then(|s| s.phase.clone()).unwrap_or_default(),
            host_network: pod
                .spec
                .as_ref()
                .and_then(|s| s.host_network)
                .unwrap_or(false),
        })
    }
}

/// The group, version and plural of ServiceImports.
pub const SERVICE_IMPORT_RESOURCE: (&str, &str, &str, &str) = (
    "multicluster.x-k8s.io",
    "v1alpha1",
    "ServiceImport",
    "serviceimports",
);

/// A ServiceImport as the API sends it; there is no k8s-openapi type.
#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct ImportSpec {
    #[serde(rename = "type")]
    type_: Option<String>,
    ips: Option<Vec<String>>,
    ports: Option<Vec<ImportPort>>,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct ImportPort {
    name: Option<String>,
    protocol: Option<String>,
    port: i32,
}

impl ImportModel {
    /// Keeps what DNS needs of a ServiceImport: its metadata and the rest
    /// of the object (`spec`, `status`), as a dynamic object carries them.
    pub fn from_api(
        meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
        data: &serde_json::Value,
    ) -> Result<ImportModel, ModelError> {
        let key = key_of(meta)?;
        let spec: ImportSpec = match data.get("spec") {
            Some(spec) => <ImportSpec as serde::Deserialize>::deserialize(spec).map_err(|e| {
                ModelError::BadSpec {
                    object: key.to_string(),
                    error: e.to_string(),
                }
            })?,
            None => ImportSpec::default(),
        };
        // As CoreDNS: any type but `Headless` is a ClusterSetIP import.
        let kind = if spec.type_.as_deref() == Some("Headless") {
            ImportKind::Headless
        } else {
            let ips = spec
                .ips
                .unwrap_or_default()
                .iter()
                .map(|ip| parse_ip(&key, "spec.ips", ip))
                .collect::<Result<Vec<_>, _>>()?;
            ImportKind::ClusterSetIp(ips)
        };
        let ports = spec
            .ports
            .unwrap_or_default()
            .iter()
            .map(|p| port_model(&key, p.name.as_deref(), p.protocol.as_deref(), p.port))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ImportModel { key, kind, ports })
    }
}

/// The name of a Namespace.
pub fn namespace_from_api(namespace: &Namespace) -> Result<String, ModelError> {
    namespace.metadata.name.clone().ok_or(ModelError::NoName)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_keys_give_back_each_key_as_pushed() {
        let objects = [
            Object::Namespace("default".into()),
            Object::Pod(PodModel {
                key: ObjectKey::new("kube-system", "coredns-1"),
                ips: Vec::new(),
                phase: "Running".into(),
                host_network: false,
            }),
            Object::Namespace(String::new()),
            Object::Pod(PodModel {
                key: ObjectKey::new("a", "b"),
                ips: Vec::new(),
                phase: "Running".into(),
                host_network: false,
            }),
        ];
        let listed: ListedKeys = objects.iter().collect();
        assert_eq!(listed.len(), 4);
        assert_eq!(
            listed.iter().collect::<Vec<_>>(),
            [
                ("", "default"),
                ("kube-system", "coredns-1"),
                ("", ""),
                ("a", "b")
            ]
        );
        assert!(ListedKeys::new().is_empty());
    }
}
