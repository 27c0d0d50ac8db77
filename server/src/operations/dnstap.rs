//! dnstap, as CoreDNS's plugin sends it: `CLIENT_QUERY` and
//! `CLIENT_RESPONSE` for every query, `FORWARDER_QUERY` and
//! `FORWARDER_RESPONSE` for every upstream exchange, as `Dnstap` protobuf
//! messages in Frame Streams (bidirectional handshake, content type
//! `protobuf:dnstap.Dnstap`) to a Unix or TCP socket.
//!
//! A core encodes each event into a buffer taken from a shared pool and
//! hands it to one writer thread, which sends it and returns the buffer. A
//! full queue, an empty pool or an unreachable collector drops the event and
//! counts it: the query path never waits, and allocates only until the pool
//! is full.

use crossbeam_channel::{Receiver, Sender, TrySendError};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Frame Streams' content type for dnstap.
pub const CONTENT_TYPE: &[u8] = b"protobuf:dnstap.Dnstap";
/// Events waiting for the writer, at most; more are dropped.
const QUEUE: usize = 8192;
/// A buffer grown past this (a large TCP reply in `full` mode) is shrunk
/// before it goes back to the pool: the pool stays at most QUEUE × this.
const KEPT_BUFFER: usize = 1024;
/// The most bytes of events queued at once; past it, events are dropped.
/// (QUEUE events of up to 64 KiB each would otherwise be half a GiB.)
const QUEUED_BYTES_MOST: usize = 32 << 20;
/// A collector that stops reading is given up on after this.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the writer takes what the cores queued: the most an event
/// waits, and (queue ÷ tick) the most events a second it carries (1.6
/// million). Each tick costs a wake-up and a write whatever the traffic,
/// so it is not shorter: at 1 ms, dnstap cost 1.25 × the CPU per query of
/// no dnstap at 10k qps (`bench/results/coredns-dnstap.md`). CoreDNS's
/// writer flushes once a second.
const WRITER_TICK: Duration = Duration::from_millis(5);
/// Reconnecting waits this long after a failure, doubling up to the most.
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_MOST: Duration = Duration::from_secs(8);

/// Where the events go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `unix:///path`
    Unix(PathBuf),
    /// `tcp://IP:PORT`
    Tcp(SocketAddr),
}

impl Target {
    /// Parses `unix:///path` (or a bare `/path`) or `tcp://IP:PORT`, as
    /// CoreDNS's `dnstap`.
    pub fn parse(text: &str) -> Result<Target, String> {
        if text.starts_with('/') {
            return Ok(Target::Unix(PathBuf::from(text)));
        }
        if let Some(path) = text.strip_prefix("unix://") {
            if path.is_empty() {
                return Err(format!("{text:?}: no socket path after unix://"));
            }
            return Ok(Target::Unix(PathBuf::from(path)));
        }
        if let Some(addr) = text.strip_prefix("tcp://") {
            return addr.parse().map(Target::Tcp).map_err(|_| {
                format!("{text:?}: tcp:// takes an IP:PORT, such as tcp://127.0.0.1:6000")
            });
        }
        Err(format!(
            "{text:?}: give unix:///PATH or tcp://IP:PORT (as CoreDNS's dnstap)"
        ))
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Unix(path) => write!(f, "unix://{}", path.display()),
            Target::Tcp(addr) => write!(f, "tcp://{addr}"),
        }
    }
}

/// dnstap's `SocketProtocol`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Udp = 1,
    Tcp = 2,
    Dot = 3,
    Doh = 4,
}

/// dnstap's `Message.Type`, the four kubewire sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    ClientQuery = 5,
    ClientResponse = 6,
    ForwarderQuery = 7,
    ForwarderResponse = 8,
}

