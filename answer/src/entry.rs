//! What a core holds per name, and per zone.

use kubewire_block::ThinBlock;
use kubewire_wire::name::MAX_NAME_LEN;
use kubewire_wire::{AnswerRef, NameBuf, PreparedAnswer, rtype};

/// Everything a core answers for one name: a prepared answer per query type.
/// A type not listed gets the zone's NODATA answer.
///
/// One shared block per name, reached through one thin pointer: the key,
/// then each answer as its type and flat form
/// ([`PreparedAnswer::encode_into`]). A cluster holds hundreds of
/// thousands of names, and one block instead of four (an `Arc`, the key,
/// the answer list and each answer's bytes) halves what a name costs.
/// Cloning shares the block. Its count, length and [`EntryHeader`] take
/// 16 bytes ([`ThinBlock`]; `triomphe`'s thin `Arc` took 24).
#[derive(Clone)]
pub struct NameEntry(ThinBlock<EntryHeader>);

/// A name entry's bytes, by part.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EntryBytes {
    /// The block's reference count, length and entry header.
    pub block_header: usize,
    /// The name's table key: its labels below the zone's apex, and the
    /// zone's index.
    pub key: usize,
    /// Each answer's type and flat header (RCODE, flags, counts, lengths).
    pub answer_headers: usize,
    /// The answers' records, as they go on the wire (with a second copy
    /// where answers rotate, and the fixups that patch them).
    pub records: usize,
}

impl std::ops::AddAssign for EntryBytes {
    fn add_assign(&mut self, other: EntryBytes) {
        self.block_header += other.block_header;
        self.key += other.key;
        self.answer_headers += other.answer_headers;
        self.records += other.records;
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct EntryHeader {
    /// Length of the table key at the start of the block (at most 255).
    key_len: u8,
    /// What made the entry, in the compiler's numbering. Kept in the block,
    /// so the compiler's table of names holds just the entries instead of
    /// (entry, owner) pairs.
    owner: u32,
}

impl NameEntry {
    /// Makes an entry. `answers` holds at most one answer per type; `key`
    /// is the name's [`TableKey`], which ends with its zone's index. `owner` is the
    /// compiler's number for what made it (cores ignore it).
    pub fn new(key: &TableKey, owner: u32, answers: Vec<(u16, PreparedAnswer)>) -> NameEntry {
        let key = key.as_bytes();
        let len = key.len()
            + answers
                .iter()
                .map(|(_, a)| 2 + a.encoded_len())
                .sum::<usize>();
        let mut block = Vec::with_capacity(len);
        block.extend_from_slice(key);
        for (rr_type, answer) in &answers {
            block.extend_from_slice(&rr_type.to_le_bytes());
            answer.encode_into(&mut block);
        }
        let header = EntryHeader {
            key_len: key.len() as u8,
            owner,
        };
        NameEntry(ThinBlock::new(header, &block))
    }
    /// The name's [`TableKey`]: its labels below its zone's apex, then the
    /// zone's index.
    #[inline]
    pub fn table_key(&self) -> &[u8] {
        &self.0.bytes()[..usize::from(self.0.header().key_len)]
    }
    /// The zone index: the table key's last byte.
    pub fn zone(&self) -> u8 {
        self.table_key().last().copied().unwrap_or_default()
    }
    /// The compiler's number for what made the entry.
    pub fn owner(&self) -> u32 {
        self.0.header().owner
    }
    /// Each answer with its type, in the order given to [`NameEntry::new`].
    pub fn answers(&self) -> impl Iterator<Item = (u16, AnswerRef<'_>)> {
        let mut rest = &self.0.bytes()[usize::from(self.0.header().key_len)..];
        std::iter::from_fn(move || {
            let (rr_type, encoded) = rest.split_first_chunk::<2>()?;
            let (answer, after) = AnswerRef::decode(encoded)?;
            rest = after;
            Some((u16::from_le_bytes(*rr_type), answer))
        })
    }
    /// The answer for a query type, if this name has one. ANY gets the
    /// first answer the name has (a subset, as RFC 8482 allows).
    pub fn answer(&self, qtype: u16) -> Option<AnswerRef<'_>> {
        let mut answers = self.answers();
        if qtype == rtype::ANY {
            return answers.next().map(|(_, answer)| answer);
        }
        answers.find(|(t, _)| *t == qtype).map(|(_, answer)| answer)
    }
    /// The types this name has answers for.
    pub fn types(&self) -> impl Iterator<Item = u16> + '_ {
        self.answers().map(|(t, _)| t)
    }
    /// Heap bytes of the shared block, for memory accounting.
    pub fn heap_bytes(&self) -> usize {
        self.0.header_bytes() + self.0.bytes().len()
    }

    /// The shared block's bytes by part, for memory accounting: what the
    /// wire answers need (the records) beside what serves them.
    pub fn bytes_by_part(&self) -> EntryBytes {
        let key = usize::from(self.0.header().key_len);
        let records: usize = self.answers().map(|(_, answer)| answer.heap_bytes()).sum();
        EntryBytes {
            block_header: self.0.header_bytes(),
            key,
            answer_headers: self.0.bytes().len() - key - records,
            records,
        }
    }
    /// Where the entry's block starts: its header, then its key and
    /// answers. Taking it reads nothing, so it can be handed to a prefetch
    /// before the block is in the CPU's caches.
    #[inline]
    pub fn block_address(&self) -> *const u8 {
        self.0.as_ptr()
    }

