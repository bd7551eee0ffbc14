//! Installing with `kubectl apply -k config/default`, end to end: the test
//! node agent runs the kuma-cp Deployment's two Pods as written (our
//! binary for the image, the manifest's args, env and volumes, the
//! ServiceAccount's token through the in-cluster config, so a verb missing
//! from `config/rbac` fails); their webhooks are called through the
//! Service; a workload in a labelled namespace is injected and carries
//! traffic through the mesh.

use std::time::Duration;

use kuma_e2e::in_cluster::InCluster;
use kuma_e2e::{bin_dir, eventually, workspace_root};

/// The `kuma-tls-cert` Secret `config/default` mounts, as `kumactl install
/// control-plane` generates it.
fn tls_secret() -> String {
    let out = std::process::Command::new(bin_dir().join("kumactl"))
        .args(["install", "control-plane"])
        .output()
        .expect("kumactl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.split("\n---\n")
        .find(|doc| doc.contains("kind: Secret"))
        .expect("a Secret in kumactl's output")
        .to_string()
}

#[tokio::test]
async fn config_default_runs_kuma_cp_as_pods_that_inject_and_serve_a_mesh() {
    let k = InCluster::start().await;
    k.cluster
        .kubectl_ok(&["create", "namespace", "kuma-system"], None);
    k.cluster.apply(&tls_secret());
    let config = workspace_root().join("config/default");
    k.cluster.kubectl_ok(
        &["apply", "--server-side", "-k", &config.display().to_string()],
        None,
    );
    let cps = k.control_plane_ready("kuma-system", 2).await;

    // kuma-cp fills in its webhooks' caBundle; the API server then calls
    // them through the Service (a bad kuma.io resource is refused, naming
    // the field).
    eventually("webhook caBundles", Duration::from_secs(60), || async {
        let bundles = k.cluster.kubectl_ok(
            &[
                "get",
                "mutatingwebhookconfiguration,validatingwebhookconfiguration",
                "-o",
                "jsonpath={.items[*].webhooks[*].clientConfig.caBundle}",
            ],
            None,
        );
        (bundles.split_whitespace().count() == 5)
            .then_some(())
            .ok_or(bundles)
    })
    .await;
    let refused = k.cluster.kubectl(
        &["apply", "-f", "-"],
        Some("apiVersion: kuma.io/v1alpha1\nkind: MeshTimeout\nmetadata:\n  name: bad\n  namespace: kuma-system\n  labels:\n    kuma.io/mesh: default\nspec:\n  targetRef:\n    kind: Mesh\n  to:\n    - targetRef:\n        kind: Mesh\n      default:\n        idleTimeout: soon\n"),
    );
    let stderr = String::from_utf8_lossy(&refused.stderr).to_string();
    assert!(
        !refused.status.success()
            && stderr.contains("kuma-admission.kuma.io")
            && stderr.contains("spec.to[0].default.idleTimeout"),
        "{stderr}"
    );

    let started = std::time::Instant::now();
    k.echo_through_the_mesh().await;
    eprintln!(
        "config/default: injected echo Pods carry traffic {:.1} s after both kuma-cp Pods were ready",
        started.elapsed().as_secs_f64()
    );
    let forbidden = k.forbidden("kuma-system", &cps);
    assert!(forbidden.is_empty(), "{}", forbidden.join("\n"));
}
