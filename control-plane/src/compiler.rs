//! The record compiler: cluster objects in, pre-encoded name entries and
//! revisioned deltas out.
//!
//! Objects are grouped into *units*: a Service with all its EndpointSlices,
//! a namespace, and the zone's own static names. Every name belongs to one
//! unit, so a unit's names are compiled straight from what it computes,
//! and the compiler keeps no per-name record sets: per unit it keeps only
//! the entries it owns and the addresses it gives PTR targets for. PTR
//! names are the exception, since several services may point at one
//! address; they are rebuilt from every unit that does, which an index of
//! address to units finds.
//!
//! Pods are not units: in `verified` mode their addresses form a counted set
//! that ships to the cores as `UpsertPod`/`RemovePod`, and the cores answer
//! pod names from a template, as in `insecure` mode.
//!
//! A change to an object marks its unit dirty. [`Compiler::take_delta`]
//! recomputes the dirty units and emits `Upsert`/`Remove` for the entries
//! that came out different. Work is batched: a relist of 10k objects is one
//! pass.

use crate::entry::{NameEntry, ZoneAnswers, Zones};
use crate::model::{Kind, ListedKeys, Object, ObjectKey, ServiceKind, ServiceModel, SliceModel};
use crate::pods::PodIndex;
use crate::update::{Change, Delta, Snapshot};

use crate::keyed::{HasKey, KeyedTable};
use crate::settings::{PodMode, Settings};
use hashbrown::HashTable;
use kubewire_wire::{
    AnswerBuilder, BuildError, NameBuf, Owner, PreparedAnswer, Rcode, Rdata, Section, dashed_label,
    reverse_name, rtype,
};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

type Map<K, V> = HashMap<K, V, ahash::RandomState>;
type Set<K> = HashSet<K, ahash::RandomState>;

/// The TXT answer of `dns-version.<zone>`: the spec version served.
pub const DNS_SCHEMA_VERSION: &str = "1.1.0";
/// TTL of the `dns-version` record, as CoreDNS gives it.
const DNS_VERSION_TTL: u32 = 28800;

/// A change to the objects, as a watch or a file reload reports it.
#[derive(Clone, Debug)]
pub enum ObjectChange {
    /// Add or replace an object.
    Upsert(Object),
    /// Remove an object.
    Remove(Kind, ObjectKey),
    /// The end of a relist: the objects of this kind are now exactly the
    /// ones listed, whose contents came as Upserts before it. Applied as a
    /// diff, so names that stay the same never disappear in between.
    Reset(Kind, ListedKeys),
}

impl ObjectChange {
    /// A relist of `objects` as changes: an Upsert each, then the Reset.
    pub fn relist(kind: Kind, objects: Vec<Object>) -> Vec<ObjectChange> {
        let listed: ListedKeys = objects.iter().collect();
        let mut changes: Vec<ObjectChange> =
            objects.into_iter().map(ObjectChange::Upsert).collect();
        changes.push(ObjectChange::Reset(kind, listed));
        changes
    }
}

/// The keys of `map` that `keep` does not list.
fn unlisted<'a>(
    keys: impl Iterator<Item = &'a ObjectKey>,
    keep: &Set<(&str, &str)>,
) -> Vec<ObjectKey> {
    keys.filter(|k| !keep.contains(&(k.namespace.as_str(), k.name.as_str())))
        .cloned()
        .collect()
}

impl HasKey for ServiceModel {
    type Key = ObjectKey;
    fn key(&self) -> &ObjectKey {
        &self.key
    }
}

impl HasKey for SliceModel {
    type Key = ObjectKey;
    fn key(&self) -> &ObjectKey {
        &self.key
    }
}

/// A group of objects whose names are computed together.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Unit {
    /// `dns-version`, `svc` and `pod` under each zone.
    Zone,
    /// A Service with its EndpointSlices: the service name, its SRV names
    /// and its endpoint names, plus PTR targets.
    Service(ObjectKey),
    /// `<ns>.svc` and `<ns>.pod`, which exist while the namespace or any
    /// service in it does.
    Namespace(String),
}

/// One SRV record before weights are known.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct SrvRecord {
    port: u16,
    target: Box<[u8]>,
    /// The target's addresses, for the additional section.
    addrs: Vec<IpAddr>,
}

/// What a unit says about one name. An empty set still makes the name exist.
/// Most names carry only addresses; the rest is boxed to keep this small.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
struct Records {
    addrs: Vec<IpAddr>,
    extra: Option<Box<Extra>>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
struct Extra {
    srv: Vec<SrvRecord>,
    ptr: Vec<Box<[u8]>>,
    cname: Option<Box<[u8]>>,
    txt: Option<Box<[u8]>>,
}

impl Records {
    fn add_ip(&mut self, ip: IpAddr) {
        self.addrs.push(ip);
    }

    fn extra(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    /// Sorts and de-duplicates, so that equal sets encode to equal bytes.
    fn normalize(&mut self) {
        self.addrs.sort_unstable();
        self.addrs.dedup();
        if let Some(extra) = &mut self.extra {
            extra.ptr.sort_unstable();
            extra.ptr.dedup();
            // The same endpoint in two slices gives the same SRV record twice.
            extra
                .srv
                .sort_unstable_by(|x, y| (x.port, &x.target).cmp(&(y.port, &y.target)));
            extra.srv.dedup_by(|later, kept| {
                if later.port == kept.port && later.target == kept.target {
                    kept.addrs.extend_from_slice(&later.addrs);
                    true
                } else {
                    false
                }
            });
            for srv in &mut extra.srv {
                srv.addrs.sort_unstable();
                srv.addrs.dedup();
            }
        }
    }
}

/// A unit's output while it is computed.
#[derive(Default)]
struct UnitOutput {
    /// Records per lowercase wire name.
    names: hashbrown::HashMap<Vec<u8>, Records>,
    /// (address, PTR target) pairs.
    ptrs: Vec<(IpAddr, Box<[u8]>)>,
}

impl UnitOutput {
    fn at(&mut self, name: &NameBuf) -> &mut Records {
        self.names.entry_ref(name.as_wire()).or_default()
    }

    fn ptr(&mut self, ip: IpAddr, target: &NameBuf) {
        self.ptrs.push((ip, target.as_wire().into()));
    }

