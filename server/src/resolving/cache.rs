//! The cache of forwarded answers: node-wide, pre-encoded, shared-nothing.
//!
//! Every core holds the same entries in its own table ([`CoreCache`]); an
//! entry's bytes ([`Stored`], a [`CachedAnswer`]) are built once and shared
//! by `Arc`, never written again. A hit is [`CachedAnswer::write_reply`]: a
//! copy and a patch, with no lock, parse or allocation.
//!
//! One upstream query per name per TTL for the whole node: each key has a
//! home core (its hash modulo the core count). A core that misses registers
//! the client as waiting and asks the home core, through the same kind of
//! channel and wake-up socket as cluster deltas; the home core makes one
//! upstream query per key however many cores and clients ask, and ships the
//! entry to every core. Waiting clients are answered when it arrives.
//! Replies that are not cached (truncated, REFUSED, no SOA, ...) go only to
//! the cores that asked, and are passed on once as they came.

use super::forward::{Fetched, Forwarded, Forwarder};
use super::resolver::Background;
use crate::operations::config::{self, StaleMode};
use crate::operations::metrics::CacheMetrics;
use crossbeam_channel::{Receiver, Sender};
use futures::channel::oneshot;
use kubewire_wire::{
    CacheKind, CachedAnswer, CheckedReply, MAX_CACHE_KEY, NameBuf, NotCached, Query, QueryBuf,
    Rcode, Transport, TtlPolicy, TtlView, cache_key,
};
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the cache does, fixed at start: shared by every core.
#[derive(Debug)]
pub struct CachePlan {
    /// How long entries live.
    pub policy: TtlPolicy,
    /// Most entries per core table.
    pub max_entries: usize,
    /// Most bytes per core table.
    pub max_bytes: usize,
    /// Prefetch, if on.
    pub prefetch: Option<Prefetch>,
    /// Serve-stale, if on.
    pub serve_stale: Option<ServeStale>,
    /// Hits show the stored TTLs, not aged.
    pub keep_ttl: bool,
    /// Names in these zones are never cached.
    pub cluster_zones: Vec<NameBuf>,
}

/// CoreDNS's `prefetch AMOUNT DURATION PERCENTAGE%`.
#[derive(Clone, Copy, Debug)]
pub struct Prefetch {
    /// Hits that make an entry popular.
    pub amount: u32,
    /// Hits further apart than this start the count again.
    pub window: Duration,
    /// Refresh when this share (percent) of the TTL is left.
    pub percent: u32,
}

/// RFC 8767 serve-stale.
#[derive(Clone, Copy, Debug)]
pub struct ServeStale {
    /// How long after expiry an entry may still be served.
    pub window: Duration,
    /// Ask the upstream first (verify), or answer stale at once.
    pub verify: bool,
    /// The TTL of a stale answer.
    pub ttl_s: u32,
}

impl CachePlan {
    /// The plan from `[cache]`, or `None` when caching is off.
    pub fn build(cache: &config::Cache, cluster_zones: &[config::DnsName]) -> Option<CachePlan> {
        if !cache.enabled {
            return None;
        }
        Some(CachePlan {
            policy: TtlPolicy {
                success_min_s: cache.min_ttl_s,
                success_max_s: cache.max_ttl_s,
                denial_min_s: cache.denial_min_ttl_s,
                denial_max_s: cache.denial_max_ttl_s,
                servfail_s: cache.servfail_ttl_s,
            },
            max_entries: cache.max_entries,
            max_bytes: cache.max_bytes,
            prefetch: (cache.prefetch_amount > 0).then(|| Prefetch {
                amount: cache.prefetch_amount,
                window: Duration::from_secs(u64::from(cache.prefetch_window_s)),
                percent: cache.prefetch_percent,
            }),
            serve_stale: (cache.serve_stale_s > 0).then(|| ServeStale {
                window: Duration::from_secs(u64::from(cache.serve_stale_s)),
                verify: cache.serve_stale_mode == StaleMode::Verify,
                ttl_s: cache.stale_ttl_s,
            }),
            keep_ttl: cache.keep_ttl,
            cluster_zones: cluster_zones.iter().map(|zone| *zone.name()).collect(),
        })
    }
}

