//! `kubewire-bench propagation`: time from one endpoint change (at the fake
//! API server, or in a watched manifest) to every core answering it, and,
//! with `--stages`, each stage of the way from kubewire's own log.

use crate::{Kubewire, Result};
use kubewire_bench::fake_api::{FakeApi, endpoint_slice, namespace, service};
use kubewire_bench::probe;
use std::net::UdpSocket;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub(crate) fn run(
    binary: &PathBuf,
    source: &str,
    changes: usize,
    probes: usize,
    stages: bool,
) -> Result<()> {
    if stages && source != "api" {
        return Err("--stages times a watch event's way through kubewire; use --source api".into());
    }
    let rust_log = if stages {
        "info,kubewire::propagation=debug".to_string()
    } else {
        "info".to_string()
    };
    let addrs: Vec<String> = (1..=10).map(|i| format!("10.2.0.{i}")).collect();
    let slice = |ready_first: bool| {
        let eps: Vec<(&str, bool, Option<&str>)> = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| (a.as_str(), i != 0 || ready_first, None))
            .collect();
        endpoint_slice("default", "web-a", "web", &eps)
    };
    let objects = |ready_first: bool| {
        vec![
            namespace("default"),
            service("default", "web", "None", &[("http", 80)]),
            slice(ready_first),
        ]
    };
    // One of the two: the fake API, or a manifest file replaced by rename
    // (as an editor or a ConfigMap update does).
    let mut api = None;
    let dir = std::env::temp_dir().join(format!("kubewire-propagation-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let manifest = dir.join("web.json");
    let write_manifest = |ready_first: bool| -> Result<()> {
        let staged = dir.join(".web.json.tmp");
        let list =
            serde_json::json!({"apiVersion": "v1", "kind": "List", "items": objects(ready_first)});
        std::fs::write(&staged, serde_json::to_string(&list)?)?;
        std::fs::rename(&staged, &manifest)?;
        Ok(())
    };
    let (kubewire, _) = if source == "manifests" {
        write_manifest(true)?;
        let path = manifest.to_string_lossy().into_owned();
        Kubewire::spawn(binary, &["--manifests", path.as_str()], &rust_log)?
    } else {
        let fake = FakeApi::start()?;
        fake.apply_all(objects(true));
        let started = Kubewire::start(binary, &fake, &[], &rust_log)?;
        api = Some(fake);
        started
    };
    let (_, ready) = kubewire.wait_for(" ready cores=", Duration::from_secs(30))?;
    // `ready cores=[0, 1] …`: how many cores apply each delta.
    let cores = ready
        .split_once("cores=[")
        .and_then(|(_, rest)| rest.split_once(']'))
        .map_or(1, |(list, _)| list.split(',').count());
    let mut staged: Vec<Stages> = Vec::new();
    let sockets: Vec<UdpSocket> = (0..probes)
        .map(|_| UdpSocket::bind("127.0.0.1:0"))
        .collect::<std::io::Result<_>>()?;
    let mut times = Vec::with_capacity(changes);
    let (mut wrong, mut flapped) = (0u64, 0u64);
    for change in 0..changes {
        let ready_first = change % 2 == 1;
        let (want, old) = if ready_first { (10, 9) } else { (9, 10) };
        std::thread::sleep(Duration::from_millis(20));
        // Lines logged before this change are not its stages.
        while kubewire.lines.try_recv().is_ok() {}
        let wall_start_s = seconds_of_day(std::time::SystemTime::now());
        let start = Instant::now();
        match &api {
            Some(api) => {
                api.apply(slice(ready_first));
            }
            None => write_manifest(ready_first)?,
        }
        // Every probe socket (spread over the cores) asks until it sees the
        // new answer; one that saw it and then sees the old one flapped.
        // A sweep sends on every socket before reading any reply, so it
        // costs one round trip, not one per socket.
        let name = "web.default.svc.cluster.local";
        let mut switched = vec![false; sockets.len()];
        while switched.iter().any(|s| !s) {
            if start.elapsed() > Duration::from_secs(5) {
                return Err(format!("change {change} not seen by every core within 5 s").into());
            }
            let sent: Vec<Option<u16>> = sockets
                .iter()
                .map(|socket| probe::send(socket, kubewire.addr, name, 1))
                .collect();
            for ((socket, id), switched) in sockets.iter().zip(sent).zip(switched.iter_mut()) {
                match id.and_then(|id| probe::receive(socket, id)) {
                    Some((0, count)) if count == want => *switched = true,
                    Some((0, count)) if count == old => flapped += u64::from(*switched),
                    _ => wrong += 1,
                }
            }
        }
        times.push(start.elapsed());
        if stages {
            let seen_s = wall_start_s + start.elapsed().as_secs_f64();
            staged.push(Stages::read(&kubewire, wall_start_s, seen_s, cores)?);
        }
        for socket in &sockets {
            if probe::ask(socket, kubewire.addr, name, 1) != Some((0, want)) {
                flapped += 1;
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    times.sort();
    let pick = |q: f64| {
        times[((times.len() as f64 * q) as usize).min(times.len() - 1)].as_secs_f64() * 1000.0
    };
    println!(
        "{source} change to every core answering ({changes} changes, {probes} probe sockets): p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms; wrong answers {wrong}, flaps {flapped}",
        pick(0.5),
        pick(0.9),
        pick(0.99),
        pick(1.0)
    );
    if stages {
        Stages::print(&mut staged);
    }
    if wrong + flapped > 0 {
        return Err(format!("{wrong} wrong answers and {flapped} flaps").into());
    }
    Ok(())
}

/// One change's way to the cores, in ms from the change, as kubewire's
/// `kubewire::propagation` log lines time it (their UTC timestamps, on the
/// same clock as the bench's).
#[derive(Debug, Clone, Copy)]
struct Stages {
    received_ms: f64,
    taken_ms: f64,
    published_ms: f64,
    applied_ms: f64,
    seen_ms: f64,
}

impl Stages {
    /// Reads the change's log lines: the first event received and taken,
    /// the last delta published, and the `cores`-th delta applied of that
    /// revision. `start_s` and `seen_s` are seconds of the day (UTC).
    fn read(kubewire: &Kubewire, start_s: f64, seen_s: f64, cores: usize) -> Result<Stages> {
        let (mut received_ms, mut taken_ms, mut published_ms) = (None, None, None);
        let mut revision = None;
        let mut applied_ms = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(2);
        while applied_ms.len() < cores {
            let left = deadline
                .checked_duration_since(Instant::now())
                .ok_or("kubewire did not log every stage (is this build's log target kubewire::propagation?)")?;
            let Ok((_, line)) = kubewire.lines.recv_timeout(left) else {
                continue;
            };
            let Some(at) = line.split_whitespace().next().and_then(log_seconds_of_day) else {
                continue;
            };
            let ms = (at - start_s) * 1000.0;
            let field = |name: &str| {
                line.split_whitespace()
                    .find_map(|word| word.strip_prefix(name))
                    .map(str::to_string)
            };
            if line.contains("watch event received") {
                received_ms.get_or_insert(ms);
            } else if line.contains("watch events taken") {
                taken_ms.get_or_insert(ms);
            } else if line.contains("delta published") {
                published_ms = Some(ms);
                revision = field("revision=");
            } else if line.contains("delta applied")
                && revision.is_some()
                && field("revision=") == revision
            {
                applied_ms.push(ms);
            }
        }
        let (Some(received_ms), Some(taken_ms), Some(published_ms)) =
            (received_ms, taken_ms, published_ms)
        else {
            return Err("a stage's log line is missing".into());
        };
        Ok(Stages {
            received_ms,
            taken_ms,
            published_ms,
            applied_ms: applied_ms.into_iter().fold(0.0, f64::max),
            seen_ms: (seen_s - start_s) * 1000.0,
        })
    }

    /// The median of each stage's end, and of each stage's own length.
    fn print(staged: &mut [Stages]) {
        if staged.is_empty() {
            return;
        }
        let median = |staged: &mut [Stages], pick: fn(&Stages) -> f64| {
            staged.sort_by(|a, b| pick(a).total_cmp(&pick(b)));
            pick(&staged[staged.len() / 2])
        };
        println!(
            "stages, median over {} changes (ms from the change; the stage's own length):",
            staged.len()
        );
        let rows: [StageRow; 5] = [
            ("watch event received", |s| s.received_ms, |s| s.received_ms),
            (
                "taken by the control-plane thread",
                |s| s.taken_ms,
                |s| s.taken_ms - s.received_ms,
            ),
            (
                "compiled and published",
                |s| s.published_ms,
                |s| s.published_ms - s.taken_ms,
            ),
            (
                "applied on the last core",
                |s| s.applied_ms,
                |s| s.applied_ms - s.published_ms,
            ),
            (
                "seen_ms by every probe",
                |s| s.seen_ms,
                |s| s.seen_ms - s.applied_ms,
            ),
        ];
        for (name, end, length) in rows {
            println!(
                "  {name:<36} {:>7.3}  {:>7.3}",
                median(staged, end),
                median(staged, length)
            );
        }
    }
}

/// A stage's name, when it ends, and its own length.
type StageRow = (&'static str, fn(&Stages) -> f64, fn(&Stages) -> f64);

/// Seconds since midnight UTC.
fn seconds_of_day(at: std::time::SystemTime) -> f64 {
    let since = at
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    since % 86_400.0
}

/// Seconds since midnight of a log line's timestamp (`…T21:04:58.701034Z`).
fn log_seconds_of_day(stamp: &str) -> Option<f64> {
    let time = stamp.split_once('T')?.1.strip_suffix('Z')?;
    let mut parts = time.split(':');
    let hours: f64 = parts.next()?.parse().ok()?;
    let minutes: f64 = parts.next()?.parse().ok()?;
    let seconds: f64 = parts.next()?.parse().ok()?;
    Some(hours * 3600.0 + minutes * 60.0 + seconds)
}
