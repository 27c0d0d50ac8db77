//! CoreDNS's `k8s_external`: Services' external addresses in zones of
//! their own, with the apex's SOA and NS.

use super::common::{self, *};
use kubewire_answer::{ExternalZones, Object, Settings};
use kubewire_wire::NameBuf;

/// The external zone's SOA as the authority of a negative answer.
const EXTERNAL_SOA: &str = "example.com. 5 SOA ns1.dns.example.com. hostmaster.dns.example.com.";

/// CoreDNS's `k8s_external` tests' services, in `example.com` (and
/// `in-addr.arpa` for PTR), with `headless`.
fn external_tester(external: Option<ExternalZones>) -> Tester {
    tester(external_settings(external), external_objects())
}

/// The settings of [`external_tester`]: kubewire's own pod is the one the
/// `kube-dns` Service fronts.
fn external_settings(external: Option<ExternalZones>) -> Settings {
    Settings {
        external,
        own_ips: common::ips(&["10.244.0.10"]),
        ..Settings::default()
    }
}

fn external_zones(zones: &[&str]) -> ExternalZones {
    ExternalZones {
        zones: zones
            .iter()
            .map(|z| NameBuf::from_text(z).unwrap())
            .collect(),
        headless: true,
        ..ExternalZones::default()
    }
}

