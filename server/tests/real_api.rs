//! The real tier: kubewire against a real kube-apiserver with etcd, built
//! from their Go modules by `bench/peers/build.sh` (see
//! `kubewire_bench::peers`). No controller runs: the tests write
//! EndpointSlices and pod status themselves.
//!
//! Without the peers built these tests skip with one line that names the
//! script; with `KUBEWIRE_REQUIRE_PEERS=1` (CI) a missing peer fails.
//!
//! The fake API (`cluster.rs`) stays for the fast tests; where the two
//! disagree, the real one is right.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;
use kubewire_bench::fake_api::{self, FakeApi};
use kubewire_bench::peers::{self, PeerError, RealApi};
use serde_json::{Value, json};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Says why a test cannot run: a skip when the peers are simply not built
/// (and not required), a failure otherwise.
fn unavailable(error: &PeerError) {
    match error {
        PeerError::Missing { .. } if !peers::peers_required() => {
            // Straight to stderr, past the test harness's capture, so the
            // skip is seen.
            let _ = writeln!(std::io::stderr(), "skipped: {error}");
        }
        _ => panic!("{error}"),
    }
}

/// The binary's shared API server, or `None` to skip.
fn shared() -> Option<&'static RealApi> {
    match peers::shared_real_api() {
        Ok(api) => Some(api),
        Err(error) => {
            unavailable(error);
            None
        }
    }
}

/// An API server of the test's own (to kill, restart or compact), or
/// `None` to skip. Its peers die with the calling thread.
fn own() -> Option<RealApi> {
    match RealApi::start() {
        Ok(api) => Some(api),
        Err(error) => {
            unavailable(&error);
            None
        }
    }
}

/// The documents of a manifest under `deploy/`.
fn deploy_manifest(path: &str) -> Vec<Value> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(path);
    let text = std::fs::read_to_string(&path).unwrap();
    serde_saphyr::from_multiple::<Value>(&text).unwrap()
}

