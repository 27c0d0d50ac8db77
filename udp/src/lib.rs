//! kubewire's datagram I/O, below the DNS: no parsing, no async.
//!
//! Two ways to move UDP datagrams, each owning its buffers and the kernel
//! structures that point at them:
//! - [`mmsg`]: `recvmmsg`/`sendmmsg` batches on a non-blocking socket, used by
//!   the server's `batched` path, the load generator and the `recvmmsg` null
//!   responder;
//! - [`uring`]: an io_uring for one or more sockets, with a multishot `recvmsg` over a
//!   provided-buffer ring and replies as `send` requests, used by the server's
//!   `io_uring` path and the io_uring null responder.
#![allow(unsafe_code)] // system calls and kernel-shared memory, each one explained

pub mod mmsg;
pub mod uring;

/// The sender of a received datagram, as the kernel wrote it, read only
/// when asked for.
#[derive(Clone, Copy)]
pub struct Peer<'a> {
    storage: &'a libc::sockaddr_storage,
    len: libc::socklen_t,
}

impl std::fmt::Debug for Peer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Peer").field(&self.address()).finish()
    }
}

impl<'a> Peer<'a> {
    /// A sender the kernel wrote into `storage`, `len` bytes long.
    pub fn new(storage: &'a libc::sockaddr_storage, len: libc::socklen_t) -> Peer<'a> {
        Peer { storage, len }
    }

    /// The sender's address (`None` for a family other than IPv4 or IPv6, or
    /// an address cut short).
    pub fn address(&self) -> Option<std::net::SocketAddr> {
        let len = self.len as usize;
        match libc::c_int::from(self.storage.ss_family) {
            libc::AF_INET if len >= std::mem::size_of::<libc::sockaddr_in>() => {
                // SAFETY: the family says the storage holds a sockaddr_in,
                // which is smaller than and aligned within sockaddr_storage.
                let v4 = unsafe {
                    &*(self.storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>()
                };
                let ip = std::net::Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr));
                Some((ip, u16::from_be(v4.sin_port)).into())
            }
            libc::AF_INET6 if len >= std::mem::size_of::<libc::sockaddr_in6>() => {
                // SAFETY: as above, for sockaddr_in6.
                let v6 = unsafe {
                    &*(self.storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
                };
                let ip = std::net::Ipv6Addr::from(v6.sin6_addr.s6_addr);
                Some(std::net::SocketAddr::V6(std::net::SocketAddrV6::new(
                    ip,
                    u16::from_be(v6.sin6_port),
                    v6.sin6_flowinfo,
                    v6.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }

    /// The sender's IP.
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        self.address().map(|a| a.ip())
    }
}

/// `address` as the kernel takes it, with its length: the inverse of
/// [`Peer::address`].
pub fn socket_address(address: std::net::SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero bytes are a valid (unset) socket address.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match address {
        std::net::SocketAddr::V4(v4) => {
            // SAFETY: a sockaddr_in is smaller than and aligned within a
            // sockaddr_storage, which is not otherwise borrowed.
            let sin = unsafe { &mut *(&raw mut storage).cast::<libc::sockaddr_in>() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = v4.port().to_be();
            sin.sin_addr = libc::in_addr {
                s_addr: u32::from(*v4.ip()).to_be(),
            };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        std::net::SocketAddr::V6(v6) => {
            // SAFETY: as above, for a sockaddr_in6.
            let sin6 = unsafe { &mut *(&raw mut storage).cast::<libc::sockaddr_in6>() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = v6.port().to_be();
            sin6.sin6_flowinfo = v6.flowinfo();
            sin6.sin6_addr = libc::in6_addr {
                s6_addr: v6.ip().octets(),
            };
            sin6.sin6_scope_id = v6.scope_id();
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_reads_back_the_address_a_socket_received_from() {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client.send_to(b"x", server.local_addr().unwrap()).unwrap();
        let mut storage: Box<[libc::sockaddr_storage]> = mmsg::zeroed(1);
        let mut headers = mmsg::Headers::new(1);
        let mut buf = [0u8; 16];
        let name_len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        headers.point(0, buf.as_mut_ptr(), buf.len(), &mut storage[0], name_len);
        use std::os::fd::AsRawFd;
        // SAFETY: the header points at `buf` and `storage`, alive across the call.
        let count = unsafe { headers.receive(server.as_raw_fd(), 1, 0) }.unwrap();
        assert_eq!(count, 1);
        let peer = Peer::new(&storage[0], headers.name_len(0));
        assert_eq!(peer.address(), Some(client.local_addr().unwrap()));
        // A length shorter than the family's address is not an address.
        assert_eq!(Peer::new(&storage[0], 4).address(), None);
    }

    #[test]
    fn a_socket_address_reads_back_as_itself() {
        for address in ["192.0.2.1:53", "[2001:db8::1]:5353", "[fe80::1%2]:853"] {
            let address: std::net::SocketAddr = address.parse().unwrap();
            let (storage, len) = socket_address(address);
            assert_eq!(Peer::new(&storage, len).address(), Some(address));
        }
    }
}
