//! Parsing a query into a borrowed view.
//!
//! A query for `web.default.svc.cluster.local A` with an EDNS0 OPT record:
//!
//! ```text
//! 12 34  01 20  00 01  00 00  00 00  00 01   ID, RD+AD, QD=1, AN=0, NS=0, AR=1
//! 03 77 65 62 07 64 65 66 61 75 6c 74 03 73 76 63 07 63 6c 75 73 74 65 72 05 6c 6f 63 61 6c 00
//! 00 01  00 01                                QTYPE A, QCLASS IN
//! 00  00 29  04 d0  00 00 00 00  00 00        OPT: root, size 1232, v0, no options
//! ```
//!
//! [`parse_query`] borrows the packet, checks it, and folds the question name
//! into a lowercase lookup key on the stack. Nothing is allocated.
//!
//! ## Bad input
//! Every kind of bad input has its own [`QueryError`], and each maps to what
//! the server does: no reply at all (too short, or not a query: replying to
//! a response invites reflection loops), or a reply with an RCODE.
//!
//! Trailing bytes after the last record the header declares are ignored, as
//! CoreDNS (miekg/dns) and BIND ignore them: some middleboxes pad datagrams,
//! and the question is copied by its own extent, so the padding never leaks
//! into a reply.

use crate::name::{NameBuf, NameError, skip_compressed};
use crate::{Rcode, class, rtype};
use core::fmt;

/// Length of the fixed DNS header.
pub const HEADER_LEN: usize = 12;

/// What a query's OPT record said (RFC 6891).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edns {
    /// The requester's UDP payload size, raised to 512 if it said less.
    pub udp_payload_size: u16,
    /// The EDNS version; only 0 is answered.
    pub version: u8,
    /// The DNSSEC OK bit.
    pub dnssec_ok: bool,
}

/// A checked query, borrowing its packet.
#[derive(Clone, Copy)]
pub struct Query<'a> {
    packet: &'a [u8],
    question_end: usize,
    qtype: u16,
    edns: Option<Edns>,
    key: NameBuf,
}

impl fmt::Debug for Query<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Query")
            .field("id", &self.id())
            .field("name", &self.key)
            .field("qtype", &self.qtype)
            .field("edns", &self.edns)
            .finish()
    }
}

impl<'a> Query<'a> {
    /// The whole packet the query came in.
    pub fn packet(&self) -> &'a [u8] {
        self.packet
    }
    /// The message ID.
    pub fn id(&self) -> u16 {
        u16::from_be_bytes([self.packet[0], self.packet[1]])
    }
    /// The recursion-desired bit.
    pub fn recursion_desired(&self) -> bool {
        self.packet[2] & 0x01 != 0
    }
    /// The question section exactly as the client sent it: name, type, class.
    pub fn question_bytes(&self) -> &'a [u8] {
        &self.packet[HEADER_LEN..self.question_end]
    }
    /// Length of the question name in wire form, root byte included.
    pub fn qname_len(&self) -> usize {
        self.key.wire_len()
    }
    /// The question name folded to lower case: the lookup key.
    pub fn key(&self) -> &NameBuf {
        &self.key
    }
    /// The question type.
    pub fn qtype(&self) -> u16 {
        self.qtype
    }
    /// The EDNS0 OPT record, if the query had one.
    pub fn edns(&self) -> Option<Edns> {
        self.edns
    }
}

/// A checked query that owns its packet: a [`Query`] that travels (to a
/// task, across an await, to another core) without being parsed again.
#[derive(Clone)]
pub struct QueryBuf {
    packet: Box<[u8]>,
    question_end: usize,
    qtype: u16,
    edns: Option<Edns>,
    key: NameBuf,
}

impl fmt::Debug for QueryBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.query().fmt(f)
    }
}

impl QueryBuf {
    /// The query, borrowed from this buffer; nothing is parsed again.
    pub fn query(&self) -> Query<'_> {
        Query {
            packet: &self.packet,
            question_end: self.question_end,
            qtype: self.qtype,
            edns: self.edns,
            key: self.key,
        }
    }
}

impl Query<'_> {
    /// This query with its own copy of the packet.
    pub fn to_buf(&self) -> QueryBuf {
        QueryBuf {
            packet: self.packet.into(),
            question_end: self.question_end,
            qtype: self.qtype,
            edns: self.edns,
            key: self.key,
        }
    }
}

