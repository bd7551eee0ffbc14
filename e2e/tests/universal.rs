//! Universal mode end to end: kuma-cp (PostgreSQL, and in memory), kumactl,
//! two kuma-dp with real Envoys and an HTTP app on loopback.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kuma_e2e::apps::{client, get, http_app};
use kuma_e2e::postgres::Postgres;
use kuma_e2e::process::{ControlPlane, Kumactl, dataplane_yaml, migrate_up, start_kuma_dp};
use kuma_e2e::{eventually, free_port, temp_dir};

const LIMIT: Duration = Duration::from_secs(60);

/// API users on a control plane where loopback is not admin: the admin
/// token the leader bootstrapped opens secrets; a user token made with
/// kumactl opens ordinary resources only; no token, no secrets.
async fn users(admin_kumactl: &Kumactl, cp: &ControlPlane) {
    use base64::Engine as _;
    let secret: serde_json::Value = eventually("the admin token is bootstrapped", LIMIT, || async {
        let out = admin_kumactl.run(&["get", "global-secret", "admin-user-token", "-o", "json"], None);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))
    })
    .await;
    let admin_token = base64::engine::general_purpose::STANDARD
        .decode(secret["data"].as_str().expect("data"))
        .map(|b| String::from_utf8_lossy(&b).to_string())
        .expect("base64");
    let alice_token = admin_kumactl.ok(
        &[
            "generate",
            "user-token",
            "--name",
            "alice",
            "--group",
            "team-a",
            "--valid-for",
            "1h",
        ],
        None,
    );
    let alice = Kumactl::with_token(&cp.api(), &alice_token);
    let listed = alice.ok(&["get", "meshfaultinjections"], None);
    assert!(listed.contains("seen-by-both"), "{listed}");
    let refused = alice.run(&["get", "global-secrets"], None);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("alice/team-a,mesh-system:authenticated"),
        "{stderr}"
    );
    let anonymous = Kumactl::new(&cp.api()).run(&["get", "global-secrets"], None);
    assert!(!anonymous.status.success());
    let admin = Kumactl::with_token(&cp.api(), &admin_token);
    let secrets = admin.ok(&["get", "global-secrets"], None);
    assert!(secrets.contains("admin-user-token"), "{secrets}");
}

const FAULT: &str = "type: MeshFaultInjection\nmesh: default\nname: backend-abort\nspec:\n  targetRef:\n    kind: MeshService\n    name: backend\n  from:\n    - targetRef:\n        kind: Mesh\n      default:\n        http:\n          - abort:\n              httpStatus: 503\n              percentage: 100\n";

const ALLOW_ALL: &str = "type: MeshTrafficPermission\nmesh: default\nname: allow-all\nspec:\n  targetRef:\n    kind: Mesh\n  from:\n    - targetRef:\n        kind: Mesh\n      default:\n        action: Allow\n";

const MTLS_MESH: &str = "type: Mesh\nname: default\nmtls:\n  enabledBackend: ca-1\n  backends:\n    - name: ca-1\n      type: builtin\n";

const INVALID: &str = "type: MeshTimeout\nmesh: default\nname: broken\nspec:\n  targetRef:\n    kind: Mesh\n  to:\n    - targetRef:\n        kind: Mesh\n      default:\n        idleTimeout: ten seconds\n        http:\n          requestTimeot: 1s\n";

