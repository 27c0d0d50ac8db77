//! The kubewire server: serving cores, the control plane thread, and the
//! sources of cluster objects. `main.rs` only parses flags and logs errors.

pub mod operations;
pub mod prefetch;
pub mod resolving;
pub mod serving;
pub mod sources;

use crate::sources::watch::WatchOptions;
use anyhow::{Context, bail};
use cli::Flags;
use config::{Config, DnsName, SourceKind};
use control_plane::Source;
use kubewire_answer::{Compiler, DeltaHub, Object, ObjectChange, PodMode};
use manifests::{DEMO_MANIFEST, ManifestSet, parse_manifest};
use operations::{cli, config, corefile, logging, metrics, nodelocal, preflight};
use serving::{cores, querylog};
use sources::{cluster, control_plane, manifests};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// Updates a core may have waiting before it counts as behind and gets a Reset.
const CORE_CHANNEL_CAPACITY: usize = 64;

/// Hands free heap back to the system. The first sync allocates and frees a
/// lot (API objects, list buffers, the first compile); glibc keeps that
/// memory mapped unless asked, which shows as RSS the server does not use.
#[allow(unsafe_code)] // a libc call with no arguments to uphold
pub fn release_free_memory() {
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The heap as glibc's allocator counts it: bytes in use (small blocks and
/// mmapped ones), and bytes it holds free (not returned to the kernel).
#[allow(unsafe_code)] // a libc call that fills a plain struct
pub fn heap_usage() -> (u64, u64) {
    // SAFETY: mallinfo2 takes no arguments and returns counts by value.
    let info = unsafe { libc::mallinfo2() };
    ((info.uordblks + info.hblkhd) as u64, info.fordblks as u64)
}

/// Keeps glibc's mmap threshold at its start value (128 KiB). Left alone,
/// glibc raises it to the size of any mmapped block freed, up to 32 MiB;
/// from then on the compiler's big hash tables live in the heap, and each
/// one a resize frees stays there as a hole. Fixed, they are mmapped and go
/// back to the kernel when freed: 10 MiB less RSS after a 100k-pod sync.
#[allow(unsafe_code)] // a libc call with two integer arguments
pub fn fix_mmap_threshold() {
    // SAFETY: mallopt only changes an allocator parameter; glibc is
    // thread-safe here and no allocation is in flight on another thread yet.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10);
    }
}

/// What the cluster source watches, from the configuration (and, in
/// node-local mode, `$NODE_NAME`).
pub fn watch_options(config: &Config) -> WatchOptions {
    watch_options_on(config, std::env::var("NODE_NAME").ok())
}

/// [`watch_options`] on the node named `node`.
pub fn watch_options_on(config: &Config, node: Option<String>) -> WatchOptions {
    let k = &config.kubernetes;
    // A node-local instance's autopath serves only its own node's pods;
    // verified pod records need every pod.
    let pods_of_node = (config.node_local.enabled && k.autopath && k.pods != PodMode::Verified)
        .then_some(node)
        .flatten()
        .filter(|node| !node.is_empty());
    WatchOptions {
        pods: k.pods == PodMode::Verified || k.autopath,
        pods_of_node,
        namespaces: (!k.namespaces.is_empty()).then(|| k.namespaces.clone()),
        service_imports: !k.multicluster.is_empty(),
        labels: (!k.labels.is_empty()).then(|| k.labels.clone()),
    }
}

/// How the running server can reload its configuration.
#[derive(Debug)]
pub struct Reloading {
    /// The `--config` file, if any.
    pub path: Option<PathBuf>,
    /// The flags and environment, applied over the file again on reload.
    pub flags: Flags,
    /// The log filter.
    pub log: logging::LogControl,
}