/// Applies the RBAC manifest `path` with its names suffixed by `tag` (so
/// that tests sharing an API server do not meet), after `edit`; returns a
/// token of its ServiceAccount.
fn service_account_with(api: &RealApi, path: &str, tag: &str, edit: impl Fn(&mut Value)) -> String {
    let mut account = None;
    for mut document in deploy_manifest(path) {
        let name = format!("{}-{tag}", document["metadata"]["name"].as_str().unwrap());
        document["metadata"]["name"] = json!(name);
        match document["kind"].as_str().unwrap() {
            "ServiceAccount" => {
                account = Some((
                    document["metadata"]["namespace"]
                        .as_str()
                        .unwrap()
                        .to_string(),
                    name,
                ));
            }
            "ClusterRoleBinding" => {
                document["roleRef"]["name"] = json!(format!(
                    "{}-{tag}",
                    document["roleRef"]["name"].as_str().unwrap()
                ));
                for subject in document["subjects"].as_array_mut().unwrap() {
                    subject["name"] = json!(format!("{}-{tag}", subject["name"].as_str().unwrap()));
                }
            }
            _ => {}
        }
        edit(&mut document);
        api.apply(&document).unwrap_or_else(|e| panic!("{e}"));
    }
    let (namespace, name) = account.expect("the manifest has a ServiceAccount");
    api.service_account_token(&namespace, &name)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Starts kubewire against `api` with `token`, with `extra` arguments,
/// without waiting.
fn kubewire_on(api: &RealApi, token: &str, extra: &[&str], env: &[(&str, Option<&str>)]) -> Server {
    let dir = tempdir("real-kubeconfig");
    let kubeconfig = api.write_kubeconfig(&dir, token).unwrap();
    let mut args = vec!["--kubeconfig", kubeconfig.to_str().unwrap(), "--cores", "1"];
    args.extend_from_slice(extra);
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let addr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    Server::spawn_with_env(&args, addr, env).keeping(dir)
}

fn apply_all(api: &RealApi, objects: &[Value]) {
    for object in objects {
        api.apply(object).unwrap_or_else(|e| panic!("{e}"));
    }
}

/// A reply in a form two servers' replies compare by: RCODE, then the
/// answer and additional records sorted, and the authority's types.
fn describe(reply: &Message) -> String {
    let records = |list: &[hickory_proto::rr::Record]| {
        let mut texts: Vec<String> = list
            .iter()
            .map(|r| format!("{} {} {}", r.name, r.record_type(), r.data))
            .collect();
        texts.sort();
        texts
    };
    let authority: Vec<String> = reply
        .authorities
        .iter()
        .map(|r| format!("{} {}", r.name, r.record_type()))
        .collect();
    format!(
        "rcode {} answer {:?} authority {:?} additional {:?}",
        rcode(reply),
        records(&reply.answers),
        authority,
        records(&reply.additionals)
    )
}

/// Every kind of record kubewire answers, as objects in namespace `ns`:
/// every Service type (a dual-stack ClusterIP, NodePort, LoadBalancer,
/// headless with IPv4 and IPv6 slices, ExternalName) and Pods.
fn every_kind(ns: &str) -> Vec<Value> {
    let port = || json!([{"name": "http", "port": 80, "protocol": "TCP"}]);
    let service = |name: &str, spec: Value| {
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": name, "namespace": ns}, "spec": spec})
    };
    let mut v6_slice = fake_api::endpoint_slice(ns, "hdls-b", "hdls", &[("fd00::1:1", true, None)]);
    v6_slice["addressType"] = json!("IPv6");
    let pod_on = |name: &str, ip: &str| {
        let mut pod = fake_api::pod(ns, name, ip);
        pod["spec"]["nodeName"] = json!("node-1");
        pod
    };
    vec![
        fake_api::namespace(ns),
        service(
            "web",
            json!({"ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv4", "IPv6"],
                   "clusterIP": "10.96.50.1", "clusterIPs": ["10.96.50.1", "fd00:10:96::50"],
                   "ports": port()}),
        ),
        service(
            "np",
            json!({"type": "NodePort", "clusterIP": "10.96.50.2", "clusterIPs": ["10.96.50.2"],
                   "ports": port()}),
        ),
        service(
            "lb",
            json!({"type": "LoadBalancer", "clusterIP": "10.96.50.3", "clusterIPs": ["10.96.50.3"],
                   "ports": port()}),
        ),
        service(
            "hdls",
            json!({"clusterIP": "None", "clusterIPs": ["None"], "ports": port()}),
        ),
        fake_api::endpoint_slice(
            ns,
            "hdls-a",
            "hdls",
            &[
                ("10.1.0.1", true, Some("pod-0")),
                ("10.1.0.2", true, None),
                ("10.1.0.3", false, Some("down")),
            ],
        ),
        v6_slice,
        service(
            "ext",
            json!({"type": "ExternalName", "externalName": "example.org"}),
        ),
        pod_on("p1", "10.244.3.4"),
        pod_on("p2", "10.244.3.5"),
    ]
}

/// Every question [`every_kind`] answers, and some it does not.
fn every_question(ns: &str) -> Vec<(String, RecordType)> {
    let svc = |name: &str| format!("{name}.{ns}.svc.cluster.local");
    let mut questions = Vec::new();
    for name in ["web", "np", "lb", "hdls", "ext", "nope"] {
        for qtype in [
            RecordType::A,
            RecordType::AAAA,
            RecordType::SRV,
            RecordType::CNAME,
        ] {
            questions.push((svc(name), qtype));
        }
        questions.push((format!("_http._tcp.{}", svc(name)), RecordType::SRV));
    }
    for name in ["pod-0.hdls", "10-1-0-2.hdls", "down.hdls", "fd00--1-1.hdls"] {
        questions.push((svc(name), RecordType::A));
        questions.push((svc(name), RecordType::AAAA));
    }
    for pod in ["10-244-3-4", "10-244-3-5", "10-244-9-9"] {
        questions.push((format!("{pod}.{ns}.pod.cluster.local"), RecordType::A));
    }
    for reverse in [
        "1.50.96.10.in-addr.arpa",
        "1.0.1.10.in-addr.arpa",
        "0.5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.6.9.0.0.0.1.0.0.0.0.d.f.ip6.arpa",
    ] {
        questions.push((reverse.to_string(), RecordType::PTR));
    }
    questions.push((format!("{ns}.svc.cluster.local"), RecordType::A));
    questions
}

