//! A test node agent: plays the kubelet (and the CNI plugin) of one Node on
//! the test's own Kubernetes API server, with real processes in network
//! namespaces the test creates itself.
//!
//! - The node is a network namespace with a bridge (`10.244.0.1/24`, the
//!   node's address); each Pod gets a namespace of its own, a veth pair to
//!   the bridge and an address `10.244.0.N`, so EndpointSlices are right and
//!   every packet stays inside namespaces of the test.
//! - Pending Pods are bound to the Node; their init containers run in
//!   order (a native sidecar, `restartPolicy: Always`, keeps running), then
//!   their containers, each as a local process inside the Pod's namespace:
//!   the image names the binary it stands for (`Images`), `command`/`args`
//!   with `$(VAR)` references and `env` with `fieldRef`s are resolved as the
//!   kubelet does, the user is `runAsUser`, and `/etc/hosts` and the
//!   projected ServiceAccount token (obtained through the TokenRequest API)
//!   are mounted at their usual paths.
//! - Readiness probes (HTTP GET, TCP) run from the node, as the kubelet's
//!   do; status (Pod IP, container states, readiness, the Ready condition)
//!   is reported through the status subresource.
//! - Processes outside the cluster that Pods reach as Services (the
//!   control plane in the test process's namespace) are published at the
//!   node's address through `kuma-e2e-forward` and named in the Pods'
//!   `/etc/hosts`.
//! - A deleted Pod's processes are stopped, its namespace removed, and its
//!   deletion finished (grace 0).
//! - Volumes (`emptyDir`, `secret`, `configMap`) are made and mounted as
//!   the kubelet does (`volumes.rs`); when the API server is published to
//!   Pods (a host service named `kubernetes.default.svc`), containers get
//!   `KUBERNETES_SERVICE_HOST`/`_PORT` and the cluster CA beside their
//!   token, so a control plane runs in a Pod with its in-cluster config.
//! - With [`AgentOptions::service_proxy`], Services with a selector are
//!   proxied to their Ready Pods (`service_proxy.rs`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Container, EnvVar, Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;

use crate::process::Proc;
use crate::service_proxy::{Endpoint, ServiceProxy};
use crate::{bin_dir, envoy_bin, temp_dir};

/// The Node's name.
pub const NODE_NAME: &str = "kuma-e2e-node";
/// The node's address on the Pod network.
pub const NODE_IP: &str = "10.244.0.1";
/// The cluster DNS Pods are told to use. Nothing answers there: a Pod's
/// kuma-init redirects its DNS to kuma-dp, which answers mesh names.
pub const CLUSTER_DNS_IP: &str = "10.96.0.10";
/// A name only the cluster DNS knows (it answers it with the node's address).
pub const CLUSTER_NAME: &str = "kubernetes.default.svc.cluster.local";

/// How an image runs here: the program standing for its entrypoint (`None`:
/// the image has none, its `command` is run as given).
pub fn image_entrypoint(image: &str) -> Option<Vec<String>> {
    let name = image.rsplit('/').next().unwrap_or(image);
    let name = name.split([':', '@']).next().unwrap_or(name);
    let bin = |b: &str| bin_dir().join(b).display().to_string();
    match name {
        "kuma-dp" => Some(vec![bin("kuma-dp")]),
        "kuma-cp" => Some(vec![bin("kuma-cp")]),
        "kuma-init" | "kumactl" => Some(vec![bin("kumactl")]),
        "nginx" | "echo" | "kuma-e2e-echo" => Some(vec![bin("kuma-e2e-echo")]),
        _ => None,
    }
}

/// The paths images' binaries have, mapped to the binaries standing for
/// them (a `command` naming `/usr/bin/kumactl` runs our kumactl).
fn program_path(program: &str) -> String {
    let bin = |b: &str| bin_dir().join(b).display().to_string();
    match program {
        "/usr/bin/kumactl" | "kumactl" => bin("kumactl"),
        "/usr/bin/kuma-dp" | "kuma-dp" => bin("kuma-dp"),
        "/usr/bin/kuma-cp" | "kuma-cp" => bin("kuma-cp"),
        other => other.to_string(),
    }
}

/// A process outside the cluster published to Pods at the node's address:
/// Pods reach `names` (in their `/etc/hosts`) on `port`, which leads to
/// `target` in the test's namespace.
#[derive(Clone, Debug)]
pub struct HostService {
    /// Host names Pods use (e.g. `kuma-control-plane.kuma-system`).
    pub names: Vec<String>,
    /// The port on the node's address.
    pub port: u16,
    /// Where it leads, e.g. `127.0.0.1:15678`.
    pub target: String,
}

