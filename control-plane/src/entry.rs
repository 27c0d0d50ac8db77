//! What a core holds per name, and per zone.

use kubewire_wire::{NameBuf, PreparedAnswer, rtype};

/// Everything a core answers for one name: a prepared answer per query type.
/// A type not listed gets the zone's NODATA answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameEntry {
    /// The lowercase wire name.
    key: Box<[u8]>,
    /// Index of the zone the name is in, into [`Zones`].
    zone: u8,
    answers: Box<[(u16, PreparedAnswer)]>,
}

impl NameEntry {
    /// Makes an entry. `answers` holds at most one answer per type.
    pub fn new(key: &[u8], zone: u8, mut answers: Vec<(u16, PreparedAnswer)>) -> NameEntry {
        // Moved into an exact allocation, not shrunk in place: a shrink
        // leaves the spare capacity as a small hole beside a long-lived
        // block, hundreds of thousands of times in a big cluster.
        let answers: Box<[(u16, PreparedAnswer)]> = answers.drain(..).collect();
        NameEntry {
            key: key.into(),
            zone,
            answers,
        }
    }
    /// The lowercase wire name.
    pub fn key(&self) -> &[u8] {
        &self.key
    }
    /// The zone index.
    pub fn zone(&self) -> u8 {
        self.zone
    }
    /// The answer for a query type, if this name has one. ANY gets the
    /// first answer the name has (a subset, as RFC 8482 allows).
    pub fn answer(&self, qtype: u16) -> Option<&PreparedAnswer> {
        pick(&self.answers, qtype)
    }
    /// The types this name has answers for.
    pub fn types(&self) -> impl Iterator<Item = u16> + '_ {
        self.answers.iter().map(|(t, _)| *t)
    }
    /// Approximate heap bytes, for memory accounting.
    pub fn heap_bytes(&self) -> usize {
        self.key.len()
            + self.answers.len() * core::mem::size_of::<(u16, PreparedAnswer)>()
            + self
                .answers
                .iter()
                .map(|(_, a)| a.heap_bytes())
                .sum::<usize>()
    }
}

/// The answers that belong to a zone rather than to one name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZoneAnswers {
    /// The zone apex, lowercase.
    pub apex: NameBuf,
    /// A cluster zone (true) or a reverse zone (false). Unknown names in a
    /// reverse zone are not ours; in a cluster zone they are NXDOMAIN.
    pub cluster: bool,
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
    /// core's set of [`crate::delta::PodAddress`]es.
    pub pods_verified: bool,
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
