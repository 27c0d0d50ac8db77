//! UDP on io_uring: one ring per socket, owned by one thread.
//!
//! - Receiving is armed once: a multishot `recvmsg` takes each datagram into
//!   a buffer of a provided-buffer ring, and posts one completion per
//!   datagram until it runs out of buffers (then it is re-armed).
//! - Each reply goes out as a `send` request with the client's address (a
//!   `sendto`) from a send slot, which holds the reply and its address until
//!   the kernel is done with them.
//! - A caller's loop turn is [`UdpRing::process`] (reap every completion,
//!   answer, queue the replies) then [`UdpRing::submit_and_wait`] (one
//!   `io_uring_enter` that sends the replies and waits for the next
//!   datagrams), or [`UdpRing::flush`] where waiting is done elsewhere.
//! - A thread that also runs other work parks on an eventfd the ring signals
//!   ([`UdpRing::notifier`], [`UdpRing::park`]).
//!
//! With `IORING_SETUP_DEFER_TASKRUN` (Linux 6.1) the kernel does the
//! receive work of all datagrams that arrived since the last turn in that
//! turn's `io_uring_enter`, instead of interrupting the thread for each one.

use crate::Peer;
use crate::mmsg::zeroed;
use io_uring::{IoUring, cqueue, opcode, squeue, types};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

/// Bytes per provided receive buffer: the kernel's 16-byte header, the
/// sender's address, then the datagram (up to 2004 bytes; longer ones are
/// dropped, as no DNS query is that long).
pub const RECEIVE_BUFFER_LEN: usize = 2048;
/// Space kept for the sender's address in each receive buffer (IPv4 or IPv6).
const NAME_LEN: usize = std::mem::size_of::<libc::sockaddr_in6>();
/// The buffer group of the one buffer ring each ring has.
const BUFFER_GROUP: u16 = 0;
/// `user_data` of the multishot receive; send slots use their index.
const RECEIVE: u64 = u64::MAX;
/// `user_data` of the cancellation submitted when a ring is dropped.
const CANCEL: u64 = u64::MAX - 1;
/// `user_data` of the tick ([`UdpRing::arm_tick`]).
const TICK: u64 = u64::MAX - 2;

/// How a ring is sized and set up.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Provided receive buffers: datagrams taken per turn at most (a power
    /// of two, at most 32768).
    pub receive_buffers: u16,
    /// Replies in flight at once; a query arriving when all are taken is
    /// dropped, as a full socket buffer would drop it.
    pub send_slots: u16,
    /// Longest reply.
    pub reply_len: usize,
    /// Ask for `DEFER_TASKRUN` (and `SINGLE_ISSUER`); a kernel without them
    /// gets a plain ring.
    pub defer_taskrun: bool,
    /// How replies leave.
    pub send: SendPath,
}

/// How a ring's replies leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendPath {
    /// One `send` request with a destination address per reply, in the same
    /// `io_uring_enter` as the wait.
    Ring,
    /// As `Ring`, with `sendmsg` requests (the kernel copies a message
    /// header and an iovec for each).
    RingSendmsg,
    /// One `sendmmsg` call per turn, before the `io_uring_enter`.
    Sendmmsg,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            receive_buffers: 256,
            send_slots: 256,
            reply_len: 1232,
            defer_taskrun: true,
            send: SendPath::Ring,
        }
    }
}

/// What failed, and the kernel's reason.
#[derive(Debug)]
pub struct RingError {
    /// The step that failed, e.g. "io_uring_setup".
    pub step: &'static str,
    /// The kernel's error.
    pub source: io::Error,
}

impl std::fmt::Display for RingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.step, self.source)
    }
}

impl std::error::Error for RingError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

fn failed(step: &'static str) -> impl FnOnce(io::Error) -> RingError {
    move |source| RingError { step, source }
}

