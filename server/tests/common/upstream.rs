//! A scripted upstream DNS server on loopback UDP and TCP (one port for
//! both), for the forwarding tests. The test sets what it does next:
//! answer, delay, drop, truncate over UDP, send garbage, answer with a wrong
//! ID or question, or answer from another port. It counts what it receives.

#![allow(clippy::disallowed_types)] // a test's scripted upstream, far from the serving path

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the upstream does with the next queries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Answer A queries with `192.0.2.1` (or the address set for the name),
    /// NXDOMAIN for names starting with `nx`.
    Answer,
    /// Answer after this many milliseconds.
    Delay(u64),
    /// Never answer.
    Drop,
    /// Over UDP, an empty reply with TC set; over TCP, the answer.
    TruncateUdp,
    /// Random bytes.
    Garbage,
    /// The answer with another ID.
    WrongId,
    /// The answer to another question.
    WrongQuestion,
    /// The answer, from another socket (another source port).
    OtherPort,
    /// The answer, with QR clear.
    QrClear,
    /// SERVFAIL.
    ServFail,
}

/// Counters of what the upstream received.
#[derive(Debug, Default)]
pub struct Seen {
    pub udp: AtomicU64,
    pub tcp: AtomicU64,
    /// Health checks (`. IN NS`), over either transport.
    pub probes: AtomicU64,
    /// TCP connections accepted.
    pub connections: AtomicU64,
    /// kubewire's loop probes (not counted in `udp`, `tcp` or the names).
    pub loop_probes: AtomicU64,
    /// The CD bit and the EDNS DO bit of the last query (None: no OPT).
    pub last_cd_do: Mutex<Option<(bool, Option<bool>)>>,
    /// Each UDP query received (loop probes aside): its sender and bytes.
    pub udp_queries: Mutex<Vec<(SocketAddr, Vec<u8>)>>,
}

