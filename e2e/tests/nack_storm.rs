//! A NACK storm: one bad MeshProxyPatch selects every proxy, so every Envoy
//! rejects its clusters at once. Each keeps the configuration it accepted
//! last and traffic goes on; every proxy's insight says what it refuses and
//! names the patch, as does `kumactl inspect dataplanes`; the control plane
//! does not resend the refused configuration; removing the patch heals all.

use std::time::{Duration, Instant};

use kuma_e2e::apps::{get, http_app};
use kuma_e2e::process::{ControlPlane, Kumactl, Proc, dataplane_yaml, http_inbound, start_kuma_dp};
use kuma_e2e::{eventually, free_port, temp_dir};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(60);

/// Proxies besides the client and the backend.
const BYSTANDERS: usize = 6;

/// A cluster Envoy refuses (a connect timeout must be longer than zero,
/// which only Envoy checks), added to every proxy.
const BAD_PATCH: &str = "type: MeshProxyPatch\nmesh: default\nname: bad\nspec:\n  targetRef:\n    kind: Mesh\n  default:\n    appendModifications:\n      - cluster:\n          operation: Add\n          value: |\n            name: rejected-cluster\n            connectTimeout: 0s\n            type: STATIC\n";

/// Every dataplane overview of the default mesh.
async fn overviews(cp: &ControlPlane) -> Result<Vec<Value>, String> {
    let v: Value = reqwest::get(format!(
        "{}/meshes/default/dataplanes/_overview?size=100",
        cp.api()
    ))
    .await
    .map_err(|e| e.to_string())?
    .json()
    .await
    .map_err(|e| e.to_string())?;
    Ok(v["items"].as_array().cloned().unwrap_or_default())
}

/// The open subscription of an overview.
fn open_subscription(overview: &Value) -> Option<&Value> {
    overview["dataplaneInsight"]["subscriptions"]
        .as_array()?
        .iter()
        .rev()
        .find(|s| s.get("disconnectTime").is_none())
}

