//! Operations, against the real binary: the config file and its errors,
//! live reload, Prometheus metrics, /health and /ready through startup,
//! sync and lameduck, the query log, and the Corefile translation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;
use kubewire_bench::fake_api::{FakeApi, namespace, service};
use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn kubewire(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_kubewire"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

fn ttls(message: &Message) -> Vec<u32> {
    message.answers.iter().map(|r| r.ttl).collect()
}

#[test]
fn metrics_count_a_known_set_of_queries_exactly() {
    let mut server = Server::start(&["--demo", "--cores", "2"]);
    let metrics = server.http_addr("metrics");
    let server_label = format!("dns://{}", server.addr);

    // From several source ports, so both cores answer some.
    for _ in 0..3 {
        assert_eq!(
            rcode(&server.udp("kubernetes.default.svc.cluster.local", RecordType::A)),
            0
        );
    }
    for _ in 0..2 {
        assert_eq!(
            rcode(&server.udp("nope.default.svc.cluster.local", RecordType::AAAA)),
            3
        );
    }
    assert_eq!(
        rcode(&server.tcp("kube-dns.kube-system.svc.cluster.local", RecordType::SRV)),
        0
    );
    assert_eq!(rcode(&server.udp("example.com", RecordType::A)), 5);
    assert_eq!(
        rcode(&server.udp("dns-version.cluster.local", RecordType::Unknown(99))),
        0
    );

    let count = format!(
        "coredns_dns_request_duration_seconds_count{{server=\"{server_label}\",zone=\".\",view=\"\"}}"
    );
    let mut body = String::new();
    eventually("every query's duration to be counted", || {
        let (status, text) = http_get(metrics, "/metrics");
        assert_eq!(status, 200);
        body = text;
        metric(&body, &count) == 8.0
    });
    let requests = |proto: &str, qtype: &str| {
        metric(
            &body,
            &format!(
                "coredns_dns_requests_total{{server=\"{server_label}\",zone=\".\",view=\"\",proto=\"{proto}\",family=\"1\",type=\"{qtype}\"}}"
            ),
        )
    };
    assert_eq!(requests("udp", "A"), 4.0, "{body}");
    assert_eq!(requests("udp", "AAAA"), 2.0, "{body}");
    assert_eq!(requests("tcp", "SRV"), 1.0, "{body}");
    assert_eq!(requests("udp", "other"), 1.0, "{body}");
    assert_eq!(requests("tcp", "A"), 0.0, "{body}");
    let responses = |rcode: &str, plugin: &str| {
        metric(
            &body,
            &format!(
                "coredns_dns_responses_total{{server=\"{server_label}\",zone=\".\",view=\"\",rcode=\"{rcode}\",plugin=\"{plugin}\"}}"
            ),
        )
    };
    assert_eq!(responses("NOERROR", "kubernetes"), 5.0, "{body}");
    assert_eq!(responses("NXDOMAIN", "kubernetes"), 2.0, "{body}");
    assert_eq!(responses("REFUSED", ""), 1.0, "{body}");
    assert_eq!(responses("SERVFAIL", "kubernetes"), 0.0, "{body}");
    // Every duration is under the top bucket, and the +Inf bucket holds all.
    assert_eq!(
        metric(
            &body,
            &format!(
                "coredns_dns_request_duration_seconds_bucket{{le=\"+Inf\",server=\"{server_label}\",zone=\".\",view=\"\"}}"
            )
        ),
        8.0,
        "{body}"
    );
    let sizes = |which: &str, proto: &str| {
        metric(
            &body,
            &format!(
                "coredns_dns_{which}_size_bytes_count{{server=\"{server_label}\",zone=\".\",view=\"\",proto=\"{proto}\"}}"
            ),
        )
    };
    assert_eq!(sizes("request", "udp"), 7.0, "{body}");
    assert_eq!(sizes("request", "tcp"), 1.0, "{body}");
    assert_eq!(sizes("response", "udp"), 7.0, "{body}");
    // Queries of under 100 bytes fall in the le="100" bucket (requests are
    // 40 to 70 bytes here).
    assert_eq!(
        metric(
            &body,
            &format!(
                "coredns_dns_request_size_bytes_bucket{{le=\"100.0\",server=\"{server_label}\",zone=\".\",view=\"\",proto=\"udp\"}}"
            )
        ),
        7.0,
        "{body}"
    );
    assert_eq!(metric(&body, "coredns_panics_total"), 0.0, "{body}");
    assert!(body.contains("coredns_build_info{version=\""), "{body}");
    let per_core: f64 = body
        .lines()
        .filter(|l| l.starts_with("kubewire_core_queries_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(per_core, 8.0, "{body}");
    // Both cores hold the demo's names, at the same revision.
    let names: Vec<f64> = body
        .lines()
        .filter(|l| l.starts_with("kubewire_core_table_names{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{body}");
    assert!(names[0] > 30.0 && names[0] == names[1], "{body}");
    assert_eq!(metric(&body, "kubewire_synced"), 1.0, "{body}");
    assert!(body.ends_with("# EOF\n"));
}

#[test]
fn metrics_can_be_turned_off() {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut server = Server::spawn(&["--demo", "--cores", "1-1", "--metrics-addr", ""], addr);
    server.wait_for_log(READY_LINE, Duration::from_secs(20));
    assert_eq!(
        rcode(&server.udp("kubernetes.default.svc.cluster.local", RecordType::A)),
        0
    );
    server.signal(libc::SIGINT);
    let (_, log) = server.wait_exit(Duration::from_secs(10));
    assert!(log.contains("health endpoint listening"), "{log}");
    assert!(!log.contains("metrics endpoint listening"), "{log}");
}

#[test]
fn health_and_ready_through_startup_sync_and_lameduck() {
    let api = FakeApi::start().unwrap();
    api.apply(service("default", "web", "10.96.0.20", &[("http", 80)]));
    api.hold_lists(true);
    let dir = tempdir("lifecycle");
    let kubeconfig = api.write_kubeconfig(&dir).unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut server = Server::spawn(
        &[
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--cores",
            "2",
            "--lameduck-ms",
            "1500",
        ],
        addr,
    );
    let health = server.http_addr("health");
    let ready = server.http_addr("ready");
    let metrics = server.http_addr("metrics");

    // Startup: alive, not ready, not synced.
    assert_eq!(http_status(health, "/health"), 200);
    assert_eq!(http_status(ready, "/ready"), 503);
    let body = http_get(metrics, "/metrics").1;
    assert_eq!(metric(&body, "kubewire_synced"), 0.0, "{body}");
    assert_eq!(
        metric(&body, "kubewire_api_contact_age_seconds"),
        -1.0,
        "{body}"
    );

    // Sync.
    api.hold_lists(false);
    server.wait_for_log(READY_LINE, Duration::from_secs(20));
    assert_eq!(http_status(ready, "/ready"), 200);
    let body = http_get(metrics, "/metrics").1;
    assert_eq!(metric(&body, "kubewire_synced"), 1.0, "{body}");
    assert!(
        metric(&body, "kubewire_relists_total{kind=\"Service\"}") >= 1.0,
        "{body}"
    );
    let age = metric(&body, "kubewire_api_contact_age_seconds");
    assert!((0.0..10.0).contains(&age), "{body}");

    // Lameduck: /ready turns 503 at once, DNS and /health keep going.
    let signalled = Instant::now();
    server.signal(libc::SIGTERM);
    eventually("/ready to turn 503", || http_status(ready, "/ready") == 503);
    assert!(signalled.elapsed() < Duration::from_millis(1000));
    let reply = server.udp("web.default.svc.cluster.local", RecordType::A);
    assert_eq!(
        answers(&reply),
        vec!["web.default.svc.cluster.local. A 10.96.0.20"]
    );
    assert_eq!(http_status(health, "/health"), 200);
    assert!(
        signalled.elapsed() < Duration::from_millis(1400),
        "still inside the lameduck period"
    );
    let (status, log) = server.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{log}");
    assert!(
        signalled.elapsed() >= Duration::from_millis(1500),
        "stopped before the lameduck period ended"
    );
    assert!(log.contains("lameduck period over: stopping"), "{log}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_bad_config_gives_an_exact_error() {
    let dir = tempdir("badconfig");
    let path = dir.join("kubewire.toml");
    std::fs::write(&path, "[dns]\nlisten = [\"127.0.0.1:5353\"]\nttl = 30\n").unwrap();
    let want = format!(
        "error: {}:3: unknown key \"dns.ttl\"; did you mean \"dns.ttl_seconds\"? \
         The keys of [dns] are: listen, cores, zones, ttl_seconds, udp_io\n",
        path.display()
    );
    let path_text = path.to_str().unwrap();
    let (ok, _, stderr) = kubewire(&["--config", path_text, "--demo"]);
    assert!(!ok);
    assert_eq!(stderr, want);
    let (ok, _, stderr) = kubewire(&["config", "check", path_text]);
    assert!(!ok);
    assert_eq!(stderr, want);

    std::fs::write(&path, "[kubernetes]\npods = \"strict\"\n").unwrap();
    let (ok, _, stderr) = kubewire(&["config", "check", path_text]);
    assert!(!ok);
    assert_eq!(
        stderr,
        format!(
            "error: {}:2: kubernetes.pods: pod mode \"strict\" is not one of: disabled, insecure, verified \
             (allowed: \"disabled\", \"insecure\" or \"verified\")\n",
            path.display()
        )
    );

    std::fs::write(&path, "[dns]\nttl_seconds = 30\n").unwrap();
    let (ok, stdout, _) = kubewire(&["config", "check", path_text]);
    assert!(ok);
    assert_eq!(stdout, format!("{}: OK\n", path.display()));

    // Flags override the file, and the environment works too.
    let output = Command::new(env!("CARGO_BIN_EXE_kubewire"))
        .args(["config", "print", "--config", path_text])
        .env("KUBEWIRE_TCP_MAX_CONNECTIONS", "77")
        .output()
        .unwrap();
    let printed = String::from_utf8(output.stdout).unwrap();
    assert!(printed.contains("\nttl_seconds = 30\n"), "{printed}");
    assert!(printed.contains("\nmax_connections = 77\n"), "{printed}");
    let (_, printed, _) = kubewire(&["config", "print", "--config", path_text, "--ttl", "12"]);
    assert!(printed.contains("\nttl_seconds = 12\n"), "{printed}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_live_reload_changes_the_ttl_without_a_failed_query() {
    let dir = tempdir("reload");
    let path = dir.join("kubewire.toml");
    std::fs::write(
        &path,
        "[source]\nkind = \"demo\"\n\n[dns]\nttl_seconds = 5\n",
    )
    .unwrap();
    let mut server = Server::start(&["--config", path.to_str().unwrap(), "--cores", "2"]);
    let name = "kubernetes.default.svc.cluster.local";
    assert_eq!(ttls(&server.udp(name, RecordType::A)), vec![5]);

    // A client querying nonstop from several ports while the file changes.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let answered = Arc::new(AtomicU64::new(0));
    let seen_30 = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..2 {
        let (stop, failures, answered, seen_30) = (
            Arc::clone(&stop),
            Arc::clone(&failures),
            Arc::clone(&answered),
            Arc::clone(&seen_30),
        );
        let addr = server.addr;
        clients.push(std::thread::spawn(move || {
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            socket
                .set_read_timeout(Some(Duration::from_secs(2)))
                .unwrap();
            let query = build_query(name, RecordType::A, None);
            while !stop.load(Ordering::Relaxed) {
                let reply = udp_exchange(&socket, addr, &query)
                    .and_then(|bytes| Message::from_vec(&bytes).ok());
                match reply {
                    Some(m) if rcode(&m) == 0 && m.answers.len() == 1 => {
                        answered.fetch_add(1, Ordering::Relaxed);
                        match m.answers[0].ttl {
                            30 => seen_30.store(true, Ordering::Relaxed),
                            5 => {}
                            _ => {
                                failures.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    _ => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(200));
    std::fs::write(
        &path,
        "[source]\nkind = \"demo\"\n\n[dns]\nttl_seconds = 30\nudp_io = \"glommio\"\n",
    )
    .unwrap();
    server.wait_for_log("configuration reloaded", Duration::from_secs(10));
    eventually("answers with the new TTL", || {
        seen_30.load(Ordering::Relaxed)
    });
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }
    assert_eq!(failures.load(Ordering::Relaxed), 0);
    assert!(answered.load(Ordering::Relaxed) > 50);
    assert_eq!(ttls(&server.udp(name, RecordType::A)), vec![30]);
    // What cannot change live is named.
    let line = server.wait_for_log("cannot change while kubewire runs", Duration::from_secs(5));
    assert!(line.contains("dns.udp_io"), "{line}");

    // SIGHUP reloads too; a bad file keeps the running configuration.
    std::fs::write(&path, "[dns]\nttl_seconds = \"soon\"\n").unwrap();
    server.wait_for_log("keeping the running configuration", Duration::from_secs(10));
    assert_eq!(ttls(&server.udp(name, RecordType::A)), vec![30]);
    std::fs::write(&path, "[source]\nkind = \"demo\"\n[dns]\nttl_seconds = 7\n").unwrap();
    server.signal(libc::SIGHUP);
    server.wait_for_log("SIGHUP: reloading", Duration::from_secs(10));
    eventually("answers with TTL 7", || {
        ttls(&server.udp(name, RecordType::A)) == vec![7]
    });
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_live_reload_changes_the_namespace_filter_and_the_log_level() {
    let api = FakeApi::start().unwrap();
    api.apply_all([
        namespace("team-a"),
        namespace("team-b"),
        service("team-a", "web", "10.96.1.1", &[("http", 80)]),
        service("team-b", "web", "10.96.2.1", &[("http", 80)]),
    ]);
    let dir = tempdir("filters");
    let kubeconfig = api.write_kubeconfig(&dir).unwrap();
    let path = dir.join("kubewire.toml");
    let config = |namespaces: &str, level: &str| {
        format!(
            "[source]\nkind = \"cluster\"\nkubeconfig = {kubeconfig:?}\n\n\
             [kubernetes]\nnamespaces = {namespaces}\n\n[log]\nlevel = \"{level}\"\n"
        )
    };
    std::fs::write(&path, config("[\"team-a\"]", "info")).unwrap();
    // Without RUST_LOG, which would win over log.level.
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut server = Server::spawn_with_env(
        &["--config", path.to_str().unwrap(), "--cores", "2"],
        addr,
        &[("RUST_LOG", None)],
    );
    server.wait_for_log(READY_LINE, Duration::from_secs(20));
    let a = "web.team-a.svc.cluster.local";
    let b = "web.team-b.svc.cluster.local";
    assert_eq!(
        answers(&server.udp(a, RecordType::A)),
        vec![format!("{a}. A 10.96.1.1")]
    );
    assert_eq!(
        rcode(&server.udp(b, RecordType::A)),
        3,
        "team-b is filtered out"
    );

    // Both namespaces, and debug logs for a change's way to the cores: the
    // watchers relist with the new filter, and team-a's answer never goes
    // away.
    std::fs::write(
        &path,
        config(
            "[\"team-a\", \"team-b\"]",
            "info,kubewire::propagation=debug",
        ),
    )
    .unwrap();
    eventually("team-b to be served", || {
        assert_eq!(rcode(&server.udp(a, RecordType::A)), 0, "team-a flapped");
        rcode(&server.udp(b, RecordType::A)) == 0
    });
    let line = server.wait_for_log("configuration reloaded", Duration::from_secs(5));
    assert!(
        line.contains("kubernetes.namespaces") && line.contains("log.level"),
        "{line}"
    );
    // A debug line of kubewire::propagation (the relist's delta) now passes
    // the filter.
    server.wait_for_log("DEBUG kubewire::propagation", Duration::from_secs(5));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_query_log_writes_sampled_queries() {
    let mut server = Server::start(&["--demo", "--cores", "1-1", "--query-log-sample", "1"]);
    server.udp("kubernetes.default.svc.cluster.local", RecordType::A);
    let line = server.wait_for_log("kubewire::query", Duration::from_secs(5));
    assert!(
        line.contains("name=kubernetes.default.svc.cluster.local")
            && line.contains("qtype=A")
            && line.contains("rcode=NOERROR")
            && line.contains("client=127.0.0.1:")
            && line.contains("duration_us="),
        "{line}"
    );
    server.tcp("nope.default.svc.cluster.local", RecordType::AAAA);
    let line = server.wait_for_log("rcode=NXDOMAIN", Duration::from_secs(5));
    assert!(line.contains("qtype=AAAA"), "{line}");
}

const KUBEADM_COREFILE: &str = ".:53 {
    errors
    health {
       lameduck 5s
    }
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
    }
    prometheus :9153
    forward . /etc/resolv.conf {
       max_concurrent 1000
    }
    cache 30
    loop
    reload
    loadbalance
}
";

#[test]
fn from_corefile_translates_the_kubeadm_corefile() {
    let dir = tempdir("corefile");
    let path = dir.join("Corefile");
    std::fs::write(&path, KUBEADM_COREFILE).unwrap();
    let (ok, stdout, stderr) = kubewire(&["config", "from-corefile", path.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    let stdout = stdout.replace(path.to_str().unwrap(), "Corefile");
    let stderr = stderr.replace(path.to_str().unwrap(), "Corefile");
    let expected = r#"# kubewire configuration translated by `kubewire config from-corefile` from Corefile.

[dns]
# from Corefile:1: .:53
listen = ["0.0.0.0:53"]
# from Corefile:7: kubernetes cluster.local in-addr.arpa ip6.arpa (PTR records under in-addr.arpa and ip6.arpa are always served for cluster addresses)
zones = ["cluster.local"]
# from Corefile:10: ttl 30
ttl_seconds = 30

[kubernetes]
# from Corefile:8: pods insecure
pods = "insecure"

[http]
# from Corefile:3: health
health_addr = "0.0.0.0:8080"
# from Corefile:6: ready
ready_addr = "0.0.0.0:8181"
# from Corefile:12: prometheus :9153
metrics_addr = "0.0.0.0:9153"

[lifecycle]
# from Corefile:4: lameduck 5s
lameduck_ms = 5000

[forward]
# from Corefile:13: forward . /etc/resolv.conf
to = ["/etc/resolv.conf"]
# from Corefile:14: max_concurrent 1000
max_concurrent_per_core = 1000

[cache]
# from Corefile:16: cache 30
max_ttl_s = 30
# from Corefile:16: cache 30
denial_max_ttl_s = 30

# Always on in kubewire, nothing to set:
# - Corefile:2: errors: kubewire always logs errors, once per cause
# - Corefile:9: fallthrough in-addr.arpa ip6.arpa: kubewire forwards the reverse names no cluster object owns, when it forwards
# - Corefile:17: loop: kubewire refuses, at start, any upstream that is one of its own listen addresses
# - Corefile:18: reload: kubewire reloads its --config file on SIGHUP and when the file changes
# - Corefile:19: loadbalance: kubewire always rotates A and AAAA answers round-robin
"#;
    assert_eq!(stdout, expected);
    assert!(stderr.is_empty(), "nothing left over: {stderr}");
    // The translation is a config kubewire accepts.
    let toml_path = dir.join("kubewire.toml");
    std::fs::write(&toml_path, &stdout).unwrap();
    let (ok, _, stderr) = kubewire(&["config", "check", toml_path.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_core_that_panics_stops_the_process_with_a_clear_log_line() {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut server = Server::spawn_with_env(
        &["--demo", "--cores", "2"],
        addr,
        &[(
            "KUBEWIRE_TEST_PANIC_ON",
            Some("boom.default.svc.cluster.local"),
        )],
    );
    server.wait_for_log(READY_LINE, Duration::from_secs(20));
    assert_eq!(
        answers(&server.udp("kubernetes.default.svc.cluster.local", RecordType::A)),
        ["kubernetes.default.svc.cluster.local. A 10.96.0.1"]
    );
    // The query that panics a core gets no answer; the process stops rather
    // than leave that core's sockets taking a share of the clients.
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let boom = build_query("boom.default.svc.cluster.local", RecordType::A, None);
    socket.send_to(&boom, addr).unwrap();
    let (status, log) = server.wait_exit(Duration::from_secs(10));
    assert!(!status.success(), "exit status {status}; log:\n{log}");
    assert!(
        log.contains("a serving core panicked"),
        "no clear log line:\n{log}"
    );
    assert!(log.contains("a serving core failed"), "{log}");
}
