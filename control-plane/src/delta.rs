//! Revisioned deltas, and their fan-out to the serving cores.
//!
//! The vocabulary is the same from watch event to core: a core receives a
//! `Reset` (a whole snapshot) or a delta of `Upsert`/`Remove` changes. Each
//! carries a revision; a core ignores anything not newer than what it holds.
//!
//! Channels are bounded. If a core falls behind and its channel fills, the
//! hub stops sending it deltas and sends it a `Reset` as soon as there is
//! room, so a slow core never blocks the control plane or the other cores,
//! and never applies a delta on top of a state it did not have.

use crate::compiler::Compiler;
use crate::entry::{NameEntry, Zones};
use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

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
    /// Remove the entry with this lowercase wire key.
    Remove(Box<[u8]>),
    /// A namespace label (lowercase) gets an id for [`PodAddress`]es. Ids
    /// are never reused, and come before the first address that uses them.
    PodNamespace(u32, Arc<[u8]>),
    /// A pod address now answers (`verified` pod mode).
    UpsertPod(PodAddress),
    /// A pod address no longer answers.
    RemovePod(PodAddress),
}

/// The changes between revision `revision - 1` and `revision`.
#[derive(Clone, Debug)]
pub struct Delta {
    /// The revision this delta brings a core to.
    pub revision: u64,
    /// Name changes.
    pub changes: Vec<Change>,
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
    /// Every entry.
    pub entries: Vec<NameEntry>,
    /// Every namespace label id.
    pub pod_namespaces: Vec<(u32, Arc<[u8]>)>,
    /// Every verified pod address (empty unless pod mode is `verified`).
    pub pods: Vec<PodAddress>,
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

/// What a core reports back, read by readiness checks and metrics.
#[derive(Debug, Default)]
pub struct CoreStatus {
    applied_revision: AtomicU64,
    synced: AtomicBool,
    names: AtomicU64,
}

impl CoreStatus {
    /// The revision the core has applied.
    pub fn applied_revision(&self) -> u64 {
        self.applied_revision.load(Ordering::Acquire)
    }
    /// Whether the core holds the first full sync.
    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }
    /// Names in the core's table.
    pub fn names(&self) -> u64 {
        self.names.load(Ordering::Relaxed)
    }
    /// Called by the core after applying updates.
    pub fn record(&self, revision: u64, synced: bool, names: u64) {
        self.names.store(names, Ordering::Relaxed);
        self.synced.store(synced, Ordering::Release);
        self.applied_revision.store(revision, Ordering::Release);
    }
}

struct Consumer {
    sender: Sender<Update>,
    needs_reset: bool,
    status: Arc<CoreStatus>,
}

/// Sends each delta to every core. Owned by the control plane.
pub struct DeltaHub {
    consumers: Vec<Consumer>,
    capacity: usize,
}

impl std::fmt::Debug for DeltaHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeltaHub")
            .field("consumers", &self.consumers.len())
            .finish()
    }
}

/// A core's end of the hub.
#[derive(Debug)]
pub struct DeltaReceiver {
    receiver: Receiver<Update>,
    status: Arc<CoreStatus>,
}

impl DeltaReceiver {
    /// The channel, for cores that want to block or select on it.
    pub fn receiver(&self) -> &Receiver<Update> {
        &self.receiver
    }
    /// This core's status, shared with the control plane.
    pub fn status(&self) -> &Arc<CoreStatus> {
        &self.status
    }
}

impl DeltaHub {
    /// A hub whose per-core channels hold `capacity` updates.
    pub fn new(capacity: usize) -> DeltaHub {
        DeltaHub {
            consumers: Vec::new(),
            capacity: capacity.max(1),
        }
    }

    /// Adds a core. It gets a `Reset` with the current state first.
    pub fn subscribe(&mut self, compiler: &Compiler) -> DeltaReceiver {
        let (sender, receiver) = bounded(self.capacity);
        let status = Arc::new(CoreStatus::default());
        let mut consumer = Consumer {
            sender,
            needs_reset: true,
            status: Arc::clone(&status),
        };
        send_reset(&mut consumer, &Arc::new(compiler.snapshot()));
        self.consumers.push(consumer);
        DeltaReceiver { receiver, status }
    }

    /// The statuses of every core.
    pub fn statuses(&self) -> impl Iterator<Item = &Arc<CoreStatus>> {
        self.consumers.iter().map(|c| &c.status)
    }

    /// Whether every core has applied at least `revision` and holds the
    /// first full sync.
    pub fn all_applied(&self, revision: u64) -> bool {
        !self.consumers.is_empty()
            && self
                .consumers
                .iter()
                .all(|c| c.status.synced() && c.status.applied_revision() >= revision)
    }

    /// Sends a delta to every core, or a `Reset` to a core that fell behind.
    /// Cores whose receiving end is gone are dropped.
    pub fn publish(&mut self, delta: Delta, compiler: &Compiler) {
        let update = Update::Delta(Arc::new(delta));
        let mut snapshot: Option<Arc<Snapshot>> = None;
        self.consumers.retain_mut(|consumer| {
            if consumer.needs_reset {
                let snapshot = snapshot.get_or_insert_with(|| Arc::new(compiler.snapshot()));
                return send_reset(consumer, snapshot);
            }
            match consumer.sender.try_send(update.clone()) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    tracing::debug!("a core fell behind; it will get a Reset");
                    consumer.needs_reset = true;
                    true
                }
                Err(TrySendError::Disconnected(_)) => false,
            }
        });
    }

    /// Retries the `Reset` of cores that fell behind; call it now and then.
    pub fn retry_resets(&mut self, compiler: &Compiler) {
        if self.consumers.iter().all(|c| !c.needs_reset) {
            return;
        }
        let snapshot = Arc::new(compiler.snapshot());
        self.consumers
            .retain_mut(|consumer| !consumer.needs_reset || send_reset(consumer, &snapshot));
    }

    /// Whether any core is waiting for a `Reset`.
    pub fn resets_pending(&self) -> bool {
        self.consumers.iter().any(|c| c.needs_reset)
    }
}

/// Tries to send a Reset; returns false if the core is gone.
fn send_reset(consumer: &mut Consumer, snapshot: &Arc<Snapshot>) -> bool {
    match consumer
        .sender
        .try_send(Update::Reset(Arc::clone(snapshot)))
    {
        Ok(()) => {
            consumer.needs_reset = false;
            true
        }
        Err(TrySendError::Full(_)) => true,
        Err(TrySendError::Disconnected(_)) => false,
    }
}
