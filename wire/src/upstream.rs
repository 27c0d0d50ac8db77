//! Forwarding: the query sent to an upstream server, the check of its reply,
//! and the client's reply built from it. Pure functions over byte slices.
//!
//! An upstream reply is untrusted input, read with the same care as a query.
//! [`check_upstream_reply`] accepts it only if it is a response to exactly
//! the query that was sent (ID, opcode and question, the name compared
//! without regard to case), and only if every record the header declares is
//! well formed: owner names and the names inside CNAME, NS, PTR, SOA, MX and
//! SRV data may only point backwards, at a name that is itself well formed.
//!
//! The client's reply ([`write_forwarded_reply`]) is the client's own header
//! and question (its ID and letter case), the upstream's flags that describe
//! the answer (AA, TC, AD, RCODE), RA, and the upstream's records copied as
//! they are. The question has the same length in both messages, so the
//! upstream's compression pointers stay valid. The upstream's OPT record is
//! replaced by ours when the client sent one, and the client's size limit
//! applies: a reply that does not fit is sent with TC set and no records.

use crate::name::{MAX_NAME_LEN, NameError, validate_uncompressed};
use crate::query::{HEADER_LEN, Query};
use crate::reply::{CopiedRecords, OPT_LEN, ReplyError, write_copied_reply, write_opt};
use crate::{Rcode, Transport, rtype};
use core::fmt;

/// The largest upstream query [`write_upstream_query`] writes: header, the
/// longest question, our OPT.
pub const MAX_UPSTREAM_QUERY: usize = HEADER_LEN + MAX_NAME_LEN + 4 + OPT_LEN;

/// Why an upstream reply was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamError {
    /// Shorter than a header.
    TooShort,
    /// QR is clear: not a response.
    NotAResponse,
    /// The ID is not the one sent.
    IdMismatch,
    /// The opcode is not QUERY.
    Opcode,
    /// QDCOUNT is not 1.
    QuestionCount,
    /// The question is not the one sent.
    QuestionMismatch,
    /// A record is cut short, or runs past the message.
    ShortInput,
    /// A name is malformed, or points forwards or outside the message.
    BadName(NameError),
    /// More than one OPT record, or an OPT not at the root.
    BadOpt,
}

impl UpstreamError {
    /// Whether the reply may belong to another query (a late or forged one)
    /// rather than being a broken answer to ours: such replies are dropped
    /// and the wait goes on.
    pub fn is_mismatch(self) -> bool {
        matches!(
            self,
            UpstreamError::TooShort
                | UpstreamError::NotAResponse
                | UpstreamError::IdMismatch
                | UpstreamError::Opcode
                | UpstreamError::QuestionCount
                | UpstreamError::QuestionMismatch
        )
    }
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamError::TooShort => f.write_str("reply shorter than a DNS header"),
            UpstreamError::NotAResponse => f.write_str("QR bit clear: not a response"),
            UpstreamError::IdMismatch => f.write_str("reply ID is not the query's"),
            UpstreamError::Opcode => f.write_str("reply opcode is not QUERY"),
            UpstreamError::QuestionCount => f.write_str("reply QDCOUNT is not 1"),
            UpstreamError::QuestionMismatch => f.write_str("reply question is not the query's"),
            UpstreamError::ShortInput => f.write_str("reply ends inside a declared record"),
            UpstreamError::BadName(e) => write!(f, "bad name in reply: {e}"),
            UpstreamError::BadOpt => f.write_str("malformed or repeated OPT record in reply"),
        }
    }
}

impl std::error::Error for UpstreamError {}

/// Writes the query sent upstream for the client's `query`: ID `id`, the
/// client's RD, AD and CD bits and question (letter case kept), and our OPT
/// record (payload 1232, the client's DO bit). Returns its length.
pub fn write_upstream_query(
    query: &Query<'_>,
    id: u16,
    out: &mut [u8],
) -> Result<usize, ReplyError> {
    let packet = query.packet();
    let dnssec_ok = query.edns().is_some_and(|e| e.dnssec_ok);
    write_query(
        id,
        packet[2] & 0x01,
        packet[3] & 0x30,
        query.question_bytes(),
        dnssec_ok,
        out,
    )
}

/// The question (name, type, class) of a query that
/// [`write_upstream_query`] or [`write_probe_query`] wrote: what a reply's
/// question is checked against.
pub fn sent_question(sent: &[u8]) -> &[u8] {
    sent.get(HEADER_LEN..sent.len().saturating_sub(OPT_LEN))
        .unwrap_or_default()
}

/// Writes a health-check query, `. IN NS` with RD set, as CoreDNS sends.
pub fn write_probe_query(id: u16, out: &mut [u8]) -> Result<usize, ReplyError> {
    const ROOT_NS_IN: [u8; 5] = [0, 0, 2, 0, 1];
    write_query(id, 0x01, 0, &ROOT_NS_IN, false, out)
}

