//! Workloads on the test node: the seed's echo server and client, and
//! what tests ask of running Pods (readiness, requests from inside them,
//! their Envoy's admin API, a steady load).

use std::time::Duration;

use serde_json::Value;

use crate::eventually;
use crate::k8s::Cluster;
use crate::node::NodeAgent;

/// The seed's echo-server (Service and Deployment, in `kuma-test`) and
/// echo-client (Deployment, in the current namespace).
pub const ECHO: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: echo-server
  namespace: kuma-test
  annotations:
    80.service.kuma.io/protocol: http
spec:
  ports:
    - port: 80
      name: http
  selector:
    app: echo-server
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: echo-server
  namespace: kuma-test
  labels:
    app: echo-server
spec:
  strategy:
    rollingUpdate:
      maxSurge: 1
      maxUnavailable: 0
  selector:
    matchLabels:
      app: echo-server
  template:
    metadata:
      labels:
        app: echo-server
    spec:
      containers:
        - name: echo-server
          image: nginx
          ports:
            - containerPort: 80
          readinessProbe:
            httpGet:
              path: /ready
              port: 80
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: echo-client
  labels:
    app: echo-client
spec:
  selector:
    matchLabels:
      app: echo-client
  template:
    metadata:
      labels:
        app: echo-client
    spec:
      containers:
        - name: alpine
          image: "alpine"
          imagePullPolicy: IfNotPresent
          command: ["sh", "-c", "tail -f /dev/null"]
"#;

/// A cluster and the node running its Pods.
pub struct Workloads<'a> {
    pub cluster: &'a Cluster,
    pub node: &'a NodeAgent,
}

impl Workloads<'_> {
    /// The Pods of `namespace` with `selector`, as (name, ready).
    pub fn pods(&self, namespace: &str, selector: &str) -> Vec<(String, bool)> {
        let out = self.cluster.kubectl(
            &["get", "pods", "-n", namespace, "-l", selector, "-o", "json"],
            None,
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        v["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .map(|p| {
                let ready = p["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True");
                (
                    p["metadata"]["name"].as_str().unwrap_or_default().to_string(),
                    ready,
                )
            })
            .collect()
    }

    pub async fn ready_pods(&self, namespace: &str, selector: &str, n: usize) -> Vec<String> {
        eventually(
            &format!("{n} ready Pods {selector} in {namespace}"),
            Duration::from_secs(120),
            || async {
                let all = self.pods(namespace, selector);
                let ready: Vec<String> = all.iter().filter(|(_, r)| *r).map(|(n, _)| n.clone()).collect();
                if ready.len() == n && all.len() == n {
                    Ok(ready)
                } else {
                    Err(format!("{all:?}"))
                }
            },
        )
        .await
    }

    /// `GET url` from inside a Pod (as its app would): "<status> <body>".
    pub fn get_from(&self, namespace: &str, pod: &str, url: &str) -> String {
        let out = self.node.exec(
            namespace,
            pod,
            "curl",
            &["-s", "-m", "5", "-o", "/dev/stdout", "-w", "\n%{http_code}", url],
        );
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
        format!("{code} {body}")
    }

    /// Envoy's admin API of a Pod's sidecar (from inside the Pod).
    pub fn admin(&self, namespace: &str, pod: &str, path: &str) -> String {
        let out = self.node.exec(
            namespace,
            pod,
            "curl",
            &["-s", "-m", "5", &format!("http://127.0.0.1:9901{path}")],
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// The VIP the client's Envoy has for a service (its outbound listener).
    pub fn vip(&self, namespace: &str, pod: &str, port: u16) -> Option<String> {
        let dump: Value =
            serde_json::from_str(&self.admin(namespace, pod, "/config_dump?resource=dynamic_listeners"))
                .ok()?;
        dump["configs"]
            .as_array()?
            .iter()
            .filter_map(|l| l["active_state"]["listener"]["name"].as_str())
            .find_map(|name| {
                let rest = name.strip_prefix("outbound:")?;
                let (ip, p) = rest.rsplit_once(':')?;
                // Kuma's VIPs are in 240.0.0.0/4.
                let in_vip_range = ip
                    .parse::<std::net::Ipv4Addr>()
                    .is_ok_and(|a| a.octets()[0] >= 240);
                (p == port.to_string() && in_vip_range).then(|| ip.to_string())
            })
    }
}

/// Requests from inside a Pod, one after the other, until stopped.
pub struct Load {
    child: std::process::Child,
    out: std::path::PathBuf,
}

impl Load {
    pub fn start(node: &NodeAgent, namespace: &str, pod: &str, url: &str) -> Load {
        let ns = node.pod_netns(namespace, pod).expect("running");
        let out = crate::temp_dir("load").join("codes");
        let script = format!(
            "while true; do curl -s -m 5 -o /dev/null -w '%{{http_code}}\n' {url} >> {}; sleep 0.05; done",
            out.display()
        );
        let child = std::process::Command::new("ip")
            .args(["netns", "exec", &ns, "sh", "-c", &script])
            .spawn()
            .expect("load");
        Load { child, out }
    }

    /// Stops and returns the status codes seen.
    pub fn stop(mut self) -> Vec<String> {
        crate::process::send_signal(self.child.id(), "TERM");
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }
}
