//! Batched UDP system calls, `recvmmsg` and `sendmmsg`, for the three
//! places that move datagrams in batches: the server's UDP path
//! (`server/src/serving/batch.rs`), the load generator
//! (`bench/src/mmsg.rs`) and the null responder. Each owns its buffers; this
//! module owns the message headers that point at them, and the two calls.

use std::io;
use std::os::fd::RawFd;

/// Plain C structs whose all-zero bytes are a valid value (null pointers,
/// zero lengths): the only types [`zeroed`] makes.
///
/// # Safety
/// An implementing type's all-zero bit pattern must be a valid value.
pub unsafe trait ZeroValid {}
// SAFETY: plain C structs of integers and raw pointers: zero is valid.
unsafe impl ZeroValid for libc::iovec {}
// SAFETY: as above.
unsafe impl ZeroValid for libc::mmsghdr {}
// SAFETY: as above.
unsafe impl ZeroValid for libc::msghdr {}
// SAFETY: as above (an AF_UNSPEC address).
unsafe impl ZeroValid for libc::sockaddr_storage {}

/// `count` all-zero values of a [`ZeroValid`] type.
pub fn zeroed<T: ZeroValid>(count: usize) -> Box<[T]> {
    // SAFETY: `ZeroValid` is implemented only for types whose all-zero bytes
    // are a valid value.
    (0..count).map(|_| unsafe { std::mem::zeroed() }).collect()
}

/// Message headers for up to a batch of datagrams, each with one buffer.
pub struct Headers {
    iov: Box<[libc::iovec]>,
    hdr: Box<[libc::mmsghdr]>,
}

impl std::fmt::Debug for Headers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Headers")
            .field("capacity", &self.hdr.len())
            .finish()
    }
}

impl Headers {
    /// Headers for `capacity` datagrams.
    pub fn new(capacity: usize) -> Headers {
        Headers {
            iov: zeroed(capacity),
            hdr: zeroed(capacity),
        }
    }

    /// How many datagrams fit.
    pub fn capacity(&self) -> usize {
        self.hdr.len()
    }

    /// Points header `i` at `len` bytes of `buffer` and at a socket address
    /// (`name`, null for none or a connected socket). The pointers are only
    /// stored; [`Headers::receive`] and [`Headers::send`] use them.
    #[inline]
    pub fn point(
        &mut self,
        i: usize,
        buffer: *mut u8,
        len: usize,
        name: *mut libc::sockaddr_storage,
        name_len: libc::socklen_t,
    ) {
        self.iov[i] = libc::iovec {
            iov_base: buffer.cast(),
            iov_len: len,
        };
        let header = &mut self.hdr[i].msg_hdr;
        header.msg_name = name.cast();
        header.msg_namelen = name_len;
        header.msg_iov = &mut self.iov[i];
        header.msg_iovlen = 1;
        header.msg_control = std::ptr::null_mut();
        header.msg_controllen = 0;
        header.msg_flags = 0;
        self.hdr[i].msg_len = 0;
    }

    /// Bytes received into datagram `i`'s buffer.
    #[inline]
    pub fn received_len(&self, i: usize) -> usize {
        self.hdr.get(i).map_or(0, |h| h.msg_len as usize)
    }

    /// Whether datagram `i` was longer than its buffer.
    #[inline]
    pub fn truncated(&self, i: usize) -> bool {
        self.hdr
            .get(i)
            .is_some_and(|h| h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0)
    }

    /// The length of datagram `i`'s sender address.
    #[inline]
    pub fn name_len(&self, i: usize) -> libc::socklen_t {
        self.hdr.get(i).map_or(0, |h| h.msg_hdr.msg_namelen)
    }

    /// `recvmmsg` into headers `0..count`. Returns how many datagrams came;
    /// 0 when none is waiting (`EAGAIN`) or the call was interrupted.
    ///
    /// # Safety
    /// Headers `0..count` must have been pointed, by [`Headers::point`], at
    /// buffers and addresses that are alive and not otherwise borrowed now.
    #[inline]
    pub unsafe fn receive(
        &mut self,
        fd: RawFd,
        count: usize,
        flags: libc::c_int,
    ) -> io::Result<usize> {
        let count = count.min(self.hdr.len());
        // SAFETY: the caller guarantees headers 0..count point at live,
        // exclusive buffers; `count` is within the headers.
        let received = unsafe {
            libc::recvmmsg(
                fd,
                self.hdr.as_mut_ptr(),
                count as libc::c_uint,
                flags,
                std::ptr::null_mut(),
            )
        };
        outcome(received)
    }

    /// `sendmmsg` of headers `range`. Returns how many went out; 0 when the
    /// socket buffer is full (`EAGAIN`) or the call was interrupted.
    ///
    /// # Safety
    /// Headers in `range` must have been pointed, by [`Headers::point`], at
    /// buffers and addresses that are alive now.
    #[inline]
    pub unsafe fn send(
        &mut self,
        fd: RawFd,
        range: std::ops::Range<usize>,
        flags: libc::c_int,
    ) -> io::Result<usize> {
        let Some(headers) = self.hdr.get_mut(range) else {
            return Ok(0);
        };
        if headers.is_empty() {
            return Ok(0);
        }
        // SAFETY: the caller guarantees these headers point at live buffers.
        let sent = unsafe {
            libc::sendmmsg(
                fd,
                headers.as_mut_ptr(),
                headers.len() as libc::c_uint,
                flags,
            )
        };
        outcome(sent)
    }
}

fn outcome(result: libc::c_int) -> io::Result<usize> {
    if result >= 0 {
        return Ok(result as usize);
    }
    let error = io::Error::last_os_error();
    match error.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
        _ => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_batch_goes_out_and_comes_back_with_its_senders() {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        server.set_nonblocking(true).unwrap();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client.connect(server.local_addr().unwrap()).unwrap();
        let mut out = [[0u8; 16]; 3];
        let mut headers = Headers::new(4);
        for (i, buffer) in out.iter_mut().enumerate() {
            buffer[0] = i as u8;
            headers.point(i, buffer.as_mut_ptr(), 1 + i, std::ptr::null_mut(), 0);
        }
        // SAFETY: headers 0..3 point at `out`, alive until after the call.
        let sent = unsafe { headers.send(client.as_raw_fd(), 0..3, 0) }.unwrap();
        assert_eq!(sent, 3);
        let mut input = [[0u8; 8]; 4];
        let mut peers: Box<[libc::sockaddr_storage]> = zeroed(4);
        for (i, buffer) in input.iter_mut().enumerate() {
            let size = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            headers.point(i, buffer.as_mut_ptr(), 2, &mut peers[i], size);
        }
        // Loopback delivers at once; the wait only makes that certain.
        std::thread::sleep(std::time::Duration::from_millis(20));
        // SAFETY: headers 0..4 point at `input` and `peers`, alive here.
        let received = unsafe { headers.receive(server.as_raw_fd(), 4, 0) }.unwrap();
        assert_eq!(received, 3);
        assert_eq!(input[0][0], 0);
        assert_eq!(input[1][..2], [1, 0]);
        assert_eq!(headers.received_len(0), 1);
        assert!(!headers.truncated(1));
        // The third datagram (3 bytes) did not fit its 2-byte buffer.
        assert!(headers.truncated(2));
        assert_eq!(
            headers.name_len(0) as usize,
            std::mem::size_of::<libc::sockaddr_in>()
        );
        // SAFETY: an empty range sends nothing and reads no header.
        let nothing = unsafe { headers.send(client.as_raw_fd(), 0..0, 0) };
        assert_eq!(nothing.unwrap(), 0);
    }
}
