//! Cached answers for forwarded names: an upstream reply checked once,
//! reduced to what answers the question, and stored pre-encoded, so that a
//! cache hit is a copy and a patch, as a cluster answer is.
//!
//! [`CachedAnswer::from_upstream`] builds an entry from a checked upstream
//! reply ([`crate::UpstreamReply`]). It keeps only:
//! - the answer chain: records whose owner is the question name or a CNAME
//!   target reached from it, of the asked type, CNAME or RRSIG;
//! - for a negative answer (NXDOMAIN, or NOERROR without the asked type at
//!   the chain's end), the authority's SOA for a zone above the chain's last
//!   name, and the NSEC, NSEC3 and RRSIG records inside that zone.
//!
//! Everything else (the authority of a positive answer, every additional
//! record) is dropped, so a record for another name that an upstream slips
//! into its reply is never served. Owners equal to the question name are
//! written as a pointer to the question (`C0 0C`), so a hit echoes the
//! client's letter case; other names are written whole, or as a pointer to
//! an earlier whole copy in the entry. Every TTL's offset is noted.
//!
//! [`CachedAnswer::write_reply`] writes a hit: the client's header (ID, RD,
//! CD kept), the client's question, the stored records with each TTL lowered
//! by the entry's age, and an OPT record if the client sent one.
//!
//! How long an entry lives ([`TtlPolicy`]) follows CoreDNS's `cache`: the
//! smallest TTL of the kept records, or for a negative answer the smaller of
//! the SOA's TTL and its MINIMUM (RFC 2308), clamped to a configured range;
//! SERVFAIL for a fixed time. Truncated replies, other RCODEs, negative
//! answers without an SOA and replies with names in a cluster zone are not
//! cached: such a reply is passed on once, as it came.

use crate::name::{MAX_NAME_LEN, NameBuf};
use crate::query::{HEADER_LEN, Query};
use crate::records::{CopyError, read_name};
use crate::reply::{CopiedRecords, ReplyError, write_copied_reply};
use crate::upstream::UpstreamReply;
use crate::{Rcode, Transport, rtype};

use crate::rtype::{NSEC, NSEC3, RRSIG};
/// The RFC 1035 types whose data may hold compressed names that this module
/// does not rewrite (MD, MF, MB, MG, MR, MINFO): a reply with one is not
/// cached, since moving it would break its pointers.
const COMPRESSIBLE_UNHANDLED: [u16; 6] = [3, 4, 7, 8, 9, 14];
/// The longest CNAME chain followed inside one reply.
const MAX_CHAIN: usize = 16;

/// The longest cache key: a name, its type, and the DO and CD bits.
pub const MAX_CACHE_KEY: usize = MAX_NAME_LEN + 3;

/// Writes the cache key of `query` into `out` and returns it: the lowercase
/// question name, the type, and one byte holding DO and CD (the class is
/// always IN; other classes are refused before this). As CoreDNS's key.
pub fn cache_key<'k>(query: &Query<'_>, out: &'k mut [u8; MAX_CACHE_KEY]) -> &'k [u8] {
    let name = query.key().as_wire();
    let len = name.len();
    out[..len].copy_from_slice(name);
    out[len..len + 2].copy_from_slice(&query.qtype().to_be_bytes());
    let dnssec_ok = query.edns().is_some_and(|e| e.dnssec_ok);
    let checking_disabled = query.packet()[3] & 0x10 != 0;
    out[len + 2] = u8::from(dnssec_ok) << 1 | u8::from(checking_disabled);
    &out[..len + 3]
}

/// How long entries live, in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TtlPolicy {
    /// Positive answers: at least this long.
    pub success_min_s: u32,
    /// Positive answers: at most this long.
    pub success_max_s: u32,
    /// Negative answers: at least this long.
    pub denial_min_s: u32,
    /// Negative answers: at most this long.
    pub denial_max_s: u32,
    /// SERVFAIL: this long; 0 does not cache it.
    pub servfail_s: u32,
}

impl Default for TtlPolicy {
    /// kubeadm's `cache 30`: CoreDNS's minimum of 5 s, a cap of 30 s for
    /// both kinds, SERVFAIL for 5 s.
    fn default() -> TtlPolicy {
        TtlPolicy {
            success_min_s: 5,
            success_max_s: 30,
            denial_min_s: 5,
            denial_max_s: 30,
            servfail_s: 5,
        }
    }
}

