//! Conformance table: cluster objects in, DNS answers out (RCODE and every
//! section), through the real compiler, a core's table and `respond`, with
//! replies parsed by hickory-proto. The fixture follows the CoreDNS
//! `kubernetes` plugin's handler tests (services svc1, svc6, hdls1, ...).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;
mod k8s_external;
mod multicluster;
mod settings_change;

use common::*;
use kubewire_answer::{PodMode, Settings};

#[test]
fn service_records() {
    let mut t = fixture(Settings::default());
    t.check(
        "svc1.testns.svc.cluster.local",
        "A",
        "NOERROR",
        &["svc1.testns.svc.cluster.local. 5 A 10.0.0.1"],
        &[],
        &[],
    );
    // A ClusterIP service answers whether or not it has endpoints.
    t.check(
        "svcempty.testns.svc.cluster.local",
        "A",
        "NOERROR",
        &["svcempty.testns.svc.cluster.local. 5 A 10.0.0.1"],
        &[],
        &[],
    );
    t.check(
        "svc6.testns.svc.cluster.local",
        "AAAA",
        "NOERROR",
        &["svc6.testns.svc.cluster.local. 5 AAAA 1234:abcd::1"],
        &[],
        &[],
    );
    t.check(
        "svc-dual-stack.testns.svc.cluster.local",
        "A",
        "NOERROR",
        &["svc-dual-stack.testns.svc.cluster.local. 5 A 10.0.0.3"],
        &[],
        &[],
    );
    t.check(
        "svc-dual-stack.testns.svc.cluster.local",
        "AAAA",
        "NOERROR",
        &["svc-dual-stack.testns.svc.cluster.local. 5 AAAA 10::3"],
        &[],
        &[],
    );
    // A service queried for a type it lacks: NODATA with the SOA.
    for qtype in ["AAAA", "TXT", "MX", "SOA", "PTR"] {
        t.check(
            "svc1.testns.svc.cluster.local",
            qtype,
            "NOERROR",
            &[],
            &[SOA],
            &[],
        );
    }
    // Case-insensitive match, and the owner echoes the client's case.
    t.check(
        "SvC1.TeStNs.SvC.cLuStEr.LoCaL",
        "A",
        "NOERROR",
        &["SvC1.TeStNs.SvC.cLuStEr.LoCaL. 5 A 10.0.0.1"],
        &[],
        &[],
    );
}

#[test]
fn ignore_empty_service_hides_clusterip_services_without_ready_endpoints() {
    let mut t = fixture(Settings {
        ignore_empty_service: true,
        ..Settings::default()
    });
    // An endpoint-less ClusterIP service, and one without slices: NXDOMAIN,
    // names below them too.
    for name in [
        "svcempty.testns.svc.cluster.local",
        "svc6.testns.svc.cluster.local",
        "_http._tcp.svcempty.testns.svc.cluster.local",
    ] {
        t.check(name, "A", "NXDOMAIN", &[], &[SOA], &[]);
    }
    // With a ready endpoint: answered as always.
    t.check(
        "svc1.testns.svc.cluster.local",
        "A",
        "NOERROR",
        &["svc1.testns.svc.cluster.local. 5 A 10.0.0.1"],
        &[],
        &[],
    );
    // Its cluster IP's PTR stays (CoreDNS's reverse lookup does not look
    // at endpoints).
    t.check(
        "1.0.0.10.in-addr.arpa",
        "PTR",
        "NOERROR",
        &[
            "1.0.0.10.in-addr.arpa. 5 PTR svc1.testns.svc.cluster.local.",
            "1.0.0.10.in-addr.arpa. 5 PTR svcempty.testns.svc.cluster.local.",
        ],
        &[],
        &[],
    );
    // Headless and ExternalName services are not touched.
    t.check(
        "hdls1.testns.svc.cluster.local",
        "A",
        "NOERROR",
        &[
            "hdls1.testns.svc.cluster.local. 5 A 172.0.0.2",
            "hdls1.testns.svc.cluster.local. 5 A 172.0.0.3",
            "hdls1.testns.svc.cluster.local. 5 A 172.0.0.4",
            "hdls1.testns.svc.cluster.local. 5 A 172.0.0.5",
        ],
        &[],
        &[],
    );
}

