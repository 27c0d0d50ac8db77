//! Prefetch hints: asking the CPU to bring memory into its caches before a
//! lookup reads it. Used by the serving cores' batch lookups and by the
//! cache's slots, so it sits below both.
#![allow(unsafe_code)] // a prefetch hint, which reads and writes no memory

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

/// Cache lines that hold `len` bytes from a line's start, at most
/// [`MAX_BLOCK_LINES`]: the hardware fetches on from there.
#[inline]
pub fn lines(len: usize) -> usize {
    len.div_ceil(CACHE_LINE_BYTES).clamp(1, MAX_BLOCK_LINES)
}

/// The most lines fetched for one cached answer's records.
const MAX_BLOCK_LINES: usize = 4;
