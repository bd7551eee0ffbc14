//! End to end with real Envoys: the control plane serves `/bootstrap` and
//! ADS on one port, Envoys start from the bootstraps it returns, and real
//! HTTP and TCP apps on loopback answer behind them. Policies changed while
//! the Envoys run change the traffic, in both the state-of-the-world and
//! the delta protocol, and Envoy reports every pushed version applied.

mod support;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use kuma_crds::resource::ResourceType;
use support::cp::*;

const SPLIT_80_20: &str = "type: MeshHTTPRoute\nmesh: default\nname: backend-route\nspec:\n  targetRef:\n    kind: MeshService\n    name: web\n  to:\n    - targetRef:\n        kind: MeshService\n        name: backend\n      rules:\n        - matches:\n            - path:\n                type: PathPrefix\n                value: /\n          default:\n            backendRefs:\n              - kind: MeshServiceSubset\n                name: backend\n                tags:\n                  version: v1\n                weight: 80\n              - kind: MeshServiceSubset\n                name: backend\n                tags:\n                  version: v2\n                weight: 20\n";

async fn scenario(delta: bool, net: u8) {
    let ip = |host: u8| format!("127.0.{net}.{host}");
    let cp = ControlPlane::start().await;
    cp.apply("type: Mesh\nname: default");

    let calls = Arc::new(AtomicU64::new(0));
    let v1_app = start_http_app(&ip(2), "backend-v1", calls.clone()).await;
    let v2_app = start_http_app(&ip(3), "backend-v2", calls.clone()).await;
    let echo_app = start_echo_app(&ip(4)).await;
    let (web_admin, v1_admin, v2_admin, db_admin) = (
        free_port("127.0.0.1").await,
        free_port("127.0.0.1").await,
        free_port("127.0.0.1").await,
        free_port("127.0.0.1").await,
    );
    let backend_out = free_port(&ip(1)).await;
    let db_out = free_port(&ip(1)).await;
    let inbound_port = 20000 + u16::from(net);

    cp.apply(&dataplane(
        "web",
        &ip(1),
        web_admin,
        &format!("    - port: {inbound_port}\n      servicePort: 1\n      tags:\n        kuma.io/service: web\n        kuma.io/protocol: http\n"),
        &format!(
            "    - port: {backend_out}\n      address: {}\n      tags:\n        kuma.io/service: backend\n    - port: {db_out}\n      address: {}\n      tags:\n        kuma.io/service: db\n",
            ip(1),
            ip(1)
        ),
    ));
    for (name, host, app, admin, version) in [
        ("backend-v1", 2, v1_app, v1_admin, "v1"),
        ("backend-v2", 3, v2_app, v2_admin, "v2"),
    ] {
        cp.apply(&dataplane(
            name,
            &ip(host),
            admin,
            &format!("    - port: {inbound_port}\n      servicePort: {app}\n      tags:\n        kuma.io/service: backend\n        kuma.io/protocol: http\n        version: {version}\n"),
            "    []\n",
        ));
    }
    cp.apply(&dataplane(
        "db-1",
        &ip(4),
        db_admin,
        &format!("    - port: {inbound_port}\n      servicePort: {echo_app}\n      tags:\n        kuma.io/service: db\n        kuma.io/protocol: tcp\n"),
        "    []\n",
    ));

    let web = start_envoy(&cp, "web", delta, web_admin).await;
    let backends = [
        start_envoy(&cp, "backend-v1", delta, v1_admin).await,
        start_envoy(&cp, "backend-v2", delta, v2_admin).await,
    ];
    let db = start_envoy(&cp, "db-1", delta, db_admin).await;
    let backend = format!("{}:{backend_out}", ip(1));
    let db_addr = format!("{}:{db_out}", ip(1));
    let all = || [&web, &backends[0], &backends[1], &db];

    // Baseline: HTTP reaches both versions through two Envoys; TCP echoes.
    eventually("HTTP reaches both backend versions", || async {
        let seen = bodies(&backend, "/", &[], 8).await?;
        (seen.contains(&"200 backend-v1".to_string()) && seen.contains(&"200 backend-v2".to_string()))
            .then_some(())
            .ok_or(format!("{seen:?}"))
    })
    .await;
    let echoed = eventually("TCP echo through the mesh", || {
        echo_through(&db_addr, "ping over tcp")
    })
    .await;
    assert_eq!(echoed, "ping over tcp");
    for e in all() {
        e.wait_acked(&cp).await;
    }

    // MeshHTTPRoute: a weighted split sending everything to v2 ...
    cp.apply(
        "type: MeshHTTPRoute\nmesh: default\nname: backend-route\nspec:\n  targetRef:\n    kind: MeshService\n    name: web\n  to:\n    - targetRef:\n        kind: MeshService\n        name: backend\n      rules:\n        - matches:\n            - path:\n                type: PathPrefix\n                value: /\n          default:\n            backendRefs:\n              - kind: MeshServiceSubset\n                name: backend\n                tags:\n                  version: v1\n                weight: 0\n              - kind: MeshServiceSubset\n                name: backend\n                tags:\n                  version: v2\n                weight: 100\n",
    );
    eventually("the split sends every request to v2", || async {
        let seen = bodies(&backend, "/", &[], 6).await?;
        seen.iter()
            .all(|b| b == "200 backend-v2")
            .then_some(())
            .ok_or(format!("{seen:?}"))
    })
    .await;
    // ... then 80/20, which shows in the proportions (v1 answers only once
    // the new weights are in).
    cp.apply(SPLIT_80_20);
    eventually("the 80/20 split reaches v1 again", || async {
        let seen = bodies(&backend, "/", &[], 10).await?;
        seen.contains(&"200 backend-v1".to_string())
            .then_some(())
            .ok_or(format!("{seen:?}"))
    })
    .await;
    let seen = bodies(&backend, "/", &[], 200).await.expect("requests");
    let v1 = seen.iter().filter(|b| *b == "200 backend-v1").count();
    let v2 = seen.iter().filter(|b| *b == "200 backend-v2").count();
    assert_eq!(v1 + v2, 200, "{seen:?}");
    // 160 expected; the band is seven standard deviations wide each way.
    assert!((120..=195).contains(&v1), "v1 got {v1} of 200 requests");
    // ... then a header match sending `x-version: v1` to v1.
    cp.apply(
        "type: MeshHTTPRoute\nmesh: default\nname: backend-route\nspec:\n  targetRef:\n    kind: MeshService\n    name: web\n  to:\n    - targetRef:\n        kind: MeshService\n        name: backend\n      rules:\n        - matches:\n            - headers:\n                - type: Exact\n                  name: x-version\n                  value: v1\n          default:\n            backendRefs:\n              - kind: MeshServiceSubset\n                name: backend\n                tags:\n                  version: v1\n        - matches:\n            - path:\n                type: PathPrefix\n                value: /\n          default:\n            backendRefs:\n              - kind: MeshServiceSubset\n                name: backend\n                tags:\n                  version: v2\n",
    );
    eventually("the header match sends x-version: v1 to v1", || async {
        let v1 = bodies(&backend, "/", &[("x-version", "v1")], 4).await?;
        let other = bodies(&backend, "/", &[], 4).await?;
        (v1.iter().all(|b| b == "200 backend-v1") && other.iter().all(|b| b == "200 backend-v2"))
            .then_some(())
            .ok_or(format!("{v1:?} {other:?}"))
    })
    .await;
    web.wait_acked(&cp).await;
    cp.delete(ResourceType::MeshHTTPRoute, "backend-route");
    eventually("the route is gone", || async {
        let seen = bodies(&backend, "/", &[], 8).await?;
        seen.contains(&"200 backend-v1".to_string())
            .then_some(())
            .ok_or(format!("{seen:?}"))
    })
    .await;
    web.wait_acked(&cp).await;

    // MeshTimeout: a slow answer passes, then times out at 300ms.
    let slow = bodies(&backend, "/delay/1000", &[], 1).await.unwrap();
    assert!(slow[0].starts_with("200 backend-v"), "{slow:?}");
    cp.apply(
        "type: MeshTimeout\nmesh: default\nname: backend-timeout\nspec:\n  targetRef:\n    kind: Mesh\n  to:\n    - targetRef:\n        kind: MeshService\n        name: backend\n      default:\n        http:\n          requestTimeout: 300ms\n",
    );
    eventually("the request timeout applies", || async {
        let r = bodies(&backend, "/delay/1000", &[], 1).await?;
        (r[0] == "504 upstream request timeout")
            .then_some(())
            .ok_or(format!("{r:?}"))
    })
    .await;
    web.wait_acked(&cp).await;
    cp.delete(ResourceType::MeshTimeout, "backend-timeout");

    // MeshRetry: without retries two calls in three fail; with them none do.
    eventually("without retries the flaky endpoint fails", || async {
        let r = bodies(&backend, "/flaky", &[], 3).await?;
        r.iter()
            .any(|b| b.starts_with("503"))
            .then_some(())
            .ok_or(format!("{r:?}"))
    })
    .await;
    cp.apply(
        "type: MeshRetry\nmesh: default\nname: backend-retry\nspec:\n  targetRef:\n    kind: Mesh\n  to:\n    - targetRef:\n        kind: MeshService\n        name: backend\n      default:\n        http:\n          numRetries: 5\n          retryOn: [5xx]\n          backOff:\n            baseInterval: 1ms\n            maxInterval: 5ms\n",
    );
    eventually("retries hide the failures", || async {
        let r = bodies(&backend, "/flaky", &[], 6).await?;
        r.iter()
            .all(|b| b.starts_with("200"))
            .then_some(())
            .ok_or(format!("{r:?}"))
    })
    .await;
    web.wait_acked(&cp).await;
    cp.delete(ResourceType::MeshRetry, "backend-retry");

    // MeshFaultInjection on the backends' inbounds: every request aborts with 418.
    cp.apply(
        "type: MeshFaultInjection\nmesh: default\nname: backend-faults\nspec:\n  targetRef:\n    kind: MeshService\n    name: backend\n  from:\n    - targetRef:\n        kind: Mesh\n      default:\n        http:\n          - abort:\n              httpStatus: 418\n              percentage: 100\n",
    );
    eventually("the fault aborts requests", || async {
        let r = bodies(&backend, "/", &[], 4).await?;
        r.iter()
            .all(|b| b.starts_with("418"))
            .then_some(())
            .ok_or(format!("{r:?}"))
    })
    .await;
    for e in &backends {
        e.wait_acked(&cp).await;
    }
    cp.delete(ResourceType::MeshFaultInjection, "backend-faults");
    eventually("traffic recovers without the fault", || async {
        let r = bodies(&backend, "/", &[], 4).await?;
        r.iter()
            .all(|b| b.starts_with("200 backend-v"))
            .then_some(())
            .ok_or(format!("{r:?}"))
    })
    .await;

    // Endpoints are sent only when they change, in both protocols: the
    // updates above resent backend's and its subsets' endpoints, never
    // db's, and Envoy still holds those.
    let echoed = echo_through(&db_addr, "db endpoints kept")
        .await
        .expect("TCP echo after the endpoint updates");
    assert_eq!(echoed, "db endpoints kept");

    for e in all() {
        e.wait_acked(&cp).await;
    }
    assert_eq!(cp.nacks(), 0, "Envoy rejected a configuration");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_of_the_world_proxies_follow_policy_changes() {
    scenario(false, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_proxies_follow_policy_changes() {
    scenario(true, 2).await;
}