    /// Names sorted, record sets normalized, PTR pairs sorted and unique.
    fn finish(self) -> Computed {
        let mut names: Vec<(Vec<u8>, Records)> = self.names.into_iter().collect();
        for (_, records) in &mut names {
            records.normalize();
        }
        names.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut ptrs = self.ptrs;
        ptrs.sort_unstable();
        ptrs.dedup();
        Computed { names, ptrs }
    }
}

/// A unit's finished output.
struct Computed {
    /// Sorted by name.
    names: Vec<(Vec<u8>, Records)>,
    /// Sorted by address, then target.
    ptrs: Vec<(IpAddr, Box<[u8]>)>,
}

/// The units that point a PTR at each address. Nearly every address has
/// exactly one, so that one is kept in a map of plain integers (8 bytes a
/// pair for IPv4, where a map of `IpAddr` to a list took 48), and any
/// further units in a side map.
#[derive(Debug, Default)]
struct PtrSources {
    v4: Map<u32, u32>,
    v6: Map<u128, u32>,
    /// Units after the first, for addresses several units point at.
    more: Map<IpAddr, Vec<u32>>,
}

impl PtrSources {
    fn first_mut(&mut self, ip: IpAddr) -> Option<&mut u32> {
        match ip {
            IpAddr::V4(v4) => self.v4.get_mut(&u32::from(v4)),
            IpAddr::V6(v6) => self.v6.get_mut(&u128::from(v6)),
        }
    }

    /// The units pointing at `ip`, the first first.
    fn ids(&self, ip: IpAddr) -> impl Iterator<Item = u32> + '_ {
        let first = match ip {
            IpAddr::V4(v4) => self.v4.get(&u32::from(v4)),
            IpAddr::V6(v6) => self.v6.get(&u128::from(v6)),
        };
        let more = first.and_then(|_| self.more.get(&ip));
        first
            .copied()
            .into_iter()
            .chain(more.into_iter().flatten().copied())
    }

    fn add(&mut self, ip: IpAddr, id: u32) {
        if self.first_mut(ip).is_some() {
            self.more.entry(ip).or_default().push(id);
            return;
        }
        match ip {
            IpAddr::V4(v4) => self.v4.insert(u32::from(v4), id),
            IpAddr::V6(v6) => self.v6.insert(u128::from(v6), id),
        };
    }

    fn remove(&mut self, ip: IpAddr, id: u32) {
        let Some(&mut first) = self.first_mut(ip) else {
            return;
        };
        let more = self.more.get_mut(&ip);
        let next = if first == id {
            // The first goes: the next, if any, takes its place.
            more.and_then(Vec::pop)
        } else {
            if let Some(more) = more {
                more.retain(|x| *x != id);
            }
            Some(first)
        };
        if self.more.get(&ip).is_some_and(Vec::is_empty) {
            self.more.remove(&ip);
        }
        match (next, ip) {
            (Some(next), _) => {
                if let Some(first) = self.first_mut(ip) {
                    *first = next;
                }
            }
            (None, IpAddr::V4(v4)) => {
                self.v4.remove(&u32::from(v4));
            }
            (None, IpAddr::V6(v6)) => {
                self.v6.remove(&u128::from(v6));
            }
        }
    }
}

/// The owner of PTR names in the names table.
const PTR_OWNER: u32 = u32::MAX;

/// What the compiler remembers of a unit between passes.
#[derive(Debug, Default)]
struct UnitState {
    /// `None` while the id is free.
    unit: Option<Unit>,
    /// The entries it owns, sorted by key.
    names: Box<[NameEntry]>,
    /// By name: a hash of the record set each entry was encoded from.
    name_hashes: Box<[u64]>,
    /// The addresses it gives PTR targets for, sorted.
    ptr_ips: Box<[IpAddr]>,
    /// By address: a hash of the targets this unit gives it.
    ptr_hashes: Box<[u64]>,
}

/// PTR pairs of the units computed in one pass, by unit id.
type PtrCache = Map<u32, Vec<(IpAddr, Box<[u8]>)>>;

/// Counts of the objects held, for logs and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ObjectCounts {
    /// Services.
    pub services: usize,
    /// EndpointSlices.
    pub slices: usize,
    /// Pods.
    pub pods: usize,
    /// Namespaces.
    pub namespaces: usize,
}

/// The compiler. Owned by the control-plane thread.
#[derive(Debug)]
pub struct Compiler {
    settings: Settings,
    services: KeyedTable<ServiceModel>,
    slices: KeyedTable<SliceModel>,
    /// Slices with an endpoint at one of our own addresses, and their
    /// Service: what answers for `ns.dns.<zone>`.
    fronting: BTreeMap<ObjectKey, ObjectKey>,
    /// Slice names per service (namespace, service name).
    /// Slice names by service, sorted (nearly always one: a leaf of a
    /// B-tree set cost 280 bytes a service).
    slices_by_service: Map<ObjectKey, Vec<Box<str>>>,
    /// Services per namespace: `<ns>.svc` exists while any does.
    services_per_namespace: Map<String, u32>,
    /// Pods, by address (`verified` pod mode).
    pods: PodIndex,
    namespaces: Set<String>,

    /// Units are numbered, so that names and PTR sources refer to them by
    /// a `u32`.
    /// Unit ids, found by the unit each `units` slot holds (a map from
    /// `Unit` would hold every unit's key a second time).
    unit_ids: HashTable<u32>,
    unit_hasher: ahash::RandomState,
    /// By unit id.
    units: Vec<UnitState>,
    free_ids: Vec<u32>,
    /// Every compiled name.
    /// Every compiled name, by its key; each entry names its owner (a unit
    /// id, or [`PTR_OWNER`]).
    names: KeyedTable<NameEntry>,
    name_hasher: ahash::RandomState,
    /// The units that point a PTR at each address.
    ptr_sources: PtrSources,
    /// Names a unit computed while another unit owns them, with the units
    /// waiting for them (only overlapping zones make these).
    contested: Map<Box<[u8]>, Vec<u32>>,
    zones: Arc<Zones>,

    dirty_units: Set<Unit>,
    /// Encode every name of the units recomputed, even if its record set
    /// hashes as before (the settings changed).
    reencode: bool,
    /// Addresses whose PTR name must be rebuilt.
    dirty_ptrs: Set<IpAddr>,
    /// One builder, reused for every answer so its buffers are reused too.
    builder: Option<AnswerBuilder>,
    zones_dirty: bool,
    revision: u64,
    synced: bool,
    synced_announced: bool,
}

impl Compiler {
    /// A compiler with no objects. The zone's own names (`dns-version`,
    /// `svc`, `pod`) are compiled on the first [`Compiler::take_delta`].
    pub fn new(settings: Settings) -> Compiler {
        let mut compiler = Compiler {
            pods: PodIndex::new(settings.pod_mode == PodMode::Verified),
            settings,
            services: KeyedTable::default(),
            slices: KeyedTable::default(),
            fronting: BTreeMap::new(),
            slices_by_service: Map::default(),
            services_per_namespace: Map::default(),
            namespaces: Set::default(),
            unit_ids: HashTable::new(),
            unit_hasher: ahash::RandomState::new(),
            units: Vec::new(),
            free_ids: Vec::new(),
            names: KeyedTable::default(),
            name_hasher: ahash::RandomState::new(),
            ptr_sources: PtrSources::default(),
            contested: Map::default(),
            zones: Arc::new(Zones::default()),
            dirty_units: Set::default(),
            reencode: false,
            dirty_ptrs: Set::default(),
            builder: None,
            zones_dirty: true,
            revision: 0,
            synced: false,
            synced_announced: false,
        };
        compiler.dirty_units.insert(Unit::Zone);
        compiler
    }

