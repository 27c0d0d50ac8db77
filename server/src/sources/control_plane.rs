//! The control plane: a tokio runtime on its own thread (never on a serving
//! core). It owns the compiler and the delta hub, follows the source of
//! objects (the Kubernetes API, watched manifests, or the fixed demo), ships
//! deltas to the cores and wakes them, serves `/health`, `/ready`,
//! `/metrics` and the debug endpoint (answering `explain` and `top` from the
//! compiler it owns), reloads the configuration, and handles signals:
//! SIGTERM starts the lameduck period, SIGINT stops at once, SIGHUP reloads.

use crate::operations::config::{Config, KEYS};
use crate::operations::debug::DebugRequest;
use crate::operations::http::{health_router, metrics_router, ready_router, serve_http};
use crate::operations::logging::{PROPAGATION_TARGET, QueryLogSampling};
use crate::operations::metrics::{ControlMetrics, Scrape};
use crate::sources::manifests::ManifestSet;
use crate::sources::watch::{WatchEvent, WatchOptions, Watchers, spawn_watchers};
use kubewire_answer::{Compiler, DeltaHub, Kind, ObjectChange};
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Quiet time after a file event before reloading, so that an editor's
/// several writes become one reload.
const DEBOUNCE: Duration = Duration::from_millis(20);

/// Where the objects come from.
#[derive(Debug)]
pub enum Source {
    /// Fixed objects, already compiled (the demo).
    Fixed,
    /// A watched manifest file or directory, with the objects loaded from it.
    Manifests(PathBuf, ManifestSet),
    /// The Kubernetes API.
    Cluster {
        /// How to reach it.
        config: Box<kube::Config>,
        /// What to watch.
        options: WatchOptions,
        /// After this, answer from what is known even before the first sync.
        startup_timeout: Duration,
    },
}

/// What the control plane owns.
#[derive(Debug)]
pub struct Control {
    /// The compiler (with the initial state compiled, for fixed sources).
    pub compiler: Compiler,
    /// The hub, with every core subscribed.
    pub hub: DeltaHub,
    /// One waker per core.
    pub wakers: Vec<UnixStream>,
    /// The source of objects.
    pub source: Source,
    /// Set on shutdown.
    pub shutdown: Arc<AtomicBool>,
    /// For the startup log line.
    pub startup: Startup,
    /// The configuration in force.
    pub config: Config,
    /// How to reload it.
    pub reloading: crate::Reloading,
    /// The query log settings the cores read.
    pub query_log: Arc<QueryLogSampling>,
    /// The control plane's own counters.
    pub metrics: Arc<ControlMetrics>,
    /// What `/metrics` reads; `None` when metrics are off.
    pub scrape: Option<Arc<Scrape>>,
    /// Node-local mode's interface and rules, checked and repaired.
    pub node: Option<crate::operations::nodelocal::NodeNetwork>,
    /// The cores' cache mailboxes, for `explain` (`None` without a cache).
    pub mailboxes: Option<Arc<crate::resolving::cache::Mailboxes>>,
    /// Each core's `kubewire top` counts (empty when the debug endpoint is off).
    pub top: Vec<crate::operations::top::Published>,
    /// When the metrics' top namespaces were last placed.
    pub top_gauge_at: Option<std::time::Instant>,
    /// Revisions published and when (ms since the epoch), newest last, for
    /// `explain`.
    pub published: std::collections::VecDeque<(u64, u64)>,
}

/// Publications remembered for `explain`.
const PUBLISHED_KEPT: usize = 4096;

/// What the startup line reports besides object counts.
#[derive(Clone, Debug)]
pub struct Startup {
    /// The serving CPUs.
    pub cpus: Vec<usize>,
    /// Listen addresses.
    pub listen: Vec<SocketAddr>,
    /// Zones served.
    pub zones: Vec<String>,
    /// Where the objects come from.
    pub source: String,
}

