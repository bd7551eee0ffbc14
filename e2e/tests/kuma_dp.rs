//! kuma-dp's life cycle with a real Envoy: readiness on its own port, an
//! Envoy that dies is started again, and SIGTERM drains (not ready, Envoy
//! failing health checks, still serving) before it exits.

use std::collections::BTreeMap;
use std::time::Duration;

use kuma_e2e::apps::{client, get, http_app};
use kuma_e2e::process::{ControlPlane, Kumactl, send_signal, start_kuma_dp_draining};
use kuma_e2e::{eventually, free_port, temp_dir};

const LIMIT: Duration = Duration::from_secs(60);

/// `GET url` → status code, or the error.
async fn status(url: &str) -> Result<u16, String> {
    client()
        .get(url)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kuma_dp_supervises_and_drains_envoy() {
    let ip = "127.0.32.1";
    let cp = ControlPlane::start(
        "kuma-cp-dp",
        ControlPlane::env(&BTreeMap::new(), &temp_dir("kuma-dp-cp")),
    )
    .await;
    let kumactl = Kumactl::new(&cp.api());
    let token = kumactl.dataplane_token("app");
    let app_port = http_app(ip, "app").await;
    let admin = free_port("127.0.0.1");
    let inbound = free_port(ip);
    let dataplane = format!(
        "type: Dataplane\nmesh: default\nname: app\nnetworking:\n  address: {ip}\n  admin:\n    port: {admin}\n  inbound:\n    - port: {inbound}\n      servicePort: {app_port}\n      tags:\n        kuma.io/service: app\n        kuma.io/protocol: http\n"
    );
    let readiness = free_port("127.0.0.1");
    let mut dp = start_kuma_dp_draining("kuma-dp-app", &cp, &dataplane, &token, readiness, "5s");
    let ready = format!("http://127.0.0.1:{readiness}/ready");
    let through_envoy = format!("http://{ip}:{inbound}/");
    eventually("kuma-dp reports ready", LIMIT, || async {
        (status(&ready).await? == 200)
            .then_some(())
            .ok_or("not ready".to_string())
    })
    .await;
    eventually("the inbound serves the app", LIMIT, || async {
        let r = get(&client(), &through_envoy).await?;
        (r == "200 app").then_some(()).ok_or(r)
    })
    .await;

    // Envoy quits behind kuma-dp's back: kuma-dp notices (not ready) and
    // starts it again.
    let quit = client()
        .post(format!("http://127.0.0.1:{admin}/quitquitquit"))
        .send()
        .await
        .expect("quitquitquit");
    assert!(quit.status().is_success());
    eventually("kuma-dp reports Envoy gone", LIMIT, || async {
        match status(&ready).await {
            Ok(503) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    eventually("Envoy is back and ready", LIMIT, || async {
        (status(&ready).await? == 200)
            .then_some(())
            .ok_or("not ready".to_string())
    })
    .await;
    eventually("the inbound serves the app again", LIMIT, || async {
        let r = get(&client(), &through_envoy).await?;
        (r == "200 app").then_some(()).ok_or(r)
    })
    .await;
    assert!(dp.log().contains("Envoy exited; restarting"), "{}", dp.log());

    // SIGTERM: not ready at once, Envoy fails its health checks, requests
    // are still served while draining, then kuma-dp exits cleanly.
    let pid = dp.child.as_ref().expect("running").id();
    send_signal(pid, "TERM");
    eventually("kuma-dp reports terminating", LIMIT, || async {
        match status(&ready).await {
            Ok(503) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // kuma-dp says so right after it marks itself terminating.
    let live = format!("http://127.0.0.1:{admin}/stats?filter=server.live");
    eventually("Envoy fails health checks", LIMIT, || async {
        let stats = get(&client(), &live).await?;
        stats.contains("server.live: 0").then_some(()).ok_or(stats)
    })
    .await;
    assert_eq!(get(&client(), &through_envoy).await.as_deref(), Ok("200 app"));
    let exited = eventually("kuma-dp exits after draining", LIMIT, || {
        let status = dp.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
        async move { status.ok_or("still draining".to_string()) }
    })
    .await;
    assert!(exited.success(), "{exited:?}");
}
