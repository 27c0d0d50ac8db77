//! `kubewire explain` end to end: watched manifests, the debug endpoint
//! over HTTP, the reply a real listener gives, autopath answering from pod
//! addresses in 127.0.0.0/8, and a forwarded name's cache entry filled
//! from the scripted upstream.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::upstream::{Behaviour, Upstream};
use common::*;
use hickory_proto::rr::RecordType;
use kubewire::operations::debug::Explained;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::Duration;

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
metadata: {name: api, namespace: team, resourceVersion: '300', labels: {dns: served}}
spec: {clusterIP: 10.96.7.7, ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: api-1, namespace: team, labels: {kubernetes.io/service-name: api, dns: served}}
addressType: IPv4
endpoints:
- {addresses: [10.1.7.1]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: other, resourceVersion: '310', labels: {dns: served}}
spec: {clusterIP: 10.96.8.8, ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: other, labels: {kubernetes.io/service-name: web, dns: served}}
addressType: IPv4
endpoints:
- {addresses: [10.1.8.8]}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: other, labels: {dns: served}}
spec: {clusterIP: None, ports: [{name: sql, port: 5432}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: db-1, namespace: other, labels: {kubernetes.io/service-name: db, dns: served}}
addressType: IPv4
ports: [{name: sql, port: 5432, protocol: TCP}]
endpoints:
- {addresses: [10.1.9.1], conditions: {ready: false}}
- {addresses: [10.1.9.2], conditions: {ready: false}}
---
apiVersion: v1
kind: Service
metadata: {name: empty, namespace: default, labels: {dns: served}}
spec: {clusterIP: 10.96.9.9, ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: empty-1, namespace: default, labels: {kubernetes.io/service-name: empty, dns: served}}
addressType: IPv4
endpoints:
- {addresses: [10.1.8.1], conditions: {ready: false}}
---
apiVersion: v1
kind: Service
metadata: {name: hidden, namespace: default}
spec: {clusterIP: 10.96.6.6, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: team}
status: {phase: Running, podIP: 127.0.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: other}
status: {phase: Running, podIP: 127.0.0.3}
";

fn web(resource_version: &str, ip: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: default, resourceVersion: '{resource_version}', labels: {{dns: served}}}}\nspec: {{clusterIP: {ip}, ports: [{{name: http, port: 80}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: web-1, namespace: default, resourceVersion: '101', labels: {{kubernetes.io/service-name: web, dns: served}}}}\naddressType: IPv4\nendpoints:\n- {{addresses: [10.1.0.5]}}\n"
    )
}

/// kubewire on the manifests in `dir`, with the debug endpoint, verified
/// pods, autopath, `ignore_empty_service`, namespace and label filters,
/// and `upstream` behind; `extra` is more of the config file.
fn start(dir: &Path, upstream: &Upstream, extra: &str) -> (Server, SocketAddr) {
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    std::fs::write(manifests.join("web.yaml"), web("100", "10.96.5.5")).unwrap();
    let mut server = serve(
        dir,
        upstream,
        &format!(
            "[kubernetes]\nautopath = true\nautopath_resolv_conf = \"\"\npods = \"verified\"\n\
             ignore_empty_service = true\nnamespaces = [\"default\", \"team\", \"other\"]\n\
             labels = \"dns=served\"\n{extra}"
        ),
        "2",
    );
    let debug = server.http_addr("debug");
    (server, debug)
}

/// Serves `CLUSTER` (and whatever else `dir/manifests` holds) with
/// `config`, forwarding to `upstream`, on `cores`, with the debug endpoint.
fn serve(dir: &Path, upstream: &Upstream, config: &str, cores: &str) -> Server {
    let config_path = dir.join("kubewire.toml");
    std::fs::write(&config_path, config).unwrap();
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    std::fs::write(manifests.join("cluster.yaml"), CLUSTER).unwrap();
    Server::start(&[
        "--manifests",
        manifests.to_str().unwrap(),
        "--config",
        config_path.to_str().unwrap(),
        "--forward",
        &upstream.addr.to_string(),
        "--debug-addr",
        "127.0.0.1:0",
        "--cores",
        cores,
    ])
}

