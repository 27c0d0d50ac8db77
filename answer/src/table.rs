//! A serving core's answer table, and the pure `respond` function.
//!
//! The table maps names to shared, immutable entries. A query's name is
//! answered in constant time without allocating:
//! 1. find the zone by suffix (a handful of zones, longest first); a name
//!    in none is not ours;
//! 2. the entry filed under the name's [`TableKey`] (its labels below the
//!    zone's apex, then the zone's index), if there is one;
//! 3. the apex answers from the zone's own answers;
//! 4. `<dashed-ip>.<ns>.pod.<zone>` is answered from a template with the
//!    address patched in: in `insecure` pod mode if `<ns>.pod.<zone>` exists,
//!    in `verified` mode if a pod holds that address in that namespace (the
//!    core's set of pod addresses, kept by `UpsertPod`/`RemovePod`);
//! 5. any other name in a cluster zone is NXDOMAIN (SERVFAIL before the
//!    first sync, as CoreDNS), or not ours in a `fallthrough` zone; in a
//!    reverse zone it is not ours.
//!
//! Every name that exists has an entry, empty non-terminals included (such
//! as `<ns>.svc.<zone>` and `_tcp.<svc>.<ns>.svc.<zone>`), so NXDOMAIN never
//! needs a walk up the tree.