#[test]
fn every_record_kind_from_real_objects_answers_as_through_the_fake_api() {
    let Some(api) = shared() else { return };
    let ns = "kinds";
    let objects = every_kind(ns);
    apply_all(api, &objects);
    // kubewire as deployed: the ServiceAccount and ClusterRole of
    // deploy/cluster-dns, not the admin.
    let token = service_account_with(api, "cluster-dns/rbac.yaml", "kinds", |_| {});
    let fake = FakeApi::start().unwrap();
    fake.apply_all(objects.iter().cloned());
    let dir = tempdir("fake-kubeconfig");
    let kubeconfig = fake.write_kubeconfig(&dir).unwrap();
    // In each pod mode: verified last, for the checks below.
    let mut real = None;
    for mode in ["disabled", "insecure", "verified"] {
        let mut from_real = kubewire_on(api, &token, &["--pods", mode], &[]);
        let mut through_fake = Server::start(&[
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--cores",
            "1",
            "--pods",
            mode,
        ]);
        from_real.wait_for_log(READY_LINE, Duration::from_secs(30));
        let _ = through_fake.logged(READY_LINE, Duration::from_millis(1));
        let mut differences = Vec::new();
        for (name, qtype) in every_question(ns) {
            let (a, b) = (from_real.udp(&name, qtype), through_fake.udp(&name, qtype));
            if describe(&a) != describe(&b) {
                differences.push(format!(
                    "pods {mode}: {name} {qtype}:\n  real API: {}\n  fake API: {}",
                    describe(&a),
                    describe(&b)
                ));
            }
        }
        assert!(differences.is_empty(), "{}", differences.join("\n"));
        real = Some(from_real);
    }
    let real = real.unwrap();
    // And the answers are the objects' (not two identical wrong ones).
    let web = real.udp("web.kinds.svc.cluster.local", RecordType::AAAA);
    assert_eq!(
        answers(&web),
        ["web.kinds.svc.cluster.local. AAAA fd00:10:96::50"]
    );
    let hdls = real.udp("hdls.kinds.svc.cluster.local", RecordType::A);
    assert_eq!(
        answers(&hdls),
        [
            "hdls.kinds.svc.cluster.local. A 10.1.0.1",
            "hdls.kinds.svc.cluster.local. A 10.1.0.2"
        ]
    );
    let pod = real.udp("10-244-3-4.kinds.pod.cluster.local", RecordType::A);
    assert_eq!(
        answers(&pod),
        ["10-244-3-4.kinds.pod.cluster.local. A 10.244.3.4"]
    );
    let ext = real.udp("ext.kinds.svc.cluster.local", RecordType::CNAME);
    assert_eq!(
        answers(&ext),
        ["ext.kinds.svc.cluster.local. CNAME example.org."]
    );
}