pub struct Upstream {
    pub addr: SocketAddr,
    /// For a DNS over TLS upstream: the PEM file of its self-signed
    /// certificate, for `dns.test`.
    pub ca_file: Option<std::path::PathBuf>,
    behaviour: Arc<Mutex<Behaviour>>,
    answers: Arc<Mutex<Vec<(String, Ipv4Addr)>>>,
    pub seen: Arc<Seen>,
    names: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Upstream {
    pub fn start() -> Upstream {
        let (udp, tcp) = loop {
            let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
            let port = udp.local_addr().unwrap().port();
            if let Ok(tcp) = TcpListener::bind(("127.0.0.1", port)) {
                break (udp, tcp);
            }
        };
        let addr = udp.local_addr().unwrap();
        let upstream = Upstream {
            addr,
            ca_file: None,
            behaviour: Arc::new(Mutex::new(Behaviour::Answer)),
            answers: Arc::new(Mutex::new(Vec::new())),
            seen: Arc::new(Seen::default()),
            names: Arc::new(Mutex::new(Vec::new())),
            stop: Arc::new(AtomicBool::new(false)),
        };
        udp.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let script = upstream.script();
        std::thread::spawn(move || serve_udp(udp, script));
        tcp.set_nonblocking(true).unwrap();
        let script = upstream.script();
        std::thread::spawn(move || serve_tcp(tcp, script));
        upstream
    }

    /// A DNS over TLS upstream (TCP only) with a self-signed certificate
    /// for `dns.test`.
    pub fn start_tls() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let certified = rcgen::generate_simple_self_signed(vec!["dns.test".to_string()]).unwrap();
        let ca_file = std::env::temp_dir().join(format!(
            "kubewire-dot-{}-{}.pem",
            std::process::id(),
            addr.port()
        ));
        std::fs::write(&ca_file, certified.cert.pem()).unwrap();
        let key =
            rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![certified.cert.der().clone()], key)
            .unwrap();
        let config = Arc::new(config);
        let upstream = Upstream {
            addr,
            ca_file: Some(ca_file),
            behaviour: Arc::new(Mutex::new(Behaviour::Answer)),
            answers: Arc::new(Mutex::new(Vec::new())),
            seen: Arc::new(Seen::default()),
            names: Arc::new(Mutex::new(Vec::new())),
            stop: Arc::new(AtomicBool::new(false)),
        };
        listener.set_nonblocking(true).unwrap();
        let script = upstream.script();
        std::thread::spawn(move || {
            while !script.stop.load(Ordering::Relaxed) {
                let Ok((tcp, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                script.seen.connections.fetch_add(1, Ordering::Relaxed);
                let script = script.clone();
                let config = Arc::clone(&config);
                std::thread::spawn(move || {
                    tcp.set_nonblocking(false).unwrap();
                    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    let connection = rustls::ServerConnection::new(config).unwrap();
                    let mut stream = rustls::StreamOwned::new(connection, tcp);
                    loop {
                        let Some(query) = read_framed(&mut stream) else {
                            return;
                        };
                        if let Some(reply) = script.reply(&query, true)
                            && stream.write_all(&framed(&reply)).is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        upstream
    }

    fn script(&self) -> Script {
        Script {
            behaviour: Arc::clone(&self.behaviour),
            answers: Arc::clone(&self.answers),
            seen: Arc::clone(&self.seen),
            names: Arc::clone(&self.names),
            stop: Arc::clone(&self.stop),
        }
    }

    pub fn set(&self, behaviour: Behaviour) {
        *self.behaviour.lock().unwrap() = behaviour;
    }

    /// Answers `name` (lowercase, no trailing dot) with `ip`, from now on.
    pub fn answer(&self, name: &str, ip: Ipv4Addr) {
        let mut answers = self.answers.lock().unwrap();
        answers.retain(|(n, _)| n != name);
        answers.push((name.to_string(), ip));
    }

    pub fn queries(&self) -> u64 {
        self.seen.udp.load(Ordering::Relaxed) + self.seen.tcp.load(Ordering::Relaxed)
    }

    /// The names asked, as received (letter case kept), in order.
    pub fn names(&self) -> Vec<String> {
        self.names.lock().unwrap().clone()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(ca_file) = &self.ca_file {
            let _ = std::fs::remove_file(ca_file);
        }
    }
}

#[derive(Clone)]
struct Script {
    behaviour: Arc<Mutex<Behaviour>>,
    answers: Arc<Mutex<Vec<(String, Ipv4Addr)>>>,
    seen: Arc<Seen>,
    names: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Script {
    /// The reply to `query`, or `None` to stay silent.
    fn reply(&self, query: &[u8], tcp: bool) -> Option<Vec<u8>> {
        let behaviour = *self.behaviour.lock().unwrap();
        let message = Message::from_vec(query).ok()?;
        let question = message.queries.first()?.clone();
        let name = question.name().to_ascii();
        if question.query_type() == RecordType::NS && question.name().is_root() {
            self.seen.probes.fetch_add(1, Ordering::Relaxed);
        }
        if name.contains(".kubewire-loop-probe.") {
            self.seen.loop_probes.fetch_add(1, Ordering::Relaxed);
        } else {
            *self.seen.last_cd_do.lock().unwrap() = Some((
                message.metadata.checking_disabled,
                message.edns.as_ref().map(|e| e.flags().dnssec_ok),
            ));
            let counter = if tcp { &self.seen.tcp } else { &self.seen.udp };
            counter.fetch_add(1, Ordering::Relaxed);
            self.names.lock().unwrap().push(name.clone());
        }
        match behaviour {
            Behaviour::Drop => return None,
            Behaviour::Delay(ms) => std::thread::sleep(Duration::from_millis(ms)),
            Behaviour::Garbage => return Some(vec![0xde, 0xad, 0xbe, 0xef, 1, 2, 3]),
            _ => {}
        }
        let mut reply = Message::new(
            message.metadata.id,
            MessageType::Response,
            message.metadata.op_code,
        );
        reply.metadata.recursion_desired = message.metadata.recursion_desired;
        reply.metadata.recursion_available = true;
        reply.add_query(question.clone());
        let lower = name.trim_end_matches('.').to_ascii_lowercase();
        if behaviour == Behaviour::TruncateUdp && !tcp {
            reply.metadata.truncation = true;
        } else if behaviour == Behaviour::ServFail {
            reply.metadata.response_code = ResponseCode::ServFail;
        } else if lower.starts_with("nxsoa") {
            // NXDOMAIN with the zone's SOA: TTL 3600, MINIMUM 10.
            reply.metadata.response_code = ResponseCode::NXDomain;
            let zone = Name::from_ascii("example.com.").unwrap();
            reply.add_authority(Record::from_rdata(
                zone.clone(),
                3600,
                RData::SOA(hickory_proto::rr::rdata::SOA::new(
                    Name::from_ascii("ns.example.com.").unwrap(),
                    Name::from_ascii("host.example.com.").unwrap(),
                    1,
                    3600,
                    600,
                    86400,
                    10,
                )),
            ));
        } else if lower.starts_with("nx") {
            reply.metadata.response_code = ResponseCode::NXDomain;
        } else if question.query_type() == RecordType::A && lower.starts_with("poison") {
            // The answer, plus records for another name slipped into the
            // answer and additional sections.
            reply.add_answer(Record::from_rdata(
                question.name().clone(),
                60,
                RData::A(A(Ipv4Addr::new(192, 0, 2, 7))),
            ));
            let victim = Name::from_ascii("victim.example.com.").unwrap();
            let forged = Record::from_rdata(victim, 60, RData::A(A(Ipv4Addr::new(6, 6, 6, 6))));
            reply.add_answer(forged.clone());
            reply.add_additional(forged);
        } else if question.query_type() == RecordType::A && lower.starts_with("many") {
            // Sixty records: about 1 KB, more than a client without EDNS takes.
            for i in 0..60u8 {
                reply.add_answer(Record::from_rdata(
                    question.name().clone(),
                    60,
                    RData::A(A(Ipv4Addr::new(192, 0, 2, i))),
                ));
            }
        } else if question.query_type() == RecordType::A {
            let ip = self
                .answers
                .lock()
                .unwrap()
                .iter()
                .find(|(n, _)| *n == lower)
                .map_or(Ipv4Addr::new(192, 0, 2, 1), |(_, ip)| *ip);
            reply.add_answer(Record::from_rdata(
                question.name().clone(),
                60,
                RData::A(A(ip)),
            ));
        } else if question.query_type() == RecordType::PTR {
            reply.add_answer(Record::from_rdata(
                question.name().clone(),
                60,
                RData::PTR(hickory_proto::rr::rdata::PTR(
                    Name::from_ascii("host.example.").unwrap(),
                )),
            ));
        }
        match behaviour {
            Behaviour::WrongId => reply.metadata.id = reply.metadata.id.wrapping_add(1),
            Behaviour::WrongQuestion => {
                reply.queries.clear();
                reply.add_query(hickory_proto::op::Query::query(
                    Name::from_ascii("other.example.").unwrap(),
                    RecordType::A,
                ));
            }
            Behaviour::QrClear => reply.metadata.message_type = MessageType::Query,
            _ => {}
        }
        reply.to_vec().ok()
    }
}

fn serve_udp(socket: UdpSocket, script: Script) {
    let other = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut buf = vec![0u8; 65535];
    while !script.stop.load(Ordering::Relaxed) {
        let Ok((len, from)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let query = buf[..len].to_vec();
        if !String::from_utf8_lossy(&query).contains("kubewire-loop-probe") {
            script
                .seen
                .udp_queries
                .lock()
                .unwrap()
                .push((from, query.clone()));
        }
        let script = script.clone();
        let socket = socket.try_clone().unwrap();
        let other = other.try_clone().unwrap();
        std::thread::spawn(move || {
            let behaviour = *script.behaviour.lock().unwrap();
            if let Some(reply) = script.reply(&query, false) {
                let sender = if behaviour == Behaviour::OtherPort {
                    &other
                } else {
                    &socket
                };
                let _ = sender.send_to(&reply, from);
            }
        });
    }
}

fn serve_tcp(listener: TcpListener, script: Script) {
    while !script.stop.load(Ordering::Relaxed) {
        let Ok((mut stream, _)) = listener.accept() else {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        script.seen.connections.fetch_add(1, Ordering::Relaxed);
        let script = script.clone();
        std::thread::spawn(move || {
            stream.set_nonblocking(false).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            // Queries on one connection are answered concurrently, so a slow
            // one does not hold up the rest (replies may come out of order).
            let writer = Arc::new(Mutex::new(stream.try_clone().unwrap()));
            loop {
                let Some(query) = read_framed(&mut stream) else {
                    return;
                };
                let script = script.clone();
                let writer = Arc::clone(&writer);
                std::thread::spawn(move || {
                    if let Some(reply) = script.reply(&query, true) {
                        let _ = writer.lock().unwrap().write_all(&framed(&reply));
                    }
                });
            }
        });
    }
}

/// Reads one length-prefixed DNS message (RFC 7766); `None` at the end.
fn read_framed(stream: &mut impl Read) -> Option<Vec<u8>> {
    let mut prefix = [0u8; 2];
    stream.read_exact(&mut prefix).ok()?;
    let mut message = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
    stream.read_exact(&mut message).ok()?;
    Some(message)
}

/// A message with its two-byte length prefix.
fn framed(message: &[u8]) -> Vec<u8> {
    let mut framed = (message.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(message);
    framed
}