    /// The settings in force.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Replaces the settings; every name is recompiled on the next delta.
    pub fn set_settings(&mut self, settings: Settings) {
        if settings == self.settings {
            return;
        }
        // The cores' pod set appears or goes whole.
        self.pods
            .set_verified(settings.pod_mode == PodMode::Verified);
        self.settings = settings;
        // Which slices front us follows our own addresses.
        let own = &self.settings.own_ips;
        self.fronting = self
            .slices
            .iter()
            .filter_map(|slice| Some((slice.key.clone(), fronted_by(slice, own)?)))
            .collect();
        // Every unit, those with names now and those that may get some.
        self.dirty_units.insert(Unit::Zone);
        self.dirty_units
            .extend(self.units.iter().filter_map(|slot| slot.unit.clone()));
        self.dirty_units
            .extend(self.services.keys().cloned().map(Unit::Service));
        self.dirty_units
            .extend(self.namespaces.iter().cloned().map(Unit::Namespace));
        self.dirty_units.extend(
            self.services_per_namespace
                .keys()
                .cloned()
                .map(Unit::Namespace),
        );
        self.zones_dirty = true;
        self.reencode = true;
    }

    /// Records that the first full state has been given; the next delta
    /// carries `synced`, and so does every one after it.
    pub fn mark_synced(&mut self) {
        self.synced = true;
    }

    /// Whether the first full state has been given.
    pub fn synced(&self) -> bool {
        self.synced
    }

    /// The revision of the last delta taken.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// How many objects of each kind are held.
    pub fn object_counts(&self) -> ObjectCounts {
        ObjectCounts {
            services: self.services.len(),
            slices: self.slices.len(),
            pods: self.pods.len(),
            namespaces: self.namespaces.len(),
        }
    }

    /// The compiled entries, by lowercase wire name.
    pub fn entries(&self) -> impl Iterator<Item = &NameEntry> {
        self.names.iter()
    }

    /// The number of compiled names.
    pub fn name_count(&self) -> usize {
        self.names.len()
    }

    /// The zone answers in force.
    pub fn zones(&self) -> &Arc<Zones> {
        &self.zones
    }

    /// Applies one object change. Nothing is compiled until
    /// [`Compiler::take_delta`].
    pub fn apply(&mut self, change: ObjectChange) {
        match change {
            ObjectChange::Upsert(object) => self.upsert(object),
            ObjectChange::Remove(kind, key) => self.remove(kind, &key),
            ObjectChange::Reset(kind, listed) => {
                let keep: Set<(&str, &str)> = listed.iter().collect();
                let gone: Vec<ObjectKey> = match kind {
                    Kind::Service => unlisted(self.services.keys(), &keep),
                    Kind::Slice => unlisted(self.slices.keys(), &keep),
                    Kind::Pod => self
                        .pods
                        .keys_where(|namespace, name| !keep.contains(&(namespace, name))),
                    Kind::Namespace => self
                        .namespaces
                        .iter()
                        .filter(|n| !keep.contains(&("", n.as_str())))
                        .map(|n| ObjectKey::new("", n.clone()))
                        .collect(),
                };
                drop(keep);
                for key in gone {
                    self.remove(kind, &key);
                }
            }
        }
    }

    fn upsert(&mut self, object: Object) {
        match object {
            Object::Service(service) => {
                let key = service.key.clone();
                if self.services.get(&key) != Some(&service) {
                    if self.services.insert(service).is_none() {
                        self.count_service(&key.namespace, true);
                    }
                    if self.is_name_server(&key) {
                        self.name_servers_changed();
                    }
                    self.dirty_units.insert(Unit::Service(key));
                }
            }
            Object::Slice(slice) => {
                let key = slice.key.clone();
                let old = self.slices.get(&key);
                if old == Some(&slice) {
                    return;
                }
                let old_service = old.and_then(|s| s.service.clone());
                if old_service != slice.service
                    && let Some(old_service) = old_service
                {
                    self.unlink_slice(&key, &old_service);
                }
                self.note_fronting(&slice);
                if let Some(service) = &slice.service {
                    let service_key = ObjectKey::new(key.namespace.clone(), service.clone());
                    let names = self
                        .slices_by_service
                        .entry(service_key.clone())
                        .or_default();
                    if let Err(at) = names.binary_search_by(|n| (**n).cmp(key.name.as_str())) {
                        names.insert(at, key.name.as_str().into());
                    }
                    self.dirty_units.insert(Unit::Service(service_key));
                }
                self.slices.insert(slice);
            }
            Object::Pod(pod) => self.pods.upsert(&pod),
            Object::Namespace(name) => {
                if self.namespaces.insert(name.clone()) {
                    self.dirty_units.insert(Unit::Namespace(name));
                }
            }
        }
    }

    fn remove(&mut self, kind: Kind, key: &ObjectKey) {
        match kind {
            Kind::Service => {
                if self.services.remove(key).is_some() {
                    self.count_service(&key.namespace, false);
                    if self.is_name_server(key) {
                        self.name_servers_changed();
                    }
                    self.dirty_units.insert(Unit::Service(key.clone()));
                }
            }
            Kind::Slice => {
                if self.fronting.remove(key).is_some() {
                    self.name_servers_changed();
                }
                if let Some(slice) = self.slices.remove(key)
                    && let Some(service) = slice.service
                {
                    self.unlink_slice(key, &service);
                }
            }
            Kind::Pod => self.pods.remove(key),
            Kind::Namespace => {
                if self.namespaces.remove(&key.name) {
                    self.dirty_units.insert(Unit::Namespace(key.name.clone()));
                }
            }
        }
    }

    /// Whether `service` answers for `ns.dns.<zone>`: it fronts our own
    /// pods, or it is the configured DNS Service.
    fn is_name_server(&self, service: &ObjectKey) -> bool {
        self.settings.dns_service.as_ref() == Some(service)
            || self.fronting.values().any(|s| s == service)
    }

    /// The name servers' addresses changed: the zone answers and
    /// `ns.dns.<zone>` follow.
    fn name_servers_changed(&mut self) {
        self.zones_dirty = true;
        self.dirty_units.insert(Unit::Zone);
    }