/// Runs the server until SIGINT, or SIGTERM and the lameduck period.
pub fn run(config: Config, reloading: Reloading) -> anyhow::Result<()> {
    metrics::count_panics();
    // The source first: a bad manifest or no cluster stops us before anything starts.
    let (objects, source, source_text) = open_source(&config)?;
    let node = set_up_node(&config)?;
    let skip_teardown = config.node_local.skip_teardown;
    let config_listen = config.dns.listen.clone();
    let result = serve(
        config,
        reloading,
        objects,
        source,
        source_text,
        node.clone(),
    );
    if let Some(node) = node {
        // The other instance of an HA pair still serves: leave it what it needs.
        let shared_with = config_listen
            .iter()
            .find(|&&addr| preflight::udp_served_by_others(addr));
        match shared_with {
            Some(addr) if !skip_teardown => tracing::info!(
                %addr,
                "node-local: another instance still serves this address; leaving the interface and rules to it"
            ),
            _ => tear_down_node(&node, skip_teardown),
        }
    }
    result
}

/// Node-local mode: the interface and rules, before anything binds.
fn set_up_node(config: &Config) -> anyhow::Result<Option<nodelocal::NodeNetwork>> {
    let Some(node) = nodelocal::NodeNetwork::from_config(config)? else {
        return Ok(None);
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let repaired = runtime.block_on(node.ensure())?;
    tracing::info!(
        interface = node.interface(),
        addresses = ?config.node_local.addresses,
        rules = ?node.rule_tool(),
        created = repaired.interface,
        rules_installed = repaired.rules,
        "node-local: the interface holds the addresses, and DNS to them skips conntrack"
    );
    Ok(Some(node))
}

/// Node-local mode at exit: removes the interface and rules unless
/// `node_local.skip_teardown` is set.
fn tear_down_node(node: &nodelocal::NodeNetwork, skip: bool) {
    if skip {
        tracing::info!(
            interface = node.interface(),
            "node-local: leaving the interface and rules in place (skip_teardown)"
        );
        return;
    }
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|runtime| {
            runtime
                .block_on(node.teardown())
                .map_err(|e| operations::failure::Chain(&e).to_string())
        });
    match result {
        Ok(()) => tracing::info!(
            interface = node.interface(),
            "node-local: removed the interface and rules"
        ),
        Err(error) => {
            tracing::error!(%error, "node-local: could not remove the interface and rules; remove them by hand or start kubewire again, which adopts them")
        }
    }
}

/// Everything after the source and the node's networking are ready.
fn serve(
    config: Config,
    reloading: Reloading,
    objects: Vec<Object>,
    source: Source,
    source_text: String,
    node: Option<nodelocal::NodeNetwork>,
) -> anyhow::Result<()> {
    let cpus = check_host(&config)?;
    let forward_plan = forward_plan(&config)?;
    let compiler = first_compile(&config, objects, &source)?;

    let shutdown = Arc::new(AtomicBool::new(false));
    let query_log = Arc::new(querylog::QueryLogSampling::default());
    query_log.set(
        config.log.query_log_sample,
        config.log.query_log_max_per_second,
    );
    let mut hub = DeltaHub::new(CORE_CHANNEL_CAPACITY);
    let cores = spawn_cores(
        &config,
        &cpus,
        &mut hub,
        &compiler,
        forward_plan.as_ref(),
        &shutdown,
        &query_log,
    )?;
    if let Some(plan) = &forward_plan {
        start_loop_probes(&config, plan)?;
    }

    let watched = watch_options(&config);
    let control_metrics = Arc::new(
        metrics::ControlMetrics::new(matches!(source, Source::Cluster { .. }))
            .with_node_local(node.is_some())
            .with_watched(watched.pods, watched.service_imports),
    );
    let scrape = cores.counters.map(|counters| {
        Arc::new(
            metrics::Scrape::new(
                &config.dns.listen,
                &config.tls.listen,
                &config.tls.https_listen,
                counters.cores,
                Arc::clone(&control_metrics),
                (
                    forward_plan
                        .iter()
                        .flat_map(|p| p.upstreams.iter().map(|u| u.to_string()))
                        .collect(),
                    counters.forward,
                ),
                counters.cache,
            )
            .with_autopath(config.kubernetes.autopath)
            .with_dnstap(counters.dnstap_dropped)
            .with_top(!cores.top.is_empty()),
        )
    });
    let startup = control_plane::Startup {
        cpus,
        listen: config.dns.listen.clone(),
        zones: config.dns.zones.iter().map(ToString::to_string).collect(),
        source: source_text,
    };
    let control = control_plane::spawn(control_plane::Control {
        compiler,
        hub,
        wakers: cores.wakers,
        source,
        shutdown: Arc::clone(&shutdown),
        startup,
        config,
        reloading,
        query_log,
        metrics: control_metrics,
        scrape,
        node,
        mailboxes: cores.mailboxes,
        top: cores.top,
        top_gauge_at: None,
        published: std::collections::VecDeque::new(),
    })
    .context("starting the control plane thread")?;
    wait_for(cores.handles, control)
}

