//! The names a core answers from: one index of every name that all cores
//! share, and each core's own overlay of what changed since that index.
//!
//! A table of every name on every core cost each further core as much as
//! the first: 9 bytes a bucket, 2.3 MB for 111k names. The compiler now
//! builds an immutable [`NameIndex`] now and then (once the first sync is
//! whole, and when enough names changed since the last one) and ships it
//! in the delta it belongs to; between indexes a core keeps the changes in
//! a small overlay. A further core then costs its overlay, kilobytes.
//!
//! The query path stays a lookup without a lock or an allocation: the
//! overlay first (skipped while empty, as it is after each index), then the
//! index, with one hash, since the overlay hashes with the index's hasher.

use crate::entry::NameEntry;
use crate::keyed::{HasKey, KeyedTable};
use std::sync::Arc;

/// Every name at one revision, shared read-only by every core.
#[derive(Debug, Default)]
pub struct NameIndex {
    names: KeyedTable<NameEntry>,
}

impl NameIndex {
    /// An index of these names.
    pub fn new(names: KeyedTable<NameEntry>) -> Arc<NameIndex> {
        Arc::new(NameIndex { names })
    }

    /// How many names it holds.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Bytes of its hash table (the entries are counted with the compiler's).
    pub fn allocation_size(&self) -> usize {
        self.names.allocation_size()
    }

    /// Every name, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &NameEntry> {
        self.names.iter()
    }
}

/// A change a core holds over its index.
enum Overlaid {
    /// The name has this entry, whatever the index says.
    Upsert(NameEntry),
    /// The index's entry for this key is gone.
    Removed(Box<[u8]>),
}

impl HasKey for Overlaid {
    type Key = [u8];
    fn key(&self) -> &[u8] {
        match self {
            Overlaid::Upsert(entry) => entry.table_key(),
            Overlaid::Removed(key) => key,
        }
    }
}

/// Names over a shared index: the index, and the changes made since it.
/// Each core holds its names this way, and so does the compiler, which
/// makes the next index from it ([`IndexedNames::merged`]): one table of
/// every name for the node, not one more for the compiler.
pub(crate) struct IndexedNames {
    index: Arc<NameIndex>,
    overlay: KeyedTable<Overlaid>,
    len: usize,
    /// Bytes of the keys the overlay's removals hold.
    removed_key_bytes: usize,
}

impl std::fmt::Debug for IndexedNames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexedNames")
            .field("indexed", &self.index.len())
            .field("overlaid", &self.overlay.len())
            .field("len", &self.len)
            .finish()
    }
}

impl Default for IndexedNames {
    fn default() -> IndexedNames {
        IndexedNames::new(Arc::new(NameIndex::default()))
    }
}

impl IndexedNames {
    /// The names of `index`, with nothing over it.
    pub(crate) fn new(index: Arc<NameIndex>) -> IndexedNames {
        IndexedNames {
            overlay: KeyedTable::with_hasher(index.names.hasher().clone()),
            len: index.len(),
            removed_key_bytes: 0,
            index,
        }
    }

    /// The entry with this lowercase wire key.
    #[inline]
    pub(crate) fn get(&self, key: &[u8]) -> Option<&NameEntry> {
        if self.overlay.is_empty() {
            return self.index.names.get(key);
        }
        self.get_hashed(self.index.names.hash_of(key), key)
    }

    /// [`IndexedNames::get`] with the key's hash.
    #[inline]
    fn get_hashed(&self, hash: u64, key: &[u8]) -> Option<&NameEntry> {
        match self.overlay.get_hashed(hash, key) {
            Some(Overlaid::Upsert(entry)) => Some(entry),
            Some(Overlaid::Removed(_)) => None,
            None => self.index.names.get_hashed(hash, key),
        }
    }

    /// The hash a key is filed under, for [`IndexedNames::likely`].
    #[inline]
    pub(crate) fn hash_of(&self, key: &[u8]) -> u64 {
        self.index.names.hash_of(key)
    }

