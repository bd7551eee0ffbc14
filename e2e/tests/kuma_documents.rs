//! Documents as Kuma's clients write them apply to our control plane: the
//! server-owned fields Kuma's kumactl sends back (`status: {}`, `kri`,
//! `snis`, times) are accepted, fields nobody knows are dropped with a
//! warning unless the client asks for strict validation.

use std::collections::BTreeMap;

use kuma_crds::format::parse;
use kuma_e2e::process::{ControlPlane, Kumactl};
use kuma_e2e::{temp_dir, workspace_root};

/// The documents of a multi-document YAML file.
fn documents(file: &str) -> Vec<String> {
    let text = std::fs::read_to_string(workspace_root().join(file)).expect("testdata");
    text.split("\n---\n")
        .map(|d| d.trim().to_string())
        .filter(|d| !d.is_empty())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_from_kuma_clients_apply() {
    let cp = ControlPlane::start(
        "kuma-cp-documents",
        ControlPlane::env(&BTreeMap::new(), &temp_dir("documents-cp")),
    )
    .await;
    let kumactl = Kumactl::new(&cp.api());
    kumactl.wait_for_default_mesh().await;

    // Every writable document of the test data, in both forms, with the
    // `status: {}` Kuma's kumactl adds (and, in the Universal form, what
    // Kuma's REST API returns and its clients send back). Secrets first:
    // a Mesh names its CA's.
    let mut applied = 0;
    for file in [
        "crds/tests/testdata/universal.yaml",
        "crds/tests/testdata/kubernetes.yaml",
    ] {
        let mut docs: Vec<(bool, String)> = documents(file)
            .into_iter()
            .filter_map(|doc| {
                let resource = parse(&doc).expect("test data parses");
                let t = resource.resource_type();
                (!t.is_read_only()).then(|| (!t.name().ends_with("Secret"), doc))
            })
            .collect();
        docs.sort_by_key(|(not_secret, _)| *not_secret);
        for (_, doc) in docs {
            let universal = !doc.starts_with("apiVersion");
            let has_status = doc.lines().any(|l| l.starts_with("status:"));
            let mut sent = if has_status {
                format!("{doc}\n")
            } else {
                format!("{doc}\nstatus: {{}}\n")
            };
            if universal {
                sent.push_str("kri: kri_x_default___x_\nsnis: []\ncreationTime: \"2026-01-01T00:00:00Z\"\n");
            }
            let out = kumactl.run(&["apply", "-f", "-"], Some(&sent));
            assert!(
                out.status.success(),
                "{file}:\n{sent}\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            applied += 1;
        }
    }
    assert!(applied >= 40, "{applied} documents applied");

    // A field nobody knows: dropped with a warning by default, refused by
    // --strict, naming it either way; the stored resource holds only what
    // is known.
    let doc = "type: MeshTimeout\nname: unknown-fields\nmesh: default\nspec:\n  targetRef:\n    kind: Mesh\n  to:\n    - targetRef:\n        kind: Mesh\n      default:\n        idleTimeout: 20s\n        retries: 3\n";
    let strict = kumactl.run(&["apply", "--strict", "-f", "-"], Some(doc));
    assert!(!strict.status.success());
    let refused = String::from_utf8_lossy(&strict.stderr);
    assert!(
        refused.contains("spec.to[0].default.retries: unknown field"),
        "{refused}"
    );
    let lenient = kumactl.run(&["apply", "-f", "-"], Some(doc));
    assert!(lenient.status.success(), "{lenient:?}");
    let warned = String::from_utf8_lossy(&lenient.stderr);
    assert!(
        warned.contains("Warning: resource[0]: spec.to[0].default.retries: unknown field"),
        "{warned}"
    );
    let stored = kumactl.ok(&["get", "meshtimeout", "unknown-fields", "-o", "yaml"], None);
    assert!(
        stored.contains("idleTimeout: 20s") && !stored.contains("retries"),
        "{stored}"
    );

    // The REST API itself, as other clients (Kuma's kumactl, curl) use it:
    // a Warning header per dropped field; ?fieldValidation=Strict refuses.
    let http = reqwest::Client::new();
    let url = format!("{}/meshes/default/meshtimeouts/rest-unknown", cp.api());
    let body = serde_json::json!({
        "type": "MeshTimeout", "name": "rest-unknown", "mesh": "default",
        "spec": {"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": {"kind": "Mesh"},
            "default": {"idleTimeout": "20s", "retries": 3}}]},
        "status": {}
    });
    let r = http.put(&url).json(&body).send().await.expect("PUT");
    assert_eq!(r.status().as_u16(), 201);
    let warnings: Vec<&str> = r
        .headers()
        .get_all("warning")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert_eq!(
        warnings,
        [
            "299 - \"spec.to[0].default.retries: unknown field (allowed: connectionTimeout, http, idleTimeout)\""
        ]
    );
    let r = http
        .put(format!("{url}?fieldValidation=Strict"))
        .json(&body)
        .send()
        .await
        .expect("PUT strict");
    assert_eq!(r.status().as_u16(), 400);
    let text = r.text().await.expect("body");
    assert!(text.contains("spec.to[0].default.retries"), "{text}");
    let r = http
        .put(format!("{url}?fieldValidation=Loose"))
        .json(&body)
        .send()
        .await
        .expect("PUT bogus");
    assert_eq!(r.status().as_u16(), 400);
    let text = r.text().await.expect("body");
    assert!(text.contains("fieldValidation"), "{text}");
}