/// An entry as every core holds it.
#[derive(Debug)]
pub struct Stored {
    /// The answer.
    pub answer: CachedAnswer,
    /// When it was built.
    pub stored_at: Instant,
    /// The index of the upstream whose reply it is.
    pub upstream: usize,
}

impl Stored {
    fn expires(&self) -> Instant {
        self.stored_at + Duration::from_secs(u64::from(self.answer.ttl_s()))
    }
}

/// What a home core found for the cores that asked.
#[derive(Debug)]
pub enum Resolution {
    /// An entry, stored by every core.
    Stored(Arc<Stored>),
    /// An upstream reply passed on once, not cached.
    Once(CheckedReply),
    /// No reply to pass on: answer stale if allowed, else with this RCODE.
    Failed(Rcode),
}

/// A message between cores.
#[derive(Debug)]
pub enum CacheMessage {
    /// Resolve this query for core `from` (a miss, or with `refresh` a
    /// prefetch or a stale entry's refresh).
    Ask {
        /// The asking core.
        from: usize,
        /// The client's query.
        query: Box<QueryBuf>,
        /// Ask the upstream even if the home core holds a fresh entry.
        refresh: bool,
    },
    /// What the home core holds for this query, for `explain`.
    Inspect {
        /// The query.
        query: Box<QueryBuf>,
        /// Where the answer goes.
        reply: oneshot::Sender<CacheView>,
    },
    /// The outcome for `key`.
    Resolved {
        /// The cache key.
        key: Box<[u8]>,
        /// What was found.
        resolution: Arc<Resolution>,
    },
}

/// Every core's inbox, and the socket that wakes it: shared by all cores.
#[derive(Debug)]
pub struct Mailboxes {
    senders: Vec<Sender<CacheMessage>>,
    wakers: Vec<UnixStream>,
    hasher: hashbrown::DefaultHashBuilder,
}

impl Mailboxes {
    /// Mailboxes for cores whose wake-up sockets are `wakers`; returns
    /// them and each core's inbox.
    pub fn new(wakers: Vec<UnixStream>) -> (Arc<Mailboxes>, Vec<Receiver<CacheMessage>>) {
        let (senders, receivers) = wakers
            .iter()
            .map(|_| crossbeam_channel::unbounded())
            .unzip();
        let mailboxes = Mailboxes {
            senders,
            wakers,
            hasher: hashbrown::DefaultHashBuilder::default(),
        };
        (Arc::new(mailboxes), receivers)
    }

    fn send(&self, core: usize, message: CacheMessage) {
        let (Some(sender), Some(waker)) = (self.senders.get(core), self.wakers.get(core)) else {
            return;
        };
        if sender.send(message).is_ok() {
            // A full socket buffer means a wake-up is already pending.
            let _ = (&*waker).write(&[1]);
        }
    }

    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    /// Asks `query`'s home core what it holds (for `explain`); the answer
    /// comes on the returned channel, or it closes if the core is gone.
    pub fn inspect(&self, query: &Query<'_>) -> oneshot::Receiver<CacheView> {
        let mut buf = [0u8; MAX_CACHE_KEY];
        let home = self.home(self.hash(cache_key(query, &mut buf)));
        let (reply, receiver) = oneshot::channel();
        self.send(
            home,
            CacheMessage::Inspect {
                query: Box::new(query.to_buf()),
                reply,
            },
        );
        receiver
    }

    fn home(&self, hash: u64) -> usize {
        (hash % self.senders.len().max(1) as u64) as usize
    }
}

/// What a home core holds for one query, for `explain`.
#[derive(Debug)]
pub struct CacheView {
    /// The home core.
    pub core: usize,
    /// Its entry, if any.
    pub entry: Option<EntryView>,
    /// An upstream query for it is under way.
    pub fetching: bool,
    /// The upstreams' health as this core sees it.
    pub upstreams: Vec<super::forward::UpstreamHealth>,
}

