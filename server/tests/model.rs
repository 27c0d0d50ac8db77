//! Kubernetes API objects (as JSON, as the API server sends them) become the
//! compact model, and broken ones give clear errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kubewire::sources::from_api::{FromApi, LeanPod, ModelError};
use kubewire_answer::model::{
    ExternalAddresses, ImportKind, ImportLink, ImportModel, PodModel, ServiceKind, ServiceModel,
    SliceModel,
};

#[test]
fn services() {
    let service: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"type": "NodePort", "clusterIP": "10.96.0.7", "clusterIPs": ["10.96.0.7", "fd00::7"],
                 "ports": [{"name": "http", "port": 80}, {"name": "dns", "port": 53, "protocol": "UDP"}]}
    }))
    .unwrap();
    let model = ServiceModel::from_api(&service).unwrap();
    assert_eq!(
        model.kind,
        ServiceKind::ClusterIp(vec![
            "10.96.0.7".parse().unwrap(),
            "fd00::7".parse().unwrap()
        ])
    );
    assert_eq!(model.ports[0].protocol, "tcp");
    assert_eq!(model.ports[1].protocol, "udp");

    let headless: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "db", "namespace": "default"},
        "spec": {"clusterIP": "None", "publishNotReadyAddresses": true}
    }))
    .unwrap();
    let model = ServiceModel::from_api(&headless).unwrap();
    assert_eq!(model.kind, ServiceKind::Headless);
    assert!(model.publish_not_ready_addresses);

    let external: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "ext", "namespace": "default"},
        "spec": {"type": "ExternalName", "externalName": "example.com"}
    }))
    .unwrap();
    assert_eq!(
        ServiceModel::from_api(&external).unwrap().kind,
        ServiceKind::ExternalName("example.com".into())
    );

    let bad: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "bad", "namespace": "default"},
        "spec": {"clusterIP": "10.96.0.999"}
    }))
    .unwrap();
    let error = ServiceModel::from_api(&bad).unwrap_err();
    assert!(matches!(error, ModelError::BadIp { .. }));
    assert_eq!(
        error.to_string(),
        "default/bad: spec.clusterIPs \"10.96.0.999\" is not an IP address"
    );

    let no_namespace: Service =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "x"}})).unwrap();
    assert_eq!(
        ServiceModel::from_api(&no_namespace).unwrap_err(),
        ModelError::NoNamespace("x".into())
    );
}

#[test]
fn external_addresses_are_external_ips_then_load_balancer_ingress() {
    let service: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.7", "externalIPs": ["192.0.2.1"],
                 "ports": [{"name": "http", "port": 80}]},
        "status": {"loadBalancer": {"ingress": [
            {"ip": "198.51.100.7"}, {"hostname": "lb-1.elb.example"}, {"ip": "2001:db8::7", "hostname": "ignored"}
        ]}}
    }))
    .unwrap();
    let model = ServiceModel::from_api(&service).unwrap();
    assert_eq!(
        model.external.as_deref(),
        Some(&ExternalAddresses {
            ips: vec![
                "192.0.2.1".parse().unwrap(),
                "198.51.100.7".parse().unwrap(),
                "2001:db8::7".parse().unwrap(),
            ],
            hostnames: vec!["lb-1.elb.example".into()],
        })
    );
    // The cluster IP is its own; it is never external.
    assert_eq!(
        model.kind,
        ServiceKind::ClusterIp(vec!["10.96.0.7".parse().unwrap()])
    );

    let plain: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "api", "namespace": "default"},
        "spec": {"clusterIP": "10.96.0.8", "externalIPs": []},
        "status": {"loadBalancer": {}}
    }))
    .unwrap();
    assert_eq!(ServiceModel::from_api(&plain).unwrap().external, None);

    let broken: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "bad", "namespace": "default"},
        "spec": {"clusterIP": "10.96.0.9", "externalIPs": ["not-an-ip"]}
    }))
    .unwrap();
    assert_eq!(
        ServiceModel::from_api(&broken).unwrap_err(),
        ModelError::BadIp {
            object: "default/bad".into(),
            field: "spec.externalIPs",
            value: "not-an-ip".into(),
        }
    );
}

