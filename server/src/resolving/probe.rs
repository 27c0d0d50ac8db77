//! Loop detection through other resolvers, as CoreDNS's `loop` plugin.
//!
//! At start, kubewire asks itself one random name per upstream, in that
//! upstream's zone. The forwarder sends such a probe to its own upstream
//! alone. If the probe arrives at kubewire a second time, the upstream (or
//! something behind it) forwards back to kubewire: the query would go round
//! until it timed out. kubewire then logs an error that explains the loop,
//! answers that probe SERVFAIL (which ends it), and stops forwarding to that
//! upstream.

use kubewire_wire::NameBuf;
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// The label under which probe names sit in each zone.
pub const PROBE_LABEL: &str = "kubewire-loop-probe";
/// Rounds of probes at most; a round repeats the probes that have not been
/// answered (an upstream not up yet, say), a second apart.
const ROUNDS: u32 = 30;

/// The probes of one server, shared by every core.
#[derive(Debug)]
pub struct LoopProbes {
    /// A random tag that starts every probe's first label.
    tag: String,
    /// Per probe: its zone (lowercase) and the upstream it tests.
    probes: Vec<(NameBuf, usize)>,
    /// Per upstream: the rounds whose probe has arrived, as bits.
    seen: Vec<AtomicU64>,
    /// Per upstream: a loop was found.
    looped: Vec<AtomicBool>,
}

/// What the forwarder does with a query that may be a probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// Not a probe: forward as usual.
    No,
    /// A probe on its way out: send it to this upstream alone.
    Send(usize),
    /// A probe that came back: the upstream loops. Answer SERVFAIL.
    Looped(usize),
}

impl LoopProbes {
    /// One probe per (zone, upstream) pair.
    pub fn new(routes: &[(NameBuf, Vec<usize>)], upstreams: usize) -> LoopProbes {
        let tag = format!(
            "{:016x}",
            std::hash::RandomState::new().hash_one(std::process::id())
        );
        let probes = routes
            .iter()
            .flat_map(|(zone, indexes)| indexes.iter().map(move |&u| (*zone, u)))
            .collect();
        LoopProbes {
            tag,
            probes,
            seen: (0..upstreams).map(|_| AtomicU64::new(0)).collect(),
            looped: (0..upstreams).map(|_| AtomicBool::new(false)).collect(),
        }
    }

    /// The probe name of probe `n` in round `round`:
    /// `<tag>-<upstream>-<round>.kubewire-loop-probe.<zone>`.
    fn name(&self, n: usize, round: u32) -> Option<NameBuf> {
        let (zone, upstream) = self.probes.get(n)?;
        let label = format!("{}-{upstream}-{round}", self.tag);
        zone.prepend_label(PROBE_LABEL.as_bytes())
            .and_then(|z| z.prepend_label(label.as_bytes()))
            .ok()
    }

    /// Whether `key` is a probe, and what to do with it.
    /// Whether `key` has the shape of a loop probe (any kubewire's): such
    /// queries bypass the cache, whose coalescing would hide a loop.
    pub fn is_probe(key: &NameBuf) -> bool {
        let mut labels = kubewire_wire::name::labels(key.as_wire());
        labels.nth(1) == Some(PROBE_LABEL.as_bytes())
    }

    /// Says whether `key` is one of our probes, and what to do with it.
    pub fn check(&self, key: &NameBuf, upstream_text: impl Fn(usize) -> String) -> Probe {
        let mut labels = kubewire_wire::name::labels(key.as_wire());
        let (Some(first), Some(second)) = (labels.next(), labels.next()) else {
            return Probe::No;
        };
        if second != PROBE_LABEL.as_bytes() {
            return Probe::No;
        }
        let Some(rest) = first
            .strip_prefix(self.tag.as_bytes())
            .and_then(|r| r.strip_prefix(b"-"))
            .and_then(|r| std::str::from_utf8(r).ok())
        else {
            return Probe::No;
        };
        let Some((upstream, round)) = rest
            .split_once('-')
            .and_then(|(u, r)| Some((u.parse::<usize>().ok()?, r.parse::<u32>().ok()?)))
        else {
            return Probe::No;
        };
        let (Some(seen), Some(looped)) = (self.seen.get(upstream), self.looped.get(upstream))
        else {
            return Probe::No;
        };
        let bit = 1u64 << (round % 64);
        if seen.fetch_or(bit, Ordering::AcqRel) & bit == 0 {
            return Probe::Send(upstream);
        }
        if !looped.swap(true, Ordering::AcqRel) {
            tracing::error!(
                upstream = %upstream_text(upstream),
                probe = %key,
                "forwarding loop: a query kubewire sent to this upstream came back to kubewire, so the upstream \
                 (or a resolver behind it) forwards to kubewire. kubewire stops forwarding to it. The usual cause \
                 is a resolv.conf that points at 127.0.0.53 or at this node's own kubewire: give kubewire a \
                 resolv.conf (or forward.to) that names the real resolvers"
            );
        }
        Probe::Looped(upstream)
    }

