//! The load generator: DNS queries over UDP or TCP at a fixed offered rate
//! (open loop) or as fast as replies come back (closed loop), every reply
//! checked against its query, and latency recorded in HDR histograms that
//! are merged across threads.
//!
//! In open loop, send times are scheduled in advance and latency is measured
//! from the *scheduled* time, so a server stall shows up as latency rather
//! than silently slowing the sender (no coordinated omission).
//!
//! Each thread is pinned to a CPU if asked, owns its sockets (UDP sockets
//! connected to the server, or persistent pipelined TCP connections), and
//! moves UDP datagrams in batches of up to 64 per system call with
//! `sendmmsg`/`recvmmsg`. It spins rather than sleeps when the next send is
//! near, so its own scheduling does not show up as server latency.

use crate::mmsg::{BATCH, Mmsg};
use hdrhistogram::Histogram;
use kubewire_wire::NameBuf;
use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// One query of the mix: name and type number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuerySpec {
    /// The name.
    pub name: String,
    /// The type number.
    pub qtype: u16,
}

/// Reads a query file in dnsperf's format: `name TYPE` per line; `#` comments.
pub fn parse_query_file(text: &str) -> Result<Vec<QuerySpec>, String> {
    let mut queries = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
            return Err(format!("line {}: expected `name TYPE`", number + 1));
        };
        let qtype = kubewire_wire::rtype::from_name(kind)
            .ok_or_else(|| format!("line {}: unknown type {kind:?}", number + 1))?;
        NameBuf::from_text(name).map_err(|e| format!("line {}: {name:?}: {e}", number + 1))?;
        queries.push(QuerySpec {
            name: name.to_string(),
            qtype,
        });
    }
    if queries.is_empty() {
        return Err("no queries in the file".into());
    }
    Ok(queries)
}

/// How queries travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// UDP, from many source ports, batched.
    Udp,
    /// TCP: persistent connections, queries pipelined.
    Tcp,
}

/// How to run.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// The server.
    pub server: SocketAddr,
    /// The query mix, sent in order, round and round.
    pub queries: Vec<QuerySpec>,
    /// Offered queries per second in all; 0 means closed loop.
    pub rate: u64,
    /// How long to send.
    pub duration: Duration,
    /// Source sockets (UDP ports or TCP connections) in all, spread over
    /// the threads, so that SO_REUSEPORT spreads the load over the cores.
    pub sockets: usize,
    /// Closed loop: queries in flight at once, in all.
    pub in_flight: usize,
    /// A query unanswered this long is lost.
    pub timeout: Duration,
    /// Sending threads.
    pub threads: usize,
    /// CPUs to pin the threads to, in turn; empty leaves them unpinned.
    pub cpus: Vec<usize>,
    /// UDP or TCP.
    pub transport: Transport,
    /// Every query sent asks a name never asked before: its first label's
    /// first bytes (up to 16) are overwritten with a count, from a start
    /// drawn per run. For measuring a cache's misses.
    pub unique_names: bool,
}

impl Default for LoadConfig {
    fn default() -> LoadConfig {
        LoadConfig {
            server: SocketAddr::from(([127, 0, 0, 1], 5353)),
            queries: Vec::new(),
            rate: 10_000,
            duration: Duration::from_secs(10),
            sockets: 16,
            in_flight: 256,
            timeout: Duration::from_secs(1),
            threads: 1,
            cpus: Vec::new(),
            transport: Transport::Udp,
            unique_names: false,
        }
    }
}

/// What a run measured.
#[derive(Debug)]
pub struct LoadReport {
    /// Queries sent.
    pub sent: u64,
    /// Replies that matched their query.
    pub answered: u64,
    /// Queries with no matching reply within the timeout.
    pub lost: u64,
    /// Replies that did not match any query in flight, or whose question
    /// differs from the query's.
    pub mismatched: u64,
    /// Answered queries per RCODE name.
    pub rcodes: BTreeMap<String, u64>,
    /// Seconds from the first send to the last reply or timeout.
    pub elapsed_s: f64,
    /// Latency of answered queries, microseconds.
    pub latency_us: Histogram<u64>,
    /// The server's CPU time over the run, if its PID was given.
    pub server_cpu_s: Option<f64>,
    /// The user-mode part of it (clock ticks, so coarser: 10 ms).
    pub server_user_s: Option<f64>,
}