fn explain(debug: SocketAddr, query: &str) -> Explained {
    let (status, body) = http_request(debug, "GET", &format!("/debug/explain?{query}"), None);
    assert_eq!(status, 200, "{query}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn reason(explained: &Explained) -> String {
    explained
        .reason
        .as_ref()
        .map(|r| r.code.clone())
        .unwrap_or_default()
}

#[test]
fn each_nxdomain_says_why_and_the_reply_is_the_listeners() {
    let dir = tempdir("explain-why");
    let upstream = Upstream::start();
    let (_server, debug) = start(&dir, &upstream, "");

    let cases = [
        // Another namespace holds one: it is named.
        ("name=api.default.svc.cluster.local", "no_service", "team"),
        (
            "name=db.other.svc.cluster.local",
            "headless_no_ready",
            "2 not ready",
        ),
        (
            "name=empty.default.svc.cluster.local",
            "empty_service_ignored",
            "ignore_empty_service",
        ),
        (
            "name=hidden.default.svc.cluster.local",
            "filtered_labels",
            "dns=served",
        ),
        (
            "name=x.secret.svc.cluster.local",
            "filtered_namespace",
            "secret",
        ),
        (
            "name=127-0-0-9.team.pod.cluster.local",
            "pod_unknown",
            "127.0.0.9",
        ),
        (
            "name=nobody.api.team.svc.cluster.local",
            "no_endpoint",
            "has 1 endpoints",
        ),
        (
            "name=_grpc._tcp.api.team.svc.cluster.local&type=SRV",
            "no_port",
            "_grpc._tcp",
        ),
    ];
    for (query, code, mentions) in cases {
        let explained = explain(debug, query);
        assert_eq!(explained.outcome, "nxdomain", "{query}: {explained:#?}");
        assert_eq!(reason(&explained), code, "{query}: {explained:#?}");
        let text = &explained.reason.as_ref().unwrap().text;
        assert!(text.contains(mentions), "{query}: {text}");
        let reply = explained.reply.as_ref().expect("the listener's reply");
        assert_eq!(reply.rcode, "NXDOMAIN", "{query}");
        assert!(reply.authority[0].contains(" SOA "), "{query}: {reply:?}");
    }

    // A verified pod's name: the pod is its source.
    let explained = explain(debug, "name=127-0-0-2.team.pod.cluster.local");
    assert_eq!(explained.outcome, "answer");
    let pods: Vec<(&str, &str)> = explained
        .sources
        .iter()
        .map(|s| (s.kind.as_str(), s.name.as_str()))
        .collect();
    assert_eq!(pods, [("Pod", "client")]);

    // NODATA: the name has other types.
    let explained = explain(debug, "name=api.team.svc.cluster.local&type=TXT");
    assert_eq!(explained.outcome, "nodata");
    assert_eq!(reason(&explained), "other_types");
    assert_eq!(explained.reply.unwrap().rcode, "NOERROR");

    // Outside every zone: forwarded, and not cached yet.
    let before = upstream.queries();
    let explained = explain(debug, "name=www.example.org");
    assert_eq!(explained.outcome, "forwarded");
    assert_eq!(reason(&explained), "outside_zones");
    let cache = explained.cache.expect("the cache entry's state");
    assert!(!cache.cached && cache.would_go_upstream);
    assert_eq!(upstream.queries(), before, "explain sent nothing upstream");

    // An answer: the reply, the types, the objects with their versions.
    let explained = explain(debug, "name=web.default.svc.cluster.local");
    assert_eq!(explained.outcome, "answer");
    assert!(explained.reason.is_none());
    let reply = explained.reply.unwrap();
    assert_eq!(
        reply.answer,
        ["web.default.svc.cluster.local. 5 IN A 10.96.5.5"]
    );
    assert!(reply.flags.contains(&"aa".to_string()));
    let sources: Vec<(String, String, Option<u64>)> = explained
        .sources
        .iter()
        .map(|s| (s.kind.clone(), s.name.clone(), s.resource_version))
        .collect();
    assert_eq!(
        sources,
        [
            ("Service".into(), "web".into(), Some(100)),
            ("EndpointSlice".into(), "web-1".into(), Some(101)),
        ]
    );
    assert!(
        explained
            .sources
            .iter()
            .all(|s| s.arrived_unix_ms.is_some())
    );
}

#[test]
fn provenance_follows_an_edit() {
    let dir = tempdir("explain-edit");
    let upstream = Upstream::start();
    let (_server, debug) = start(&dir, &upstream, "");
    let first = explain(debug, "name=web.default.svc.cluster.local");
    let first_change = first.change.clone().expect("a revision");
    assert_eq!(first_change.all_cores, "at", "{first_change:?}");
    let service_arrived = |e: &Explained| e.sources[0].arrived_unix_ms.unwrap();

    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(
        dir.join("manifests").join("web.yaml"),
        web("200", "10.96.5.6"),
    )
    .unwrap();
    let mut second = first.clone();
    // The compiler has it before the cores do: "not yet" until then.
    eventually("the edit is explained, and on every core", || {
        second = explain(debug, "name=web.default.svc.cluster.local");
        second.sources[0].resource_version == Some(200)
            && second.change.as_ref().unwrap().all_cores == "at"
    });
    assert_eq!(
        second.reply.as_ref().unwrap().answer,
        ["web.default.svc.cluster.local. 5 IN A 10.96.5.6"]
    );
    assert!(service_arrived(&second) > service_arrived(&first));
    // The slice did not change: it keeps its version and its arrival.
    assert_eq!(second.sources[1].resource_version, Some(101));
    assert_eq!(
        second.sources[1].arrived_unix_ms,
        first.sources[1].arrived_unix_ms
    );
    let change = second.change.clone().expect("a revision");
    assert!(change.revision > first_change.revision);
    assert_eq!(change.all_cores, "at");
    let took = change.event_to_all_cores_ms.expect("event to every core");
    assert!((0.0..10_000.0).contains(&took), "{took}");
    assert!(change.published_unix_ms.unwrap() >= service_arrived(&second));
}

/// A query from `source` (an address in 127.0.0.0/8).
fn ask_from(server: &Server, source: &str, name: &str) -> Vec<String> {
    let socket = UdpSocket::bind(SocketAddr::new(source.parse().unwrap(), 0)).unwrap();
    let reply = udp_query_from(
        &socket,
        server.addr,
        &build_query(name, RecordType::A, Some(1232)),
    );
    answers(&reply)
}

#[test]
fn the_search_walk_of_pods_in_two_namespaces_agrees_with_autopath() {
    let dir = tempdir("explain-walk");
    let upstream = Upstream::start();
    let (server, debug) = start(&dir, &upstream, "");

    // `api` lives in `team`: found at once from there.
    let team = explain(debug, "name=api&from=127.0.0.2").from.unwrap();
    assert_eq!(team.namespace, "team");
    assert_eq!(team.pods, ["team/client"]);
    assert!(team.autopath_on && team.autopath_client);
    assert_eq!(team.candidates[0].name, "api.team.svc.cluster.local.");
    assert!(team.candidates[0].ends_walk);
    assert_eq!((team.round_trips, team.round_trips_autopath), (1, 1));

    // From `other`, every search domain misses, then the bare name goes up.
    let other = explain(debug, "name=api&from=other/client").from.unwrap();
    assert_eq!(other.namespace, "other");
    let walked: Vec<(&str, &str)> = other
        .candidates
        .iter()
        .map(|c| (c.name.as_str(), c.outcome.as_str()))
        .collect();
    assert_eq!(
        walked,
        [
            ("api.other.svc.cluster.local.", "nxdomain"),
            ("api.svc.cluster.local.", "nxdomain"),
            ("api.cluster.local.", "nxdomain"),
            ("api.", "forwarded"),
        ]
    );
    assert_eq!((other.round_trips, other.round_trips_autopath), (4, 1));

    // What autopath answers from each pod ends where the walk ends.
    for (source, namespace, name) in [
        ("127.0.0.2", "team", "web.other"),
        ("127.0.0.3", "other", "web.other"),
        ("127.0.0.3", "other", "api"),
    ] {
        let walk = explain(debug, &format!("name={name}&from={source}"))
            .from
            .unwrap();
        let ends = walk
            .candidates
            .iter()
            .find(|c| c.ends_walk)
            .unwrap()
            .name
            .clone();
        let first = format!("{name}.{namespace}.svc.cluster.local.");
        let answered = ask_from(&server, source, first.trim_end_matches('.'));
        if walk.round_trips == 1 {
            assert!(answered[0].starts_with(&first), "{answered:?}");
        } else {
            let cname = format!("{first} CNAME {ends}");
            assert!(answered.contains(&cname), "{cname} in {answered:?}");
        }
    }
}

#[test]
fn a_forwarded_names_cache_entry_ages() {
    let dir = tempdir("explain-cache");
    let upstream = Upstream::start();
    let (server, debug) = start(&dir, &upstream, "");
    assert_eq!(rcode(&server.udp("aging.example.test", RecordType::A)), 0);

    let first = explain(debug, "name=aging.example.test");
    let cache = first.cache.clone().expect("cache state");
    assert!(cache.cached && !cache.would_go_upstream, "{cache:?}");
    assert_eq!(cache.rcode.as_deref(), Some("NOERROR"));
    assert_eq!(cache.filled_by, Some(upstream.addr.to_string()));
    assert!(cache.upstreams.iter().all(|u| !u.down));
    let reply = first.reply.expect("the cached reply");
    assert!(reply.from.contains("cache"), "{}", reply.from);
    assert!(reply.answer[0].ends_with(" IN A 192.0.2.1"), "{reply:?}");

    std::thread::sleep(Duration::from_millis(2100));
    let later = explain(debug, "name=aging.example.test").cache.unwrap();
    assert!(later.age_s.unwrap() >= cache.age_s.unwrap() + 2);
    assert!(later.ttl_left_s.unwrap() <= cache.ttl_left_s.unwrap() - 2);
}

#[test]
fn a_stale_entry_its_prefetch_count_and_a_down_upstream_are_told() {
    let dir = tempdir("explain-stale");
    let upstream = Upstream::start();
    // One core: the entry, its refresh and the upstream's health are its.
    let mut server = serve(
        &dir,
        &upstream,
        "[forward]\ntimeout_ms = 200\nmax_attempts = 1\nmax_fails = 1\n\
         [cache]\nmin_ttl_s = 1\nmax_ttl_s = 1\nserve_stale_s = 60\nprefetch_amount = 100\n",
        "1",
    );
    let debug = server.http_addr("debug");
    for _ in 0..3 {
        assert_eq!(rcode(&server.udp("stale.example.test", RecordType::A)), 0);
    }
    let fresh = explain(debug, "name=stale.example.test").cache.unwrap();
    // A miss, then two hits towards prefetch's 100.
    assert!(fresh.cached && !fresh.stale && fresh.hits == 2, "{fresh:?}");
    assert!(!fresh.refreshing && !fresh.would_go_upstream, "{fresh:?}");

    // The upstream goes silent; the entry expires and is served stale while
    // its refresh times out, and the upstream is marked down.
    upstream.set(Behaviour::Drop);
    std::thread::sleep(Duration::from_millis(1300));
    let reply = server.udp("stale.example.test", RecordType::A);
    assert_eq!(answers(&reply), ["stale.example.test. A 192.0.2.1"]);
    let mut told = None;
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(250));
        let cache = explain(debug, "name=stale.example.test").cache.unwrap();
        if cache.upstreams.iter().any(|u| u.down) {
            told = Some(cache);
            break;
        }
    }
    let stale = told.expect("the upstream told as down");
    assert!(stale.cached && stale.stale, "{stale:?}");
    assert!(stale.ttl_left_s.unwrap() <= 0, "{stale:?}");
    assert_eq!(stale.upstreams[0].upstream, upstream.addr.to_string());
}

