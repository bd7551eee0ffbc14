//! The real kuma-cp (release build, memory store) under N ADS streams that
//! behave as Envoy does: N Dataplanes of S services registered through the
//! REST API, each a transparent proxy (so it reaches every service), then N
//! streams opened at once, each ACKing every response. Prints, for the
//! state of the world and for delta xDS:
//! - the time until every stream has its clusters, listeners and endpoints;
//! - a MeshTimeout change of the whole mesh → every stream has it
//!   (p50/p99/max from the API call's return, per round);
//! - an endpoint added to `svc-0` → every stream that reaches it has it
//!   (likewise; every stream, unless `ADS_LOAD_REACHES` narrows them);
//! - a MeshTimeout for one service's proxies (1 % at S = 100) → each of
//!   their streams has it (likewise);
//! - kuma-cp's RSS before the streams and after settling (and per stream),
//!   its CPU while idle, and the bytes each stream received for its config;
//! - a reconnect storm: all streams but one service's reconnect at once; the
//!   time until all are configured again, and a MeshTimeout for the
//!   streams that stayed, applied during the storm (p50/p99/max).
//!
//! With `ADS_LOAD_MODE=kubernetes` the mesh is declared as Kubernetes
//! users declare it, through a real API server: S Services, N Pods (with
//! Kuma's sidecar, reported Running and Ready as a kubelet would) whose
//! Dataplanes kuma-cp writes, MeshTimeout CRDs, and a new endpoint is a new
//! Pod turning Ready.
//!
//! With `ADS_LOAD_REACHES=k` each proxy names the k services after its own
//! in `reachableServices` (in Kubernetes mode, its Pod's
//! `kuma.io/transparent-proxying-reachable-services`), as large meshes
//! narrow what their proxies reach: each service is then reached by k / S
//! of the proxies (1 % at k = 1, S = 100).
//!
//! Asserts nothing but that every stream gets there within its bound.
//! Run: `cargo bench -p kuma-e2e --bench ads_load` (`ADS_LOAD_PROXIES`,
//! `ADS_LOAD_SERVICES`, `ADS_LOAD_ROUNDS`, `ADS_LOAD_PROTOCOLS=sotw,delta`,
//! `ADS_LOAD_MODE=universal|kubernetes`, `ADS_LOAD_REACHES`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kuma_e2e::ads::{CLUSTERS, ENDPOINTS, LISTENERS, Protocol, connect, lite, run_stream};
use kuma_e2e::k8s::{Cluster, Options};
use kuma_e2e::kube_mesh::{addressed_dataplanes, kube_client, kuma_api_resource};
use kuma_e2e::process::ControlPlane;
use kuma_e2e::temp_dir;
use prost::Message;
use tokio::sync::watch;

/// The load generator stands in for N Envoys on cores of their own but
/// shares kuma-cp's 2: it allocates as kuma-cp does (with the system
/// allocator, malloc and free were a sixth of its time in a mesh-wide round).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// How long any phase may take before the bench gives up.
const LIMIT: Duration = Duration::from_secs(600);

/// The MeshTimeout of every proxy the mesh-wide rounds change.
const MESH_WIDE_TIMEOUT: &str = "bench-timeout";

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU seconds (user + system) the process has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may hold spaces) end with `)`.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    (ticks(11) + ticks(12)) / 100.0
}

/// What every stream watches for; each records when it first sees it.
#[derive(Clone, Debug)]
enum Probe {
    Nothing,
    /// A service cluster with this connect timeout (seconds).
    ConnectTimeout(i64),
    /// An endpoint with this address.
    Endpoint(String),
}

impl Probe {
    fn seen_in(&self, type_url: &str, resources: &[&[u8]]) -> bool {
        match self {
            Probe::Nothing => false,
            Probe::ConnectTimeout(secs) => {
                type_url == CLUSTERS
                    && resources.iter().any(|encoded| {
                        lite::Cluster::decode(*encoded).is_ok_and(|c| {
                            !c.name.starts_with("kuma:")
                                && c.connect_timeout.is_some_and(|t| t.seconds == *secs)
                        })
                    })
            }
            Probe::Endpoint(address) => {
                type_url == ENDPOINTS
                    && resources
                        .iter()
                        .any(|encoded| encoded.windows(address.len()).any(|w| w == address.as_bytes()))
            }
        }
    }
}

