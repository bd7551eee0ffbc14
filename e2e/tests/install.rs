//! Installing on Kubernetes, on a real API server: `config/default`
//! renders with `kubectl kustomize` and every object passes server-side
//! dry-run; `kumactl install crds` gives CRDs the API server establishes;
//! `kumactl install control-plane` (with Kuma's flags) applies, and
//! deleting what it printed leaves no Kuma object behind. (That kuma-cp
//! works under `config/rbac` and with `config/webhook` is shown by
//! `kubernetes_mesh.rs`, which runs it as that ServiceAccount.)

use std::process::Command;
use std::time::Duration;

use kuma_e2e::k8s::{Cluster, Options};
use kuma_e2e::{bin_dir, eventually, workspace_root};

fn kumactl(args: &[&str]) -> String {
    let out = Command::new(bin_dir().join("kumactl"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("kumactl: {e}"));
    assert!(
        out.status.success(),
        "kumactl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn kinds(yaml: &str) -> Vec<String> {
    let mut kinds: Vec<String> = yaml
        .lines()
        .filter_map(|l| l.strip_prefix("kind: "))
        .map(str::to_string)
        .collect();
    kinds.sort();
    kinds.dedup();
    kinds
}

#[tokio::test]
async fn every_install_path_gives_objects_the_api_server_accepts() {
    let cluster = Cluster::start(Options {
        controller_manager: true,
        ..Default::default()
    })
    .await;

    // kustomize: renders, and the API server accepts every object.
    let config = workspace_root().join("config/default");
    let rendered = cluster.kubectl_ok(&["kustomize", &config.display().to_string()], None);
    assert_eq!(
        kinds(&rendered),
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "CustomResourceDefinition",
            "Deployment",
            "MutatingWebhookConfiguration",
            "Namespace",
            "PodDisruptionBudget",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount",
            "ValidatingWebhookConfiguration"
        ]
    );
    // Namespaced objects need their namespace to exist for a dry run.
    cluster.kubectl_ok(&["create", "namespace", "kuma-system"], None);
    let dry = cluster.kubectl_ok(
        &["apply", "--server-side", "--dry-run=server", "-f", "-"],
        Some(&rendered),
    );
    assert_eq!(
        dry.matches("serverside-applied (server dry run)").count(),
        32,
        "{dry}"
    );
    cluster.kubectl_ok(&["delete", "namespace", "kuma-system", "--wait=false"], None);

    // kumactl install crds: the API server establishes every one.
    let crds = kumactl(&["install", "crds"]);
    cluster.apply_crds(&["-f", "-"], Some(&crds));
    let listed = cluster.kubectl_ok(&["get", "crd", "-o", "name"], None);
    assert_eq!(listed.matches(".kuma.io").count(), 21, "{listed}");

    // kumactl install control-plane, with Kuma's flags.
    let manifests = kumactl(&[
        "install",
        "control-plane",
        "--namespace",
        "mesh-system",
        "--control-plane-replicas",
        "2",
        "--control-plane-registry",
        "registry.example",
        "--injector-failure-policy",
        "Ignore",
    ]);
    cluster.kubectl_ok(&["apply", "--server-side", "-f", "-"], Some(&manifests));
    let replicas = cluster.kubectl_ok(
        &[
            "get",
            "deployment",
            "kuma-control-plane",
            "-n",
            "mesh-system",
            "-o",
            "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].image}",
        ],
        None,
    );
    assert_eq!(replicas, "2 registry.example/kuma-cp:0.1.0");
    let secret = cluster.kubectl_ok(
        &[
            "get",
            "secret",
            "kuma-tls-cert",
            "-n",
            "mesh-system",
            "-o",
            "jsonpath={.data}",
        ],
        None,
    );
    assert!(
        secret.contains("ca.crt") && secret.contains("tls.key"),
        "{secret}"
    );
    let policies = cluster.kubectl_ok(
        &[
            "get",
            "mutatingwebhookconfiguration",
            "kuma-admission-mutating-webhook-configuration",
            "-o",
            "jsonpath={range .webhooks[*]}{.name}={.failurePolicy}@{.clientConfig.service.namespace} {end}",
        ],
        None,
    );
    assert!(
        policies.contains("namespace-kuma-injector.kuma.io=Ignore@mesh-system"),
        "{policies}"
    );
    assert!(
        policies.contains("mesh.defaulter.kuma-admission.kuma.io=Fail@mesh-system"),
        "{policies}"
    );

    // Deleting what was printed leaves nothing of Kuma's. kubectl does not
    // wait: the API server finalises 21 CRDs (and the namespace) in the
    // background, which once took over two minutes on a loaded CI machine;
    // the bounded wait below is the assertion, and it names what is left
    // with the CRDs' conditions when it times out.
    cluster.kubectl_ok(&["delete", "-f", "-", "--wait=false"], Some(&manifests));
    eventually("nothing of Kuma's is left", Duration::from_secs(300), || async {
        let left = cluster.kubectl_ok(
            &[
                "get",
                "namespace,clusterrole,clusterrolebinding,crd,mutatingwebhookconfiguration,validatingwebhookconfiguration",
                "-o",
                // The Terminating condition says why a CRD is still there.
                "jsonpath={range .items[*]}{.kind}/{.metadata.name} {.status.conditions[?(@.type==\"Terminating\")].message}{\"\\n\"}{end}",
            ],
            None,
        );
        let kuma: Vec<&str> = left
            .lines()
            .filter(|l| l.contains("kuma") || l.contains("mesh-system"))
            .collect();
        kuma.is_empty().then_some(()).ok_or(kuma.join("\n"))
    })
    .await;
}