/// A ServiceImport as a dynamic object, as the watcher and the manifests
/// source read it.
fn import_from(json: serde_json::Value) -> Result<ImportModel, ModelError> {
    let object: kube::api::DynamicObject = serde_json::from_value(json).unwrap();
    ImportModel::from_api(&object)
}

#[test]
fn service_imports_and_their_slices() {
    let import = import_from(serde_json::json!({
        "apiVersion": "multicluster.x-k8s.io/v1alpha1", "kind": "ServiceImport",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"type": "ClusterSetIP", "ips": ["10.100.0.5"],
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
        "status": {"clusters": [{"cluster": "east"}]}
    }))
    .unwrap();
    assert_eq!(
        import.kind,
        ImportKind::ClusterSetIp(vec!["10.100.0.5".parse().unwrap()])
    );
    assert_eq!(import.ports[0].protocol, "tcp");
    let headless = import_from(serde_json::json!({
        "metadata": {"name": "db", "namespace": "default"},
        "spec": {"type": "Headless"}
    }))
    .unwrap();
    assert_eq!(headless.kind, ImportKind::Headless);
    assert!(headless.ports.is_empty());
    assert_eq!(
        import_from(serde_json::json!({
            "metadata": {"name": "bad", "namespace": "default"},
            "spec": {"ips": ["10.100.0.999"]}
        }))
        .unwrap_err(),
        ModelError::BadIp {
            object: "default/bad".into(),
            field: "spec.ips",
            value: "10.100.0.999".into(),
        }
    );
    let wrong = import_from(serde_json::json!({
        "metadata": {"name": "odd", "namespace": "default"},
        "spec": {"ports": "80"}
    }))
    .unwrap_err();
    assert!(
        wrong
            .to_string()
            .starts_with("default/odd: spec is not valid: "),
        "{wrong}"
    );

    let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web-east", "namespace": "default", "labels": {
            "multicluster.kubernetes.io/service-name": "web",
            "multicluster.kubernetes.io/source-cluster": "East"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.1.5.1"]}]
    }))
    .unwrap();
    let model = SliceModel::from_api(&slice).unwrap();
    assert_eq!(model.service, None);
    assert_eq!(
        model.import.as_deref(),
        Some(&ImportLink {
            service: "web".into(),
            cluster: "east".into(),
        })
    );
}

#[test]
fn endpoint_slices() {
    let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web-abc", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": ["10.244.1.7"], "hostname": "web-0", "nodeName": "n1", "zone": "z1",
             "targetRef": {"kind": "Pod", "name": "web-0", "namespace": "default"}},
            {"addresses": ["10.244.1.8"], "conditions": {"ready": false}}
        ]
    }))
    .unwrap();
    let model = SliceModel::from_api(&slice).unwrap();
    assert_eq!(model.service.as_deref(), Some("web"));
    assert_eq!(model.ports[0].port, 8080);
    assert!(model.endpoints[0].ready, "a missing condition means ready");
    assert_eq!(model.endpoints[0].hostname(), Some("web-0"));
    assert_eq!(model.endpoints[0].pod_name(), Some("web-0"));
    assert!(!model.endpoints[1].ready);
    assert_eq!(model.zone_of(&model.endpoints[0]), Some("z1"));
    assert_eq!(model.zone_of(&model.endpoints[1]), None);
}

#[test]
fn endpoint_zones_are_kept_lowercase_once_per_slice() {
    let endpoint = |ip: &str, zone: &str| serde_json::json!({"addresses": [ip], "zone": zone});
    let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "db-1", "namespace": "default", "labels": {"kubernetes.io/service-name": "db"}},
        "addressType": "IPv4",
        "endpoints": [
            endpoint("10.0.0.1", "Zone-A"),
            endpoint("10.0.0.2", "zone-a"),
            endpoint("10.0.0.3", "corp.zone-b"),
            endpoint("10.0.0.4", ""),
        ]
    }))
    .unwrap();
    let model = SliceModel::from_api(&slice).unwrap();
    assert_eq!(
        &*model.zones,
        [Box::from("zone-a"), Box::from("corp.zone-b")]
    );
    let zones: Vec<Option<u8>> = model.endpoints.iter().map(|e| e.zone).collect();
    assert_eq!(zones, [Some(0), Some(0), Some(1), None]);
    // Two bytes in the endpoint, where a string would take sixteen more.
    assert_eq!(std::mem::size_of::<Option<u8>>(), 2);
}