/// What an entry answers, for metrics and limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheKind {
    /// Records of the asked type.
    Success,
    /// NXDOMAIN or NODATA, with the zone's SOA.
    Denial,
    /// SERVFAIL from the upstream.
    ServFail,
}

/// Why an upstream reply is passed on once instead of cached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotCached {
    /// TC was set.
    Truncated,
    /// An RCODE other than NOERROR, NXDOMAIN and SERVFAIL.
    Rcode,
    /// A negative answer without an SOA to time it.
    NoSoa,
    /// The TTL came to 0 (SERVFAIL caching off, or a 0 range).
    ZeroTtl,
    /// A name of the answer is in a cluster zone: cluster names are only
    /// ever answered live.
    ClusterName,
    /// A record type whose data may hold names this module does not rewrite.
    Unhandled,
    /// The reply is malformed, or the entry would exceed a DNS message.
    Malformed,
}

impl core::fmt::Display for NotCached {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            NotCached::Truncated => "truncated",
            NotCached::Rcode => "RCODE not cached",
            NotCached::NoSoa => "negative answer without an SOA",
            NotCached::ZeroTtl => "TTL of 0",
            NotCached::ClusterName => "names a cluster zone",
            NotCached::Unhandled => "record type with unhandled compressed names",
            NotCached::Malformed => "malformed",
        })
    }
}

impl From<CopyError> for NotCached {
    fn from(_: CopyError) -> NotCached {
        NotCached::Malformed
    }
}

/// How a hit's TTLs are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TtlView {
    /// Each stored TTL lowered by this many seconds (0: as stored).
    Aged(u32),
    /// Every TTL set to this (a stale answer, RFC 8767).
    Fixed(u32),
}

/// One cached answer, pre-encoded. See the module docs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedAnswer {
    kind: CacheKind,
    rcode: Rcode,
    /// The upstream's AA and TC bits (header byte 2) and AD bit (byte 3).
    flags: [u8; 2],
    counts: [u16; 3],
    /// Length of the question (name, type, class) the tail was built for:
    /// pointers inside the tail assume it.
    question_len: usize,
    /// The records as written after the question (the first `tail_len`
    /// bytes), then the offset of each TTL field in them, two bytes each
    /// (native order). One allocation per entry instead of two.
    block: Box<[u8]>,
    tail_len: usize,
    ttl_s: u32,
}

/// One record of the upstream reply, located.
#[derive(Clone, Copy)]
struct Located {
    section: u8,
    owner: NameBuf,
    rtype: u16,
    /// Offset of its TYPE field in the reply.
    fixed: usize,
    ttl: u32,
    end: usize,
}

