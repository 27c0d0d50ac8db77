//! `kubewire top`: who makes the DNS traffic, from a sample of it.
//!
//! Each core counts one query in [`SAMPLE_ONE_IN`] (picked at random, so
//! that a periodic pattern of queries cannot hide from the sample) in
//! space-saving sketches ([`Sketch`]) of [`TOP_KEYS`] keys each: query
//! names, client namespaces, clients that are no known pod, and NXDOMAIN
//! names split into search-path misses and the rest. Memory is fixed
//! whatever the traffic: a key is held inline, up to a DNS name's 255
//! bytes, so counting never allocates. A space-saving count is over by at
//! most the sketch's total over its size, and never under.
//!
//! The sketches cover a window of [`WINDOW`]. Once a second a core copies
//! them to its [`Published`] slot (a lock taken once a second, never per
//! query); the control plane merges the slots on request and for the
//! metrics' top-10 namespaces.
//!
//! A search-path miss is an NXDOMAIN name under `<ns>.svc.<zone>`,
//! `svc.<zone>` or `<zone>` whose labels before that suffix hold a dot:
//! what a pod's resolver sends for a dotted name before trying it as given.

use kubewire_answer::AnswerTable;
use kubewire_wire::{NameBuf, Rcode};
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Arc;
// Taken once a second by a core's publishing task and by debug requests
// and scrapes; never per query (see the module docs).
#[allow(clippy::disallowed_types)]
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keys each sketch holds.
pub const TOP_KEYS: usize = 64;
/// One query in this many is counted.
pub const SAMPLE_ONE_IN: u32 = 16;
/// How long a window of counts lasts.
pub const WINDOW: Duration = Duration::from_secs(60);
/// How often a core publishes its counts.
pub const PUBLISH_EVERY: Duration = Duration::from_secs(1);
/// The longest key: a DNS name in wire form.
const MAX_KEY: usize = 255;

/// A key held inline.
#[derive(Clone, Copy)]
struct Key {
    len: u8,
    bytes: [u8; MAX_KEY],
}

impl Key {
    fn new(bytes: &[u8]) -> Key {
        let len = bytes.len().min(MAX_KEY);
        let mut key = Key {
            len: len as u8,
            bytes: [0; MAX_KEY],
        };
        key.bytes[..len].copy_from_slice(&bytes[..len]);
        key
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// One counted key.
#[derive(Clone, Copy)]
struct Slot {
    key: Key,
    count: u64,
    /// What the count may be over by (the evicted count it took over).
    error: u64,
    /// Of `count`, the search-path misses.
    misses: u64,
}

/// A space-saving sketch of [`TOP_KEYS`] keys.
pub struct Sketch {
    slots: Vec<Slot>,
    index: hashbrown::HashTable<u8>,
    hasher: hashbrown::DefaultHashBuilder,
    total: u64,
}

impl std::fmt::Debug for Sketch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sketch")
            .field("keys", &self.slots.len())
            .field("total", &self.total)
            .finish()
    }
}

impl Default for Sketch {
    fn default() -> Sketch {
        Sketch {
            slots: Vec::with_capacity(TOP_KEYS),
            index: hashbrown::HashTable::with_capacity(TOP_KEYS),
            hasher: hashbrown::DefaultHashBuilder::default(),
            total: 0,
        }
    }
}

