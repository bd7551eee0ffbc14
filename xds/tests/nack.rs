//! A configuration Envoy rejects: the NACK is counted, Envoy keeps serving
//! with its last good configuration, the control plane does not loop
//! resending it, and the next good configuration is applied.

mod support;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use kuma_crds::resource::ResourceType;
use kuma_xds::resources::XdsType;
use support::cp::*;

/// A patch adding a cluster Envoy refuses: its connect timeout must be
/// longer than zero, which only Envoy checks.
const BAD_PATCH: &str = "type: MeshProxyPatch\nmesh: default\nname: bad\nspec:\n  targetRef:\n    kind: MeshService\n    name: web\n  default:\n    appendModifications:\n      - cluster:\n          operation: Add\n          value: |\n            name: rejected-cluster\n            connectTimeout: 0s\n            type: STATIC\n";

async fn scenario(delta: bool, net: u8) {
    let ip = |host: u8| format!("127.0.{net}.{host}");
    let cp = ControlPlane::start().await;
    cp.apply("type: Mesh\nname: default");
    let app = start_http_app(&ip(2), "backend", Arc::new(AtomicU64::new(0))).await;
    let (web_admin, backend_admin) = (free_port("127.0.0.1").await, free_port("127.0.0.1").await);
    let out = free_port(&ip(1)).await;
    cp.apply(&dataplane(
        "web",
        &ip(1),
        web_admin,
        &format!("    - port: {}\n      servicePort: 1\n      tags:\n        kuma.io/service: web\n        kuma.io/protocol: http\n", free_port(&ip(1)).await),
        &format!("    - port: {out}\n      address: {}\n      tags:\n        kuma.io/service: backend\n", ip(1)),
    ));
    cp.apply(&dataplane(
        "backend",
        &ip(2),
        backend_admin,
        &format!("    - port: {}\n      servicePort: {app}\n      tags:\n        kuma.io/service: backend\n        kuma.io/protocol: http\n", free_port(&ip(2)).await),
        "    []\n",
    ));
    let web = start_envoy(&cp, "web", delta, web_admin).await;
    let _backend = start_envoy(&cp, "backend", delta, backend_admin).await;
    let addr = format!("{}:{out}", ip(1));
    eventually("traffic flows", || async {
        let seen = bodies(&addr, "/", &[], 1).await?;
        (seen[0] == "200 backend")
            .then_some(())
            .ok_or(format!("{seen:?}"))
    })
    .await;
    web.wait_acked(&cp).await;
    let good_clusters = web.stats().await.get("cluster_manager.cds.version_text").cloned();

    cp.apply(BAD_PATCH);
    let rejected = eventually("Envoy rejects the clusters", || async {
        let stats = web.stats().await;
        let rejected: u64 = stats
            .get("cluster_manager.cds.update_rejected")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        (rejected > 0 && cp.nacks() > 0)
            .then_some(rejected)
            .ok_or(format!("rejected {rejected}, counted {}", cp.nacks()))
    })
    .await;
    let stats = web.stats().await;
    assert_eq!(
        stats.get("cluster_manager.cds.version_text").cloned(),
        good_clusters,
        "Envoy keeps the last good clusters"
    );
    assert_eq!(
        bodies(&addr, "/", &[], 5).await.expect("requests"),
        vec!["200 backend"; 5],
        "and keeps serving with them"
    );
    // Nothing changed, so nothing is resent: the rejection count stays.
    let again = bodies(&addr, "/", &[], 20).await.expect("requests");
    assert!(again.iter().all(|b| b == "200 backend"));
    let later: u64 = web
        .stats()
        .await
        .get("cluster_manager.cds.update_rejected")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert_eq!(
        later, rejected,
        "the rejected configuration is not resent in a loop"
    );

    // Removing the patch gives a configuration Envoy takes.
    cp.delete(ResourceType::MeshProxyPatch, "bad");
    eventually("Envoy applies the next good configuration", || async {
        let snapshot = cp.snapshots.get(&web.node).ok_or("no snapshot")?;
        let stats = web.stats().await;
        let applied = stats.get("cluster_manager.cds.version_text").map(String::as_str)
            == Some(snapshot.version(XdsType::Cluster));
        applied
            .then_some(())
            .ok_or(format!("{:?}", stats.get("cluster_manager.cds.version_text")))
    })
    .await;
    assert_eq!(
        bodies(&addr, "/", &[], 3).await.expect("requests"),
        vec!["200 backend"; 3]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_configuration_leaves_the_last_good_one_sotw() {
    scenario(false, 7).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_configuration_leaves_the_last_good_one_delta() {
    scenario(true, 8).await;
}
