//! Model-based property test: any sequence of adds, updates, deletes and
//! relists, applied incrementally (and shipped to a core as deltas), leaves
//! exactly the table that compiling the final objects from scratch gives.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use kubewire_answer::model::{
    EndpointModel, EndpointNames, ExternalAddresses, ImportKind, ImportLink, ImportModel,
    ServiceKind, ServiceModel, SliceModel,
};
use kubewire_answer::{
    AnswerTable, Compiler, ExternalZones, Kind, NameEntry, Object, ObjectChange, ObjectKey,
    PodMode, Settings, Update,
};
use kubewire_wire::NameBuf;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::sync::Arc;

const NAMESPACES: [&str; 2] = ["alpha", "beta"];
const SERVICES: [&str; 3] = ["web", "db", "cache"];

fn ip_pool() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u8..6).prop_map(|i| format!("10.0.0.{i}")),
        (0u8..4).prop_map(|i| format!("fd00::{i}")),
    ]
}

fn ports() -> impl Strategy<Value = Vec<kubewire_answer::model::PortModel>> {
    prop::collection::vec(
        (
            prop::sample::select(vec!["", "http", "grpc"]),
            prop::sample::select(vec!["tcp", "udp"]),
            1u16..4,
        )
            .prop_map(|(name, proto, number)| port(name, proto, number)),
        0..3,
    )
}

fn service() -> impl Strategy<Value = Object> {
    let kind = prop_oneof![
        prop::collection::vec(ip_pool(), 1..3).prop_map(|ips| ServiceKind::ClusterIp(common::ips(
            &ips.iter().map(String::as_str).collect::<Vec<_>>()
        ))),
        Just(ServiceKind::Headless),
        prop::sample::select(vec!["example.com", "db.alpha.svc.cluster.local"])
            .prop_map(|t| ServiceKind::ExternalName(t.into())),
    ];
    // `k8s_external`'s addresses: some IPs, or a load balancer's hostname.
    let external = prop::option::of(
        (
            prop::collection::vec(ip_pool(), 0..2),
            prop::option::of(Just("lb.example")),
        )
            .prop_map(|(ips, hostname)| {
                Box::new(ExternalAddresses {
                    ips: common::ips(&ips.iter().map(String::as_str).collect::<Vec<_>>()),
                    hostnames: hostname.map(Box::from).into_iter().collect(),
                })
            }),
    );
    (
        prop::sample::select(NAMESPACES.to_vec()),
        prop::sample::select(SERVICES.to_vec()),
        kind,
        ports(),
        any::<bool>(),
        external,
    )
        .prop_map(|(ns, name, kind, ports, publish, external)| {
            Object::Service(ServiceModel {
                stamp: Default::default(),
                key: ObjectKey::new(ns, name),
                kind,
                ports: ports.into(),
                publish_not_ready_addresses: publish,
                external,
            })
        })
}

/// A ServiceImport (`multicluster`).
fn import_object() -> impl Strategy<Value = Object> {
    let kind = prop_oneof![
        prop::collection::vec(ip_pool(), 0..3).prop_map(|ips| ImportKind::ClusterSetIp(
            common::ips(&ips.iter().map(String::as_str).collect::<Vec<_>>())
        )),
        Just(ImportKind::Headless),
    ];
    (
        prop::sample::select(NAMESPACES.to_vec()),
        prop::sample::select(SERVICES.to_vec()),
        kind,
        ports(),
    )
        .prop_map(|(ns, name, kind, ports)| {
            Object::Import(ImportModel {
                stamp: Default::default(),
                key: ObjectKey::new(ns, name),
                kind,
                ports: ports.into(),
            })
        })
}

fn endpoint_model() -> impl Strategy<Value = EndpointModel> {
    (
        ip_pool(),
        any::<bool>(),
        prop::option::of(prop::sample::select(vec!["web-0", "web-1"])),
        prop::option::of(Just("pod-a")),
    )
        .prop_map(|(ip, ready, hostname, pod_name)| {
            let mut e = endpoint(&ip, None, ready);
            e.names = EndpointNames::boxed(hostname.map(Into::into), pod_name.map(Into::into));
            e
        })
}