fn write_query(
    id: u16,
    rd: u8,
    ad_cd: u8,
    question: &[u8],
    dnssec_ok: bool,
    out: &mut [u8],
) -> Result<usize, ReplyError> {
    let question_end = HEADER_LEN + question.len();
    let len = question_end + OPT_LEN;
    if out.len() < len {
        return Err(ReplyError::BufferTooSmall);
    }
    out[..2].copy_from_slice(&id.to_be_bytes());
    out[2] = rd;
    out[3] = ad_cd;
    out[4..12].copy_from_slice(&[0, 1, 0, 0, 0, 0, 0, 1]);
    out[HEADER_LEN..question_end].copy_from_slice(question);
    write_opt(&mut out[question_end..], Rcode::NOERROR, dnssec_ok);
    Ok(len)
}

/// A checked upstream reply, borrowing its bytes.
#[derive(Clone, Copy, Debug)]
pub struct UpstreamReply<'a> {
    packet: &'a [u8],
    question_end: usize,
    /// End of the records kept: the OPT record and anything after it are not.
    kept_end: usize,
    /// Answer, authority and additional counts of the records kept.
    counts: [u16; 3],
    rcode: Rcode,
}

impl<'a> UpstreamReply<'a> {
    /// The RCODE, extended bits from the OPT record included.
    pub fn rcode(&self) -> Rcode {
        self.rcode
    }
    /// Whether the upstream set TC: the answer did not fit.
    pub fn truncated(&self) -> bool {
        self.packet[2] & 0x02 != 0
    }
    /// Answer, authority and additional records kept (the OPT is not).
    pub fn counts(&self) -> [u16; 3] {
        self.counts
    }
    /// The whole reply.
    pub fn packet(&self) -> &'a [u8] {
        self.packet
    }
    /// The records kept, as they are on the wire (pointers relative to the
    /// reply's start).
    pub fn records(&self) -> &'a [u8] {
        &self.packet[self.question_end..self.kept_end]
    }
}

/// An upstream reply that [`check_upstream_reply`] passed, owning its
/// bytes: what the cache, the client's reply and the metrics take, so that
/// nothing checks it again.
#[derive(Clone, Debug)]
pub struct CheckedReply {
    packet: Box<[u8]>,
    question_end: usize,
    kept_end: usize,
    counts: [u16; 3],
    rcode: Rcode,
}

impl CheckedReply {
    /// Checks `reply` as [`check_upstream_reply`] does, and keeps it.
    pub fn check(
        reply: impl Into<Box<[u8]>>,
        id: u16,
        question: &[u8],
    ) -> Result<CheckedReply, UpstreamError> {
        let packet = reply.into();
        let checked = check_upstream_reply(&packet, id, question)?;
        let (question_end, kept_end, counts, rcode) = (
            checked.question_end,
            checked.kept_end,
            checked.counts,
            checked.rcode,
        );
        Ok(CheckedReply {
            packet,
            question_end,
            kept_end,
            counts,
            rcode,
        })
    }

    /// The checked view, without checking again.
    pub fn view(&self) -> UpstreamReply<'_> {
        UpstreamReply {
            packet: &self.packet,
            question_end: self.question_end,
            kept_end: self.kept_end,
            counts: self.counts,
            rcode: self.rcode,
        }
    }

    /// The RCODE, extended bits included.
    pub fn rcode(&self) -> Rcode {
        self.rcode
    }

    /// Whether the upstream set TC.
    pub fn truncated(&self) -> bool {
        self.view().truncated()
    }

    /// The question as the upstream echoed it: the one sent, up to case.
    pub fn question(&self) -> &[u8] {
        &self.packet[HEADER_LEN..self.question_end]
    }

    /// The whole reply's length.
    pub fn len(&self) -> usize {
        self.packet.len()
    }

    /// Never: a checked reply holds at least a header.
    pub fn is_empty(&self) -> bool {
        self.packet.is_empty()
    }
}

