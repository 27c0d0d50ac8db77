//! A fake Kubernetes API server that speaks the real list/watch protocol over
//! real HTTP, for tests and benchmarks that run the real `kube` client:
//!
//! - LIST with `limit`/`continue` pagination and a `resourceVersion`;
//! - WATCH as chunked JSON `WatchEvent` lines from a `resourceVersion`;
//! - BOOKMARK events on command;
//! - `410 Gone` sent as an `ERROR` event inside a 200 stream (as the real
//!   API server does when a resourceVersion is too old);
//! - connection drops, a stopped server, and held LISTs, on command.
//!
//! It serves Services, EndpointSlices, Pods and Namespaces, with simple
//! `k=v` label selectors and `status.phase` field selectors.
#![allow(clippy::disallowed_types)] // a test tool: a plain Mutex is fine here

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, watch};

type Body = BoxBody<Bytes, Infallible>;

/// The path of ServiceImports, which are served only once their CRD is
/// installed ([`FakeApi::install_service_imports`]).
const SERVICE_IMPORTS: &str = "/apis/multicluster.x-k8s.io/v1alpha1/serviceimports";

/// The kinds served, by collection path.
const RESOURCES: [(&str, &str, &str, &str); 5] = [
    ("/api/v1/services", "ServiceList", "v1", "Service"),
    (
        "/apis/discovery.k8s.io/v1/endpointslices",
        "EndpointSliceList",
        "discovery.k8s.io/v1",
        "EndpointSlice",
    ),
    ("/api/v1/pods", "PodList", "v1", "Pod"),
    ("/api/v1/namespaces", "NamespaceList", "v1", "Namespace"),
    (
        SERVICE_IMPORTS,
        "ServiceImportList",
        "multicluster.x-k8s.io/v1alpha1",
        "ServiceImport",
    ),
];

#[derive(Default)]
struct Collection {
    /// Current objects by "namespace/name".
    objects: BTreeMap<String, Stored>,
    /// Every change, in resourceVersion order.
    events: Vec<Event>,
}

/// An object with its JSON, serialized once when it is stored: a list or a
/// watch sends the bytes, so that the fake API's own work stays small
/// beside kubewire's on the same CPUs (a sync of 60k objects would
/// otherwise serialize each afresh).
struct Stored {
    object: Value,
    json: Bytes,
}

impl Stored {
    fn new(object: Value) -> Stored {
        let json = Bytes::from(object.to_string());
        Stored { object, json }
    }
}

/// One change, with its watch line (`{"type":…,"object":…}` and a newline).
struct Event {
    resource_version: u64,
    object: Value,
    line: Bytes,
}

impl Event {
    fn new(resource_version: u64, event: &'static str, object: Value) -> Event {
        let line = line(event, &object);
        Event {
            resource_version,
            object,
            line,
        }
    }
}

#[derive(Default)]
struct State {
    resource_version: u64,
    collections: HashMap<&'static str, Collection>,
    /// Watches from a resourceVersion below this get 410 Gone.
    compacted_below: u64,
    lists_served: u64,
    watches_started: u64,
    /// Whether the ServiceImport CRD is installed (404 until it is).
    service_imports_installed: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Ticks when events are added, or with a command for open watches.
    events: broadcast::Sender<Signal>,
    /// While true, LIST requests wait.
    hold_lists: watch::Sender<bool>,
    /// Every open connection, so that a stop can cut them all.
    connections: Mutex<Vec<tokio::task::AbortHandle>>,
    /// Distinct `Authorization` headers seen, in order.
    authorizations: Mutex<Vec<String>>,
}

#[derive(Clone, Copy, Debug)]
enum Signal {
    Changed,
    Bookmark,
    Expire,
    Drop,
}