/// What every core's tap shares.
#[derive(Debug)]
struct Shared {
    events: Sender<Vec<u8>>,
    pool: Receiver<Vec<u8>>,
    /// The `Dnstap` fields every event repeats: identity, version, extra
    /// and `type = MESSAGE`, encoded once.
    header: Vec<u8>,
    full: bool,
    dropped: Arc<AtomicU64>,
    /// Bytes of the events queued, up to [`QUEUED_BYTES_MOST`].
    queued_bytes: Arc<std::sync::atomic::AtomicUsize>,
    /// The pool's other end, for an event that could not be queued.
    recycle: Sender<Vec<u8>>,
}

/// A core's handle on dnstap.
#[derive(Clone, Debug)]
pub struct Tap(Arc<Shared>);

/// One exchange: a query, and its response once there is one.
#[derive(Clone, Copy, Debug)]
pub struct Exchange<'a> {
    /// Who asked (the client; for a forwarded query, none is said).
    pub asker: Option<SocketAddr>,
    /// Who answered (kubewire's listen address; for a forwarded query,
    /// the upstream).
    pub answerer: Option<SocketAddr>,
    pub protocol: Protocol,
    pub query: &'a [u8],
    pub query_time: SystemTime,
    pub response: &'a [u8],
    pub response_time: SystemTime,
}

impl Tap {
    /// A query and its reply, as `CLIENT_QUERY` then `CLIENT_RESPONSE`.
    pub fn client(&self, exchange: &Exchange<'_>) {
        self.send(Kind::ClientQuery, exchange);
        self.send(Kind::ClientResponse, exchange);
    }

    /// An upstream exchange, as `FORWARDER_QUERY` then
    /// `FORWARDER_RESPONSE`.
    pub fn forwarder(&self, exchange: &Exchange<'_>) {
        self.send(Kind::ForwarderQuery, exchange);
        self.send(Kind::ForwarderResponse, exchange);
    }

