//! The Corefile translation's tests: each Corefile a CoreDNS user writes,
//! translated and parsed again as a kubewire config.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use super::*;
use crate::operations::config::DnsName;

#[test]
fn go_durations() {
    assert_eq!(go_duration_ms("5s"), Some(5_000));
    assert_eq!(go_duration_ms("500ms"), Some(500));
    assert_eq!(go_duration_ms("1m30s"), Some(90_000));
    assert_eq!(go_duration_ms("soon"), None);
}

#[test]
fn an_unclosed_block_is_an_error_with_its_line() {
    let error = translate("Corefile", ".:53 {\n  errors\n").unwrap_err();
    assert_eq!(
        error.to_string(),
        "Corefile:1: this block is never closed with \"}\""
    );
}

#[test]
fn autopath_at_kubernetes_translates() {
    let t = translate(
        "Corefile",
        ".:53 {\n  kubernetes cluster.local {\n    pods verified\n  }\n  autopath @kubernetes\n}\n",
    )
    .unwrap();
    assert!(t.untranslated.is_empty(), "{:?}", t.untranslated);
    let config = Config::parse("t", &t.toml).unwrap();
    assert!(config.kubernetes.autopath);
    let t = translate("Corefile", ".:53 {\n  autopath /etc/other.conf\n}\n").unwrap();
    assert_eq!(t.untranslated.len(), 1, "{:?}", t.untranslated);
}

#[test]
fn k8s_external_translates_with_its_options() {
    let t = translate(
        "Corefile",
        ".:53 {\n  kubernetes cluster.local\n  k8s_external example.org in-addr.arpa. {\n    apex ext\n    ttl 30\n    headless\n    fallthrough\n  }\n}\n",
    )
    .unwrap();
    assert!(t.untranslated.is_empty(), "{:?}", t.untranslated);
    let config = Config::parse("t", &t.toml).unwrap();
    let e = &config.k8s_external;
    assert_eq!(e.zones, ["example.org", "in-addr.arpa"]);
    assert_eq!(e.apex, "ext");
    assert_eq!(e.ttl_seconds, 30);
    assert!(e.headless);
    assert_eq!(e.fallthrough, ["."]);
    // Without zones: the server block's; at the root, not translated.
    let t = translate("Corefile", "example.net:53 {\n  k8s_external\n}\n").unwrap();
    let config = Config::parse("t", &t.toml).unwrap();
    assert_eq!(config.k8s_external.zones, ["example.net"]);
    let t = translate(
        "Corefile",
        ".:53 {\n  k8s_external {\n    headless\n  }\n}\n",
    )
    .unwrap();
    assert!(
        t.untranslated.iter().any(|u| u.contains("at the root")),
        "{:?}",
        t.untranslated
    );
    // A bad TTL is caught by the configuration's own check.
    let error = translate(
        "Corefile",
        ".:53 {\n  k8s_external example.org {\n    ttl 9000\n  }\n}\n",
    )
    .unwrap_err();
    assert!(
        error.to_string().contains("k8s_external.ttl_seconds"),
        "{error}"
    );
}

#[test]
fn multicluster_translates_when_its_zones_are_served() {
    let t = translate(
        "Corefile",
        ".:53 {\n  kubernetes cluster.local clusterset.local {\n    multicluster clusterset.local\n  }\n}\n",
    )
    .unwrap();
    assert!(t.untranslated.is_empty(), "{:?}", t.untranslated);
    let config = Config::parse("t", &t.toml).unwrap();
    assert_eq!(config.dns.zones, ["cluster.local", "clusterset.local"]);
    assert_eq!(config.kubernetes.multicluster, ["clusterset.local"]);
    let t = translate(
        "Corefile",
        ".:53 {\n  kubernetes cluster.local {\n    multicluster clusterset.local\n  }\n}\n",
    )
    .unwrap();
    assert_eq!(t.untranslated.len(), 1, "{:?}", t.untranslated);
    assert!(t.untranslated[0].contains("clusterset.local is not one of"));
    assert!(
        Config::parse("t", &t.toml)
            .unwrap()
            .kubernetes
            .multicluster
            .is_empty()
    );
}

#[test]
fn zonal_translates() {
    let t = translate(
        "Corefile",
        ".:53 {\n  kubernetes cluster.local {\n    zonal\n  }\n}\n",
    )
    .unwrap();
    assert!(t.untranslated.is_empty(), "{:?}", t.untranslated);
    let config = Config::parse("t", &t.toml).unwrap();
    assert!(config.kubernetes.zonal);
}

