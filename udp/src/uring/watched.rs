//! The sockets a ring receives on beside its own ([`UdpRing::watch`]: a
//! forwarder's upstream sockets), and the readiness of one descriptor it
//! polls for its caller ([`UdpRing::watch_readable`]).

use super::{CANCEL, READABLE, Turn, UdpRing, WATCHED, WATCHED_GROUP};
use crate::Peer;
use io_uring::{cqueue, opcode, types};
use std::os::fd::RawFd;

/// A socket the ring receives on beside its own ([`UdpRing::watch`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watch(pub(super) u32);

/// A watched socket's multishot receive.
#[derive(Debug)]
pub(super) struct Watched {
    pub(super) fd: RawFd,
    /// Its receive is in the kernel: until its last completion is reaped,
    /// the slot is not reused.
    pub(super) armed: bool,
    /// Not unwatched: re-armed when its receive ends.
    pub(super) wanted: bool,
}

impl UdpRing {
    /// Receives on `socket` too, until [`UdpRing::unwatch`]: each datagram
    /// goes to [`UdpRing::process_with`]'s `watched`. `None` when the ring
    /// was made without watched buffers. The kernel holds the socket open
    /// until it is unwatched, even if its descriptor is closed.
    pub fn watch(&mut self, socket: RawFd) -> Option<Watch> {
        self.watched_buffers.as_ref()?;
        let index = match self.watched.iter().position(|w| !w.armed && !w.wanted) {
            Some(index) => index,
            None => {
                self.watched.push(Watched {
                    fd: socket,
                    armed: false,
                    wanted: false,
                });
                self.watched.len() - 1
            }
        };
        self.watched[index] = Watched {
            fd: socket,
            armed: false,
            wanted: true,
        };
        self.arm_watched(index);
        Some(Watch(index as u32))
    }

    /// Stops receiving on a watched socket: its receive is cancelled, and
    /// nothing more of it is handed on.
    pub fn unwatch(&mut self, watch: Watch) {
        let index = watch.0 as usize;
        let Some(socket) = self.watched.get_mut(index) else {
            return;
        };
        if !socket.wanted {
            return;
        }
        socket.wanted = false;
        if socket.armed {
            let cancel = opcode::AsyncCancel::new(WATCHED | index as u64)
                .build()
                .user_data(CANCEL);
            self.push(&cancel);
        }
    }

    /// Reports each time `fd` becomes readable ([`Turn::readable`]), until
    /// [`UdpRing::unwatch_readable`]: a multishot poll, for a descriptor
    /// the caller reads itself (an epoll set, say). One at a time.
    pub fn watch_readable(&mut self, fd: RawFd) {
        if self.readable.replace(fd).is_some() {
            return;
        }
        // A poll still being cancelled is re-armed by `process` once its
        // last completion is in.
        if !self.readable_armed {
            self.arm_readable();
        }
    }

    /// Stops [`UdpRing::watch_readable`]'s reports.
    pub fn unwatch_readable(&mut self) {
        if self.readable.take().is_some() && self.readable_armed {
            let cancel = opcode::AsyncCancel::new(READABLE).build().user_data(CANCEL);
            self.push(&cancel);
        }
    }

    pub(super) fn arm_readable(&mut self) {
        let Some(fd) = self.readable else { return };
        let poll = opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32)
            .multi(true)
            .build()
            .user_data(READABLE);
        self.readable_armed = true;
        self.push(&poll);
    }

    /// Whether the ring was made with buffers for watched sockets.
    pub fn watch_capacity(&self) -> bool {
        self.watched_buffers.is_some()
    }

    /// Sockets watched now.
    pub fn watching(&self) -> usize {
        self.watched.iter().filter(|w| w.wanted).count()
    }

    pub(super) fn arm_watched(&mut self, index: usize) {
        let fd = self.watched[index].fd;
        let receive =
            opcode::RecvMsgMulti::new(types::Fd(fd), self.receive_header.as_ptr(), WATCHED_GROUP)
                .build()
                .user_data(WATCHED | index as u64);
        self.watched[index].armed = true;
        self.push(&receive);
    }

    pub(super) fn complete_watched(
        &mut self,
        user_data: u64,
        result: i32,
        flags: u32,
        watched: &mut impl FnMut(Watch, &[u8], bool, Peer<'_>),
        turn: &mut Turn,
    ) {
        let index = (user_data & !WATCHED) as usize;
        if !cqueue::more(flags)
            && let Some(socket) = self.watched.get_mut(index)
        {
            socket.armed = false;
        }
        let Some(bid) = cqueue::buffer_select(flags) else {
            return;
        };
        let wanted = self.watched.get(index).is_some_and(|w| w.wanted);
        if let Some(buffers) = &self.watched_buffers
            && result > 0
            && wanted
        {
            let received = buffers.buffer(bid, result as usize);
            if let Ok(message) = types::RecvMsgOut::parse(received, &self.receive_header[0])
                && !message.is_name_data_truncated()
            {
                let name = message.name_data();
                // SAFETY: all-zero bytes are a valid (unset) socket address.
                let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
                // SAFETY: `name` is at most NAME_LEN bytes, less than a
                // sockaddr_storage, and does not overlap the local.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        name.as_ptr(),
                        (&raw mut storage).cast::<u8>(),
                        name.len(),
                    );
                }
                let peer = Peer::new(&storage, name.len() as libc::socklen_t);
                self.stats.received += 1;
                turn.watched += 1;
                watched(
                    Watch(index as u32),
                    message.payload_data(),
                    message.is_payload_truncated(),
                    peer,
                );
            } else {
                self.stats.dropped += 1;
            }
        }
        if let Some(buffers) = &mut self.watched_buffers {
            buffers.provide(bid);
        }
    }
}
