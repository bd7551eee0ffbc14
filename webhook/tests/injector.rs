//! The injector as Kuma's injector testdata checks it: one input per case
//! (`testdata/inject/<case>.input.yaml`: the Namespace, the Pod, the
//! Services around it), one expected Pod (`<case>.golden.yaml`, or the
//! skip reason or error). A `# config: native_sidecar=false` comment in the
//! input changes the configuration. `UPDATE_GOLDEN=1` rewrites the goldens.
//! Every injected Pod, injected again, is left unchanged.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use kuma_crds::kubernetes::PodOwners;
use kuma_webhook::injector::{
    Decision, InjectInput, InjectorConfig, NamespaceFacts, inject, patch, precheck,
};
use serde::Deserialize;

fn cases() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata/inject");
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("testdata")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_string_lossy().ends_with(".input.yaml"))
        .collect();
    out.sort();
    out
}

/// The configuration of the goldens: Kuma's defaults with a placeholder CA.
fn config(text: &str) -> InjectorConfig {
    let mut config = InjectorConfig {
        ca_cert_pem: "-----BEGIN CERTIFICATE-----\nMIIB...test CA...\n-----END CERTIFICATE-----\n".into(),
        ..InjectorConfig::default()
    };
    if text.contains("native_sidecar=false") {
        config.native_sidecar = false;
    }
    config
}

fn run(path: &Path) -> (String, Option<Pod>, InjectorConfig, NamespaceFacts, Vec<Service>) {
    let text = std::fs::read_to_string(path).expect("input");
    let config = config(&text);
    let mut pod: Option<Pod> = None;
    let mut namespace = NamespaceFacts::default();
    let mut services = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let value = serde_json::Value::deserialize(doc).expect("yaml");
        match value.get("kind").and_then(|k| k.as_str()) {
            Some("Pod") => pod = Some(serde_json::from_value(value).expect("pod")),
            Some("Service") => services.push(serde_json::from_value::<Service>(value).expect("service")),
            Some("Namespace") => {
                let ns: Namespace = serde_json::from_value(value).expect("namespace");
                namespace = NamespaceFacts {
                    name: ns.metadata.name.unwrap_or_default(),
                    labels: ns.metadata.labels.unwrap_or_default(),
                    annotations: ns.metadata.annotations.unwrap_or_default(),
                };
            }
            other => panic!("{}: unexpected kind {other:?}", path.display()),
        }
    }
    let pod = pod.expect("a Pod");
    let owners = PodOwners::default();
    let input = InjectInput {
        services: &services,
        owners: &owners,
    };
    let (text, injected) = match precheck(&pod, &namespace, &config) {
        Err(e) => (format!("error: {e}\n"), None),
        Ok(Decision::Skip(reason)) => (format!("skip: {reason}\n"), None),
        Ok(Decision::Inject { mesh }) => match inject(&pod, &mesh, &input, &config) {
            Ok(injected) => (serde_yaml::to_string(&injected).expect("yaml"), Some(injected)),
            Err(e) => (format!("error: {e}\n"), None),
        },
    };
    (text, injected, config, namespace, services)
}

#[test]
fn pods_are_injected_as_kuma_injects_them() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    for case in cases() {
        let (actual, injected, config, namespace, _) = run(&case);
        let golden = PathBuf::from(case.to_string_lossy().replace(".input.", ".golden."));
        if update {
            std::fs::write(&golden, &actual).expect("write golden");
        } else {
            match std::fs::read_to_string(&golden) {
                Ok(expected) if expected == actual => {}
                Ok(expected) => failures.push(format!(
                    "{}:\n--- expected\n{expected}--- actual\n{actual}",
                    golden.display()
                )),
                Err(_) => failures.push(format!("{}: missing (UPDATE_GOLDEN=1)", golden.display())),
            }
        }
        // Injecting twice changes nothing.
        if let Some(pod) = injected {
            match precheck(&pod, &namespace, &config) {
                Ok(Decision::Skip(_)) => {}
                other => failures.push(format!("{}: injected again: {other:?}", case.display())),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(cases().len() >= 12);
}

#[test]
fn the_patch_turns_the_pod_into_the_injected_pod() {
    let case =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata/inject/01-namespace-enabled.input.yaml");
    let text = std::fs::read_to_string(&case).expect("input");
    let pod: Pod = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde_json::Value::deserialize(d).expect("yaml"))
        .find(|v| v["kind"] == "Pod")
        .map(|v| serde_json::from_value(v).expect("pod"))
        .expect("a Pod");
    let (_, injected, ..) = run(&case);
    let injected = injected.expect("injected");
    let ops = patch(&pod, &injected);
    let mut patched = serde_json::to_value(&pod).expect("json");
    json_patch::patch(&mut patched, &ops).expect("the patch applies");
    assert_eq!(patched, serde_json::to_value(&injected).expect("json"));
}
