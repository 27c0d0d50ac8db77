//! The compact cluster model.
//!
//! Every Kubernetes object is turned into one of these small structs as soon
//! as it arrives, keeping only what DNS needs; the API object is dropped.

use std::net::IpAddr;
use std::sync::Arc;

/// Namespace and name of an object.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// The namespace (empty for cluster-scoped objects). Shared: a cluster
    /// has tens of namespaces and tens of thousands of objects, and the
    /// compiler keeps one copy of each namespace's name.
    pub namespace: Arc<str>,
    /// The name.
    pub name: String,
}

impl ObjectKey {
    /// Makes a key.
    pub fn new(namespace: impl Into<Arc<str>>, name: impl Into<String>) -> ObjectKey {
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

/// Where an object's current DNS content came from: the API's
/// `resourceVersion` and when kubewire received it. Provenance for
/// `explain`, not content: two stamps always compare equal, so an event
/// that changes nothing DNS serves (a status or annotation edit) keeps the
/// stamp of the event that did, and never marks a unit dirty.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stamp {
    /// `metadata.resourceVersion` as a number (etcd's revision), 0 when it
    /// was absent or not a number (manifests without one).
    pub resource_version: u64,
    /// When the event (or the manifest file's load) arrived, in
    /// milliseconds since the Unix epoch; 0 when unknown.
    pub arrived_unix_ms: u64,
}

impl Stamp {
    /// A stamp for an object received now.
    pub fn now(resource_version: Option<&str>) -> Stamp {
        Stamp {
            resource_version: resource_version.and_then(|v| v.parse().ok()).unwrap_or(0),
            arrived_unix_ms: unix_ms_now(),
        }
    }
}

/// Milliseconds since the Unix epoch, now (0 if the clock is before it).
pub fn unix_ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl PartialEq for Stamp {
    fn eq(&self, _: &Stamp) -> bool {
        true
    }
}

impl Eq for Stamp {}

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

/// A list of ports, shared: most Services and their slices list the same
/// few ports, so the compiler keeps each distinct list once (see
/// `compiler::shared`) instead of two strings a port per object.
pub type Ports = Arc<[PortModel]>;

/// What DNS needs of a Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceModel {
    /// Namespace and name.
    pub key: ObjectKey,
    /// ClusterIP, headless or ExternalName.
    pub kind: ServiceKind,
    /// The service's ports.
    pub ports: Ports,
    /// Publish endpoints that are not ready.
    pub publish_not_ready_addresses: bool,
    /// `spec.externalIPs` and the load balancer's ingress points, for
    /// `k8s_external`; `None` for nearly every Service, so it costs a word.
    pub external: Option<Box<ExternalAddresses>>,
    /// Provenance, for `explain` (never compared).
    pub stamp: Stamp,
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
    pub ports: Ports,
    /// Provenance, for `explain` (never compared).
    pub stamp: Stamp,
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
    /// Its hostname and pod name, if it has either.
    pub names: Option<Box<EndpointNames>>,
    /// The endpoint's topology zone (`zone`), for `zonal` names: an index
    /// into its slice's [`SliceModel::zones`], so that an endpoint holds two
    /// bytes, not a string (a cluster has a handful of zones and tens of
    /// thousands of endpoints).
    pub zone: Option<u8>,
}

/// An endpoint's `hostname` and the pod its `targetRef` names, in a block
/// of their own that most endpoints do without: a hostname is set only
/// under a StatefulSet's headless Service, and the pod name is kept only
/// for `endpoint_pod_names`. An endpoint then takes 40 bytes, not 64.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointNames {
    /// The endpoint's `hostname`, if set.
    pub hostname: Option<Box<str>>,
    /// The name of the pod in `targetRef`, if it refers to a pod.
    pub pod_name: Option<Box<str>>,
}

impl EndpointNames {
    /// The block for these names, or none if both are absent.
    pub fn boxed(
        hostname: Option<Box<str>>,
        pod_name: Option<Box<str>>,
    ) -> Option<Box<EndpointNames>> {
        (hostname.is_some() || pod_name.is_some())
            .then(|| Box::new(EndpointNames { hostname, pod_name }))
    }
}

impl EndpointModel {
    /// The endpoint's `hostname`, if set.
    pub fn hostname(&self) -> Option<&str> {
        self.names.as_ref().and_then(|n| n.hostname.as_deref())
    }
    /// The name of the pod in `targetRef`, if kept.
    pub fn pod_name(&self) -> Option<&str> {
        self.names.as_ref().and_then(|n| n.pod_name.as_deref())
    }
    /// Forgets the pod name (and the block, if that was all it held).
    pub fn drop_pod_name(&mut self) {
        if let Some(names) = &mut self.names {
            names.pod_name = None;
            if names.hostname.is_none() {
                self.names = None;
            }
        }
    }
}

// A cluster holds tens of thousands of endpoints: keep one at 40 bytes.
const _: () = assert!(size_of::<EndpointModel>() <= 40);

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
    /// The endpoint ports. (The slice's address type is not kept: an FQDN
    /// slice's endpoints simply have no addresses.)
    pub ports: Ports,
    /// The endpoints.
    pub endpoints: Vec<EndpointModel>,
    /// The topology zones of its endpoints, lowercase, each once.
    pub zones: Box<[Box<str>]>,
    /// The ServiceImport it belongs to, for a slice of the Multi-Cluster
    /// Services API; `None` for nearly all, so it costs a word.
    pub import: Option<Box<ImportLink>>,
    /// Provenance, for `explain` (never compared).
    pub stamp: Stamp,
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

impl Kind {
    /// The API kind's name, as Kubernetes spells it (`EndpointSlice`).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Service => "Service",
            Kind::Slice => "EndpointSlice",
            Kind::Pod => "Pod",
            Kind::Namespace => "Namespace",
            Kind::Import => "ServiceImport",
        }
    }
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

    #[test]
    fn dropping_a_pod_name_keeps_the_hostname_and_frees_an_empty_block() {
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let mut both = EndpointModel {
            addresses: Addresses::One(ip),
            ready: true,
            names: EndpointNames::boxed(Some("web-0".into()), Some("web-0".into())),
            zone: None,
        };
        both.drop_pod_name();
        assert_eq!((both.hostname(), both.pod_name()), (Some("web-0"), None));
        let mut pod_only = EndpointModel {
            names: EndpointNames::boxed(None, Some("web-7d9f".into())),
            ..both.clone()
        };
        assert_eq!(pod_only.pod_name(), Some("web-7d9f"));
        pod_only.drop_pod_name();
        assert!(
            pod_only.names.is_none(),
            "no block for an endpoint with no names"
        );
        assert!(EndpointNames::boxed(None, None).is_none());
    }
}
