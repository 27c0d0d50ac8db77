//! Forwarding end to end: the real binary, a scripted upstream on loopback,
//! and hickory-proto as the client.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::upstream::{Behaviour, Upstream};
use common::*;
use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

fn forwarding(upstreams: &[&Upstream], extra: &[&str]) -> Server {
    let list: Vec<String> = upstreams.iter().map(|u| u.addr.to_string()).collect();
    let list = list.join(",");
    let mut args = vec!["--demo", "--cores", "2", "--forward", list.as_str()];
    args.extend_from_slice(extra);
    Server::start(&args)
}

#[test]
fn external_names_are_forwarded_with_the_clients_id_and_case() {
    let upstream = Upstream::start();
    let server = forwarding(&[&upstream], &[]);
    let reply = server.udp("WWW.Example.COM", RecordType::A);
    assert_eq!(rcode(&reply), 0);
    assert!(
        reply.metadata.recursion_available,
        "RA on a forwarded reply"
    );
    assert_eq!(answers(&reply), ["WWW.Example.COM. A 192.0.2.1"]);
    assert_eq!(reply.queries[0].name().to_ascii(), "WWW.Example.COM.");
    // The upstream saw the client's question, case and all.
    assert_eq!(upstream.names(), ["WWW.Example.COM."]);
    // Over TCP too, and NXDOMAIN passes through.
    let reply = server.tcp("nxhost.example.com", RecordType::A);
    assert_eq!(rcode(&reply), 3);
    // Cluster names are never forwarded, NXDOMAIN included; they carry RA.
    let before = upstream.queries();
    let reply = server.udp("nope.default.svc.cluster.local", RecordType::A);
    assert_eq!(rcode(&reply), 3);
    assert!(reply.metadata.recursion_available);
    assert_eq!(
        answers(&server.udp("kubernetes.default.svc.cluster.local", RecordType::A)),
        ["kubernetes.default.svc.cluster.local. A 10.96.0.1"]
    );
    assert_eq!(upstream.queries(), before);
    // A reverse name no cluster object owns is forwarded.
    let reply = server.udp("55.2.0.192.in-addr.arpa", RecordType::PTR);
    assert_eq!(rcode(&reply), 0);
    assert_eq!(
        answers(&reply),
        ["55.2.0.192.in-addr.arpa. PTR host.example."]
    );
    // EDNS: our OPT goes back to a client that sent one.
    let query = build_query("edns.example.com", RecordType::A, Some(1232));
    let reply = udp_query(server.addr, &query);
    assert!(reply.edns.is_some(), "OPT in the reply");
}

#[test]
fn forged_and_broken_replies_are_dropped_and_the_client_gets_servfail_in_time() {
    let upstream = Upstream::start();
    let (_config_dir, config) = config_file(
        "forward-config",
        "[forward]\ntimeout_ms = 300\nmax_attempts = 2\nmax_fails = 0\n",
    );
    let mut server = forwarding(&[&upstream], &["--config", config.as_str()]);
    for behaviour in [
        Behaviour::WrongId,
        Behaviour::WrongQuestion,
        Behaviour::OtherPort,
        Behaviour::QrClear,
        Behaviour::Garbage,
        Behaviour::Drop,
    ] {
        upstream.set(behaviour);
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        let query = build_query("forged.example.com", RecordType::A, None);
        let started = Instant::now();
        socket.send_to(&query, server.addr).unwrap();
        let mut buf = [0u8; 1500];
        let (len, _) = socket.recv_from(&mut buf).expect("a reply within 3 s");
        let took = started.elapsed();
        let reply = Message::from_vec(&buf[..len]).unwrap();
        assert_eq!(rcode(&reply), 2, "{behaviour:?}: SERVFAIL");
        assert!(reply.answers.is_empty(), "{behaviour:?}");
        // Two attempts of 300 ms, then SERVFAIL: not later.
        assert!(
            took < Duration::from_millis(1200),
            "{behaviour:?} took {took:?}"
        );
        assert!(
            took >= Duration::from_millis(500) || behaviour == Behaviour::Garbage,
            "{behaviour:?} took {took:?}"
        );
    }
    // Cluster answers and good upstream answers go on.
    upstream.set(Behaviour::Answer);
    assert_eq!(rcode(&server.udp("ok.example.com", RecordType::A)), 0);
    let metrics_addr = server.http_addr("metrics");
    let (_, body) = http_get(metrics_addr, "/metrics");
    let mismatched = metric(&body, "kubewire_forward_mismatched_replies_total");
    assert!(
        mismatched >= 4.0,
        "mismatched replies counted: {mismatched}\n{body}"
    );
    let to = upstream.addr.to_string();
    assert!(
        body.contains(&format!("coredns_proxy_request_duration_seconds_count{{proxy_name=\"forward\",to=\"{to}\",rcode=\"NOERROR\"}}")),
        "{body}"
    );
    let server_label = format!("dns://{}", server.addr);
    let servfails = metric(
        &body,
        &format!(
            "coredns_dns_responses_total{{server=\"{server_label}\",zone=\".\",view=\"\",rcode=\"SERVFAIL\",plugin=\"forward\"}}"
        ),
    );
    // Six clients, and the start's loop probes (HINFO, type "other") that
    // met the misbehaving upstream.
    let probes = metric(
        &body,
        &format!(
            "coredns_dns_requests_total{{server=\"{server_label}\",zone=\".\",view=\"\",proto=\"udp\",family=\"1\",type=\"other\"}}"
        ),
    );
    assert!(
        (6.0..=6.0 + probes).contains(&servfails),
        "{servfails}\n{body}"
    );
}

