//! The binaries under test, as child processes with their logs kept in
//! files (printed when a test fails).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::{bin_dir, free_port, temp_dir};

/// A child that is stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Proc {
    pub name: String,
    pub child: Option<Child>,
    pub log: PathBuf,
}

impl Proc {
    /// Starts `program` with `args` and `env`, logging to a file.
    pub fn start(
        name: &str,
        program: &Path,
        args: &[String],
        env: &BTreeMap<String, String>,
        dir: &Path,
    ) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(program)
            .args(args)
            .envs(env)
            .stdout(file.try_clone().expect("clone"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
        Proc {
            name: name.to_string(),
            child: Some(child),
            log,
        }
    }

    /// Its process id (0 once stopped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Its resident memory, KiB (0 once stopped).
    pub fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// Sends SIGTERM and waits (bounded) for the exit.
    pub fn terminate(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        send_signal(child.id(), "TERM");
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                return child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills it (SIGKILL: no chance to clean up) and waits for the exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Signals a process through `kill(1)` (no unsafe code needed).
pub fn send_signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status();
}

impl Drop for Proc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "==== {} log ({}) ====\n{}",
                self.name,
                self.log.display(),
                tail(&self.log(), 60)
            );
        }
        self.terminate(Duration::from_secs(5));
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A kuma-cp instance.
pub struct ControlPlane {
    pub proc: Proc,
    pub api_port: u16,
    pub dp_port: u16,
    pub diag_port: u16,
    pub work_dir: PathBuf,
    pub env: BTreeMap<String, String>,
}

impl ControlPlane {
    /// kuma-cp's `/metrics` as (series, value), e.g.
    /// (`kuma_cp_kube_api_requests_total{verb="get"}`, 12).
    pub async fn metrics(&self) -> BTreeMap<String, u64> {
        self.metric_values()
            .await
            .into_iter()
            .map(|(series, value)| (series, value as u64))
            .collect()
    }

    /// kuma-cp's `/metrics` as (series, value) without rounding, e.g.
    /// (`xds_reconcile_seconds_sum`, 0.0123).
    pub async fn metric_values(&self) -> BTreeMap<String, f64> {
        let text = reqwest::get(format!("http://127.0.0.1:{}/metrics", self.diag_port))
            .await
            .expect("metrics")
            .text()
            .await
            .unwrap_or_default();
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' '))
            .filter_map(|(series, value)| Some((series.to_string(), value.trim().parse::<f64>().ok()?)))
            .collect()
    }

    /// The environment of a control plane on fresh ports; `store` adds the
    /// store settings.
    pub fn env(store: &BTreeMap<String, String>, work_dir: &Path) -> BTreeMap<String, String> {
        let mut env = store.clone();
        env.insert(
            "KUMA_API_SERVER_HTTP_PORT".into(),
            free_port("127.0.0.1").to_string(),
        );
        env.insert("KUMA_DP_SERVER_PORT".into(), free_port("127.0.0.1").to_string());
        env.insert(
            "KUMA_API_SERVER_HTTPS_PORT".into(),
            free_port("127.0.0.1").to_string(),
        );
        env.insert(
            "KUMA_DIAGNOSTICS_SERVER_PORT".into(),
            free_port("127.0.0.1").to_string(),
        );
        env.insert(
            "KUMA_RUNTIME_KUBERNETES_ADMISSION_SERVER_PORT".into(),
            free_port("127.0.0.1").to_string(),
        );
        env.insert("KUMA_GENERAL_WORK_DIR".into(), work_dir.display().to_string());
        env.insert("KUMA_XDS_DATAPLANE_DEREGISTRATION_DELAY".into(), "2s".into());
        env
    }

    /// Starts kuma-cp with `env` and waits until it is ready.
    pub async fn start(name: &str, env: BTreeMap<String, String>) -> ControlPlane {
        crate::install_crypto();
        let work_dir = PathBuf::from(&env["KUMA_GENERAL_WORK_DIR"]);
        let port = |k: &str| env[k].parse::<u16>().expect("port");
        let kuma_cp = bin_dir().join("kuma-cp");
        // A profiler to run kuma-cp under, e.g. `heaptrack -o /tmp/kuma-cp`
        // (its pid and RSS are then the wrapper's).
        let proc = match std::env::var("KUMA_E2E_KUMA_CP_WRAPPER") {
            Ok(wrapper) if !wrapper.trim().is_empty() => {
                let mut words = wrapper.split_whitespace().map(String::from);
                let program = PathBuf::from(words.next().unwrap_or_default());
                let mut args: Vec<String> = words.collect();
                args.extend([kuma_cp.display().to_string(), "run".into()]);
                Proc::start(name, &program, &args, &env, &work_dir)
            }
            _ => Proc::start(name, &kuma_cp, &["run".into()], &env, &work_dir),
        };
        let cp = ControlPlane {
            proc,
            api_port: port("KUMA_API_SERVER_HTTP_PORT"),
            dp_port: port("KUMA_DP_SERVER_PORT"),
            diag_port: port("KUMA_DIAGNOSTICS_SERVER_PORT"),
            work_dir,
            env,
        };
        let ready = format!("http://127.0.0.1:{}/ready", cp.diag_port);
        crate::eventually(&format!("{name} ready"), Duration::from_secs(60), || async {
            match reqwest::get(&ready).await {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => Err(format!("{}", r.status())),
                Err(e) => Err(e.to_string()),
            }
        })
        .await;
        cp
    }

    /// The API URL.
    pub fn api(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }

    /// The API's HTTPS URL.
    pub fn api_https(&self) -> String {
        format!("https://127.0.0.1:{}", self.env["KUMA_API_SERVER_HTTPS_PORT"])
    }

    /// The dp-server URL.
    pub fn dp_server(&self) -> String {
        format!("https://127.0.0.1:{}", self.dp_port)
    }

    /// The CA kuma-dp verifies the dp-server with.
    /// On Kubernetes (without general TLS files) the dp-server serves the
    /// certificate shared with the webhooks, and kuma-cp writes its CA
    /// under `dp-server/`.
    pub fn ca_file(&self) -> PathBuf {
        let kubernetes = self.work_dir.join("dp-server").join("ca.crt");
        if kubernetes.exists() {
            return kubernetes;
        }
        self.work_dir.join("ca.crt")
    }
}

