//! Stream connections (TCP, TLS, HTTPS) read without glommio's reactor
//! while they are busy.
//!
//! A query over a kept connection woke the core through glommio's reactor:
//! an io_uring poll armed, the ring entered to sleep, the preemption timer
//! armed and cancelled. At 10k queries a second on one DoT connection that
//! round cost more than the TLS and the answer together
//! (`bench/results/encrypted.md`). While a connection is busy, the core's
//! UDP loop (the one task that may sleep in the kernel) instead sleeps in
//! one `poll` on its UDP socket, the waiting connections and the rest, and
//! wakes the connections with bytes to read, which read them with a plain
//! `recv`: the driven poll that forwarding uses (`resolving::udp_pool`).
//!
//! A connection that read something marks the streams busy, which wakes
//! the UDP loop if it is parked on the reactor. When no connection has read
//! anything for [`BUSY_FOR`], the driving ends (unless forwarding keeps the
//! loop polling): every waiting connection is woken, and goes back to
//! waiting on the reactor. So one query over TCP now and then does not keep
//! a core whose UDP flows polling for it.
//!
//! The connections are watched through one epoll set per core
//! (edge-triggered: a connection is reported once when bytes arrive, and
//! reads until `EAGAIN` before it waits again), so that the `poll` holds one
//! descriptor however many connections are open, idle ones included.
//! Listening sockets are in the set too: a connection to accept sends the
//! loop to the reactor for a moment, where glommio accepts it.
#![allow(unsafe_code)] // epoll and recv on the core's own sockets

use glommio::net::TcpStream;
use std::cell::{Cell, RefCell};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// A connection that read nothing for this long is no longer busy.
const BUSY_FOR: Duration = Duration::from_millis(1);
/// Marks a listening socket's epoll events.
const LISTENER: u64 = 1 << 32;
/// Events taken from the epoll set at a time.
const EVENTS: usize = 64;

/// One core's stream connections, as the UDP loop's `poll` sees them.
pub(super) struct Streams {
    /// The connections and listening sockets, edge-triggered; `None` when
    /// the kernel refused one (the connections then always wait on the
    /// reactor).
    epoll: Option<OwnedFd>,
    /// Whether the UDP loop polls the connections, which then read with a
    /// plain `recv`; otherwise each waits on glommio's reactor.
    driven: Cell<bool>,
    /// A connection read something within [`BUSY_FOR`].
    busy: Cell<bool>,
    /// When a connection last read something.
    last_read: Cell<Instant>,
    /// The task of each connection waiting for bytes, by descriptor, driven
    /// or not (so that driving can start while they wait).
    waiting: RefCell<Vec<Option<Waker>>>,
    /// The UDP loop, when it waits on the reactor, to wake when a
    /// connection gets busy.
    driver: RefCell<Option<Waker>>,
}

impl std::fmt::Debug for Streams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streams")
            .field("driven", &self.driven.get())
            .field("busy", &self.busy.get())
            .finish()
    }
}