#[test]
fn truncated_udp_is_retried_over_tcp_and_force_tcp_uses_tcp_only() {
    let upstream = Upstream::start();
    upstream.set(Behaviour::TruncateUdp);
    let server = forwarding(&[&upstream], &[]);
    let reply = server.udp("big.example.com", RecordType::A);
    assert_eq!(answers(&reply), ["big.example.com. A 192.0.2.1"]);
    assert!(!reply.metadata.truncation);
    assert_eq!(
        upstream.seen.udp.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(
        upstream.seen.tcp.load(std::sync::atomic::Ordering::Relaxed),
        1
    );

    // force_tcp: one kept connection per core, reused, with queries
    // pipelined on it.
    let upstream = Upstream::start();
    let (_config_dir, config) = config_file("forward-config", "[forward]\nforce_tcp = true\n");
    let mut server = forwarding(&[&upstream], &["--config", config.as_str(), "--cores", "1"]);
    for i in 0..3 {
        let reply = server.udp(&format!("tcp{i}.example.com"), RecordType::A);
        assert_eq!(rcode(&reply), 0);
    }
    // Ten at once, on the same connection.
    upstream.set(Behaviour::Delay(200));
    let sockets: Vec<UdpSocket> = (0..10)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    for (i, socket) in sockets.iter().enumerate() {
        let query = build_query(&format!("pipelined{i}.example.com"), RecordType::A, None);
        socket.send_to(&query, server.addr).unwrap();
    }
    for (i, socket) in sockets.iter().enumerate() {
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 1500];
        let (len, _) = socket.recv_from(&mut buf).expect("a reply");
        let reply = Message::from_vec(&buf[..len]).unwrap();
        assert_eq!(
            answers(&reply),
            [format!("pipelined{i}.example.com. A 192.0.2.1")]
        );
    }
    let seen = &upstream.seen;
    assert_eq!(seen.udp.load(std::sync::atomic::Ordering::Relaxed), 0);
    assert_eq!(
        seen.tcp.load(std::sync::atomic::Ordering::Relaxed),
        13,
        "{:?}",
        upstream.names()
    );
    assert_eq!(
        seen.connections.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "one kept connection"
    );
    let (_, body) = http_get(server.http_addr("metrics"), "/metrics");
    let to = upstream.addr.to_string();
    let hits = format!(
        "coredns_proxy_conn_cache_hits_total{{proxy_name=\"forward\",to=\"{to}\",proto=\"tcp\"}}"
    );
    let misses = format!(
        "coredns_proxy_conn_cache_misses_total{{proxy_name=\"forward\",to=\"{to}\",proto=\"tcp\"}}"
    );
    // Thirteen queries and the start's loop probe, on one connection.
    assert_eq!(metric(&body, &misses), 1.0, "{body}");
    assert_eq!(metric(&body, &hits), 13.0, "{body}");
}