/// A headless service with endpoints in two zones and one without a zone,
/// and a ClusterIP service, for `zonal`.
fn zonal_tester(zonal: bool) -> Tester {
    let objects = zonal_objects();
    let settings = Settings {
        zonal,
        ..Settings::default()
    };
    tester(settings, objects)
}

#[test]
fn zonal_names_answer_a_headless_services_endpoints_in_one_topology_zone() {
    let mut t = zonal_tester(true);
    let web = "web.z.svc.cluster.local";
    // pin: the ready endpoints in the zone (zones match without case).
    t.check(
        &format!("ZONE-a.pin._zone.{web}"),
        "A",
        "NOERROR",
        &[
            &format!("ZONE-a.pin._zone.{web}. 5 A 10.1.0.1"),
            &format!("ZONE-a.pin._zone.{web}. 5 A 10.1.0.2"),
        ],
        &[],
        &[],
    );
    // A zone of several labels.
    t.check(
        &format!("corp.zone-b.prefer._zone.{web}"),
        "A",
        "NOERROR",
        &[&format!("corp.zone-b.prefer._zone.{web}. 5 A 10.1.0.3")],
        &[],
        &[],
    );
    // SRV: the zone's endpoints, by their ordinary names, with glue.
    t.check(
        &format!("zone-a.pin._zone.{web}"),
        "SRV",
        "NOERROR",
        &[
            &format!("zone-a.pin._zone.{web}. 5 SRV 0 50 80 a1.{web}."),
            &format!("zone-a.pin._zone.{web}. 5 SRV 0 50 80 a2.{web}."),
        ],
        &[],
        &[
            &format!("a1.{web}. 5 A 10.1.0.1"),
            &format!("a2.{web}. 5 A 10.1.0.2"),
        ],
    );
    // No endpoint in the zone: pin is NODATA, prefer is every endpoint.
    t.check(
        &format!("zone-c.pin._zone.{web}"),
        "A",
        "NOERROR",
        &[],
        &[SOA],
        &[],
    );
    let all: Vec<String> = ["10.1.0.1", "10.1.0.2", "10.1.0.3", "10.1.0.4"]
        .iter()
        .map(|ip| format!("zone-c.prefer._zone.{web}. 5 A {ip}"))
        .collect();
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    t.check(
        &format!("zone-c.prefer._zone.{web}"),
        "A",
        "NOERROR",
        &all,
        &[],
        &[],
    );
    // A headless service without endpoints: the names exist, with nothing.
    t.check(
        "zone-a.pin._zone.empty.z.svc.cluster.local",
        "A",
        "NOERROR",
        &[],
        &[SOA],
        &[],
    );
    t.check(
        "zone-a.prefer._zone.empty.z.svc.cluster.local",
        "A",
        "NOERROR",
        &[],
        &[SOA],
        &[],
    );
    // Not for ClusterIP services, unknown directives, or no zone label.
    for name in [
        "zone-a.pin._zone.api.z.svc.cluster.local",
        "zone-a.near._zone.web.z.svc.cluster.local",
        "pin._zone.web.z.svc.cluster.local",
        "zone-a.pin._zone.nosuch.z.svc.cluster.local",
    ] {
        t.check(name, "A", "NXDOMAIN", &[], &[SOA], &[]);
    }
}

