//! The control plane's side of `explain`: the compiler's facts about a
//! name turned into a report, then completed off the loop with what only
//! I/O can tell (the reply a listener gives, a cache entry on its home core,
//! whether the API holds a Service the label selector hides).

use crate::operations::config::Config;
use crate::operations::debug::{
    CacheReport, CandidateReport, ChangeReport, Client, ExplainRequest, Explained, FromReport,
    ReasonReport, ReplyReport, SourceReport, UpstreamReport,
};
use crate::resolving::cache::{CacheView, Mailboxes};
use kubewire_answer::compiler::explain::{NameFacts, Outcome, Reason};
use kubewire_answer::model::unix_ms_now;
use kubewire_answer::{AppliedAt, Compiler, DeltaHub, Kind, ObjectKey};
use kubewire_wire::NameBuf;
use kubewire_wire::text::type_text;
use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// The pods' `ndots` (the kubelet writes 5).
const NDOTS: usize = 5;
/// How long the listener and the cache's home core get to answer.
const ASK_WITHIN: Duration = Duration::from_secs(2);

/// What the control plane lends `explain`.
#[derive(Debug)]
pub struct Context<'a> {
    /// The compiler.
    pub compiler: &'a Compiler,
    /// The hub, for when each core applied a revision.
    pub hub: &'a DeltaHub,
    /// Revisions published, with when (ms since the epoch), newest last.
    pub published: &'a VecDeque<(u64, u64)>,
    /// The configuration in force.
    pub config: &'a Config,
    /// Manifests, when they are the source: to tell a filtered object.
    pub manifests: Option<&'a crate::sources::manifests::ManifestSet>,
}

/// What is left to do off the control-plane loop.
pub struct Followup {
    /// Ask this listener for the reply.
    listener: Option<SocketAddr>,
    /// Ask the cache's home core.
    cache: Option<Arc<Mailboxes>>,
    /// Ask the API whether a Service the label selector hides exists.
    labels: Option<(kube::Client, ObjectKey)>,
}

impl std::fmt::Debug for Followup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Followup")
            .field("listener", &self.listener)
            .field("cache", &self.cache.is_some())
            .field("labels", &self.labels.as_ref().map(|(_, key)| key))
            .finish()
    }
}

fn outcome_text(outcome: Outcome, forwarding: bool) -> &'static str {
    match outcome {
        Outcome::Answer { .. } => "answer",
        Outcome::NoData => "nodata",
        Outcome::NxDomain => "nxdomain",
        Outcome::NotSynced => "servfail",
        Outcome::NotOurs if forwarding => "forwarded",
        Outcome::NotOurs => "refused",
    }
}

