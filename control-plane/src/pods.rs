//! The pods `verified` pod mode answers for, kept small: 100k pods are a
//! normal cluster, and a pod is only a namespace and an address to DNS.
//!
//! Namespaces get numeric ids (never reused), so that a pod's key and
//! address carry a `u32`, not a string. The set of addresses is counted,
//! because host-network pods share their node's address; the cores hold
//! the set and change it only when a count leaves or reaches zero.

use crate::delta::{Change, PodAddress};
use crate::model::{ObjectKey, PodModel};
use hashbrown::{Equivalent, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

type Map<K, V> = HashMap<K, V, ahash::RandomState>;

/// A pod's key: its namespace's id and its name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct PodKey {
    namespace: u32,
    name: Box<str>,
}

/// A borrowed [`PodKey`], to look one up without allocating. Hashes as
/// `PodKey` does: the fields in order, a `str` the same either way.
#[derive(Hash)]
struct PodKeyRef<'a> {
    namespace: u32,
    name: &'a str,
}

impl Equivalent<PodKey> for PodKeyRef<'_> {
    fn equivalent(&self, key: &PodKey) -> bool {
        self.namespace == key.namespace && self.name == &*key.name
    }
}

/// A pod's addresses: nearly always one, kept inline.
#[derive(Clone, Debug, PartialEq, Eq)]
enum PodIps {
    One(IpAddr),
    /// None (a finished pod) or several (dual-stack).
    Many(Box<[IpAddr]>),
}

impl PodIps {
    fn from_sorted(ips: Vec<IpAddr>) -> PodIps {
        match ips[..] {
            [only] => PodIps::One(only),
            _ => PodIps::Many(ips.into_boxed_slice()),
        }
    }

    fn as_slice(&self) -> &[IpAddr] {
        match self {
            PodIps::One(ip) => std::slice::from_ref(ip),
            PodIps::Many(ips) => ips,
        }
    }
}

/// A namespace as written, and the id of its lowercase label (namespaces
/// that differ only in case share a label, as DNS names do).
#[derive(Debug)]
struct Namespace {
    name: Box<str>,
    label: u32,
}

/// Pods, their addresses, and the changes not yet shipped.
#[derive(Debug, Default)]
pub struct PodIndex {
    /// Namespaces as written, by id.
    namespaces: Vec<Namespace>,
    namespace_ids: Map<Box<str>, u32>,
    /// Lowercase labels, by id.
    labels: Vec<Arc<[u8]>>,
    label_ids: Map<Arc<[u8]>, u32>,
    /// Each pod's addresses while it holds them (none once finished).
    pods: Map<PodKey, PodIps>,
    /// How many pods hold each address under each label.
    counts: HashMap<PodAddress, u32, ahash::RandomState>,
    /// Whether the set is shipped (`verified` pod mode).
    verified: bool,
    /// Changes not yet taken into a delta.
    changes: Vec<Change>,
}

impl PodIndex {
    /// An empty index; `verified` says whether address changes are shipped.
    pub fn new(verified: bool) -> PodIndex {
        PodIndex {
            verified,
            ..PodIndex::default()
        }
    }

    /// Pods held.
    pub fn len(&self) -> usize {
        self.pods.len()
    }

    /// Whether no pods are held.
    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    /// Ships the whole set, or takes it back, when the pod mode changes.
    pub fn set_verified(&mut self, verified: bool) {
        if verified == self.verified {
            return;
        }
        self.verified = verified;
        for address in self.counts.keys() {
            self.changes.push(if verified {
                Change::UpsertPod(*address)
            } else {
                Change::RemovePod(*address)
            });
        }
    }

