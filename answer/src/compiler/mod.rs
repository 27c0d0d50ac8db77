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

use crate::entry::{NameEntry, TableKey, ZoneAnswers, Zones};
use crate::model::{
    EndpointModel, ExternalAddresses, ImportKind, ImportModel, Kind, ListedKeys, Object, ObjectKey,
    PortModel, ServiceKind, ServiceModel, SliceModel,
};
use crate::names::NameIndex;
use crate::pods::PodIndex;
use crate::update::{Change, Delta, Snapshot};

use crate::keyed::{HasKey, KeyedTable};
use crate::settings::{ExternalZones, PodMode, Settings};
use hashbrown::HashTable;
use kubewire_wire::{
    AnswerBuilder, BuildError, NameBuf, Owner, PreparedAnswer, Rcode, Rdata, Section, dashed_label,
    reverse_name, rtype,
};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

mod encode;
pub mod explain;
mod index;
mod links;
mod ptr;
mod shared;
mod units;

use index::CompilerNames;
pub use index::{CompilerMemory, REINDEX_AFTER_CHANGES};
use links::{SliceLists, link_slice, unlink_slice_from};
use ptr::*;
use shared::Shared;
use units::*;

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
    keys.filter(|k| !keep.contains(&(&*k.namespace, k.name.as_str())))
        .cloned()
        .collect()
}

impl HasKey for ServiceModel {
    type Key = ObjectKey;
    fn key(&self) -> &ObjectKey {
        &self.key
    }
}

impl HasKey for ImportModel {
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
    /// A ServiceImport with its EndpointSlices, in the multicluster zones.
    Import(ObjectKey),
}

/// What the compiler remembers of a unit between passes.
#[derive(Debug, Default)]
struct UnitState {
    /// `None` while the id is free.
    unit: Option<Unit>,
    /// The entries it owns, sorted by key, each with a hash of the record
    /// set it was encoded from (one block, not two: a unit has a few names).
    names: Box<[(NameEntry, u64)]>,
    /// The addresses it gives PTR targets for, sorted.
    ptr_ips: Box<[IpAddr]>,
    /// By address: a hash of the targets this unit gives it.
    ptr_hashes: Box<[u64]>,
    /// The revision whose delta last changed one of its names (0: none
    /// yet), for `explain`.
    changed_revision: u64,
}

// A slot a unit: 10k Services are 10k of these.
const _: () = assert!(size_of::<UnitState>() == 104);

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
    /// ServiceImports.
    pub imports: usize,
}

/// The compiler. Owned by the control-plane thread.
#[derive(Debug)]
pub struct Compiler {
    settings: Settings,
    /// Boxed, as are slices and imports: see `HasKey for Box`.
    services: KeyedTable<Box<ServiceModel>>,
    slices: KeyedTable<Box<SliceModel>>,
    /// Slices with an endpoint at one of our own addresses, and their
    /// Service: what answers for `ns.dns.<zone>`.
    fronting: BTreeMap<ObjectKey, ObjectKey>,
    /// Slice names by service, sorted (nearly always one: a leaf of a
    /// B-tree set cost 280 bytes a service).
    slices_by_service: SliceLists,
    /// ServiceImports (`multicluster`).
    imports: KeyedTable<Box<ImportModel>>,
    /// Slice names by ServiceImport, sorted.
    slices_by_import: SliceLists,
    /// The port lists of Services, slices and imports, each held once.
    port_lists: Shared<[PortModel]>,
    /// The namespaces of their keys, each held once.
    namespace_names: Shared<str>,
    /// Services per namespace: `<ns>.svc` exists while any does.
    services_per_namespace: Map<String, u32>,
    /// Pods, by address (`verified` pod mode).
    pods: PodIndex,
    namespaces: Set<String>,