#[test]
fn zonal_names_are_nxdomain_without_the_option() {
    let mut t = zonal_tester(false);
    for name in [
        "zone-a.pin._zone.web.z.svc.cluster.local",
        "zone-c.prefer._zone.web.z.svc.cluster.local",
    ] {
        t.check(name, "A", "NXDOMAIN", &[], &[SOA], &[]);
    }
    // The service itself is unchanged.
    assert_eq!(
        t.outcome("web.z.svc.cluster.local", "A"),
        Outcome::Rcode("NOERROR".into())
    );
}

#[test]
fn headless_services() {
    let mut t = fixture(Settings::default());
    t.check(
        "hdls1.testns.svc.cluster.local",
        "A",
        "NOERROR",
        &[
            "hdls1.testns.svc.cluster.local. 5 A 172.0.0.2",
            "hdls1.testns.svc.cluster.local. 5 A 172.0.0.3",
            "hdls1.testns.svc.cluster.local. 5 A 172.0.0.4",
            "hdls1.testns.svc.cluster.local. 5 A 172.0.0.5",
        ],
        &[],
        &[],
    );
    t.check(
        "hdls1.testns.svc.cluster.local",
        "AAAA",
        "NOERROR",
        &[
            "hdls1.testns.svc.cluster.local. 5 AAAA 5678:abcd::1",
            "hdls1.testns.svc.cluster.local. 5 AAAA 5678:abcd::2",
        ],
        &[],
        &[],
    );
    // Only IPv4 endpoints: NODATA for AAAA.
    t.check(
        "hdlsprtls.testns.svc.cluster.local",
        "A",
        "NOERROR",
        &["hdlsprtls.testns.svc.cluster.local. 5 A 172.0.0.20"],
        &[],
        &[],
    );
    t.check(
        "hdlsprtls.testns.svc.cluster.local",
        "AAAA",
        "NOERROR",
        &[],
        &[SOA],
        &[],
    );
    // No ports: SRV is NODATA.
    t.check(
        "hdlsprtls.testns.svc.cluster.local",
        "SRV",
        "NOERROR",
        &[],
        &[SOA],
        &[],
    );
    // No ready endpoints: NXDOMAIN, whatever the type.
    t.check(
        "hdlsnone.testns.svc.cluster.local",
        "A",
        "NXDOMAIN",
        &[],
        &[SOA],
        &[],
    );
    t.check(
        "hdlsnone.testns.svc.cluster.local",
        "SRV",
        "NXDOMAIN",
        &[],
        &[SOA],
        &[],
    );
    // publishNotReadyAddresses publishes the not-ready endpoint.
    t.check(
        "hdlspub.testns.svc.cluster.local",
        "A",
        "NOERROR",
        &["hdlspub.testns.svc.cluster.local. 5 A 172.0.0.31"],
        &[],
        &[],
    );
    // The same endpoint in two slices is one record.
    t.check(
        "dupe.testns.svc.cluster.local",
        "A",
        "NOERROR",
        &["dupe.testns.svc.cluster.local. 5 A 172.0.0.40"],
        &[],
        &[],
    );
    t.check(
        "_http._tcp.dupe.testns.svc.cluster.local",
        "SRV",
        "NOERROR",
        &["_http._tcp.dupe.testns.svc.cluster.local. 5 SRV 0 100 80 172-0-0-40.dupe.testns.svc.cluster.local."],
        &[],
        &["172-0-0-40.dupe.testns.svc.cluster.local. 5 A 172.0.0.40"],
    );
}