/// One cache entry, as `explain` shows it.
#[derive(Debug)]
pub struct EntryView {
    /// The entry.
    pub stored: Arc<Stored>,
    /// Seconds since it was stored.
    pub age_s: u64,
    /// Seconds of TTL left; negative once expired.
    pub ttl_left_s: i64,
    /// Expired, and still served under serve-stale.
    pub stale: bool,
    /// Prefetch: hits in a row within the window, and whether a refresh is
    /// under way.
    pub hits: u32,
    /// A refresh (prefetch or stale) is under way.
    pub refreshing: bool,
    /// A client's query now would go upstream (a miss, or a stale entry
    /// that is verified first).
    pub would_go_upstream: bool,
    /// The reply a client gets from it now (over TCP, so never truncated),
    /// unless it goes upstream.
    pub reply: Option<Vec<u8>>,
}

/// One entry in a core's table.
#[derive(Debug)]
struct Slot {
    key: Box<[u8]>,
    hash: u64,
    stored: Arc<Stored>,
    /// Hit since the eviction hand last passed (CLOCK).
    used: bool,
    /// Prefetch: hits in a row, each within the window of the last.
    hits: u32,
    last_hit: Instant,
    /// A refresh has been asked for and not yet come back.
    refreshing: bool,
}

impl Slot {
    fn bytes(&self) -> usize {
        std::mem::size_of::<Slot>() + self.key.len() + self.stored.answer.stored_bytes()
    }
}

/// A slot found by [`CoreCache::likely`]: what a hit on it reads, level by
/// level, so that a batch's lookups fetch each level for all its queries
/// before reading the next.
#[derive(Clone, Copy, Debug)]
pub struct LikelySlot<'a>(&'a Slot);

impl LikelySlot<'_> {
    /// The slot itself, in the table's buckets. Taking it reads nothing.
    #[inline]
    pub fn slot_address(self) -> *const u8 {
        std::ptr::from_ref(self.0).cast()
    }

    /// Reads the slot and fetches the key's first line (most keys are
    /// shorter) and the `Stored` block it points at.
    #[inline]
    pub fn fetch_key_and_stored(self) {
        crate::prefetch::prefetch(self.0.key.as_ptr(), 1);
        crate::prefetch::prefetch(Arc::as_ptr(&self.0.stored).cast(), 2);
    }

    /// Reads the `Stored` block and fetches the records and TTL offsets a
    /// hit copies.
    #[inline]
    pub fn fetch_records(self) {
        let block = self.0.stored.answer.stored_block();
        crate::prefetch::prefetch(block.as_ptr(), crate::prefetch::lines(block.len()));
    }
}

/// What [`CoreCache::answer`] did.
#[derive(Clone, Copy, Debug)]
pub enum Lookup {
    /// A reply of this length and RCODE is in the buffer (from an expired
    /// entry, too, while serve_stale allows it).
    Hit {
        /// Its length.
        len: usize,
        /// Its RCODE.
        rcode: Rcode,
    },
    /// Not cached (or expired): resolve it.
    Miss,
}

/// One core's cache. Owned by the core; see the module docs.
#[derive(Debug)]
pub struct CoreCache {
    plan: Arc<CachePlan>,
    core: usize,
    mail: Arc<Mailboxes>,
    inbox: Receiver<CacheMessage>,
    table: hashbrown::HashTable<Slot>,
    /// Keys in insertion order, for the eviction hand.
    order: VecDeque<(u64, Box<[u8]>)>,
    bytes: usize,
    counts: [usize; 3],
    /// Clients on this core waiting for a key.
    waiting: HashMap<Box<[u8]>, Vec<oneshot::Sender<Arc<Resolution>>>>,
    /// As home core: keys being fetched, and which cores asked.
    fetching: HashMap<Box<[u8]>, Vec<usize>>,
    metrics: Option<Arc<CacheMetrics>>,
}

fn kind_index(kind: CacheKind) -> usize {
    match kind {
        CacheKind::Success => 0,
        CacheKind::Denial => 1,
        CacheKind::ServFail => 2,
    }
}

impl CoreCache {
    /// Core `core`'s cache.
    pub fn new(
        plan: Arc<CachePlan>,
        core: usize,
        mail: Arc<Mailboxes>,
        inbox: Receiver<CacheMessage>,
        metrics: Option<Arc<CacheMetrics>>,
    ) -> CoreCache {
        CoreCache {
            plan,
            core,
            mail,
            inbox,
            table: hashbrown::HashTable::new(),
            order: VecDeque::new(),
            bytes: 0,
            counts: [0; 3],
            waiting: HashMap::new(),
            fetching: HashMap::new(),
            metrics,
        }
    }

