//! The compiler's names: who holds each (claimed, released, forgotten
//! when the zones move), the index of every name that the cores share
//! (when the compiler makes a new one), and what the compiler holds, for
//! the memory report.

use super::{Compiler, UnitState};
use crate::entry::EntryBytes;
use crate::entry::NameEntry;
use crate::keyed::KeyedTable;
use crate::model::{
    Addresses, EndpointModel, EndpointNames, ExternalAddresses, ImportKind, ImportLink,
    ImportModel, ObjectKey, ServiceKind, ServiceModel, SliceModel,
};
use crate::names::{IndexedNames, NameIndex};
use crate::update::Change;
use kubewire_wire::NameBuf;
use std::net::IpAddr;
use std::sync::Arc;

/// The fewest name changes since the last index that earn a new one.
pub const REINDEX_AFTER_CHANGES: usize = 1024;

/// After the first sync, a new index once the names changed by this
/// fraction of the index (a sixteenth).
const REINDEX_FRACTION: usize = 16;

/// The compiler's names. While the first sync is under way they change
/// faster than an overlay pays for, so the compiler keeps a table of its
/// own and ships a copy of it as each index. The first synced index takes
/// that table whole, and from then on the compiler holds its names as the
/// cores do: that index, and the changes since (one table of every name
/// for the node, not two).
#[derive(Debug)]
pub(super) enum CompilerNames {
    /// Before the first synced index: every name, and the last index shipped.
    Syncing {
        table: KeyedTable<NameEntry>,
        index: Arc<NameIndex>,
    },
    /// From the first synced index on.
    Indexed(IndexedNames),
}

impl Default for CompilerNames {
    fn default() -> Self {
        CompilerNames::Syncing {
            table: KeyedTable::default(),
            index: Arc::default(),
        }
    }
}

impl CompilerNames {
    pub(super) fn get(&self, key: &[u8]) -> Option<&NameEntry> {
        match self {
            CompilerNames::Syncing { table, .. } => table.get(key),
            CompilerNames::Indexed(names) => names.get(key),
        }
    }

    /// Adds or replaces the entry of a name.
    pub(super) fn upsert(&mut self, entry: &NameEntry) {
        match self {
            CompilerNames::Syncing { table, .. } => {
                table.insert(entry.clone());
            }
            CompilerNames::Indexed(names) => names.upsert(entry),
        }
    }

    /// Adds the entry of a name not held yet; whether it was not.
    pub(super) fn insert_new(&mut self, entry: &NameEntry) -> bool {
        match self {
            CompilerNames::Syncing { table, .. } => table.insert_new(entry.clone()).is_ok(),
            CompilerNames::Indexed(names) => names.insert_new(entry),
        }
    }

    /// Removes the entry with this key; whether there was one.
    pub(super) fn remove(&mut self, key: &[u8]) -> bool {
        match self {
            CompilerNames::Syncing { table, .. } => table.remove(key).is_some(),
            CompilerNames::Indexed(names) => names.remove(key),
        }
    }

    pub(super) fn len(&self) -> usize {
        match self {
            CompilerNames::Syncing { table, .. } => table.len(),
            CompilerNames::Indexed(names) => names.len(),
        }
    }

    /// Every entry, in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &NameEntry> {
        let (own, indexed) = match self {
            CompilerNames::Syncing { table, .. } => (Some(table.iter()), None),
            CompilerNames::Indexed(names) => (None, Some(names.iter())),
        };
        own.into_iter()
            .flatten()
            .chain(indexed.into_iter().flatten())
    }

    /// The index last shipped.
    pub(super) fn index(&self) -> &Arc<NameIndex> {
        match self {
            CompilerNames::Syncing { index, .. } => index,
            CompilerNames::Indexed(names) => names.index(),
        }
    }

    /// Every name, in one table of its own.
    pub(super) fn merged(&self) -> KeyedTable<NameEntry> {
        match self {
            CompilerNames::Syncing { table, .. } => table.clone(),
            CompilerNames::Indexed(names) => names.merged(),
        }
    }

    /// Bytes the compiler holds beyond the index.
    pub(super) fn own_bytes(&self) -> usize {
        match self {
            CompilerNames::Syncing { table, .. } => table.allocation_size(),
            CompilerNames::Indexed(names) => names.own_bytes(),
        }
    }

    /// A new index of every name; with the first synced one, the compiler
    /// hands it its table and holds its names over it from then on.
    fn reindex(&mut self, first_synced: bool) -> Arc<NameIndex> {
        let index = match self {
            CompilerNames::Syncing { table, .. } if first_synced => {
                let mut table = std::mem::take(table);
                // The sync's removals left tombstones that grew the table;
                // the index keeps its buckets, so give it the fewest.
                table.shrink_to_fit();
                NameIndex::new(table)
            }
            CompilerNames::Syncing { table, index } => {
                *index = NameIndex::new(table.clone());
                return Arc::clone(index);
            }
            CompilerNames::Indexed(names) => NameIndex::new(names.merged()),
        };
        *self = CompilerNames::Indexed(IndexedNames::new(Arc::clone(&index)));
        index
    }
}