    /// Notes whether `slice` has an endpoint at one of our own addresses.
    fn note_fronting(&mut self, slice: &SliceModel) {
        let now = fronted_by(slice, &self.settings.own_ips);
        if self.fronting.get(&slice.key) != now.as_ref() {
            match now {
                Some(service) => self.fronting.insert(slice.key.clone(), service),
                None => self.fronting.remove(&slice.key),
            };
            self.name_servers_changed();
        }
    }

    /// The addresses of `ns.dns.<zone>`, as CoreDNS finds them: the cluster
    /// IPs of the Services that front our own pod addresses (our own
    /// addresses, for a headless one); else the DNS Service's cluster IPs;
    /// else our own addresses.
    fn name_server_ips(&self) -> Vec<IpAddr> {
        let mut ips: Vec<IpAddr> = Vec::new();
        for service in self.fronting.values() {
            match self.services.get(service).map(|s| &s.kind) {
                Some(ServiceKind::ClusterIp(cluster_ips)) => ips.extend(cluster_ips),
                Some(ServiceKind::Headless) => ips.extend(&self.settings.own_ips),
                _ => {}
            }
        }
        if ips.is_empty()
            && let Some(ServiceKind::ClusterIp(cluster_ips)) = self
                .settings
                .dns_service
                .as_ref()
                .and_then(|key| self.services.get(key))
                .map(|s| &s.kind)
        {
            ips.extend(cluster_ips);
        }
        if ips.is_empty() {
            ips.extend(&self.settings.own_ips);
        }
        ips.sort();
        ips.dedup();
        ips
    }

    /// Counts a service more or less in its namespace; the namespace's
    /// names change when the count leaves or reaches zero.
    fn count_service(&mut self, namespace: &str, add: bool) {
        if add {
            let count = self
                .services_per_namespace
                .entry(namespace.to_string())
                .or_insert(0);
            *count += 1;
            if *count == 1 {
                self.dirty_units
                    .insert(Unit::Namespace(namespace.to_string()));
            }
        } else if let Some(count) = self.services_per_namespace.get_mut(namespace) {
            *count -= 1;
            if *count == 0 {
                self.services_per_namespace.remove(namespace);
                self.dirty_units
                    .insert(Unit::Namespace(namespace.to_string()));
            }
        }
    }

    /// The pod addresses the cores hold (none unless pod mode is
    /// `verified`), with their namespace labels.
    pub fn pod_addresses(&self) -> impl Iterator<Item = (&[u8], IpAddr)> {
        self.pods.labelled_addresses()
    }

    /// Takes a slice from its service's list; the service's names change.
    fn unlink_slice(&mut self, slice: &ObjectKey, service: &str) {
        let service_key = ObjectKey::new(slice.namespace.clone(), service);
        if let Some(names) = self.slices_by_service.get_mut(&service_key) {
            names.retain(|n| **n != *slice.name);
            if names.is_empty() {
                self.slices_by_service.remove(&service_key);
            }
        }
        self.dirty_units.insert(Unit::Service(service_key));
    }

    /// Compiles what changed since the last call into a delta, or returns
    /// `None` if no name, zone answer or sync state changed.
    pub fn take_delta(&mut self) -> Option<Delta> {
        if self.zones_dirty || self.zones.zones.is_empty() {
            // Zone answers first: entries need the zone order.
            self.zones = Arc::new(self.build_zones(self.zones.serial));
        }
        let mut changes = self.pods.take_changes();
        let mut builder = self
            .builder
            .take()
            .unwrap_or_else(|| AnswerBuilder::new(&NameBuf::ROOT));
        let mut ptr_cache = PtrCache::default();
        // A unit that lets go of a contested name wakes the units waiting
        // for it, so this runs until nothing is dirty (at most a few rounds).
        while !self.dirty_units.is_empty() || !self.dirty_ptrs.is_empty() {
            // Taken, not drained, so a big pass leaves no capacity behind.
            for unit in std::mem::take(&mut self.dirty_units) {
                self.recompute_unit(unit, &mut builder, &mut ptr_cache, &mut changes);
            }
            for ip in std::mem::take(&mut self.dirty_ptrs) {
                self.rebuild_ptr(ip, &mut builder, &mut ptr_cache, &mut changes);
            }
        }
        self.builder = Some(builder);
        self.reencode = false;
        let announce_sync = self.synced && !self.synced_announced;
        if changes.is_empty() && !self.zones_dirty && !announce_sync {
            return None;
        }
        // Any change to DNS data changes the serial.
        if !changes.is_empty() || self.zones_dirty {
            let serial = next_serial(self.zones.serial);
            self.zones = Arc::new(self.build_zones(serial));
        }
        self.zones_dirty = false;
        self.synced_announced |= self.synced;
        self.revision += 1;
        changes.shrink_to_fit();
        Some(Delta {
            revision: self.revision,
            changes,
            zones: Arc::clone(&self.zones),
            synced: self.synced,
            created: std::time::Instant::now(),
        })
    }