/// Why a query is not answered normally. Each maps to an RCODE, or to no
/// reply at all; see [`QueryError::rcode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueryError {
    /// Fewer than 12 bytes: not even a header. Dropped.
    TooShort,
    /// The QR bit is set: a response, not a query. Dropped.
    NotAQuery,
    /// QDCOUNT is not 1. FORMERR.
    QuestionCount(u16),
    /// The question name is malformed. FORMERR.
    BadName(NameError),
    /// The packet ends inside a section the header declares. FORMERR.
    ShortInput,
    /// More than one OPT record. FORMERR.
    MultipleOpt,
    /// An OPT record that is not at the root, or whose options overrun it. FORMERR.
    BadOpt,
    /// An opcode other than QUERY. NOTIMP.
    Opcode(u8),
    /// An EDNS version above 0. BADVERS, with an OPT.
    BadVersion(u8),
    /// A class other than IN. REFUSED.
    Class(u16),
}

impl QueryError {
    /// The RCODE to reply with, or `None` when no reply must be sent.
    pub fn rcode(self) -> Option<Rcode> {
        match self {
            QueryError::TooShort | QueryError::NotAQuery => None,
            QueryError::QuestionCount(_)
            | QueryError::BadName(_)
            | QueryError::ShortInput
            | QueryError::MultipleOpt
            | QueryError::BadOpt => Some(Rcode::FORMERR),
            QueryError::Opcode(_) => Some(Rcode::NOTIMP),
            QueryError::BadVersion(_) => Some(Rcode::BADVERS),
            QueryError::Class(_) => Some(Rcode::REFUSED),
        }
    }
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueryError::TooShort => f.write_str("packet shorter than a DNS header"),
            QueryError::NotAQuery => f.write_str("QR bit set: a response, not a query"),
            QueryError::QuestionCount(n) => write!(f, "QDCOUNT is {n}, expected 1"),
            QueryError::BadName(e) => write!(f, "bad question name: {e}"),
            QueryError::ShortInput => f.write_str("packet ends inside a declared record"),
            QueryError::MultipleOpt => f.write_str("more than one OPT record"),
            QueryError::BadOpt => f.write_str("malformed OPT record"),
            QueryError::Opcode(op) => write!(f, "opcode {op} not implemented"),
            QueryError::BadVersion(v) => write!(f, "EDNS version {v} not supported"),
            QueryError::Class(c) => write!(f, "class {c} refused: only IN is served"),
        }
    }
}

impl std::error::Error for QueryError {}

/// What a scan of the packet learned, even when it failed part way, so that
/// an error reply can still echo the question and OPT where they were sound.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Scan {
    /// End of a well-formed question, if there was one.
    pub(crate) question_end: Option<usize>,
    /// The OPT record, if one was read before any error.
    pub(crate) edns: Option<Edns>,
}

/// Parses and checks a query. See the module docs for the rules.
pub fn parse_query(packet: &[u8]) -> Result<Query<'_>, QueryError> {
    let mut key = NameBuf::ROOT;
    let (scan, result) = scan(packet, &mut key);
    result?;
    let question_end = scan.question_end.ok_or(QueryError::ShortInput)?;
    let qtype = u16::from_be_bytes([packet[question_end - 4], packet[question_end - 3]]);
    Ok(Query {
        packet,
        question_end,
        qtype,
        edns: scan.edns,
        key,
    })
}

/// Walks the packet. On success the question, OPT and key are all filled in.
pub(crate) fn scan(packet: &[u8], key: &mut NameBuf) -> (Scan, Result<(), QueryError>) {
    let mut scan = Scan {
        question_end: None,
        edns: None,
    };
    let result = scan_into(packet, key, &mut scan);
    (scan, result)
}

