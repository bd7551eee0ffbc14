//! Installing through the Operator Lifecycle Manager, with real OLM on the
//! test cluster: the committed bundle (`config/olm/bundle`) passes the
//! operator-framework validators; a Subscription installs it from a
//! file-based catalog served by `opm serve`, the CSV succeeds once the
//! node agent runs kuma-cp's Pods (OLM's webhook certificate mounted,
//! webhooks called through OLM's Service), and an injected workload
//! carries traffic; the next bundle (`kumactl install olm-bundle --version
//! 0.2.0 --replaces 0.1.0`) then upgrades it through `replaces` while a
//! client sends requests: none fails and every kuma.io resource stays.
//!
//! One test binary: OLM's operators listen on fixed ports (see
//! `kuma_e2e::olm`).

use std::path::Path;
use std::time::{Duration, Instant};

use kuma_e2e::in_cluster::InCluster;
use kuma_e2e::olm::{Olm, render_catalog, tool};
use kuma_e2e::workloads::Load;
use kuma_e2e::{bin_dir, eventually, temp_dir, workspace_root};

const PACKAGE: &str = "kuma-operator";

/// `kumactl install olm-bundle` into a fresh directory.
fn render_bundle(version: &str, replaces: Option<&str>) -> std::path::PathBuf {
    let dir = temp_dir(&format!("bundle-{version}"));
    let mut args = vec![
        "install".to_string(),
        "olm-bundle".into(),
        "--output-dir".into(),
        dir.display().to_string(),
        "--version".into(),
        version.into(),
    ];
    if let Some(r) = replaces {
        args.extend(["--replaces".into(), r.into()]);
    }
    let out = std::process::Command::new(bin_dir().join("kumactl"))
        .args(&args)
        .output()
        .expect("kumactl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    dir
}

fn validate(bundle: &Path) -> String {
    let (ok, out, err) = tool(
        "bundle-validate",
        &["-optional", "-k8s-version", "1.34", &bundle.display().to_string()],
    );
    assert!(ok, "{}: {out}{err}", bundle.display());
    out
}

#[test]
fn the_bundles_pass_the_operator_framework_validators() {
    let committed = workspace_root().join("config/olm");
    let report = validate(&committed.join("bundle"));
    eprintln!("{report}");
    // Warnings only: no example for the two kinds kuma-cp writes itself,
    // and the deprecated-API check naming every rule for endpointslices.
    assert!(report.lines().all(|l| !l.starts_with("ERROR")), "{report}");
    let (ok, _, err) = tool(
        "opm",
        &["validate", &committed.join("catalog").display().to_string()],
    );
    assert!(ok, "config/olm/catalog: {err}");
    // A version bump gives a valid next bundle that replaces this one.
    let next = render_bundle("0.2.0", Some("0.1.0"));
    validate(&next.join("bundle"));
    let csv = std::fs::read_to_string(next.join("bundle/manifests/kuma-operator.clusterserviceversion.yaml"))
        .expect("CSV");
    assert!(csv.contains("replaces: kuma-operator.v0.1.0"), "{csv}");
}

/// A field of a CSV in kuma-system (empty when there is none).
fn csv_field(k: &InCluster, name: &str, path: &str) -> String {
    let jsonpath = format!("jsonpath={{{path}}}");
    let out = k
        .cluster
        .kubectl(&["get", "csv", name, "-n", "kuma-system", "-o", &jsonpath], None);
    String::from_utf8_lossy(&out.stdout).to_string()
}

async fn csv_succeeded(k: &InCluster, name: &str) {
    eventually(
        &format!("CSV {name} Succeeded"),
        Duration::from_secs(300),
        || async {
            let phase = csv_field(k, name, ".status.phase");
            (phase == "Succeeded")
                .then_some(())
                .ok_or_else(|| format!("{phase}: {}", csv_field(k, name, ".status.message")))
        },
    )
    .await;
}

/// The kuma.io resources of the cluster, as `kind/namespace/name` lines.
fn kuma_resources(k: &InCluster) -> Vec<String> {
    let out = k.cluster.kubectl_ok(
        &[
            "get",
            "meshes,dataplanes,meshtimeouts,meshtrafficpermissions",
            "-A",
            "-o",
            "jsonpath={range .items[*]}{.kind}/{.metadata.namespace}/{.metadata.name}{\"\\n\"}{end}",
        ],
        None,
    );
    let mut lines: Vec<String> = out.lines().map(String::from).collect();
    lines.sort();
    lines
}

#[tokio::test]
async fn olm_installs_the_bundle_and_upgrades_it_through_replaces() {
    let k = InCluster::start().await;
    let mut olm = Olm::start(&k.cluster);
    let catalogs = temp_dir("catalogs");
    let first = catalogs.join("first");
    let v1 = workspace_root().join("config/olm/bundle");
    render_catalog(&first, PACKAGE, &[("kuma-operator.v0.1.0", &v1)]);
    olm.serve(&first);
    k.cluster.create_namespace("kuma-system", &[]).await;
    k.cluster.apply(&olm.catalog_source("kuma-rs-catalog"));
    k.cluster.apply(&format!(
        "apiVersion: operators.coreos.com/v1\nkind: OperatorGroup\nmetadata:\n  name: kuma\n  namespace: kuma-system\n---\napiVersion: operators.coreos.com/v1alpha1\nkind: Subscription\nmetadata:\n  name: {PACKAGE}\n  namespace: kuma-system\nspec:\n  channel: stable\n  name: {PACKAGE}\n  source: kuma-rs-catalog\n  sourceNamespace: olm\n  installPlanApproval: Automatic\n"
    ));
    let subscribed = Instant::now();
    csv_succeeded(&k, "kuma-operator.v0.1.0").await;
    eprintln!(
        "OLM: CSV kuma-operator.v0.1.0 Succeeded {:.1} s after the Subscription",
        subscribed.elapsed().as_secs_f64()
    );
    let first_cps = k.control_plane_ready("kuma-system", 2).await;
    let (client, url) = k.echo_through_the_mesh().await;
    k.cluster.apply(
        "apiVersion: kuma.io/v1alpha1\nkind: MeshTimeout\nmetadata:\n  name: kept\n  namespace: kuma-system\n  labels:\n    kuma.io/mesh: default\nspec:\n  targetRef:\n    kind: Mesh\n  to:\n    - targetRef:\n        kind: Mesh\n      default:\n        idleTimeout: 1h\n",
    );
    let before = kuma_resources(&k);
    assert!(
        before.iter().any(|r| r == "MeshTimeout/kuma-system/kept"),
        "{before:?}"
    );
    assert!(
        before.iter().filter(|r| r.starts_with("Dataplane/")).count() >= 2,
        "{before:?}"
    );
    let forbidden = k.forbidden("kuma-system", &first_cps);
    assert!(forbidden.is_empty(), "{}", forbidden.join("\n"));

    // The next version, served: OLM upgrades through `replaces`.
    let v2 = render_bundle("0.2.0", Some("0.1.0"));
    let second = catalogs.join("second");
    render_catalog(
        &second,
        PACKAGE,
        &[
            ("kuma-operator.v0.1.0", &v1),
            ("kuma-operator.v0.2.0", &v2.join("bundle")),
        ],
    );
    let load = Load::start(&k.node, "default", &client, &url);
    let upgrade = Instant::now();
    olm.serve(&second);
    csv_succeeded(&k, "kuma-operator.v0.2.0").await;
    eventually("the v0.1.0 CSV is gone", Duration::from_secs(120), || async {
        let phase = csv_field(&k, "kuma-operator.v0.1.0", ".status.phase");
        phase.is_empty().then_some(()).ok_or(phase)
    })
    .await;
    let upgraded = upgrade.elapsed().as_secs_f64();
    let new_cps = eventually("two kuma-cp Pods of v0.2.0", Duration::from_secs(120), || async {
        let images = k.cluster.kubectl_ok(
            &[
                "get",
                "pods",
                "-n",
                "kuma-system",
                "-l",
                "app=kuma-control-plane",
                "-o",
                "jsonpath={range .items[*]}{.metadata.name}={.spec.containers[0].image}{\"\\n\"}{end}",
            ],
            None,
        );
        let pods: Vec<String> = images
            .lines()
            .filter(|l| l.ends_with(":0.2.0"))
            .filter_map(|l| l.split('=').next().map(String::from))
            .collect();
        (pods.len() == 2 && images.lines().count() == 2)
            .then_some(pods)
            .ok_or(images)
    })
    .await;
    k.workloads()
        .ready_pods("kuma-system", "app=kuma-control-plane", 2)
        .await;
    // Traffic went on throughout, and goes on through the new kuma-cp.
    let w = k.workloads();
    eventually("traffic after the upgrade", Duration::from_secs(60), || async {
        let r = w.get_from("default", &client, &url);
        r.starts_with("200 ").then_some(()).ok_or(r)
    })
    .await;
    let codes = load.stop();
    let failed = codes.iter().filter(|c| c.as_str() != "200").count();
    eprintln!(
        "OLM upgrade v0.1.0 → v0.2.0: CSV Succeeded and the old one deleted {upgraded:.1} s after the catalog served it; {} requests, {failed} failed",
        codes.len()
    );
    assert!(codes.len() > 10, "the load ran: {codes:?}");
    assert_eq!(failed, 0, "{codes:?}");
    // The new kuma-cp injects (OLM re-created its webhook configurations).
    k.injector_answers().await;
    let after = kuma_resources(&k);
    assert_eq!(after, before, "kuma.io resources across the upgrade");
    let forbidden = k.forbidden("kuma-system", &new_cps);
    assert!(forbidden.is_empty(), "{}", forbidden.join("\n"));
}