    /// Adds or replaces a pod.
    pub fn upsert(&mut self, pod: &PodModel) {
        // Finished pods no longer hold their IPs.
        let mut ips = if matches!(pod.phase.as_str(), "Succeeded" | "Failed" | "Unknown") {
            Vec::new()
        } else {
            pod.ips.clone()
        };
        ips.sort_unstable();
        ips.dedup();
        let live = PodIps::from_sorted(ips);
        let namespace = self.namespace_id(&pod.key.namespace);
        let label = self.namespaces[namespace as usize].label;
        let key = PodKeyRef {
            namespace,
            name: &pod.key.name,
        };
        let old = match self.pods.get_mut(&key) {
            Some(slot) if *slot == live => return,
            Some(slot) => Some(std::mem::replace(slot, live.clone())),
            None => {
                let key = PodKey {
                    namespace,
                    name: pod.key.name.as_str().into(),
                };
                self.pods.insert(key, live.clone());
                None
            }
        };
        for &ip in old.as_ref().map(PodIps::as_slice).unwrap_or_default() {
            self.count(label, ip, false);
        }
        for &ip in live.as_slice() {
            self.count(label, ip, true);
        }
    }

    /// Removes a pod.
    pub fn remove(&mut self, key: &ObjectKey) {
        let Some(&namespace) = self.namespace_ids.get(key.namespace.as_str()) else {
            return;
        };
        let found = PodKeyRef {
            namespace,
            name: &key.name,
        };
        if let Some(old) = self.pods.remove(&found) {
            let label = self.namespaces[namespace as usize].label;
            for &ip in old.as_slice() {
                self.count(label, ip, false);
            }
        }
    }

    /// The keys of every pod held.
    pub fn keys(&self) -> impl Iterator<Item = ObjectKey> + '_ {
        self.pods
            .keys()
            .map(|key| ObjectKey::new(&*self.namespaces[key.namespace as usize].name, &*key.name))
    }

    /// The changes since the last call.
    pub fn take_changes(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.changes)
    }

    /// Every label with its id, for a core that starts.
    pub fn labels(&self) -> impl Iterator<Item = (u32, &Arc<[u8]>)> {
        self.labels.iter().enumerate().map(|(id, l)| (id as u32, l))
    }

    /// The addresses the cores hold (none unless pods are verified).
    pub fn addresses(&self) -> impl Iterator<Item = &PodAddress> {
        let verified = self.verified;
        self.counts.keys().filter(move |_| verified)
    }

    /// The addresses the cores hold, with their labels.
    pub fn labelled_addresses(&self) -> impl Iterator<Item = (&[u8], IpAddr)> {
        self.addresses()
            .map(|a| (&self.labels[a.namespace as usize][..], a.ip))
    }

    /// The id of a namespace as written, made on first sight along with its
    /// label's (shipped to the cores before any address that uses it).
    fn namespace_id(&mut self, namespace: &str) -> u32 {
        if let Some(&id) = self.namespace_ids.get(namespace) {
            return id;
        }
        let lower: Arc<[u8]> = namespace.to_ascii_lowercase().into_bytes().into();
        let label = match self.label_ids.get(&lower) {
            Some(&label) => label,
            None => {
                let label = self.labels.len() as u32;
                self.labels.push(Arc::clone(&lower));
                self.label_ids.insert(Arc::clone(&lower), label);
                self.changes.push(Change::PodNamespace(label, lower));
                label
            }
        };
        let id = self.namespaces.len() as u32;
        self.namespaces.push(Namespace {
            name: namespace.into(),
            label,
        });
        self.namespace_ids.insert(namespace.into(), id);
        id
    }

    /// Counts one pod more or less at an address; the set the cores hold
    /// changes when a count leaves or reaches zero.
    fn count(&mut self, label: u32, ip: IpAddr, add: bool) {
        let address = PodAddress {
            namespace: label,
            ip,
        };
        if add {
            let count = self.counts.entry(address).or_insert(0);
            *count += 1;
            if *count == 1 && self.verified {
                self.changes.push(Change::UpsertPod(address));
            }
        } else if let Some(count) = self.counts.get_mut(&address) {
            *count -= 1;
            if *count == 0 {
                self.counts.remove(&address);
                if self.verified {
                    self.changes.push(Change::RemovePod(address));
                }
            }
        }
    }
}
