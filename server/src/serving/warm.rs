//! Looking up a whole batch before answering any of it.
//!
//! At 50k qps a core's user time per query goes mostly to waiting on memory:
//! between batches the kernel's network path evicts the answer table from
//! the CPU's caches, and each lookup then misses on the hash table's control
//! bytes, on its bucket and on the entry block, one after the other
//! (`bench/results/udp-user-time.md`). [`warm_batch`] looks up every query
//! of a batch first, by hash alone, and asks the CPU to fetch each entry it
//! finds without waiting for it, so the misses of one batch overlap;
//! answering then finds them in cache. It only reads: the answers are still
//! made by `respond` and the cache's lookup, which compare keys.
#![allow(unsafe_code)] // a prefetch hint, which reads and writes no memory

use crate::resolving::cache::CoreCache;
use crate::serving::batch::{BATCH, UdpBatch};
use kubewire_control_plane::AnswerTable;
use std::cell::RefCell;

/// Cache lines fetched from the start of an entry. A cluster entry's key
/// and its first answers fit in three; the hardware fetches on from there.
pub const ENTRY_LINES: usize = 3;

/// The CPU's cache line, the unit a prefetch brings in.
const CACHE_LINE_BYTES: usize = 64;

/// Asks the CPU to bring `lines` cache lines from `address` on into its
/// caches, without waiting for them. Any address will do: a prefetch never
/// faults, and one past an allocation's end only wastes a fetch.
#[inline(always)]
pub fn prefetch(address: *const u8, lines: usize) {
    #[cfg(target_arch = "x86_64")]
    for line in 0..lines {
        let at = address.wrapping_add(line * CACHE_LINE_BYTES).cast::<i8>();
        // SAFETY: PREFETCHT0 is a hint: it reads nothing into registers,
        // writes no memory and never faults, whatever the address. SSE, which
        // it needs, is part of every x86_64 CPU.
        unsafe { core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(at) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (address, lines);
}

/// Looks up the names of datagrams `0..count` of `batch` in the table, and
/// in the cache for names the table does not hold, fetching what each
/// answer will read. In two passes: the first parses and hashes every name
/// (the datagrams are in cache, the table is not); the second is a short
/// loop of lookups by hash, so the CPU runs many of them at once instead of
/// waiting on each in turn.
#[inline]
pub fn warm_batch(
    batch: &UdpBatch,
    count: usize,
    table: &AnswerTable,
    cache: Option<&RefCell<CoreCache>>,
) {
    let count = count.min(BATCH);
    let cache = cache.and_then(|cache| cache.try_borrow().ok());
    // Per datagram: its name's hash in the table, and its key's in the
    // cache; none for a datagram that is not a query.
    let mut hashes = [None::<(u64, u64)>; BATCH];
    for (i, hashed) in hashes.iter_mut().enumerate().take(count) {
        let Ok(query) = kubewire_wire::parse_query(batch.query(i)) else {
            continue;
        };
        let in_cache = cache.as_ref().map_or(0, |cache| cache.key_hash(&query));
        *hashed = Some((table.name_hash(query.key()), in_cache));
    }
    for &(name_hash, key_hash) in hashes.iter().take(count).flatten() {
        if let Some(entry) = table.likely_entry(name_hash) {
            prefetch(entry.block_address(), ENTRY_LINES);
        } else if let Some(cache) = &cache {
            cache.warm(key_hash);
        }
    }
}
