//! End to end: a watched manifest directory. Edits show up over DNS; a broken
//! edit is logged with its file and line and the last good state keeps
//! serving.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::upstream::Upstream;
use common::*;
use hickory_proto::rr::RecordType;
use std::time::{Duration, Instant};

fn service(name: &str, ip: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  clusterIP: {ip}\n"
    )
}

/// Writes `config` to `dir/kubewire.toml` and starts kubewire serving
/// `manifests` with it; returns the server and the config's path, which a
/// test rewrites to reload.
fn start_with_config(
    dir: &std::path::Path,
    manifests: &std::path::Path,
    config: &str,
) -> (Server, std::path::PathBuf) {
    let path = dir.join("kubewire.toml");
    std::fs::write(&path, config).unwrap();
    let server = Server::start(&[
        "--manifests",
        manifests.to_str().unwrap(),
        "--config",
        path.to_str().unwrap(),
    ]);
    (server, path)
}

fn wait_for_answer(server: &Server, name: &str, want: &[&str]) -> Duration {
    let start = Instant::now();
    loop {
        let got = answers(&server.udp(name, RecordType::A));
        if got == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{name}: still {got:?}, want {want:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn an_edit_is_served_and_a_broken_edit_keeps_the_last_good_state() {
    let dir = tempdir("edit");
    let file = dir.join("svc.yaml");
    std::fs::write(&file, service("web", "10.96.1.1")).unwrap();
    std::fs::write(dir.join("other.yaml"), service("db", "10.96.1.2")).unwrap();
    let mut server = Server::start(&["--manifests", dir.to_str().unwrap(), "--cores", "2"]);
    assert_eq!(
        answers(&server.udp("web.default.svc.cluster.local", RecordType::A)),
        ["web.default.svc.cluster.local. A 10.96.1.1"]
    );

    // Change an address: visible within milliseconds.
    std::fs::write(&file, service("web", "10.96.1.9")).unwrap();
    wait_for_answer(
        &server,
        "web.default.svc.cluster.local",
        &["web.default.svc.cluster.local. A 10.96.1.9"],
    );

    // A new file adds a service.
    std::fs::write(dir.join("new.yaml"), service("cache", "10.96.1.3")).unwrap();
    wait_for_answer(
        &server,
        "cache.default.svc.cluster.local",
        &["cache.default.svc.cluster.local. A 10.96.1.3"],
    );

    // A broken edit: logged with file and line; the last good state stays.
    std::fs::write(&file, "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: default\nspec:\n  clusterIP: 10.96.1.999\n").unwrap();
    let line = server.wait_for_log("keeping the last good objects", Duration::from_secs(5));
    assert!(line.contains("svc.yaml:1: Service default/web"), "{line}");
    assert!(line.contains("is not an IP address"), "{line}");
    assert_eq!(
        answers(&server.udp("web.default.svc.cluster.local", RecordType::A)),
        ["web.default.svc.cluster.local. A 10.96.1.9"]
    );
    // Another file edited meanwhile still goes through.
    std::fs::write(dir.join("other.yaml"), service("db", "10.96.1.22")).unwrap();
    wait_for_answer(
        &server,
        "db.default.svc.cluster.local",
        &["db.default.svc.cluster.local. A 10.96.1.22"],
    );

    // Deleting a file removes its objects.
    std::fs::remove_file(dir.join("new.yaml")).unwrap();
    let start = Instant::now();
    while rcode(&server.udp("cache.default.svc.cluster.local", RecordType::A)) != 3 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "cache still answers"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_single_watched_file_and_unknown_kinds() {
    let dir = tempdir("file");
    let file = dir.join("cluster.yaml");
    let config_map = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: default}\n";
    std::fs::write(
        &file,
        format!("{}---\n{config_map}", service("web", "10.96.2.1")),
    )
    .unwrap();
    let server = Server::start(&["--manifests", file.to_str().unwrap(), "--cores", "1"]);
    assert_eq!(
        answers(&server.udp("web.default.svc.cluster.local", RecordType::A)),
        ["web.default.svc.cluster.local. A 10.96.2.1"]
    );
    // Replaced the way editors and ConfigMap mounts do it: write aside, rename over.
    let aside = dir.join(".cluster.yaml.tmp");
    std::fs::write(&aside, service("web", "10.96.2.2")).unwrap();
    std::fs::rename(&aside, &file).unwrap();
    wait_for_answer(
        &server,
        "web.default.svc.cluster.local",
        &["web.default.svc.cluster.local. A 10.96.2.2"],
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// `kubernetes.ignore_empty_service`: a ClusterIP Service without a ready
/// endpoint is NXDOMAIN, and answers again once an endpoint is ready.
#[test]
fn ignore_empty_service_follows_endpoint_readiness() {
    let dir = tempdir("ignore-empty");
    let slice = |ready: bool| {
        format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-a\n  namespace: default\n  labels: {{kubernetes.io/service-name: web}}\naddressType: IPv4\nports:\n- {{name: http, port: 80, protocol: TCP}}\nendpoints:\n- addresses: [10.244.0.9]\n  conditions: {{ready: {ready}}}\n"
        )
    };
    std::fs::write(dir.join("svc.yaml"), service("web", "10.96.1.1")).unwrap();
    std::fs::write(dir.join("slice.yaml"), slice(false)).unwrap();
    let (server, _config) =
        start_with_config(&dir, &dir, "[kubernetes]\nignore_empty_service = true\n");
    let name = "web.default.svc.cluster.local";
    assert_eq!(
        rcode(&server.udp(name, RecordType::A)),
        3,
        "NXDOMAIN while nothing is ready"
    );
    std::fs::write(dir.join("slice.yaml"), slice(true)).unwrap();
    wait_for_answer(
        &server,
        name,
        &["web.default.svc.cluster.local. A 10.96.1.1"],
    );
    std::fs::write(dir.join("slice.yaml"), slice(false)).unwrap();
    eventually("NXDOMAIN again once no endpoint is ready", || {
        rcode(&server.udp(name, RecordType::A)) == 3
    });
}

/// `kubernetes.zonal`: a headless Service's endpoints by their EndpointSlice
/// `zone`, turned on by a config reload, over UDP and TCP.
#[test]
fn zonal_names_follow_endpoint_zones_and_a_reload() {
    let dir = tempdir("zonal");
    std::fs::write(
        dir.join("svc.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: db\n  namespace: default\nspec:\n  clusterIP: None\n  ports:\n  - {name: pg, port: 5432, protocol: TCP}\n",
    )
    .unwrap();
    let endpoint = |ip: &str, host: &str, zone: &str| {
        format!(
            "- addresses: [{ip}]\n  hostname: {host}\n  zone: {zone}\n  conditions: {{ready: true}}\n"
        )
    };
    let slice = |endpoints: &str| {
        format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: db-a\n  namespace: default\n  labels: {{kubernetes.io/service-name: db}}\naddressType: IPv4\nports:\n- {{name: pg, port: 5432, protocol: TCP}}\nendpoints:\n{endpoints}"
        )
    };
    let two_zones = [
        endpoint("10.244.1.1", "db-0", "eu-west-1a"),
        endpoint("10.244.2.1", "db-1", "eu-west-1b"),
    ]
    .concat();
    std::fs::write(dir.join("slice.yaml"), slice(&two_zones)).unwrap();
    let (server, config) = start_with_config(&dir, &dir, "[kubernetes]\nzonal = false\n");
    let pinned = "eu-west-1a.pin._zone.db.default.svc.cluster.local";
    assert_eq!(
        rcode(&server.udp(pinned, RecordType::A)),
        3,
        "off: NXDOMAIN"
    );
    std::fs::write(&config, "[kubernetes]\nzonal = true\n").unwrap();
    wait_for_answer(&server, pinned, &[&format!("{pinned}. A 10.244.1.1")]);
    assert_eq!(
        answers(&server.tcp(pinned, RecordType::SRV)),
        [format!(
            "{pinned}. SRV 0 100 5432 db-0.db.default.svc.cluster.local."
        )]
    );
    // A zone no endpoint is in: pin has nothing, prefer has everything.
    let elsewhere = "eu-west-1c.pin._zone.db.default.svc.cluster.local";
    let reply = server.udp(elsewhere, RecordType::A);
    assert_eq!((rcode(&reply), answers(&reply).len()), (0, 0), "NODATA");
    let mut all = answers(&server.udp(
        "eu-west-1c.prefer._zone.db.default.svc.cluster.local",
        RecordType::A,
    ));
    all.sort();
    assert_eq!(
        all,
        [
            "eu-west-1c.prefer._zone.db.default.svc.cluster.local. A 10.244.1.1",
            "eu-west-1c.prefer._zone.db.default.svc.cluster.local. A 10.244.2.1",
        ]
    );
    // An endpoint that moves zone moves with it.
    let moved = [
        endpoint("10.244.1.1", "db-0", "eu-west-1b"),
        endpoint("10.244.2.1", "db-1", "eu-west-1b"),
    ]
    .concat();
    std::fs::write(dir.join("slice.yaml"), slice(&moved)).unwrap();
    eventually("the moved endpoint leaves its old zone", || {
        let reply = server.udp(pinned, RecordType::A);
        rcode(&reply) == 0 && answers(&reply).is_empty()
    });
}

/// `k8s_external`: Services' external IPs and load balancer ingress in a
/// zone of their own, a hostname-only load balancer chased upstream, edits
/// and a reload followed, over UDP and TCP.
#[test]
fn k8s_external_serves_load_balancer_addresses_and_follows_edits() {
    let dir = tempdir("k8s-external");
    let web = |ingress_ip: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: default}}\nspec:\n  type: LoadBalancer\n  clusterIP: 10.96.5.1\n  externalIPs: [192.0.2.10]\n  ports:\n  - {{name: http, port: 80, protocol: TCP}}\nstatus:\n  loadBalancer:\n    ingress:\n    - ip: {ingress_ip}\n"
        )
    };
    std::fs::write(dir.join("web.yaml"), web("198.51.100.10")).unwrap();
    std::fs::write(
        dir.join("others.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: elb, namespace: default}\nspec:\n  type: LoadBalancer\n  clusterIP: 10.96.5.2\n  ports: [{name: https, port: 443}]\nstatus:\n  loadBalancer:\n    ingress: [{hostname: lb-1.elb.example}]\n---\napiVersion: v1\nkind: Service\nmetadata: {name: internal, namespace: default}\nspec: {clusterIP: 10.96.5.3}\n",
    )
    .unwrap();
    let upstream = Upstream::start();
    upstream.answer("lb-1.elb.example", std::net::Ipv4Addr::new(203, 0, 113, 9));
    let config = |ttl: u32| {
        format!(
            "[k8s_external]\nzones = [\"example.org\"]\nttl_seconds = {ttl}\n\n[forward]\nto = [\"{}\"]\n",
            upstream.addr
        )
    };
    let manifests = dir.join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    for file in ["web.yaml", "others.yaml"] {
        std::fs::rename(dir.join(file), manifests.join(file)).unwrap();
    }
    let (server, config_path) = start_with_config(&dir, &manifests, &config(5));

    let sorted = |reply: &hickory_proto::op::Message| {
        let mut list = answers(reply);
        list.sort();
        list
    };
    let both = [
        "web.default.example.org. A 192.0.2.10",
        "web.default.example.org. A 198.51.100.10",
    ];
    assert_eq!(
        sorted(&server.udp("web.default.example.org", RecordType::A)),
        both
    );
    assert_eq!(
        sorted(&server.tcp("Web.Default.Example.Org", RecordType::A)),
        [
            "Web.Default.Example.Org. A 192.0.2.10",
            "Web.Default.Example.Org. A 198.51.100.10",
        ]
    );
    let srv = server.tcp("_http._tcp.web.default.example.org", RecordType::SRV);
    assert_eq!(
        answers(&srv),
        ["_http._tcp.web.default.example.org. SRV 0 100 80 web.default.example.org."]
    );
    assert_eq!(srv.additionals.len(), 2, "glue: {:?}", srv.additionals);
    // The cluster name keeps the cluster IP; a Service without external
    // addresses is not in the external zone.
    assert_eq!(
        answers(&server.udp("web.default.svc.cluster.local", RecordType::A)),
        ["web.default.svc.cluster.local. A 10.96.5.1"]
    );
    let internal = server.udp("internal.default.example.org", RecordType::A);
    assert_eq!(rcode(&internal), 3);
    assert!(internal.metadata.authoritative);
    // A load balancer known by hostname: the CNAME, chased upstream.
    assert_eq!(
        answers(&server.udp("elb.default.example.org", RecordType::A)),
        [
            "elb.default.example.org. CNAME lb-1.elb.example.",
            "lb-1.elb.example. A 203.0.113.9",
        ]
    );
    let soa = server.udp("example.org", RecordType::SOA);
    assert_eq!(
        answers(&soa)
            .first()
            .map(|a| a.split(' ').take(4).collect::<Vec<_>>().join(" ")),
        Some("example.org. SOA ns1.dns.example.org. hostmaster.dns.example.org.".into())
    );

    // The load balancer's address changes: the answer follows.
    std::fs::write(manifests.join("web.yaml"), web("198.51.100.11")).unwrap();
    eventually("the new ingress address", || {
        sorted(&server.udp("web.default.example.org", RecordType::A))
            == [
                "web.default.example.org. A 192.0.2.10",
                "web.default.example.org. A 198.51.100.11",
            ]
    });
    // A reload changes the external TTL, not the cluster's.
    assert_eq!(
        server.udp("web.default.example.org", RecordType::A).answers[0].ttl,
        5
    );
    std::fs::write(&config_path, config(60)).unwrap();
    eventually("the new TTL", || {
        server.udp("web.default.example.org", RecordType::A).answers[0].ttl == 60
    });
    assert_eq!(
        server
            .udp("web.default.svc.cluster.local", RecordType::A)
            .answers[0]
            .ttl,
        5
    );
}

/// `multicluster` from manifests: a ServiceImport and its slices from two
/// clusters, an edit followed, the local Service kept to its own zone.
#[test]
fn multicluster_imports_from_manifests_follow_edits() {
    let dir = tempdir("multicluster");
    let manifests = dir.join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    let import = |kind: &str| {
        format!(
            "apiVersion: multicluster.x-k8s.io/v1alpha1\nkind: ServiceImport\nmetadata: {{name: db, namespace: default}}\nspec:\n  type: {kind}\n  ips: [10.100.0.7]\n  ports: [{{name: pg, port: 5432, protocol: TCP}}]\n"
        )
    };
    let imported = |cluster: &str, ip: &str| {
        format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: db-{cluster}\n  namespace: default\n  labels: {{multicluster.kubernetes.io/service-name: db, multicluster.kubernetes.io/source-cluster: {cluster}}}\naddressType: IPv4\nports: [{{name: pg, port: 5432, protocol: TCP}}]\nendpoints:\n- addresses: [{ip}]\n  hostname: db-0\n"
        )
    };
    std::fs::write(manifests.join("import.yaml"), import("ClusterSetIP")).unwrap();
    std::fs::write(
        manifests.join("slices.yaml"),
        [imported("east", "10.1.0.7"), imported("west", "10.2.0.7")].join("---\n"),
    )
    .unwrap();
    std::fs::write(manifests.join("local.yaml"), service("db", "10.96.0.7")).unwrap();
    let (server, _) = start_with_config(
        &dir,
        &manifests,
        "[dns]\nzones = [\"cluster.local\", \"clusterset.local\"]\n[kubernetes]\nmulticluster = [\"clusterset.local\"]\n",
    );
    let name = "db.default.svc.clusterset.local";
    assert_eq!(
        answers(&server.udp(name, RecordType::A)),
        [format!("{name}. A 10.100.0.7")]
    );
    assert_eq!(
        answers(&server.tcp("db-0.west.db.default.svc.clusterset.local", RecordType::A)),
        ["db-0.west.db.default.svc.clusterset.local. A 10.2.0.7"]
    );
    assert_eq!(
        answers(&server.udp("db.default.svc.cluster.local", RecordType::A)),
        ["db.default.svc.cluster.local. A 10.96.0.7"]
    );
    // Headless now: the endpoints of both clusters.
    std::fs::write(manifests.join("import.yaml"), import("Headless")).unwrap();
    eventually("the headless import", || {
        let mut got = answers(&server.udp(name, RecordType::A));
        got.sort();
        got == [format!("{name}. A 10.1.0.7"), format!("{name}. A 10.2.0.7")]
    });
    let mut srv = answers(&server.tcp(&format!("_pg._tcp.{name}"), RecordType::SRV));
    srv.sort();
    assert_eq!(
        srv,
        [
            format!("_pg._tcp.{name}. SRV 0 50 5432 db-0.east.{name}."),
            format!("_pg._tcp.{name}. SRV 0 50 5432 db-0.west.{name}."),
        ]
    );
}

