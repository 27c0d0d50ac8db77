//! `kubewire-bench`: benchmarks of kubewire against a fake Kubernetes API.
//!
//! - `sync`: initial sync of a large cluster from the fake API server: time
//!   to the first full sync and to ready, and the RSS after it.
//! - `propagation`: time from one endpoint change at the API server to every
//!   core answering the new data.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use clap::{Parser, Subcommand};
use kubewire_bench::fake_api::{FakeApi, endpoint_slice, namespace, pod, service};
use kubewire_bench::probe;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
    /// Send queries to a server and report throughput, loss, RCODEs and
    /// latency percentiles.
    Run {
        /// The server.
        #[arg(long, default_value = "127.0.0.1:5353")]
        server: std::net::SocketAddr,
        /// Query file in dnsperf format (`name TYPE` per line).
        #[arg(long)]
        queries: PathBuf,
        /// Offered queries per second; 0 for closed loop.
        #[arg(long, default_value_t = 10_000)]
        rate: u64,
        /// Seconds to send.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Source sockets.
        #[arg(long, default_value_t = 16)]
        sockets: usize,
        /// Closed loop: queries in flight.
        #[arg(long, default_value_t = 256)]
        in_flight: usize,
        /// Write the report as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Write the latency percentile distribution (HdrHistogram text) here.
        #[arg(long)]
        histogram: Option<PathBuf>,
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
    },
    /// Time from an endpoint change at the API to every core answering it.
    Propagation {
        /// Changes to time.
        #[arg(long, default_value_t = 200)]
        changes: usize,
        /// Source sockets probing (spread over the cores by SO_REUSEPORT).
        #[arg(long, default_value_t = 16)]
        probes: usize,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Commands::Run {
            server,
            queries,
            rate,
            seconds,
            sockets,
            in_flight,
            json,
            histogram,
        } => run_load(
            server, &queries, rate, seconds, sockets, in_flight, json, histogram,
        ),
        Commands::Sync {
            services,
            endpoints,
            pods,
        } => sync(&cli.kubewire, services, endpoints, pods),
        Commands::Propagation { changes, probes } => propagation(&cli.kubewire, changes, probes),
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
}

