//! Watching the Kubernetes API with kube-rs.
//!
//! One watcher per kind runs as a task on the control plane's tokio runtime.
//! Each turns its stream into the same vocabulary as every other source:
//! objects of the initial list (`Init` … `InitDone`) are upserted as they
//! arrive and the list ends in one `Reset` of that kind, applied as a diff;
//! later events become `Upsert` and `Remove`.
//! Objects become the compact model as they arrive.
//!
//! Failures never stop a watcher: kube's watcher retries with backoff,
//! re-watches from the last resourceVersion, and relists after `410 Gone`.
//! Meanwhile the last good state keeps serving.

use super::from_api::{FromApi, LeanPod, ModelError, SERVICE_IMPORT_RESOURCE};
use crate::operations::failure::Chain;
use crate::operations::logging::PROPAGATION_TARGET;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use kubewire_answer::compiler::ObjectChange;
use kubewire_answer::model::{
    ImportModel, Kind, ListedKeys, Object, ObjectKey, PodModel, ServiceModel, SliceModel,
};
use std::collections::HashSet;
use std::sync::Arc;

/// Pods that no longer hold their IP are never listed (as CoreDNS).
pub const POD_FIELD_SELECTOR: &str =
    "status.phase!=Succeeded,status.phase!=Failed,status.phase!=Unknown";

/// The Pod watch's field selector: pods that hold their addresses, and
/// only those of `node` when given.
pub fn pod_field_selector(node: Option<&str>) -> String {
    match node {
        Some(node) => format!("{POD_FIELD_SELECTOR},spec.nodeName={node}"),
        None => POD_FIELD_SELECTOR.to_string(),
    }
}

/// What to watch.
#[derive(Clone, Debug, Default)]
pub struct WatchOptions {
    /// Watch Pods (`verified` pod mode and autopath need them).
    pub pods: bool,
    /// Watch only the Pods of this node (`spec.nodeName`): node-local
    /// autopath needs no other, when pod records are not verified.
    pub pods_of_node: Option<String>,
    /// Serve only these namespaces (`None`: all), as CoreDNS's `namespaces`.
    pub namespaces: Option<Vec<String>>,
    /// Serve only Services (and their EndpointSlices) matching this label
    /// selector, as CoreDNS's `labels`.
    pub labels: Option<String>,
    /// Watch ServiceImports (`multicluster`).
    pub service_imports: bool,
}

/// What a watcher reports to the control plane.
#[derive(Debug)]
pub enum WatchEvent {
    /// A change to apply.
    Change(ObjectChange),
    /// The kind's initial list (or a relist) is complete.
    Listed(Kind),
    /// The watch failed; it retries with backoff. Sent each time; the
    /// receiver logs only changes of reason.
    Failed {
        /// Which watcher.
        kind: Kind,
        /// Why, from kube.
        error: String,
    },
    /// An object that cannot be used was skipped.
    Skipped {
        /// Its kind.
        kind: Kind,
        /// What is wrong.
        error: String,
    },
}

type Sender = tokio::sync::mpsc::UnboundedSender<WatchEvent>;

