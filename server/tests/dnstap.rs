//! dnstap against a real collector: golang-dnstap's `dnstap` command, built
//! by `bench/peers/build.sh` (without it these tests skip with one line
//! that names the script; with `KUBEWIRE_REQUIRE_PEERS=1`, CI, they fail).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::upstream::{Behaviour, Upstream};
use common::*;
use hickory_proto::rr::RecordType;
use kubewire_bench::peers::{self, PeerError};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const KUBERNETES: &str = "kubernetes.default.svc.cluster.local";

/// The collector, printing what it receives as YAML into a file. (Its YAML
/// leaves out the `extra` field; the encoder's unit tests check that.)
struct Collector {
    child: Child,
    output: PathBuf,
}

impl Collector {
    /// Listens on `source` (`-u PATH` or `-l IP:PORT`); `None` to skip.
    fn start(source: &[&str], dir: &Path) -> Option<Collector> {
        let binary = match peers::binary("dnstap") {
            Ok(binary) => binary,
            Err(error @ PeerError::Missing { .. }) if !peers::peers_required() => {
                let _ = writeln!(std::io::stderr(), "skipped: {error}");
                return None;
            }
            Err(error) => panic!("{error}"),
        };
        let output = dir.join("collected.yaml");
        let child = Command::new(binary)
            .args(source)
            .arg("-y")
            .stdout(std::fs::File::create(&output).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Some(Collector { child, output })
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.output).unwrap_or_default()
    }

    /// The messages received so far, each as its YAML document.
    fn messages(&self) -> Vec<String> {
        self.text()
            .split("---\n")
            .filter(|m| m.contains("message:"))
            .map(str::to_string)
            .collect()
    }

