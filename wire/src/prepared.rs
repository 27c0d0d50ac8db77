//! Answers encoded ahead of time.
//!
//! A [`PreparedAnswer`] is the part of a reply after the question: the answer,
//! authority and additional sections, with their counts, the RCODE and the AA
//! flag. It is built once by an [`AnswerBuilder`] when data changes.
//!
//! ## Compression
//! The reply's question always starts at offset 12, and for an answer built
//! for one name ([`AnswerBuilder::new`]) its length is known, so every
//! pointer is fixed at build time:
//! - an owner equal to the question is `C0 0C`;
//! - other names point at a matching suffix of the question, or of a name
//!   written earlier in the tail. Case variants of the question have the same
//!   length, so the offsets hold for all of them.
//!
//! SRV targets are never compressed (RFC 2782), but are used as targets for
//! later names, such as the owners of their A records in the additional
//! section.
//!
//! ## One answer for a whole zone
//! [`AnswerBuilder::for_zone`] builds an answer that serves any name in a
//! zone, such as NXDOMAIN with the zone's SOA. Its names may point only at
//! the zone's suffix of the question, whose offset depends on the question's
//! length; those pointers are recorded as fixups and written per reply
//! (`12 + qname_len - suffix_len`).
//!
//! ## One answer for many names: wildcards
//! An answer built for a name whose first label is `*` (RFC 4592) serves
//! names of any length in that label's place, such as `zonal`'s
//! `*.prefer._zone.<svc>…` for every topology zone no endpoint is in. Its
//! question is not the length it was built for, so no pointer in it may be
//! fixed at build time: pointers to the question's suffixes are fixups as
//! in a zone-wide answer, and pointers to names earlier in the tail (an SRV
//! target named again by its glue) are fixups too, written per reply as
//! `12 + qname_len + 4 + their offset in the tail`.
//!
//! ## Rotation
//! [`AnswerBuilder::rotate_answers`] stores an A or AAAA answer set twice in
//! a row. A reply sends a window of `n` records starting at record
//! `rotation % n`: round-robin, as CoreDNS's `loadbalance`, with no
//! re-encoding.

use crate::name::NameBuf;
use crate::query::HEADER_LEN;
use crate::{Rcode, rtype};
use core::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Which section a record goes in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Section {
    /// The answer section.
    Answer = 0,
    /// The authority section.
    Authority = 1,
    /// The additional section.
    Additional = 2,
}

/// The owner of a record being built.
#[derive(Clone, Copy, Debug)]
pub enum Owner<'a> {
    /// The question name, written as `C0 0C`.
    Question,
    /// Any other name.
    Name(&'a NameBuf),
}

/// The data of a record being built.
#[derive(Clone, Copy, Debug)]
pub enum Rdata<'a> {
    /// An IPv4 address.
    A(Ipv4Addr),
    /// An IPv6 address.
    Aaaa(Ipv6Addr),
    /// A canonical name.
    Cname(&'a NameBuf),
    /// A pointer to a name.
    Ptr(&'a NameBuf),
    /// A name server.
    Ns(&'a NameBuf),
    /// A service locator. The target is never compressed.
    Srv {
        /// Priority, lower first.
        priority: u16,
        /// Relative weight among equal priorities.
        weight: u16,
        /// The port.
        port: u16,
        /// The host.
        target: &'a NameBuf,
    },
    /// Character strings, each at most 255 bytes.
    Txt(&'a [&'a [u8]]),
    /// Start of authority.
    Soa {
        /// The primary name server.
        mname: &'a NameBuf,
        /// The responsible mailbox.
        rname: &'a NameBuf,
        /// Serial number.
        serial: u32,
        /// Refresh interval, seconds.
        refresh: u32,
        /// Retry interval, seconds.
        retry: u32,
        /// Expiry, seconds.
        expire: u32,
        /// Negative-caching TTL, seconds.
        minimum: u32,
    },
}

impl Rdata<'_> {
    /// The record type number.
    pub fn rtype(&self) -> u16 {
        match self {
            Rdata::A(_) => rtype::A,
            Rdata::Aaaa(_) => rtype::AAAA,
            Rdata::Cname(_) => rtype::CNAME,
            Rdata::Ptr(_) => rtype::PTR,
            Rdata::Ns(_) => rtype::NS,
            Rdata::Srv { .. } => rtype::SRV,
            Rdata::Txt(_) => rtype::TXT,
            Rdata::Soa { .. } => rtype::SOA,
        }
    }
}