    /// Whether a loop was found through this upstream.
    pub fn looped(&self, upstream: usize) -> bool {
        self.looped
            .get(upstream)
            .is_some_and(|l| l.load(Ordering::Acquire))
    }

    /// Sends the probes to kubewire itself at `to`, in rounds a second
    /// apart, until each has an answer other than SERVFAIL (the upstream
    /// answered: no loop), or found a loop, or [`ROUNDS`] have passed.
    /// Runs on its own thread.
    pub fn send_all(&self, to: SocketAddr, timeout: Duration) {
        let local: SocketAddr = if to.is_ipv4() {
            (std::net::Ipv4Addr::LOCALHOST, 0).into()
        } else {
            (std::net::Ipv6Addr::LOCALHOST, 0).into()
        };
        let Ok(socket) = std::net::UdpSocket::bind(local) else {
            tracing::warn!(
                "cannot open a socket for the loop probes; loops through other resolvers go undetected"
            );
            return;
        };
        let _ = socket.set_read_timeout(Some(timeout));
        let mut settled = vec![false; self.probes.len()];
        for round in 0..ROUNDS {
            for (n, (_, upstream)) in self.probes.iter().enumerate() {
                if settled[n] || self.looped(*upstream) {
                    settled[n] = true;
                    continue;
                }
                let Some(name) = self.name(n, round) else {
                    settled[n] = true;
                    continue;
                };
                // HINFO, IN: as CoreDNS's probe.
                let mut query = Vec::new();
                let id = u16::from_be_bytes([0x4c, n as u8]);
                kubewire_wire::records::write_plain_query(
                    id,
                    &name,
                    kubewire_wire::rtype::HINFO,
                    &mut query,
                );
                if socket.send_to(&query, to).is_err() {
                    continue;
                }
                let mut reply = [0u8; 512];
                if let Ok((len, _)) = socket.recv_from(&mut reply)
                    && len >= 4
                    && reply[3] & 0x0F != 2
                {
                    settled[n] = true;
                }
            }
            if settled.iter().all(|&s| s) {
                return;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_probe_goes_out_once_and_a_second_arrival_is_a_loop() {
        let root = NameBuf::ROOT;
        let corp = NameBuf::from_text("corp.example").unwrap();
        let probes = LoopProbes::new(&[(root, vec![0, 1]), (corp, vec![2])], 3);
        assert_eq!(probes.probes.len(), 3);
        let name = probes.name(2, 0).unwrap().to_lowercase();
        assert!(name.ends_with(&corp));
        let none = |_| String::new();
        assert_eq!(
            probes.check(&NameBuf::from_text("www.example.com").unwrap(), none),
            Probe::No
        );
        assert_eq!(
            probes.check(
                &NameBuf::from_text("x-1-0.kubewire-loop-probe").unwrap(),
                none
            ),
            Probe::No,
            "another server's probe"
        );
        assert_eq!(probes.check(&name, none), Probe::Send(2));
        assert!(!probes.looped(2));
        // The next round's probe is new, not a loop.
        let next = probes.name(2, 1).unwrap().to_lowercase();
        assert_eq!(probes.check(&next, none), Probe::Send(2));
        assert_eq!(probes.check(&name, none), Probe::Looped(2));
        assert!(probes.looped(2));
        assert!(!probes.looped(0));
    }
}
