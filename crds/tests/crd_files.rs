//! The checked-in CRDs are exactly what the code generates, and are valid
//! CustomResourceDefinitions. Regenerate with
//! `cargo run -p kuma-crds --bin crdgen` (or `UPDATE_CRDS=1 cargo test`).

use std::path::Path;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kuma_crds::crd::{all_crds, file_name, to_yaml};

fn crd_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/crds")
}

#[test]
fn checked_in_crds_match_the_generator() {
    let update = std::env::var_os("UPDATE_CRDS").is_some();
    let mut stale = Vec::new();
    for crd in all_crds() {
        let path = crd_dir().join(file_name(&crd));
        let expected = to_yaml(&crd);
        if update {
            std::fs::write(&path, &expected).unwrap();
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(expected.as_str()) {
            stale.push(path.display().to_string());
        }
    }
    let kustomization = crd_dir().join("kustomization.yaml");
    let expected = kuma_crds::crd::kustomization(&all_crds());
    if update {
        std::fs::write(&kustomization, &expected).unwrap();
    } else if std::fs::read_to_string(&kustomization).ok().as_deref() != Some(expected.as_str()) {
        stale.push(kustomization.display().to_string());
    }
    assert!(
        stale.is_empty(),
        "stale CRDs (run `cargo run -p kuma-crds --bin crdgen`): {stale:?}"
    );
}

#[test]
fn every_yaml_file_is_a_kuma_crd() {
    let mut kinds = Vec::new();
    for entry in std::fs::read_dir(crd_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") || path.ends_with("kustomization.yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let crd: CustomResourceDefinition =
            serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(crd.spec.group, "kuma.io");
        assert_eq!(crd.spec.versions.len(), 1);
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(version.served && version.storage);
        assert_eq!(
            crd.spec.names.categories.as_deref(),
            Some(&["kuma".to_string()][..])
        );
        assert!(crd.spec.names.short_names.as_ref().is_some_and(|s| !s.is_empty()));
        let schema = version
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .expect("schema");
        let props = schema.properties.as_ref().expect("properties");
        // Insights are written by control planes: all status, no spec.
        let is_insight = crd.spec.names.kind.ends_with("Insight");
        let body = if is_insight { "status" } else { "spec" };
        assert!(props.contains_key(body), "{} has no {body}", crd.spec.names.kind);
        let expected_scope = if crd.spec.names.kind == "Mesh" {
            "Cluster"
        } else {
            "Namespaced"
        };
        assert_eq!(crd.spec.scope, expected_scope, "{}", crd.spec.names.kind);
        assert!(
            is_insight
                || version
                    .additional_printer_columns
                    .as_ref()
                    .is_some_and(|c| !c.is_empty())
        );
        kinds.push(crd.spec.names.kind.clone());
    }
    kinds.sort();
    assert_eq!(kinds.len(), 21, "{kinds:?}");
}

#[test]
fn schemas_carry_enums() {
    let timeout = all_crds()
        .into_iter()
        .find(|c| c.spec.names.kind == "MeshTimeout")
        .unwrap();
    let json = serde_json::to_string(&timeout).unwrap();
    assert!(
        json.contains("\"MeshHTTPRoute\""),
        "targetRef kinds should be an enum"
    );
    assert!(json.contains("\"Sidecar\""), "proxyTypes should be an enum");
}