    /// The query path: writes a hit into `out`, or says to resolve.
    #[inline]
    pub fn answer(
        &mut self,
        query: &Query<'_>,
        now: Instant,
        transport: Transport,
        out: &mut [u8],
    ) -> Lookup {
        if let Some(metrics) = &self.metrics {
            metrics.request();
        }
        self.lookup(query, now, transport, out)
    }

    /// [`CoreCache::answer`] without counting the request: for a second
    /// look at a query already counted.
    #[inline]
    fn lookup(
        &mut self,
        query: &Query<'_>,
        now: Instant,
        transport: Transport,
        out: &mut [u8],
    ) -> Lookup {
        let mut buf = [0u8; MAX_CACHE_KEY];
        let key = cache_key(query, &mut buf);
        // Fields borrowed apart: the slot is read in place, never cloned
        // (an `Arc` clone per hit would bounce its count between cores).
        let CoreCache {
            plan,
            core,
            mail,
            table,
            metrics,
            ..
        } = self;
        let hash = mail.hash(key);
        let Some(slot) = table.find_mut(hash, |s| &*s.key == key) else {
            return Lookup::Miss;
        };
        let expires = slot.stored.expires();
        let (view, refresh) = if now < expires {
            slot.used = true;
            let refresh = plan.prefetch.is_some_and(|p| {
                if now.saturating_duration_since(slot.last_hit) > p.window {
                    slot.hits = 0;
                }
                slot.hits = slot.hits.saturating_add(1);
                slot.last_hit = now;
                let ttl = u64::from(slot.stored.answer.ttl_s());
                // At least a second before expiry, as CoreDNS.
                let threshold = Duration::from_secs((ttl * u64::from(p.percent)).div_ceil(100));
                slot.hits >= p.amount && !slot.refreshing && expires - now <= threshold
            });
            (ttl_view(plan.keep_ttl, &slot.stored, now), refresh)
        } else {
            match plan.serve_stale {
                Some(stale) if !stale.verify && now < expires + stale.window => {
                    if let Some(metrics) = metrics {
                        metrics.served_stale();
                    }
                    (TtlView::Fixed(stale.ttl_s), !slot.refreshing)
                }
                Some(stale) if now < expires + stale.window => return Lookup::Miss,
                _ => {
                    self.remove(hash, key);
                    return Lookup::Miss;
                }
            }
        };
        let answer = &slot.stored.answer;
        let Ok(len) = answer.write_reply(query, view, transport, out) else {
            return Lookup::Miss;
        };
        if let Some(metrics) = metrics {
            metrics.hit(answer.kind());
            if refresh {
                metrics.prefetch();
            }
        }
        let rcode = answer.rcode();
        if refresh {
            slot.refreshing = true;
            ask(mail, *core, hash, Box::new(query.to_buf()), true);
        }
        Lookup::Hit { len, rcode }
    }

    /// What this core holds for `query`, for `explain`.
    fn inspect(&self, query: &Query<'_>, forwarder: &Forwarder) -> CacheView {
        let mut buf = [0u8; MAX_CACHE_KEY];
        let key = cache_key(query, &mut buf);
        let now = Instant::now();
        let entry = self
            .table
            .find(self.mail.hash(key), |s| &*s.key == key)
            .map(|slot| {
                let expires = slot.stored.expires();
                let fresh = now < expires;
                let stale_window = self.plan.serve_stale.map(|s| (s.window, s.verify));
                let stale =
                    !fresh && stale_window.is_some_and(|(window, _)| now < expires + window);
                let view = match self.plan.serve_stale {
                    Some(s) if stale => TtlView::Fixed(s.ttl_s),
                    _ => ttl_view(self.plan.keep_ttl, &slot.stored, now),
                };
                let mut out = vec![0u8; kubewire_wire::MAX_MESSAGE];
                let reply = (fresh || stale)
                    .then(|| {
                        slot.stored
                            .answer
                            .write_reply(query, view, Transport::Tcp, &mut out)
                    })
                    .and_then(Result::ok)
                    .map(|len| out[..len].to_vec());
                EntryView {
                    reply,
                    stored: Arc::clone(&slot.stored),
                    age_s: now
                        .saturating_duration_since(slot.stored.stored_at)
                        .as_secs(),
                    ttl_left_s: if fresh {
                        (expires - now).as_secs() as i64
                    } else {
                        -(now.saturating_duration_since(expires).as_secs() as i64)
                    },
                    stale,
                    hits: slot.hits,
                    refreshing: slot.refreshing,
                    // Fresh, or stale and served at once: from the cache.
                    would_go_upstream: !(fresh
                        || (stale && stale_window.is_some_and(|(_, verify)| !verify))),
                }
            });
        CacheView {
            core: self.core,
            entry,
            fetching: self.fetching.contains_key(key),
            upstreams: forwarder.health(),
        }
    }

