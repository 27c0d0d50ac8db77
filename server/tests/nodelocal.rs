//! Node-local mode end to end, each test inside a network namespace of its
//! own (CI runs as root): the real binary creates the interface and the
//! NOTRACK rules, answers on 169.254.20.10 for cluster and forwarded names,
//! repairs what is removed, and removes everything at exit unless told not
//! to. Clients, the scripted upstream and kubewire all live in the
//! namespace: the test body runs on a thread that unshared its network
//! namespace, and threads and processes it starts inherit it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::netns::{in_new_netns, interface_kind, kernel_has_dummy, run, try_run};
use common::upstream::Upstream;
use common::*;
use hickory_proto::rr::RecordType;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

const LOCAL: &str = "169.254.20.10";

fn interface_addresses(name: &str) -> Option<String> {
    try_run("ip", &["-o", "addr", "show", "dev", name])
}

fn nft_table() -> Option<String> {
    try_run("nft", &["list", "table", "inet", "kubewire-nodelocal"])
}

fn node_local_config(kind: &str, extra: &str, upstream: SocketAddr) -> String {
    format!(
        r#"
[source]
kind = "demo"
[dns]
listen = ["169.254.20.10:53"]
cores = "1"
[node_local]
enabled = true
interface_kind = "{kind}"
check_interval_s = 1
{extra}
[forward]
to = ["{upstream}"]
[lifecycle]
lameduck_ms = 100
"#
    )
}

fn local_addr() -> SocketAddr {
    SocketAddr::new(LOCAL.parse().unwrap(), 53)
}

/// The interface kind this kernel supports, after proving that a kernel
/// without the dummy driver gets an error that says what to do.
fn usable_kind(upstream: SocketAddr) -> &'static str {
    if kernel_has_dummy() {
        return "dummy";
    }
    let (_dir, path) = config_file(
        "nodelocal-nodummy",
        &node_local_config("dummy", "", upstream),
    );
    let server = Server::spawn(&["--config", &path], local_addr());
    let (status, log) = server.wait_exit(Duration::from_secs(10));
    assert!(!status.success(), "started without a dummy driver:\n{log}");
    assert!(
        log.contains("modprobe dummy") && log.contains("interface_kind = \"bridge\""),
        "the error names the missing driver and the way out:\n{log}"
    );
    "bridge"
}

#[test]
fn node_local_sets_up_serves_repairs_and_tears_down() {
    in_new_netns(|| {
        let upstream = Upstream::start();
        let kind = usable_kind(upstream.addr);
        let (_dir, path) = config_file("nodelocal", &node_local_config(kind, "", upstream.addr));
        let mut server = Server::spawn(&["--config", &path], local_addr());
        server.wait_for_log(READY_LINE, Duration::from_secs(20));

        let addresses = interface_addresses("nodelocaldns").expect("the interface exists");
        assert!(addresses.contains(&format!("{LOCAL}/32")), "{addresses}");
        let table = nft_table().expect("the nftables table exists");
        assert_eq!(table.matches("notrack").count(), 6, "{table}");
        assert!(
            table.contains(&format!("ip daddr {LOCAL} udp dport 53 notrack")),
            "{table}"
        );

        // Cluster names from the demo source, forwarded names from the
        // upstream, over UDP and TCP, on the link-local address.
        let reply = server.udp("kubernetes.default.svc.cluster.local", RecordType::A);
        assert_eq!(
            answers(&reply),
            ["kubernetes.default.svc.cluster.local. A 10.96.0.1"]
        );
        let reply = server.tcp("web.default.svc.cluster.local", RecordType::A);
        assert_eq!(rcode(&reply), 0);
        assert!(!answers(&reply).is_empty());
        let reply = server.udp("www.example.com", RecordType::A);
        assert_eq!(answers(&reply), ["www.example.com. A 192.0.2.1"]);
        assert!(upstream.seen.udp.load(Ordering::Relaxed) >= 1);

        let metrics = server.http_addr("metrics");
        let (_, text) = http_get(metrics, "/metrics");
        assert_eq!(
            metric(
                &text,
                "coredns_nodecache_setup_errors_total{errortype=\"iptables\"}"
            ),
            0.0
        );

        // Someone removes the address and the rules: the next check puts
        // them back.
        run(
            "ip",
            &["addr", "del", &format!("{LOCAL}/32"), "dev", "nodelocaldns"],
        );
        run("nft", &["delete", "table", "inet", "kubewire-nodelocal"]);
        eventually("the address and the rules are repaired", || {
            interface_addresses("nodelocaldns").is_some_and(|a| a.contains(LOCAL))
                && nft_table().is_some_and(|t| t.matches("notrack").count() == 6)
        });
        server.wait_for_log("repaired", Duration::from_secs(5));
        let reply = server.udp("kubernetes.default.svc.cluster.local", RecordType::A);
        assert_eq!(rcode(&reply), 0);

        server.signal(libc::SIGTERM);
        let (status, log) = server.wait_exit(Duration::from_secs(10));
        assert!(status.success(), "{log}");
        assert!(log.contains("removed the interface and rules"), "{log}");
        assert!(
            interface_addresses("nodelocaldns").is_none(),
            "the interface is gone"
        );
        assert!(nft_table().is_none(), "the rules are gone");

        // skip_teardown leaves both for the other instance of an HA pair.
        let (_dir, path) = config_file(
            "nodelocal-skip",
            &node_local_config(kind, "skip_teardown = true", upstream.addr),
        );
        let mut server = Server::spawn(&["--config", &path], local_addr());
        server.wait_for_log(READY_LINE, Duration::from_secs(20));
        server.signal(libc::SIGTERM);
        let (status, log) = server.wait_exit(Duration::from_secs(10));
        assert!(status.success(), "{log}");
        assert!(interface_addresses("nodelocaldns").is_some_and(|a| a.contains(LOCAL)));
        assert!(nft_table().is_some());
    });
}