impl Sketch {
    /// Counts `key` once; `miss` also counts it as a search-path miss.
    pub fn add(&mut self, key: &[u8], miss: bool) {
        let key = &key[..key.len().min(MAX_KEY)];
        self.total += 1;
        let hash = self.hasher.hash_one(key);
        let slots = &self.slots;
        if let Some(&at) = self
            .index
            .find(hash, |&i| slots[usize::from(i)].key.as_bytes() == key)
        {
            let slot = &mut self.slots[usize::from(at)];
            slot.count += 1;
            slot.misses += u64::from(miss);
            return;
        }
        let fresh = Slot {
            key: Key::new(key),
            count: 1,
            error: 0,
            misses: u64::from(miss),
        };
        if self.slots.len() < TOP_KEYS {
            let at = self.slots.len() as u8;
            self.slots.push(fresh);
            let (slots, hasher) = (&self.slots, &self.hasher);
            self.index.insert_unique(hash, at, |&i| {
                hasher.hash_one(slots[usize::from(i)].key.as_bytes())
            });
            return;
        }
        // Full: the new key takes over the smallest count (space-saving).
        let Some((at, _)) = self.slots.iter().enumerate().min_by_key(|(_, s)| s.count) else {
            return;
        };
        let old = self.slots[at];
        let old_hash = self.hasher.hash_one(old.key.as_bytes());
        if let Ok(entry) = self.index.find_entry(old_hash, |&i| usize::from(i) == at) {
            entry.remove();
        }
        self.slots[at] = Slot {
            count: old.count + 1,
            error: old.count,
            ..fresh
        };
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.index.insert_unique(hash, at as u8, |&i| {
            hasher.hash_one(slots[usize::from(i)].key.as_bytes())
        });
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.slots.clear();
        self.index.clear();
        self.total = 0;
    }

    fn snapshot(&self) -> SketchSnapshot {
        SketchSnapshot {
            total: self.total,
            items: self
                .slots
                .iter()
                .map(|s| Counted {
                    key: s.key.as_bytes().to_vec(),
                    count: s.count,
                    error: s.error,
                    misses: s.misses,
                })
                .collect(),
        }
    }
}

/// One key of a published sketch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counted {
    /// The key's bytes (a wire name, a namespace, an address's octets).
    pub key: Vec<u8>,
    /// Sampled count.
    pub count: u64,
    /// Over by at most this.
    pub error: u64,
    /// Of the count, search-path misses.
    pub misses: u64,
}

/// A sketch as published.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SketchSnapshot {
    /// Sampled queries counted.
    pub total: u64,
    /// The keys.
    pub items: Vec<Counted>,
}

/// One core's counts, as it publishes them.
#[derive(Clone, Debug, Default)]
pub struct CoreTop {
    /// When the window began.
    pub window_start: Option<Instant>,
    /// Query names (wire, lowercase).
    pub names: SketchSnapshot,
    /// Client namespaces (known on the core when autopath is on).
    pub namespaces: SketchSnapshot,
    /// Clients whose namespace the core does not know, by address octets.
    pub clients: SketchSnapshot,
    /// NXDOMAIN names that look like search-path misses.
    pub nxdomain_search: SketchSnapshot,
    /// Other NXDOMAIN names.
    pub nxdomain_other: SketchSnapshot,
}

/// A core's published counts: this window's and the last one's.
#[derive(Debug, Default)]
pub struct PublishedTop {
    /// The window under way.
    pub current: CoreTop,
    /// The window before it, if one has ended.
    pub previous: Option<CoreTop>,
}

/// Where a core publishes, and the control plane reads.
#[allow(clippy::disallowed_types)]
pub type Published = Arc<Mutex<PublishedTop>>;

/// One core's counting.
#[derive(Debug)]
pub struct TopCounts {
    names: Sketch,
    namespaces: Sketch,
    clients: Sketch,
    nxdomain_search: Sketch,
    nxdomain_other: Sketch,
    random: u64,
    window_start: Instant,
    published: Published,
}

impl TopCounts {
    /// Counts for a core that publishes to `published`.
    pub fn new(published: Published, seed: u64) -> TopCounts {
        TopCounts {
            names: Sketch::default(),
            namespaces: Sketch::default(),
            clients: Sketch::default(),
            nxdomain_search: Sketch::default(),
            nxdomain_other: Sketch::default(),
            random: seed | 1,
            window_start: Instant::now(),
            published,
        }
    }

    /// Whether to count this query: one in [`SAMPLE_ONE_IN`], at random.
    #[inline]
    pub fn pick(&mut self) -> bool {
        // xorshift64: a few instructions, no state shared between cores.
        let mut x = self.random;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.random = x;
        x.is_multiple_of(u64::from(SAMPLE_ONE_IN))
    }

