//! What `explain` and `top` answer: serialised as JSON by the endpoint,
//! read back and printed for people by the commands.

use serde::{Deserialize, Serialize};

/// A reply, as dig shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyReport {
    /// Where it came from (the listener asked, or the cache entry).
    pub from: String,
    /// The RCODE.
    pub rcode: String,
    /// Header flags.
    pub flags: Vec<String>,
    /// Question lines.
    pub question: Vec<String>,
    /// Answer lines.
    pub answer: Vec<String>,
    /// Authority lines.
    pub authority: Vec<String>,
    /// Additional lines.
    pub additional: Vec<String>,
}

impl ReplyReport {
    /// A reply's bytes, shown; `None` if they do not parse.
    pub fn of(from: String, packet: &[u8]) -> Option<ReplyReport> {
        let shown = kubewire_wire::text::present(packet).ok()?;
        Some(ReplyReport {
            from,
            rcode: shown.rcode.to_string(),
            flags: shown.flags.iter().map(|f| f.to_string()).collect(),
            question: shown.question,
            answer: shown.answer,
            authority: shown.authority,
            additional: shown.additional,
        })
    }
}

/// An object an answer was compiled from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceReport {
    /// `Service`, `EndpointSlice`, `Namespace` or `ServiceImport`.
    pub kind: String,
    /// Its namespace (empty for a Namespace).
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// `metadata.resourceVersion`, if it had a numeric one.
    pub resource_version: Option<u64>,
    /// When the event that last changed its DNS content arrived (ms since
    /// the Unix epoch).
    pub arrived_unix_ms: Option<u64>,
}

/// When the answer last changed, and when every core held the change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChangeReport {
    /// The revision whose delta last changed it.
    pub revision: u64,
    /// When the control plane published that delta (ms since the epoch).
    pub published_unix_ms: Option<u64>,
    /// When the last core applied it (ms since the epoch).
    pub all_cores_unix_ms: Option<u64>,
    /// `at`: exactly then; `before`: a core's log has moved past it, so no
    /// later than then; `not yet`: some core has not applied it.
    pub all_cores: String,
    /// From the arrival of the newest source event to every core holding
    /// the answer, in milliseconds.
    pub event_to_all_cores_ms: Option<f64>,
}

/// Why there is no answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReasonReport {
    /// A stable code, for scripts (`no_service`, `headless_no_ready`, ...).
    pub code: String,
    /// For people.
    pub text: String,
}

/// One name a pod's resolver tries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CandidateReport {
    /// The name.
    pub name: String,
    /// `answer`, `nodata`, `nxdomain`, `servfail` or `forwarded`.
    pub outcome: String,
    /// Records in the answer, when there is one.
    pub records: u16,
    /// Why not, when not.
    pub reason: Option<ReasonReport>,
    /// The lookup stops here.
    pub ends_walk: bool,
}

/// The search walk of `--from`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FromReport {
    /// The client, as given.
    pub client: String,
    /// The pods holding that address, or the pod named.
    pub pods: Vec<String>,
    /// The namespace whose search list is walked.
    pub namespace: String,
    /// Autopath is on here.
    pub autopath_on: bool,
    /// Autopath would complete this client's search on the server (it is
    /// a pod of one namespace alone).
    pub autopath_client: bool,
    /// The names tried, in order.
    pub candidates: Vec<CandidateReport>,
    /// Round trips per record type without autopath.
    pub round_trips: usize,
    /// Round trips with autopath.
    pub round_trips_autopath: usize,
    /// What the walk assumed.
    pub notes: Vec<String>,
}

/// An upstream as the cache's home core sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamReport {
    /// The upstream.
    pub upstream: String,
    /// Marked down.
    pub down: bool,
    /// Failures in a row.
    pub fails: u32,
}

/// A forwarded name's cache entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheReport {
    /// The core whose entry this is (every core holds a copy).
    pub home_core: usize,
    /// An entry is held.
    pub cached: bool,
    /// Its RCODE.
    pub rcode: Option<String>,
    /// Seconds since it was stored.
    pub age_s: Option<u64>,
    /// TTL left, in seconds (negative once expired).
    pub ttl_left_s: Option<i64>,
    /// Expired and still served (serve-stale).
    pub stale: bool,
    /// Prefetch: hits in a row.
    pub hits: u32,
    /// A refresh is under way.
    pub refreshing: bool,
    /// An upstream query for it is under way.
    pub fetching: bool,
    /// A query now would go upstream.
    pub would_go_upstream: bool,
    /// The upstream whose reply it is.
    pub filled_by: Option<String>,
    /// Every upstream's health.
    pub upstreams: Vec<UpstreamReport>,
}

