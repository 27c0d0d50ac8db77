//! Batched UDP for the load generator: `sendmmsg` and `recvmmsg` on a
//! connected, non-blocking socket, so one thread moves up to [`BATCH`]
//! datagrams per system call (dnsperf does one per call).
#![allow(unsafe_code)] // two libc calls over buffers this struct owns

use std::io;
use std::os::fd::RawFd;

/// Datagrams per system call.
pub const BATCH: usize = 64;
/// Largest reply read; DNS over UDP replies here stay far below it.
pub const RX_BUF: usize = 4096;
/// Largest query sent (a name is at most 255 bytes).
pub const TX_BUF: usize = 512;

/// Buffers and headers for one thread, allocated once.
pub struct Mmsg {
    tx: Box<[[u8; TX_BUF]]>,
    tx_len: [usize; BATCH],
    queued: usize,
    rx: Box<[[u8; RX_BUF]]>,
    tx_iov: Box<[libc::iovec]>,
    tx_hdr: Box<[libc::mmsghdr]>,
    rx_iov: Box<[libc::iovec]>,
    rx_hdr: Box<[libc::mmsghdr]>,
}

impl std::fmt::Debug for Mmsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mmsg")
            .field("queued", &self.queued)
            .finish()
    }
}

impl Default for Mmsg {
    fn default() -> Mmsg {
        Mmsg::new()
    }
}

/// Plain C structs whose all-zero bytes are a valid value (null pointers,
/// zero lengths): the only types [`zeroed`] makes.
trait ZeroValid {}
impl ZeroValid for libc::iovec {}
impl ZeroValid for libc::mmsghdr {}

/// `count` all-zero values of a [`ZeroValid`] type.
fn zeroed<T: ZeroValid>(count: usize) -> Box<[T]> {
    // SAFETY: `ZeroValid` is implemented only for types whose all-zero bytes
    // are a valid value.
    (0..count).map(|_| unsafe { std::mem::zeroed() }).collect()
}

impl Mmsg {
    /// Allocates the buffers.
    pub fn new() -> Mmsg {
        Mmsg {
            tx: vec![[0u8; TX_BUF]; BATCH].into_boxed_slice(),
            tx_len: [0; BATCH],
            queued: 0,
            rx: vec![[0u8; RX_BUF]; BATCH].into_boxed_slice(),
            tx_iov: zeroed(BATCH),
            tx_hdr: zeroed(BATCH),
            rx_iov: zeroed(BATCH),
            rx_hdr: zeroed(BATCH),
        }
    }

    /// Queues a datagram; false if the batch is full or it is too long.
    pub fn queue(&mut self, packet: &[u8]) -> bool {
        if self.queued >= BATCH || packet.len() > TX_BUF {
            return false;
        }
        self.tx[self.queued][..packet.len()].copy_from_slice(packet);
        self.tx_len[self.queued] = packet.len();
        self.queued += 1;
        true
    }

    /// Datagrams queued.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Sends the queued datagrams on a connected socket and empties the
    /// queue. Returns how many went out; the rest were refused by a full
    /// buffer and count as lost by the caller.
    pub fn flush(&mut self, fd: RawFd) -> io::Result<usize> {
        let count = self.queued;
        if count == 0 {
            return Ok(0);
        }
        for i in 0..count {
            self.tx_iov[i] = libc::iovec {
                iov_base: self.tx[i].as_mut_ptr().cast(),
                iov_len: self.tx_len[i],
            };
            let header = &mut self.tx_hdr[i].msg_hdr;
            header.msg_name = std::ptr::null_mut();
            header.msg_namelen = 0;
            header.msg_iov = &mut self.tx_iov[i];
            header.msg_iovlen = 1;
            header.msg_control = std::ptr::null_mut();
            header.msg_controllen = 0;
            header.msg_flags = 0;
        }
        // SAFETY: headers 0..count point at buffers in `self.tx`, which live
        // until after the call.
        let sent = unsafe {
            libc::sendmmsg(
                fd,
                self.tx_hdr.as_mut_ptr(),
                count as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        self.queued = 0;
        if sent < 0 {
            let error = io::Error::last_os_error();
            return match error.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(error),
            };
        }
        Ok(sent as usize)
    }

    /// Receives waiting datagrams without blocking; returns how many.
    pub fn receive(&mut self, fd: RawFd) -> io::Result<usize> {
        for i in 0..BATCH {
            self.rx_iov[i] = libc::iovec {
                iov_base: self.rx[i].as_mut_ptr().cast(),
                iov_len: RX_BUF,
            };
            let header = &mut self.rx_hdr[i].msg_hdr;
            header.msg_name = std::ptr::null_mut();
            header.msg_namelen = 0;
            header.msg_iov = &mut self.rx_iov[i];
            header.msg_iovlen = 1;
            header.msg_control = std::ptr::null_mut();
            header.msg_controllen = 0;
            header.msg_flags = 0;
            self.rx_hdr[i].msg_len = 0;
        }
        // SAFETY: every header points at a buffer owned by `self`.
        let count = unsafe {
            libc::recvmmsg(
                fd,
                self.rx_hdr.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if count < 0 {
            let error = io::Error::last_os_error();
            return match error.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(error),
            };
        }
        Ok(count as usize)
    }

    /// Received datagram `i`.
    pub fn received(&self, i: usize) -> &[u8] {
        match (self.rx.get(i), self.rx_hdr.get(i)) {
            (Some(buf), Some(header)) => &buf[..(header.msg_len as usize).min(RX_BUF)],
            _ => &[],
        }
    }
}
