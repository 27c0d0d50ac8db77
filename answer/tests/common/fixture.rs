//! The cluster fixture, after CoreDNS's handler tests: every kind of
//! record. Shared by the answer crate's tests and the fuzz targets (which
//! include this file by path), so both exercise the same table.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use kubewire_answer::model::{
    EndpointModel, EndpointNames, ExternalAddresses, ImportKind, ImportLink, ImportModel, PodModel,
    PortModel, ServiceKind, ServiceModel, SliceModel,
};
use kubewire_answer::{ExternalZones, Object, ObjectKey, PodMode, Settings};
use kubewire_wire::NameBuf;
use std::net::IpAddr;

pub fn port(name: &str, protocol: &str, number: u16) -> PortModel {
    PortModel {
        name: name.into(),
        protocol: protocol.into(),
        port: number,
    }
}

pub fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|ip| ip.parse().unwrap()).collect()
}

pub fn cluster_ip(ns: &str, name: &str, cluster_ips: &[&str], ports: Vec<PortModel>) -> Object {
    Object::Service(ServiceModel {
        stamp: Default::default(),
        key: ObjectKey::new(ns, name),
        kind: ServiceKind::ClusterIp(ips(cluster_ips)),
        ports: ports.into(),
        publish_not_ready_addresses: false,
        external: None,
    })
}

pub fn headless(ns: &str, name: &str, ports: Vec<PortModel>, publish_not_ready: bool) -> Object {
    Object::Service(ServiceModel {
        stamp: Default::default(),
        key: ObjectKey::new(ns, name),
        kind: ServiceKind::Headless,
        ports: ports.into(),
        publish_not_ready_addresses: publish_not_ready,
        external: None,
    })
}

pub fn external(ns: &str, name: &str, target: &str) -> Object {
    Object::Service(ServiceModel {
        stamp: Default::default(),
        key: ObjectKey::new(ns, name),
        kind: ServiceKind::ExternalName(target.into()),
        ports: Vec::new().into(),
        publish_not_ready_addresses: false,
        external: None,
    })
}

pub fn endpoint(ip: &str, hostname: Option<&str>, ready: bool) -> EndpointModel {
    EndpointModel {
        addresses: ips(&[ip]).into(),
        ready,
        names: EndpointNames::boxed(hostname.map(Into::into), None),
        zone: None,
    }
}

pub fn slice(
    ns: &str,
    name: &str,
    service: &str,
    ports: Vec<PortModel>,
    endpoints: Vec<EndpointModel>,
) -> Object {
    Object::Slice(SliceModel {
        stamp: Default::default(),
        key: ObjectKey::new(ns, name),
        service: Some(service.into()),
        ports: ports.into(),
        endpoints,
        zones: Box::default(),
        import: None,
    })
}

pub fn pod(ns: &str, name: &str, ip: &str, phase: &str) -> Object {
    Object::Pod(PodModel {
        key: ObjectKey::new(ns, name),
        ips: ips(&[ip]),
        phase: phase.into(),
        host_network: false,
    })
}

