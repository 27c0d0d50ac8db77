//! Batched UDP I/O: `recvmmsg` and `sendmmsg` on a raw, non-blocking socket.
//!
//! glommio 0.9 does one `recvmsg` and one `sendmsg` per datagram, and its
//! io_uring `send_to` fallback sends a single byte (`iov_len: 1`) when the
//! first non-blocking send meets a full buffer. This module moves up to
//! [`BATCH`] datagrams per system call instead, and never uses that fallback.
#![allow(unsafe_code)] // recvmmsg/sendmmsg over buffers this struct owns

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
    rx_iov: Box<[libc::iovec]>,
    rx_hdr: Box<[libc::mmsghdr]>,
    tx_iov: Box<[libc::iovec]>,
    tx_hdr: Box<[libc::mmsghdr]>,
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

/// Plain C structs whose all-zero bytes are a valid value (null pointers,
/// zero lengths): the only types [`zeroed`] makes.
trait ZeroValid {}
impl ZeroValid for libc::iovec {}
impl ZeroValid for libc::mmsghdr {}
impl ZeroValid for libc::sockaddr_storage {}

/// `count` all-zero values of a [`ZeroValid`] type.
fn zeroed<T: ZeroValid>(count: usize) -> Box<[T]> {
    // SAFETY: `ZeroValid` is implemented only for types whose all-zero bytes
    // are a valid value.
    (0..count).map(|_| unsafe { std::mem::zeroed() }).collect()
}

impl UdpBatch {
    /// Allocates the buffers.
    pub fn new() -> UdpBatch {
        UdpBatch {
            rx: vec![[0u8; RX_BUF]; BATCH].into_boxed_slice(),
            tx: vec![[0u8; TX_BUF]; BATCH].into_boxed_slice(),
            peers: zeroed(BATCH),
            rx_iov: zeroed(BATCH),
            rx_hdr: zeroed(BATCH),
            tx_iov: zeroed(BATCH),
            tx_hdr: zeroed(BATCH),
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
        for i in 0..BATCH {
            self.rx_iov[i] = libc::iovec {
                iov_base: self.rx[i].as_mut_ptr().cast(),
                iov_len: RX_BUF,
            };
            let header = &mut self.rx_hdr[i].msg_hdr;
            header.msg_name = (&mut self.peers[i] as *mut libc::sockaddr_storage).cast();
            header.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            header.msg_iov = &mut self.rx_iov[i];
            header.msg_iovlen = 1;
            header.msg_control = std::ptr::null_mut();
            header.msg_controllen = 0;
            header.msg_flags = 0;
            self.rx_hdr[i].msg_len = 0;
        }
        // SAFETY: every header points at buffers owned by `self`, which
        // outlive the call; BATCH headers are valid.
        let count = unsafe {
            libc::recvmmsg(
                fd,
                self.rx_hdr.as_mut_ptr(),
                BATCH as libc::c_uint,
                flags,
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
        self.queued = 0;
        Ok(count as usize)
    }

    /// Calls `answer` for each received datagram `0..count` with its index,
    /// the query and a reply buffer; a `Some(len)` queues that reply to the
    /// sender. Datagrams cut short by the buffer are dropped.
    pub fn answer(
        &mut self,
        count: usize,
        mut answer: impl FnMut(usize, &[u8], &mut [u8]) -> Option<usize>,
    ) {
        for i in 0..count.min(BATCH) {
            let header = &self.rx_hdr[i];
            if header.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                continue;
            }
            let len = (header.msg_len as usize).min(RX_BUF);
            let namelen = header.msg_hdr.msg_namelen;
            let Some(reply_len) = answer(i, &self.rx[i][..len], &mut self.tx[i]) else {
                continue;
            };
            let j = self.queued;
            self.tx_iov[j] = libc::iovec {
                iov_base: self.tx[i].as_mut_ptr().cast(),
                iov_len: reply_len.min(TX_BUF),
            };
            let out = &mut self.tx_hdr[j].msg_hdr;
            out.msg_name = (&mut self.peers[i] as *mut libc::sockaddr_storage).cast();
            out.msg_namelen = namelen;
            out.msg_iov = &mut self.tx_iov[j];
            out.msg_iovlen = 1;
            out.msg_control = std::ptr::null_mut();
            out.msg_controllen = 0;
            out.msg_flags = 0;
            self.queued += 1;
        }
    }

    /// Received datagram `i` (valid until the next receive).
    pub fn query(&self, i: usize) -> &[u8] {
        match (self.rx.get(i), self.rx_hdr.get(i)) {
            (Some(buf), Some(header)) => &buf[..(header.msg_len as usize).min(RX_BUF)],
            _ => &[],
        }
    }

    /// The sender of received datagram `i`.
    pub fn peer(&self, i: usize) -> Option<std::net::SocketAddr> {
        let written = self.peers.get(i)?;
        let len = self.rx_hdr.get(i)?.msg_hdr.msg_namelen;
        let mut storage = socket2::SockAddrStorage::zeroed();
        // SAFETY: SockAddrStorage is a sockaddr_storage; the kernel wrote a
        // socket address of `len` bytes into `written`.
        let address = unsafe {
            *storage.view_as::<libc::sockaddr_storage>() = *written;
            socket2::SockAddr::new(storage, len)
        };
        address.as_socket()
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
        // SAFETY: headers `first..queued` were set by `answer` and point at
        // buffers owned by `self`.
        let sent = unsafe {
            libc::sendmmsg(
                fd,
                self.tx_hdr[first..].as_mut_ptr(),
                (self.queued - first) as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if sent < 0 {
            let error = io::Error::last_os_error();
            return match error.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(error),
            };
        }
        Ok(sent as usize)
    }
}
