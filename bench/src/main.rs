//! `kubewire-bench`: benchmarks of kubewire against a fake Kubernetes API.
//!
//! - `sync`: initial sync of a large cluster from the fake API server: time
//!   to the first full sync and to ready, and the RSS after it.
//! - `propagation`: time from one endpoint change at the API server to every
//!   core answering the new data.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod memory;
mod propagation;

use clap::{Parser, Subcommand};
use kubewire_bench::fake_api::{FakeApi, endpoint_slice, namespace, pod, service};
use kubewire_bench::probe;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The load, shared by `run` and `compare`.
#[derive(clap::Args, Debug, Clone)]
struct LoadArgs {
    /// Query file in dnsperf format (`name TYPE` per line).
    #[arg(long)]
    queries: PathBuf,
    /// Offered queries per second in all; 0 for closed loop.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Seconds to send.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Source sockets (UDP) or connections (TCP), in all.
    #[arg(long, default_value_t = 16)]
    sockets: usize,
    /// Closed loop: queries in flight, in all.
    #[arg(long, default_value_t = 256)]
    in_flight: usize,
    /// Sending threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// CPUs to pin the sending threads to (`1` or `0,1`); empty: unpinned.
    #[arg(long, value_delimiter = ',')]
    cpus: Vec<usize>,
    /// udp or tcp.
    #[arg(long, value_enum, default_value = "udp")]
    transport: kubewire_bench::load::Transport,
    /// Ask a new name with every query (the first label's first 16 bytes
    /// become a count): every query is a cache miss.
    #[arg(long)]
    unique_names: bool,
}

impl LoadArgs {
    fn config(&self, server: SocketAddr) -> Result<kubewire_bench::load::LoadConfig> {
        let text = std::fs::read_to_string(&self.queries)
            .map_err(|e| format!("cannot read {}: {e}", self.queries.display()))?;
        let queries = kubewire_bench::load::parse_query_file(&text)
            .map_err(|e| format!("{}: {e}", self.queries.display()))?;
        Ok(kubewire_bench::load::LoadConfig {
            server,
            queries,
            rate: self.rate,
            duration: Duration::from_secs_f64(self.seconds),
            sockets: self.sockets,
            in_flight: self.in_flight,
            timeout: Duration::from_secs(2),
            threads: self.threads,
            cpus: self.cpus.clone(),
            transport: self.transport,
            unique_names: self.unique_names,
        })
    }
}

/// A server to compare.
#[derive(Clone, Debug)]
struct Target {
    name: String,
    addr: SocketAddr,
    pid: u32,
}

fn parse_target(text: &str) -> std::result::Result<Target, String> {
    let usage = || format!("{text:?}: write NAME=ADDR@PID, e.g. null=127.0.0.1:5300@1234");
    let (name, rest) = text.split_once('=').ok_or_else(usage)?;
    let (addr, pid) = rest.split_once('@').ok_or_else(usage)?;
    Ok(Target {
        name: name.to_string(),
        addr: addr.parse().map_err(|_| usage())?,
        pid: pid.parse().map_err(|_| usage())?,
    })
}