fn slice_object() -> impl Strategy<Value = Object> {
    (
        prop::sample::select(NAMESPACES.to_vec()),
        prop::sample::select(vec!["s1", "s2", "s3", "s4"]),
        prop::option::of(prop::sample::select(SERVICES.to_vec())),
        ports(),
        prop::collection::vec(endpoint_model(), 0..4),
        // A slice of a ServiceImport, from a cluster (or none named).
        prop::option::of((
            prop::sample::select(SERVICES.to_vec()),
            prop::sample::select(vec!["c1", "c2", ""]),
        )),
    )
        .prop_map(|(ns, name, service, ports, endpoints, import)| {
            Object::Slice(SliceModel {
                stamp: Default::default(),
                key: ObjectKey::new(ns, name),
                service: service.map(Into::into),
                ports: ports.into(),
                endpoints,
                zones: Box::default(),
                import: import.map(|(service, cluster)| {
                    Box::new(ImportLink {
                        service: service.into(),
                        cluster: cluster.into(),
                    })
                }),
            })
        })
}

fn pod_object() -> impl Strategy<Value = Object> {
    (
        prop::sample::select(NAMESPACES.to_vec()),
        prop::sample::select(vec!["p1", "p2"]),
        ip_pool(),
        prop::sample::select(vec!["Running", "Pending", "Succeeded"]),
        prop::bool::weighted(0.2),
    )
        .prop_map(|(ns, name, ip, phase, host_network)| {
            let mut object = pod(ns, name, &ip, phase);
            if let Object::Pod(pod) = &mut object {
                pod.host_network = host_network;
            }
            object
        })
}

/// Autopath's clients as they must be, straight from the objects: each
/// address that live, non-hostNetwork pods of one namespace alone hold.
fn expected_clients(objects: &[Object]) -> std::collections::BTreeSet<(std::net::IpAddr, Vec<u8>)> {
    let mut holders: BTreeMap<std::net::IpAddr, std::collections::BTreeSet<Vec<u8>>> =
        BTreeMap::new();
    for object in objects {
        if let Object::Pod(pod) = object
            && !pod.host_network
            && !matches!(pod.phase.as_str(), "Succeeded" | "Failed" | "Unknown")
        {
            for ip in &pod.ips {
                holders
                    .entry(*ip)
                    .or_default()
                    .insert(pod.key.namespace.to_ascii_lowercase().into_bytes());
            }
        }
    }
    holders
        .into_iter()
        .filter(|(_, namespaces)| namespaces.len() == 1)
        .filter_map(|(ip, namespaces)| Some((ip, namespaces.into_iter().next()?)))
        .collect()
}

fn object() -> impl Strategy<Value = Object> {
    prop_oneof![
        3 => service(),
        3 => slice_object(),
        1 => pod_object(),
        2 => import_object(),
        1 => prop::sample::select(NAMESPACES.to_vec()).prop_map(|n| Object::Namespace(n.into())),
    ]
}

fn kind() -> impl Strategy<Value = Kind> {
    prop::sample::select(vec![
        Kind::Service,
        Kind::Slice,
        Kind::Pod,
        Kind::Namespace,
        Kind::Import,
    ])
}

#[derive(Clone, Debug)]
enum Op {
    Change(ObjectChange),
    /// Take a delta and ship it to the core.
    Ship,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => object().prop_map(|o| Op::Change(ObjectChange::Upsert(o))),
        2 => object().prop_map(|o| Op::Change(ObjectChange::Remove(o.kind(), o.key()))),
        1 => (kind(), prop::collection::vec(object(), 0..5)).prop_map(|(kind, objects)| {
            // Keys only: what they name came (or never came) as Upserts.
            let listed = objects.iter().filter(|o| o.kind() == kind).collect();
            Op::Change(ObjectChange::Reset(kind, listed))
        }),
        3 => Just(Op::Ship),
    ]
}

/// The objects a sequence of changes leaves, kept the simplest way.
fn final_objects(ops: &[Op]) -> Vec<Object> {
    let mut objects: BTreeMap<(u8, ObjectKey), Object> = BTreeMap::new();
    let tag = |kind: Kind| kind as u8;
    for op in ops {
        let Op::Change(change) = op else { continue };
        match change {
            ObjectChange::Upsert(object) => {
                objects.insert((tag(object.kind()), object.key()), object.clone());
            }
            ObjectChange::Remove(kind, key) => {
                objects.remove(&(tag(*kind), key.clone()));
            }
            ObjectChange::Reset(kind, listed) => {
                let listed: Vec<(&str, &str)> = listed.iter().collect();
                objects.retain(|(k, key), _| {
                    *k != tag(*kind) || listed.contains(&(&*key.namespace, key.name.as_str()))
                });
            }
        }
    }
    objects.into_values().collect()
}