/// The shared record of every stream.
struct Tracker {
    base: Instant,
    /// When each stream first had a complete configuration (ns since base, 0: not yet).
    complete_at: Vec<AtomicU64>,
    /// When each stream saw the current probe (0: not yet).
    seen_at: Vec<AtomicU64>,
    /// Bytes each stream received until complete.
    bytes_until_complete: Vec<AtomicU64>,
    /// Bytes all streams received until complete: clusters, listeners,
    /// endpoints.
    bytes_by_type: [AtomicU64; 3],
    /// Bytes all streams received since the start, and of them clusters,
    /// listeners, endpoints.
    received: AtomicU64,
    received_by_type: [AtomicU64; 3],
    completed: AtomicUsize,
    seen: AtomicUsize,
    ended: AtomicUsize,
    last_end: std::sync::Mutex<String>,
}

impl Tracker {
    fn new(n: usize) -> Self {
        let zeros = || (0..n).map(|_| AtomicU64::new(0)).collect();
        Tracker {
            base: Instant::now(),
            complete_at: zeros(),
            seen_at: zeros(),
            bytes_until_complete: zeros(),
            bytes_by_type: Default::default(),
            received: AtomicU64::new(0),
            received_by_type: Default::default(),
            completed: AtomicUsize::new(0),
            seen: AtomicUsize::new(0),
            ended: AtomicUsize::new(0),
            last_end: std::sync::Mutex::new(String::new()),
        }
    }

    fn now(&self) -> u64 {
        self.base.elapsed().as_nanos().max(1) as u64
    }

    /// How long after `returned` each stream that saw the probe saw it (ms).
    fn delays_since(&self, returned: u64) -> Vec<f64> {
        self.seen_at
            .iter()
            .map(|s| s.load(Ordering::SeqCst))
            .filter(|at| *at > 0)
            .map(|at| at.saturating_sub(returned) as f64 / 1e6)
            .collect()
    }

    /// Bytes received so far of clusters, listeners, endpoints.
    fn received_by_type(&self) -> [u64; 3] {
        [0, 1, 2].map(|t| self.received_by_type[t].load(Ordering::SeqCst))
    }

    fn reset_probe(&self) {
        for s in &self.seen_at {
            s.store(0, Ordering::SeqCst);
        }
        self.seen.store(0, Ordering::SeqCst);
    }
}

