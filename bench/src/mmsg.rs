//! Batched UDP for the load generator: `sendmmsg` and `recvmmsg` on a
//! connected, non-blocking socket, so one thread moves up to [`BATCH`]
//! datagrams per system call (dnsperf does one per call).
#![allow(unsafe_code)] // batched calls over buffers this struct owns

use kubewire_udp::mmsg::Headers;
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
    tx_headers: Headers,
    rx_headers: Headers,
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

impl Mmsg {
    /// Allocates the buffers.
    pub fn new() -> Mmsg {
        Mmsg {
            tx: vec![[0u8; TX_BUF]; BATCH].into_boxed_slice(),
            tx_len: [0; BATCH],
            queued: 0,
            rx: vec![[0u8; RX_BUF]; BATCH].into_boxed_slice(),
            tx_headers: Headers::new(BATCH),
            rx_headers: Headers::new(BATCH),
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
        for i in 0..count {
            let buffer = self.tx[i].as_mut_ptr();
            self.tx_headers
                .point(i, buffer, self.tx_len[i], std::ptr::null_mut(), 0);
        }
        self.queued = 0;
        // SAFETY: headers 0..count point at buffers in `self.tx`, which live
        // until after the call.
        unsafe { self.tx_headers.send(fd, 0..count, libc::MSG_DONTWAIT) }
    }

    /// Receives waiting datagrams without blocking; returns how many.
    pub fn receive(&mut self, fd: RawFd) -> io::Result<usize> {
        for i in 0..BATCH {
            let buffer = self.rx[i].as_mut_ptr();
            self.rx_headers
                .point(i, buffer, RX_BUF, std::ptr::null_mut(), 0);
        }
        // SAFETY: every header points at a buffer owned by `self`.
        unsafe { self.rx_headers.receive(fd, BATCH, libc::MSG_DONTWAIT) }
    }

    /// Received datagram `i`.
    pub fn received(&self, i: usize) -> &[u8] {
        match self.rx.get(i) {
            Some(buf) => &buf[..self.rx_headers.received_len(i).min(RX_BUF)],
            None => &[],
        }
    }
}
