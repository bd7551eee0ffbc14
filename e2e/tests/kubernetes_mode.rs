//! kuma-cp in Kubernetes mode against a real API server: the kuma.io CRDs
//! are the store, meshes get their defaults however they are created, the
//! REST API reads but does not write, and two replicas share leadership
//! through a Lease.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kuma_e2e::eventually;
use kuma_e2e::k8s::{Cluster, Options};
use kuma_e2e::process::{ControlPlane, Kumactl};

/// A kuma-cp of the cluster, named `hostname`.
async fn control_plane(cluster: &Cluster, hostname: &str) -> ControlPlane {
    let mut store = BTreeMap::new();
    store.insert("KUMA_ENVIRONMENT".to_string(), "kubernetes".to_string());
    store.insert("KUBECONFIG".to_string(), cluster.kubeconfig.display().to_string());
    store.insert("HOSTNAME".to_string(), hostname.to_string());
    let work_dir = kuma_e2e::temp_dir(hostname);
    ControlPlane::start(hostname, ControlPlane::env(&store, &work_dir)).await
}

fn lease_holder(cluster: &Cluster) -> String {
    let out = cluster.kubectl(
        &[
            "get",
            "lease",
            "cp-leader-lease",
            "-n",
            "kuma-system",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ],
        None,
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

async fn kubectl_eventually(cluster: &Cluster, what: &str, args: &[&str], want: &str) {
    eventually(what, Duration::from_secs(60), || async {
        let out = cluster.kubectl(args, None);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if text.contains(want) {
            Ok(())
        } else {
            Err(format!("{text}{}", String::from_utf8_lossy(&out.stderr)))
        }
    })
    .await;
}

const CUSTOM_TIMEOUT: &str = "apiVersion: kuma.io/v1alpha1
kind: MeshTimeout
metadata:
  name: custom-timeout
  namespace: kuma-system
  labels:
    kuma.io/mesh: default
spec:
  targetRef:
    kind: Mesh
  to:
    - targetRef:
        kind: Mesh
      default:
        idleTimeout: 42s
";

#[tokio::test]
async fn kubernetes_mode_end_to_end() {
    let cluster = Cluster::start(Options::default()).await;
    cluster.install_crds();
    cluster.create_namespace("kuma-system", &[]).await;
    let mut first = control_plane(&cluster, "kuma-cp-a").await;

    // The default mesh and its default policies are objects of the cluster.
    kubectl_eventually(
        &cluster,
        "the default mesh's defaults",
        &["get", "meshtimeouts", "-n", "kuma-system", "-o", "name"],
        "mesh-timeout-all-default",
    )
    .await;
    kubectl_eventually(
        &cluster,
        "the mesh marked as defaulted",
        &["get", "mesh", "default", "-o", "yaml"],
        "k8s.kuma.io/mesh-defaults-generated",
    )
    .await;

    // A policy applied with kubectl is seen by kumactl.
    cluster.apply(CUSTOM_TIMEOUT);
    let kumactl = Kumactl::new(&first.api());
    eventually("kumactl sees the policy", Duration::from_secs(30), || async {
        let out = kumactl.run(&["get", "meshtimeouts"], None);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if text.contains("custom-timeout.kuma-system")
            && text.contains("mesh-timeout-all-default.kuma-system")
        {
            Ok(())
        } else {
            Err(text)
        }
    })
    .await;
    let out = kumactl.run(
        &["get", "meshtimeout", "custom-timeout.kuma-system", "-o", "yaml"],
        None,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("idleTimeout: 42s"), "{text}");
    let out = kumactl.run(&["inspect", "meshtimeout", "custom-timeout.kuma-system"], None);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.starts_with("Affected data plane proxies:"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The REST API reads, but on Kubernetes resources are changed with kubectl.
    let http = reqwest::Client::new();
    let read = http
        .get(format!(
            "{}/meshes/default/meshtimeouts/custom-timeout.kuma-system",
            first.api()
        ))
        .send()
        .await
        .expect("read");
    assert_eq!(read.status(), 200);
    let write = http
        .put(format!("{}/meshes/default/meshtimeouts/another", first.api()))
        .header("content-type", "application/json")
        .body(r#"{"type":"MeshTimeout","mesh":"default","name":"another","spec":{"targetRef":{"kind":"Mesh"}}}"#)
        .send()
        .await
        .expect("write");
    assert_eq!(write.status(), 405);
    let body = write.text().await.unwrap_or_default();
    assert!(
        body.starts_with("On Kubernetes you cannot change the state of Kuma resources"),
        "{body}"
    );
    let delete = http
        .delete(format!("{}/meshes/default", first.api()))
        .send()
        .await
        .expect("delete");
    assert_eq!(delete.status(), 405);
    let out = kumactl.run(&["apply", "-f", "-"], Some("type: Mesh\nname: from-kumactl\n"));
    assert!(!out.status.success(), "kumactl apply is refused on Kubernetes");

    // A Mesh created with kubectl gets its defaults and its builtin CA.
    cluster.apply(
        "apiVersion: kuma.io/v1alpha1\nkind: Mesh\nmetadata:\n  name: secure\nspec:\n  mtls:\n    enabledBackend: ca-1\n    backends:\n      - name: ca-1\n        type: builtin\n",
    );
    kubectl_eventually(
        &cluster,
        "the new mesh's default policies",
        &["get", "meshcircuitbreakers", "-n", "kuma-system", "-o", "name"],
        "mesh-circuit-breaker-all-secure",
    )
    .await;
    kubectl_eventually(
        &cluster,
        "the new mesh's builtin CA",
        &["get", "secrets", "-n", "kuma-system", "-o", "name"],
        "secret/secure.ca-builtin-cert-ca-1",
    )
    .await;

    // The builtin CA is a Secret of Kuma's type for mesh-scoped secrets.
    assert_eq!(
        cluster.kubectl_ok(
            &[
                "get",
                "secret",
                "secure.ca-builtin-cert-ca-1",
                "-n",
                "kuma-system",
                "-o",
                "jsonpath={.type}",
            ],
            None,
        ),
        "system.kuma.io/secret"
    );

    // Two replicas: exactly one holds the Lease and leads.
    assert!(
        lease_holder(&cluster).starts_with("kuma-cp-a"),
        "{}",
        lease_holder(&cluster)
    );

    // Someone else takes the Lease: the leader stops its leader work at
    // its next renewal, and a Mesh created while the intruder holds the
    // Lease gets its defaults only from the term the leader wins back once
    // the intruder's lease has run out.
    cluster.kubectl_ok(
        &[
            "patch",
            "lease",
            "cp-leader-lease",
            "-n",
            "kuma-system",
            "--type=merge",
            "-p",
            "{\"spec\":{\"holderIdentity\":\"intruder\"}}",
        ],
        None,
    );
    eventually("the leader gives up", Duration::from_secs(30), || async {
        let log = first.proc.log();
        log.contains("lost leadership; stopping leader work")
            .then_some(())
            .ok_or_else(|| "still leading".to_string())
    })
    .await;
    cluster.apply("apiVersion: kuma.io/v1alpha1\nkind: Mesh\nmetadata:\n  name: leaderless\n");
    kubectl_eventually(
        &cluster,
        "the defaults once leadership is back",
        &["get", "meshretries", "-n", "kuma-system", "-o", "name"],
        "mesh-retry-all-leaderless",
    )
    .await;
    let acquired = cluster.kubectl_ok(
        &[
            "get",
            "lease",
            "cp-leader-lease",
            "-n",
            "kuma-system",
            "-o",
            "jsonpath={.spec.holderIdentity} {.spec.acquireTime}",
        ],
        None,
    );
    let created = cluster.kubectl_ok(
        &[
            "get",
            "meshretries",
            "mesh-retry-all-leaderless",
            "-n",
            "kuma-system",
            "-o",
            "jsonpath={.metadata.creationTimestamp}",
        ],
        None,
    );
    let (holder, acquire_time) = acquired.split_once(' ').expect("holder and acquire time");
    assert!(holder.starts_with("kuma-cp-a"), "{acquired}");
    // Both are RFC 3339 in UTC; the Lease's has microseconds, the
    // creation time whole seconds.
    assert!(
        acquire_time[..19] <= created[..19],
        "defaults created at {created}, before this term began at {acquire_time}"
    );
    let second = control_plane(&cluster, "kuma-cp-b").await;
    assert!(
        lease_holder(&cluster).starts_with("kuma-cp-a"),
        "the first keeps the lease while it lives"
    );
    assert!(
        !second.proc.log().contains("holds the leader lease"),
        "the second does not lead"
    );
    // The leader dies without a word: the other takes over within the
    // lease duration (15 s) plus one retry period.
    first.proc.kill();
    let killed = Instant::now();
    eventually("the second takes the lease", Duration::from_secs(60), || async {
        let holder = lease_holder(&cluster);
        if holder.starts_with("kuma-cp-b") {
            Ok(())
        } else {
            Err(holder)
        }
    })
    .await;
    let handover = killed.elapsed();
    eprintln!("leader handover after SIGKILL: {handover:?}");
    // And does the leader's work: a new mesh gets its defaults.
    cluster.apply("apiVersion: kuma.io/v1alpha1\nkind: Mesh\nmetadata:\n  name: after-handover\n");
    kubectl_eventually(
        &cluster,
        "defaults from the new leader",
        &["get", "meshretries", "-n", "kuma-system", "-o", "name"],
        "mesh-retry-all-after-handover",
    )
    .await;
    drop(second);
}