#[test]
fn ignore_empty_service_translates() {
    let t = translate(
        "Corefile",
        ".:53 {\n  kubernetes cluster.local {\n    ignore_empty_service\n  }\n}\n",
    )
    .unwrap();
    assert!(t.untranslated.is_empty(), "{:?}", t.untranslated);
    let config = Config::parse("t", &t.toml).unwrap();
    assert!(config.kubernetes.ignore_empty_service);
}

#[test]
fn newer_kubeadms_cache_disables_for_the_cluster_zone_need_nothing() {
    // kubeadm's Corefile since 1.31 keeps cluster.local out of the cache,
    // which kubewire always does.
    let t = translate(
        "Corefile",
        ".:53 {\n  kubernetes cluster.local in-addr.arpa ip6.arpa\n  cache 30 {\n    \
         disable success cluster.local\n    disable denial cluster.local\n  }\n}\n",
    )
    .unwrap();
    assert!(t.untranslated.is_empty(), "{:?}", t.untranslated);
    assert!(
        t.toml.contains(
            "disable success cluster.local: kubewire never caches names in its cluster zones"
        ),
        "{}",
        t.toml
    );
    let t = translate(
        "Corefile",
        ".:53 {\n  cache 30 {\n    disable denial example.org\n  }\n}\n",
    )
    .unwrap();
    assert_eq!(t.untranslated.len(), 1, "{:?}", t.untranslated);
    assert!(t.untranslated[0].contains("disable denial example.org"));
}

#[test]
fn cache_and_its_options_translate() {
    let t = translate(
        "Corefile",
        ".:53 {\n  cache 300 {\n    success 5000 600 10\n    denial 2500 60\n    \
         prefetch 10 1m 20%\n    serve_stale 1h verify\n    servfail 2s\n    keepttl\n  }\n}\n",
    )
    .unwrap();
    assert!(t.untranslated.is_empty(), "{:?}", t.untranslated);
    let config = Config::parse("t", &t.toml).unwrap();
    let c = &config.cache;
    assert_eq!((c.max_ttl_s, c.min_ttl_s), (600, 10));
    assert_eq!((c.denial_max_ttl_s, c.denial_min_ttl_s), (60, 5));
    assert_eq!(c.max_entries, 7500);
    assert_eq!(
        (c.prefetch_amount, c.prefetch_window_s, c.prefetch_percent),
        (10, 60, 20)
    );
    assert_eq!(c.serve_stale_s, 3600);
    assert_eq!(
        c.serve_stale_mode,
        crate::operations::config::StaleMode::Verify
    );
    assert_eq!(c.stale_ttl_s, 0);
    assert_eq!(c.servfail_ttl_s, 2);
    assert!(c.keep_ttl);
    // Without a TTL, CoreDNS's own maximums; zones and unknown options
    // are listed.
    let t = translate(
        "Corefile",
        ".:53 {\n  cache example.org {\n    disable success\n  }\n}\n",
    )
    .unwrap();
    let config = Config::parse("t", &t.toml).unwrap();
    assert_eq!(
        (config.cache.max_ttl_s, config.cache.denial_max_ttl_s),
        (3600, 1800)
    );
    assert_eq!(t.untranslated.len(), 2, "{:?}", t.untranslated);
}