#[test]
fn the_debug_endpoint_refuses_what_it_should() {
    let dir = tempdir("explain-safety");
    let upstream = Upstream::start();
    let token = dir.join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let (_server, debug) = start(
        &dir,
        &upstream,
        &format!(
            "[http]\ndebug_token_file = {:?}\ndebug_requests_per_second = 3\n",
            token.display().to_string()
        ),
    );
    let path = "/debug/explain?name=api.team.svc.cluster.local";
    assert_eq!(http_request(debug, "GET", path, None).0, 401);
    assert_eq!(http_request(debug, "GET", path, Some("wrong")).0, 401);
    assert_eq!(http_request(debug, "POST", path, Some("s3cret")).0, 405);
    for (bad, says) in [
        ("/debug/explain", "give a name"),
        ("/debug/explain?name=a..b", "not a DNS name"),
        ("/debug/explain?name=a&type=BOGUS", "not a record type"),
        ("/debug/explain?name=a&from=not%20a%20pod", "NAMESPACE/POD"),
    ] {
        std::thread::sleep(Duration::from_millis(400));
        let (status, body) = http_request(debug, "GET", bad, Some("s3cret"));
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body.contains(says), "{bad}: {body}");
    }
    let long = format!("/debug/explain?name=a&from={}", "a".repeat(5000));
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(http_request(debug, "GET", &long, Some("s3cret")).0, 400);

    // Three a second: a burst gets 429s, and the endpoint comes back.
    std::thread::sleep(Duration::from_millis(1100));
    let statuses: Vec<u16> = (0..10)
        .map(|_| http_request(debug, "GET", path, Some("s3cret")).0)
        .collect();
    assert!(
        statuses.contains(&200) && statuses.contains(&429),
        "{statuses:?}"
    );
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(http_request(debug, "GET", path, Some("s3cret")).0, 200);

    // The command, with the token.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_kubewire"))
        .args(["explain", "api.team.svc.cluster.local", "--server"])
        .arg(format!("http://{debug}"))
        .arg("--token-file")
        .arg(&token)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(
        text.contains("api.team.svc.cluster.local. 5 IN A 10.96.7.7"),
        "{text}"
    );
    assert!(
        text.contains("Service team/api, resourceVersion 300"),
        "{text}"
    );

    let ask = |args: &[&str]| {
        std::thread::sleep(Duration::from_millis(400));
        std::process::Command::new(env!("CARGO_BIN_EXE_kubewire"))
            .arg("explain")
            .args(args)
            .arg("--server")
            .arg(format!("http://{debug}"))
            .arg("--token-file")
            .arg(&token)
            .output()
            .unwrap()
    };
    // `--json` gives the report as the endpoint sends it.
    let output = ask(&["api.team.svc.cluster.local", "--json"]);
    assert!(output.status.success(), "{output:?}");
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["sources"][0]["name"], "api", "{json}");
    assert_eq!(json["sources"][0]["resource_version"], 300, "{json}");
    // A pod kubewire does not hold, although it watches pods: an error that
    // says what to check, not a walk from a guess.
    let output = ask(&["api", "--from", "team/nosuch"]);
    assert!(!output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("404") && stderr.contains("no pod team/nosuch is known"),
        "{stderr}"
    );
    let output = ask(&["api", "--from", "team/client"]);
    assert!(output.status.success(), "{output:?}");
}