    fn send(&self, kind: Kind, exchange: &Exchange<'_>) {
        let shared = &self.0;
        let Ok(mut buffer) = shared.pool.try_recv() else {
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        buffer.clear();
        encode(&mut buffer, &shared.header, kind, exchange, shared.full);
        let size = buffer.len();
        let queued = shared.queued_bytes.fetch_add(size, Ordering::Relaxed);
        let sent = if queued + size > QUEUED_BYTES_MOST {
            Err(buffer)
        } else {
            shared.events.try_send(buffer).map_err(|error| match error {
                TrySendError::Full(buffer) | TrySendError::Disconnected(buffer) => buffer,
            })
        };
        if let Err(mut buffer) = sent {
            shared.queued_bytes.fetch_sub(size, Ordering::Relaxed);
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            // Back to the pool, which would otherwise shrink by one.
            buffer.clear();
            let _ = shared.recycle.try_send(buffer);
        }
    }
}

/// The settings of `[dnstap]` that shape what is sent.
#[derive(Clone, Debug)]
pub struct DnstapPlan {
    pub target: Target,
    /// With the DNS messages themselves (CoreDNS's `full`).
    pub full: bool,
    pub identity: String,
    pub version: String,
    pub extra: String,
}

/// Starts the writer thread; returns the taps' handle and the count of
/// dropped events (`coredns_dnstap_dropped_total`).
pub fn start(
    plan: DnstapPlan,
    shutdown: Arc<AtomicBool>,
) -> std::io::Result<(Tap, Arc<AtomicU64>)> {
    let (events, queued) = crossbeam_channel::bounded(QUEUE);
    let (returned, pool) = crossbeam_channel::bounded(QUEUE);
    for _ in 0..QUEUE {
        let _ = returned.try_send(Vec::with_capacity(512));
    }
    let header = header(&plan);
    let dropped = Arc::new(AtomicU64::new(0));
    let queued_bytes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let tap = Tap(Arc::new(Shared {
        events,
        pool,
        header,
        full: plan.full,
        dropped: Arc::clone(&dropped),
        queued_bytes: Arc::clone(&queued_bytes),
        recycle: returned.clone(),
    }));
    let target = plan.target.clone();
    let writer_dropped = Arc::clone(&dropped);
    std::thread::Builder::new()
        .name("kubewire-dnstap".into())
        .spawn(move || {
            Writer {
                target,
                queued,
                returned,
                shutdown,
                dropped: writer_dropped,
                queued_bytes,
            }
            .run()
        })?;
    Ok((tap, dropped))
}

/// The `Dnstap` fields every event repeats: identity (1), version (2),
/// extra (3), each when set, and `type = MESSAGE` (15).
fn header(plan: &DnstapPlan) -> Vec<u8> {
    let mut header = Vec::with_capacity(64);
    for (field, value) in [(1, &plan.identity), (2, &plan.version), (3, &plan.extra)] {
        if !value.is_empty() {
            bytes_field(&mut header, field, value.as_bytes());
        }
    }
    varint_field(&mut header, 15, 1);
    header
}

fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn varint_field(out: &mut Vec<u8>, field: u32, value: u64) {
    varint(out, u64::from(field << 3));
    varint(out, value);
}

fn bytes_field(out: &mut Vec<u8>, field: u32, value: &[u8]) {
    varint(out, u64::from(field << 3 | 2));
    varint(out, value.len() as u64);
    out.extend_from_slice(value);
}

fn fixed32_field(out: &mut Vec<u8>, field: u32, value: u32) {
    varint(out, u64::from(field << 3 | 5));
    out.extend_from_slice(&value.to_le_bytes());
}

fn address_bytes(ip: IpAddr, out: &mut [u8; 16]) -> &[u8] {
    match ip {
        IpAddr::V4(v4) => {
            out[..4].copy_from_slice(&v4.octets());
            &out[..4]
        }
        IpAddr::V6(v6) => {
            *out = v6.octets();
            &out[..]
        }
    }
}

/// One `Dnstap` message: the shared header, then the `Message`, whose
/// length goes before it once known.
fn encode(out: &mut Vec<u8>, header: &[u8], kind: Kind, exchange: &Exchange<'_>, full: bool) {
    out.extend_from_slice(header);
    // Field 14 (message), its length as a 5-byte varint written after.
    out.push(14 << 3 | 2);
    let length_at = out.len();
    out.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x00]);
    let start = out.len();
    varint_field(out, 1, kind as u64);
    let family_of = exchange.asker.or(exchange.answerer);
    if let Some(addr) = family_of {
        varint_field(out, 2, if addr.is_ipv4() { 1 } else { 2 });
    }
    varint_field(out, 3, exchange.protocol as u64);
    let mut scratch = [0u8; 16];
    if let Some(asker) = exchange.asker {
        bytes_field(out, 4, address_bytes(asker.ip(), &mut scratch));
    }
    if let Some(answerer) = exchange.answerer {
        bytes_field(out, 5, address_bytes(answerer.ip(), &mut scratch));
    }
    if let Some(asker) = exchange.asker {
        varint_field(out, 6, u64::from(asker.port()));
    }
    if let Some(answerer) = exchange.answerer {
        varint_field(out, 7, u64::from(answerer.port()));
    }
    let since = |time: SystemTime| time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let asked = since(exchange.query_time);
    varint_field(out, 8, asked.as_secs());
    fixed32_field(out, 9, asked.subsec_nanos());
    let is_query = matches!(kind, Kind::ClientQuery | Kind::ForwarderQuery);
    if full && is_query {
        bytes_field(out, 10, exchange.query);
    }
    if !is_query {
        let answered = since(exchange.response_time);
        varint_field(out, 12, answered.as_secs());
        fixed32_field(out, 13, answered.subsec_nanos());
        if full {
            bytes_field(out, 14, exchange.response);
        }
    }
    let length = (out.len() - start) as u32;
    for (i, byte) in out[length_at..start].iter_mut().enumerate() {
        let bits = (length >> (7 * i)) as u8 & 0x7f;
        *byte = if i < 4 { bits | 0x80 } else { bits };
    }
}

