//! The kubewire server: serving cores, the control plane thread, and the
//! sources of cluster objects. `main.rs` only parses flags and logs errors.

pub mod batch;
pub mod cli;
pub mod cluster;
pub mod control;
pub mod core;
pub mod manifests;
pub mod preflight;

use anyhow::{Context, bail};
use cli::Args;
use control::Source;
use kubewire_control_plane::watch::WatchOptions;
use kubewire_control_plane::{Compiler, DeltaHub, ObjectChange, PodMode, Settings};
use kubewire_wire::NameBuf;
use manifests::{DEMO_MANIFEST, ManifestSet, parse_manifest};
use std::os::fd::IntoRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
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

/// Compiler settings from the flags.
pub fn settings(args: &Args) -> anyhow::Result<Settings> {
    let mut zones = Vec::new();
    for zone in &args.zones {
        let name = NameBuf::from_text(zone)
            .map_err(|e| anyhow::anyhow!("--zone {zone:?} is not a valid DNS name: {e}"))?;
        zones.push(name.to_lowercase());
    }
    Ok(Settings {
        zones,
        ttl: args.ttl,
        pod_mode: args.pods,
        endpoint_pod_names: args.endpoint_pod_names,
        ..Settings::default()
    })
}

/// Runs the server until SIGINT or SIGTERM.
pub fn run(args: Args) -> anyhow::Result<()> {
    // The source first: a bad manifest or no cluster stops us before anything starts.
    let (objects, source, source_text) = if args.demo {
        let objects = parse_manifest(Path::new("<embedded demo>"), DEMO_MANIFEST)?;
        (objects, Source::Fixed, "embedded demo cluster".to_string())
    } else if let Some(path) = &args.manifests {
        let mut set = ManifestSet::default();
        let errors = set.reload(path)?;
        if let Some(first) = errors.into_iter().next() {
            bail!("{first}; fix the manifest and start again");
        }
        let objects = set
            .by_kind()
            .into_iter()
            .flat_map(|(_, list)| list)
            .collect();
        (
            objects,
            Source::Manifests(path.clone(), set),
            format!("manifests {}", path.display()),
        )
    } else {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let found = runtime.block_on(cluster::find(args.kubeconfig.as_deref()))?;
        let options = WatchOptions {
            pods: args.pods == PodMode::Verified,
            namespaces: (!args.namespaces.is_empty()).then(|| args.namespaces.clone()),
            labels: args.labels.clone(),
        };
        let text = format!("{} ({})", found.origin, found.config.cluster_url);
        let source = Source::Cluster {
            config: Box::new(found.config),
            options,
            startup_timeout: std::time::Duration::from_millis(args.startup_timeout_ms),
        };
        (Vec::new(), source, text)
    };

    let allowed = preflight::allowed_cpus();
    let cpus = preflight::choose_cpus(args.cores.as_deref(), &allowed)?;
    preflight::check_memlock(cpus.len())?;
    preflight::check_io_uring()?;
    for &addr in &args.listen {
        preflight::check_free(addr)?;
    }

    let mut compiler = Compiler::new(settings(&args)?);
    for object in objects {
        compiler.apply(ObjectChange::Upsert(object));
    }
    // A fixed source is whole from the start; the API's first sync comes later.
    if !matches!(source, Source::Cluster { .. }) {
        compiler.mark_synced();
    }
    compiler.take_delta();

    let shutdown = Arc::new(AtomicBool::new(false));
    let mut hub = DeltaHub::new(CORE_CHANNEL_CAPACITY);
    let mut wakers = Vec::new();
    let mut handles = Vec::new();
    for (index, &cpu) in cpus.iter().enumerate() {
        let updates = hub.subscribe(&compiler);
        let (waker, wake_end) =
            UnixStream::pair().context("creating a core's wake-up socket pair")?;
        waker
            .set_nonblocking(true)
            .context("setting the wake-up socket non-blocking")?;
        let mut udp_fds = Vec::new();
        let mut tcp_fds = Vec::new();
        for &addr in &args.listen {
            udp_fds.push(preflight::udp_socket(addr)?);
            tcp_fds.push(preflight::tcp_listener(addr)?);
        }
        let setup = core::CoreSetup {
            index,
            cpu,
            udp_fds,
            tcp_fds,
            updates,
            wake_fd: wake_end.into_raw_fd(),
            shutdown: Arc::clone(&shutdown),
            udp_io: args.udp_io,
            tcp: core::TcpLimits {
                idle_timeout_ms: args.tcp_idle_timeout_ms,
                max_connections: args.tcp_max_connections,
            },
        };
        let handle = core::spawn(setup)
            .map_err(|e| anyhow::anyhow!("core {index} on CPU {cpu} could not start: {e}"))?;
        handles.push((index, cpu, handle));
        wakers.push(waker);
    }

    let startup = control::Startup {
        cpus,
        listen: args.listen.clone(),
        zones: args.zones.clone(),
        source: source_text,
    };
    let control = control::spawn(control::Control {
        compiler,
        hub,
        wakers,
        source,
        shutdown: Arc::clone(&shutdown),
        startup,
        health_addr: Some(args.health_addr),
        ready_addr: Some(args.ready_addr),
    })
    .context("starting the control plane thread")?;

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
