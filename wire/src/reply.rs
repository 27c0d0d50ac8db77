//! Assembling a reply into a buffer the caller owns.
//!
//! The reply is the client's header (ID kept; QR set; AA from the answer; RD
//! and CD copied; RA as configured; RCODE and counts patched), the client's
//! question byte for byte, the prepared tail, and an OPT record if and only
//! if the query had one. If that would exceed the client's limit (512 bytes
//! without EDNS; with EDNS the smaller of its payload size and ours) the
//! reply is the header, question and OPT with TC set: never a cut record.

use crate::prepared::{AnswerRef, QuestionOutsideZone};
use crate::query::{Edns, HEADER_LEN, Query, QueryError, scan};
use crate::{NameBuf, Rcode, rtype};
use core::fmt;

/// The UDP payload size we advertise (the DNS Flag Day 2020 value).
pub const OUR_UDP_PAYLOAD: u16 = 1232;
/// The smallest buffer every reply is guaranteed to fit in when it must be
/// truncated: header, the longest question, and an OPT record.
pub const MIN_REPLY_BUF: usize = HEADER_LEN + 255 + 4 + OPT_LEN;
/// Length of the OPT record we write: root, type, class, TTL, RDLEN 0.
pub const OPT_LEN: usize = 11;
/// The largest DNS message: what a TCP length prefix can say.
pub const MAX_MESSAGE: usize = 65_535;

/// The most bytes of records a message can hold after a question of
/// `question_len` bytes (name, type, class), leaving room for our OPT.
pub const fn max_records_len(question_len: usize) -> usize {
    MAX_MESSAGE - HEADER_LEN - question_len - OPT_LEN
}

/// The transport a reply goes over, which sets its size limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// UDP: 512 bytes, or the EDNS payload size (at most ours).
    Udp,
    /// TCP: up to 65535 bytes.
    Tcp,
}

/// The caller's buffer is smaller than [`MIN_REPLY_BUF`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferTooSmall;

/// Why [`assemble_reply`] wrote no reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyError {
    /// The caller's buffer is smaller than [`MIN_REPLY_BUF`].
    BufferTooSmall,
    /// A zone-wide answer was given a question outside its zone.
    QuestionOutsideZone,
}

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplyError::BufferTooSmall => fmt::Display::fmt(&BufferTooSmall, f),
            ReplyError::QuestionOutsideZone => fmt::Display::fmt(&QuestionOutsideZone, f),
        }
    }
}

impl std::error::Error for ReplyError {}

impl From<QuestionOutsideZone> for ReplyError {
    fn from(_: QuestionOutsideZone) -> ReplyError {
        ReplyError::QuestionOutsideZone
    }
}

impl fmt::Display for BufferTooSmall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "reply buffer smaller than {MIN_REPLY_BUF} bytes")
    }
}

impl std::error::Error for BufferTooSmall {}

/// The most bytes a reply to this query may take.
pub(crate) fn size_limit(edns: Option<Edns>, transport: Transport, buffer: usize) -> usize {
    let limit = match (transport, edns) {
        (Transport::Tcp, _) => MAX_MESSAGE,
        (Transport::Udp, None) => 512,
        (Transport::Udp, Some(edns)) => usize::from(edns.udp_payload_size.min(OUR_UDP_PAYLOAD)),
    };
    limit.min(buffer)
}

/// Writes the reply to `query` from `answer` into `out` and returns its
/// length. `rotation` picks the first record of a rotating answer set.
///
/// A zone-wide answer (from [`AnswerBuilder::for_zone`](crate::AnswerBuilder::for_zone))
/// must be given a question in its zone; any other question is
/// [`ReplyError::QuestionOutsideZone`], never a reply with stray pointers.
pub fn assemble_reply(
    query: &Query<'_>,
    answer: AnswerRef<'_>,
    rotation: u32,
    transport: Transport,
    recursion_available: bool,
    out: &mut [u8],
) -> Result<usize, ReplyError> {
    if out.len() < MIN_REPLY_BUF {
        return Err(ReplyError::BufferTooSmall);
    }
    let packet = query.packet();
    let question = query.question_bytes();
    let edns = query.edns();
    let opt_len = if edns.is_some() { OPT_LEN } else { 0 };
    let question_end = HEADER_LEN + question.len();
    let full_len = question_end + answer.tail_len() + opt_len;
    let fits = full_len <= size_limit(edns, transport, out.len());

    let [answers, authorities, additionals] = if fits { answer.counts() } else { [0; 3] };
    write_header(
        packet,
        out,
        answer.rcode(),
        answer.authoritative(),
        !fits,
        recursion_available,
        [
            1,
            answers,
            authorities,
            additionals + u16::from(edns.is_some()),
        ],
    );
    out[HEADER_LEN..question_end].copy_from_slice(question);
    let mut len = question_end;
    if fits {
        let tail_end = question_end + answer.tail_len();
        answer.write_tail(
            &mut out[question_end..tail_end],
            query.key().as_wire(),
            rotation,
        )?;
        len = tail_end;
    }
    if let Some(edns) = edns {
        len += write_opt(&mut out[len..], answer.rcode(), edns.dnssec_ok);
    }
    Ok(len)
}