    /// Counts a picked query: its name (from the query's bytes), its client
    /// and the client's namespace if known, and its RCODE.
    pub fn record(
        &mut self,
        query: &[u8],
        client: Option<IpAddr>,
        namespace: Option<&[u8]>,
        rcode: Rcode,
        table: &AnswerTable,
    ) {
        let Some(Ok((name, _))) = query
            .get(kubewire_wire::HEADER_LEN..)
            .map(NameBuf::lowercase_from_wire)
        else {
            return;
        };
        let miss = rcode == Rcode::NXDOMAIN && search_miss(&name, table);
        self.names.add(name.as_wire(), false);
        if rcode == Rcode::NXDOMAIN {
            if miss {
                self.nxdomain_search.add(name.as_wire(), true);
            } else {
                self.nxdomain_other.add(name.as_wire(), false);
            }
        }
        match (namespace, client) {
            (Some(namespace), _) => self.namespaces.add(namespace, miss),
            (None, Some(IpAddr::V4(v4))) => self.clients.add(&v4.octets(), miss),
            (None, Some(IpAddr::V6(v6))) => self.clients.add(&v6.octets(), miss),
            (None, None) => {}
        }
    }

    /// Publishes the counts (called once a second); a window that has run
    /// its length becomes the previous one and counting starts again.
    pub fn publish(&mut self, now: Instant) {
        let snapshot = CoreTop {
            window_start: Some(self.window_start),
            names: self.names.snapshot(),
            namespaces: self.namespaces.snapshot(),
            clients: self.clients.snapshot(),
            nxdomain_search: self.nxdomain_search.snapshot(),
            nxdomain_other: self.nxdomain_other.snapshot(),
        };
        let ended = now.duration_since(self.window_start) >= WINDOW;
        {
            let mut published = self
                .published
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if ended {
                published.previous = Some(snapshot);
                published.current = CoreTop {
                    window_start: Some(now),
                    ..CoreTop::default()
                };
            } else {
                published.current = snapshot;
            }
        }
        if ended {
            for sketch in [
                &mut self.names,
                &mut self.namespaces,
                &mut self.clients,
                &mut self.nxdomain_search,
                &mut self.nxdomain_other,
            ] {
                sketch.clear();
            }
            self.window_start = now;
        }
    }
}

/// Whether an NXDOMAIN name is a search-path miss: a name a resolver built
/// by appending a search domain (`<ns>.svc.<zone>`, `svc.<zone>` or
/// `<zone>`) to a name with a dot in it, rather than a cluster name that
/// does not exist. Under `svc.<zone>`, the table tells them apart:
/// - `<a>.<b>.svc.<zone>` is a Service lookup, a real miss, when namespace
///   `<b>` is one kubewire holds names in; otherwise (`example.com` +
///   `svc.<zone>`) a search-path miss;
/// - with more labels before `svc`, a real miss when the two before `svc`
///   are a Service kubewire holds (one of its hostnames or SRV names was
///   asked), otherwise a search-path miss (`www.example.com` +
///   `<ns>.svc.<zone>`).
pub fn search_miss(name: &NameBuf, table: &AnswerTable) -> bool {
    let Some((_, zone)) = table.zones().find(name) else {
        return false;
    };
    if !zone.cluster {
        return false;
    }
    let wire = name.as_wire();
    let relative_len = wire.len() - zone.apex.wire_len();
    // Where each label before the zone starts (a name has at most 127).
    let mut starts = [0usize; 128];
    let mut count = 0;
    let mut at = 0;
    while at < relative_len && count < starts.len() {
        starts[count] = at;
        count += 1;
        at += 1 + usize::from(wire[at]);
    }
    let label = |i: usize| &wire[starts[i] + 1..starts[i] + 1 + usize::from(wire[starts[i]])];
    match count {
        0 | 1 => false,
        // Pod names are not searched for.
        _ if label(count - 1) == b"pod" => false,
        // `<a>.<b>.svc.<zone>`: is `<b>` a namespace here?
        3 if label(2) == b"svc" => !table.holds(&wire[starts[1]..]),
        // `<ns>.svc.<zone>` asked itself: no dot before the search domain.
        2 if label(1) == b"svc" => false,
        // `….<service>.<ns>.svc.<zone>`: is that a Service here?
        _ if label(count - 1) == b"svc" => !table.holds(&wire[starts[count - 3]..]),
        // Under `<zone>` itself.
        _ => true,
    }
}