/// Why an answer could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuildError {
    /// The answer would not fit in a 64 KiB message.
    TooLarge,
    /// Sections must be filled in order: answer, authority, additional.
    SectionOrder,
    /// A TXT string over 255 bytes.
    TxtTooLong,
    /// Rotation needs an answer section of two or more A, or AAAA, records
    /// owned by the question.
    NotRotatable,
    /// A name in an answer for a whole zone lies outside that zone.
    OutsideZone,
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BuildError::TooLarge => "answer too large for a DNS message",
            BuildError::SectionOrder => "records added out of section order",
            BuildError::TxtTooLong => "TXT string longer than 255 bytes",
            BuildError::NotRotatable => "answer section cannot be rotated",
            BuildError::OutsideZone => "zone-wide answer may only name the zone",
        })
    }
}

impl std::error::Error for BuildError {}

/// A pointer written per reply: at `at` in the emitted tail, point at the
/// question's last `suffix_len` bytes. A `suffix_len` of [`TAIL_FIXUP`]
/// points into the tail instead, at the offset the stored bytes at `at`
/// hold (a wildcard answer's names named again).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fixup {
    at: u16,
    suffix_len: u8,
}

/// The `suffix_len` of a fixup that points into the tail: no name is 0
/// bytes long (the root is 1), so it cannot be a question suffix.
const TAIL_FIXUP: u8 = 0;

/// Bytes a fixup takes at the end of [`PreparedAnswer`]'s buffer.
const FIXUP_LEN: usize = 3;

/// The encoded tail of a reply, ready to copy. Owned (`B = Box<[u8]>`), or
/// borrowed ([`AnswerRef`]) from the flat form [`PreparedAnswer::encode_into`]
/// writes, which is how a name's answers are kept: one block per name.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PreparedAnswer<B = Box<[u8]>> {
    rcode: Rcode,
    /// Records in the answer, authority and additional sections.
    counts: [u16; 3],
    /// With rotation: the answer records, each `record_len` bytes, stored
    /// twice at the start of `bytes`. Zero when not rotating.
    rotate_records: u16,
    record_len: u16,
    authoritative: bool,
    fixup_count: u8,
    /// The stored tail, then `fixup_count` fixups of 3 bytes each
    /// (offset big-endian, suffix length).
    bytes: B,
}

/// A [`PreparedAnswer`] borrowed from where it is stored.
pub type AnswerRef<'a> = PreparedAnswer<&'a [u8]>;

/// The flat form's header comes in two forms. The short one fits nearly
/// every answer a cluster holds (one per name): a first byte with
/// [`SHORT_FORM`], the AA flag ([`SHORT_AUTHORITATIVE`]) and the RCODE in
/// its low four bits, then the three counts, rotate_records, record_len
/// and fixup_count a byte each, and the stored bytes' length in two.
const SHORT_HEADER_LEN: usize = 9;
const SHORT_FORM: u8 = 0x80;
const SHORT_AUTHORITATIVE: u8 = 0x40;
const SHORT_RCODE_MASK: u8 = 0x0f;

/// The long form, for any answer: a first byte of 0, then rcode (2),
/// flags (1), counts (6), rotate_records (2), record_len (2), fixup_count
/// (1), and the length of the stored bytes (4).
const LONG_HEADER_LEN: usize = 19;

impl<B: AsRef<[u8]>> fmt::Debug for PreparedAnswer<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PreparedAnswer")
            .field("rcode", &self.rcode)
            .field("aa", &self.authoritative)
            .field("counts", &self.counts)
            .field("rotate_records", &self.rotate_records)
            .field("tail_len", &self.tail_len())
            .finish()
    }
}

impl PreparedAnswer {
    /// An answer with no records: just an RCODE and the AA flag (REFUSED,
    /// SERVFAIL). Cannot fail, unlike building one.
    pub fn empty(rcode: Rcode, authoritative: bool) -> PreparedAnswer {
        PreparedAnswer {
            rcode,
            counts: [0; 3],
            rotate_records: 0,
            record_len: 0,
            authoritative,
            fixup_count: 0,
            bytes: Box::default(),
        }
    }
}

