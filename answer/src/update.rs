//! What travels from the compiler to the serving cores: a `Reset` (a whole
//! [`Snapshot`]) or a [`Delta`] of [`Change`]s, each with its revision. The
//! hub that carries them is [`crate::hub`].

use crate::entry::{NameEntry, Zones};
use crate::names::NameIndex;
use std::sync::Arc;

/// A pod address that `verified` pod mode answers for: the id of the pod's
/// namespace label (see [`Change::PodNamespace`]) and one of its IPs.
/// Verified pod names are not compiled into entries: a core answers them
/// from the insecure-mode template once it finds the address in its set of
/// these (8 bytes an IPv4 pod on a core, where an entry costs hundreds).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodAddress {
    /// The namespace label's id.
    pub namespace: u32,
    /// The address.
    pub ip: std::net::IpAddr,
}

/// One change to one name, or to the set of verified pod addresses.
#[derive(Clone, Debug)]
pub enum Change {
    /// Add or replace the entry with this key.
    Upsert(NameEntry),
    /// Remove the entry with this [`crate::TableKey`] (its bytes).
    Remove(Box<[u8]>),
    /// A namespace label (lowercase) gets an id for [`PodAddress`]es. Ids
    /// are never reused, and come before the first address that uses them.
    PodNamespace(u32, Arc<[u8]>),
    /// A pod address now answers (`verified` pod mode).
    UpsertPod(PodAddress),
    /// A pod address no longer answers.
    RemovePod(PodAddress),
    /// Autopath: the namespace label id whose pods alone hold this address
    /// now (non-hostNetwork, not finished), or `None`: no namespace's, or
    /// more than one's (an address reused while an old pod lingers).
    Client(std::net::IpAddr, Option<u32>),
}

/// The changes between revision `revision - 1` and `revision`.
#[derive(Clone, Debug)]
pub struct Delta {
    /// The revision this delta brings a core to.
    pub revision: u64,
    /// Name changes.
    pub changes: Vec<Change>,
    /// A new index of every name, this delta's changes included: a core
    /// takes it in place of its own and applies only the delta's pod
    /// changes. Sent once the first sync is whole, and when enough names
    /// changed since the last index.
    pub names: Option<Arc<NameIndex>>,
    /// The zone answers at this revision (the SOA serial changes with data).
    pub zones: Arc<Zones>,
    /// Whether the first full sync is in this state.
    pub synced: bool,
    /// When the compiler produced it, for publish-to-applied latency.
    pub created: std::time::Instant,
}

/// A whole state.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The revision of this state.
    pub revision: u64,
    /// Every name.
    pub names: Arc<NameIndex>,
    /// Every namespace label id.
    pub pod_namespaces: Vec<(u32, Arc<[u8]>)>,
    /// Every verified pod address (empty unless pod mode is `verified`).
    pub pods: Vec<PodAddress>,
    /// Autopath's clients: each pod address held by one namespace alone,
    /// with that namespace's label id (empty unless autopath is on).
    pub clients: Vec<(std::net::IpAddr, u32)>,
    /// The zone answers.
    pub zones: Arc<Zones>,
    /// Whether the first full sync is in this state.
    pub synced: bool,
    /// When the compiler produced it.
    pub created: std::time::Instant,
}

/// What travels to a core.
#[derive(Clone, Debug)]
pub enum Update {
    /// Replace everything.
    Reset(Arc<Snapshot>),
    /// Apply changes on top of revision `revision - 1`.
    Delta(Arc<Delta>),
}

impl Update {
    /// The revision this update brings a core to.
    pub fn revision(&self) -> u64 {
        match self {
            Update::Reset(snapshot) => snapshot.revision,
            Update::Delta(delta) => delta.revision,
        }
    }

    /// When the compiler produced it.
    pub fn created(&self) -> std::time::Instant {
        match self {
            Update::Reset(snapshot) => snapshot.created,
            Update::Delta(delta) => delta.created,
        }
    }
}