/// Checks `reply` against the query that was sent: `id`, and `question`
/// (name, type and class, as in the query). See the module docs.
pub fn check_upstream_reply<'a>(
    reply: &'a [u8],
    id: u16,
    question: &[u8],
) -> Result<UpstreamReply<'a>, UpstreamError> {
    if reply.len() < HEADER_LEN {
        return Err(UpstreamError::TooShort);
    }
    if reply[2] & 0x80 == 0 {
        return Err(UpstreamError::NotAResponse);
    }
    if u16::from_be_bytes([reply[0], reply[1]]) != id {
        return Err(UpstreamError::IdMismatch);
    }
    if (reply[2] >> 3) & 0x0F != 0 {
        return Err(UpstreamError::Opcode);
    }
    let count = |at: usize| u16::from_be_bytes([reply[at], reply[at + 1]]);
    if count(4) != 1 {
        return Err(UpstreamError::QuestionCount);
    }
    let question_end = HEADER_LEN + question.len();
    match reply.get(HEADER_LEN..question_end) {
        Some(theirs) if theirs.eq_ignore_ascii_case(question) => {}
        _ => return Err(UpstreamError::QuestionMismatch),
    }
    // Equal bytes, but a question whose name is itself malformed (the query
    // comes from a parsed client query, so this cannot happen; checked
    // anyway, as the offsets below rely on it).
    let name_len = validate_uncompressed(question).map_err(UpstreamError::BadName)?;
    if name_len + 4 != question.len() {
        return Err(UpstreamError::QuestionMismatch);
    }

    let (ancount, nscount, arcount) = (count(6), count(8), count(10));
    let mut pos = question_end;
    for _ in 0..u32::from(ancount) + u32::from(nscount) {
        pos = check_record(reply, pos)?.1;
    }
    let mut extended = 0u16;
    let mut kept_end = None;
    let mut kept_additional = 0u16;
    for _ in 0..arcount {
        let (rtype_at, end) = check_record(reply, pos)?;
        if u16::from_be_bytes([reply[rtype_at], reply[rtype_at + 1]]) == rtype::OPT {
            if kept_end.is_some() || rtype_at != pos + 1 || reply[pos] != 0 {
                return Err(UpstreamError::BadOpt);
            }
            extended = u16::from(reply[rtype_at + 4]) << 4;
            // Records after the OPT are not kept: removing the OPT would
            // move them, and pointers into them with them.
            kept_end = Some(pos);
        } else if kept_end.is_none() {
            kept_additional += 1;
        }
        pos = end;
    }
    Ok(UpstreamReply {
        packet: reply,
        question_end,
        kept_end: kept_end.unwrap_or(pos),
        counts: [ancount, nscount, kept_additional],
        rcode: Rcode(extended | u16::from(reply[3] & 0x0F)),
    })
}

/// Checks the record at `pos`; returns the offset of its TYPE and its end.
fn check_record(packet: &[u8], pos: usize) -> Result<(usize, usize), UpstreamError> {
    let rtype_at = check_name(packet, pos)?;
    let rdata_at = rtype_at + 10;
    if rdata_at > packet.len() {
        return Err(UpstreamError::ShortInput);
    }
    let field = |at: usize| u16::from_be_bytes([packet[at], packet[at + 1]]);
    let end = rdata_at + usize::from(field(rtype_at + 8));
    if end > packet.len() {
        return Err(UpstreamError::ShortInput);
    }
    // Names inside the data of the common types must be sound too, and
    // must end exactly where the data says (after the fixed fields).
    let names_end = match field(rtype_at) {
        rtype::CNAME | rtype::NS | rtype::PTR => Some(check_name(packet, rdata_at)?),
        rtype::MX => Some(check_name(packet, rdata_at + 2)?),
        rtype::SRV => Some(check_name(packet, rdata_at + 6)?),
        rtype::SOA => {
            let rname_at = check_name(packet, rdata_at)?;
            Some(check_name(packet, rname_at)? + 20)
        }
        _ => None,
    };
    if names_end.is_some_and(|names_end| names_end != end) {
        return Err(UpstreamError::ShortInput);
    }
    Ok((rtype_at, end))
}

/// Checks a possibly compressed name at `pos` and returns the offset just
/// past it in place. Every pointer must point strictly before the label
/// that holds it and after the header, so following them always ends; the
/// whole name, followed, must be at most 255 bytes.
fn check_name(packet: &[u8], start: usize) -> Result<usize, UpstreamError> {
    let mut pos = start;
    let mut end = None;
    let mut total = 0usize;
    loop {
        let Some(&len) = packet.get(pos) else {
            return Err(UpstreamError::ShortInput);
        };
        match len & 0xC0 {
            0x00 => {
                total += 1 + usize::from(len);
                if total > MAX_NAME_LEN {
                    return Err(UpstreamError::BadName(NameError::NameTooLong));
                }
                if len == 0 {
                    return Ok(end.unwrap_or(pos + 1));
                }
                pos += 1 + usize::from(len);
            }
            0xC0 => {
                let Some(&low) = packet.get(pos + 1) else {
                    return Err(UpstreamError::ShortInput);
                };
                let target = usize::from(u16::from_be_bytes([len & 0x3F, low]));
                if target >= pos || target < HEADER_LEN {
                    return Err(UpstreamError::BadName(NameError::Pointer));
                }
                end.get_or_insert(pos + 2);
                pos = target;
            }
            _ => return Err(UpstreamError::BadName(NameError::LabelType)),
        }
    }
}