impl<'a> AnswerRef<'a> {
    /// Reads an answer from the front of `bytes`, as
    /// [`PreparedAnswer::encode_into`] wrote it; returns it and the bytes
    /// after it, or `None` if `bytes` does not start with one.
    #[inline]
    pub fn decode(bytes: &'a [u8]) -> Option<(AnswerRef<'a>, &'a [u8])> {
        let first = *bytes.first()?;
        let (mut answer, stored_len, rest) = if first & SHORT_FORM != 0 {
            let (header, rest) = bytes.split_first_chunk::<SHORT_HEADER_LEN>()?;
            let answer = PreparedAnswer {
                rcode: Rcode(u16::from(first & SHORT_RCODE_MASK)),
                authoritative: first & SHORT_AUTHORITATIVE != 0,
                counts: [header[1], header[2], header[3]].map(u16::from),
                rotate_records: u16::from(header[4]),
                record_len: u16::from(header[5]),
                fixup_count: header[6],
                bytes: &[][..],
            };
            let stored_len = usize::from(u16::from_le_bytes([header[7], header[8]]));
            (answer, stored_len, rest)
        } else {
            let (header, rest) = bytes.split_first_chunk::<LONG_HEADER_LEN>()?;
            let u16_at = |at: usize| u16::from_le_bytes([header[at], header[at + 1]]);
            let answer = PreparedAnswer {
                rcode: Rcode(u16_at(1)),
                authoritative: header[3] != 0,
                counts: [u16_at(4), u16_at(6), u16_at(8)],
                rotate_records: u16_at(10),
                record_len: u16_at(12),
                fixup_count: header[14],
                bytes: &[][..],
            };
            let stored_len =
                u32::from_le_bytes([header[15], header[16], header[17], header[18]]) as usize;
            (answer, stored_len, rest)
        };
        if rest.len() < stored_len {
            return None;
        }
        let (stored, rest) = rest.split_at(stored_len);
        answer.bytes = stored;
        Some((answer, rest))
    }

    /// An owned copy.
    pub fn to_owned(&self) -> PreparedAnswer {
        self.with_bytes(self.bytes.into())
    }
}

impl<B> PreparedAnswer<B> {
    /// The same answer over `bytes`, a copy of this one's in another form.
    fn with_bytes<C>(&self, bytes: C) -> PreparedAnswer<C> {
        PreparedAnswer {
            rcode: self.rcode,
            counts: self.counts,
            rotate_records: self.rotate_records,
            record_len: self.record_len,
            authoritative: self.authoritative,
            fixup_count: self.fixup_count,
            bytes,
        }
    }
}

