//! Kubernetes mode at scale, against the real API server. Prints figures;
//! asserts nothing. Run: `cargo bench -p kuma-e2e --bench kubernetes_pods`.
//!
//! 1. 1,000 Pods with Kuma's sidecar created at once (bound to a Node
//!    nobody runs; the bench reports them Running and Ready as a kubelet
//!    would) → every Dataplane reconciled: total time, Dataplane writes,
//!    reconciliations and the API requests kuma-cp's client made (kuma-cp's
//!    `/metrics`), kuma-cp's RSS.
//! 2. Among those, a client Pod whose kuma-dp and real Envoy run here on
//!    loopback: one at a time, a Pod of another Service turns Ready (the
//!    bench patches its status, as the kubelet does) → the endpoint is
//!    healthy in the client's Envoy (its `membership_healthy` gauge):
//!    p50/p99/max from the status write's return.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kuma_e2e::k8s::{Cluster, Options};
use kuma_e2e::kube_mesh::{addressed_dataplanes, kube_client, kuma_api_resource};
use kuma_e2e::process::ControlPlane;
use serde_json::json;

const PODS: usize = 1000;
const SERVICES: usize = 50;
/// Pods turned Ready one at a time in the second part.
const READY_ROUNDS: usize = 100;

/// The growth of every series starting with `name` between two readings.
fn grown(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>, name: &str) -> BTreeMap<String, u64> {
    after
        .iter()
        .filter(|(series, _)| series.starts_with(name))
        .map(|(series, v)| {
            let label = series.strip_prefix(name).unwrap_or(series).to_string();
            (label, v - before.get(series).copied().unwrap_or(0))
        })
        .collect()
}

fn pod_json(name: &str, app: &str, annotations: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": app}, "annotations": annotations},
        "spec": {"nodeName": "bench-node", "containers": [
            {"name": "app", "image": "nginx", "ports": [{"containerPort": 8080}]},
            {"name": "kuma-sidecar", "image": "kuma/kuma-dp"}]},
    }))
    .expect("pod")
}