/// Writes the reply to a query that [`parse_query`](crate::parse_query)
/// rejected, or returns `Ok(None)` when no reply must be sent.
///
/// FORMERR replies are the header alone. NOTIMP, REFUSED and BADVERS echo
/// the question, and an OPT if the query had a sound one (BADVERS always
/// has one: it needs the OPT to carry the extended RCODE).
pub fn error_reply(
    packet: &[u8],
    error: QueryError,
    recursion_available: bool,
    out: &mut [u8],
) -> Result<Option<usize>, BufferTooSmall> {
    let Some(rcode) = error.rcode() else {
        return Ok(None);
    };
    if out.len() < MIN_REPLY_BUF {
        return Err(BufferTooSmall);
    }
    let mut key = NameBuf::ROOT;
    let (scan, _) = scan(packet, &mut key);
    let (question_end, edns) = match rcode {
        Rcode::FORMERR => (None, None),
        _ => (scan.question_end, scan.edns),
    };
    let question_len = question_end.map_or(0, |end| end - HEADER_LEN);
    write_header(
        packet,
        out,
        rcode,
        false,
        false,
        recursion_available,
        [
            u16::from(question_end.is_some()),
            0,
            0,
            u16::from(edns.is_some()),
        ],
    );
    out[HEADER_LEN..HEADER_LEN + question_len]
        .copy_from_slice(&packet[HEADER_LEN..HEADER_LEN + question_len]);
    let mut len = HEADER_LEN + question_len;
    if let Some(edns) = edns {
        len += write_opt(&mut out[len..], rcode, edns.dnssec_ok);
    }
    Ok(Some(len))
}

/// Copies the client's header and patches flags and counts.
fn write_header(
    packet: &[u8],
    out: &mut [u8],
    rcode: Rcode,
    authoritative: bool,
    truncated: bool,
    recursion_available: bool,
    counts: [u16; 4],
) {
    out[0] = packet[0];
    out[1] = packet[1];
    // QR=1, opcode copied, AA, TC, RD copied.
    let aa = if authoritative { 0x04 } else { 0 };
    let tc = if truncated { 0x02 } else { 0 };
    out[2] = 0x80 | (packet[2] & 0x78) | aa | tc | (packet[2] & 0x01);
    // RA, Z=0, AD=0, CD copied, RCODE low bits.
    let ra = if recursion_available { 0x80 } else { 0 };
    out[3] = ra | (packet[3] & 0x10) | rcode.header_bits();
    for (i, count) in counts.iter().enumerate() {
        out[4 + 2 * i..6 + 2 * i].copy_from_slice(&count.to_be_bytes());
    }
}

/// Records copied from another message (an upstream's reply, a cached
/// answer), and what the reply's header takes from them.
pub(crate) struct CopiedRecords<'a> {
    /// The records, with no pointer into the message they came from (or
    /// only to the question, which sits at the same offset).
    pub(crate) records: &'a [u8],
    /// Answer, authority and additional counts, the OPT not included.
    pub(crate) counts: [u16; 3],
    pub(crate) rcode: Rcode,
    /// AA, and TC when the source was cut short (header byte 2 bits).
    pub(crate) aa_tc: u8,
    /// AD (header byte 3 bit), as the caller grants it.
    pub(crate) ad: u8,
}

/// Writes a reply of copied records: the client's header (ID, opcode, RD,
/// CD kept; QR and RA set), its question, the records if they fit the
/// client's limit (else TC and none), and an OPT if the query had one.
/// Returns the length, and where the records start if they were written.
#[inline]
pub(crate) fn write_copied_reply(
    query: &Query<'_>,
    copied: &CopiedRecords<'_>,
    transport: Transport,
    out: &mut [u8],
) -> Result<(usize, Option<usize>), ReplyError> {
    if out.len() < MIN_REPLY_BUF {
        return Err(ReplyError::BufferTooSmall);
    }
    let packet = query.packet();
    let question = query.question_bytes();
    let edns = query.edns();
    let opt_len = if edns.is_some() { OPT_LEN } else { 0 };
    let question_end = HEADER_LEN + question.len();
    let full_len = question_end + copied.records.len() + opt_len;
    let fits = full_len <= size_limit(edns, transport, out.len());

    out[..2].copy_from_slice(&packet[..2]);
    let tc = if fits { 0 } else { 0x02 };
    out[2] = 0x80 | (packet[2] & 0x78) | copied.aa_tc | tc | (packet[2] & 0x01);
    out[3] = 0x80 | copied.ad | (packet[3] & 0x10) | copied.rcode.header_bits();
    let [an, ns, ar] = if fits { copied.counts } else { [0; 3] };
    let ar = ar + u16::from(edns.is_some());
    for (i, count) in [1, an, ns, ar].iter().enumerate() {
        out[4 + 2 * i..6 + 2 * i].copy_from_slice(&count.to_be_bytes());
    }
    out[HEADER_LEN..question_end].copy_from_slice(question);
    let mut len = question_end;
    let records_at = fits.then(|| {
        out[len..len + copied.records.len()].copy_from_slice(copied.records);
        len += copied.records.len();
        question_end
    });
    if let Some(edns) = edns {
        len += write_opt(&mut out[len..], copied.rcode, edns.dnssec_ok);
    }
    Ok((len, records_at))
}