impl<B: AsRef<[u8]>> PreparedAnswer<B> {
    /// The answer, borrowed.
    pub fn as_ref(&self) -> AnswerRef<'_> {
        self.with_bytes(self.bytes.as_ref())
    }

    /// Bytes [`PreparedAnswer::encode_into`] writes.
    pub fn encoded_len(&self) -> usize {
        let header = if self.short_form().is_some() {
            SHORT_HEADER_LEN
        } else {
            LONG_HEADER_LEN
        };
        header + self.bytes.as_ref().len()
    }

    /// The short form's header, if the answer fits it.
    fn short_form(&self) -> Option<[u8; SHORT_HEADER_LEN]> {
        let byte = |n: u16| u8::try_from(n).ok();
        let rcode = u8::try_from(self.rcode.0)
            .ok()
            .filter(|r| r & !SHORT_RCODE_MASK == 0)?;
        let stored_len = u16::try_from(self.bytes.as_ref().len()).ok()?;
        let authoritative = SHORT_AUTHORITATIVE * u8::from(self.authoritative);
        let first = SHORT_FORM | rcode | authoritative;
        let [len_low, len_high] = stored_len.to_le_bytes();
        Some([
            first,
            byte(self.counts[0])?,
            byte(self.counts[1])?,
            byte(self.counts[2])?,
            byte(self.rotate_records)?,
            byte(self.record_len)?,
            self.fixup_count,
            len_low,
            len_high,
        ])
    }

    /// Appends the flat form, which [`AnswerRef::decode`] reads back.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let stored = self.bytes.as_ref();
        if let Some(header) = self.short_form() {
            out.extend_from_slice(&header);
            out.extend_from_slice(stored);
            return;
        }
        out.push(0);
        out.extend_from_slice(&self.rcode.0.to_le_bytes());
        out.push(u8::from(self.authoritative));
        for count in self.counts {
            out.extend_from_slice(&count.to_le_bytes());
        }
        out.extend_from_slice(&self.rotate_records.to_le_bytes());
        out.extend_from_slice(&self.record_len.to_le_bytes());
        out.push(self.fixup_count);
        // A tail is under 64 KiB, twice that when rotating: u32 holds it.
        out.extend_from_slice(&(stored.len() as u32).to_le_bytes());
        out.extend_from_slice(stored);
    }

    /// The RCODE the reply carries.
    pub fn rcode(&self) -> Rcode {
        self.rcode
    }
    /// Whether the reply sets AA.
    pub fn authoritative(&self) -> bool {
        self.authoritative
    }
    /// Records in the answer, authority and additional sections.
    pub fn counts(&self) -> [u16; 3] {
        self.counts
    }
    /// Bytes the tail adds to a reply.
    pub fn tail_len(&self) -> usize {
        self.stored_len() - self.rotated_len()
    }
    /// Heap bytes this answer holds, for memory accounting.
    pub fn heap_bytes(&self) -> usize {
        self.bytes.as_ref().len()
    }

    /// The stored tail, without the fixups after it.
    fn stored_len(&self) -> usize {
        self.bytes.as_ref().len() - usize::from(self.fixup_count) * FIXUP_LEN
    }

    fn fixups(&self) -> impl Iterator<Item = Fixup> + '_ {
        self.bytes.as_ref()[self.stored_len()..]
            .chunks_exact(FIXUP_LEN)
            .map(|f| Fixup {
                at: u16::from_be_bytes([f[0], f[1]]),
                suffix_len: f[2],
            })
    }
    /// Whether the first answer record is a CNAME owned by the question: an
    /// alias whose target may be chased.
    pub fn leads_with_cname(&self) -> bool {
        self.counts[0] > 0
            && self.rotate_records == 0
            && self.bytes.as_ref().get(..4) == Some(&[0xC0, 0x0C, 0, rtype::CNAME as u8][..])
    }
    /// Number of records that rotate (0 when the answer does not rotate).
    pub fn rotating_records(&self) -> u16 {
        self.rotate_records
    }

    fn rotated_len(&self) -> usize {
        usize::from(self.rotate_records) * usize::from(self.record_len)
    }

    /// Writes the tail into `out`, which must be exactly `tail_len()` bytes,
    /// for a question whose lowercase wire name is `qname`. Fails, leaving
    /// `out` partly written, if a zone-wide answer's pointer would not land
    /// on a label of the question: the question is not in that zone.
    pub(crate) fn write_tail(
        &self,
        out: &mut [u8],
        qname: &[u8],
        rotation: u32,
    ) -> Result<(), QuestionOutsideZone> {
        let rotated = self.rotated_len();
        let stored = &self.bytes.as_ref()[..self.stored_len()];
        let (window, rest) = if self.rotate_records > 1 {
            let first = (rotation % u32::from(self.rotate_records)) as usize;
            let start = first * usize::from(self.record_len);
            (&stored[start..start + rotated], &stored[2 * rotated..])
        } else {
            (&[][..], stored)
        };
        out[..window.len()].copy_from_slice(window);
        out[window.len()..].copy_from_slice(rest);
        // Fixups mostly share one suffix (the zone): its label walk is done
        // once per reply, not once per fixup.
        let mut checked: Option<(u8, usize)> = None;
        for fixup in self.fixups() {
            let at = usize::from(fixup.at);
            if fixup.suffix_len == TAIL_FIXUP {
                // The tail starts after the question and its type and class.
                let in_tail = u16::from_be_bytes([out[at], out[at + 1]]);
                let target = (HEADER_LEN + qname.len() + 4) as u16 + in_tail;
                out[at..at + 2].copy_from_slice(&(0xC000 | target).to_be_bytes());
                continue;
            }
            let suffix_start = match checked {
                Some((suffix_len, start)) if suffix_len == fixup.suffix_len => start,
                _ => {
                    let start = qname
                        .len()
                        .checked_sub(usize::from(fixup.suffix_len))
                        .filter(|&start| is_label_start(qname, start))
                        .ok_or(QuestionOutsideZone)?;
                    checked = Some((fixup.suffix_len, start));
                    start
                }
            };
            let target = (HEADER_LEN + suffix_start) as u16;
            out[at..at + 2].copy_from_slice(&(0xC000 | target).to_be_bytes());
        }
        Ok(())
    }
}

/// Whether a label of the wire name `name` starts at `offset`.
fn is_label_start(name: &[u8], offset: usize) -> bool {
    let mut pos = 0usize;
    while pos < offset {
        match name.get(pos) {
            Some(&len) if len > 0 => pos += 1 + usize::from(len),
            _ => return false,
        }
    }
    pos == offset
}