#[test]
fn a_role_without_watch_on_a_resource_says_which_and_what_to_do() {
    let Some(api) = shared() else { return };
    apply_all(
        api,
        &[
            fake_api::namespace("rbac"),
            fake_api::service("rbac", "web", "10.96.51.1", &[("http", 80)]),
        ],
    );
    // deploy/cluster-dns's role with `watch` taken off EndpointSlices.
    let token = service_account_with(api, "cluster-dns/rbac.yaml", "nowatch", |document| {
        if document["kind"] == "ClusterRole" {
            for rule in document["rules"].as_array_mut().unwrap() {
                if rule["resources"][0] == "endpointslices" {
                    rule["verbs"] = json!(["list"]);
                }
            }
        }
    });
    let mut server = kubewire_on(api, &token, &[], &[]);
    // The list is allowed, so it syncs and serves...
    server.wait_for_log(READY_LINE, Duration::from_secs(30));
    let reply = server.udp("web.rbac.svc.cluster.local", RecordType::A);
    assert_eq!(
        answers(&reply),
        ["web.rbac.svc.cluster.local. A 10.96.51.1"]
    );
    // ...and says what is missing, and where the right role is.
    let line = server.wait_for_log(
        "kubewire may not list or watch endpointslices.discovery.k8s.io",
        Duration::from_secs(20),
    );
    assert!(line.contains("deploy/cluster-dns/rbac.yaml"), "{line}");
    // The watch retries with backoff: one line, not a storm, and names
    // that exist never turn SERVFAIL.
    for _ in 0..20 {
        let reply = server.udp("web.rbac.svc.cluster.local", RecordType::A);
        assert_eq!(rcode(&reply), 0);
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = server.logged("no such line", Duration::from_millis(100));
    let times = server
        .seen
        .iter()
        .filter(|l| l.contains("kubewire may not list or watch"))
        .count();
    assert_eq!(times, 1, "{:#?}", server.seen);
}

#[test]
fn a_role_without_a_resource_never_syncs_and_says_so() {
    let Some(api) = shared() else { return };
    // Pods taken out of the role, while verified pod records need them.
    let token = service_account_with(api, "cluster-dns/rbac.yaml", "nopods", |document| {
        if document["kind"] == "ClusterRole" {
            document["rules"][0]["resources"] = json!(["services", "namespaces"]);
        }
    });
    let mut server = kubewire_on(api, &token, &["--pods", "verified"], &[]);
    let line = server.wait_for_log(
        "kubewire may not list or watch pods",
        Duration::from_secs(30),
    );
    assert!(
        line.contains("give its ClusterRole list and watch"),
        "{line}"
    );
    // Not synced: not ready, and a name that may exist is SERVFAIL, not a
    // wrong NXDOMAIN.
    let reply = server.udp("nope.default.svc.cluster.local", RecordType::A);
    assert_eq!(rcode(&reply), 2);
    assert_eq!(http_status(server.http_addr("ready"), "/ready"), 503);
}

/// Polls until `name` answers `want` (A records), for at most 10 s;
/// returns how long that took.
fn time_until(server: &Server, name: &str, want: &[String]) -> Duration {
    let start = Instant::now();
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    while start.elapsed() < Duration::from_secs(10) {
        let query = build_query(name, RecordType::A, None);
        if udp_exchange(&socket, server.addr, &query)
            .and_then(|bytes| Message::from_vec(&bytes).ok())
            .is_some_and(|m| answers(&m) == want)
        {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_micros(250));
    }
    panic!("{name} did not answer {want:?} within 10 s");
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[test]
fn churn_under_load_gives_no_wrong_answer_and_propagates() {
    let Some(api) = shared() else { return };
    let ns = "churn";
    apply_all(
        api,
        &[
            fake_api::namespace(ns),
            fake_api::service(ns, "stable", "10.96.52.1", &[("http", 80)]),
        ],
    );
    let mut server = kubewire_on(api, peers::ADMIN_TOKEN, &[], &[]);
    server.wait_for_log(READY_LINE, Duration::from_secs(30));
    const STABLE: &str = "stable.churn.svc.cluster.local";
    let prober = Prober::start(server.addr, STABLE, vec![format!("{STABLE}. A 10.96.52.1")]);
    let mut propagation = Vec::new();
    for i in 0..40u8 {
        let name = format!("s{i}");
        let fqdn = format!("{name}.{ns}.svc.cluster.local");
        let ip = format!("10.96.53.{}", i + 1);
        // Created, with a headless companion and its slice...
        api.apply(&fake_api::service(ns, &name, &ip, &[("http", 80)]))
            .unwrap();
        propagation.push(time_until(&server, &fqdn, &[format!("{fqdn}. A {ip}")]));
        let headless = format!("h{i}");
        api.apply(&fake_api::service(ns, &headless, "None", &[("http", 80)]))
            .unwrap();
        let endpoint = format!("10.2.{i}.1");
        api.apply(&fake_api::endpoint_slice(
            ns,
            &format!("{headless}-a"),
            &headless,
            &[(endpoint.as_str(), true, None)],
        ))
        .unwrap();
        let hfqdn = format!("{headless}.{ns}.svc.cluster.local");
        propagation.push(time_until(
            &server,
            &hfqdn,
            &[format!("{hfqdn}. A {endpoint}")],
        ));
        // ...its endpoint turned not ready, then both deleted.
        api.apply(&fake_api::endpoint_slice(
            ns,
            &format!("{headless}-a"),
            &headless,
            &[(endpoint.as_str(), false, None)],
        ))
        .unwrap();
        propagation.push(time_until(&server, &hfqdn, &[]));
        api.delete(&fake_api::service(ns, &name, &ip, &[])).unwrap();
        api.delete(&fake_api::service(ns, &headless, "None", &[]))
            .unwrap();
    }
    let (asked, wrong) = prober.finish();
    propagation.sort();
    eprintln!(
        "real API, write acknowledged -> kubewire answering: p50 {:?}, p99 {:?}, max {:?} over {} changes; {asked} probes, {wrong} wrong",
        percentile(&propagation, 0.5),
        percentile(&propagation, 0.99),
        propagation[propagation.len() - 1],
        propagation.len()
    );
    assert!(asked > 100, "the prober ran ({asked})");
    assert_eq!(wrong, 0, "wrong answers during churn, of {asked}");
}

#[test]
fn the_api_server_restarted_and_etcd_compacted_serve_through_then_resync() {
    let Some(mut api) = own() else { return };
    let ns = "faults";
    apply_all(
        &api,
        &[
            fake_api::namespace(ns),
            fake_api::service(ns, "stable", "10.96.54.1", &[("http", 80)]),
            fake_api::service(ns, "old", "10.96.54.2", &[("http", 80)]),
        ],
    );
    let mut server = kubewire_on(&api, peers::ADMIN_TOKEN, &[], &[]);
    server.wait_for_log(READY_LINE, Duration::from_secs(30));
    const STABLE: &str = "stable.faults.svc.cluster.local";
    let want = vec![format!("{STABLE}. A 10.96.54.1")];
    // kube-apiserver killed: kubewire serves the last good state through.
    let prober = Prober::start(server.addr, STABLE, want.clone());
    api.kill_apiserver();
    std::thread::sleep(Duration::from_secs(2));
    api.start_apiserver().unwrap_or_else(|e| panic!("{e}"));
    api.apply(&fake_api::service(ns, "new", "10.96.54.3", &[("http", 80)]))
        .unwrap();
    let new = "new.faults.svc.cluster.local";
    time_until(&server, new, &[format!("{new}. A 10.96.54.3")]);
    let (asked, wrong) = prober.finish();
    assert!(asked > 100, "the prober ran ({asked})");
    assert_eq!(wrong, 0, "wrong answers while the API server was down");

    // A watch resumed from a compacted revision: kubewire is stopped while
    // objects change, etcd is compacted and the API server restarted (so
    // its watch cache starts after the change); on waking, kubewire's watch
    // resumes from a resourceVersion that is gone, gets 410 Gone, relists.
    let relists = |server: &mut Server| {
        let (_, text) = http_get(server.http_addr("metrics"), "/metrics");
        metric(&text, "kubewire_relists_total{kind=\"Service\"}")
    };
    let before = relists(&mut server);
    server.signal(libc::SIGSTOP);
    api.apply(&fake_api::service(
        ns,
        "later",
        "10.96.54.4",
        &[("http", 80)],
    ))
    .unwrap();
    api.delete(&fake_api::service(ns, "old", "10.96.54.2", &[]))
        .unwrap();
    api.etcd().compact().unwrap_or_else(|e| panic!("{e}"));
    api.kill_apiserver();
    api.start_apiserver().unwrap_or_else(|e| panic!("{e}"));
    server.signal(libc::SIGCONT);
    let later = "later.faults.svc.cluster.local";
    time_until(&server, later, &[format!("{later}. A 10.96.54.4")]);
    eventually("the deleted Service to be NXDOMAIN", || {
        rcode(&server.udp("old.faults.svc.cluster.local", RecordType::A)) == 3
    });
    eventually("a relist after 410 Gone", || relists(&mut server) > before);
    assert_eq!(answers(&server.udp(STABLE, RecordType::A)), want);
}

#[test]
fn multicluster_follows_service_imports_once_their_crd_is_installed() {
    let Some(api) = own() else { return };
    apply_all(
        &api,
        &[
            fake_api::namespace("mc"),
            fake_api::service("mc", "web", "10.96.55.1", &[("http", 80)]),
        ],
    );
    let token = service_account_with(&api, "cluster-dns/rbac.yaml", "mc", |_| {});
    let dir = tempdir("real-multicluster");
    let config = dir.join("kubewire.toml");
    std::fs::write(
        &config,
        "[dns]\nzones = [\"cluster.local\", \"clusterset.local\"]\n[kubernetes]\nmulticluster = [\"clusterset.local\"]\n",
    )
    .unwrap();
    let mut server = kubewire_on(&api, &token, &["--config", config.to_str().unwrap()], &[]);
    server.wait_for_log(READY_LINE, Duration::from_secs(30));
    server.wait_for_log(
        "the Multi-Cluster Services API CRDs are not installed",
        Duration::from_secs(10),
    );
    assert_eq!(
        answers(&server.udp("web.mc.svc.cluster.local", RecordType::A)),
        ["web.mc.svc.cluster.local. A 10.96.55.1"]
    );
    api.apply(&json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "serviceimports.multicluster.x-k8s.io"},
        "spec": {
            "group": "multicluster.x-k8s.io", "scope": "Namespaced",
            "names": {"plural": "serviceimports", "singular": "serviceimport",
                      "kind": "ServiceImport", "listKind": "ServiceImportList"},
            "versions": [{"name": "v1alpha1", "served": true, "storage": true,
                          "schema": {"openAPIV3Schema": {"type": "object",
                              "x-kubernetes-preserve-unknown-fields": true}}}]
        }
    }))
    .unwrap();
    // The CRD takes a moment to be served.
    let import = fake_api::service_import("mc", "web", Some(&["10.100.0.5"]), &[("http", 80)]);
    eventually("the ServiceImport to be accepted", || {
        api.apply(&import).is_ok()
    });
    api.apply(&fake_api::imported_endpoint_slice(
        "mc",
        "web-east",
        "web",
        "east",
        &[("10.1.5.1", true, Some("web-0"))],
    ))
    .unwrap();
    let clusterset = "web.mc.svc.clusterset.local";
    time_until(
        &server,
        clusterset,
        &[format!("{clusterset}. A 10.100.0.5")],
    );
    let endpoint = "web-0.east.web.mc.svc.clusterset.local";
    time_until(&server, endpoint, &[format!("{endpoint}. A 10.1.5.1")]);
}

