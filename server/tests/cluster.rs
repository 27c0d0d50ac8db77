//! End to end against a fake Kubernetes API server that speaks the real
//! list/watch protocol over HTTP: the real kube client and watchers in the
//! real binary, with every scenario asserted through DNS queries.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use hickory_proto::rr::RecordType;
use kubewire_bench::fake_api::{
    FakeApi, endpoint_slice, imported_endpoint_slice, namespace, service, service_import,
};
use std::time::{Duration, Instant};

fn start_against(api: &FakeApi, extra: &[&str]) -> Server {
    let dir = tempdir("kubeconfig");
    let kubeconfig = api.write_kubeconfig(&dir).unwrap();
    let mut args = vec!["--kubeconfig", kubeconfig.to_str().unwrap(), "--cores", "2"];
    args.extend_from_slice(extra);
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::spawn(&args, format!("127.0.0.1:{}", free_port()).parse().unwrap()).keeping(dir)
}

fn a_records(server: &Server, name: &str) -> (u16, Vec<String>) {
    let reply = server.udp(name, RecordType::A);
    (rcode(&reply), answers(&reply))
}

#[test]
fn initial_sync_of_1000_services_and_readiness() {
    let api = FakeApi::start().unwrap();
    api.apply(namespace("default"));
    api.apply_all((0..1000).map(|i| {
        service(
            "default",
            &format!("svc-{i}"),
            &format!("10.97.{}.{}", i / 250, i % 250 + 1),
            &[("http", 80)],
        )
    }));
    api.hold_lists(true);
    let mut server = start_against(&api, &[]);
    let ready = server.http_addr("ready");
    let health = server.http_addr("health");
    assert_eq!(http_status(health, "/health"), 200);
    // Before the first sync: not ready, and a name that would be NXDOMAIN is SERVFAIL.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(http_status(ready, "/ready"), 503);
    assert_eq!(
        a_records(&server, "svc-1.default.svc.cluster.local").0,
        2,
        "SERVFAIL before the first sync"
    );

    api.hold_lists(false);
    server.wait_for_log(READY_LINE, Duration::from_secs(20));
    assert_eq!(http_status(ready, "/ready"), 200);
    assert!(
        api.lists_served() >= 3 && api.lists_served() < 20,
        "paginated lists: {}",
        api.lists_served()
    );
    for i in (0..1000).step_by(37) {
        let want = format!(
            "svc-{i}.default.svc.cluster.local. A 10.97.{}.{}",
            i / 250,
            i % 250 + 1
        );
        assert_eq!(
            a_records(&server, &format!("svc-{i}.default.svc.cluster.local")),
            (0, vec![want])
        );
    }
    assert_eq!(
        a_records(&server, "nope.default.svc.cluster.local").0,
        3,
        "NXDOMAIN after the sync"
    );
}

#[test]
fn adds_updates_and_deletes_are_served() {
    let api = FakeApi::start().unwrap();
    api.apply(namespace("default"));
    api.apply(service("default", "web", "None", &[("http", 80)]));
    api.apply(endpoint_slice(
        "default",
        "web-a",
        "web",
        &[
            ("10.1.0.1", true, Some("web-0")),
            ("10.1.0.2", true, Some("web-1")),
        ],
    ));
    let mut server = start_against(&api, &[]);
    server.wait_for_log(READY_LINE, Duration::from_secs(20));
    let web = "web.default.svc.cluster.local";
    assert_eq!(
        a_records(&server, web).1,
        [format!("{web}. A 10.1.0.1"), format!("{web}. A 10.1.0.2")]
    );

    // An endpoint turns not ready: gone from the set and its name.
    api.apply(endpoint_slice(
        "default",
        "web-a",
        "web",
        &[
            ("10.1.0.1", true, Some("web-0")),
            ("10.1.0.2", false, Some("web-1")),
        ],
    ));
    eventually("web-1 to leave", || {
        a_records(&server, web).1 == [format!("{web}. A 10.1.0.1")]
    });
    assert_eq!(
        a_records(&server, "web-1.web.default.svc.cluster.local").0,
        3
    );
    // A second slice adds an endpoint.
    api.apply(endpoint_slice(
        "default",
        "web-b",
        "web",
        &[("10.1.0.3", true, None)],
    ));
    eventually("the new slice", || a_records(&server, web).1.len() == 2);
    // A new service, then an update of its address, then its deletion.
    api.apply(service("default", "api", "10.96.7.7", &[("grpc", 9090)]));
    eventually("api added", || {
        a_records(&server, "api.default.svc.cluster.local").1
            == ["api.default.svc.cluster.local. A 10.96.7.7"]
    });
    api.apply(service("default", "api", "10.96.7.8", &[("grpc", 9090)]));
    eventually("api updated", || {
        a_records(&server, "api.default.svc.cluster.local").1
            == ["api.default.svc.cluster.local. A 10.96.7.8"]
    });
    api.delete("Service", "default", "api");
    eventually("api deleted", || {
        a_records(&server, "api.default.svc.cluster.local").0 == 3
    });
    // Deleting the slice empties the headless set down to web-b.
    api.delete("EndpointSlice", "default", "web-a");
    eventually("web-a gone", || {
        a_records(&server, web).1 == [format!("{web}. A 10.1.0.3")]
    });
}