#[test]
fn k8s_external_answers_external_addresses_in_their_own_zone() {
    let mut t = external_tester(Some(external_zones(&["example.com", "in-addr.arpa"])));
    let soa = &[EXTERNAL_SOA][..];
    t.check(
        "svc1.testns.example.com",
        "A",
        "NOERROR",
        &["svc1.testns.example.com. 5 A 1.2.3.4"],
        &[],
        &[],
    );
    // The client's case is echoed, as everywhere.
    t.check(
        "SVC1.TestNS.Example.COM",
        "A",
        "NOERROR",
        &["SVC1.TestNS.Example.COM. 5 A 1.2.3.4"],
        &[],
        &[],
    );
    // As CoreDNS's `k8s_external`: a port's name answers the addresses too.
    t.check(
        "_http._tcp.svc1.testns.example.com",
        "A",
        "NOERROR",
        &["_http._tcp.svc1.testns.example.com. 5 A 1.2.3.4"],
        &[],
        &[],
    );
    for name in [
        "svc1.testns.example.com",
        "_http._tcp.svc1.testns.example.com",
    ] {
        t.check(
            name,
            "SRV",
            "NOERROR",
            &[&format!("{name}. 5 SRV 0 100 80 svc1.testns.example.com.")],
            &[],
            &["svc1.testns.example.com. 5 A 1.2.3.4"],
        );
    }
    // A type it lacks: NODATA with the external zone's SOA.
    t.check("svc1.testns.example.com", "AAAA", "NOERROR", &[], soa, &[]);
    t.check("svc1.testns.example.com", "PTR", "NOERROR", &[], soa, &[]);
    t.check(
        "svc6.testns.example.com",
        "AAAA",
        "NOERROR",
        &["svc6.testns.example.com. 5 AAAA 1:2::5"],
        &[],
        &[],
    );
    t.check(
        "_http._tcp.svc6.testns.example.com",
        "SRV",
        "NOERROR",
        &["_http._tcp.svc6.testns.example.com. 5 SRV 0 100 80 svc6.testns.example.com."],
        &[],
        &["svc6.testns.example.com. 5 AAAA 1:2::5"],
    );
    t.check(
        "svc11.testns.example.com",
        "A",
        "NOERROR",
        &["svc11.testns.example.com. 5 A 2.3.4.5"],
        &[],
        &[],
    );
    // A load balancer known by hostname: a CNAME (which the server chases),
    // and SRV records that target the hostname.
    let (response, _) = t.ask("svc12.testns.example.com", "A");
    assert!(
        matches!(
            response,
            kubewire_answer::Response::Reply { chase: true, .. }
        ),
        "{response:?}"
    );
    t.check(
        "svc12.testns.example.com",
        "A",
        "NOERROR",
        &["svc12.testns.example.com. 5 CNAME dummy.hostname."],
        &[],
        &[],
    );
    t.check(
        "_http._tcp.svc12.testns.example.com",
        "SRV",
        "NOERROR",
        &["_http._tcp.svc12.testns.example.com. 5 SRV 0 100 80 dummy.hostname."],
        &[],
        &[],
    );
    t.check(
        "noports.testns.example.com",
        "A",
        "NOERROR",
        &["noports.testns.example.com. 5 A 5.6.7.8"],
        &[],
        &[],
    );
    t.check(
        "noports.testns.example.com",
        "SRV",
        "NOERROR",
        &[],
        soa,
        &[],
    );
    // Never the cluster IP: a Service without external addresses, an
    // unknown one, an unknown namespace, a name too deep.
    for name in [
        "internal.testns.example.com",
        "svc0.testns.example.com",
        "svc1.nons.example.com",
        "*._not-udp-or-tcp.svc1.testns.example.com",
        "_https._tcp.svc1.testns.example.com",
    ] {
        t.check(name, "A", "NXDOMAIN", &[], soa, &[]);
    }
    // A namespace that exists is an empty non-terminal.
    t.check("testns.example.com", "A", "NOERROR", &[], soa, &[]);

    // `headless`: endpoints, ready ones alone, with names of their own.
    t.check(
        "svc-headless.testns.example.com",
        "A",
        "NOERROR",
        &[
            "svc-headless.testns.example.com. 5 A 1.2.3.14",
            "svc-headless.testns.example.com. 5 A 1.2.3.15",
        ],
        &[],
        &[],
    );
    for name in [
        "svc-headless.testns.example.com",
        "_http._tcp.svc-headless.testns.example.com",
    ] {
        t.check(
            name,
            "SRV",
            "NOERROR",
            &[
                &format!("{name}. 5 SRV 0 50 80 endpoint-svc-0.svc-headless.testns.example.com."),
                &format!("{name}. 5 SRV 0 50 80 endpoint-svc-1.svc-headless.testns.example.com."),
            ],
            &[],
            &[
                "endpoint-svc-0.svc-headless.testns.example.com. 5 A 1.2.3.14",
                "endpoint-svc-1.svc-headless.testns.example.com. 5 A 1.2.3.15",
            ],
        );
    }
    t.check(
        "endpoint-svc-0.svc-headless.testns.example.com",
        "SRV",
        "NOERROR",
        &["endpoint-svc-0.svc-headless.testns.example.com. 5 SRV 0 100 80 endpoint-svc-0.svc-headless.testns.example.com."],
        &[],
        &["endpoint-svc-0.svc-headless.testns.example.com. 5 A 1.2.3.14"],
    );
    t.check(
        "endpoint-svc-1.svc-headless.testns.example.com",
        "A",
        "NOERROR",
        &["endpoint-svc-1.svc-headless.testns.example.com. 5 A 1.2.3.15"],
        &[],
        &[],
    );
    t.check(
        "not-ready.svc-headless.testns.example.com",
        "A",
        "NXDOMAIN",
        &[],
        soa,
        &[],
    );

    // PTR, with a reverse zone listed: the external IP points at the
    // Service's external name; an address no one owns is NXDOMAIN.
    t.check(
        "4.3.2.1.in-addr.arpa",
        "PTR",
        "NOERROR",
        &["4.3.2.1.in-addr.arpa. 5 PTR svc1.testns.example.com."],
        &[],
        &[],
    );
    assert_eq!(
        t.outcome("9.9.9.9.in-addr.arpa", "PTR"),
        Outcome::Rcode("NXDOMAIN".into())
    );
    // Cluster names are as they were: the cluster IP, never the external.
    t.check(
        "svc1.testns.svc.cluster.local",
        "A",
        "NOERROR",
        &["svc1.testns.svc.cluster.local. 5 A 10.0.0.1"],
        &[],
        &[],
    );
}

#[test]
fn k8s_external_apex_answers_soa_ns_and_the_name_servers_external_address() {
    let mut t = external_tester(Some(external_zones(&["example.com"])));
    let soa = &[EXTERNAL_SOA][..];
    t.check("example.com", "SOA", "NOERROR", &[EXTERNAL_SOA], &[], &[]);
    t.check(
        "example.com",
        "NS",
        "NOERROR",
        &["example.com. 5 NS ns1.dns.example.com."],
        &[],
        &["ns1.dns.example.com. 5 A 192.0.2.53"],
    );
    t.check("example.com", "SRV", "NOERROR", &[], soa, &[]);
    t.check("dns.example.com", "NS", "NOERROR", &[], soa, &[]);
    t.check(
        "ns1.dns.example.com",
        "A",
        "NOERROR",
        &["ns1.dns.example.com. 5 A 192.0.2.53"],
        &[],
        &[],
    );
    t.check("ns1.dns.example.com", "AAAA", "NOERROR", &[], soa, &[]);
    t.check("ns2.dns.example.com", "A", "NXDOMAIN", &[], soa, &[]);
    // Without a reverse zone listed, external IPs have no PTR of ours.
    assert_eq!(t.outcome("4.3.2.1.in-addr.arpa", "PTR"), Outcome::NotOurs);
}

