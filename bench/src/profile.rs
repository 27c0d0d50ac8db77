//! `--profile`: records the server with `perf record -g` while the load
//! runs, then folds the stacks and draws a flamegraph SVG with `inferno`.
//!
//! Needs `perf` (`apt-get install linux-perf`) and permission to profile the
//! server (root, or `kernel.perf_event_paranoid` <= 1). For readable stacks,
//! build the server with `cargo build --profile profiling` (release speed,
//! full debug symbols).

use inferno::collapse::Collapse;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A `perf record` running against one process.
#[derive(Debug)]
pub struct Recording {
    child: Child,
    data: PathBuf,
}

/// Starts `perf record -g` on `pid`, writing to a file beside `svg`
/// (`NAME.perf.data` for `NAME.svg`), which is kept.
pub fn start(pid: u32, svg: &Path) -> io::Result<Recording> {
    let data = svg.with_extension("perf.data");
    let child = Command::new("perf")
        .args(["record", "-g", "-F", "999", "-p", &pid.to_string(), "-o"])
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            io::Error::other(format!(
                "cannot run perf: {e}; install it (apt-get install linux-perf) or drop --profile"
            ))
        })?;
    Ok(Recording { child, data })
}

impl Recording {
    /// Stops the recording (SIGINT, as perf expects), folds the stacks and
    /// writes the flamegraph to `svg`. Returns the number of samples folded.
    pub fn finish(self, svg: &Path, title: &str) -> io::Result<usize> {
        interrupt(self.child.id());
        let output = self.child.wait_with_output()?;
        if !self.data.exists() {
            return Err(io::Error::other(format!(
                "perf recorded nothing: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        let script = Command::new("perf")
            .args(["script", "-i"])
            .arg(&self.data)
            .stderr(Stdio::null())
            .output()?;
        let mut folded = Vec::new();
        inferno::collapse::perf::Folder::default().collapse(&script.stdout[..], &mut folded)?;
        let samples = folded.iter().filter(|&&b| b == b'\n').count();
        let mut options = inferno::flamegraph::Options::default();
        options.title = title.to_string();
        let file = std::fs::File::create(svg)?;
        inferno::flamegraph::from_reader(&mut options, &folded[..], io::BufWriter::new(file))?;
        // The recording stays beside the flamegraph, for `perf report`.
        Ok(samples)
    }
}

#[allow(unsafe_code)] // kill(2) on the perf process we started
fn interrupt(pid: u32) {
    // SAFETY: sends SIGINT to our own child process.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGINT);
    }
}