/// A running fake API server on a loopback port. Dropping it stops it.
pub struct FakeApi {
    shared: Arc<Shared>,
    addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
    listener_task: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for FakeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeApi").field("addr", &self.addr).finish()
    }
}

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, State> {
    shared
        .state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl FakeApi {
    /// Starts on a free loopback port.
    pub fn start() -> std::io::Result<FakeApi> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let (events, _) = broadcast::channel(4096);
        let (hold_lists, _) = watch::channel(false);
        let mut state = State {
            resource_version: 1,
            ..State::default()
        };
        for (path, ..) in RESOURCES {
            state.collections.insert(path, Collection::default());
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            events,
            hold_lists,
            connections: Mutex::new(Vec::new()),
            authorizations: Mutex::new(Vec::new()),
        });
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let addr = listener.local_addr()?;
        let mut api = FakeApi {
            shared,
            addr,
            runtime: Some(runtime),
            listener_task: None,
        };
        api.serve(listener);
        Ok(api)
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        // Present from start to drop.
        self.runtime
            .as_ref()
            .unwrap_or_else(|| unreachable!("runtime dropped"))
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let shared = Arc::clone(&self.shared);
        self.listener_task = Some(self.runtime().spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                // As a real API server (Go sets TCP_NODELAY on every TCP
                // connection): otherwise a response written in two parts
                // waits for the client's delayed ACK, 40 ms a list page.
                let _ = stream.set_nodelay(true);
                let for_connection = Arc::clone(&shared);
                let task = tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        handle(Arc::clone(&for_connection), request)
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                });
                let mut open = shared
                    .connections
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                open.retain(|t| !t.is_finished());
                open.push(task.abort_handle());
            }
        }));
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Writes a kubeconfig pointing at this server into `dir` and returns its path.
    pub fn write_kubeconfig(&self, dir: &Path) -> std::io::Result<PathBuf> {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n\
             users:\n- name: fake\n  user:\n    token: fake-token\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\ncurrent-context: fake\n",
            self.url()
        );
        std::fs::write(&path, text)?;
        Ok(path)
    }

    /// Adds or replaces an object (a full API object with `kind`). Returns
    /// its new resourceVersion.
    pub fn apply(&self, object: Value) -> u64 {
        refuse_as_the_real_one(&object);
        let rv = insert(&mut lock(&self.shared), object);
        let _ = self.shared.events.send(Signal::Changed);
        rv
    }

    /// Adds many objects at once (one notification), for large fixtures.
    pub fn apply_all(&self, objects: impl IntoIterator<Item = Value>) {
        let objects: Vec<Value> = objects.into_iter().collect();
        objects.iter().for_each(refuse_as_the_real_one);
        {
            let mut state = lock(&self.shared);
            for object in objects {
                insert(&mut state, object);
            }
        }
        let _ = self.shared.events.send(Signal::Changed);
    }

    /// Installs (or removes) the ServiceImport CRD: its collection is
    /// served from now on (or answers 404, as from an API server without
    /// the CRD).
    pub fn install_service_imports(&self, installed: bool) {
        lock(&self.shared).service_imports_installed = installed;
    }

    /// Deletes an object by kind, namespace and name.
    pub fn delete(&self, kind: &str, namespace: &str, name: &str) {
        let Some((path, ..)) = RESOURCES.iter().find(|r| r.3 == kind) else {
            return;
        };
        let key = if namespace.is_empty() {
            name.to_string()
        } else {
            format!("{namespace}/{name}")
        };
        {
            let mut state = lock(&self.shared);
            state.resource_version += 1;
            let rv = state.resource_version;
            let collection = state.collections.entry(path).or_default();
            if let Some(Stored { mut object, .. }) = collection.objects.remove(&key) {
                object["metadata"]["resourceVersion"] = json!(rv.to_string());
                collection.events.push(Event::new(rv, "DELETED", object));
            }
        }
        let _ = self.shared.events.send(Signal::Changed);
    }

    /// Sends a BOOKMARK to every open watch.
    pub fn bookmark(&self) {
        let _ = self.shared.events.send(Signal::Bookmark);
    }

    /// Forgets history: every open watch gets an `ERROR` 410 event, and a
    /// watch from any older resourceVersion gets one too, forcing a relist.
    pub fn expire_history(&self) {
        {
            let mut state = lock(&self.shared);
            state.compacted_below = state.resource_version + 1;
            for collection in state.collections.values_mut() {
                collection.events.clear();
            }
        }
        let _ = self.shared.events.send(Signal::Expire);
    }

    /// Ends every open watch stream abruptly.
    pub fn drop_watches(&self) {
        let _ = self.shared.events.send(Signal::Drop);
    }

    /// Holds (or releases) LIST requests: held LISTs wait until released.
    pub fn hold_lists(&self, hold: bool) {
        self.shared.hold_lists.send_replace(hold);
    }

    /// Stops listening and drops every connection, keeping the data.
    pub fn stop(&mut self) {
        if let Some(task) = self.listener_task.take() {
            task.abort();
        }
        let _ = self.shared.events.send(Signal::Drop);
        let open = std::mem::take(
            &mut *self
                .shared
                .connections
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for connection in open {
            connection.abort();
        }
    }

    /// Listens again on the same port after [`FakeApi::stop`].
    pub fn restart(&mut self) -> std::io::Result<()> {
        let addr = self.addr;
        let listener = self.runtime().block_on(async move {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.set_reuseaddr(true)?;
            socket.bind(addr)?;
            socket.listen(1024)
        })?;
        self.serve(listener);
        Ok(())
    }

    /// Distinct `Authorization` headers the server has seen, in order.
    pub fn authorizations(&self) -> Vec<String> {
        self.shared
            .authorizations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Writes a kubeconfig whose user reads its token from `token_file`
    /// (as a projected service-account token is read).
    pub fn write_kubeconfig_with_token_file(
        &self,
        dir: &Path,
        token_file: &Path,
    ) -> std::io::Result<PathBuf> {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n\
             users:\n- name: fake\n  user:\n    tokenFile: {}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\ncurrent-context: fake\n",
            self.url(),
            token_file.display()
        );
        std::fs::write(&path, text)?;
        Ok(path)
    }

    /// LIST requests served so far.
    pub fn lists_served(&self) -> u64 {
        lock(&self.shared).lists_served
    }

    /// WATCH requests started so far.
    pub fn watches_started(&self) -> u64 {
        lock(&self.shared).watches_started
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.stop();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Stores an object under a new resourceVersion and records its event;
/// returns the resourceVersion (0 for a kind not served).
/// What the real API server refuses and the fake would otherwise take: a
/// Service with a cluster IP and no ports (`spec.ports: Required value`).
/// The real one is right; a fixture the fake took would not run against it.
fn refused(object: &Value) -> Option<String> {
    let spec = &object["spec"];
    let no_ports = spec["ports"].as_array().is_none_or(Vec::is_empty);
    let needs_ports =
        spec["type"].as_str() != Some("ExternalName") && spec["clusterIP"].as_str() != Some("None");
    (object["kind"] == "Service" && needs_ports && no_ports).then(|| {
        format!(
            "Service {}/{}: spec.ports: Required value (the real API server refuses a Service with a cluster IP and no ports)",
            object["metadata"]["namespace"], object["metadata"]["name"]
        )
    })
}

/// Panics, before the fake's lock is taken, on what the real API server
/// refuses.
fn refuse_as_the_real_one(object: &Value) {
    if let Some(why) = refused(object) {
        panic!("{why}");
    }
}

/// Adds or replaces an object; returns its new resourceVersion.
fn insert(state: &mut State, mut object: Value) -> u64 {
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
    let Some((path, ..)) = RESOURCES.iter().find(|r| r.3 == kind) else {
        return 0;
    };
    state.resource_version += 1;
    let rv = state.resource_version;
    object["metadata"]["resourceVersion"] = json!(rv.to_string());
    let key = object_key(&object);
    let collection = state.collections.entry(path).or_default();
    let event = if collection.objects.contains_key(&key) {
        "MODIFIED"
    } else {
        "ADDED"
    };
    let stored = Stored::new(object);
    collection
        .events
        .push(Event::new(rv, event, stored.object.clone()));
    collection.objects.insert(key, stored);
    rv
}

fn object_key(object: &Value) -> String {
    let meta = &object["metadata"];
    let name = meta["name"].as_str().unwrap_or("");
    match meta["namespace"].as_str() {
        Some(ns) if !ns.is_empty() => format!("{ns}/{name}"),
        _ => name.to_string(),
    }
}

fn full(status: StatusCode, body: Value) -> Response<Body> {
    json_response(status, Bytes::from(body.to_string()))
}

fn json_response(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut response = Response::new(Full::new(body).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

fn query_params(request: &Request<hyper::body::Incoming>) -> HashMap<String, String> {
    request
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_string(), percent_decode(v)))
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(byte) = u8::from_str_radix(
                std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"),
                16,
            )
        {
            out.push(byte);
            i += 3;
        } else {
            out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `k=v,k2=v2` label selectors and `path=v` / `path!=v` field selectors.
fn matches(object: &Value, labels: Option<&String>, fields: Option<&String>) -> bool {
    if let Some(selector) = labels.filter(|s| !s.is_empty()) {
        for term in selector.split(',') {
            let (key, want, equal) = match term.split_once("!=") {
                Some((k, v)) => (k, v, false),
                None => match term.split_once('=') {
                    Some((k, v)) => (k, v.trim_start_matches('='), true),
                    None => (term, "", true),
                },
            };
            let have = object["metadata"]["labels"][key.trim()].as_str();
            let ok = if want.is_empty() && equal {
                have.is_some()
            } else {
                (have == Some(want.trim())) == equal
            };
            if !ok {
                return false;
            }
        }
    }
    if let Some(selector) = fields.filter(|s| !s.is_empty()) {
        for term in selector.split(',') {
            let (path, want, equal) = match term.split_once("!=") {
                Some((k, v)) => (k, v, false),
                None => match term.split_once('=') {
                    Some((k, v)) => (k, v, true),
                    None => continue,
                },
            };
            let mut value = object;
            for part in path.split('.') {
                value = &value[part];
            }
            if (value.as_str().unwrap_or("") == want) != equal {
                return false;
            }
        }
    }
    true
}

async fn handle(
    shared: Arc<Shared>,
    request: Request<hyper::body::Incoming>,
) -> Result<Response<Body>, Infallible> {
    if let Some(value) = request
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let mut seen = shared
            .authorizations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !seen.iter().any(|s| s == value) {
            seen.push(value.to_string());
        }
    }
    let path = request.uri().path().to_string();
    // GET of one Service, as `kubewire explain` asks it.
    if let Some(rest) = path.strip_prefix("/api/v1/namespaces/")
        && let Some((namespace, name)) = rest.split_once("/services/")
    {
        let found = lock(&shared)
            .collections
            .get("/api/v1/services")
            .and_then(|c| c.objects.get(&format!("{namespace}/{name}")))
            .map(|stored| stored.object.clone());
        return Ok(match found {
            Some(object) => full(StatusCode::OK, object),
            None => full(
                StatusCode::NOT_FOUND,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}),
            ),
        });
    }
    let installed = path != SERVICE_IMPORTS || lock(&shared).service_imports_installed;
    let Some(&(collection_path, list_kind, api_version, _)) =
        RESOURCES.iter().find(|r| r.0 == path).filter(|_| installed)
    else {
        return Ok(full(
            StatusCode::NOT_FOUND,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}),
        ));
    };
    let params = query_params(&request);
    let labels = params.get("labelSelector");
    let fields = params.get("fieldSelector");
    if params.get("watch").map(String::as_str) == Some("true") {
        let from: u64 = params
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        return Ok(watch_response(
            shared,
            collection_path,
            from,
            labels.cloned(),
            fields.cloned(),
        ));
    }

    // LIST, possibly held by the test.
    let mut hold = shared.hold_lists.subscribe();
    while *hold.borrow_and_update() {
        if hold.changed().await.is_err() {
            break;
        }
    }
    let limit: usize = params
        .get("limit")
        .and_then(|v| v.parse().ok())
        .unwrap_or(usize::MAX);
    // The continue token is the last key sent: each page costs its own size.
    let after = params.get("continue").cloned();
    let mut state = lock(&shared);
    state.lists_served += 1;
    let rv = state.resource_version;
    let mut page: Vec<Bytes> = Vec::new();
    let mut last_key = None;
    let mut more = false;
    if let Some(collection) = state.collections.get(collection_path) {
        let range = match &after {
            Some(key) => collection
                .objects
                .range::<String, _>((std::ops::Bound::Excluded(key), std::ops::Bound::Unbounded)),
            None => collection.objects.range::<String, _>(..),
        };
        for (key, stored) in range.filter(|(_, s)| matches(&s.object, labels, fields)) {
            if page.len() == limit {
                more = true;
                break;
            }
            page.push(stored.json.clone());
            last_key = Some(key.clone());
        }
    }
    drop(state);
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if more && let Some(key) = last_key {
        metadata["continue"] = json!(key);
    }
    // The list's envelope, then the stored items, comma-separated.
    let head = json!({"kind": list_kind, "apiVersion": api_version, "metadata": metadata});
    let mut body = head.to_string();
    body.pop(); // the closing brace
    body.push_str(",\"items\":[");
    let mut body = body.into_bytes();
    body.reserve(page.iter().map(|item| item.len() + 1).sum::<usize>() + 2);
    for (i, item) in page.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(item);
    }
    body.extend_from_slice(b"]}");
    Ok(json_response(StatusCode::OK, Bytes::from(body)))
}