/// Reads the source of objects: the demo, the manifests (every file must
/// parse), or the cluster's client configuration (not yet contacted).
fn open_source(config: &Config) -> anyhow::Result<(Vec<Object>, Source, String)> {
    if config.node_local.forwards_cluster_names() {
        let text = "none: node-local mode forwards the cluster zones".to_string();
        return Ok((Vec::new(), Source::Fixed, text));
    }
    Ok(match config.source.kind {
        SourceKind::Demo => {
            let objects = parse_manifest(Path::new("<embedded demo>"), DEMO_MANIFEST)?;
            (objects, Source::Fixed, "embedded demo cluster".to_string())
        }
        SourceKind::Manifests => {
            let path = PathBuf::from(&config.source.manifests);
            let mut set = ManifestSet::default();
            let errors = set.reload(&path)?;
            if let Some(first) = errors.into_iter().next() {
                bail!("{first}; fix the manifest and start again");
            }
            let filter =
                manifests::Filter::new(&config.kubernetes.namespaces, &config.kubernetes.labels)
                    .map_err(|e| anyhow::anyhow!(e))?;
            let objects = set
                .by_kind(&filter)
                .into_iter()
                .flat_map(|(_, list)| list)
                .collect();
            let text = format!("manifests {}", path.display());
            (objects, Source::Manifests(path, set), text)
        }
        SourceKind::Cluster => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let kubeconfig = (!config.source.kubeconfig.is_empty())
                .then(|| Path::new(&config.source.kubeconfig));
            let found = runtime.block_on(cluster::find(kubeconfig))?;
            let text = format!("{} ({})", found.origin, found.config.cluster_url);
            let source = Source::Cluster {
                config: Box::new(found.config),
                options: watch_options(config),
                startup_timeout: std::time::Duration::from_millis(
                    config.kubernetes.startup_timeout_ms,
                ),
            };
            (Vec::new(), source, text)
        }
    })
}

/// Checks what the cores need of this host; returns their CPUs.
fn check_host(config: &Config) -> anyhow::Result<Vec<usize>> {
    let allowed = preflight::allowed_cpus();
    let cpus = preflight::choose_cpus(&config.dns.cores, &allowed)?;
    preflight::check_memlock(cpus.len())?;
    preflight::check_io_uring()?;
    for &addr in &config.dns.listen {
        // An HA pair shares the node-local addresses on purpose (if the
        // holder is no kubewire, binding later fails and says so).
        if config.node_local.enabled && preflight::udp_served_by_others(addr) {
            tracing::info!(%addr, "node-local: sharing this address with another instance (SO_REUSEPORT), as an HA pair");
        } else {
            preflight::check_free(addr)?;
        }
    }
    Ok(cpus)
}