#[test]
fn what_corefile_users_write_translates_to_a_valid_config() {
    // `cache 2`: a cap below the default minimum TTL (CoreDNS clamps).
    let t = translate("Corefile", ".:53 {\n  forward . 192.0.2.1\n  cache 2\n}\n").unwrap();
    let config = Config::parse("t", &t.toml).unwrap();
    assert_eq!((config.cache.min_ttl_s, config.cache.max_ttl_s), (2, 2));
    assert_eq!(
        (config.cache.denial_min_ttl_s, config.cache.denial_max_ttl_s),
        (2, 2)
    );
    // tls_servername inside forward.
    let t = translate(
        "Corefile",
        ".:53 {\n  forward . tls://192.0.2.1 {\n    tls_servername dns.example\n  }\n}\n",
    )
    .unwrap();
    assert!(t.untranslated.is_empty(), "{:?}", t.untranslated);
    let config = Config::parse("t", &t.toml).unwrap();
    assert_eq!(config.forward.tls_servername, "dns.example");
    // CoreDNS's `ignore empty_service` spelling.
    let t = translate(
        "Corefile",
        ".:53 {\n  kubernetes cluster.local {\n    ignore empty_service\n  }\n}\n",
    )
    .unwrap();
    assert!(t.untranslated.is_empty(), "{:?}", t.untranslated);
    assert!(
        Config::parse("t", &t.toml)
            .unwrap()
            .kubernetes
            .ignore_empty_service
    );
    // A stub domain written as its own server block.
    let t = translate(
        "Corefile",
        ".:53 {\n  kubernetes cluster.local\n  forward . 192.0.2.1\n}\n\
         corp.example:53 {\n  errors\n  cache 30\n  forward . 10.0.0.1 10.0.0.2:5353\n}\n\
         other.example:5353 {\n  forward . 10.0.0.3\n}\n",
    )
    .unwrap();
    let config = Config::parse("t", &t.toml).unwrap();
    assert_eq!(
        config.forward.stub_domains[&DnsName::from_static("corp.example")]
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["10.0.0.1", "10.0.0.2:5353"]
    );
    assert_eq!(
        t.untranslated.len(),
        1,
        "another port: {:?}",
        t.untranslated
    );
    assert!(t.untranslated[0].contains("other.example:5353"));
}

#[test]
fn unknown_directives_are_listed() {
    let t = translate(
        "Corefile",
        ".:53 {\n  hosts /etc/hosts\n  rewrite name a b\n}\n",
    )
    .unwrap();
    assert_eq!(
        t.untranslated,
        vec![
            "Corefile:2: hosts /etc/hosts: unknown to kubewire",
            "Corefile:3: rewrite name a b: unknown to kubewire"
        ]
    );
}

/// NodeLocal DNSCache's Corefile (nodelocaldns.yaml, with the addresses
/// filled in as its install step does; node-cache fills the rest at start).
const NODELOCALDNS_COREFILE: &str = "cluster.local:53 {
    errors
    cache {
            success 9984 30
            denial 9984 5
    }
    reload
    loop
    bind 169.254.20.10 10.96.0.10
    forward . __PILLAR__CLUSTER__DNS__ {
            force_tcp
    }
    prometheus :9253
    health 169.254.20.10:8080
    }
in-addr.arpa:53 {
    errors
    cache 30
    reload
    loop
    bind 169.254.20.10 10.96.0.10
    forward . __PILLAR__CLUSTER__DNS__ {
            force_tcp
    }
    prometheus :9253
    }
ip6.arpa:53 {
    errors
    cache 30
    reload
    loop
    bind 169.254.20.10 10.96.0.10
    forward . __PILLAR__CLUSTER__DNS__ {
            force_tcp
    }
    prometheus :9253
    }
.:53 {
    errors
    cache 30
    reload
    loop
    bind 169.254.20.10 10.96.0.10
    forward . __PILLAR__UPSTREAM__SERVERS__
    prometheus :9253
    }
";

#[test]
fn nodelocal_dnscaches_corefile_translates_into_node_local_mode() {
    let t = translate("Corefile", NODELOCALDNS_COREFILE).unwrap();
    assert!(t.untranslated.is_empty(), "{:?}", t.untranslated);
    let config = Config::parse("t", &t.toml).unwrap();
    let n = &config.node_local;
    assert!(n.enabled);
    assert!(n.forwards_cluster_names(), "{}", t.toml);
    assert_eq!(
        n.addresses,
        [
            "169.254.20.10".parse::<std::net::IpAddr>().unwrap(),
            "10.96.0.10".parse().unwrap()
        ]
    );
    // node-cache's __PILLAR__CLUSTER__DNS__: the kube-dns-upstream Service.
    assert!(n.cluster_upstreams.is_empty());
    assert_eq!(n.upstream_service, "kube-dns-upstream");
    assert_eq!(
        config.dns.zones,
        ["cluster.local", "in-addr.arpa", "ip6.arpa"]
    );
    assert_eq!(
        config.dns.listen,
        [
            "169.254.20.10:53".parse::<std::net::SocketAddr>().unwrap(),
            "10.96.0.10:53".parse().unwrap()
        ]
    );
    assert_eq!(
        config
            .forward
            .to
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["/etc/resolv.conf"]
    );
    // The root block's `cache 30`, with the cluster block's shorter
    // denial cap: kubewire has one cache, and no answer outlives its block.
    assert_eq!(config.cache.max_ttl_s, 30);
    assert_eq!(config.cache.denial_max_ttl_s, 5);
    assert_eq!(
        config.http.metrics_addr.0,
        Some("0.0.0.0:9253".parse().unwrap())
    );
    assert_eq!(
        config.http.health_addr.0,
        Some("169.254.20.10:8080".parse().unwrap())
    );
}