/// The running watcher tasks. Dropping this stops them (to restart with
/// other filters, say).
#[derive(Debug)]
pub struct Watchers {
    /// The kinds watched.
    pub kinds: Vec<Kind>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Watchers {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Starts one watcher task per kind on the current tokio runtime; the
/// initial sync is complete once each kind has sent [`WatchEvent::Listed`].
pub fn spawn_watchers(client: &Client, options: &WatchOptions, events: &Sender) -> Watchers {
    let namespaces: Option<Arc<HashSet<String>>> = options
        .namespaces
        .as_ref()
        .map(|list| Arc::new(list.iter().cloned().collect()));
    let labelled = || {
        let config = watcher::Config::default();
        match &options.labels {
            Some(selector) => config.labels(selector),
            None => config,
        }
    };
    let mut kinds = vec![Kind::Service, Kind::Slice, Kind::Namespace];
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(run(
        Api::<Service>::all(client.clone()),
        labelled(),
        Kind::Service,
        |s| ServiceModel::from_api(s).map(Object::Service),
        namespaces.clone(),
        events.clone(),
    )));
    tasks.push(tokio::spawn(run(
        Api::<EndpointSlice>::all(client.clone()),
        labelled(),
        Kind::Slice,
        |s| SliceModel::from_api(s).map(Object::Slice),
        namespaces.clone(),
        events.clone(),
    )));
    tasks.push(tokio::spawn(run(
        Api::<Namespace>::all(client.clone()),
        watcher::Config::default(),
        Kind::Namespace,
        |n| String::from_api(n).map(Object::Namespace),
        namespaces.clone(),
        events.clone(),
    )));
    if options.service_imports {
        kinds.push(Kind::Import);
        let (group, version, kind, plural) = SERVICE_IMPORT_RESOURCE;
        let resource =
            ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
        tasks.push(tokio::spawn(run(
            Api::<DynamicObject>::all_with(client.clone(), &resource),
            watcher::Config::default(),
            Kind::Import,
            |i| ImportModel::from_api(i).map(Object::Import),
            namespaces.clone(),
            events.clone(),
        )));
    }
    if options.pods {
        kinds.push(Kind::Pod);
        tasks.push(tokio::spawn(run(
            Api::<LeanPod>::all(client.clone()),
            watcher::Config::default().fields(&pod_field_selector(options.pods_of_node.as_deref())),
            Kind::Pod,
            |p| PodModel::from_api(p).map(Object::Pod),
            namespaces,
            events.clone(),
        )));
    }
    Watchers { kinds, tasks }
}

/// Whether an object is in a served namespace (`None`: all are).
pub fn served(object: &Object, namespaces: Option<&HashSet<String>>) -> bool {
    let Some(namespaces) = namespaces else {
        return true;
    };
    match object {
        Object::Namespace(name) => namespaces.contains(name),
        other => namespaces.contains(other.key_parts().0),
    }
}

fn key_of<K: kube::Resource>(kind: Kind, object: &K) -> ObjectKey {
    let meta = object.meta();
    let name = meta.name.clone().unwrap_or_default();
    match kind {
        Kind::Namespace => ObjectKey::new("", name),
        _ => ObjectKey::new(meta.namespace.clone().unwrap_or_default(), name),
    }
}

async fn run<K>(
    api: Api<K>,
    config: watcher::Config,
    kind: Kind,
    convert: fn(&K) -> Result<Object, ModelError>,
    namespaces: Option<Arc<HashSet<String>>>,
    events: Sender,
) where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let mut stream = watcher(api, config).default_backoff().boxed();
    let mut listing = ListedKeys::new();
    let namespaces = namespaces.as_deref();
    // ServiceImports the API server refuses (no CRD, or no permission)
    // before they were ever listed count as listed, empty, so the rest of
    // the cluster syncs and serves; once listed, the last good ones stay.
    let mut listed_once = false;
    while let Some(item) = stream.next().await {
        if matches!(
            item,
            Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_))
        ) {
            tracing::debug!(target: PROPAGATION_TARGET, ?kind, "watch event received");
        }
        let event = match item {
            Ok(watcher::Event::Init) => {
                listing = ListedKeys::new();
                continue;
            }
            Ok(watcher::Event::InitApply(object)) => match convert(&object) {
                // Applied as it arrives, so compiling overlaps with the rest
                // of the list; the Reset at the end removes what was not
                // listed. Names that stay never disappear in between.
                Ok(object) if served(&object, namespaces) => {
                    let (namespace, name) = object.key_parts();
                    listing.push(namespace, name);
                    WatchEvent::Change(ObjectChange::Upsert(object))
                }
                Ok(_) => continue,
                Err(error) => {
                    // Listed, so the Reset keeps its last good version
                    // serving, as a failed conversion in a watch event does.
                    let key = key_of(kind, &object);
                    listing.push(&key.namespace, &key.name);
                    WatchEvent::Skipped {
                        kind,
                        error: Chain(&error).to_string(),
                    }
                }
            },
            Ok(watcher::Event::InitDone) => {
                listed_once = true;
                let _ = events.send(WatchEvent::Change(ObjectChange::Reset(
                    kind,
                    std::mem::take(&mut listing),
                )));
                WatchEvent::Listed(kind)
            }
            Ok(watcher::Event::Apply(object)) => match convert(&object) {
                Ok(object) if served(&object, namespaces) => {
                    WatchEvent::Change(ObjectChange::Upsert(object))
                }
                // Moved out of what we serve (its labels changed, say).
                Ok(object) => WatchEvent::Change(ObjectChange::Remove(kind, object.key())),
                Err(error) => WatchEvent::Skipped {
                    kind,
                    error: Chain(&error).to_string(),
                },
            },
            Ok(watcher::Event::Delete(object)) => {
                WatchEvent::Change(ObjectChange::Remove(kind, key_of(kind, &object)))
            }
            Err(error) => match (kind, refused(&error)) {
                (Kind::Import, Some(code)) => {
                    if !std::mem::replace(&mut listed_once, true) {
                        let _ = events.send(WatchEvent::Change(ObjectChange::Reset(
                            kind,
                            ListedKeys::new(),
                        )));
                        let _ = events.send(WatchEvent::Listed(kind));
                    }
                    let (group, version, _, plural) = SERVICE_IMPORT_RESOURCE;
                    let what = match code {
                        404 => format!(
                            "the API server has no {plural}.{group}/{version}: the Multi-Cluster Services API CRDs are not installed. Install them (ServiceImport, from sigs.k8s.io/mcs-api)"
                        ),
                        _ => format!(
                            "kubewire may not list {plural}.{group}: give its ClusterRole list and watch on them (deploy/cluster-dns/rbac.yaml does)"
                        ),
                    };
                    WatchEvent::Failed {
                        kind,
                        error: format!(
                            "{what}, or remove kubernetes.multicluster. Until then the other zones serve, and its zones keep the imports last listed, if any ({})",
                            Chain(&error)
                        ),
                    }
                }
                (_, Some(403)) => {
                    let (group, plural) = resource_of(kind);
                    WatchEvent::Failed {
                        kind,
                        error: format!(
                            "kubewire may not list or watch {plural}{group}: give its ClusterRole list and watch on them (deploy/cluster-dns/rbac.yaml and deploy/node-local/rbac.yaml do). Until it may, {plural} keep their last good state, or none before the first sync ({})",
                            Chain(&error)
                        ),
                    }
                }
                _ => WatchEvent::Failed {
                    kind,
                    error: Chain(&error).to_string(),
                },
            },
        };
        if events.send(event).is_err() {
            return;
        }
    }
}

/// A kind's resource, as RBAC names it: `.group` (empty for the core
/// group) and plural.
fn resource_of(kind: Kind) -> (&'static str, &'static str) {
    match kind {
        Kind::Service => ("", "services"),
        Kind::Slice => (".discovery.k8s.io", "endpointslices"),
        Kind::Pod => ("", "pods"),
        Kind::Namespace => ("", "namespaces"),
        Kind::Import => (".multicluster.x-k8s.io", "serviceimports"),
    }
}

/// The status code if the API server refused the resource: 404 (not
/// served, a CRD not installed) or 403 (not allowed).
fn refused(error: &watcher::Error) -> Option<u16> {
    let code = match error {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => status.code,
        watcher::Error::WatchError(status) => status.code,
        _ => return None,
    };
    matches!(code, 403 | 404).then_some(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pod_selector_adds_the_node_when_given() {
        assert_eq!(pod_field_selector(None), POD_FIELD_SELECTOR);
        assert_eq!(
            pod_field_selector(Some("node-1")),
            format!("{POD_FIELD_SELECTOR},spec.nodeName=node-1")
        );
    }
}
