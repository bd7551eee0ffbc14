//! A real Kubernetes control plane of the test's own: etcd, one or two
//! kube-apiservers and, where a test needs garbage collection, ReplicaSets,
//! EndpointSlices or ServiceAccounts, the kube-controller-manager — the
//! binaries `scripts/install-k8s.sh` builds from Go modules (v1.34.12, etcd
//! v3.6.17) — on free loopback ports with certificates of its own, stopped
//! when dropped. Flags and pitfalls: `shared/reference/k8s-harness.md`.
//!
//! The service range is a loopback one (`127.0.100.0/24`), so a process can
//! bind a Service's ClusterIP (webhooks by service reference). Pods never
//! get loopback addresses (EndpointSlices refuse them).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::process::Proc;
use crate::{free_port, temp_dir, workspace_root};

/// The admin's bearer token (group `system:masters`).
pub const ADMIN_TOKEN: &str = "admin-token-e2e-0123456789";
/// Another cluster admin, `jane` (a user, not the control plane).
pub const USER_TOKEN: &str = "user-token-e2e-0123456789";
const KCM_TOKEN: &str = "kcm-token-e2e-0123456789";

/// The directory of the Kubernetes binaries (built on first use).
pub fn k8s_bin_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| crate::tool_dir("K8S_BIN_DIR", "scripts/install-k8s.sh"))
        .clone()
}

/// What a cluster runs beside etcd and the API server.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// The controller manager (GC, ReplicaSets, EndpointSlices, ServiceAccounts).
    pub controller_manager: bool,
    /// A second API server on the same etcd (to write while the first is down).
    pub second_apiserver: bool,
}

/// The certificates of a cluster.
struct Pki {
    ca_cert: PathBuf,
    ca_key_pem: String,
    ca_cert_pem: String,
}

/// A running cluster.
pub struct Cluster {
    /// Its directory (certificates, kubeconfigs, logs, etcd data).
    pub dir: PathBuf,
    /// The API server's port.
    pub api_port: u16,
    /// The second API server's port, if any.
    pub second_api_port: Option<u16>,
    /// The admin kubeconfig.
    pub kubeconfig: PathBuf,
    pki: Pki,
    etcd_port: u16,
    etcd_peer_port: u16,
    etcd: Option<Proc>,
    apiserver: Option<Proc>,
    second_apiserver: Option<Proc>,
    controller_manager: Option<Proc>,
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

impl Pki {
    fn create(dir: &Path) -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "e2e-kubernetes-ca");
        let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
        let ca_cert_pem = ca_cert.pem();
        let ca_key_pem = ca_key.serialize_pem();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().expect("apiserver key");
        let mut params = CertificateParams::new(vec![
            "localhost".to_string(),
            "kubernetes".into(),
            "kubernetes.default".into(),
            "kubernetes.default.svc".into(),
        ])
        .expect("apiserver params");
        // 10.244.0.1: the test node's address, where Pods reach the API
        // server (`node::API_SERVER_NAME`).
        for ip in ["127.0.0.1", "127.0.100.1", "10.244.0.1"] {
            params
                .subject_alt_names
                .push(SanType::IpAddress(ip.parse().expect("ip")));
        }
        params
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        let cert = params.signed_by(&key, &issuer).expect("apiserver certificate");
        write(&dir.join("ca.crt"), &ca_cert_pem);
        write(&dir.join("ca.key"), &ca_key_pem);
        write(&dir.join("apiserver.crt"), &cert.pem());
        write(&dir.join("apiserver.key"), &key.serialize_pem());
        // The service account signer (ES256).
        let sa = KeyPair::generate().expect("service account key");
        write(&dir.join("sa.key"), &sa.serialize_pem());
        write(&dir.join("sa.pub"), &sa.public_key_pem());
        write(
            &dir.join("tokens.csv"),
            &format!(
                "{ADMIN_TOKEN},admin,admin-uid,\"system:masters\"\n{USER_TOKEN},jane,jane-uid,\"system:masters\"\n{KCM_TOKEN},system:kube-controller-manager,kcm-uid\n"
            ),
        );
        Pki {
            ca_cert: dir.join("ca.crt"),
            ca_key_pem,
            ca_cert_pem,
        }
    }
}