#[derive(Parser, Debug)]
#[command(name = "kubewire-bench", about = "kubewire benchmarks")]
struct Cli {
    /// The kubewire binary to run.
    #[arg(long, global = true, default_value = "target/release/kubewire")]
    kubewire: PathBuf,
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand, Debug)]
enum Commands {
    /// Send queries to a server and report throughput, loss, RCODEs,
    /// latency percentiles and, given its PID, the server's CPU per query.
    Run {
        /// The server.
        #[arg(long, default_value = "127.0.0.1:5353")]
        server: std::net::SocketAddr,
        /// The server's PID, to measure its CPU time per query.
        #[arg(long)]
        server_pid: Option<u32>,
        #[command(flatten)]
        load: LoadArgs,
        /// Write the report as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Write the latency percentile distribution (HdrHistogram text) here.
        #[arg(long)]
        histogram: Option<PathBuf>,
        /// Write the latency percentile curve as an SVG plot here.
        #[arg(long)]
        plot: Option<PathBuf>,
        /// Record the server (needs --server-pid) with `perf record -g` and
        /// write a flamegraph SVG here.
        #[arg(long, requires = "server_pid")]
        profile: Option<PathBuf>,
    },
    /// Run the same load against several servers in turn (A, B, A, B …)
    /// and print per-pair ratios of QPS, p99 and server CPU per query. A
    /// target named `null` (the null responder) is the floor.
    Compare {
        /// `NAME=ADDR@PID`, repeated: e.g. `null=127.0.0.1:5300@1234`.
        #[arg(long = "target", required = true, value_parser = parse_target)]
        targets: Vec<Target>,
        #[command(flatten)]
        load: LoadArgs,
        /// Rounds; each runs every target once.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Write each run's JSON, the summary and the latency plot here.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
    /// Overlay the latency curves of several `run --json` reports in one SVG.
    Plot {
        /// `LABEL=REPORT.json`, repeated.
        #[arg(long = "report", required = true)]
        reports: Vec<String>,
        /// The SVG to write.
        #[arg(long)]
        out: PathBuf,
        /// The title.
        #[arg(long, default_value = "DNS latency by percentile")]
        title: String,
    },
    /// Write a synthetic cluster: manifests for kubewire, the same records
    /// as a zone file for NSD and Knot, and a realistic query file.
    Scenario {
        #[command(flatten)]
        config: kubewire_bench::scenario::ScenarioConfig,
        /// Directory to write manifests.json, cluster.local.zone and queries.txt into.
        #[arg(long)]
        out_dir: PathBuf,
    },
    /// Initial sync of a large cluster from the fake API server.
    Sync {
        /// Services (one in five headless).
        #[arg(long, default_value_t = 10_000)]
        services: usize,
        /// Endpoints in all, spread evenly over the services.
        #[arg(long, default_value_t = 50_000)]
        endpoints: usize,
        /// Running pods.
        #[arg(long, default_value_t = 100_000)]
        pods: usize,
        /// The node role: no pods in the cluster, and kubewire started with
        /// `--pods disabled` (a node-local instance watching the cluster's
        /// Services and EndpointSlices), instead of `--pods verified`.
        #[arg(long, conflicts_with = "pods")]
        node_role: bool,
        /// Keep the server running this long after the measurement, so a
        /// profiler (heaptrack, perf) attached to it sees the synced state.
        #[arg(long, default_value_t = 0)]
        hold_s: u64,
    },
    /// Start etcd and kube-apiserver (built by bench/peers/build.sh), load
    /// the `sync` cluster into them, write an admin kubeconfig into
    /// `--out-dir`, print `ready`, and hold them until standard input
    /// closes: the real API under `bench/compare_coredns.py`.
    RealApi {
        /// Services (one in five headless).
        #[arg(long, default_value_t = 1000)]
        services: usize,
        /// Endpoints in all, spread evenly over the services.
        #[arg(long, default_value_t = 5000)]
        endpoints: usize,
        /// Running pods.
        #[arg(long, default_value_t = 1000)]
        pods: usize,
        /// Where to write the kubeconfig and the CA.
        #[arg(long)]
        out_dir: PathBuf,
    },
    /// Time from an endpoint change (at the fake API server, or in a
    /// watched manifest file) to every core answering it; counts wrong and
    /// flapping answers.
    Propagation {
        /// Where changes are made: `api` (the fake Kubernetes API) or
        /// `manifests` (edits of a watched manifest file).
        #[arg(long, default_value = "api", value_parser = ["api", "manifests"])]
        source: String,
        /// Changes to time.
        #[arg(long, default_value_t = 200)]
        changes: usize,
        /// Source sockets probing (spread over the cores by SO_REUSEPORT).
        #[arg(long, default_value_t = 16)]
        probes: usize,
        /// Also time each stage from kubewire's own log (its
        /// `kubewire::propagation` debug lines): watch event received,
        /// taken by the control-plane thread, delta published, applied on
        /// the last core, then seen by the probes.
        #[arg(long)]
        stages: bool,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Commands::Run {
            server,
            server_pid,
            load,
            json,
            histogram,
            plot,
            profile,
        } => run_load(
            server,
            server_pid,
            &load,
            json,
            histogram,
            plot,
            profile.as_deref(),
        ),
        Commands::Compare {
            targets,
            load,
            rounds,
            out_dir,
        } => compare(&targets, &load, rounds, out_dir.as_deref()),
        Commands::Plot {
            reports,
            out,
            title,
        } => plot(&reports, &out, &title),
        Commands::Scenario { config, out_dir } => {
            kubewire_bench::scenario::write(&config, &out_dir)
                .map(|paths| {
                    for path in paths {
                        println!("{}", path.display());
                    }
                })
                .map_err(|e| {
                    format!("cannot write the scenario into {}: {e}", out_dir.display()).into()
                })
        }
        Commands::Sync {
            services,
            endpoints,
            pods,
            node_role,
            hold_s,
        } => {
            let pods = if node_role { None } else { Some(pods) };
            sync(&cli.kubewire, services, endpoints, pods, hold_s)
        }
        Commands::Propagation {
            source,
            changes,
            probes,
            stages,
        } => propagation::run(&cli.kubewire, &source, changes, probes, stages),
        Commands::RealApi {
            services,
            endpoints,
            pods,
            out_dir,
        } => real_api(services, endpoints, pods, &out_dir),
    };
    if let Err(error) = result {
        eprintln!("kubewire-bench: {error}");
        std::process::exit(1);
    }
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

struct Kubewire {
    child: Child,
    addr: SocketAddr,
    lines: std::sync::mpsc::Receiver<(Instant, String)>,
    /// The kubeconfig's directory, removed when the server stops.
    dir: Option<PathBuf>,
}

impl Kubewire {
    fn start(
        binary: &PathBuf,
        api: &FakeApi,
        extra: &[&str],
        rust_log: &str,
    ) -> Result<(Kubewire, Instant)> {
        let dir = std::env::temp_dir().join(format!("kubewire-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let kubeconfig = api.write_kubeconfig(&dir)?;
        let kubeconfig = kubeconfig.to_string_lossy().into_owned();
        let mut args = vec!["--kubeconfig", kubeconfig.as_str()];
        args.extend_from_slice(extra);
        let (mut kubewire, started) = Kubewire::spawn(binary, &args, rust_log)?;
        kubewire.dir = Some(dir);
        Ok((kubewire, started))
    }

    fn spawn(binary: &PathBuf, args: &[&str], rust_log: &str) -> Result<(Kubewire, Instant)> {
        let port = UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let started = Instant::now();
        let mut child = Command::new(binary)
            .args(args)
            .args([
                "--listen",
                &addr.to_string(),
                "--health-addr",
                "127.0.0.1:0",
                "--ready-addr",
                "127.0.0.1:0",
                "--metrics-addr",
                "127.0.0.1:0",
            ])
            .env("RUST_LOG", rust_log)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot run {}: {e} (build it with cargo build --release -p kubewire)",
                    binary.display()
                )
            })?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let (sender, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr)
                .lines()
                .map_while(std::result::Result::ok)
            {
                if sender.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        Ok((
            Kubewire {
                child,
                addr,
                lines,
                dir: None,
            },
            started,
        ))
    }

    fn wait_for(&self, needle: &str, timeout: Duration) -> Result<(Instant, String)> {
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let (at, line) = self
                .lines
                .recv_timeout(left)
                .map_err(|_| format!("no log line with {needle:?}"))?;
            if line.contains(needle) {
                return Ok((at, line));
            }
        }
        Err(format!("no log line with {needle:?}").into())
    }

    fn rss_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        (kib_field(&status, "VmRSS:"), kib_field(&status, "VmHWM:"))
    }

