//! A serving core's answer table, and the pure `respond` function.
//!
//! The table maps lowercase wire names to shared, immutable entries. A name
//! it does not hold is answered in constant time without allocating:
//! 1. find the zone by suffix (a handful of zones, longest first);
//! 2. the apex answers from the zone's own answers;
//! 3. `<dashed-ip>.<ns>.pod.<zone>` is answered from a template with the
//!    address patched in: in `insecure` pod mode if `<ns>.pod.<zone>` exists,
//!    in `verified` mode if a pod holds that address in that namespace (the
//!    core's set of pod addresses, kept by `UpsertPod`/`RemovePod`);
//! 4. any other name in a cluster zone is NXDOMAIN (SERVFAIL before the
//!    first sync, as CoreDNS); in a reverse zone it is not ours.
//!
//! Every name that exists has an entry, empty non-terminals included (such
//! as `<ns>.svc.<zone>` and `_tcp.<svc>.<ns>.svc.<zone>`), so NXDOMAIN never
//! needs a walk up the tree.

use crate::delta::{PodAddress, Update};
use crate::entry::{NameEntry, Zones};
use hashbrown::HashTable;
use kubewire_wire::{
    NameBuf, PreparedAnswer, Rcode, Transport, address_from_dashed, assemble_reply, error_reply,
    parse_query, rtype,
};
use std::net::IpAddr;
use std::sync::Arc;

/// What [`AnswerTable::respond`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Response {
    /// A reply of `len` bytes is in the buffer.
    Reply {
        /// Reply length.
        len: usize,
        /// Its RCODE.
        rcode: Rcode,
        /// The query type (0 if the query could not be parsed).
        qtype: u16,
    },
    /// The name is in no zone we serve. A REFUSED reply of `len` bytes is in
    /// the buffer, for servers that do not forward.
    NotOurs {
        /// Reply length.
        len: usize,
        /// The query type.
        qtype: u16,
    },
    /// Send nothing (not a query, or too short to be one).
    Drop,
}

/// One core's table. Not shared: each core owns one and changes it only by
/// applying [`Update`]s between batches of queries.
pub struct AnswerTable {
    names: HashTable<Arc<NameEntry>>,
    /// Verified pod mode: the pod addresses that answer.
    pods: HashTable<PodAddress>,
    hasher: ahash::RandomState,
    zones: Arc<Zones>,
    /// Per zone: pod answer templates that get the address patched in.
    pod_scratch: Vec<Option<(PreparedAnswer, PreparedAnswer)>>,
    refused: PreparedAnswer,
    revision: u64,
    synced: bool,
    rotation: u32,
    recursion_available: bool,
}

impl std::fmt::Debug for AnswerTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnswerTable")
            .field("names", &self.names.len())
            .field("revision", &self.revision)
            .field("synced", &self.synced)
            .finish()
    }
}

impl Default for AnswerTable {
    fn default() -> AnswerTable {
        AnswerTable::new()
    }
}

impl AnswerTable {
    /// An empty table: no zones, so every name is not ours.
    pub fn new() -> AnswerTable {
        AnswerTable {
            names: HashTable::new(),
            pods: HashTable::new(),
            hasher: ahash::RandomState::new(),
            zones: Arc::new(Zones::default()),
            pod_scratch: Vec::new(),
            refused: PreparedAnswer::empty(Rcode::REFUSED, false),
            revision: 0,
            synced: false,
            rotation: 0,
            recursion_available: false,
        }
    }

    /// Sets the RA flag of replies (off while nothing is forwarded).
    pub fn set_recursion_available(&mut self, on: bool) {
        self.recursion_available = on;
    }

    /// The revision applied.
    pub fn revision(&self) -> u64 {
        self.revision
    }
    /// Whether the first full sync has been applied.
    pub fn synced(&self) -> bool {
        self.synced
    }
    /// Names held.
    pub fn len(&self) -> usize {
        self.names.len()
    }
    /// Whether no names are held.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
    /// The zone answers in force.
    pub fn zones(&self) -> &Zones {
        &self.zones
    }
    /// Every entry held, in no particular order.
    pub fn entries(&self) -> impl Iterator<Item = &Arc<NameEntry>> {
        self.names.iter()
    }

    /// The hash table's own heap bytes on this core (entries are shared).
    pub fn table_bytes(&self) -> usize {
        self.names.allocation_size()
    }