    /// The whole current state, for a core that starts or falls behind.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            revision: self.revision,
            entries: self.entries().cloned().collect(),
            pod_namespaces: self
                .pods
                .labels()
                .map(|(id, label)| (id, Arc::clone(label)))
                .collect(),
            pods: self.pods.addresses().collect(),
            zones: Arc::clone(&self.zones),
            synced: self.synced_announced,
            created: std::time::Instant::now(),
        }
    }

    /// The id of a unit that holds names or PTR targets.
    fn unit_id(&self, unit: &Unit) -> Option<u32> {
        let hash = self.unit_hasher.hash_one(unit);
        self.unit_ids
            .find(hash, |&id| {
                self.units.get(id as usize).and_then(|u| u.unit.as_ref()) == Some(unit)
            })
            .copied()
    }

    /// Recomputes a unit: its names are re-encoded and compared with the
    /// entries it owns, and the addresses it points PTRs at are rebuilt.
    fn recompute_unit(
        &mut self,
        unit: Unit,
        builder: &mut AnswerBuilder,
        ptr_cache: &mut PtrCache,
        changes: &mut Vec<Change>,
    ) {
        let fresh = self.unit_output(&unit);
        let id = match self.unit_id(&unit) {
            Some(id) => id,
            None if fresh.names.is_empty() && fresh.ptrs.is_empty() => return,
            None => {
                let id = self.free_ids.pop().unwrap_or(self.units.len() as u32);
                if id as usize == self.units.len() {
                    self.units.push(UnitState::default());
                }
                let hash = self.unit_hasher.hash_one(&unit);
                self.units[id as usize].unit = Some(unit.clone());
                let (units, hasher) = (&self.units, &self.unit_hasher);
                self.unit_ids.insert_unique(hash, id, |&other| {
                    // Every id in the table has its unit set.
                    let unit = units.get(other as usize).and_then(|u| u.unit.as_ref());
                    unit.map_or(0, |unit| hasher.hash_one(unit))
                });
                id
            }
        };
        let slot = &mut self.units[id as usize];
        let old_names = std::mem::take(&mut slot.names);
        let old_hashes = std::mem::take(&mut slot.name_hashes);
        let old_ips = std::mem::take(&mut slot.ptr_ips);
        let old_ptr_hashes = std::mem::take(&mut slot.ptr_hashes);

        // Both lists are sorted by name: walk them together. A name whose
        // record set hashes as before keeps its entry without being encoded
        // again, so one endpoint's change in a 1000-endpoint service encodes
        // a few names, not a thousand. (A 64-bit collision would keep a
        // stale answer until the name's next change: odds of 2^-64 a change.)
        let mut kept: Vec<NameEntry> = Vec::with_capacity(fresh.names.len());
        let mut kept_hashes: Vec<u64> = Vec::with_capacity(fresh.names.len());
        let mut old_iter = old_names.into_vec().into_iter().zip(old_hashes).peekable();
        for (name, records) in &fresh.names {
            while let Some((gone, _)) = old_iter.next_if(|(e, _)| e.key() < name.as_slice()) {
                self.release(gone.key(), changes);
            }
            let previous = old_iter.next_if(|(e, _)| e.key() == name.as_slice());
            let hash = self.name_hasher.hash_one(records);
            if let Some((entry, old_hash)) = &previous
                && *old_hash == hash
                && !self.reencode
            {
                kept.push(entry.clone());
                kept_hashes.push(hash);
                continue;
            }
            let Some(entry) = self.build_entry(builder, name, id, records) else {
                if let Some((previous, _)) = previous {
                    self.release(previous.key(), changes);
                }
                continue;
            };
            let entry = match previous {
                Some((previous, _)) if previous == entry => previous,
                Some(_) => {
                    self.put(&entry);
                    changes.push(Change::Upsert(entry.clone()));
                    entry
                }
                None => match self.claim(entry, id, changes) {
                    Some(entry) => entry,
                    None => continue,
                },
            };
            kept.push(entry);
            kept_hashes.push(hash);
        }
        for (gone, _) in old_iter {
            self.release(gone.key(), changes);
        }

        // Per address, a hash of this unit's targets: an address whose
        // targets from this unit are as before needs no rebuild.
        let mut ips: Vec<IpAddr> = Vec::new();
        let mut ptr_hashes: Vec<u64> = Vec::new();
        for group in fresh.ptrs.chunk_by(|a, b| a.0 == b.0) {
            ips.push(group[0].0);
            ptr_hashes.push(self.name_hasher.hash_one(group));
        }
        for ip in old_ips.iter() {
            if ips.binary_search(ip).is_err() {
                self.ptr_sources.remove(*ip, id);
                self.dirty_ptrs.insert(*ip);
            }
        }
        for (ip, hash) in ips.iter().zip(&ptr_hashes) {
            match old_ips.binary_search(ip) {
                Ok(at) if old_ptr_hashes.get(at) == Some(hash) && !self.reencode => continue,
                Ok(_) => {}
                Err(_) => self.ptr_sources.add(*ip, id),
            }
            self.dirty_ptrs.insert(*ip);
        }
        ptr_cache.insert(id, fresh.ptrs);

        if kept.is_empty() && ips.is_empty() {
            let hash = self.unit_hasher.hash_one(&unit);
            if let Ok(held) = self.unit_ids.find_entry(hash, |&other| other == id) {
                held.remove();
            }
            self.units[id as usize] = UnitState::default();
            self.free_ids.push(id);
        } else {
            let slot = &mut self.units[id as usize];
            slot.names = kept.into_boxed_slice();
            slot.name_hashes = kept_hashes.into_boxed_slice();
            slot.ptr_ips = ips.into_boxed_slice();
            slot.ptr_hashes = ptr_hashes.into_boxed_slice();
        }
    }

    /// Rebuilds the PTR name of an address from every unit pointing at it.
    fn rebuild_ptr(
        &mut self,
        ip: IpAddr,
        builder: &mut AnswerBuilder,
        ptr_cache: &mut PtrCache,
        changes: &mut Vec<Change>,
    ) {
        let mut targets: Vec<Box<[u8]>> = Vec::new();
        for id in self.ptr_sources.ids(ip) {
            // Units not recomputed in this pass are computed again from
            // the model; this happens only for addresses several units
            // share.
            let pairs = ptr_cache.entry(id).or_insert_with(|| {
                let unit = self.units.get(id as usize).and_then(|u| u.unit.as_ref());
                unit.map(|u| self.unit_output(u).ptrs).unwrap_or_default()
            });
            let start = pairs.partition_point(|(a, _)| *a < ip);
            targets.extend(
                pairs[start..]
                    .iter()
                    .take_while(|(a, _)| *a == ip)
                    .map(|(_, target)| target.clone()),
            );
        }
        let name = reverse_name(ip);
        let key = name.as_wire();
        let entry = if targets.is_empty() {
            None
        } else {
            let mut records = Records::default();
            records.extra().ptr = targets;
            records.normalize();
            self.build_entry(builder, key, PTR_OWNER, &records)
        };
        // Who holds the name now, and whether it holds this very entry.
        let held = self.slot(key).map(|held| {
            let same = entry.as_ref().is_some_and(|e| held == e);
            (held.owner(), same)
        });
        match (held, entry) {
            (Some((PTR_OWNER, _)), None) => self.release(key, changes),
            (Some((PTR_OWNER, false)) | None, Some(entry)) => {
                self.put(&entry);
                changes.push(Change::Upsert(entry));
            }
            (Some((PTR_OWNER, true)), Some(_)) | (Some(_) | None, None) => {}
            (Some(_), Some(_)) => {
                tracing::warn!(%name, "a PTR name is also a name of a service in an overlapping zone; the service's name is served");
            }
        }
    }

    fn slot(&self, key: &[u8]) -> Option<&NameEntry> {
        self.names.get(key)
    }

    /// Inserts or replaces the entry of a name.
    fn put(&mut self, entry: &NameEntry) {
        self.names.insert(entry.clone());
    }

    /// Adds a name new to a unit, unless another unit owns it; then the
    /// unit waits for it.
    fn claim(&mut self, entry: NameEntry, id: u32, changes: &mut Vec<Change>) -> Option<NameEntry> {
        if self.slot(entry.key()).is_some() {
            let waiting = self.contested.entry(entry.key().into()).or_default();
            if !waiting.contains(&id) {
                waiting.push(id);
            }
            let name = name_from_key(entry.key());
            tracing::warn!(%name, "two objects give the same name (overlapping zones?); the first keeps it");
            return None;
        }
        self.put(&entry);
        changes.push(Change::Upsert(entry.clone()));
        Some(entry)
    }

    /// Removes a name, and wakes the units waiting for it.
    fn release(&mut self, key: &[u8], changes: &mut Vec<Change>) {
        if self.names.remove(key).is_some() {
            changes.push(Change::Remove(key.into()));
        }
        if let Some(waiting) = self.contested.remove(key) {
            for id in waiting {
                if let Some(unit) = self.units.get(id as usize).and_then(|u| u.unit.clone()) {
                    self.dirty_units.insert(unit);
                }
            }
        }
    }

    // ---- what each unit contributes -------------------------------------

    fn unit_output(&self, unit: &Unit) -> Computed {
        let mut out = UnitOutput::default();
        match unit {
            Unit::Zone => self.zone_records(&mut out),
            Unit::Service(key) => {
                if let Some(service) = self.services.get(key) {
                    let slices: Vec<&SliceModel> = self
                        .slices_by_service
                        .get(key)
                        .into_iter()
                        .flatten()
                        .filter_map(|name| {
                            self.slices
                                .get(&ObjectKey::new(key.namespace.clone(), name.clone()))
                        })
                        .collect();
                    // Sized up front: a big service must not rehash as it grows.
                    let endpoints: usize = slices.iter().map(|s| s.endpoints.len()).sum();
                    let zones = self.settings.zones.len();
                    out.names.reserve((endpoints + 8) * zones);
                    out.ptrs.reserve((endpoints + 2) * zones);
                    self.service_records(service, &mut out);
                    for slice in slices {
                        self.slice_records(service, slice, &mut out);
                    }
                }
            }
            Unit::Namespace(name) => {
                if self.namespaces.contains(name) || self.services_per_namespace.contains_key(name)
                {
                    for zone in &self.settings.zones {
                        namespace_names(name, zone, &mut out);
                    }
                }
            }
        }
        out.finish()
    }

    fn zone_records(&self, out: &mut UnitOutput) {
        for zone in &self.settings.zones {
            for label in [&b"svc"[..], b"pod"] {
                if let Ok(name) = zone.prepend_label(label) {
                    out.at(&name);
                }
            }
            if let Ok(name) = zone.prepend_label(b"dns-version") {
                out.at(&name).extra().txt = Some(DNS_SCHEMA_VERSION.as_bytes().into());
            }
            let ns_ips = self.name_server_ips();
            if !ns_ips.is_empty()
                && let Ok(dns) = zone.prepend_label(b"dns")
                && let Ok(ns) = dns.prepend_label(b"ns")
            {
                out.at(&dns);
                let records = out.at(&ns);
                for ip in ns_ips {
                    records.add_ip(ip);
                }
            }
        }
    }

    fn service_records(&self, service: &ServiceModel, out: &mut UnitOutput) {
        let key = &service.key;
        for zone in &self.settings.zones {
            let Some(base) = service_name_in(key, zone) else {
                tracing::debug!(service = %key, "service name is not a valid DNS name; skipped");
                continue;
            };
            match &service.kind {
                ServiceKind::ExternalName(target) => match NameBuf::from_text(target) {
                    Ok(target) => {
                        out.at(&base).extra().cname = Some(target.to_lowercase().as_wire().into());
                    }
                    Err(error) => {
                        tracing::debug!(service = %key, %error, "externalName is not a valid DNS name; skipped");
                    }
                },
                ServiceKind::ClusterIp(ips) => {
                    let base_records = out.at(&base);
                    for ip in ips {
                        base_records.add_ip(*ip);
                    }
                    for port in &service.ports {
                        let srv = SrvRecord {
                            port: port.port,
                            target: base.as_wire().into(),
                            addrs: ips.clone(),
                        };
                        add_srv(out, &base, &port.name, &port.protocol, srv);
                    }
                    if self.settings.reverse_zones {
                        for ip in ips {
                            out.ptr(*ip, &base);
                        }
                    }
                }
                ServiceKind::Headless => {}
            }
        }
    }

    /// A slice's part of its service: endpoint names and PTRs for any
    /// service, and for a headless one also the service's A/AAAA and SRV sets.
    fn slice_records(&self, service: &ServiceModel, slice: &SliceModel, out: &mut UnitOutput) {
        let headless = match service.kind {
            ServiceKind::Headless => true,
            ServiceKind::ClusterIp(_) => false,
            ServiceKind::ExternalName(_) => return,
        };
        for zone in &self.settings.zones {
            if let Some(base) = service_name_in(&service.key, zone) {
                self.endpoint_records(service, slice, &base, headless, out);
            }
        }
    }

    fn endpoint_records(
        &self,
        service: &ServiceModel,
        slice: &SliceModel,
        base: &NameBuf,
        headless: bool,
        out: &mut UnitOutput,
    ) {
        // `_port._proto.<svc>` names for this slice's ports, once per slice.
        let port_names: Vec<(u16, Option<NameBuf>)> = if headless {
            slice
                .ports
                .iter()
                .map(|p| (p.port, srv_name(out, base, &p.name, &p.protocol)))
                .collect()
        } else {
            Vec::new()
        };
        for endpoint in &slice.endpoints {
            if !endpoint.ready && !service.publish_not_ready_addresses {
                continue;
            }
            for &ip in &endpoint.addresses {
                let label = match (&endpoint.hostname, &endpoint.pod_name) {
                    (Some(hostname), _) => hostname.to_ascii_lowercase(),
                    (None, Some(pod)) if self.settings.endpoint_pod_names => {
                        pod.to_ascii_lowercase()
                    }
                    _ => dashed_label(ip),
                };
                let Ok(endpoint_name) = base.prepend_label(label.as_bytes()) else {
                    tracing::debug!(service = %service.key, %label, "endpoint name is not a valid DNS label; skipped");
                    continue;
                };
                out.at(&endpoint_name).add_ip(ip);
                if self.settings.reverse_zones {
                    out.ptr(ip, &endpoint_name);
                }
                if headless {
                    out.at(base).add_ip(ip);
                    let target: Box<[u8]> = endpoint_name.as_wire().into();
                    for (port, port_name) in &port_names {
                        let srv = SrvRecord {
                            port: *port,
                            target: target.clone(),
                            addrs: vec![ip],
                        };
                        if let Some(port_name) = port_name {
                            out.at(port_name).extra().srv.push(srv.clone());
                        }
                        out.at(base).extra().srv.push(srv);
                    }
                }
            }
        }
    }

    // ---- encoding ----------------------------------------------------------

    /// Encodes a name's answers, one per type. A type whose answer cannot be
    /// encoded is left out with a warning; the name's other types still
    /// answer. Returns `None` for a name outside every zone.
    fn build_entry(
        &self,
        b: &mut AnswerBuilder,
        key: &[u8],
        owner: u32,
        records: &Records,
    ) -> Option<NameEntry> {
        let (name, _) = NameBuf::from_wire(key).ok()?;
        let (zone, _) = self.zones.find(&name)?;
        let ttl = self.settings.ttl;
        let mut answers: Vec<(u16, PreparedAnswer)> = Vec::new();
        let mut add = |types: &[u16], built: Result<PreparedAnswer, BuildError>| match built {
            Ok(answer) => {
                if let Some((last, others)) = types.split_last() {
                    answers.extend(others.iter().map(|t| (*t, answer.clone())));
                    answers.push((*last, answer));
                }
            }
            Err(error) => {
                tracing::warn!(name = %name, qtype = types[0], %error, "answer left out: it cannot be encoded");
            }
        };
        let empty = Extra::default();
        let extra = records.extra.as_deref().unwrap_or(&empty);
        if let Some(cname) = &extra.cname {
            let target = name_from_key(cname);
            b.reset(&name);
            let built = b
                .push(Owner::Question, ttl, Rdata::Cname(&target))
                .and_then(|()| b.take());
            add(&[rtype::A, rtype::AAAA, rtype::CNAME], built);
            return Some(NameEntry::new(key, zone, owner, answers));
        }
        // Addresses are sorted, IPv4 first.
        let v6_from = records.addrs.partition_point(IpAddr::is_ipv4);
        let (v4, v6) = records.addrs.split_at(v6_from);
        for (family, rr_type) in [(v4, rtype::A), (v6, rtype::AAAA)] {
            if family.is_empty() {
                continue;
            }
            b.reset(&name);
            let built = family
                .iter()
                .try_for_each(|ip| b.push(Owner::Question, ttl, address_rdata(*ip)))
                .and_then(|()| {
                    if family.len() > 1 {
                        b.rotate_answers();
                    }
                    b.take()
                });
            add(&[rr_type], built);
        }
        if !extra.srv.is_empty() {
            add(
                &[rtype::SRV],
                srv_answer_that_fits(b, &name, ttl, &extra.srv),
            );
        }
        if !extra.ptr.is_empty() {
            b.reset(&name);
            let built = extra
                .ptr
                .iter()
                .try_for_each(|target| {
                    b.push(Owner::Question, ttl, Rdata::Ptr(&name_from_key(target)))
                })
                .and_then(|()| b.take());
            add(&[rtype::PTR], built);
        }
        if let Some(txt) = &extra.txt {
            b.reset(&name);
            let built = b
                .push(Owner::Question, DNS_VERSION_TTL, Rdata::Txt(&[txt]))
                .and_then(|()| b.take());
            add(&[rtype::TXT], built);
        }
        Some(NameEntry::new(key, zone, owner, answers))
    }

    fn build_zones(&self, serial: u32) -> Zones {
        let mut apexes: Vec<(NameBuf, bool)> = self
            .settings
            .zones
            .iter()
            .map(|z| (z.to_lowercase(), true))
            .collect();
        apexes.extend(
            self.settings
                .reverse_authoritative
                .iter()
                .map(|z| (z.to_lowercase(), false)),
        );
        if self.settings.reverse_zones {
            for text in ["in-addr.arpa", "ip6.arpa"] {
                if let Ok(zone) = NameBuf::from_text(text) {
                    apexes.push((zone, false));
                }
            }
        }
        apexes.sort_by_key(|(zone, _)| std::cmp::Reverse(zone.wire_len()));
        let dns_ips = self.name_server_ips();
        let zones = apexes
            .into_iter()
            .filter_map(|(apex, cluster)| {
                match zone_answers(&apex, cluster, serial, &self.settings, &dns_ips) {
                    Ok(answers) => Some(answers),
                    Err(error) => {
                        tracing::error!(zone = %apex, %error, "zone answers cannot be encoded; zone not served");
                        None
                    }
                }
            })
            .collect();
        Zones { zones, serial }
    }
}

