//! Kubernetes mode end to end, as Kuma users run it: a namespace labelled
//! `kuma.io/sidecar-injection: enabled`, the seed's echo-server Deployment
//! and Service and echo-client Deployment applied with kubectl; the
//! webhook injects kuma-init and kuma-sidecar, the test node agent runs
//! them for real (iptables in each Pod's network namespace, kuma-dp and
//! Envoy as the injected container says), the Pod controller makes
//! Dataplanes, and traffic goes through both Envoys. kuma-cp runs as the
//! ServiceAccount `config/rbac` binds, with the webhooks of `config/webhook`.

use std::time::{Duration, Instant};

use kuma_e2e::eventually;
use kuma_e2e::kube_mesh::KubeMesh;
use kuma_e2e::workloads::{ECHO, Load};
use serde_json::Value;

const FAULT: &str = r#"apiVersion: kuma.io/v1alpha1
kind: MeshFaultInjection
metadata:
  name: echo-abort
  namespace: kuma-system
  labels:
    kuma.io/mesh: default
spec:
  targetRef:
    kind: MeshService
    name: echo-server_kuma-test_svc_80
  from:
    - targetRef:
        kind: Mesh
      default:
        http:
          - abort:
              httpStatus: 418
              percentage: 100
"#;

async fn ready_pods(mesh: &KubeMesh, namespace: &str, selector: &str, n: usize) -> Vec<String> {
    mesh.workloads().ready_pods(namespace, selector, n).await
}

fn get_from(mesh: &KubeMesh, namespace: &str, pod: &str, url: &str) -> String {
    mesh.workloads().get_from(namespace, pod, url)
}

fn admin(mesh: &KubeMesh, namespace: &str, pod: &str, path: &str) -> String {
    mesh.workloads().admin(namespace, pod, path)
}

/// Waits until a counter of a Pod's Envoy matching `filter` is above zero.
async fn counted(
    mesh: &KubeMesh,
    (namespace, pod): (&str, &str),
    filter: &str,
    what: &str,
    within: Duration,
) {
    eventually(what, within, || async {
        let stats = admin(mesh, namespace, pod, &format!("/stats?filter={filter}"));
        let counted = stats
            .lines()
            .filter_map(|l| l.rsplit_once(": "))
            .any(|(_, n)| n.trim().parse::<u64>().is_ok_and(|n| n > 0));
        counted.then_some(()).ok_or(stats)
    })
    .await;
}

fn vip(mesh: &KubeMesh, namespace: &str, pod: &str, port: u16) -> Option<String> {
    mesh.workloads().vip(namespace, pod, port)
}

/// Healthy endpoints of a cluster in a Pod's Envoy.
fn endpoints(mesh: &KubeMesh, namespace: &str, pod: &str, cluster: &str) -> usize {
    let clusters: Value = match serde_json::from_str(&admin(mesh, namespace, pod, "/clusters?format=json")) {
        Ok(v) => v,
        Err(_) => return 0,
    };
    clusters["cluster_statuses"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["name"] == cluster)
        .flat_map(|c| c["host_statuses"].as_array().cloned().unwrap_or_default())
        .filter(|h| h["health_status"]["eds_health_status"] == "HEALTHY")
        .count()
}

/// `POST /bootstrap` as a kuma-dp of `name` presenting `token`.
async fn bootstrap(mesh: &KubeMesh, name: &str, token: &str) -> (u16, String) {
    kuma_e2e::install_crypto();
    let ca = reqwest::Certificate::from_pem(mesh.ca_pem.as_bytes()).expect("ca");
    let client = reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .expect("client");
    let body = serde_json::json!({"mesh": "default", "name": name, "dataplaneToken": token});
    let r = client
        .post(format!("https://127.0.0.1:{}/bootstrap", mesh.cp.dp_port))
        .json(&body)
        .send()
        .await
        .expect("bootstrap request");
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
}

/// `token` (a ServiceAccount token of the test's API server) with its
/// expiry ten minutes in the past, signed again with the API server's
/// service-account key.
fn expired_copy(mesh: &KubeMesh, token: &str) -> String {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let part = |i: usize| -> Value {
        let encoded = token.split('.').nth(i).expect("a JWT");
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(encoded).expect("base64url")).expect("JSON")
    };
    let (header, mut claims) = (part(0), part(1));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    claims["iat"] = (now - 4_200).into();
    claims["nbf"] = (now - 4_200).into();
    claims["exp"] = (now - 600).into();
    let mut signed = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    signed.kid = header["kid"].as_str().map(String::from);
    let key = std::fs::read(mesh.cluster.dir.join("sa.key")).expect("the API server's signing key");
    let key = jsonwebtoken::EncodingKey::from_ec_pem(&key).expect("an EC key");
    jsonwebtoken::encode(&signed, &claims, &key).expect("signed")
}

