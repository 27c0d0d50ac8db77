//! Slice names by the Service (or ServiceImport) they belong to.

use super::Map;
use crate::model::ObjectKey;

/// The names of one Service's slices, sorted. Nearly every Service has one
/// slice (the EndpointSlice controller starts another at 100 endpoints),
/// so a single name is kept inline: a list was a block of its own for each
/// of a cluster's Services.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) enum SliceNames {
    /// No slice (a list that became empty is removed from its map).
    #[default]
    None,
    /// The usual case.
    One(Box<str>),
    /// Two or more, sorted.
    Many(Vec<Box<str>>),
}

impl SliceNames {
    /// The names, sorted.
    pub(super) fn iter(&self) -> std::slice::Iter<'_, Box<str>> {
        match self {
            SliceNames::None => [].iter(),
            SliceNames::One(name) => std::slice::from_ref(name).iter(),
            SliceNames::Many(names) => names.iter(),
        }
    }

    fn insert(&mut self, slice: &str) {
        match self {
            SliceNames::None => *self = SliceNames::One(slice.into()),
            SliceNames::One(name) if **name == *slice => {}
            SliceNames::One(name) => {
                let mut names = vec![std::mem::take(name), slice.into()];
                names.sort_unstable();
                *self = SliceNames::Many(names);
            }
            SliceNames::Many(names) => {
                if let Err(at) = names.binary_search_by(|n| (**n).cmp(slice)) {
                    names.insert(at, slice.into());
                }
            }
        }
    }

    fn remove(&mut self, slice: &str) {
        match self {
            SliceNames::One(name) if **name == *slice => *self = SliceNames::None,
            SliceNames::Many(names) => {
                names.retain(|n| **n != *slice);
                match names.len() {
                    0 => *self = SliceNames::None,
                    1 => *self = SliceNames::One(names.remove(0)),
                    _ => {}
                }
            }
            SliceNames::None | SliceNames::One(_) => {}
        }
    }

    fn is_empty(&self) -> bool {
        matches!(self, SliceNames::None)
    }

    /// Heap bytes it holds (its own count, for the memory report).
    pub(super) fn heap_bytes(&self) -> usize {
        let list = match self {
            SliceNames::Many(names) => names.capacity() * size_of::<Box<str>>(),
            SliceNames::None | SliceNames::One(_) => 0,
        };
        list + self.iter().map(|n| n.len()).sum::<usize>()
    }
}

/// Slice names by the key of the Service or ServiceImport they belong to.
pub(super) type SliceLists = Map<ObjectKey, SliceNames>;

/// Adds a slice's name to the list of its service (or import).
pub(super) fn link_slice(lists: &mut SliceLists, owner: &ObjectKey, slice: &str) {
    lists.entry(owner.clone()).or_default().insert(slice);
}

/// Takes a slice's name from its service's (or import's) list.
pub(super) fn unlink_slice_from(lists: &mut SliceLists, owner: &ObjectKey, slice: &str) {
    if let Some(names) = lists.get_mut(owner) {
        names.remove(slice);
        if names.is_empty() {
            lists.remove(owner);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    proptest! {
        /// Whatever the adds and removals, the list is a sorted set of the
        /// names, inline while it holds one.
        #[test]
        fn slice_names_hold_what_a_sorted_set_would(steps in prop::collection::vec((any::<bool>(), 0u8..5), 0..40)) {
            let mut names = SliceNames::default();
            let mut expected = BTreeSet::new();
            for (add, n) in steps {
                let name = format!("svc-{n}");
                if add {
                    names.insert(&name);
                    expected.insert(name);
                } else {
                    names.remove(&name);
                    expected.remove(&name);
                }
                let held: Vec<&str> = names.iter().map(|n| &**n).collect();
                let wanted: Vec<&str> = expected.iter().map(String::as_str).collect();
                prop_assert_eq!(held, wanted);
                prop_assert_eq!(matches!(names, SliceNames::One(_)), expected.len() == 1);
                prop_assert_eq!(names.is_empty(), expected.is_empty());
            }
        }
    }
}