/// Writes the client's reply from a checked upstream reply: see the module
/// docs. Returns its length.
pub fn write_forwarded_reply(
    query: &Query<'_>,
    upstream: &UpstreamReply<'_>,
    transport: Transport,
    out: &mut [u8],
) -> Result<usize, ReplyError> {
    let theirs = upstream.packet();
    let copied = CopiedRecords {
        records: upstream.records(),
        counts: upstream.counts(),
        rcode: upstream.rcode(),
        // The upstream's AA, and TC if it set it.
        aa_tc: theirs[2] & 0x06,
        // The upstream's AD, as it gave it.
        ad: theirs[3] & 0x20,
    };
    write_copied_reply(query, &copied, transport, out).map(|(len, _)| len)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::parse_query;

    fn query(name: &str) -> Vec<u8> {
        let mut packet = vec![0xAB, 0xCD, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            packet.push(label.len() as u8);
            packet.extend_from_slice(label.as_bytes());
        }
        packet.extend_from_slice(&[0, 0, 1, 0, 1]);
        packet
    }

    fn upstream_reply(sent: &[u8], records: &[u8], an: u16) -> Vec<u8> {
        let mut reply = sent[..sent.len() - OPT_LEN].to_vec();
        reply[2] |= 0x80;
        reply[3] |= 0x80;
        reply[6..8].copy_from_slice(&an.to_be_bytes());
        reply[10..12].copy_from_slice(&[0, 0]);
        reply.extend_from_slice(records);
        reply
    }

    #[test]
    fn a_reply_is_checked_and_rebuilt_for_the_client() {
        let client = query("WWW.Example.com");
        let parsed = parse_query(&client).unwrap();
        let mut sent = [0u8; MAX_UPSTREAM_QUERY];
        let sent_len = write_upstream_query(&parsed, 0x1234, &mut sent).unwrap();
        let sent = &sent[..sent_len];
        assert_eq!(&sent[..2], &[0x12, 0x34]);
        assert_eq!(
            &sent[12..12 + parsed.question_bytes().len()],
            parsed.question_bytes()
        );
        // The upstream lowercases the question, and answers with a pointer
        // to it.
        let mut reply = upstream_reply(
            sent,
            &[0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1],
            1,
        );
        reply[13..16].copy_from_slice(b"www");
        let question = &sent[12..sent_len - OPT_LEN];
        let checked = check_upstream_reply(&reply, 0x1234, question).unwrap();
        assert_eq!(checked.counts(), [1, 0, 0]);
        let mut out = [0u8; 1232];
        let len = write_forwarded_reply(&parsed, &checked, Transport::Udp, &mut out).unwrap();
        assert_eq!(&out[..2], &[0xAB, 0xCD], "the client's ID");
        assert_eq!(&out[13..16], b"WWW", "the client's case");
        assert_eq!(out[3] & 0x80, 0x80, "RA");
        assert_eq!(&out[len - 4..len], &[192, 0, 2, 1]);
    }

    #[test]
    fn foreign_or_broken_replies_are_refused() {
        let client = query("example.com");
        let parsed = parse_query(&client).unwrap();
        let mut sent = [0u8; MAX_UPSTREAM_QUERY];
        let sent_len = write_upstream_query(&parsed, 7, &mut sent).unwrap();
        let question = &sent[12..sent_len - OPT_LEN];
        let good = upstream_reply(
            &sent[..sent_len],
            &[0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 1, 2, 3, 4],
            1,
        );
        assert!(check_upstream_reply(&good, 7, question).is_ok());
        assert_eq!(
            check_upstream_reply(&good, 8, question).unwrap_err(),
            UpstreamError::IdMismatch
        );
        let mut query_bit = good.clone();
        query_bit[2] &= 0x7F;
        assert_eq!(
            check_upstream_reply(&query_bit, 7, question).unwrap_err(),
            UpstreamError::NotAResponse
        );
        let mut other = good.clone();
        other[13] = b'X';
        assert_eq!(
            check_upstream_reply(&other, 7, question).unwrap_err(),
            UpstreamError::QuestionMismatch
        );
        // Cut anywhere inside the record: refused.
        for cut in question.len() + 13..good.len() {
            assert!(
                check_upstream_reply(&good[..cut], 7, question).is_err(),
                "cut at {cut}"
            );
        }
        // A pointer forwards, or to itself.
        let mut forward = good.clone();
        let at = 12 + question.len();
        forward[at + 1] = at as u8;
        assert!(matches!(
            check_upstream_reply(&forward, 7, question),
            Err(UpstreamError::BadName(_))
        ));
        assert!(
            check_upstream_reply(&good[..5], 7, question)
                .unwrap_err()
                .is_mismatch()
        );
    }
}