    /// Applies an update. Returns false, changing nothing, if it is not
    /// newer than what the table holds, or is a delta that does not follow
    /// on from it (the hub then sends a Reset).
    pub fn apply(&mut self, update: &Update) -> bool {
        match update {
            Update::Reset(snapshot) => {
                if snapshot.revision < self.revision {
                    return false;
                }
                let mut names = HashTable::with_capacity(snapshot.entries.len());
                for entry in &snapshot.entries {
                    let hash = self.hasher.hash_one(entry.key());
                    names.insert_unique(hash, Arc::clone(entry), |e: &Arc<NameEntry>| {
                        self.hasher.hash_one(e.key())
                    });
                }
                self.names = names;
                let mut pods = HashTable::with_capacity(snapshot.pods.len());
                for address in &snapshot.pods {
                    let hash = pod_hash(&self.hasher, &address.namespace, address.ip);
                    pods.insert_unique(hash, address.clone(), |a: &PodAddress| {
                        pod_hash(&self.hasher, &a.namespace, a.ip)
                    });
                }
                self.pods = pods;
                self.set_zones(&snapshot.zones);
                self.revision = snapshot.revision;
                self.synced = snapshot.synced;
                true
            }
            Update::Delta(delta) => {
                if delta.revision != self.revision + 1 {
                    return false;
                }
                for change in &delta.changes {
                    match change {
                        crate::delta::Change::Upsert(entry) => self.upsert(entry),
                        crate::delta::Change::Remove(key) => self.remove(key),
                        crate::delta::Change::UpsertPod(address) => self.upsert_pod(address),
                        crate::delta::Change::RemovePod(address) => self.remove_pod(address),
                    }
                }
                self.set_zones(&delta.zones);
                self.revision = delta.revision;
                self.synced = delta.synced;
                true
            }
        }
    }

    fn upsert(&mut self, entry: &Arc<NameEntry>) {
        let hasher = &self.hasher;
        let hash = hasher.hash_one(entry.key());
        match self.names.entry(
            hash,
            |e| e.key() == entry.key(),
            |e| hasher.hash_one(e.key()),
        ) {
            hashbrown::hash_table::Entry::Occupied(mut slot) => *slot.get_mut() = Arc::clone(entry),
            hashbrown::hash_table::Entry::Vacant(slot) => {
                slot.insert(Arc::clone(entry));
            }
        }
    }

    fn remove(&mut self, key: &[u8]) {
        let hash = self.hasher.hash_one(key);
        if let Ok(slot) = self.names.find_entry(hash, |e| e.key() == key) {
            slot.remove();
        }
    }

    fn upsert_pod(&mut self, address: &PodAddress) {
        let hasher = &self.hasher;
        let hash = pod_hash(hasher, &address.namespace, address.ip);
        if let hashbrown::hash_table::Entry::Vacant(slot) = self.pods.entry(
            hash,
            |a| a == address,
            |a| pod_hash(hasher, &a.namespace, a.ip),
        ) {
            slot.insert(address.clone());
        }
    }

    fn remove_pod(&mut self, address: &PodAddress) {
        let hash = pod_hash(&self.hasher, &address.namespace, address.ip);
        if let Ok(slot) = self.pods.find_entry(hash, |a| a == address) {
            slot.remove();
        }
    }

    /// The verified pod addresses held, in no particular order.
    pub fn pod_addresses(&self) -> impl Iterator<Item = &PodAddress> {
        self.pods.iter()
    }

    /// The pod set's own heap bytes on this core.
    pub fn pod_bytes(&self) -> usize {
        self.pods.allocation_size()
    }

    fn set_zones(&mut self, zones: &Arc<Zones>) {
        if !Arc::ptr_eq(&self.zones, zones) {
            self.zones = Arc::clone(zones);
            self.pod_scratch = zones
                .zones
                .iter()
                .map(|z| z.pod_templates.clone())
                .collect();
        }
    }

    fn find(&self, key: &[u8]) -> Option<&NameEntry> {
        let hash = self.hasher.hash_one(key);
        self.names.find(hash, |e| e.key() == key).map(|e| &**e)
    }