#[test]
fn the_api_server_dies_and_comes_back() {
    let mut api = FakeApi::start().unwrap();
    api.apply(namespace("default"));
    api.apply(service("default", "stable", "10.96.8.1", &[("http", 80)]));
    let mut server = start_against(&api, &[]);
    server.wait_for_log(READY_LINE, Duration::from_secs(20));
    let prober = Prober::start(
        server.addr,
        "stable.default.svc.cluster.local",
        vec!["stable.default.svc.cluster.local. A 10.96.8.1".into()],
    );

    api.stop();
    server.wait_for_log("watch failed", Duration::from_secs(10));
    // Changes made while kubewire cannot see them.
    api.apply(service("default", "newcomer", "10.96.8.2", &[("http", 80)]));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        a_records(&server, "newcomer.default.svc.cluster.local").0,
        3,
        "not seen yet"
    );
    api.restart().unwrap();
    eventually("the change made meanwhile", || {
        a_records(&server, "newcomer.default.svc.cluster.local").1
            == ["newcomer.default.svc.cluster.local. A 10.96.8.2"]
    });
    server.wait_for_log("watch recovered", Duration::from_secs(10));
    let (asked, wrong) = prober.finish();
    assert!(asked > 50, "asked {asked}");
    assert_eq!(
        wrong, 0,
        "{wrong} of {asked} answers for a stable service were wrong"
    );
    // Each failure is logged once per reason, not once per retry.
    let failures = server
        .seen
        .iter()
        .filter(|l| l.contains("watch failed"))
        .count();
    assert!(failures <= 8, "{failures} failure lines");
}

#[test]
fn a_forced_relist_never_gives_a_wrong_answer() {
    let api = FakeApi::start().unwrap();
    api.apply(namespace("default"));
    api.apply(service("default", "stable", "10.96.9.1", &[("http", 80)]));
    api.apply(service("default", "doomed", "10.96.9.2", &[("http", 80)]));
    let mut server = start_against(&api, &[]);
    server.wait_for_log(READY_LINE, Duration::from_secs(20));
    let prober = Prober::start(
        server.addr,
        "stable.default.svc.cluster.local",
        vec!["stable.default.svc.cluster.local. A 10.96.9.1".into()],
    );
    std::thread::sleep(Duration::from_millis(200));
    let lists_before = api.lists_served();
    // Forget history: open watches get 410 Gone inside their 200 stream.
    api.delete("Service", "default", "doomed");
    api.expire_history();
    eventually("a relist", || api.lists_served() > lists_before);
    eventually("the deletion seen through the relist", || {
        a_records(&server, "doomed.default.svc.cluster.local").0 == 3
    });
    api.bookmark();
    std::thread::sleep(Duration::from_millis(300));
    let (asked, wrong) = prober.finish();
    assert!(asked > 50, "asked {asked}");
    assert_eq!(
        wrong, 0,
        "{wrong} of {asked} answers were wrong during the relist"
    );
}

#[test]
fn a_relist_keeps_the_last_good_version_of_an_object_that_fails_conversion() {
    let api = FakeApi::start().unwrap();
    api.apply(namespace("default"));
    api.apply(service("default", "stable", "10.96.9.1", &[("http", 80)]));
    let mut server = start_against(&api, &[]);
    server.wait_for_log(READY_LINE, Duration::from_secs(20));
    // A broken edit arrives as a watch event: skipped, the old one serves.
    api.apply(service("default", "stable", "10.96.9.999", &[("http", 80)]));
    server.wait_for_log("10.96.9.999", Duration::from_secs(10));
    let want = (
        0,
        vec!["stable.default.svc.cluster.local. A 10.96.9.1".to_string()],
    );
    assert_eq!(a_records(&server, "stable.default.svc.cluster.local"), want);
    // The same broken object comes through a relist: still the old one.
    let lists_before = api.lists_served();
    api.expire_history();
    eventually("a relist", || api.lists_served() > lists_before);
    api.bookmark();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(a_records(&server, "stable.default.svc.cluster.local"), want);
}