/// The host-service name under which the API server is published to Pods.
pub const API_SERVER_NAME: &str = "kubernetes.default.svc";

/// What the agent does beyond running Pods.
#[derive(Clone, Copy, Debug, Default)]
pub struct AgentOptions {
    /// Proxy Services with a selector to their Ready Pods (a virtual
    /// address per Service in Pods' `/etc/hosts`).
    pub service_proxy: bool,
    /// Also listen on Services' ClusterIPs (loopback range) in the test's
    /// namespace, where the API server calls webhooks. Only one cluster per
    /// test process may ask for it: ClusterIPs of clusters side by side
    /// collide.
    pub cluster_ips: bool,
}

/// Runs `program` with `args` in network namespace `ns`.
fn in_netns(ns: &str, program: &str, args: &[&str]) -> std::process::Output {
    Command::new("ip")
        .args(["netns", "exec", ns, program])
        .args(args)
        .output()
        .expect("ip netns exec")
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One Pod's processes and namespace.
struct RunningPod {
    netns: String,
    ip: String,
    dir: PathBuf,
    /// Processes by container name.
    procs: Arc<Mutex<BTreeMap<String, Proc>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

struct Shared {
    client: kube::Client,
    node_ns: String,
    dir: PathBuf,
    hosts: Vec<HostService>,
    next_ip: Mutex<u8>,
    pods: Mutex<BTreeMap<String, RunningPod>>,
    bin: PathBuf,
    /// Pods whose readiness probes the test made fail.
    failing: Mutex<std::collections::BTreeSet<String>>,
    /// The Service proxy, when asked for.
    proxy: Option<ServiceProxy>,
    /// Running Pods as the Service proxy sees them, by key.
    endpoints: Mutex<BTreeMap<String, Endpoint>>,
}

impl Shared {
    fn endpoint_list(&self) -> Vec<Endpoint> {
        self.endpoints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Records a Pod's readiness and repoints the Services that select it.
    fn set_endpoint(&self, key: &str, endpoint: Option<Endpoint>) {
        let changed = {
            let mut all = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
            match endpoint {
                Some(e) => all.insert(key.to_string(), e.clone()) != Some(e),
                None => all.remove(key).is_some(),
            }
        };
        if let (true, Some(proxy)) = (changed, &self.proxy) {
            proxy.refresh(&self.endpoint_list());
        }
    }
}

/// The running agent; stops everything when dropped.
pub struct NodeAgent {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
    forwarders: Vec<Proc>,
}

impl NodeAgent {
    /// Creates the Node and its network, publishes `hosts`, and starts
    /// serving the Pods scheduled to it (every Pod: it binds pending ones).
    pub async fn start(client: kube::Client, hosts: Vec<HostService>) -> NodeAgent {
        Self::start_with(client, hosts, AgentOptions::default()).await
    }

    /// [`NodeAgent::start`] with options.
    pub async fn start_with(
        client: kube::Client,
        hosts: Vec<HostService>,
        options: AgentOptions,
    ) -> NodeAgent {
        let dir = temp_dir("node");
        let id = std::process::id() % 100_000;
        let node_ns = format!("ke2e{id}n{}", crate::unique_number());
        ip(&["netns", "add", &node_ns]);
        let run = |args: &[&str]| {
            let out = in_netns(&node_ns, "ip", args);
            assert!(
                out.status.success(),
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&["link", "set", "lo", "up"]);
        run(&["link", "add", "br0", "type", "bridge"]);
        run(&["addr", "add", &format!("{NODE_IP}/24"), "dev", "br0"]);
        run(&["link", "set", "br0", "up"]);
        // The cluster DNS: an address of the node, a stub answering there.
        run(&["addr", "add", &format!("{CLUSTER_DNS_IP}/32"), "dev", "lo"]);
        // Binaries other users can run (kuma-dp runs as 5678), outside
        // /tmp: a Pod's emptyDir mounted at /tmp would hide them.
        let bin = Path::new("/var/lib/kuma-e2e").join(&node_ns).join("bin");
        std::fs::create_dir_all(&bin).expect("bin dir");
        let envoy = bin.join("envoy");
        if std::fs::hard_link(envoy_bin(), &envoy).is_err() {
            std::fs::copy(envoy_bin(), &envoy).expect("copy envoy");
        }
        make_traversable(&dir);
        std::fs::create_dir_all("/var/run/secrets/kubernetes.io/serviceaccount").expect("token mount point");
        // Publish the host services at the node's address.
        let mut forwarders = Vec::new();
        for (i, h) in hosts.iter().enumerate() {
            let sock = dir.join(format!("host-{i}.sock"));
            let forward = bin_dir().join("kuma-e2e-forward").display().to_string();
            forwarders.push(Proc::start(
                &format!("forward-host-{i}"),
                Path::new(&forward),
                &[
                    "--listen-unix".into(),
                    sock.display().to_string(),
                    "--to-tcp".into(),
                    h.target.clone(),
                ],
                &BTreeMap::new(),
                &dir,
            ));
            forwarders.push(Proc::start(
                &format!("forward-node-{i}"),
                Path::new("ip"),
                &[
                    "netns".into(),
                    "exec".into(),
                    node_ns.clone(),
                    forward,
                    "--listen-tcp".into(),
                    format!("{NODE_IP}:{}", h.port),
                    "--to-unix".into(),
                    sock.display().to_string(),
                ],
                &BTreeMap::new(),
                &dir,
            ));
        }
        forwarders.push(Proc::start(
            "cluster-dns",
            Path::new("ip"),
            &[
                "netns".into(),
                "exec".into(),
                node_ns.clone(),
                bin_dir().join("kuma-e2e-dns").display().to_string(),
                format!("{CLUSTER_DNS_IP}:53"),
                format!("{CLUSTER_NAME}={NODE_IP}"),
            ],
            &BTreeMap::new(),
            &dir,
        ));
        let nodes: Api<Node> = Api::all(client.clone());
        let node: Node = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": NODE_NAME, "labels": {"kubernetes.io/hostname": NODE_NAME}},
        }))
        .expect("node");
        match nodes.create(&PostParams::default(), &node).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => panic!("create the Node: {e}"),
        }
        let status = json!({"status": {
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kuma-e2e node agent"}],
            "addresses": [{"type": "InternalIP", "address": NODE_IP}, {"type": "Hostname", "address": NODE_NAME}],
        }});
        nodes
            .patch_status(NODE_NAME, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .expect("node status");
        let proxy = options
            .service_proxy
            .then(|| ServiceProxy::new(&node_ns, &dir, options.cluster_ips));
        let shared = Arc::new(Shared {
            client: client.clone(),
            node_ns,
            dir,
            hosts,
            next_ip: Mutex::new(2),
            pods: Mutex::new(BTreeMap::new()),
            bin,
            failing: Mutex::new(Default::default()),
            proxy,
            endpoints: Mutex::new(BTreeMap::new()),
        });
        if shared.proxy.is_some() {
            // Services first: Pods started afterwards find them in /etc/hosts.
            follow_services(&shared).await;
        }
        let task = tokio::spawn(serve(shared.clone()));
        NodeAgent {
            shared,
            task,
            forwarders,
        }
    }

    /// The node's network namespace (e.g. to send traffic from the node).
    pub fn node_netns(&self) -> &str {
        &self.shared.node_ns
    }

    /// The network namespace of a running Pod.
    pub fn pod_netns(&self, namespace: &str, name: &str) -> Option<String> {
        let pods = self.shared.pods.lock().unwrap_or_else(|e| e.into_inner());
        pods.get(&format!("{namespace}/{name}")).map(|p| p.netns.clone())
    }

    /// The address of a running Pod.
    pub fn pod_ip(&self, namespace: &str, name: &str) -> Option<String> {
        let pods = self.shared.pods.lock().unwrap_or_else(|e| e.into_inner());
        pods.get(&format!("{namespace}/{name}")).map(|p| p.ip.clone())
    }

    /// The log of a container of a running Pod.
    pub fn container_log(&self, namespace: &str, name: &str, container: &str) -> String {
        let pods = self.shared.pods.lock().unwrap_or_else(|e| e.into_inner());
        pods.get(&format!("{namespace}/{name}"))
            .map(|p| {
                let log = p.dir.join(format!("{container}.log"));
                std::fs::read_to_string(log).unwrap_or_default()
            })
            .unwrap_or_default()
    }

    /// Runs `program args` in the Pod's network namespace (as root).
    pub fn exec(&self, namespace: &str, name: &str, program: &str, args: &[&str]) -> std::process::Output {
        let ns = self
            .pod_netns(namespace, name)
            .unwrap_or_else(|| panic!("Pod {namespace}/{name} is not running here"));
        in_netns(&ns, program, args)
    }

    /// Makes a Pod's readiness probes fail from now on (as an app that
    /// stops answering would): the Pod turns NotReady.
    pub fn fail_readiness(&self, namespace: &str, name: &str) {
        self.shared
            .failing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(format!("{namespace}/{name}"));
    }
}

impl Drop for NodeAgent {
    fn drop(&mut self) {
        self.task.abort();
        let names: Vec<String> = {
            let pods = self.shared.pods.lock().unwrap_or_else(|e| e.into_inner());
            pods.keys().cloned().collect()
        };
        for key in names {
            stop_pod(&self.shared, &key);
        }
        self.forwarders.clear();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.shared.node_ns])
            .status();
        if let Some(node_bin) = self.shared.bin.parent() {
            let _ = std::fs::remove_dir_all(node_bin);
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.shared.dir);
        }
    }
}