fn line(event: &str, object: &Value) -> Bytes {
    let mut text = json!({"type": event, "object": object}).to_string();
    text.push('\n');
    Bytes::from(text)
}

fn watch_response(
    shared: Arc<Shared>,
    collection_path: &'static str,
    from: u64,
    labels: Option<String>,
    fields: Option<String>,
) -> Response<Body> {
    let (sender, receiver) = tokio::sync::mpsc::channel::<Bytes>(1024);
    let mut signals = shared.events.subscribe();
    let gone = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "too old resource version", "reason": "Expired", "code": 410});
    tokio::spawn(async move {
        let mut cursor = from;
        let expired = {
            let mut state = lock(&shared);
            state.watches_started += 1;
            from < state.compacted_below
        };
        if expired {
            let _ = sender.send(line("ERROR", &gone)).await;
            return;
        }
        loop {
            // Send every event after the cursor.
            let pending: Vec<Bytes> = {
                let state = lock(&shared);
                let Some(collection) = state.collections.get(collection_path) else {
                    return;
                };
                // Events are in resourceVersion order: start at the first
                // after the cursor rather than scanning the history.
                let first = collection
                    .events
                    .partition_point(|e| e.resource_version <= cursor);
                let new: Vec<Bytes> = collection.events[first..]
                    .iter()
                    .filter(|e| matches(&e.object, labels.as_ref(), fields.as_ref()))
                    .map(|e| e.line.clone())
                    .collect();
                cursor = state.resource_version;
                new
            };
            for bytes in pending {
                if sender.send(bytes).await.is_err() {
                    return;
                }
            }
            match signals.recv().await {
                Ok(Signal::Changed) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Ok(Signal::Bookmark) => {
                    let bookmark = json!({"kind": "", "apiVersion": "", "metadata": {"resourceVersion": cursor.to_string()}});
                    let _ = sender.send(line("BOOKMARK", &bookmark)).await;
                }
                Ok(Signal::Expire) => {
                    let _ = sender.send(line("ERROR", &gone)).await;
                    return;
                }
                Ok(Signal::Drop) | Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver
            .recv()
            .await
            .map(|bytes| (Ok::<_, Infallible>(Frame::data(bytes)), receiver))
    });
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

/// A Service object, as the API server would hold it.
pub fn service(namespace: &str, name: &str, cluster_ip: &str, ports: &[(&str, u16)]) -> Value {
    let ports: Vec<Value> = ports
        .iter()
        .map(|(n, p)| json!({"name": n, "port": p, "protocol": "TCP"}))
        .collect();
    let ips: Vec<&str> = if cluster_ip == "None" {
        vec!["None"]
    } else {
        vec![cluster_ip]
    };
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"clusterIP": cluster_ip, "clusterIPs": ips, "ports": ports}
    })
}

