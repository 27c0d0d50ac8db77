//! The DNS wire format for kubewire: parsing queries, pre-encoding answers,
//! and assembling replies from the two. No I/O, no async, no allocation on
//! the query path.
//!
//! A reply is built from three pieces:
//!
//! ```text
//! | client's header, ID kept, flags/counts patched | client's question, verbatim | prepared tail | OPT? |
//! ```
//!
//! The prepared tail ([`PreparedAnswer`]) is encoded once, when cluster data
//! changes. Its owner names point at the question (`C0 0C`), so the reply
//! echoes the client's letter case. Per query, [`parse_query`] borrows the
//! packet and [`assemble_reply`] copies and patches into a caller's buffer.
//!
//! ```
//! use kubewire_wire::{AnswerBuilder, NameBuf, Owner, Rdata, Transport, assemble_reply, parse_query};
//!
//! let name = NameBuf::from_text("web.default.svc.cluster.local").unwrap();
//! let mut builder = AnswerBuilder::new(&name);
//! builder.push(Owner::Question, 5, Rdata::A([10, 96, 0, 7].into())).unwrap();
//! let answer = builder.finish().unwrap();
//!
//! let query = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\
//!     \x03WEB\x07default\x03svc\x07cluster\x05local\x00\x00\x01\x00\x01";
//! let query = parse_query(query).unwrap();
//! let mut out = [0u8; 512];
//! let len = assemble_reply(&query, answer.as_ref(), 0, Transport::Udp, true, &mut out).unwrap();
//! assert_eq!(&out[..2], b"\x12\x34");                 // ID kept
//! assert_eq!(&out[12..16], b"\x03WEB");              // case echoed
//! assert_eq!(&out[len - 16..len - 14], b"\xC0\x0C"); // owner points at the question
//! assert_eq!(&out[len - 4..len], &[10, 96, 0, 7]);
//! ```

#![forbid(unsafe_code)]

pub mod addr;
pub mod cache;
pub mod name;
pub mod prepared;
pub mod query;
pub mod records;
pub mod reply;
pub mod upstream;

pub use addr::{address_from_dashed, address_from_reverse, dashed_label, reverse_name};
pub use cache::{CacheKind, CachedAnswer, MAX_CACHE_KEY, NotCached, TtlPolicy, TtlView, cache_key};
pub use name::{NameBuf, NameError};
pub use prepared::{
    AnswerBuilder, AnswerRef, BuildError, Owner, PreparedAnswer, QuestionOutsideZone, Rdata,
    Section,
};
pub use query::{Edns, HEADER_LEN, Query, QueryError, parse_query};
pub use reply::{
    BufferTooSmall, MAX_MESSAGE, MIN_REPLY_BUF, OPT_LEN, OUR_UDP_PAYLOAD, ReplyError, Transport,
    assemble_reply, error_reply, max_records_len,
};
pub use upstream::{
    MAX_UPSTREAM_QUERY, UpstreamError, UpstreamReply, check_upstream_reply, sent_question,
    write_forwarded_reply, write_probe_query, write_upstream_query,
};

use core::fmt;

/// A response code, extended RCODEs (above 15) included.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rcode(pub u16);

impl Rcode {
    /// No error.
    pub const NOERROR: Rcode = Rcode(0);
    /// The query could not be parsed.
    pub const FORMERR: Rcode = Rcode(1);
    /// The server could not answer (for example, before its first sync).
    pub const SERVFAIL: Rcode = Rcode(2);
    /// The name does not exist.
    pub const NXDOMAIN: Rcode = Rcode(3);
    /// The opcode is not implemented.
    pub const NOTIMP: Rcode = Rcode(4);
    /// The server will not answer this.
    pub const REFUSED: Rcode = Rcode(5);
    /// The EDNS version is not supported (RFC 6891); needs an OPT to carry it.
    pub const BADVERS: Rcode = Rcode(16);

    /// The low four bits, which go in the header.
    pub fn header_bits(self) -> u8 {
        (self.0 & 0x0F) as u8
    }
    /// The high eight bits, which go in the OPT record's TTL.
    pub fn extended_bits(self) -> u8 {
        (self.0 >> 4) as u8
    }
}

impl fmt::Debug for Rcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Rcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Rcode::NOERROR => f.write_str("NOERROR"),
            Rcode::FORMERR => f.write_str("FORMERR"),
            Rcode::SERVFAIL => f.write_str("SERVFAIL"),
            Rcode::NXDOMAIN => f.write_str("NXDOMAIN"),
            Rcode::NOTIMP => f.write_str("NOTIMP"),
            Rcode::REFUSED => f.write_str("REFUSED"),
            Rcode::BADVERS => f.write_str("BADVERS"),
            Rcode(other) => write!(f, "RCODE{other}"),
        }
    }
}

/// Record type numbers used here.
pub mod rtype {
    /// IPv4 address.
    pub const A: u16 = 1;
    /// Authoritative name server.
    pub const NS: u16 = 2;
    /// Canonical name.
    pub const CNAME: u16 = 5;
    /// Start of authority.
    pub const SOA: u16 = 6;
    /// Domain name pointer.
    pub const PTR: u16 = 12;
    /// Mail exchange.
    pub const MX: u16 = 15;
    /// Text strings.
    pub const TXT: u16 = 16;
    /// IPv6 address.
    pub const AAAA: u16 = 28;
    /// Service locator.
    pub const SRV: u16 = 33;
    /// EDNS0 pseudo-record.
    pub const OPT: u16 = 41;
    /// Incremental zone transfer.
    pub const IXFR: u16 = 251;
    /// Full zone transfer.
    pub const AXFR: u16 = 252;
    /// Any type.
    pub const ANY: u16 = 255;

    /// The number of a type by its mnemonic (`A`, `aaaa`, `SRV`, ...), or
    /// the RFC 3597 form `TYPE123`.
    pub fn from_name(name: &str) -> Option<u16> {
        Some(match name.to_ascii_uppercase().as_str() {
            "A" => A,
            "NS" => NS,
            "CNAME" => CNAME,
            "SOA" => SOA,
            "PTR" => PTR,
            "MX" => MX,
            "TXT" => TXT,
            "AAAA" => AAAA,
            "SRV" => SRV,
            "IXFR" => IXFR,
            "AXFR" => AXFR,
            "ANY" => ANY,
            other => return other.strip_prefix("TYPE").and_then(|n| n.parse().ok()),
        })
    }
}

/// Class numbers used here.
pub mod class {
    /// The Internet class, the only one served.
    pub const IN: u16 = 1;
}