/// The compiler's names: who holds each, and letting go of them.
impl Compiler {
    pub(super) fn slot(&self, key: &[u8]) -> Option<&NameEntry> {
        self.names.get(key)
    }

    /// Inserts or replaces the entry of a name.
    pub(super) fn put(&mut self, entry: &NameEntry) {
        self.names.upsert(entry);
    }

    /// Adds a name new to a unit, unless another unit owns it; then the
    /// unit waits for it.
    pub(super) fn claim(
        &mut self,
        entry: NameEntry,
        id: u32,
        changes: &mut Vec<Change>,
    ) -> Option<NameEntry> {
        if !self.names.insert_new(&entry) {
            let waiting = self.contested.entry(entry.table_key().into()).or_default();
            if !waiting.contains(&id) {
                waiting.push(id);
            }
            let name = self
                .zones
                .name_of(entry.table_key())
                .unwrap_or(NameBuf::ROOT);
            tracing::warn!(%name, "two objects give the same name (overlapping zones?); the first keeps it");
            return None;
        }
        changes.push(Change::Upsert(entry.clone()));
        Some(entry)
    }

    /// Gives back what the first sync's growth left unused, keeping room
    /// for an eighth more: a cluster's units are nearly all there once it
    /// is synced, and their slots (104 bytes each) grew by doubling, so up
    /// to half of them were spare.
    pub(super) fn shrink_after_sync(&mut self) {
        let units = self.units.len();
        self.units.shrink_to(units + units / 8);
        self.free_ids.shrink_to_fit();
    }

    /// Removes every name, and what each unit remembers of its names, so
    /// that this pass makes every entry afresh. For a change of the zones'
    /// apexes or their order: a [`crate::TableKey`] holds its zone's index, so the
    /// same key may now stand for another name. (Only a settings change
    /// does this, and it has made every unit dirty and every entry
    /// re-encoded.) Cores get the removals and the new entries in one delta.
    pub(super) fn forget_names(&mut self, changes: &mut Vec<Change>) {
        let keys: Vec<Box<[u8]>> = self.names.iter().map(|e| e.table_key().into()).collect();
        for key in keys {
            self.release(&key, changes);
        }
        self.contested.clear();
        for slot in &mut self.units {
            slot.names = Box::default();
        }
    }

    /// Removes a name, and wakes the units waiting for it.
    pub(super) fn release(&mut self, key: &[u8], changes: &mut Vec<Change>) {
        if self.names.remove(key) {
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
}

/// Heap bytes the compiler holds, by part, from its own accounting (what
/// each part asked for; the allocator's headers and rounding are not
/// counted).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompilerMemory {
    /// Compiled names.
    pub names: usize,
    /// The compiled entries' blocks, shared with every core.
    pub entry_bytes: usize,
    /// The same blocks by part.
    pub entry_parts: EntryBytes,
    /// The compiler's own names over the index: the changes since it.
    pub table_bytes: usize,
    /// The index of every name that the cores share.
    pub index_bytes: usize,
    /// The compile units: each one's names, record hashes and PTR sources.
    pub unit_bytes: usize,
    /// The tables of Services, EndpointSlices and ServiceImports (slots,
    /// not the models they box), and the port lists and namespaces they
    /// share.
    pub model_table_bytes: usize,
    /// The models those tables box (their strings and vectors too), and
    /// the lists of slices by Service and by ServiceImport.
    pub model_bytes: usize,
}

impl Compiler {
    /// A new index of every name for the delta being made, when it is
    /// due: once the first sync is whole (so that every core starts from
    /// one index and no overlay), while syncing each time the names changed
    /// by as many as the index holds (a doubling: the sync copies each name
    /// about twice), and after that when they changed by a sixteenth of it,
    /// and at least `reindex_after`. A core's overlay stays that small, and
    /// a new index costs the control plane a copy of the table (pointers
    /// and reference counts, no hashing) that often.
    pub(super) fn reindex(
        &mut self,
        changes: &[Change],
        first_synced: bool,
    ) -> Option<Arc<NameIndex>> {
        self.changed_since_index += changes
            .iter()
            .filter(|change| matches!(change, Change::Upsert(_) | Change::Remove(_)))
            .count();
        let indexed = self.names.index().len();
        let due = if self.synced_announced {
            indexed / REINDEX_FRACTION
        } else {
            indexed
        };
        if !first_synced && self.changed_since_index <= due.max(self.reindex_after) {
            return None;
        }
        self.changed_since_index = 0;
        Some(self.names.reindex(first_synced))
    }