/// A merged sketch item.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Merged {
    /// The key.
    pub key: Vec<u8>,
    /// Sampled count.
    pub count: u64,
    /// Over by at most.
    pub error: u64,
    /// Search-path misses among them.
    pub misses: u64,
}

/// Sums the same sketch of several cores (and windows), largest first.
pub fn merge<'a>(sketches: impl Iterator<Item = &'a SketchSnapshot>) -> (u64, Vec<Merged>) {
    let mut total = 0;
    let mut by_key: std::collections::HashMap<&[u8], Merged> = std::collections::HashMap::new();
    for sketch in sketches {
        total += sketch.total;
        for item in &sketch.items {
            let merged = by_key.entry(&item.key).or_insert_with(|| Merged {
                key: item.key.clone(),
                ..Merged::default()
            });
            merged.count += item.count;
            merged.error += item.error;
            merged.misses += item.misses;
        }
    }
    let mut merged: Vec<Merged> = by_key.into_values().collect();
    merged.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
    (total, merged)
}

/// An address from a client key's octets.
pub fn client_address(key: &[u8]) -> Option<IpAddr> {
    match key.len() {
        4 => <[u8; 4]>::try_from(key).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(key).ok().map(IpAddr::from),
        _ => None,
    }
}

/// How many items of each list a report shows.
const REPORT_ITEMS: usize = 20;

/// The windows the report covers: each core's current one, with its last
/// full one if it has one (so a report right after a window rolls over is
/// not nearly empty), and when the oldest began.
fn gather(published: &[Published]) -> (Vec<CoreTop>, Option<Instant>) {
    let mut windows = Vec::new();
    let mut start: Option<Instant> = None;
    for slot in published {
        let slot = slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for window in std::iter::once(&slot.current).chain(slot.previous.as_ref()) {
            if let Some(at) = window.window_start {
                start = Some(start.map_or(at, |s: Instant| s.min(at)));
            }
            windows.push(window.clone());
        }
    }
    (windows, start)
}

fn items(merged: &[Merged], scale: u64) -> Vec<crate::operations::debug::TopItem> {
    merged
        .iter()
        .take(REPORT_ITEMS)
        .map(|m| crate::operations::debug::TopItem {
            key: kubewire_wire::name::to_text(&m.key),
            count: m.count * scale,
            error: m.error * scale,
        })
        .collect()
}