/// What is forwarded, and where; `None` when nothing is.
fn forward_plan(config: &Config) -> anyhow::Result<Option<Arc<resolving::ForwardPlan>>> {
    let mut tcp_zones = Vec::new();
    if config.node_local.forwards_cluster_names() {
        let upstreams = config
            .node_local
            .cluster_upstreams()
            .map_err(|e| anyhow::anyhow!("node_local.cluster_names: {e}"))?;
        let zones: Vec<&str> = config.dns.zones.iter().map(DnsName::as_str).collect();
        let shown: Vec<String> = upstreams.iter().map(ToString::to_string).collect();
        tracing::info!(upstreams = ?shown, ?zones, "node-local: forwarding the cluster zones over TCP");
        for zone in &config.dns.zones {
            tcp_zones.push((zone.clone(), upstreams.clone()));
        }
    }
    let plan = resolving::ForwardPlan::build(&config.forward, &tcp_zones, &config.dns.listen)?
        .map(Arc::new);
    if let Some(plan) = &plan {
        let upstreams: Vec<String> = plan.upstreams.iter().map(ToString::to_string).collect();
        tracing::info!(?upstreams, "forwarding names outside the cluster zones");
    }
    Ok(plan)
}

/// The compiler, with the source's first objects compiled.
fn first_compile(
    config: &Config,
    objects: Vec<Object>,
    source: &Source,
) -> anyhow::Result<Compiler> {
    let mut compiler = Compiler::new(config.compiler_settings());
    for object in objects {
        compiler.apply(ObjectChange::Upsert(object));
    }
    // A fixed source is whole from the start; the API's first sync comes later.
    if !matches!(source, Source::Cluster { .. }) {
        compiler.mark_synced();
    }
    compiler.take_delta();
    Ok(compiler)
}

/// The serving cores, started.
struct Cores {
    handles: Vec<(usize, usize, glommio::ExecutorJoinHandle<()>)>,
    /// The control plane's end of each core's wake-up socket.
    wakers: Vec<UnixStream>,
    /// Every core's counters; `None` when metrics are off.
    counters: Option<Counters>,
    /// The cache's mailboxes, for `explain`; `None` without a cache.
    mailboxes: Option<Arc<resolving::cache::Mailboxes>>,
    /// Each core's `kubewire top` counts; empty when the debug endpoint is off.
    top: Vec<operations::top::Published>,
}

/// Every core's counters, for the scrape.
#[derive(Default)]
struct Counters {
    cores: Vec<(
        usize,
        Arc<metrics::CoreMetrics>,
        Arc<kubewire_answer::CoreStatus>,
    )>,
    forward: Vec<Arc<metrics::ForwardMetrics>>,
    cache: Vec<Arc<metrics::CacheMetrics>>,
    /// dnstap events dropped; `None` when dnstap is off.
    dnstap_dropped: Option<Arc<std::sync::atomic::AtomicU64>>,
}

/// The certificate DNS over TLS and HTTPS are served with, read at start;
/// `None` when neither is served.
fn served_tls(
    config: &Config,
) -> anyhow::Result<Option<(operations::tls::Certificates, operations::tls::FileStamps)>> {
    let tls = &config.tls;
    if tls.listen.is_empty() && tls.https_listen.is_empty() {
        return Ok(None);
    }
    let stamps = operations::tls::stamps(tls);
    let served = operations::tls::certificates(tls).context(
        "DNS over TLS and HTTPS cannot start: fix the certificate files, or leave tls.listen and tls.https_listen empty",
    )?;
    tracing::info!(tls_listen = ?tls.listen, https_listen = ?tls.https_listen, cert_file = %tls.cert_file, mutual = !tls.client_ca_file.is_empty(), "serving DNS over TLS and HTTPS");
    Ok(Some((served, stamps)))
}