/// The writer thread: connects, handshakes, sends, and starts again when
/// the collector goes away.
struct Writer {
    target: Target,
    queued: Receiver<Vec<u8>>,
    returned: Sender<Vec<u8>>,
    shutdown: Arc<AtomicBool>,
    dropped: Arc<AtomicU64>,
    queued_bytes: Arc<std::sync::atomic::AtomicUsize>,
}

/// A Frame Streams control frame: the escape, its length, its type and a
/// content type.
fn control(kind: u32, content_type: bool) -> Vec<u8> {
    let mut body = kind.to_be_bytes().to_vec();
    if content_type {
        body.extend_from_slice(&1u32.to_be_bytes());
        body.extend_from_slice(&(CONTENT_TYPE.len() as u32).to_be_bytes());
        body.extend_from_slice(CONTENT_TYPE);
    }
    let mut frame = 0u32.to_be_bytes().to_vec();
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    frame
}

const ACCEPT: u32 = 1;
const START: u32 = 2;
const STOP: u32 = 3;
const READY: u32 = 4;

trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

impl Writer {
    fn run(self) {
        let mut last_error = String::new();
        let mut backoff = BACKOFF_FIRST;
        while !self.shutdown.load(Ordering::Acquire) {
            match self.connect() {
                Ok(stream) => {
                    tracing::info!(target = %self.target, "dnstap: connected");
                    last_error.clear();
                    backoff = BACKOFF_FIRST;
                    let error = self.send_all(stream);
                    if self.shutdown.load(Ordering::Acquire) {
                        return;
                    }
                    tracing::warn!(target = %self.target, %error, "dnstap: the collector went away; reconnecting, events dropped meanwhile");
                }
                Err(error) => {
                    let text = error.to_string();
                    if text != last_error {
                        tracing::error!(target = %self.target, error = %text, "dnstap: cannot reach the collector; events are dropped until it can be reached (is it listening?)");
                        last_error = text;
                    }
                }
            }
            // Meanwhile the cores' events are dropped and counted; the
            // buffers go back to the pool.
            // (In ticks, as when connected: a core never wakes the writer.)
            let until = std::time::Instant::now() + backoff;
            while std::time::Instant::now() < until && !self.shutdown.load(Ordering::Acquire) {
                while let Ok(buffer) = self.queued.try_recv() {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    self.give_back(buffer);
                }
                std::thread::sleep(WRITER_TICK);
            }
            backoff = (backoff * 2).min(BACKOFF_MOST);
        }
    }

    /// Returns a buffer to the pool, shrunk if a large message grew it.
    fn give_back(&self, mut buffer: Vec<u8>) {
        self.queued_bytes.fetch_sub(buffer.len(), Ordering::Relaxed);
        if buffer.capacity() > KEPT_BUFFER {
            buffer.clear();
            buffer.shrink_to(KEPT_BUFFER);
        }
        let _ = self.returned.try_send(buffer);
    }

    fn connect(&self) -> std::io::Result<Box<dyn Stream>> {
        let mut stream: Box<dyn Stream> = match &self.target {
            Target::Unix(path) => {
                let stream = std::os::unix::net::UnixStream::connect(path)?;
                stream.set_read_timeout(Some(Duration::from_secs(5)))?;
                stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
                Box::new(stream)
            }
            Target::Tcp(addr) => {
                let stream = std::net::TcpStream::connect_timeout(addr, Duration::from_secs(5))?;
                stream.set_read_timeout(Some(Duration::from_secs(5)))?;
                stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
                stream.set_nodelay(true)?;
                Box::new(stream)
            }
        };
        stream.write_all(&control(READY, true))?;
        let mut head = [0u8; 8];
        stream.read_exact(&mut head)?;
        let length = u32::from_be_bytes([head[4], head[5], head[6], head[7]]) as usize;
        if head[..4] != [0; 4] || !(4..=512).contains(&length) {
            return Err(std::io::Error::other(
                "the collector did not answer READY with a control frame",
            ));
        }
        let mut body = vec![0u8; length];
        stream.read_exact(&mut body)?;
        if body[..4] != ACCEPT.to_be_bytes() {
            return Err(std::io::Error::other("the collector did not ACCEPT"));
        }
        if !body.windows(CONTENT_TYPE.len()).any(|w| w == CONTENT_TYPE) {
            return Err(std::io::Error::other(
                "the collector does not accept protobuf:dnstap.Dnstap",
            ));
        }
        stream.write_all(&control(START, true))?;
        Ok(stream)
    }