    /// Most likely the entry filed under `hash`, found without reading any
    /// entry (see [`KeyedTable::likely`]): for prefetching only.
    #[inline]
    pub(crate) fn likely(&self, hash: u64) -> Option<&NameEntry> {
        if !self.overlay.is_empty()
            && let Some(Overlaid::Upsert(entry)) = self.overlay.likely(hash)
        {
            return Some(entry);
        }
        self.index.names.likely(hash)
    }

    /// Adds the entry of a name it does not hold; whether it did not.
    pub(crate) fn insert_new(&mut self, entry: &NameEntry) -> bool {
        let key = entry.table_key();
        let hash = self.index.names.hash_of(key);
        if self.get_hashed(hash, key).is_some() {
            return false;
        }
        self.len += 1;
        self.overlay_put(hash, entry);
        true
    }

    /// Adds or replaces the entry of a name.
    pub(crate) fn upsert(&mut self, entry: &NameEntry) {
        let key = entry.table_key();
        let hash = self.index.names.hash_of(key);
        if self.get_hashed(hash, key).is_none() {
            self.len += 1;
        }
        self.overlay_put(hash, entry);
    }

    /// Makes `entry` the one its key finds: over the index, or by leaving
    /// nothing over it where the index holds this very entry.
    fn overlay_put(&mut self, hash: u64, entry: &NameEntry) {
        let key = entry.table_key();
        let indexed = self.index.names.get_hashed(hash, key);
        let replaced = if indexed.is_some_and(|held| held.ptr_eq(entry)) {
            // Back to what the index holds: nothing to keep over it.
            self.overlay.remove_hashed(hash, key)
        } else {
            self.overlay
                .insert_hashed(hash, Overlaid::Upsert(entry.clone()))
        };
        self.forget(replaced);
    }

    /// Accounts for an overlay slot that is gone.
    fn forget(&mut self, gone: Option<Overlaid>) {
        if let Some(Overlaid::Removed(key)) = gone {
            self.removed_key_bytes -= key.len();
        }
    }

    /// Removes the entry with this key; whether there was one.
    pub(crate) fn remove(&mut self, key: &[u8]) -> bool {
        let hash = self.index.names.hash_of(key);
        if self.get_hashed(hash, key).is_none() {
            return false;
        }
        self.len -= 1;
        let replaced = if self.index.names.get_hashed(hash, key).is_some() {
            self.removed_key_bytes += key.len();
            self.overlay
                .insert_hashed(hash, Overlaid::Removed(key.into()))
        } else {
            self.overlay.remove_hashed(hash, key)
        };
        self.forget(replaced);
        true
    }

    /// The index it is over.
    pub(crate) fn index(&self) -> &Arc<NameIndex> {
        &self.index
    }

    /// Every name it holds, in one table: a copy of the index's (pointers
    /// and reference counts, no hashing), with the changes applied.
    pub(crate) fn merged(&self) -> KeyedTable<NameEntry> {
        let mut table = self.index.names.clone();
        for held in self.overlay.iter() {
            match held {
                Overlaid::Upsert(entry) => {
                    table.insert(entry.clone());
                }
                Overlaid::Removed(key) => {
                    table.remove(key);
                }
            }
        }
        table
    }

