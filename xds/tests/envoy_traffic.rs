//! End to end with real Envoys: the control plane serves `/bootstrap` and
//! ADS on one port, Envoys start from the bootstraps it returns, and real
//! HTTP and TCP apps on loopback answer behind them. Policies changed while
//! the Envoys run change the traffic, in both the state-of-the-world and
//! the delta protocol, and Envoy reports every pushed version applied.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kuma_crds::format::parse;
use kuma_crds::resource::{Resource, ResourceType, Spec};
use kuma_xds::bootstrap::{BootstrapParams, BootstrapRequest, BootstrapResponse, admin_port_or_default};
use kuma_xds::dp_server::{BootstrapError, BootstrapSource, router};
use kuma_xds::metrics::XdsMetrics;
use kuma_xds::resources::XdsType;
use kuma_xds::server::{AdsServer, Limits};
use kuma_xds::snapshot::SnapshotCache;
use kuma_xds::sync::{Event, Generator, Reconciler};
use support::http;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long any expected change may take to show.
const CONVERGE: Duration = Duration::from_secs(30);

/// The Dataplanes Envoys bootstrap from, as the control plane's store would hold them.
#[derive(Default)]
struct TestStore {
    dataplanes: Mutex<BTreeMap<String, Resource>>,
    xds_port: Mutex<u16>,
}

impl BootstrapSource for TestStore {
    async fn resolve(
        &self,
        request: &BootstrapRequest,
        host: &str,
    ) -> Result<BootstrapParams, BootstrapError> {
        let dp = self
            .dataplanes
            .lock()
            .unwrap()
            .get(&request.node_id())
            .cloned()
            .ok_or_else(|| BootstrapError::NotFound(format!("dataplane {} not found", request.node_id())))?;
        let Spec::Dataplane(spec) = &dp.spec else {
            unreachable!()
        };
        Ok(BootstrapParams {
            xds_host: host.to_string(),
            xds_port: *self.xds_port.lock().unwrap(),
            ca_pem: None,
            admin_port: admin_port_or_default(spec.networking().admin.as_ref().and_then(|a| a.port)),
            service: spec.service().unwrap_or("unknown").to_string(),
            address: spec.networking().address.clone().unwrap_or_default(),
        })
    }
}

/// The control plane under test.
struct ControlPlane {
    addr: SocketAddr,
    reconciler: Reconciler,
    snapshots: Arc<SnapshotCache>,
    metrics: Arc<XdsMetrics>,
    store: Arc<TestStore>,
}

