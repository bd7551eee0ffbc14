//! Fixtures of the Kubernetes-mode tests: a cluster with the kuma.io CRDs,
//! kuma-cp running against it with a dp-server certificate Pods can verify
//! (`kuma-control-plane.kuma-system`), and the test node agent publishing
//! it to Pods as the Service `kuma-control-plane` in `kuma-system`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::k8s::{Cluster, Options};
use crate::node::{HostService, NodeAgent};
use crate::process::ControlPlane;

/// The names Pods reach the control plane by.
pub const CONTROL_PLANE_NAMES: &[&str] = &[
    "kuma-control-plane.kuma-system",
    "kuma-control-plane.kuma-system.svc",
    "kuma-control-plane.kuma-system.svc.cluster.local",
];

/// A client of the cluster `kubeconfig` names.
pub async fn kube_client(kubeconfig: &std::path::Path) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("client config");
    kube::Client::try_from(config).expect("client")
}

/// A kuma.io/v1alpha1 kind for dynamic clients.
pub fn kuma_api_resource(kind: &str, plural: &str) -> kube::api::ApiResource {
    kube::api::ApiResource {
        group: "kuma.io".into(),
        version: "v1alpha1".into(),
        api_version: "kuma.io/v1alpha1".into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// How many of the Dataplanes `api` lists have an address (kuma-cp has
/// converted their Pods); 0 when the list fails.
pub async fn addressed_dataplanes(api: &kube::Api<kube::api::DynamicObject>) -> usize {
    api.list(&Default::default())
        .await
        .map(|l| {
            l.items
                .iter()
                .filter(|d| d.data.pointer("/spec/networking/address").is_some())
                .count()
        })
        .unwrap_or(0)
}

/// The dp-server certificate and key (files) for the control plane's
/// Service names, signed by the cluster's CA; and that CA's PEM.
pub fn dp_server_certificate(cluster: &Cluster) -> (PathBuf, PathBuf, String) {
    use rcgen::{CertificateParams, Issuer, KeyPair, SanType};
    let (ca_pem, ca_key_pem) = cluster.ca_pem();
    let ca_key = KeyPair::from_pem(ca_key_pem).expect("CA key");
    let issuer = Issuer::from_ca_cert_pem(ca_pem, ca_key).expect("CA");
    let key = KeyPair::generate().expect("key");
    let mut names: Vec<String> = CONTROL_PLANE_NAMES.iter().map(|s| s.to_string()).collect();
    names.push("localhost".into());
    let mut params = CertificateParams::new(names).expect("params");
    params
        .subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().expect("ip")));
    let cert = params.signed_by(&key, &issuer).expect("certificate");
    let dir = cluster.dir.join("dp-server");
    std::fs::create_dir_all(&dir).expect("dir");
    let (cert_file, key_file) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&cert_file, cert.pem()).expect("cert");
    std::fs::write(&key_file, key.serialize_pem()).expect("key");
    (cert_file, key_file, ca_pem.to_string())
}

/// A Kubernetes-mode test bed: the cluster, kuma-cp, the node agent.
pub struct KubeMesh {
    /// The node agent (dropped first: Pods stop before the control plane).
    pub node: NodeAgent,
    /// The control plane.
    pub cp: ControlPlane,
    /// The CA Pods verify the control plane with (PEM).
    pub ca_pem: String,
    /// The cluster.
    pub cluster: Cluster,
}

impl KubeMesh {
    /// Starts it all; `env` adds kuma-cp settings. kuma-cp runs as the
    /// cluster admin.
    pub async fn start(extra_env: &[(&str, &str)]) -> KubeMesh {
        Self::start_with(extra_env, false).await
    }

    /// [`KubeMesh::start`] with kuma-cp running as the ServiceAccount
    /// `config/rbac` makes and binds, so a verb missing there fails.
    pub async fn start_as_service_account(extra_env: &[(&str, &str)]) -> KubeMesh {
        Self::start_with(extra_env, true).await
    }