    /// Answers one query into `out`: parse, look up, assemble. No lock, no
    /// allocation, no encoding beyond patching.
    pub fn respond(&mut self, packet: &[u8], transport: Transport, out: &mut [u8]) -> Response {
        let ra = self.recursion_available;
        let query = match parse_query(packet) {
            Ok(query) => query,
            Err(error) => {
                return match (error.rcode(), error_reply(packet, error, ra, out)) {
                    (Some(rcode), Ok(Some(len))) => Response::Reply {
                        len,
                        rcode,
                        qtype: 0,
                    },
                    _ => Response::Drop,
                };
            }
        };
        self.rotation = self.rotation.wrapping_add(1);
        let rotation = self.rotation;
        let key = query.key();
        let qtype = query.qtype();
        let reply = |answer: &PreparedAnswer, out: &mut [u8]| match assemble_reply(
            &query, answer, rotation, transport, ra, out,
        ) {
            Ok(len) => Response::Reply {
                len,
                rcode: answer.rcode(),
                qtype,
            },
            Err(_) => Response::Drop,
        };
        if qtype == rtype::AXFR || qtype == rtype::IXFR {
            // No zone transfers: the cluster zone is not a zone file.
            return reply(&self.refused, out);
        }
        if let Some(entry) = self.find(key.as_wire()) {
            // Entries and zones arrive in the same update, so the index is
            // always valid; were it not (a compiler bug), answer what the
            // entry has, or REFUSED, rather than panic.
            let Some(zone) = self.zones.zones.get(usize::from(entry.zone())) else {
                return reply(entry.answer(qtype).unwrap_or(&self.refused), out);
            };
            return reply(entry.answer(qtype).unwrap_or(&zone.nodata), out);
        }
        let Some((zone_index, zone)) = self.zones.find(key) else {
            return not_ours(reply(&self.refused, out));
        };
        if key.wire_len() == zone.apex.wire_len() {
            return reply(zone.apex_answer(qtype).unwrap_or(&zone.nodata), out);
        }
        if !zone.cluster {
            return not_ours(reply(&self.refused, out));
        }
        match self.pod_address(key, zone.apex.wire_len(), zone_index) {
            PodLookup::NotPod => {}
            PodLookup::Address(ip) => {
                let zone_index = usize::from(zone_index);
                if let Some(Some((a, aaaa))) = self.pod_scratch.get_mut(zone_index) {
                    let patched = match (ip, qtype) {
                        (IpAddr::V4(v4), rtype::A) => {
                            a.set_single_address(&v4.octets()).then_some(&*a)
                        }
                        (IpAddr::V6(v6), rtype::AAAA) => {
                            aaaa.set_single_address(&v6.octets()).then_some(&*aaaa)
                        }
                        _ => None,
                    };
                    if let Some(answer) = patched {
                        return reply(answer, out);
                    }
                }
                // The name exists, with an address of the other family.
                return match self.zones.zones.get(zone_index) {
                    Some(zone) => reply(&zone.nodata, out),
                    None => Response::Drop,
                };
            }
        }
        let Some(zone) = self.zones.zones.get(usize::from(zone_index)) else {
            return Response::Drop;
        };
        if self.synced {
            reply(&zone.nxdomain, out)
        } else {
            reply(&zone.servfail, out)
        }
    }

    /// Whether `key` is `<dashed-ip>.<ns>.pod.<zone>` answered from a
    /// template: a well-formed IP, and a namespace that exists (insecure
    /// mode) or a pod holding that IP in that namespace (verified mode).
    fn pod_address(&self, key: &NameBuf, apex_len: usize, zone_index: u8) -> PodLookup {
        if !matches!(self.pod_scratch.get(usize::from(zone_index)), Some(Some(_))) {
            return PodLookup::NotPod;
        }
        let wire = key.as_wire();
        let relative = &wire[..wire.len() - apex_len];
        let mut labels = kubewire_wire::name::labels(relative);
        let (Some(ip_label), Some(namespace), Some(pod), None) =
            (labels.next(), labels.next(), labels.next(), labels.next())
        else {
            return PodLookup::NotPod;
        };
        if pod != b"pod" {
            return PodLookup::NotPod;
        }
        let Some(ip) = address_from_dashed(ip_label) else {
            return PodLookup::NotPod;
        };
        let verified = self
            .zones
            .zones
            .get(usize::from(zone_index))
            .is_some_and(|z| z.pods_verified);
        let exists = if verified {
            // A pod at that address in that namespace.
            let hash = pod_hash(&self.hasher, namespace, ip);
            self.pods
                .find(hash, |a| a.ip == ip && &a.namespace[..] == namespace)
                .is_some()
        } else {
            // The namespace: `<ns>.pod.<zone>` is the key without its first label.
            self.find(&wire[1 + ip_label.len()..]).is_some()
        };
        if exists {
            PodLookup::Address(ip)
        } else {
            PodLookup::NotPod
        }
    }
}

/// The hash of a pod address, from its parts, so a lookup needs no
/// `PodAddress` of its own.
fn pod_hash(hasher: &ahash::RandomState, namespace: &[u8], ip: IpAddr) -> u64 {
    hasher.hash_one((namespace, ip))
}

enum PodLookup {
    NotPod,
    Address(IpAddr),
}

fn not_ours(response: Response) -> Response {
    match response {
        Response::Reply { len, qtype, .. } => Response::NotOurs { len, qtype },
        other => other,
    }
}