/// The fixture, after CoreDNS's handler tests.
pub fn fixture_objects() -> Vec<Object> {
    let http = || vec![port("http", "tcp", 80)];
    let mut pod_endpoint = endpoint("172.0.0.50", None, true);
    pod_endpoint.names = EndpointNames::boxed(None, Some("web-7".into()));
    vec![
        Object::Namespace("testns".into()),
        Object::Namespace("podns".into()),
        Object::Namespace("emptyns".into()),
        Object::Namespace("kube-system".into()),
        cluster_ip("testns", "svc1", &["10.0.0.1"], http()),
        slice(
            "testns",
            "svc1-a",
            "svc1",
            http(),
            vec![endpoint("172.0.0.1", Some("ep1a"), true)],
        ),
        cluster_ip("testns", "svcempty", &["10.0.0.1"], http()),
        slice("testns", "svcempty-a", "svcempty", http(), vec![]),
        cluster_ip("testns", "svc6", &["1234:abcd::1"], http()),
        cluster_ip("testns", "svc-dual-stack", &["10.0.0.3", "10::3"], http()),
        headless("testns", "hdls1", vec![], false),
        slice(
            "testns",
            "hdls1-v4",
            "hdls1",
            http(),
            vec![
                endpoint("172.0.0.2", None, true),
                endpoint("172.0.0.3", None, true),
                endpoint("172.0.0.4", Some("dup-name"), true),
                endpoint("172.0.0.5", Some("dup-name"), true),
                endpoint("172.0.0.9", None, false),
            ],
        ),
        slice(
            "testns",
            "hdls1-v6",
            "hdls1",
            http(),
            vec![
                endpoint("5678:abcd::1", None, true),
                endpoint("5678:abcd::2", None, true),
            ],
        ),
        headless("testns", "hdlsprtls", vec![], false),
        slice(
            "testns",
            "hdlsprtls-a",
            "hdlsprtls",
            vec![],
            vec![endpoint("172.0.0.20", None, true)],
        ),
        headless("testns", "hdlsnone", http(), false),
        slice(
            "testns",
            "hdlsnone-a",
            "hdlsnone",
            http(),
            vec![endpoint("172.0.0.30", None, false)],
        ),
        headless("testns", "hdlspub", http(), true),
        slice(
            "testns",
            "hdlspub-a",
            "hdlspub",
            http(),
            vec![endpoint("172.0.0.31", None, false)],
        ),
        headless("testns", "dupe", http(), false),
        slice(
            "testns",
            "dupe-a",
            "dupe",
            http(),
            vec![endpoint("172.0.0.40", None, true)],
        ),
        slice(
            "testns",
            "dupe-b",
            "dupe",
            http(),
            vec![endpoint("172.0.0.40", None, true)],
        ),
        headless("testns", "hdlspod", http(), false),
        slice("testns", "hdlspod-a", "hdlspod", http(), vec![pod_endpoint]),
        external("testns", "external", "ext.interwebs.test"),
        cluster_ip(
            "kube-system",
            "kube-dns",
            &["10.96.0.10"],
            vec![
                port("dns", "udp", 53),
                port("dns-tcp", "tcp", 53),
                port("metrics", "tcp", 9153),
            ],
        ),
        pod("podns", "foo", "10.240.0.1", "Running"),
        pod("podns", "done", "10.240.0.2", "Succeeded"),
    ]
}

/// A Service with external addresses (`spec.externalIPs` and load
/// balancer ingress points, as the model keeps them).
pub fn with_external(service: Object, ips: &[&str], hostnames: &[&str]) -> Object {
    match service {
        Object::Service(service) => Object::Service(ServiceModel {
            external: Some(Box::new(ExternalAddresses {
                ips: self::ips(ips),
                hostnames: hostnames.iter().map(|h| Box::from(*h)).collect(),
            })),
            ..service
        }),
        other => other,
    }
}

/// A ServiceImport in `testns`.
pub fn import(name: &str, kind: ImportKind, ports: Vec<PortModel>) -> Object {
    Object::Import(ImportModel {
        stamp: Default::default(),
        key: ObjectKey::new("testns", name),
        kind,
        ports: ports.into(),
    })
}

/// An EndpointSlice of a ServiceImport, from `cluster` ("" for none).
pub fn imported_slice(
    name: &str,
    service: &str,
    cluster: &str,
    ports: Vec<PortModel>,
    endpoints: Vec<EndpointModel>,
) -> Object {
    match slice("testns", name, "", ports, endpoints) {
        Object::Slice(slice) => Object::Slice(SliceModel {
            service: None,
            import: Some(Box::new(ImportLink {
                service: service.into(),
                cluster: cluster.into(),
            })),
            ..slice
        }),
        other => other,
    }
}

/// For `zonal`: in namespace `z`, a headless service with endpoints in two
/// topology zones (one of two labels) and one without a zone, a headless
/// service without endpoints, and a ClusterIP service.
pub fn zonal_objects() -> Vec<Object> {
    // Zones as the model keeps them: lowercase, once per slice, indexed.
    let zones: Box<[Box<str>]> = ["zone-a", "corp.zone-b"].map(Box::from).into();
    let zoned = |ip: &str, host: &str, zone: Option<u8>, ready: bool| EndpointModel {
        zone,
        ..endpoint(ip, Some(host), ready)
    };
    let zoned_slice = |name: &str, service: &str, ports, endpoints| match slice(
        "z", name, service, ports, endpoints,
    ) {
        Object::Slice(slice) => Object::Slice(SliceModel {
            zones: zones.clone(),
            ..slice
        }),
        other => other,
    };
    vec![
        Object::Namespace("z".into()),
        headless("z", "web", vec![port("http", "tcp", 80)], false),
        zoned_slice(
            "web-1",
            "web",
            vec![port("http", "tcp", 80)],
            vec![
                zoned("10.1.0.1", "a1", Some(0), true),
                zoned("10.1.0.2", "a2", Some(0), true),
                zoned("10.1.0.3", "b1", Some(1), true),
                zoned("10.1.0.4", "none", None, true),
                zoned("10.1.0.5", "down", Some(0), false),
            ],
        ),
        headless("z", "empty", vec![], false),
        cluster_ip("z", "api", &["10.96.1.1"], vec![]),
        zoned_slice(
            "api-1",
            "api",
            vec![],
            vec![zoned("10.1.1.1", "api", Some(0), true)],
        ),
    ]
}

