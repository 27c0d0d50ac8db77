//! UDP on io_uring: one ring for one or more sockets ([`UdpRing::listen_also`]),
//! owned by one thread.
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
//! - Other sockets can be received on in the same ring ([`UdpRing::watch`]:
//!   a forwarder's upstream sockets), with buffers of their own, and any
//!   socket can send through it ([`UdpRing::send_to`]), so that a forwarded
//!   query's send, its reply and the client's reply all ride on the
//!   `io_uring_enter` the loop makes anyway.
//!
//! The kernel does a ring's completion work (taking a datagram into a
//! buffer, ending a send) when the thread next enters the kernel, not by
//! interrupting it for each datagram ([`TaskRun::Cooperative`]).

use crate::Peer;
use crate::mmsg::zeroed;
use buffers::{ProvidedBuffers, SendSlots};
use io_uring::{IoUring, cqueue, opcode, squeue, types};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

mod buffers;
mod watched;

pub use watched::Watch;
use watched::Watched;

/// Bytes per provided receive buffer: the kernel's 16-byte header, the
/// sender's address, then the datagram (up to 2004 bytes; longer ones are
/// dropped, as no DNS query is that long).
pub const RECEIVE_BUFFER_LEN: usize = 2048;
/// Space kept for the sender's address in each receive buffer (IPv4 or IPv6).
const NAME_LEN: usize = std::mem::size_of::<libc::sockaddr_in6>();
/// The buffer group of the one buffer ring each ring has.
const BUFFER_GROUP: u16 = 0;
/// `user_data` of a listening socket's multishot receive: this bit, and
/// the socket's index (0: the ring's own; [`UdpRing::listen_also`]) below
/// 2^32. Send slots use their index, below [`WATCHED`].
const RECEIVE: u64 = 1 << 41;
/// `user_data` of the cancellation submitted when a ring is dropped.
const CANCEL: u64 = u64::MAX - 1;
/// `user_data` of the tick ([`UdpRing::arm_tick`]).
const TICK: u64 = u64::MAX - 2;
/// `user_data` of the readiness poll ([`UdpRing::watch_readable`]).
const READABLE: u64 = u64::MAX - 3;
/// The buffer group of the watched sockets' receives.
const WATCHED_GROUP: u16 = 1;
/// `user_data` of a watched socket's receive: this bit, and its index
/// below 2^32 (send slots are below this bit).
const WATCHED: u64 = 1 << 40;

/// The index below 2^32 in a `user_data` tagged `tag` ([`RECEIVE`] or
/// [`WATCHED`]), or `None` if it bears another tag.
fn tagged(tag: u64, user_data: u64) -> Option<usize> {
    (user_data & !0xffff_ffff == tag).then_some((user_data & 0xffff_ffff) as usize)
}

/// The listening socket whose receive `user_data` is, by index.
fn listen_of(user_data: u64) -> Option<usize> {
    tagged(RECEIVE, user_data)
}

/// A socket the ring answers datagrams on.
#[derive(Debug)]
struct Listening {
    fd: RawFd,
    /// Its multishot receive is in the kernel.
    armed: bool,
}

/// Whether `user_data` is a watched socket's receive.
fn is_watched(user_data: u64) -> bool {
    tagged(WATCHED, user_data).is_some()
}
/// Bytes per receive buffer of a watched socket: the kernel's header, the
/// sender's address, and a datagram of more than 4096 bytes; a longer one
/// is passed on marked truncated.
pub const WATCHED_BUFFER_LEN: usize = 4096 + 128;

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
    /// When the kernel does the ring's completion work; a kernel without
    /// the flags asked for gets [`TaskRun::Interrupting`].
    pub task_run: TaskRun,
    /// How replies leave.
    pub send: SendPath,
    /// Receive buffers shared by the watched sockets ([`UdpRing::watch`]);
    /// 0 for none (then nothing can be watched). A power of two.
    pub watched_buffers: u16,
}

/// When the kernel does a ring's completion work: the `io_uring_setup`
/// flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskRun {
    /// `COOP_TASKRUN`, `TASKRUN_FLAG` and `SINGLE_ISSUER` (Linux 6.0): at
    /// the thread's next entry to the kernel, with no interrupt, and a
    /// thread asleep anywhere (in another ring, say) is woken for it. What
    /// a ring that parks on its [`UdpRing::notifier`] needs.
    Cooperative,
    /// `DEFER_TASKRUN` and `SINGLE_ISSUER` (Linux 6.1): only inside this
    /// ring's own `io_uring_enter` with `GETEVENTS`. No cheaper than
    /// `Cooperative` here, and a thread parked elsewhere on the notifier
    /// hears of a datagram late: 13 to 16 ms after it came, on Linux 6.18
    /// (bench/results/io-uring.md). Only for a thread that never parks.
    Deferred,
    /// No flags: each completion interrupts the thread (1.4 times the CPU
    /// per datagram of the others).
    Interrupting,
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
            task_run: TaskRun::Cooperative,
            send: SendPath::Ring,
            watched_buffers: 0,
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
    /// Datagrams dropped: too long, or unanswerable.
    pub dropped: u64,
    /// Replies sent at once with `sendto`, every send slot being taken.
    pub sent_directly: u64,
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
    /// Whether the descriptor of [`UdpRing::watch_readable`] became
    /// readable.
    pub readable: bool,
    /// Datagrams received on watched sockets and handed on.
    pub watched: usize,
}