#[test]
fn pods() {
    let pod: LeanPod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {"hostNetwork": true, "containers": []},
        "status": {"phase": "Running", "podIP": "10.244.1.9", "podIPs": [{"ip": "10.244.1.9"}, {"ip": "fd00::9"}]}
    }))
    .unwrap();
    let model = PodModel::from_api(&pod).unwrap();
    assert_eq!(model.ips.len(), 2);
    assert!(model.host_network);
    assert_eq!(model.phase, "Running");
}

/// Pods are decoded as `LeanPod`, reading only what DNS needs: whatever
/// else a Pod carries is skipped, and the model is what the fields say.
#[test]
fn lean_pods_read_only_what_dns_needs() {
    let cases = [
        (
            serde_json::json!({
                "metadata": {"name": "web-1", "namespace": "shop", "resourceVersion": "4711", "uid": "u-1",
                             "labels": {"app": "web"},
                             "managedFields": [{"manager": "kubelet", "operation": "Update", "apiVersion": "v1",
                                                "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {"f:podIPs": {}}}}]},
                "spec": {"nodeName": "node-3", "containers": [{"name": "web", "image": "nginx",
                         "env": [{"name": "A", "value": "b"}], "ports": [{"containerPort": 80}]}]},
                "status": {"phase": "Running", "podIP": "10.244.1.9",
                           "podIPs": [{"ip": "10.244.1.9"}, {"ip": "fd00::9"}],
                           "conditions": [{"type": "Ready", "status": "True"}]}
            }),
            ("shop", vec!["10.244.1.9", "fd00::9"], "Running", false),
        ),
        // podIP alone (an older kubelet), host network.
        (
            serde_json::json!({
                "metadata": {"name": "agent", "namespace": "kube-system"},
                "spec": {"hostNetwork": true, "containers": []},
                "status": {"phase": "Pending", "podIP": "192.168.1.4"}
            }),
            ("kube-system", vec!["192.168.1.4"], "Pending", true),
        ),
        // Not yet scheduled: no status, a null spec.
        (
            serde_json::json!({"metadata": {"name": "new", "namespace": "default"}, "spec": null}),
            ("default", vec![], "", false),
        ),
    ];
    for (json, (namespace, ips, phase, host_network)) in cases {
        let lean: LeanPod = serde_json::from_value(json.clone()).unwrap();
        let model = PodModel::from_api(&lean).unwrap();
        assert_eq!(&*model.key.namespace, namespace, "{json}");
        let want: Vec<std::net::IpAddr> = ips.iter().map(|ip| ip.parse().unwrap()).collect();
        assert_eq!(model.ips, want, "{json}");
        assert_eq!(
            (model.phase.as_str(), model.host_network),
            (phase, host_network)
        );
        // What kube's watcher reads of the metadata is kept; nothing else.
        assert_eq!(
            lean.metadata.name.as_deref(),
            json["metadata"]["name"].as_str()
        );
        assert_eq!(
            lean.metadata.resource_version.as_deref(),
            json["metadata"]["resourceVersion"].as_str()
        );
        assert!(lean.metadata.managed_fields.is_none() && lean.metadata.labels.is_none());
    }
    // A bad address is refused as from a whole Pod, naming the field.
    let bad: LeanPod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "p", "namespace": "default"},
        "status": {"podIPs": [{"ip": "10.244.1.300"}]}
    }))
    .unwrap();
    let error = PodModel::from_api(&bad).unwrap_err().to_string();
    assert!(error.contains("status.podIPs"), "{error}");
}
