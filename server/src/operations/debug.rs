//! The read-only debug endpoint (`http.debug_addr`) that `kubewire explain`
//! and `kubewire top` ask, and those two commands.
//!
//! `GET /debug/explain?name=NAME&type=TYPE&from=CLIENT` says why a name
//! answers what it answers; `GET /debug/top` says who makes the traffic.
//! Both run on the control plane's runtime: a request travels to the
//! control-plane loop (which owns the compiler) and back, and never reaches
//! a serving core except to read one cache entry.
//!
//! What it gives away: nothing a pod could not learn through DNS already
//! (every Service name and address in every namespace is one query away),
//! plus the references of the objects behind an answer (kind, namespace,
//! name, resourceVersion) and the traffic counts of `top`. It is off by
//! default, binds loopback unless a bearer token is set, accepts no
//! writes, and is rate-limited.

use kubewire_answer::ObjectKey;
use kubewire_wire::NameBuf;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Where `explain` is asked.
pub const EXPLAIN_PATH: &str = "/debug/explain";
/// Where `top` is asked.
pub const TOP_PATH: &str = "/debug/top";
/// The longest `name` or `from` parameter taken (a name is at most 253
/// characters; the rest is room for escapes).
const MAX_PARAM_LEN: usize = 1024;
/// How long a request waits for the control plane and the cores.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// Who asks, for `explain --from`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Client {
    /// A pod (or other client) by address.
    Ip(IpAddr),
    /// A pod by namespace and name.
    Pod(ObjectKey),
}

/// A parsed `explain` request.
#[derive(Clone, Debug)]
pub struct ExplainRequest {
    /// The name as given (the search walk needs to know if it ends in a dot).
    pub name_text: String,
    /// The name.
    pub name: NameBuf,
    /// The type asked.
    pub qtype: u16,
    /// The client to walk the search path for.
    pub from: Option<Client>,
}

/// `explain`'s query parameters.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ExplainParams {
    /// The name.
    pub name: Option<String>,
    /// The type (`A` if absent).
    #[serde(rename = "type")]
    pub qtype: Option<String>,
    /// A pod's address, or `NAMESPACE/POD`.
    pub from: Option<String>,
}

impl ExplainRequest {
    /// Checks the parameters; the error says what is wrong.
    pub fn parse(params: &ExplainParams) -> Result<ExplainRequest, String> {
        let name_text = params
            .name
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .ok_or("give a name: ?name=web.default.svc.cluster.local")?;
        if name_text.len() > MAX_PARAM_LEN {
            return Err(format!(
                "the name is {} characters long; a DNS name has at most 253",
                name_text.len()
            ));
        }
        let name = NameBuf::from_text(name_text.trim_end_matches('.'))
            .map_err(|error| format!("{name_text:?} is not a DNS name: {error}"))?;
        let type_text = params.qtype.as_deref().unwrap_or("A");
        let qtype = kubewire_wire::rtype::from_name(type_text).ok_or_else(|| {
            format!("{type_text:?} is not a record type (A, AAAA, SRV, PTR, TXT, TYPE123, ...)")
        })?;
        let from = match params.from.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(text) => Some(parse_client(text)?),
        };
        Ok(ExplainRequest {
            name_text: name_text.to_string(),
            name,
            qtype,
            from,
        })
    }
}

fn parse_client(text: &str) -> Result<Client, String> {
    if text.len() > MAX_PARAM_LEN {
        return Err(format!(
            "--from is {} characters long; give one pod's address or NAMESPACE/POD",
            text.len()
        ));
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(Client::Ip(ip));
    }
    match text.split_once('/') {
        Some((namespace, pod)) if is_object_name(namespace) && is_object_name(pod) => {
            Ok(Client::Pod(ObjectKey::new(namespace, pod)))
        }
        _ => Err(format!(
            "--from {text:?}: give a pod's IP address or NAMESPACE/POD"
        )),
    }
}

/// A Kubernetes object name (a DNS subdomain: at most 253 characters of
/// lowercase letters, digits, `-` and `.`).
fn is_object_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 253
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

/// What the endpoint asks of the control plane.
#[derive(Debug)]
pub enum DebugRequest {
    /// Explain a name.
    Explain(Box<ExplainRequest>, tokio::sync::oneshot::Sender<Explained>),
    /// The cores' top-k, merged.
    Top(tokio::sync::oneshot::Sender<TopReport>),
}

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