impl Kubewire {
    fn start(binary: &PathBuf, api: &FakeApi, extra: &[&str]) -> Result<(Kubewire, Instant)> {
        let dir = std::env::temp_dir().join(format!("kubewire-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let kubeconfig = api.write_kubeconfig(&dir)?;
        let port = UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let started = Instant::now();
        let mut child = Command::new(binary)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args([
                "--listen",
                &addr.to_string(),
                "--health-addr",
                "127.0.0.1:0",
                "--ready-addr",
                "127.0.0.1:0",
            ])
            .args(extra)
            .env("RUST_LOG", "info")
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
        Ok((Kubewire { child, addr, lines }, started))
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
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }
}

impl Drop for Kubewire {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sync(binary: &PathBuf, services: usize, endpoints: usize, pods: usize) -> Result<()> {
    let api = FakeApi::start()?;
    let namespaces = 100;
    api.apply_all((0..namespaces).map(|n| namespace(&format!("ns-{n}"))));
    let per_service = endpoints.div_ceil(services.max(1));
    let mut objects = Vec::with_capacity(services * 2);
    let mut next_ip = 0u32;
    for s in 0..services {
        let ns = format!("ns-{}", s % namespaces);
        let name = format!("svc-{s}");
        let cluster_ip = if s % 5 == 0 {
            "None".to_string()
        } else {
            ip(0x0a60_0000 + s as u32)
        };
        objects.push(service(
            &ns,
            &name,
            &cluster_ip,
            &[("http", 80), ("grpc", 9090)],
        ));
        let addrs: Vec<String> = (0..per_service)
            .map(|_| {
                next_ip += 1;
                ip(0x0a80_0000 + next_ip)
            })
            .collect();
        let eps: Vec<(&str, bool, Option<&str>)> =
            addrs.iter().map(|a| (a.as_str(), true, None)).collect();
        objects.push(endpoint_slice(&ns, &format!("{name}-abc"), &name, &eps));
    }
    api.apply_all(objects);
    api.apply_all((0..pods).map(|p| {
        pod(
            &format!("ns-{}", p % namespaces),
            &format!("pod-{p}"),
            &ip(0x0ac0_0000 + p as u32),
        )
    }));
    println!(
        "fake API holds {services} services, {} endpoints, {pods} pods, {namespaces} namespaces",
        per_service * services
    );

    let (kubewire, started) = Kubewire::start(binary, &api, &["--pods", "verified"])?;
    let (synced_at, line) = kubewire.wait_for(
        "initial sync with the API server complete",
        Duration::from_secs(120),
    )?;
    let (ready_at, _) = kubewire.wait_for(" ready cores=", Duration::from_secs(120))?;
    std::thread::sleep(Duration::from_millis(500));
    let (rss, hwm) = kubewire.rss_kib();
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
        "RSS after sync: {:.1} MiB (peak {:.1} MiB); CoreDNS's rule for this size: {coredns_rule_mb:.0} MB, half of it {:.0} MB",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0,
        coredns_rule_mb / 2.0
    );
    // A sample of answers, so that a broken sync cannot pass for a fast one.
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    for s in (0..services).step_by(services.max(1) / 10 + 1) {
        let name = format!("svc-{s}.ns-{}.svc.cluster.local", s % namespaces);
        let (rcode, count) = probe::ask(&socket, kubewire.addr, &name, 1).ok_or("no answer")?;
        if rcode != 0 || count == 0 {
            return Err(format!("{name}: rcode {rcode}, {count} answers").into());
        }
    }
    Ok(())
}

fn ip(value: u32) -> String {
    std::net::Ipv4Addr::from(value).to_string()
}

fn propagation(binary: &PathBuf, changes: usize, probes: usize) -> Result<()> {
    let api = FakeApi::start()?;
    api.apply(namespace("default"));
    api.apply(service("default", "web", "None", &[("http", 80)]));
    let addrs: Vec<String> = (1..=10).map(|i| format!("10.2.0.{i}")).collect();
    let slice = |ready_first: bool| {
        let eps: Vec<(&str, bool, Option<&str>)> = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| (a.as_str(), i != 0 || ready_first, None))
            .collect();
        endpoint_slice("default", "web-a", "web", &eps)
    };
    api.apply(slice(true));
    let (kubewire, _) = Kubewire::start(binary, &api, &[])?;
    kubewire.wait_for(" ready cores=", Duration::from_secs(30))?;
    let sockets: Vec<UdpSocket> = (0..probes)
        .map(|_| UdpSocket::bind("127.0.0.1:0"))
        .collect::<std::io::Result<_>>()?;
    let mut times = Vec::with_capacity(changes);
    for change in 0..changes {
        let ready_first = change % 2 == 1;
        let want = if ready_first { 10 } else { 9 };
        std::thread::sleep(Duration::from_millis(20));
        let start = Instant::now();
        api.apply(slice(ready_first));
        let mut pending: Vec<&UdpSocket> = sockets.iter().collect();
        while !pending.is_empty() {
            if start.elapsed() > Duration::from_secs(5) {
                return Err(format!("change {change} not seen by every core within 5 s").into());
            }
            pending.retain(|socket| {
                probe::ask(socket, kubewire.addr, "web.default.svc.cluster.local", 1)
                    .map(|(_, count)| count)
                    != Some(want)
            });
        }
        times.push(start.elapsed());
    }
    times.sort();
    let pick = |q: f64| {
        times[((times.len() as f64 * q) as usize).min(times.len() - 1)].as_secs_f64() * 1000.0
    };
    println!(
        "watch event to every core answering ({changes} changes, {probes} probe sockets): p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        pick(0.5),
        pick(0.9),
        pick(0.99),
        pick(1.0)
    );
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn run_load(
    server: SocketAddr,
    queries: &PathBuf,
    rate: u64,
    seconds: f64,
    sockets: usize,
    in_flight: usize,
    json: Option<PathBuf>,
    histogram: Option<PathBuf>,
) -> Result<()> {
    use kubewire_bench::load;
    let text = std::fs::read_to_string(queries)
        .map_err(|e| format!("cannot read {}: {e}", queries.display()))?;
    let queries =
        load::parse_query_file(&text).map_err(|e| format!("{}: {e}", queries.display()))?;
    let config = load::LoadConfig {
        server,
        queries,
        rate,
        duration: Duration::from_secs_f64(seconds),
        sockets,
        in_flight,
        timeout: Duration::from_secs(2),
    };
    let report = load::run(&config)?;
    let summary = report.to_json(&config);
    println!("{}", serde_json::to_string_pretty(&summary)?);
    if let Some(path) = json {
        std::fs::write(&path, serde_json::to_string_pretty(&summary)?)?;
    }
    if let Some(path) = histogram {
        std::fs::write(&path, percentile_distribution(&report.latency_us))?;
    }
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