#[test]
fn endpoint_names() {
    let mut t = fixture(Settings::default());
    // Endpoint names work for ClusterIP services too.
    t.check(
        "ep1a.svc1.testns.svc.cluster.local",
        "A",
        "NOERROR",
        &["ep1a.svc1.testns.svc.cluster.local. 5 A 172.0.0.1"],
        &[],
        &[],
    );
    t.check(
        "5678-abcd--1.hdls1.testns.svc.cluster.local",
        "AAAA",
        "NOERROR",
        &["5678-abcd--1.hdls1.testns.svc.cluster.local. 5 AAAA 5678:abcd::1"],
        &[],
        &[],
    );
    t.check(
        "172-0-0-20.hdlsprtls.testns.svc.cluster.local",
        "A",
        "NOERROR",
        &["172-0-0-20.hdlsprtls.testns.svc.cluster.local. 5 A 172.0.0.20"],
        &[],
        &[],
    );
    t.check(
        "dup-name.hdls1.testns.svc.cluster.local",
        "A",
        "NOERROR",
        &[
            "dup-name.hdls1.testns.svc.cluster.local. 5 A 172.0.0.4",
            "dup-name.hdls1.testns.svc.cluster.local. 5 A 172.0.0.5",
        ],
        &[],
        &[],
    );
    t.check(
        "bogusendpoint.hdls1.testns.svc.cluster.local",
        "A",
        "NXDOMAIN",
        &[],
        &[SOA],
        &[],
    );
    t.check(
        "bogusendpoint.svc0.testns.svc.cluster.local",
        "A",
        "NXDOMAIN",
        &[],
        &[SOA],
        &[],
    );
    // Not ready, not published.
    t.check(
        "172-0-0-9.hdls1.testns.svc.cluster.local",
        "A",
        "NXDOMAIN",
        &[],
        &[SOA],
        &[],
    );
    // A pod-named endpoint only with endpoint_pod_names.
    t.check(
        "web-7.hdlspod.testns.svc.cluster.local",
        "A",
        "NXDOMAIN",
        &[],
        &[SOA],
        &[],
    );
    t.check(
        "172-0-0-50.hdlspod.testns.svc.cluster.local",
        "A",
        "NOERROR",
        &["172-0-0-50.hdlspod.testns.svc.cluster.local. 5 A 172.0.0.50"],
        &[],
        &[],
    );
    let mut t = fixture(Settings {
        endpoint_pod_names: true,
        ..Settings::default()
    });
    t.check(
        "web-7.hdlspod.testns.svc.cluster.local",
        "A",
        "NOERROR",
        &["web-7.hdlspod.testns.svc.cluster.local. 5 A 172.0.0.50"],
        &[],
        &[],
    );
}