/// A zone-wide answer was assembled for a question outside its zone: its
/// pointers to the zone's name in the question would land elsewhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuestionOutsideZone;

impl fmt::Display for QuestionOutsideZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("zone-wide answer assembled for a question outside its zone")
    }
}

impl std::error::Error for QuestionOutsideZone {}

impl PreparedAnswer {
    /// Rewrites the address of a one-record A or AAAA answer, for answers
    /// synthesised from the name (pod records in `insecure` mode). Returns
    /// false, changing nothing, if the answer is not one record of that
    /// address's family.
    pub fn set_single_address(&mut self, address: &[u8]) -> bool {
        let expected = match address.len() {
            4 => 16usize,
            16 => 28usize,
            _ => return false,
        };
        if self.counts != [1, 0, 0] || self.bytes.len() != expected || self.fixup_count != 0 {
            return false;
        }
        let at = expected - address.len();
        self.bytes[at..].copy_from_slice(address);
        true
    }
}

impl Serves {
    /// What an answer built for `question` serves: a leading `*` label
    /// makes it a wildcard's.
    fn for_question(question: &NameBuf) -> Serves {
        if question.first_label() == Some(b"*") {
            Serves::Wildcard
        } else {
            Serves::Name
        }
    }
}

/// Where a pointer may go.
#[derive(Clone, Copy, Debug)]
enum Target {
    /// A fixed message offset.
    At(u16),
    /// The question's last `n` bytes, resolved per reply.
    QuestionSuffix(u8),
    /// This offset in the tail, resolved per reply (a wildcard answer's
    /// tail starts where the question it serves ends).
    InTail(u16),
}

/// What question an answer serves, which decides where its pointers may go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Serves {
    /// One name, in any letter case: every pointer is fixed.
    Name,
    /// Every name in a zone: pointers only to the zone's suffix, per reply.
    Zone,
    /// Every name a leading `*` stands for: pointers per reply.
    Wildcard,
}

/// Builds a [`PreparedAnswer`].
#[derive(Debug)]
pub struct AnswerBuilder {
    /// Lower-cased question name, or the zone a zone-wide answer serves.
    question: NameBuf,
    serves: Serves,
    rcode: Rcode,
    authoritative: bool,
    section: Section,
    counts: [u16; 3],
    tail: Vec<u8>,
    /// Compression dictionary: lower-cased names and where they are.
    targets: Dictionary,
    fixups: Vec<Fixup>,
    rotate: bool,
    /// Lengths of the answer-section records, to check rotation.
    answer_records: Vec<(u16, u16, bool)>,
}

impl AnswerBuilder {
    /// Starts an answer for one question name (any letter case of it).
    /// NOERROR, authoritative, answer section.
    pub fn new(question: &NameBuf) -> AnswerBuilder {
        let question = question.to_lowercase();
        let serves = Serves::for_question(&question);
        let mut builder = AnswerBuilder::with_targets(question, serves, Dictionary::default());
        builder.add_question_targets();
        builder
    }

    /// Starts an answer that serves every name in `zone`, such as NXDOMAIN
    /// with the zone's SOA. Names in it may only be the zone, names below
    /// it, or the question itself.
    pub fn for_zone(zone: &NameBuf) -> AnswerBuilder {
        let zone = zone.to_lowercase();
        let mut targets = Dictionary::default();
        if zone.wire_len() > 1 {
            targets.insert(
                zone.as_wire(),
                Target::QuestionSuffix(zone.wire_len() as u8),
            );
        }
        AnswerBuilder::with_targets(zone, Serves::Zone, targets)
    }

    fn with_targets(question: NameBuf, serves: Serves, targets: Dictionary) -> AnswerBuilder {
        AnswerBuilder {
            question,
            serves,
            rcode: Rcode::NOERROR,
            authoritative: true,
            section: Section::Answer,
            counts: [0; 3],
            tail: Vec::new(),
            targets,
            fixups: Vec::new(),
            rotate: false,
            answer_records: Vec::new(),
        }
    }

    /// Starts over for another question name, keeping the buffers, so that
    /// compiling many names does not allocate a builder each time.
    pub fn reset(&mut self, question: &NameBuf) {
        let question = question.to_lowercase();
        let serves = Serves::for_question(&question);
        let mut fresh = AnswerBuilder::with_targets(question, serves, Dictionary::default());
        std::mem::swap(&mut fresh.tail, &mut self.tail);
        std::mem::swap(&mut fresh.targets, &mut self.targets);
        std::mem::swap(&mut fresh.fixups, &mut self.fixups);
        std::mem::swap(&mut fresh.answer_records, &mut self.answer_records);
        fresh.tail.clear();
        fresh.targets.clear();
        fresh.fixups.clear();
        fresh.answer_records.clear();
        fresh.add_question_targets();
        *self = fresh;
    }