/// CoreDNS's `k8s_external` tests' services, with the DNS Service
/// fronting kubewire's own pod (10.244.0.10), whose external address is the
/// external zones' name server.
pub fn external_objects() -> Vec<Object> {
    let http = || vec![port("http", "tcp", 80)];
    vec![
        Object::Namespace("testns".into()),
        Object::Namespace("kube-system".into()),
        with_external(
            cluster_ip("testns", "svc1", &["10.0.0.1"], http()),
            &["1.2.3.4"],
            &[],
        ),
        with_external(
            cluster_ip("testns", "svc6", &["10.0.0.3"], http()),
            &["1:2::5"],
            &[],
        ),
        // Load balancers: one with an address, one known by hostname.
        with_external(
            cluster_ip("testns", "svc11", &["10.0.0.4"], http()),
            &["2.3.4.5"],
            &[],
        ),
        with_external(
            cluster_ip("testns", "svc12", &["10.0.0.5"], http()),
            &[],
            &["Dummy.Hostname"],
        ),
        // No ports: addresses, and no SRV records.
        with_external(
            cluster_ip("testns", "noports", &["10.0.0.6"], vec![]),
            &["5.6.7.8"],
            &[],
        ),
        cluster_ip("testns", "internal", &["10.0.0.7"], http()),
        headless("testns", "svc-headless", http(), false),
        slice(
            "testns",
            "svc-headless-a",
            "svc-headless",
            http(),
            vec![
                endpoint("1.2.3.14", Some("endpoint-svc-0"), true),
                endpoint("1.2.3.15", Some("endpoint-svc-1"), true),
                endpoint("1.2.3.16", Some("not-ready"), false),
            ],
        ),
        // The DNS Service fronts our own pod; its external address is the
        // external zones' name server.
        with_external(
            cluster_ip("kube-system", "kube-dns", &["10.96.0.10"], vec![]),
            &["192.0.2.53"],
            &[],
        ),
        slice(
            "kube-system",
            "kube-dns-a",
            "kube-dns",
            vec![port("dns", "udp", 53)],
            vec![endpoint("10.244.0.10", None, true)],
        ),
    ]
}

/// CoreDNS's multicluster test services: ServiceImports in `testns`, with
/// slices from two clusters, beside local Services.
pub fn multicluster_objects() -> Vec<Object> {
    let http = || vec![port("http", "tcp", 80)];
    let clusterset_ip = |list: &[&str]| ImportKind::ClusterSetIp(ips(list));
    vec![
        Object::Namespace("testns".into()),
        // Local Services: never answered in the clusterset zone.
        cluster_ip("testns", "svc1", &["10.96.0.1"], http()),
        cluster_ip("testns", "localonly", &["10.96.0.2"], http()),
        import("svc1", clusterset_ip(&["10.0.0.1"]), http()),
        imported_slice(
            "svc1-c1",
            "svc1",
            "cluster1",
            http(),
            vec![endpoint("172.0.0.1", Some("ep1a"), true)],
        ),
        import("svc6", clusterset_ip(&["1234:abcd::1"]), http()),
        import("noports", clusterset_ip(&["10.0.0.9"]), vec![]),
        import("noips", clusterset_ip(&[]), http()),
        import("hdls1", ImportKind::Headless, vec![]),
        imported_slice(
            "hdls1-c1",
            "hdls1",
            "cluster1",
            http(),
            vec![
                endpoint("172.0.0.2", None, true),
                endpoint("172.0.0.3", None, true),
                endpoint("172.0.0.4", Some("dup-name"), true),
                endpoint("172.0.0.5", Some("dup-name"), true),
                endpoint("172.0.0.9", Some("down"), false),
            ],
        ),
        imported_slice(
            "hdls1-c2",
            "hdls1",
            "Cluster2",
            http(),
            vec![endpoint("5678:abcd::1", None, true)],
        ),
        import("hdlsprtls", ImportKind::Headless, vec![]),
        imported_slice(
            "hdlsprtls-c1",
            "hdlsprtls",
            "cluster1",
            vec![],
            vec![endpoint("172.0.0.20", None, true)],
        ),
        import("hdlsnone", ImportKind::Headless, http()),
        imported_slice(
            "hdlsnone-c1",
            "hdlsnone",
            "cluster1",
            http(),
            vec![endpoint("172.0.0.30", None, false)],
        ),
        // A slice without its cluster's label: addresses, no names.
        import("nolabel", ImportKind::Headless, vec![]),
        imported_slice(
            "nolabel-x",
            "nolabel",
            "",
            vec![],
            vec![endpoint("172.0.0.40", Some("host"), true)],
        ),
    ]
}