/// Responses sent to all proxies, from their insights.
fn responses_sent(overviews: &[Value]) -> u64 {
    overviews
        .iter()
        .filter_map(open_subscription)
        .filter_map(|s| {
            s.pointer("/status/total/responsesSent")?
                .as_str()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// kuma-cp's CPU time so far, in clock ticks (user + system).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command's closing parenthesis; utime and stime are
    // the 14th and 15th of the whole line.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    field(11) + field(12)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bad_patch_for_every_proxy_is_refused_named_and_not_resent() {
    let net = 43;
    let ip = |h: usize| format!("127.0.{net}.{h}");
    let cp = ControlPlane::start("kuma-cp", ControlPlane::env(&Default::default(), &temp_dir("cp"))).await;
    let kumactl = Kumactl::new(&cp.api());
    // The proxies start once the mesh has its default policies, as on a
    // control plane that has been up a while: the storm is then the only
    // change they see.
    kumactl.wait_for_default_policies().await;

    let app = http_app(&ip(2), "backend").await;
    let outbound = free_port(&ip(1));
    let mut proxies: Vec<Proc> = Vec::new();
    let mut start = |name: &str, dataplane: String| {
        let token = kumactl.dataplane_token(name);
        proxies.push(start_kuma_dp(
            &format!("kuma-dp-{name}"),
            &cp,
            &dataplane,
            &token,
            free_port("127.0.0.1"),
        ));
    };
    let web_admin = free_port("127.0.0.1");
    start(
        "web",
        dataplane_yaml(
            "web",
            &ip(1),
            web_admin,
            &http_inbound(free_port(&ip(1)), 1, "web"),
            &format!(
                "    - port: {outbound}\n      address: {}\n      tags:\n        kuma.io/service: backend\n",
                ip(1)
            ),
        ),
    );
    start(
        "backend",
        dataplane_yaml(
            "backend",
            &ip(2),
            free_port("127.0.0.1"),
            &http_inbound(free_port(&ip(2)), app, "backend"),
            "    []\n",
        ),
    );
    for i in 0..BYSTANDERS {
        let (name, address) = (format!("bystander-{i}"), ip(10 + i));
        let port = free_port(&address);
        let admin = free_port("127.0.0.1");
        start(
            &name,
            dataplane_yaml(&name, &address, admin, &http_inbound(port, 1, &name), "    []\n"),
        );
    }
    let proxies_total = BYSTANDERS + 2;

    // A fresh connection per request: what is tested is the proxies'
    // configuration, not a pooled connection's fate.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let url = format!("http://{}:{outbound}/", ip(1));
    eventually("traffic flows", LIMIT, || async {
        let r = get(&http, &url).await?;
        (r == "200 backend").then_some(()).ok_or(r)
    })
    .await;
    eventually("every proxy applied its clusters", LIMIT, || async {
        let all = overviews(&cp).await?;
        let acked = all
            .iter()
            .filter_map(open_subscription)
            .filter(|s| s.pointer("/ackedVersions/cds").is_some())
            .count();
        (acked == proxies_total)
            .then_some(())
            .ok_or(format!("{acked} of {proxies_total}"))
    })
    .await;

    // The storm.
    kumactl.ok(&["apply", "-f", "-"], Some(BAD_PATCH));
    let applied = Instant::now();
    let refusing = eventually("every proxy refuses and names the patch", LIMIT, || async {
        let all = overviews(&cp).await?;
        let named: Vec<&Value> = all
            .iter()
            .filter_map(open_subscription)
            .filter_map(|s| s.pointer("/rejections/cds"))
            .filter(|r| r["policies"] == serde_json::json!(["MeshProxyPatch/bad"]))
            .collect();
        (named.len() == proxies_total)
            .then(|| all.clone())
            .ok_or(format!("{} of {proxies_total}", named.len()))
    })
    .await;
    let all_refused = applied.elapsed();

    for overview in &refusing {
        let subscription = open_subscription(overview).expect("open");
        let rejection = &subscription["rejections"]["cds"];
        assert!(
            rejection["error"]
                .as_str()
                .unwrap_or("")
                .contains("rejected-cluster"),
            "Envoy's reason is kept: {rejection}"
        );
    }
    // Envoy's own view: the refusal counted, the last good clusters kept.
    let admin = |path: &str| {
        let url = format!("http://127.0.0.1:{web_admin}{path}");
        async move {
            reqwest::get(url)
                .await
                .expect("admin")
                .text()
                .await
                .expect("admin text")
        }
    };
    let rejected = admin("/stats?filter=cluster_manager.cds.update_rejected").await;
    assert!(
        !rejected.contains("update_rejected: 0") && rejected.contains("update_rejected"),
        "{rejected}"
    );
    let clusters = admin("/clusters").await;
    assert!(
        !clusters.contains("rejected-cluster") && clusters.contains("backend"),
        "{clusters}"
    );
    let inspected = kumactl.ok(&["inspect", "dataplanes"], None);
    assert!(
        inspected.contains("REJECTED BY ENVOY")
            && inspected.matches("MeshProxyPatch/bad").count() == proxies_total,
        "{inspected}"
    );

    // Nothing is resent while nothing changes: over a window of traffic the
    // responses sent stay as they were.
    let sent_before = responses_sent(&refusing);
    let ticks_before = cpu_ticks(cp.proc.pid());
    let window = Instant::now();
    let mut served = 0;
    while window.elapsed() < Duration::from_secs(3) {
        assert_eq!(
            get(&http, &url).await.as_deref(),
            Ok("200 backend"),
            "traffic goes on"
        );
        served += 1;
    }
    let ticks = cpu_ticks(cp.proc.pid()) - ticks_before;
    let after = overviews(&cp).await.expect("overviews");
    assert_eq!(responses_sent(&after), sent_before, "no response resent");
    eprintln!(
        "NACK storm: {proxies_total} proxies refused a bad MeshProxyPatch within {all_refused:?}; \
         over {:?} after it, {served} requests served, 0 responses resent, kuma-cp CPU {} ticks ({:.1} % of a core at 100 ticks/s)",
        window.elapsed(),
        ticks,
        ticks as f64 / window.elapsed().as_secs_f64()
    );

    // Removing the patch heals every proxy.
    kumactl.ok(&["delete", "meshproxypatch", "bad"], None);
    let removed = Instant::now();
    // Well within the 40 s that removed clusters are kept for (make before
    // break): the refused cluster is not kept, or Envoy would go on
    // refusing every cluster update until it went.
    let within = kuma_xds::retire::DEFAULT_GRACE / 2;
    eventually("every proxy accepts again", within, || async {
        let all = overviews(&cp).await?;
        let refusing = all
            .iter()
            .filter_map(open_subscription)
            .filter(|s| s.get("rejections").is_some())
            .count();
        (refusing == 0)
            .then_some(())
            .ok_or(format!("{refusing} refusing"))
    })
    .await;
    let healed = removed.elapsed();
    assert!(!kumactl.ok(&["inspect", "dataplanes"], None).contains("REJECTED"));
    assert_eq!(get(&http, &url).await.as_deref(), Ok("200 backend"));
    eprintln!(
        "NACK storm: every proxy accepted its configuration again {healed:?} after the patch was deleted"
    );
    drop(proxies);
}