#[test]
fn no_api_server_at_start() {
    let mut api = FakeApi::start().unwrap();
    api.apply(namespace("default"));
    api.apply(service("default", "late", "10.96.10.1", &[("http", 80)]));
    api.stop();
    let mut server = start_against(&api, &["--startup-timeout-ms", "60000"]);
    let ready = server.http_addr("ready");
    let line = server.wait_for_log("watch failed", Duration::from_secs(10));
    assert!(line.contains("retrying with backoff"), "{line}");
    assert_eq!(http_status(ready, "/ready"), 503);
    assert_eq!(
        a_records(&server, "late.default.svc.cluster.local").0,
        2,
        "SERVFAIL while never synced"
    );
    api.restart().unwrap();
    server.wait_for_log(READY_LINE, Duration::from_secs(40));
    assert_eq!(http_status(ready, "/ready"), 200);
    assert_eq!(
        a_records(&server, "late.default.svc.cluster.local").1,
        ["late.default.svc.cluster.local. A 10.96.10.1"]
    );
}

/// `kubernetes.multicluster` against an API server without the
/// ServiceImport CRD: one clear line, the cluster zone syncs and serves, and
/// once the CRD is installed, imports are watched and answered.
#[test]
fn multicluster_without_its_crd_says_so_then_follows_imports_once_installed() {
    const MISSING: &str = "the Multi-Cluster Services API CRDs are not installed";
    let api = FakeApi::start().unwrap();
    api.apply(namespace("default"));
    api.apply(service("default", "web", "10.96.0.5", &[("http", 80)]));
    let dir = tempdir("multicluster");
    let config = dir.join("kubewire.toml");
    std::fs::write(
        &config,
        "[dns]\nzones = [\"cluster.local\", \"clusterset.local\"]\n[kubernetes]\nmulticluster = [\"clusterset.local\"]\n",
    )
    .unwrap();
    let mut server = start_against(&api, &["--config", config.to_str().unwrap()]);
    server.wait_for_log(READY_LINE, Duration::from_secs(20));
    server.wait_for_log(MISSING, Duration::from_secs(5));
    assert_eq!(
        a_records(&server, "web.default.svc.cluster.local"),
        (
            0,
            vec!["web.default.svc.cluster.local. A 10.96.0.5".to_string()]
        )
    );
    // Synced, so an unknown name is NXDOMAIN, not SERVFAIL; the local
    // Service is not an import.
    assert_eq!(a_records(&server, "web.default.svc.clusterset.local").0, 3);
    // The watch retries with backoff; the line is not repeated.
    std::thread::sleep(Duration::from_secs(3));
    let _ = server.logged("no such line", Duration::from_millis(100));
    let times = server.seen.iter().filter(|l| l.contains(MISSING)).count();
    assert_eq!(times, 1, "{:#?}", server.seen);

    api.install_service_imports(true);
    api.apply(service_import(
        "default",
        "web",
        Some(&["10.100.0.5"]),
        &[("http", 80)],
    ));
    api.apply(imported_endpoint_slice(
        "default",
        "web-east",
        "web",
        "east",
        &[("10.1.5.1", true, Some("web-0"))],
    ));
    api.apply(service_import("default", "db", None, &[("http", 80)]));
    api.apply(imported_endpoint_slice(
        "default",
        "db-west",
        "db",
        "west",
        &[("10.2.0.1", true, None), ("10.2.0.2", false, None)],
    ));
    // Backoff can reach a few seconds before the next try.
    let deadline = Instant::now() + Duration::from_secs(40);
    while a_records(&server, "web.default.svc.clusterset.local").0 != 0 {
        assert!(Instant::now() < deadline, "imports never arrived");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        a_records(&server, "web.default.svc.clusterset.local").1,
        ["web.default.svc.clusterset.local. A 10.100.0.5"]
    );
    assert_eq!(
        a_records(&server, "web-0.east.web.default.svc.clusterset.local").1,
        ["web-0.east.web.default.svc.clusterset.local. A 10.1.5.1"]
    );
    assert_eq!(
        a_records(&server, "db.default.svc.clusterset.local").1,
        ["db.default.svc.clusterset.local. A 10.2.0.1"]
    );
    let srv = server.tcp(
        "_http._tcp.db.default.svc.clusterset.local",
        RecordType::SRV,
    );
    assert_eq!(
        answers(&srv),
        [
            "_http._tcp.db.default.svc.clusterset.local. SRV 0 100 80 10-2-0-1.west.db.default.svc.clusterset.local."
        ]
    );
    assert!(server.logged("watch recovered", Duration::from_secs(2)));
    // The cluster zone is unchanged by the imports.
    assert_eq!(
        a_records(&server, "web.default.svc.cluster.local").1,
        ["web.default.svc.cluster.local. A 10.96.0.5"]
    );
    // The API server refuses ServiceImports once they were listed: the
    // last good imports keep serving.
    api.install_service_imports(false);
    api.drop_watches();
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.seen.iter().filter(|l| l.contains(MISSING)).count() < 2 {
        assert!(Instant::now() < deadline, "no second warning");
        let _ = server.logged("no such line", Duration::from_millis(100));
    }
    // The warning is logged before the cores apply what came with it:
    // keep asking for a while.
    for _ in 0..10 {
        assert_eq!(
            a_records(&server, "web.default.svc.clusterset.local").1,
            ["web.default.svc.clusterset.local. A 10.100.0.5"]
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    api.install_service_imports(true);
    // An import deleted: gone.
    api.delete("ServiceImport", "default", "web");
    eventually("the import to go", || {
        a_records(&server, "web.default.svc.clusterset.local").0 == 3
    });
}

#[test]
fn namespace_and_label_filters() {
    let api = FakeApi::start().unwrap();
    for ns in ["a", "b"] {
        api.apply(namespace(ns));
    }
    let mut labelled = service("a", "one", "10.96.11.1", &[("http", 80)]);
    labelled["metadata"]["labels"] = serde_json::json!({"dns": "yes"});
    api.apply(labelled);
    api.apply(service("a", "two", "10.96.11.2", &[("http", 80)]));
    let mut other = service("b", "three", "10.96.11.3", &[("http", 80)]);
    other["metadata"]["labels"] = serde_json::json!({"dns": "yes"});
    api.apply(other);
    let mut server = start_against(&api, &["--namespaces", "a", "--labels", "dns=yes"]);
    server.wait_for_log(READY_LINE, Duration::from_secs(20));
    assert_eq!(a_records(&server, "one.a.svc.cluster.local").0, 0);
    assert_eq!(
        a_records(&server, "two.a.svc.cluster.local").0,
        3,
        "label selector"
    );
    assert_eq!(
        a_records(&server, "three.b.svc.cluster.local").0,
        3,
        "namespace filter"
    );
}

#[test]
fn a_rotated_token_is_picked_up() {
    let api = FakeApi::start().unwrap();
    api.apply(namespace("default"));
    api.apply(service("default", "web", "10.96.12.1", &[("http", 80)]));
    let dir = tempdir("token");
    let token = dir.join("token");
    std::fs::write(&token, "first-token").unwrap();
    let kubeconfig = api.write_kubeconfig_with_token_file(&dir, &token).unwrap();
    let mut server = Server::spawn(
        &["--kubeconfig", kubeconfig.to_str().unwrap(), "--cores", "1"],
        format!("127.0.0.1:{}", free_port()).parse().unwrap(),
    );
    server.wait_for_log(READY_LINE, Duration::from_secs(20));
    assert_eq!(api.authorizations(), ["Bearer first-token"]);

    // The token file is rotated, as the kubelet rotates projected tokens.
    // kube re-reads it about once a minute; each new request shows which
    // token is in use, so watches are dropped to make new ones.
    std::fs::write(&token, "second-token").unwrap();
    let start = Instant::now();
    while !api
        .authorizations()
        .iter()
        .any(|a| a == "Bearer second-token")
    {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "rotated token never used: {:?}",
            api.authorizations()
        );
        api.drop_watches();
        std::thread::sleep(Duration::from_secs(2));
    }
    assert_eq!(
        a_records(&server, "web.default.svc.cluster.local").1,
        ["web.default.svc.cluster.local. A 10.96.12.1"]
    );
}