/// The percentiles reported, as quantiles.
pub const QUANTILES: [(&str, f64); 5] = [
    ("p50", 0.5),
    ("p90", 0.9),
    ("p99", 0.99),
    ("p99.9", 0.999),
    ("p99.99", 0.9999),
];

impl LoadReport {
    fn empty() -> io::Result<LoadReport> {
        Ok(LoadReport {
            sent: 0,
            answered: 0,
            lost: 0,
            mismatched: 0,
            rcodes: BTreeMap::new(),
            elapsed_s: 0.0,
            latency_us: Histogram::new_with_bounds(1, 60_000_000, 3)
                .map_err(|e| io::Error::other(e.to_string()))?,
            server_cpu_s: None,
            server_user_s: None,
        })
    }

    fn merge(&mut self, other: LoadReport) {
        self.sent += other.sent;
        self.answered += other.answered;
        self.lost += other.lost;
        self.mismatched += other.mismatched;
        for (rcode, count) in other.rcodes {
            *self.rcodes.entry(rcode).or_default() += count;
        }
        self.elapsed_s = self.elapsed_s.max(other.elapsed_s);
        let _ = self.latency_us.add(&other.latency_us);
    }

    /// Answered queries per second of sending.
    pub fn answered_qps(&self, duration: Duration) -> f64 {
        self.answered as f64 / duration.as_secs_f64().max(1e-9)
    }

    /// The server's CPU microseconds per answered query, if known.
    pub fn server_cpu_us_per_query(&self) -> Option<f64> {
        self.server_cpu_s
            .map(|cpu| cpu * 1e6 / (self.answered.max(1) as f64))
    }

    /// The server's user-mode CPU microseconds per answered query, if
    /// known. The kernel's share of a query (receive and send) varies from
    /// round to round far more than the server's own code does, so a change
    /// to that code shows here first.
    pub fn server_user_us_per_query(&self) -> Option<f64> {
        self.server_user_s
            .map(|cpu| cpu * 1e6 / (self.answered.max(1) as f64))
    }

    /// Latency at a quantile, microseconds.
    pub fn latency_at(&self, quantile: f64) -> u64 {
        self.latency_us.value_at_quantile(quantile)
    }

    /// The report as JSON, with the percentile curve for plotting.
    pub fn to_json(&self, config: &LoadConfig) -> serde_json::Value {
        let h = &self.latency_us;
        let mut latency = serde_json::Map::new();
        for (name, quantile) in QUANTILES {
            latency.insert(name.into(), h.value_at_quantile(quantile).into());
        }
        latency.insert("max".into(), h.max().into());
        latency.insert("mean".into(), h.mean().into());
        // The curve: latency at 1 - 10^(-k/10), k = 0 … 50 (p0 to p99.999).
        let curve: Vec<serde_json::Value> = (0..=50)
            .map(|k| {
                let quantile = 1.0 - 10f64.powf(-(k as f64) / 10.0);
                serde_json::json!([quantile, h.value_at_quantile(quantile)])
            })
            .collect();
        serde_json::json!({
            "server": config.server.to_string(),
            "transport": match config.transport { Transport::Udp => "udp", Transport::Tcp => "tcp" },
            "mode": if config.rate == 0 { "closed" } else { "open" },
            "offered_qps": config.rate,
            "duration_s": config.duration.as_secs_f64(),
            "threads": config.threads,
            "sent": self.sent,
            "answered": self.answered,
            "lost": self.lost,
            "mismatched": self.mismatched,
            "answered_qps": self.answered_qps(config.duration),
            "rcodes": self.rcodes,
            "latency_us": latency,
            "percentile_curve_us": curve,
            "server_cpu_s": self.server_cpu_s,
            "server_cpu_us_per_query": self.server_cpu_us_per_query(),
            "server_user_s": self.server_user_s,
            "server_user_us_per_query": self.server_user_us_per_query(),
        })
    }
}

