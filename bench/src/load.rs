//! The load generator: UDP queries at a fixed offered rate (open loop) or as
//! fast as replies come back (closed loop), every reply checked against its
//! query, and latency recorded in an HDR histogram.
//!
//! In open loop, send times are scheduled in advance and latency is measured
//! from the *scheduled* time, so a server stall shows up as latency rather
//! than silently slowing the sender (no coordinated omission).

use hdrhistogram::Histogram;
use kubewire_wire::NameBuf;
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{SocketAddr, UdpSocket};
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

/// How to run.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// The server.
    pub server: SocketAddr,
    /// The query mix, sent in order, round and round.
    pub queries: Vec<QuerySpec>,
    /// Offered queries per second; 0 means closed loop.
    pub rate: u64,
    /// How long to send.
    pub duration: Duration,
    /// Source sockets (ports), so that SO_REUSEPORT spreads the load.
    pub sockets: usize,
    /// Closed loop: queries in flight at once.
    pub in_flight: usize,
    /// A query unanswered this long is lost.
    pub timeout: Duration,
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
}

impl LoadReport {
    /// Answered queries per second of sending.
    pub fn answered_qps(&self, duration: Duration) -> f64 {
        self.answered as f64 / duration.as_secs_f64().max(1e-9)
    }

    /// The report as JSON.
    pub fn to_json(&self, config: &LoadConfig) -> serde_json::Value {
        let h = &self.latency_us;
        serde_json::json!({
            "server": config.server.to_string(),
            "mode": if config.rate == 0 { "closed" } else { "open" },
            "offered_qps": config.rate,
            "duration_s": config.duration.as_secs_f64(),
            "sent": self.sent,
            "answered": self.answered,
            "lost": self.lost,
            "mismatched": self.mismatched,
            "answered_qps": self.answered_qps(config.duration),
            "rcodes": self.rcodes,
            "latency_us": {
                "p50": h.value_at_quantile(0.5),
                "p90": h.value_at_quantile(0.9),
                "p99": h.value_at_quantile(0.99),
                "p99.9": h.value_at_quantile(0.999),
                "p99.99": h.value_at_quantile(0.9999),
                "max": h.max(),
                "mean": h.mean(),
            }
        })
    }
}

fn rcode_name(rcode: u8) -> String {
    kubewire_wire::Rcode(u16::from(rcode)).to_string()
}

struct Pending {
    scheduled: Instant,
    query: usize,
}

/// Runs the load and reports.
pub fn run(config: &LoadConfig) -> io::Result<LoadReport> {
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
    let sockets: Vec<UdpSocket> = (0..config.sockets.max(1))
        .map(|_| {
            let socket = UdpSocket::bind(if config.server.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            })?;
            socket.set_nonblocking(true)?;
            Ok(socket)
        })
        .collect::<io::Result<_>>()?;
    let mut pending: Vec<HashMap<u16, Pending>> = sockets.iter().map(|_| HashMap::new()).collect();
    let mut next_id = vec![0u16; sockets.len()];
    let mut report = LoadReport {
        sent: 0,
        answered: 0,
        lost: 0,
        mismatched: 0,
        rcodes: BTreeMap::new(),
        elapsed_s: 0.0,
        latency_us: Histogram::new_with_bounds(1, 60_000_000, 3)
            .map_err(|e| io::Error::other(e.to_string()))?,
    };
    let start = Instant::now();
    let end = start + config.duration;
    let interval = (config.rate > 0).then(|| Duration::from_secs_f64(1.0 / config.rate as f64));
    let mut next_send = start;
    let mut query_index = 0usize;
    let mut socket_index = 0usize;
    let mut buf = [0u8; 65_535];
    let mut last_expiry = start;
    loop {
        let now = Instant::now();
        let sending = now < end;
        // Send what is due (open loop) or what the window allows (closed loop).
        if sending {
            let in_flight: usize = pending.iter().map(HashMap::len).sum();
            let mut budget = match interval {
                Some(_) => usize::MAX,
                None => config.in_flight.saturating_sub(in_flight),
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
                let s = socket_index;
                socket_index = (socket_index + 1) % sockets.len();
                let id = next_id[s];
                next_id[s] = id.wrapping_add(1);
                let mut packet = packets[query_index].clone();
                packet[..2].copy_from_slice(&id.to_be_bytes());
                // A query still waiting under this ID on this socket is lost.
                if pending[s]
                    .insert(
                        id,
                        Pending {
                            scheduled,
                            query: query_index,
                        },
                    )
                    .is_some()
                {
                    report.lost += 1;
                }
                if sockets[s].send_to(&packet, config.server).is_err() {
                    pending[s].remove(&id);
                    report.lost += 1;
                }
                report.sent += 1;
                query_index = (query_index + 1) % packets.len();
                budget -= 1;
            }
        }
        // Take every reply waiting.
        let mut received = false;
        for (s, socket) in sockets.iter().enumerate() {
            while let Ok((len, _)) = socket.recv_from(&mut buf) {
                received = true;
                let at = Instant::now();
                let reply = &buf[..len];
                if len < 12 {
                    report.mismatched += 1;
                    continue;
                }
                let id = u16::from_be_bytes([reply[0], reply[1]]);
                let Some(waiting) = pending[s].remove(&id) else {
                    report.mismatched += 1;
                    continue;
                };
                let question = &packets[waiting.query][12..];
                if reply
                    .get(12..12 + question.len())
                    .is_none_or(|q| !q.eq_ignore_ascii_case(question))
                    || reply[2] & 0x80 == 0
                {
                    report.mismatched += 1;
                    continue;
                }
                report.answered += 1;
                *report
                    .rcodes
                    .entry(rcode_name(reply[3] & 0x0f))
                    .or_default() += 1;
                let micros = at
                    .saturating_duration_since(waiting.scheduled)
                    .as_micros()
                    .max(1) as u64;
                let _ = report.latency_us.record(micros.min(60_000_000));
            }
        }
        // Expire what waited too long.
        if now.duration_since(last_expiry) > Duration::from_millis(10) {
            last_expiry = now;
            for table in &mut pending {
                let before = table.len();
                table.retain(|_, p| now.duration_since(p.scheduled) < config.timeout);
                report.lost += (before - table.len()) as u64;
            }
        }
        let outstanding: usize = pending.iter().map(HashMap::len).sum();
        if !sending && (outstanding == 0 || now > end + config.timeout) {
            report.lost += outstanding as u64;
            break;
        }
        if !received {
            // Nothing arrived: wait a little, less than the send interval.
            std::thread::sleep(Duration::from_micros(20));
        }
    }
    report.elapsed_s = start.elapsed().as_secs_f64();
    Ok(report)
}