#[test]
fn srv_records() {
    let mut t = fixture(Settings::default());
    let svc1_srv = "svc1.testns.svc.cluster.local. 5 SRV 0 100 80 svc1.testns.svc.cluster.local.";
    let svc1_a = "svc1.testns.svc.cluster.local. 5 A 10.0.0.1";
    t.check(
        "svc1.testns.svc.cluster.local",
        "SRV",
        "NOERROR",
        &[svc1_srv],
        &[],
        &[svc1_a],
    );
    t.check(
        "_http._tcp.svc1.testns.svc.cluster.local",
        "SRV",
        "NOERROR",
        &["_http._tcp.svc1.testns.svc.cluster.local. 5 SRV 0 100 80 svc1.testns.svc.cluster.local."],
        &[],
        &[svc1_a],
    );
    t.check(
        "svc6.testns.svc.cluster.local",
        "SRV",
        "NOERROR",
        &["svc6.testns.svc.cluster.local. 5 SRV 0 100 80 svc6.testns.svc.cluster.local."],
        &[],
        &["svc6.testns.svc.cluster.local. 5 AAAA 1234:abcd::1"],
    );
    // Dual-stack: one target, both families in the additional section.
    t.check(
        "svc-dual-stack.testns.svc.cluster.local",
        "SRV",
        "NOERROR",
        &["svc-dual-stack.testns.svc.cluster.local. 5 SRV 0 100 80 svc-dual-stack.testns.svc.cluster.local."],
        &[],
        &["svc-dual-stack.testns.svc.cluster.local. 5 A 10.0.0.3", "svc-dual-stack.testns.svc.cluster.local. 5 AAAA 10::3"],
    );
    // Headless: one target per endpoint name, weight floor(100/5).
    let hdls = |label: &str| {
        format!(
            "_http._tcp.hdls1.testns.svc.cluster.local. 5 SRV 0 20 80 {label}.hdls1.testns.svc.cluster.local."
        )
    };
    t.check(
        "_http._tcp.hdls1.testns.svc.cluster.local",
        "SRV",
        "NOERROR",
        &[
            &hdls("172-0-0-2"),
            &hdls("172-0-0-3"),
            &hdls("5678-abcd--1"),
            &hdls("5678-abcd--2"),
            &hdls("dup-name"),
        ],
        &[],
        &[
            "172-0-0-2.hdls1.testns.svc.cluster.local. 5 A 172.0.0.2",
            "172-0-0-3.hdls1.testns.svc.cluster.local. 5 A 172.0.0.3",
            "5678-abcd--1.hdls1.testns.svc.cluster.local. 5 AAAA 5678:abcd::1",
            "5678-abcd--2.hdls1.testns.svc.cluster.local. 5 AAAA 5678:abcd::2",
            "dup-name.hdls1.testns.svc.cluster.local. 5 A 172.0.0.4",
            "dup-name.hdls1.testns.svc.cluster.local. 5 A 172.0.0.5",
        ],
    );
    // Two ports: a bare SRV query lists both (N = 2, weight 50).
    let dns_srv = |port: u16| {
        format!(
            "kube-dns.kube-system.svc.cluster.local. 5 SRV 0 50 {port} kube-dns.kube-system.svc.cluster.local."
        )
    };
    t.check(
        "kube-dns.kube-system.svc.cluster.local",
        "SRV",
        "NOERROR",
        &[&dns_srv(53), &dns_srv(9153)],
        &[],
        &["kube-dns.kube-system.svc.cluster.local. 5 A 10.96.0.10"],
    );
    t.check(
        "_dns._udp.kube-dns.kube-system.svc.cluster.local",
        "SRV",
        "NOERROR",
        &["_dns._udp.kube-dns.kube-system.svc.cluster.local. 5 SRV 0 100 53 kube-dns.kube-system.svc.cluster.local."],
        &[],
        &["kube-dns.kube-system.svc.cluster.local. 5 A 10.96.0.10"],
    );
    // Unknown port or protocol: NXDOMAIN. `_tcp.<svc>` exists (it has names
    // below it), so it is NODATA: an NXDOMAIN there would tell RFC 8020
    // resolvers that `_http._tcp.<svc>` cannot exist either.
    t.check(
        "_https._tcp.svc1.testns.svc.cluster.local",
        "SRV",
        "NXDOMAIN",
        &[],
        &[SOA],
        &[],
    );
    t.check(
        "_http._udp.svc1.testns.svc.cluster.local",
        "SRV",
        "NXDOMAIN",
        &[],
        &[SOA],
        &[],
    );
    t.check(
        "_tcp.svc1.testns.svc.cluster.local",
        "SRV",
        "NOERROR",
        &[],
        &[SOA],
        &[],
    );
}

#[test]
fn external_name() {
    let mut t = fixture(Settings::default());
    let cname = "external.testns.svc.cluster.local. 5 CNAME ext.interwebs.test.";
    for qtype in ["CNAME", "A", "AAAA"] {
        t.check(
            "external.testns.svc.cluster.local",
            qtype,
            "NOERROR",
            &[cname],
            &[],
            &[],
        );
    }
    t.check(
        "endpoint.external.testns.svc.cluster.local",
        "CNAME",
        "NXDOMAIN",
        &[],
        &[SOA],
        &[],
    );
    t.check(
        "sub.sub.external.testns.svc.cluster.local",
        "A",
        "NXDOMAIN",
        &[],
        &[SOA],
        &[],
    );
}