/// Writes our OPT record and returns its length.
pub(crate) fn write_opt(out: &mut [u8], rcode: Rcode, dnssec_ok: bool) -> usize {
    out[0] = 0;
    out[1..3].copy_from_slice(&rtype::OPT.to_be_bytes());
    out[3..5].copy_from_slice(&OUR_UDP_PAYLOAD.to_be_bytes());
    out[5] = rcode.extended_bits();
    out[6] = 0; // version 0
    out[7] = if dnssec_ok { 0x80 } else { 0 };
    out[8] = 0;
    out[9..11].copy_from_slice(&[0, 0]);
    OPT_LEN
}

/// The smallest TTL among a message's records, OPT aside: what an HTTP
/// cache may keep a DNS-over-HTTPS reply for (RFC 8484 §5.1). With no
/// answer records, an SOA's MINIMUM caps it too (the negative TTL, RFC
/// 2308). `None` when it has no such record, or does not parse.
pub fn min_ttl(message: &[u8]) -> Option<u32> {
    let header = message.get(..HEADER_LEN)?;
    let count = |at: usize| u32::from(u16::from_be_bytes([header[at], header[at + 1]]));
    let mut pos = HEADER_LEN;
    for _ in 0..count(4) {
        pos = crate::name::skip_compressed(message, pos).ok()? + 4;
    }
    let mut min: Option<u32> = None;
    let negative = count(6) == 0;
    for _ in 0..count(6) + count(8) + count(10) {
        pos = crate::name::skip_compressed(message, pos).ok()?;
        let fixed = message.get(pos..pos + 10)?;
        let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
        let mut ttl = u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
        let rdlength = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
        pos += 10 + rdlength;
        if pos > message.len() {
            return None;
        }
        if rtype == rtype::SOA && negative && rdlength >= 22 {
            // MINIMUM is the rdata's last field.
            let minimum = message.get(pos - 4..pos)?;
            ttl = ttl.min(u32::from_be_bytes([
                minimum[0], minimum[1], minimum[2], minimum[3],
            ]));
        }
        if rtype != rtype::OPT {
            min = Some(min.map_or(ttl, |m| m.min(ttl)));
        }
    }
    min
}

#[cfg(test)]
mod min_ttl_tests {
    use super::min_ttl;

    #[test]
    fn a_negative_reply_lives_no_longer_than_its_soa_minimum() {
        // NXDOMAIN: 1 question, no answer, the SOA in authority with TTL
        // 3600 and MINIMUM 10.
        let mut message = vec![0, 1, 0x81, 0x83, 0, 1, 0, 0, 0, 1, 0, 0];
        message.extend_from_slice(&[1, b'a', 0, 0, 1, 0, 1]);
        message.extend_from_slice(&[0, 0, 6, 0, 1, 0, 0, 0x0E, 0x10, 0, 22]);
        message.extend_from_slice(&[0, 0]); // MNAME and RNAME: the root
        for field in [1u32, 7200, 900, 86400, 10] {
            message.extend_from_slice(&field.to_be_bytes());
        }
        assert_eq!(min_ttl(&message), Some(10));
        // With an answer, the SOA's own TTL counts, not its MINIMUM.
        let mut positive = message.clone();
        positive[7] = 1;
        positive.splice(
            19..19,
            [0xC0, 12, 0, 1, 0, 1, 0, 0, 0x0E, 0x10, 0, 4, 10, 0, 0, 1],
        );
        assert_eq!(min_ttl(&positive), Some(3600));
    }

    #[test]
    fn the_smallest_ttl_skips_opt_and_refuses_a_cut_message() {
        // Header: 1 question, 2 answers, 0 authority, 1 additional (OPT).
        let mut message = vec![0, 1, 0x81, 0x80, 0, 1, 0, 2, 0, 0, 0, 1];
        message.extend_from_slice(&[1, b'a', 0, 0, 1, 0, 1]);
        for ttl in [300u32, 30] {
            message.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1]);
            message.extend_from_slice(&ttl.to_be_bytes());
            message.extend_from_slice(&[0, 4, 10, 0, 0, 1]);
        }
        // OPT: root, type 41, payload 1232, TTL 0 (flags), no data.
        message.extend_from_slice(&[0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(min_ttl(&message), Some(30));
        assert_eq!(min_ttl(&message[..message.len() - 3]), None);
        assert_eq!(min_ttl(&message[..20]), None);
        // No records at all.
        let mut empty = message[..12 + 7].to_vec();
        empty[7] = 0;
        empty[11] = 0;
        assert_eq!(min_ttl(&empty), None);
    }
}
