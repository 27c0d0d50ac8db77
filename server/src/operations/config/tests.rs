//! The configuration's tests: the documented keys match the defaults, the
//! printed config parses back, and bad values give their line and key.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use super::*;
use reference::*;

#[test]
fn every_setting_is_documented_and_every_documented_setting_exists() {
    let keys: Vec<String> = Config::default().flatten().into_keys().collect();
    let mut documented: Vec<String> = KEYS.iter().map(|s| s.key.to_string()).collect();
    documented.sort();
    // An empty string or list still serializes, so every key appears.
    assert_eq!(keys, documented);
}

#[test]
fn the_printed_default_parses_back_to_the_default() {
    let text = Config::default().to_documented_toml();
    assert_eq!(Config::parse("printed", &text).unwrap(), Config::default());
}

#[test]
fn errors_keep_their_causes() {
    use std::error::Error;
    let missing = Config::load(std::path::Path::new("/nonexistent/kubewire.toml")).unwrap_err();
    assert!(
        missing
            .to_string()
            .contains("check the path given to --config")
    );
    let cause = missing.source().expect("the read error is kept");
    let io = cause.downcast_ref::<ConfigCause>().unwrap();
    assert!(matches!(io, ConfigCause::Read(e) if e.kind() == std::io::ErrorKind::NotFound));
    let syntax = Config::parse("k.toml", "[dns\n").unwrap_err();
    assert!(matches!(
        syntax
            .source()
            .and_then(|c| c.downcast_ref::<ConfigCause>()),
        Some(ConfigCause::Toml(_))
    ));
    // A chain tells each cause once.
    for error in [&missing, &syntax] {
        assert_eq!(
            crate::operations::failure::Chain(error).to_string(),
            error.to_string()
        );
    }
    let typed = Config::parse("k.toml", "[dns]\nttl_seconds = \"x\"\n").unwrap_err();
    assert!(
        typed.to_string().starts_with("k.toml:2: dns.ttl_seconds:"),
        "{typed}"
    );
    assert!(typed.source().is_some());
    // A rule of kubewire's own has no cause below it.
    let rule = Config::parse("k.toml", "[dns]\nttl_seconds = 4000\n").unwrap_err();
    assert!(rule.source().is_none());
}

#[test]
fn an_empty_file_is_the_default() {
    assert_eq!(Config::parse("empty", "").unwrap(), Config::default());
}

#[test]
fn errors_name_the_line_the_key_and_what_is_allowed() {
    let error = Config::parse("k.toml", "[dns]\nlisten = [\"127.0.0.1:53\"]\nttl = 30\n")
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "k.toml:3: unknown key \"dns.ttl\"; did you mean \"dns.ttl_seconds\"? \
         The keys of [dns] are: listen, cores, zones, ttl_seconds, udp_io"
    );
    let error = Config::parse("k.toml", "[kubernetes]\n\npods = \"strict\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("k.toml:3: kubernetes.pods: pod mode \"strict\" is not one of"),
        "{error}"
    );
    let error = Config::parse("k.toml", "[dns]\nttl_seconds = 7200\n")
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "k.toml:2: dns.ttl_seconds: 7200 is too large (allowed: 0 to 3600)"
    );
    let error = Config::parse("k.toml", "[dns]\nttl_seconds = \"5\"\n")
        .unwrap_err()
        .to_string();
    assert!(error.starts_with("k.toml:2: dns.ttl_seconds: "), "{error}");
    let error = Config::parse("k.toml", "[lifecycle]\nlameduck = 5\n")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("did you mean \"lifecycle.lameduck_ms\""),
        "{error}"
    );
    let error = Config::parse("k.toml", "[metrics]\naddr = \":9153\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("k.toml:1: unknown section \"metrics\""),
        "{error}"
    );
    let error = Config::parse("k.toml", "[dns\n").unwrap_err().to_string();
    assert!(error.starts_with("k.toml:1: not valid TOML"), "{error}");
}