#[test]
fn a_failing_upstream_is_marked_down_health_checked_and_taken_back() {
    let first = Upstream::start();
    let second = Upstream::start();
    first.answer("who.example.com", Ipv4Addr::new(192, 0, 2, 11));
    second.answer("who.example.com", Ipv4Addr::new(192, 0, 2, 22));
    first.set(Behaviour::Drop);
    let (_config_dir, config) = config_file(
        "forward-config",
        "[forward]\npolicy = \"sequential\"\ntimeout_ms = 300\nmax_fails = 1\nhealth_check_ms = 100\n\n[cache]\nenabled = false\n",
    );
    let mut server = forwarding(
        &[&first, &second],
        &["--config", config.as_str(), "--cores", "1"],
    );
    // The first times out; the second answers.
    assert_eq!(
        answers(&server.udp("who.example.com", RecordType::A)),
        ["who.example.com. A 192.0.2.22"]
    );
    server.wait_for_log("upstream marked down", Duration::from_secs(5));
    // While it is down, queries go straight to the second: no wait.
    let started = Instant::now();
    assert_eq!(
        answers(&server.udp("who.example.com", RecordType::A)),
        ["who.example.com. A 192.0.2.22"]
    );
    assert!(started.elapsed() < Duration::from_millis(250));
    // It is health-checked with `. IN NS`, and comes back when it answers.
    eventually("health checks", || {
        first.seen.probes.load(std::sync::atomic::Ordering::Relaxed) >= 2
    });
    first.set(Behaviour::Answer);
    server.wait_for_log("back in use", Duration::from_secs(5));
    assert_eq!(
        answers(&server.udp("who.example.com", RecordType::A)),
        ["who.example.com. A 192.0.2.11"]
    );
}

#[test]
fn stub_domains_take_the_longest_zone_and_except_refuses() {
    let general = Upstream::start();
    let corp = Upstream::start();
    general.answer("www.corp.example", Ipv4Addr::new(192, 0, 2, 1));
    corp.answer("www.corp.example", Ipv4Addr::new(192, 0, 2, 99));
    let (_config_dir, config) = config_file(
        "forward-config",
        &format!(
            "[forward]\nto = [\"{}\"]\nexcept = [\"private.example\"]\n\n[forward.stub_domains]\n\"corp.example\" = [\"{}\"]\n",
            general.addr, corp.addr
        ),
    );
    let server = Server::start(&["--demo", "--cores", "2", "--config", config.as_str()]);
    assert_eq!(
        answers(&server.udp("www.corp.example", RecordType::A)),
        ["www.corp.example. A 192.0.2.99"]
    );
    assert_eq!(
        answers(&server.udp("www.elsewhere.example", RecordType::A)),
        ["www.elsewhere.example. A 192.0.2.1"]
    );
    assert_eq!(rcode(&server.udp("a.private.example", RecordType::A)), 5);
    assert_eq!(corp.queries(), 1);
    assert_eq!(general.queries(), 1);
}

#[test]
fn queries_over_max_concurrent_are_refused() {
    let upstream = Upstream::start();
    upstream.set(Behaviour::Delay(800));
    let (_config_dir, config) =
        config_file("forward-config", "[forward]\nmax_concurrent_per_core = 2\n");
    let mut server = forwarding(&[&upstream], &["--config", config.as_str(), "--cores", "1"]);
    let sockets: Vec<UdpSocket> = (0..5)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    for (i, socket) in sockets.iter().enumerate() {
        socket
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        let query = build_query(&format!("slow{i}.example.com"), RecordType::A, None);
        socket.send_to(&query, server.addr).unwrap();
    }
    let mut rcodes: Vec<u16> = sockets
        .iter()
        .map(|socket| {
            let mut buf = [0u8; 1500];
            let (len, _) = socket.recv_from(&mut buf).expect("a reply");
            rcode(&Message::from_vec(&buf[..len]).unwrap())
        })
        .collect();
    rcodes.sort();
    assert_eq!(rcodes, [0, 0, 5, 5, 5]);
    let (_, body) = http_get(server.http_addr("metrics"), "/metrics");
    assert_eq!(
        metric(&body, "coredns_forward_max_concurrent_rejects_total"),
        3.0,
        "{body}"
    );
}

#[test]
fn an_upstream_that_is_kubewire_itself_is_refused() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let addr: SocketAddr = listen.parse().unwrap();
    let server = Server::spawn(&["--demo", "--forward", listen.as_str()], addr);
    let (status, log) = server.wait_exit(Duration::from_secs(10));
    assert!(!status.success());
    assert!(log.contains("forwarding loop"), "{log}");
    assert!(log.contains("refusing this upstream"), "{log}");
}

