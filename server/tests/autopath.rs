//! Autopath end to end: pods with addresses in 127.0.0.0/8 declared in
//! watched manifests, queries sent from those source addresses (and from
//! one that is no pod), with the scripted upstream behind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::upstream::Upstream;
use common::*;
use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;

const CLUSTER: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: default}
---
apiVersion: v1
kind: Namespace
metadata: {name: team}
---
apiVersion: v1
kind: Namespace
metadata: {name: other}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  clusterIP: 10.96.5.5
  ports: [{name: http, port: 80, protocol: TCP}]
---
apiVersion: v1
kind: Pod
metadata: {name: proxy, namespace: kube-system}
spec: {hostNetwork: true}
status: {phase: Running, podIP: 127.0.0.4}
";

fn pod(namespace: &str, name: &str, ip: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {namespace}}}\nstatus: {{phase: Running, podIP: {ip}}}\n"
    )
}

/// kubewire with autopath, the manifests in `dir`, forwarding to
/// `upstream`, with the host search domains of `search` (none if empty).
fn start(dir: &Path, upstream: &Upstream, search: &str) -> Server {
    let resolv = if search.is_empty() {
        String::new()
    } else {
        let path = dir.join("resolv.conf");
        std::fs::write(&path, format!("nameserver 10.0.0.1\nsearch {search}\n")).unwrap();
        path.display().to_string()
    };
    let config = dir.join("kubewire.toml");
    std::fs::write(
        &config,
        format!("[kubernetes]\nautopath = true\nautopath_resolv_conf = {resolv:?}\n"),
    )
    .unwrap();
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    std::fs::write(manifests.join("cluster.yaml"), CLUSTER).unwrap();
    Server::start(&[
        "--manifests",
        manifests.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--forward",
        &upstream.addr.to_string(),
        "--cores",
        "1",
    ])
}

/// Waits until the pod at `source` (in namespace `team`) is known.
fn wait_for_pod(server: &Server, source: &str) {
    eventually("the pod is known", || {
        let name = "web.default.team.svc.cluster.local";
        rcode(&ask(server, source, name, RecordType::A)) == 0
    });
}

/// One query from `source` (an address in 127.0.0.0/8).
fn ask(server: &Server, source: &str, name: &str, qtype: RecordType) -> Message {
    let socket = UdpSocket::bind(SocketAddr::new(source.parse().unwrap(), 0)).unwrap();
    udp_query_from(&socket, server.addr, &build_query(name, qtype, Some(1232)))
}