#[test]
fn node_local_watches_only_its_own_nodes_pods() {
    common::netns::in_new_netns(|| {
        // The API server runs in the namespace too, on its loopback.
        let Some(api) = own() else { return };
        let ns = "nl";
        let mut objects = vec![fake_api::namespace(ns)];
        for (name, ip, node) in [
            ("a1", "10.244.7.1", "node-a"),
            ("a2", "10.244.7.2", "node-a"),
            ("b1", "10.244.8.1", "node-b"),
            ("b2", "10.244.8.2", "node-b"),
            ("b3", "10.244.8.3", "node-b"),
        ] {
            let mut pod = fake_api::pod(ns, name, ip);
            pod["spec"]["nodeName"] = json!(node);
            objects.push(pod);
        }
        apply_all(&api, &objects);
        let token = service_account_with(&api, "node-local/rbac.yaml", "nl", |_| {});
        let kind = common::netns::interface_kind();
        let dir = tempdir("real-node-local");
        let config = dir.join("kubewire.toml");
        std::fs::write(
            &config,
            format!(
                "[dns]\nlisten = [\"169.254.20.10:53\"]\n[node_local]\nenabled = true\ninterface_kind = \"{kind}\"\nnotrack = \"off\"\n[kubernetes]\nautopath = true\n"
            ),
        )
        .unwrap();
        let kubeconfig = api.write_kubeconfig(&dir, &token).unwrap();
        let mut server = Server::spawn_with_env(
            &[
                "--config",
                config.to_str().unwrap(),
                "--kubeconfig",
                kubeconfig.to_str().unwrap(),
                "--cores",
                "1",
            ],
            "169.254.20.10:53".parse().unwrap(),
            &[("NODE_NAME", Some("node-a"))],
        );
        // Only node-a's two pods were listed: the real API server applied
        // the `spec.nodeName` field selector beside the phase ones.
        let line = server.wait_for_log(READY_LINE, Duration::from_secs(30));
        assert!(line.contains(" pods=2 "), "{line}");
    });
}

