//! The record compiler: cluster objects in, pre-encoded name entries and
//! revisioned deltas out.
//!
//! Objects are grouped into *units*: a Service with its EndpointSlices, a
//! Pod, a Namespace, and the zone's own static names. Each unit contributes
//! record sets to a number of names; a name's entry is the merge of every
//! contribution to it (several Services on one IP give one PTR set).
//!
//! A change to an object marks its unit dirty. [`Compiler::take_delta`]
//! recomputes the dirty units, re-merges only the names whose contributions
//! changed, and emits `Upsert`/`Remove` for the entries that came out
//! different. Work is batched: a relist of 10k objects is one pass.

use crate::delta::{Change, Delta, Snapshot};
use crate::entry::{NameEntry, ZoneAnswers, Zones};
use crate::model::{Kind, Object, ObjectKey, PodModel, ServiceKind, ServiceModel, SliceModel};
use crate::settings::{PodMode, Settings};
use kubewire_wire::{
    AnswerBuilder, BuildError, NameBuf, Owner, PreparedAnswer, Rcode, Rdata, Section, dashed_label,
    reverse_name, rtype,
};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

type Map<K, V> = HashMap<K, V, ahash::RandomState>;
type Set<K> = HashSet<K, ahash::RandomState>;
/// A lowercase wire name.
type Key = Box<[u8]>;

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
    /// Replace every object of a kind (a relist). Applied as a diff: names
    /// that stay the same never disappear in between.
    Reset(Kind, Vec<Object>),
}

/// A group of objects whose records are computed together.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Unit {
    Zone,
    Service(ObjectKey),
    Pod(ObjectKey),
    Namespace(String),
}

/// One SRV record before weights are known.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct SrvRecord {
    port: u16,
    target: Key,
    v4: Vec<Ipv4Addr>,
    v6: Vec<Ipv6Addr>,
}

/// What a unit says about one name. An empty set still makes the name exist.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Records {
    a: Vec<Ipv4Addr>,
    aaaa: Vec<Ipv6Addr>,
    srv: Vec<SrvRecord>,
    ptr: Vec<Key>,
    cname: Option<Key>,
    txt: Option<Box<[u8]>>,
}

impl Records {
    fn add_ip(&mut self, ip: IpAddr) {
        match ip {
            IpAddr::V4(v4) => self.a.push(v4),
            IpAddr::V6(v6) => self.aaaa.push(v6),
        }
    }

    fn merge(&mut self, other: &Records) {
        self.a.extend_from_slice(&other.a);
        self.aaaa.extend_from_slice(&other.aaaa);
        self.srv.extend(other.srv.iter().cloned());
        self.ptr.extend(other.ptr.iter().cloned());
        if self.cname.is_none() {
            self.cname.clone_from(&other.cname);
        }
        if self.txt.is_none() {
            self.txt.clone_from(&other.txt);
        }
    }