fn types_text(types: &[u16]) -> String {
    types
        .iter()
        .map(|t| type_text(*t))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A reason, for people and for scripts.
pub fn reason_report(reason: &Reason) -> ReasonReport {
    let (code, text) = match reason {
        Reason::OutsideZones => (
            "outside_zones",
            "the name is in no zone served from cluster data: it is forwarded upstream (REFUSED if nothing is)".to_string(),
        ),
        Reason::FellThrough => (
            "fell_through",
            "no object gives this name and its zone falls through: it is passed on upstream".to_string(),
        ),
        Reason::NotSynced => (
            "not_synced",
            "the first sync with the API server has not completed: unknown names get SERVFAIL until it does".to_string(),
        ),
        Reason::NoNamespace { namespace } => (
            "no_namespace",
            format!("namespace {namespace:?} has no Namespace object and no Service"),
        ),
        Reason::NoService {
            namespace,
            name,
            elsewhere,
        } => (
            "no_service",
            if elsewhere.is_empty() {
                format!("no Service {name:?} in namespace {namespace:?}, nor in any other")
            } else {
                format!(
                    "no Service {name:?} in namespace {namespace:?}; there is one in namespace{} {}",
                    if elsewhere.len() == 1 { "" } else { "s" },
                    elsewhere.join(", ")
                )
            },
        ),
        Reason::HeadlessNoReady { service, not_ready } => (
            "headless_no_ready",
            format!("{service} is headless and has no ready endpoint ({not_ready} not ready)"),
        ),
        Reason::EmptyServiceIgnored { service, not_ready } => (
            "empty_service_ignored",
            format!("{service} has no ready endpoint ({not_ready} not ready), and kubernetes.ignore_empty_service hides such a Service"),
        ),
        Reason::NoEndpoint {
            service,
            endpoint,
            endpoints,
        } => (
            "no_endpoint",
            format!("{service} has no endpoint named {endpoint:?} (it has {endpoints} endpoints; names come from their hostname, or their address)"),
        ),
        Reason::NoPort { service, port } => (
            "no_port",
            format!("{service} has no port {port} (SRV names are _<port name>._<protocol>)"),
        ),
        Reason::PodsDisabled => (
            "pods_disabled",
            "pod names are off (kubernetes.pods = \"disabled\")".to_string(),
        ),
        Reason::PodUnknown { namespace, address } => (
            "pod_unknown",
            match address {
                Some(address) => format!("no pod in namespace {namespace:?} holds {address}, and kubernetes.pods = \"verified\" answers only for those"),
                None => format!("no pod in namespace {namespace:?} holds that address"),
            },
        ),
        Reason::NoAddressOwner { address } => (
            "no_address_owner",
            match address {
                Some(address) => format!("no Service or endpoint has the address {address}: the reverse name is passed on"),
                None => "the reverse name is not an address".to_string(),
            },
        ),
        Reason::OtherTypes { types } => (
            "other_types",
            if types.is_empty() {
                "the name exists without records (an empty non-terminal)".to_string()
            } else {
                format!("the name has records of type {} only", types_text(types))
            },
        ),
        Reason::NoSuchShape => (
            "no_such_name",
            "no cluster name has this shape (<svc>.<ns>.svc, <endpoint>.<svc>.<ns>.svc, _<port>._<proto>.<svc>.<ns>.svc, <ip>.<ns>.pod)".to_string(),
        ),
    };
    ReasonReport {
        code: code.to_string(),
        text,
    }
}

/// The first DNS listener, as this host reaches it.
fn own_listener(config: &Config) -> Option<SocketAddr> {
    let mut addr = *config.dns.listen.first()?;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    Some(addr)
}

impl Context<'_> {
    /// Why `request` cannot be explained, if it cannot: a `--from` pod that
    /// kubewire does not hold although it watches pods (a typo, or a pod
    /// gone), rather than a walk from a guess.
    pub fn refuse(&self, request: &ExplainRequest) -> Option<String> {
        match &request.from {
            Some(Client::Pod(key))
                if self.compiler.keeps_pods() && self.compiler.pod_ips(key).is_none() =>
            {
                Some(format!(
                    "no pod {key} is known to kubewire (it watches pods): check the namespace and name with `kubectl get pod -n {} {}`, or give the pod's address",
                    key.namespace, key.name
                ))
            }
            _ => None,
        }
    }

    /// The report from what the compiler holds, and what is left to ask.
    pub fn explain(
        &self,
        request: &ExplainRequest,
        mailboxes: Option<&Arc<Mailboxes>>,
        client: Option<&kube::Client>,
    ) -> (Explained, Followup) {
        let forwarding = !self.config.forward.to.is_empty();
        let facts = self.compiler.explain(&request.name, request.qtype);
        let mut explained = Explained {
            name: request.name.to_string(),
            qtype: type_text(request.qtype),
            zone: facts.zone.as_ref().map(|z| z.apex.to_string()),
            outcome: outcome_text(facts.outcome, forwarding).to_string(),
            types: facts.types.iter().map(|t| type_text(*t)).collect(),
            sources: facts
                .sources
                .iter()
                .map(|s| SourceReport {
                    kind: s.kind.name().to_string(),
                    namespace: s.key.namespace.to_string(),
                    name: s.key.name.clone(),
                    resource_version: (s.stamp.resource_version > 0)
                        .then_some(s.stamp.resource_version),
                    arrived_unix_ms: (s.stamp.arrived_unix_ms > 0)
                        .then_some(s.stamp.arrived_unix_ms),
                })
                .collect(),
            reason: facts.reason.as_ref().map(reason_report),
            ..Explained::default()
        };
        explained.change = facts
            .changed_revision
            .map(|r| self.change(r, &explained.sources));
        let mut followup = Followup {
            listener: None,
            cache: None,
            labels: None,
        };
        self.note_filters(&facts, &mut explained, client, &mut followup);
        let forwarded = facts.outcome == Outcome::NotOurs && forwarding;
        match (forwarded, mailboxes) {
            (true, Some(mailboxes)) => followup.cache = Some(Arc::clone(mailboxes)),
            (true, None) => explained.notes.push(
                "the cache is off (cache.enabled = false): every query for it goes upstream".into(),
            ),
            // Asking would not go upstream: ask the listener itself.
            (false, _) => followup.listener = own_listener(self.config),
        }
        if let Some(from) = &request.from {
            explained.from = Some(self.walk(request, from, forwarding));
        }
        (explained, followup)
    }

    /// When the answer last changed, and when every core held it.
    fn change(&self, revision: u64, sources: &[SourceReport]) -> ChangeReport {
        let published_unix_ms = self
            .published
            .iter()
            .find(|(r, _)| *r == revision)
            .map(|(_, at)| *at);
        let mut latest: Option<u64> = None;
        let mut exact = true;
        for status in self.hub.statuses() {
            match status.applied_at(revision) {
                AppliedAt::At(us) => latest = latest.max(Some(us)),
                AppliedAt::Before(us) => {
                    exact = false;
                    latest = latest.max(Some(us));
                }
                AppliedAt::NotYet => {
                    return ChangeReport {
                        revision,
                        published_unix_ms,
                        all_cores_unix_ms: None,
                        all_cores: "not yet".into(),
                        event_to_all_cores_ms: None,
                    };
                }
            }
        }
        let arrived_ms = sources.iter().filter_map(|s| s.arrived_unix_ms).max();
        ChangeReport {
            revision,
            published_unix_ms,
            all_cores_unix_ms: latest.map(|us| us / 1000),
            all_cores: if exact { "at" } else { "before" }.into(),
            // A source whose newest event changed its model but none of
            // this unit's names arrived after the revision: no such span.
            event_to_all_cores_ms: match (latest, arrived_ms) {
                (Some(us), Some(ms)) if exact && us / 1000 >= ms => {
                    Some((us as f64 / 1000.0) - ms as f64)
                }
                _ => None,
            },
        }
    }

    /// The namespace and label filters: a name they hide has no object here.
    fn note_filters(
        &self,
        facts: &NameFacts,
        explained: &mut Explained,
        client: Option<&kube::Client>,
        followup: &mut Followup,
    ) {
        let kubernetes = &self.config.kubernetes;
        let (namespace, name) = match &facts.reason {
            Some(Reason::NoService {
                namespace, name, ..
            }) => (namespace, Some(name)),
            Some(Reason::NoNamespace { namespace }) => (namespace, None),
            _ => return,
        };
        if !kubernetes.namespaces.is_empty() && !kubernetes.namespaces.contains(namespace) {
            explained.reason = Some(ReasonReport {
                code: "filtered_namespace".into(),
                text: format!(
                    "namespace {namespace:?} is not among kubernetes.namespaces ({}): its objects are not watched",
                    kubernetes.namespaces.join(", ")
                ),
            });
            return;
        }
        let (Some(name), false) = (name, kubernetes.labels.trim().is_empty()) else {
            return;
        };
        let key = ObjectKey::new(namespace.clone(), name.clone());
        if let Some(set) = self.manifests {
            let filter =
                crate::sources::manifests::Filter::new(&kubernetes.namespaces, &kubernetes.labels);
            if let Ok(filter) = filter
                && set.filtered_out(&filter, Kind::Service, &key)
            {
                explained.reason = Some(labels_reason(&key, &kubernetes.labels));
            }
        } else if let Some(client) = client {
            followup.labels = Some((client.clone(), key));
        }
    }

    /// The search walk for `--from`.
    fn walk(&self, request: &ExplainRequest, from: &Client, forwarding: bool) -> FromReport {
        let compiler = self.compiler;
        let mut notes = Vec::new();
        let (client, pods) = match from {
            Client::Ip(ip) => (ip.to_string(), compiler.pods_at(*ip)),
            Client::Pod(key) => {
                let held = compiler.pod_ips(key).map(|_| key.clone());
                (key.to_string(), held.into_iter().collect())
            }
        };
        // An unknown pod is refused before this (`refuse`) where pods are
        // watched; here it can only be that they are not.
        let mut namespaces: Vec<&str> = pods.iter().map(|p| &*p.namespace).collect();
        namespaces.sort_unstable();
        namespaces.dedup();
        let namespace = match (from, namespaces.as_slice()) {
            (_, [one]) => (*one).to_string(),
            (Client::Pod(key), _) => {
                notes.push("pods are not watched (kubernetes.pods is not \"verified\" and autopath is off); the namespace is taken from --from".to_string());
                key.namespace.to_string()
            }
            (Client::Ip(ip), []) => {
                notes.push(if compiler.keeps_pods() {
                    format!("no pod holds {ip}: a client outside the pods has no search list of the cluster's; the walk uses namespace \"default\"")
                } else {
                    "pods are not watched (kubernetes.pods is not \"verified\" and autopath is off), so an address has no namespace: give --from NAMESPACE/POD; the walk uses namespace \"default\"".to_string()
                });
                "default".to_string()
            }
            (Client::Ip(ip), several) => {
                notes.push(format!(
                    "pods of several namespaces hold {ip} ({}): autopath does not answer for it; the walk uses the first",
                    several.join(", ")
                ));
                several[0].to_string()
            }
        };
        let host_search = match crate::resolving::autopath::AutopathPlan::from_resolv_conf(
            &self.config.kubernetes.autopath_resolv_conf,
        ) {
            Ok(plan) => plan.host_search,
            Err(error) => {
                notes.push(format!(
                    "{error}; the walk searches the cluster domains alone"
                ));
                Vec::new()
            }
        };
        notes.push(format!(
            "a glibc resolver with ndots:{NDOTS}; names outside the cluster zones built from the search list are taken to miss upstream, the name as given to answer"
        ));
        let autopath_on = self.config.kubernetes.autopath;
        let mut report = FromReport {
            client,
            pods: pods.iter().map(ToString::to_string).collect(),
            autopath_client: autopath_on && namespaces.len() == 1,
            namespace,
            autopath_on,
            candidates: Vec::new(),
            round_trips: 0,
            round_trips_autopath: 0,
            notes,
        };
        match compiler.search_walk(
            &request.name_text,
            &report.namespace,
            request.qtype,
            &host_search,
            NDOTS,
        ) {
            Ok(walk) => {
                report.round_trips = walk.round_trips;
                report.round_trips_autopath = walk.round_trips_autopath;
                report.candidates = walk
                    .candidates
                    .iter()
                    .map(|c| CandidateReport {
                        name: c.name.to_string(),
                        outcome: outcome_text(c.facts.outcome, forwarding).to_string(),
                        records: match c.facts.outcome {
                            Outcome::Answer { records, .. } => records,
                            _ => 0,
                        },
                        reason: c.facts.reason.as_ref().map(reason_report),
                        ends_walk: c.ends_walk,
                    })
                    .collect();
            }
            Err(error) => report
                .notes
                .push(format!("the search list makes names too long: {error}")),
        }
        report
    }
}

