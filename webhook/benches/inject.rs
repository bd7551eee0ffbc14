//! Injection webhook benchmark: AdmissionReviews of a Deployment's Pod
//! (two containers, HTTP and TCP probes, a Service selecting it) through
//! the real router — decoding, precheck, injection, JSON Patch, encoding —
//! on one thread (one core). Prints p50/p99 per request and Pods per
//! second; asserts nothing. Run: `cargo bench -p kuma-webhook`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use k8s_openapi::api::core::v1::{Pod, Service};
use kuma_crds::admission::{Context, Environment};
use kuma_crds::kubernetes::PodOwners;
use kuma_webhook::injector::{InjectorConfig, NamespaceFacts};
use kuma_webhook::server::{Cluster, MeshFacts, Webhooks, router};
use serde_json::json;
use tower::ServiceExt;

struct FixedCluster {
    service: Service,
}

#[async_trait::async_trait]
impl Cluster for FixedCluster {
    async fn namespace(&self, name: &str) -> Result<NamespaceFacts, String> {
        Ok(NamespaceFacts {
            name: name.into(),
            labels: [("kuma.io/sidecar-injection".to_string(), "enabled".to_string())].into(),
            annotations: Default::default(),
        })
    }
    async fn mesh(&self, _: &str) -> Result<Option<MeshFacts>, String> {
        Ok(Some(MeshFacts {
            uid: "uid".into(),
            deleting: false,
        }))
    }
    async fn services(&self, _: &str) -> Result<Vec<Service>, String> {
        Ok(vec![self.service.clone()])
    }
    async fn pod_owners(&self, _: &Pod) -> Result<PodOwners, String> {
        Ok(PodOwners {
            owners_of_owner: vec![("Deployment".into(), "web".into())],
            owner_found: true,
        })
    }
    async fn dataplanes_in_mesh(&self, _: &str) -> Result<usize, String> {
        Ok(0)
    }
}

fn review(i: usize) -> Vec<u8> {
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "web-5d4f8-", "namespace": "shop", "labels": {"app": "web", "pod-template-hash": "5d4f8"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d4f8", "uid": "u", "controller": true}]},
        "spec": {"containers": [
            {"name": "web", "image": "nginx", "ports": [{"containerPort": 8080, "name": "http"}],
             "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "timeoutSeconds": 3},
             "livenessProbe": {"tcpSocket": {"port": 8080}}},
            {"name": "logs", "image": "busybox", "command": ["sh", "-c", "tail -f /dev/null"]}
        ]},
    });
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": format!("uid-{i}"),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "shop", "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod, "dryRun": false,
        },
    }))
    .unwrap_or_default()
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]},
    }))
    .unwrap_or_default();
    let webhooks = Arc::new(Webhooks {
        cluster: Arc::new(FixedCluster { service }),
        injector: InjectorConfig {
            ca_cert_pem: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into(),
            ..InjectorConfig::default()
        },
        admission: Context::new(Environment::Kubernetes),
        trusted_users: Vec::new(),
    });
    let app = router(webhooks);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let bodies: Vec<Vec<u8>> = (0..1000).map(review).collect();
    let mut latencies = Vec::new();
    runtime.block_on(async {
        // Warm up, then measure.
        for round in 0..2 {
            latencies.clear();
            let started = Instant::now();
            for body in &bodies {
                let request = axum::http::Request::post("/inject-sidecar?timeout=10s")
                    .header("content-type", "application/json")
                    .body(Body::from(body.clone()))
                    .unwrap_or_default();
                let t = Instant::now();
                let response = app.clone().oneshot(request).await.unwrap_or_else(|e| match e {});
                let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                    .await
                    .unwrap_or_default();
                latencies.push(t.elapsed());
                assert!(bytes.windows(7).any(|w| w == b"\"patch\""), "injected");
            }
            if round == 1 {
                let total = started.elapsed();
                latencies.sort();
                let p = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q) as usize];
                println!(
                    "injection webhook, {} Pods on one thread: p50 {:?}, p99 {:?}, max {:?}, {:.0} Pods/s",
                    latencies.len(),
                    p(0.50),
                    p(0.99),
                    latencies.last().copied().unwrap_or(Duration::ZERO),
                    latencies.len() as f64 / total.as_secs_f64()
                );
            }
        }
    });
}