#[test]
fn a_pods_search_path_is_completed_in_one_query() {
    let dir = tempdir("autopath");
    let upstream = Upstream::start();
    let mut server = start(&dir, &upstream, "");
    let manifests = dir.join("manifests");
    std::fs::write(
        manifests.join("pod.yaml"),
        pod("team", "client", "127.0.0.2"),
    )
    .unwrap();
    wait_for_pod(&server, "127.0.0.2");

    // An external name: the CNAME from the asked name and the answer, in
    // one query, with the client's letter case on the question.
    let before = upstream.queries();
    let reply = ask(
        &server,
        "127.0.0.2",
        "API.github.com.team.svc.cluster.local",
        RecordType::A,
    );
    assert_eq!(rcode(&reply), 0);
    assert_eq!(
        answers(&reply),
        [
            "API.github.com.team.svc.cluster.local. CNAME api.github.com.",
            "api.github.com. A 192.0.2.1"
        ]
    );
    assert_eq!(
        reply.answers[0].record_type(),
        RecordType::CNAME,
        "the CNAME first"
    );
    assert_eq!(
        reply.queries[0].name().to_string(),
        "API.github.com.team.svc.cluster.local."
    );
    assert_eq!(
        upstream.queries() - before,
        1,
        "only the bare name went upstream"
    );
    // Again, from the pod: the bare name's answer comes from the cache.
    let again = ask(
        &server,
        "127.0.0.2",
        "api.github.com.team.svc.cluster.local",
        RecordType::A,
    );
    assert_eq!(answers(&again).len(), 2);
    assert_eq!(
        upstream.queries() - before,
        1,
        "one upstream query per name"
    );
    assert!(
        upstream
            .names()
            .iter()
            .any(|n| n.eq_ignore_ascii_case("api.github.com."))
    );

    // A service in another namespace, by its short name from this one.
    let reply = ask(
        &server,
        "127.0.0.2",
        "web.default.team.svc.cluster.local",
        RecordType::A,
    );
    assert_eq!(
        answers(&reply),
        [
            "web.default.svc.cluster.local. A 10.96.5.5",
            "web.default.team.svc.cluster.local. CNAME web.default.svc.cluster.local.",
        ]
    );
    assert_eq!(
        reply.answers[0].record_type(),
        RecordType::CNAME,
        "the CNAME first"
    );

    // A name that exists nowhere: the first candidate's own NXDOMAIN, and
    // the client walks its list as before.
    let reply = ask(
        &server,
        "127.0.0.2",
        "nxname.team.svc.cluster.local",
        RecordType::A,
    );
    assert_eq!(rcode(&reply), 3);
    assert!(answers(&reply).is_empty());

    // A client that is no pod, and a hostNetwork pod: answered as always.
    for source in ["127.0.0.9", "127.0.0.4"] {
        let reply = ask(
            &server,
            source,
            "api.github.com.team.svc.cluster.local",
            RecordType::A,
        );
        assert_eq!(rcode(&reply), 3, "from {source}");
        let reply = ask(
            &server,
            source,
            "api.github.com.kube-system.svc.cluster.local",
            RecordType::A,
        );
        assert_eq!(rcode(&reply), 3, "from {source}");
    }
    // Only the pod's own namespace's first candidate is completed.
    let reply = ask(
        &server,
        "127.0.0.2",
        "api.github.com.other.svc.cluster.local",
        RecordType::A,
    );
    assert_eq!(rcode(&reply), 3);

    // The pod's address is reused in another namespace while the old pod
    // lingers: nobody's, so no autopath at all.
    std::fs::write(
        manifests.join("pod2.yaml"),
        pod("other", "client", "127.0.0.2"),
    )
    .unwrap();
    eventually("an address two namespaces hold is nobody's", || {
        rcode(&ask(
            &server,
            "127.0.0.2",
            "api.github.com.team.svc.cluster.local",
            RecordType::A,
        )) == 3
    });
    let reply = ask(
        &server,
        "127.0.0.2",
        "api.github.com.other.svc.cluster.local",
        RecordType::A,
    );
    assert_eq!(rcode(&reply), 3);
    // The old pod goes: the address is the other namespace's now, and the
    // old namespace is never assumed.
    std::fs::remove_file(manifests.join("pod.yaml")).unwrap();
    eventually(
        "the moved address completes the new namespace's search",
        || {
            rcode(&ask(
                &server,
                "127.0.0.2",
                "api.github.com.other.svc.cluster.local",
                RecordType::A,
            )) == 0
        },
    );
    let reply = ask(
        &server,
        "127.0.0.2",
        "api.github.com.team.svc.cluster.local",
        RecordType::A,
    );
    assert_eq!(rcode(&reply), 3, "the old namespace is not assumed");

    let metrics = server.http_addr("metrics");
    let (_, text) = http_get(metrics, "/metrics");
    let successes = metric(
        &text,
        &format!(
            "coredns_autopath_success_total{{server=\"dns://{}\"}}",
            server.addr
        ),
    );
    assert!(successes >= 3.0, "{successes}");
}

#[test]
fn the_hosts_search_domains_come_before_the_bare_name() {
    let dir = tempdir("autopath-search");
    let upstream = Upstream::start();
    let server = start(&dir, &upstream, "corp.internal");
    std::fs::write(
        dir.join("manifests").join("pod.yaml"),
        pod("team", "client", "127.0.0.3"),
    )
    .unwrap();
    wait_for_pod(&server, "127.0.0.3");
    let reply = ask(
        &server,
        "127.0.0.3",
        "build.team.svc.cluster.local",
        RecordType::A,
    );
    assert_eq!(
        answers(&reply),
        [
            "build.corp.internal. A 192.0.2.1",
            "build.team.svc.cluster.local. CNAME build.corp.internal.",
        ]
    );
    assert_eq!(
        reply.answers[0].record_type(),
        RecordType::CNAME,
        "the CNAME first"
    );
}

#[test]
fn autopath_answers_over_tcp_too() {
    let dir = tempdir("autopath-tcp");
    let upstream = Upstream::start();
    let server = start(&dir, &upstream, "");
    std::fs::write(
        dir.join("manifests").join("pod.yaml"),
        pod("team", "client", "127.0.0.5"),
    )
    .unwrap();
    wait_for_pod(&server, "127.0.0.5");
    // A TCP connection from the pod's address.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::new("127.0.0.5".parse().unwrap(), 0).into())
        .unwrap();
    socket.connect(&server.addr.into()).unwrap();
    let mut stream: std::net::TcpStream = socket.into();
    let query = build_query("api.github.com.team.svc.cluster.local", RecordType::A, None);
    let reply = tcp_exchange(&mut stream, &query);
    assert_eq!(
        answers(&reply),
        [
            "api.github.com. A 192.0.2.1",
            "api.github.com.team.svc.cluster.local. CNAME api.github.com.",
        ]
    );
}