fn labels_reason(key: &ObjectKey, labels: &str) -> ReasonReport {
    ReasonReport {
        code: "filtered_labels".into(),
        text: format!(
            "Service {key} exists, but its labels do not match kubernetes.labels ({labels}): it is not watched"
        ),
    }
}

/// Completes the report with what only I/O tells, then sends it.
pub async fn finish(
    mut explained: Explained,
    request: ExplainRequest,
    followup: Followup,
    reply: tokio::sync::oneshot::Sender<Result<Explained, String>>,
) {
    if let Some(addr) = followup.listener {
        match ask_listener(addr, &request.name, request.qtype).await {
            Ok(bytes) => {
                explained.reply = ReplyReport::of(format!("asked {addr} over UDP"), &bytes);
                if explained.reply.is_none() {
                    explained.reply_error =
                        Some(format!("{addr} gave a reply that does not parse"));
                }
            }
            Err(error) => explained.reply_error = Some(format!("asking {addr}: {error}")),
        }
    }
    if let Some(mailboxes) = followup.cache {
        let mut query = Vec::new();
        kubewire_wire::records::write_plain_query(0, &request.name, request.qtype, &mut query);
        match kubewire_wire::parse_query(&query) {
            Ok(parsed) => {
                let asked = mailboxes.inspect(&parsed);
                match tokio::time::timeout(ASK_WITHIN, asked).await {
                    Ok(Ok(view)) => cache_report(&mut explained, view),
                    _ => {
                        explained.reply_error = Some("the cache's home core did not answer".into())
                    }
                }
            }
            Err(error) => explained.reply_error = Some(format!("the name makes no query: {error}")),
        }
    }
    if let Some((client, key)) = followup.labels {
        let api: kube::Api<k8s_openapi::api::core::v1::Service> =
            kube::Api::namespaced(client, &key.namespace);
        match tokio::time::timeout(ASK_WITHIN, api.get_opt(&key.name)).await {
            Ok(Ok(Some(_))) => {
                // Visible to us, yet not watched: the selector hides it.
                explained.reason = Some(labels_reason(&key, "the label selector in force"));
            }
            Ok(Ok(None)) => {}
            Ok(Err(error)) => explained.notes.push(format!(
                "could not ask the API server whether {key} exists: {error}"
            )),
            Err(_) => explained.notes.push(format!(
                "the API server did not say within {} s whether {key} exists",
                ASK_WITHIN.as_secs()
            )),
        }
    }
    let _ = reply.send(Ok(explained));
}