/// Runs the control plane on a new thread.
pub fn spawn(control: Control) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("kubewire-control".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    tracing::error!(%error, "control plane runtime could not start; stopping");
                    control.shutdown.store(true, Ordering::Release);
                    wake_all(&control.wakers);
                    return;
                }
            };
            runtime.block_on(control.run());
        })
}

/// Checks node-local's interface and rules every `every`, and repairs
/// them; failures are logged and counted, as node-cache does.
async fn keep_node(
    node: crate::operations::nodelocal::NodeNetwork,
    every: Duration,
    metrics: Arc<ControlMetrics>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        match node.ensure().await {
            Ok(repaired) if repaired.interface || repaired.rules => {
                tracing::warn!(
                    interface = node.interface(),
                    interface_repaired = repaired.interface,
                    rules_repaired = repaired.rules,
                    "node-local: the interface or rules had drifted; repaired"
                );
            }
            Ok(_) => {}
            Err(error) => {
                metrics.setup_error(error.errortype(false));
                tracing::error!(error = %crate::operations::failure::Chain(&error), "node-local: checking the interface and rules failed; retrying at the next check");
            }
        }
    }
}

fn wake_all(wakers: &[UnixStream]) {
    for waker in wakers {
        // WouldBlock means a wake-up is already pending: enough.
        let _ = (&*waker).write(&[1]);
    }
}

/// Follows the first sync with the API server.
#[derive(Debug, Default)]
struct Sync {
    /// Kinds whose first list has not completed.
    pending: HashSet<Kind>,
    /// The first full sync is in the compiler.
    done: bool,
    /// The revision that carried it.
    revision: u64,
    /// The last failure per kind, logged once until it changes or clears.
    failures: HashMap<Kind, String>,
    /// Skipped-object errors already logged.
    skipped: HashSet<String>,
}

/// What the control plane follows, once started.
struct Following {
    sync: Sync,
    /// When to stop waiting for the first sync (cluster source only).
    startup_deadline: Option<tokio::time::Instant>,
    /// The Kubernetes client and its watchers (cluster source only).
    cluster: Option<(kube::Client, Watchers)>,
    /// File watchers, kept alive while they are needed.
    watchers: Vec<notify::RecommendedWatcher>,
}

/// What a tick found.
enum Tick {
    /// A core died: stop.
    Stop,
    /// Every core holds the first sync: `/ready` is now 200.
    BecameReady,
    /// Nothing to change.
    Nothing,
}