/// Lets other users reach `dir` and its parents up to `/tmp` (kuma-dp
/// runs as 5678; the temp directories are root's).
pub fn make_traversable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut p = dir.to_path_buf();
    loop {
        if let Ok(meta) = std::fs::metadata(&p) {
            let mut perms = meta.permissions();
            perms.set_mode(perms.mode() | 0o755);
            let _ = std::fs::set_permissions(&p, perms);
        }
        if !p.pop() || p == Path::new("/tmp") || p == Path::new("/") {
            break;
        }
    }
}

/// Keeps the Service proxy in step with the cluster's Services; returns
/// once the existing ones are proxied.
async fn follow_services(shared: &Arc<Shared>) {
    use k8s_openapi::api::core::v1::Service;
    let services: Api<Service> = Api::all(shared.client.clone());
    let (synced_tx, synced_rx) = tokio::sync::oneshot::channel();
    let shared = shared.clone();
    tokio::spawn(async move {
        let mut synced = Some(synced_tx);
        let mut events = watcher(services, watcher::Config::default()).boxed();
        while let Some(event) = events.next().await {
            let Some(proxy) = &shared.proxy else { return };
            match event {
                Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)) => {
                    proxy.apply(&s, &shared.endpoint_list())
                }
                Ok(watcher::Event::Delete(s)) => proxy.delete(
                    s.metadata.namespace.as_deref().unwrap_or_default(),
                    s.metadata.name.as_deref().unwrap_or_default(),
                ),
                Ok(watcher::Event::InitDone) => {
                    if let Some(tx) = synced.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(watcher::Event::Init) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    });
    let _ = tokio::time::timeout(Duration::from_secs(30), synced_rx).await;
}

/// Follows every Pod: binds, runs, reports and finishes deletions.
async fn serve(shared: Arc<Shared>) {
    let pods: Api<Pod> = Api::all(shared.client.clone());
    let mut events = watcher(pods, watcher::Config::default()).boxed();
    while let Some(event) = events.next().await {
        let pod = match event {
            Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => p,
            Ok(_) => continue,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let shared = shared.clone();
        handle(shared, pod).await;
    }
}

fn key_of(pod: &Pod) -> String {
    key(pod)
}

fn key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

async fn handle(shared: Arc<Shared>, pod: Pod) {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(shared.client.clone(), &namespace);
    let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    if pod.metadata.deletion_timestamp.is_some() {
        if node.as_deref() == Some(NODE_NAME) {
            let shared2 = shared.clone();
            let k = key(&pod);
            let _ = tokio::task::spawn_blocking(move || stop_pod(&shared2, &k)).await;
            let _ = api.delete(&name, &DeleteParams::default().grace_period(0)).await;
        }
        return;
    }
    match node {
        None => {
            let binding = json!({
                "apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": name},
                "target": {"apiVersion": "v1", "kind": "Node", "name": NODE_NAME},
            });
            let url = format!("/api/v1/namespaces/{namespace}/pods/{name}/binding");
            let request = axum::http::Request::post(url)
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&binding).unwrap_or_default());
            if let Ok(request) = request {
                let _ = shared.client.request::<serde_json::Value>(request).await;
            }
        }
        Some(n) if n == NODE_NAME => {
            let running = {
                let pods = shared.pods.lock().unwrap_or_else(|e| e.into_inner());
                pods.contains_key(&key(&pod))
            };
            if !running {
                start_pod(shared, pod).await;
            }
        }
        Some(_) => {}
    }
}