fn entries_of<'a>(iter: impl Iterator<Item = &'a NameEntry>) -> BTreeMap<Vec<u8>, NameEntry> {
    iter.map(|e| (e.table_key().to_vec(), e.clone())).collect()
}

fn settings_for(mode: PodMode, pod_names: bool) -> Settings {
    Settings {
        pod_mode: mode,
        endpoint_pod_names: pod_names,
        // Rides on the same coin: both settings change which names a
        // slice's edits add or take away.
        ignore_empty_service: pod_names,
        ..Settings::default()
    }
}

/// Settings with, or without, our own pod address among the endpoints'
/// (so the Services fronting it answer for `ns.dns.<zone>`), and a DNS
/// Service among the generated ones, or not.
fn name_server_settings(mode: PodMode, pod_names: bool, own: bool, dns: bool) -> Settings {
    Settings {
        own_ips: if own {
            common::ips(&["10.0.0.1"])
        } else {
            Vec::new()
        },
        dns_service: dns.then(|| ObjectKey::new("alpha", "web")),
        ..settings_for(mode, pod_names)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn incremental_equals_from_scratch(
        ops in prop::collection::vec(op(), 1..40),
        mode in prop::sample::select(vec![PodMode::Insecure, PodMode::Verified]),
        pod_names in any::<bool>(),
        own in any::<bool>(),
        dns in any::<bool>(),
        autopath in any::<bool>(),
        multicluster in any::<bool>(),
        external in any::<bool>(),
        reindex_often in any::<bool>(),
        synced_at in 0usize..40,
        join_at in 0usize..40,
    ) {
        let name = |text: &str| NameBuf::from_text(text).unwrap();
        let base = name_server_settings(mode, pod_names, own, dns);
        let settings = Settings {
            autopath,
            zones: if multicluster {
                vec![name("cluster.local"), name("clusterset.local")]
            } else {
                base.zones.clone()
            },
            multicluster: if multicluster {
                vec![name("clusterset.local")]
            } else {
                Vec::new()
            },
            external: external.then(|| ExternalZones {
                zones: vec![name("example.com"), name("in-addr.arpa")],
                headless: true,
                ..ExternalZones::default()
            }),
            ..base
        };
        let mut compiler = Compiler::new(settings.clone());
        if reindex_often {
            // A new shared index at nearly every delta, so that cores
            // switch indexes in the middle of their changes.
            compiler.set_reindex_after(1);
        }
        let mut core = AnswerTable::new();
        // A core that joins later, from a snapshot, then follows deltas.
        let mut late: Option<AnswerTable> = None;
        for (at, op) in ops.iter().enumerate() {
            if at == synced_at {
                compiler.mark_synced();
            }
            if at == join_at {
                let mut joined = AnswerTable::new();
                prop_assert!(joined.apply(&Update::Reset(Arc::new(compiler.snapshot()))));
                late = Some(joined);
            }
            match op {
                Op::Change(change) => compiler.apply(change.clone()),
                Op::Ship => {
                    if let Some(delta) = compiler.take_delta() {
                        let update = Update::Delta(Arc::new(delta));
                        prop_assert!(core.apply(&update));
                        if let Some(late) = late.as_mut() {
                            prop_assert!(late.apply(&update));
                        }
                    }
                }
            }
        }
        if let Some(delta) = compiler.take_delta() {
            let update = Update::Delta(Arc::new(delta));
            prop_assert!(core.apply(&update));
            if let Some(late) = late.as_mut() {
                prop_assert!(late.apply(&update));
            }
        }
        let scratch = compile(settings, final_objects(&ops), false);
        let incremental = entries_of(compiler.entries());
        let fresh = entries_of(scratch.entries());
        prop_assert_eq!(incremental.keys().collect::<Vec<_>>(), fresh.keys().collect::<Vec<_>>());
        prop_assert_eq!(&incremental, &fresh);
        // The core, fed only deltas, holds the same, and so does the core
        // that joined from a snapshot.
        prop_assert_eq!(&entries_of(core.entries()), &fresh);
        prop_assert_eq!(core.len(), fresh.len());
        if let Some(late) = &late {
            prop_assert_eq!(&entries_of(late.entries()), &fresh);
            prop_assert_eq!(late.len(), fresh.len());
        }
        prop_assert_eq!(core.revision(), compiler.revision());
        // The verified pod addresses too, in the compiler and on the core.
        // Label ids depend on the order namespaces came in: compare labels.
        let pods = |iter: &mut dyn Iterator<Item = (&[u8], std::net::IpAddr)>| {
            iter.map(|(label, ip)| (label.to_vec(), ip)).collect::<std::collections::BTreeSet<_>>()
        };
        let fresh_pods = pods(&mut scratch.pod_addresses());
        prop_assert_eq!(&pods(&mut compiler.pod_addresses()), &fresh_pods);
        prop_assert_eq!(&pods(&mut core.pod_addresses()), &fresh_pods);
        if mode == PodMode::Insecure {
            prop_assert!(fresh_pods.is_empty());
        }
        // Autopath's clients: what the objects say, in the compiler and on
        // the core fed only deltas, however pods came, moved and went (a
        // reused address never keeps its old namespace).
        let clients = |iter: &mut dyn Iterator<Item = (std::net::IpAddr, &[u8])>| {
            iter.map(|(ip, label)| (ip, label.to_vec())).collect::<std::collections::BTreeSet<_>>()
        };
        let expected = if autopath {
            expected_clients(&final_objects(&ops))
        } else {
            Default::default()
        };
        prop_assert_eq!(&clients(&mut scratch.clients()), &expected);
        prop_assert_eq!(&clients(&mut compiler.clients()), &expected);
        prop_assert_eq!(&clients(&mut core.clients()), &expected);
    }
}

/// With overlapping zones two objects can give the same name: the endpoint
/// `y.svc.alpha.svc.cluster.local` (service `alpha/svc`, hostname `y`) is
/// also namespace `y`'s `<ns>.svc` name in zone `alpha.svc.cluster.local`.
/// The first holds it; when it goes, the other gets it in the same delta,
/// and the core follows.
#[test]
fn a_name_two_objects_give_passes_to_the_other_when_its_holder_goes() {
    let settings = Settings {
        zones: ["cluster.local", "alpha.svc.cluster.local"]
            .iter()
            .map(|z| kubewire_wire::NameBuf::from_text(z).unwrap())
            .collect(),
        ..Settings::default()
    };
    let name = kubewire_wire::NameBuf::from_text("y.svc.alpha.svc.cluster.local").unwrap();
    let endpoint_objects = vec![
        headless("alpha", "svc", vec![], false),
        Object::Slice(SliceModel {
            stamp: Default::default(),
            key: ObjectKey::new("alpha", "svc-1"),
            service: Some("svc".into()),
            ports: Vec::new().into(),
            endpoints: vec![endpoint("10.0.0.9", Some("y"), true)],
            zones: Box::default(),
            import: None,
        }),
    ];
    let has_address = |compiler: &Compiler| {
        let entries = entries_of(compiler.entries());
        // Filed under the longest zone it ends with, `alpha.svc.cluster.local`,
        // the first of the zones (longest apex first).
        let key = compiler.zones().table_key(&name).unwrap();
        assert_eq!(key.as_bytes(), b"\x01y\x03svc\x00");
        entries
            .get(key.as_bytes())
            .map(|e| e.types().any(|t| t == 1))
    };
    for namespace_first in [true, false] {
        let mut compiler = Compiler::new(settings.clone());
        let mut core = AnswerTable::new();
        let mut ship = |compiler: &mut Compiler| {
            if let Some(delta) = compiler.take_delta() {
                assert!(core.apply(&Update::Delta(Arc::new(delta))));
            }
        };
        let namespace = Object::Namespace("y".into());
        if namespace_first {
            compiler.apply(ObjectChange::Upsert(namespace));
            ship(&mut compiler);
        }
        for object in &endpoint_objects {
            compiler.apply(ObjectChange::Upsert(object.clone()));
        }
        if !namespace_first {
            ship(&mut compiler);
            compiler.apply(ObjectChange::Upsert(Object::Namespace("y".into())));
        }
        ship(&mut compiler);
        // The first to come holds the name.
        assert_eq!(has_address(&compiler), Some(!namespace_first));
        // The holder goes; the other object's name appears.
        if namespace_first {
            compiler.apply(ObjectChange::Remove(
                Kind::Namespace,
                ObjectKey::new("", "y"),
            ));
        } else {
            compiler.apply(ObjectChange::Remove(
                Kind::Service,
                ObjectKey::new("alpha", "svc"),
            ));
        }
        ship(&mut compiler);
        assert_eq!(has_address(&compiler), Some(namespace_first));
        assert_eq!(entries_of(core.entries()), entries_of(compiler.entries()));
    }
}