    /// The hash `query`'s entry is filed under, for [`CoreCache::likely`].
    #[inline]
    pub fn key_hash(&self, query: &Query<'_>) -> u64 {
        let mut buf = [0u8; MAX_CACHE_KEY];
        self.mail.hash(cache_key(query, &mut buf))
    }

    /// Most likely the entry filed under `hash` (from
    /// [`CoreCache::key_hash`]), found by the table's control bytes alone, as
    /// `AnswerTable::likely_entry` finds a name: for prefetching what a hit
    /// will read, see the serving cores' batch warm-up. It may be another key's
    /// entry, so it never answers.
    #[inline]
    pub fn likely(&self, hash: u64) -> Option<LikelySlot<'_>> {
        self.table.find(hash, |_| true).map(LikelySlot)
    }

    /// A stale entry for `key`, within the serve-stale window.
    fn stale(&self, key: &[u8], now: Instant) -> Option<Arc<Stored>> {
        let window = self.plan.serve_stale?.window;
        let hash = self.mail.hash(key);
        let slot = self.table.find(hash, |s| &*s.key == key)?;
        (now < slot.stored.expires() + window && slot.stored.answer.kind() != CacheKind::ServFail)
            .then(|| Arc::clone(&slot.stored))
    }

    fn remove(&mut self, hash: u64, key: &[u8]) -> Option<Slot> {
        let slot = self
            .table
            .find_entry(hash, |s| &*s.key == key)
            .ok()?
            .remove()
            .0;
        self.bytes -= slot.bytes();
        self.counts[kind_index(slot.stored.answer.kind())] -= 1;
        Some(slot)
    }

    /// Stores an entry, evicting as the limits require.
    fn insert(&mut self, key: Box<[u8]>, stored: Arc<Stored>, now: Instant) {
        let hash = self.mail.hash(&key);
        let refreshed = self.remove(hash, &key).is_some();
        let slot = Slot {
            key,
            hash,
            stored,
            used: false,
            hits: 0,
            last_hit: now,
            refreshing: false,
        };
        self.bytes += slot.bytes();
        self.counts[kind_index(slot.stored.answer.kind())] += 1;
        if !refreshed {
            self.order.push_back((hash, slot.key.clone()));
        }
        self.table.insert_unique(hash, slot, |s| s.hash);
        self.evict();
        self.publish_counts();
    }

    /// CLOCK: the oldest key goes, unless it was hit since the hand last
    /// passed; expired entries (past any stale window) go first in effect,
    /// as nothing hits them.
    fn evict(&mut self) {
        while self.table.len() > self.plan.max_entries || self.bytes > self.plan.max_bytes {
            let Some((hash, key)) = self.order.pop_front() else {
                break;
            };
            let Some(slot) = self.table.find_mut(hash, |s| s.key == key) else {
                continue;
            };
            if slot.used {
                slot.used = false;
                self.order.push_back((hash, key));
                continue;
            }
            if let Some(slot) = self.remove(hash, &key)
                && let Some(metrics) = &self.metrics
            {
                metrics.evicted(slot.stored.answer.kind());
            }
        }
        // Keys removed other ways linger in the queue: rebuild it when
        // they outnumber the live ones.
        if self.order.len() > 2 * self.table.len() + 64 {
            self.order = self.table.iter().map(|s| (s.hash, s.key.clone())).collect();
        }
    }

    fn publish_counts(&self) {
        if let Some(metrics) = &self.metrics {
            metrics.set_entries(self.counts[0], self.counts[1] + self.counts[2], self.bytes);
        }
    }

    /// Handles this core's messages: called when the core is woken.
    pub fn drain(
        this: &Rc<RefCell<CoreCache>>,
        forwarder: &Rc<Forwarder>,
        background: &Rc<Cell<usize>>,
    ) {
        loop {
            let message = this.borrow().inbox.try_recv();
            let Ok(message) = message else { break };
            match message {
                CacheMessage::Ask {
                    from,
                    query,
                    refresh,
                } => Self::on_ask(this, forwarder, background, from, query, refresh),
                CacheMessage::Resolved { key, resolution } => {
                    this.borrow_mut().on_resolved(key, &resolution);
                }
                CacheMessage::Inspect { query, reply } => {
                    let view = this.borrow().inspect(&query.query(), forwarder);
                    let _ = reply.send(view);
                }
            }
        }
    }

    /// As home core: resolves `query` for core `from`, once per key however
    /// many ask.
    fn on_ask(
        this: &Rc<RefCell<CoreCache>>,
        forwarder: &Rc<Forwarder>,
        background: &Rc<Cell<usize>>,
        from: usize,
        query: Box<QueryBuf>,
        refresh: bool,
    ) {
        let mut buf = [0u8; MAX_CACHE_KEY];
        let key: Box<[u8]> = cache_key(&query.query(), &mut buf).into();
        let mut cache = this.borrow_mut();
        let hash = cache.mail.hash(&key);
        let now = Instant::now();
        if !refresh
            && let Some(slot) = cache.table.find(hash, |s| s.key == key)
            && now < slot.stored.expires()
        {
            // Filled while the ask travelled.
            let resolution = Arc::new(Resolution::Stored(Arc::clone(&slot.stored)));
            cache.deliver(from, key, resolution);
            return;
        }
        if !cache.claim_fetch(&key, from) {
            return;
        }
        drop(cache);
        let this = Rc::clone(this);
        let forwarder = Rc::clone(forwarder);
        let background = Background::start(background);
        glommio::spawn_local(async move {
            let _background = background;
            let fetched = forwarder.fetch(&query.query()).await;
            this.borrow_mut().finish(key, fetched);
        })
        .detach();
    }

    /// As home core: turns what the upstream said into a resolution and
    /// sends it: an entry to every core, anything else to the askers.
    fn finish(&mut self, key: Box<[u8]>, fetched: Fetched) {
        let askers = self.fetching.remove(&key).unwrap_or_default();
        let resolution = match fetched {
            Fetched::Failed(rcode) => Resolution::Failed(rcode),
            Fetched::Reply(reply, upstream) => match self.build(&key, &reply, upstream) {
                Ok(stored) => Resolution::Stored(Arc::new(stored)),
                Err(BuildFailure::KeepStale) => Resolution::Failed(Rcode::SERVFAIL),
                Err(BuildFailure::Not(reason)) => {
                    if let Some(metrics) = &self.metrics
                        && matches!(reason, NotCached::Malformed | NotCached::Unhandled)
                    {
                        metrics.dropped();
                    }
                    tracing::trace!(%reason, "forwarded reply not cached");
                    Resolution::Once(reply)
                }
            },
        };
        let resolution = Arc::new(resolution);
        let everyone = matches!(*resolution, Resolution::Stored(_));
        for core in 0..self.mail.senders.len() {
            if core == self.core || !(everyone || askers.contains(&core)) {
                continue;
            }
            self.mail.send(
                core,
                CacheMessage::Resolved {
                    key: key.clone(),
                    resolution: Arc::clone(&resolution),
                },
            );
        }
        self.on_resolved(key, &resolution);
    }

    fn build(
        &self,
        key: &[u8],
        reply: &CheckedReply,
        upstream: usize,
    ) -> Result<Stored, BuildFailure> {
        let zones = &self.plan.cluster_zones;
        let answer = CachedAnswer::from_upstream(
            &reply.view(),
            reply.question(),
            &self.plan.policy,
            |name| zones.iter().any(|zone| name.ends_with(zone)),
        )?;
        // With serve-stale, an upstream's SERVFAIL does not push out a good
        // entry: the stale one answers instead.
        if answer.kind() == CacheKind::ServFail
            && self.plan.serve_stale.is_some()
            && self
                .table
                .find(self.mail.hash(key), |s| &*s.key == key)
                .is_some_and(|s| s.stored.answer.kind() != CacheKind::ServFail)
        {
            return Err(BuildFailure::KeepStale);
        }
        Ok(Stored {
            answer,
            stored_at: Instant::now(),
            upstream,
        })
    }

    fn deliver(&self, core: usize, key: Box<[u8]>, resolution: Arc<Resolution>) {
        if core == self.core {
            // Cannot happen: a core finds its own fresh entries itself.
            return;
        }
        self.mail
            .send(core, CacheMessage::Resolved { key, resolution });
    }

    /// Stores an entry that arrived, and answers the clients waiting for it.
    fn on_resolved(&mut self, key: Box<[u8]>, resolution: &Arc<Resolution>) {
        let waiters = self.waiting.remove(&key);
        match &**resolution {
            Resolution::Stored(stored) => self.insert(key, Arc::clone(stored), Instant::now()),
            Resolution::Once(_) | Resolution::Failed(_) => {
                // A refresh that failed may be asked for again.
                let hash = self.mail.hash(&key);
                if let Some(slot) = self.table.find_mut(hash, |s| s.key == key) {
                    slot.refreshing = false;
                }
            }
        }
        for waiter in waiters.into_iter().flatten() {
            let _ = waiter.send(Arc::clone(resolution));
        }
    }

    /// Drops the waiters for `key` whose clients stopped waiting; the key
    /// with them if none is left.
    fn forget_abandoned(&mut self, key: &[u8]) {
        if let Some(waiters) = self.waiting.get_mut(key) {
            waiters.retain(|waiter| !waiter.is_canceled());
            if waiters.is_empty() {
                self.waiting.remove(key);
            }
        }
    }

    /// Registers a client waiting for `key`; the first also asks the home
    /// core. `None` when too many keys are already waited for.
    ///
    /// When this core is the key's home and nobody fetches it yet, the
    /// caller is told to fetch it itself ([`Waiting::fetch_here`]) and then
    /// call [`CoreCache::finish`], which answers every waiter, the caller
    /// included: no task of its own, and no message, for the commonest miss.
    fn wait(
        this: &Rc<RefCell<CoreCache>>,
        key: &[u8],
        query: &Query<'_>,
        max_concurrent: usize,
    ) -> Option<Waiting> {
        let (sender, receiver) = oneshot::channel();
        let mut cache = this.borrow_mut();
        let mut fetch_here = false;
        if let Some(waiters) = cache.waiting.get_mut(key) {
            waiters.push(sender);
        } else if cache.waiting.len() >= max_concurrent {
            return None;
        } else {
            cache.waiting.insert(key.into(), vec![sender]);
            let hash = cache.mail.hash(key);
            let core = cache.core;
            if cache.mail.home(hash) == core {
                // Unless another core asked for it first: its fetch answers
                // us too.
                fetch_here = cache.claim_fetch(key, core);
            } else {
                ask(&cache.mail, core, hash, Box::new(query.to_buf()), false);
            }
        }
        Some(Waiting {
            receiver,
            fetch_here,
        })
    }

    /// As home core: records that core `asker` waits for `key`'s fetch;
    /// true if nobody fetches it yet, and the caller is to.
    fn claim_fetch(&mut self, key: &[u8], asker: usize) -> bool {
        if let Some(askers) = self.fetching.get_mut(key) {
            if !askers.contains(&asker) {
                askers.push(asker);
            }
            return false;
        }
        self.fetching.insert(key.into(), vec![asker]);
        true
    }
}