async fn wait_until(what: &str, done: impl Fn() -> bool, tracker: &Tracker) {
    let deadline = Instant::now() + LIMIT;
    while !done() {
        if Instant::now() > deadline {
            panic!(
                "{what}: not within {LIMIT:?} ({} streams ended, last: {})",
                tracker.ended.load(Ordering::SeqCst),
                tracker.last_end.lock().map(|s| s.clone()).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn percentiles(mut ms: Vec<f64>) -> String {
    ms.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| ms[((ms.len() as f64 * q).ceil() as usize).clamp(1, ms.len()) - 1];
    format!(
        "p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        at(0.5),
        at(0.99),
        at(1.0)
    )
}

async fn api(http: &reqwest::Client, method: reqwest::Method, url: String, body: Option<String>) {
    let mut request = http.request(method, &url);
    if let Some(body) = body {
        request = request.header("content-type", "application/json").body(body);
    }
    let response = request.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = response.status();
    assert!(
        status.is_success() || status.as_u16() == 404,
        "{url}: {status} {}",
        response.text().await.unwrap_or_default()
    );
}

/// The bench mesh's shape.
#[derive(Clone, Copy, Debug)]
struct Shape {
    proxies: usize,
    services: usize,
    /// How many services each proxy names in `reachableServices` (0: none,
    /// it reaches every service).
    reaches: usize,
}

impl Shape {
    /// The services proxy `i` names in `reachableServices`: the `reaches`
    /// after its own.
    fn reachable(&self, i: usize) -> Vec<usize> {
        (1..=self.reaches)
            .map(|d| (i % self.services + d) % self.services)
            .collect()
    }

    /// Whether proxy `i` reaches `svc-<service>`.
    fn reaches_service(&self, i: usize, service: usize) -> bool {
        self.reaches == 0 || self.reachable(i).contains(&service)
    }
}

fn dataplane(i: usize, shape: Shape) -> String {
    let mut transparent = serde_json::json!({"redirectPortInbound": 15006, "redirectPortOutbound": 15001});
    if shape.reaches > 0 {
        let names: Vec<String> = shape.reachable(i).iter().map(|s| format!("svc-{s}")).collect();
        transparent["reachableServices"] = serde_json::json!(names);
    }
    serde_json::json!({
        "type": "Dataplane", "mesh": "default", "name": format!("dp-{i}"),
        "networking": {
            "address": address(i),
            "inbound": [{"port": 8080, "servicePort": 18080, "tags": {
                "kuma.io/service": format!("svc-{}", i % shape.services), "kuma.io/protocol": "http"}}],
            "transparentProxying": transparent
        }
    })
    .to_string()
}

/// Where the bench's mesh is declared.
#[derive(Clone, Copy, Debug)]
enum Mode {
    /// Dataplanes and policies through kuma-cp's REST API.
    Universal,
    /// Pods, Services and policy CRDs through a real API server; kuma-cp
    /// writes the Dataplanes.
    Kubernetes,
}

/// A change a round makes.
enum Change {
    /// A MeshTimeout `connectionTimeout` for every proxy, or for one
    /// service's.
    MeshTimeout {
        name: &'static str,
        secs: i64,
        service: Option<usize>,
    },
    /// A new endpoint of `svc-0`.
    Endpoint { name: String, address: String },
}

/// The address of proxy `i`.
fn address(i: usize) -> String {
    format!("10.{}.{}.{}", 1 + i / 65536, (i / 256) % 256, i % 256)
}

/// The bench's mesh and how it is changed in each mode.
enum Mesh {
    Universal { http: reqwest::Client, base: String },
    Kubernetes(Box<KubeApis>),
}

/// The Kubernetes APIs the bench writes and reads.
struct KubeApis {
    pods: Api<Pod>,
    dataplanes: Api<DynamicObject>,
    timeouts: Api<DynamicObject>,
}

/// A Pod of `app` with Kuma's sidecar (injected: the bench runs no webhook)
/// behind a transparent proxy, bound to a Node nobody runs; it reaches
/// only the Services `reachable` names (`kuma.io/service` tags), when any.
fn pod(name: &str, app: &str, reachable: &[String]) -> Pod {
    let mut annotations = serde_json::json!({
        "kuma.io/sidecar-injected": "true",
        "kuma.io/transparent-proxying": "enabled",
        "kuma.io/transparent-proxying-inbound-port": "15006",
        "kuma.io/transparent-proxying-outbound-port": "15001"});
    if !reachable.is_empty() {
        annotations["kuma.io/transparent-proxying-reachable-services"] = reachable.join(",").into();
    }
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"app": app}, "annotations": annotations},
        "spec": {"nodeName": "bench-node", "containers": [
            {"name": "app", "image": "app", "ports": [{"containerPort": 8080}]},
            {"name": "kuma-sidecar", "image": "kuma/kuma-dp"}]},
    }))
    .expect("pod")
}

impl Mesh {
    /// Services `svc-<s>` of Pods `app-<s>` in namespace `bench`.
    async fn kubernetes(cluster: &Cluster, services: usize) -> Mesh {
        let yaml = (0..services)
            .map(|s| {
                format!(
                    "apiVersion: v1\nkind: Service\nmetadata:\n  name: svc-{s}\n  namespace: bench\nspec:\n  selector:\n    app: app-{s}\n  ports:\n    - port: 80\n      targetPort: 8080\n      appProtocol: http\n"
                )
            })
            .chain([
                "apiVersion: v1\nkind: Node\nmetadata:\n  name: bench-node\n".to_string(),
                // No kube-controller-manager: the ServiceAccount it would create.
                "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: default\n  namespace: bench\n".to_string(),
            ])
            .collect::<Vec<_>>()
            .join("---\n");
        cluster.apply(&yaml);
        let client = kube_client(&cluster.kubeconfig).await;
        Mesh::Kubernetes(Box::new(KubeApis {
            pods: Api::namespaced(client.clone(), "bench"),
            dataplanes: Api::namespaced_with(
                client.clone(),
                "bench",
                &kuma_api_resource("Dataplane", "dataplanes"),
            ),
            timeouts: Api::namespaced_with(
                client,
                "kuma-system",
                &kuma_api_resource("MeshTimeout", "meshtimeouts"),
            ),
        }))
    }

    /// The xDS node id of proxy `i`.
    fn node(&self, i: usize) -> String {
        match self {
            Mesh::Universal { .. } => format!("default.dp-{i}"),
            Mesh::Kubernetes(_) => format!("default.pod-{i}.bench"),
        }
    }

