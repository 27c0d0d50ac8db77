//! The pods `verified` pod mode answers for, kept small: 100k pods are a
//! normal cluster, and a pod is only a namespace and an address to DNS.
//!
//! Namespaces get numeric ids (never reused), so that a pod's key and
//! address carry a `u32`, not a string. The set of addresses is counted,
//! because host-network pods share their node's address; the cores hold
//! the set and change it only when a count leaves or reaches zero.

use crate::model::{ObjectKey, PodModel};
use crate::update::{Change, PodAddress};
use hashbrown::{HashMap, HashTable};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

type Map<K, V> = HashMap<K, V, ahash::RandomState>;

/// A pod: its namespace's id, where its name lies in the [`NamePool`],
/// and its addresses. No allocation of its own for a single-stack pod: the
/// first sync makes 100k of these between the API objects it parses and
/// frees, and small allocations left among those would pin their pages.
#[derive(Clone, Debug)]
struct PodSlot {
    namespace: u32,
    name_at: u32,
    name_len: u32,
    /// Uses the node's network: its address is the node's, never a client
    /// autopath may answer for.
    host_network: bool,
    ips: PodIps,
}

// 100k pods are 100k of these (plus the table's slack): keep them at 32.
const _: () = assert!(std::mem::size_of::<PodSlot>() == 32);

/// Pod names, end to end in one buffer. Removed names stay as garbage
/// until it is half the buffer; then the live names are copied out.
#[derive(Debug, Default)]
struct NamePool {
    bytes: Vec<u8>,
    garbage: usize,
}

impl NamePool {
    fn get(&self, slot: &PodSlot) -> &[u8] {
        let at = slot.name_at as usize;
        &self.bytes[at..at + slot.name_len as usize]
    }
}

/// A pod's addresses: nearly always one IPv4 address, kept inline in 16
/// bytes with the enum's tag (an inline `IpAddr` made every pod 8 bytes
/// bigger). A single IPv6 address goes in the box.
#[derive(Clone, Debug, PartialEq, Eq)]
enum PodIps {
    V4(Ipv4Addr),
    /// None (a finished pod), one IPv6 address, or several (dual-stack).
    Other(Box<[IpAddr]>),
}

impl PodIps {
    fn from_sorted(ips: Vec<IpAddr>) -> PodIps {
        match ips[..] {
            [IpAddr::V4(only)] => PodIps::V4(only),
            _ => PodIps::Other(ips.into_boxed_slice()),
        }
    }

    fn iter(&self) -> impl Iterator<Item = IpAddr> + '_ {
        let (v4, other) = match self {
            PodIps::V4(ip) => (Some(IpAddr::V4(*ip)), &[][..]),
            PodIps::Other(ips) => (None, &ips[..]),
        };
        v4.into_iter().chain(other.iter().copied())
    }
}

/// How many pods hold each address under each label. IPv4 pairs are one
/// `u64`, so an entry is 16 bytes where a `PodAddress` key made it 28.
#[derive(Debug, Default)]
struct PodCounts {
    v4: Map<u64, u32>,
    v6: Map<(u32, u128), u32>,
}

impl PodCounts {
    fn count_mut(&mut self, address: PodAddress) -> &mut u32 {
        match address.ip {
            IpAddr::V4(ip) => self
                .v4
                .entry(u64::from(address.namespace) << 32 | u64::from(u32::from(ip)))
                .or_insert(0),
            IpAddr::V6(ip) => self
                .v6
                .entry((address.namespace, u128::from(ip)))
                .or_insert(0),
        }
    }

    /// Counts one more; true if it is the first.
    fn add(&mut self, address: PodAddress) -> bool {
        let count = self.count_mut(address);
        *count += 1;
        *count == 1
    }

    /// Counts one less; true if that was the last.
    fn remove(&mut self, address: PodAddress) -> bool {
        let left = match address.ip {
            IpAddr::V4(ip) => {
                let key = u64::from(address.namespace) << 32 | u64::from(u32::from(ip));
                let Some(count) = self.v4.get_mut(&key) else {
                    return false;
                };
                *count -= 1;
                let left = *count;
                if left == 0 {
                    self.v4.remove(&key);
                }
                left
            }
            IpAddr::V6(ip) => {
                let key = (address.namespace, u128::from(ip));
                let Some(count) = self.v6.get_mut(&key) else {
                    return false;
                };
                *count -= 1;
                let left = *count;
                if left == 0 {
                    self.v6.remove(&key);
                }
                left
            }
        };
        left == 0
    }