/// A client's wait for a key's resolution.
struct Waiting {
    receiver: oneshot::Receiver<Arc<Resolution>>,
    /// This core is the key's home and nobody fetches it yet: the waiter
    /// fetches it, then calls [`CoreCache::finish`].
    fetch_here: bool,
}

/// Why an upstream reply became no entry.
#[derive(Debug)]
enum BuildFailure {
    /// Passed on once.
    Not(NotCached),
    /// An upstream SERVFAIL while a good entry is held: the stale entry
    /// answers instead.
    KeepStale,
}

impl From<NotCached> for BuildFailure {
    fn from(reason: NotCached) -> BuildFailure {
        BuildFailure::Not(reason)
    }
}

/// Asks the home core of the key hashed to `hash` to resolve `query`, for
/// core `from`.
fn ask(mail: &Mailboxes, from: usize, hash: u64, query: Box<QueryBuf>, refresh: bool) {
    mail.send(
        mail.home(hash),
        CacheMessage::Ask {
            from,
            query,
            refresh,
        },
    );
}

/// How a fresh hit's TTLs are written.
fn ttl_view(keep_ttl: bool, stored: &Stored, now: Instant) -> TtlView {
    if keep_ttl {
        return TtlView::Aged(0);
    }
    let age = now.saturating_duration_since(stored.stored_at).as_secs();
    TtlView::Aged(u32::try_from(age).unwrap_or(u32::MAX))
}