/// Starts dnstap's writer when `dnstap.to` is set; returns what each core
/// sends through, and the count of events dropped.
fn start_dnstap(
    config: &Config,
    shutdown: &Arc<AtomicBool>,
) -> anyhow::Result<Option<(cores::ServedTap, Arc<std::sync::atomic::AtomicU64>)>> {
    use operations::dnstap::{DnstapPlan, Protocol, Target};
    let settings = &config.dnstap;
    if settings.to.is_empty() {
        return Ok(None);
    }
    let target = Target::parse(&settings.to).map_err(|e| anyhow::anyhow!("dnstap.to {e}"))?;
    let identity = match settings.identity.as_str() {
        "" => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default(),
        given => given.to_string(),
    };
    let version = match settings.version.as_str() {
        "" => format!("kubewire {}", env!("CARGO_PKG_VERSION")),
        given => given.to_string(),
    };
    let plan = DnstapPlan {
        target,
        full: settings.full,
        identity,
        version,
        extra: settings.extra.clone(),
    };
    tracing::info!(to = %plan.target, full = plan.full, "dnstap: sending every query and upstream exchange");
    let (tap, dropped) = operations::dnstap::start(plan, Arc::clone(shutdown))
        .context("starting dnstap's writer thread")?;
    let listens: Vec<_> = (config.dns.listen.iter().map(|&a| (a, Protocol::Tcp)))
        .chain(config.tls.listen.iter().map(|&a| (a, Protocol::Dot)))
        .chain(config.tls.https_listen.iter().map(|&a| (a, Protocol::Doh)))
        .collect();
    Ok(Some((
        cores::ServedTap {
            tap,
            listens: listens.into(),
        },
        dropped,
    )))
}