/// A kubeconfig for `token` at `port`.
fn kubeconfig(ca: &Path, port: u16, user: &str, token: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster:\n    server: https://127.0.0.1:{port}\n    certificate-authority: {}\nusers:\n- name: {user}\n  user:\n    token: {token}\ncontexts:\n- name: e2e\n  context:\n    cluster: e2e\n    user: {user}\ncurrent-context: e2e\n",
        ca.display()
    )
}

impl Cluster {
    /// Starts etcd and the API server(s) (and the controller manager when
    /// asked), and waits until they are ready.
    pub async fn start(options: Options) -> Cluster {
        crate::install_crypto();
        let dir = temp_dir("k8s");
        let pki = Pki::create(&dir);
        let etcd_port = free_port("127.0.0.1");
        let mut cluster = Cluster {
            api_port: free_port("127.0.0.1"),
            second_api_port: options.second_apiserver.then(|| free_port("127.0.0.1")),
            kubeconfig: dir.join("admin.kubeconfig"),
            dir,
            pki,
            etcd_port,
            etcd_peer_port: free_port("127.0.0.1"),
            etcd: None,
            apiserver: None,
            second_apiserver: None,
            controller_manager: None,
        };
        write(
            &cluster.kubeconfig,
            &kubeconfig(&cluster.pki.ca_cert, cluster.api_port, "admin", ADMIN_TOKEN),
        );
        cluster.etcd = Some(cluster.start_etcd("etcd"));
        cluster.wait_etcd_healthy().await;
        cluster.apiserver = Some(cluster.start_apiserver("kube-apiserver", cluster.api_port));
        cluster.wait_ready(cluster.api_port).await;
        if let Some(port) = cluster.second_api_port {
            cluster.second_apiserver = Some(cluster.start_apiserver("kube-apiserver-2", port));
            cluster.wait_ready(port).await;
        }
        if options.controller_manager {
            cluster.start_controller_manager().await;
        }
        cluster
    }

    fn start_etcd(&self, name: &str) -> Proc {
        let (port, peer_port) = (self.etcd_port, self.etcd_peer_port);
        let args: Vec<String> = [
            "--name=e2e".to_string(),
            format!("--data-dir={}", self.dir.join("etcd").display()),
            format!("--listen-client-urls=http://127.0.0.1:{port}"),
            format!("--advertise-client-urls=http://127.0.0.1:{port}"),
            format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"),
            format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"),
            format!("--initial-cluster=e2e=http://127.0.0.1:{peer_port}"),
            "--unsafe-no-fsync=true".into(),
            "--log-level=warn".into(),
        ]
        .into();
        Proc::start(
            name,
            &k8s_bin_dir().join("etcd"),
            &args,
            &BTreeMap::new(),
            &self.dir,
        )
    }

    async fn wait_etcd_healthy(&self) {
        let health = format!("http://127.0.0.1:{}/health", self.etcd_port);
        crate::eventually("etcd healthy", Duration::from_secs(30), || async {
            match reqwest::get(&health).await {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => Err(r.status().to_string()),
                Err(e) => Err(e.to_string()),
            }
        })
        .await;
    }

    /// Stops etcd, as a crash would (the API servers stay up, unable to
    /// read or write).
    pub fn stop_etcd(&mut self) {
        if let Some(mut p) = self.etcd.take() {
            p.kill();
        }
    }

    /// Starts etcd again on its data and ports, and waits until it and the
    /// API server are ready.
    pub async fn start_etcd_again(&mut self) {
        let started = Instant::now();
        self.etcd = Some(self.start_etcd("etcd-again"));
        self.wait_etcd_healthy().await;
        self.wait_ready(self.api_port).await;
        eprintln!("etcd restarted in {:?}", started.elapsed());
    }