/// Counters since the ring was made.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams received.
    pub received: u64,
    /// Replies handed to the kernel.
    pub replied: u64,
    /// Datagrams dropped: too long, or no send slot free.
    pub dropped: u64,
    /// Replies the kernel failed to send.
    pub send_errors: u64,
    /// Times the multishot receive ended (out of buffers, or an error) and
    /// was armed again.
    pub rearmed: u64,
}

/// What one [`UdpRing::process`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Turn {
    /// Datagrams received and handed to the answer function.
    pub received: usize,
    /// Replies queued for sending.
    pub replied: usize,
    /// Whether the tick ([`UdpRing::arm_tick`]) fired.
    pub ticked: bool,
}

/// A UDP socket's io_uring. The socket must outlive it.
pub struct UdpRing {
    // Dropped first, after `Drop` has cancelled every request, so the kernel
    // never writes to the memory below once it is freed.
    ring: IoUring,
    socket: RawFd,
    buffers: ProvidedBuffers,
    receive_header: Box<[libc::msghdr]>,
    sends: SendSlots,
    armed: bool,
    /// A datagram has been received: an `EINVAL` receive is then an error of
    /// the moment, not a kernel without multishot `recvmsg`.
    receive_worked: bool,
    /// Being dropped: the receive is cancelled, not re-armed.
    closing: bool,
    notifier: Option<OwnedFd>,
    /// The tick's period, read by the kernel when the tick is submitted.
    tick: Box<types::Timespec>,
    tick_armed: bool,
    send_path: SendPath,
    stats: Stats,
    /// The last send error, for the caller's log.
    last_send_error: Option<i32>,
}

impl std::fmt::Debug for UdpRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpRing")
            .field("socket", &self.socket)
            .field("stats", &self.stats)
            .finish()
    }
}

