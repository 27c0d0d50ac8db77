//! The memory a ring shares with the kernel: the provided receive buffers
//! and the send slots.

use super::{RingError, failed};
use crate::mmsg::zeroed;
use io_uring::{IoUring, types};
use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

/// A provided-buffer ring: the kernel takes buffers from its head as
/// datagrams arrive; this side gives them back at its tail.
pub(super) struct ProvidedBuffers {
    /// `count` ring entries in page-aligned memory (mmap), shared with the kernel.
    pub(super) entries: *mut types::BufRingEntry,
    pub(super) count: u16,
    /// Bytes per buffer.
    pub(super) len: usize,
    pub(super) tail: u16,
    pub(super) memory: Box<[u8]>,
}

impl ProvidedBuffers {
    pub(super) fn new(count: u16, len: usize) -> Result<ProvidedBuffers, RingError> {
        let bytes = usize::from(count) * std::mem::size_of::<types::BufRingEntry>();
        // SAFETY: an anonymous private mapping, no pointers passed in.
        let entries = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_ANONYMOUS | libc::MAP_PRIVATE,
                -1,
                0,
            )
        };
        if entries == libc::MAP_FAILED {
            return Err(RingError {
                step: "mapping the buffer ring",
                source: io::Error::last_os_error(),
            });
        }
        Ok(ProvidedBuffers {
            entries: entries.cast(),
            count,
            len,
            tail: 0,
            memory: vec![0u8; usize::from(count) * len].into_boxed_slice(),
        })
    }

    /// Registers the buffers with `ring` as buffer group `group`.
    pub(super) fn register(&self, ring: &IoUring, group: u16) -> Result<(), RingError> {
        // SAFETY: the entries live in `self`, which the ring's owner keeps
        // until the kernel is done with them (see `UdpRing`'s `Drop`).
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(self.entries as u64, self.count, group, 0)
        }
        .map_err(failed("registering a provided-buffer ring"))
    }

    /// Buffer `bid`'s first `len` bytes, as the kernel filled them.
    pub(super) fn buffer(&self, bid: u16, len: usize) -> &[u8] {
        let start = usize::from(bid % self.count) * self.len;
        &self.memory[start..start + len.min(self.len)]
    }

    /// Gives buffer `bid` back to the kernel (seen at the next `publish`).
    pub(super) fn provide(&mut self, bid: u16) {
        let bid = bid % self.count;
        let index = usize::from(self.tail & (self.count - 1));
        let address = self.memory.as_ptr() as u64 + (usize::from(bid) * self.len) as u64;
        // SAFETY: `index < count`, within the mapping; the kernel reads this
        // entry only once the tail below passes it.
        let entry = unsafe { &mut *self.entries.add(index) };
        entry.set_addr(address);
        entry.set_len(self.len as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Publishes the buffers given back since the last call.
    pub(super) fn publish(&self) {
        // SAFETY: the tail is a u16 inside the first entry of the mapping,
        // which the kernel reads concurrently, hence atomic.
        let tail = unsafe { &*types::BufRingEntry::tail(self.entries).cast::<AtomicU16>() };
        tail.store(self.tail, Ordering::Release);
    }

    pub(super) fn leak(&mut self) {
        std::mem::forget(std::mem::take(&mut self.memory));
        self.entries = std::ptr::null_mut();
    }
}

impl Drop for ProvidedBuffers {
    fn drop(&mut self) {
        if self.entries.is_null() {
            return;
        }
        let bytes = usize::from(self.count) * std::mem::size_of::<types::BufRingEntry>();
        // SAFETY: the mapping made in `new`, no longer used by the kernel.
        unsafe { libc::munmap(self.entries.cast(), bytes) };
    }
}

/// Replies in flight: each slot holds a reply, its destination and the
/// message header the kernel reads until the send completes.
pub(super) struct SendSlots {
    pub(super) count: usize,
    pub(super) reply_len: usize,
    pub(super) headers: Box<[libc::msghdr]>,
    pub(super) iov: Box<[libc::iovec]>,
    pub(super) names: Box<[libc::sockaddr_storage]>,
    pub(super) replies: Box<[u8]>,
    pub(super) free: Vec<usize>,
    /// Slots whose replies wait for the turn's `sendmmsg`.
    pub(super) batch: Vec<usize>,
    pub(super) mmsg: Box<[libc::mmsghdr]>,
}

impl SendSlots {
    pub(super) fn new(count: usize, reply_len: usize) -> SendSlots {
        SendSlots {
            count,
            reply_len,
            headers: zeroed(count),
            iov: zeroed(count),
            names: zeroed(count),
            replies: vec![0u8; count * reply_len].into_boxed_slice(),
            free: (0..count).rev().collect(),
            batch: Vec::with_capacity(count),
            mmsg: zeroed(count),
        }
    }

    /// Points slot `slot`'s header at its reply and address; returns it.
    pub(super) fn point(
        &mut self,
        slot: usize,
        len: usize,
        name_len: libc::socklen_t,
    ) -> *const libc::msghdr {
        let reply = self.replies[slot * self.reply_len..].as_mut_ptr();
        self.iov[slot] = libc::iovec {
            iov_base: reply.cast(),
            iov_len: len.min(self.reply_len),
        };
        let header = &mut self.headers[slot];
        header.msg_name = (&raw mut self.names[slot]).cast();
        header.msg_namelen = name_len;
        header.msg_iov = &raw mut self.iov[slot];
        header.msg_iovlen = 1;
        header
    }

    pub(super) fn leak(&mut self) {
        std::mem::forget(std::mem::take(&mut self.headers));
        std::mem::forget(std::mem::take(&mut self.iov));
        std::mem::forget(std::mem::take(&mut self.names));
        std::mem::forget(std::mem::take(&mut self.replies));
    }
}
