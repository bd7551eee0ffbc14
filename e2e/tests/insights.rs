//! Proxy status across control planes sharing PostgreSQL: every control
//! plane shows a proxy connected to another as Online; when the serving
//! control plane is killed and the proxy goes away while it is down, the
//! leader marks the proxy Offline and, after the cleanup age, deletes its
//! Dataplane — but never one whose proxy has not connected yet. A control
//! plane that stops gracefully records that its proxies' streams closed.

use std::collections::BTreeMap;
use std::time::Duration;

use kuma_e2e::apps::get;
use kuma_e2e::postgres::Postgres;
use kuma_e2e::process::{ControlPlane, Kumactl, Proc, migrate_up, start_existing_kuma_dp};
use kuma_e2e::{eventually, free_port, temp_dir};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(60);

const WEB_TIMEOUT: &str = "type: MeshTimeout\nmesh: default\nname: web-inbound\nspec:\n  targetRef:\n    kind: MeshService\n    name: web\n  from:\n    - targetRef:\n        kind: Mesh\n      default:\n        idleTimeout: 42s\n";

/// Short heartbeats and cleanup so the test sees them happen.
fn control_plane_env(store: &BTreeMap<String, String>, name: &str) -> BTreeMap<String, String> {
    let mut env = ControlPlane::env(store, &temp_dir(name));
    for (k, v) in [
        ("KUMA_METRICS_DATAPLANE_IDLE_TIMEOUT", "2s"),
        ("KUMA_XDS_SERVER_DATAPLANE_STATUS_FLUSH_INTERVAL", "500ms"),
        ("KUMA_RUNTIME_UNIVERSAL_DATAPLANE_CLEANUP_AGE", "4s"),
    ] {
        env.insert(k.into(), v.into());
    }
    env
}

/// `GET url` as JSON (the test fails naming the URL otherwise).
async fn get_json(http: &reqwest::Client, url: &str) -> Value {
    let r = http
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    r.json()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}"))
}

fn dataplane(name: &str, ip: &str) -> String {
    format!(
        "type: Dataplane\nmesh: default\nname: {name}\nnetworking:\n  address: {ip}\n  inbound:\n    - port: {}\n      servicePort: {}\n      tags:\n        kuma.io/service: {name}\n",
        free_port(ip),
        free_port(ip)
    )
}

/// A leader (the first to start, so it takes the lock) and a second
/// control plane on one database, with the Dataplane `web` at `ip` and its
/// proxy connected to the second; `env` makes each control plane's
/// environment.
async fn web_served_by_second_control_plane(
    store_env: &BTreeMap<String, String>,
    ip: &str,
    env: impl Fn(&BTreeMap<String, String>, &str) -> BTreeMap<String, String>,
) -> (ControlPlane, ControlPlane, Kumactl, Proc) {
    let leader = ControlPlane::start("kuma-cp-leader", env(store_env, "leader")).await;
    let kumactl = Kumactl::new(&leader.api());
    kumactl.wait_for_default_mesh().await;
    let serving = ControlPlane::start("kuma-cp-serving", env(store_env, "serving")).await;
    kumactl.ok(&["apply", "-f", "-"], Some(&dataplane("web", ip)));
    let token = kumactl.dataplane_token("web");
    let proxy = start_existing_kuma_dp(
        "kuma-dp-web",
        &serving,
        "default",
        "web",
        &token,
        free_port("127.0.0.1"),
    );
    (leader, serving, kumactl, proxy)
}

/// The `dataplaneInsight` of `name` in the overview of `cp`.
async fn insight(http: &reqwest::Client, cp: &ControlPlane, name: &str) -> Result<Value, String> {
    let url = format!("{}/meshes/default/dataplanes/{name}/_overview", cp.api());
    let r = http.get(&url).send().await.map_err(|e| e.to_string())?;
    if !r.status().is_success() {
        return Err(r.status().to_string());
    }
    let v: Value = r.json().await.map_err(|e| e.to_string())?;
    Ok(v["dataplaneInsight"].clone())
}