use crate::entry::{NameEntry, TableKey, Zones};
use crate::names::IndexedNames;
use crate::update::{PodAddress, Update};
use hashbrown::HashTable;
use kubewire_wire::{
    AnswerRef, NameBuf, PreparedAnswer, Query, Rcode, Transport, address_from_dashed,
    assemble_reply, error_reply, parse_query, rtype,
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
        /// An A or AAAA query answered by a CNAME alone (an ExternalName
        /// Service): its target's records may be chased and appended.
        chase: bool,
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
    /// The shared index of every name, and this core's changes over it.
    names: IndexedNames,
    /// Verified pod mode: the pod addresses that answer.
    pods: PodSet,
    /// Autopath: pod address to its namespace's label id.
    clients: hashbrown::HashMap<IpAddr, u32, ahash::RandomState>,
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
            names: IndexedNames::default(),
            pods: PodSet::default(),
            clients: hashbrown::HashMap::default(),
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
        self.names.len() == 0
    }
    /// The zone answers in force.
    pub fn zones(&self) -> &Zones {
        &self.zones
    }
    /// Every entry held, in no particular order.
    pub fn entries(&self) -> impl Iterator<Item = &NameEntry> {
        self.names.iter()
    }

    /// Heap bytes this core holds for itself: its changes over the shared
    /// index (entries and the index are shared).
    pub fn table_bytes(&self) -> usize {
        self.names.own_bytes()
    }

    /// How many name changes this core holds over the shared index.
    pub fn overlaid(&self) -> usize {
        self.names.overlaid()
    }

    /// Autopath: the namespace (its lowercase label) of the pod that holds
    /// `ip`, if one namespace's pods alone hold it.
    pub fn client_namespace(&self, ip: IpAddr) -> Option<&[u8]> {
        let label = *self.clients.get(&ip)?;
        self.pods.label(label)
    }

    /// Autopath's clients, for tests that compare tables.
    pub fn clients(&self) -> impl Iterator<Item = (IpAddr, &[u8])> {
        self.clients
            .iter()
            .filter_map(|(&ip, &label)| Some((ip, self.pods.label(label)?)))
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
                self.names = IndexedNames::new(Arc::clone(&snapshot.names));
                let mut pods = PodSet::default();
                for (id, label) in &snapshot.pod_namespaces {
                    pods.add_namespace(&self.hasher, *id, label);
                }
                pods.reserve(&self.hasher, &snapshot.pods);
                for address in &snapshot.pods {
                    pods.upsert(&self.hasher, *address);
                }
                self.pods = pods;
                self.clients = snapshot.clients.iter().copied().collect();
                self.set_zones(&snapshot.zones);
                self.revision = snapshot.revision;
                self.synced = snapshot.synced;
                true
            }
            Update::Delta(delta) => {
                if delta.revision != self.revision + 1 {
                    return false;
                }
                if let Some(index) = &delta.names {
                    // The index holds this delta's name changes too.
                    self.names = IndexedNames::new(Arc::clone(index));
                }
                let names_indexed = delta.names.is_some();
                for change in &delta.changes {
                    match change {
                        crate::update::Change::Upsert(_) | crate::update::Change::Remove(_)
                            if names_indexed => {}
                        crate::update::Change::Upsert(entry) => self.names.upsert(entry),
                        crate::update::Change::Remove(key) => {
                            self.names.remove(key);
                        }
                        crate::update::Change::PodNamespace(id, label) => {
                            self.pods.add_namespace(&self.hasher, *id, label);
                        }
                        crate::update::Change::UpsertPod(address) => {
                            self.pods.upsert(&self.hasher, *address);
                        }
                        crate::update::Change::RemovePod(address) => {
                            self.pods.remove(&self.hasher, *address);
                        }
                        crate::update::Change::Client(ip, Some(label)) => {
                            self.clients.insert(*ip, *label);
                        }
                        crate::update::Change::Client(ip, None) => {
                            self.clients.remove(ip);
                        }
                    }
                }
                self.set_zones(&delta.zones);
                self.revision = delta.revision;
                self.synced = delta.synced;
                true
            }
        }
    }

    /// The verified pod addresses held, with their namespace labels, in no
    /// particular order.
    pub fn pod_addresses(&self) -> impl Iterator<Item = (&[u8], IpAddr)> {
        self.pods.addresses()
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

    /// The entry of `name` (lowercase wire form), which lies in the zone
    /// at `zone` whose apex takes its last `apex_len` bytes.
    #[inline]
    fn find_in(&self, name: &[u8], apex_len: usize, zone: u8) -> Option<&NameEntry> {
        self.names
            .get(TableKey::new(name, apex_len, zone).as_bytes())
    }

    /// Whether the name (lowercase wire form) exists here: it has records,
    /// or names below it do.
    pub fn holds(&self, name: &[u8]) -> bool {
        self.zones
            .table_key_of_wire(name)
            .is_some_and(|key| self.names.get(key.as_bytes()).is_some())
    }

    /// The hash `key`'s entry is filed under, for
    /// [`AnswerTable::likely_entry`]; `None` outside every zone (no entry).
    #[inline]
    pub fn name_hash(&self, key: &NameBuf) -> Option<u64> {
        let key = self.zones.table_key(key)?;
        Some(self.names.hash_of(key.as_bytes()))
    }

    /// Most likely the entry filed under `hash` (see [`crate::keyed::KeyedTable::likely`]),
    /// found without reading any entry. The serving loop hashes a whole
    /// batch's names, then looks them up this way and prefetches the
    /// entries, before it answers any query: the batch's cache misses then
    /// overlap rather than follow one another. Never for answering: it may
    /// be another name's entry.
    #[inline]
    pub fn likely_entry(&self, hash: u64) -> Option<&NameEntry> {
        self.names.likely(hash)
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
                        chase: false,
                    },
                    _ => Response::Drop,
                };
            }
        };
        self.respond_to(&query, transport, out)
    }

    /// [`AnswerTable::respond`] to a query already parsed, so that a caller
    /// who goes on with it (to the cache, or upstream) parses it once.
    pub fn respond_to(
        &mut self,
        query: &Query<'_>,
        transport: Transport,
        out: &mut [u8],
    ) -> Response {
        let ra = self.recursion_available;
        self.rotation = self.rotation.wrapping_add(1);
        let rotation = self.rotation;
        let key = query.key();
        let qtype = query.qtype();
        let reply = |answer: AnswerRef<'_>, out: &mut [u8]| match assemble_reply(
            query, answer, rotation, transport, ra, out,
        ) {
            Ok(len) => Response::Reply {
                len,
                rcode: answer.rcode(),
                qtype,
                chase: false,
            },
            Err(_) => Response::Drop,
        };
        if qtype == rtype::AXFR || qtype == rtype::IXFR {
            // No zone transfers: the cluster zone is not a zone file.
            return reply(self.refused.as_ref(), out);
        }
        // Every name with an entry lies in a zone: a name in none is not ours.
        let Some((zone_index, zone)) = self.zones.find(key) else {
            return not_ours(reply(self.refused.as_ref(), out));
        };
        let apex_len = zone.apex.wire_len();
        if let Some(entry) = self.find_in(key.as_wire(), apex_len, zone_index) {
            let answer = entry.answer(qtype).unwrap_or(zone.nodata.as_ref());
            let chase = (qtype == rtype::A || qtype == rtype::AAAA) && answer.leads_with_cname();
            return match reply(answer, out) {
                Response::Reply {
                    len, rcode, qtype, ..
                } => Response::Reply {
                    len,
                    rcode,
                    qtype,
                    chase,
                },
                other => other,
            };
        }
        if key.wire_len() == apex_len {
            return reply(
                zone.apex_answer(qtype).unwrap_or(&zone.nodata).as_ref(),
                out,
            );
        }
        if !zone.authoritative {
            return not_ours(reply(self.refused.as_ref(), out));
        }
        if zone.zonal
            && let Some(entry) = self.zonal_fallback(key, apex_len, zone_index)
        {
            return reply(entry.answer(qtype).unwrap_or(zone.nodata.as_ref()), out);
        }
        match self.pod_address(key, apex_len, zone_index) {
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
                        return reply(answer.as_ref(), out);
                    }
                }
                // The name exists, with an address of the other family.
                return match self.zones.zones.get(zone_index) {
                    Some(zone) => reply(zone.nodata.as_ref(), out),
                    None => Response::Drop,
                };
            }
        }
        let Some(zone) = self.zones.zones.get(usize::from(zone_index)) else {
            return Response::Drop;
        };
        if self.synced && zone.fallthrough {
            not_ours(reply(self.refused.as_ref(), out))
        } else if self.synced {
            reply(zone.nxdomain.as_ref(), out)
        } else {
            reply(zone.servfail.as_ref(), out)
        }
    }

    /// `zonal`: for `<zone>.<pin|prefer>._zone.<svc>.<ns>.svc.<cluster-zone>`
    /// where no endpoint is in `<zone>` (so no entry has that name), the
    /// service's `*.<pin|prefer>._zone.…` entry: NODATA for `pin`, every
    /// endpoint for `prefer`. `<zone>` may be several labels.
    fn zonal_fallback(&self, key: &NameBuf, apex_len: usize, zone: u8) -> Option<&NameEntry> {
        let wire = key.as_wire();
        let relative = &wire[..wire.len().saturating_sub(apex_len)];
        let mut at = 0;
        let mut previous: Option<(usize, &[u8])> = None;
        while let Some(&len) = relative.get(at) {
            let label = relative.get(at + 1..at + 1 + usize::from(len))?;
            if label == b"_zone"
                && let Some((directive_at, directive)) = previous
                && directive_at > 0
                && (directive == b"pin" || directive == b"prefer")
            {
                // `*` in place of the zone's labels: 2 bytes for at least 2.
                let mut any = [0u8; kubewire_wire::name::MAX_NAME_LEN];
                let rest = &wire[directive_at..];
                any[..2].copy_from_slice(b"\x01*");
                any.get_mut(2..2 + rest.len())?.copy_from_slice(rest);
                if let Some(entry) = self.find_in(&any[..2 + rest.len()], apex_len, zone) {
                    return Some(entry);
                }
            }
            previous = Some((at, label));
            at += 1 + usize::from(len);
        }
        None
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
            self.pods.contains(&self.hasher, namespace, ip)
        } else {
            // The namespace: `<ns>.pod.<zone>` is the key without its first label.
            self.find_in(&wire[1 + ip_label.len()..], apex_len, zone_index)
                .is_some()
        };
        if exists {
            PodLookup::Address(ip)
        } else {
            PodLookup::NotPod
        }
    }
}