/// A rate limit over all clients, without a lock: the time (ns since
/// `epoch`) at which the next request conforms, as GCRA keeps it. A
/// request is admitted while that time is less than a second of requests
/// ahead of now, and moves it on by one request's share of a second.
#[derive(Debug)]
struct Limit {
    epoch: Instant,
    next_ns: AtomicU64,
    interval_ns: u64,
    burst_ns: u64,
}

impl Limit {
    fn new(per_second: u32) -> Limit {
        let interval_ns = 1_000_000_000 / u64::from(per_second.max(1));
        Limit {
            epoch: Instant::now(),
            next_ns: AtomicU64::new(0),
            interval_ns,
            burst_ns: 1_000_000_000 - interval_ns,
        }
    }

    fn admit(&self) -> bool {
        let now = self.epoch.elapsed().as_nanos() as u64;
        let mut next = self.next_ns.load(Ordering::Relaxed);
        loop {
            let from = next.max(now);
            if from - now > self.burst_ns {
                return false;
            }
            match self.next_ns.compare_exchange_weak(
                next,
                from + self.interval_ns,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(seen) => next = seen,
            }
        }
    }
}

/// What the debug routes share.
#[derive(Debug, Clone)]
pub struct DebugState {
    requests: tokio::sync::mpsc::Sender<DebugRequest>,
    token: Option<Arc<str>>,
    per_second: u32,
    limit: Arc<Limit>,
}

impl DebugState {
    /// Requests go to `requests`; `token` is the bearer token asked for.
    pub fn new(
        requests: tokio::sync::mpsc::Sender<DebugRequest>,
        token: Option<String>,
        per_second: u32,
    ) -> DebugState {
        DebugState {
            requests,
            token: token.map(Into::into),
            per_second,
            limit: Arc::new(Limit::new(per_second)),
        }
    }

