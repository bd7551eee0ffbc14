//! A control plane in process (reconciler, ADS and `/bootstrap` on one
//! port) and real Envoys bootstrapped from it, with apps on loopback.

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
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::http;

/// How long any expected change may take to show.
pub const CONVERGE: Duration = Duration::from_secs(30);

/// The Dataplanes Envoys bootstrap from, as the control plane's store would hold them.
#[derive(Default)]
pub struct TestStore {
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
pub struct ControlPlane {
    pub addr: SocketAddr,
    pub reconciler: Reconciler,
    pub snapshots: Arc<SnapshotCache>,
    pub metrics: Arc<XdsMetrics>,
    pub store: Arc<TestStore>,
    pub certs: kuma_xds::sync::CertRegistry,
}

/// How long removed clusters stay in the test control plane's configs.
pub const CLUSTER_GRACE: Duration = Duration::from_secs(5);

impl ControlPlane {
    pub async fn start() -> Self {
        let snapshots = Arc::new(SnapshotCache::new());
        let metrics = Arc::new(XdsMetrics::default());
        // Longer than the test Envoys' drain time (--drain-time-s 3).
        let generator = Generator::new(snapshots.clone(), metrics.clone()).with_cluster_grace(CLUSTER_GRACE);
        let certs = generator.cert_registry();
        let reconciler = Reconciler::spawn(generator);
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
            certs,
        }
    }

    /// Applies a universal YAML resource.
    pub fn apply(&self, yaml: &str) {
        let r = parse(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        if let Spec::Dataplane(_) = &r.spec {
            let id = format!("{}.{}", r.meta.mesh_or_default(), r.meta.core_name());
            self.store.dataplanes.lock().unwrap().insert(id, r.clone());
        }
        self.reconciler.send(Event::Upsert(Box::new(r)));
    }

    pub fn delete(&self, resource_type: ResourceType, name: &str) {
        self.reconciler.send(Event::Delete {
            resource_type,
            mesh: "default".into(),
            name: name.into(),
        });
    }

    pub fn nacks(&self) -> u64 {
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
pub struct Envoy {
    pub _child: tokio::process::Child,
    pub admin: String,
    pub node: String,
    pub _dir: PathBuf,
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

pub async fn start_envoy(cp: &ControlPlane, name: &str, delta: bool, admin_port: u16) -> Envoy {
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
    // Tests of one binary run at once and reuse proxy names: each Envoy
    // needs a directory of its own.
    static ENVOYS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = ENVOYS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("kuma-envoy-{}-{n}-{name}-{}", std::process::id(), delta));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("bootstrap.yaml");
    std::fs::write(&config, yaml).unwrap();
    let log = std::fs::File::create(dir.join("envoy.log")).unwrap();
    let child = tokio::process::Command::new(super::envoy_bin())
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
    pub async fn stats(&self) -> BTreeMap<String, String> {
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
    pub async fn wait_acked(&self, cp: &ControlPlane) {
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
pub async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
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

pub async fn free_port(ip: &str) -> u16 {
    kuma_e2e::free_port(ip)
}

/// An HTTP app answering its name; `/delay/<ms>` answers late; `/flaky`
/// fails two calls in three (counted across the apps sharing `calls`).
pub async fn start_http_app(ip: &str, name: &'static str, calls: Arc<AtomicU64>) -> u16 {
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
pub async fn start_echo_app(ip: &str) -> u16 {
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

pub async fn echo_through(addr: &str, text: &str) -> Result<String, String> {
    let mut conn = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    conn.write_all(text.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; text.len()];
    tokio::time::timeout(Duration::from_secs(5), conn.read_exact(&mut buf))
        .await
        .map_err(|_| "echo timed out".to_string())?
        .map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&buf).to_string())
}

pub fn dataplane(name: &str, address: &str, admin: u16, inbound: &str, outbound: &str) -> String {
    format!(
        "type: Dataplane\nmesh: default\nname: {name}\nnetworking:\n  address: {address}\n  admin:\n    port: {admin}\n  inbound:\n{inbound}  outbound:\n{outbound}"
    )
}

/// Answers of `count` requests to `path` through `addr`, with `headers`.
pub async fn bodies(
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
