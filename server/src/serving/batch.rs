//! Batched UDP I/O: `recvmmsg` and `sendmmsg` on a raw, non-blocking socket.
//!
//! glommio 0.9 does one `recvmsg` and one `sendmsg` per datagram, and its
//! io_uring `send_to` fallback sends a single byte (`iov_len: 1`) when the
//! first non-blocking send meets a full buffer. This module moves up to
//! [`BATCH`] datagrams per system call instead, and never uses that fallback.
#![allow(unsafe_code)] // recvmmsg/sendmmsg over buffers this struct owns

pub use kubewire_udp::Peer;
use kubewire_udp::mmsg::{Headers, zeroed};
use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::RawFd;
use std::rc::Rc;

/// Datagrams per system call.
pub const BATCH: usize = 64;
/// Largest query read; a longer one is dropped (DNS queries are far shorter).
pub const RX_BUF: usize = 4096;
/// Reply buffer: a UDP reply never exceeds our advertised payload size.
pub const TX_BUF: usize = kubewire_wire::OUR_UDP_PAYLOAD as usize;

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
    /// Receive headers `0..rx_dirty` may have been changed by the kernel
    /// (it shortens `msg_namelen`) and are pointed again before the next
    /// receive; the rest still hold what was pointed. Pointing all
    /// [`BATCH`] every time took a tenth of a core's user time at 50k qps.
    rx_dirty: usize,
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
            rx_dirty: BATCH,
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
        for i in 0..self.rx_dirty.min(BATCH) {
            let (buffer, peer) = (self.rx[i].as_mut_ptr(), &mut self.peers[i]);
            self.rx_headers.point(i, buffer, RX_BUF, peer, name_len);
        }
        // Until the call returns, any header may change.
        self.rx_dirty = BATCH;
        // SAFETY: every header points at buffers owned by `self` (boxed, so
        // they never move), which outlive the call and are not borrowed
        // during it.
        let count = unsafe { self.rx_headers.receive(fd, BATCH, flags)? };
        // The kernel writes only the headers of the datagrams it returns.
        self.rx_dirty = count;
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

/// Replies that finish outside a batch (resolved by the resolver), gathered
/// and sent with one `sendmmsg` once the tasks ready in this turn of the
/// executor have run: a burst of upstream replies becomes one system call
/// to the clients, not one each.
pub struct Outbox {
    socket: Rc<glommio::net::UdpSocket>,
    queued: RefCell<Vec<(Vec<u8>, libc::sockaddr_storage, libc::socklen_t)>>,
    headers: RefCell<Headers>,
    /// A flush is spawned and has not run yet.
    scheduled: Cell<bool>,
    /// Set when an io_uring loop takes the replies ([`Outbox::drain`]): a
    /// push nudges it, and spawns no flush.
    drained_by: RefCell<Option<Rc<crate::resolving::udp_pool::Readiness>>>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("queued", &self.queued.borrow().len())
            .finish()
    }
}

impl Outbox {
    /// An outbox sending through `socket`.
    pub fn new(socket: &Rc<glommio::net::UdpSocket>) -> Rc<Outbox> {
        Rc::new(Outbox {
            socket: Rc::clone(socket),
            queued: RefCell::new(Vec::new()),
            headers: RefCell::new(Headers::new(BATCH)),
            scheduled: Cell::new(false),
            drained_by: RefCell::new(None),
        })
    }

    /// From now on an io_uring loop takes the replies ([`Outbox::drain`]);
    /// a push wakes it through `readiness` if it is parked.
    pub fn drained_by(&self, readiness: Rc<crate::resolving::udp_pool::Readiness>) {
        *self.drained_by.borrow_mut() = Some(readiness);
    }

    /// Hands each queued reply and its address to `send`; those it refuses
    /// (false: no room) leave at once in `sendmmsg` batches.
    pub fn drain(
        &self,
        mut send: impl FnMut(&[u8], &libc::sockaddr_storage, libc::socklen_t) -> bool,
    ) {
        let mut queued = self.queued.borrow_mut();
        if queued.is_empty() {
            return;
        }
        queued.retain(|(reply, peer, peer_len)| !send(reply, peer, *peer_len));
        let left = !queued.is_empty();
        drop(queued);
        if left {
            self.flush();
        }
    }