#[test]
fn one_tls_servername_serves_every_tls_upstream() {
    let t = translate(
        "Corefile",
        ".:53 {\n  forward . tls://1.1.1.1 tls://1.0.0.1 {\n    tls_servername cloudflare-dns.com\n  }\n}\n\
         corp.example:53 {\n  forward . tls://192.0.2.1%dns.corp.example\n}\n",
    )
    .unwrap();
    let config = Config::parse("t", &t.toml).unwrap();
    assert_eq!(config.forward.tls_servername, "cloudflare-dns.com");
    // The stub domain's own name differs: kubewire has one, so it says so.
    assert_eq!(t.untranslated.len(), 1, "{:?}", t.untranslated);
    assert!(
        t.untranslated[0].contains("dns.corp.example"),
        "{:?}",
        t.untranslated
    );
}

#[test]
fn a_node_local_corefile_with_its_cluster_address_and_bind_placeholders() {
    let text = NODELOCALDNS_COREFILE
        .replacen("__PILLAR__CLUSTER__DNS__", "10.96.0.11", 3)
        .replace(
            "bind 169.254.20.10 10.96.0.10",
            "bind __PILLAR__LOCAL__DNS__ __PILLAR__DNS__SERVER__",
        );
    let t = translate("Corefile", &text).unwrap();
    let config = Config::parse("t", &t.toml).unwrap();
    assert_eq!(
        config
            .node_local
            .cluster_upstreams
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["10.96.0.11"]
    );
    assert_eq!(
        config.node_local.addresses,
        ["169.254.20.10".parse::<std::net::IpAddr>().unwrap()]
    );
    // kube-dns's ClusterIP cannot be known: said, once per block.
    assert_eq!(t.untranslated.len(), 4, "{:?}", t.untranslated);
    assert!(
        t.untranslated[0].contains("__PILLAR__DNS__SERVER__")
            && t.untranslated[0].contains("ClusterIP"),
        "{:?}",
        t.untranslated
    );
}

#[test]
fn a_tls_block_serves_dns_over_tls_from_the_first_blocks_answers() {
    let t = translate(
        "Corefile",
        ".:53 {\n  errors\n  kubernetes cluster.local\n  forward . 192.0.2.53\n  cache 30\n}\n\
         tls://.:853 {\n  tls /etc/tls/tls.crt /etc/tls/tls.key /etc/tls/ca.crt {\n    client_auth require_and_verify\n  }\n  errors\n  kubernetes cluster.local\n  forward . 192.0.2.53\n  cache 30\n}\n",
    )
    .unwrap();
    assert!(t.untranslated.is_empty(), "{:?}", t.untranslated);
    let config = Config::parse("t", &t.toml).unwrap();
    assert_eq!(config.tls.listen, ["0.0.0.0:853".parse().unwrap()]);
    assert_eq!(config.tls.cert_file, "/etc/tls/tls.crt");
    assert_eq!(config.tls.key_file, "/etc/tls/tls.key");
    assert_eq!(config.tls.client_ca_file, "/etc/tls/ca.crt");
    assert!(
        t.toml.contains("# from Corefile:7: tls://.:853"),
        "{}",
        t.toml
    );

    // A CA without client_auth asks nothing, as in CoreDNS; a plugin of the
    // TLS block's own, or a client_auth kubewire lacks, is listed.
    let t = translate(
        "Corefile",
        ".:53 {\n  kubernetes cluster.local\n}\n\
         tls://.:8853 {\n  bind 10.0.0.1\n  tls a.crt a.key ca.crt\n  kubernetes cluster.local\n  rewrite name foo bar\n}\n",
    )
    .unwrap();
    let config = Config::parse("t", &t.toml).unwrap();
    assert_eq!(config.tls.listen, ["10.0.0.1:8853".parse().unwrap()]);
    assert_eq!(config.tls.client_ca_file, "");
    assert_eq!(t.untranslated.len(), 1, "{:?}", t.untranslated);
    assert!(
        t.untranslated[0].contains("rewrite name foo bar"),
        "{:?}",
        t.untranslated
    );
    let t = translate(
        "Corefile",
        ".:53 {\n  kubernetes cluster.local\n}\ntls://.:853 {\n  tls a.crt a.key ca.crt {\n    client_auth verify_if_given\n  }\n}\n",
    )
    .unwrap();
    assert!(
        t.untranslated[0].contains("client_auth verify_if_given"),
        "{:?}",
        t.untranslated
    );

    // Without a certificate there is nothing to serve TLS with.
    let error = translate(
        "Corefile",
        ".:53 {\n  kubernetes cluster.local\n}\ntls://.:853 {\n  kubernetes cluster.local\n}\n",
    )
    .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("Corefile:4: tls://.:853: a tls:// or https:// block without `tls CERT KEY`"),
        "{error}"
    );
}