/// A bootstrap request as kuma-dp sends it, with `token`.
async fn bootstrap_status(cp: &ControlPlane, token: &str) -> (u16, String) {
    let ca = std::fs::read(cp.ca_file()).expect("ca");
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pem(&ca) {
        roots.add(cert).expect("ca cert");
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("tls")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let c = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .build()
        .expect("client");
    let body = serde_json::json!({"mesh": "default", "name": "web", "dataplaneToken": token});
    let r = c
        .post(format!("{}/bootstrap", cp.dp_server()))
        .json(&body)
        .send()
        .await
        .expect("bootstrap request");
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
}

fn rustls_pem(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .map(|c| c.expect("pem"))
        .collect()
}

async fn scenario(postgres: bool, net: u8) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ip = |h: u8| format!("127.0.{net}.{h}");
    let mut pg = None;
    let store_env = if postgres {
        let server = Postgres::start().await;
        let env = server.store_env();
        assert!(migrate_up(&env).contains("DB has been migrated"));
        pg = Some(server);
        env
    } else {
        Default::default()
    };
    let cp_env = ControlPlane::env(&store_env, &temp_dir("cp"));
    let mut cp = ControlPlane::start("kuma-cp", cp_env.clone()).await;
    let kumactl = Kumactl::new(&cp.api());

    // Default mesh and Kuma's default policies are there.
    kumactl.wait_for_default_policies().await;

    // Tokens, apps and two proxies.
    let web_token = kumactl.dataplane_token("web");
    let backend_token = kumactl.dataplane_token("backend");
    let app_port = http_app(&ip(2), "backend").await;
    let outbound = free_port(&ip(1));
    let inbound_port = free_port(&ip(2));
    let web_dp = dataplane_yaml(
        "web",
        &ip(1),
        free_port("127.0.0.1"),
        &format!(
            "    - port: {}\n      servicePort: 1\n      tags:\n        kuma.io/service: web\n        kuma.io/protocol: http\n",
            free_port(&ip(1))
        ),
        &format!(
            "    - port: {outbound}\n      address: {}\n      tags:\n        kuma.io/service: backend\n",
            ip(1)
        ),
    );
    let backend_dp = dataplane_yaml(
        "backend",
        &ip(2),
        free_port("127.0.0.1"),
        &format!(
            "    - port: {inbound_port}\n      servicePort: {app_port}\n      tags:\n        kuma.io/service: backend\n        kuma.io/protocol: http\n"
        ),
        "    []\n",
    );
    let web_proxy = start_kuma_dp("kuma-dp-web", &cp, &web_dp, &web_token, free_port("127.0.0.1"));
    let mut backend = start_kuma_dp(
        "kuma-dp-backend",
        &cp,
        &backend_dp,
        &backend_token,
        free_port("127.0.0.1"),
    );
    let http = client();
    let url = format!("http://{}:{outbound}/", ip(1));
    eventually("traffic flows through both proxies", LIMIT, || async {
        let r = get(&http, &url).await?;
        (r == "200 backend").then_some(()).ok_or(r)
    })
    .await;
    let listed = kumactl.ok(&["inspect", "dataplanes"], None);
    assert_eq!(listed.matches("Online").count(), 2, "{listed}");
    let backend_only = kumactl.ok(
        &["inspect", "dataplanes", "--tag", "kuma.io/service:backend"],
        None,
    );
    assert_eq!(backend_only.matches("Online").count(), 1, "{backend_only}");
    assert!(!backend_only.contains("web"), "{backend_only}");

    // A policy applied with kumactl takes effect, and its removal too.
    // The backend's inbound, asked directly on a fresh connection, shows
    // when its Envoy has the new configuration; through the client proxy
    // the default MeshRetry retries the 503s first.
    let direct = format!("http://{}:{inbound_port}/", ip(2));
    let applied = kumactl.ok(&["apply", "-f", "-"], Some(FAULT));
    assert!(
        applied.contains("MeshFaultInjection") && applied.contains("Created"),
        "{applied}"
    );
    let started = Instant::now();
    eventually("the backend proxy aborts", LIMIT, || async {
        let r = get(&client(), &direct).await?;
        r.starts_with("503").then_some(()).ok_or(r)
    })
    .await;
    eprintln!(
        "MeshFaultInjection reached the backend proxy in {:?}",
        started.elapsed()
    );
    eventually("the abort applies", LIMIT, || async {
        let r = get(&http, &url).await?;
        r.starts_with("503").then_some(()).ok_or(r)
    })
    .await;
    eprintln!(
        "MeshFaultInjection seen through the mesh in {:?}",
        started.elapsed()
    );
    kumactl.ok(&["delete", "meshfaultinjection", "backend-abort"], None);
    let started = Instant::now();
    eventually("the backend proxy stops aborting", LIMIT, || async {
        let r = get(&client(), &direct).await?;
        (r == "200 backend").then_some(()).ok_or(r)
    })
    .await;
    eprintln!(
        "MeshFaultInjection removal reached the backend proxy in {:?}",
        started.elapsed()
    );
    eventually("traffic recovers", LIMIT, || async {
        let r = get(&http, &url).await?;
        (r == "200 backend").then_some(()).ok_or(r)
    })
    .await;
    eprintln!("MeshFaultInjection removed in {:?}", started.elapsed());

    // Invalid YAML is refused field by field and nothing changes.
    let before = kumactl.ok(&["get", "meshtimeouts", "-o", "json"], None);
    let out = kumactl.run(&["apply", "-f", "-"], Some(INVALID));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("spec.to[0].default.idleTimeout"), "{stderr}");
    assert!(
        stderr.contains("spec.to[0].default.http.requestTimeot"),
        "{stderr}"
    );
    let mut invalid_put = cp.api();
    invalid_put.push_str("/meshes/default/meshtimeouts/broken");
    let body = serde_json::json!({"type": "MeshTimeout", "mesh": "default", "name": "broken",
        "spec": {"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": {"kind": "Mesh"}, "default": {"idleTimeout": "ten"}}]}});
    let r = http.put(&invalid_put).json(&body).send().await.expect("put");
    assert_eq!(r.status().as_u16(), 400);
    let error: serde_json::Value = r.json().await.expect("error body");
    assert_eq!(
        error["invalid_parameters"][0]["field"], "spec.to[0].default.idleTimeout",
        "{error}"
    );
    let after = kumactl.ok(&["get", "meshtimeouts", "-o", "json"], None);
    let names = |text: &str| -> Vec<String> {
        let v: serde_json::Value = serde_json::from_str(text).expect("json");
        v["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|i| i["name"].as_str().unwrap_or("").to_string())
            .collect()
    };
    assert_eq!(names(&before), names(&after));

    // Forged and missing tokens are refused.
    let forged = format!("{}x", web_token.trim());
    let (status, text) = bootstrap_status(&cp, &forged).await;
    assert_eq!(status, 401, "{text}");
    let (status, text) = bootstrap_status(&cp, &backend_token).await;
    assert_eq!(status, 401, "a token for another dataplane: {text}");
    let (status, text) = bootstrap_status(&cp, "").await;
    assert_eq!(status, 422, "{text}");
    // A token that allows only other service tags.
    let narrow = kumactl.ok(
        &[
            "generate",
            "dataplane-token",
            "--name",
            "web",
            "--tag",
            "kuma.io/service=backend",
            "--valid-for",
            "1h",
        ],
        None,
    );
    let (status, text) = bootstrap_status(&cp, &narrow).await;
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("not allowed with this token"), "{text}");

    // mTLS with a builtin CA the control plane creates: traffic keeps
    // flowing once a MeshTrafficPermission allows it, plaintext straight to
    // an inbound is refused, and the proxies' certificates show.
    kumactl.ok(&["apply", "-f", "-"], Some(ALLOW_ALL));
    kumactl.ok(&["apply", "-f", "-"], Some(MTLS_MESH));
    eventually("plaintext to the inbound is refused", LIMIT, || async {
        match get(&client(), &direct).await {
            Ok(r) => Err(format!("answered {r}")),
            Err(_) => Ok(()),
        }
    })
    .await;
    eventually("traffic flows over mTLS", LIMIT, || async {
        let r = get(&http, &url).await?;
        (r == "200 backend").then_some(()).ok_or(r)
    })
    .await;
    let inspected = kumactl.ok(&["inspect", "dataplanes"], None);
    assert_eq!(
        inspected.matches("ca-1").count(),
        4,
        "issued and trusted backend of both proxies: {inspected}"
    );
    // The config dump is what the proxy's Envoy holds: its certificate
    // over SDS, with the private key and the dataplane token withheld.
    let dump = kumactl.ok(
        &["inspect", "dataplane", "backend", "--type", "config-dump"],
        None,
    );
    assert!(dump.contains("identity_cert:secret:default"), "{dump}");
    assert!(
        dump.contains("[redacted]") && !dump.contains("PRIVATE KEY"),
        "{dump}"
    );
    // No secret material where operators look: the logs, the generated
    // configuration, the overviews and insights. The secrets are the
    // tokens and the private keys among the mesh's Secrets (its CA's and
    // the token signing key; the CA certificate is public).
    let mut secrets = vec![
        web_token.trim().to_string(),
        backend_token.trim().to_string(),
        narrow.trim().to_string(),
    ];
    let listed: serde_json::Value = http
        .get(format!("{}/meshes/default/secrets", cp.api()))
        .send()
        .await
        .expect("secrets")
        .json()
        .await
        .expect("secrets json");
    for secret in listed["items"].as_array().expect("secret items") {
        use base64::Engine;
        let data = secret["data"].as_str().expect("secret data");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(data)
            .expect("base64 secret");
        if String::from_utf8_lossy(&decoded).contains("PRIVATE KEY") {
            secrets.push(data.to_string());
        }
    }
    assert!(
        secrets.len() >= 5,
        "the CA's key and the token signing key are there: {listed}"
    );
    let mut places = vec![
        ("kuma-cp log".to_string(), cp.proc.log()),
        ("kuma-dp web log".to_string(), web_proxy.log()),
        ("kuma-dp backend log".to_string(), backend.log()),
    ];
    for name in ["web", "backend"] {
        for path in [
            format!("/meshes/default/dataplanes/{name}/_config"),
            format!("/meshes/default/dataplanes/{name}/_overview"),
            format!("/meshes/default/dataplane-insights/{name}"),
        ] {
            let text = http
                .get(format!("{}{path}", cp.api()))
                .send()
                .await
                .expect("read")
                .text()
                .await
                .expect("text");
            places.push((path, text));
        }
    }
    places.push(("the config dump".into(), dump.clone()));
    for (place, text) in &places {
        assert!(!text.contains("PRIVATE KEY"), "a private key in {place}");
        for (i, secret) in secrets.iter().enumerate() {
            assert!(!text.contains(secret.as_str()), "secret #{i} in {place}");
        }
    }

    if postgres {
        // A second control plane on the same database sees the writes;
        // there loopback is not admin, so callers are who their user
        // token says.
        let mut cp2_env = ControlPlane::env(&store_env, &temp_dir("cp2"));
        cp2_env.insert("KUMA_API_SERVER_AUTHN_LOCALHOST_IS_ADMIN".into(), "false".into());
        let cp2 = ControlPlane::start("kuma-cp-2", cp2_env).await;
        kumactl.ok(
            &["apply", "-f", "-"],
            Some(
                &FAULT
                    .replace("backend-abort", "seen-by-both")
                    .replace("percentage: 100", "percentage: 0"),
            ),
        );
        let started = Instant::now();
        let url2 = format!("{}/meshes/default/meshfaultinjections/seen-by-both", cp2.api());
        eventually("the second control plane sees the write", LIMIT, || async {
            let r = http.get(&url2).send().await.map_err(|e| e.to_string())?;
            (r.status().as_u16() == 200)
                .then_some(())
                .ok_or(r.status().to_string())
        })
        .await;
        eprintln!("second control plane saw the write in {:?}", started.elapsed());
        users(&kumactl, &cp2).await;
        drop(cp2);

        // kuma-cp SIGKILLed (no chance to say goodbye) and restarted loses
        // no request; the proxies reconnect.
        let failures = Arc::new(AtomicU64::new(0));
        let sent = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let last_failure = Arc::new(std::sync::Mutex::new(String::new()));
        let load = {
            let last_failure = last_failure.clone();
            // A client of its own: connections kept alive from earlier steps
            // may sit on a listener that an earlier policy change is still
            // draining, which is not what this step is about (draining is
            // covered by xds/tests/make_before_break.rs).
            let (failures, sent, stop, url, http) = (
                failures.clone(),
                sent.clone(),
                stop.clone(),
                url.clone(),
                client(),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    sent.fetch_add(1, Ordering::SeqCst);
                    match get(&http, &url).await {
                        Ok(r) if r == "200 backend" => {}
                        other => {
                            failures.fetch_add(1, Ordering::SeqCst);
                            *last_failure.lock().unwrap() = format!("{other:?}");
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        cp.proc.kill();
        let killed = Instant::now();
        cp = ControlPlane::start("kuma-cp-restarted", cp_env.clone()).await;
        let overview = format!("{}/meshes/default/dataplanes/_overview", cp.api());
        let index: serde_json::Value = http
            .get(cp.api())
            .send()
            .await
            .expect("index")
            .json()
            .await
            .expect("index json");
        let restarted = index["instanceId"].as_str().expect("instanceId").to_string();
        eventually(
            "both proxies reconnect to the restarted kuma-cp",
            LIMIT,
            || async {
                let v: serde_json::Value = http
                    .get(&overview)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?
                    .json()
                    .await
                    .map_err(|e| e.to_string())?;
                let online = v["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|i| {
                        i["dataplaneInsight"]["subscriptions"]
                            .as_array()
                            .is_some_and(|s| {
                                s.iter().any(|s| {
                                    s.get("disconnectTime").is_none()
                                        && s["controlPlaneInstanceId"] == restarted.as_str()
                                })
                            })
                    })
                    .count();
                (online == 2).then_some(()).ok_or(format!("{online} online"))
            },
        )
        .await;
        let reconnected = killed.elapsed();
        // And traffic keeps flowing through the proxies the new instance
        // serves.
        let after = sent.load(Ordering::SeqCst) + 100;
        eventually("100 more requests after the reconnect", LIMIT, || async {
            let n = sent.load(Ordering::SeqCst);
            (n >= after).then_some(()).ok_or(format!("{n} sent"))
        })
        .await;
        stop.store(true, Ordering::SeqCst);
        let _ = load.await;
        eprintln!(
            "kuma-cp SIGKILLed and restarted: both proxies reconnected {reconnected:?} after the kill; {} requests, {} failed",
            sent.load(Ordering::SeqCst),
            failures.load(Ordering::SeqCst)
        );
        assert!(sent.load(Ordering::SeqCst) > 10);
        assert_eq!(
            failures.load(Ordering::SeqCst),
            0,
            "requests failed while kuma-cp restarted; last: {}",
            last_failure.lock().unwrap()
        );
    }

    // A proxy that stops leaves the mesh.
    backend.terminate(Duration::from_secs(30));
    eventually("the stopped proxy's Dataplane is deregistered", LIMIT, || async {
        let listed = kumactl.ok(&["get", "dataplanes"], None);
        (!listed.contains("backend")).then_some(()).ok_or(listed)
    })
    .await;
    drop(pg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn universal_on_postgres() {
    scenario(true, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn universal_in_memory() {
    scenario(false, 4).await;
}
