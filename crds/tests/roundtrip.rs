//! Realistic documents of every resource type, in both forms, are accepted
//! and written back with the same meaning.

use std::collections::BTreeSet;

use kuma_crds::format::{parse, parse_documents, to_kubernetes, to_universal, yaml_to_value};
use kuma_crds::resource::ResourceType;
use serde_json::Value;

fn documents(text: &str) -> Vec<String> {
    text.split("\n---\n").map(str::to_string).collect()
}

/// YAML scalars such as `"1"` and `1` differ; the same value must come back.
fn assert_same(original: &Value, written: &Value, doc: &str) {
    assert_eq!(
        original,
        written,
        "document did not round-trip:\n{doc}\nwritten back as:\n{}",
        serde_yaml::to_string(written).unwrap()
    );
}

fn all_types_covered(seen: &BTreeSet<ResourceType>) {
    let missing: Vec<_> = ResourceType::ALL.iter().filter(|t| !seen.contains(t)).collect();
    assert!(missing.is_empty(), "no example for {missing:?}");
}

#[test]
fn universal_examples_round_trip() {
    let text = include_str!("testdata/universal.yaml");
    let mut seen = BTreeSet::new();
    for doc in documents(text) {
        let resource = parse(&doc).unwrap_or_else(|e| panic!("rejected: {e}\n{doc}"));
        seen.insert(resource.resource_type());
        let original = yaml_to_value(&doc).unwrap();
        assert_same(&original, &to_universal(&resource), &doc);

        // Through the Kubernetes form and back gives the same resource.
        let k8s = to_kubernetes(&resource, "kuma-system");
        let again = kuma_crds::format::parse_value(k8s.clone())
            .unwrap_or_else(|e| panic!("k8s form rejected: {e}\n{k8s}"));
        assert_eq!(again.spec, resource.spec);
        assert_eq!(again.meta.mesh, resource.meta.mesh);
    }
    all_types_covered(&seen);
}

#[test]
fn kubernetes_examples_round_trip() {
    let text = include_str!("testdata/kubernetes.yaml");
    let mut seen = BTreeSet::new();
    for doc in documents(text) {
        let resource = parse(&doc).unwrap_or_else(|e| panic!("rejected: {e}\n{doc}"));
        seen.insert(resource.resource_type());
        let original = yaml_to_value(&doc).unwrap();
        assert_same(&original, &to_kubernetes(&resource, "kuma-system"), &doc);

        // Through the Universal form and back keeps spec, mesh and name.
        let universal = to_universal(&resource);
        let again = kuma_crds::format::parse_value(universal.clone())
            .unwrap_or_else(|e| panic!("universal form rejected: {e}\n{universal}"));
        assert_eq!(again.spec, resource.spec);
        assert_eq!(again.meta.core_name(), resource.meta.core_name());
        assert_eq!(again.meta.mesh, resource.meta.mesh);
    }
    all_types_covered(&seen);
}

#[test]
fn multi_document_streams() {
    let text = include_str!("testdata/universal.yaml");
    let results = parse_documents(text);
    assert_eq!(results.len(), ResourceType::ALL.len());
    assert!(results.iter().all(Result::is_ok));
}

#[test]
fn kubernetes_names_are_namespaced_core_names() {
    let text = include_str!("testdata/kubernetes.yaml");
    let timeout = documents(text)
        .into_iter()
        .find(|d| d.contains("kind: MeshTimeout"))
        .unwrap();
    let r = parse(&timeout).unwrap();
    assert_eq!(r.meta.core_name(), "mesh-timeout-all-default.kuma-system");
    assert_eq!(r.meta.mesh.as_deref(), Some("default"));
    assert_eq!(to_universal(&r)["name"], "mesh-timeout-all-default.kuma-system");
}

/// A Kubernetes object's `status` is the server's. For kinds without one
/// (every policy) it is dropped in both forms, as the API server prunes
/// it, so an object read with kubectl applies with kumactl and Kuma's
/// kumactl (which sends `status: {}`) is accepted; MeshService keeps its.
#[test]
fn status_is_dropped_for_kinds_without_one_in_both_forms() {
    let k8s = include_str!("../fuzz/regressions/parse_validate/meshtls-status-k8s.yaml");
    let resource = parse(k8s).expect("a MeshTLS with a status is accepted");
    assert_eq!(resource.status, None, "the status is not kept");
    let universal = to_universal(&resource);
    assert!(universal.get("status").is_none(), "{universal}");
    let again = kuma_crds::format::parse_value(universal).expect("the Universal form is accepted");
    assert_eq!(again.spec, resource.spec);
    kuma_crds::format::check_round_trip(k8s).expect("round trip");

    let with_empty_status = "type: MeshTimeout\nname: t\nmesh: default\nspec:\n  targetRef:\n    kind: Mesh\n  to:\n    - targetRef:\n        kind: Mesh\n      default:\n        idleTimeout: 10s\nstatus: {}\n";
    let resource = parse(with_empty_status).expect("Kuma's kumactl documents are accepted");
    assert_eq!(resource.status, None);

    let service = "type: MeshService\nname: backend\nmesh: default\nspec:\n  selector:\n    dataplaneTags:\n      app: backend\n  ports:\n    - port: 80\n      targetPort: 8080\n      appProtocol: http\nstatus:\n  vips:\n    - ip: 241.0.0.1\n";
    let resource = parse(service).expect("a MeshService with a status");
    assert!(resource.status.is_some(), "MeshService keeps its status");
    kuma_crds::format::check_round_trip(service).expect("round trip");
}