impl CachedAnswer {
    /// Builds an entry from `reply`, checked against `question` (the name,
    /// type and class sent upstream). `in_cluster` says whether a name is in
    /// a cluster zone.
    pub fn from_upstream(
        reply: &UpstreamReply<'_>,
        question: &[u8],
        policy: &TtlPolicy,
        in_cluster: impl Fn(&NameBuf) -> bool,
    ) -> Result<CachedAnswer, NotCached> {
        if reply.truncated() {
            return Err(NotCached::Truncated);
        }
        let (qname, name_len) =
            NameBuf::lowercase_from_wire(question).map_err(|_| NotCached::Malformed)?;
        let qtype = question
            .get(name_len..name_len + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or(NotCached::Malformed)?;
        let rcode = reply.rcode();
        let packet = reply.packet();
        if rcode == Rcode::SERVFAIL {
            if policy.servfail_s == 0 {
                return Err(NotCached::ZeroTtl);
            }
            return Ok(CachedAnswer {
                kind: CacheKind::ServFail,
                rcode,
                flags: [0, 0],
                counts: [0; 3],
                question_len: question.len(),
                block: Box::default(),
                tail_len: 0,
                ttl_s: policy.servfail_s,
            });
        }
        if rcode != Rcode::NOERROR && rcode != Rcode::NXDOMAIN {
            return Err(NotCached::Rcode);
        }
        if in_cluster(&qname) {
            return Err(NotCached::ClusterName);
        }

        let records = locate(packet, HEADER_LEN + question.len(), reply.counts())?;
        // The answer chain: the question name and the CNAME targets reached
        // from it, in order.
        let mut chain = vec![qname];
        if qtype != rtype::CNAME {
            while chain.len() < MAX_CHAIN {
                let Some(target) = records
                    .iter()
                    .filter(|r| r.section == 0 && r.rtype == rtype::CNAME)
                    .filter(|r| r.owner == chain[chain.len() - 1])
                    .find_map(|r| {
                        let mut target = NameBuf::ROOT;
                        read_name(packet, r.fixed + 10, &mut target).ok()?;
                        Some(target)
                    })
                else {
                    break;
                };
                if chain.contains(&target) {
                    break;
                }
                if in_cluster(&target) {
                    return Err(NotCached::ClusterName);
                }
                chain.push(target);
            }
        }
        let last = chain[chain.len() - 1];
        let in_chain = |r: &Located| chain.contains(&r.owner);
        let mut kept: Vec<Located> = records
            .iter()
            .filter(|r| r.section == 0 && in_chain(r))
            .filter(|r| {
                r.rtype == qtype
                    || qtype == rtype::ANY
                    || r.rtype == RRSIG
                    || (r.rtype == rtype::CNAME && qtype != rtype::CNAME)
            })
            .copied()
            .collect();
        let positive = rcode == Rcode::NOERROR
            && kept
                .iter()
                .any(|r| r.owner == last && (r.rtype == qtype || qtype == rtype::ANY));

        let (kind, ttl_s) = if positive {
            let ttl = kept.iter().map(|r| r.ttl).min().unwrap_or(0);
            (
                CacheKind::Success,
                ttl.clamp(
                    policy.success_min_s,
                    policy.success_max_s.max(policy.success_min_s),
                ),
            )
        } else {
            let Some(soa) = records
                .iter()
                .find(|r| r.section == 1 && r.rtype == rtype::SOA && last.ends_with(&r.owner))
            else {
                return Err(NotCached::NoSoa);
            };
            let zone = soa.owner;
            let minimum = soa_minimum(packet, soa)?;
            kept.extend(records.iter().filter(|r| {
                r.section == 1
                    && (r.fixed == soa.fixed
                        || (matches!(r.rtype, NSEC | NSEC3 | RRSIG) && r.owner.ends_with(&zone)))
            }));
            let ttl = soa.ttl.min(minimum);
            (
                CacheKind::Denial,
                ttl.clamp(
                    policy.denial_min_s,
                    policy.denial_max_s.max(policy.denial_min_s),
                ),
            )
        };
        if ttl_s == 0 {
            return Err(NotCached::ZeroTtl);
        }
        if kept
            .iter()
            .any(|r| COMPRESSIBLE_UNHANDLED.contains(&r.rtype))
        {
            return Err(NotCached::Unhandled);
        }

        let mut writer = TailWriter {
            tail: Vec::new(),
            ttl_offsets: Vec::new(),
            names: Vec::new(),
            base: HEADER_LEN + question.len(),
            qname,
        };
        let mut counts = [0u16; 3];
        for record in &kept {
            writer.record(packet, record, ttl_s)?;
            counts[usize::from(record.section)] += 1;
        }
        if writer.tail.len() > crate::reply::max_records_len(question.len()) {
            return Err(NotCached::Malformed);
        }
        let tail_len = writer.tail.len();
        let mut block = writer.tail;
        block.reserve_exact(2 * writer.ttl_offsets.len());
        for ttl_at in &writer.ttl_offsets {
            block.extend_from_slice(&ttl_at.to_ne_bytes());
        }
        Ok(CachedAnswer {
            kind,
            rcode,
            flags: [packet[2] & 0x04, packet[3] & 0x20],
            counts,
            question_len: question.len(),
            block: block.into_boxed_slice(),
            tail_len,
            ttl_s,
        })
    }

    /// What it answers.
    pub fn kind(&self) -> CacheKind {
        self.kind
    }

    /// Its RCODE.
    pub fn rcode(&self) -> Rcode {
        self.rcode
    }

    /// How long it may be served fresh, in seconds.
    pub fn ttl_s(&self) -> u32 {
        self.ttl_s
    }

    /// The stored records, as written after the question.
    pub fn tail(&self) -> &[u8] {
        &self.block[..self.tail_len]
    }

    /// All a hit reads of the entry besides its header: the records, then
    /// their TTL offsets. For prefetching before a batch is answered.
    pub fn stored_block(&self) -> &[u8] {
        &self.block
    }

    /// Where each TTL field is in [`CachedAnswer::tail`].
    fn ttl_offsets(&self) -> impl Iterator<Item = usize> + '_ {
        self.block[self.tail_len..]
            .chunks_exact(2)
            .map(|at| usize::from(u16::from_ne_bytes([at[0], at[1]])))
    }