/// An EndpointSlice for a service, with `(ip, ready, hostname)` endpoints.
pub fn endpoint_slice(
    namespace: &str,
    name: &str,
    service: &str,
    endpoints: &[(&str, bool, Option<&str>)],
) -> Value {
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|(ip, ready, hostname)| {
            let mut e = json!({"addresses": [ip], "conditions": {"ready": ready}});
            if let Some(h) = hostname {
                e["hostname"] = json!(h);
            }
            e
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": namespace, "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
        "endpoints": endpoints
    })
}

/// A ServiceImport: `ips` for a ClusterSetIP import, `None` for headless.
pub fn service_import(
    namespace: &str,
    name: &str,
    ips: Option<&[&str]>,
    ports: &[(&str, u16)],
) -> Value {
    let ports: Vec<Value> = ports
        .iter()
        .map(|(n, p)| json!({"name": n, "port": p, "protocol": "TCP"}))
        .collect();
    let spec = match ips {
        Some(ips) => json!({"type": "ClusterSetIP", "ips": ips, "ports": ports}),
        None => json!({"type": "Headless", "ports": ports}),
    };
    json!({
        "apiVersion": "multicluster.x-k8s.io/v1alpha1", "kind": "ServiceImport",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec
    })
}

/// An EndpointSlice of a ServiceImport, from cluster `cluster`.
pub fn imported_endpoint_slice(
    namespace: &str,
    name: &str,
    service: &str,
    cluster: &str,
    endpoints: &[(&str, bool, Option<&str>)],
) -> Value {
    let mut slice = endpoint_slice(namespace, name, service, endpoints);
    slice["metadata"]["labels"] = json!({
        "multicluster.kubernetes.io/service-name": service,
        "multicluster.kubernetes.io/source-cluster": cluster,
    });
    slice
}

/// A Namespace object.
pub fn namespace(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
}

/// A running Pod with one IP. It has one container, as the real API server
/// requires (kubewire reads none of it).
pub fn pod(namespace: &str, name: &str, ip: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"containers": [{"name": "app", "image": "registry.invalid/app"}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}
    })
}