#[test]
fn one_kubewire_forwards_to_another() {
    // The second serves the demo cluster under another zone; the first
    // forwards everything outside its own zone to it.
    let back = Server::start(&["--demo", "--cores", "1", "--zone", "corp.internal"]);
    let back_addr = back.addr.to_string();
    let front = Server::start(&["--demo", "--cores", "2", "--forward", back_addr.as_str()]);
    let reply = front.udp("Kubernetes.Default.svc.corp.internal", RecordType::A);
    assert_eq!(
        answers(&reply),
        ["Kubernetes.Default.svc.corp.internal. A 10.96.0.1"]
    );
    assert!(reply.metadata.recursion_available);
    let reply = front.tcp("nope.default.svc.corp.internal", RecordType::A);
    assert_eq!(rcode(&reply), 3);
    assert_eq!(
        reply.authorities.len(),
        1,
        "the SOA of the NXDOMAIN comes through"
    );
}

#[test]
fn a_loop_through_another_resolver_is_detected_by_the_probe() {
    // Two kubewires, each the other's upstream: the static check cannot see
    // it, the probe can.
    let (port_a, port_b) = (free_port(), free_port());
    let (a, b) = (format!("127.0.0.1:{port_a}"), format!("127.0.0.1:{port_b}"));
    let (_config_dir, config) = config_file(
        "forward-config",
        "[forward]\ntimeout_ms = 500\nmax_attempts = 1\n",
    );
    let mut first = Server::spawn(
        &[
            "--demo",
            "--cores",
            "1",
            "--forward",
            b.as_str(),
            "--config",
            config.as_str(),
        ],
        a.parse().unwrap(),
    );
    let mut second = Server::spawn(
        &[
            "--demo",
            "--cores",
            "1",
            "--forward",
            a.as_str(),
            "--config",
            config.as_str(),
        ],
        b.parse().unwrap(),
    );
    // The first to see its own probe come back stops forwarding to the
    // other, which breaks the loop, so the other may never see its own.
    let needle = "forwarding loop: a query kubewire sent";
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut found = false;
    while !found && Instant::now() < deadline {
        found = first.logged(needle, Duration::from_millis(100))
            || second.logged(needle, Duration::from_millis(100));
    }
    assert!(
        found,
        "no loop found:\n{}\n{}",
        first.seen.join("\n"),
        second.seen.join("\n")
    );
    // From then on an external name fails at once, through either, instead
    // of going round until a timeout.
    for server in [&first, &second] {
        let started = Instant::now();
        assert_eq!(rcode(&server.udp("www.example.com", RecordType::A)), 2);
        assert!(
            started.elapsed() < Duration::from_millis(400),
            "{:?}",
            started.elapsed()
        );
        // Cluster names are unaffected.
        assert_eq!(
            rcode(&server.udp("kubernetes.default.svc.cluster.local", RecordType::A)),
            0
        );
    }
}

#[test]
fn fallthrough_zones_forward_unknown_names_and_reverse_zones_can_be_authoritative() {
    let upstream = Upstream::start();
    let (_config_dir, config) = config_file(
        "forward-config",
        "[kubernetes]\nfallthrough = [\"cluster.local\"]\n",
    );
    let server = forwarding(&[&upstream], &["--config", config.as_str()]);
    // An unknown cluster name goes upstream; known names stay local.
    let reply = server.udp("nothere.default.svc.cluster.local", RecordType::A);
    assert_eq!(
        answers(&reply),
        ["nothere.default.svc.cluster.local. A 192.0.2.1"]
    );
    assert_eq!(
        answers(&server.udp("kubernetes.default.svc.cluster.local", RecordType::A)),
        ["kubernetes.default.svc.cluster.local. A 10.96.0.1"]
    );
    assert_eq!(upstream.queries(), 1);

    // A reverse zone named as a cluster zone is authoritative: an address
    // no object owns is NXDOMAIN with that zone's SOA, not forwarded.
    let upstream = Upstream::start();
    let server = forwarding(
        &[&upstream],
        &["--zone", "cluster.local,96.10.in-addr.arpa"],
    );
    let reply = server.udp("99.99.96.10.in-addr.arpa", RecordType::PTR);
    assert_eq!(rcode(&reply), 3);
    assert_eq!(reply.authorities.len(), 1);
    assert_eq!(reply.authorities[0].name.to_ascii(), "96.10.in-addr.arpa.");
    let reply = server.udp("10.0.96.10.in-addr.arpa", RecordType::PTR);
    assert_eq!(
        answers(&reply),
        ["10.0.96.10.in-addr.arpa. PTR kube-dns.kube-system.svc.cluster.local."]
    );
    assert_eq!(upstream.queries(), 0);
}

