//! CoreDNS's `multicluster`: ServiceImports answered in the clusterset
//! zone.

use super::common::*;
use kubewire_answer::Settings;
use kubewire_wire::NameBuf;

/// The clusterset zone's SOA as the authority of a negative answer.
const CLUSTERSET_SOA: &str =
    "clusterset.local. 5 SOA ns.dns.clusterset.local. hostmaster.clusterset.local.";

/// CoreDNS's multicluster test services, in `clusterset.local` beside
/// `cluster.local`.
fn multicluster_tester(ignore_empty_service: bool) -> Tester {
    let objects = multicluster_objects();
    let clusterset = NameBuf::from_text("clusterset.local").unwrap();
    let settings = Settings {
        zones: vec![NameBuf::from_text("cluster.local").unwrap(), clusterset],
        multicluster: vec![clusterset],
        ignore_empty_service,
        ..Settings::default()
    };
    tester(settings, objects)
}

#[test]
fn multicluster_answers_service_imports_in_the_clusterset_zone() {
    let mut t = multicluster_tester(false);
    let soa = &[CLUSTERSET_SOA][..];
    let zone = "testns.svc.clusterset.local";
    t.check(
        &format!("svc1.{zone}"),
        "A",
        "NOERROR",
        &[&format!("svc1.{zone}. 5 A 10.0.0.1")],
        &[],
        &[],
    );
    for name in [format!("svc1.{zone}"), format!("_http._tcp.svc1.{zone}")] {
        t.check(
            &name,
            "SRV",
            "NOERROR",
            &[&format!("{name}. 5 SRV 0 100 80 svc1.{zone}.")],
            &[],
            &[&format!("svc1.{zone}. 5 A 10.0.0.1")],
        );
    }
    t.check(&format!("svc1.{zone}"), "AAAA", "NOERROR", &[], soa, &[]);
    t.check(
        &format!("svc6.{zone}"),
        "AAAA",
        "NOERROR",
        &[&format!("svc6.{zone}. 5 AAAA 1234:abcd::1")],
        &[],
        &[],
    );
    // An endpoint of a ClusterSetIP import, by its cluster.
    t.check(
        &format!("ep1a.cluster1.svc1.{zone}"),
        "A",
        "NOERROR",
        &[&format!("ep1a.cluster1.svc1.{zone}. 5 A 172.0.0.1")],
        &[],
        &[],
    );
    // The local Service keeps its own zone; the clusterset zone has only
    // imports.
    t.check(
        "svc1.testns.svc.cluster.local",
        "A",
        "NOERROR",
        &["svc1.testns.svc.cluster.local. 5 A 10.96.0.1"],
        &[],
        &[],
    );
    t.check(&format!("localonly.{zone}"), "A", "NXDOMAIN", &[], soa, &[]);
    // No ports: NXDOMAIN, as CoreDNS; ports but no address: NODATA.
    t.check(&format!("noports.{zone}"), "A", "NXDOMAIN", &[], soa, &[]);
    t.check(&format!("noips.{zone}"), "A", "NOERROR", &[], soa, &[]);
    t.check(&format!("noips.{zone}"), "SRV", "NOERROR", &[], soa, &[]);

    // Headless: ready endpoints of every cluster.
    t.check(
        &format!("hdls1.{zone}"),
        "A",
        "NOERROR",
        &[
            &format!("hdls1.{zone}. 5 A 172.0.0.2"),
            &format!("hdls1.{zone}. 5 A 172.0.0.3"),
            &format!("hdls1.{zone}. 5 A 172.0.0.4"),
            &format!("hdls1.{zone}. 5 A 172.0.0.5"),
        ],
        &[],
        &[],
    );
    t.check(
        &format!("hdls1.{zone}"),
        "AAAA",
        "NOERROR",
        &[&format!("hdls1.{zone}. 5 AAAA 5678:abcd::1")],
        &[],
        &[],
    );
    let name = format!("_http._tcp.hdls1.{zone}");
    t.check(
        &name,
        "SRV",
        "NOERROR",
        &[
            &format!("{name}. 5 SRV 0 25 80 172-0-0-2.cluster1.hdls1.{zone}."),
            &format!("{name}. 5 SRV 0 25 80 172-0-0-3.cluster1.hdls1.{zone}."),
            &format!("{name}. 5 SRV 0 25 80 dup-name.cluster1.hdls1.{zone}."),
            &format!("{name}. 5 SRV 0 25 80 5678-abcd--1.cluster2.hdls1.{zone}."),
        ],
        &[],
        &[
            &format!("172-0-0-2.cluster1.hdls1.{zone}. 5 A 172.0.0.2"),
            &format!("172-0-0-3.cluster1.hdls1.{zone}. 5 A 172.0.0.3"),
            &format!("dup-name.cluster1.hdls1.{zone}. 5 A 172.0.0.4"),
            &format!("dup-name.cluster1.hdls1.{zone}. 5 A 172.0.0.5"),
            &format!("5678-abcd--1.cluster2.hdls1.{zone}. 5 AAAA 5678:abcd::1"),
        ],
    );
    t.check(
        &format!("dup-name.cluster1.hdls1.{zone}"),
        "A",
        "NOERROR",
        &[
            &format!("dup-name.cluster1.hdls1.{zone}. 5 A 172.0.0.4"),
            &format!("dup-name.cluster1.hdls1.{zone}. 5 A 172.0.0.5"),
        ],
        &[],
        &[],
    );
    // Without the cluster label, a not-ready endpoint, a wrong cluster:
    // NXDOMAIN. The cluster label alone is an empty non-terminal.
    for name in [
        format!("172-0-0-2.hdls1.{zone}"),
        format!("down.cluster1.hdls1.{zone}"),
        format!("172-0-0-2.cluster2.hdls1.{zone}"),
        format!("hdlsnone.{zone}"),
    ] {
        t.check(&name, "A", "NXDOMAIN", &[], soa, &[]);
    }
    t.check(
        &format!("cluster1.hdls1.{zone}"),
        "A",
        "NOERROR",
        &[],
        soa,
        &[],
    );
    // A slice without ports: addresses, no SRV.
    t.check(
        &format!("hdlsprtls.{zone}"),
        "A",
        "NOERROR",
        &[&format!("hdlsprtls.{zone}. 5 A 172.0.0.20")],
        &[],
        &[],
    );
    t.check(
        &format!("hdlsprtls.{zone}"),
        "SRV",
        "NOERROR",
        &[],
        soa,
        &[],
    );
    t.check(
        &format!("nolabel.{zone}"),
        "A",
        "NOERROR",
        &[&format!("nolabel.{zone}. 5 A 172.0.0.40")],
        &[],
        &[],
    );
    // The zone's own names, as in any cluster zone.
    t.check(zone, "A", "NOERROR", &[], soa, &[]);
    t.check(
        "dns-version.clusterset.local",
        "TXT",
        "NOERROR",
        &["dns-version.clusterset.local. 28800 TXT 1.1.0"],
        &[],
        &[],
    );
    // Imports are not reverse-indexed.
    assert_eq!(t.outcome("1.0.0.10.in-addr.arpa", "PTR"), Outcome::NotOurs);
}

#[test]
fn multicluster_ignore_empty_service_hides_clustersetip_imports_without_ready_endpoints() {
    let mut t = multicluster_tester(true);
    let zone = "testns.svc.clusterset.local";
    for name in [format!("noips.{zone}"), format!("svc6.{zone}")] {
        t.check(&name, "A", "NXDOMAIN", &[], &[CLUSTERSET_SOA], &[]);
    }
    t.check(
        &format!("svc1.{zone}"),
        "A",
        "NOERROR",
        &[&format!("svc1.{zone}. 5 A 10.0.0.1")],
        &[],
        &[],
    );
}