/// Reports the Pod Running at `ip`, Ready or not, as the kubelet would.
async fn report(pods: &Api<Pod>, name: &str, ip: &str, ready: bool) {
    let status = json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("status");
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
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
        .map(|s| format!("svc-{s}"))
        .chain(["svc-ready".to_string()])
        .map(|name| {
            let app = name.replacen("svc-", "app-", 1);
            format!(
                "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: bench\nspec:\n  selector:\n    app: {app}\n  ports:\n    - port: 80\n      targetPort: 8080\n"
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
    let pods: Api<Pod> = Api::namespaced(client.clone(), "bench");
    let dataplanes = Api::<kube::api::DynamicObject>::namespaced_with(
        client.clone(),
        "bench",
        &kuma_api_resource("Dataplane", "dataplanes"),
    );
    many_pods_at_once(&cp, &pods, &dataplanes).await;
    ready_to_endpoint(&cp, &pods, &dataplanes).await;
}

/// Part 1: [`PODS`] Pods created at once → every Dataplane written.
async fn many_pods_at_once(cp: &ControlPlane, pods: &Api<Pod>, dataplanes: &Api<kube::api::DynamicObject>) {
    let rss_before = cp.proc.rss_kib();
    let before = cp.metrics().await;
    let started = Instant::now();
    futures::stream::iter(0..PODS)
        .for_each_concurrent(32, |i| async move {
            let name = format!("pod-{i}");
            let pod = pod_json(
                &name,
                &format!("app-{}", i % SERVICES),
                json!({"kuma.io/sidecar-injected": "true"}),
            );
            pods.create(&PostParams::default(), &pod).await.expect("create");
            report(pods, &name, &format!("10.250.{}.{}", i / 250, i % 250 + 1), true).await;
        })
        .await;
    let created = started.elapsed();
    loop {
        let ready = addressed_dataplanes(dataplanes).await;
        if ready >= PODS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let total = started.elapsed();
    // Whatever the controllers still do after the last write is counted too.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = cp.metrics().await;
    let writes = grown(&before, &after, "kuma_cp_dataplane_writes_total");
    let reconciled = grown(&before, &after, "kuma_cp_pod_reconciliations_total");
    let requests = grown(&before, &after, "kuma_cp_kube_api_requests_total");
    let rss_after = cp.proc.rss_kib();
    println!(
        "{PODS} Pods ({SERVICES} Services) created and reported Ready in {created:?}; all {PODS} Dataplanes written {total:?} after the first create; {} Dataplane writes, {} reconciliations; kuma-cp API requests {} ({requests:?}); kuma-cp RSS {} MiB -> {} MiB",
        writes.values().sum::<u64>(),
        reconciled.values().sum::<u64>(),
        requests.values().sum::<u64>(),
        rss_before / 1024,
        rss_after / 1024
    );
}

/// Part 2: Pods turning Ready one at a time → healthy in a client's Envoy.
async fn ready_to_endpoint(cp: &ControlPlane, pods: &Api<Pod>, dataplanes: &Api<kube::api::DynamicObject>) {
    let admin_port = kuma_e2e::free_port("127.0.0.1");
    let client_ip = "127.0.0.77";
    let annotations = json!({
        "kuma.io/sidecar-injected": "true",
        "kuma.io/envoy-admin-port": admin_port.to_string(),
        "kuma.io/transparent-proxying": "enabled",
        "kuma.io/transparent-proxying-inbound-port": "15006",
        "kuma.io/transparent-proxying-outbound-port": "15001",
    });
    let created = pods
        .create(
            &PostParams::default(),
            &pod_json("bench-client", "bench-client", annotations),
        )
        .await
        .expect("client pod");
    report(pods, "bench-client", client_ip, true).await;
    for i in 0..READY_ROUNDS {
        let name = format!("ready-{i}");
        pods.create(
            &PostParams::default(),
            &pod_json(&name, "app-ready", json!({"kuma.io/sidecar-injected": "true"})),
        )
        .await
        .expect("create");
        report(pods, &name, &format!("10.251.0.{}", i + 1), false).await;
    }
    let token = kuma_e2e::node::service_account_token(&pods.clone().into_client(), &created).await;
    let _dp = kuma_e2e::process::start_existing_kuma_dp_delta(
        "bench-client-dp",
        cp,
        "default",
        "bench-client.bench",
        &token,
        kuma_e2e::free_port("127.0.0.1"),
    );
    let http = reqwest::Client::new();
    let stat = "cluster.svc-ready_bench_svc_80.membership_healthy".to_string();
    let healthy = || {
        let http = http.clone();
        let url = format!("http://127.0.0.1:{admin_port}/stats?filter=^{stat}$");
        let stat = stat.clone();
        async move {
            let text = http.get(url).send().await.ok()?.text().await.ok()?;
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{stat}: ")))
                .and_then(|v| v.trim().parse::<usize>().ok())
        }
    };
    kuma_e2e::eventually(
        "the client's Envoy has the cluster",
        Duration::from_secs(60),
        || async { healthy().await.ok_or_else(|| "no cluster yet".to_string()) },
    )
    .await;
    // When each Dataplane is written Ready: splits the delay in two.
    let written_ready: Arc<Mutex<BTreeMap<String, Instant>>> = Arc::default();
    let watch = tokio::spawn({
        let written_ready = written_ready.clone();
        let events = kube::runtime::watcher(dataplanes.clone(), kube::runtime::watcher::Config::default());
        async move {
            let mut events = std::pin::pin!(kube::runtime::WatchStreamExt::applied_objects(events));
            while let Some(Ok(dataplane)) = events.next().await {
                let ready = dataplane
                    .data
                    .pointer("/spec/networking/inbound/0/state")
                    .is_some_and(|s| s == "Ready");
                if let (true, Some(name)) = (ready, dataplane.metadata.name) {
                    let mut seen = written_ready.lock().unwrap_or_else(|e| e.into_inner());
                    seen.entry(name).or_insert_with(Instant::now);
                }
            }
        }
    });
    let mut delays = Vec::with_capacity(READY_ROUNDS);
    let mut to_dataplane = Vec::with_capacity(READY_ROUNDS);
    for i in 0..READY_ROUNDS {
        let name = format!("ready-{i}");
        report(pods, &name, &format!("10.251.0.{}", i + 1), true).await;
        let written = Instant::now();
        // Envoy's admin server is polled only once the Dataplane is written
        // (seen by the watch, which costs nothing): each poll costs Envoy
        // CPU the control plane shares.
        let seen = || {
            written_ready
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(&name)
        };
        while !seen() && written.elapsed() < Duration::from_secs(30) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        loop {
            if healthy().await.is_some_and(|n| n > i) {
                break;
            }
            assert!(
                written.elapsed() < Duration::from_secs(30),
                "{name} never reached the client's Envoy"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        delays.push(written.elapsed());
        if let Some(at) = written_ready.lock().unwrap_or_else(|e| e.into_inner()).get(&name) {
            to_dataplane.push(at.saturating_duration_since(written));
        }
    }
    watch.abort();
    delays.sort();
    to_dataplane.sort();
    println!(
        "a Pod turning Ready -> healthy in a client's Envoy (delta xDS, {READY_ROUNDS} Pods, one at a time, {} Pods in the mesh): p50 {:?}, p99 {:?}, max {:?}",
        PODS + READY_ROUNDS + 1,
        percentile(&delays, 50.0),
        percentile(&delays, 99.0),
        delays[delays.len() - 1],
    );
    if !to_dataplane.is_empty() {
        println!(
            "  of which Pod status -> Dataplane written Ready (seen by a watch, {} Pods): p50 {:?}, p99 {:?}",
            to_dataplane.len(),
            percentile(&to_dataplane, 50.0),
            percentile(&to_dataplane, 99.0),
        );
    }
}