    /// Sets the fewest name changes that earn a new index (tests use 1, to
    /// index often; the default is [`REINDEX_AFTER_CHANGES`]).
    pub fn set_reindex_after(&mut self, changes: usize) {
        self.reindex_after = changes;
    }

    /// The index the cores share now.
    pub fn index(&self) -> &Arc<NameIndex> {
        self.names.index()
    }

    /// What the compiler holds, by part.
    pub fn memory(&self) -> CompilerMemory {
        let unit_bytes = self.units.capacity() * size_of::<UnitState>()
            + self.unit_ids.allocation_size()
            + self
                .units
                .iter()
                .map(|unit| {
                    unit.names.len() * size_of::<(crate::NameEntry, u64)>()
                        + unit.ptr_ips.len() * size_of::<IpAddr>()
                        + unit.ptr_hashes.len() * size_of::<u64>()
                })
                .sum::<usize>();
        let mut entry_parts = EntryBytes::default();
        for entry in self.names.iter() {
            entry_parts += entry.bytes_by_part();
        }
        CompilerMemory {
            names: self.names.len(),
            entry_bytes: entry_parts.block_header
                + entry_parts.key
                + entry_parts.answer_headers
                + entry_parts.records,
            entry_parts,
            table_bytes: self.names.own_bytes(),
            index_bytes: self.names.index().allocation_size(),
            unit_bytes,
            model_bytes: self
                .services
                .iter()
                .map(|s| service_bytes(s))
                .sum::<usize>()
                + self.slices.iter().map(|s| slice_bytes(s)).sum::<usize>()
                + self.imports.iter().map(|i| import_bytes(i)).sum::<usize>()
                + link_bytes(&self.slices_by_service)
                + link_bytes(&self.slices_by_import),
            model_table_bytes: self.services.allocation_size()
                + self.slices.allocation_size()
                + self.imports.allocation_size()
                + self.port_lists.heap_bytes()
                + self.namespace_names.heap_bytes(),
        }
    }
}

// What a model holds on the heap, by its own count (the allocator's
// rounding and headers are not counted). Namespaces and port lists are
// shared, and counted once with the tables.

fn service_bytes(service: &ServiceModel) -> usize {
    let kind = match &service.kind {
        ServiceKind::ClusterIp(ips) => ips.capacity() * size_of::<IpAddr>(),
        ServiceKind::Headless => 0,
        ServiceKind::ExternalName(target) => target.capacity(),
    };
    let external = service.external.as_ref().map_or(0, |external| {
        size_of::<ExternalAddresses>()
            + external.ips.capacity() * size_of::<IpAddr>()
            + external.hostnames.capacity() * size_of::<Box<str>>()
            + external.hostnames.iter().map(|h| h.len()).sum::<usize>()
    });
    size_of::<ServiceModel>() + service.key.name.capacity() + kind + external
}

fn slice_bytes(slice: &SliceModel) -> usize {
    let endpoints: usize = slice
        .endpoints
        .iter()
        .map(|endpoint| {
            let addresses = match &endpoint.addresses {
                Addresses::One(_) => 0,
                Addresses::Other(ips) => ips.len() * size_of::<IpAddr>(),
            };
            let names = endpoint.names.as_ref().map_or(0, |names| {
                size_of::<EndpointNames>()
                    + names.hostname.as_ref().map_or(0, |h| h.len())
                    + names.pod_name.as_ref().map_or(0, |p| p.len())
            });
            addresses + names
        })
        .sum();
    let import = slice.import.as_ref().map_or(0, |link| {
        size_of::<ImportLink>() + link.service.capacity() + link.cluster.len()
    });
    size_of::<SliceModel>()
        + slice.key.name.capacity()
        + slice.service.as_ref().map_or(0, String::capacity)
        + slice.endpoints.capacity() * size_of::<EndpointModel>()
        + endpoints
        + slice.zones.len() * size_of::<Box<str>>()
        + slice.zones.iter().map(|z| z.len()).sum::<usize>()
        + import
}

fn import_bytes(import: &ImportModel) -> usize {
    let kind = match &import.kind {
        ImportKind::ClusterSetIp(ips) => ips.capacity() * size_of::<IpAddr>(),
        ImportKind::Headless => 0,
    };
    size_of::<ImportModel>() + import.key.name.capacity() + kind
}

fn link_bytes(links: &super::links::SliceLists) -> usize {
    links.capacity() * (size_of::<(ObjectKey, super::links::SliceNames)>() + 1)
        + links
            .iter()
            .map(|(key, names)| key.name.capacity() + names.heap_bytes())
            .sum::<usize>()
}