    fn add_question_targets(&mut self) {
        let wire = self.question.as_wire();
        let mut offset = 0usize;
        while offset + 1 < wire.len() {
            let target = match self.serves {
                // The `*` label stands for labels of any length: what
                // follows it is the question's suffix, wherever it starts.
                Serves::Wildcard if offset == 0 => None,
                Serves::Wildcard => Some(Target::QuestionSuffix((wire.len() - offset) as u8)),
                Serves::Name | Serves::Zone => Some(Target::At((HEADER_LEN + offset) as u16)),
            };
            if let Some(target) = target {
                self.targets.insert(&wire[offset..], target);
            }
            offset += 1 + usize::from(wire[offset]);
        }
    }

    /// Sets the RCODE (default NOERROR).
    pub fn set_rcode(&mut self, rcode: Rcode) -> &mut Self {
        self.rcode = rcode;
        self
    }

    /// Sets the AA flag (default on).
    pub fn set_authoritative(&mut self, authoritative: bool) -> &mut Self {
        self.authoritative = authoritative;
        self
    }

    /// Moves on to a later section. Sections only go forward.
    pub fn section(&mut self, section: Section) -> Result<&mut Self, BuildError> {
        if section < self.section {
            return Err(BuildError::SectionOrder);
        }
        self.section = section;
        Ok(self)
    }

    /// Asks for the answer section to rotate per reply.
    pub fn rotate_answers(&mut self) -> &mut Self {
        self.rotate = true;
        self
    }

    /// Number of records pushed so far, per section.
    pub fn counts(&self) -> [u16; 3] {
        self.counts
    }

    /// Appends one record to the current section.
    pub fn push(&mut self, owner: Owner<'_>, ttl: u32, rdata: Rdata<'_>) -> Result<(), BuildError> {
        let start = self.tail.len();
        match owner {
            Owner::Question => self.tail.extend_from_slice(&0xC00Cu16.to_be_bytes()),
            Owner::Name(name) => self.write_name(name, true)?,
        }
        self.tail.extend_from_slice(&rdata.rtype().to_be_bytes());
        self.tail.extend_from_slice(&crate::class::IN.to_be_bytes());
        self.tail.extend_from_slice(&ttl.to_be_bytes());
        let rdlen_at = self.tail.len();
        self.tail.extend_from_slice(&[0, 0]);
        match rdata {
            Rdata::A(ip) => self.tail.extend_from_slice(&ip.octets()),
            Rdata::Aaaa(ip) => self.tail.extend_from_slice(&ip.octets()),
            Rdata::Cname(name) | Rdata::Ptr(name) | Rdata::Ns(name) => {
                self.write_name(name, true)?;
            }
            Rdata::Srv {
                priority,
                weight,
                port,
                target,
            } => {
                for field in [priority, weight, port] {
                    self.tail.extend_from_slice(&field.to_be_bytes());
                }
                self.write_name(target, false)?;
            }
            Rdata::Txt(strings) => {
                for string in strings {
                    let len = u8::try_from(string.len()).map_err(|_| BuildError::TxtTooLong)?;
                    self.tail.push(len);
                    self.tail.extend_from_slice(string);
                }
            }
            Rdata::Soa {
                mname,
                rname,
                serial,
                refresh,
                retry,
                expire,
                minimum,
            } => {
                self.write_name(mname, true)?;
                self.write_name(rname, true)?;
                for field in [serial, refresh, retry, expire, minimum] {
                    self.tail.extend_from_slice(&field.to_be_bytes());
                }
            }
        }
        let rdlen = self.tail.len() - rdlen_at - 2;
        let rdlen = u16::try_from(rdlen).map_err(|_| BuildError::TooLarge)?;
        self.tail[rdlen_at..rdlen_at + 2].copy_from_slice(&rdlen.to_be_bytes());
        if self.tail.len() > self.max_tail_len() {
            return Err(BuildError::TooLarge);
        }
        let section = self.section as usize;
        self.counts[section] = self.counts[section]
            .checked_add(1)
            .ok_or(BuildError::TooLarge)?;
        if self.section == Section::Answer {
            let len = (self.tail.len() - start) as u16;
            let simple =
                matches!(owner, Owner::Question) && matches!(rdata, Rdata::A(_) | Rdata::Aaaa(_));
            self.answer_records.push((rdata.rtype(), len, simple));
        }
        Ok(())
    }