fn rcode_name(rcode: u8) -> String {
    kubewire_wire::Rcode(u16::from(rcode)).to_string()
}

/// CPU time a process and its descendants have used, in all their threads.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcessCpu {
    /// All of it, from the scheduler's nanosecond counters
    /// (`/proc/PID/task/*/schedstat`).
    pub total_s: f64,
    /// Its user-mode part (`utime` of `/proc/PID/task/*/stat`, in clock
    /// ticks).
    pub user_s: f64,
}

/// What [`ProcessCpu`] says of `pid` now. Descendants count because some
/// servers (NSD) answer from a child.
pub fn process_cpu(pid: u32) -> io::Result<ProcessCpu> {
    let mut children: std::collections::HashMap<u32, Vec<u32>> = std::collections::HashMap::new();
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some(parent) = stat_field(&stat, 3) {
            children.entry(parent as u32).or_default().push(child);
        }
    }
    let ticks_per_s = clock_ticks_per_s();
    let mut cpu = ProcessCpu::default();
    let mut stack = vec![pid];
    while let Some(process) = stack.pop() {
        stack.extend(children.get(&process).into_iter().flatten());
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{process}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            if let Ok(text) = std::fs::read_to_string(task.path().join("schedstat"))
                && let Some(ns) = text
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
            {
                cpu.total_s += ns as f64 / 1e9;
            }
            if let Ok(stat) = std::fs::read_to_string(task.path().join("stat"))
                && let Some(ticks) = stat_field(&stat, 13)
            {
                cpu.user_s += ticks as f64 / ticks_per_s;
            }
        }
    }
    if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
        return Err(io::Error::other(format!("no process {pid}")));
    }
    Ok(cpu)
}

/// Field `index` (0-based, as in proc(5) less one: 3 is the parent, 13 is
/// `utime`) of a `/proc/*/stat` line. The command before it is in
/// parentheses and may hold spaces, so fields are counted after its `)`.
fn stat_field(stat: &str, index: usize) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace()
        .nth(index.checked_sub(2)?)?
        .parse()
        .ok()
}

/// `sysconf(_SC_CLK_TCK)`: the unit of `/proc/*/stat` times.
#[allow(unsafe_code)] // sysconf takes an integer and reads no memory of ours
fn clock_ticks_per_s() -> f64 {
    // SAFETY: sysconf has no memory arguments.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// Pins the calling thread to `cpu`.
#[allow(unsafe_code)] // sched_setaffinity on our own thread with a local set
fn pin_to(cpu: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain bits; CPU_SET stays in bounds for cpu < 1024.
    let result = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu % 1024, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Runs the load and reports. `server_pid`, if given, is measured for CPU.
pub fn run(config: &LoadConfig, server_pid: Option<u32>) -> io::Result<LoadReport> {
    let packets: Vec<Vec<u8>> = config
        .queries
        .iter()
        .map(|q| {
            let mut packet = vec![0, 0, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
            let name = NameBuf::from_text(&q.name).unwrap_or(NameBuf::ROOT);
            packet.extend_from_slice(name.as_wire());
            packet.extend_from_slice(&q.qtype.to_be_bytes());
            packet.extend_from_slice(&[0, 1]);
            packet
        })
        .collect();
    let threads = config.threads.max(1);
    let cpu_before = server_pid.map(process_cpu).transpose()?;
    let start = Instant::now() + Duration::from_millis(5);
    let results: Vec<io::Result<LoadReport>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let share = |total: u64| {
                    total / threads as u64 + u64::from((t as u64) < total % threads as u64)
                };
                let plan = ThreadPlan {
                    rate: share(config.rate),
                    in_flight: share(config.in_flight as u64).max(1) as usize,
                    sockets: share(config.sockets as u64).max(1) as usize,
                    // Threads start at different points of the mix.
                    first_query: t * packets.len() / threads,
                    cpu: (!config.cpus.is_empty()).then(|| config.cpus[t % config.cpus.len()]),
                };
                let packets = &packets;
                scope.spawn(move || run_thread(config, &plan, packets, start))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(io::Error::other("a load thread panicked")))
            })
            .collect()
    });
    let mut report = LoadReport::empty()?;
    for result in results {
        report.merge(result?);
    }
    if let (Some(pid), Some(before)) = (server_pid, cpu_before) {
        let after = process_cpu(pid)?;
        report.server_cpu_s = Some(after.total_s - before.total_s);
        report.server_user_s = Some(after.user_s - before.user_s);
    }
    Ok(report)
}

