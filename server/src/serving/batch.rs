//! Batched UDP I/O: `recvmmsg` and `sendmmsg` on a raw, non-blocking socket.
//!
//! glommio 0.9 does one `recvmsg` and one `sendmsg` per datagram, and its
//! io_uring `send_to` fallback sends a single byte (`iov_len: 1`) when the
//! first non-blocking send meets a full buffer. This module moves up to
//! [`BATCH`] datagrams per system call instead, and never uses that fallback.
#![allow(unsafe_code)] // recvmmsg/sendmmsg over buffers this struct owns

pub use kubewire_udp::Peer;
use kubewire_udp::mmsg::{Headers, zeroed};
use std::io;
use std::os::fd::RawFd;

/// Datagrams per system call.
pub const BATCH: usize = 64;
/// Largest query read; a longer one is dropped (DNS queries are far shorter).
pub const RX_BUF: usize = 4096;
/// Reply buffer: a UDP reply never exceeds our advertised 1232 bytes.
pub const TX_BUF: usize = 1232;

const _: () = assert!(TX_BUF >= kubewire_wire::MIN_REPLY_BUF);

/// Buffers and message headers for one socket, allocated once per core.
pub struct UdpBatch {
    rx: Box<[[u8; RX_BUF]]>,
    tx: Box<[[u8; TX_BUF]]>,
    peers: Box<[libc::sockaddr_storage]>,
    rx_headers: Headers,
    tx_headers: Headers,
    /// Replies queued by [`UdpBatch::answer`], not yet sent.
    queued: usize,
}

impl std::fmt::Debug for UdpBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpBatch")
            .field("queued", &self.queued)
            .finish()
    }
}

impl Default for UdpBatch {
    fn default() -> UdpBatch {
        UdpBatch::new()
    }
}

impl UdpBatch {
    /// Allocates the buffers.
    pub fn new() -> UdpBatch {
        UdpBatch {
            rx: vec![[0u8; RX_BUF]; BATCH].into_boxed_slice(),
            tx: vec![[0u8; TX_BUF]; BATCH].into_boxed_slice(),
            peers: zeroed(BATCH),
            rx_headers: Headers::new(BATCH),
            tx_headers: Headers::new(BATCH),
            queued: 0,
        }
    }

    /// Reads up to [`BATCH`] datagrams without blocking. Returns how many
    /// (0 when none is waiting).
    pub fn receive(&mut self, fd: RawFd) -> io::Result<usize> {
        self.receive_with(fd, libc::MSG_DONTWAIT)
    }

    /// Reads up to [`BATCH`] datagrams, sleeping in the kernel until the first
    /// arrives or the socket's receive timeout (`SO_RCVTIMEO`) passes; then
    /// takes whatever else is waiting. Returns 0 on timeout.
    pub fn receive_waiting(&mut self, fd: RawFd) -> io::Result<usize> {
        self.receive_with(fd, libc::MSG_WAITFORONE)
    }

    fn receive_with(&mut self, fd: RawFd, flags: libc::c_int) -> io::Result<usize> {
        let name_len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        for i in 0..BATCH {
            let (buffer, peer) = (self.rx[i].as_mut_ptr(), &mut self.peers[i]);
            self.rx_headers.point(i, buffer, RX_BUF, peer, name_len);
        }
        // SAFETY: every header points at buffers owned by `self`, which
        // outlive the call and are not borrowed during it.
        let count = unsafe { self.rx_headers.receive(fd, BATCH, flags)? };
        self.queued = 0;
        Ok(count)
    }

    /// Calls `answer` for each received datagram `0..count` with its index,
    /// the query, a reply buffer and its sender; a `Some(len)` queues that
    /// reply to the sender. Datagrams cut short by the buffer are dropped.
    pub fn answer(
        &mut self,
        count: usize,
        mut answer: impl FnMut(usize, &[u8], &mut [u8], Peer<'_>) -> Option<usize>,
    ) {
        for i in 0..count.min(BATCH) {
            if self.rx_headers.truncated(i) {
                continue;
            }
            let len = self.rx_headers.received_len(i).min(RX_BUF);
            let name_len = self.rx_headers.name_len(i);
            let peer = Peer::new(&self.peers[i], name_len);
            let Some(reply_len) = answer(i, &self.rx[i][..len], &mut self.tx[i], peer) else {
                continue;
            };
            let (buffer, peer) = (self.tx[i].as_mut_ptr(), &mut self.peers[i]);
            self.tx_headers
                .point(self.queued, buffer, reply_len.min(TX_BUF), peer, name_len);
            self.queued += 1;
        }
    }

    /// Received datagram `i` (valid until the next receive).
    pub fn query(&self, i: usize) -> &[u8] {
        match self.rx.get(i) {
            Some(buf) => &buf[..self.rx_headers.received_len(i).min(RX_BUF)],
            None => &[],
        }
    }

    /// The sender of received datagram `i`.
    pub fn peer(&self, i: usize) -> Option<std::net::SocketAddr> {
        Peer::new(self.peers.get(i)?, self.rx_headers.name_len(i)).address()
    }

    /// Replies queued and not yet sent.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Sends queued replies from `first` on without blocking. Returns how
    /// many went out; fewer than asked means the socket buffer is full.
    pub fn send(&mut self, fd: RawFd, first: usize) -> io::Result<usize> {
        if first >= self.queued {
            return Ok(0);
        }
        // SAFETY: headers `first..queued` were pointed by `answer` at
        // buffers and addresses owned by `self`.
        unsafe {
            self.tx_headers
                .send(fd, first..self.queued, libc::MSG_DONTWAIT)
        }
    }
}
