//! Looking up a whole batch before answering any of it.
//!
//! At 50k qps a core's user time per query goes mostly to waiting on memory:
//! between batches the kernel's network path evicts the answer table from
//! the CPU's caches, and each lookup then misses on the hash table's control
//! bytes, on its bucket and on the entry block, one after the other
//! (`bench/results/udp-user-time.md`). [`warm_batch`] looks up every query
//! of a batch first, by hash alone, one level of each lookup at a time, and
//! asks the CPU to fetch what each level points at without waiting for it,
//! so the misses of one batch overlap; answering then finds them in cache.
//! It only reads: the answers are still made by `respond` and the cache's
//! lookup, which compare keys.
use crate::prefetch::prefetch;
use crate::resolving::cache::{CoreCache, LikelySlot};
use crate::serving::batch::{BATCH, UdpBatch};
use kubewire_answer::{AnswerTable, NameEntry};
use std::cell::RefCell;

/// Cache lines fetched from the start of an entry. A cluster entry's key
/// and its first answers fit in three; the hardware fetches on from there.
pub const ENTRY_LINES: usize = 3;

/// What a query of the batch will most likely read, found by hash.
#[derive(Clone, Copy)]
enum Likely<'a> {
    /// A cluster name's entry: its bucket in the table.
    Entry(&'a NameEntry),
    /// A cached answer's slot.
    Cached(LikelySlot<'a>),
}

/// Looks up the names of datagrams `0..count` of `batch` in the table, and
/// in the cache for names the table does not hold, fetching what each
/// answer will read. A lookup is a chain of loads, each needing the last
/// (control bytes, bucket, entry; for the cache also the stored answer,
/// then its records), so the batch goes through the chain one level at a
/// time: every query's load of one level is issued before any query's
/// next, and the CPU waits on each level once per batch, not once per
/// query.
#[inline]
pub fn warm_batch(
    batch: &UdpBatch,
    count: usize,
    table: &AnswerTable,
    cache: Option<&RefCell<CoreCache>>,
) {
    let count = count.min(BATCH);
    let cache = cache.and_then(|cache| cache.try_borrow().ok());
    // Parse and hash: the datagrams are in cache, the tables are not.
    // Per datagram, its name's hash in the table (none outside every
    // zone), and its key's in the cache; none for a datagram that is not a
    // query.
    let mut hashes = [None::<(Option<u64>, u64)>; BATCH];
    for (i, hashed) in hashes.iter_mut().enumerate().take(count) {
        let Ok(query) = kubewire_wire::parse_query(batch.query(i)) else {
            continue;
        };
        let in_cache = cache.as_ref().map_or(0, |cache| cache.key_hash(&query));
        *hashed = Some((table.name_hash(query.key()), in_cache));
    }
    // Control bytes: find each bucket without reading it, and fetch it.
    let mut likely = [None::<Likely<'_>>; BATCH];
    for (found, &(name_hash, key_hash)) in
        likely.iter_mut().zip(hashes.iter().take(count).flatten())
    {
        *found = if let Some(entry) = name_hash.and_then(|hash| table.likely_entry(hash)) {
            prefetch(std::ptr::from_ref(entry).cast(), 1);
            Some(Likely::Entry(entry))
        } else {
            cache
                .as_ref()
                .and_then(|cache| cache.likely(key_hash))
                .map(|slot| {
                    prefetch(slot.slot_address(), 1);
                    Likely::Cached(slot)
                })
        };
    }
    // Buckets: fetch the blocks they point at.
    for found in likely.iter().flatten() {
        match *found {
            Likely::Entry(entry) => prefetch(entry.block_address(), ENTRY_LINES),
            Likely::Cached(slot) => slot.fetch_key_and_stored(),
        }
    }
    // A cached answer's records, once its stored block is in.
    for found in likely.iter().flatten() {
        if let Likely::Cached(slot) = *found {
            slot.fetch_records();
        }
    }
}