#[test]
fn ptr_records() {
    let mut t = fixture(Settings::default());
    // Two services on one ClusterIP: two PTRs.
    t.check(
        "1.0.0.10.in-addr.arpa",
        "PTR",
        "NOERROR",
        &[
            "1.0.0.10.in-addr.arpa. 5 PTR svc1.testns.svc.cluster.local.",
            "1.0.0.10.in-addr.arpa. 5 PTR svcempty.testns.svc.cluster.local.",
        ],
        &[],
        &[],
    );
    t.check(
        "1.0.0.172.in-addr.arpa",
        "PTR",
        "NOERROR",
        &["1.0.0.172.in-addr.arpa. 5 PTR ep1a.svc1.testns.svc.cluster.local."],
        &[],
        &[],
    );
    // The endpoint in two slices: one PTR.
    t.check(
        "40.0.0.172.in-addr.arpa",
        "PTR",
        "NOERROR",
        &["40.0.0.172.in-addr.arpa. 5 PTR 172-0-0-40.dupe.testns.svc.cluster.local."],
        &[],
        &[],
    );
    let v6 = "3.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.0.ip6.arpa";
    t.check(
        v6,
        "PTR",
        "NOERROR",
        &[&format!(
            "{v6}. 5 PTR svc-dual-stack.testns.svc.cluster.local."
        )],
        &[],
        &[],
    );
    // A name we own, other type: NODATA with the reverse zone's SOA.
    t.check(
        "1.0.0.10.in-addr.arpa",
        "A",
        "NOERROR",
        &[],
        &["in-addr.arpa. 5 SOA"],
        &[],
    );
    // Reverse names we do not own are not ours (they fall through).
    assert_eq!(t.outcome("7.7.7.7.in-addr.arpa", "PTR"), Outcome::NotOurs);
}

#[test]
fn zone_names_and_negative_answers() {
    let mut t = fixture(Settings::default());
    t.check(
        "dns-version.cluster.local",
        "TXT",
        "NOERROR",
        &["dns-version.cluster.local. 28800 TXT 1.1.0"],
        &[],
        &[],
    );
    t.check(
        "cluster.local",
        "SOA",
        "NOERROR",
        &["cluster.local. 5 SOA"],
        &[],
        &[],
    );
    t.check(
        "cluster.local",
        "NS",
        "NOERROR",
        // As CoreDNS: the name server is named by its Service (here the DNS
        // Service, as no Service fronts our own pod), with its cluster IP.
        &["cluster.local. 5 NS kube-dns.kube-system.svc.cluster.local."],
        &[],
        &["kube-dns.kube-system.svc.cluster.local. 5 A 10.96.0.10"],
    );
    t.check(
        "ns.dns.cluster.local",
        "A",
        "NOERROR",
        &["ns.dns.cluster.local. 5 A 10.96.0.10"],
        &[],
        &[],
    );
    // Names that exist without the type: NODATA.
    for name in [
        "cluster.local",
        "svc.cluster.local",
        "pod.cluster.local",
        "testns.svc.cluster.local",
        "emptyns.svc.cluster.local",
    ] {
        t.check(name, "A", "NOERROR", &[], &[SOA], &[]);
    }
    t.check("svc.cluster.local", "NS", "NOERROR", &[], &[SOA], &[]);
    // Names that do not exist: NXDOMAIN.
    for name in [
        "svc0.testns.svc.cluster.local",
        "svc0.nsnoexist.svc.cluster.local",
        "nsnoexist.svc.cluster.local",
        "foo.cluster.local",
        "a.foo.cluster.local",
        "a.b.c.svc1.testns.svc.cluster.local",
    ] {
        t.check(name, "A", "NXDOMAIN", &[], &[SOA], &[]);
    }
    // The SOA's names point into the question, so they come back in its case.
    t.check(
        "not-a-service.testns.svc.ClUsTeR.lOcAl",
        "A",
        "NXDOMAIN",
        &[],
        &["ClUsTeR.lOcAl. 5 SOA ns.dns.ClUsTeR.lOcAl. hostmaster.ClUsTeR.lOcAl."],
        &[],
    );
    // Outside our zones: not ours.
    assert_eq!(t.outcome("example.com", "A"), Outcome::NotOurs);
    // No zone transfers.
    assert_eq!(
        t.outcome("cluster.local", "AXFR"),
        Outcome::Rcode("REFUSED".into())
    );
}