fn scan_into(packet: &[u8], key: &mut NameBuf, scan: &mut Scan) -> Result<(), QueryError> {
    if packet.len() < HEADER_LEN {
        return Err(QueryError::TooShort);
    }
    if packet[2] & 0x80 != 0 {
        return Err(QueryError::NotAQuery);
    }
    let opcode = (packet[2] >> 3) & 0x0F;
    let count = |at: usize| u16::from_be_bytes([packet[at], packet[at + 1]]);
    let (qdcount, ancount, nscount, arcount) = (count(4), count(6), count(8), count(10));

    // The question, when there is exactly one. An opcode we do not implement
    // is reported after this, so its NOTIMP can echo the question.
    let mut pos = HEADER_LEN;
    let question = if qdcount == 1 {
        read_question(packet, key).map(|end| {
            scan.question_end = Some(end);
            pos = end;
        })
    } else {
        Err(QueryError::QuestionCount(qdcount))
    };
    if opcode != 0 {
        return Err(QueryError::Opcode(opcode));
    }
    question?;

    for _ in 0..u32::from(ancount) + u32::from(nscount) {
        pos = skip_record(packet, pos)?;
    }
    for _ in 0..arcount {
        let (rtype_at, end) = record_extent(packet, pos)?;
        let rr_type = u16::from_be_bytes([packet[rtype_at], packet[rtype_at + 1]]);
        if rr_type == rtype::OPT {
            if scan.edns.is_some() {
                return Err(QueryError::MultipleOpt);
            }
            scan.edns = Some(read_opt(packet, pos, rtype_at, end)?);
        }
        pos = end;
    }

    if let Some(edns) = scan.edns
        && edns.version > 0
    {
        return Err(QueryError::BadVersion(edns.version));
    }
    let question_end = scan.question_end.ok_or(QueryError::ShortInput)?;
    let qclass = u16::from_be_bytes([packet[question_end - 2], packet[question_end - 1]]);
    if qclass != class::IN {
        return Err(QueryError::Class(qclass));
    }
    Ok(())
}

/// Reads the question at offset 12 into `key` (lower-cased) and returns the
/// offset just past QCLASS.
fn read_question(packet: &[u8], key: &mut NameBuf) -> Result<usize, QueryError> {
    let len = key
        .read_lowercase(&packet[HEADER_LEN..])
        .map_err(QueryError::BadName)?;
    let end = HEADER_LEN + len + 4;
    if end > packet.len() {
        return Err(QueryError::ShortInput);
    }
    Ok(end)
}

/// Returns the offset of a record's TYPE field and the offset just past it.
fn record_extent(packet: &[u8], pos: usize) -> Result<(usize, usize), QueryError> {
    let rtype_at = skip_compressed(packet, pos).map_err(|e| match e {
        NameError::ShortInput => QueryError::ShortInput,
        other => QueryError::BadName(other),
    })?;
    let fixed_end = rtype_at + 10;
    if fixed_end > packet.len() {
        return Err(QueryError::ShortInput);
    }
    let rdlen = usize::from(u16::from_be_bytes([
        packet[rtype_at + 8],
        packet[rtype_at + 9],
    ]));
    let end = fixed_end + rdlen;
    if end > packet.len() {
        return Err(QueryError::ShortInput);
    }
    Ok((rtype_at, end))
}

fn skip_record(packet: &[u8], pos: usize) -> Result<usize, QueryError> {
    record_extent(packet, pos).map(|(_, end)| end)
}

fn read_opt(
    packet: &[u8],
    owner_at: usize,
    rtype_at: usize,
    end: usize,
) -> Result<Edns, QueryError> {
    // The OPT owner must be the root: one zero byte.
    if rtype_at != owner_at + 1 || packet[owner_at] != 0 {
        return Err(QueryError::BadOpt);
    }
    let field = |at: usize| u16::from_be_bytes([packet[at], packet[at + 1]]);
    let udp_payload_size = field(rtype_at + 2).max(512);
    let version = packet[rtype_at + 5];
    let dnssec_ok = packet[rtype_at + 6] & 0x80 != 0;
    // Options are code, length, data; every one must fit exactly. None is
    // acted on yet, so unknown ones (and known ones) are skipped.
    let mut opt = rtype_at + 10;
    while opt < end {
        if opt + 4 > end {
            return Err(QueryError::BadOpt);
        }
        opt += 4 + usize::from(field(opt + 2));
    }
    if opt != end {
        return Err(QueryError::BadOpt);
    }
    Ok(Edns {
        udp_payload_size,
        version,
        dnssec_ok,
    })
}
