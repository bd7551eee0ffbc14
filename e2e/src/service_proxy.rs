//! The test node agent's Service proxy (kube-proxy's role, for Services
//! with a selector), so a control plane running as Pods is reached as a
//! real cluster reaches it:
//! - each Service port gets a virtual address on the node (`10.244.1.N`),
//!   which Pods started afterwards find under the Service's names in their
//!   `/etc/hosts` (the stand-in for cluster DNS);
//! - its ClusterIP (the loopback service range) listens in the test's own
//!   namespace, where the API server calls webhooks through Services;
//! - both lead through one Unix socket to a forwarder in the node's
//!   namespace that reads its target, a Ready Pod's address and target
//!   port, from a file this proxy rewrites as Pods become ready or go.
//!
//! Off unless asked for: ClusterIPs of clusters running side by side
//! would collide, and other tests resolve Service names through the mesh.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::bin_dir;
use crate::process::Proc;

/// A Pod as the proxy sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Endpoint {
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub ip: String,
    pub ready: bool,
    /// Container ports by name (for named target ports).
    pub named_ports: BTreeMap<String, i32>,
}

struct PortProxy {
    port: i32,
    target_port: IntOrString,
    target_file: PathBuf,
    target: String,
    _procs: Vec<Proc>,
}

struct Proxied {
    namespace: String,
    name: String,
    selector: BTreeMap<String, String>,
    vip: String,
    ports: Vec<PortProxy>,
}

/// The proxied Services of one node.
pub struct ServiceProxy {
    node_ns: String,
    dir: PathBuf,
    cluster_ips: bool,
    services: Mutex<BTreeMap<String, Proxied>>,
    next_vip: Mutex<u8>,
}

/// The target of a Service port: the first Ready Pod (by name order is
/// not known here, so by address) its selector matches.
pub fn target_of(
    namespace: &str,
    selector: &BTreeMap<String, String>,
    target_port: &IntOrString,
    endpoints: &[Endpoint],
) -> String {
    let mut ready: Vec<&Endpoint> = endpoints
        .iter()
        .filter(|e| {
            e.ready && e.namespace == namespace && selector.iter().all(|(k, v)| e.labels.get(k) == Some(v))
        })
        .collect();
    ready.sort_by(|a, b| a.ip.cmp(&b.ip));
    for e in ready {
        let port = match target_port {
            IntOrString::Int(p) => Some(*p),
            IntOrString::String(name) => e.named_ports.get(name).copied(),
        };
        if let Some(port) = port {
            return format!("{}:{port}", e.ip);
        }
    }
    String::new()
}

impl ServiceProxy {
    pub fn new(node_ns: &str, dir: &Path, cluster_ips: bool) -> ServiceProxy {
        ServiceProxy {
            node_ns: node_ns.to_string(),
            dir: dir.to_path_buf(),
            cluster_ips,
            services: Mutex::new(BTreeMap::new()),
            next_vip: Mutex::new(1),
        }
    }

    /// `/etc/hosts` lines for a Pod in `namespace`: every proxied Service's
    /// names at its virtual address.
    pub fn hosts_lines(&self, namespace: &str) -> String {
        let services = self.services.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        for s in services.values() {
            let (n, ns) = (&s.name, &s.namespace);
            let short = if ns == namespace {
                format!(" {n}")
            } else {
                String::new()
            };
            out.push_str(&format!(
                "{} {n}.{ns} {n}.{ns}.svc {n}.{ns}.svc.cluster.local{short}\n",
                s.vip
            ));
        }
        out
    }