#[test]
fn pods_insecure() {
    let mut t = fixture(Settings::default());
    t.check(
        "10-240-0-1.podns.pod.cluster.local",
        "A",
        "NOERROR",
        &["10-240-0-1.podns.pod.cluster.local. 5 A 10.240.0.1"],
        &[],
        &[],
    );
    // Any well-formed IP in a namespace that exists.
    t.check(
        "172-0-0-2.podns.pod.cluster.local",
        "A",
        "NOERROR",
        &["172-0-0-2.podns.pod.cluster.local. 5 A 172.0.0.2"],
        &[],
        &[],
    );
    t.check(
        "fd00--1.podns.pod.cluster.local",
        "AAAA",
        "NOERROR",
        &["fd00--1.podns.pod.cluster.local. 5 AAAA fd00::1"],
        &[],
        &[],
    );
    t.check(
        "10-240-0-1.podns.pod.cluster.local",
        "AAAA",
        "NOERROR",
        &[],
        &[SOA],
        &[],
    );
    t.check(
        "blah.podns.pod.cluster.local",
        "A",
        "NXDOMAIN",
        &[],
        &[SOA],
        &[],
    );
    t.check(
        "10-240-0-1.pod-nons.pod.cluster.local",
        "A",
        "NXDOMAIN",
        &[],
        &[SOA],
        &[],
    );
    t.check("podns.pod.cluster.local", "A", "NOERROR", &[], &[SOA], &[]);
    t.check(
        "10-240-0-1.PodNS.pod.Cluster.Local",
        "A",
        "NOERROR",
        &["10-240-0-1.PodNS.pod.Cluster.Local. 5 A 10.240.0.1"],
        &[],
        &[],
    );
}

#[test]
fn pods_verified_and_disabled() {
    let mut t = fixture(Settings {
        pod_mode: PodMode::Verified,
        ..Settings::default()
    });
    t.check(
        "10-240-0-1.podns.pod.cluster.local",
        "A",
        "NOERROR",
        &["10-240-0-1.podns.pod.cluster.local. 5 A 10.240.0.1"],
        &[],
        &[],
    );
    t.check(
        "172-0-0-2.podns.pod.cluster.local",
        "A",
        "NXDOMAIN",
        &[],
        &[SOA],
        &[],
    );
    // The pod exists, but in another namespace.
    t.check(
        "10-240-0-1.testns.pod.cluster.local",
        "A",
        "NXDOMAIN",
        &[],
        &[SOA],
        &[],
    );
    // A finished pod no longer holds its IP.
    t.check(
        "10-240-0-2.podns.pod.cluster.local",
        "A",
        "NXDOMAIN",
        &[],
        &[SOA],
        &[],
    );
    t.check("podns.pod.cluster.local", "A", "NOERROR", &[], &[SOA], &[]);

    let mut t = fixture(Settings {
        pod_mode: PodMode::Disabled,
        ..Settings::default()
    });
    t.check(
        "10-240-0-1.podns.pod.cluster.local",
        "A",
        "NXDOMAIN",
        &[],
        &[SOA],
        &[],
    );
}