    /// Whether both share one block.
    pub fn ptr_eq(&self, other: &NameEntry) -> bool {
        self.0.ptr_eq(&other.0)
    }
}

/// Equal entries answer alike: the owner is bookkeeping, not compared.
impl PartialEq for NameEntry {
    fn eq(&self, other: &NameEntry) -> bool {
        // The bytes start with the table key, which ends with the zone.
        self.ptr_eq(other) || self.0.bytes() == other.0.bytes()
    }
}

impl Eq for NameEntry {}

impl std::fmt::Debug for NameEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NameEntry")
            .field("key", &TableKey::from_bytes(self.table_key()))
            .field("zone", &self.zone())
            .field("answers", &self.answers().collect::<Vec<_>>())
            .finish()
    }
}

/// The answers that belong to a zone rather than to one name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZoneAnswers {
    /// The zone apex, lowercase.
    pub apex: NameBuf,
    /// A cluster zone (true) or a reverse or external zone (false).
    pub cluster: bool,
    /// A `k8s_external` zone, whose records carry its own TTL.
    pub external: bool,
    /// Unknown names are NXDOMAIN (cluster zones, and reverse zones named
    /// in the configuration); otherwise they are not ours.
    pub authoritative: bool,
    /// Answers at the apex, per type (SOA, NS).
    pub apex_answers: Vec<(u16, PreparedAnswer)>,
    /// NOERROR with no records and the SOA in authority, for any name.
    pub nodata: PreparedAnswer,
    /// NXDOMAIN with the SOA in authority, for any name.
    pub nxdomain: PreparedAnswer,
    /// SERVFAIL, for names that would be NXDOMAIN before the first sync.
    pub servfail: PreparedAnswer,
    /// Templates for pod A and AAAA answers synthesised from the name
    /// (insecure and verified pod modes), or `None`.
    pub pod_templates: Option<(PreparedAnswer, PreparedAnswer)>,
    /// Verified pod mode: a pod name answers only if its address is in the
    /// core's set of [`crate::update::PodAddress`]es.
    pub pods_verified: bool,
    /// A name that no object answers is not ours (it goes on to forwarding)
    /// instead of NXDOMAIN: CoreDNS's `fallthrough`.
    pub fallthrough: bool,
    /// `zonal`: a name `<zone>.<pin|prefer>._zone.<svc>…` that no endpoint's
    /// zone made is answered from `*.<pin|prefer>._zone.<svc>…`.
    pub zonal: bool,
}

impl ZoneAnswers {
    /// The apex answer for a type, if any.
    pub fn apex_answer(&self, qtype: u16) -> Option<&PreparedAnswer> {
        pick(&self.apex_answers, qtype)
    }
}

/// All zones, longest apex first so the most specific zone matches first.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Zones {
    /// The zones.
    pub zones: Vec<ZoneAnswers>,
    /// The SOA serial these answers carry.
    pub serial: u32,
}

impl Zones {
    /// The zone a lowercase name lies in, with its index.
    pub fn find(&self, key: &NameBuf) -> Option<(u8, &ZoneAnswers)> {
        self.zones
            .iter()
            .enumerate()
            .find(|(_, z)| key.ends_with(&z.apex))
            .map(|(i, z)| (i as u8, z))
    }

    /// The [`TableKey`] of a lowercase name, or `None` outside every zone.
    pub fn table_key(&self, name: &NameBuf) -> Option<TableKey> {
        let (index, zone) = self.find(name)?;
        Some(TableKey::new(name.as_wire(), zone.apex.wire_len(), index))
    }

    /// [`Zones::table_key`] of a lowercase wire name.
    pub fn table_key_of_wire(&self, name: &[u8]) -> Option<TableKey> {
        let (name, _) = NameBuf::from_wire(name).ok()?;
        self.table_key(&name)
    }

    /// The name a [`TableKey`]'s bytes stand for, or `None` if its zone is
    /// not one of these.
    pub fn name_of(&self, key: &[u8]) -> Option<NameBuf> {
        let (&zone, labels) = key.split_last()?;
        let apex = self.zones.get(usize::from(zone))?.apex.as_wire();
        let mut wire = [0u8; MAX_NAME_LEN];
        let whole = wire.get_mut(..labels.len() + apex.len())?;
        whole[..labels.len()].copy_from_slice(labels);
        whole[labels.len()..].copy_from_slice(apex);
        NameBuf::from_wire(whole).ok().map(|(name, _)| name)
    }
}

/// The answer for a query type; ANY gets the first answer there is (a
/// subset, as RFC 8482 allows).
fn pick(answers: &[(u16, PreparedAnswer)], qtype: u16) -> Option<&PreparedAnswer> {
    if qtype == rtype::ANY {
        return answers.first().map(|(_, answer)| answer);
    }
    answers
        .iter()
        .find(|(t, _)| *t == qtype)
        .map(|(_, answer)| answer)
}

