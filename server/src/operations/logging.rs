//! tracing output, as text or JSON, with a filter that a config reload can
//! change while the server runs.

use crate::operations::config::LogFormat;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

/// Changes the log filter of the running process.
#[derive(Debug)]
pub struct LogControl {
    handle: reload::Handle<EnvFilter, Registry>,
    /// RUST_LOG was set at start, and wins over `log.level`.
    env_wins: bool,
}

/// What a filter change did.
#[derive(Debug, PartialEq, Eq)]
pub enum LevelChange {
    /// The new filter is in force.
    Applied,
    /// RUST_LOG is set and stays in force.
    EnvWins,
}

impl LogControl {
    /// Replaces the filter with `level` (unless RUST_LOG is set).
    pub fn set_level(&self, level: &str) -> Result<LevelChange, String> {
        if self.env_wins {
            return Ok(LevelChange::EnvWins);
        }
        let filter = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
        self.handle
            .reload(filter)
            .map_err(|e| e.to_string())
            .map(|()| LevelChange::Applied)
    }
}

/// The log target of a change's stages on its way to the cores: a watch
/// event received, taken by the control-plane thread, its delta published,
/// and applied on each core (debug level; `kubewire-bench propagation
/// --stages` turns it on and reads the timestamps).
pub const PROPAGATION_TARGET: &str = "kubewire::propagation";

/// Installs the global subscriber: stderr, in `format`, filtered by RUST_LOG
/// if set, else by `level`.
pub fn init(format: LogFormat, level: &str) -> LogControl {
    let from_env = EnvFilter::try_from_default_env().ok();
    let env_wins = from_env.is_some();
    let filter = from_env
        .or_else(|| EnvFilter::try_new(level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(ansi)
                    .with_writer(std::io::stderr),
            )
            .init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr),
            )
            .init(),
    }
    LogControl { handle, env_wins }
}

/// How the query log samples (the sampler itself is on each core): shared
/// by every core, and changed live by a reload.
#[derive(Debug, Default)]
pub struct QueryLogSampling {
    /// Log one query in this many; 0 is off.
    pub sample: std::sync::atomic::AtomicU32,
    /// Lines per second per core, at most.
    pub max_per_second: std::sync::atomic::AtomicU32,
}

impl QueryLogSampling {
    /// Sets both values.
    pub fn set(&self, sample: u32, max_per_second: u32) {
        use std::sync::atomic::Ordering;
        self.sample.store(sample, Ordering::Relaxed);
        self.max_per_second.store(max_per_second, Ordering::Relaxed);
    }
}