    /// Waits until `count` messages satisfy `matches`; returns them.
    fn wait_for(&self, count: usize, matches: impl Fn(&str) -> bool) -> Vec<String> {
        let start = Instant::now();
        loop {
            let found: Vec<String> = self.messages().into_iter().filter(|m| matches(m)).collect();
            if found.len() >= count {
                return found;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{} of {count} messages arrived; the collector has:\n{}",
                found.len(),
                self.text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for_socket(path: &Path) {
    let start = Instant::now();
    while !path.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn every_query_and_upstream_exchange_reaches_a_real_collector() {
    let dir = tempdir("dnstap");
    let socket = dir.join("tap.sock");
    let Some(collector) = Collector::start(&["-u", socket.to_str().unwrap()], &dir) else {
        return;
    };
    wait_for_socket(&socket);
    let upstream = Upstream::start();
    let upstream_addr = upstream.addr.to_string();
    let to = format!("unix://{}", socket.display());
    let mut server = Server::start(&[
        "--demo",
        "--cores",
        "1",
        "--forward",
        &upstream_addr,
        "--dnstap",
        &to,
        "--dnstap-full",
        "--dnstap-identity",
        "node-a",
        "--dnstap-extra",
        "rack-4",
    ]);
    server.wait_for_log("dnstap: connected", Duration::from_secs(10));
    assert_eq!(rcode(&server.udp(KUBERNETES, RecordType::A)), 0);
    assert_eq!(rcode(&server.tcp(KUBERNETES, RecordType::A)), 0);
    assert_eq!(
        answers(&server.udp("outside.example", RecordType::A)),
        ["outside.example. A 192.0.2.1"]
    );

    // Not the loop probe kubewire sends itself at start (through the
    // upstream, back to itself: a client query too).
    let probe = |m: &str| m.contains("kubewire-loop-probe");
    let responses = collector.wait_for(3, |m| m.contains("type: CLIENT_RESPONSE") && !probe(m));
    let queries = collector.wait_for(3, |m| m.contains("type: CLIENT_QUERY") && !probe(m));
    for message in queries.iter().chain(&responses) {
        assert!(message.contains("identity: \"node-a\""), "{message}");
        assert!(message.contains("version: \"kubewire "), "{message}");
        assert!(message.contains("query_address: 127.0.0.1"), "{message}");
        assert!(
            message.contains(&format!("response_port: {}", server.addr.port())),
            "{message}"
        );
    }
    let over = |protocol: &str| {
        responses
            .iter()
            .filter(|m| m.contains(&format!("socket_protocol: {protocol}")))
            .count()
    };
    assert_eq!((over("UDP"), over("TCP")), (2, 1), "{responses:?}");
    // `full`: the messages themselves.
    assert!(
        queries.iter().all(|m| m.contains("query_message: |")),
        "{queries:?}"
    );
    assert!(
        responses
            .iter()
            .any(|m| m.contains("kubernetes.default.svc.cluster.local.\t5\tIN\tA\t10.96.0.1")),
        "{responses:?}"
    );

    // The forwarded name's upstream exchange, to the upstream's address.
    let forwarded = collector.wait_for(1, |m| {
        m.contains("type: FORWARDER_RESPONSE") && m.contains("outside.example.")
    });
    let upstream_ip = upstream.addr.ip().to_string();
    assert!(
        forwarded[0].contains(&format!("response_address: {upstream_ip}")),
        "{forwarded:?}"
    );
    assert!(
        forwarded[0].contains(&format!("response_port: {}", upstream.addr.port())),
        "{forwarded:?}"
    );
    assert!(forwarded[0].contains("192.0.2.1"), "{forwarded:?}");
    assert!(
        forwarded[0].contains("socket_protocol: UDP"),
        "{forwarded:?}"
    );
    collector.wait_for(1, |m| m.contains("type: FORWARDER_QUERY"));

    // A truncated UDP reply is asked again over TCP: the exchange that
    // answered is the one told, with its protocol.
    upstream.set(Behaviour::TruncateUdp);
    assert_eq!(rcode(&server.udp("big.example", RecordType::A)), 0);
    let retried = collector.wait_for(1, |m| {
        m.contains("type: FORWARDER_RESPONSE") && m.contains("big.example.")
    });
    assert!(retried[0].contains("socket_protocol: TCP"), "{retried:?}");
    let (_, text) = http_get(server.http_addr("metrics"), "/metrics");
    assert_eq!(metric(&text, "coredns_dnstap_dropped_total"), 0.0, "{text}");
}

#[test]
fn a_collector_that_is_not_there_is_said_and_counted_and_queries_go_on() {
    let dir = tempdir("dnstap-late");
    let port = free_port();
    let listen: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let to = format!("tcp://{listen}");
    if peers::binary("dnstap").is_err() && !peers::peers_required() {
        let _ = writeln!(
            std::io::stderr(),
            "skipped: no dnstap collector (bench/peers/build.sh dnstap)"
        );
        return;
    }
    let mut server = Server::start(&["--demo", "--cores", "1", "--dnstap", &to]);
    let line = server.wait_for_log(
        "dnstap: cannot reach the collector",
        Duration::from_secs(10),
    );
    assert!(line.contains(&to), "{line}");
    for _ in 0..20 {
        assert_eq!(rcode(&server.udp(KUBERNETES, RecordType::A)), 0);
    }
    let dropped = |server: &mut Server| {
        let (_, text) = http_get(server.http_addr("metrics"), "/metrics");
        metric(&text, "coredns_dnstap_dropped_total")
    };
    eventually("the dropped events to be counted", || {
        dropped(&mut server) >= 40.0
    });

    // The collector comes: kubewire connects, and events flow.
    let listen = listen.to_string();
    let collector = Collector::start(&["-l", &listen], &dir).unwrap();
    server.wait_for_log("dnstap: connected", Duration::from_secs(10));
    assert_eq!(rcode(&server.udp(KUBERNETES, RecordType::A)), 0);
    collector.wait_for(1, |m| m.contains("type: CLIENT_RESPONSE"));
}

#[test]
fn queries_over_tls_and_https_are_told_with_their_protocols() {
    use common::tls::{Pki, ask, client_config, client_config_alpn, connect};
    use std::io::Read;
    let dir = tempdir("dnstap-tls");
    let socket = dir.join("tap.sock");
    let Some(collector) = Collector::start(&["-u", socket.to_str().unwrap()], &dir) else {
        return;
    };
    wait_for_socket(&socket);
    let pki = Pki::new("dnstap-pki", "dnstap test CA");
    pki.write_serving("first");
    let dot: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let doh: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let to = format!("unix://{}", socket.display());
    let mut args = pki.args();
    for arg in [
        "--cores",
        "1",
        "--tls-listen",
        &dot.to_string(),
        "--https-listen",
        &doh.to_string(),
        "--dnstap",
        &to,
        "--dnstap-full",
    ] {
        args.push(arg.to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut server = Server::start(&args);
    server.wait_for_log("dnstap: connected", Duration::from_secs(10));

    let mut stream = connect(dot, client_config(&pki.ca_file(), None)).unwrap();
    assert_eq!(
        rcode(&ask(&mut stream, KUBERNETES, RecordType::A).unwrap()),
        0
    );

    // DNS over HTTPS, HTTP/1.1, POST.
    let mut https = connect(doh, client_config_alpn(&pki.ca_file(), b"http/1.1")).unwrap();
    let query = build_query(KUBERNETES, RecordType::AAAA, None);
    write!(
        https,
        "POST /dns-query HTTP/1.1\r\nHost: dns.example\r\nContent-Type: application/dns-message\r\nContent-Length: {}\r\n\r\n",
        query.len()
    )
    .unwrap();
    https.write_all(&query).unwrap();
    https.flush().unwrap();
    let mut head = [0u8; 12];
    https.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");

    let told = |protocol: &str, qtype: &str| {
        collector.wait_for(1, |m| {
            m.contains("type: CLIENT_RESPONSE")
                && m.contains(&format!("socket_protocol: {protocol}"))
                // The question line, as miekg/dns prints it.
                && m.contains(&format!("IN\t {qtype}\n"))
        })
    };
    let over_tls = told("DOT", "A");
    assert!(
        over_tls[0].contains(&format!("response_port: {}", dot.port())),
        "{over_tls:?}"
    );
    let over_https = told("DOH", "AAAA");
    assert!(
        over_https[0].contains(&format!("response_port: {}", doh.port())),
        "{over_https:?}"
    );
    collector.wait_for(1, |m| {
        m.contains("type: CLIENT_QUERY") && m.contains("socket_protocol: DOH")
    });
}