/// A namespace named like the apex: its Services' names would lie under
/// `dns.<zone>`, where CoreDNS answers only the name server and NXDOMAIN
/// for every other name. A Service named `ns1` there must not add its
/// addresses to the name server's.
#[test]
fn k8s_external_services_in_a_namespace_named_like_the_apex_have_no_names() {
    let http = || vec![port("http", "tcp", 80)];
    let mut objects = external_objects();
    objects.extend([
        Object::Namespace("dns".into()),
        with_external(
            cluster_ip("dns", "ns1", &["10.0.0.20"], http()),
            &["198.51.100.1"],
            &[],
        ),
        with_external(
            cluster_ip("dns", "web", &["10.0.0.21"], http()),
            &["198.51.100.2"],
            &[],
        ),
    ]);
    let mut t = tester(
        external_settings(Some(external_zones(&["example.com"]))),
        objects,
    );
    let soa = &[EXTERNAL_SOA][..];
    t.check(
        "ns1.dns.example.com",
        "A",
        "NOERROR",
        &["ns1.dns.example.com. 5 A 192.0.2.53"],
        &[],
        &[],
    );
    t.check("ns1.dns.example.com", "SRV", "NOERROR", &[], soa, &[]);
    t.check("web.dns.example.com", "A", "NXDOMAIN", &[], soa, &[]);
    t.check(
        "_http._tcp.web.dns.example.com",
        "SRV",
        "NXDOMAIN",
        &[],
        soa,
        &[],
    );
    // In the cluster zone they answer as ever.
    t.check(
        "web.dns.svc.cluster.local",
        "A",
        "NOERROR",
        &["web.dns.svc.cluster.local. 5 A 10.0.0.21"],
        &[],
        &[],
    );
}

#[test]
fn k8s_external_apex_ttl_and_fallthrough_are_configurable() {
    let mut t = external_tester(Some(ExternalZones {
        apex: (*b"ext").into(),
        ttl: 60,
        fallthrough: vec![NameBuf::ROOT],
        ..external_zones(&["example.com"])
    }));
    t.check(
        "example.com",
        "NS",
        "NOERROR",
        &["example.com. 60 NS ns1.ext.example.com."],
        &[],
        &["ns1.ext.example.com. 60 A 192.0.2.53"],
    );
    t.check(
        "svc1.testns.example.com",
        "A",
        "NOERROR",
        &["svc1.testns.example.com. 60 A 1.2.3.4"],
        &[],
        &[],
    );
    // NODATA stays ours; only a name no Service answers goes on.
    t.check(
        "svc1.testns.example.com",
        "AAAA",
        "NOERROR",
        &[],
        &["example.com. 60 SOA ns1.ext.example.com. hostmaster.ext.example.com."],
        &[],
    );
    assert_eq!(t.outcome("svc0.testns.example.com", "A"), Outcome::NotOurs);
    // The cluster zone's TTL is its own.
    t.check(
        "svc1.testns.svc.cluster.local",
        "A",
        "NOERROR",
        &["svc1.testns.svc.cluster.local. 5 A 10.0.0.1"],
        &[],
        &[],
    );
}

#[test]
fn k8s_external_off_serves_no_external_zone() {
    let mut t = external_tester(None);
    assert_eq!(t.outcome("svc1.testns.example.com", "A"), Outcome::NotOurs);
    assert_eq!(t.outcome("example.com", "SOA"), Outcome::NotOurs);
    // Without `headless`, a headless Service has no external names.
    let mut t = external_tester(Some(ExternalZones {
        headless: false,
        ..external_zones(&["example.com"])
    }));
    assert_eq!(
        t.outcome("svc-headless.testns.example.com", "A"),
        Outcome::Rcode("NXDOMAIN".into())
    );
}