    async fn start_with(extra_env: &[(&str, &str)], as_service_account: bool) -> KubeMesh {
        let cluster = Cluster::start(Options {
            controller_manager: true,
            ..Default::default()
        })
        .await;
        cluster.install_crds();
        cluster.create_namespace("kuma-system", &[]).await;
        let (cert, key, ca_pem) = dp_server_certificate(&cluster);
        let (kubeconfig, user) = if as_service_account {
            let rbac = crate::workspace_root().join("config/rbac");
            cluster.kubectl_ok(
                &["apply", "--server-side", "-k", &rbac.display().to_string()],
                None,
            );
            // The API server's RBAC cache learns new bindings shortly after.
            let subject = "--as=system:serviceaccount:kuma-system:kuma-control-plane";
            crate::eventually(
                "the RBAC bindings are in force",
                std::time::Duration::from_secs(30),
                || async {
                    let can = |args: &[&str]| {
                        let mut all = vec!["auth", "can-i"];
                        all.extend_from_slice(args);
                        all.push(subject);
                        String::from_utf8_lossy(&cluster.kubectl(&all, None).stdout)
                            .trim()
                            .to_string()
                    };
                    let answer = format!(
                        "{} {}",
                        can(&["watch", "secrets", "-n", "kuma-system"]),
                        can(&["watch", "jobs.batch", "--all-namespaces"])
                    );
                    (answer == "yes yes").then_some(()).ok_or(answer)
                },
            )
            .await;
            (
                cluster.service_account_kubeconfig("kuma-system", "kuma-control-plane"),
                "system:serviceaccount:kuma-system:kuma-control-plane".to_string(),
            )
        } else {
            (cluster.kubeconfig.clone(), "admin".to_string())
        };
        let mut store = BTreeMap::new();
        for (k, v) in [
            ("KUMA_ENVIRONMENT", "kubernetes".to_string()),
            // kuma-cp writes as the kubeconfig's user: its writes are its own.
            ("KUMA_RUNTIME_KUBERNETES_ALLOWED_USERS", user),
            ("KUBECONFIG", kubeconfig.display().to_string()),
            ("HOSTNAME", "kuma-cp".to_string()),
            ("KUMA_GENERAL_TLS_CERT_FILE", cert.display().to_string()),
            ("KUMA_GENERAL_TLS_KEY_FILE", key.display().to_string()),
            // What the injector gives kuma-dp to verify the dp-server with.
            (
                "KUMA_RUNTIME_KUBERNETES_INJECTOR_CA_CERT_FILE",
                cluster.ca_file().display().to_string(),
            ),
        ] {
            store.insert(k.to_string(), v);
        }
        for (k, v) in extra_env {
            store.insert(k.to_string(), v.to_string());
        }
        let work_dir = crate::temp_dir("kube-cp");
        let cp = ControlPlane::start("kuma-cp", ControlPlane::env(&store, &work_dir)).await;
        // The Service Pods reach the control plane through.
        cluster.apply(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: kuma-control-plane\n  namespace: kuma-system\nspec:\n  ports:\n    - name: dp-server\n      port: 5678\n",
        );
        let client = kube_client(&cluster.kubeconfig).await;
        let node = NodeAgent::start(
            client,
            vec![HostService {
                names: CONTROL_PLANE_NAMES.iter().map(|s| s.to_string()).collect(),
                // The injector names the dp-server port kuma-cp listens on.
                port: cp.dp_port,
                target: format!("127.0.0.1:{}", cp.dp_port),
            }],
        )
        .await;
        KubeMesh {
            node,
            cp,
            ca_pem,
            cluster,
        }
    }

    /// Its Pods, as tests look at them.
    pub fn workloads(&self) -> crate::workloads::Workloads<'_> {
        crate::workloads::Workloads {
            cluster: &self.cluster,
            node: &self.node,
        }
    }

    /// A client of the cluster.
    pub async fn client(&self) -> kube::Client {
        kube_client(&self.cluster.kubeconfig).await
    }

    /// The admission server's port.
    pub fn admission_port(&self) -> u16 {
        self.cp.env["KUMA_RUNTIME_KUBERNETES_ADMISSION_SERVER_PORT"]
            .parse()
            .expect("port")
    }

    /// Registers kuma-cp's webhooks from `config/webhook` (Kuma's names,
    /// paths, selectors, failure policies), the Service they name replaced
    /// by kuma-cp's URL on loopback; kuma-cp fills in the caBundle. Waits
    /// until the API server calls them.
    pub async fn install_webhooks(&self) {
        let base = format!("https://127.0.0.1:{}", self.admission_port());
        let yaml = webhooks_by_url(&base);
        self.cluster.apply(&yaml);
        // kuma-cp fills in the caBundle; until then the API server cannot
        // call it.
        crate::eventually(
            "webhook caBundles",
            std::time::Duration::from_secs(60),
            || async {
                let out = self.cluster.kubectl(
                    &[
                        "get",
                        "mutatingwebhookconfiguration,validatingwebhookconfiguration",
                        "-o",
                        "jsonpath={.items[*].webhooks[*].clientConfig.caBundle}",
                    ],
                    None,
                );
                let text = String::from_utf8_lossy(&out.stdout).to_string();
                if text.split_whitespace().count() == 5 {
                    Ok(())
                } else {
                    Err(text)
                }
            },
        )
        .await;
    }
}

/// The webhook configurations of `config/webhook`, each webhook's
/// `clientConfig.service` turned into `url: <base><path>` (the API server
/// here cannot reach Pod networks; kuma-cp listens on loopback).
pub fn webhooks_by_url(base: &str) -> String {
    let dir = crate::workspace_root().join("config/webhook");
    let mut docs = Vec::new();
    for file in ["mutating.yaml", "validating.yaml"] {
        let text = std::fs::read_to_string(dir.join(file)).expect("config/webhook");
        let mut doc: serde_yaml::Value = serde_yaml::from_str(&text).expect("webhook YAML");
        if let Some(hooks) = doc.get_mut("webhooks").and_then(|w| w.as_sequence_mut()) {
            for hook in hooks {
                let path = hook["clientConfig"]["service"]["path"]
                    .as_str()
                    .unwrap_or("/")
                    .to_string();
                let mut client_config = serde_yaml::Mapping::new();
                client_config.insert("url".into(), format!("{base}{path}").into());
                hook["clientConfig"] = serde_yaml::Value::Mapping(client_config);
            }
        }
        docs.push(serde_yaml::to_string(&doc).expect("YAML"));
    }
    docs.join("---\n")
}