fn cache_report(explained: &mut Explained, view: CacheView) {
    let upstreams: Vec<UpstreamReport> = view
        .upstreams
        .iter()
        .map(|u| UpstreamReport {
            upstream: u.upstream.clone(),
            down: u.down,
            fails: u.fails,
        })
        .collect();
    let mut report = CacheReport {
        home_core: view.core,
        cached: view.entry.is_some(),
        rcode: None,
        age_s: None,
        ttl_left_s: None,
        stale: false,
        hits: 0,
        refreshing: false,
        fetching: view.fetching,
        would_go_upstream: true,
        filled_by: None,
        upstreams,
    };
    if let Some(entry) = &view.entry {
        report.rcode = Some(entry.stored.answer.rcode().to_string());
        report.age_s = Some(entry.age_s);
        report.ttl_left_s = Some(entry.ttl_left_s);
        report.stale = entry.stale;
        report.hits = entry.hits;
        report.refreshing = entry.refreshing;
        report.would_go_upstream = entry.would_go_upstream;
        report.filled_by = view
            .upstreams
            .get(entry.stored.upstream)
            .map(|u| u.upstream.clone());
        if let Some(bytes) = &entry.reply {
            explained.reply = ReplyReport::of(format!("the cache of core {}", view.core), bytes);
        }
    }
    if explained.reply.is_none() {
        explained.reply_error = Some("not cached: a query now would go upstream".into());
    }
    explained.cache = Some(report);
}

/// Asks `addr` for `name` over UDP, with EDNS for a 4096-byte reply.
async fn ask_listener(addr: SocketAddr, name: &NameBuf, qtype: u16) -> std::io::Result<Vec<u8>> {
    let bind: SocketAddr = match addr {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = tokio::net::UdpSocket::bind(bind).await?;
    socket.connect(addr).await?;
    let id = (unix_ms_now() & 0xFFFF) as u16;
    let mut query = Vec::new();
    kubewire_wire::records::write_plain_query(id, name, qtype, &mut query);
    query[11] = 1; // ARCOUNT: the OPT below.
    query.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0]);
    socket.send(&query).await?;
    let mut buf = vec![0u8; 4096];
    let deadline = tokio::time::Instant::now() + ASK_WITHIN;
    loop {
        let len = tokio::time::timeout_at(deadline, socket.recv(&mut buf))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "no reply within 2 s")
            })??;
        if len >= 2 && buf[..2] == id.to_be_bytes() {
            buf.truncate(len);
            return Ok(buf);
        }
    }
}
