//! The cluster fixture, after CoreDNS's handler tests: every kind of
//! record. Shared by the control-plane tests and the fuzz targets (which
//! include this file by path), so both exercise the same table.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use kubewire_control_plane::model::{
    EndpointModel, PodModel, PortModel, ServiceKind, ServiceModel, SliceModel,
};
use kubewire_control_plane::{Object, ObjectKey};
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
        key: ObjectKey::new(ns, name),
        kind: ServiceKind::ClusterIp(ips(cluster_ips)),
        ports,
        publish_not_ready_addresses: false,
        external: None,
    })
}

pub fn headless(ns: &str, name: &str, ports: Vec<PortModel>, publish_not_ready: bool) -> Object {
    Object::Service(ServiceModel {
        key: ObjectKey::new(ns, name),
        kind: ServiceKind::Headless,
        ports,
        publish_not_ready_addresses: publish_not_ready,
        external: None,
    })
}

pub fn external(ns: &str, name: &str, target: &str) -> Object {
    Object::Service(ServiceModel {
        key: ObjectKey::new(ns, name),
        kind: ServiceKind::ExternalName(target.into()),
        ports: vec![],
        publish_not_ready_addresses: false,
        external: None,
    })
}

pub fn endpoint(ip: &str, hostname: Option<&str>, ready: bool) -> EndpointModel {
    EndpointModel {
        addresses: ips(&[ip]).into(),
        ready,
        hostname: hostname.map(Into::into),
        pod_name: None,
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
    let address_type = if endpoints
        .iter()
        .any(|e| e.addresses.iter().any(IpAddr::is_ipv6))
    {
        "IPv6"
    } else {
        "IPv4"
    };
    Object::Slice(SliceModel {
        key: ObjectKey::new(ns, name),
        service: Some(service.into()),
        address_type: address_type.into(),
        ports,
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
    pod_endpoint.pod_name = Some("web-7".into());
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
