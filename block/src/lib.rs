//! [`ThinBlock`]: a header and bytes in one heap block, shared by an atomic
//! count and reached through one thin pointer.
//!
//! A cluster holds a name entry per name, hundreds of thousands of them,
//! each shared by the compiler and every serving core. `triomphe::ThinArc`
//! put a word-sized count and a word-sized length before the caller's
//! header: 24 bytes of bookkeeping for an entry of about 130. Here the
//! count and the length take four bytes each, so a block's bookkeeping is
//! 8 bytes plus the caller's header (16 in all for kubewire's entries).
//!
//! The unsafe code is this file's alone, and small: one allocation laid
//! out as [`Inner`] followed by the bytes, a count kept as `std::sync::Arc`
//! keeps its own, and a deallocation with the layout recomputed from the
//! stored length.

#![allow(unsafe_code)] // a reference-counted heap block, each step explained

use std::alloc::{Layout, alloc, dealloc, handle_alloc_error};
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering, fence};

/// The counts past which a clone aborts, as `Arc` does: a count that
/// wrapped would free a block still in use.
const MAX_COUNT: u32 = i32::MAX as u32;

/// The start of the block; the bytes follow it.
#[repr(C)]
struct Inner<H> {
    count: AtomicU32,
    len: u32,
    header: H,
}

/// An immutable header and byte string, shared: cloning copies a pointer
/// and bumps a count, and the last owner to drop frees the block.
///
/// `H` is `Copy`, so a block never has a header to drop.
pub struct ThinBlock<H: Copy> {
    ptr: NonNull<Inner<H>>,
    /// Owns an `Inner<H>`, for drop check and auto traits.
    owned: PhantomData<Inner<H>>,
}

// SAFETY: the block is immutable once made, and its count is atomic, so
// sharing or sending a handle is as safe as sharing `H` and bytes.
unsafe impl<H: Copy + Send + Sync> Send for ThinBlock<H> {}
// SAFETY: as for `Send`: nothing is mutated through a shared handle but the
// atomic count.
unsafe impl<H: Copy + Send + Sync> Sync for ThinBlock<H> {}

/// The block's layout for `len` bytes: an `Inner<H>`, then the bytes right
/// after it (bytes need no alignment, so `extend` adds no gap).
fn layout<H>(len: usize) -> Layout {
    let bytes = Layout::array::<u8>(len).unwrap_or_else(|_| length_overflow());
    let (layout, offset) = Layout::new::<Inner<H>>()
        .extend(bytes)
        .unwrap_or_else(|_| length_overflow());
    debug_assert_eq!(offset, size_of::<Inner<H>>());
    layout.pad_to_align()
}

#[cold]
fn length_overflow() -> ! {
    panic!("a ThinBlock holds at most u32::MAX bytes")
}

impl<H: Copy> ThinBlock<H> {
    /// A block holding `header` and a copy of `bytes`.
    ///
    /// # Panics
    /// If `bytes` is longer than `u32::MAX`.
    pub fn new(header: H, bytes: &[u8]) -> ThinBlock<H> {
        let len = u32::try_from(bytes.len()).unwrap_or_else(|_| length_overflow());
        let layout = layout::<H>(bytes.len());
        // SAFETY: the layout is never zero-sized (it holds an `Inner`).
        let raw = unsafe { alloc(layout) };
        let Some(ptr) = NonNull::new(raw.cast::<Inner<H>>()) else {
            handle_alloc_error(layout)
        };
        // SAFETY: `raw` is a fresh allocation of `layout`, which holds an
        // `Inner<H>` at its start and `len` bytes right after it; the two do
        // not overlap, and `bytes` is not inside the new allocation.
        unsafe {
            ptr.as_ptr().write(Inner {
                count: AtomicU32::new(1),
                len,
                header,
            });
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                raw.add(size_of::<Inner<H>>()),
                bytes.len(),
            );
        }
        ThinBlock {
            ptr,
            owned: PhantomData,
        }
    }

    fn inner(&self) -> &Inner<H> {
        // SAFETY: the block lives while any handle does, and this is one.
        unsafe { self.ptr.as_ref() }
    }

    /// The header.
    #[inline]
    pub fn header(&self) -> &H {
        &self.inner().header
    }

    /// The bytes.
    #[inline]
    pub fn bytes(&self) -> &[u8] {
        let len = self.inner().len as usize;
        // SAFETY: `new` wrote `len` bytes right after the `Inner` (bytes
        // need no alignment, so `layout` puts them there), and nothing
        // writes them again while a handle lives.
        unsafe {
            let start = self.ptr.as_ptr().cast::<u8>().add(size_of::<Inner<H>>());
            std::slice::from_raw_parts(start, len)
        }
    }

    /// Where the block starts. Taking it reads nothing, so it can be handed
    /// to a prefetch before the block is in the CPU's caches.
    #[inline]
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr().cast_const().cast()
    }

    /// Whether both are handles of one block.
    #[inline]
    pub fn ptr_eq(&self, other: &ThinBlock<H>) -> bool {
        self.ptr == other.ptr
    }

    /// Bytes of the block before its bytes: the count, the length and the
    /// header, with any padding. Memory accounting.
    pub fn header_bytes(&self) -> usize {
        size_of::<Inner<H>>()
    }
}