    /// A Service appeared or changed.
    pub fn apply(&self, service: &Service, endpoints: &[Endpoint]) {
        let spec = service.spec.clone().unwrap_or_default();
        let selector = spec.selector.clone().unwrap_or_default();
        let namespace = service.metadata.namespace.clone().unwrap_or_default();
        let name = service.metadata.name.clone().unwrap_or_default();
        let key = format!("{namespace}/{name}");
        if selector.is_empty() {
            return;
        }
        let ports: Vec<(i32, IntOrString)> = spec
            .ports
            .iter()
            .flatten()
            .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
            .map(|p| (p.port, p.target_port.clone().unwrap_or(IntOrString::Int(p.port))))
            .collect();
        let mut services = self.services.lock().unwrap_or_else(|e| e.into_inner());
        let same = services.get(&key).is_some_and(|s| {
            s.selector == selector
                && s.ports
                    .iter()
                    .map(|p| (p.port, p.target_port.clone()))
                    .eq(ports.iter().cloned())
        });
        if same {
            return;
        }
        let vip = match services.remove(&key) {
            Some(old) => old.vip,
            None => {
                let mut next = self.next_vip.lock().unwrap_or_else(|e| e.into_inner());
                let vip = format!("10.244.1.{}", *next);
                *next = next.wrapping_add(1).max(1);
                let out = std::process::Command::new("ip")
                    .args([
                        "-n",
                        &self.node_ns,
                        "addr",
                        "add",
                        &format!("{vip}/32"),
                        "dev",
                        "lo",
                    ])
                    .output();
                if let Ok(out) = out
                    && !out.status.success()
                {
                    eprintln!("service proxy: {vip}: {}", String::from_utf8_lossy(&out.stderr));
                }
                vip
            }
        };
        let cluster_ip = spec
            .cluster_ip
            .clone()
            .filter(|ip| self.cluster_ips && ip.starts_with("127."));
        let forward = bin_dir().join("kuma-e2e-forward").display().to_string();
        let mut proxied = Vec::new();
        for (port, target_port) in ports {
            let stem = format!("svc-{namespace}-{name}-{port}");
            let sock = self.dir.join(format!("{stem}.sock"));
            let target_file = self.dir.join(format!("{stem}.target"));
            let target = target_of(&namespace, &selector, &target_port, endpoints);
            let _ = std::fs::write(&target_file, &target);
            let in_node = |listen: &[String]| -> Vec<String> {
                let mut args: Vec<String> = vec![
                    "netns".into(),
                    "exec".into(),
                    self.node_ns.clone(),
                    forward.clone(),
                ];
                args.extend_from_slice(listen);
                args
            };
            let sock_s = sock.display().to_string();
            let mut procs = vec![
                Proc::start(
                    &format!("{stem}-backend"),
                    Path::new("ip"),
                    &in_node(&[
                        "--listen-unix".into(),
                        sock_s.clone(),
                        "--to-tcp-from".into(),
                        target_file.display().to_string(),
                    ]),
                    &BTreeMap::new(),
                    &self.dir,
                ),
                Proc::start(
                    &format!("{stem}-vip"),
                    Path::new("ip"),
                    &in_node(&[
                        "--listen-tcp".into(),
                        format!("{vip}:{port}"),
                        "--to-unix".into(),
                        sock_s.clone(),
                    ]),
                    &BTreeMap::new(),
                    &self.dir,
                ),
            ];
            if let Some(ip) = &cluster_ip {
                procs.push(Proc::start(
                    &format!("{stem}-cluster-ip"),
                    Path::new(&forward),
                    &[
                        "--listen-tcp".into(),
                        format!("{ip}:{port}"),
                        "--to-unix".into(),
                        sock_s,
                    ],
                    &BTreeMap::new(),
                    &self.dir,
                ));
            }
            proxied.push(PortProxy {
                port,
                target_port,
                target_file,
                target,
                _procs: procs,
            });
        }
        services.insert(
            key,
            Proxied {
                namespace,
                name,
                selector,
                vip,
                ports: proxied,
            },
        );
    }

    /// A Service went away.
    pub fn delete(&self, namespace: &str, name: &str) {
        let mut services = self.services.lock().unwrap_or_else(|e| e.into_inner());
        services.remove(&format!("{namespace}/{name}"));
    }

    /// Pods changed: points every Service port at a Ready Pod.
    pub fn refresh(&self, endpoints: &[Endpoint]) {
        let mut services = self.services.lock().unwrap_or_else(|e| e.into_inner());
        for s in services.values_mut() {
            for p in &mut s.ports {
                let target = target_of(&s.namespace, &s.selector, &p.target_port, endpoints);
                if target != p.target {
                    let _ = std::fs::write(&p.target_file, &target);
                    p.target = target;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(ip: &str, ready: bool, app: &str) -> Endpoint {
        Endpoint {
            namespace: "kuma-system".into(),
            labels: [("app".to_string(), app.to_string())].into(),
            ip: ip.into(),
            ready,
            named_ports: [("admission".to_string(), 5443)].into(),
        }
    }

    #[test]
    fn a_service_port_leads_to_a_ready_pod_it_selects() {
        let selector: BTreeMap<String, String> = [("app".to_string(), "cp".to_string())].into();
        let pods = [
            endpoint("10.244.0.9", false, "cp"),
            endpoint("10.244.0.7", true, "other"),
            endpoint("10.244.0.5", true, "cp"),
        ];
        assert_eq!(
            target_of("kuma-system", &selector, &IntOrString::Int(5443), &pods),
            "10.244.0.5:5443"
        );
        assert_eq!(
            target_of(
                "kuma-system",
                &selector,
                &IntOrString::String("admission".into()),
                &pods
            ),
            "10.244.0.5:5443"
        );
        assert_eq!(target_of("default", &selector, &IntOrString::Int(1), &pods), "");
    }
}
