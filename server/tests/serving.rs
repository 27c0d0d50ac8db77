//! End to end: the real binary on the demo cluster, queried over real UDP and
//! TCP sockets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use hickory_proto::rr::RecordType;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

#[test]
fn every_record_kind_of_the_demo_cluster() {
    let server = Server::start(&["--demo", "--cores", "1"]);
    let cases: &[(&str, RecordType, &[&str])] = &[
        (
            "kubernetes.default.svc.cluster.local",
            RecordType::A,
            &["kubernetes.default.svc.cluster.local. A 10.96.0.1"],
        ),
        (
            "kube-dns.kube-system.svc.cluster.local",
            RecordType::A,
            &["kube-dns.kube-system.svc.cluster.local. A 10.96.0.10"],
        ),
        (
            "api.default.svc.cluster.local",
            RecordType::AAAA,
            &["api.default.svc.cluster.local. AAAA fd00:10:96::20"],
        ),
        (
            "api.default.svc.cluster.local",
            RecordType::A,
            &["api.default.svc.cluster.local. A 10.96.0.20"],
        ),
        (
            "web.default.svc.cluster.local",
            RecordType::A,
            &[
                "web.default.svc.cluster.local. A 10.244.1.10",
                "web.default.svc.cluster.local. A 10.244.2.11",
            ],
        ),
        (
            "web-1.web.default.svc.cluster.local",
            RecordType::A,
            &["web-1.web.default.svc.cluster.local. A 10.244.2.11"],
        ),
        (
            "_http._tcp.web.default.svc.cluster.local",
            RecordType::SRV,
            &[
                "_http._tcp.web.default.svc.cluster.local. SRV 0 50 80 web-0.web.default.svc.cluster.local.",
                "_http._tcp.web.default.svc.cluster.local. SRV 0 50 80 web-1.web.default.svc.cluster.local.",
            ],
        ),
        (
            "_https._tcp.kubernetes.default.svc.cluster.local",
            RecordType::SRV,
            &[
                "_https._tcp.kubernetes.default.svc.cluster.local. SRV 0 100 443 kubernetes.default.svc.cluster.local.",
            ],
        ),
        (
            "search.default.svc.cluster.local",
            RecordType::CNAME,
            &["search.default.svc.cluster.local. CNAME search.example.com."],
        ),
        (
            "1.0.96.10.in-addr.arpa",
            RecordType::PTR,
            &["1.0.96.10.in-addr.arpa. PTR kubernetes.default.svc.cluster.local."],
        ),
        (
            "10.1.244.10.in-addr.arpa",
            RecordType::PTR,
            &["10.1.244.10.in-addr.arpa. PTR web-0.web.default.svc.cluster.local."],
        ),
        (
            "10-244-1-10.default.pod.cluster.local",
            RecordType::A,
            &["10-244-1-10.default.pod.cluster.local. A 10.244.1.10"],
        ),
        (
            "dns-version.cluster.local",
            RecordType::TXT,
            &["dns-version.cluster.local. TXT 1.1.0"],
        ),
        (
            "cluster.local",
            RecordType::NS,
            &["cluster.local. NS kube-dns.kube-system.svc.cluster.local."],
        ),
    ];
    for (name, qtype, want) in cases {
        for (transport, reply) in [
            ("udp", server.udp(name, *qtype)),
            ("tcp", server.tcp(name, *qtype)),
        ] {
            assert_eq!(rcode(&reply), 0, "{transport} {name} {qtype}");
            assert!(reply.metadata.authoritative, "{transport} {name}: AA");
            assert_eq!(answers(&reply), *want, "{transport} {name} {qtype}");
        }
    }
    let soa = server.udp("cluster.local", RecordType::SOA);
    assert_eq!(soa.answers[0].record_type(), RecordType::SOA);
    // NXDOMAIN with the SOA, NODATA with the SOA, and names not ours.
    let nx = server.udp("nope.default.svc.cluster.local", RecordType::A);
    assert_eq!(rcode(&nx), 3);
    assert_eq!(nx.authorities[0].record_type(), RecordType::SOA);
    let nodata = server.udp("kubernetes.default.svc.cluster.local", RecordType::AAAA);
    assert_eq!(
        (
            rcode(&nodata),
            nodata.answers.len(),
            nodata.authorities.len()
        ),
        (0, 0, 1)
    );
    assert_eq!(
        rcode(&server.udp("example.com", RecordType::A)),
        5,
        "REFUSED outside our zones"
    );
}

#[test]
fn the_clients_letter_case_is_echoed() {
    let server = Server::start(&["--demo", "--cores", "1"]);
    let query = build_query(
        "KuBeRnEtEs.DeFaUlT.sVc.ClUsTeR.lOcAl",
        RecordType::A,
        Some(1232),
    );
    let reply = udp_query(server.addr, &query);
    assert_eq!(
        reply.queries[0].name().to_ascii(),
        "KuBeRnEtEs.DeFaUlT.sVc.ClUsTeR.lOcAl."
    );
    assert_eq!(
        reply.answers[0].name.to_ascii(),
        "KuBeRnEtEs.DeFaUlT.sVc.ClUsTeR.lOcAl."
    );
}

