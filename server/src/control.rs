//! The control plane: a tokio runtime on its own thread (never on a serving
//! core) that owns the compiler and the delta hub, watches the source of
//! objects, ships deltas to the cores and wakes them, and handles signals.

use crate::manifests::ManifestSet;
use kubewire_control_plane::{Compiler, DeltaHub, ObjectChange};
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Quiet time after a file event before reloading, so that an editor's
/// several writes become one reload.
const DEBOUNCE: Duration = Duration::from_millis(20);

/// What the control plane owns.
#[derive(Debug)]
pub struct Control {
    /// The compiler, with the initial state already compiled.
    pub compiler: Compiler,
    /// The hub, with every core subscribed.
    pub hub: DeltaHub,
    /// One waker per core.
    pub wakers: Vec<UnixStream>,
    /// The manifest path to watch, with the objects loaded from it.
    pub manifests: Option<(PathBuf, ManifestSet)>,
    /// Set on shutdown.
    pub shutdown: Arc<AtomicBool>,
    /// For the startup log line.
    pub startup: Startup,
}

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

fn wake_all(wakers: &[UnixStream]) {
    for waker in wakers {
        // WouldBlock means a wake-up is already pending: enough.
        let _ = (&*waker).write(&[1]);
    }
}

impl Control {
    async fn run(mut self) {
        use tokio::signal::unix::{SignalKind, signal};
        let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel::<()>();
        let _watcher = match &self.manifests {
            Some((path, _)) => match watch(path, events_tx) {
                Ok(watcher) => Some(watcher),
                Err(error) => {
                    tracing::error!(path = %path.display(), %error, "cannot watch manifests; edits will not be picked up");
                    None
                }
            },
            None => None,
        };
        let (Ok(mut terminate), Ok(mut interrupt)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install signal handlers; stopping");
            self.stop();
            return;
        };
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut announced = false;
        loop {
            tokio::select! {
                _ = terminate.recv() => { tracing::info!("SIGTERM: stopping"); break; }
                _ = interrupt.recv() => { tracing::info!("SIGINT: stopping"); break; }
                Some(()) = events.recv() => {
                    // Debounce: wait for the writes to settle, then reload once.
                    loop {
                        tokio::time::sleep(DEBOUNCE).await;
                        if events.try_recv().is_err() { break; }
                        while events.try_recv().is_ok() {}
                    }
                    self.reload_manifests();
                }
                _ = tick.tick() => {
                    if self.hub.resets_pending() {
                        self.hub.retry_resets(&self.compiler);
                        wake_all(&self.wakers);
                    }
                    if !announced && self.hub.all_applied(self.compiler.revision()) {
                        announced = true;
                        self.announce();
                        tick = tokio::time::interval(Duration::from_millis(100));
                    }
                }
            }
        }
        self.stop();
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
    }

    fn reload_manifests(&mut self) {
        let Some((path, set)) = &mut self.manifests else {
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
        for (kind, objects) in set.by_kind() {
            self.compiler.apply(ObjectChange::Reset(kind, objects));
        }
        if let Some(delta) = self.compiler.take_delta() {
            let (revision, changes) = (delta.revision, delta.changes.len());
            self.hub.publish(delta, &self.compiler);
            wake_all(&self.wakers);
            tracing::info!(revision, names_changed = changes, "manifests reloaded");
        }
    }
}

/// Watches a manifest file (through its directory, so that replaced files
/// and ConfigMap symlink swaps are seen) or a directory.
fn watch(
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
        path.parent()
            .map(|p| {
                if p.as_os_str().is_empty() {
                    std::path::Path::new(".")
                } else {
                    p
                }
            })
            .unwrap_or(path)
            .to_path_buf()
    };
    watcher.watch(&watched, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}