/// Whether a watch of Services from `resource_version`, without bookmarks,
/// is refused with 410 Gone: the API server's watch cache no longer holds
/// the events after it.
fn expired(api: &RealApi, resource_version: &str) -> bool {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::Service;
    use kube::api::{Api, WatchEvent, WatchParams};
    let services: Api<Service> = Api::all(api.client());
    let params = WatchParams::default().disable_bookmarks().timeout(1);
    api.block_on(async {
        match services.watch(&params, resource_version).await {
            Err(kube::Error::Api(status)) => status.code == 410,
            Err(error) => panic!("watching Services from {resource_version}: {error}"),
            Ok(stream) => matches!(
                stream.boxed().next().await,
                Some(Ok(WatchEvent::Error(e))) if e.code == 410
            ),
        }
    })
}

/// Bookmarks: kubewire's Service watch selects by label, so the changes of
/// an unlabelled Service pass it by. After the API server's watch cache has
/// let go of every event since kubewire's list (events older than its 75 s
/// window are dropped once it is full), a watch resumed from the list's
/// resourceVersion gets 410 Gone and must relist. A client that took the
/// cache's bookmarks (sent about once a minute) resumes from the bookmark
/// instead. The test cuts kubewire's connections at that point, through a
/// relay, and checks that it resumed without a relist.
#[test]
fn a_watch_cut_after_its_window_passed_resumes_from_the_last_bookmark() {
    use k8s_openapi::api::core::v1::Service;
    use kube::api::{Api, ListParams};
    let Some(api) = own() else { return };
    let ns = "bookmarks";
    let labelled = |name: &str, ip: &str| {
        let mut service = fake_api::service(ns, name, ip, &[("http", 80)]);
        service["metadata"]["labels"] = json!({"dns": "served"});
        service
    };
    let noise = |round: usize| {
        let mut service = fake_api::service(ns, "noise", "10.96.56.9", &[("http", 80)]);
        service["metadata"]["annotations"] = json!({"round": round.to_string()});
        service
    };
    apply_all(
        &api,
        &[
            fake_api::namespace(ns),
            labelled("kept", "10.96.56.1"),
            noise(0),
        ],
    );
    let relay = common::relay::Relay::start(api.addr());
    let dir = tempdir("real-bookmarks");
    let kubeconfig = api
        .write_kubeconfig_at(&dir, peers::ADMIN_TOKEN, relay.addr)
        .unwrap();
    let addr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let args = [
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--cores",
        "1",
        "--labels",
        "dns=served",
    ];
    let mut server = Server::spawn(&args, addr);
    server.wait_for_log(READY_LINE, Duration::from_secs(30));
    let kept = "kept.bookmarks.svc.cluster.local";
    time_until(&server, kept, &[format!("{kept}. A 10.96.56.1")]);
    // At or after kubewire's own list: if this one expires, so has
    // kubewire's, unless a bookmark moved it on.
    let services: Api<Service> = Api::all(api.client());
    let listed = api
        .block_on(services.list_metadata(&ListParams::default().labels("dns=served")))
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    for round in 1..=20 {
        api.apply(&noise(round)).unwrap();
    }
    // Past the window (75 s) for those events, with a bookmark (each
    // minute) sent in between.
    std::thread::sleep(Duration::from_secs(80));
    let mut round = 20;
    while !expired(&api, &listed) {
        round += 1;
        assert!(
            round < 3000,
            "the watch cache still holds the events after {listed}"
        );
        api.apply(&noise(round)).unwrap();
    }
    let relists = |server: &mut Server| {
        let (_, text) = http_get(server.http_addr("metrics"), "/metrics");
        metric(&text, "kubewire_relists_total{kind=\"Service\"}")
    };
    let before = relists(&mut server);
    let accepted = relay.accepted();
    assert!(
        relay.cut() > 0,
        "kubewire's connections went through the relay"
    );
    api.apply(&labelled("after", "10.96.56.2")).unwrap();
    let after = "after.bookmarks.svc.cluster.local";
    time_until(&server, after, &[format!("{after}. A 10.96.56.2")]);
    assert!(relay.accepted() > accepted, "kubewire connected again");
    assert_eq!(
        relists(&mut server),
        before,
        "kubewire relisted Services: its watch resumed from before the window, not from a bookmark"
    );
    assert_eq!(
        answers(&server.udp(kept, RecordType::A)),
        [format!("{kept}. A 10.96.56.1")]
    );
}