    /// Registers the proxies of `shape`; returns once kuma-cp has every
    /// Dataplane.
    async fn register(&self, shape: Shape) {
        let Shape {
            proxies, services, ..
        } = shape;
        match self {
            Mesh::Universal { http, base } => {
                // Only this bench's MeshTimeout applies. The leader writes
                // the mesh's defaults after kuma-cp is ready: deleting one
                // before it exists would leave it to come later, and the
                // first round would then measure another change.
                for name in ["mesh-timeout-all-default", "mesh-gateways-timeout-all-default"] {
                    let url = format!("{base}/meshes/default/meshtimeouts/{name}");
                    let deadline = Instant::now() + LIMIT;
                    while !http.get(&url).send().await.is_ok_and(|r| r.status().is_success()) {
                        assert!(Instant::now() < deadline, "{url}: not written within {LIMIT:?}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    api(http, reqwest::Method::DELETE, url, None).await;
                }
                for i in 0..proxies {
                    api(
                        http,
                        reqwest::Method::PUT,
                        format!("{base}/meshes/default/dataplanes/dp-{i}"),
                        Some(dataplane(i, shape)),
                    )
                    .await;
                }
            }
            Mesh::Kubernetes(kube) => {
                let (pods, dataplanes) = (&kube.pods, &kube.dataplanes);
                futures::stream::iter(0..proxies)
                    .for_each_concurrent(32, |i| async move {
                        let name = format!("pod-{i}");
                        pods.create(
                            &PostParams::default(),
                            &pod(
                                &name,
                                &format!("app-{}", i % services),
                                &shape
                                    .reachable(i)
                                    .iter()
                                    .map(|s| format!("svc-{s}_bench_svc_80"))
                                    .collect::<Vec<_>>(),
                            ),
                        )
                        .await
                        .expect("create a Pod");
                        report_ready(pods, &name, &address(i)).await;
                    })
                    .await;
                let deadline = Instant::now() + LIMIT;
                loop {
                    let written = addressed_dataplanes(dataplanes).await;
                    if written >= proxies {
                        break;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "{written} of {proxies} Dataplanes written"
                    );
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    /// Makes `change`; returns when the API (kuma-cp's or Kubernetes') has
    /// accepted it.
    async fn apply(&self, change: Change) {
        match (self, change) {
            (Mesh::Universal { http, base }, Change::MeshTimeout { name, secs, service }) => {
                let target = match service {
                    None => serde_json::json!({"kind": "Mesh"}),
                    Some(s) => serde_json::json!({"kind": "MeshService", "name": format!("svc-{s}")}),
                };
                let body = serde_json::json!({
                    "type": "MeshTimeout", "mesh": "default", "name": name,
                    "spec": {"targetRef": target, "to": [{"targetRef": {"kind": "Mesh"},
                        "default": {"connectionTimeout": format!("{secs}s")}}]}
                });
                let url = format!("{base}/meshes/default/meshtimeouts/{name}");
                api(http, reqwest::Method::PUT, url, Some(body.to_string())).await;
            }
            (Mesh::Universal { http, base }, Change::Endpoint { name, address }) => {
                let body = serde_json::json!({
                    "type": "Dataplane", "mesh": "default", "name": name,
                    "networking": {"address": address, "inbound": [{"port": 8080, "servicePort": 18080,
                        "tags": {"kuma.io/service": "svc-0", "kuma.io/protocol": "http"}}]}
                });
                let url = format!("{base}/meshes/default/dataplanes/{name}");
                api(http, reqwest::Method::PUT, url, Some(body.to_string())).await;
            }
            (Mesh::Kubernetes(kube), Change::MeshTimeout { name, secs, service }) => {
                // The proxies of one Service: its `kuma.io/service` tag.
                let target = match service {
                    None => serde_json::json!({"kind": "Mesh"}),
                    Some(s) => serde_json::json!({"kind": "MeshSubset",
                        "tags": {"kuma.io/service": format!("svc-{s}_bench_svc_80")}}),
                };
                let object = serde_json::json!({
                    "apiVersion": "kuma.io/v1alpha1", "kind": "MeshTimeout",
                    "metadata": {"name": name, "namespace": "kuma-system",
                        "labels": {"kuma.io/mesh": "default"}},
                    "spec": {"targetRef": target, "to": [{"targetRef": {"kind": "Mesh"},
                        "default": {"connectionTimeout": format!("{secs}s")}}]}
                });
                kube.timeouts
                    .patch(
                        name,
                        &PatchParams::apply("ads-load").force(),
                        &Patch::Apply(&object),
                    )
                    .await
                    .expect("apply the MeshTimeout");
            }
            (Mesh::Kubernetes(kube), Change::Endpoint { name, address }) => {
                kube.pods
                    .create(&PostParams::default(), &pod(&name, "app-0", &[]))
                    .await
                    .expect("create a Pod");
                report_ready(&kube.pods, &name, &address).await;
            }
        }
    }
}

/// Reports the Pod Running and Ready at `ip`, as the kubelet would.
async fn report_ready(pods: &Api<Pod>, name: &str, ip: &str) {
    let status = serde_json::json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": "True"}]}});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("Pod status");
}

async fn measure(mode: Mode, protocol: Protocol, shape: Shape, rounds: usize) {
    let Shape {
        proxies, services, ..
    } = shape;
    let label = format!("{protocol:?}").to_lowercase();
    let label = match mode {
        Mode::Universal => label,
        Mode::Kubernetes => format!("kubernetes {label}"),
    };
    let mut env = ControlPlane::env(&BTreeMap::new(), &temp_dir(&format!("ads-load-{protocol:?}")));
    env.insert("KUMA_DP_SERVER_AUTHN_DP_PROXY_TYPE".into(), "none".into());
    env.insert(
        "KUMA_API_SERVER_AUTHN_TOKENS_BOOTSTRAP_ADMIN_TOKEN".into(),
        "false".into(),
    );
    env.insert("RUST_LOG".into(), "warn".into());
    let cluster = match mode {
        Mode::Universal => None,
        Mode::Kubernetes => {
            let cluster = Cluster::start(Options::default()).await;
            cluster.install_crds();
            cluster.create_namespace("kuma-system", &[]).await;
            cluster.create_namespace("bench", &[]).await;
            env.insert("KUMA_ENVIRONMENT".into(), "kubernetes".into());
            env.insert("KUBECONFIG".into(), cluster.kubeconfig.display().to_string());
            // Only this bench's MeshTimeout applies (universal mode deletes
            // the defaults instead).
            env.insert("KUMA_DEFAULTS_SKIP_DEFAULT_POLICIES".into(), "true".into());
            Some(cluster)
        }
    };
    let cp = Arc::new(ControlPlane::start(&format!("kuma-cp-ads-load-{protocol:?}"), env).await);
    let pid = cp.proc.pid();
    let mesh = match &cluster {
        None => Mesh::Universal {
            http: reqwest::Client::builder().no_proxy().build().expect("client"),
            base: cp.api(),
        },
        Some(cluster) => Mesh::kubernetes(cluster, services).await,
    };
    let started = Instant::now();
    // The mesh-wide MeshTimeout exists before the streams: every round
    // changes its `connectionTimeout` alone (its creation would also change
    // every outbound listener, and the first round would measure that).
    mesh.apply(Change::MeshTimeout {
        name: MESH_WIDE_TIMEOUT,
        secs: 9,
        service: None,
    })
    .await;
    mesh.register(shape).await;
    println!(
        "[{label}] {proxies} {} of {services} services registered in {:.1} s",
        match mode {
            Mode::Universal => "Dataplanes",
            Mode::Kubernetes => "Pods (their Dataplanes written by kuma-cp)",
        },
        started.elapsed().as_secs_f64()
    );
    if shape.reaches > 0 {
        println!(
            "[{label}] each proxy reaches {} of the services (reachableServices)",
            shape.reaches
        );
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_before = cp.proc.rss_kib();

    let tracker = Arc::new(Tracker::new(proxies));
    let (probe_tx, probe_rx) = watch::channel(Probe::Nothing);
    let connect_started = Instant::now();
    let mut streams = Vec::with_capacity(proxies);
    // The first 1 % of the streams build what the mesh's proxies share
    // (the mesh's digest, the outbound layer and bundles): kuma-cp's RSS
    // once they are configured counts that once, and the growth beyond it
    // is what each further stream costs.
    let first = (proxies / 100).max(1);
    let mut rss_shared = rss_before;
    for i in 0..proxies {
        if i == first {
            wait_until(
                "the first streams have their full configuration",
                || tracker.completed.load(Ordering::SeqCst) == first,
                &tracker,
            )
            .await;
            rss_shared = cp.proc.rss_kib();
        }
        // One connection per proxy, as Envoy.
        let connection = connect(&cp).await;
        streams.push(tokio::spawn(stream(
            i,
            mesh.node(i),
            connection,
            protocol,
            tracker.clone(),
            probe_rx.clone(),
        )));
    }
    println!(
        "[{label}] {proxies} streams opened in {:.1} s",
        connect_started.elapsed().as_secs_f64()
    );
    wait_until(
        "every stream has its full configuration",
        || tracker.completed.load(Ordering::SeqCst) == proxies,
        &tracker,
    )
    .await;
    let full = connect_started.elapsed();
    let bytes: u64 = tracker
        .bytes_until_complete
        .iter()
        .map(|b| b.load(Ordering::SeqCst))
        .sum();
    println!(
        "[{label}] every stream fully configured {:.2} s after the first connected; {:.0} KiB received per stream",
        full.as_secs_f64(),
        bytes as f64 / proxies as f64 / 1024.0
    );
    let per_stream =
        |t: usize| tracker.bytes_by_type[t].load(Ordering::SeqCst) as f64 / proxies as f64 / 1024.0;
    println!(
        "[{label}] of which clusters {:.0} KiB, listeners {:.0} KiB, endpoints {:.0} KiB",
        per_stream(0),
        per_stream(1),
        per_stream(2)
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss_after = cp.proc.rss_kib();
    println!(
        "[{label}] kuma-cp RSS {} MiB before the streams, {} MiB with them: {:.0} KiB per stream",
        rss_before / 1024,
        rss_after / 1024,
        rss_after.saturating_sub(rss_before) as f64 / proxies as f64
    );
    println!(
        "[{label}] kuma-cp RSS with the first {first} streams {} MiB: {:.0} KiB per further stream (shared mesh state counted once)",
        rss_shared / 1024,
        rss_after.saturating_sub(rss_shared) as f64 / (proxies - first).max(1) as f64
    );
    let cpu = cpu_seconds(pid);
    tokio::time::sleep(Duration::from_secs(10)).await;
    println!(
        "[{label}] kuma-cp CPU while idle: {:.1} % of a core",
        (cpu_seconds(pid) - cpu) / 10.0 * 100.0
    );
    // jemalloc hands pages freed after the configuration burst back over
    // about 10 s (its default decay): read again once they are gone.
    let rss_settled = cp.proc.rss_kib();
    println!(
        "[{label}] kuma-cp RSS 15 s after every stream was configured: {} MiB, {:.0} KiB per further stream",
        rss_settled / 1024,
        rss_settled.saturating_sub(rss_shared) as f64 / (proxies - first).max(1) as f64
    );

    // Each round: the probe the streams watch for, the resource whose PUT
    // makes the change, how many streams it reaches, and the delays from
    // the PUT's return.
    struct Round {
        what: &'static str,
        audience: String,
        probe: Probe,
        change: Change,
        streams: usize,
        number: usize,
    }
    // A policy for one service's proxies reaches 1 % of them at S = 100;
    // their streams are also the ones that stay through the storm below.
    let of_one_service = |i: usize| i % services == 1;
    let affected = (0..proxies).filter(|i| of_one_service(*i)).count();
    let mut plan = Vec::new();
    for r in 0..rounds {
        let secs = 10 + r as i64;
        plan.push(Round {
            what: "MeshTimeout change",
            audience: format!("all {proxies} streams"),
            probe: Probe::ConnectTimeout(secs),
            change: Change::MeshTimeout {
                name: MESH_WIDE_TIMEOUT,
                secs,
                service: None,
            },
            streams: proxies,
            number: r + 1,
        });
    }
    let reaching_svc_0 = (0..proxies).filter(|i| shape.reaches_service(*i, 0)).count();
    for r in 0..rounds {
        let address = format!("10.254.1.{}", r + rounds + 1);
        plan.push(Round {
            what: "endpoint added",
            audience: if reaching_svc_0 == proxies {
                format!("all {proxies} streams")
            } else {
                format!("the {reaching_svc_0} streams that reach it")
            },
            probe: Probe::Endpoint(address.clone()),
            change: Change::Endpoint {
                name: format!("bench-new-{}", r + rounds),
                address,
            },
            streams: reaching_svc_0,
            number: r + 1,
        });
    }
    for r in 0..rounds {
        let secs = 100 + r as i64;
        plan.push(Round {
            what: "MeshTimeout for one service's proxies",
            audience: format!("its {affected} streams"),
            probe: Probe::ConnectTimeout(secs),
            change: Change::MeshTimeout {
                name: "bench-one-service",
                secs,
                service: Some(1),
            },
            streams: affected,
            number: r + 1,
        });
    }
    for round in plan {
        tracker.reset_probe();
        let _ = probe_tx.send(round.probe);
        let received_before = tracker.received.load(Ordering::SeqCst);
        let by_type_before = tracker.received_by_type();
        let work_before = ReconcileWork::of(&cp).await;
        mesh.apply(round.change).await;
        let returned = tracker.now();
        wait_until(
            &format!("{} has the {}", round.audience, round.what),
            || tracker.seen.load(Ordering::SeqCst) == round.streams,
            &tracker,
        )
        .await;
        let delays = tracker.delays_since(returned);
        // What follows the probe (the changed clusters' endpoints) is part
        // of the change's bytes too.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let received = tracker.received.load(Ordering::SeqCst) - received_before;
        let per_stream = |bytes: u64| bytes as f64 / round.streams.max(1) as f64 / 1024.0;
        let by_type = tracker.received_by_type();
        let [clusters, listeners, endpoints] = [0, 1, 2].map(|t| per_stream(by_type[t] - by_type_before[t]));
        let work = ReconcileWork::of(&cp).await.since(&work_before);
        println!(
            "[{label}] {} → {}, round {}: {}; {:.0} KiB received per stream reached \
             (clusters {clusters:.0}, listeners {listeners:.0}, endpoints {endpoints:.0}); {work}",
            round.what,
            round.audience,
            round.number,
            percentiles(delays),
            per_stream(received),
        );
    }

    // A reconnect storm: every stream but one service's (1 %) goes and
    // comes back at once, as after a control plane restart (kuma-cp keeps
    // running here: the memory store would forget the Dataplanes). While
    // the storm is admitted, a MeshTimeout for the service whose streams
    // stayed must reach them without waiting for it.
    let stayed = of_one_service;
    for (i, stream) in streams.iter().enumerate() {
        if !stayed(i) {
            stream.abort();
        }
    }
    for (i, stream) in streams.iter_mut().enumerate() {
        if !stayed(i) {
            let _ = stream.await;
        }
    }
    for (i, at) in tracker.complete_at.iter().enumerate() {
        if !stayed(i) {
            at.store(0, Ordering::SeqCst);
        }
    }
    tracker.completed.store(affected, Ordering::SeqCst);
    tracker.reset_probe();
    let secs = 200;
    let _ = probe_tx.send(Probe::ConnectTimeout(secs));
    let storm_started = Instant::now();
    let since = tracker.now();
    for (i, slot) in streams.iter_mut().enumerate() {
        if stayed(i) {
            continue;
        }
        let (cp, tracker, probe_rx, node) = (cp.clone(), tracker.clone(), probe_rx.clone(), mesh.node(i));
        *slot = tokio::spawn(async move {
            let connection = connect(&cp).await;
            stream(i, node, connection, protocol, tracker, probe_rx).await;
        });
    }
    mesh.apply(Change::MeshTimeout {
        name: "bench-one-service",
        secs,
        service: Some(1),
    })
    .await;
    let returned = tracker.now();
    wait_until(
        "the streams that stayed have the MeshTimeout",
        || tracker.seen.load(Ordering::SeqCst) == affected,
        &tracker,
    )
    .await;
    let delays = tracker.delays_since(returned);
    println!(
        "[{label}] reconnect storm ({} streams at once): MeshTimeout for the {affected} streams that stayed, during it: {}",
        proxies - affected,
        percentiles(delays)
    );
    wait_until(
        "every reconnected stream has its full configuration",
        || tracker.completed.load(Ordering::SeqCst) == proxies,
        &tracker,
    )
    .await;
    let reconfigured: Vec<f64> = tracker
        .complete_at
        .iter()
        .enumerate()
        .filter(|(i, _)| !stayed(*i))
        .map(|(_, at)| at.load(Ordering::SeqCst).saturating_sub(since) as f64 / 1e6)
        .collect();
    println!(
        "[{label}] reconnect storm: every stream configured again {:.2} s after the storm began (each: {})",
        storm_started.elapsed().as_secs_f64(),
        percentiles(reconfigured)
    );
    println!(
        "[{label}] streams ended by the server: {}",
        tracker.ended.load(Ordering::SeqCst)
    );
    // Close the streams so that kuma-cp stops at once.
    for stream in &streams {
        stream.abort();
    }
    for stream in streams {
        let _ = stream.await;
    }
}

/// What kuma-cp's reconciler did, from its metrics: batches applied, the
/// time they took and the proxies they regenerated.
struct ReconcileWork {
    batches: f64,
    seconds: f64,
    generations: f64,
}

impl ReconcileWork {
    async fn of(cp: &ControlPlane) -> Self {
        let metrics = cp.metric_values().await;
        let value = |series: &str| metrics.get(series).copied().unwrap_or_default();
        ReconcileWork {
            batches: value("xds_reconcile_seconds_count"),
            seconds: value("xds_reconcile_seconds_sum"),
            generations: value("xds_generations_total"),
        }
    }

    fn since(&self, before: &ReconcileWork) -> ReconcileWork {
        ReconcileWork {
            batches: self.batches - before.batches,
            seconds: self.seconds - before.seconds,
            generations: self.generations - before.generations,
        }
    }
}

impl std::fmt::Display for ReconcileWork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "kuma-cp reconciled {:.0} batches in {:.1} ms, {:.0} proxies generated",
            self.batches,
            self.seconds * 1000.0,
            self.generations
        )
    }
}

/// One proxy's stream: records when it is complete and when it sees the
/// probe.
async fn stream(
    i: usize,
    node: String,
    connection: kuma_e2e::ads::AdsConnection,
    protocol: Protocol,
    tracker: Arc<Tracker>,
    probe_rx: watch::Receiver<Probe>,
) {
    let mut bytes = 0u64;
    let mut complete = false;
    let ended = run_stream(connection, protocol, &node, |r| {
        tracker.received.fetch_add(r.bytes as u64, Ordering::Relaxed);
        let of_type = match r.type_url {
            CLUSTERS => Some(0),
            LISTENERS => Some(1),
            ENDPOINTS => Some(2),
            _ => None,
        };
        if let Some(t) = of_type {
            tracker.received_by_type[t].fetch_add(r.bytes as u64, Ordering::Relaxed);
        }
        if !complete {
            bytes += r.bytes as u64;
            if let Some(t) = of_type {
                tracker.bytes_by_type[t].fetch_add(r.bytes as u64, Ordering::Relaxed);
            }
            if r.complete {
                complete = true;
                tracker.bytes_until_complete[i].store(bytes, Ordering::SeqCst);
                tracker.complete_at[i].store(tracker.now(), Ordering::SeqCst);
                tracker.completed.fetch_add(1, Ordering::SeqCst);
            }
        }
        let probe = probe_rx.borrow().clone();
        if tracker.seen_at[i].load(Ordering::SeqCst) == 0 && probe.seen_in(r.type_url, &r.resources) {
            tracker.seen_at[i].store(tracker.now(), Ordering::SeqCst);
            tracker.seen.fetch_add(1, Ordering::SeqCst);
        }
    })
    .await;
    tracker.ended.fetch_add(1, Ordering::SeqCst);
    if let Ok(mut last) = tracker.last_end.lock() {
        *last = ended;
    }
}

fn main() {
    let proxies = env_or("ADS_LOAD_PROXIES", 1000);
    let services = env_or("ADS_LOAD_SERVICES", 100);
    let rounds = env_or("ADS_LOAD_ROUNDS", 5);
    let shape = Shape {
        proxies,
        services,
        reaches: env_or("ADS_LOAD_REACHES", 0),
    };
    let protocols = std::env::var("ADS_LOAD_PROTOCOLS").unwrap_or_else(|_| "sotw,delta".into());
    let mode = match std::env::var("ADS_LOAD_MODE").as_deref() {
        Err(_) | Ok("universal") => Mode::Universal,
        Ok("kubernetes") => Mode::Kubernetes,
        Ok(other) => panic!("ADS_LOAD_MODE: unknown mode {other:?} (universal, kubernetes)"),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    kuma_e2e::install_crypto();
    for protocol in protocols.split(',') {
        let protocol = match protocol.trim() {
            "sotw" => Protocol::Sotw,
            "delta" => Protocol::Delta,
            other => panic!("ADS_LOAD_PROTOCOLS: unknown protocol {other:?} (sotw, delta)"),
        };
        runtime.block_on(measure(mode, protocol, shape, rounds));
    }
}