    /// Sorts and de-duplicates, so that equal sets encode to equal bytes.
    fn normalize(&mut self) {
        self.a.sort_unstable();
        self.a.dedup();
        self.aaaa.sort_unstable();
        self.aaaa.dedup();
        self.ptr.sort_unstable();
        self.ptr.dedup();
        // The same endpoint in two slices gives the same SRV record twice.
        self.srv
            .sort_unstable_by(|x, y| (x.port, &x.target).cmp(&(y.port, &y.target)));
        self.srv.dedup_by(|later, kept| {
            if later.port == kept.port && later.target == kept.target {
                kept.v4.extend_from_slice(&later.v4);
                kept.v6.extend_from_slice(&later.v6);
                true
            } else {
                false
            }
        });
        for srv in &mut self.srv {
            srv.v4.sort_unstable();
            srv.v4.dedup();
            srv.v6.sort_unstable();
            srv.v6.dedup();
        }
    }
}

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
    services: Map<ObjectKey, ServiceModel>,
    slices: Map<ObjectKey, SliceModel>,
    /// Slice names per service (namespace, service name).
    slices_by_service: Map<ObjectKey, BTreeSet<String>>,
    pods: Map<ObjectKey, PodModel>,
    namespaces: Set<String>,

    /// Each unit's contributions, sorted by name.
    contributions: Map<Unit, Vec<(Key, Records)>>,
    /// Which units contribute to each name.
    contributors: Map<Key, Vec<Unit>>,
    entries: Map<Key, Arc<NameEntry>>,
    zones: Arc<Zones>,

    dirty_units: Set<Unit>,
    dirty_names: Set<Key>,
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
            settings,
            services: Map::default(),
            slices: Map::default(),
            slices_by_service: Map::default(),
            pods: Map::default(),
            namespaces: Set::default(),
            contributions: Map::default(),
            contributors: Map::default(),
            entries: Map::default(),
            zones: Arc::new(Zones::default()),
            dirty_units: Set::default(),
            dirty_names: Set::default(),
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
        self.settings = settings;
        self.dirty_units.insert(Unit::Zone);
        self.dirty_units
            .extend(self.services.keys().cloned().map(Unit::Service));
        self.dirty_units
            .extend(self.pods.keys().cloned().map(Unit::Pod));
        self.dirty_units
            .extend(self.namespaces.iter().cloned().map(Unit::Namespace));
        // Names whose zone vanished must be re-merged (and removed) too.
        self.dirty_names.extend(self.entries.keys().cloned());
        self.zones_dirty = true;
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
    pub fn entries(&self) -> impl Iterator<Item = &Arc<NameEntry>> {
        self.entries.values()
    }

    /// The number of compiled names.
    pub fn name_count(&self) -> usize {
        self.entries.len()
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
            ObjectChange::Reset(kind, objects) => {
                let keep: Set<ObjectKey> = objects.iter().map(Object::key).collect();
                let gone: Vec<ObjectKey> = match kind {
                    Kind::Service => self
                        .services
                        .keys()
                        .filter(|k| !keep.contains(*k))
                        .cloned()
                        .collect(),
                    Kind::Slice => self
                        .slices
                        .keys()
                        .filter(|k| !keep.contains(*k))
                        .cloned()
                        .collect(),
                    Kind::Pod => self
                        .pods
                        .keys()
                        .filter(|k| !keep.contains(*k))
                        .cloned()
                        .collect(),
                    Kind::Namespace => self
                        .namespaces
                        .iter()
                        .map(|n| ObjectKey::new("", n.clone()))
                        .filter(|k| !keep.contains(k))
                        .collect(),
                };
                for key in gone {
                    self.remove(kind, &key);
                }
                for object in objects {
                    self.upsert(object);
                }
            }
        }
    }

    fn upsert(&mut self, object: Object) {
        match object {
            Object::Service(service) => {
                let key = service.key.clone();
                if self.services.get(&key) != Some(&service) {
                    self.services.insert(key.clone(), service);
                    self.dirty_units.insert(Unit::Service(key.clone()));
                    if self.settings.dns_service.as_ref() == Some(&key) {
                        self.zones_dirty = true;
                    }
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
                if let Some(service) = &slice.service {
                    let service_key = ObjectKey::new(key.namespace.clone(), service.clone());
                    self.slices_by_service
                        .entry(service_key.clone())
                        .or_default()
                        .insert(key.name.clone());
                    self.dirty_units.insert(Unit::Service(service_key));
                }
                self.slices.insert(key, slice);
            }
            Object::Pod(pod) => {
                let key = pod.key.clone();
                if self.pods.get(&key) != Some(&pod) {
                    self.pods.insert(key.clone(), pod);
                    self.dirty_units.insert(Unit::Pod(key));
                }
            }
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
                    self.dirty_units.insert(Unit::Service(key.clone()));
                    if self.settings.dns_service.as_ref() == Some(key) {
                        self.zones_dirty = true;
                    }
                }
            }
            Kind::Slice => {
                if let Some(slice) = self.slices.remove(key)
                    && let Some(service) = slice.service
                {
                    self.unlink_slice(key, &service);
                }
            }
            Kind::Pod => {
                if self.pods.remove(key).is_some() {
                    self.dirty_units.insert(Unit::Pod(key.clone()));
                }
            }
            Kind::Namespace => {
                if self.namespaces.remove(&key.name) {
                    self.dirty_units.insert(Unit::Namespace(key.name.clone()));
                }
            }
        }
    }

    fn unlink_slice(&mut self, slice: &ObjectKey, service: &str) {
        let service_key = ObjectKey::new(slice.namespace.clone(), service);
        if let Some(set) = self.slices_by_service.get_mut(&service_key) {
            set.remove(&slice.name);
            if set.is_empty() {
                self.slices_by_service.remove(&service_key);
            }
        }
        self.dirty_units.insert(Unit::Service(service_key));
    }

    /// Compiles what changed since the last call into a delta, or returns
    /// `None` if no name, zone answer or sync state changed.
    pub fn take_delta(&mut self) -> Option<Delta> {
        let units: Vec<Unit> = self.dirty_units.drain().collect();
        for unit in units {
            self.recompute_unit(unit);
        }
        if self.zones_dirty || self.zones.zones.is_empty() {
            // Zone answers first: entries need the zone order.
            self.zones = Arc::new(self.build_zones(self.zones.serial));
        }
        let mut changes = Vec::new();
        let names: Vec<Key> = self.dirty_names.drain().collect();
        for name in names {
            self.recompute_name(name, &mut changes);
        }
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
        Some(Delta {
            revision: self.revision,
            changes,
            zones: Arc::clone(&self.zones),
            synced: self.synced,
        })
    }

    /// The whole current state, for a core that starts or falls behind.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            revision: self.revision,
            entries: self.entries.values().cloned().collect(),
            zones: Arc::clone(&self.zones),
            synced: self.synced_announced,
        }
    }

    fn recompute_unit(&mut self, unit: Unit) {
        let mut fresh = self.unit_records(&unit);
        fresh.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let old = self.contributions.remove(&unit).unwrap_or_default();
        // Names that left this unit lose it as a contributor.
        for (name, records) in &old {
            match fresh.binary_search_by(|(n, _)| n.cmp(name)) {
                Ok(i) if fresh[i].1 == *records => {}
                Ok(_) => {
                    self.dirty_names.insert(name.clone());
                }
                Err(_) => {
                    if let Some(list) = self.contributors.get_mut(name) {
                        list.retain(|u| *u != unit);
                        if list.is_empty() {
                            self.contributors.remove(name);
                        }
                    }
                    self.dirty_names.insert(name.clone());
                }
            }
        }
        for (name, _) in &fresh {
            if old.binary_search_by(|(n, _)| n.cmp(name)).is_err() {
                self.contributors
                    .entry(name.clone())
                    .or_default()
                    .push(unit.clone());
                self.dirty_names.insert(name.clone());
            }
        }
        if !fresh.is_empty() {
            self.contributions.insert(unit, fresh);
        }
    }

    fn recompute_name(&mut self, name: Key, changes: &mut Vec<Change>) {
        let merged = self.contributors.get(&name).map(|units| {
            let mut merged = Records::default();
            for unit in units {
                if let Some(list) = self.contributions.get(unit)
                    && let Ok(i) = list.binary_search_by(|(n, _)| n.cmp(&name))
                {
                    merged.merge(&list[i].1);
                }
            }
            merged.normalize();
            merged
        });
        let entry = merged.and_then(|records| match self.build_entry(&name, &records) {
            Ok(entry) => entry,
            Err(error) => {
                tracing::warn!(name = %kubewire_wire::name::to_text(&name), %error, "name left out: its answer cannot be encoded");
                None
            }
        });
        match entry {
            Some(entry) => {
                if self
                    .entries
                    .get(&name)
                    .map(|e| **e != entry)
                    .unwrap_or(true)
                {
                    let entry = Arc::new(entry);
                    self.entries.insert(name, Arc::clone(&entry));
                    changes.push(Change::Upsert(entry));
                }
            }
            None => {
                if self.entries.remove(&name).is_some() {
                    changes.push(Change::Remove(name));
                }
            }
        }
    }

    // ---- what each unit contributes -------------------------------------

    fn unit_records(&self, unit: &Unit) -> Vec<(Key, Records)> {
        let mut out: BTreeMap<NameBuf, Records> = BTreeMap::new();
        match unit {
            Unit::Zone => self.zone_records(&mut out),
            Unit::Service(key) => self.service_records(key, &mut out),
            Unit::Pod(key) => self.pod_records(key, &mut out),
            Unit::Namespace(name) => {
                for zone in &self.settings.zones {
                    namespace_names(name, zone, &mut out);
                }
            }
        }
        out.into_iter()
            .map(|(name, records)| (Box::from(name.as_wire()), records))
            .collect()
    }

    fn zone_records(&self, out: &mut BTreeMap<NameBuf, Records>) {
        for zone in &self.settings.zones {
            for label in [&b"svc"[..], b"pod"] {
                if let Ok(name) = zone.prepend_label(label) {
                    out.entry(name).or_default();
                }
            }
            if let Ok(name) = zone.prepend_label(b"dns-version") {
                out.entry(name).or_default().txt = Some(DNS_SCHEMA_VERSION.as_bytes().into());
            }
        }
    }

    fn service_records(&self, key: &ObjectKey, out: &mut BTreeMap<NameBuf, Records>) {
        let Some(service) = self.services.get(key) else {
            return;
        };
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
        for zone in &self.settings.zones {
            namespace_names(&key.namespace, zone, out);
            let Some(base) = service_name(key, zone) else {
                tracing::debug!(service = %key, "service name is not a valid DNS name; skipped");
                continue;
            };
            match &service.kind {
                ServiceKind::ExternalName(target) => match NameBuf::from_text(target) {
                    Ok(target) => {
                        out.entry(base).or_default().cname =
                            Some(target.to_lowercase().as_wire().into());
                    }
                    Err(error) => {
                        tracing::debug!(service = %key, %error, "externalName is not a valid DNS name; skipped");
                    }
                },
                ServiceKind::ClusterIp(ips) => {
                    let base_records = out.entry(base).or_default();
                    for ip in ips {
                        base_records.add_ip(*ip);
                    }
                    let (v4, v6) = split_families(ips);
                    for port in &service.ports {
                        let srv = SrvRecord {
                            port: port.port,
                            target: base.as_wire().into(),
                            v4: v4.clone(),
                            v6: v6.clone(),
                        };
                        add_srv(out, &base, &port.name, &port.protocol, srv);
                    }
                    if self.settings.reverse_zones {
                        for ip in ips {
                            out.entry(reverse_name(*ip))
                                .or_default()
                                .ptr
                                .push(base.as_wire().into());
                        }
                    }
                    self.endpoint_records(service, &slices, &base, false, out);
                }
                ServiceKind::Headless => self.endpoint_records(service, &slices, &base, true, out),
            }
            if self.settings.dns_service.as_ref() == Some(key)
                && let ServiceKind::ClusterIp(ips) = &service.kind
                && let Ok(dns) = zone.prepend_label(b"dns")
                && let Ok(ns) = dns.prepend_label(b"ns")
            {
                out.entry(dns).or_default();
                let ns_records = out.entry(ns).or_default();
                for ip in ips {
                    ns_records.add_ip(*ip);
                }
            }
        }
    }

    /// Endpoint names and PTRs for any service; for a headless one also the
    /// service's own A/AAAA and SRV sets.
    fn endpoint_records(
        &self,
        service: &ServiceModel,
        slices: &[&SliceModel],
        base: &NameBuf,
        headless: bool,
        out: &mut BTreeMap<NameBuf, Records>,
    ) {
        for slice in slices {
            for endpoint in &slice.endpoints {
                if !endpoint.ready && !service.publish_not_ready_addresses {
                    continue;
                }
                for &ip in &endpoint.addresses {
                    let label = match (&endpoint.hostname, &endpoint.pod_name) {
                        (Some(hostname), _) => hostname.clone(),
                        (None, Some(pod)) if self.settings.endpoint_pod_names => pod.clone(),
                        _ => dashed_label(ip),
                    };
                    let Ok(endpoint_name) =
                        base.prepend_label(label.to_ascii_lowercase().as_bytes())
                    else {
                        tracing::debug!(service = %service.key, %label, "endpoint name is not a valid DNS label; skipped");
                        continue;
                    };
                    out.entry(endpoint_name).or_default().add_ip(ip);
                    if self.settings.reverse_zones {
                        out.entry(reverse_name(ip))
                            .or_default()
                            .ptr
                            .push(endpoint_name.as_wire().into());
                    }
                    if headless {
                        out.entry(*base).or_default().add_ip(ip);
                        let (v4, v6) = split_families(&[ip]);
                        for port in &slice.ports {
                            let srv = SrvRecord {
                                port: port.port,
                                target: endpoint_name.as_wire().into(),
                                v4: v4.clone(),
                                v6: v6.clone(),
                            };
                            add_srv(out, base, &port.name, &port.protocol, srv);
                        }
                    }
                }
            }
        }
    }

    fn pod_records(&self, key: &ObjectKey, out: &mut BTreeMap<NameBuf, Records>) {
        if self.settings.pod_mode != PodMode::Verified {
            return;
        }
        let Some(pod) = self.pods.get(key) else {
            return;
        };
        // Finished pods no longer hold their IPs.
        if matches!(pod.phase.as_str(), "Succeeded" | "Failed" | "Unknown") {
            return;
        }
        for zone in &self.settings.zones {
            for &ip in &pod.ips {
                if let Some(name) = pod_name(&key.namespace, ip, zone) {
                    out.entry(name).or_default().add_ip(ip);
                }
            }
        }
    }

    // ---- encoding ----------------------------------------------------------

    fn build_entry(&self, key: &[u8], records: &Records) -> Result<Option<NameEntry>, BuildError> {
        let Ok((name, _)) = NameBuf::from_wire(key) else {
            return Ok(None);
        };
        let Some((zone, _)) = self.zones.find(&name) else {
            return Ok(None);
        };
        let ttl = self.settings.ttl;
        let mut answers: Vec<(u16, PreparedAnswer)> = Vec::new();
        if let Some(cname) = &records.cname {
            let target = name_from_key(cname);
            let mut b = AnswerBuilder::new(&name);
            b.push(Owner::Question, ttl, Rdata::Cname(&target))?;
            let answer = b.finish()?;
            answers.push((rtype::A, answer.clone()));
            answers.push((rtype::AAAA, answer.clone()));
            answers.push((rtype::CNAME, answer));
            return Ok(Some(NameEntry::new(key, zone, answers)));
        }
        if !records.a.is_empty() {
            let mut b = AnswerBuilder::new(&name);
            for ip in &records.a {
                b.push(Owner::Question, ttl, Rdata::A(*ip))?;
            }
            if records.a.len() > 1 {
                b.rotate_answers();
            }
            answers.push((rtype::A, b.finish()?));
        }
        if !records.aaaa.is_empty() {
            let mut b = AnswerBuilder::new(&name);
            for ip in &records.aaaa {
                b.push(Owner::Question, ttl, Rdata::Aaaa(*ip))?;
            }
            if records.aaaa.len() > 1 {
                b.rotate_answers();
            }
            answers.push((rtype::AAAA, b.finish()?));
        }
        if !records.srv.is_empty() {
            answers.push((rtype::SRV, srv_answer(&name, ttl, &records.srv)?));
        }
        if !records.ptr.is_empty() {
            let mut b = AnswerBuilder::new(&name);
            for target in &records.ptr {
                b.push(Owner::Question, ttl, Rdata::Ptr(&name_from_key(target)))?;
            }
            answers.push((rtype::PTR, b.finish()?));
        }
        if let Some(txt) = &records.txt {
            let mut b = AnswerBuilder::new(&name);
            b.push(Owner::Question, DNS_VERSION_TTL, Rdata::Txt(&[txt]))?;
            answers.push((rtype::TXT, b.finish()?));
        }
        Ok(Some(NameEntry::new(key, zone, answers)))
    }

    fn build_zones(&self, serial: u32) -> Zones {
        let mut apexes: Vec<(NameBuf, bool)> = self
            .settings
            .zones
            .iter()
            .map(|z| (z.to_lowercase(), true))
            .collect();
        if self.settings.reverse_zones {
            for text in ["in-addr.arpa", "ip6.arpa"] {
                if let Ok(zone) = NameBuf::from_text(text) {
                    apexes.push((zone, false));
                }
            }
        }
        apexes.sort_by_key(|(zone, _)| std::cmp::Reverse(zone.wire_len()));
        let dns_ips: Vec<IpAddr> = self
            .settings
            .dns_service
            .as_ref()
            .and_then(|key| self.services.get(key))
            .map(|service| match &service.kind {
                ServiceKind::ClusterIp(ips) => ips.clone(),
                _ => Vec::new(),
            })
            .unwrap_or_default();
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

fn next_serial(previous: u32) -> u32 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0);
    now.max(previous.wrapping_add(1))
}