#[test]
fn a_debug_endpoint_off_loopback_needs_a_token() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_kubewire"))
        .args(["--demo", "--debug-addr", "0.0.0.0:9155"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("http.debug_addr") && stderr.contains("debug_token_file"),
        "{stderr}"
    );
}

#[test]
fn through_the_fake_api_a_hidden_service_and_each_change_are_told() {
    use kubewire_bench::fake_api::{FakeApi, endpoint_slice, namespace, service};
    let labelled = |mut object: serde_json::Value| {
        object["metadata"]["labels"]["dns"] = "served".into();
        object
    };
    let api = FakeApi::start().unwrap();
    api.apply(namespace("default"));
    api.apply(service("default", "hidden", "10.96.6.6", &[("http", 80)]));
    let first_rv = api.apply(labelled(service(
        "default",
        "web",
        "10.96.5.5",
        &[("http", 80)],
    )));
    let slice_rv = api.apply(labelled(endpoint_slice(
        "default",
        "web-1",
        "web",
        &[("10.1.0.5", true, None)],
    )));
    let dir = tempdir("explain-api");
    let kubeconfig = api.write_kubeconfig(&dir).unwrap();
    let mut server = Server::start(&[
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--labels",
        "dns=served",
        "--debug-addr",
        "127.0.0.1:0",
        "--cores",
        "2",
    ]);
    let debug = server.http_addr("debug");

    // Not watched, yet the API server has it: the selector hides it.
    let hidden = explain(debug, "name=hidden.default.svc.cluster.local");
    assert_eq!(hidden.outcome, "nxdomain");
    assert_eq!(reason(&hidden), "filtered_labels", "{hidden:#?}");
    // Neither watched nor there: no Service.
    let absent = explain(debug, "name=absent.default.svc.cluster.local");
    assert_eq!(reason(&absent), "no_service", "{absent:#?}");

    let versions = |e: &Explained| -> Vec<Option<u64>> {
        e.sources.iter().map(|s| s.resource_version).collect()
    };
    let first = explain(debug, "name=web.default.svc.cluster.local");
    assert_eq!(versions(&first), [Some(first_rv), Some(slice_rv)]);

    let second_rv = api.apply(labelled(service(
        "default",
        "web",
        "10.96.5.6",
        &[("http", 80)],
    )));
    let mut second = first.clone();
    eventually("the watch event is explained", || {
        second = explain(debug, "name=web.default.svc.cluster.local");
        versions(&second) == [Some(second_rv), Some(slice_rv)]
            && second.change.as_ref().unwrap().all_cores == "at"
    });
    assert_eq!(
        second.reply.as_ref().unwrap().answer,
        ["web.default.svc.cluster.local. 5 IN A 10.96.5.6"]
    );
    assert!(second.change.as_ref().unwrap().revision > first.change.as_ref().unwrap().revision);
    assert!(second.sources[0].arrived_unix_ms > first.sources[0].arrived_unix_ms);
}