impl UdpRing {
    /// Sets up a ring for a bound UDP socket and arms its receive. Errors
    /// name the step the kernel refused (seccomp, `io_uring_disabled`, or a
    /// kernel older than 5.19 without buffer rings).
    pub fn new(socket: &impl AsRawFd, options: Options) -> Result<UdpRing, RingError> {
        let slots = u32::from(options.send_slots.max(1));
        let buffers = options.receive_buffers.max(1).next_power_of_two();
        // Every slot's send, the receive and a cancel fit in the submission
        // queue at once, so a push never finds it full.
        let sq_entries = (slots + 4).next_power_of_two();
        let cq_entries = (2 * (slots + u32::from(buffers))).next_power_of_two();
        let build = |defer: bool| {
            let mut builder = IoUring::builder();
            builder.setup_cqsize(cq_entries).setup_submit_all();
            if defer {
                builder.setup_single_issuer().setup_defer_taskrun();
            }
            builder.build(sq_entries)
        };
        let ring = match build(options.defer_taskrun) {
            Err(e) if options.defer_taskrun && e.raw_os_error() == Some(libc::EINVAL) => {
                build(false)
            }
            other => other,
        }
        .map_err(failed("io_uring_setup"))?;
        let buffers = ProvidedBuffers::new(buffers)?;
        // SAFETY: the entries live in `buffers`, which outlives the ring's
        // use of them (see `Drop`).
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                buffers.entries as u64,
                buffers.count,
                BUFFER_GROUP,
                0,
            )
        }
        .map_err(failed("registering a provided-buffer ring"))?;
        let mut receive_header: Box<[libc::msghdr]> = zeroed(1);
        receive_header[0].msg_namelen = NAME_LEN as libc::socklen_t;
        let mut ring = UdpRing {
            ring,
            socket: socket.as_raw_fd(),
            buffers,
            receive_header,
            sends: SendSlots::new(usize::from(options.send_slots.max(1)), options.reply_len),
            armed: false,
            receive_worked: false,
            closing: false,
            notifier: None,
            tick: Box::new(types::Timespec::new()),
            tick_armed: false,
            send_path: options.send,
            stats: Stats::default(),
            last_send_error: None,
        };
        for bid in 0..ring.buffers.count {
            ring.buffers.provide(bid);
        }
        ring.buffers.publish();
        ring.arm();
        ring.flush()?;
        Ok(ring)
    }

    /// Counters since the ring was made.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Takes the last send error (an errno), if one happened since asked.
    pub fn take_send_error(&mut self) -> Option<io::Error> {
        self.last_send_error
            .take()
            .map(io::Error::from_raw_os_error)
    }

    fn arm(&mut self) {
        let receive = opcode::RecvMsgMulti::new(
            types::Fd(self.socket),
            self.receive_header.as_ptr(),
            BUFFER_GROUP,
        )
        .build()
        .user_data(RECEIVE);
        self.push(&receive);
        self.armed = true;
    }

    fn push(&mut self, entry: &squeue::Entry) {
        // SAFETY: every entry points at memory this ring owns until its
        // completion (the receive header, a send slot) or at none.
        if unsafe { self.ring.submission().push(entry) }.is_err() {
            // Sized so this does not happen (see `new`); if it does, make room.
            let _ = self.ring.submit();
            // SAFETY: as above.
            let _ = unsafe { self.ring.submission().push(entry) };
        }
    }

    /// Reaps every completion: each datagram received is passed to `answer`
    /// with its bytes, a reply buffer and its sender. `Some(len)` queues
    /// `len` bytes of the buffer as the reply to the sender. Replies go out
    /// at the next [`UdpRing::submit_and_wait`] or [`UdpRing::flush`].
    ///
    /// An error means the kernel cannot run this ring's receive (a kernel
    /// without multishot `recvmsg`): the caller should use another path.
    pub fn process(
        &mut self,
        mut answer: impl FnMut(&[u8], &mut [u8], Peer<'_>) -> Option<usize>,
    ) -> Result<Turn, RingError> {
        let mut turn = Turn::default();
        // Completions are copied out in chunks (they are 16 bytes each), so
        // the queue is not borrowed while they are handled, and the kernel
        // can reuse the space as we go.
        let mut chunk = [(0u64, 0i32, 0u32); 64];
        loop {
            let mut taken = 0;
            for (slot, cqe) in chunk.iter_mut().zip(&mut self.ring.completion()) {
                *slot = (cqe.user_data(), cqe.result(), cqe.flags());
                taken += 1;
            }
            if taken == 0 {
                break;
            }
            for &(user_data, result, flags) in &chunk[..taken] {
                self.complete(user_data, result, flags, &mut answer, &mut turn)?;
            }
        }
        self.buffers.publish();
        if !self.armed && !self.closing {
            self.stats.rearmed += 1;
            self.arm();
        }
        Ok(turn)
    }

    fn complete(
        &mut self,
        user_data: u64,
        result: i32,
        flags: u32,
        answer: &mut impl FnMut(&[u8], &mut [u8], Peer<'_>) -> Option<usize>,
        turn: &mut Turn,
    ) -> Result<(), RingError> {
        match user_data {
            RECEIVE => {
                if !cqueue::more(flags) {
                    self.armed = false;
                }
                if result == -libc::EINVAL && !self.receive_worked {
                    return Err(RingError {
                        step: "multishot recvmsg (Linux 6.0 or later)",
                        source: io::Error::from_raw_os_error(libc::EINVAL),
                    });
                }
                let Some(bid) = cqueue::buffer_select(flags) else {
                    return Ok(());
                };
                if result > 0 {
                    self.receive_worked = true;
                    self.stats.received += 1;
                    turn.received += 1;
                    if self.answer_one(bid, result as usize, answer) {
                        turn.replied += 1;
                    }
                }
                self.buffers.provide(bid);
            }
            CANCEL => {}
            TICK => {
                self.tick_armed = false;
                turn.ticked = true;
            }
            slot => {
                let slot = slot as usize;
                if result < 0 {
                    self.stats.send_errors += 1;
                    self.last_send_error = Some(-result);
                }
                self.sends.free.push(slot);
            }
        }
        Ok(())
    }

    /// Answers the datagram in buffer `bid`; true if a reply was queued.
    fn answer_one(
        &mut self,
        bid: u16,
        len: usize,
        answer: &mut impl FnMut(&[u8], &mut [u8], Peer<'_>) -> Option<usize>,
    ) -> bool {
        let received = self.buffers.buffer(bid, len);
        let Ok(message) = types::RecvMsgOut::parse(received, &self.receive_header[0]) else {
            self.stats.dropped += 1;
            return false;
        };
        if message.is_payload_truncated() || message.is_name_data_truncated() {
            self.stats.dropped += 1;
            return false;
        }
        let Some(slot) = self.sends.free.pop() else {
            self.stats.dropped += 1;
            return false;
        };
        let name = message.name_data();
        let name_len = name.len() as libc::socklen_t;
        // SAFETY: `name` is at most NAME_LEN bytes, less than a
        // sockaddr_storage; the slot's storage is not borrowed elsewhere.
        unsafe {
            std::ptr::copy_nonoverlapping(
                name.as_ptr(),
                (&raw mut self.sends.names[slot]).cast::<u8>(),
                name.len(),
            );
        }
        let capacity = self.sends.reply_len;
        let reply = &mut self.sends.replies[slot * capacity..(slot + 1) * capacity];
        let peer = Peer::new(&self.sends.names[slot], name_len);
        let Some(reply_len) = answer(message.payload_data(), reply, peer) else {
            self.sends.free.push(slot);
            return false;
        };
        let reply_len = reply_len.min(capacity);
        let entry = self.sends.point(slot, reply_len, name_len);
        if self.send_path == SendPath::Sendmmsg {
            self.sends.batch.push(slot);
            self.stats.replied += 1;
            return true;
        }
        let send = if self.send_path == SendPath::RingSendmsg {
            opcode::SendMsg::new(types::Fd(self.socket), entry).build()
        } else {
            let reply = self.sends.replies[slot * capacity..].as_ptr();
            opcode::Send::new(types::Fd(self.socket), reply, reply_len as u32)
                .dest_addr((&raw const self.sends.names[slot]).cast())
                .dest_addr_len(name_len)
                .build()
        }
        .user_data(slot as u64);
        self.push(&send);
        self.stats.replied += 1;
        true
    }

    /// Makes the next [`UdpRing::submit_and_wait`] return within `every`
    /// even if no datagram comes, by a one-shot timeout request (a no-op if
    /// one is pending). A caller that waits on the ring while other work
    /// waits elsewhere arms it before each wait: a timeout request costs the
    /// kernel a timer once per period, where a timeout argument to each
    /// `io_uring_enter` costs one per enter.
    pub fn arm_tick(&mut self, every: Duration) {
        if self.tick_armed {
            return;
        }
        *self.tick = types::Timespec::from(every);
        let tick = opcode::Timeout::new(&raw const *self.tick)
            .build()
            .user_data(TICK);
        self.push(&tick);
        self.tick_armed = true;
    }

    /// Hands queued replies (and a re-armed receive) to the kernel, and
    /// takes in what completed meanwhile, without waiting.
    pub fn flush(&mut self) -> Result<(), RingError> {
        self.send_batch();
        let pending = self.ring.submission().len();
        // SAFETY: a plain io_uring_enter with no argument struct.
        let entered = unsafe {
            self.ring.submitter().enter::<libc::sigset_t>(
                pending as u32,
                0,
                1, /* GETEVENTS */
                None,
            )
        };
        match entered {
            Ok(_) => Ok(()),
            Err(e) if interrupted(&e) => Ok(()),
            Err(e) => Err(RingError {
                step: "io_uring_enter",
                source: e,
            }),
        }
    }

    /// Sends the queued replies and sleeps until a datagram arrives or
    /// `timeout` passes, in one `io_uring_enter`.
    pub fn submit_and_wait(&mut self, timeout: Option<Duration>) -> Result<(), RingError> {
        self.send_batch();
        // Every send in flight posts one completion (most at once, as the
        // enter issues them), so waiting for one more than those is waiting
        // for the next receive.
        let want = self.sends.count - self.sends.free.len() + 1;
        let waited = match timeout {
            None => self.ring.submit_and_wait(want),
            Some(timeout) => {
                let timespec = types::Timespec::from(timeout);
                let args = types::SubmitArgs::new().timespec(&timespec);
                self.ring.submitter().submit_with_args(want, &args)
            }
        };
        match waited {
            Ok(_) => Ok(()),
            Err(e) if interrupted(&e) || e.raw_os_error() == Some(libc::ETIME) => Ok(()),
            Err(e) => Err(RingError {
                step: "io_uring_enter",
                source: e,
            }),
        }
    }

    /// Sends the replies batched for `sendmmsg` ([`SendPath::Sendmmsg`]).
    fn send_batch(&mut self) {
        let count = self.sends.batch.len();
        if count == 0 {
            return;
        }
        let mut first = 0;
        while first < count {
            // SAFETY: the batched slots' headers point at their replies and
            // addresses, owned by `self.sends` and alive across the call;
            // mmsghdr starts with the msghdr.
            let sent = unsafe {
                let headers = self.sends.batch[first..].iter().map(|&slot| libc::mmsghdr {
                    msg_hdr: self.sends.headers[slot],
                    msg_len: 0,
                });
                for (i, header) in headers.enumerate() {
                    self.sends.mmsg[i] = header;
                }
                libc::sendmmsg(
                    self.socket,
                    self.sends.mmsg.as_mut_ptr(),
                    (count - first) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if sent <= 0 {
                // A full buffer or an unreachable peer: this reply is lost.
                self.stats.send_errors += 1;
                self.last_send_error = Some(io::Error::last_os_error().raw_os_error().unwrap_or(0));
                first += 1;
            } else {
                first += sent as usize;
            }
        }
        for slot in self.sends.batch.drain(..) {
            self.sends.free.push(slot);
        }
    }

    /// Whether completions wait to be processed.
    pub fn ready(&mut self) -> bool {
        let mut completions = self.ring.completion();
        completions.sync();
        !completions.is_empty()
    }

    /// An eventfd the ring signals when completions arrive while parked (see
    /// [`UdpRing::park`]). Made on first call.
    pub fn notifier(&mut self) -> Result<RawFd, RingError> {
        if let Some(fd) = &self.notifier {
            return Ok(fd.as_raw_fd());
        }
        // Blocking on purpose: a reader that is itself an io_uring read
        // (glommio's) then waits for the count instead of getting EAGAIN.
        // SAFETY: eventfd takes no pointers.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if raw < 0 {
            return Err(RingError {
                step: "eventfd",
                source: io::Error::last_os_error(),
            });
        }
        // SAFETY: a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        self.ring.completion().disable_eventfd();
        self.ring
            .submitter()
            .register_eventfd(fd.as_raw_fd())
            .map_err(failed("registering the ring's eventfd"))?;
        let raw = fd.as_raw_fd();
        self.notifier = Some(fd);
        Ok(raw)
    }

    /// Before a caller sleeps on [`UdpRing::notifier`]: turns the signal on,
    /// and returns false (signal off again) if completions already wait, in
    /// which case the caller should process them instead of sleeping.
    pub fn park(&mut self) -> Result<bool, RingError> {
        self.ring.completion().enable_eventfd();
        // Run deferred work first: it may post completions that arrived
        // before the signal was on.
        self.flush()?;
        if self.ready() {
            self.ring.completion().disable_eventfd();
            return Ok(false);
        }
        Ok(true)
    }

    /// After waking from [`UdpRing::notifier`]: turns the signal off, so a
    /// busy ring does not signal for each completion.
    pub fn unpark(&mut self) {
        self.ring.completion().disable_eventfd();
    }
}

fn interrupted(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EINTR) | Some(libc::EAGAIN) | Some(libc::EBUSY)
    )
}

impl Drop for UdpRing {
    /// Cancels the receive and waits for it and every send to complete, so
    /// the kernel is done with the buffers before they are freed. If it does
    /// not finish within a second, the buffers are leaked rather than freed
    /// under the kernel.
    fn drop(&mut self) {
        self.closing = true;
        let cancel = opcode::AsyncCancel::new(RECEIVE).build().user_data(CANCEL);
        self.push(&cancel);
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        // The receive is armed until its last completion (no MORE flag) is
        // reaped; each send until its completion.
        while self.armed || self.tick_armed || self.sends.free.len() < self.sends.count {
            if std::time::Instant::now() > deadline {
                self.buffers.leak();
                self.sends.leak();
                std::mem::forget(std::mem::take(&mut self.receive_header));
                return;
            }
            let _ = self.submit_and_wait(Some(Duration::from_millis(10)));
            let _ = self.process(|_, _, _| None);
        }
    }
}

/// A provided-buffer ring: the kernel takes buffers from its head as
/// datagrams arrive; this side gives them back at its tail.
struct ProvidedBuffers {
    /// `count` ring entries in page-aligned memory (mmap), shared with the kernel.
    entries: *mut types::BufRingEntry,
    count: u16,
    tail: u16,
    memory: Box<[u8]>,
}

impl ProvidedBuffers {
    fn new(count: u16) -> Result<ProvidedBuffers, RingError> {
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
            tail: 0,
            memory: vec![0u8; usize::from(count) * RECEIVE_BUFFER_LEN].into_boxed_slice(),
        })
    }

    /// Buffer `bid`'s first `len` bytes, as the kernel filled them.
    fn buffer(&self, bid: u16, len: usize) -> &[u8] {
        let start = usize::from(bid % self.count) * RECEIVE_BUFFER_LEN;
        &self.memory[start..start + len.min(RECEIVE_BUFFER_LEN)]
    }

    /// Gives buffer `bid` back to the kernel (seen at the next `publish`).
    fn provide(&mut self, bid: u16) {
        let bid = bid % self.count;
        let index = usize::from(self.tail & (self.count - 1));
        let address = self.memory.as_ptr() as u64 + (usize::from(bid) * RECEIVE_BUFFER_LEN) as u64;
        // SAFETY: `index < count`, within the mapping; the kernel reads this
        // entry only once the tail below passes it.
        let entry = unsafe { &mut *self.entries.add(index) };
        entry.set_addr(address);
        entry.set_len(RECEIVE_BUFFER_LEN as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Publishes the buffers given back since the last call.
    fn publish(&self) {
        // SAFETY: the tail is a u16 inside the first entry of the mapping,
        // which the kernel reads concurrently, hence atomic.
        let tail = unsafe { &*types::BufRingEntry::tail(self.entries).cast::<AtomicU16>() };
        tail.store(self.tail, Ordering::Release);
    }

    fn leak(&mut self) {
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
struct SendSlots {
    count: usize,
    reply_len: usize,
    headers: Box<[libc::msghdr]>,
    iov: Box<[libc::iovec]>,
    names: Box<[libc::sockaddr_storage]>,
    replies: Box<[u8]>,
    free: Vec<usize>,
    /// Slots whose replies wait for the turn's `sendmmsg`.
    batch: Vec<usize>,
    mmsg: Box<[libc::mmsghdr]>,
}

impl SendSlots {
    fn new(count: usize, reply_len: usize) -> SendSlots {
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
    fn point(&mut self, slot: usize, len: usize, name_len: libc::socklen_t) -> *const libc::msghdr {
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

    fn leak(&mut self) {
        std::mem::forget(std::mem::take(&mut self.headers));
        std::mem::forget(std::mem::take(&mut self.iov));
        std::mem::forget(std::mem::take(&mut self.names));
        std::mem::forget(std::mem::take(&mut self.replies));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    fn echo_turns(ring: &mut UdpRing, want: usize) -> usize {
        let mut answered = 0;
        for _ in 0..200 {
            ring.submit_and_wait(Some(Duration::from_millis(10)))
                .unwrap();
            let turn = ring
                .process(|query, out, peer| {
                    assert!(peer.address().is_some());
                    out[..query.len()].copy_from_slice(query);
                    out[0] ^= 0xff;
                    Some(query.len())
                })
                .unwrap();
            answered += turn.replied;
            if answered >= want {
                ring.flush().unwrap();
                break;
            }
        }
        answered
    }

    #[test]
    fn a_ring_answers_each_datagram_to_its_sender_across_buffer_exhaustion() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let options = Options {
            receive_buffers: 4,
            send_slots: 8,
            ..Options::default()
        };
        let mut ring = UdpRing::new(&server, options).unwrap();
        let clients: Vec<UdpSocket> = (0..3)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        clients
            .iter()
            .for_each(|c| c.set_read_timeout(Some(Duration::from_secs(2))).unwrap());
        // More datagrams than receive buffers: the receive runs dry and is re-armed.
        let rounds = 5;
        for round in 0..rounds {
            for (i, client) in clients.iter().enumerate() {
                client
                    .send_to(&[i as u8, round as u8, 7], server.local_addr().unwrap())
                    .unwrap();
            }
        }
        assert_eq!(
            echo_turns(&mut ring, rounds * clients.len()),
            rounds * clients.len()
        );
        for (i, client) in clients.iter().enumerate() {
            for round in 0..rounds {
                let mut buf = [0u8; 16];
                let (len, from) = client.recv_from(&mut buf).unwrap();
                assert_eq!(from, server.local_addr().unwrap());
                assert_eq!(&buf[..len], &[(i as u8) ^ 0xff, round as u8, 7]);
            }
        }
        let stats = ring.stats();
        assert_eq!(stats.received, (rounds * clients.len()) as u64);
        assert_eq!(stats.send_errors, 0);
        assert!(stats.rearmed >= 1, "{stats:?}");
    }

    #[test]
    fn a_parked_ring_signals_its_eventfd_when_a_datagram_arrives() {
        let server = UdpSocket::bind("[::1]:0").unwrap();
        let mut ring = UdpRing::new(&server, Options::default()).unwrap();
        let fd = ring.notifier().unwrap();
        assert!(ring.park().unwrap(), "nothing waits yet");
        let client = UdpSocket::bind("[::1]:0").unwrap();
        client
            .send_to(b"hello", server.local_addr().unwrap())
            .unwrap();
        let mut count = [0u8; 8];
        // SAFETY: reads 8 bytes into a local array from the ring's eventfd.
        let read = unsafe { libc::read(fd, count.as_mut_ptr().cast(), 8) };
        assert_eq!(read, 8);
        ring.unpark();
        assert_eq!(echo_turns(&mut ring, 1), 1);
        let mut buf = [0u8; 16];
        client
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let (len, _) = client.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"\x97ello");
    }

    #[test]
    fn a_datagram_longer_than_a_buffer_is_dropped_and_counted() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut ring = UdpRing::new(&server, Options::default()).unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .send_to(&[1u8; RECEIVE_BUFFER_LEN], server.local_addr().unwrap())
            .unwrap();
        client.send_to(b"ok", server.local_addr().unwrap()).unwrap();
        assert_eq!(echo_turns(&mut ring, 1), 1);
        assert_eq!(ring.stats().dropped, 1);
    }
}