/// Merges every core's counts into a report; `namespaces_of` names the
/// namespace of client addresses the cores could not (pods known to the
/// control plane), if it can.
pub fn report(
    published: &[Published],
    namespaces_of: impl FnOnce(&[IpAddr]) -> std::collections::HashMap<IpAddr, String>,
) -> crate::operations::debug::TopReport {
    use crate::operations::debug::{NamespaceShare, TopItem, TopReport};
    let (windows, start) = gather(published);
    let window_s = start.map_or(0.0, |s| s.elapsed().as_secs_f64()).max(1.0);
    let scale = u64::from(SAMPLE_ONE_IN);
    let (total, names) = merge(windows.iter().map(|w| &w.names));
    let (_, mut namespaces) = merge(windows.iter().map(|w| &w.namespaces));
    let (_, clients) = merge(windows.iter().map(|w| &w.clients));
    let (_, search) = merge(windows.iter().map(|w| &w.nxdomain_search));
    let (_, other) = merge(windows.iter().map(|w| &w.nxdomain_other));

    // Clients the cores knew no namespace of, placed by the pod index.
    let addresses: Vec<IpAddr> = clients
        .iter()
        .filter_map(|c| client_address(&c.key))
        .collect();
    let placed = namespaces_of(&addresses);
    let mut unplaced = Vec::new();
    for client in clients {
        let namespace = client_address(&client.key).and_then(|ip| placed.get(&ip));
        match namespace {
            Some(namespace) => {
                match namespaces
                    .iter_mut()
                    .find(|n| n.key == namespace.as_bytes())
                {
                    Some(merged) => {
                        merged.count += client.count;
                        merged.error += client.error;
                        merged.misses += client.misses;
                    }
                    None => namespaces.push(Merged {
                        key: namespace.as_bytes().to_vec(),
                        ..client
                    }),
                }
            }
            None => unplaced.push(client),
        }
    }
    namespaces.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
    let mut notes = Vec::new();
    if namespaces.is_empty() && !unplaced.is_empty() {
        notes.push("no client has a namespace: pods are not watched here (turn on kubernetes.autopath, or kubernetes.pods = \"verified\")".to_string());
    }
    TopReport {
        sample_one_in: SAMPLE_ONE_IN,
        window_s,
        queries: total * scale,
        keys_kept: TOP_KEYS,
        names: items(&names, scale),
        namespaces: namespaces
            .iter()
            .take(REPORT_ITEMS)
            .map(|n| NamespaceShare {
                namespace: String::from_utf8_lossy(&n.key).into_owned(),
                share: n.count as f64 / total.max(1) as f64,
                search_miss_share: n.misses as f64 / n.count.max(1) as f64,
                queries_per_second: (n.count * scale) as f64 / window_s,
                autopath_saves_per_second: (n.misses * scale) as f64 / window_s,
            })
            .collect(),
        clients: unplaced
            .iter()
            .take(REPORT_ITEMS)
            .map(|c| TopItem {
                key: client_address(&c.key).map_or_else(String::new, |ip| ip.to_string()),
                count: c.count * scale,
                error: c.error * scale,
            })
            .collect(),
        nxdomain_search: items(&search, scale),
        nxdomain_other: items(&other, scale),
        notes,
    }
}

/// How often the control plane places the cores' counts in namespaces for
/// the metrics' top namespaces gauge: one pass over the pod index's
/// addresses (its cost at 100k pods is not measured yet), only while the
/// debug endpoint is on.
pub const GAUGE_EVERY: Duration = Duration::from_secs(2);

/// The top namespaces' query rates, largest first, from a report.
pub fn namespace_rates(report: &crate::operations::debug::TopReport) -> Vec<(String, f64)> {
    report
        .namespaces
        .iter()
        .map(|n| (n.namespace.clone(), n.queries_per_second))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_sketch_keeps_heavy_keys_within_its_error_and_its_size() {
        let mut sketch = Sketch::default();
        // Three heavy keys among 10 000 distinct light ones.
        for i in 0..10_000u32 {
            sketch.add(b"heavy-a", false);
            if i % 2 == 0 {
                sketch.add(b"heavy-b", true);
            }
            if i % 4 == 0 {
                sketch.add(b"heavy-c", false);
            }
            sketch.add(format!("light-{i}").as_bytes(), false);
        }
        assert_eq!(sketch.slots.len(), TOP_KEYS);
        let snapshot = sketch.snapshot();
        let total = snapshot.total;
        let bound = total / TOP_KEYS as u64;
        for (key, truth) in [("heavy-a", 10_000), ("heavy-b", 5_000), ("heavy-c", 2_500)] {
            let item = snapshot
                .items
                .iter()
                .find(|i| i.key == key.as_bytes())
                .unwrap();
            assert!(item.count >= truth, "{key}: never under");
            assert!(
                item.count - item.error <= truth,
                "{key}: the error covers the excess"
            );
            assert!(item.count <= truth + bound, "{key}: over by at most N/k");
        }
        let b = snapshot.items.iter().find(|i| i.key == b"heavy-b").unwrap();
        assert!(b.misses >= 5_000 - bound);
    }

    #[test]
    fn the_sample_is_about_one_in_sixteen() {
        let mut counts = TopCounts::new(Published::default(), 42);
        let picked = (0..160_000).filter(|_| counts.pick()).count();
        assert!((9_000..11_000).contains(&picked), "{picked}");
    }
}