const EXTERNAL_NAMES: &str = "apiVersion: v1
kind: Namespace
metadata: {name: default}
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: default}
spec: {clusterIP: 10.96.0.50, ports: [{name: http, port: 80, protocol: TCP}]}
---
apiVersion: v1
kind: Service
metadata: {name: alias, namespace: default}
spec: {type: ExternalName, externalName: api.default.svc.cluster.local}
---
apiVersion: v1
kind: Service
metadata: {name: alias2, namespace: default}
spec: {type: ExternalName, externalName: alias.default.svc.cluster.local}
---
apiVersion: v1
kind: Service
metadata: {name: outside, namespace: default}
spec: {type: ExternalName, externalName: db.example.com}
---
apiVersion: v1
kind: Service
metadata: {name: loop1, namespace: default}
spec: {type: ExternalName, externalName: loop2.default.svc.cluster.local}
---
apiVersion: v1
kind: Service
metadata: {name: loop2, namespace: default}
spec: {type: ExternalName, externalName: loop1.default.svc.cluster.local}
";

#[test]
fn external_names_are_chased_in_the_cluster_and_upstream() {
    let dir = tempdir("external-names");
    let path = dir.join("services.yaml");
    std::fs::write(&path, EXTERNAL_NAMES).unwrap();
    let manifests = path.display().to_string();

    // Without forwarding, a target in the cluster is still chased.
    let server = Server::start(&["--manifests", manifests.as_str(), "--cores", "2"]);
    let reply = server.udp("Alias2.default.svc.cluster.local", RecordType::A);
    assert_eq!(rcode(&reply), 0);
    assert_eq!(
        answers(&reply),
        [
            "Alias2.default.svc.cluster.local. CNAME alias.default.svc.cluster.local.",
            "alias.default.svc.cluster.local. CNAME api.default.svc.cluster.local.",
            "api.default.svc.cluster.local. A 10.96.0.50",
        ]
    );
    // The CNAME type itself is not chased; a loop stops with what was found.
    let reply = server.tcp("alias.default.svc.cluster.local", RecordType::CNAME);
    assert_eq!(answers(&reply).len(), 1);
    let reply = server.udp("loop1.default.svc.cluster.local", RecordType::A);
    assert_eq!(rcode(&reply), 0);
    assert_eq!(answers(&reply).len(), 2, "{:?}", answers(&reply));
    // Outside the cluster without forwarding: the CNAME alone.
    let reply = server.udp("outside.default.svc.cluster.local", RecordType::A);
    assert_eq!(
        answers(&reply),
        ["outside.default.svc.cluster.local. CNAME db.example.com."]
    );
    drop(server);

    // With forwarding, a target outside is resolved upstream.
    let upstream = Upstream::start();
    upstream.answer("db.example.com", Ipv4Addr::new(192, 0, 2, 77));
    let upstream_addr = upstream.addr.to_string();
    let server = Server::start(&[
        "--manifests",
        manifests.as_str(),
        "--cores",
        "2",
        "--forward",
        upstream_addr.as_str(),
    ]);
    for reply in [
        server.udp("outside.default.svc.cluster.local", RecordType::A),
        server.tcp("outside.default.svc.cluster.local", RecordType::A),
        udp_query(
            server.addr,
            &build_query(
                "outside.default.svc.cluster.local",
                RecordType::A,
                Some(1232),
            ),
        ),
    ] {
        assert_eq!(
            answers(&reply),
            [
                "db.example.com. A 192.0.2.77",
                "outside.default.svc.cluster.local. CNAME db.example.com.",
            ]
        );
    }
    // The chase goes through the cache like any forwarded name: the
    // upstream is asked once, not once per client.
    assert_eq!(upstream.names(), ["db.example.com."]);
}