fn online(insight: &Value) -> bool {
    insight["subscriptions"]
        .as_array()
        .is_some_and(|subs| subs.iter().any(|s| s.get("disconnectTime").is_none()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_status_is_shared_and_outlives_a_killed_control_plane() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ip = "127.0.31.1";
    let pg = Postgres::start().await;
    let store_env = pg.store_env();
    migrate_up(&store_env);
    let (leader, mut serving, kumactl, mut proxy) =
        web_served_by_second_control_plane(&store_env, ip, control_plane_env).await;
    kumactl.ok(&["apply", "-f", "-"], Some(&dataplane("not-started", ip)));

    // The leader does not serve the proxy, yet shows it Online with the
    // counters the serving control plane wrote.
    let http = reqwest::Client::new();
    let seen = eventually("the leader shows the proxy Online", LIMIT, || async {
        let i = insight(&http, &leader, "web").await?;
        let acked = i["subscriptions"][0]["status"]["total"]["responsesAcknowledged"]
            .as_str()
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        (online(&i) && acked > 0)
            .then_some(i.clone())
            .ok_or(i.to_string())
    })
    .await;
    assert_eq!(seen["subscriptions"].as_array().map(Vec::len), Some(1), "{seen}");
    let listed = kumactl.ok(&["inspect", "dataplanes"], None);
    assert!(
        listed.lines().any(|l| l.contains("web") && l.contains("Online")),
        "{listed}"
    );
    // A policy written through the leader reaches the proxy served by the
    // other control plane (it hears of the write through PostgreSQL).
    kumactl.ok(&["apply", "-f", "-"], Some(WEB_TIMEOUT));

    // The mesh at a glance, as Kuma's `inspect meshes` and MeshInsight say
    // it: web online, not-started offline, the policies counted.
    let meshes = kumactl.ok(&["inspect", "meshes"], None);
    let mut lines = meshes.lines();
    assert!(
        lines
            .next()
            .is_some_and(|h| h.starts_with("MESH      DATAPLANES   TRAFFIC PERMISSIONS")),
        "{meshes}"
    );
    assert!(
        lines
            .next()
            .is_some_and(|l| l.starts_with("default   1/2          0")),
        "{meshes}"
    );
    let mesh_insight = get_json(&http, &format!("{}/mesh-insights/default", leader.api())).await;
    assert_eq!(mesh_insight["type"], "MeshInsight", "{mesh_insight}");
    assert_eq!(
        mesh_insight["dataplanes"],
        serde_json::json!({"total": 2, "online": 1, "offline": 1}),
        "{mesh_insight}"
    );
    assert_eq!(
        mesh_insight["resources"]["Dataplane"]["total"], 2,
        "{mesh_insight}"
    );
    assert!(
        mesh_insight["policies"]["MeshTimeout"]["total"].as_u64() >= Some(1),
        "{mesh_insight}"
    );
    assert_eq!(mesh_insight["services"]["internal"], 2, "{mesh_insight}");
    let services = get_json(
        &http,
        &format!("{}/meshes/default/service-insights", leader.api()),
    )
    .await;
    let statuses: Vec<(&str, &str)> = services["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|i| {
                    (
                        i["name"].as_str().unwrap_or(""),
                        i["status"].as_str().unwrap_or(""),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        statuses,
        [("not-started", "offline"), ("web", "online")],
        "{services}"
    );
    assert_eq!(services["items"][1]["addressPort"], "web.mesh:80", "{services}");

    // Kuma's `.../dataplanes/web/xds` (what Kuma's `kumactl inspect
    // dataplane --type config-dump` reads): the proxy's Envoy's config dump,
    // asked over its admin listener's mTLS.
    let dump = get_json(
        &http,
        &format!(
            "{}/meshes/default/dataplanes/web/xds?include_eds=true",
            serving.api()
        ),
    )
    .await;
    let kinds: Vec<&str> = dump["configs"]
        .as_array()
        .map(|c| c.iter().filter_map(|d| d["@type"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        kinds.contains(&"type.googleapis.com/envoy.admin.v3.ListenersConfigDump")
            && kinds.contains(&"type.googleapis.com/envoy.admin.v3.EndpointsConfigDump"),
        "{dump}"
    );
    let sent = format!("{}/meshes/default/dataplanes/web/_config", serving.api());
    eventually(
        "the serving control plane sends the new policy",
        LIMIT,
        || async {
            let answer = get(&http, &sent).await?;
            answer.contains("\"42s\"").then_some(()).ok_or(answer)
        },
    )
    .await;

    // Insights are the control planes' to write.
    let put = http
        .put(format!("{}/meshes/default/dataplane-insights/web", leader.api()))
        .json(&serde_json::json!({"type": "DataplaneInsight", "mesh": "default", "name": "web"}))
        .send()
        .await
        .expect("put");
    assert_eq!(put.status().as_u16(), 405);

    // The serving control plane dies without a word, then the proxy goes.
    serving.proc.kill();
    proxy.terminate(Duration::from_secs(30));
    let started = std::time::Instant::now();
    eventually("the leader marks the proxy Offline", LIMIT, || async {
        let i = insight(&http, &leader, "web").await?;
        (!online(&i)).then_some(()).ok_or(i.to_string())
    })
    .await;
    eprintln!(
        "proxy of a killed control plane Offline after {:?} (idle timeout 2s)",
        started.elapsed()
    );
    eventually(
        "the offline Dataplane is deleted after the cleanup age",
        LIMIT,
        || async {
            let listed = kumactl.ok(&["get", "dataplanes"], None);
            (!listed.contains("web")).then_some(()).ok_or(listed)
        },
    )
    .await;
    eprintln!(
        "its Dataplane deleted after {:?} (cleanup age 4s)",
        started.elapsed()
    );
    let listed = kumactl.ok(&["get", "dataplanes"], None);
    assert!(
        listed.contains("not-started"),
        "a Dataplane whose proxy never connected stays: {listed}"
    );
    let insights = kumactl.ok(&["get", "dataplane-insights", "-o", "json"], None);
    assert!(
        !insights.contains("\"web\""),
        "the insight went with its Dataplane: {insights}"
    );
    drop(pg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_plane_that_stops_says_its_proxies_left() {
    let ip = "127.0.33.1";
    let pg = Postgres::start().await;
    let store_env = pg.store_env();
    migrate_up(&store_env);
    // Default idle timeout (5m): only the stopping control plane's own
    // last write can make the proxy Offline within the test's limit.
    let default_env =
        |store: &BTreeMap<String, String>, name: &str| ControlPlane::env(store, &temp_dir(name));
    let (leader, mut serving, _kumactl, _proxy) =
        web_served_by_second_control_plane(&store_env, ip, default_env).await;
    let http = reqwest::Client::new();
    eventually("the leader shows the proxy Online", LIMIT, || async {
        let i = insight(&http, &leader, "web").await?;
        online(&i).then_some(()).ok_or(i.to_string())
    })
    .await;
    serving.proc.terminate(Duration::from_secs(20));
    eventually("the leader shows the proxy Offline", LIMIT, || async {
        let i = insight(&http, &leader, "web").await?;
        (!online(&i)).then_some(()).ok_or(i.to_string())
    })
    .await;
    drop(pg);
}
