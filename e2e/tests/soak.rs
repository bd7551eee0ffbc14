//! A soak: policy churn, Dataplane churn, a kuma-cp SIGKILL and restart,
//! and certificates rotating every few seconds, mixed while requests flow
//! through two proxies over mTLS. No request may fail; the restarted
//! kuma-cp's memory and open files must not grow while the churn goes on.
//!
//! `KUMA_SOAK_SECONDS` sets its length: 120 in the test command, 600 for
//! the long run (`KUMA_SOAK_SECONDS=600 cargo test -p kuma-e2e --test soak
//! -- --nocapture`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kuma_e2e::apps::{get, http_app};
use kuma_e2e::postgres::Postgres;
use kuma_e2e::process::{ControlPlane, Kumactl, dataplane_yaml, http_inbound, migrate_up, start_kuma_dp};
use kuma_e2e::{eventually, free_port, temp_dir};

const LIMIT: Duration = Duration::from_secs(60);

const ALLOW_ALL: &str = "type: MeshTrafficPermission\nmesh: default\nname: allow-all\nspec:\n  targetRef:\n    kind: Mesh\n  from:\n    - targetRef:\n        kind: Mesh\n      default:\n        action: Allow\n";

/// mTLS with certificates living 10 s, so they rotate all along.
const MTLS_MESH: &str = "type: Mesh\nname: default\nmtls:\n  enabledBackend: ca-1\n  backends:\n    - name: ca-1\n      type: builtin\n      dpCert:\n        rotation:\n          expiration: 10s\n";

fn soak_seconds() -> u64 {
    std::env::var("KUMA_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120)
}

fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Requests through the client proxy until stopped: sent, failed, and the
/// last failure.
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<String>,
}

impl Load {
    fn start(url: String) -> Load {
        let (stop, sent, failed) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
        );
        let task = {
            let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
            tokio::spawn(async move {
                // A fresh connection per request: what is soaked is the
                // proxies' configuration, not one pooled connection.
                let http = reqwest::Client::builder()
                    .pool_max_idle_per_host(0)
                    .timeout(Duration::from_secs(10))
                    .build()
                    .expect("client");
                let mut last_failure = String::new();
                while !stop.load(Ordering::SeqCst) {
                    sent.fetch_add(1, Ordering::SeqCst);
                    match get(&http, &url).await {
                        Ok(r) if r == "200 backend" => {}
                        other => {
                            failed.fetch_add(1, Ordering::SeqCst);
                            last_failure = format!("{other:?}");
                        }
                    }
                    // Pacing: a steady stream, not a flood.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                last_failure
            })
        };
        Load {
            stop,
            sent,
            failed,
            task,
        }
    }