fn split_families(ips: &[IpAddr]) -> (Vec<Ipv4Addr>, Vec<Ipv6Addr>) {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for ip in ips {
        match ip {
            IpAddr::V4(ip) => v4.push(*ip),
            IpAddr::V6(ip) => v6.push(*ip),
        }
    }
    (v4, v6)
}

/// Adds an SRV record to the bare service name and, for a named port, to
/// `_port._proto.<service>` (with `_proto.<service>` existing between).
fn add_srv(
    out: &mut BTreeMap<NameBuf, Records>,
    base: &NameBuf,
    port: &str,
    protocol: &str,
    srv: SrvRecord,
) {
    if !port.is_empty() {
        let proto_label = format!("_{protocol}");
        let port_label = format!("_{}", port.to_ascii_lowercase());
        if let Ok(proto_name) = base.prepend_label(proto_label.as_bytes())
            && let Ok(port_name) = proto_name.prepend_label(port_label.as_bytes())
        {
            out.entry(proto_name).or_default();
            out.entry(port_name).or_default().srv.push(srv.clone());
        }
    }
    out.entry(*base).or_default().srv.push(srv);
}

/// `<ns>.svc.<zone>` and `<ns>.pod.<zone>` exist once a namespace does.
fn namespace_names(namespace: &str, zone: &NameBuf, out: &mut BTreeMap<NameBuf, Records>) {
    for label in [&b"svc"[..], b"pod"] {
        if let Ok(name) = zone
            .prepend_label(label)
            .and_then(|n| n.prepend_label(namespace.as_bytes()))
        {
            out.entry(name.to_lowercase()).or_default();
        }
    }
}