struct ThreadPlan {
    rate: u64,
    in_flight: usize,
    sockets: usize,
    first_query: usize,
    cpu: Option<usize>,
}

/// A query in flight: when it was due, and which query of the mix.
#[derive(Clone, Copy)]
struct Slot {
    scheduled: Instant,
    query: u32,
}

/// One connection or socket: its queries in flight by ID.
struct Channel {
    slots: Vec<Option<Slot>>,
    next_id: u16,
    /// TCP only.
    stream: Option<TcpStream>,
    udp: Option<UdpSocket>,
    out: Vec<u8>,
    input: Vec<u8>,
}

struct ThreadState<'a> {
    packets: &'a [Vec<u8>],
    channels: Vec<Channel>,
    /// Send order, for expiry: channel, ID, scheduled time.
    order: VecDeque<(u16, u16, Instant)>,
    outstanding: usize,
    report: LoadReport,
    timeout: Duration,
    /// See [`LoadConfig::unique_names`].
    unique_names: bool,
}

impl ThreadState<'_> {
    /// Records a query as sent on `channel`; returns its ID.
    fn track(&mut self, channel: usize, query: usize, scheduled: Instant) -> u16 {
        let ch = &mut self.channels[channel];
        let id = ch.next_id;
        ch.next_id = id.wrapping_add(1);
        if ch.slots[usize::from(id)]
            .replace(Slot {
                scheduled,
                query: query as u32,
            })
            .is_some()
        {
            // A query still waiting under this ID is given up for lost.
            self.report.lost += 1;
            self.outstanding -= 1;
        }
        self.order.push_back((channel as u16, id, scheduled));
        self.outstanding += 1;
        self.report.sent += 1;
        id
    }

    fn reply(&mut self, channel: usize, reply: &[u8], at: Instant) {
        if reply.len() < 12 {
            self.report.mismatched += 1;
            return;
        }
        let id = u16::from_be_bytes([reply[0], reply[1]]);
        let Some(waiting) = self.channels[channel].slots[usize::from(id)].take() else {
            self.report.mismatched += 1;
            return;
        };
        self.outstanding -= 1;
        let question = &self.packets[waiting.query as usize][12..];
        // With unique names, the first label was rewritten per query: the
        // rest of the question must match.
        let skip = if self.unique_names {
            1 + usize::from(question.first().copied().unwrap_or(0))
        } else {
            0
        };
        if reply
            .get(12 + skip..12 + question.len())
            .is_none_or(|q| !q.eq_ignore_ascii_case(&question[skip.min(question.len())..]))
            || reply[2] & 0x80 == 0
        {
            self.report.mismatched += 1;
            return;
        }
        self.report.answered += 1;
        *self
            .report
            .rcodes
            .entry(rcode_name(reply[3] & 0x0f))
            .or_default() += 1;
        let micros = at
            .saturating_duration_since(waiting.scheduled)
            .as_micros()
            .max(1) as u64;
        let _ = self.report.latency_us.record(micros.min(60_000_000));
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(channel, id, scheduled)) = self.order.front() {
            if now.saturating_duration_since(scheduled) < self.timeout {
                break;
            }
            self.order.pop_front();
            let slot = &mut self.channels[usize::from(channel)].slots[usize::from(id)];
            if slot.is_some_and(|s| s.scheduled == scheduled) {
                *slot = None;
                self.outstanding -= 1;
                self.report.lost += 1;
            }
        }
    }
}

/// Writes a name never sent before into each query's first label.
struct UniqueName {
    next: u64,
}

impl UniqueName {
    /// Counts from the clock and the thread's share, so that no run and
    /// no thread repeats another's names.
    fn new(thread_seed: usize) -> UniqueName {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        UniqueName {
            next: nanos ^ ((thread_seed as u64) << 48),
        }
    }