#[test]
fn dns_over_tls_upstreams_are_verified_and_kept() {
    let upstream = Upstream::start_tls();
    let ca = upstream.ca_file.as_ref().unwrap().display().to_string();
    let to = format!("tls://{}", upstream.addr);
    let (_config_dir, config) = config_file(
        "forward-config",
        &format!(
            "[forward]\nto = [\"{to}\"]\ntls_servername = \"dns.test\"\ntls_ca_file = \"{ca}\"\n"
        ),
    );
    let server = Server::start(&["--demo", "--cores", "1", "--config", config.as_str()]);
    for name in ["one.example.com", "two.example.com", "three.example.com"] {
        let reply = server.udp(name, RecordType::A);
        assert_eq!(answers(&reply), [format!("{name}. A 192.0.2.1")]);
    }
    assert_eq!(
        upstream.seen.tcp.load(std::sync::atomic::Ordering::Relaxed),
        3
    );
    assert_eq!(
        upstream
            .seen
            .connections
            .load(std::sync::atomic::Ordering::Relaxed),
        1,
        "one TLS session, kept"
    );
    drop(server);

    // A certificate for another name: no answer from that upstream.
    let (_config_dir, config) = config_file(
        "forward-config",
        &format!(
            "[forward]\nto = [\"{to}\"]\ntls_servername = \"other.test\"\ntls_ca_file = \"{ca}\"\ntimeout_ms = 500\nmax_attempts = 1\n"
        ),
    );
    let server = Server::start(&["--demo", "--cores", "1", "--config", config.as_str()]);
    let before = upstream.queries();
    assert_eq!(rcode(&server.udp("www.example.com", RecordType::A)), 2);
    assert_eq!(upstream.queries(), before);
    drop(server);

    // tls:// without a server name is a configuration error.
    let (_config_dir, config) =
        config_file("forward-config", &format!("[forward]\nto = [\"{to}\"]\n"));
    let (ok, _, stderr) = {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_kubewire"))
            .args(["config", "check", config.as_str()])
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).to_string(),
            String::from_utf8_lossy(&output.stderr).to_string(),
        )
    };
    assert!(!ok);
    assert!(stderr.contains("forward.tls_servername"), "{stderr}");
}

