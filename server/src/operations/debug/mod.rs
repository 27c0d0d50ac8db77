//! The read-only debug endpoint (`http.debug_addr`) that `kubewire explain`
//! and `kubewire top` ask, and those two commands.
//!
//! `GET /debug/explain?name=NAME&type=TYPE&from=CLIENT` says why a name
//! answers what it answers; `GET /debug/top` says who makes the traffic.
//! Both run on the control plane's runtime: a request travels to the
//! control-plane loop (which owns the compiler) and back, and never reaches
//! a serving core except to read one cache entry.
//!
//! What it gives away beyond what a pod could learn through DNS already
//! (every Service name and address in every namespace is one query away):
//! the references of the objects behind an answer (kind, namespace, name,
//! resourceVersion); Services that `namespaces` or `labels` hide from DNS
//! (a reason names them, and the labels reason asks the API server); how
//! many of a Service's endpoints are not ready; and in `top`, the traffic
//! counts with client addresses and namespaces. So it is off by default,
//! binds loopback unless a bearer token is set, accepts no writes, and is
//! rate-limited.

mod ask;
mod report;

pub use ask::{AskArgs, AskError, explain_command, top_command};
pub use report::*;

use kubewire_answer::ObjectKey;
use kubewire_wire::NameBuf;
use serde::Deserialize;
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
    /// Explain a name: the report, or why it cannot be made (a `--from`
    /// pod kubewire does not hold).
    Explain(
        Box<ExplainRequest>,
        tokio::sync::oneshot::Sender<Result<Explained, String>>,
    ),
    /// The cores' top-k, merged.
    Top(tokio::sync::oneshot::Sender<TopReport>),
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
            Ok(Ok(explained)) => axum::Json(explained).into_response(),
            Ok(Err(unknown)) => (StatusCode::NOT_FOUND, format!("{unknown}\n")).into_response(),
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