/// Opens every core's sockets and starts the cores, each with its end of
/// the delta hub, its wake-up socket and, when names are cached, its
/// mailbox.
fn spawn_cores(
    config: &Config,
    cpus: &[usize],
    hub: &mut DeltaHub,
    compiler: &Compiler,
    forward_plan: Option<&Arc<resolving::ForwardPlan>>,
    shutdown: &Arc<AtomicBool>,
    query_log: &Arc<querylog::QueryLogSampling>,
) -> anyhow::Result<Cores> {
    let metrics_on = config.http.metrics_addr.0.is_some();
    let mut counters = Counters::default();
    let mut wakers = Vec::new();
    let mut wake_ends = Vec::new();
    for _ in cpus {
        let (waker, wake_end) =
            UnixStream::pair().context("creating a core's wake-up socket pair")?;
        waker
            .set_nonblocking(true)
            .context("setting the wake-up socket non-blocking")?;
        wakers.push(waker);
        wake_ends.push(wake_end);
    }
    let cache_plan = forward_plan
        .and_then(|_| resolving::cache::CachePlan::build(&config.cache, config.answered_zones()))
        .map(Arc::new);
    let mut cache_inboxes = Vec::new();
    let mut cache_mailboxes = None;
    if cache_plan.is_some() {
        let wakers = wakers
            .iter()
            .map(UnixStream::try_clone)
            .collect::<Result<Vec<_>, _>>()
            .context("sharing the wake-up sockets with the cache")?;
        let (mailboxes, inboxes) = resolving::cache::Mailboxes::new(wakers);
        cache_mailboxes = Some(mailboxes);
        cache_inboxes = inboxes;
    }
    let mut cache_inboxes = cache_inboxes.into_iter();
    // An HA pair's new instance joins the shared addresses only once it
    // answers fully: bound earlier, it would take its share of the queries
    // and answer cluster names SERVFAIL until the first sync.
    let join_when_synced = config.node_local.enabled;
    let autopath = if config.kubernetes.autopath {
        let plan = resolving::autopath::AutopathPlan::from_resolv_conf(
            &config.kubernetes.autopath_resolv_conf,
        )?;
        tracing::info!(
            host_search = ?plan.host_search.iter().map(|d| kubewire_wire::name::to_text(d.as_wire())).collect::<Vec<_>>(),
            "autopath: completing pods' search paths"
        );
        Some(Arc::new(plan))
    } else {
        None
    };
    let served = served_tls(config)?;
    let dnstap = start_dnstap(config, shutdown)?;
    counters.dnstap_dropped = dnstap.as_ref().map(|(_, dropped)| Arc::clone(dropped));
    let mut handles = Vec::new();
    let mut tls_reloads = Vec::new();
    let mut top = Vec::new();
    for ((index, &cpu), wake_end) in cpus.iter().enumerate().zip(wake_ends) {
        let updates = hub.subscribe(|| compiler.snapshot());
        let mut udp_fds = Vec::new();
        let mut tcp_fds = Vec::new();
        for &addr in &config.dns.listen {
            udp_fds.push(preflight::udp_socket(addr, !join_when_synced)?);
            tcp_fds.push(preflight::tcp_listener(addr, !join_when_synced)?);
        }
        let tls = match &served {
            Some((served, _)) => {
                let mut dot_fds = Vec::new();
                for &addr in &config.tls.listen {
                    dot_fds.push(preflight::tcp_listener(addr, !join_when_synced)?);
                }
                let mut doh_fds = Vec::new();
                for &addr in &config.tls.https_listen {
                    doh_fds.push(preflight::tcp_listener(addr, !join_when_synced)?);
                }
                let (reload, reloads) = crossbeam_channel::unbounded();
                tls_reloads.push(reload);
                Some(cores::TlsSetup {
                    dot_fds,
                    doh_fds,
                    dot_addrs: config.tls.listen.clone(),
                    doh_addrs: config.tls.https_listen.clone(),
                    certificates: served.clone(),
                    reloads,
                    handshake_timeout_ms: config.tls.handshake_timeout_ms,
                    https_max_streams: config.tls.https_max_streams,
                })
            }
            None => None,
        };
        let listens =
            config.dns.listen.len() + config.tls.listen.len() + config.tls.https_listen.len();
        let core_metrics = metrics_on.then(|| Arc::new(metrics::CoreMetrics::new(listens)));
        if let Some(core_metrics) = &core_metrics {
            counters
                .cores
                .push((cpu, Arc::clone(core_metrics), Arc::clone(updates.status())));
        }
        let forward_metrics = forward_plan
            .filter(|_| metrics_on)
            .map(|plan| Arc::new(metrics::ForwardMetrics::new(plan.upstreams.len())));
        counters.forward.extend(forward_metrics.clone());
        let cache = match (&cache_plan, &cache_mailboxes, cache_inboxes.next()) {
            (Some(plan), Some(mailboxes), Some(inbox)) => {
                let metrics = metrics_on.then(|| Arc::new(metrics::CacheMetrics::default()));
                counters.cache.extend(metrics.clone());
                Some(cores::CacheSetup {
                    plan: Arc::clone(plan),
                    mailboxes: Arc::clone(mailboxes),
                    inbox,
                    metrics,
                })
            }
            _ => None,
        };
        let setup = cores::CoreSetup {
            index,
            cpu,
            udp_fds,
            tcp_fds,
            bind_when_synced: join_when_synced.then(|| config.dns.listen.clone()),
            tls,
            updates,
            wake_fd: wake_end.into(),
            shutdown: Arc::clone(shutdown),
            udp_io: config.dns.udp_io,
            tcp: cores::TcpLimits {
                idle_timeout_ms: config.tcp.idle_timeout_ms,
                max_connections: config.tcp.max_connections,
            },
            metrics: core_metrics,
            query_log: Arc::clone(query_log),
            forward: forward_plan.cloned(),
            forward_metrics,
            cache,
            autopath: autopath.clone(),
            dnstap: dnstap.as_ref().map(|(tap, _)| tap.clone()),
            top: config.http.debug_addr.0.map(|_| {
                let published = operations::top::Published::default();
                top.push(Arc::clone(&published));
                published
            }),
        };
        let handle = cores::spawn(setup)
            // glommio's error is not Send, so anyhow cannot hold it as a source.
            .map_err(|e| anyhow::anyhow!("core {index} on CPU {cpu} could not start: {e}"))?;
        handles.push((index, cpu, handle));
    }
    if let Some((_, stamps)) = served {
        operations::tls::spawn_reloader(
            config.tls.clone(),
            stamps,
            tls_reloads,
            Arc::clone(shutdown),
        )
        .context("starting the thread that reloads the DNS-over-TLS certificate")?;
    }
    Ok(Cores {
        handles,
        wakers,
        counters: metrics_on.then_some(counters),
        mailboxes: cache_mailboxes,
        top,
    })
}

