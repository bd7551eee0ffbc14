//! The admission webhooks against a real API server: `kubectl apply` of
//! the project's invalid documents is refused with the per-field message
//! and nothing is stored; its valid documents are accepted and owned by
//! their Mesh; a Mesh being deleted takes no new policy; Pods outside
//! labelled namespaces, or labelled `disabled`, are not injected.

use std::time::Duration;

use kuma_e2e::eventually;
use kuma_e2e::k8s::Cluster;
use kuma_e2e::kube_mesh::KubeMesh;

fn documents(text: &str) -> Vec<String> {
    text.split("\n---\n").map(str::to_string).collect()
}

/// `kubectl apply` as the user jane (not the control plane).
fn apply_as_user(mesh: &KubeMesh, doc: &str) -> std::process::Output {
    Cluster::kubectl_with(
        &mesh.cluster.user_kubeconfig(),
        &["apply", "--server-side", "--force-conflicts", "-f", "-"],
        Some(doc),
    )
}

#[tokio::test]
async fn kubectl_writes_are_admitted_as_the_api_admits_them() {
    let mut mesh = KubeMesh::start(&[]).await;
    mesh.install_webhooks().await;
    // Someone overwrites a caBundle (an old CA, a reinstall): kuma-cp puts
    // its own back.
    let bundle = |mesh: &KubeMesh| {
        mesh.cluster.kubectl_ok(
            &[
                "get",
                "mutatingwebhookconfiguration",
                "kuma-admission-mutating-webhook-configuration",
                "-o",
                "jsonpath={.webhooks[0].clientConfig.caBundle}",
            ],
            None,
        )
    };
    let ours = bundle(&mesh);
    mesh.cluster.kubectl_ok(
        &[
            "patch",
            "mutatingwebhookconfiguration",
            "kuma-admission-mutating-webhook-configuration",
            "--type=json",
            "-p",
            r#"[{"op":"replace","path":"/webhooks/0/clientConfig/caBundle","value":"c3RhbGUK"}]"#,
        ],
        None,
    );
    eventually("the caBundle put back", Duration::from_secs(60), || async {
        let now = bundle(&mesh);
        (now == ours).then_some(()).ok_or(now)
    })
    .await;
    for ns in ["kuma-test", "demo", "playground", "kuma-demo"] {
        mesh.cluster.create_namespace(ns, &[]).await;
    }
    eventually("the default mesh", Duration::from_secs(60), || async {
        let out = mesh.cluster.kubectl(&["get", "mesh", "default"], None);
        out.status
            .success()
            .then_some(())
            .ok_or_else(|| "not yet".to_string())
    })
    .await;

    // Every invalid document: refused, with its message, nothing stored.
    let invalid = std::fs::read_to_string(
        kuma_e2e::workspace_root().join("crds/tests/testdata/invalid-kubernetes.yaml"),
    )
    .expect("corpus");
    let mut checked = 0;
    for doc in documents(&invalid) {
        let expect = doc
            .lines()
            .find_map(|l| l.strip_prefix("# expect: "))
            .expect("an expectation")
            .to_string();
        let out = apply_as_user(&mesh, &doc);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "accepted:\n{doc}");
        assert!(stderr.contains(&expect), "expected {expect:?}, got:\n{stderr}");
        let name = doc
            .lines()
            .find_map(|l| l.trim().strip_prefix("name: "))
            .expect("a name");
        let kind = doc
            .lines()
            .find_map(|l| l.strip_prefix("kind: "))
            .expect("a kind")
            .to_lowercase();
        let ns = doc
            .lines()
            .find_map(|l| l.trim().strip_prefix("namespace: "))
            .unwrap_or("default");
        let stored = mesh.cluster.kubectl(&["get", &kind, name, "-n", ns], None);
        assert!(!stored.status.success(), "{kind} {name} was stored");
        checked += 1;
    }
    assert!(checked >= 19, "{checked} documents");

    // Every valid document (but those only kuma-cp writes) is accepted.
    let valid =
        std::fs::read_to_string(kuma_e2e::workspace_root().join("crds/tests/testdata/kubernetes.yaml"))
            .expect("corpus");
    for doc in documents(&valid) {
        let out = apply_as_user(&mesh, &doc);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        if doc.contains("kind: DataplaneInsight") {
            assert!(
                !out.status.success() && stderr.contains("written by the control plane only"),
                "{stderr}"
            );
            continue;
        }
        assert!(out.status.success(), "refused:\n{doc}\n{stderr}");
    }
    // The defaulter computed Kuma's labels and the owner reference names the Mesh.
    let out = mesh.cluster.kubectl_ok(
        &["get", "meshtrafficpermissions", "-n", "kuma-system", "-o", "yaml"],
        None,
    );
    assert!(out.contains("kuma.io/env: kubernetes"), "{out}");
    let default_uid = mesh.cluster.kubectl_ok(
        &["get", "mesh", "default", "-o", "jsonpath={.metadata.uid}"],
        None,
    );
    let owners = mesh.cluster.kubectl_ok(
        &[
            "get",
            "meshtrafficpermissions",
            "-n",
            "kuma-system",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}={.metadata.ownerReferences[*].kind}/{.metadata.ownerReferences[*].name}/{.metadata.ownerReferences[*].uid}{\"\\n\"}{end}",
        ],
        None,
    );
    assert!(!owners.trim().is_empty(), "no MeshTrafficPermission stored");
    for line in owners.lines() {
        assert!(
            line.ends_with(&format!("=Mesh/default/{default_uid}")),
            "owner reference: {line}"
        );
    }

    // A mesh being deleted (held by a finalizer) takes no new policy.
    mesh.cluster.apply(
        "apiVersion: kuma.io/v1alpha1\nkind: Mesh\nmetadata:\n  name: leaving\n  finalizers:\n    - e2e.kuma.io/hold\n",
    );
    mesh.cluster
        .kubectl_ok(&["delete", "mesh", "leaving", "--wait=false"], None);
    let out = apply_as_user(
        &mesh,
        "apiVersion: kuma.io/v1alpha1\nkind: MeshTimeout\nmetadata:\n  name: too-late\n  namespace: kuma-system\n  labels:\n    kuma.io/mesh: leaving\nspec:\n  targetRef:\n    kind: Mesh\n  to:\n    - targetRef:\n        kind: Mesh\n      default:\n        idleTimeout: 10s\n",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains("mesh \"leaving\" is being deleted: nothing new can be added to it"),
        "{stderr}"
    );
    mesh.cluster.kubectl_ok(
        &[
            "patch",
            "mesh",
            "leaving",
            "--type=merge",
            "-p",
            "{\"metadata\":{\"finalizers\":null}}",
        ],
        None,
    );

    // Deleting a mesh with Dataplanes is refused.
    let out = Cluster::kubectl_with(
        &mesh.cluster.user_kubeconfig(),
        &["delete", "mesh", "default"],
        None,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("there are still some dataplanes attached"),
        "{stderr}"
    );

    // Pods nobody asked to inject are left alone.
    mesh.cluster
        .create_namespace("injected", &[("kuma.io/sidecar-injection", "enabled")])
        .await;
    mesh.cluster.apply(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: opted-out\n  namespace: injected\n  labels:\n    kuma.io/sidecar-injection: disabled\nspec:\n  containers:\n    - name: app\n      image: nginx\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: plain\n  namespace: kuma-test\nspec:\n  containers:\n    - name: app\n      image: nginx\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: injected\n  namespace: injected\nspec:\n  containers:\n    - name: app\n      image: nginx\n",
    );
    let containers = |ns: &str, pod: &str| {
        mesh.cluster.kubectl_ok(
            &[
                "get",
                "pod",
                pod,
                "-n",
                ns,
                "-o",
                "jsonpath={.spec.initContainers[*].name} {.spec.containers[*].name}",
            ],
            None,
        )
    };
    assert_eq!(containers("injected", "opted-out").trim(), "app");
    assert_eq!(containers("kuma-test", "plain").trim(), "app");
    assert_eq!(containers("injected", "injected"), "kuma-init kuma-sidecar app");
    // Applying the same Pod again changes nothing.
    let before = mesh.cluster.kubectl_ok(
        &[
            "get",
            "pod",
            "injected",
            "-n",
            "injected",
            "-o",
            "jsonpath={.spec}",
        ],
        None,
    );
    mesh.cluster.apply(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: injected\n  namespace: injected\nspec:\n  containers:\n    - name: app\n      image: nginx\n",
    );
    let after = mesh.cluster.kubectl_ok(
        &[
            "get",
            "pod",
            "injected",
            "-n",
            "injected",
            "-o",
            "jsonpath={.spec}",
        ],
        None,
    );
    assert_eq!(before, after);

    // The admission server answers over TLS only: a plaintext caller gets
    // no admission decision.
    let review = serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {"uid": "1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "injected", "operation": "CREATE", "userInfo": {},
            "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                "spec": {"containers": [{"name": "app", "image": "nginx"}]}}}
    });
    let plaintext = reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{}/inject-sidecar",
            mesh.admission_port()
        ))
        .json(&review)
        .send()
        .await;
    match plaintext {
        Err(_) => {}
        Ok(r) => {
            let status = r.status();
            let body = r.text().await.unwrap_or_default();
            assert!(
                !status.is_success() && !body.contains("patch"),
                "a plaintext request was answered: {status} {body}"
            );
        }
    }

    // The webhook server down (kuma-cp stopped) with failurePolicy Fail:
    // a Pod of an injected namespace is refused with the reason, and
    // nothing of it is stored; once kuma-cp is back it is injected whole.
    const DURING: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: during-outage\n  namespace: injected\nspec:\n  containers:\n    - name: app\n      image: nginx\n";
    mesh.cp.proc.kill();
    let out = mesh.cluster.kubectl(&["apply", "-f", "-"], Some(DURING));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains("failed calling webhook \"namespace-kuma-injector.kuma.io\"")
            && stderr.contains("connection refused"),
        "{stderr}"
    );
    let stored = mesh
        .cluster
        .kubectl(&["get", "pod", "during-outage", "-n", "injected"], None);
    assert!(
        !stored.status.success(),
        "a Pod was stored while the injector was down"
    );
    let env = mesh.cp.env.clone();
    mesh.cp = kuma_e2e::process::ControlPlane::start("kuma-cp-again", env).await;
    let back = std::time::Instant::now();
    eventually("the Pod is admitted again", Duration::from_secs(60), || async {
        let out = mesh.cluster.kubectl(&["apply", "-f", "-"], Some(DURING));
        out.status
            .success()
            .then_some(())
            .ok_or_else(|| String::from_utf8_lossy(&out.stderr).to_string())
    })
    .await;
    eprintln!("Pods admitted again {:?} after kuma-cp was ready", back.elapsed());
    let injected = mesh.cluster.kubectl_ok(
        &[
            "get",
            "pod",
            "during-outage",
            "-n",
            "injected",
            "-o",
            "jsonpath={.spec.initContainers[*].name} {.spec.containers[*].name}",
        ],
        None,
    );
    assert_eq!(injected, "kuma-init kuma-sidecar app");
}