#[test]
fn k8s_external_settings_are_checked() {
    let config = Config::parse(
        "k.toml",
        "[k8s_external]\nzones = [\"Example.org\", \"in-addr.arpa\"]\nheadless = true\n",
    )
    .unwrap();
    let settings = config.k8s_external.settings().unwrap();
    assert_eq!(settings.forward_zones().count(), 1);
    assert_eq!(settings.reverse_zones().count(), 1);
    assert_eq!(&*settings.apex, b"dns");
    assert!(Config::default().k8s_external.settings().is_none());
    for (text, want) in [
        (
            "[k8s_external]\nzones = [\"cluster.local\"]\n",
            "k.toml:2: k8s_external.zones: \"cluster.local\" is also a cluster zone (dns.zones)",
        ),
        (
            "[k8s_external]\nzones = [\"example.org\"]\napex = \"ns.dns\"\n",
            "k.toml:3: k8s_external.apex: \"ns.dns\" is not one DNS label",
        ),
        (
            "[k8s_external]\nzones = [\"example.org\"]\n\nttl_seconds = 4000\n",
            "k.toml:4: k8s_external.ttl_seconds: 4000 is too large",
        ),
        (
            "[k8s_external]\nfallthrough = [\"a..b\"]\n",
            "k.toml:2: k8s_external.fallthrough: \"a..b\" is not a DNS name",
        ),
    ] {
        let error = Config::parse("k.toml", text).unwrap_err().to_string();
        assert!(error.starts_with(want), "{error}");
    }
}

#[test]
fn multicluster_zones_must_be_served_zones() {
    let config = Config::parse(
        "k.toml",
        "[dns]\nzones = [\"cluster.local\", \"ClusterSet.local\"]\n[kubernetes]\nmulticluster = [\"clusterset.local\"]\n",
    )
    .unwrap();
    assert_eq!(config.kubernetes.multicluster, ["clusterset.local"]);
    let error = Config::parse(
        "k.toml",
        "[kubernetes]\nmulticluster = [\"clusterset.local\"]\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.starts_with("k.toml:2: kubernetes.multicluster: \"clusterset.local\" is not one of dns.zones; add it there too"),
        "{error}"
    );
}

#[test]
fn changed_keys_lists_what_differs() {
    let mut other = Config::default();
    other.dns.ttl_seconds = 30;
    other.dns.listen = vec!["0.0.0.0:53".parse().unwrap()];
    assert_eq!(
        Config::default().changed_keys(&other),
        vec!["dns.listen", "dns.ttl_seconds"]
    );
}

#[test]
fn corefile_style_addresses_are_accepted() {
    let config = Config::parse(
        "k.toml",
        "[http]\nmetrics_addr = \":9153\"\nready_addr = \"\"\n",
    )
    .unwrap();
    assert_eq!(
        config.http.metrics_addr.0,
        Some("0.0.0.0:9153".parse().unwrap())
    );
    assert_eq!(config.http.ready_addr.0, None);
}

#[test]
fn a_tls_servername_that_is_no_name_is_refused_at_load() {
    let error = Config::parse("k.toml", "[forward]\ntls_servername = \"not a name!\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("k.toml:2: forward.tls_servername: \"not a name!\" is not a DNS name"),
        "{error}"
    );
    let upstream = Config::parse("k.toml", "[forward]\nto = [\"/nonexistent/resolv.conf\"]\n")
        .unwrap_err()
        .to_string();
    // The OS's reason stays in the words.
    assert!(upstream.contains("No such file or directory"), "{upstream}");
}

#[test]
fn a_stub_domain_written_twice_is_refused_not_merged() {
    let error = Config::parse(
        "k.toml",
        "[forward]\nstub_domains = { \"Corp.example\" = [\"192.0.2.1\"], \"corp.example.\" = [\"192.0.2.2\"] }\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("are the same zone; give its upstreams once"),
        "{error}"
    );
}