fn stop_pod(shared: &Shared, key: &str) {
    let Some(pod) = shared.pods.lock().unwrap_or_else(|e| e.into_inner()).remove(key) else {
        return;
    };
    shared.set_endpoint(key, None);
    for t in &pod.tasks {
        t.abort();
    }
    let procs: Vec<Proc> = {
        let mut procs = pod.procs.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut *procs).into_values().collect()
    };
    drop(procs);
    let _ = Command::new("ip").args(["netns", "del", &pod.netns]).status();
    let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(&pod.netns));
}

/// The value of a `fieldRef` of the Pod.
fn field(pod: &Pod, ip: &str, path: &str) -> String {
    let md = &pod.metadata;
    let from_map =
        |m: &Option<BTreeMap<String, String>>, key: &str| m.as_ref().and_then(|m| m.get(key)).cloned();
    if let Some(k) = path
        .strip_prefix("metadata.labels['")
        .and_then(|s| s.strip_suffix("']"))
    {
        return from_map(&md.labels, k).unwrap_or_default();
    }
    if let Some(k) = path
        .strip_prefix("metadata.annotations['")
        .and_then(|s| s.strip_suffix("']"))
    {
        return from_map(&md.annotations, k).unwrap_or_default();
    }
    match path {
        "metadata.name" => md.name.clone().unwrap_or_default(),
        "metadata.namespace" => md.namespace.clone().unwrap_or_default(),
        "metadata.uid" => md.uid.clone().unwrap_or_default(),
        "spec.nodeName" => NODE_NAME.into(),
        "spec.serviceAccountName" => service_account(pod),
        "status.podIP" | "status.podIPs" => ip.into(),
        "status.hostIP" | "status.hostIPs" => NODE_IP.into(),
        _ => String::new(),
    }
}