    /// How many names it holds.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Every entry, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &NameEntry> {
        let overlay = &self.overlay;
        let indexed = self
            .index
            .names
            .iter()
            .filter(move |entry| overlay.get(entry.table_key()).is_none());
        let over = self.overlay.iter().filter_map(|held| match held {
            Overlaid::Upsert(entry) => Some(entry),
            Overlaid::Removed(_) => None,
        });
        indexed.chain(over)
    }

    /// Bytes this core holds for itself: its overlay's table and the keys
    /// of its removals (entries and the index are shared).
    pub(crate) fn own_bytes(&self) -> usize {
        self.overlay.allocation_size() + self.removed_key_bytes
    }

    /// How many changes it holds over its index.
    pub(crate) fn overlaid(&self) -> usize {
        self.overlay.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::TableKey;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn entry(name: u8, version: u8) -> NameEntry {
        NameEntry::new(
            &TableKey::new(&[1, b'a' + name % 8, 0], 1, 0),
            u32::from(version),
            Vec::new(),
        )
    }

    #[derive(Clone, Debug)]
    enum Step {
        Upsert(u8, u8),
        /// Added only if the name is not held.
        InsertNew(u8, u8),
        Remove(u8),
        /// A new index of everything held now.
        Reindex,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (0u8..8, any::<u8>()).prop_map(|(n, v)| Step::Upsert(n, v)),
            2 => (0u8..8, any::<u8>()).prop_map(|(n, v)| Step::InsertNew(n, v)),
            3 => (0u8..8).prop_map(Step::Remove),
            1 => Just(Step::Reindex),
        ]
    }

    proptest! {
        /// Whatever mix of changes and new indexes, a core's names are
        /// exactly those of a plain map given the same changes.
        #[test]
        fn a_core_holds_what_a_plain_map_would(steps in prop::collection::vec(step(), 0..60)) {
            let mut names = IndexedNames::default();
            let mut expected: BTreeMap<Vec<u8>, NameEntry> = BTreeMap::new();
            for step in steps {
                match step {
                    Step::Upsert(n, v) => {
                        let entry = entry(n, v);
                        names.upsert(&entry);
                        expected.insert(entry.table_key().to_vec(), entry);
                    }
                    Step::InsertNew(n, v) => {
                        let entry = entry(n, v);
                        let absent = !expected.contains_key(entry.table_key());
                        prop_assert_eq!(names.insert_new(&entry), absent);
                        expected.entry(entry.table_key().to_vec()).or_insert(entry);
                    }
                    Step::Remove(n) => {
                        let key = entry(n, 0).table_key().to_vec();
                        names.remove(&key);
                        expected.remove(&key);
                    }
                    Step::Reindex => {
                        let mut table = KeyedTable::default();
                        for entry in names.iter() {
                            table.insert(entry.clone());
                        }
                        let merged = names.merged();
                        prop_assert_eq!(merged.len(), table.len());
                        for entry in table.iter() {
                            prop_assert!(merged.get(entry.table_key()).is_some_and(|m| m.ptr_eq(entry)));
                        }
                        names = IndexedNames::new(NameIndex::new(merged));
                        prop_assert_eq!(names.overlaid(), 0);
                    }
                }
                prop_assert_eq!(names.len(), expected.len());
                let removed_keys: usize = names.overlay.iter().map(|held| match held {
                    Overlaid::Upsert(_) => 0,
                    Overlaid::Removed(key) => key.len(),
                }).sum();
                prop_assert_eq!(names.removed_key_bytes, removed_keys);
                for n in 0..8 {
                    let key = entry(n, 0).table_key().to_vec();
                    let held = names.get(&key).map(NameEntry::owner);
                    prop_assert_eq!(held, expected.get(&key).map(NameEntry::owner));
                }
                let mut listed: Vec<_> = names.iter().map(|e| (e.table_key().to_vec(), e.owner())).collect();
                listed.sort();
                let wanted: Vec<_> = expected.iter().map(|(k, e)| (k.clone(), e.owner())).collect();
                prop_assert_eq!(listed, wanted);
            }
        }
    }

    #[test]
    fn a_core_over_a_fresh_index_holds_nothing_of_its_own() {
        let mut table = KeyedTable::default();
        table.insert(entry(0, 1));
        table.insert(entry(1, 1));
        let index = NameIndex::new(table);
        let mut names = IndexedNames::new(Arc::clone(&index));
        assert_eq!((names.len(), names.overlaid()), (2, 0));
        // Setting a name back to the index's entry leaves nothing over it.
        let indexed = index.names.get(entry(0, 0).table_key()).cloned();
        names.upsert(&entry(0, 2));
        assert_eq!(names.overlaid(), 1);
        names.upsert(&indexed.expect("indexed"));
        assert_eq!(names.overlaid(), 0);
        // A removal of an indexed name is held; of one held over it, dropped.
        names.remove(entry(1, 0).table_key());
        names.upsert(&entry(2, 1));
        names.remove(entry(2, 0).table_key());
        assert_eq!((names.len(), names.overlaid()), (1, 1));
        assert!(names.get(entry(1, 0).table_key()).is_none());
    }
}