impl Control {
    async fn run(mut self) {
        use tokio::signal::unix::{SignalKind, signal};
        let started = Instant::now();
        let ready = Arc::new(AtomicBool::new(false));
        let mut debug_requests = self.serve_endpoints(&ready);
        if let Some(node) = self.node.clone() {
            let every = Duration::from_secs(self.config.node_local.check_interval_s);
            tokio::spawn(keep_node(node, every, Arc::clone(&self.metrics)));
        }

        let (file_tx, mut file_events) = tokio::sync::mpsc::unbounded_channel::<()>();
        let (config_tx, mut config_events) = tokio::sync::mpsc::unbounded_channel::<()>();
        let (watch_tx, mut watch_events) = tokio::sync::mpsc::unbounded_channel::<WatchEvent>();
        let Some(following) = self.follow_source(config_tx, file_tx, &watch_tx) else {
            self.stop();
            return;
        };
        let Following {
            mut sync,
            mut startup_deadline,
            mut cluster,
            watchers: _watchers,
        } = following;
        self.metrics.set_synced(sync.done);

        let (Ok(mut terminate), Ok(mut interrupt), Ok(mut hangup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) else {
            tracing::error!("cannot install signal handlers; stopping");
            self.stop();
            return;
        };
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Set by SIGTERM: serve until then with /ready at 503.
        let mut lameduck_until: Option<tokio::time::Instant> = None;
        loop {
            let deadline = startup_deadline;
            let lameduck = lameduck_until;
            tokio::select! {
                _ = terminate.recv() => {
                    if lameduck_until.is_some() {
                        tracing::info!("SIGTERM again: stopping now");
                        break;
                    }
                    ready.store(false, Ordering::Release);
                    let lameduck_ms = self.config.lifecycle.lameduck_ms;
                    tracing::info!(lameduck_ms, "SIGTERM: /ready is 503; serving for the lameduck period, then stopping");
                    lameduck_until = Some(tokio::time::Instant::now() + Duration::from_millis(lameduck_ms));
                }
                _ = interrupt.recv() => { tracing::info!("SIGINT: stopping"); break; }
                _ = async { if let Some(at) = lameduck { tokio::time::sleep_until(at).await } else { std::future::pending::<()>().await } } => {
                    tracing::info!("lameduck period over: stopping");
                    break;
                }
                Some(request) = async { match debug_requests.as_mut() { Some(r) => r.recv().await, None => std::future::pending().await } } => {
                    self.on_debug(request, cluster.as_ref().map(|(client, _)| client));
                }
                _ = hangup.recv() => {
                    tracing::info!("SIGHUP: reloading the configuration");
                    self.reload_config(&mut cluster, &watch_tx);
                }
                Some(()) = config_events.recv() => {
                    debounce(&mut config_events).await;
                    tracing::info!("config file changed: reloading the configuration");
                    self.reload_config(&mut cluster, &watch_tx);
                }
                Some(()) = file_events.recv() => {
                    debounce(&mut file_events).await;
                    self.reload_manifests();
                }
                Some(event) = watch_events.recv() => {
                    // Take everything waiting, so a relist is compiled once.
                    let mut batch = vec![event];
                    while let Ok(more) = watch_events.try_recv() {
                        batch.push(more);
                    }
                    tracing::debug!(target: PROPAGATION_TARGET, events = batch.len(), "watch events taken");
                    self.apply_watch_events(batch, &mut sync, started);
                }
                _ = async { if let Some(at) = deadline { tokio::time::sleep_until(at).await } else { std::future::pending::<()>().await } } => {
                    startup_deadline = None;
                    self.on_startup_timeout(&sync);
                }
                _ = tick.tick() => {
                    match self.on_tick(&ready, lameduck_until.is_some(), &sync) {
                        Tick::Stop => break,
                        Tick::BecameReady => {
                            // Ready: only retries of Resets are left for the tick.
                            tick = tokio::time::interval(Duration::from_millis(100));
                            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                        }
                        Tick::Nothing => {}
                    }
                }
            }
        }
        ready.store(false, Ordering::Release);
        drop(cluster);
        self.stop();
    }

    /// Answers a debug request: what the compiler knows now, completed off
    /// the loop.
    fn on_debug(&self, request: DebugRequest, client: Option<&kube::Client>) {
        match request {
            DebugRequest::Explain(request, reply) => {
                let manifests = match &self.source {
                    Source::Manifests(_, set) => Some(set),
                    _ => None,
                };
                let context = crate::sources::explain::Context {
                    compiler: &self.compiler,
                    hub: &self.hub,
                    published: &self.published,
                    config: &self.config,
                    manifests,
                };
                if let Some(refused) = context.refuse(&request) {
                    let _ = reply.send(Err(refused));
                    return;
                }
                let (explained, followup) =
                    context.explain(&request, self.mailboxes.as_ref(), client);
                tokio::spawn(crate::sources::explain::finish(
                    explained, *request, followup, reply,
                ));
            }
            DebugRequest::Top(reply) => {
                let compiler = &self.compiler;
                let report =
                    crate::operations::top::report(&self.top, |ips| compiler.pod_namespaces(ips));
                let _ = reply.send(report);
            }
        }
    }

    /// Serves `/health`, `/ready`, `/metrics` and the debug endpoint, each
    /// where configured; returns the debug endpoint's requests.
    fn serve_endpoints(
        &self,
        ready: &Arc<AtomicBool>,
    ) -> Option<tokio::sync::mpsc::Receiver<DebugRequest>> {
        let http = &self.config.http;
        if let Some(addr) = http.health_addr.0 {
            tokio::spawn(serve_http(addr, "health", health_router()));
        }
        if let Some(addr) = http.ready_addr.0 {
            tokio::spawn(serve_http(addr, "ready", ready_router(Arc::clone(ready))));
        }
        if let (Some(addr), Some(scrape)) = (http.metrics_addr.0, &self.scrape) {
            tokio::spawn(serve_http(
                addr,
                "metrics",
                metrics_router(Arc::clone(scrape)),
            ));
        }
        let addr = http.debug_addr.0?;
        let token = if http.debug_token_file.is_empty() {
            None
        } else {
            match crate::operations::debug::read_token(&http.debug_token_file) {
                Ok(token) => Some(token),
                Err(error) => {
                    tracing::error!("{error}; the debug endpoint is not served, DNS keeps serving");
                    return None;
                }
            }
        };
        // A few at a time: a request is answered in milliseconds.
        let (requests, received) = tokio::sync::mpsc::channel(8);
        let state = crate::operations::debug::DebugState::new(
            requests,
            token,
            http.debug_requests_per_second,
        );
        tokio::spawn(serve_http(
            addr,
            "debug",
            crate::operations::debug::debug_router(state),
        ));
        Some(received)
    }

    /// Starts following the config file and the source: file watchers, or
    /// the API's watchers. `None` when the Kubernetes client cannot be made.
    fn follow_source(
        &self,
        config_tx: tokio::sync::mpsc::UnboundedSender<()>,
        file_tx: tokio::sync::mpsc::UnboundedSender<()>,
        watch_tx: &tokio::sync::mpsc::UnboundedSender<WatchEvent>,
    ) -> Option<Following> {
        let mut following = Following {
            sync: Sync {
                done: true,
                ..Sync::default()
            },
            startup_deadline: None,
            cluster: None,
            watchers: Vec::new(),
        };
        if let Some(path) = &self.reloading.path {
            match watch_files(path, config_tx) {
                Ok(watcher) => following.watchers.push(watcher),
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "cannot watch the config file; reload with SIGHUP");
                }
            }
        }
        match &self.source {
            Source::Fixed => {}
            Source::Manifests(path, _) => match watch_files(path, file_tx) {
                Ok(watcher) => following.watchers.push(watcher),
                Err(error) => {
                    tracing::error!(path = %path.display(), %error, "cannot watch manifests; edits will not be picked up");
                }
            },
            Source::Cluster {
                config,
                options,
                startup_timeout,
            } => match crate::sources::cluster::client((**config).clone()) {
                Ok(client) => {
                    let watchers = spawn_watchers(&client, options, watch_tx);
                    following.sync = Sync {
                        pending: watchers.kinds.iter().copied().collect(),
                        ..Sync::default()
                    };
                    following.startup_deadline =
                        Some(tokio::time::Instant::now() + *startup_timeout);
                    following.cluster = Some((client, watchers));
                }
                Err(error) => {
                    tracing::error!(%error, "cannot create the Kubernetes client; stopping");
                    return None;
                }
            },
        }
        Some(following)
    }

    /// The first sync did not come in time: answer from what is known.
    fn on_startup_timeout(&mut self, sync: &Sync) {
        if sync.done {
            return;
        }
        tracing::warn!(
            waiting_for = ?sync.pending,
            "initial sync with the API server not complete after the startup timeout; \
             answering from what is known (names not yet seen get NXDOMAIN); /ready stays 503 until it completes"
        );
        self.compiler.mark_synced();
        self.publish();
    }

    /// Every [`GAUGE_EVERY`](crate::operations::top::GAUGE_EVERY), places
    /// the cores' sampled clients in namespaces by the pod index, as
    /// `kubewire top` does, for the metrics' top namespaces gauge.
    fn refresh_top_gauge(&mut self) {
        let Some(scrape) = &self.scrape else { return };
        if self.top.is_empty()
            || self
                .top_gauge_at
                .is_some_and(|at| at.elapsed() < crate::operations::top::GAUGE_EVERY)
        {
            return;
        }
        self.top_gauge_at = Some(std::time::Instant::now());
        let compiler = &self.compiler;
        let report = crate::operations::top::report(&self.top, |ips| compiler.pod_namespaces(ips));
        scrape.set_top_namespaces(crate::operations::top::namespace_rates(&report));
    }

    /// The periodic check: a dead core stops the process; pending Resets
    /// are retried; `/ready` turns 200 once every core holds the first sync.
    fn on_tick(&mut self, ready: &AtomicBool, lameduck: bool, sync: &Sync) -> Tick {
        if crate::operations::failure::core_failed() {
            tracing::error!(
                "a serving core panicked (see the panic above); stopping kubewire so that it is \
                 restarted, because the dead core's sockets would keep taking a share of the clients"
            );
            return Tick::Stop;
        }
        if self.hub.resets_pending() {
            self.hub.retry_resets(|| self.compiler.snapshot());
            wake_all(&self.wakers);
        }
        self.hub.release_indexes();
        self.refresh_top_gauge();
        if !ready.load(Ordering::Relaxed)
            && !lameduck
            && sync.done
            && self.hub.all_applied(sync.revision)
        {
            ready.store(true, Ordering::Release);
            self.announce();
            return Tick::BecameReady;
        }
        Tick::Nothing
    }

    /// Reloads the config file (with flags over it) and applies what can
    /// change live; names what cannot.
    fn reload_config(
        &mut self,
        cluster: &mut Option<(kube::Client, Watchers)>,
        watch_tx: &tokio::sync::mpsc::UnboundedSender<WatchEvent>,
    ) {
        let Some(path) = self.reloading.path.clone() else {
            tracing::info!("no --config file was given; nothing to reload");
            return;
        };
        let mut new = match Config::load(&path) {
            Ok(config) => config,
            Err(error) => {
                tracing::error!("{error}; keeping the running configuration");
                return;
            }
        };
        self.reloading.flags.apply(&mut new);
        if let Err(error) = new.validate() {
            tracing::error!("{error}; keeping the running configuration");
            return;
        }
        let changed = self.config.changed_keys(&new);
        let is_live = |key: &&str| KEYS.iter().any(|s| s.key == *key && s.live);
        let (live, restart): (Vec<&str>, Vec<&str>) = changed.into_iter().partition(is_live);
        if !restart.is_empty() {
            tracing::warn!(
                keys = ?restart,
                "these settings cannot change while kubewire runs; restart it to apply them"
            );
        }
        if live.is_empty() {
            tracing::info!("configuration reloaded; nothing that can change live changed");
            return;
        }
        let old = std::mem::replace(&mut self.config.log, new.log.clone());
        // Only live keys are taken; the rest stay as they run, so the next
        // reload names them again until a restart.
        self.config.log.format = old.format;
        if new.log.level != old.level {
            match self.reloading.log.set_level(&new.log.level) {
                Ok(crate::operations::logging::LevelChange::Applied) => {}
                Ok(crate::operations::logging::LevelChange::EnvWins) => {
                    tracing::warn!("log.level changed, but RUST_LOG is set and stays in force");
                }
                Err(error) => tracing::error!(%error, "log.level not applied"),
            }
        }
        self.query_log
            .set(new.log.query_log_sample, new.log.query_log_max_per_second);

        let kubernetes = &mut self.config.kubernetes;
        let filters_changed = kubernetes.namespaces != new.kubernetes.namespaces
            || kubernetes.labels != new.kubernetes.labels;
        kubernetes.namespaces = new.kubernetes.namespaces.clone();
        kubernetes.labels = new.kubernetes.labels.clone();
        kubernetes.endpoint_pod_names = new.kubernetes.endpoint_pod_names;
        kubernetes.ignore_empty_service = new.kubernetes.ignore_empty_service;
        kubernetes.zonal = new.kubernetes.zonal;
        self.config.dns.ttl_seconds = new.dns.ttl_seconds;
        self.config.k8s_external = new.k8s_external.clone();

        // Our own addresses were read at start and are not a live setting.
        let own_ips = self.compiler.settings().own_ips.clone();
        let relist_slices = self.compiler.set_settings(kubewire_answer::Settings {
            own_ips,
            ..self.config.compiler_settings()
        });
        if filters_changed || relist_slices {
            match (cluster.as_mut(), &mut self.source) {
                (Some((client, watchers)), Source::Cluster { options, .. }) => {
                    *options = crate::watch_options(&self.config);
                    // The new watchers relist; each list lands as a Reset,
                    // applied as a diff, so unchanged names never flap.
                    *watchers = spawn_watchers(client, options, watch_tx);
                }
                // Manifests are filtered here: read them again, filtered anew.
                (_, Source::Manifests(..)) => self.reload_manifests(),
                _ => tracing::warn!(
                    "kubernetes.namespaces, kubernetes.labels and turning kubernetes.endpoint_pod_names on apply to the cluster and manifests sources, not the demo: restart kubewire to see them there"
                ),
            }
        }
        let published = self.publish();
        tracing::info!(
            keys = ?live,
            revision = published.map(|(revision, _)| revision),
            "configuration reloaded"
        );
    }

    fn apply_watch_events(&mut self, batch: Vec<WatchEvent>, sync: &mut Sync, started: Instant) {
        for event in batch {
            let kind = match &event {
                WatchEvent::Change(change) => Some(match change {
                    ObjectChange::Upsert(object) => object.kind(),
                    ObjectChange::Remove(kind, _) | ObjectChange::Reset(kind, _) => *kind,
                }),
                WatchEvent::Listed(kind) => Some(*kind),
                _ => None,
            };
            if let Some(kind) = kind
                && let Some(error) = sync.failures.remove(&kind)
            {
                tracing::info!(?kind, previous_error = %error, "watch recovered");
            }
            match event {
                WatchEvent::Change(change) => {
                    if let ObjectChange::Upsert(_) | ObjectChange::Remove(..) = &change
                        && let Some(kind) = kind
                    {
                        self.metrics.watch_event(kind);
                    }
                    self.compiler.apply(change);
                }
                WatchEvent::Listed(kind) => {
                    self.metrics.relisted(kind);
                    sync.pending.remove(&kind);
                }
                WatchEvent::Failed { kind, error } => {
                    if sync.failures.get(&kind) != Some(&error) {
                        tracing::warn!(?kind, %error, "watch failed; retrying with backoff while the last good state keeps serving");
                        sync.failures.insert(kind, error);
                    }
                }
                WatchEvent::Skipped { kind, error } => {
                    if sync.skipped.len() < 10_000 && sync.skipped.insert(error.clone()) {
                        tracing::warn!(?kind, %error, "object skipped");
                    }
                }
            }
        }
        let first_sync = !sync.done && sync.pending.is_empty();
        if first_sync {
            self.compiler.mark_synced();
        }
        self.publish();
        if first_sync {
            self.metrics.set_synced(true);
            sync.done = true;
            sync.revision = self.compiler.revision();
            crate::release_free_memory();
            let counts = self.compiler.object_counts();
            tracing::info!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                services = counts.services,
                endpointslices = counts.slices,
                pods = counts.pods,
                "initial sync with the API server complete"
            );
        }
    }

    /// Ships what changed to the cores and wakes them; returns the revision
    /// and how many names changed, if anything did.
    fn publish(&mut self) -> Option<(u64, usize)> {
        let delta = self.compiler.take_delta()?;
        let shipped = (delta.revision, delta.changes.len());
        tracing::debug!(
            target: PROPAGATION_TARGET,
            revision = shipped.0,
            names_changed = shipped.1,
            "delta published"
        );
        if self.published.len() >= PUBLISHED_KEPT {
            self.published.pop_front();
        }
        self.published
            .push_back((shipped.0, kubewire_answer::model::unix_ms_now()));
        self.hub.publish(delta, || self.compiler.snapshot());
        wake_all(&self.wakers);
        Some(shipped)
    }

    fn stop(&self) {
        self.shutdown.store(true, Ordering::Release);
        wake_all(&self.wakers);
    }

    fn announce(&self) {
        let counts = self.compiler.object_counts();
        let s = &self.startup;
        tracing::info!(
            cores = ?s.cpus,
            listen = ?s.listen,
            zones = ?s.zones,
            source = %s.source,
            services = counts.services,
            endpointslices = counts.slices,
            pods = counts.pods,
            namespaces = counts.namespaces,
            names = self.compiler.name_count(),
            "ready"
        );
        self.report_memory();
    }

    /// Logs what the node holds, by part, from its own accounting (the
    /// compiler's parts, each core's own, and the heap as glibc counts it);
    /// `kubewire-bench sync` turns it into a table per name and per object.
    fn report_memory(&self) {
        let parts = self.compiler.memory();
        let (heap_in_use, heap_free) = crate::heap_usage();
        let core_bytes: Vec<u64> = self.hub.statuses().map(|s| s.own_bytes()).collect();
        tracing::info!(
            names = parts.names,
            entry_bytes = parts.entry_bytes,
            entry_key_bytes = parts.entry_parts.key,
            entry_answer_header_bytes = parts.entry_parts.answer_headers,
            entry_record_bytes = parts.entry_parts.records,
            compiler_table_bytes = parts.table_bytes,
            shared_index_bytes = parts.index_bytes,
            unit_bytes = parts.unit_bytes,
            model_table_bytes = parts.model_table_bytes,
            model_bytes = parts.model_bytes,
            core_own_bytes = ?core_bytes,
            heap_in_use_bytes = heap_in_use,
            heap_free_bytes = heap_free,
            "memory"
        );
    }

    fn reload_manifests(&mut self) {
        let Source::Manifests(path, set) = &mut self.source else {
            return;
        };
        match set.reload(path) {
            Ok(errors) => {
                for error in errors {
                    tracing::error!("{error}; keeping the last good objects from this file");
                }
            }
            Err(error) => {
                tracing::error!("{error}; keeping the last good state");
                return;
            }
        }
        let filter = match crate::sources::manifests::Filter::new(
            &self.config.kubernetes.namespaces,
            &self.config.kubernetes.labels,
        ) {
            Ok(filter) => filter,
            Err(error) => {
                tracing::error!(%error, "keeping the last good state");
                return;
            }
        };
        for (kind, objects) in set.by_kind(&filter) {
            for change in ObjectChange::relist(kind, objects) {
                self.compiler.apply(change);
            }
        }
        if let Some((revision, changes)) = self.publish() {
            tracing::info!(revision, names_changed = changes, "manifests reloaded");
        }
    }
}