/// The Service of `slice`, if the slice has an endpoint at one of `own`.
fn fronted_by(slice: &SliceModel, own: &[IpAddr]) -> Option<ObjectKey> {
    let service = slice.service.as_ref()?;
    let fronts = slice
        .endpoints
        .iter()
        .any(|e| e.addresses.iter().any(|ip| own.contains(ip)));
    fronts.then(|| ObjectKey::new(slice.key.namespace.clone(), service.clone()))
}

fn next_serial(previous: u32) -> u32 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0);
    now.max(previous.wrapping_add(1))
}

fn address_rdata(ip: IpAddr) -> Rdata<'static> {
    match ip {
        IpAddr::V4(v4) => Rdata::A(v4),
        IpAddr::V6(v6) => Rdata::Aaaa(v6),
    }
}

/// Adds an SRV record to the bare service name and, for a named port, to
/// `_port._proto.<service>`.
fn add_srv(out: &mut UnitOutput, base: &NameBuf, port: &str, protocol: &str, srv: SrvRecord) {
    if let Some(port_name) = srv_name(out, base, port, protocol) {
        out.at(&port_name).extra().srv.push(srv.clone());
    }
    out.at(base).extra().srv.push(srv);
}

/// The `_port._proto.<service>` name of a named port (making
/// `_proto.<service>` exist between), or `None` for an unnamed port.
fn srv_name(out: &mut UnitOutput, base: &NameBuf, port: &str, protocol: &str) -> Option<NameBuf> {
    if port.is_empty() {
        return None;
    }
    let proto_label = format!("_{protocol}");
    let port_label = format!("_{}", port.to_ascii_lowercase());
    let proto_name = base.prepend_label(proto_label.as_bytes()).ok()?;
    let port_name = proto_name.prepend_label(port_label.as_bytes()).ok()?;
    out.at(&proto_name);
    Some(port_name)
}