fn service_account(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into())
}

/// `$(VAR)` references in `text` resolved from `env` (`$$` escapes), as
/// the kubelet expands them; unknown references stay as written.
pub fn expand(text: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match env.get(name) {
                Some(v) => out.push_str(v),
                None => out.push_str(&format!("$({name})")),
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// What the kubelet gives every container: the API server's Service
/// (when it is published to Pods).
fn kubelet_env(shared: &Shared) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    if let Some(api) = shared
        .hosts
        .iter()
        .find(|h| h.names.iter().any(|n| n == API_SERVER_NAME))
    {
        env.insert("KUBERNETES_SERVICE_HOST".into(), NODE_IP.to_string());
        env.insert("KUBERNETES_SERVICE_PORT".into(), api.port.to_string());
    }
    env
}

/// A container's environment, resolved in order (`$(VAR)` may also name
/// what the kubelet set, `base`).
fn container_env(
    pod: &Pod,
    ip: &str,
    env: &[EnvVar],
    base: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for var in env {
        let value = match (&var.value, &var.value_from) {
            (Some(v), _) => {
                let mut known = base.clone();
                known.extend(out.clone());
                expand(v, &known)
            }
            (None, Some(from)) => match &from.field_ref {
                Some(f) => field(pod, ip, &f.field_path),
                None => String::new(),
            },
            (None, None) => String::new(),
        };
        out.insert(var.name.clone(), value);
    }
    out
}

/// The command line of a container: its `command` (or the image's
/// entrypoint) and `args`, references resolved.
fn command_line(container: &Container, env: &BTreeMap<String, String>) -> Option<Vec<String>> {
    let image = container.image.clone().unwrap_or_default();
    let mut argv: Vec<String> = match &container.command {
        Some(cmd) if !cmd.is_empty() => cmd.iter().map(|c| expand(c, env)).collect(),
        _ => image_entrypoint(&image)?,
    };
    argv[0] = program_path(&argv[0]);
    argv.extend(container.args.iter().flatten().map(|a| expand(a, env)));
    Some(argv)
}

async fn start_pod(shared: Arc<Shared>, pod: Pod) {
    let k = key(&pod);
    let name = pod.metadata.name.clone().unwrap_or_default();
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let n = {
        let mut next = shared.next_ip.lock().unwrap_or_else(|e| e.into_inner());
        let n = *next;
        *next = next.wrapping_add(1).max(2);
        n
    };
    let pod_ip = format!("10.244.0.{n}");
    let netns = format!("{}p{n}", shared.node_ns);
    let dir = shared.dir.join(format!("pod-{namespace}-{name}"));
    std::fs::create_dir_all(dir.join("serviceaccount")).expect("pod dir");
    // The network: a namespace of its own, a veth pair to the bridge.
    ip(&["netns", "add", &netns]);
    // The resolv.conf the kubelet writes (`ip netns exec` mounts it over
    // /etc/resolv.conf for everything run in the Pod).
    let etc = Path::new("/etc/netns").join(&netns);
    std::fs::create_dir_all(&etc).expect("/etc/netns");
    std::fs::write(
        etc.join("resolv.conf"),
        format!(
            "search {namespace}.svc.cluster.local svc.cluster.local cluster.local\nnameserver {CLUSTER_DNS_IP}\noptions ndots:5\n"
        ),
    )
    .expect("resolv.conf");
    let veth = format!("vp{n}");
    ip(&[
        "link",
        "add",
        "eth0",
        "netns",
        &netns,
        "type",
        "veth",
        "peer",
        "name",
        &veth,
        "netns",
        &shared.node_ns,
    ]);
    for args in [
        vec!["link", "set", "lo", "up"],
        vec!["addr", "add", &format!("{pod_ip}/24"), "dev", "eth0"],
        vec!["link", "set", "eth0", "up"],
        vec!["route", "add", "default", "via", NODE_IP],
    ] {
        let out = in_netns(&netns, "ip", &args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    for args in [
        vec!["link", "set", veth.as_str(), "master", "br0"],
        vec!["link", "set", veth.as_str(), "up"],
    ] {
        let out = in_netns(&shared.node_ns, "ip", &args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    // /etc/hosts and the ServiceAccount token, as the kubelet mounts them.
    let mut hosts = format!("127.0.0.1 localhost\n::1 localhost\n{pod_ip} {name}\n");
    for h in &shared.hosts {
        hosts.push_str(&format!("{NODE_IP} {}\n", h.names.join(" ")));
    }
    if let Some(proxy) = &shared.proxy {
        hosts.push_str(&proxy.hosts_lines(&namespace));
    }
    std::fs::write(dir.join("hosts"), hosts).expect("hosts");
    let token = service_account_token(&shared.client, &pod).await;
    std::fs::write(dir.join("serviceaccount/token"), token).expect("token");
    std::fs::write(dir.join("serviceaccount/namespace"), &namespace).expect("namespace");
    // The cluster CA, from the ConfigMap the controller manager publishes
    // in every namespace (what the kubelet's projected volume mounts).
    let root_ca: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(shared.client.clone(), &namespace);
    if let Ok(Some(cm)) = root_ca.get_opt("kube-root-ca.crt").await
        && let Some(ca) = cm.data.as_ref().and_then(|d| d.get("ca.crt"))
    {
        std::fs::write(dir.join("serviceaccount/ca.crt"), ca).expect("ca.crt");
    }
    make_traversable(&dir.join("serviceaccount"));
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(
        dir.join("serviceaccount/token"),
        std::fs::Permissions::from_mode(0o644),
    );
    let _ = std::fs::set_permissions(dir.join("hosts"), std::fs::Permissions::from_mode(0o644));

    let running = RunningPod {
        netns: netns.clone(),
        ip: pod_ip.clone(),
        dir: dir.clone(),
        procs: Arc::new(Mutex::new(BTreeMap::new())),
        tasks: Vec::new(),
    };
    let procs = running.procs.clone();
    shared
        .pods
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(k.clone(), running);
    let task = tokio::spawn(run_pod(shared.clone(), pod, pod_ip, netns, dir, procs));
    if let Some(p) = shared.pods.lock().unwrap_or_else(|e| e.into_inner()).get_mut(&k) {
        p.tasks.push(task);
    }
}

/// A projected ServiceAccount token bound to the Pod (TokenRequest API);
/// empty when the API server refuses (the caller's proxy is then refused).
pub async fn service_account_token(client: &kube::Client, pod: &Pod) -> String {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: Vec::new(),
            expiration_seconds: Some(3600),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        },
        ..TokenRequest::default()
    };
    let sa = service_account(pod);
    let url = format!("/api/v1/namespaces/{namespace}/serviceaccounts/{sa}/token");
    let body = serde_json::to_vec(&request).unwrap_or_default();
    let Ok(req) = axum::http::Request::post(url)
        .header("content-type", "application/json")
        .body(body)
    else {
        return String::new();
    };
    match client.request::<TokenRequest>(req).await {
        Ok(t) => t.status.map(|s| s.token).unwrap_or_default(),
        Err(e) => {
            eprintln!(
                "token request for {namespace}/{}: {e}",
                pod.metadata.name.as_deref().unwrap_or_default()
            );
            String::new()
        }
    }
}

/// Starts one container; the process runs as the container's user with
/// the Pod's network, `/etc/hosts` and token.
fn spawn_container(
    shared: &Shared,
    pod: &Pod,
    ip: &str,
    netns: &str,
    dir: &Path,
    volumes: &BTreeMap<String, PathBuf>,
    c: &Container,
) -> Option<Proc> {
    let mut env = kubelet_env(shared);
    env.extend(container_env(pod, ip, c.env.as_deref().unwrap_or_default(), &env));
    let argv = command_line(c, &env)?;
    let user = c
        .security_context
        .as_ref()
        .and_then(|s| s.run_as_user)
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.security_context.as_ref())
                .and_then(|s| s.run_as_user)
        });
    let group = c.security_context.as_ref().and_then(|s| s.run_as_group).or(user);
    let mut script = format!(
        "mount --bind {dir}/hosts /etc/hosts && mount --bind {dir}/serviceaccount /var/run/secrets/kubernetes.io/serviceaccount && {mounts}exec ",
        dir = dir.display(),
        mounts = crate::volumes::mount_script(c, volumes),
    );
    if let Some(uid) = user.filter(|u| *u != 0) {
        script.push_str(&format!(
            "setpriv --reuid={uid} --regid={} --clear-groups ",
            group.unwrap_or(uid)
        ));
    }
    script.push_str("\"$@\"");
    let mut args: Vec<String> = vec![
        "netns".into(),
        "exec".into(),
        netns.into(),
        "sh".into(),
        "-c".into(),
        script,
        "sh".into(),
    ];
    args.extend(argv);
    let mut proc_env = env.clone();
    let path = format!(
        "{}:{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        shared.bin.display(),
        bin_dir().display()
    );
    proc_env.insert("PATH".into(), path);
    proc_env.insert("HOSTNAME".into(), pod.metadata.name.clone().unwrap_or_default());
    proc_env.entry("HOME".into()).or_insert_with(|| "/tmp".into());
    Some(Proc::start(&c.name, Path::new("ip"), &args, &proc_env, dir))
}