/// What `explain` says of one name.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Explained {
    /// The name, as asked.
    pub name: String,
    /// The type.
    pub qtype: String,
    /// The reply a client gets now.
    pub reply: Option<ReplyReport>,
    /// Why there is no reply to show.
    pub reply_error: Option<String>,
    /// The zone the name lies in; `None` outside every zone.
    pub zone: Option<String>,
    /// `answer`, `nodata`, `nxdomain`, `servfail` or `forwarded`.
    pub outcome: String,
    /// The types the name has records of.
    pub types: Vec<String>,
    /// The objects its records were compiled from.
    pub sources: Vec<SourceReport>,
    /// When it last changed.
    pub change: Option<ChangeReport>,
    /// Why there is no answer.
    pub reason: Option<ReasonReport>,
    /// The search walk, with `--from`.
    pub from: Option<FromReport>,
    /// The cache entry of a forwarded name.
    pub cache: Option<CacheReport>,
    /// Anything else worth knowing.
    pub notes: Vec<String>,
}

/// One key of a top-k, with its estimated count.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopItem {
    /// The key (a name, a namespace, an address).
    pub key: String,
    /// Estimated queries (sampled counts scaled up).
    pub count: u64,
    /// The count may be over by at most this much (the sketch's error).
    pub error: u64,
}

/// A namespace's share of the traffic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NamespaceShare {
    /// The namespace.
    pub namespace: String,
    /// Its share of all queries, 0 to 1.
    pub share: f64,
    /// The share of its queries that were search-path misses.
    pub search_miss_share: f64,
    /// Its queries a second, over the window.
    pub queries_per_second: f64,
    /// Queries a second autopath would save (its search-path misses).
    pub autopath_saves_per_second: f64,
}

/// What `top` says.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TopReport {
    /// One query in this many is counted.
    pub sample_one_in: u32,
    /// Seconds the counts cover.
    pub window_s: f64,
    /// Queries seen in the window (estimated from the samples).
    pub queries: u64,
    /// Keys each sketch keeps; a key's count is over by at most
    /// `queries / keys_kept`.
    pub keys_kept: usize,
    /// Most asked names.
    pub names: Vec<TopItem>,
    /// Namespaces of the clients (pods known by address), with shares.
    pub namespaces: Vec<NamespaceShare>,
    /// Clients that are not known pods, by address.
    pub clients: Vec<TopItem>,
    /// NXDOMAIN names that look like search-path misses.
    pub nxdomain_search: Vec<TopItem>,
    /// Other NXDOMAIN names.
    pub nxdomain_other: Vec<TopItem>,
    /// Anything worth knowing (such as: pods are not watched, so clients
    /// have no namespace).
    pub notes: Vec<String>,
}

/// A time in ms since the epoch, as RFC 3339 (UTC).
fn when(unix_ms: u64) -> String {
    i64::try_from(unix_ms)
        .ok()
        .and_then(|ms| k8s_openapi::jiff::Timestamp::from_millisecond(ms).ok())
        .map_or_else(|| format!("{unix_ms} ms"), |t| t.to_string())
}