    fn iter(&self) -> impl Iterator<Item = PodAddress> + '_ {
        let v4 = self.v4.keys().map(|&key| PodAddress {
            namespace: (key >> 32) as u32,
            ip: IpAddr::V4(Ipv4Addr::from(key as u32)),
        });
        let v6 = self.v6.keys().map(|&(namespace, ip)| PodAddress {
            namespace,
            ip: IpAddr::V6(Ipv6Addr::from(ip)),
        });
        v4.chain(v6)
    }
}

/// The one label among `holders`, if there is exactly one.
fn sole_holder(holders: &[(u32, u32)]) -> Option<u32> {
    match holders {
        [(label, _)] => Some(*label),
        _ => None,
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
    pods: HashTable<PodSlot>,
    names: NamePool,
    hasher: ahash::RandomState,
    /// How many pods hold each address under each label.
    counts: PodCounts,
    /// Whether the set is shipped (`verified` pod mode).
    verified: bool,
    /// Autopath: which namespace labels' non-hostNetwork pods hold each
    /// address, and how many of each (kept only while `autopath` is on).
    holders: Map<IpAddr, Vec<(u32, u32)>>,
    /// Whether autopath's clients are kept and shipped.
    autopath: bool,
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
        for address in self.counts.iter() {
            self.changes.push(if verified {
                Change::UpsertPod(address)
            } else {
                Change::RemovePod(address)
            });
        }
    }

    /// Keeps and ships autopath's clients, or drops them, when autopath is
    /// turned on or off.
    pub fn set_autopath(&mut self, autopath: bool) {
        if autopath == self.autopath {
            return;
        }
        if !autopath {
            for ip in std::mem::take(&mut self.holders).into_keys() {
                self.changes.push(Change::Client(ip, None));
            }
            self.autopath = false;
            return;
        }
        self.autopath = true;
        let held: Vec<(u32, IpAddr)> = self
            .pods
            .iter()
            .filter(|slot| !slot.host_network)
            .flat_map(|slot| {
                let label = self.namespaces[slot.namespace as usize].label;
                slot.ips.iter().map(move |ip| (label, ip))
            })
            .collect();
        for (label, ip) in held {
            self.hold(label, ip, true);
        }
    }

    /// Autopath's clients with their labels.
    pub fn labelled_clients(&self) -> impl Iterator<Item = (IpAddr, &[u8])> {
        self.clients()
            .map(|(ip, label)| (ip, &self.labels[label as usize][..]))
    }

    /// Autopath's clients: each address one namespace alone holds.
    pub fn clients(&self) -> impl Iterator<Item = (IpAddr, u32)> + '_ {
        self.holders
            .iter()
            .filter_map(|(&ip, holders)| Some((ip, sole_holder(holders)?)))
    }

    /// Counts one client pod more or less at an address, and ships the
    /// address's owner when it changes.
    fn hold(&mut self, label: u32, ip: IpAddr, add: bool) {
        let holders = self.holders.entry(ip).or_default();
        let before = sole_holder(holders);
        match holders.iter().position(|&(l, _)| l == label) {
            Some(at) if add => holders[at].1 += 1,
            None if add => holders.push((label, 1)),
            Some(at) => {
                holders[at].1 -= 1;
                if holders[at].1 == 0 {
                    holders.swap_remove(at);
                }
            }
            None => {}
        }
        let after = sole_holder(holders);
        if holders.is_empty() {
            self.holders.remove(&ip);
        }
        if before != after {
            self.changes.push(Change::Client(ip, after));
        }
    }

    fn pod_hash(&self, namespace: u32, name: &[u8]) -> u64 {
        self.hasher.hash_one((namespace, name))
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
        let name = pod.key.name.as_bytes();
        let hash = self.pod_hash(namespace, name);
        let names = &self.names;
        let found = self
            .pods
            .find_mut(hash, |s| s.namespace == namespace && names.get(s) == name);
        let old = match found {
            Some(slot) if slot.ips == live && slot.host_network == pod.host_network => return,
            Some(slot) => {
                let was_host = std::mem::replace(&mut slot.host_network, pod.host_network);
                Some((std::mem::replace(&mut slot.ips, live.clone()), was_host))
            }
            None => {
                let Ok(name_len) = u32::try_from(name.len()) else {
                    return;
                };
                if self.names.bytes.len() + name.len() > u32::MAX as usize {
                    self.compact_names();
                    if self.names.bytes.len() + name.len() > u32::MAX as usize {
                        tracing::warn!(pod = %pod.key, "4 GiB of pod names held; pod skipped");
                        return;
                    }
                }
                let slot = PodSlot {
                    namespace,
                    name_at: self.names.bytes.len() as u32,
                    name_len,
                    host_network: pod.host_network,
                    ips: live.clone(),
                };
                self.names.bytes.extend_from_slice(name);
                let (names, hasher) = (&self.names, &self.hasher);
                self.pods
                    .insert_unique(hash, slot, |s| hasher.hash_one((s.namespace, names.get(s))));
                None
            }
        };
        if let Some((old_ips, was_host)) = &old {
            for ip in old_ips.iter() {
                self.count(label, ip, false);
                if self.autopath && !was_host {
                    self.hold(label, ip, false);
                }
            }
        }
        for ip in live.iter() {
            self.count(label, ip, true);
            if self.autopath && !pod.host_network {
                self.hold(label, ip, true);
            }
        }
    }

    /// Removes a pod.
    pub fn remove(&mut self, key: &ObjectKey) {
        let Some(&namespace) = self.namespace_ids.get(&*key.namespace) else {
            return;
        };
        let name = key.name.as_bytes();
        let hash = self.pod_hash(namespace, name);
        let names = &self.names;
        let Ok(found) = self
            .pods
            .find_entry(hash, |s| s.namespace == namespace && names.get(s) == name)
        else {
            return;
        };
        let (old, _) = found.remove();
        self.names.garbage += old.name_len as usize;
        if self.names.garbage > 64 << 10 && self.names.garbage * 2 > self.names.bytes.len() {
            self.compact_names();
        }
        let label = self.namespaces[namespace as usize].label;
        for ip in old.ips.iter() {
            self.count(label, ip, false);
            if self.autopath && !old.host_network {
                self.hold(label, ip, false);
            }
        }
    }

    /// Copies the live names into a new buffer, dropping the garbage.
    fn compact_names(&mut self) {
        let mut bytes = Vec::with_capacity(self.names.bytes.len() - self.names.garbage);
        for slot in self.pods.iter_mut() {
            let at = bytes.len();
            bytes.extend_from_slice(self.names.get(slot));
            slot.name_at = at as u32;
        }
        self.names = NamePool { bytes, garbage: 0 };
    }

    /// The keys of every pod held.
    pub fn keys(&self) -> impl Iterator<Item = ObjectKey> + '_ {
        self.keys_borrowed()
            .map(|(namespace, name)| ObjectKey::new(namespace, name))
    }

    /// The keys of the pods `pick` says yes to; the rest are not copied.
    pub fn keys_where(&self, mut pick: impl FnMut(&str, &str) -> bool) -> Vec<ObjectKey> {
        self.keys_borrowed()
            .filter(|&(namespace, name)| pick(namespace, name))
            .map(|(namespace, name)| ObjectKey::new(namespace, name))
            .collect()
    }

    fn keys_borrowed(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pods.iter().map(|slot| self.key_of(slot))
    }

    /// The pods (namespace, name) holding `ip`; a scan, for `explain`.
    pub fn pods_at(&self, ip: IpAddr) -> impl Iterator<Item = (&str, &str)> {
        self.pods
            .iter()
            .filter(move |slot| slot.ips.iter().any(|held| held == ip))
            .map(|slot| self.key_of(slot))
    }

    /// The addresses of a pod, if it is held; a scan, for `explain`.
    pub fn ips_of(&self, namespace: &str, name: &str) -> Option<Vec<IpAddr>> {
        self.pods
            .iter()
            .find(|slot| self.key_of(slot) == (namespace, name))
            .map(|slot| slot.ips.iter().collect())
    }

    /// Calls `each` with every pod address: its namespace, the address, and
    /// whether the pod uses the node's network.
    pub fn each_address(&self, mut each: impl FnMut(&str, IpAddr, bool)) {
        for slot in self.pods.iter() {
            let namespace = &*self.namespaces[slot.namespace as usize].name;
            for ip in slot.ips.iter() {
                each(namespace, ip, slot.host_network);
            }
        }
    }

    fn key_of(&self, slot: &PodSlot) -> (&str, &str) {
        // Names come from `&str` keys, so they are UTF-8.
        let name = std::str::from_utf8(self.names.get(slot)).unwrap_or_default();
        (&*self.namespaces[slot.namespace as usize].name, name)
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
    pub fn addresses(&self) -> impl Iterator<Item = PodAddress> + '_ {
        let verified = self.verified;
        self.counts.iter().filter(move |_| verified)
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
            if self.counts.add(address) && self.verified {
                self.changes.push(Change::UpsertPod(address));
            }
        } else if self.counts.remove(address) && self.verified {
            self.changes.push(Change::RemovePod(address));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn pod(namespace: &str, name: &str, ip: u32) -> PodModel {
        PodModel {
            key: ObjectKey::new(namespace, name),
            ips: vec![IpAddr::V4(ip.into())],
            phase: "Running".into(),
            host_network: false,
        }
    }

    fn name(i: u32) -> String {
        format!("deployment-7d4b9c8f6d-{i:06}")
    }

    /// Removing most pods compacts the name buffer; the pods left are still
    /// found by name, keep their addresses, and can be removed.
    #[test]
    fn names_survive_compaction() {
        let mut index = PodIndex::new(true);
        for i in 0..10_000 {
            index.upsert(&pod(&format!("ns-{}", i % 7), &name(i), i));
        }
        let full = index.names.bytes.len();
        for i in (0..10_000).filter(|i| i % 4 != 0) {
            index.remove(&ObjectKey::new(format!("ns-{}", i % 7), name(i)));
        }
        assert!(index.names.bytes.len() < full / 2, "compacted");
        assert_eq!(index.len(), 2_500);
        index.take_changes();
        // The same pods again: nothing changes.
        for i in (0..10_000).filter(|i| i % 4 == 0) {
            index.upsert(&pod(&format!("ns-{}", i % 7), &name(i), i));
        }
        assert!(index.take_changes().is_empty());
        let mut keys: Vec<ObjectKey> = index.keys().collect();
        keys.sort();
        assert_eq!(keys.len(), 2_500);
        assert!(keys.contains(&ObjectKey::new("ns-0", name(0))));
        assert!(keys.contains(&ObjectKey::new(format!("ns-{}", 9_996 % 7), name(9_996))));
        for key in keys {
            index.remove(&key);
        }
        assert!(index.is_empty());
        assert_eq!(index.addresses().count(), 0);
        assert_eq!(index.take_changes().len(), 2_500, "one RemovePod each");
    }

    /// Autopath's clients follow pods that move, share an address, run on
    /// the host's network, and autopath being turned on late and off.
    #[test]
    fn clients_follow_moves_sharing_and_host_network() {
        let mut index = PodIndex::new(false);
        let ip = |n: u32| IpAddr::V4(n.into());
        let clients = |index: &PodIndex| -> Vec<(IpAddr, Vec<u8>)> {
            let mut list: Vec<_> = index
                .labelled_clients()
                .map(|(ip, label)| (ip, label.to_vec()))
                .collect();
            list.sort();
            list
        };
        index.upsert(&pod("Team", "a", 1));
        let mut host = pod("kube-system", "proxy", 2);
        host.host_network = true;
        index.upsert(&host);
        assert!(clients(&index).is_empty(), "off: nothing kept");
        index.set_autopath(true);
        assert_eq!(
            clients(&index),
            [(ip(1), b"team".to_vec())],
            "turned on late"
        );
        // The address is reused in another namespace while the old pod
        // lingers: nobody's.
        index.upsert(&pod("other", "b", 1));
        assert!(clients(&index).is_empty());
        // The old pod goes: the address is the new namespace's.
        index.remove(&ObjectKey::new("Team", "a"));
        assert_eq!(clients(&index), [(ip(1), b"other".to_vec())]);
        // A finished pod holds no address.
        let mut done = pod("other", "b", 1);
        done.phase = "Succeeded".into();
        index.upsert(&done);
        assert!(clients(&index).is_empty());
        index.upsert(&pod("other", "b", 1));
        index.take_changes();
        index.set_autopath(false);
        assert!(clients(&index).is_empty());
        let changes = index.take_changes();
        assert!(
            matches!(changes[..], [Change::Client(_, None)]),
            "{changes:?}"
        );
    }
}