/// A UDP socket's io_uring. The socket must outlive it.
pub struct UdpRing {
    // Dropped first, after `Drop` has cancelled every request, so the kernel
    // never writes to the memory below once it is freed.
    ring: IoUring,
    /// The sockets answered on: the ring's own first.
    listens: Vec<Listening>,
    buffers: ProvidedBuffers,
    /// The watched sockets' buffers; `None` when none may be watched.
    watched_buffers: Option<ProvidedBuffers>,
    watched: Vec<Watched>,
    receive_header: Box<[libc::msghdr]>,
    sends: SendSlots,
    /// A datagram has been received: an `EINVAL` receive is then an error of
    /// the moment, not a kernel without multishot `recvmsg`.
    receive_worked: bool,
    /// Being dropped: the receive is cancelled, not re-armed.
    closing: bool,
    notifier: Option<OwnedFd>,
    /// The tick's period, read by the kernel when the tick is submitted.
    tick: Box<types::Timespec>,
    tick_armed: bool,
    /// The descriptor watched for readability, and whether its poll is in
    /// the kernel.
    readable: Option<RawFd>,
    readable_armed: bool,
    send_path: SendPath,
    stats: Stats,
    /// The last send error, for the caller's log.
    last_send_error: Option<i32>,
    /// Completions copied out of the queue, kept for the next turn.
    completions: Vec<(u64, i32, u32)>,
    /// A reply written when every send slot is taken, sent at once.
    overflow: Box<[u8]>,
}