    /// Bytes it holds, for the cache's byte limit.
    pub fn stored_bytes(&self) -> usize {
        core::mem::size_of::<CachedAnswer>() + self.block.len()
    }

    /// Writes the reply to `query` (whose key is this entry's) into `out`
    /// and returns its length. No parsing, no encoding: a copy, the header
    /// and TTLs patched. A reply over the client's size limit has TC set
    /// and no records, as a cluster answer.
    pub fn write_reply(
        &self,
        query: &Query<'_>,
        ttl: TtlView,
        transport: Transport,
        out: &mut [u8],
    ) -> Result<usize, ReplyError> {
        if query.question_bytes().len() != self.question_len {
            return Err(ReplyError::QuestionOutsideZone);
        }
        let packet = query.packet();
        // AD only to a client that asked for it or for DNSSEC (RFC 6840).
        let dnssec_ok = query.edns().is_some_and(|e| e.dnssec_ok);
        let ad = if dnssec_ok || packet[3] & 0x20 != 0 {
            self.flags[1]
        } else {
            0
        };
        let copied = CopiedRecords {
            records: self.tail(),
            counts: self.counts,
            rcode: self.rcode,
            aa_tc: self.flags[0],
            ad,
        };
        let (len, records_at) = write_copied_reply(query, &copied, transport, out)?;
        if let Some(at) = records_at {
            let tail = &mut out[at..at + self.tail_len];
            for ttl_at in self.ttl_offsets() {
                let Some(field) = tail.get_mut(ttl_at..ttl_at + 4) else {
                    continue;
                };
                let stored = u32::from_be_bytes([field[0], field[1], field[2], field[3]]);
                let shown = match ttl {
                    TtlView::Aged(age_s) => stored.saturating_sub(age_s),
                    TtlView::Fixed(ttl_s) => ttl_s,
                };
                field.copy_from_slice(&shown.to_be_bytes());
            }
        }
        Ok(len)
    }
}

/// Locates every answer and authority record, and the kept additionals
/// (which are never cached, but are walked to stay in step).
fn locate(packet: &[u8], start: usize, counts: [u16; 3]) -> Result<Vec<Located>, NotCached> {
    let mut records = Vec::new();
    let mut pos = start;
    for (section, &count) in counts.iter().enumerate().take(2) {
        for _ in 0..count {
            let mut owner = NameBuf::ROOT;
            let fixed = read_name(packet, pos, &mut owner)?;
            let field = packet.get(fixed..fixed + 10).ok_or(NotCached::Malformed)?;
            let rtype = u16::from_be_bytes([field[0], field[1]]);
            let ttl = u32::from_be_bytes([field[4], field[5], field[6], field[7]]);
            // RFC 2181: a TTL with the top bit set is read as 0.
            let ttl = if ttl > i32::MAX as u32 { 0 } else { ttl };
            let end = fixed + 10 + usize::from(u16::from_be_bytes([field[8], field[9]]));
            if end > packet.len() {
                return Err(NotCached::Malformed);
            }
            records.push(Located {
                section: section as u8,
                owner,
                rtype,
                fixed,
                ttl,
                end,
            });
            pos = end;
        }
    }
    Ok(records)
}

/// The MINIMUM field of an SOA record.
fn soa_minimum(packet: &[u8], soa: &Located) -> Result<u32, NotCached> {
    let mut name = NameBuf::ROOT;
    let rname = read_name(packet, soa.fixed + 10, &mut name)?;
    let serial = read_name(packet, rname, &mut name)?;
    let field = packet
        .get(serial + 16..serial + 20)
        .filter(|_| serial + 20 == soa.end)
        .ok_or(NotCached::Malformed)?;
    Ok(u32::from_be_bytes([field[0], field[1], field[2], field[3]]))
}

/// Writes kept records into an entry's tail.
struct TailWriter {
    tail: Vec<u8>,
    ttl_offsets: Vec<u16>,
    /// Names written whole, with their offset in the message.
    names: Vec<(NameBuf, u16)>,
    /// Offset of the tail in the message.
    base: usize,
    qname: NameBuf,
}