impl Streams {
    pub(super) fn new() -> Self {
        // SAFETY: epoll_create1 takes no pointer; a descriptor it returns
        // is ours alone.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        let epoll = if fd >= 0 {
            // SAFETY: a descriptor just created for us alone.
            Some(unsafe { OwnedFd::from_raw_fd(fd) })
        } else {
            let error = std::io::Error::last_os_error();
            tracing::warn!(%error, "no epoll set for stream connections; they wait on glommio's reactor");
            None
        };
        Streams {
            epoll,
            driven: Cell::new(false),
            busy: Cell::new(false),
            last_read: Cell::new(Instant::now()),
            waiting: RefCell::new(Vec::new()),
            driver: RefCell::new(None),
        }
    }

    /// Whether a connection wants the UDP loop to drive it.
    pub(super) fn busy(&self) -> bool {
        self.busy.get() && self.epoll.is_some()
    }

    /// Waits until a connection is busy (for the UDP loop, parked on the
    /// reactor).
    pub(super) async fn until_busy(&self) {
        std::future::poll_fn(|cx| {
            if self.busy() {
                Poll::Ready(())
            } else {
                *self.driver.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
        self.driver.borrow_mut().take();
    }

    /// Whether the UDP loop polls the connections. Turning it off wakes
    /// every waiting connection, to wait on the reactor again.
    pub(super) fn set_driven(&self, driven: bool) {
        if self.driven.replace(driven) && !driven {
            let woken: Vec<Waker> = self
                .waiting
                .borrow_mut()
                .iter_mut()
                .filter_map(Option::take)
                .collect();
            for waker in woken {
                waker.wake();
            }
        }
    }

    /// After a poll that woke `kicked` connections: none read anything
    /// for [`BUSY_FOR`], they are no longer busy.
    pub(super) fn settle(&self, kicked: usize) {
        if kicked == 0 && self.busy.get() && self.last_read.get().elapsed() >= BUSY_FOR {
            self.busy.set(false);
        }
    }

    /// The epoll set, for the UDP loop's `poll`.
    pub(super) fn pollfd(&self) -> libc::pollfd {
        libc::pollfd {
            fd: self.epoll.as_ref().map_or(-1, AsRawFd::as_raw_fd),
            events: libc::POLLIN,
            revents: 0,
        }
    }

    /// Wakes the connections with bytes to read, once `poll` (or a ring's
    /// poll) found the epoll set ready; returns how many, and whether a
    /// listening socket has a connection to accept. Takes every ready
    /// event: a ring's poll reports the set once, not while it stays ready.
    pub(super) fn kick_ready(&self) -> (usize, bool) {
        let Some(epoll) = &self.epoll else {
            return (0, false);
        };
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; EVENTS];
        let (mut kicked, mut accept) = (0, false);
        loop {
            // SAFETY: `events` is a live, exclusive array whose length is
            // passed with it; a zero timeout never blocks.
            let ready = unsafe {
                libc::epoll_wait(
                    epoll.as_raw_fd(),
                    events.as_mut_ptr(),
                    EVENTS as libc::c_int,
                    0,
                )
            };
            let ready = usize::try_from(ready).unwrap_or(0);
            let (k, a) = self.kick(&events[..ready]);
            kicked += k;
            accept |= a;
            if ready < EVENTS {
                return (kicked, accept);
            }
        }
    }

    /// Wakes the connections of `events`; see [`Streams::kick_ready`].
    fn kick(&self, events: &[libc::epoll_event]) -> (usize, bool) {
        let mut kicked = 0;
        let mut accept = false;
        for event in events {
            let data = event.u64;
            if data & LISTENER != 0 {
                accept = true;
                continue;
            }
            let waker = self
                .waiting
                .borrow_mut()
                .get_mut(data as usize)
                .and_then(Option::take);
            if let Some(waker) = waker {
                waker.wake();
                kicked += 1;
            }
        }
        (kicked, accept)
    }

    /// The epoll set's descriptor, for a ring to poll.
    pub(super) fn epoll_fd(&self) -> Option<RawFd> {
        self.epoll.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// Watches a listening socket for connections while driven.
    pub(super) fn listen(&self, fd: RawFd) {
        self.watch(fd, LISTENER | fd as u64);
    }

    /// Adds `fd` to the epoll set, edge-triggered, with `data`.
    fn watch(&self, fd: RawFd, data: u64) -> bool {
        let Some(epoll) = &self.epoll else {
            return false;
        };
        let mut event = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
            u64: data,
        };
        // SAFETY: `event` is a live epoll_event; `fd` is an open socket of
        // this core.
        let added =
            unsafe { libc::epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) };
        if added != 0 {
            let error = std::io::Error::last_os_error();
            tracing::debug!(%error, "cannot watch a stream socket; it waits on the reactor");
        }
        added == 0
    }

    /// Takes `fd` out of the epoll set (closing it would not, while an
    /// io_uring operation still holds the socket).
    fn unwatch(&self, fd: RawFd) {
        if let Some(epoll) = &self.epoll {
            // SAFETY: no event is passed for a removal; `fd` is still open.
            unsafe {
                libc::epoll_ctl(
                    epoll.as_raw_fd(),
                    libc::EPOLL_CTL_DEL,
                    fd,
                    std::ptr::null_mut(),
                )
            };
        }
    }

    fn wait(&self, fd: RawFd, waker: &Waker) {
        let Ok(at) = usize::try_from(fd) else { return };
        let mut waiting = self.waiting.borrow_mut();
        if waiting.len() <= at {
            waiting.resize(at + 1, None);
        }
        match &mut waiting[at] {
            Some(known) => known.clone_from(waker),
            empty => *empty = Some(waker.clone()),
        }
    }

    fn forget(&self, fd: RawFd) {
        let taken = usize::try_from(fd)
            .ok()
            .and_then(|at| self.waiting.borrow_mut().get_mut(at).and_then(Option::take));
        // Dropped outside the borrow: a waker's drop may run other code.
        drop(taken);
    }

    fn read_something(&self) {
        self.last_read.set(Instant::now());
        if !self.busy.replace(true)
            && let Some(driver) = self.driver.borrow_mut().take()
        {
            driver.wake();
        }
    }
}

