//! The Kubernetes adapter's conversions: each API object turned into the
//! answer crate's plain model as soon as it arrives, keeping only what DNS
//! needs. The model itself (`kubewire_answer::model`) knows nothing of
//! Kubernetes types, so the answer table and compiler build without kube.

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::DynamicObject;
use kubewire_answer::model::{
    EndpointModel, EndpointNames, ExternalAddresses, ImportKind, ImportLink, ImportModel,
    ObjectKey, PodModel, PortModel, Ports, ServiceKind, ServiceModel, SliceModel, Stamp,
};
use std::net::IpAddr;

/// Turns an API object into its model. The conversions refuse what DNS
/// cannot use (a missing name, an IP that does not parse, a port out of
/// range) with a [`ModelError`] that names the object.
pub trait FromApi<T>: Sized {
    /// Keeps what DNS needs of `object`.
    fn from_api(object: &T) -> Result<Self, ModelError>;
}

/// The label that links an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label that links an EndpointSlice to its ServiceImport (the
/// Multi-Cluster Services API).
pub const IMPORT_NAME_LABEL: &str = "multicluster.kubernetes.io/service-name";
/// The label naming the cluster an imported EndpointSlice's endpoints are in.
pub const SOURCE_CLUSTER_LABEL: &str = "multicluster.kubernetes.io/source-cluster";

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

fn key_of(meta: &ObjectMeta) -> Result<ObjectKey, ModelError> {
    let name = meta.name.clone().ok_or(ModelError::NoName)?;
    let namespace = meta
        .namespace
        .clone()
        .ok_or_else(|| ModelError::NoNamespace(name.clone()))?;
    Ok(ObjectKey::new(namespace, name))
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

impl FromApi<Service> for ServiceModel {
    /// Keeps what DNS needs of a Service.
    fn from_api(service: &Service) -> Result<ServiceModel, ModelError> {
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
            .collect::<Result<Ports, ModelError>>()?;
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
            stamp: Stamp::now(service.metadata.resource_version.as_deref()),
        })
    }
}

impl FromApi<EndpointSlice> for SliceModel {
    /// Keeps what DNS needs of an EndpointSlice.
    fn from_api(slice: &EndpointSlice) -> Result<SliceModel, ModelError> {
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
            .collect::<Result<Ports, _>>()?;
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
                names: EndpointNames::boxed(endpoint.hostname.as_deref().map(Box::from), pod_name),
                zone,
            });
        }
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
            ports,
            endpoints,
            zones: zones.into_boxed_slice(),
            stamp: Stamp::now(slice.metadata.resource_version.as_deref()),
        })
    }
}

impl FromApi<LeanPod> for PodModel {
    /// Keeps what DNS needs of a Pod: `status.podIPs` (or `status.podIP`
    /// when that is empty), `status.phase` and `spec.hostNetwork`.
    fn from_api(pod: &LeanPod) -> Result<PodModel, ModelError> {
        let key = key_of(&pod.metadata)?;
        let status = pod.status.as_ref();
        let mut ips = Vec::new();
        for ip in status
            .and_then(|s| s.pod_ips.as_ref())
            .into_iter()
            .flatten()
        {
            ips.push(parse_ip(&key, "status.podIPs", &ip.ip)?);
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

/// A Pod as the watch and the manifests decode it: only what DNS and
/// kube's watcher read.
/// The rest of each Pod (its containers, volumes, `managedFields`) is
/// skipped as it is read, never built: decoding whole Pods into
/// k8s-openapi's types was most of the cluster role's sync.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct LeanPod {
    /// Name, namespace and resourceVersion; nothing else is kept.
    #[serde(deserialize_with = "lean_metadata")]
    pub metadata: ObjectMeta,
    /// `spec.hostNetwork`.
    pub spec: Option<LeanPodSpec>,
    /// `status.phase`, `status.podIP` and `status.podIPs`.
    pub status: Option<LeanPodStatus>,
}

/// The part of a Pod's spec DNS reads.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct LeanPodSpec {
    /// Pods on the host's network share its address: no pod record.
    pub host_network: Option<bool>,
}

/// The part of a Pod's status DNS reads.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct LeanPodStatus {
    /// `Running`, `Pending`, …
    pub phase: Option<String>,
    /// The first address.
    #[serde(rename = "podIP")]
    pub pod_ip: Option<String>,
    /// Every address.
    #[serde(rename = "podIPs")]
    pub pod_ips: Option<Vec<LeanPodIp>>,
}

/// One of a Pod's addresses.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct LeanPodIp {
    /// The address, as text.
    pub ip: String,
}

/// The metadata fields the watch and the model use.
#[derive(Default, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct LeanMetadata {
    name: Option<String>,
    namespace: Option<String>,
    resource_version: Option<String>,
    uid: Option<String>,
}

fn lean_metadata<'de, D: serde::Deserializer<'de>>(decoder: D) -> Result<ObjectMeta, D::Error> {
    let lean = <LeanMetadata as serde::Deserialize>::deserialize(decoder)?;
    Ok(ObjectMeta {
        name: lean.name,
        namespace: lean.namespace,
        resource_version: lean.resource_version,
        uid: lean.uid,
        ..ObjectMeta::default()
    })
}

impl k8s_openapi::Resource for LeanPod {
    const API_VERSION: &'static str = <Pod as k8s_openapi::Resource>::API_VERSION;
    const GROUP: &'static str = <Pod as k8s_openapi::Resource>::GROUP;
    const KIND: &'static str = <Pod as k8s_openapi::Resource>::KIND;
    const VERSION: &'static str = <Pod as k8s_openapi::Resource>::VERSION;
    const URL_PATH_SEGMENT: &'static str = <Pod as k8s_openapi::Resource>::URL_PATH_SEGMENT;
    type Scope = <Pod as k8s_openapi::Resource>::Scope;
}

impl k8s_openapi::Metadata for LeanPod {
    type Ty = ObjectMeta;
    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
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

impl FromApi<DynamicObject> for ImportModel {
    /// Keeps what DNS needs of a ServiceImport: its metadata and the rest
    /// of the object (`spec`, `status`), as a dynamic object carries them.
    fn from_api(object: &DynamicObject) -> Result<ImportModel, ModelError> {
        let (meta, data) = (&object.metadata, &object.data);
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
            .collect::<Result<Ports, _>>()?;
        Ok(ImportModel {
            key,
            kind,
            ports,
            stamp: Stamp::now(meta.resource_version.as_deref()),
        })
    }
}

/// The name of a Namespace.
impl FromApi<Namespace> for String {
    fn from_api(namespace: &Namespace) -> Result<String, ModelError> {
        namespace.metadata.name.clone().ok_or(ModelError::NoName)
    }
}
