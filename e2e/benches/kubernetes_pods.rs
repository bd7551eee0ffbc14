//! Kubernetes mode at scale, against the real API server: 1,000 Pods with
//! Kuma's sidecar created at once (bound to a Node nobody runs; the bench
//! reports them Running and Ready as a kubelet would) → every Dataplane
//! reconciled: total time, Dataplane writes and reconciliations (kuma-cp's
//! `/metrics`), kuma-cp's RSS. Prints figures; asserts nothing.
//! Run: `cargo bench -p kuma-e2e --bench kubernetes_pods`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kuma_e2e::k8s::{Cluster, Options};
use kuma_e2e::kube_mesh::kube_client;
use kuma_e2e::process::ControlPlane;
use serde_json::json;

const PODS: usize = 1000;
const SERVICES: usize = 50;

async fn metric(cp: &ControlPlane, name: &str) -> u64 {
    let text = reqwest::get(format!("http://127.0.0.1:{}/metrics", cp.diag_port))
        .await
        .expect("metrics")
        .text()
        .await
        .unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

#[tokio::main]
async fn main() {
    let cluster = Cluster::start(Options::default()).await;
    cluster.install_crds();
    cluster.create_namespace("kuma-system", &[]).await;
    cluster.create_namespace("bench", &[]).await;
    let mut env = BTreeMap::new();
    env.insert("KUMA_ENVIRONMENT".to_string(), "kubernetes".to_string());
    env.insert("KUBECONFIG".to_string(), cluster.kubeconfig.display().to_string());
    let work_dir = kuma_e2e::temp_dir("bench-cp");
    let cp = ControlPlane::start("kuma-cp", ControlPlane::env(&env, &work_dir)).await;
    let client = kube_client(&cluster.kubeconfig).await;
    let services = (0..SERVICES)
        .map(|s| {
            format!(
                "apiVersion: v1\nkind: Service\nmetadata:\n  name: svc-{s}\n  namespace: bench\nspec:\n  selector:\n    app: app-{s}\n  ports:\n    - port: 80\n      targetPort: 8080\n"
            )
        })
        .collect::<Vec<_>>()
        .join("---\n");
    cluster.apply(&services);
    cluster.apply("apiVersion: v1\nkind: Node\nmetadata:\n  name: bench-node\n");
    // No kube-controller-manager here: the ServiceAccount it would create.
    cluster.apply("apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: default\n  namespace: bench\n");
    // Settle: the default mesh and its defaults.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss_before = cp.proc.rss_kib();
    let writes_before = metric(&cp, "kuma_cp_dataplane_writes_total").await;
    let reconciled_before = metric(&cp, "kuma_cp_pod_reconciliations_total").await;

    let pods: Api<Pod> = Api::namespaced(client.clone(), "bench");
    let started = Instant::now();
    futures::stream::iter(0..PODS)
        .for_each_concurrent(32, |i| {
            let pods = pods.clone();
            async move {
                let pod: Pod = serde_json::from_value(json!({
                    "metadata": {"name": format!("pod-{i}"), "labels": {"app": format!("app-{}", i % SERVICES)},
                        "annotations": {"kuma.io/sidecar-injected": "true"}},
                    "spec": {"nodeName": "bench-node", "containers": [
                        {"name": "app", "image": "nginx", "ports": [{"containerPort": 8080}]},
                        {"name": "kuma-sidecar", "image": "kuma/kuma-dp"}]},
                }))
                .expect("pod");
                pods.create(&PostParams::default(), &pod).await.expect("create");
                let status = json!({"status": {"phase": "Running", "podIP": format!("10.250.{}.{}", i / 250, i % 250 + 1),
                    "conditions": [{"type": "Ready", "status": "True"}]}});
                pods.patch_status(&format!("pod-{i}"), &PatchParams::default(), &Patch::Merge(&status))
                    .await
                    .expect("status");
            }
        })
        .await;
    let created = started.elapsed();
    let dataplanes = Api::<kube::api::DynamicObject>::namespaced_with(
        client.clone(),
        "bench",
        &kube::api::ApiResource {
            group: "kuma.io".into(),
            version: "v1alpha1".into(),
            api_version: "kuma.io/v1alpha1".into(),
            kind: "Dataplane".into(),
            plural: "dataplanes".into(),
        },
    );
    loop {
        let ready = dataplanes
            .list(&ListParams::default())
            .await
            .map(|l| {
                l.items
                    .iter()
                    .filter(|d| d.data.pointer("/spec/networking/address").is_some())
                    .count()
            })
            .unwrap_or(0);
        if ready >= PODS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let total = started.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let writes = metric(&cp, "kuma_cp_dataplane_writes_total").await - writes_before;
    let reconciled = metric(&cp, "kuma_cp_pod_reconciliations_total").await - reconciled_before;
    let rss_after = cp.proc.rss_kib();
    println!(
        "{PODS} Pods ({SERVICES} Services) created and reported Ready in {created:?}; all {PODS} Dataplanes written {total:?} after the first create; {writes} Dataplane writes, {reconciled} reconciliations; kuma-cp RSS {} MiB -> {} MiB",
        rss_before / 1024,
        rss_after / 1024
    );
}