    /// Queues `reply` to `peer`; it leaves with the others of this turn.
    pub fn push(self: &Rc<Self>, reply: Vec<u8>, peer: std::net::SocketAddr) {
        let (storage, len) = kubewire_udp::socket_address(peer);
        self.queued.borrow_mut().push((reply, storage, len));
        if let Some(readiness) = &*self.drained_by.borrow() {
            readiness.nudge();
            return;
        }
        if !self.scheduled.replace(true) {
            // Tasks run in the order they were woken or spawned: this one
            // runs after every task already ready, whose replies it takes.
            let outbox = Rc::clone(self);
            glommio::spawn_local(async move { outbox.flush() }).detach();
        }
    }

    /// Sends everything queued, [`BATCH`] at a time. A reply that cannot
    /// go (a full socket buffer, an unreachable peer) is dropped, as the
    /// network would drop it. The serving loop calls it before it sleeps;
    /// otherwise a task spawned by the first push of a turn does.
    pub fn flush(&self) {
        self.scheduled.set(false);
        if self.queued.borrow().is_empty() {
            return;
        }
        let mut queued = std::mem::take(&mut *self.queued.borrow_mut());
        let mut headers = self.headers.borrow_mut();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&*self.socket);
        for chunk in queued.chunks_mut(BATCH) {
            for (i, (reply, peer, peer_len)) in chunk.iter_mut().enumerate() {
                headers.point(i, reply.as_mut_ptr(), reply.len(), peer, *peer_len);
            }
            let mut first = 0;
            while first < chunk.len() {
                // SAFETY: headers `0..chunk.len()` point at the replies and
                // addresses of `chunk`, alive and unmoved until the call ends.
                match unsafe { headers.send(fd, first..chunk.len(), libc::MSG_DONTWAIT) } {
                    Ok(0) => {
                        tracing::debug!(
                            dropped = chunk.len() - first,
                            "UDP send buffer full; resolved replies dropped"
                        );
                        break;
                    }
                    Ok(sent) => first += sent,
                    Err(error) => {
                        tracing::debug!(%error, "resolved UDP reply not sent");
                        first += 1;
                    }
                }
            }
        }
        // Keep the allocation for the next turn.
        queued.clear();
        let mut slot = self.queued.borrow_mut();
        if slot.is_empty() {
            *slot = queued;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixDatagram;

    /// The kernel shortens a header's `msg_namelen` to the sender's address;
    /// the slot must be whole again before the next receive, or a longer
    /// address is cut. Unix datagram senders make the two lengths differ on
    /// one socket: an unbound one has no path, a bound one has.
    #[test]
    fn a_header_the_kernel_shortened_is_whole_again_for_the_next_datagram() {
        let dir = std::env::temp_dir().join(format!("kubewire-batch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let server_path = dir.join("server");
        let named_path = dir.join("a-client-with-a-long-name");
        for path in [&server_path, &named_path] {
            let _ = std::fs::remove_file(path);
        }
        let server = UnixDatagram::bind(&server_path).unwrap();
        let mut batch = UdpBatch::new();

        let unnamed = UnixDatagram::unbound().unwrap();
        unnamed.send_to(b"one", &server_path).unwrap();
        assert_eq!(batch.receive(server.as_raw_fd()).unwrap(), 1);
        assert_eq!(batch.query(0), b"one");
        let short = batch.rx_headers.name_len(0) as usize;

        let named = UnixDatagram::bind(&named_path).unwrap();
        named.send_to(b"two", &server_path).unwrap();
        assert_eq!(batch.receive(server.as_raw_fd()).unwrap(), 1);
        assert_eq!(batch.query(0), b"two");
        let long = batch.rx_headers.name_len(0) as usize;
        let path_len = named_path.as_os_str().len();
        assert!(long > short + path_len, "{short} then {long}");
        // The kernel reports the whole length even when it cut the copy:
        // the address itself must hold the whole path.
        // SAFETY: a `sockaddr_storage` is large and aligned enough for any
        // socket address, and the kernel wrote an AF_UNIX one here.
        let address = unsafe { &*(&batch.peers[0] as *const _ as *const libc::sockaddr_un) };
        let path: Vec<u8> = address
            .sun_path
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        assert_eq!(path, named_path.as_os_str().as_encoded_bytes());
        // Nothing waiting: 0, and no header is left shortened.
        assert_eq!(batch.receive(server.as_raw_fd()).unwrap(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