/// A switch of [`Settings`] that the well-formedness walk and the `respond`
/// fuzz target turn on, alone and together, over [`option_objects`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Switch {
    Zonal,
    /// `clusterset.local` answered from ServiceImports.
    Multicluster,
    /// `k8s_external` in `example.com` and `in-addr.arpa`, with `headless`.
    External,
    IgnoreEmptyService,
    PodsVerified,
    PodsDisabled,
    EndpointPodNames,
    Autopath,
    /// A second cluster zone, and `10.in-addr.arpa` served with authority.
    MoreZones,
    /// Every zone falls through: names no object answers are not ours.
    Fallthrough,
}

/// Every switch, in the order a fuzz input's bits draw them.
pub const SWITCHES: [Switch; 10] = [
    Switch::Zonal,
    Switch::Multicluster,
    Switch::External,
    Switch::IgnoreEmptyService,
    Switch::PodsVerified,
    Switch::PodsDisabled,
    Switch::EndpointPodNames,
    Switch::Autopath,
    Switch::MoreZones,
    Switch::Fallthrough,
];

fn zone(text: &str) -> NameBuf {
    NameBuf::from_text(text).unwrap()
}

/// The default settings with `switches` on (with both pod switches, the
/// later wins). kubewire's own pod is 10.244.0.10, which the DNS Service of
/// [`external_objects`] fronts.
pub fn settings_with(switches: &[Switch]) -> Settings {
    let mut settings = Settings {
        own_ips: ips(&["10.244.0.10"]),
        ..Settings::default()
    };
    for switch in switches {
        match switch {
            Switch::Zonal => settings.zonal = true,
            Switch::Multicluster => {
                settings.zones.push(zone("clusterset.local"));
                settings.multicluster.push(zone("clusterset.local"));
            }
            Switch::External => {
                settings.external = Some(ExternalZones {
                    zones: vec![zone("example.com"), zone("in-addr.arpa")],
                    headless: true,
                    ..ExternalZones::default()
                });
            }
            Switch::IgnoreEmptyService => settings.ignore_empty_service = true,
            Switch::PodsVerified => settings.pod_mode = PodMode::Verified,
            Switch::PodsDisabled => settings.pod_mode = PodMode::Disabled,
            Switch::EndpointPodNames => settings.endpoint_pod_names = true,
            Switch::Autopath => settings.autopath = true,
            Switch::MoreZones => {
                settings.zones.push(zone("Other.Example"));
                settings.reverse_authoritative.push(zone("10.in-addr.arpa"));
            }
            Switch::Fallthrough => settings.fallthrough.push(NameBuf::ROOT),
        }
    }
    settings
}

/// The switches a fuzz input's first two bytes turn on, one bit each.
pub fn switches_from_bits(bits: u16) -> Vec<Switch> {
    SWITCHES
        .iter()
        .enumerate()
        .filter(|(i, _)| bits & (1 << i) != 0)
        .map(|(_, s)| *s)
        .collect()
}

/// Every object set above in one cluster: the fixture, the zonal, external
/// and multicluster services (a later object of the same key replaces an
/// earlier one), and pods of both families.
pub fn option_objects() -> Vec<Object> {
    let mut objects = fixture_objects();
    objects.extend(zonal_objects());
    objects.extend(external_objects());
    objects.extend(multicluster_objects());
    objects.push(pod("podns", "six", "fd00::1:2", "Running"));
    objects.push(pod("z", "zonal-client", "10.240.1.7", "Running"));
    objects
}
