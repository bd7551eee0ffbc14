//! Pod → Dataplane as Kuma converts: one input per case
//! (`testdata/pods/<case>.input.yaml`: the Pod, the Services of the
//! cluster and their EndpointSlices, its Namespace and the ReplicaSet or
//! Job that owns it), one
//! expected Dataplane (`<case>.golden.yaml`, Kubernetes form, or `none`).
//! `UPDATE_GOLDEN=1` rewrites the golden files (review the diff).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kuma_crds::format::{to_kubernetes, to_yaml};
use kuma_crds::kubernetes::pod::{PodInput, pod_to_dataplane};
use kuma_crds::kubernetes::{owners_of, services_listing};
use serde::Deserialize;

fn cases() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata/pods");
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("testdata")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_string_lossy().ends_with(".input.yaml"))
        .collect();
    out.sort();
    out
}

/// The objects of an input file.
#[derive(Default)]
struct Input {
    pod: Option<Pod>,
    services: Vec<Service>,
    endpoint_slices: Vec<EndpointSlice>,
    namespace: Option<Namespace>,
    owners: Vec<(
        String,
        String,
        Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>,
    )>,
}

fn load(path: &Path) -> Input {
    let text = std::fs::read_to_string(path).expect("input");
    let mut input = Input::default();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let value = serde_json::Value::deserialize(doc).expect("yaml");
        match value.get("kind").and_then(|k| k.as_str()) {
            Some("Pod") => input.pod = Some(serde_json::from_value(value).expect("pod")),
            Some("Service") => input
                .services
                .push(serde_json::from_value(value).expect("service")),
            Some("EndpointSlice") => input
                .endpoint_slices
                .push(serde_json::from_value(value).expect("endpoint slice")),
            Some("Namespace") => input.namespace = Some(serde_json::from_value(value).expect("namespace")),
            Some(kind @ ("ReplicaSet" | "Job")) => {
                let meta: ObjectMeta = serde_json::from_value(value["metadata"].clone()).expect("metadata");
                input.owners.push((
                    kind.to_string(),
                    meta.name.unwrap_or_default(),
                    meta.owner_references.unwrap_or_default(),
                ));
            }
            other => panic!("{}: unexpected kind {other:?}", path.display()),
        }
    }
    input
}

fn convert(path: &Path) -> String {
    let input = load(path);
    let pod = input.pod.expect("a Pod");
    let empty = BTreeMap::new();
    let ns_meta = input.namespace.as_ref().map(|n| &n.metadata);
    let owners = owners_of(&pod, &input.owners);
    let listed_by = services_listing(
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default(),
        &input.endpoint_slices,
    );
    let pod_input = PodInput {
        pod: &pod,
        namespace_labels: ns_meta.and_then(|m| m.labels.as_ref()).unwrap_or(&empty),
        namespace_annotations: ns_meta.and_then(|m| m.annotations.as_ref()).unwrap_or(&empty),
        services: &input.services,
        listed_by: &listed_by,
        owners: &owners,
        zone: "default",
    };
    match pod_to_dataplane(&pod_input) {
        Ok(Some(dataplane)) => to_yaml(&to_kubernetes(&dataplane, "unused")),
        Ok(None) => "none\n".into(),
        Err(e) => format!("error: {e}\n"),
    }
}

#[test]
fn pods_convert_as_kuma_converts_them() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    for input in cases() {
        let actual = convert(&input);
        let golden = PathBuf::from(input.to_string_lossy().replace(".input.", ".golden."));
        if update {
            std::fs::write(&golden, &actual).expect("write golden");
            continue;
        }
        match std::fs::read_to_string(&golden) {
            Ok(expected) if expected == actual => {}
            Ok(expected) => failures.push(format!(
                "{}:\n--- expected\n{expected}--- actual\n{actual}",
                golden.display()
            )),
            Err(_) => failures.push(format!(
                "{}: missing (run with UPDATE_GOLDEN=1)",
                golden.display()
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(cases().len() >= 8);
}