    /// Overwrites the first label's first bytes (up to 16) with hex digits.
    fn next(&mut self, packet: &mut [u8]) {
        let Some(&label_len) = packet.get(12) else {
            return;
        };
        let digits = usize::from(label_len).min(16);
        let value = self.next;
        self.next = self.next.wrapping_add(1);
        for (i, byte) in packet[13..13 + digits].iter_mut().enumerate() {
            let nibble = (value >> (4 * (i % 16))) & 0xF;
            *byte = b"0123456789abcdef"[nibble as usize];
        }
    }
}

fn run_thread(
    config: &LoadConfig,
    plan: &ThreadPlan,
    packets: &[Vec<u8>],
    start: Instant,
) -> io::Result<LoadReport> {
    if let Some(cpu) = plan.cpu {
        pin_to(cpu)?;
    }
    let mut channels = Vec::new();
    for _ in 0..plan.sockets {
        let (udp, stream) = match config.transport {
            Transport::Udp => {
                let socket = UdpSocket::bind(if config.server.is_ipv4() {
                    "0.0.0.0:0"
                } else {
                    "[::]:0"
                })?;
                socket.connect(config.server)?;
                socket.set_nonblocking(true)?;
                (Some(socket), None)
            }
            Transport::Tcp => {
                let stream = TcpStream::connect_timeout(&config.server, Duration::from_secs(2))?;
                stream.set_nodelay(true)?;
                stream.set_nonblocking(true)?;
                (None, Some(stream))
            }
        };
        channels.push(Channel {
            slots: vec![None; 65_536],
            next_id: 0,
            stream,
            udp,
            out: Vec::new(),
            input: Vec::new(),
        });
    }
    let mut state = ThreadState {
        packets,
        channels,
        order: VecDeque::new(),
        outstanding: 0,
        report: LoadReport::empty()?,
        timeout: config.timeout,
        unique_names: config.unique_names,
    };
    let mut unique_name = UniqueName::new(plan.first_query);
    let mut mmsg = Mmsg::new();
    let mut buf = vec![0u8; 65_536];
    while Instant::now() < start {
        std::hint::spin_loop();
    }
    let end = start + config.duration;
    let interval = (plan.rate > 0).then(|| Duration::from_secs_f64(1.0 / plan.rate as f64));
    let mut next_send = start;
    let mut query_index = plan.first_query % packets.len().max(1);
    let mut channel = 0usize;
    let mut packet = Vec::with_capacity(600);
    loop {
        let now = Instant::now();
        let sending = now < end;
        let mut progressed = false;
        if sending {
            // Queries due now (open loop) or allowed by the window (closed).
            let mut budget = match interval {
                Some(_) => BATCH,
                None => plan.in_flight.saturating_sub(state.outstanding).min(BATCH),
            };
            while budget > 0 {
                let scheduled = match interval {
                    Some(step) if next_send <= now => {
                        let at = next_send;
                        next_send += step;
                        at
                    }
                    Some(_) => break,
                    None => now,
                };
                let id = state.track(channel, query_index, scheduled);
                packet.clear();
                packet.extend_from_slice(&packets[query_index]);
                packet[..2].copy_from_slice(&id.to_be_bytes());
                if config.unique_names {
                    unique_name.next(&mut packet);
                }
                match config.transport {
                    Transport::Udp => {
                        mmsg.queue(&packet);
                    }
                    Transport::Tcp => {
                        let out = &mut state.channels[channel].out;
                        out.extend_from_slice(&(packet.len() as u16).to_be_bytes());
                        out.extend_from_slice(&packet);
                    }
                }
                query_index = (query_index + 1) % packets.len();
                budget -= 1;
                progressed = true;
                if config.transport == Transport::Tcp {
                    channel = (channel + 1) % state.channels.len();
                }
            }
            if config.transport == Transport::Udp && mmsg.queued() > 0 {
                let fd = state.channels[channel]
                    .udp
                    .as_ref()
                    .map(|s| s.as_raw_fd())
                    .ok_or_else(|| io::Error::other("no UDP socket"))?;
                // Datagrams a full buffer refuses are never answered: they
                // expire as lost.
                let _ = mmsg.flush(fd);
                // Next batch from the next source port.
                channel = (channel + 1) % state.channels.len();
            }
        }
        // Write pending TCP bytes, and read what is waiting.
        for c in 0..state.channels.len() {
            match config.transport {
                Transport::Udp => {
                    let Some(fd) = state.channels[c].udp.as_ref().map(|s| s.as_raw_fd()) else {
                        continue;
                    };
                    loop {
                        let count = mmsg.receive(fd).unwrap_or(0);
                        if count == 0 {
                            break;
                        }
                        progressed = true;
                        let at = Instant::now();
                        for i in 0..count {
                            state.reply(c, mmsg.received(i), at);
                        }
                    }
                }
                Transport::Tcp => {
                    progressed |= tcp_exchange(&mut state, c, &mut buf)?;
                }
            }
        }
        state.expire(now);
        if !sending && (state.outstanding == 0 || now > end + config.timeout) {
            state.report.lost += state.outstanding as u64;
            break;
        }
        if !progressed {
            match interval {
                // Far from the next send: sleep a little (the kernel's timer
                // slack makes short sleeps long, so only when far).
                Some(_)
                    if next_send > now + Duration::from_micros(200) && state.outstanding == 0 =>
                {
                    std::thread::sleep(Duration::from_micros(50));
                }
                _ => std::hint::spin_loop(),
            }
        }
    }
    state.report.elapsed_s = start.elapsed().as_secs_f64();
    Ok(state.report)
}