    /// Resident memory split as (anonymous, file-backed) KiB: the heap and
    /// stacks against the mapped binary and libraries.
    fn rss_split_kib(&self) -> (u64, u64) {
        let rollup = std::fs::read_to_string(format!("/proc/{}/smaps_rollup", self.child.id()))
            .unwrap_or_default();
        let anonymous = kib_field(&rollup, "Anonymous:");
        (
            anonymous,
            kib_field(&rollup, "Rss:").saturating_sub(anonymous),
        )
    }
}

/// The KiB figure of a `/proc` line such as `VmRSS:  1234 kB`, or 0.
fn kib_field(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

impl Drop for Kubewire {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// `pods`: how many, with kubewire's pod records verified; `None` for the
/// node role (no pods, pod records disabled).
fn sync(
    binary: &PathBuf,
    services: usize,
    endpoints: usize,
    pods: Option<usize>,
    hold_s: u64,
) -> Result<()> {
    let api = FakeApi::start()?;
    let cluster = SyntheticCluster::new(services, endpoints, pods.unwrap_or(0));
    api.apply_all(cluster.objects());
    println!(
        "fake API holds {cluster}{}",
        if pods.is_none() {
            " (the node role: kubewire --pods disabled)"
        } else {
            ""
        }
    );
    let pods_mode = if pods.is_some() {
        "verified"
    } else {
        "disabled"
    };
    let pods = pods.unwrap_or(0);
    let (kubewire, started) = Kubewire::start(binary, &api, &["--pods", pods_mode], "info")?;
    let (synced_at, line) = kubewire.wait_for(
        "initial sync with the API server complete",
        Duration::from_secs(120),
    )?;
    let (ready_at, _) = kubewire.wait_for(" ready cores=", Duration::from_secs(120))?;
    // Logged right after `ready`; builds before it logged none.
    let memory_line = kubewire.wait_for(" memory names=", Duration::from_secs(2));
    std::thread::sleep(Duration::from_millis(500));
    let (rss, hwm) = kubewire.rss_kib();
    let (anonymous, file_backed) = kubewire.rss_split_kib();
    let coredns_rule_mb = (pods + services) as f64 / 1000.0 + 54.0;
    println!("{line}");
    println!(
        "start to first full sync: {} ms",
        (synced_at - started).as_millis()
    );
    println!(
        "start to ready (every core holds it): {} ms",
        (ready_at - started).as_millis()
    );
    println!(
        "RSS after sync: {:.1} MiB = {:.1} MB (peak {:.1} MiB); CoreDNS's rule for this size: {coredns_rule_mb:.0} MB, half of it {:.0} MB",
        rss as f64 / 1024.0,
        rss as f64 * 1024.0 / 1e6,
        hwm as f64 / 1024.0,
        coredns_rule_mb / 2.0
    );
    println!(
        "  of which anonymous (heap, stacks): {:.1} MiB; file-backed (binary, libraries): {:.1} MiB",
        anonymous as f64 / 1024.0,
        file_backed as f64 / 1024.0
    );
    match memory_line {
        Ok((_, line)) => memory::print_table(&line, services + endpoints + pods)?,
        Err(_) => println!("kubewire logged no memory line (a build from before it)"),
    }
    // A sample of answers, so that a broken sync cannot pass for a fast one.
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    for s in (0..services).step_by(services.max(1) / 10 + 1) {
        let name = format!(
            "svc-{s}.ns-{}.svc.cluster.local",
            s % SyntheticCluster::NAMESPACES
        );
        let (rcode, count) = probe::ask(&socket, kubewire.addr, &name, 1).ok_or("no answer")?;
        if rcode != 0 || count == 0 {
            return Err(format!("{name}: rcode {rcode}, {count} answers").into());
        }
    }
    if hold_s > 0 {
        println!(
            "holding kubewire (pid {}) for {hold_s} s",
            kubewire.child.id()
        );
        std::thread::sleep(Duration::from_secs(hold_s));
    }
    Ok(())
}

fn ip(value: u32) -> String {
    std::net::Ipv4Addr::from(value).to_string()
}

/// The cluster `sync` and `real-api` load: Services (one in five
/// headless) in 100 namespaces, each with one EndpointSlice, and Running
/// pods. `svc-N.ns-(N % 100)` names Service N.
struct SyntheticCluster {
    services: usize,
    per_service: usize,
    pods: usize,
}

impl SyntheticCluster {
    const NAMESPACES: usize = 100;

    fn new(services: usize, endpoints: usize, pods: usize) -> SyntheticCluster {
        SyntheticCluster {
            services,
            per_service: endpoints.div_ceil(services.max(1)),
            pods,
        }
    }

    /// Namespaces first, then each Service and its slice, then pods.
    fn objects(&self) -> impl Iterator<Item = serde_json::Value> + '_ {
        let namespaces = (0..Self::NAMESPACES).map(|n| namespace(&format!("ns-{n}")));
        let services = (0..self.services).flat_map(move |s| {
            let ns = format!("ns-{}", s % Self::NAMESPACES);
            let name = format!("svc-{s}");
            // From 10.97.0.0: 10.96.0.1 is the `kubernetes` Service's on a
            // real API server.
            let cluster_ip = if s % 5 == 0 {
                "None".to_string()
            } else {
                ip(0x0a61_0000 + s as u32)
            };
            let addrs: Vec<String> = (0..self.per_service)
                .map(|e| ip(0x0a80_0000 + (s * self.per_service + e + 1) as u32))
                .collect();
            let eps: Vec<(&str, bool, Option<&str>)> =
                addrs.iter().map(|a| (a.as_str(), true, None)).collect();
            let mut slice = endpoint_slice(&ns, &format!("{name}-abc"), &name, &eps);
            // As the EndpointSlice controller writes them: each endpoint
            // names its pod (a Deployment's, by ReplicaSet hash and suffix).
            if let Some(endpoints) = slice["endpoints"].as_array_mut() {
                for (e, endpoint) in endpoints.iter_mut().enumerate() {
                    endpoint["targetRef"] = serde_json::json!({
                        "kind": "Pod", "namespace": ns, "name": format!("{name}-7d9f8c6b5-{e:05}")
                    });
                }
            }
            [
                service(&ns, &name, &cluster_ip, &[("http", 80), ("grpc", 9090)]),
                slice,
            ]
        });
        let pods = (0..self.pods).map(|p| {
            pod(
                &format!("ns-{}", p % Self::NAMESPACES),
                &format!("pod-{p}"),
                &ip(0x0ac0_0000 + p as u32),
            )
        });
        namespaces.chain(services).chain(pods)
    }
}

impl std::fmt::Display for SyntheticCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} services, {} endpoints, {} pods, {} namespaces",
            self.services,
            self.per_service * self.services,
            self.pods,
            Self::NAMESPACES
        )
    }
}

