//! Running Envoy: version, supervision with restart backoff, readiness and
//! draining through its admin API.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::sync::Mutex;

/// Envoy's version (`envoy --version`).
pub async fn version(binary: &str) -> anyhow::Result<String> {
    let out = Command::new(binary)
        .arg("--version")
        .output()
        .await
        .map_err(|e| anyhow::anyhow!("cannot run Envoy at {binary:?}: {e} (set --binary-path)"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "<path>  version: <hash>/1.40.0/Clean/RELEASE/BoringSSL"
    let build = text.split("version:").nth(1).unwrap_or("").trim();
    Ok(build.split('/').nth(1).unwrap_or("unknown").to_string())
}

/// The admin port of a bootstrap.
pub fn admin_port(yaml: &str) -> Option<u16> {
    let v: serde_json::Value = serde_yaml::from_str(yaml).ok()?;
    v.pointer("/admin/address/socketAddress/portValue")
        .and_then(serde_json::Value::as_u64)
        .map(|p| p as u16)
}

/// Keeps Envoy running: restarts it with backoff when it exits.
#[derive(Clone)]
pub struct Supervisor {
    binary: String,
    config: PathBuf,
    drain: Duration,
    log_level: String,
    concurrency: Option<u32>,
    child: Arc<Mutex<Option<Child>>>,
    stopping: Arc<AtomicBool>,
}

impl Supervisor {
    /// A supervisor of Envoy with `config`.
    pub fn new(
        binary: String,
        config: PathBuf,
        drain: Duration,
        log_level: String,
        concurrency: Option<u32>,
    ) -> Self {
        Supervisor {
            binary,
            config,
            drain,
            log_level,
            concurrency,
            child: Arc::new(Mutex::new(None)),
            stopping: Arc::new(AtomicBool::new(false)),
        }
    }

    fn spawn(&self) -> std::io::Result<Child> {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("-c")
            .arg(&self.config)
            .args(["--drain-time-s", &self.drain.as_secs().max(1).to_string()])
            .args(["--use-dynamic-base-id", "--log-level", &self.log_level])
            // Its own process group: a Ctrl-C or a group signal meant for
            // kuma-dp must not stop Envoy before kuma-dp drains it.
            .process_group(0)
            .kill_on_drop(true);
        if let Some(c) = self.concurrency {
            cmd.args(["--concurrency", &c.to_string()]);
        }
        cmd.spawn()
    }

    /// Runs until [`Supervisor::stop`].
    pub async fn run(self) {
        let mut backoff = Duration::from_millis(500);
        loop {
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            let started = tokio::time::Instant::now();
            match self.spawn() {
                Ok(child) => {
                    *self.child.lock().await = Some(child);
                    let status = loop {
                        let mut guard = self.child.lock().await;
                        let Some(c) = guard.as_mut() else { return };
                        match c.try_wait() {
                            Ok(Some(status)) => break Some(status),
                            Ok(None) => {}
                            Err(_) => break None,
                        }
                        drop(guard);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    };
                    if self.stopping.load(Ordering::SeqCst) {
                        return;
                    }
                    tracing::warn!(?status, "Envoy exited; restarting");
                    if started.elapsed() > Duration::from_secs(30) {
                        backoff = Duration::from_millis(500);
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot start Envoy"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }

    /// Stops Envoy (SIGTERM-like kill) and the supervision.
    pub async fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        if let Some(mut c) = self.child.lock().await.take() {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
    }
}

/// Tells Envoy to fail health checks (the start of a drain).
pub async fn fail_health_checks(admin_port: u16) {
    let url = format!("http://127.0.0.1:{admin_port}/healthcheck/fail");
    if let Err(e) = reqwest::Client::new().post(url).send().await {
        tracing::warn!(error = %e, "cannot tell Envoy to fail health checks");
    }
}

/// `GET /ready` on `port`: Envoy's own readiness, 503 once terminating.
pub async fn readiness_server(port: u16, admin_port: u16, terminating: Arc<AtomicBool>) {
    use axum::http::StatusCode;
    let app = axum::Router::new().route(
        "/ready",
        axum::routing::get(move || {
            let terminating = terminating.clone();
            async move {
                if terminating.load(Ordering::SeqCst) {
                    return (StatusCode::SERVICE_UNAVAILABLE, "terminating".to_string());
                }
                match reqwest::Client::new()
                    .get(format!("http://127.0.0.1:{admin_port}/ready"))
                    .send()
                    .await
                {
                    Ok(r) if r.status().is_success() => (StatusCode::OK, "READY".to_string()),
                    Ok(r) => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        r.text().await.unwrap_or_default(),
                    ),
                    Err(_) => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "Envoy is not running".to_string(),
                    ),
                }
            }
        }),
    );
    // On Kubernetes the kubelet probes the Pod's address (INSTANCE_IP, set by
    // the injector); elsewhere loopback is enough.
    let address = std::env::var("INSTANCE_IP")
        .ok()
        .filter(|ip| ip.parse::<std::net::IpAddr>().is_ok())
        .unwrap_or_else(|| "127.0.0.1".into());
    match tokio::net::TcpListener::bind((address.as_str(), port)).await {
        Ok(l) => {
            let _ = axum::serve(l, app).await;
        }
        Err(e) => tracing::warn!(port, error = %e, "cannot serve readiness"),
    }
}