    /// Checks the token and the rate; the refusal to send if not.
    fn admit(
        &self,
        headers: &axum::http::HeaderMap,
    ) -> Result<(), (axum::http::StatusCode, String)> {
        use axum::http::StatusCode;
        if let Some(token) = &self.token {
            let given = headers
                .get(axum::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            if !given.is_some_and(|given| constant_time_eq(given.as_bytes(), token.as_bytes())) {
                return Err((
                    StatusCode::UNAUTHORIZED,
                    "this endpoint asks for Authorization: Bearer <token> (kubewire explain --token-file FILE)\n".into(),
                ));
            }
        }
        if !self.limit.admit() {
            return Err((
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "more than {} debug requests a second; try again shortly (http.debug_requests_per_second)\n",
                    self.per_second
                ),
            ));
        }
        Ok(())
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(tokio::sync::oneshot::Sender<T>) -> DebugRequest,
    ) -> Result<T, (axum::http::StatusCode, String)> {
        use axum::http::StatusCode;
        let (reply, answer) = tokio::sync::oneshot::channel();
        if self.requests.try_send(make(reply)).is_err() {
            return Err((
                StatusCode::SERVICE_UNAVAILABLE,
                "the control plane is busy with other debug requests; try again\n".into(),
            ));
        }
        match tokio::time::timeout(ANSWER_WITHIN, answer).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err((
                StatusCode::SERVICE_UNAVAILABLE,
                "the control plane is stopping\n".into(),
            )),
            Err(_) => Err((
                StatusCode::GATEWAY_TIMEOUT,
                format!("no answer within {} s\n", ANSWER_WITHIN.as_secs()),
            )),
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `/debug/explain` and `/debug/top`, GET only (anything else is 405).
pub fn debug_router(state: DebugState) -> axum::Router {
    use axum::extract::{Query, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::{IntoResponse, Response};
    async fn explain(
        State(state): State<DebugState>,
        headers: HeaderMap,
        params: Result<Query<ExplainParams>, axum::extract::rejection::QueryRejection>,
    ) -> Response {
        if let Err(refused) = state.admit(&headers) {
            return refused.into_response();
        }
        let Ok(Query(params)) = params else {
            return (StatusCode::BAD_REQUEST, "the query string does not parse\n").into_response();
        };
        let request = match ExplainRequest::parse(&params) {
            Ok(request) => request,
            Err(error) => return (StatusCode::BAD_REQUEST, format!("{error}\n")).into_response(),
        };
        match state
            .ask(|reply| DebugRequest::Explain(Box::new(request), reply))
            .await
        {
            Ok(explained) => axum::Json(explained).into_response(),
            Err(refused) => refused.into_response(),
        }
    }
    async fn top(State(state): State<DebugState>, headers: HeaderMap) -> Response {
        if let Err(refused) = state.admit(&headers) {
            return refused.into_response();
        }
        match state.ask(DebugRequest::Top).await {
            Ok(report) => axum::Json(report).into_response(),
            Err(refused) => refused.into_response(),
        }
    }
    axum::Router::new()
        .route(EXPLAIN_PATH, axum::routing::get(explain))
        .route(TOP_PATH, axum::routing::get(top))
        .with_state(state)
}

/// Reads the bearer token: the file's first line, trimmed.
pub fn read_token(path: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("cannot read the debug token file {path:?}: {error}"))?;
    let token = text.lines().next().unwrap_or_default().trim().to_string();
    if token.is_empty() {
        return Err(format!(
            "the debug token file {path:?} is empty; put the token on its first line"
        ));
    }
    Ok(token)
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
                    "  {}: {:.0}% of queries ({:.1}/s), {:.0}% of them search-path misses; autopath would save about {:.1} queries a second",
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

/// `kubewire explain` and `kubewire top`: where and how to ask.
#[derive(clap::Args, Debug, Clone)]
pub struct AskArgs {
    /// The debug endpoint (http.debug_addr).
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:9155")]
    pub server: String,
    /// A file holding the bearer token (http.debug_token_file).
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<String>,
    /// Print JSON, for scripts.
    #[arg(long)]
    pub json: bool,
}

/// Percent-encodes a query parameter's value.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Why asking the debug endpoint failed.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    /// `--server` is not an http:// URL.
    #[error("--server {0:?} is not an http://HOST:PORT URL")]
    Server(String),
    /// The token file.
    #[error("{0}")]
    Token(String),
    /// The request did not get through.
    #[error("cannot reach {server} (is http.debug_addr set on the server?): {source}")]
    Unreachable {
        /// The server.
        server: String,
        /// Why.
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// The answer's body.
    #[error("reading the answer: {0}")]
    Body(#[from] hyper::Error),
    /// The endpoint refused.
    #[error("{status}: {text}")]
    Refused {
        /// The status.
        status: u16,
        /// What it said.
        text: String,
    },
    /// The answer is not what was expected.
    #[error("the answer does not parse (a kubewire of another version?): {0}")]
    Json(#[from] serde_json::Error),
    /// No runtime.
    #[error("cannot start a runtime: {0}")]
    Runtime(#[from] std::io::Error),
}

/// GETs `path_and_query` from the debug endpoint.
pub fn get(args: &AskArgs, path_and_query: &str) -> Result<bytes::Bytes, AskError> {
    use http_body_util::BodyExt;
    let server = args.server.trim_end_matches('/');
    if !server.starts_with("http://") {
        return Err(AskError::Server(args.server.clone()));
    }
    let uri: hyper::Uri = format!("{server}{path_and_query}")
        .parse()
        .map_err(|_| AskError::Server(args.server.clone()))?;
    let token = args
        .token_file
        .as_deref()
        .map(read_token)
        .transpose()
        .map_err(AskError::Token)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<http_body_util::Empty<bytes::Bytes>>();
        let mut request = hyper::Request::get(uri);
        if let Some(token) = &token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let request = request
            .body(http_body_util::Empty::new())
            .map_err(|_| AskError::Server(args.server.clone()))?;
        let response = client
            .request(request)
            .await
            .map_err(|source| AskError::Unreachable {
                server: args.server.clone(),
                source,
            })?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            return Err(AskError::Refused {
                status: status.as_u16(),
                text: String::from_utf8_lossy(&body).trim().to_string(),
            });
        }
        Ok(body)
    })
}

/// `kubewire explain NAME [TYPE] [--from CLIENT]`: prints the report.
pub fn explain_command(
    args: &AskArgs,
    name: &str,
    qtype: Option<&str>,
    from: Option<&str>,
) -> Result<String, AskError> {
    let mut query = format!("{EXPLAIN_PATH}?name={}", encode(name));
    if let Some(qtype) = qtype {
        query.push_str(&format!("&type={}", encode(qtype)));
    }
    if let Some(from) = from {
        query.push_str(&format!("&from={}", encode(from)));
    }
    let body = get(args, &query)?;
    if args.json {
        return Ok(String::from_utf8_lossy(&body).into_owned());
    }
    let explained: Explained = serde_json::from_slice(&body)?;
    Ok(explained.to_string())
}

/// `kubewire top`: prints the report.
pub fn top_command(args: &AskArgs) -> Result<String, AskError> {
    let body = get(args, TOP_PATH)?;
    if args.json {
        return Ok(String::from_utf8_lossy(&body).into_owned());
    }
    let report: TopReport = serde_json::from_slice(&body)?;
    Ok(report.to_string())
}
