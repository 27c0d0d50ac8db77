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
pub mod text;
pub mod upstream;

pub use addr::{address_from_dashed, address_from_reverse, dashed_label, reverse_name};
pub use cache::{CacheKind, CachedAnswer, MAX_CACHE_KEY, NotCached, TtlPolicy, TtlView, cache_key};
pub use name::{NameBuf, NameError};
pub use prepared::{
    AnswerBuilder, AnswerRef, BuildError, Owner, PreparedAnswer, QuestionOutsideZone, Rdata,
    Section,
};
pub use query::{Edns, HEADER_LEN, Query, QueryBuf, QueryError, parse_query};
pub use reply::{
    BufferTooSmall, MAX_MESSAGE, MIN_REPLY_BUF, OPT_LEN, OUR_UDP_PAYLOAD, ReplyError, Transport,
    assemble_reply, error_reply, max_records_len, min_ttl,
};
pub use upstream::{
    CheckedReply, MAX_UPSTREAM_QUERY, UpstreamError, UpstreamReply, check_upstream_reply,
    sent_question, write_forwarded_reply, write_probe_query, write_upstream_query,
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
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "RCODE{}", self.0),
        }
    }
}

/// RCODE mnemonics by value, as CoreDNS names them (miekg/dns's
/// `RcodeToString`): 16 is BADSIG, which RFC 6891 also calls BADVERS;
/// unassigned values are `RCODE<n>`. One table for logs and metrics.
pub const RCODE_NAMES: [&str; 24] = [
    "NOERROR",
    "FORMERR",
    "SERVFAIL",
    "NXDOMAIN",
    "NOTIMP",
    "REFUSED",
    "YXDOMAIN",
    "YXRRSET",
    "NXRRSET",
    "NOTAUTH",
    "NOTZONE",
    "RCODE11",
    "RCODE12",
    "RCODE13",
    "RCODE14",
    "RCODE15",
    "BADSIG",
    "BADKEY",
    "BADTIME",
    "BADMODE",
    "BADNAME",
    "BADALG",
    "BADTRUNC",
    "BADCOOKIE",
];

impl Rcode {
    /// Its mnemonic, from [`RCODE_NAMES`].
    pub fn name(self) -> Option<&'static str> {
        RCODE_NAMES.get(usize::from(self.0)).copied()
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
    /// Host information (loop probes ask for it).
    pub const HINFO: u16 = 13;
    /// Delegation signer.
    pub const DS: u16 = 43;
    /// DNSSEC signature.
    pub const RRSIG: u16 = 46;
    /// Next secure.
    pub const NSEC: u16 = 47;
    /// DNSSEC key.
    pub const DNSKEY: u16 = 48;
    /// Hashed next secure.
    pub const NSEC3: u16 = 50;
    /// Service binding.
    pub const SVCB: u16 = 64;
    /// Service binding for HTTPS.
    pub const HTTPS: u16 = 65;

    /// Mnemonics of the types kubewire names (in logs, metrics and
    /// configuration): one table, the IANA registry's names.
    pub const NAMES: [(u16, &str); 21] = [
        (A, "A"),
        (NS, "NS"),
        (CNAME, "CNAME"),
        (SOA, "SOA"),
        (PTR, "PTR"),
        (HINFO, "HINFO"),
        (MX, "MX"),
        (TXT, "TXT"),
        (AAAA, "AAAA"),
        (SRV, "SRV"),
        (OPT, "OPT"),
        (DS, "DS"),
        (RRSIG, "RRSIG"),
        (NSEC, "NSEC"),
        (DNSKEY, "DNSKEY"),
        (NSEC3, "NSEC3"),
        (SVCB, "SVCB"),
        (HTTPS, "HTTPS"),
        (IXFR, "IXFR"),
        (AXFR, "AXFR"),
        (ANY, "ANY"),
    ];

    /// The mnemonic of a type in [`NAMES`].
    pub fn name(rtype: u16) -> Option<&'static str> {
        NAMES.iter().find(|(t, _)| *t == rtype).map(|(_, n)| *n)
    }

    /// The number of a type by its mnemonic (`A`, `aaaa`, `SRV`, ...), or
    /// the RFC 3597 form `TYPE123`.
    pub fn from_name(name: &str) -> Option<u16> {
        let upper = name.to_ascii_uppercase();
        NAMES
            .iter()
            .find(|(_, n)| *n == upper)
            .map(|(t, _)| *t)
            .or_else(|| upper.strip_prefix("TYPE")?.parse().ok())
    }
}

/// Class numbers used here.
pub mod class {
    /// The Internet class, the only one served.
    pub const IN: u16 = 1;
}