    /// Sends events until the stream fails or shutdown; returns why.
    fn send_all(&self, stream: Box<dyn Stream>) -> std::io::Error {
        let mut stream = std::io::BufWriter::with_capacity(64 << 10, stream);
        loop {
            // The writer never waits on the queue: a core's send then never
            // has a sleeping writer to wake (a system call per event).
            // Each tick takes what came, and sends it in few writes.
            let mut wrote = false;
            loop {
                let buffer = match self.queued.try_recv() {
                    Ok(buffer) => buffer,
                    Err(crossbeam_channel::TryRecvError::Empty) => break,
                    Err(crossbeam_channel::TryRecvError::Disconnected) => {
                        return std::io::Error::other("no core sends any more");
                    }
                };
                let written = stream
                    .write_all(&(buffer.len() as u32).to_be_bytes())
                    .and_then(|()| stream.write_all(&buffer));
                self.give_back(buffer);
                if let Err(error) = written {
                    return error;
                }
                wrote = true;
            }
            if wrote && let Err(error) = stream.flush() {
                return error;
            }
            if self.shutdown.load(Ordering::Acquire) {
                let _ = stream.write_all(&control(STOP, false));
                let _ = stream.flush();
                return std::io::Error::other("shutting down");
            }
            std::thread::sleep(WRITER_TICK);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_as_coredns_writes_them() {
        assert_eq!(
            Target::parse("unix:///var/run/dnstap.sock"),
            Ok(Target::Unix("/var/run/dnstap.sock".into()))
        );
        assert_eq!(
            Target::parse("tcp://127.0.0.1:6000"),
            Ok(Target::Tcp("127.0.0.1:6000".parse().unwrap()))
        );
        assert!(
            Target::parse("tcp://collector:6000")
                .unwrap_err()
                .contains("IP:PORT")
        );
        assert_eq!(
            Target::parse("/var/run/dnstap.sock"),
            Ok(Target::Unix("/var/run/dnstap.sock".into()))
        );
        assert!(
            Target::parse("collector:6000")
                .unwrap_err()
                .contains("unix:///PATH")
        );
    }

    #[test]
    fn the_header_carries_identity_version_and_extra() {
        let plan = DnstapPlan {
            target: Target::Tcp("127.0.0.1:1".parse().unwrap()),
            full: false,
            identity: "node-a".into(),
            version: String::new(),
            extra: "rack-4".into(),
        };
        assert_eq!(
            header(&plan),
            [&[0x0a, 6][..], b"node-a", &[0x1a, 6], b"rack-4", &[0x78, 1]].concat()
        );
    }

    #[test]
    fn a_message_length_is_a_padded_varint() {
        let exchange = Exchange {
            asker: Some("10.0.0.1:5353".parse().unwrap()),
            answerer: None,
            protocol: Protocol::Udp,
            query: &[1; 200],
            query_time: UNIX_EPOCH + Duration::from_secs(5),
            response: &[2; 300],
            response_time: UNIX_EPOCH + Duration::from_secs(6),
        };
        let mut out = Vec::new();
        encode(
            &mut out,
            &[0x78, 0x01],
            Kind::ClientResponse,
            &exchange,
            true,
        );
        assert_eq!(&out[..3], &[0x78, 0x01, 0x72]);
        let mut length = 0usize;
        for (i, byte) in out[3..8].iter().enumerate() {
            length |= usize::from(byte & 0x7f) << (7 * i);
        }
        assert_eq!(length, out.len() - 8);
        // The response message is in it, the query is not (a response).
        assert!(out.windows(300).any(|w| w == [2; 300]));
        assert!(!out.windows(200).any(|w| w == [1; 200]));
    }
}
