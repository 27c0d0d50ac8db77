//! Values the models hold many times over, held once.

use super::Set;
use std::hash::Hash;
use std::sync::Arc;

/// The fewest values held before a sweep drops the unused ones.
const FEWEST_BEFORE_SWEEP: usize = 64;

/// Each distinct value once, shared by every model that holds it: a
/// cluster's Services and slices list the same few port lists (five small
/// blocks for two ports, per object) and name a few tens of namespaces.
///
/// A value no model holds any more stays until the next sweep, which comes
/// when the set has doubled since the last one: it holds at most twice the
/// values in use, and a sweep's cost is spread over the values added since.
#[derive(Debug)]
pub(super) struct Shared<T: ?Sized> {
    values: Set<Arc<T>>,
    sweep_at: usize,
}

impl<T: ?Sized> Default for Shared<T> {
    fn default() -> Self {
        Shared {
            values: Set::default(),
            sweep_at: FEWEST_BEFORE_SWEEP,
        }
    }
}

impl<T: ?Sized + Hash + Eq> Shared<T> {
    /// Points `value` at the equal value already held, or holds it.
    pub(super) fn share(&mut self, value: &mut Arc<T>) {
        if let Some(held) = self.values.get(&**value) {
            *value = Arc::clone(held);
            return;
        }
        if self.values.len() >= self.sweep_at {
            self.values.retain(|held| Arc::strong_count(held) > 1);
            self.sweep_at = (2 * self.values.len()).max(FEWEST_BEFORE_SWEEP);
        }
        self.values.insert(Arc::clone(value));
    }

    /// How many values it holds (some may be unused until the next sweep).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.values.len()
    }

    /// Heap bytes: the set's slots and each value's block.
    pub(super) fn heap_bytes(&self) -> usize {
        self.values.capacity() * (size_of::<Arc<T>>() + 1)
            + self
                .values
                .iter()
                .map(|value| 2 * size_of::<usize>() + size_of_val(&**value))
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_values_share_one_block_and_unused_ones_are_swept() {
        let mut shared = Shared::<[u16]>::default();
        let mut first: Arc<[u16]> = Arc::from(vec![80, 443]);
        let mut second: Arc<[u16]> = Arc::from(vec![80, 443]);
        shared.share(&mut first);
        shared.share(&mut second);
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(shared.len(), 1);
        // Values nobody holds any more go once the set has doubled.
        for port in 0..(2 * FEWEST_BEFORE_SWEEP as u16) {
            let mut list: Arc<[u16]> = Arc::from(vec![port, port + 1, 7]);
            shared.share(&mut list);
        }
        assert!(shared.len() <= FEWEST_BEFORE_SWEEP + 1, "{}", shared.len());
        let mut again: Arc<[u16]> = Arc::from(vec![80, 443]);
        shared.share(&mut again);
        assert!(Arc::ptr_eq(&first, &again), "a value in use is kept");

        let mut names = Shared::<str>::default();
        let (mut a, mut b): (Arc<str>, Arc<str>) = ("default".into(), "default".into());
        names.share(&mut a);
        names.share(&mut b);
        assert!(Arc::ptr_eq(&a, &b));
    }
}