#[test]
fn prefer_udp_dnssec_bits_and_the_clients_size_limit() {
    // prefer_udp: a truncated UDP reply goes to the client as it is.
    let upstream = Upstream::start();
    upstream.set(Behaviour::TruncateUdp);
    let (_config_dir, config) = config_file("forward-config", "[forward]\nprefer_udp = true\n");
    let server = forwarding(&[&upstream], &["--config", config.as_str()]);
    let reply = server.udp("big.example.com", RecordType::A);
    assert!(reply.metadata.truncation, "TC passed on");
    assert!(reply.answers.is_empty());
    assert_eq!(
        upstream.seen.tcp.load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    drop(server);

    let upstream = Upstream::start();
    let server = forwarding(&[&upstream], &[]);
    // CD and DO go upstream as the client set them.
    let mut message = hickory_proto::op::Message::query();
    message.metadata.recursion_desired = true;
    message.metadata.checking_disabled = true;
    message.add_query(hickory_proto::op::Query::query(
        hickory_proto::rr::Name::from_ascii("signed.example.com.").unwrap(),
        RecordType::A,
    ));
    let mut edns = hickory_proto::op::Edns::new();
    edns.set_max_payload(1232);
    edns.set_dnssec_ok(true);
    message.set_edns(edns);
    let reply = udp_query(server.addr, &message.to_vec().unwrap());
    assert_eq!(rcode(&reply), 0);
    assert!(reply.metadata.checking_disabled, "CD echoed");
    assert!(reply.edns.as_ref().unwrap().flags().dnssec_ok, "DO echoed");
    assert_eq!(
        *upstream.seen.last_cd_do.lock().unwrap(),
        Some((true, Some(true)))
    );
    let reply = server.udp("plain.example.com", RecordType::A);
    assert_eq!(rcode(&reply), 0);
    assert_eq!(
        *upstream.seen.last_cd_do.lock().unwrap(),
        Some((false, Some(false))),
        "our OPT, DO clear"
    );

    // A reply larger than the client takes: TC over UDP, whole over TCP.
    let reply = server.udp("many.example.com", RecordType::A);
    assert!(reply.metadata.truncation, "TC at 512 bytes without EDNS");
    assert!(reply.answers.is_empty());
    let reply = udp_query(
        server.addr,
        &build_query("many.example.com", RecordType::A, Some(1232)),
    );
    assert!(!reply.metadata.truncation);
    assert_eq!(reply.answers.len(), 60);
    let reply = server.tcp("many.example.com", RecordType::A);
    assert_eq!(reply.answers.len(), 60);
}

#[test]
fn concurrent_upstream_queries_never_share_a_source_port() {
    // Hundreds in flight at once, each from its own socket: if two shared a
    // port (as with SO_REUSEPORT on port 0), one's reply would land on the
    // other's socket and be dropped as mismatched.
    let upstream = Upstream::start();
    upstream.set(Behaviour::Delay(300));
    let (_config_dir, config) = config_file("forward-config", "[cache]\nenabled = false\n");
    let mut server = forwarding(&[&upstream], &["--config", config.as_str(), "--cores", "1"]);
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let count = 600;
    for i in 0..count {
        let query = build_query(&format!("port{i}.example.com"), RecordType::A, None);
        socket.send_to(&query, server.addr).unwrap();
    }
    let mut answered = 0;
    let mut buf = [0u8; 1500];
    while answered < count {
        let Ok((len, _)) = socket.recv_from(&mut buf) else {
            break;
        };
        let reply = Message::from_vec(&buf[..len]).unwrap();
        assert_eq!(rcode(&reply), 0);
        answered += 1;
    }
    assert_eq!(answered, count);
    let (_, body) = http_get(server.http_addr("metrics"), "/metrics");
    assert_eq!(
        metric(&body, "kubewire_forward_mismatched_replies_total"),
        0.0,
        "{body}"
    );
}

/// A forged reply to `query` (as the upstream received it): ID `id`, the
/// query's question, one A record for `6.6.6.6`.
fn forged_reply(query: &[u8], id: u16) -> Vec<u8> {
    let mut end = 12;
    while query[end] != 0 {
        end += 1 + usize::from(query[end]);
    }
    let question = &query[12..end + 5];
    let mut reply = id.to_be_bytes().to_vec();
    reply.extend_from_slice(&[0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0]);
    reply.extend_from_slice(question);
    reply.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1, 0, 0, 0x0E, 0x10, 0, 4, 6, 6, 6, 6]);
    reply
}

/// The kernel's count of UDP datagrams dropped because a socket's receive
/// buffer was full (`RcvbufErrors` in `/proc/net/snmp`), machine-wide.
fn udp_receive_buffer_drops() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap();
    let mut udp = snmp.lines().filter(|line| line.starts_with("Udp:"));
    let names = udp.next().unwrap().split_whitespace();
    let values = udp.next().unwrap().split_whitespace();
    names
        .zip(values)
        .find(|(name, _)| *name == "RcvbufErrors")
        .and_then(|(_, value)| value.parse().ok())
        .unwrap()
}

/// Sends `payload` to 127.0.0.1:`to_port` as if from 127.0.0.1:`from_port`:
/// a raw socket writes the UDP header itself (checksum 0: none, as IPv4
/// allows), so the source port is any we like.
fn spoof(raw: &socket2::Socket, from_port: u16, to_port: u16, payload: &[u8]) {
    let mut datagram = from_port.to_be_bytes().to_vec();
    datagram.extend_from_slice(&to_port.to_be_bytes());
    datagram.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    datagram.extend_from_slice(&[0, 0]);
    datagram.extend_from_slice(payload);
    let to = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    raw.send_to(&datagram, &to.into()).unwrap();
}

#[test]
fn forged_answers_to_every_kept_source_port_are_refused_while_queries_wait() {
    forged_answers_are_refused("batched");
}

#[test]
fn forged_answers_are_refused_where_upstream_sockets_ride_on_the_io_uring() {
    forged_answers_are_refused("io_uring");
}