/// Waits for a burst of file events to settle.
async fn debounce(events: &mut tokio::sync::mpsc::UnboundedReceiver<()>) {
    loop {
        // Events of the burst already queued do not extend the wait; only
        // those that arrive during it do.
        while events.try_recv().is_ok() {}
        tokio::time::sleep(DEBOUNCE).await;
        if events.try_recv().is_err() {
            break;
        }
    }
}

/// Watches a manifest file (through its directory, so that replaced files
/// and ConfigMap symlink swaps are seen) or a directory.
fn watch_files(
    path: &std::path::Path,
    events: tokio::sync::mpsc::UnboundedSender<()>,
) -> notify::Result<notify::RecommendedWatcher> {
    use notify::{EventKind, RecursiveMode, Watcher};
    let target = path.to_path_buf();
    let is_dir = path.is_dir();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        // Opening and reading a file is not a change (and our own reads would loop).
        if matches!(event.kind, EventKind::Access(_)) {
            return;
        }
        let relevant = is_dir
            || event
                .paths
                .iter()
                .any(|p| p == &target || p.file_name() == target.file_name());
        if relevant {
            let _ = events.send(());
        }
    })?;
    let watched = if is_dir {
        path.to_path_buf()
    } else {
        match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        }
    };
    watcher.watch(&watched, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}