impl crate::keyed::HasKey for NameEntry {
    type Key = [u8];
    #[inline]
    fn key(&self) -> &[u8] {
        self.table_key()
    }
}

/// What tables file a name under: its wire labels below its zone's apex
/// (no root byte), then the zone's index as one byte.
///
/// The apex is the same for every name of a zone: `svc.cluster.local.`'s
/// `cluster.local.` is 15 bytes of the 38 an average key took, in every one
/// of a cluster's hundreds of thousands of entries. A name lies in exactly
/// one zone (the longest apex that it ends with, as [`Zones::find`] picks),
/// so two names have equal keys exactly when they are equal. The last byte
/// is the zone's index whatever the labels: equal keys have equal zones
/// and equal labels.
#[derive(Clone, Copy)]
pub struct TableKey {
    bytes: [u8; MAX_NAME_LEN],
    len: u8,
}

impl TableKey {
    /// The key of `name` (lowercase wire form, root byte included) in the
    /// zone at `zone` whose apex takes `apex_len` bytes of it. The caller
    /// has checked that `name` ends with that apex.
    #[inline]
    pub fn new(name: &[u8], apex_len: usize, zone: u8) -> TableKey {
        let labels = &name[..name.len().saturating_sub(apex_len)];
        let mut bytes = [0u8; MAX_NAME_LEN];
        // A wire name is at most 255 bytes and its apex at least one (the
        // root), so the labels and the zone byte fit.
        let len = labels.len().min(MAX_NAME_LEN - 1);
        bytes[..len].copy_from_slice(&labels[..len]);
        bytes[len] = zone;
        TableKey {
            bytes,
            len: (len + 1) as u8,
        }
    }

    /// A key from its bytes ([`TableKey::as_bytes`]); `None` if they are
    /// empty or longer than a key can be.
    pub fn from_bytes(key: &[u8]) -> Option<TableKey> {
        let len = u8::try_from(key.len()).ok().filter(|len| *len > 0)?;
        let mut bytes = [0u8; MAX_NAME_LEN];
        bytes.get_mut(..key.len())?.copy_from_slice(key);
        Some(TableKey { bytes, len })
    }

    /// The key's bytes.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// The zone's index.
    pub fn zone(&self) -> u8 {
        self.bytes[usize::from(self.len) - 1]
    }
}

impl std::fmt::Debug for TableKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableKey")
            .field(
                "labels",
                &kubewire_wire::name::to_text(&self.as_bytes()[..usize::from(self.len) - 1]),
            )
            .field("zone", &self.zone())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubewire_wire::{AnswerBuilder, Owner, Rdata};
    use std::net::Ipv4Addr;

    fn a_answer(name: &NameBuf, last_octets: &[u8]) -> PreparedAnswer {
        let mut builder = AnswerBuilder::new(name);
        for &octet in last_octets {
            let rdata = Rdata::A(Ipv4Addr::new(10, 0, 0, octet));
            builder.push(Owner::Question, 5, rdata).unwrap();
        }
        builder.finish().unwrap()
    }

    #[test]
    fn an_entry_gives_back_its_key_zone_and_answers_by_type() {
        let name = NameBuf::from_text("web.default.svc.cluster.local").unwrap();
        let apex = NameBuf::from_text("cluster.local").unwrap();
        let key = TableKey::new(name.as_wire(), apex.wire_len(), 2);
        // The apex is left out: the labels, then the zone's index.
        assert_eq!(key.as_bytes(), b"\x03web\x07default\x03svc\x02");
        let one = a_answer(&name, &[1]);
        let three = a_answer(&name, &[1, 2, 3]);
        let entry = NameEntry::new(
            &key,
            7,
            vec![(rtype::A, one.clone()), (rtype::SRV, three.clone())],
        );
        assert_eq!(entry.table_key(), key.as_bytes());
        assert_eq!(entry.zone(), 2);
        assert_eq!(entry.types().collect::<Vec<_>>(), [rtype::A, rtype::SRV]);
        assert_eq!(entry.answer(rtype::A).unwrap().to_owned(), one);
        assert_eq!(entry.answer(rtype::SRV).unwrap().to_owned(), three);
        assert_eq!(entry.answer(rtype::ANY).unwrap().to_owned(), one);
        assert!(entry.answer(rtype::AAAA).is_none());
        // Equal content is equal; a clone shares the block.
        let same = NameEntry::new(&key, 7, vec![(rtype::A, one.clone()), (rtype::SRV, three)]);
        assert_eq!(entry, same);
        assert!(!entry.ptr_eq(&same) && entry.ptr_eq(&entry.clone()));
        assert_ne!(entry, NameEntry::new(&key, 7, vec![(rtype::A, one)]));
        let bare = NameEntry::new(&key, 1, Vec::new());
        assert_eq!((entry.owner(), bare.owner()), (7, 1));
        assert_eq!(bare, NameEntry::new(&key, 2, Vec::new()));
        assert!(bare.answer(rtype::ANY).is_none() && bare.types().next().is_none());
    }
}