/// Whether a container's readiness probe passes (no probe: running).
fn probe(shared: &Shared, ip: &str, c: &Container) -> bool {
    let Some(probe) = &c.readiness_probe else {
        return true;
    };
    let port_of = |p: &k8s_openapi::apimachinery::pkg::util::intstr::IntOrString| match p {
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n) => n.to_string(),
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| p.container_port.to_string())
            .unwrap_or_default(),
    };
    if let Some(get) = &probe.http_get {
        let host = get.host.clone().unwrap_or_else(|| ip.to_string());
        let url = format!(
            "http://{host}:{}{}",
            port_of(&get.port),
            get.path.clone().unwrap_or_else(|| "/".into())
        );
        let out = in_netns(
            &shared.node_ns,
            "curl",
            &["-fsS", "-m", "2", "-o", "/dev/null", &url],
        );
        return out.status.success();
    }
    if let Some(tcp) = &probe.tcp_socket {
        let target = format!(
            "/dev/tcp/{}/{}",
            tcp.host.clone().unwrap_or_else(|| ip.to_string()),
            port_of(&tcp.port)
        );
        let out = in_netns(&shared.node_ns, "bash", &["-c", &format!("exec 3<>{target}")]);
        return out.status.success();
    }
    true
}

/// Runs a Pod: init containers in order, then containers; keeps them
/// running and reports status until stopped.
async fn run_pod(
    shared: Arc<Shared>,
    pod: Pod,
    ip: String,
    netns: String,
    dir: PathBuf,
    procs: Arc<Mutex<BTreeMap<String, Proc>>>,
) {
    let spec = pod.spec.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(
        shared.client.clone(),
        pod.metadata.namespace.as_deref().unwrap_or_default(),
    );
    let name = pod.metadata.name.clone().unwrap_or_default();
    let started_at = k8s_openapi::jiff::Timestamp::now().to_string();
    let mut sidecars: Vec<Container> = Vec::new();
    report(&api, &name, &ip, &[], &[], false, &started_at).await;
    let volumes = match crate::volumes::prepare(&shared.client, &pod, &dir).await {
        Ok(v) => v,
        Err(e) => {
            eprintln!("Pod {}: {e}", key_of(&pod));
            return;
        }
    };
    for c in spec.init_containers.iter().flatten() {
        if c.restart_policy.as_deref() == Some("Always") {
            if let Some(p) = spawn_container(&shared, &pod, &ip, &netns, &dir, &volumes, c) {
                procs
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(c.name.clone(), p);
            }
            sidecars.push(c.clone());
            continue;
        }
        let Some(mut p) = spawn_container(&shared, &pod, &ip, &netns, &dir, &volumes, c) else {
            continue;
        };
        let status = tokio::task::spawn_blocking(move || {
            let status = p.child.as_mut().and_then(|ch| ch.wait().ok());
            (status, p.log())
        })
        .await
        .ok();
        match status {
            Some((Some(s), _)) if s.success() => {}
            Some((_, log)) => {
                eprintln!("init container {} of {name} failed:\n{log}", c.name);
                return;
            }
            None => return,
        }
    }
    for c in &spec.containers {
        if let Some(p) = spawn_container(&shared, &pod, &ip, &netns, &dir, &volumes, c) {
            procs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(c.name.clone(), p);
        }
    }
    // Report, probe, restart what exited.
    let mut last = None;
    let mut probe_failures: BTreeMap<String, (bool, u32)> = BTreeMap::new();
    loop {
        let mut statuses = Vec::new();
        let all: Vec<(Container, bool)> = sidecars
            .iter()
            .cloned()
            .map(|c| (c, true))
            .chain(spec.containers.iter().cloned().map(|c| (c, false)))
            .collect();
        for (c, init) in &all {
            let running = {
                let mut procs = procs.lock().unwrap_or_else(|e| e.into_inner());
                procs.get_mut(&c.name).is_some_and(|p| p.is_running())
            };
            let failing = shared
                .failing
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&key_of(&pod));
            let passed = running && !failing && {
                let shared = shared.clone();
                let ip = ip.clone();
                let c = c.clone();
                tokio::task::spawn_blocking(move || probe(&shared, &ip, &c))
                    .await
                    .unwrap_or(false)
            };
            // As the kubelet: Ready after a pass, NotReady only after
            // `failureThreshold` failures in a row (or at once when the
            // container stopped or the test made it fail).
            let failures = probe_failures.entry(c.name.clone()).or_insert((false, 0));
            if passed {
                *failures = (true, 0);
            } else {
                failures.1 += 1;
                let threshold = c
                    .readiness_probe
                    .as_ref()
                    .and_then(|p| p.failure_threshold)
                    .unwrap_or(3)
                    .max(1) as u32;
                if !running || failing || failures.1 >= threshold {
                    failures.0 = false;
                }
            }
            let ready = running && failures.0;
            statuses.push((
                c.name.clone(),
                c.image.clone().unwrap_or_default(),
                running,
                ready,
                *init,
            ));
        }
        let ready = statuses.iter().all(|(_, _, _, ready, _)| *ready);
        let init_statuses: Vec<_> = statuses.iter().filter(|s| s.4).cloned().collect();
        let container_statuses: Vec<_> = statuses.iter().filter(|s| !s.4).cloned().collect();
        let summary = (statuses.clone(), ready);
        if last.as_ref() != Some(&summary) {
            shared.set_endpoint(&key_of(&pod), Some(endpoint_of(&pod, &ip, ready)));
            report(
                &api,
                &name,
                &ip,
                &container_statuses,
                &init_statuses,
                ready,
                &started_at,
            )
            .await;
            last = Some(summary);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The Pod as the Service proxy sees it.
fn endpoint_of(pod: &Pod, ip: &str, ready: bool) -> Endpoint {
    let spec = pod.spec.clone().unwrap_or_default();
    let named_ports = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| p.name.clone().map(|n| (n, p.container_port)))
        .collect();
    Endpoint {
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        labels: pod.metadata.labels.clone().unwrap_or_default(),
        ip: ip.to_string(),
        ready,
        named_ports,
    }
}

type ContainerState = (String, String, bool, bool, bool);

async fn report(
    api: &Api<Pod>,
    name: &str,
    ip: &str,
    containers: &[ContainerState],
    init: &[ContainerState],
    ready: bool,
    started_at: &str,
) {
    let state = |s: &ContainerState| {
        let (n, image, running, ready, _) = s;
        json!({
            "name": n, "image": image, "imageID": "", "ready": ready, "started": running,
            "restartCount": 0,
            "state": if *running { json!({"running": {"startedAt": started_at}}) } else { json!({"waiting": {"reason": "ContainerCreating"}}) },
        })
    };
    let condition = |t: &str, ok: bool| json!({"type": t, "status": if ok { "True" } else { "False" }});
    let status = json!({"status": {
        "phase": "Running",
        "hostIP": NODE_IP,
        "hostIPs": [{"ip": NODE_IP}],
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "startTime": started_at,
        "conditions": [
            condition("PodScheduled", true),
            condition("Initialized", true),
            condition("ContainersReady", ready),
            condition("Ready", ready),
        ],
        "containerStatuses": containers.iter().map(state).collect::<Vec<_>>(),
        "initContainerStatuses": init.iter().map(state).collect::<Vec<_>>(),
    }});
    let _ = api
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await;
}