impl TailWriter {
    /// Writes a name: a pointer to the question, or to an earlier whole
    /// copy, or the name whole.
    fn name(&mut self, name: &NameBuf) {
        if *name == self.qname {
            self.tail.extend_from_slice(&[0xC0, HEADER_LEN as u8]);
            return;
        }
        if let Some(&(_, at)) = self.names.iter().find(|(n, _)| n == name) {
            self.tail.extend_from_slice(&(0xC000 | at).to_be_bytes());
            return;
        }
        let at = self.base + self.tail.len();
        if at < 0x3FFF {
            self.names.push((*name, at as u16));
        }
        self.tail.extend_from_slice(name.as_wire());
    }

    fn record(&mut self, packet: &[u8], record: &Located, ttl_s: u32) -> Result<(), NotCached> {
        self.name(&record.owner);
        let fixed = record.fixed;
        // Type and class as they are; the TTL capped by the entry's.
        self.tail.extend_from_slice(&packet[fixed..fixed + 4]);
        let ttl_at = u16::try_from(self.tail.len()).map_err(|_| NotCached::Malformed)?;
        self.ttl_offsets.push(ttl_at);
        self.tail
            .extend_from_slice(&record.ttl.min(ttl_s).to_be_bytes());
        let rdlen_at = self.tail.len();
        self.tail.extend_from_slice(&[0, 0]);
        let rdata = fixed + 10;
        // The names inside the data of the common types, written as names
        // (pointers to whole copies in this entry, never into the reply).
        let (names_at, name_count, fixed_tail) = match record.rtype {
            rtype::CNAME | rtype::NS | rtype::PTR => (rdata, 1, 0),
            rtype::MX => (rdata + 2, 1, 0),
            rtype::SRV => (rdata + 6, 1, 0),
            rtype::SOA => (rdata, 2, 20),
            _ => (record.end, 0, 0),
        };
        let before = packet.get(rdata..names_at).ok_or(NotCached::Malformed)?;
        self.tail.extend_from_slice(before);
        let mut at = names_at;
        for _ in 0..name_count {
            let mut inner = NameBuf::ROOT;
            at = read_name(packet, at, &mut inner)?;
            self.name(&inner);
        }
        if name_count > 0 && at + fixed_tail != record.end {
            return Err(NotCached::Malformed);
        }
        self.tail.extend_from_slice(&packet[at..record.end]);
        let written =
            u16::try_from(self.tail.len() - rdlen_at - 2).map_err(|_| NotCached::Malformed)?;
        self.tail[rdlen_at..rdlen_at + 2].copy_from_slice(&written.to_be_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::{MAX_UPSTREAM_QUERY, check_upstream_reply, parse_query, write_upstream_query};

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut packet = vec![0xAB, 0xCD, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            packet.push(label.len() as u8);
            packet.extend_from_slice(label.as_bytes());
        }
        packet.push(0);
        packet.extend_from_slice(&qtype.to_be_bytes());
        packet.extend_from_slice(&[0, 1]);
        packet
    }

    /// An upstream reply to `client`'s question: header counts as given,
    /// then `records` (which may point at the question at 12).
    fn reply(client: &[u8], rcode: u8, counts: [u16; 3], records: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let parsed = parse_query(client).unwrap();
        let mut sent = [0u8; MAX_UPSTREAM_QUERY];
        let len = write_upstream_query(&parsed, 9, &mut sent).unwrap();
        let question = crate::sent_question(&sent[..len]).to_vec();
        let mut reply = vec![0, 9, 0x81, 0x80 | rcode, 0, 1];
        for count in counts {
            reply.extend_from_slice(&count.to_be_bytes());
        }
        reply.extend_from_slice(&question);
        reply.extend_from_slice(records);
        (reply, question)
    }

    fn a(owner: &[u8], ttl: u32, ip: [u8; 4]) -> Vec<u8> {
        let mut r = owner.to_vec();
        r.extend_from_slice(&[0, 1, 0, 1]);
        r.extend_from_slice(&ttl.to_be_bytes());
        r.extend_from_slice(&[0, 4]);
        r.extend_from_slice(&ip);
        r
    }

    #[test]
    fn a_hit_echoes_case_and_ages_ttls() {
        let client = query("www.example.com", rtype::A);
        let (reply, question) = reply(&client, 0, [1, 0, 0], &a(&[0xC0, 12], 20, [192, 0, 2, 1]));
        let checked = check_upstream_reply(&reply, 9, &question).unwrap();
        let entry =
            CachedAnswer::from_upstream(&checked, &question, &TtlPolicy::default(), |_| false)
                .unwrap();
        assert_eq!(entry.kind(), CacheKind::Success);
        assert_eq!(entry.ttl_s(), 20);
        let other = query("WWW.Example.COM", rtype::A);
        let parsed = parse_query(&other).unwrap();
        let mut out = [0u8; 512];
        let len = entry
            .write_reply(&parsed, TtlView::Aged(3), Transport::Udp, &mut out)
            .unwrap();
        assert_eq!(&out[12..16], b"\x03WWW");
        assert_eq!(&out[len - 16..len - 14], &[0xC0, 12]);
        assert_eq!(&out[len - 10..len - 6], &17u32.to_be_bytes());
        assert_eq!(&out[len - 4..len], &[192, 0, 2, 1]);
    }

    #[test]
    fn records_for_other_names_are_never_kept() {
        let client = query("www.example.com", rtype::A);
        let mut records = a(&[0xC0, 12], 60, [192, 0, 2, 1]);
        // An answer record for another name, and an additional one.
        records.extend(a(b"\x04bank\x03com\x00", 60, [6, 6, 6, 6]));
        records.extend(a(b"\x04bank\x03com\x00", 60, [6, 6, 6, 6]));
        let (reply, question) = reply(&client, 0, [2, 0, 1], &records);
        let checked = check_upstream_reply(&reply, 9, &question).unwrap();
        let entry =
            CachedAnswer::from_upstream(&checked, &question, &TtlPolicy::default(), |_| false)
                .unwrap();
        assert_eq!(entry.counts, [1, 0, 0]);
        assert!(!entry.tail().windows(4).any(|w| w == b"bank"));
        assert_eq!(entry.ttl_s(), 30, "capped");
    }

    #[test]
    fn negative_answers_need_an_soa_and_take_its_minimum() {
        let client = query("nope.example.com", rtype::A);
        let mut soa = b"\x07example\x03com\x00\x00\x06\x00\x01\x00\x00\x0e\x10".to_vec();
        let rdata = b"\x02ns\xc0\x22\x04host\xc0\x22\x00\x00\x00\x01\x00\x00\x00\x01\x00\x00\x00\x01\x00\x00\x00\x01\x00\x00\x00\x0a";
        soa.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        soa.extend_from_slice(rdata);
        let (reply, question) = reply(&client, 3, [0, 1, 0], &soa);
        let checked = check_upstream_reply(&reply, 9, &question).unwrap();
        let entry =
            CachedAnswer::from_upstream(&checked, &question, &TtlPolicy::default(), |_| false)
                .unwrap();
        assert_eq!(entry.kind(), CacheKind::Denial);
        assert_eq!(entry.ttl_s(), 10, "the SOA minimum");
        assert_eq!(entry.rcode(), Rcode::NXDOMAIN);
        let (bare, question) = reply_without_soa(&client);
        let checked = check_upstream_reply(&bare, 9, &question).unwrap();
        assert_eq!(
            CachedAnswer::from_upstream(&checked, &question, &TtlPolicy::default(), |_| false),
            Err(NotCached::NoSoa)
        );
    }

    fn reply_without_soa(client: &[u8]) -> (Vec<u8>, Vec<u8>) {
        reply(client, 3, [0, 0, 0], &[])
    }

    #[test]
    fn cluster_names_and_truncation_are_not_cached() {
        let client = query("www.example.com", rtype::A);
        let mut records = b"\xc0\x0c\x00\x05\x00\x01\x00\x00\x00\x3c\x00\x11".to_vec();
        records.extend_from_slice(b"\x03web\x07default\x03svc\x00");
        let (reply, question) = reply(&client, 0, [1, 0, 0], &records);
        let checked = check_upstream_reply(&reply, 9, &question).unwrap();
        let svc = NameBuf::from_text("svc").unwrap();
        assert_eq!(
            CachedAnswer::from_upstream(&checked, &question, &TtlPolicy::default(), |n| n
                .ends_with(&svc)),
            Err(NotCached::ClusterName)
        );
        let mut truncated = reply.clone();
        truncated[2] |= 0x02;
        let checked = check_upstream_reply(&truncated, 9, &question).unwrap();
        assert_eq!(
            CachedAnswer::from_upstream(&checked, &question, &TtlPolicy::default(), |_| false),
            Err(NotCached::Truncated)
        );
    }
}
