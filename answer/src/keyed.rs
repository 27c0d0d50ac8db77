//! Values that carry their own key, in a hash table: a map from key to
//! value would hold every key twice. Used for the model's objects and for
//! name entries, in the compiler and on every core.

use hashbrown::HashTable;
use std::hash::Hash;

/// A value that carries its own key.
pub trait HasKey {
    /// The key's type.
    type Key: ?Sized + Hash + Eq;
    /// Its key.
    fn key(&self) -> &Self::Key;
}

/// A boxed value is filed under its value's key: a table of boxes keeps
/// its empty slots (an eighth or more of it, and up to half after it grew)
/// at a pointer's size, not a model's.
impl<T: HasKey + ?Sized> HasKey for Box<T> {
    type Key = T::Key;
    fn key(&self) -> &T::Key {
        (**self).key()
    }
}

/// Values by their own key.
#[derive(Clone)]
pub struct KeyedTable<T> {
    table: HashTable<T>,
    hasher: ahash::RandomState,
}

impl<T> Default for KeyedTable<T> {
    fn default() -> Self {
        KeyedTable {
            table: HashTable::new(),
            hasher: ahash::RandomState::new(),
        }
    }
}

impl<T> std::fmt::Debug for KeyedTable<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedTable")
            .field("len", &self.table.len())
            .finish()
    }
}

impl<T: HasKey> KeyedTable<T> {
    /// An empty table with room for `capacity` values.
    pub fn with_capacity(capacity: usize) -> Self {
        KeyedTable {
            table: HashTable::with_capacity(capacity),
            hasher: ahash::RandomState::new(),
        }
    }

    /// An empty table that hashes with `hasher`: tables that share one
    /// can be searched with one hash.
    pub fn with_hasher(hasher: ahash::RandomState) -> Self {
        KeyedTable {
            table: HashTable::new(),
            hasher,
        }
    }

    /// What it hashes keys with.
    pub fn hasher(&self) -> &ahash::RandomState {
        &self.hasher
    }

    /// The value with this key.
    #[inline]
    pub fn get(&self, key: &T::Key) -> Option<&T> {
        self.get_hashed(self.hash_of(key), key)
    }

    /// The value with this key, whose hash ([`KeyedTable::hash_of`]) the
    /// caller has.
    #[inline]
    pub fn get_hashed(&self, hash: u64, key: &T::Key) -> Option<&T> {
        self.table.find(hash, |value| value.key() == key)
    }

    /// The hash the table files `key` under.
    #[inline]
    pub fn hash_of(&self, key: &T::Key) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The value filed under `hash` ([`KeyedTable::hash_of`]), most likely:
    /// the first whose hash's tag (7 bits) matches, found without reading
    /// any value, so that lookups of a batch need not wait on memory one
    /// after another. Now and then it is another value, or none where a
    /// value with the key is held further on: for prefetching, never for
    /// answering.
    #[inline]
    pub fn likely(&self, hash: u64) -> Option<&T> {
        self.table.find(hash, |_| true)
    }

    /// Inserts or replaces; returns what it replaced.
    pub fn insert(&mut self, value: T) -> Option<T> {
        let hash = self.hash_of(value.key());
        self.insert_hashed(hash, value)
    }

    /// [`KeyedTable::insert`] of a value whose key's hash the caller has.
    pub fn insert_hashed(&mut self, hash: u64, value: T) -> Option<T> {
        let hasher = &self.hasher;
        match self.table.entry(
            hash,
            |held| held.key() == value.key(),
            |held| hasher.hash_one(held.key()),
        ) {
            hashbrown::hash_table::Entry::Occupied(mut held) => {
                Some(std::mem::replace(held.get_mut(), value))
            }
            hashbrown::hash_table::Entry::Vacant(vacant) => {
                vacant.insert(value);
                None
            }
        }
    }

    /// Inserts `value` unless a value with its key is held: one hash and
    /// one probe where a lookup and then an insert took two. Gives the
    /// value back if one was held.
    pub fn insert_new(&mut self, value: T) -> Result<(), T> {
        let hash = self.hash_of(value.key());
        let hasher = &self.hasher;
        match self.table.entry(
            hash,
            |held| held.key() == value.key(),
            |held| hasher.hash_one(held.key()),
        ) {
            hashbrown::hash_table::Entry::Occupied(_) => Err(value),
            hashbrown::hash_table::Entry::Vacant(vacant) => {
                vacant.insert(value);
                Ok(())
            }
        }
    }

    /// Removes the value with this key, and returns it.
    pub fn remove(&mut self, key: &T::Key) -> Option<T> {
        self.remove_hashed(self.hash_of(key), key)
    }

    /// [`KeyedTable::remove`] of a key whose hash the caller has.
    pub fn remove_hashed(&mut self, hash: u64, key: &T::Key) -> Option<T> {
        let held = self
            .table
            .find_entry(hash, |value| value.key() == key)
            .ok()?;
        Some(held.remove().0)
    }

    /// Shrinks the table to the fewest buckets its values fit in, which
    /// also clears the slots removals left behind.
    pub fn shrink_to_fit(&mut self) {
        let hasher = &self.hasher;
        self.table.shrink_to_fit(|held| hasher.hash_one(held.key()));
    }

    /// Every value, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.table.iter()
    }

    /// Every key, in no particular order.
    pub fn keys(&self) -> impl Iterator<Item = &T::Key> {
        self.table.iter().map(HasKey::key)
    }

    /// How many values it holds.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Bytes of its own heap allocation.
    pub fn allocation_size(&self) -> usize {
        self.table.allocation_size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Named(String, u32);

    impl HasKey for Named {
        type Key = str;
        fn key(&self) -> &str {
            &self.0
        }
    }

    #[test]
    fn values_are_found_replaced_and_removed_by_their_own_key() {
        let mut table = KeyedTable::default();
        assert_eq!(table.insert(Named("a".into(), 1)), None);
        assert_eq!(table.insert(Named("b".into(), 2)), None);
        assert_eq!(
            table.insert(Named("a".into(), 3)),
            Some(Named("a".into(), 1))
        );
        assert_eq!(table.get("a"), Some(&Named("a".into(), 3)));
        assert_eq!(
            table.likely(table.hash_of("a")),
            Some(&Named("a".into(), 3))
        );
        assert_eq!(table.len(), 2);
        assert_eq!(table.remove("b"), Some(Named("b".into(), 2)));
        assert_eq!(table.remove("b"), None);
        assert_eq!(table.get("b"), None);
        assert_eq!(table.iter().count(), 1);
    }
}