    /// The most tail that fits in a 64 KiB message with the longest question
    /// this answer can serve and an OPT record.
    fn max_tail_len(&self) -> usize {
        let question = if self.serves != Serves::Name {
            255
        } else {
            self.question.wire_len()
        };
        crate::reply::max_records_len(question + 4)
    }

    /// Offset of the tail's start within a reply.
    fn tail_base(&self) -> usize {
        HEADER_LEN + self.question.wire_len() + 4
    }

    /// Writes a name, compressed against the question and earlier names
    /// unless `compress` is false, and adds its suffixes as targets.
    fn write_name(&mut self, name: &NameBuf, compress: bool) -> Result<(), BuildError> {
        let mut lower_buf = [0u8; crate::name::MAX_NAME_LEN];
        let original = name.as_wire();
        let lower = &mut lower_buf[..original.len()];
        lower.copy_from_slice(original);
        lower.make_ascii_lowercase();
        let lower = &lower_buf[..original.len()];
        if self.serves == Serves::Zone
            && crate::name::suffix_offset(lower, self.question.as_wire()).is_none()
        {
            return Err(BuildError::OutsideZone);
        }
        // Find the longest suffix already in the dictionary.
        let mut offset = 0usize;
        let mut pointer = None;
        while compress && offset + 1 < lower.len() {
            if let Some(target) = self.targets.get(&lower[offset..]) {
                pointer = Some(target);
                break;
            }
            offset += 1 + usize::from(lower[offset]);
        }
        // Literal labels up to the pointer (or the whole name, root included).
        let literal_end = if pointer.is_some() {
            offset
        } else {
            lower.len()
        };
        let written_at = self.tail.len();
        self.tail.extend_from_slice(&original[..literal_end]);
        match pointer {
            Some(Target::At(at)) => self.tail.extend_from_slice(&(0xC000 | at).to_be_bytes()),
            Some(Target::QuestionSuffix(suffix_len)) => {
                let at = u16::try_from(self.tail.len()).map_err(|_| BuildError::TooLarge)?;
                self.fixups.push(Fixup { at, suffix_len });
                self.tail.extend_from_slice(&[0xC0, 0x00]);
            }
            Some(Target::InTail(in_tail)) => {
                // The stored bytes hold the offset in the tail until the
                // reply writes the pointer.
                let at = u16::try_from(self.tail.len()).map_err(|_| BuildError::TooLarge)?;
                self.fixups.push(Fixup {
                    at,
                    suffix_len: TAIL_FIXUP,
                });
                self.tail.extend_from_slice(&in_tail.to_be_bytes());
            }
            None => {}
        }
        // Each literal label starts a suffix that later names may point at.
        // A zone-wide answer's tail moves with the question, so only the
        // question's zone suffix is a target there; a wildcard's in-tail
        // targets are resolved per reply instead.
        if self.serves != Serves::Zone {
            let mut label_at = 0usize;
            while label_at < literal_end && label_at + 1 < lower.len() {
                let in_tail = written_at + label_at;
                let target = match self.serves {
                    // Whatever the question's length, the pointer must fit.
                    Serves::Wildcard => (HEADER_LEN + crate::name::MAX_NAME_LEN + 4 + in_tail
                        < 0x3FFF)
                        .then_some(Target::InTail(in_tail as u16)),
                    Serves::Name | Serves::Zone => {
                        let at = self.tail_base() + in_tail;
                        (at < 0x3FFF).then_some(Target::At(at as u16))
                    }
                };
                if let Some(target) = target {
                    self.targets.insert_new(&lower[label_at..], target);
                }
                label_at += 1 + usize::from(lower[label_at]);
            }
        }
        Ok(())
    }

    /// Finishes the answer.
    pub fn finish(mut self) -> Result<PreparedAnswer, BuildError> {
        self.take()
    }