impl std::fmt::Debug for UdpRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpRing")
            .field("listens", &self.listens)
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
        let build = |task_run: TaskRun| {
            let mut builder = IoUring::builder();
            builder.setup_cqsize(cq_entries).setup_submit_all();
            match task_run {
                TaskRun::Cooperative => {
                    builder
                        .setup_single_issuer()
                        .setup_coop_taskrun()
                        .setup_taskrun_flag();
                }
                TaskRun::Deferred => {
                    builder.setup_single_issuer().setup_defer_taskrun();
                }
                TaskRun::Interrupting => {}
            }
            builder.build(sq_entries)
        };
        let ring = match build(options.task_run) {
            Err(e)
                if options.task_run != TaskRun::Interrupting
                    && e.raw_os_error() == Some(libc::EINVAL) =>
            {
                build(TaskRun::Interrupting)
            }
            other => other,
        }
        .map_err(failed("io_uring_setup"))?;
        let buffers = ProvidedBuffers::new(buffers, RECEIVE_BUFFER_LEN)?;
        buffers.register(&ring, BUFFER_GROUP)?;
        let watched_buffers = match options.watched_buffers {
            0 => None,
            count => {
                let watched = ProvidedBuffers::new(count.next_power_of_two(), WATCHED_BUFFER_LEN)?;
                watched.register(&ring, WATCHED_GROUP)?;
                Some(watched)
            }
        };
        let mut receive_header: Box<[libc::msghdr]> = zeroed(1);
        receive_header[0].msg_namelen = NAME_LEN as libc::socklen_t;
        let mut ring = UdpRing {
            ring,
            listens: vec![Listening {
                fd: socket.as_raw_fd(),
                armed: false,
            }],
            buffers,
            watched_buffers,
            watched: Vec::new(),
            receive_header,
            sends: SendSlots::new(usize::from(options.send_slots.max(1)), options.reply_len),
            receive_worked: false,
            closing: false,
            notifier: None,
            tick: Box::new(types::Timespec::new()),
            tick_armed: false,
            readable: None,
            readable_armed: false,
            send_path: options.send,
            stats: Stats::default(),
            last_send_error: None,
            completions: Vec::with_capacity(cq_entries as usize),
            overflow: vec![0u8; options.reply_len].into_boxed_slice(),
        };
        for bid in 0..ring.buffers.count {
            ring.buffers.provide(bid);
        }
        ring.buffers.publish();
        if let Some(watched) = &mut ring.watched_buffers {
            for bid in 0..watched.count {
                watched.provide(bid);
            }
            watched.publish();
        }
        ring.arm(0);
        ring.flush()?;
        Ok(ring)
    }

    /// Answers datagrams on `socket` too, with the same buffers: each goes
    /// to [`UdpRing::process_with`]'s `answer` with the index returned
    /// here (the ring's own socket is 0), and its reply leaves on `socket`.
    /// So one ring, and one wait, serves every address a core listens on.
    /// `socket` must outlive the ring.
    pub fn listen_also(&mut self, socket: &impl AsRawFd) -> usize {
        self.listens.push(Listening {
            fd: socket.as_raw_fd(),
            armed: false,
        });
        let index = self.listens.len() - 1;
        self.arm(index);
        index
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

    fn arm(&mut self, listen: usize) {
        let receive = opcode::RecvMsgMulti::new(
            types::Fd(self.listens[listen].fd),
            self.receive_header.as_ptr(),
            BUFFER_GROUP,
        )
        .build()
        .user_data(RECEIVE | listen as u64);
        self.push(&receive);
        self.listens[listen].armed = true;
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
        self.process_with(
            |_, query, out, peer| answer(query, out, peer),
            |_, _, _, _| {},
        )
    }

    /// As [`UdpRing::process`], with the index of the listening socket a
    /// datagram came to ([`UdpRing::listen_also`]) first in `answer`'s
    /// arguments; and each datagram received on a watched socket goes to
    /// `watched` with the socket's [`Watch`], its bytes, whether it was cut
    /// short (longer than a buffer), and its sender.
    pub fn process_with(
        &mut self,
        mut answer: impl FnMut(usize, &[u8], &mut [u8], Peer<'_>) -> Option<usize>,
        mut watched: impl FnMut(Watch, &[u8], bool, Peer<'_>),
    ) -> Result<Turn, RingError> {
        let mut turn = Turn::default();
        // Completions are copied out (16 bytes each), so the queue is not
        // borrowed while they are handled. Sends' completions are handled
        // before any datagram is answered: the queue holds them in the order
        // they came, and a burst of receives ahead of them would otherwise
        // find every send slot still taken.
        let mut completions = std::mem::take(&mut self.completions);
        loop {
            completions.clear();
            completions.extend(
                (&mut self.ring.completion())
                    .map(|cqe| (cqe.user_data(), cqe.result(), cqe.flags())),
            );
            if completions.is_empty() {
                break;
            }
            for &(user_data, result, flags) in &completions {
                if is_watched(user_data) {
                    self.complete_watched(user_data, result, flags, &mut watched, &mut turn);
                } else if listen_of(user_data).is_none() {
                    self.complete(user_data, result, flags, &mut answer, &mut turn)?;
                }
            }
            for &(user_data, result, flags) in &completions {
                if listen_of(user_data).is_some() {
                    self.complete(user_data, result, flags, &mut answer, &mut turn)?;
                }
            }
        }
        self.completions = completions;
        self.buffers.publish();
        for listen in 0..self.listens.len() {
            if !self.listens[listen].armed && !self.closing {
                self.stats.rearmed += 1;
                self.arm(listen);
            }
        }
        if let Some(buffers) = &self.watched_buffers {
            buffers.publish();
        }
        if self.readable.is_some() && !self.readable_armed && !self.closing {
            self.arm_readable();
        }
        for index in 0..self.watched.len() {
            let socket = &self.watched[index];
            if socket.wanted && !socket.armed && !self.closing {
                self.stats.rearmed += 1;
                self.arm_watched(index);
            }
        }
        Ok(turn)
    }

    /// Queues `bytes` to the address in `to` (`to_len` bytes of it) on
    /// `socket`, sent at the next enter. False, and nothing queued, when no
    /// send slot is free or `bytes` is longer than a slot: the caller sends
    /// it another way. `socket` must stay open until then.
    pub fn send_to(
        &mut self,
        socket: RawFd,
        bytes: &[u8],
        to: &libc::sockaddr_storage,
        to_len: libc::socklen_t,
    ) -> bool {
        let capacity = self.sends.reply_len;
        if bytes.len() > capacity {
            return false;
        }
        let Some(slot) = self.sends.free.pop() else {
            return false;
        };
        self.sends.replies[slot * capacity..slot * capacity + bytes.len()].copy_from_slice(bytes);
        self.sends.names[slot] = *to;
        let send = opcode::Send::new(
            types::Fd(socket),
            self.sends.replies[slot * capacity..].as_ptr(),
            bytes.len() as u32,
        )
        .dest_addr((&raw const self.sends.names[slot]).cast())
        .dest_addr_len(to_len)
        .build()
        .user_data(slot as u64);
        self.push(&send);
        true
    }

    fn complete(
        &mut self,
        user_data: u64,
        result: i32,
        flags: u32,
        answer: &mut impl FnMut(usize, &[u8], &mut [u8], Peer<'_>) -> Option<usize>,
        turn: &mut Turn,
    ) -> Result<(), RingError> {
        if let Some(listen) = listen_of(user_data) {
            if !cqueue::more(flags)
                && let Some(listening) = self.listens.get_mut(listen)
            {
                listening.armed = false;
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
                if self.answer_one(listen, bid, result as usize, answer) {
                    turn.replied += 1;
                }
            }
            self.buffers.provide(bid);
            return Ok(());
        }
        match user_data {
            CANCEL => {}
            READABLE => {
                if !cqueue::more(flags) {
                    self.readable_armed = false;
                }
                if result > 0 {
                    turn.readable = true;
                }
            }
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

    /// Answers the datagram in buffer `bid`, which came to listening
    /// socket `listen`; true if a reply was queued.
    fn answer_one(
        &mut self,
        listen: usize,
        bid: u16,
        len: usize,
        answer: &mut impl FnMut(usize, &[u8], &mut [u8], Peer<'_>) -> Option<usize>,
    ) -> bool {
        let Some(socket) = self.listens.get(listen).map(|l| l.fd) else {
            return false;
        };
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
            return answer_directly(
                socket,
                &mut self.overflow,
                &mut self.stats,
                &mut self.last_send_error,
                (message.payload_data(), message.name_data()),
                &mut |query, out, peer| answer(listen, query, out, peer),
            );
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
        let Some(reply_len) = answer(listen, message.payload_data(), reply, peer) else {
            self.sends.free.push(slot);
            return false;
        };
        let reply_len = reply_len.min(capacity);
        let entry = self.sends.point(slot, reply_len, name_len);
        // One sendmmsg per turn goes to the ring's own socket: the others'
        // replies leave as send requests.
        if self.send_path == SendPath::Sendmmsg && listen == 0 {
            self.sends.batch.push(slot);
            self.stats.replied += 1;
            return true;
        }
        let send = if self.send_path == SendPath::RingSendmsg {
            opcode::SendMsg::new(types::Fd(socket), entry).build()
        } else {
            let reply = self.sends.replies[slot * capacity..].as_ptr();
            opcode::Send::new(types::Fd(socket), reply, reply_len as u32)
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
                    self.listens[0].fd,
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

/// Answers a datagram when every send slot is taken (a burst bigger than
/// the slots): the reply is written to the spare buffer and sent at once
/// with one `sendto`, rather than the query dropped.
fn answer_directly(
    socket: RawFd,
    overflow: &mut [u8],
    stats: &mut Stats,
    last_send_error: &mut Option<i32>,
    (query, name): (&[u8], &[u8]),
    answer: &mut impl FnMut(&[u8], &mut [u8], Peer<'_>) -> Option<usize>,
) -> bool {
    // SAFETY: all-zero bytes are a valid (unset) socket address.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    // SAFETY: `name` is at most NAME_LEN bytes, less than a
    // sockaddr_storage, and does not overlap the local.
    unsafe {
        std::ptr::copy_nonoverlapping(name.as_ptr(), (&raw mut storage).cast::<u8>(), name.len());
    }
    let name_len = name.len() as libc::socklen_t;
    let peer = Peer::new(&storage, name_len);
    let Some(len) = answer(query, overflow, peer) else {
        return false;
    };
    let len = len.min(overflow.len());
    // SAFETY: the reply and the address are live locals and fields for
    // the length of the call.
    let sent = unsafe {
        libc::sendto(
            socket,
            overflow.as_ptr().cast(),
            len,
            libc::MSG_DONTWAIT,
            (&raw const storage).cast(),
            name_len,
        )
    };
    if sent < 0 {
        stats.send_errors += 1;
        *last_send_error = io::Error::last_os_error().raw_os_error();
        return false;
    }
    stats.sent_directly += 1;
    stats.replied += 1;
    true
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
        for listen in 0..self.listens.len() {
            let cancel = opcode::AsyncCancel::new(RECEIVE | listen as u64)
                .build()
                .user_data(CANCEL);
            self.push(&cancel);
        }
        for index in 0..self.watched.len() {
            if self.watched[index].armed {
                self.unwatch(Watch(index as u32));
            }
        }
        self.unwatch_readable();
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        // The receive is armed until its last completion (no MORE flag) is
        // reaped; each send until its completion.
        while self.listens.iter().any(|l| l.armed)
            || self.tick_armed
            || self.readable_armed
            || self.sends.free.len() < self.sends.count
            || self.watched.iter().any(|w| w.armed)
        {
            if std::time::Instant::now() > deadline {
                self.buffers.leak();
                if let Some(watched) = &mut self.watched_buffers {
                    watched.leak();
                }
                self.sends.leak();
                std::mem::forget(std::mem::take(&mut self.receive_header));
                return;
            }
            let _ = self.submit_and_wait(Some(Duration::from_millis(10)));
            let _ = self.process(|_, _, _| None);
        }
    }
}

#[cfg(test)]
mod tests;