/// Sends `count` queries for `name` from `source`, one at a time.
fn load_from(server: &Server, source: &str, name: &str, count: usize) {
    let socket = UdpSocket::bind(SocketAddr::new(source.parse().unwrap(), 0)).unwrap();
    let query = build_query(name, RecordType::A, Some(1232));
    for _ in 0..count {
        let _ = udp_query_from(&socket, server.addr, &query);
    }
}

#[test]
fn top_finds_a_known_mix_of_namespaces_and_search_path_misses() {
    use kubewire::operations::debug::TopReport;
    let dir = tempdir("explain-top");
    let upstream = Upstream::start();
    // Without autopath, search-path misses are NXDOMAIN, and clients get
    // their namespace from the control plane's pod index.
    let mut server = serve(&dir, &upstream, "[kubernetes]\npods = \"verified\"\n", "2");
    let debug = server.http_addr("debug");

    // 5600 queries: team 3000 (two thirds of them search-path misses),
    // other 1000, and a client that is no pod 1600: 1400 real NXDOMAINs
    // (a name under the zone with no dot, a Service missing from a
    // namespace that exists, a hostname missing from a Service that
    // exists) and 200 search-path misses (`example.com` + `svc.<zone>`:
    // there is no namespace `com`).
    load_from(
        &server,
        "127.0.0.2",
        "google.com.team.svc.cluster.local",
        2000,
    );
    load_from(&server, "127.0.0.2", "api.team.svc.cluster.local", 1000);
    load_from(&server, "127.0.0.3", "web.other.svc.cluster.local", 1000);
    load_from(&server, "127.0.0.9", "missing.cluster.local", 1000);
    load_from(&server, "127.0.0.9", "absent.team.svc.cluster.local", 200);
    load_from(
        &server,
        "127.0.0.9",
        "nohost.api.team.svc.cluster.local",
        200,
    );
    load_from(&server, "127.0.0.9", "example.com.svc.cluster.local", 200);
    std::thread::sleep(Duration::from_millis(1300));

    let (status, body) = http_request(debug, "GET", "/debug/top", None);
    assert_eq!(status, 200, "{body}");
    let top: TopReport = serde_json::from_str(&body).unwrap();
    // One query in 16 is counted, at random: about 312 samples, so a share
    // is within 0.1 of the truth by more than three standard deviations.
    assert!((4600..6600).contains(&top.queries), "{top:#?}");
    let share = |namespace: &str| {
        top.namespaces
            .iter()
            .find(|n| n.namespace == namespace)
            .unwrap_or_else(|| panic!("{namespace} in {top:#?}"))
            .clone()
    };
    let team = share("team");
    assert!((team.share - 3000.0 / 5600.0).abs() < 0.1, "{team:?}");
    assert!(
        (team.search_miss_share - 2.0 / 3.0).abs() < 0.12,
        "{team:?}"
    );
    assert!(team.autopath_saves_per_second > 0.0);
    let other = share("other");
    assert!((other.share - 1000.0 / 5600.0).abs() < 0.1, "{other:?}");
    assert_eq!(other.search_miss_share, 0.0);
    assert_eq!(top.clients[0].key, "127.0.0.9", "{top:#?}");
    assert_eq!(
        top.nxdomain_search[0].key,
        "google.com.team.svc.cluster.local."
    );
    assert_eq!(top.nxdomain_other[0].key, "missing.cluster.local.");
    // 200 queries are about 12 samples: each name is there but for a chance
    // of (15/16)^200, about 2.5 in a million.
    let keys = |items: &[kubewire::operations::debug::TopItem]| -> Vec<String> {
        items.iter().map(|i| i.key.clone()).collect()
    };
    let (search, other_misses) = (keys(&top.nxdomain_search), keys(&top.nxdomain_other));
    assert!(
        search.contains(&"example.com.svc.cluster.local.".to_string()),
        "{search:?}"
    );
    for real in [
        "absent.team.svc.cluster.local.",
        "nohost.api.team.svc.cluster.local.",
    ] {
        assert!(
            other_misses.contains(&real.to_string()),
            "{real} in {other_misses:?}"
        );
        assert!(!search.contains(&real.to_string()), "{real} in {search:?}");
    }
    // Besides the load, only kubewire's own loop probe, if it was picked.
    let names: Vec<&str> = top
        .names
        .iter()
        .map(|n| n.key.as_str())
        .filter(|n| !n.contains(".kubewire-loop-probe."))
        .collect();
    assert_eq!(names[0], "google.com.team.svc.cluster.local.");
    assert_eq!(names.len(), 7, "{names:?}");

    // The command prints the estimate.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_kubewire"))
        .args(["top", "--server"])
        .arg(format!("http://{debug}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(
        text.contains("namespace team: ") && text.contains("autopath would save about"),
        "{text}"
    );
}

#[test]
fn the_top_namespaces_gauge_is_bounded_and_follows_the_pods() {
    let upstream = Upstream::start();
    // With autopath the cores know each client's namespace; without it,
    // the control plane places the sampled clients by its pod index.
    for kubernetes in [
        "autopath = true\nautopath_resolv_conf = \"\"\npods = \"verified\"\n",
        "pods = \"verified\"\n",
    ] {
        let dir = tempdir("explain-gauge");
        let mut server = serve(&dir, &upstream, &format!("[kubernetes]\n{kubernetes}"), "2");
        let metrics = server.http_addr("metrics");
        load_from(&server, "127.0.0.2", "api.team.svc.cluster.local", 1000);
        load_from(&server, "127.0.0.3", "web.other.svc.cluster.local", 500);
        let series = |namespace: &str| {
            format!("kubewire_top_namespace_queries_per_second{{namespace=\"{namespace}\"}}")
        };
        // The cores publish every second, the control plane places them
        // every 2 s.
        let mut exposition = String::new();
        eventually("both namespaces in the gauge", || {
            exposition = http_get(metrics, "/metrics").1;
            exposition.contains(&series("team")) && exposition.contains(&series("other"))
        });
        let team = metric(&exposition, &series("team"));
        let other = metric(&exposition, &series("other"));
        assert!(team > other && other > 0.0, "{kubernetes}: {team} {other}");
        let count = exposition
            .lines()
            .filter(|l| l.starts_with("kubewire_top_namespace_queries_per_second{"))
            .count();
        assert!(count <= 10);
    }
}