    /// Finishes the answer and leaves the builder empty, its buffers kept
    /// for the next [`AnswerBuilder::reset`].
    pub fn take(&mut self) -> Result<PreparedAnswer, BuildError> {
        let bytes = &self.tail;
        let (mut rotate_records, mut record_len) = (0u16, 0u16);
        let mut rotated = 0usize;
        if self.rotate && self.answer_records.len() > 1 {
            let (first_type, first_len, _) = self.answer_records[0];
            let uniform = self
                .answer_records
                .iter()
                .all(|&(t, len, simple)| simple && t == first_type && len == first_len);
            if !uniform {
                return Err(BuildError::NotRotatable);
            }
            rotate_records = self.answer_records.len() as u16;
            record_len = first_len;
            rotated = usize::from(rotate_records) * usize::from(record_len);
        }
        let fixup_count = u8::try_from(self.fixups.len()).map_err(|_| BuildError::TooLarge)?;
        // Stored: [answers again, when rotating] tail, fixups. A reply sends a
        // window of one copy of the answers; fixups and targets all lie after
        // the answer section (answer owners are the question), so doubling
        // shifts none of them.
        let mut stored = Vec::with_capacity(rotated + bytes.len() + self.fixups.len() * FIXUP_LEN);
        stored.extend_from_slice(&bytes[..rotated]);
        stored.extend_from_slice(bytes);
        for fixup in &self.fixups {
            stored.extend_from_slice(&fixup.at.to_be_bytes());
            stored.push(fixup.suffix_len);
        }
        let answer = PreparedAnswer {
            rcode: self.rcode,
            counts: self.counts,
            rotate_records,
            record_len,
            authoritative: self.authoritative,
            fixup_count,
            bytes: stored.into_boxed_slice(),
        };
        self.tail.clear();
        self.fixups.clear();
        self.answer_records.clear();
        self.targets.clear();
        self.counts = [0; 3];
        self.section = Section::Answer;
        self.rotate = false;
        Ok(answer)
    }
}

/// Below this many names the dictionary is scanned, not hashed.
const SCAN_LIMIT: usize = 12;

/// The compression dictionary: uncompressed lower-case names laid end to end
/// in one buffer, found through a small open-addressing hash table, so that
/// a 1000-target SRV set costs no allocation per name and no quadratic scan.
#[derive(Debug, Default)]
struct Dictionary {
    bytes: Vec<u8>,
    /// (start in `bytes`, length, where the name is in the reply).
    names: Vec<(u32, u16, Target)>,
    /// Indexes into `names` plus one; zero is empty. Length is a power of two.
    slots: Vec<u32>,
}

impl Dictionary {
    fn hash(name: &[u8]) -> u64 {
        // FNV-1a: names are short, and this is build time, not query time.
        let mut hash = 0xcbf2_9ce4_8422_2325u64;
        for &byte in name {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
        hash
    }

    fn name(&self, index: usize) -> &[u8] {
        let (start, len, _) = self.names[index];
        &self.bytes[start as usize..start as usize + usize::from(len)]
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.names.clear();
        self.slots.clear();
    }

    fn get(&self, name: &[u8]) -> Option<Target> {
        if self.slots.is_empty() {
            // Small dictionaries (most answers) are scanned.
            return (0..self.names.len())
                .find(|&i| self.name(i) == name)
                .map(|i| self.names[i].2);
        }
        let mask = self.slots.len() - 1;
        let mut slot = Self::hash(name) as usize & mask;
        loop {
            match self.slots[slot] {
                0 => return None,
                index => {
                    let index = index as usize - 1;
                    if self.name(index) == name {
                        return Some(self.names[index].2);
                    }
                }
            }
            slot = (slot + 1) & mask;
        }
    }

    /// Adds a name unless it is already present.
    fn insert_new(&mut self, name: &[u8], target: Target) {
        if self.get(name).is_none() {
            self.insert(name, target);
        }
    }

    fn insert(&mut self, name: &[u8], target: Target) {
        let start = self.bytes.len() as u32;
        self.bytes.extend_from_slice(name);
        self.names.push((start, name.len() as u16, target));
        if self.slots.is_empty() && self.names.len() < SCAN_LIMIT {
            return;
        }
        if self.names.len() * 2 > self.slots.len() {
            self.grow();
        } else {
            self.place(self.names.len() - 1);
        }
    }

    fn place(&mut self, index: usize) {
        let mask = self.slots.len() - 1;
        let mut slot = Self::hash(self.name(index)) as usize & mask;
        while self.slots[slot] != 0 {
            slot = (slot + 1) & mask;
        }
        self.slots[slot] = index as u32 + 1;
    }

    fn grow(&mut self) {
        let size = (self.slots.len() * 2).max((4 * SCAN_LIMIT).next_power_of_two());
        self.slots = vec![0; size];
        for index in 0..self.names.len() {
            self.place(index);
        }
    }
}