/// `<ns>.svc.<zone>` and `<ns>.pod.<zone>` exist once a namespace does.
fn namespace_names(namespace: &str, zone: &NameBuf, out: &mut UnitOutput) {
    for label in [&b"svc"[..], b"pod"] {
        if let Ok(name) = zone
            .prepend_label(label)
            .and_then(|n| n.prepend_label(namespace.as_bytes()))
        {
            out.at(&name.to_lowercase());
        }
    }
}

fn service_name_in(key: &ObjectKey, zone: &NameBuf) -> Option<NameBuf> {
    let name = zone
        .prepend_label(b"svc")
        .and_then(|n| n.prepend_label(key.namespace.as_bytes()))
        .and_then(|n| n.prepend_label(key.name.as_bytes()))
        .ok()?;
    Some(name.to_lowercase())
}

fn name_from_key(key: &[u8]) -> NameBuf {
    NameBuf::from_wire(key)
        .map(|(name, _)| name)
        .unwrap_or(NameBuf::ROOT)
}

/// The SRV answer, cut down to fit a 64 KiB message if need be: first
/// without the additional section, then with fewer targets. SRV targets are
/// never compressed, so record sizes are known before encoding and the
/// answer is encoded once. Every other type of the name is served in full.
fn srv_answer_that_fits(
    b: &mut AnswerBuilder,
    name: &NameBuf,
    ttl: u32,
    records: &[SrvRecord],
) -> Result<PreparedAnswer, BuildError> {
    // Room for the tail: 64 KiB less header, question and an OPT record.
    let budget = kubewire_wire::max_records_len(name.wire_len() + 4);
    // Owner pointer (2) + fixed fields (10) + priority, weight, port (6) + target.
    let srv_len = |r: &SrvRecord| 18 + r.target.len();
    // Additional owners point at the literal targets: 2 + 10 + address.
    let glue_len = |r: &SrvRecord| {
        r.addrs
            .iter()
            .map(|ip| if ip.is_ipv4() { 16 } else { 28 })
            .sum::<usize>()
    };
    let full: usize = records.iter().map(|r| srv_len(r) + glue_len(r)).sum();
    if full <= budget {
        return srv_answer(b, name, ttl, records, true);
    }
    let mut used = 0usize;
    let count = records.iter().take_while(|r| {
        used += srv_len(r);
        used <= budget
    });
    let count = count.count().max(1);
    tracing::debug!(
        name = %name,
        targets = records.len(),
        kept = count,
        "SRV set too large for one DNS message; additional section dropped"
    );
    srv_answer(b, name, ttl, &records[..count], false)
}