    /// Unit ids, found by the unit each `units` slot holds (a map from
    /// `Unit` would hold every unit's key a second time). Units are
    /// numbered so that names and PTR sources refer to them by a `u32`.
    unit_ids: HashTable<u32>,
    unit_hasher: ahash::RandomState,
    /// By unit id.
    units: Vec<UnitState>,
    free_ids: Vec<u32>,
    /// Every compiled name, by its [`TableKey`]; each entry names its owner (a unit
    /// id, or [`PTR_OWNER`]). Once synced, held as the cores hold theirs:
    /// the index of every name they share (as it was when the delta that
    /// shipped it was made), and the changes since.
    names: CompilerNames,
    /// Name changes shipped since the index was made: each core holds
    /// them over it.
    changed_since_index: usize,
    /// The fewest changes that earn a new index (the rule is `reindex`'s,
    /// in `index.rs`).
    reindex_after: usize,
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
            pods: {
                let mut pods = PodIndex::new(settings.pod_mode == PodMode::Verified);
                pods.set_autopath(settings.autopath);
                pods
            },
            settings,
            services: KeyedTable::default(),
            slices: KeyedTable::default(),
            fronting: BTreeMap::new(),
            slices_by_service: Map::default(),
            imports: KeyedTable::default(),
            slices_by_import: Map::default(),
            port_lists: Shared::default(),
            namespace_names: Shared::default(),
            services_per_namespace: Map::default(),
            namespaces: Set::default(),
            unit_ids: HashTable::new(),
            unit_hasher: ahash::RandomState::new(),
            units: Vec::new(),
            free_ids: Vec::new(),
            names: CompilerNames::default(),
            changed_since_index: 0,
            reindex_after: REINDEX_AFTER_CHANGES,
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
    /// Returns whether the slices must be given again: endpoints' pod names
    /// are kept only while `endpoint_pod_names` is on, so turning it on
    /// needs them relisted.
    #[must_use = "turning endpoint_pod_names on needs the slices relisted"]
    pub fn set_settings(&mut self, settings: Settings) -> bool {
        if settings == self.settings {
            return false;
        }
        let relist_slices = settings.endpoint_pod_names && !self.settings.endpoint_pod_names;
        // The cores' pod set appears or goes whole.
        self.pods
            .set_verified(settings.pod_mode == PodMode::Verified);
        self.pods.set_autopath(settings.autopath);
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
            .extend(self.imports.keys().cloned().map(Unit::Import));
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
        relist_slices
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
            imports: self.imports.len(),
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
                    Kind::Import => unlisted(self.imports.keys(), &keep),
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
            Object::Service(mut service) => {
                // First, so that the keys the units keep share it too.
                self.namespace_names.share(&mut service.key.namespace);
                let key = service.key.clone();
                if self.services.get(&key).map(|held| &**held) != Some(&service) {
                    self.port_lists.share(&mut service.ports);
                    if self.services.insert(Box::new(service)).is_none() {
                        self.count_service(&key.namespace, true);
                    }
                    if self.is_name_server(&key) {
                        self.name_servers_changed();
                    }
                    self.dirty_units.insert(Unit::Service(key));
                }
            }
            Object::Slice(mut slice) => {
                self.namespace_names.share(&mut slice.key.namespace);
                if !self.settings.endpoint_pod_names {
                    // Read only for `endpoint_pod_names`, and a cluster
                    // names a pod for nearly every endpoint: a block each.
                    // Turning the setting on needs the slices again
                    // ([`Compiler::set_settings`]).
                    for endpoint in &mut slice.endpoints {
                        endpoint.drop_pod_name();
                    }
                }
                let key = slice.key.clone();
                let old = self.slices.get(&key).map(|held| &**held);
                if old == Some(&slice) {
                    return;
                }
                self.port_lists.share(&mut slice.ports);
                let old_service = old.and_then(|s| s.service.clone());
                let old_import = old.and_then(|s| s.import.as_ref().map(|l| l.service.clone()));
                let new_import = slice.import.as_ref().map(|l| &l.service);
                if old_service != slice.service
                    && let Some(old_service) = old_service
                {
                    self.unlink_slice(&key, &old_service);
                }
                if old_import.as_ref() != new_import
                    && let Some(old_import) = old_import
                {
                    self.unlink_imported_slice(&key, &old_import);
                }
                self.note_fronting(&slice);
                if let Some(service) = &slice.service {
                    let service_key = ObjectKey::new(key.namespace.clone(), service.clone());
                    link_slice(&mut self.slices_by_service, &service_key, &key.name);
                    self.dirty_units.insert(Unit::Service(service_key));
                }
                if let Some(import) = new_import {
                    let import_key = ObjectKey::new(key.namespace.clone(), import.clone());
                    link_slice(&mut self.slices_by_import, &import_key, &key.name);
                    self.dirty_units.insert(Unit::Import(import_key));
                }
                self.slices.insert(Box::new(slice));
            }
            Object::Import(mut import) => {
                self.namespace_names.share(&mut import.key.namespace);
                if self.imports.get(&import.key).map(|held| &**held) != Some(&import) {
                    self.port_lists.share(&mut import.ports);
                    self.dirty_units.insert(Unit::Import(import.key.clone()));
                    self.imports.insert(Box::new(import));
                }
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
                if let Some(slice) = self.slices.remove(key) {
                    if let Some(service) = slice.service {
                        self.unlink_slice(key, &service);
                    }
                    if let Some(link) = slice.import {
                        self.unlink_imported_slice(key, &link.service);
                    }
                }
            }
            Kind::Import => {
                if self.imports.remove(key).is_some() {
                    self.dirty_units.insert(Unit::Import(key.clone()));
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

    /// The cluster zones' name servers, as CoreDNS's `kubernetes` names
    /// them in the apex NS record: each Service that fronts our own pod
    /// addresses, with its cluster IPs (our own addresses, for a headless
    /// one); else the DNS Service, with its cluster IPs; else `ns.dns.<zone>`
    /// (`None`) with our own addresses. Each Service's NS target is
    /// `<svc>.<ns>.svc.<zone>`.
    fn name_servers(&self) -> Vec<(Option<&ObjectKey>, Vec<IpAddr>)> {
        let mut servers: Vec<(Option<&ObjectKey>, Vec<IpAddr>)> = Vec::new();
        for service in self.fronting.values() {
            if servers.iter().any(|(s, _)| *s == Some(service)) {
                continue;
            }
            let ips = match self.services.get(service).map(|s| &s.kind) {
                Some(ServiceKind::ClusterIp(cluster_ips)) => cluster_ips.clone(),
                Some(ServiceKind::Headless) => self.settings.own_ips.clone(),
                _ => continue,
            };
            if !ips.is_empty() {
                servers.push((Some(service), ips));
            }
        }
        if servers.is_empty()
            && let Some(key) = &self.settings.dns_service
            && let Some(ServiceKind::ClusterIp(cluster_ips)) =
                self.services.get(key).map(|s| &s.kind)
            && !cluster_ips.is_empty()
        {
            servers.push((Some(key), cluster_ips.clone()));
        }
        if servers.is_empty() && !self.settings.own_ips.is_empty() {
            servers.push((None, self.settings.own_ips.clone()));
        }
        for (_, ips) in &mut servers {
            ips.sort();
            ips.dedup();
        }
        servers
    }

    /// The addresses of `ns.dns.<zone>`: every name server's.
    fn name_server_ips(&self) -> Vec<IpAddr> {
        addresses_of(&self.name_servers())
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

    /// Autopath's clients with their namespace labels (none unless on).
    pub fn clients(&self) -> impl Iterator<Item = (IpAddr, &[u8])> {
        self.pods.labelled_clients()
    }

    /// Takes a slice from its service's list; the service's names change.
    fn unlink_slice(&mut self, slice: &ObjectKey, service: &str) {
        let service_key = ObjectKey::new(slice.namespace.clone(), service);
        unlink_slice_from(&mut self.slices_by_service, &service_key, &slice.name);
        self.dirty_units.insert(Unit::Service(service_key));
    }

    /// Takes a slice from its ServiceImport's list; the import's names change.
    fn unlink_imported_slice(&mut self, slice: &ObjectKey, import: &str) {
        let import_key = ObjectKey::new(slice.namespace.clone(), import);
        unlink_slice_from(&mut self.slices_by_import, &import_key, &slice.name);
        self.dirty_units.insert(Unit::Import(import_key));
    }

    /// Compiles what changed since the last call into a delta, or returns
    /// `None` if no name, zone answer or sync state changed.
    pub fn take_delta(&mut self) -> Option<Delta> {
        let mut zones_moved = false;
        if self.zones_dirty || self.zones.zones.is_empty() {
            // Zone answers first: entries need the zone order.
            let zones = Arc::new(self.build_zones(self.zones.serial));
            zones_moved = !zones.zones.iter().map(|z| &z.apex).eq(self
                .zones
                .zones
                .iter()
                .map(|z| &z.apex));
            self.zones = zones;
        }
        let mut changes = self.pods.take_changes();
        if zones_moved {
            self.forget_names(&mut changes);
        }
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
        let names = self.reindex(&changes, announce_sync);
        if announce_sync {
            self.shrink_after_sync();
        }
        Some(Delta {
            revision: self.revision,
            changes,
            names,
            zones: Arc::clone(&self.zones),
            synced: self.synced,
            created: std::time::Instant::now(),
        })
    }

    /// The whole current state, for a core that starts or falls behind.
    pub fn snapshot(&self) -> Snapshot {
        let names = if self.changed_since_index == 0 {
            Arc::clone(self.names.index())
        } else {
            NameIndex::new(self.names.merged())
        };
        Snapshot {
            revision: self.revision,
            names,
            pod_namespaces: self
                .pods
                .labels()
                .map(|(id, label)| (id, Arc::clone(label)))
                .collect(),
            pods: self.pods.addresses().collect(),
            clients: self.pods.clients().collect(),
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
        let changes_before = changes.len();
        let slot = &mut self.units[id as usize];
        let old_names = std::mem::take(&mut slot.names);
        let old_ips = std::mem::take(&mut slot.ptr_ips);
        let old_ptr_hashes = std::mem::take(&mut slot.ptr_hashes);

        // Both lists are sorted by name: walk them together. A name whose
        // record set hashes as before keeps its entry without being encoded
        // again, so one endpoint's change in a 1000-endpoint service encodes
        // a few names, not a thousand. (A 64-bit collision would keep a
        // stale answer until the name's next change: odds of 2^-64 a change.)
        let mut kept: Vec<(NameEntry, u64)> = Vec::with_capacity(fresh.names.len());
        let mut old_iter = old_names.into_vec().into_iter().peekable();
        for (name, records) in &fresh.names {
            while let Some((gone, _)) = old_iter.next_if(|(e, _)| e.table_key() < name.as_slice()) {
                self.release(gone.table_key(), changes);
            }
            let previous = old_iter.next_if(|(e, _)| e.table_key() == name.as_slice());
            let hash = self.name_hasher.hash_one(records);
            if let Some((entry, old_hash)) = &previous
                && *old_hash == hash
                && !self.reencode
            {
                kept.push((entry.clone(), hash));
                continue;
            }
            let built = TableKey::from_bytes(name)
                .and_then(|key| self.build_entry(builder, &key, id, records));
            let Some(entry) = built else {
                if let Some((previous, _)) = previous {
                    self.release(previous.table_key(), changes);
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
            kept.push((entry, hash));
        }
        for (gone, _) in old_iter {
            self.release(gone.table_key(), changes);
        }
        if changes.len() != changes_before {
            // The delta this pass makes gets the next revision.
            self.units[id as usize].changed_revision = self.revision + 1;
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
        // An address outside every reverse zone has no PTR name.
        let Some(table_key) = self.zones.table_key(&name) else {
            return;
        };
        let key = table_key.as_bytes();
        let entry = if targets.is_empty() {
            None
        } else {
            let mut records = Records::default();
            records.extra().ptr = targets;
            records.normalize();
            self.build_entry(builder, &table_key, PTR_OWNER, &records)
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

/// Every address of `servers`, sorted, once each.
fn addresses_of(servers: &[(Option<&ObjectKey>, Vec<IpAddr>)]) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = servers
        .iter()
        .flat_map(|(_, ips)| ips.iter().copied())
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

fn next_serial(previous: u32) -> u32 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0);
    now.max(previous.wrapping_add(1))
}