#[test]
fn every_core_serves_the_same_answers() {
    let server = Server::start(&["--demo", "--cores", "2"]);
    // Many source ports spread over the cores' SO_REUSEPORT sockets.
    let expected = answers(&server.udp("web.default.svc.cluster.local", RecordType::A));
    assert_eq!(expected.len(), 2);
    for _ in 0..64 {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let query = build_query("web.default.svc.cluster.local", RecordType::A, None);
        assert_eq!(
            answers(&udp_query_from(&socket, server.addr, &query)),
            expected
        );
        let srv = build_query(
            "_http._tcp.web.default.svc.cluster.local",
            RecordType::SRV,
            None,
        );
        assert_eq!(udp_query_from(&socket, server.addr, &srv).answers.len(), 2);
    }
}

#[test]
fn a_truncated_udp_answer_comes_whole_over_tcp() {
    // A headless service with 120 endpoints: 120 × 16 = 1920 bytes of A records.
    let dir = tempdir("big");
    let mut manifest = String::from(
        "apiVersion: v1\nkind: Service\nmetadata: {name: big, namespace: default}\nspec: {clusterIP: None}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: big-1\n  namespace: default\n  \
         labels: {kubernetes.io/service-name: big}\naddressType: IPv4\nendpoints:\n",
    );
    for i in 0..120 {
        manifest.push_str(&format!("- addresses: [10.1.0.{}]\n", i + 1));
    }
    std::fs::write(dir.join("big.yaml"), manifest).unwrap();
    let server = Server::start(&["--manifests", dir.to_str().unwrap(), "--cores", "1"]);

    let edns = udp_query(
        server.addr,
        &build_query("big.default.svc.cluster.local", RecordType::A, Some(1232)),
    );
    assert!(edns.metadata.truncation, "over 1232 bytes: TC");
    assert!(edns.answers.is_empty(), "never a cut record");
    assert!(edns.edns.is_some(), "the OPT comes back");
    let plain = udp_query(
        server.addr,
        &build_query("big.default.svc.cluster.local", RecordType::A, None),
    );
    assert!(plain.metadata.truncation);
    let full = tcp_query(
        server.addr,
        &build_query("big.default.svc.cluster.local", RecordType::A, Some(1232)),
    );
    assert!(!full.metadata.truncation);
    assert_eq!(full.answers.len(), 120);
}

/// A Service and its one-endpoint slice, as YAML documents.
fn service_yaml(name: &str, cluster_ip: &str, endpoint: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: kube-system}}\n\
         spec:\n  clusterIP: {cluster_ip}\n  clusterIPs: [{cluster_ip}]\n  ports:\n  - {{name: dns, port: 53, protocol: UDP}}\n\
         ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata:\n  name: {name}-x\n  namespace: kube-system\n  labels: {{kubernetes.io/service-name: {name}}}\n\
         addressType: IPv4\nports:\n- {{name: dns, port: 53, protocol: UDP}}\n\
         endpoints:\n- addresses: [{endpoint}]\n  conditions: {{ready: true}}\n---\n"
    )
}

#[test]
fn the_name_server_address_is_the_service_fronting_our_own_pod_else_our_own_ip() {
    let dir = tempdir("name-server");
    let manifest = dir.join("cluster.yaml");
    std::fs::write(
        &manifest,
        service_yaml("kube-dns", "10.96.0.10", "10.244.0.3")
            + &service_yaml("kubewire", "10.96.0.53", "10.244.9.9"),
    )
    .unwrap();
    let manifest = manifest.display().to_string();
    let start = |pod_ip: &str| {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut server = Server::spawn_with_env(
            &["--manifests", manifest.as_str(), "--cores", "1"],
            addr,
            &[("POD_IP", Some(pod_ip)), ("POD_IPS", None)],
        );
        server.wait_for_log(READY_LINE, Duration::from_secs(20));
        server
    };
    // Our pod is the kubewire Service's endpoint: its cluster IP, not
    // kube-dns's, answers for ns.dns, and is the NS record's glue.
    let server = start("10.244.9.9");
    assert_eq!(
        answers(&server.udp("ns.dns.cluster.local", RecordType::A)),
        ["ns.dns.cluster.local. A 10.96.0.53"]
    );
    let ns = server.udp("cluster.local", RecordType::NS);
    let glue: Vec<String> = ns.additionals.iter().map(|r| r.data.to_string()).collect();
    assert_eq!(glue, ["10.96.0.53"]);
    // As CoreDNS, the NS record names the Service that fronts our pod.
    assert_eq!(
        answers(&ns),
        ["cluster.local. NS kubewire.kube-system.svc.cluster.local."]
    );
    drop(server);
    // No Service fronts our pod: kube-dns's cluster IP, as before.
    let server = start("10.244.7.7");
    assert_eq!(
        answers(&server.udp("ns.dns.cluster.local", RecordType::A)),
        ["ns.dns.cluster.local. A 10.96.0.10"]
    );
    drop(server);
    // No kube-dns either: our own address.
    std::fs::write(
        dir.join("cluster.yaml"),
        service_yaml("other", "10.96.0.99", "10.244.5.5"),
    )
    .unwrap();
    let server = start("10.244.7.7");
    assert_eq!(
        answers(&server.udp("ns.dns.cluster.local", RecordType::A)),
        ["ns.dns.cluster.local. A 10.244.7.7"]
    );
    let _ = std::fs::remove_dir_all(dir);
}
