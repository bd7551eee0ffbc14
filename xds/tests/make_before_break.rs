//! Configuration changes under constant traffic fail no request: a route
//! change that retires clusters must not leave Envoy routing to a cluster
//! it no longer has — neither in the moment between the cluster and the
//! listener updates nor on kept-alive connections still served by the
//! listener's draining filter chain.

mod support;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use kuma_crds::resource::ResourceType;
use kuma_xds::resources::XdsType;
use support::cp::*;
use support::load::{Load, Probe};

const ROUTE_TO_V2: &str = "type: MeshHTTPRoute\nmesh: default\nname: to-v2\nspec:\n  targetRef:\n    kind: Mesh\n  to:\n    - targetRef:\n        kind: MeshService\n        name: backend\n      rules:\n        - matches:\n            - path:\n                type: PathPrefix\n                value: /\n          default:\n            backendRefs:\n              - kind: MeshServiceSubset\n                name: backend\n                tags:\n                  version: v2\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_changes_under_load_fail_no_request() {
    let ip = |host: u8| format!("127.0.6.{host}");
    let cp = ControlPlane::start().await;
    cp.apply("type: Mesh\nname: default");
    let calls = Arc::new(AtomicU64::new(0));
    let v1_app = start_http_app(&ip(3), "backend-v1", calls.clone()).await;
    let v2_app = start_http_app(&ip(4), "backend-v2", calls).await;
    let mut admins = Vec::new();
    for _ in 0..4 {
        admins.push(free_port("127.0.0.1").await);
    }
    let (sotw_out, delta_out) = (free_port(&ip(1)).await, free_port(&ip(2)).await);
    for (name, host, out) in [("web-sotw", 1, sotw_out), ("web-delta", 2, delta_out)] {
        cp.apply(&dataplane(
            name,
            &ip(host),
            admins[usize::from(host) - 1],
            &format!("    - port: {}\n      servicePort: 1\n      tags:\n        kuma.io/service: web\n        kuma.io/protocol: http\n", free_port(&ip(host)).await),
            &format!("    - port: {out}\n      address: {}\n      tags:\n        kuma.io/service: backend\n", ip(host)),
        ));
    }
    for (name, host, app, version) in [("backend-v1", 3, v1_app, "v1"), ("backend-v2", 4, v2_app, "v2")] {
        cp.apply(&dataplane(
            name,
            &ip(host),
            admins[usize::from(host) - 1],
            &format!("    - port: {}\n      servicePort: {app}\n      tags:\n        kuma.io/service: backend\n        kuma.io/protocol: http\n        version: {version}\n", free_port(&ip(host)).await),
            "    []\n",
        ));
    }
    let clients = [
        start_envoy(&cp, "web-sotw", false, admins[0]).await,
        start_envoy(&cp, "web-delta", true, admins[1]).await,
    ];
    let _backends = [
        start_envoy(&cp, "backend-v1", false, admins[2]).await,
        start_envoy(&cp, "backend-v2", true, admins[3]).await,
    ];
    let addrs = [format!("{}:{sotw_out}", ip(1)), format!("{}:{delta_out}", ip(2))];
    for addr in &addrs {
        eventually("traffic flows", || async {
            let seen = bodies(addr, "/", &[], 1).await?;
            seen[0]
                .starts_with("200")
                .then_some(())
                .ok_or(format!("{seen:?}"))
        })
        .await;
    }

    let cluster_names = |node: &str| -> Vec<String> {
        cp.snapshots
            .get(node)
            .map(|s| {
                s.get(XdsType::Cluster)
                    .resources
                    .keys()
                    .map(|n| n.to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    let baseline: Vec<Vec<String>> = clients.iter().map(|c| cluster_names(&c.node)).collect();

    let load = Load::start(
        addrs
            .iter()
            .flat_map(|a| [Probe::Http(a.clone()), Probe::HttpKeepAlive(a.clone())])
            .collect(),
    );
    // Each round adds the v2 subset cluster and then retires it.
    for round in 0..4 {
        cp.apply(ROUTE_TO_V2);
        for c in &clients {
            c.wait_acked(&cp).await;
        }
        load.more(20).await;
        cp.delete(ResourceType::MeshHTTPRoute, "to-v2");
        for c in &clients {
            c.wait_acked(&cp).await;
        }
        load.more(20).await;
        eprintln!("round {round} done");
    }
    load.finish("route changes").await;
    assert_eq!(cp.nacks(), 0, "Envoy rejected a configuration");

    // The retired cluster goes once its grace period is over.
    for (c, before) in clients.iter().zip(&baseline) {
        assert_ne!(
            &cluster_names(&c.node),
            before,
            "{}: the retired cluster is kept for a while",
            c.node
        );
    }
    for (c, before) in clients.iter().zip(&baseline) {
        // (`eventually` waits up to 30s, well past the 5s grace period.)
        eventually("the retired cluster goes", || async {
            let now = cluster_names(&c.node);
            (&now == before).then_some(()).ok_or(format!("{now:?}"))
        })
        .await;
        c.wait_acked(&cp).await;
    }
}