#[test]
fn iptables_mode_adds_and_removes_raw_rules() {
    in_new_netns(|| {
        let upstream = Upstream::start();
        let kind = interface_kind();
        let (_dir, path) = config_file(
            "nodelocal-iptables",
            &node_local_config(kind, "notrack = \"iptables\"", upstream.addr),
        );
        let mut server = Server::spawn(&["--config", &path], local_addr());
        server.wait_for_log(READY_LINE, Duration::from_secs(20));
        let rules = run("iptables", &["-t", "raw", "-S"]);
        assert_eq!(rules.matches("-j NOTRACK").count(), 6, "{rules}");
        assert!(
            rules.contains(&format!(
                "-A PREROUTING -d {LOCAL}/32 -p udp -m udp --dport 53"
            )),
            "{rules}"
        );
        assert!(
            nft_table().is_none(),
            "iptables mode makes no nftables table"
        );
        let reply = server.udp("kubernetes.default.svc.cluster.local", RecordType::A);
        assert_eq!(rcode(&reply), 0);
        server.signal(libc::SIGTERM);
        let (status, log) = server.wait_exit(Duration::from_secs(10));
        assert!(status.success(), "{log}");
        let rules = run("iptables", &["-t", "raw", "-S"]);
        assert_eq!(rules.matches("NOTRACK").count(), 0, "{rules}");
    });
}

#[test]
fn forward_mode_sends_cluster_names_to_kube_dns_over_tcp() {
    in_new_netns(|| {
        let kube_dns = Upstream::start();
        let resolver = Upstream::start();
        let kind = interface_kind();
        let (_dir, path) = config_file(
            "nodelocal-forward",
            &node_local_config(
                kind,
                "cluster_names = \"forward\"\nnotrack = \"off\"",
                resolver.addr,
            ),
        );
        // The upstream comes from the Service's variables, as kubelet sets them.
        let host = kube_dns.addr.ip().to_string();
        let port = kube_dns.addr.port().to_string();
        let mut server = Server::spawn_with_env(
            &["--config", &path],
            local_addr(),
            &[
                ("KUBE_DNS_UPSTREAM_SERVICE_HOST", Some(&host)),
                ("KUBE_DNS_UPSTREAM_SERVICE_PORT", Some(&port)),
            ],
        );
        server.wait_for_log(READY_LINE, Duration::from_secs(20));
        assert!(nft_table().is_none(), "notrack = \"off\" adds no rules");

        // Not the demo's answer (10.96.0.1): kube-dns's, over TCP alone.
        let reply = server.udp("kubernetes.default.svc.cluster.local", RecordType::A);
        assert_eq!(
            answers(&reply),
            ["kubernetes.default.svc.cluster.local. A 192.0.2.1"]
        );
        assert_eq!(kube_dns.seen.tcp.load(Ordering::Relaxed), 1);
        assert_eq!(kube_dns.seen.udp.load(Ordering::Relaxed), 0);
        // Cached: the second ask does not reach kube-dns.
        let reply = server.udp("kubernetes.default.svc.cluster.local", RecordType::A);
        assert_eq!(rcode(&reply), 0);
        assert_eq!(kube_dns.seen.tcp.load(Ordering::Relaxed), 1);
        // Other names go to the resolver, over UDP.
        let reply = server.udp("www.example.com", RecordType::A);
        assert_eq!(rcode(&reply), 0);
        assert_eq!(resolver.seen.udp.load(Ordering::Relaxed), 1);
        assert_eq!(kube_dns.seen.tcp.load(Ordering::Relaxed), 1);
    });
}

