//! The fan-out of revisioned updates ([`crate::update`]) to the serving cores.
//!
//! The vocabulary is the same from watch event to core: a core receives a
//! `Reset` (a whole snapshot) or a delta of `Upsert`/`Remove` changes. Each
//! carries a revision; a core ignores anything not newer than what it holds.
//! The hub asks for a snapshot (a function, such as the compiler's
//! `snapshot`) only when a core needs a `Reset`.
//!
//! Channels are bounded. If a core falls behind and its channel fills, the
//! hub stops sending it deltas and sends it a `Reset` as soon as there is
//! room, so a slow core never blocks the control plane or the other cores,
//! and never applies a delta on top of a state it did not have.

use crate::names::NameIndex;
use crate::update::{Delta, Snapshot, Update};
use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Revisions whose apply time a core remembers, for `explain`.
const APPLY_LOG: usize = 32;

/// What a core reports back, read by readiness checks, metrics and
/// `explain`.
#[derive(Debug, Default)]
pub struct CoreStatus {
    applied_revision: AtomicU64,
    synced: AtomicBool,
    names: AtomicU64,
    own_bytes: AtomicU64,
    /// The last [`APPLY_LOG`] revisions applied, each with when (µs since
    /// the Unix epoch), by revision modulo its length. Written by the core
    /// alone, read by the control plane.
    applied_log: [(AtomicU64, AtomicU64); APPLY_LOG],
}

/// When a core first held a revision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppliedAt {
    /// At this time (µs since the Unix epoch).
    At(u64),
    /// Before this time: its log has moved past the revision.
    Before(u64),
    /// Not yet.
    NotYet,
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
    /// Heap bytes the core holds for itself: its name changes over the
    /// index every core shares.
    pub fn own_bytes(&self) -> u64 {
        self.own_bytes.load(Ordering::Relaxed)
    }
    /// Called by the core after applying updates.
    pub fn record(&self, revision: u64, synced: bool, names: u64, own_bytes: u64) {
        if revision != self.applied_revision.load(Ordering::Relaxed) {
            let now_us = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as u64);
            let (logged, at) = &self.applied_log[(revision % APPLY_LOG as u64) as usize];
            // Time first: a reader that sees the revision sees its time.
            at.store(now_us, Ordering::Relaxed);
            logged.store(revision, Ordering::Release);
        }
        self.names.store(names, Ordering::Relaxed);
        self.own_bytes.store(own_bytes, Ordering::Relaxed);
        self.synced.store(synced, Ordering::Release);
        self.applied_revision.store(revision, Ordering::Release);
    }

    /// When the core first held `revision` (or a later one that it jumped
    /// to, by a Reset).
    pub fn applied_at(&self, revision: u64) -> AppliedAt {
        if self.applied_revision() < revision {
            return AppliedAt::NotYet;
        }
        let mut first: Option<(u64, u64)> = None;
        let mut oldest: Option<(u64, u64)> = None;
        for (logged, at) in &self.applied_log {
            let logged = logged.load(Ordering::Acquire);
            let at = at.load(Ordering::Relaxed);
            if logged == 0 {
                continue;
            }
            if logged >= revision && first.is_none_or(|(r, _)| logged < r) {
                first = Some((logged, at));
            }
            if oldest.is_none_or(|(r, _)| logged < r) {
                oldest = Some((logged, at));
            }
        }
        match (first, oldest) {
            // The log still reaches back to it (or to the jump over it).
            (Some((_, at)), Some((oldest, _))) if oldest <= revision => AppliedAt::At(at),
            (_, Some((_, at))) => AppliedAt::Before(at),
            _ => AppliedAt::Before(0),
        }
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
    /// Every name index shipped, until no core holds it: the hub drops it
    /// last, so a core never spends its time freeing an index (a hash
    /// table and a reference count per name) between queries.
    indexes: Vec<Arc<NameIndex>>,
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
            indexes: Vec::new(),
        }
    }

    /// Adds a core. It gets a `Reset` with the current state, from
    /// `snapshot`, first.
    pub fn subscribe(&mut self, snapshot: impl FnOnce() -> Snapshot) -> DeltaReceiver {
        let (sender, receiver) = bounded(self.capacity);
        let status = Arc::new(CoreStatus::default());
        let mut consumer = Consumer {
            sender,
            needs_reset: true,
            status: Arc::clone(&status),
        };
        let snapshot = Arc::new(snapshot());
        self.keep(&snapshot.names);
        send_reset(&mut consumer, &snapshot);
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

    /// Sends a delta to every core, or a `Reset` (from `snapshot`, taken at
    /// most once) to a core that fell behind. Cores whose receiving end is
    /// gone are dropped.
    pub fn publish(&mut self, delta: Delta, snapshot: impl FnOnce() -> Snapshot) {
        self.release_indexes();
        if let Some(index) = &delta.names {
            self.keep(index);
        }
        let update = Update::Delta(Arc::new(delta));
        let mut snapshot = Some(snapshot);
        let mut taken: Option<Arc<Snapshot>> = None;
        let indexes = &mut self.indexes;
        self.consumers.retain_mut(|consumer| {
            if consumer.needs_reset {
                if taken.is_none()
                    && let Some(make) = snapshot.take()
                {
                    let made = Arc::new(make());
                    keep_index(indexes, &made.names);
                    taken = Some(made);
                }
                let Some(reset) = &taken else {
                    return true;
                };
                return send_reset(consumer, reset);
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
    pub fn retry_resets(&mut self, snapshot: impl FnOnce() -> Snapshot) {
        if self.consumers.iter().all(|c| !c.needs_reset) {
            return;
        }
        self.release_indexes();
        let snapshot = Arc::new(snapshot());
        self.keep(&snapshot.names);
        self.consumers
            .retain_mut(|consumer| !consumer.needs_reset || send_reset(consumer, &snapshot));
    }

    /// Drops the name indexes no core holds any more; call it now and then.
    pub fn release_indexes(&mut self) {
        self.indexes.retain(|index| Arc::strong_count(index) > 1);
    }

    /// How many name indexes are held, by the hub or a core.
    pub fn indexes_held(&self) -> usize {
        self.indexes.len()
    }

    fn keep(&mut self, index: &Arc<NameIndex>) {
        keep_index(&mut self.indexes, index);
    }

    /// Whether any core is waiting for a `Reset`.
    pub fn resets_pending(&self) -> bool {
        self.consumers.iter().any(|c| c.needs_reset)
    }
}

fn keep_index(indexes: &mut Vec<Arc<NameIndex>>, index: &Arc<NameIndex>) {
    if !indexes.iter().any(|held| Arc::ptr_eq(held, index)) {
        indexes.push(Arc::clone(index));
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