impl ControlPlane {
    async fn start() -> Self {
        let snapshots = Arc::new(SnapshotCache::new());
        let metrics = Arc::new(XdsMetrics::default());
        let reconciler = Reconciler::spawn(Generator::new(snapshots.clone(), metrics.clone()));
        let store = Arc::new(TestStore::default());
        let limits = Limits::default();
        let ads = AdsServer::new(
            snapshots.clone(),
            Arc::new(reconciler.clone()),
            metrics.clone(),
            &limits,
        );
        let app = router(ads, &limits, store.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        *store.xds_port.lock().unwrap() = addr.port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        ControlPlane {
            addr,
            reconciler,
            snapshots,
            metrics,
            store,
        }
    }

    /// Applies a universal YAML resource.
    fn apply(&self, yaml: &str) {
        let r = parse(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        if let Spec::Dataplane(_) = &r.spec {
            let id = format!("{}.{}", r.meta.mesh_or_default(), r.meta.core_name());
            self.store.dataplanes.lock().unwrap().insert(id, r.clone());
        }
        self.reconciler.send(Event::Upsert(Box::new(r)));
    }

    fn delete(&self, resource_type: ResourceType, name: &str) {
        self.reconciler.send(Event::Delete {
            resource_type,
            mesh: "default".into(),
            name: name.into(),
        });
    }

    fn nacks(&self) -> u64 {
        let mut text = String::new();
        let mut registry = prometheus_client::registry::Registry::default();
        self.metrics.register(&mut registry);
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text.lines()
            .filter(|l| l.starts_with("xds_nacks_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }
}

/// A running Envoy.
struct Envoy {
    _child: tokio::process::Child,
    admin: String,
    node: String,
    _dir: PathBuf,
}

impl Drop for Envoy {
    fn drop(&mut self) {
        // Logs stay for a failed test to explain itself.
        if std::thread::panicking() {
            eprintln!(
                "Envoy {} logs: {}",
                self.node,
                self._dir.join("envoy.log").display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self._dir);
        }
    }
}

async fn start_envoy(cp: &ControlPlane, name: &str, delta: bool, admin_port: u16) -> Envoy {
    let features: Vec<&str> = if delta { vec!["feature-delta-grpc"] } else { vec![] };
    let body = serde_json::json!({"mesh": "default", "name": name, "proxyType": "dataplane", "features": features,
        "version": {"kumaDp": {"version": "test"}, "envoy": {"version": "1.40.0"}}});
    let resp = http::request(
        &cp.addr.to_string(),
        "POST",
        "/bootstrap",
        &[("Content-Type", "application/json")],
        &body.to_string(),
    )
    .await
    .expect("bootstrap request");
    assert_eq!(resp.status, 200, "bootstrap of {name}: {}", resp.body);
    let parsed: BootstrapResponse = serde_json::from_str(&resp.body).expect("bootstrap response JSON");
    let yaml = String::from_utf8(parsed.bootstrap).unwrap();
    assert!(
        yaml.contains(if delta { "DELTA_GRPC" } else { "apiType: GRPC" }),
        "{yaml}"
    );
    let dir = std::env::temp_dir().join(format!("kuma-envoy-{}-{name}-{}", std::process::id(), delta));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("bootstrap.yaml");
    std::fs::write(&config, yaml).unwrap();
    let log = std::fs::File::create(dir.join("envoy.log")).unwrap();
    let child = tokio::process::Command::new(support::envoy_bin())
        .arg("-c")
        .arg(&config)
        .args([
            "--use-dynamic-base-id",
            "--log-level",
            "info",
            "--concurrency",
            "1",
            "--drain-time-s",
            "3",
        ])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("start envoy");
    Envoy {
        _child: child,
        admin: format!("127.0.0.1:{admin_port}"),
        node: format!("default.{name}"),
        _dir: dir,
    }
}

impl Envoy {
    /// Envoy's stat lines `name: value`.
    async fn stats(&self) -> BTreeMap<String, String> {
        let Ok(resp) = http::get(&self.admin, "/stats").await else {
            return BTreeMap::new();
        };
        resp.body
            .lines()
            .filter_map(|l| {
                l.split_once(": ")
                    .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
            })
            .collect()
    }

    /// Waits until Envoy has applied the control plane's current cluster
    /// and listener versions and rejected nothing.
    async fn wait_acked(&self, cp: &ControlPlane) {
        let deadline = tokio::time::Instant::now() + CONVERGE;
        loop {
            let snapshot = cp.snapshots.get(&self.node);
            let stats = self.stats().await;
            let ok = snapshot.as_ref().is_some_and(|s| {
                stats.get("cluster_manager.cds.version_text").map(String::as_str)
                    == Some(s.version(XdsType::Cluster))
                    && stats.get("listener_manager.lds.version_text").map(String::as_str)
                        == Some(s.version(XdsType::Listener))
            }) && stats
                .get("cluster_manager.cds.update_rejected")
                .map(String::as_str)
                == Some("0")
                && stats
                    .get("listener_manager.lds.update_rejected")
                    .map(String::as_str)
                    == Some("0");
            if ok {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{}: versions not applied: snapshot cds={:?} lds={:?}; envoy {:?} {:?}, rejected {:?} {:?}",
                self.node,
                snapshot.as_ref().map(|s| s.version(XdsType::Cluster).to_string()),
                snapshot
                    .as_ref()
                    .map(|s| s.version(XdsType::Listener).to_string()),
                stats.get("cluster_manager.cds.version_text"),
                stats.get("listener_manager.lds.version_text"),
                stats.get("cluster_manager.cds.update_rejected"),
                stats.get("listener_manager.lds.update_rejected"),
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Polls `probe` until it returns `Some`, for at most [`CONVERGE`].
async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + CONVERGE;
    let started = std::time::Instant::now();
    loop {
        match probe().await {
            Ok(v) => {
                eprintln!("{what}: {:?}", started.elapsed());
                return v;
            }
            Err(last) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{what}: not reached in {CONVERGE:?}; last: {last}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn free_port(ip: &str) -> u16 {
    TcpListener::bind((ip, 0))
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An HTTP app answering its name; `/delay/<ms>` answers late; `/flaky`
/// fails two calls in three (counted across the apps sharing `calls`).
async fn start_http_app(ip: &str, name: &'static str, calls: Arc<AtomicU64>) -> u16 {
    use axum::extract::Path;
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/delay/{ms}",
            get(move |Path(ms): Path<u64>| async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                name
            }),
        )
        .route(
            "/flaky",
            get(move || {
                let calls = calls.clone();
                async move {
                    if calls.fetch_add(1, Ordering::SeqCst) % 3 == 2 {
                        (axum::http::StatusCode::OK, name)
                    } else {
                        (axum::http::StatusCode::SERVICE_UNAVAILABLE, "flaky")
                    }
                }
            }),
        )
        .fallback(move || async move { name });
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

/// A TCP echo app.
async fn start_echo_app(ip: &str) -> u16 {
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n) = conn.read(&mut buf).await {
                    if n == 0 || conn.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

async fn echo_through(addr: &str, text: &str) -> Result<String, String> {
    let mut conn = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    conn.write_all(text.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; text.len()];
    tokio::time::timeout(Duration::from_secs(5), conn.read_exact(&mut buf))
        .await
        .map_err(|_| "echo timed out".to_string())?
        .map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&buf).to_string())
}

fn dataplane(name: &str, address: &str, admin: u16, inbound: &str, outbound: &str) -> String {
    format!(
        "type: Dataplane\nmesh: default\nname: {name}\nnetworking:\n  address: {address}\n  admin:\n    port: {admin}\n  inbound:\n{inbound}  outbound:\n{outbound}"
    )
}

/// Answers of `count` requests to `path` through `addr`, with `headers`.
async fn bodies(
    addr: &str,
    path: &str,
    headers: &[(&str, &str)],
    count: usize,
) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for _ in 0..count {
        let r = http::request(addr, "GET", path, headers, "")
            .await
            .map_err(|e| e.to_string())?;
        out.push(format!("{} {}", r.status, r.body));
    }
    Ok(out)
}

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