fn service_name(key: &ObjectKey, zone: &NameBuf) -> Option<NameBuf> {
    let name = zone
        .prepend_label(b"svc")
        .and_then(|n| n.prepend_label(key.namespace.as_bytes()))
        .and_then(|n| n.prepend_label(key.name.as_bytes()))
        .ok()?;
    Some(name.to_lowercase())
}

fn pod_name(namespace: &str, ip: IpAddr, zone: &NameBuf) -> Option<NameBuf> {
    zone.prepend_label(b"pod")
        .and_then(|n| n.prepend_label(namespace.as_bytes()))
        .and_then(|n| n.prepend_label(dashed_label(ip).as_bytes()))
        .ok()
        .map(|n| n.to_lowercase())
}

fn name_from_key(key: &[u8]) -> NameBuf {
    NameBuf::from_wire(key)
        .map(|(name, _)| name)
        .unwrap_or(NameBuf::ROOT)
}

/// The SRV answer: priority 0, weight `floor(100/N)`, and the targets'
/// addresses in the additional section.
fn srv_answer(
    name: &NameBuf,
    ttl: u32,
    records: &[SrvRecord],
) -> Result<PreparedAnswer, BuildError> {
    let weight = (100 / records.len()) as u16;
    let targets: Vec<NameBuf> = records.iter().map(|r| name_from_key(&r.target)).collect();
    let mut b = AnswerBuilder::new(name);
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
    b.section(Section::Additional)?;
    let mut seen: BTreeSet<(&[u8], IpAddr)> = BTreeSet::new();
    for (record, target) in records.iter().zip(&targets) {
        let ips = record
            .v4
            .iter()
            .map(|ip| IpAddr::V4(*ip))
            .chain(record.v6.iter().map(|ip| IpAddr::V6(*ip)));
        for ip in ips {
            if !seen.insert((&record.target, ip)) {
                continue;
            }
            let rdata = match ip {
                IpAddr::V4(v4) => Rdata::A(v4),
                IpAddr::V6(v6) => Rdata::Aaaa(v6),
            };
            b.push(Owner::Name(target), ttl, rdata)?;
        }
    }
    b.finish()
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
            let rdata = match ip {
                IpAddr::V4(v4) => Rdata::A(*v4),
                IpAddr::V6(v6) => Rdata::Aaaa(*v6),
            };
            b.push(Owner::Name(&mname), ttl, rdata)?;
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
    let mut servfail = AnswerBuilder::for_zone(apex);
    servfail.set_rcode(Rcode::SERVFAIL).set_authoritative(false);

    let pod_templates = if cluster && settings.pod_mode == PodMode::Insecure {
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
        apex_answers: vec![(rtype::SOA, soa_answer), (rtype::NS, ns_answer)],
        nodata: negative(Rcode::NOERROR)?,
        nxdomain: negative(Rcode::NXDOMAIN)?,
        servfail: servfail.finish()?,
        pod_templates,
    })
}