/// Runs `kuma-cp migrate up` against the store of `env`.
pub fn migrate_up(env: &BTreeMap<String, String>) -> String {
    let out = Command::new(bin_dir().join("kuma-cp"))
        .args(["migrate", "up"])
        .envs(env)
        .output()
        .expect("run kuma-cp migrate up");
    assert!(
        out.status.success(),
        "migrate up: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// kumactl with its own configuration file.
pub struct Kumactl {
    config: PathBuf,
}

impl Kumactl {
    /// kumactl pointed at `api`.
    pub fn new(api: &str) -> Kumactl {
        Self::configured(api, &[])
    }

    /// kumactl pointed at `api`, presenting the user token `token`.
    pub fn with_token(api: &str, token: &str) -> Kumactl {
        let conf = format!("token={}", token.trim());
        Self::configured(api, &["--auth-type", "tokens", "--auth-conf", &conf])
    }

    fn configured(api: &str, auth: &[&str]) -> Kumactl {
        let dir = temp_dir("kumactl");
        let k = Kumactl {
            config: dir.join("config"),
        };
        let mut args = vec![
            "config",
            "control-planes",
            "add",
            "--name",
            "e2e",
            "--address",
            api,
        ];
        args.extend_from_slice(auth);
        let out = k.run(&args, None);
        assert!(
            out.status.success(),
            "kumactl config: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        k
    }

    /// Runs kumactl with `args`, feeding `stdin`.
    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(bin_dir().join("kumactl"));
        cmd.args(args)
            .env("KUMACTL_CONFIG", &self.config)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start kumactl");
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
        child.wait_with_output().expect("kumactl output")
    }

    /// Waits (bounded) until the control plane has created the default mesh.
    pub async fn wait_for_default_mesh(&self) {
        crate::eventually("the default mesh exists", Duration::from_secs(60), || async {
            let meshes = self.ok(&["get", "meshes"], None);
            meshes.contains("default").then_some(()).ok_or(meshes)
        })
        .await;
    }

    /// Waits (bounded) until the leader has given the default mesh Kuma's
    /// default policies, so proxies started afterwards are configured once.
    pub async fn wait_for_default_policies(&self) {
        crate::eventually("the default policies exist", Duration::from_secs(60), || async {
            let policies = self.ok(&["get", "meshretries"], None);
            policies
                .contains("mesh-retry-all-default")
                .then_some(())
                .ok_or(policies)
        })
        .await;
    }

    /// A dataplane token for `name` in the default mesh, valid for an hour.
    pub fn dataplane_token(&self, name: &str) -> String {
        self.ok(
            &["generate", "dataplane-token", "--name", name, "--valid-for", "1h"],
            None,
        )
    }

    /// Runs and returns stdout, panicking with stderr on failure.
    pub fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin);
        assert!(
            out.status.success(),
            "kumactl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }
}

/// A Universal Dataplane of the default mesh; `inbound` and `outbound` are
/// the YAML list items (indented four spaces), `"    []\n"` for none.
pub fn dataplane_yaml(name: &str, ip: &str, admin: u16, inbound: &str, outbound: &str) -> String {
    format!(
        "type: Dataplane\nmesh: default\nname: {name}\nnetworking:\n  address: {ip}\n  admin:\n    port: {admin}\n  inbound:\n{inbound}  outbound:\n{outbound}"
    )
}

/// An HTTP inbound item for [`dataplane_yaml`].
pub fn http_inbound(port: u16, service_port: u16, service: &str) -> String {
    format!(
        "    - port: {port}\n      servicePort: {service_port}\n      tags:\n        kuma.io/service: {service}\n        kuma.io/protocol: http\n"
    )
}

/// A kuma-dp with its Envoy.
pub fn start_kuma_dp(
    name: &str,
    cp: &ControlPlane,
    dataplane: &str,
    token: &str,
    readiness_port: u16,
) -> Proc {
    let launch = Launch::new(token, readiness_port, &cp.ca_file());
    kuma_dp(name, cp, Identity::File(dataplane), launch)
}

/// [`start_kuma_dp`] with Envoy draining for `drain` on SIGTERM.
pub fn start_kuma_dp_draining(
    name: &str,
    cp: &ControlPlane,
    dataplane: &str,
    token: &str,
    readiness_port: u16,
    drain: &str,
) -> Proc {
    let launch = Launch {
        drain,
        ..Launch::new(token, readiness_port, &cp.ca_file())
    };
    kuma_dp(name, cp, Identity::File(dataplane), launch)
}

/// [`start_kuma_dp`] verifying the control plane with the CA in `ca_file`
/// instead of the one kuma-cp generated.
pub fn start_kuma_dp_trusting(
    name: &str,
    cp: &ControlPlane,
    dataplane: &str,
    token: &str,
    readiness_port: u16,
    ca_file: &Path,
) -> Proc {
    let launch = Launch::new(token, readiness_port, ca_file);
    kuma_dp(name, cp, Identity::File(dataplane), launch)
}

/// A kuma-dp with its Envoy for a Dataplane that already exists in the
/// control plane (not self-registered, so never deregistered).
pub fn start_existing_kuma_dp(
    name: &str,
    cp: &ControlPlane,
    mesh: &str,
    dataplane: &str,
    token: &str,
    readiness_port: u16,
) -> Proc {
    let launch = Launch::new(token, readiness_port, &cp.ca_file());
    kuma_dp(name, cp, Identity::Existing { mesh, dataplane }, launch)
}

/// [`start_existing_kuma_dp`] over delta xDS, as the injected sidecar of a
/// Kubernetes Pod is (the injector sets the transport variant).
pub fn start_existing_kuma_dp_delta(
    name: &str,
    cp: &ControlPlane,
    mesh: &str,
    dataplane: &str,
    token: &str,
    readiness_port: u16,
) -> Proc {
    let launch = Launch {
        delta: true,
        ..Launch::new(token, readiness_port, &cp.ca_file())
    };
    kuma_dp(name, cp, Identity::Existing { mesh, dataplane }, launch)
}

/// Which Dataplane a kuma-dp serves.
enum Identity<'a> {
    /// Registered by kuma-dp from this definition.
    File(&'a str),
    /// Already in the control plane.
    Existing { mesh: &'a str, dataplane: &'a str },
}

/// How a kuma-dp is started.
struct Launch<'a> {
    token: &'a str,
    readiness_port: u16,
    drain: &'a str,
    ca_file: PathBuf,
    /// Delta xDS, as the injector asks on Kubernetes (else state of the world).
    delta: bool,
}

impl<'a> Launch<'a> {
    fn new(token: &'a str, readiness_port: u16, ca_file: &Path) -> Self {
        Launch {
            token,
            readiness_port,
            drain: "1s",
            ca_file: ca_file.to_path_buf(),
            delta: false,
        }
    }
}

fn kuma_dp(name: &str, cp: &ControlPlane, identity: Identity<'_>, launch: Launch<'_>) -> Proc {
    let dir = temp_dir(name);
    let identity: Vec<String> = match identity {
        Identity::File(dataplane) => {
            let dp_file = dir.join("dataplane.yaml");
            std::fs::write(&dp_file, dataplane).expect("write dataplane");
            vec!["--dataplane-file".into(), dp_file.display().to_string()]
        }
        Identity::Existing { mesh, dataplane } => {
            vec!["--mesh".into(), mesh.into(), "--name".into(), dataplane.into()]
        }
    };
    let Launch {
        token,
        readiness_port,
        drain,
        ca_file,
        delta,
    } = launch;
    let token_file = dir.join("token");
    std::fs::write(&token_file, token).expect("write token");
    let mut args: Vec<String> = vec![
        "run".into(),
        "--cp-address".into(),
        cp.dp_server(),
        "--ca-cert-file".into(),
        ca_file.display().to_string(),
    ];
    args.extend(identity);
    args.extend([
        "--dataplane-token-file".into(),
        token_file.display().to_string(),
        "--binary-path".into(),
        crate::envoy_bin().display().to_string(),
        "--drain-time".into(),
        drain.into(),
        "--work-dir".into(),
        dir.join("work").display().to_string(),
    ]);
    let mut env = BTreeMap::from([("KUMA_READINESS_PORT".to_string(), readiness_port.to_string())]);
    if delta {
        env.insert(
            "KUMA_DATAPLANE_RUNTIME_ENVOY_XDS_TRANSPORT_PROTOCOL_VARIANT".into(),
            "DELTA_GRPC".into(),
        );
    }
    Proc::start(name, &bin_dir().join("kuma-dp"), &args, &env, &dir)
}