impl std::fmt::Display for Explained {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let zone = self.zone.as_deref().map_or_else(
            || "in no served zone".to_string(),
            |z| format!("in zone {z}"),
        );
        writeln!(f, "{} {}: {} ({zone})", self.name, self.qtype, self.outcome)?;
        if !self.types.is_empty() {
            writeln!(
                f,
                "  the name has records of type {}",
                self.types.join(", ")
            )?;
        }
        match (&self.reply, &self.reply_error) {
            (Some(reply), _) => {
                writeln!(
                    f,
                    "\n;; reply ({}): {}, flags {}",
                    reply.from,
                    reply.rcode,
                    reply.flags.join(" ")
                )?;
                for (title, lines) in [
                    ("QUESTION", &reply.question),
                    ("ANSWER", &reply.answer),
                    ("AUTHORITY", &reply.authority),
                    ("ADDITIONAL", &reply.additional),
                ] {
                    if !lines.is_empty() {
                        writeln!(f, ";; {title}")?;
                        for line in lines {
                            writeln!(f, "{line}")?;
                        }
                    }
                }
            }
            (None, Some(error)) => writeln!(f, "\n;; reply: {error}")?,
            (None, None) => {}
        }
        if !self.sources.is_empty() {
            writeln!(f, "\n;; compiled from")?;
            for source in &self.sources {
                let key = if source.namespace.is_empty() {
                    source.name.clone()
                } else {
                    format!("{}/{}", source.namespace, source.name)
                };
                write!(f, "{} {key}", source.kind)?;
                if let Some(version) = source.resource_version {
                    write!(f, ", resourceVersion {version}")?;
                }
                if let Some(at) = source.arrived_unix_ms {
                    write!(f, ", event arrived {}", when(at))?;
                }
                writeln!(f)?;
            }
        }
        if let Some(change) = &self.change {
            write!(f, ";; last changed by revision {}", change.revision)?;
            if let Some(at) = change.published_unix_ms {
                write!(f, ", published {}", when(at))?;
            }
            match (change.all_cores.as_str(), change.all_cores_unix_ms) {
                ("at", Some(at)) => write!(f, ", on every core at {}", when(at))?,
                ("before", Some(at)) => write!(f, ", on every core by {}", when(at))?,
                _ => write!(f, ", not yet on every core")?,
            }
            if let Some(ms) = change.event_to_all_cores_ms {
                write!(f, " ({ms:.1} ms after the event arrived)")?;
            }
            writeln!(f)?;
        }
        if let Some(reason) = &self.reason {
            writeln!(f, "\n;; why: {} [{}]", reason.text, reason.code)?;
        }
        if let Some(from) = &self.from {
            let pods = if from.pods.is_empty() {
                String::new()
            } else {
                format!(" (pod {})", from.pods.join(", "))
            };
            writeln!(
                f,
                "\n;; from {}{pods}: namespace {}; autopath {}{}",
                from.client,
                from.namespace,
                if from.autopath_on { "on" } else { "off" },
                if from.autopath_client {
                    ", answers for this client"
                } else {
                    ""
                }
            )?;
            for (i, candidate) in from.candidates.iter().enumerate() {
                write!(f, "  {}. {} {}", i + 1, candidate.name, candidate.outcome)?;
                if candidate.records > 0 {
                    write!(f, " ({} records)", candidate.records)?;
                }
                if candidate.ends_walk {
                    write!(f, "  <- the lookup ends here")?;
                } else if let Some(reason) = &candidate.reason {
                    write!(f, "  [{}]", reason.code)?;
                }
                writeln!(f)?;
            }
            writeln!(
                f,
                "  round trips per record type: {} without autopath, {} with",
                from.round_trips, from.round_trips_autopath
            )?;
            for note in &from.notes {
                writeln!(f, "  note: {note}")?;
            }
        }
        if let Some(cache) = &self.cache {
            write!(f, "\n;; cache (home core {}): ", cache.home_core)?;
            if cache.cached {
                write!(
                    f,
                    "{}, stored {} s ago, {} s of TTL left{}{}, {} hits in a row",
                    cache.rcode.as_deref().unwrap_or("?"),
                    cache.age_s.unwrap_or(0),
                    cache.ttl_left_s.unwrap_or(0),
                    if cache.stale {
                        ", stale (served under serve-stale)"
                    } else {
                        ""
                    },
                    if cache.refreshing {
                        ", refresh under way"
                    } else {
                        ""
                    },
                    cache.hits
                )?;
                if let Some(upstream) = &cache.filled_by {
                    write!(f, "; filled by {upstream}")?;
                }
            } else {
                write!(f, "not cached")?;
            }
            writeln!(
                f,
                "\n   a query now {}",
                if cache.would_go_upstream {
                    "would go upstream"
                } else {
                    "is answered from the cache"
                }
            )?;
            for upstream in &cache.upstreams {
                writeln!(
                    f,
                    "   upstream {}: {}",
                    upstream.upstream,
                    if upstream.down {
                        format!(
                            "down ({} failures in a row), health-checked",
                            upstream.fails
                        )
                    } else {
                        format!("up ({} failures in a row)", upstream.fails)
                    }
                )?;
            }
        }
        for note in &self.notes {
            writeln!(f, "note: {note}")?;
        }
        Ok(())
    }
}

impl std::fmt::Display for TopReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} queries in the last {:.0} s (one in {} sampled; each count is over by at most {})",
            self.queries,
            self.window_s,
            self.sample_one_in,
            self.queries / self.keys_kept.max(1) as u64
        )?;
        if !self.namespaces.is_empty() {
            writeln!(f, "\nnamespaces:")?;
            for ns in &self.namespaces {
                writeln!(
                    f,
                    "  namespace {}: {:.0}% of queries ({:.1}/s), {:.0}% of them search-path misses; autopath would save about {:.1} queries a second",
                    ns.namespace,
                    ns.share * 100.0,
                    ns.queries_per_second,
                    ns.search_miss_share * 100.0,
                    ns.autopath_saves_per_second
                )?;
            }
        }
        for (title, items) in [
            ("names", &self.names),
            ("clients that are not known pods", &self.clients),
            ("NXDOMAIN, search-path misses", &self.nxdomain_search),
            ("NXDOMAIN, other", &self.nxdomain_other),
        ] {
            if items.is_empty() {
                continue;
            }
            writeln!(f, "\n{title}:")?;
            for item in items {
                writeln!(f, "  {:>8}  {}", item.count, item.key)?;
            }
        }
        for note in &self.notes {
            writeln!(f, "note: {note}")?;
        }
        Ok(())
    }
}