/// `real-api`: etcd and kube-apiserver with the synthetic cluster loaded,
/// until standard input closes.
fn real_api(
    services: usize,
    endpoints: usize,
    pods: usize,
    out_dir: &std::path::Path,
) -> Result<()> {
    let started = Instant::now();
    let api = kubewire_bench::peers::RealApi::start()?;
    println!(
        "real API up in {} ms at {}",
        started.elapsed().as_millis(),
        api.url()
    );
    let cluster = SyntheticCluster::new(services, endpoints, pods);
    let loading = Instant::now();
    // Namespaces first: a namespaced object needs its namespace.
    let (namespaces, rest): (Vec<_>, Vec<_>) =
        cluster.objects().partition(|o| o["kind"] == "Namespace");
    api.apply_many(namespaces, 64)?;
    api.apply_many(rest, 64)?;
    println!(
        "real API holds {cluster} (loaded in {} ms)",
        loading.elapsed().as_millis()
    );
    let kubeconfig = api.write_kubeconfig(out_dir, kubewire_bench::peers::ADMIN_TOKEN)?;
    println!("kubeconfig={}", kubeconfig.display());
    println!("url={}", api.url());
    println!("ca={}", api.ca_file().display());
    println!("token={}", kubewire_bench::peers::ADMIN_TOKEN);
    println!("ready");
    // Hold until whoever started us closes our standard input.
    let mut sink = String::new();
    while std::io::stdin().read_line(&mut sink)? > 0 {}
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn run_load(
    server: SocketAddr,
    server_pid: Option<u32>,
    load: &LoadArgs,
    json: Option<PathBuf>,
    histogram: Option<PathBuf>,
    plot: Option<PathBuf>,
    profile: Option<&std::path::Path>,
) -> Result<()> {
    use kubewire_bench::load;
    let config = load.config(server)?;
    let recording = match (profile, server_pid) {
        (Some(svg), Some(pid)) => Some(kubewire_bench::profile::start(pid, svg)?),
        _ => None,
    };
    let report = load::run(&config, server_pid)?;
    if let (Some(recording), Some(svg)) = (recording, profile) {
        let samples = recording.finish(svg, &format!("{} under load", server))?;
        eprintln!("flamegraph: {} ({samples} stacks)", svg.display());
    }
    let summary = report.to_json(&config);
    println!("{}", serde_json::to_string_pretty(&summary)?);
    if let Some(path) = json {
        std::fs::write(&path, serde_json::to_string_pretty(&summary)?)?;
    }
    if let Some(path) = histogram {
        std::fs::write(&path, percentile_distribution(&report.latency_us))?;
    }
    if let Some(path) = plot {
        let curve = kubewire_bench::plot::Curve::from_report(&server.to_string(), &summary)
            .ok_or("no percentile curve in the report")?;
        kubewire_bench::plot::write_svg(&path, "DNS latency by percentile", &[curve])?;
    }
    Ok(())
}

/// One run's figures in a comparison.
#[derive(Clone, Copy, Debug)]
struct Figures {
    qps: f64,
    p99_us: f64,
    cpu_us_per_query: f64,
    user_us_per_query: f64,
    lost: u64,
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn compare(
    targets: &[Target],
    load: &LoadArgs,
    rounds: usize,
    out_dir: Option<&std::path::Path>,
) -> Result<()> {
    if let Some(dir) = out_dir {
        std::fs::create_dir_all(dir)?;
    }
    // runs[target][round]
    let mut runs: Vec<Vec<Figures>> = vec![Vec::new(); targets.len()];
    let mut last_reports: Vec<serde_json::Value> = vec![serde_json::Value::Null; targets.len()];
    for round in 0..rounds {
        for (t, target) in targets.iter().enumerate() {
            let config = load.config(target.addr)?;
            let report = kubewire_bench::load::run(&config, Some(target.pid))?;
            let figures = Figures {
                qps: report.answered_qps(config.duration),
                p99_us: report.latency_at(0.99) as f64,
                cpu_us_per_query: report.server_cpu_us_per_query().unwrap_or(f64::NAN),
                user_us_per_query: report.server_user_us_per_query().unwrap_or(f64::NAN),
                lost: report.lost,
            };
            eprintln!(
                "round {} {}: {:.0} qps, p99 {:.0} µs, {:.3} µs CPU/query ({:.3} user), lost {}",
                round + 1,
                target.name,
                figures.qps,
                figures.p99_us,
                figures.cpu_us_per_query,
                figures.user_us_per_query,
                figures.lost
            );
            let json = report.to_json(&config);
            if let Some(dir) = out_dir {
                std::fs::write(
                    dir.join(format!("{}-round{}.json", target.name, round + 1)),
                    serde_json::to_string_pretty(&json)?,
                )?;
            }
            last_reports[t] = json;
            runs[t].push(figures);
        }
    }
    let floor = targets.iter().position(|t| t.name == "null");
    let mode = if load.rate == 0 {
        "closed loop".to_string()
    } else {
        format!("{} qps offered", load.rate)
    };
    println!(
        "## {mode}, {rounds} rounds of {} s, {:?}\n",
        load.seconds, load.transport
    );
    println!("| server | QPS | p99 µs | CPU µs/query | user µs/query | CPU/query ÷ floor | lost |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    let mut summary = Vec::new();
    for (t, target) in targets.iter().enumerate() {
        let per_round = |f: fn(&Figures) -> f64| median(runs[t].iter().map(f).collect());
        let floor_ratio = floor.map(|f| {
            median(
                (0..rounds)
                    .map(|r| runs[t][r].cpu_us_per_query / runs[f][r].cpu_us_per_query)
                    .collect(),
            )
        });
        let lost: u64 = runs[t].iter().map(|f| f.lost).sum();
        println!(
            "| {} | {:.0} | {:.0} | {:.3} | {:.3} | {} | {} |",
            target.name,
            per_round(|f| f.qps),
            per_round(|f| f.p99_us),
            per_round(|f| f.cpu_us_per_query),
            per_round(|f| f.user_us_per_query),
            floor_ratio.map_or("".into(), |r| format!("{r:.3}")),
            lost
        );
        summary.push(serde_json::json!({
            "server": target.name,
            "qps": per_round(|f| f.qps),
            "p99_us": per_round(|f| f.p99_us),
            "cpu_us_per_query": per_round(|f| f.cpu_us_per_query),
            "user_us_per_query": per_round(|f| f.user_us_per_query),
            "cpu_per_query_vs_floor": floor_ratio,
            "lost": lost,
        }));
    }
    println!("\nPer pair (B ÷ A, median over rounds of the same-round ratio):\n");
    println!("| A | B | QPS | p99 | CPU/query | user/query |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for a in 0..targets.len() {
        for b in a + 1..targets.len() {
            let ratio = |f: fn(&Figures) -> f64| {
                median(
                    (0..rounds)
                        .map(|r| f(&runs[b][r]) / f(&runs[a][r]))
                        .collect(),
                )
            };
            println!(
                "| {} | {} | {:.3} | {:.3} | {:.3} | {:.3} |",
                targets[a].name,
                targets[b].name,
                ratio(|f| f.qps),
                ratio(|f| f.p99_us),
                ratio(|f| f.cpu_us_per_query),
                ratio(|f| f.user_us_per_query)
            );
        }
    }
    if let Some(dir) = out_dir {
        std::fs::write(
            dir.join("summary.json"),
            serde_json::to_string_pretty(&summary)?,
        )?;
        let curves: Vec<_> = targets
            .iter()
            .zip(&last_reports)
            .filter_map(|(t, r)| kubewire_bench::plot::Curve::from_report(&t.name, r))
            .collect();
        kubewire_bench::plot::write_svg(
            &dir.join("latency.svg"),
            &format!("DNS latency by percentile ({mode})"),
            &curves,
        )?;
    }
    Ok(())
}

fn plot(reports: &[String], out: &std::path::Path, title: &str) -> Result<()> {
    let mut curves = Vec::new();
    for spec in reports {
        let (label, path) = spec
            .split_once('=')
            .ok_or_else(|| format!("{spec:?}: write LABEL=REPORT.json"))?;
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
        let json: serde_json::Value = serde_json::from_str(&text)?;
        curves.push(
            kubewire_bench::plot::Curve::from_report(label, &json).ok_or_else(|| {
                format!("{path}: no percentile_curve_us (a report from kubewire-bench run --json)")
            })?,
        );
    }
    kubewire_bench::plot::write_svg(out, title, &curves)?;
    Ok(())
}

/// The latency histogram as a percentile distribution table (microseconds),
/// in the layout HdrHistogram's plotters read.
fn percentile_distribution(histogram: &hdrhistogram::Histogram<u64>) -> String {
    let mut out = String::from("       Value     Percentile TotalCount 1/(1-Percentile)\n\n");
    for step in histogram.iter_quantiles(1) {
        let q = step.quantile_iterated_to();
        let inverse = if q < 1.0 {
            1.0 / (1.0 - q)
        } else {
            f64::INFINITY
        };
        out.push_str(&format!(
            "{:12.3} {:14.12} {:10} {:14.2}\n",
            step.value_iterated_to() as f64,
            q,
            step.count_since_last_iteration(),
            inverse
        ));
    }
    out.push_str(&format!(
        "#[Mean = {:.3}, StdDeviation = {:.3}]\n#[Max = {}, Total count = {}]\n",
        histogram.mean(),
        histogram.stdev(),
        histogram.max(),
        histogram.len()
    ));
    out
}