/// Loop detection through other resolvers: asks ourselves one random name
/// per upstream, now that every core has its sockets.
fn start_loop_probes(config: &Config, plan: &Arc<resolving::ForwardPlan>) -> anyhow::Result<()> {
    let Some(&first) = config.dns.listen.first() else {
        return Ok(());
    };
    let plan = Arc::clone(plan);
    let to = if first.ip().is_unspecified() {
        let loopback: std::net::IpAddr = if first.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        };
        std::net::SocketAddr::new(loopback, first.port())
    } else {
        first
    };
    std::thread::Builder::new()
        .name("kubewire-loop-probe".into())
        .spawn(move || plan.probes.send_all(to, std::time::Duration::from_secs(3)))
        .context("starting the loop probe thread")?;
    Ok(())
}

/// Waits for the cores and the control plane to stop; an error if any
/// failed.
fn wait_for(
    handles: Vec<(usize, usize, glommio::ExecutorJoinHandle<()>)>,
    control: std::thread::JoinHandle<()>,
) -> anyhow::Result<()> {
    let mut failed = false;
    for (index, cpu, handle) in handles {
        if let Err(error) = handle.join() {
            tracing::error!(core = index, cpu, %error, "core stopped with an error");
            failed = true;
        }
    }
    if control.join().is_err() {
        bail!("the control plane thread panicked");
    }
    if failed {
        bail!("a serving core failed; see the log above");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Runs `kubewire config …`; returns the process exit code.
pub fn config_command(action: &cli::ConfigAction, flags: &Flags) -> std::process::ExitCode {
    use std::io::Write;
    use std::process::ExitCode;
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr().lock();
    match action {
        cli::ConfigAction::Check { file } => match Config::load(file) {
            Ok(_) => {
                let _ = writeln!(stdout, "{}: OK", file.display());
                ExitCode::SUCCESS
            }
            Err(error) => {
                let _ = writeln!(stderr, "error: {error}");
                ExitCode::FAILURE
            }
        },
        cli::ConfigAction::Print => match flags.config() {
            Ok(config) => {
                let _ = write!(stdout, "{}", config.to_documented_toml());
                ExitCode::SUCCESS
            }
            Err(error) => {
                let _ = writeln!(stderr, "error: {error}");
                ExitCode::FAILURE
            }
        },
        cli::ConfigAction::FromCorefile { file } => {
            let text = match std::fs::read_to_string(file) {
                Ok(text) => text,
                Err(error) => {
                    let _ = writeln!(
                        stderr,
                        "error: {}: cannot read the Corefile: {error}",
                        file.display()
                    );
                    return ExitCode::FAILURE;
                }
            };
            match corefile::translate(&file.display().to_string(), &text) {
                Ok(translation) => {
                    let _ = write!(stdout, "{}", translation.toml);
                    for note in &translation.untranslated {
                        let _ = writeln!(stderr, "not translated: {note}");
                    }
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    let _ = writeln!(stderr, "error: {error}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Node-local autopath watches only its node's pods; verified pod
    /// records, or no node name, keep the whole cluster's.
    #[test]
    fn node_local_autopath_narrows_the_pod_watch_to_its_node() {
        let mut config = Config::default();
        config.kubernetes.autopath = true;
        let cluster_dns = watch_options_on(&config, Some("node-1".into()));
        assert!(cluster_dns.pods);
        assert_eq!(
            cluster_dns.pods_of_node, None,
            "cluster DNS needs every pod"
        );
        config.node_local.enabled = true;
        let node_local = watch_options_on(&config, Some("node-1".into()));
        assert_eq!(node_local.pods_of_node.as_deref(), Some("node-1"));
        assert_eq!(watch_options_on(&config, None).pods_of_node, None);
        config.kubernetes.pods = PodMode::Verified;
        assert_eq!(
            watch_options_on(&config, Some("node-1".into())).pods_of_node,
            None,
            "verified pod records need every pod"
        );
        config.kubernetes.autopath = false;
        config.kubernetes.pods = PodMode::Insecure;
        assert!(!watch_options_on(&config, Some("node-1".into())).pods);
    }
}