#[test]
fn before_first_sync_nxdomain_is_servfail() {
    let mut t = fixture_unsynced(Settings::default());
    // As CoreDNS, whose BackendError adds the zone SOA to the SERVFAIL.
    t.check(
        "svc0.testns.svc.cluster.local",
        "A",
        "SERVFAIL",
        &[],
        &[SOA],
        &[],
    );
    // What is known already answers.
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
fn custom_zone_and_ttl() {
    let settings = Settings {
        zones: vec![kubewire_wire::NameBuf::from_text("example.internal").unwrap()],
        ttl: 30,
        ..Settings::default()
    };
    let mut t = fixture(settings);
    t.check(
        "svc1.testns.svc.example.internal",
        "A",
        "NOERROR",
        &["svc1.testns.svc.example.internal. 30 A 10.0.0.1"],
        &[],
        &[],
    );
    t.check(
        "nothing.example.internal",
        "A",
        "NXDOMAIN",
        &[],
        &["example.internal. 30 SOA"],
        &[],
    );
    assert_eq!(
        t.outcome("svc1.testns.svc.cluster.local", "A"),
        Outcome::NotOurs
    );
}

#[test]
fn large_headless_service_still_answers() {
    // 1500 endpoints in 15 slices: the SRV set with its addresses would not
    // fit a 64 KiB message, which must not take the A answer down with it.
    let mut objects = fixture_objects();
    objects.push(headless(
        "testns",
        "huge",
        vec![port("http", "tcp", 80)],
        false,
    ));
    for s in 0..15u32 {
        let endpoints = (0..100u32)
            .map(|e| {
                endpoint(
                    &format!("10.{}.{}.{}", 100 + s, e / 250, e % 250 + 1),
                    None,
                    true,
                )
            })
            .collect();
        objects.push(slice(
            "testns",
            &format!("huge-{s}"),
            "huge",
            vec![port("http", "tcp", 80)],
            endpoints,
        ));
    }
    let mut t = tester(Settings::default(), objects);
    let (_, message) = t.ask("huge.testns.svc.cluster.local", "A");
    let message = message.unwrap();
    assert_eq!(rcode_name(&message), "NOERROR");
    assert_eq!(message.answers.len(), 1500, "TCP carries the whole A set");

    let (_, message) = t.ask("_http._tcp.huge.testns.svc.cluster.local", "SRV");
    let message = message.unwrap();
    assert_eq!(rcode_name(&message), "NOERROR");
    // As many SRV records as fit in 64 KiB (each carries its literal target).
    assert!(
        message.answers.len() >= 850,
        "{} SRV records",
        message.answers.len()
    );
    assert!(
        message.additionals.is_empty(),
        "the additional section is dropped to fit"
    );

    // Over UDP without EDNS the A set is truncated whole.
    let packet = query("huge.testns.svc.cluster.local", 1, 7);
    let packet = &packet[..packet.len() - 11];
    let mut plain = packet.to_vec();
    plain[11] = 0; // ARCOUNT 0: no OPT
    let mut out = vec![0u8; 4096];
    let response = t
        .table
        .respond(&plain, kubewire_wire::Transport::Udp, &mut out);
    let kubewire_answer::Response::Reply { len, .. } = response else {
        panic!("{response:?}")
    };
    let message = hickory_proto::op::Message::from_vec(&out[..len]).unwrap();
    assert!(message.metadata.truncation);
    assert!(message.answers.is_empty());
}

/// The serving loop's first look at a batch (by hash alone, to prefetch)
/// finds each name's own entry nearly always: a wrong guess only costs a
/// wasted prefetch, but a look that mostly missed would be cost for nothing.
#[test]
fn a_lookup_by_hash_alone_finds_nearly_every_name_s_own_entry() {
    let t = fixture(Settings::default());
    let entries: Vec<_> = t.table.entries().collect();
    assert!(entries.len() > 50, "{} entries", entries.len());
    let found = entries
        .iter()
        .filter(|entry| {
            let name = t.table.zones().name_of(entry.table_key()).unwrap();
            t.table
                .likely_entry(t.table.name_hash(&name).unwrap())
                .is_some_and(|likely| likely.ptr_eq(entry))
        })
        .count();
    assert!(
        found * 100 >= entries.len() * 95,
        "{found} of {}",
        entries.len()
    );
}