/// The SRV answer: priority 0, weight `floor(100/N)`, and (with
/// `additional`) the targets' addresses in the additional section.
fn srv_answer(
    b: &mut AnswerBuilder,
    name: &NameBuf,
    ttl: u32,
    records: &[SrvRecord],
    additional: bool,
) -> Result<PreparedAnswer, BuildError> {
    let weight = (100 / records.len()) as u16;
    let targets: Vec<NameBuf> = records.iter().map(|r| name_from_key(&r.target)).collect();
    b.reset(name);
    for (record, target) in records.iter().zip(&targets) {
        b.push(
            Owner::Question,
            ttl,
            Rdata::Srv {
                priority: 0,
                weight,
                port: record.port,
                target,
            },
        )?;
    }
    if !additional {
        return b.take();
    }
    b.section(Section::Additional)?;
    let mut seen: BTreeSet<(&[u8], IpAddr)> = BTreeSet::new();
    for (record, target) in records.iter().zip(&targets) {
        for &ip in &record.addrs {
            if seen.insert((&record.target, ip)) {
                b.push(Owner::Name(target), ttl, address_rdata(ip))?;
            }
        }
    }
    b.take()
}

/// SOA, NS, NODATA, NXDOMAIN, SERVFAIL and pod templates for one zone.
fn zone_answers(
    apex: &NameBuf,
    cluster: bool,
    serial: u32,
    settings: &Settings,
    dns_ips: &[IpAddr],
) -> Result<ZoneAnswers, BuildError> {
    let ttl = settings.ttl;
    // As CoreDNS: the SOA's own TTL is capped at 300 s; its minimum is the TTL.
    let soa_ttl = ttl.min(300);
    let mname = apex
        .prepend_label(b"dns")
        .and_then(|n| n.prepend_label(b"ns"))
        .unwrap_or(*apex);
    let rname = apex.prepend_label(b"hostmaster").unwrap_or(*apex);
    let soa = Rdata::Soa {
        mname: &mname,
        rname: &rname,
        serial,
        refresh: 7200,
        retry: 1800,
        expire: 86400,
        minimum: ttl,
    };

    let mut b = AnswerBuilder::new(apex);
    b.push(Owner::Question, soa_ttl, soa)?;
    let soa_answer = b.finish()?;

    let mut b = AnswerBuilder::new(apex);
    b.push(Owner::Question, ttl, Rdata::Ns(&mname))?;
    if cluster {
        b.section(Section::Additional)?;
        for ip in dns_ips {
            b.push(Owner::Name(&mname), ttl, address_rdata(*ip))?;
        }
    }
    let ns_answer = b.finish()?;

    let negative = |rcode: Rcode| -> Result<PreparedAnswer, BuildError> {
        let mut b = AnswerBuilder::for_zone(apex);
        b.set_rcode(rcode);
        b.section(Section::Authority)?;
        b.push(Owner::Name(apex), soa_ttl, soa)?;
        b.finish()
    };

    let pod_templates = if cluster && settings.pod_mode != PodMode::Disabled {
        let mut a = AnswerBuilder::for_zone(apex);
        a.push(Owner::Question, ttl, Rdata::A(Ipv4Addr::UNSPECIFIED))?;
        let mut aaaa = AnswerBuilder::for_zone(apex);
        aaaa.push(Owner::Question, ttl, Rdata::Aaaa(Ipv6Addr::UNSPECIFIED))?;
        Some((a.finish()?, aaaa.finish()?))
    } else {
        None
    };
    Ok(ZoneAnswers {
        apex: *apex,
        cluster,
        authoritative: cluster || settings.reverse_authoritative.contains(apex),
        apex_answers: vec![(rtype::SOA, soa_answer), (rtype::NS, ns_answer)],
        nodata: negative(Rcode::NOERROR)?,
        nxdomain: negative(Rcode::NXDOMAIN)?,
        // As CoreDNS before its first sync: SERVFAIL with the zone SOA.
        servfail: negative(Rcode::SERVFAIL)?,
        pod_templates,
        pods_verified: settings.pod_mode == PodMode::Verified,
        fallthrough: settings.fallthrough.iter().any(|zone| apex.ends_with(zone)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ptr_sources_keep_every_unit_of_an_address_through_removals() {
        let v4: IpAddr = "10.0.0.1".parse().unwrap();
        let v6: IpAddr = "fd00::1".parse().unwrap();
        let mut sources = PtrSources::default();
        let ids = |s: &PtrSources, ip| {
            let mut ids: Vec<u32> = s.ids(ip).collect();
            ids.sort_unstable();
            ids
        };
        for ip in [v4, v6] {
            for id in [7, 3, 9] {
                sources.add(ip, id);
            }
            assert_eq!(ids(&sources, ip), [3, 7, 9]);
            // The first goes: another takes its place.
            sources.remove(ip, 7);
            assert_eq!(ids(&sources, ip), [3, 9]);
            // One not there changes nothing.
            sources.remove(ip, 42);
            assert_eq!(ids(&sources, ip), [3, 9]);
            sources.remove(ip, 3);
            sources.remove(ip, 9);
            assert!(ids(&sources, ip).is_empty());
        }
        assert!(sources.v4.is_empty() && sources.v6.is_empty() && sources.more.is_empty());
        // A later unit goes before the first.
        sources.add(v4, 1);
        sources.add(v4, 2);
        sources.remove(v4, 2);
        assert_eq!(ids(&sources, v4), [1]);
        assert!(sources.more.is_empty());
    }
}