#[test]
fn an_https_block_serves_dns_over_https_with_the_same_certificate() {
    let t = translate(
        "Corefile",
        ".:53 {\n  kubernetes cluster.local\n}\n\
         tls://.:853 {\n  tls /etc/tls/tls.crt /etc/tls/tls.key\n  kubernetes cluster.local\n}\n\
         https://.:443 {\n  tls /etc/tls/tls.crt /etc/tls/tls.key\n  kubernetes cluster.local\n}\n",
    )
    .unwrap();
    assert!(t.untranslated.is_empty(), "{:?}", t.untranslated);
    let config = Config::parse("t", &t.toml).unwrap();
    assert_eq!(config.tls.listen, ["0.0.0.0:853".parse().unwrap()]);
    assert_eq!(config.tls.https_listen, ["0.0.0.0:443".parse().unwrap()]);
    assert_eq!(config.tls.cert_file, "/etc/tls/tls.crt");
    // Another certificate for HTTPS: kubewire has one.
    let t = translate(
        "Corefile",
        ".:53 {\n  kubernetes cluster.local\n}\n\
         tls://.:853 {\n  tls a.crt a.key\n}\nhttps://.:8443 {\n  tls b.crt b.key\n}\n",
    )
    .unwrap();
    let config = Config::parse("t", &t.toml).unwrap();
    assert_eq!(config.tls.https_listen, ["0.0.0.0:8443".parse().unwrap()]);
    assert_eq!(config.tls.cert_file, "a.crt");
    assert_eq!(t.untranslated.len(), 1, "{:?}", t.untranslated);
    assert!(
        t.untranslated[0].contains("one certificate"),
        "{:?}",
        t.untranslated
    );
    // Two tls:// blocks (IPv4 and IPv6 binds): both addresses.
    let t = translate(
        "Corefile",
        ".:53 {\n  kubernetes cluster.local\n}\n\
         tls://.:853 {\n  bind 10.0.0.1\n  tls a.crt a.key\n}\ntls://.:853 {\n  bind fd00::1\n  tls a.crt a.key\n}\n",
    )
    .unwrap();
    let config = Config::parse("t", &t.toml).unwrap();
    assert_eq!(
        config.tls.listen,
        [
            "10.0.0.1:853".parse().unwrap(),
            "[fd00::1]:853".parse().unwrap()
        ]
    );
}

#[test]
fn dnstap_translates_with_its_fields() {
    let t = translate(
        "Corefile",
        ".:53 {\n  kubernetes cluster.local\n  dnstap unix:///var/run/tap.sock full {\n    identity node-1\n    version v1\n    extra rack 4\n  }\n}\n",
    )
    .unwrap();
    assert!(t.untranslated.is_empty(), "{:?}", t.untranslated);
    let config = Config::parse("t", &t.toml).unwrap();
    assert_eq!(config.dnstap.to, "unix:///var/run/tap.sock");
    assert!(config.dnstap.full);
    assert_eq!(config.dnstap.identity, "node-1");
    assert_eq!(config.dnstap.extra, "rack 4");
    // A host name, or TLS to the collector: not kubewire's.
    let t = translate("Corefile", ".:53 {\n  dnstap tcp://collector:6000\n}\n").unwrap();
    assert_eq!(t.untranslated.len(), 1, "{:?}", t.untranslated);
    assert!(translate("Corefile", ".:53 {\n  dnstap a b c\n}\n").is_err());
    // A bare path is a Unix socket, as in CoreDNS's first example.
    let t = translate(
        "Corefile",
        ".:53 {\n  dnstap /tmp/dnstap.sock full 1024 2048\n}\n",
    )
    .unwrap();
    let config = Config::parse("t", &t.toml).unwrap();
    assert_eq!(config.dnstap.to, "/tmp/dnstap.sock");
    assert_eq!(t.untranslated.len(), 1, "{:?}", t.untranslated);
}