fn forged_answers_are_refused(udp_io: &str) {
    // Upstream queries leave from a few kept sockets. While real queries
    // wait on them, a spoofer who knows every port in use, every question
    // asked and the upstream's address floods each port with forged
    // answers: wrong IDs from the upstream's own address and port, the
    // right ID for another question, and the right ID and question from
    // another port. None may be taken; every client gets the real answer.
    let upstream = Upstream::start();
    upstream.set(Behaviour::Delay(600));
    let (_config_dir, config) = config_file(
        "forward-config",
        "[cache]\nenabled = false\n[forward]\ntimeout_ms = 3000\n",
    );
    let mut server = forwarding(
        &[&upstream],
        &[
            "--config",
            config.as_str(),
            "--cores",
            "1",
            "--udp-io",
            udp_io,
        ],
    );
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let count = 40;
    for i in 0..count {
        let query = build_query(&format!("spoof{i}.example.com"), RecordType::A, None);
        client.send_to(&query, server.addr).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while upstream.seen.udp_queries.lock().unwrap().len() < count && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let in_flight = upstream.seen.udp_queries.lock().unwrap().clone();
    assert_eq!(in_flight.len(), count, "every query reached the upstream");
    let raw = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::RAW,
        Some(socket2::Protocol::UDP),
    )
    .expect("a raw socket (the tests run as root)");
    let elsewhere = UdpSocket::bind("127.0.0.1:0").unwrap();
    let kernel_drops_before = udp_receive_buffer_drops();
    let mut forged = 0u64;
    for (round, (from, query)) in in_flight.iter().enumerate() {
        let id = u16::from_be_bytes([query[0], query[1]]);
        for k in 1..=100u16 {
            let wrong = id.wrapping_add(k.wrapping_mul(613).wrapping_add(round as u16));
            if wrong != id {
                spoof(
                    &raw,
                    upstream.addr.port(),
                    from.port(),
                    &forged_reply(query, wrong),
                );
                forged += 1;
            }
        }
        // The right ID, another in-flight query's question.
        let (_, other) = &in_flight[(round + 1) % in_flight.len()];
        spoof(
            &raw,
            upstream.addr.port(),
            from.port(),
            &forged_reply(other, id),
        );
        // The right ID and question, from another port.
        elsewhere.send_to(&forged_reply(query, id), from).unwrap();
        forged += 2;
        // Paced, so that the kernel's socket buffers take nearly all of
        // them (102 a round; a socket's default buffer holds about 160).
        std::thread::sleep(Duration::from_millis(2));
    }
    let ports: std::collections::BTreeSet<u16> = in_flight.iter().map(|(f, _)| f.port()).collect();
    assert!(
        (1..=4).contains(&ports.len()),
        "queries share a few kept sockets: {ports:?}"
    );
    let mut buf = [0u8; 1500];
    for _ in 0..count {
        let (len, _) = client.recv_from(&mut buf).expect("every client answered");
        let reply = Message::from_vec(&buf[..len]).unwrap();
        assert_eq!(rcode(&reply), 0);
        assert_eq!(answers(&reply).len(), 1);
        assert!(
            answers(&reply)[0].ends_with("A 192.0.2.1"),
            "a forged answer was taken: {:?}",
            answers(&reply)
        );
    }
    let (_, body) = http_get(server.http_addr("metrics"), "/metrics");
    let mismatched = metric(&body, "kubewire_forward_mismatched_replies_total");
    // What a full socket buffer dropped never reached kubewire; on a busy
    // machine the kernel may drop a few even when paced. Those are counted
    // by the kernel (and include other tests' drops, so the sum may exceed
    // what was sent); kubewire must have seen and refused most of the rest.
    let kernel_drops = udp_receive_buffer_drops() - kernel_drops_before;
    assert!(
        mismatched + kernel_drops as f64 >= forged as f64 * 0.95
            && mismatched >= forged as f64 * 0.5,
        "{mismatched} of {forged} forged replies counted as mismatched ({kernel_drops} dropped by the kernel)"
    );

    // Ports change: past RENEW_AFTER_QUERIES (256) a socket is replaced,
    // so 1100 queries leave from more than four ports, and from few.
    upstream.set(Behaviour::Answer);
    upstream.seen.udp_queries.lock().unwrap().clear();
    for i in 0..1100 {
        let reply = server.udp(&format!("renew{i}.example.com"), RecordType::A);
        assert_eq!(rcode(&reply), 0);
    }
    let ports: std::collections::BTreeSet<u16> = upstream
        .seen
        .udp_queries
        .lock()
        .unwrap()
        .iter()
        .map(|(f, _)| f.port())
        .collect();
    assert!(
        (5..=12).contains(&ports.len()),
        "1100 queries left from {} ports",
        ports.len()
    );
}