    async fn stop(self) -> (u64, u64, String) {
        self.stop.store(true, Ordering::SeqCst);
        let last = self.task.await.expect("load");
        (
            self.sent.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
            last,
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_under_churn_restarts_and_rotation() {
    let seconds = soak_seconds();
    let ip = |h: u8| format!("127.0.44.{h}");
    let pg = Postgres::start().await;
    let store = pg.store_env();
    migrate_up(&store);
    let cp_env = ControlPlane::env(&store, &temp_dir("cp"));
    let mut cp = ControlPlane::start("kuma-cp", cp_env.clone()).await;
    let kumactl = Kumactl::new(&cp.api());
    kumactl.wait_for_default_policies().await;
    kumactl.ok(&["apply", "-f", "-"], Some(ALLOW_ALL));
    kumactl.ok(&["apply", "-f", "-"], Some(MTLS_MESH));

    let app = http_app(&ip(2), "backend").await;
    let outbound = free_port(&ip(1));
    let web = dataplane_yaml(
        "web",
        &ip(1),
        free_port("127.0.0.1"),
        &http_inbound(free_port(&ip(1)), 1, "web"),
        &format!(
            "    - port: {outbound}\n      address: {}\n      tags:\n        kuma.io/service: backend\n    - port: {}\n      address: {}\n      tags:\n        kuma.io/service: extra\n",
            ip(1),
            free_port(&ip(1)),
            ip(1)
        ),
    );
    let backend = dataplane_yaml(
        "backend",
        &ip(2),
        free_port("127.0.0.1"),
        &http_inbound(free_port(&ip(2)), app, "backend"),
        "    []\n",
    );
    let _web = start_kuma_dp(
        "kuma-dp-web",
        &cp,
        &web,
        &kumactl.dataplane_token("web"),
        free_port("127.0.0.1"),
    );
    let _backend = start_kuma_dp(
        "kuma-dp-backend",
        &cp,
        &backend,
        &kumactl.dataplane_token("backend"),
        free_port("127.0.0.1"),
    );
    let url = format!("http://{}:{outbound}/", ip(1));
    eventually("traffic flows over mTLS", LIMIT, || async {
        let r = get(&kuma_e2e::apps::client(), &url).await?;
        (r == "200 backend").then_some(()).ok_or(r)
    })
    .await;

    let load = Load::start(url.clone());
    let http = kuma_e2e::apps::client();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let restart_at = started + Duration::from_secs(seconds / 4);
    let sample_at = restart_at + Duration::from_secs(seconds / 4);
    let (mut restarted, mut baseline) = (false, None);
    let mut round = 0u64;
    while Instant::now() < deadline {
        round += 1;
        match round % 3 {
            // Policy churn: a timeout changing every few rounds.
            0 => {
                let timeout = format!(
                    "type: MeshTimeout\nmesh: default\nname: soak\nspec:\n  targetRef:\n    kind: Mesh\n  to:\n    - targetRef:\n        kind: Mesh\n      default:\n        idleTimeout: {}s\n",
                    30 + round % 7
                );
                kumactl.ok(&["apply", "-f", "-"], Some(&timeout));
            }
            // Dataplane churn: endpoints of a service the client reaches
            // come and go.
            1 => {
                let name = format!("extra-{}", round % 5);
                let address = ip(100 + (round % 5) as u8);
                let extra = dataplane_yaml(
                    &name,
                    &address,
                    free_port("127.0.0.1"),
                    &http_inbound(8080, 8080, "extra"),
                    "    []\n",
                );
                kumactl.ok(&["apply", "-f", "-"], Some(&extra));
            }
            _ => {
                let name = format!("extra-{}", (round + 2) % 5);
                let _ = kumactl.run(&["delete", "dataplane", &name], None);
            }
        }
        if !restarted && Instant::now() >= restart_at {
            cp.proc.kill();
            cp = ControlPlane::start("kuma-cp-restarted", cp_env.clone()).await;
            restarted = true;
        }
        if restarted && baseline.is_none() && Instant::now() >= sample_at {
            baseline = Some((cp.proc.rss_kib(), open_files(cp.proc.pid()), round));
        }
        // Pacing: about two changes a second.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (rss_end, files_end) = (cp.proc.rss_kib(), open_files(cp.proc.pid()));
    let (sent, failed, last_failure) = load.stop().await;
    let overview: serde_json::Value = http
        .get(format!("{}/meshes/default/dataplanes/web/_overview", cp.api()))
        .send()
        .await
        .expect("overview")
        .json()
        .await
        .expect("overview json");
    let regenerations = overview["dataplaneInsight"]["mTLS"]["certificateRegenerations"]
        .as_u64()
        .unwrap_or(0);
    let (rss_start, files_start, sampled_round) = baseline.expect("sampled after the restart");
    eprintln!(
        "soak {seconds} s: {round} changes, kuma-cp SIGKILLed and restarted once, web's certificate issued {regenerations} times by the restarted kuma-cp; \
         {sent} requests, {failed} failed; restarted kuma-cp from round {sampled_round} to the end: RSS {rss_start} → {rss_end} KiB, open files {files_start} → {files_end}"
    );
    assert_eq!(failed, 0, "failed requests; last: {last_failure}");
    assert!(regenerations > 1, "certificates rotated: {overview}");
    assert!(
        rss_end * 10 <= rss_start * 11,
        "kuma-cp RSS grew over 10 %: {rss_start} → {rss_end} KiB"
    );
    assert!(
        files_end <= files_start + 8,
        "kuma-cp's open files grew: {files_start} → {files_end}"
    );
    drop(pg);
}