/// `kubernetes.namespaces` and `kubernetes.labels` filter manifests as they
/// filter the cluster source, and a reload of the config re-filters.
#[test]
fn namespaces_and_labels_filter_manifests_and_follow_reloads() {
    let dir = tempdir("filter");
    let svc = |namespace: &str, name: &str, ip: &str, app: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {namespace}\n  labels: {{app: {app}}}\nspec:\n  clusterIP: {ip}\n---\n"
        )
    };
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    std::fs::write(
        manifests.join("svc.yaml"),
        svc("a", "web", "10.96.2.1", "web")
            + &svc("a", "db", "10.96.2.2", "db")
            + &svc("b", "web", "10.96.2.3", "web"),
    )
    .unwrap();
    let (server, config) = start_with_config(
        &dir,
        &manifests,
        "[kubernetes]\nnamespaces = [\"a\"]\nlabels = \"app in (web)\"\n",
    );
    let a = |name: &str| rcode(&server.udp(name, RecordType::A));
    assert_eq!(a("web.a.svc.cluster.local"), 0);
    assert_eq!(a("db.a.svc.cluster.local"), 3, "filtered out by its label");
    assert_eq!(
        a("web.b.svc.cluster.local"),
        3,
        "filtered out by its namespace"
    );
    // A reload with other filters: the manifests are filtered anew.
    std::fs::write(&config, "[kubernetes]\nlabels = \"app!=web\"\n").unwrap();
    eventually("the new filters apply", || {
        a("db.a.svc.cluster.local") == 0 && a("web.a.svc.cluster.local") == 3
    });
    assert_eq!(a("web.b.svc.cluster.local"), 3);
}