/// The slow path of a cached name: waits for the home core's resolution
/// and answers from it.
pub async fn resolve(
    cache: &Rc<RefCell<CoreCache>>,
    forwarder: &Rc<Forwarder>,
    query: &Query<'_>,
    transport: Transport,
) -> Option<Forwarded> {
    let mut buffer = vec![0u8; super::forward::reply_buffer(transport, kubewire_wire::MAX_MESSAGE)];
    // Filled since the fast path missed?
    if let Lookup::Hit { len, rcode } =
        cache
            .borrow_mut()
            .lookup(query, Instant::now(), transport, &mut buffer)
    {
        buffer.truncate(len);
        return Some(Forwarded {
            reply: buffer,
            rcode,
        });
    }
    let mut buf = [0u8; MAX_CACHE_KEY];
    let key = cache_key(query, &mut buf);
    let Some(waiting) = CoreCache::wait(cache, key, query, forwarder.max_concurrent()) else {
        return forwarder.reject_over_limit(query, transport);
    };
    let resolution = if waiting.fetch_here {
        // The fetch ends by its own deadlines, and `finish` answers every
        // waiter, this one first among them.
        let fetched = forwarder.fetch(query).await;
        cache.borrow_mut().finish(key.into(), fetched);
        waiting.receiver.await.ok()
    } else {
        // Another core fetches: a message lost on the way must not hold the
        // client forever.
        let budget = forwarder.longest_fetch() + Duration::from_secs(1);
        futures_lite::future::or(async { waiting.receiver.await.ok() }, async {
            glommio::timer::sleep(budget).await;
            None
        })
        .await
    };
    if resolution.is_none() {
        // Nothing came: forget the clients that gave up, so that the next
        // query for the key asks again instead of joining a dead wait.
        cache.borrow_mut().forget_abandoned(key);
    }
    let now = Instant::now();
    let failed = match resolution.as_deref() {
        Some(Resolution::Stored(stored)) => {
            let view = ttl_view(cache.borrow().plan.keep_ttl, stored, now);
            let len = stored
                .answer
                .write_reply(query, view, transport, &mut buffer)
                .ok()?;
            buffer.truncate(len);
            return Some(Forwarded {
                reply: buffer,
                rcode: stored.answer.rcode(),
            });
        }
        Some(Resolution::Once(reply)) => return forwarder.client_reply(query, reply, transport),
        Some(Resolution::Failed(rcode)) => *rcode,
        None => Rcode::SERVFAIL,
    };
    let cache = cache.borrow();
    if let (Some(stale), Some(serve)) = (cache.stale(key, now), cache.plan.serve_stale) {
        if let Some(metrics) = &cache.metrics {
            metrics.served_stale();
        }
        let len = stale
            .answer
            .write_reply(query, TtlView::Fixed(serve.ttl_s), transport, &mut buffer)
            .ok()?;
        buffer.truncate(len);
        return Some(Forwarded {
            reply: buffer,
            rcode: stale.answer.rcode(),
        });
    }
    forwarder.fixed(query, transport, failed)
}