    fn start_apiserver(&self, name: &str, port: u16) -> Proc {
        let d = &self.dir;
        let args: Vec<String> = vec![
            format!("--etcd-servers=http://127.0.0.1:{}", self.etcd_port),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={port}"),
            format!("--cert-dir={}", d.join(format!("{name}-certs")).display()),
            format!("--tls-cert-file={}", d.join("apiserver.crt").display()),
            format!("--tls-private-key-file={}", d.join("apiserver.key").display()),
            format!("--client-ca-file={}", d.join("ca.crt").display()),
            format!("--token-auth-file={}", d.join("tokens.csv").display()),
            "--authorization-mode=RBAC".into(),
            format!("--service-account-issuer=https://127.0.0.1:{}", self.api_port),
            format!("--service-account-key-file={}", d.join("sa.pub").display()),
            format!(
                "--service-account-signing-key-file={}",
                d.join("sa.key").display()
            ),
            "--service-cluster-ip-range=127.0.100.0/24".into(),
            "--allow-privileged=true".into(),
            "--profiling=false".into(),
        ];
        let mut env = BTreeMap::new();
        env.insert("NO_PROXY".to_string(), "127.0.0.1,localhost".to_string());
        Proc::start(
            name,
            &k8s_bin_dir().join("kube-apiserver"),
            &args,
            &env,
            &self.dir,
        )
    }

    async fn wait_ready(&self, port: u16) {
        let client = self.http_client();
        let url = format!("https://127.0.0.1:{port}/readyz");
        crate::eventually("kube-apiserver ready", Duration::from_secs(90), || async {
            match client.get(&url).bearer_auth(ADMIN_TOKEN).send().await {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => Err(r.status().to_string()),
                Err(e) => Err(e.to_string()),
            }
        })
        .await;
    }