/// A connection's socket, read by plain `recv` while the UDP loop drives
/// it and through glommio's reactor otherwise; written through glommio
/// (whose write tries a plain `send` first).
pub(super) struct DrivenStream {
    inner: TcpStream,
    streams: Rc<Streams>,
    /// Whether the epoll set watches it (else it always waits on the
    /// reactor).
    watched: bool,
    /// Whether what it reads makes the streams busy: DNS messages do, a
    /// TLS handshake does not (a slow one trickling bytes would keep a core
    /// whose UDP flows polling for nothing).
    drives: bool,
}

impl DrivenStream {
    /// `drives`: whether its reads make the streams busy from the start.
    pub(super) fn new(inner: TcpStream, streams: Rc<Streams>, drives: bool) -> Self {
        let fd = inner.as_raw_fd();
        let watched = streams.watch(fd, fd as u64);
        DrivenStream {
            inner,
            streams,
            watched,
            drives,
        }
    }

    /// From now on its reads make the streams busy (its handshake is done).
    pub(super) fn drive(&mut self) {
        self.drives = true;
    }
}

impl Drop for DrivenStream {
    fn drop(&mut self) {
        // The descriptor number may be reused by the next connection.
        let fd = self.inner.as_raw_fd();
        self.streams.forget(fd);
        if self.watched {
            self.streams.unwatch(fd);
        }
    }
}

impl futures_lite::AsyncRead for DrivenStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let fd = this.inner.as_raw_fd();
        let read = if this.watched && this.streams.driven.get() {
            loop {
                // SAFETY: `buf` is a live, exclusive byte slice and its
                // length is passed with it; `fd` is this connection's open
                // socket.
                let read = unsafe {
                    libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT)
                };
                if read >= 0 {
                    break Poll::Ready(Ok(read as usize));
                }
                let error = std::io::Error::last_os_error();
                match error.kind() {
                    std::io::ErrorKind::Interrupted => continue,
                    std::io::ErrorKind::WouldBlock => break Poll::Pending,
                    _ => break Poll::Ready(Err(error)),
                }
            }
        } else {
            Pin::new(&mut this.inner).poll_read(cx, buf)
        };
        match &read {
            Poll::Pending => this.streams.wait(fd, cx.waker()),
            Poll::Ready(result) => {
                this.streams.forget(fd);
                if this.drives && result.as_ref().is_ok_and(|&read| read > 0) {
                    this.streams.read_something();
                }
            }
        }
        read
    }
}

impl futures_lite::AsyncWrite for DrivenStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}