/// A core's set of verified pod addresses. IPv4 addresses, nearly all of
/// them, are one `u64` each (label id and address), so 100k pods cost a
/// core about 1 MiB.
#[derive(Default)]
struct PodSet {
    /// Label to id, for lookups by the query's namespace label.
    label_ids: HashTable<(Arc<[u8]>, u32)>,
    /// Id to label, for listing.
    labels: Vec<Option<Arc<[u8]>>>,
    v4: HashTable<u64>,
    v6: HashTable<(u32, [u8; 16])>,
}

impl PodSet {
    fn label(&self, id: u32) -> Option<&[u8]> {
        self.labels.get(id as usize)?.as_deref()
    }

    fn add_namespace(&mut self, hasher: &ahash::RandomState, id: u32, label: &Arc<[u8]>) {
        let hash = hasher.hash_one(&label[..]);
        if self.label_ids.find(hash, |(l, _)| l == label).is_none() {
            self.label_ids
                .insert_unique(hash, (Arc::clone(label), id), |(l, _)| {
                    hasher.hash_one(&l[..])
                });
        }
        let index = id as usize;
        if self.labels.len() <= index {
            self.labels.resize(index + 1, None);
        }
        self.labels[index] = Some(Arc::clone(label));
    }

    fn reserve(&mut self, hasher: &ahash::RandomState, addresses: &[PodAddress]) {
        let v4 = addresses.iter().filter(|a| a.ip.is_ipv4()).count();
        self.v4.reserve(v4, |k| hasher.hash_one(k));
        self.v6
            .reserve(addresses.len() - v4, |k| hasher.hash_one(k));
    }