/// Writes a TCP channel's pending bytes and reads its replies. Returns
/// whether anything moved. A closed connection loses what was in flight.
fn tcp_exchange(state: &mut ThreadState<'_>, c: usize, buf: &mut [u8]) -> io::Result<bool> {
    let mut progressed = false;
    let channel = &mut state.channels[c];
    let Some(stream) = channel.stream.as_mut() else {
        return Ok(false);
    };
    while !channel.out.is_empty() {
        match stream.write(&channel.out) {
            Ok(0) => break,
            Ok(n) => {
                channel.out.drain(..n);
                progressed = true;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                channel.out.clear();
                break;
            }
        }
    }
    loop {
        match stream.read(buf) {
            Ok(0) => break,
            Ok(n) => {
                channel.input.extend_from_slice(&buf[..n]);
                progressed = true;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let input = std::mem::take(&mut state.channels[c].input);
    let mut at_byte = 0;
    let now = Instant::now();
    while let Some(prefix) = input.get(at_byte..at_byte + 2) {
        let len = usize::from(u16::from_be_bytes([prefix[0], prefix[1]]));
        let Some(message) = input.get(at_byte + 2..at_byte + 2 + len) else {
            break;
        };
        state.reply(c, message, now);
        at_byte += 2 + len;
    }
    state.channels[c].input = input[at_byte..].to_vec();
    Ok(progressed)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A command may hold spaces and parentheses; fields count after it.
    #[test]
    fn stat_fields_are_counted_after_the_command() {
        let stat = "42 (a (b) c) S 7 42 42 0 -1 4194560 100 0 0 0 123 45 0 0 20 0 1 0";
        assert_eq!(stat_field(stat, 3), Some(7));
        assert_eq!(stat_field(stat, 13), Some(123));
        assert_eq!(stat_field(stat, 14), Some(45));
        assert_eq!(stat_field("no command", 3), None);
    }

    /// Our own process: its user time is part of its CPU time.
    #[test]
    fn a_process_s_user_time_is_within_its_cpu_time() {
        let started = std::time::Instant::now();
        let mut spin = 0u64;
        while started.elapsed() < Duration::from_millis(200) {
            spin = std::hint::black_box(spin.wrapping_add(1));
        }
        let cpu = process_cpu(std::process::id()).unwrap();
        assert!(cpu.total_s >= 0.1, "{cpu:?}");
        assert!(
            cpu.user_s > 0.0 && cpu.user_s <= cpu.total_s + 0.02,
            "{cpu:?}"
        );
    }
}