/// The Dataplanes kuma-cp knows (from its API), each once.
fn dataplane_names(mesh: &KubeMesh) -> Vec<String> {
    let kumactl = kuma_e2e::process::Kumactl::new(&mesh.cp.api());
    let out = kumactl.run(&["get", "dataplanes", "-o", "json"], None);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let mut names: Vec<String> = v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["name"].as_str().map(String::from))
        .collect();
    names.sort();
    names
}

/// After a fault: kuma-cp lists exactly the Dataplanes of `before` again,
/// and no request of `load` failed.
async fn recovered(mesh: &KubeMesh, before: &[String], load: Load, fault: &str) {
    eventually("the control plane re-listed", Duration::from_secs(60), || async {
        let after = dataplane_names(mesh);
        (after == before)
            .then_some(())
            .ok_or(format!("{after:?} vs {before:?}"))
    })
    .await;
    let codes = load.stop();
    let failed = codes.iter().filter(|c| c.as_str() != "200").count();
    eprintln!("{} requests across {fault}, {failed} failed", codes.len());
    assert!(codes.len() > 10, "the load ran: {codes:?}");
    assert_eq!(failed, 0, "{codes:?}");
}

fn kubectl_json(mesh: &KubeMesh, args: &[&str]) -> Value {
    let out = mesh.cluster.kubectl(args, None);
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

#[tokio::test]
async fn injected_pods_carry_traffic_through_the_mesh() {
    let mut mesh = KubeMesh::start_as_service_account(&[]).await;
    mesh.install_webhooks().await;
    mesh.cluster
        .create_namespace("kuma-test", &[("kuma.io/sidecar-injection", "enabled")])
        .await;
    mesh.cluster.kubectl_ok(
        &[
            "label",
            "namespace",
            "default",
            "kuma.io/sidecar-injection=enabled",
        ],
        None,
    );
    mesh.cluster.apply(ECHO);

    // Injected as Kuma injects, and run as written.
    let servers = ready_pods(&mesh, "kuma-test", "app=echo-server", 1).await;
    let clients = ready_pods(&mesh, "default", "app=echo-client", 1).await;
    let (server, client) = (&servers[0], &clients[0]);
    let pod = kubectl_json(&mesh, &["get", "pod", server, "-n", "kuma-test", "-o", "json"]);
    let init: Vec<&str> = pod["spec"]["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(init, ["kuma-init", "kuma-sidecar"], "{pod}");
    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(annotations["kuma.io/sidecar-injected"], "true");
    assert_eq!(annotations["kuma.io/service"], "echo-server_kuma-test_svc_80");
    assert_eq!(annotations["kuma.io/envoy-admin-port"], "9901");
    assert_eq!(pod["metadata"]["labels"]["kuma.io/mesh"], "default");

    // Their Dataplanes.
    let dp = kubectl_json(
        &mesh,
        &["get", "dataplane", server, "-n", "kuma-test", "-o", "json"],
    );
    let inbound = &dp["spec"]["networking"]["inbound"][0];
    assert_eq!(
        inbound["tags"]["kuma.io/service"], "echo-server_kuma-test_svc_80",
        "{dp}"
    );
    assert_eq!(inbound["protocol"], "http");
    let client_dp = kubectl_json(
        &mesh,
        &["get", "dataplane", client, "-n", "default", "-o", "json"],
    );
    assert_eq!(
        client_dp["spec"]["networking"]["inbound"][0]["tags"]["kuma.io/service"], "echo-client_default_svc",
        "{client_dp}"
    );

    // The client's Envoy carries HTTP to the server's.
    let vip = eventually(
        "the client's outbound to echo-server",
        Duration::from_secs(60),
        || async {
            vip(&mesh, "default", client, 80).ok_or_else(|| admin(&mesh, "default", client, "/listeners"))
        },
    )
    .await;
    let url = format!("http://{vip}/hello");
    eventually("traffic through the mesh", Duration::from_secs(60), || async {
        let r = get_from(&mesh, "default", client, &url);
        if r.starts_with("200 ") && r.contains(server.as_str()) {
            Ok(())
        } else {
            Err(r)
        }
    })
    .await;
    // By name: the Pod's resolver asks the cluster DNS, kuma-init sends
    // the question to kuma-dp's DNS proxy, which answers with the VIP
    // from the table the control plane serves through Envoy.
    for name in [
        "echo-server_kuma-test_svc_80.mesh",
        "echo-server.kuma-test.svc.80.mesh",
    ] {
        let by_name = format!("http://{name}/hello");
        eventually(
            &format!("{name} resolved by kuma-dp"),
            Duration::from_secs(30),
            || async {
                let r = get_from(&mesh, "default", client, &by_name);
                if r.starts_with("200 ") && r.contains(server.as_str()) {
                    Ok(())
                } else {
                    let log = mesh.node.container_log("default", client, "kuma-sidecar");
                    let dns: Vec<&str> = log
                        .lines()
                        .filter(|l| l.contains("dns") || l.contains("DNS"))
                        .collect();
                    let rules = mesh.node.exec("default", client, "iptables-save", &[]);
                    let curl = mesh
                        .node
                        .exec("default", client, "curl", &["-sv", "-m", "5", &by_name]);
                    Err(format!(
                        "{r}\n{}\n{}\n{}",
                        dns.join("\n"),
                        String::from_utf8_lossy(&rules.stdout),
                        String::from_utf8_lossy(&curl.stderr)
                    ))
                }
            },
        )
        .await;
    }
    // Every verb kuma-cp used so far is one config/rbac grants.
    let log = mesh.cp.proc.log();
    let forbidden: Vec<&str> = log.lines().filter(|l| l.contains("forbidden")).collect();
    assert!(forbidden.is_empty(), "{}", forbidden.join("\n"));
    let resolved = mesh.node.exec(
        "default",
        client,
        "getent",
        &["hosts", "echo-server_kuma-test_svc_80.mesh"],
    );
    let resolved = String::from_utf8_lossy(&resolved.stdout).to_string();
    let first = resolved
        .split_whitespace()
        .next()
        .and_then(|ip| ip.parse::<std::net::IpAddr>().ok());
    let vip_range = |ip: std::net::IpAddr| match ip {
        std::net::IpAddr::V4(v4) => v4.octets()[0] >= 240,
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().is_some_and(|v4| v4.octets()[0] >= 240),
    };
    assert!(first.is_some_and(vip_range), "{resolved}: not a VIP");
    // Other names are the cluster DNS's, relayed by kuma-dp.
    let cluster = mesh.node.exec(
        "default",
        client,
        "getent",
        &["ahostsv4", kuma_e2e::node::CLUSTER_NAME],
    );
    let cluster = String::from_utf8_lossy(&cluster.stdout).to_string();
    assert!(cluster.starts_with(kuma_e2e::node::NODE_IP), "{cluster}");
    counted(
        &mesh,
        ("default", client),
        "cluster.echo-server_kuma-test_svc_80.upstream_rq_2xx",
        "the client's Envoy counted the responses",
        Duration::from_secs(20),
    )
    .await;

    // Proxies prove who they are with their Pod's ServiceAccount token:
    // another ServiceAccount's token, or one for another audience, is refused.
    mesh.cluster
        .kubectl_ok(&["create", "serviceaccount", "other", "-n", "kuma-test"], None);
    let other = mesh
        .cluster
        .kubectl_ok(&["create", "token", "other", "-n", "kuma-test"], None);
    let (status, body) = bootstrap(&mesh, &format!("{server}.kuma-test"), other.trim()).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body.contains("system:serviceaccount:kuma-test:other") && body.contains("runs as"),
        "{body}"
    );
    // The ADS stream checks the same token itself (a proxy need not have
    // bootstrapped through this control plane). (The Pod's own token is
    // accepted there by its running proxy; a second stream of the test's
    // would supersede that proxy's, as Kuma counts subscriptions.)
    let node = format!("default.{server}.kuma-test");
    let ads = kuma_e2e::ads::channel_trusting(mesh.cp.dp_port, &mesh.ca_pem).await;
    let refused = kuma_e2e::ads::first_answer_over(ads, &node, Some(other.trim()))
        .await
        .expect_err("a stream with another ServiceAccount's token");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("system:serviceaccount:kuma-test:other"),
        "{refused:?}"
    );
    let audience = mesh.cluster.kubectl_ok(
        &[
            "create",
            "token",
            "default",
            "-n",
            "kuma-test",
            "--audience",
            "somebody-else",
        ],
        None,
    );
    let (status, body) = bootstrap(&mesh, &format!("{server}.kuma-test"), audience.trim()).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("token is not valid"), "{body}");
    let own = mesh
        .cluster
        .kubectl_ok(&["create", "token", "default", "-n", "kuma-test"], None);
    let (status, body) = bootstrap(&mesh, &format!("{server}.kuma-test"), own.trim()).await;
    assert_eq!(status, 200, "the Pod's own ServiceAccount is accepted: {body}");
    // The same token expired (re-signed with the API server's own key, its
    // expiry ten minutes ago) is refused, by the API server's verdict.
    let expired = expired_copy(&mesh, own.trim());
    let (status, body) = bootstrap(&mesh, &format!("{server}.kuma-test"), &expired).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body.contains("token is not valid") && body.contains("expired"),
        "{body}"
    );

    // kumactl sees the proxies of the cluster.
    let kumactl = kuma_e2e::process::Kumactl::new(&mesh.cp.api());
    let out = kumactl.run(&["get", "dataplanes"], None);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("{server}.kuma-test")), "{text}");
    eventually(
        "kumactl shows the proxies online",
        Duration::from_secs(30),
        || async {
            let out = kumactl.run(&["inspect", "dataplanes"], None);
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            let online = text.lines().filter(|l| l.contains("Online")).count();
            (online >= 2).then_some(()).ok_or(text)
        },
    )
    .await;
    // What the control plane sends (`config`): the test's pods are in
    // network namespaces it cannot reach, so not what their Envoy holds.
    // The mesh's default policies may still be arriving (the leader makes
    // them after the Mesh): wait until the proxy has more than one.
    for kind in ["config", "policies"] {
        eventually(
            &format!("kumactl inspect --type {kind}"),
            Duration::from_secs(30),
            || async {
                let out = kumactl.run(
                    &[
                        "inspect",
                        "dataplane",
                        &format!("{client}.default"),
                        "--type",
                        kind,
                    ],
                    None,
                );
                let text = String::from_utf8_lossy(&out.stdout).to_string();
                (out.status.success() && text.len() > 100)
                    .then_some(())
                    .ok_or(text)
            },
        )
        .await;
    }

    // A policy applied with kubectl reaches the proxies, and its deletion too.
    mesh.cluster.apply(FAULT);
    eventually("the fault applies", Duration::from_secs(60), || async {
        let r = get_from(&mesh, "default", client, &url);
        r.starts_with("418").then_some(()).ok_or(r)
    })
    .await;
    mesh.cluster.kubectl_ok(
        &["delete", "meshfaultinjection", "echo-abort", "-n", "kuma-system"],
        None,
    );
    eventually("the fault is gone", Duration::from_secs(60), || async {
        let r = get_from(&mesh, "default", client, &url);
        r.starts_with("200").then_some(()).ok_or(r)
    })
    .await;
    // Connections kept alive from before stay on the server's old listener
    // (with the abort) until Envoy has drained it.
    // (Envoy updates the filter chains in place and drains the old ones.)
    eventually(
        "the old filter chains drained",
        Duration::from_secs(90),
        || async {
            let stats = admin(
                &mesh,
                "kuma-test",
                server,
                "/stats?filter=listener_manager.total_",
            );
            (stats.contains("total_listeners_draining: 0")
                && stats.contains("total_filter_chains_draining: 0"))
            .then_some(())
            .ok_or(stats)
        },
    )
    .await;

    // Three replicas: three endpoints; one not ready: two.
    mesh.cluster.kubectl_ok(
        &[
            "scale",
            "deployment",
            "echo-server",
            "-n",
            "kuma-test",
            "--replicas=3",
        ],
        None,
    );
    let servers = ready_pods(&mesh, "kuma-test", "app=echo-server", 3).await;
    let started = Instant::now();
    eventually("three endpoints", Duration::from_secs(60), || async {
        match endpoints(&mesh, "default", client, "echo-server_kuma-test_svc_80") {
            3 => Ok(()),
            n => Err(format!("{n}")),
        }
    })
    .await;
    eprintln!(
        "scaled to 3: endpoints in the client's Envoy {:?} after the Pods were Ready",
        started.elapsed()
    );
    mesh.node.fail_readiness("kuma-test", &servers[2]);
    eventually("a NotReady Pod leaves", Duration::from_secs(60), || async {
        match endpoints(&mesh, "default", client, "echo-server_kuma-test_svc_80") {
            2 => Ok(()),
            n => Err(format!("{n}")),
        }
    })
    .await;

    // The API server restarted under traffic: no failed request, and after
    // the re-list every Dataplane is there once.
    let before = dataplane_names(&mesh);
    let load = Load::start(&mesh.node, "default", client, &url);
    mesh.cluster.stop_apiserver();
    let stopped = Instant::now();
    mesh.cluster.start_apiserver_again().await;
    eprintln!("kube-apiserver down for {:?}", stopped.elapsed());
    recovered(&mesh, &before, load, "the API server restart").await;

    // etcd crashed and restarted under traffic: the API server cannot read
    // or write meanwhile; no failed request, and every Dataplane there once
    // after the control plane's watches resume.
    let load = Load::start(&mesh.node, "default", client, &url);
    mesh.cluster.stop_etcd();
    let stopped = Instant::now();
    // While etcd is down the API server has nothing to serve.
    eventually("the API server notices", Duration::from_secs(30), || async {
        let out = mesh
            .cluster
            .kubectl(&["get", "dataplanes", "-A", "--request-timeout=2s"], None);
        (!out.status.success())
            .then_some(())
            .ok_or("still answers".to_string())
    })
    .await;
    mesh.cluster.start_etcd_again().await;
    eprintln!("etcd down for {:?}", stopped.elapsed());
    recovered(&mesh, &before, load, "the etcd restart").await;
    let stored = kubectl_json(&mesh, &["get", "dataplanes", "-A", "-o", "json"]);
    let stored = stored["items"].as_array().map_or(0, Vec::len);
    assert_eq!(stored, before.len(), "the Dataplane objects in the API server");

    // A deleted Pod's Dataplane goes with it.
    let gone = servers[1].clone();
    mesh.cluster
        .kubectl_ok(&["delete", "pod", &gone, "-n", "kuma-test", "--wait=false"], None);
    eventually(
        "the Dataplane of a deleted Pod is collected",
        Duration::from_secs(60),
        || async {
            let out = mesh
                .cluster
                .kubectl(&["get", "dataplane", &gone, "-n", "kuma-test"], None);
            if out.status.success() {
                Err("still there".to_string())
            } else {
                Ok(())
            }
        },
    )
    .await;
    // Virtual probes (the probe proxy turned off): the injector points the
    // readiness probe at Envoy's probe listener, the node agent's prober
    // reaches it through the Pod's inbound redirect, and Envoy routes it to
    // the app: the Pod turns Ready through the probe listener.
    mesh.cluster.apply(
        r#"apiVersion: v1
kind: Service
metadata:
  name: probed
  namespace: kuma-test
spec:
  ports:
    - port: 80
  selector:
    app: probed
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: probed
  namespace: kuma-test
spec:
  selector:
    matchLabels:
      app: probed
  template:
    metadata:
      labels:
        app: probed
      annotations:
        kuma.io/application-probe-proxy-port: "0"
    spec:
      containers:
        - name: echo
          image: nginx
          ports:
            - containerPort: 80
          readinessProbe:
            httpGet:
              path: /ready
              port: 80
"#,
    );
    let probed = ready_pods(&mesh, "kuma-test", "app=probed", 1).await;
    let pod = kubectl_json(
        &mesh,
        &["get", "pod", &probed[0], "-n", "kuma-test", "-o", "json"],
    );
    let probe = &pod["spec"]["containers"][0]["readinessProbe"]["httpGet"];
    assert_eq!(
        (probe["port"].clone(), probe["path"].clone()),
        (9000.into(), "/80/ready".into()),
        "{probe}"
    );
    let dataplane = kubectl_json(
        &mesh,
        &["get", "dataplane", &probed[0], "-n", "kuma-test", "-o", "json"],
    );
    assert_eq!(
        dataplane["spec"]["probes"],
        serde_json::json!({"port": 9000, "endpoints": [{"inboundPort": 80, "inboundPath": "/ready", "path": "/80/ready"}]}),
        "{dataplane}"
    );
    counted(
        &mesh,
        ("kuma-test", &probed[0]),
        "probe_listener.downstream_rq_2xx",
        "probes answered through the probe listener",
        Duration::from_secs(30),
    )
    .await;
}