    fn upsert(&mut self, hasher: &ahash::RandomState, address: PodAddress) {
        match address.ip {
            IpAddr::V4(v4) => {
                let key = v4_key(address.namespace, v4);
                let hash = hasher.hash_one(key);
                if self.v4.find(hash, |k| *k == key).is_none() {
                    self.v4.insert_unique(hash, key, |k| hasher.hash_one(k));
                }
            }
            IpAddr::V6(v6) => {
                let key = (address.namespace, v6.octets());
                let hash = hasher.hash_one(key);
                if self.v6.find(hash, |k| *k == key).is_none() {
                    self.v6.insert_unique(hash, key, |k| hasher.hash_one(k));
                }
            }
        }
    }

    fn remove(&mut self, hasher: &ahash::RandomState, address: PodAddress) {
        match address.ip {
            IpAddr::V4(v4) => {
                let key = v4_key(address.namespace, v4);
                if let Ok(slot) = self.v4.find_entry(hasher.hash_one(key), |k| *k == key) {
                    slot.remove();
                }
            }
            IpAddr::V6(v6) => {
                let key = (address.namespace, v6.octets());
                if let Ok(slot) = self.v6.find_entry(hasher.hash_one(key), |k| *k == key) {
                    slot.remove();
                }
            }
        }
    }

    /// Whether a pod holds `ip` in the namespace with this label.
    fn contains(&self, hasher: &ahash::RandomState, label: &[u8], ip: IpAddr) -> bool {
        let Some(&(_, id)) = self
            .label_ids
            .find(hasher.hash_one(label), |(l, _)| &l[..] == label)
        else {
            return false;
        };
        match ip {
            IpAddr::V4(v4) => {
                let key = v4_key(id, v4);
                self.v4.find(hasher.hash_one(key), |k| *k == key).is_some()
            }
            IpAddr::V6(v6) => {
                let key = (id, v6.octets());
                self.v6.find(hasher.hash_one(key), |k| *k == key).is_some()
            }
        }
    }

    fn addresses(&self) -> impl Iterator<Item = (&[u8], IpAddr)> {
        let label = |id: u32| {
            self.labels
                .get(id as usize)
                .and_then(Option::as_deref)
                .unwrap_or_default()
        };
        let v4 = self.v4.iter().map(move |k| {
            (
                label((k >> 32) as u32),
                IpAddr::V4(std::net::Ipv4Addr::from(*k as u32)),
            )
        });
        let v6 = self
            .v6
            .iter()
            .map(move |(id, octets)| (label(*id), IpAddr::V6((*octets).into())));
        v4.chain(v6)
    }

    fn allocation_size(&self) -> usize {
        self.v4.allocation_size() + self.v6.allocation_size() + self.label_ids.allocation_size()
    }
}

/// An IPv4 pod address as one word: label id, then address.
fn v4_key(label: u32, ip: std::net::Ipv4Addr) -> u64 {
    (u64::from(label) << 32) | u64::from(u32::from(ip))
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