#[test]
fn forward_mode_without_an_upstream_says_what_to_set() {
    in_new_netns(|| {
        let resolver = Upstream::start();
        let kind = interface_kind();
        let (_dir, path) = config_file(
            "nodelocal-noupstream",
            &node_local_config(kind, "cluster_names = \"forward\"", resolver.addr),
        );
        let server = Server::spawn_with_env(
            &["--config", &path],
            local_addr(),
            &[("KUBE_DNS_UPSTREAM_SERVICE_HOST", None)],
        );
        let (status, log) = server.wait_exit(Duration::from_secs(10));
        assert!(!status.success());
        assert!(
            log.contains("KUBE_DNS_UPSTREAM_SERVICE_HOST is not set")
                && log.contains("node_local.cluster_upstreams"),
            "{log}"
        );
    });
}

/// An HA pair: two instances share 169.254.20.10:53 through SO_REUSEPORT;
/// one is restarted (SIGTERM, then started again) under steady load from
/// kubewire-bench's generator, and every query must still be answered. The
/// stopping instance takes its sockets out of the group and answers what
/// they hold; the new one joins once it has its first sync; the interface
/// stays while the other instance serves.
#[test]
fn an_ha_pair_restarts_one_instance_under_load_without_losing_queries() {
    in_new_netns(|| {
        let upstream = Upstream::start();
        let kind = interface_kind();
        let (_first_dir, first) = config_file(
            "nodelocal-ha-a",
            &node_local_config(kind, "skip_teardown = true", upstream.addr),
        );
        let (_second_dir, second) = config_file(
            "nodelocal-ha-b",
            &node_local_config(kind, "", upstream.addr),
        );
        let start = |path: &str| {
            let mut server = Server::spawn(&["--config", path], local_addr());
            server.wait_for_log(READY_LINE, Duration::from_secs(20));
            server
        };
        let _a = start(&first);
        let b = start(&second);
        assert!(b.seen.iter().any(|l| l.contains("sharing this address")));

        let load = std::thread::spawn(|| {
            let config = kubewire_bench::load::LoadConfig {
                server: local_addr(),
                queries: kubewire_bench::load::parse_query_file(
                    "kubernetes.default.svc.cluster.local A\nweb.default.svc.cluster.local A\n",
                )
                .unwrap(),
                rate: 2_000,
                duration: Duration::from_secs(4),
                sockets: 32,
                timeout: Duration::from_secs(2),
                ..Default::default()
            };
            kubewire_bench::load::run(&config, None).unwrap()
        });
        std::thread::sleep(Duration::from_secs(1));
        b.signal(libc::SIGTERM);
        let (status, log) = b.wait_exit(Duration::from_secs(10));
        assert!(status.success(), "{log}");
        assert!(
            log.contains("another instance still serves this address"),
            "the stopping instance leaves the interface to the other:\n{log}"
        );
        let _b = start(&second);
        let report = load.join().unwrap();
        assert!(report.sent >= 7_000, "the load ran: {} sent", report.sent);
        assert_eq!(
            report.lost, 0,
            "{} of {} queries lost across the restart",
            report.lost, report.sent
        );
        assert_eq!(report.rcodes.get("NOERROR"), Some(&report.answered));
    });
}

/// Without CAP_NET_ADMIN kubewire does not start, and says which
/// capability to add.
#[test]
fn without_cap_net_admin_the_error_names_the_capability() {
    in_new_netns(|| {
        let upstream = Upstream::start();
        let kind = interface_kind();
        let (_dir, path) = config_file(
            "nodelocal-nocap",
            &node_local_config(kind, "", upstream.addr),
        );
        // As root, but with NET_ADMIN gone from the bounding and inheritable
        // sets, so the exec'd kubewire does not have it.
        let output = Command::new("setpriv")
            .args([
                "--bounding-set=-net_admin",
                "--inh-caps=-net_admin",
                env!("CARGO_BIN_EXE_kubewire"),
                "--config",
                &path,
            ])
            .output()
            .expect("setpriv (util-linux)");
        let log = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success(),
            "started without NET_ADMIN:\n{log}"
        );
        assert!(
            log.contains("needs CAP_NET_ADMIN") && log.contains("NET_ADMIN to the container"),
            "{log}"
        );
        assert!(interface_addresses("nodelocaldns").is_none());
    });
}

/// With neither `nft` nor `iptables` on PATH, kubewire does not start, and
/// says what to install or set.
#[test]
fn without_nft_or_iptables_the_error_says_what_to_install() {
    in_new_netns(|| {
        let upstream = Upstream::start();
        let kind = interface_kind();
        let (_dir, path) = config_file(
            "nodelocal-notools",
            &node_local_config(kind, "", upstream.addr),
        );
        let server = Server::spawn_with_env(
            &["--config", &path],
            local_addr(),
            &[("PATH", Some("/nonexistent"))],
        );
        let (status, log) = server.wait_exit(Duration::from_secs(10));
        assert!(!status.success(), "{log}");
        assert!(
            log.contains("install nftables or iptables")
                && log.contains("node_local.notrack = \"off\""),
            "{log}"
        );
    });
}