    /// An HTTPS client trusting the cluster's CA.
    pub fn http_client(&self) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(self.pki.ca_cert_pem.as_bytes()).expect("CA");
        reqwest::Client::builder()
            .tls_certs_only([ca])
            .build()
            .expect("client")
    }

    async fn start_controller_manager(&mut self) {
        let kcm_config = self.dir.join("kcm.kubeconfig");
        write(
            &kcm_config,
            &kubeconfig(
                &self.pki.ca_cert,
                self.api_port,
                "system:kube-controller-manager",
                KCM_TOKEN,
            ),
        );
        let port = free_port("127.0.0.1");
        let d = &self.dir;
        let args: Vec<String> = vec![
            format!("--kubeconfig={}", kcm_config.display()),
            format!("--authentication-kubeconfig={}", kcm_config.display()),
            format!("--authorization-kubeconfig={}", kcm_config.display()),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={port}"),
            format!("--cert-dir={}", d.join("kcm-certs").display()),
            "--leader-elect=false".into(),
            "--use-service-account-credentials=true".into(),
            format!(
                "--service-account-private-key-file={}",
                d.join("sa.key").display()
            ),
            format!("--root-ca-file={}", d.join("ca.crt").display()),
            "--service-cluster-ip-range=127.0.100.0/24".into(),
            "--controllers=*,-node-lifecycle-controller,-pod-garbage-collector-controller".into(),
        ];
        self.controller_manager = Some(Proc::start(
            "kube-controller-manager",
            &k8s_bin_dir().join("kube-controller-manager"),
            &args,
            &BTreeMap::new(),
            &self.dir,
        ));
        let client = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .build()
            .expect("client");
        let url = format!("https://127.0.0.1:{port}/healthz");
        crate::eventually(
            "kube-controller-manager healthy",
            Duration::from_secs(60),
            || async {
                match client.get(&url).send().await {
                    Ok(r) if r.status().is_success() => Ok(()),
                    Ok(r) => Err(r.status().to_string()),
                    Err(e) => Err(e.to_string()),
                }
            },
        )
        .await;
    }

    /// Stops the (first) API server, as a crash would.
    pub fn stop_apiserver(&mut self) {
        if let Some(mut p) = self.apiserver.take() {
            p.kill();
        }
    }

    /// Starts the (first) API server again on its port and waits for it.
    pub async fn start_apiserver_again(&mut self) {
        let started = Instant::now();
        self.apiserver = Some(self.start_apiserver("kube-apiserver-again", self.api_port));
        self.wait_ready(self.api_port).await;
        eprintln!("kube-apiserver restarted in {:?}", started.elapsed());
    }

    /// A kubeconfig of the user `jane` (a cluster admin who is not the
    /// control plane).
    pub fn user_kubeconfig(&self) -> PathBuf {
        let path = self.dir.join("jane.kubeconfig");
        write(
            &path,
            &kubeconfig(&self.pki.ca_cert, self.api_port, "jane", USER_TOKEN),
        );
        path
    }

    /// A kubeconfig of a ServiceAccount (a token from the TokenRequest API,
    /// as a Pod of that ServiceAccount would hold), so what it does is
    /// checked against the RBAC rules bound to it.
    pub fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> PathBuf {
        let token = self.kubectl_ok(
            &["create", "token", name, "-n", namespace, "--duration=24h"],
            None,
        );
        let path = self.dir.join(format!("{namespace}-{name}.kubeconfig"));
        let user = format!("system:serviceaccount:{namespace}:{name}");
        write(
            &path,
            &kubeconfig(&self.pki.ca_cert, self.api_port, &user, token.trim()),
        );
        path
    }

    /// A kubeconfig for the second API server.
    pub fn second_kubeconfig(&self) -> PathBuf {
        let port = self.second_api_port.expect("a second API server was asked for");
        let path = self.dir.join("admin-2.kubeconfig");
        write(&path, &kubeconfig(&self.pki.ca_cert, port, "admin", ADMIN_TOKEN));
        path
    }

    /// The CA's certificate and key (PEM), e.g. to sign webhook certificates.
    pub fn ca_pem(&self) -> (&str, &str) {
        (&self.pki.ca_cert_pem, &self.pki.ca_key_pem)
    }

    /// The CA certificate file.
    pub fn ca_file(&self) -> &Path {
        &self.pki.ca_cert
    }

    /// kubectl against this cluster (or the one `kubeconfig` names).
    pub fn kubectl_with(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(k8s_bin_dir().join("kubectl"));
        cmd.args(args)
            .env("KUBECONFIG", kubeconfig)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start kubectl");
        if let Some(text) = stdin {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(text.as_bytes())
                .expect("write stdin");
        }
        drop(child.stdin.take());
        child.wait_with_output().expect("kubectl output")
    }

    /// kubectl against this cluster.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        Self::kubectl_with(&self.kubeconfig, args, stdin)
    }

    /// kubectl that must succeed; its standard output.
    pub fn kubectl_ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl(args, stdin);
        assert!(
            out.status.success(),
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// Applies `yaml` (server-side).
    pub fn apply(&self, yaml: &str) -> String {
        self.kubectl_ok(&["apply", "--server-side", "-f", "-"], Some(yaml))
    }

    /// Installs the project's kuma.io CRDs and waits until they serve.
    pub fn install_crds(&self) {
        let crds = workspace_root().join("config/crds");
        self.apply_crds(&["-k", &crds.display().to_string()], None);
    }

    /// Applies CRDs server-side (`source`: `-k DIR`, `-f DIR` or `-f -`
    /// with `stdin`) and waits until the API server has established them.
    pub fn apply_crds(&self, source: &[&str], stdin: Option<&str>) {
        let mut args = vec!["apply", "--server-side"];
        args.extend_from_slice(source);
        self.kubectl_ok(&args, stdin);
        self.kubectl_ok(
            &[
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                "crd",
                "--all",
            ],
            None,
        );
    }

    /// Creates a namespace (and, with the controller manager, waits for its
    /// `default` ServiceAccount, without which pods are refused).
    pub async fn create_namespace(&self, name: &str, labels: &[(&str, &str)]) {
        let mut yaml = format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n");
        if !labels.is_empty() {
            yaml.push_str("  labels:\n");
            for (k, v) in labels {
                yaml.push_str(&format!("    {k}: \"{v}\"\n"));
            }
        }
        self.apply(&yaml);
        if self.controller_manager.is_some() {
            crate::eventually(
                &format!("ServiceAccount default in {name}"),
                Duration::from_secs(30),
                || async {
                    let out = self.kubectl(&["get", "serviceaccount", "default", "-n", name], None);
                    if out.status.success() {
                        Ok(())
                    } else {
                        Err(String::from_utf8_lossy(&out.stderr).to_string())
                    }
                },
            )
            .await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Reverse order: nothing is left talking to a stopped dependency.
        drop(self.controller_manager.take());
        drop(self.second_apiserver.take());
        drop(self.apiserver.take());
        drop(self.etcd.take());
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
