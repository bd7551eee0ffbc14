//! kuma-cp installed into the cluster and run as Pods, as users run it:
//! the test node agent runs the kuma-cp Deployment's Pods (the image
//! stands for our binary, with the args and env the manifest writes),
//! which reach the API server with their in-cluster config and the token
//! of their ServiceAccount, so a verb missing from the install's RBAC
//! fails; the API server calls their webhooks through the Service's
//! ClusterIP, and injected Pods reach the dp-server by its Service name.

use std::time::Duration;

use crate::eventually;
use crate::k8s::{Cluster, Options};
use crate::kube_mesh::kube_client;
use crate::node::{API_SERVER_NAME, AgentOptions, HostService, NodeAgent};
use crate::workloads::{ECHO, Workloads};

/// A cluster whose node agent can run the control plane.
pub struct InCluster {
    pub node: NodeAgent,
    pub cluster: Cluster,
}

impl InCluster {
    /// A cluster (with the controller manager) and a node agent that
    /// publishes the API server to Pods and proxies Services.
    pub async fn start() -> InCluster {
        let cluster = Cluster::start(Options {
            controller_manager: true,
            ..Default::default()
        })
        .await;
        let client = kube_client(&cluster.kubeconfig).await;
        let node = NodeAgent::start_with(
            client,
            vec![HostService {
                names: vec![
                    "kubernetes".into(),
                    "kubernetes.default".into(),
                    API_SERVER_NAME.into(),
                ],
                port: 443,
                target: format!("127.0.0.1:{}", cluster.api_port),
            }],
            AgentOptions {
                service_proxy: true,
                cluster_ips: true,
            },
        )
        .await;
        InCluster { node, cluster }
    }

    pub fn workloads(&self) -> Workloads<'_> {
        Workloads {
            cluster: &self.cluster,
            node: &self.node,
        }
    }

    /// Waits until `n` kuma-cp Pods are Ready in `namespace`; their names.
    pub async fn control_plane_ready(&self, namespace: &str, n: usize) -> Vec<String> {
        self.workloads()
            .ready_pods(namespace, "app=kuma-control-plane", n)
            .await
    }

    /// The log of a kuma-cp Pod's container.
    pub fn control_plane_log(&self, namespace: &str, pod: &str) -> String {
        self.node.container_log(namespace, pod, "control-plane")
    }

    /// Waits until the injector injects a Pod in `kuma-test` (a server-side
    /// dry run): with OLM's `Ignore`, a Pod created while it cannot answer
    /// would run without a sidecar.
    pub async fn injector_answers(&self) {
        let probe = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: injector-probe\n  namespace: kuma-test\nspec:\n  containers:\n    - name: app\n      image: nginx\n";
        eventually("the injector answers", Duration::from_secs(90), || async {
            let out = self.cluster.kubectl(
                &[
                    "create",
                    "--dry-run=server",
                    "-o",
                    "jsonpath={.spec.initContainers[*].name}",
                    "-f",
                    "-",
                ],
                Some(probe),
            );
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            text.contains("kuma-sidecar")
                .then_some(())
                .ok_or_else(|| format!("{text} {}", String::from_utf8_lossy(&out.stderr)))
        })
        .await;
    }

    /// The seed's echo example in namespaces labelled for injection: both
    /// Pods are injected, and the client's Envoy carries HTTP to the
    /// server's. Returns the client Pod and the URL it reaches the server at.
    pub async fn echo_through_the_mesh(&self) -> (String, String) {
        self.cluster
            .create_namespace("kuma-test", &[("kuma.io/sidecar-injection", "enabled")])
            .await;
        self.cluster.kubectl_ok(
            &[
                "label",
                "namespace",
                "default",
                "kuma.io/sidecar-injection=enabled",
            ],
            None,
        );
        self.injector_answers().await;
        self.cluster.apply(ECHO);
        let w = self.workloads();
        let server = w.ready_pods("kuma-test", "app=echo-server", 1).await.remove(0);
        let client = w.ready_pods("default", "app=echo-client", 1).await.remove(0);
        let containers = self.cluster.kubectl_ok(
            &[
                "get",
                "pod",
                &server,
                "-n",
                "kuma-test",
                "-o",
                "jsonpath={.spec.initContainers[*].name} {.spec.containers[*].name}",
            ],
            None,
        );
        assert_eq!(containers, "kuma-init kuma-sidecar echo-server");
        let vip = eventually(
            "the client's outbound to echo-server",
            Duration::from_secs(90),
            || async {
                w.vip("default", &client, 80)
                    .ok_or_else(|| w.admin("default", &client, "/listeners"))
            },
        )
        .await;
        let url = format!("http://{vip}/hello");
        eventually("traffic through the mesh", Duration::from_secs(60), || async {
            let r = w.get_from("default", &client, &url);
            (r.starts_with("200 ") && r.contains(server.as_str()))
                .then_some(())
                .ok_or(r)
        })
        .await;
        (client, url)
    }

    /// Lines of kuma-cp Pods' logs saying the API server refused a request
    /// (a verb the install's RBAC lacks).
    pub fn forbidden(&self, namespace: &str, pods: &[String]) -> Vec<String> {
        pods.iter()
            .flat_map(|p| {
                self.control_plane_log(namespace, p)
                    .lines()
                    .filter(|l| l.contains("forbidden"))
                    .map(|l| format!("{p}: {l}"))
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}