impl<H: Copy> Clone for ThinBlock<H> {
    #[inline]
    fn clone(&self) -> ThinBlock<H> {
        // Relaxed, as `Arc::clone`: a new handle comes from an existing
        // one, so the block is already visible to this thread.
        let before = self.inner().count.fetch_add(1, Ordering::Relaxed);
        if before > MAX_COUNT {
            std::process::abort();
        }
        ThinBlock {
            ptr: self.ptr,
            owned: PhantomData,
        }
    }
}

impl<H: Copy> Drop for ThinBlock<H> {
    fn drop(&mut self) {
        // Release, then an acquire fence before freeing, as `Arc`'s drop:
        // every other handle's reads happen before the block is freed.
        if self.inner().count.fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        fence(Ordering::Acquire);
        let layout = layout::<H>(self.inner().len as usize);
        // SAFETY: this was the last handle, so nothing else reads the
        // block; it was allocated with this very layout (same length).
        unsafe { dealloc(self.ptr.as_ptr().cast(), layout) };
    }
}

impl<H: Copy + std::fmt::Debug> std::fmt::Debug for ThinBlock<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThinBlock")
            .field("header", self.header())
            .field("len", &self.bytes().len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    struct Header {
        zone: u8,
        key_len: u8,
        owner: u32,
    }

    const HEADER: Header = Header {
        zone: 3,
        key_len: 9,
        owner: 0xdead_beef,
    };

    #[test]
    fn a_block_gives_back_its_header_and_bytes_behind_sixteen_bytes() {
        let bytes: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let block = ThinBlock::new(HEADER, &bytes);
        assert_eq!(*block.header(), HEADER);
        assert_eq!(block.bytes(), &bytes[..]);
        assert_eq!(block.header_bytes(), 16);
        assert_eq!(size_of::<ThinBlock<Header>>(), size_of::<usize>());
        assert_eq!(size_of::<Option<ThinBlock<Header>>>(), size_of::<usize>());
        let empty = ThinBlock::new(HEADER, &[]);
        assert!(empty.bytes().is_empty());
        assert_eq!(*empty.header(), HEADER);
    }

    #[test]
    fn clones_share_the_block_and_the_last_drop_frees_it() {
        let block = ThinBlock::new(HEADER, b"shared");
        let copy = block.clone();
        assert!(block.ptr_eq(&copy));
        assert!(!block.ptr_eq(&ThinBlock::new(HEADER, b"shared")));
        assert_eq!(block.inner().count.load(Ordering::Relaxed), 2);
        drop(block);
        assert_eq!(copy.inner().count.load(Ordering::Relaxed), 1);
        assert_eq!(copy.bytes(), b"shared");
    }

    #[test]
    fn handles_cloned_and_dropped_on_many_threads_count_right() {
        let blocks: Vec<ThinBlock<Header>> = (0..64u32)
            .map(|i| ThinBlock::new(Header { owner: i, ..HEADER }, &i.to_le_bytes()))
            .collect();
        let blocks = Arc::new(blocks);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let blocks = Arc::clone(&blocks);
                std::thread::spawn(move || {
                    let rounds = if cfg!(miri) { 10 } else { 200 };
                    for _ in 0..rounds {
                        let held: Vec<_> = blocks.iter().map(ThinBlock::clone).collect();
                        for (i, block) in held.iter().enumerate() {
                            assert_eq!(block.bytes(), &(i as u32).to_le_bytes());
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("a thread panicked");
        }
        for block in blocks.iter() {
            assert_eq!(block.inner().count.load(Ordering::Relaxed), 1);
        }
    }

    /// Headers of another alignment lay out as well.
    #[test]
    fn a_wide_header_is_aligned() {
        let block = ThinBlock::new(0x0102_0304_0506_0708u64, b"xyz");
        assert_eq!(*block.header(), 0x0102_0304_0506_0708);
        assert_eq!(block.bytes(), b"xyz");
        assert_eq!(block.as_ptr() as usize % align_of::<u64>(), 0);
        let unit = ThinBlock::new((), b"ab");
        assert_eq!((unit.bytes(), unit.header_bytes()), (&b"ab"[..], 8));
    }
}
