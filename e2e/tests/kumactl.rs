//! kumactl habits against a real kuma-cp (in memory): control plane
//! contexts, apply with variables, several documents and `--dry-run`, get
//! in every format with paging, delete, inspect and version.

use std::collections::BTreeMap;

use kuma_e2e::process::{ControlPlane, Kumactl};
use kuma_e2e::temp_dir;

const TIMEOUT_TEMPLATE: &str = "type: MeshTimeout\nmesh: default\nname: {{ name }}\nspec:\n  targetRef:\n    kind: Mesh\n  to:\n    - targetRef:\n        kind: Mesh\n      default:\n        idleTimeout: {{ idle }}\n";

fn timeout(name: &str, idle: &str) -> String {
    TIMEOUT_TEMPLATE
        .replace("{{ name }}", name)
        .replace("{{ idle }}", idle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kumactl_habits() {
    let cp = ControlPlane::start(
        "kuma-cp-kumactl",
        ControlPlane::env(&BTreeMap::new(), &temp_dir("kumactl-cp")),
    )
    .await;
    let kumactl = Kumactl::new(&cp.api());
    kumactl.wait_for_default_mesh().await;

    // Versions of both sides.
    let version = kumactl.ok(&["version"], None);
    assert!(version.contains("Client: Kuma"), "{version}");
    assert!(version.contains("Server: Kuma 2."), "{version}");

    // Control planes: add (without checking), list, switch, remove.
    kumactl.ok(
        &[
            "config",
            "control-planes",
            "add",
            "--name",
            "elsewhere",
            "--address",
            "http://127.0.0.1:1",
            "--skip-check",
        ],
        None,
    );
    let listed = kumactl.ok(&["config", "control-planes", "list"], None);
    let active: Vec<&str> = listed
        .lines()
        .filter(|l| l.trim_start().starts_with('*'))
        .collect();
    assert_eq!(active.len(), 1, "{listed}");
    assert!(active[0].contains("elsewhere"), "{listed}");
    let unreachable = kumactl.run(&["get", "meshes"], None);
    assert!(
        !unreachable.status.success(),
        "the active control plane is the unreachable one"
    );
    kumactl.ok(&["config", "control-planes", "switch", "--name", "e2e"], None);
    kumactl.ok(
        &["config", "control-planes", "remove", "--name", "elsewhere"],
        None,
    );
    let listed = kumactl.ok(&["config", "control-planes", "list"], None);
    assert!(!listed.contains("elsewhere"), "{listed}");
    kumactl.ok(&["get", "meshes"], None);

    // The HTTPS API, trusted through the control plane's CA.
    let ca = cp.ca_file().display().to_string();
    let https = cp.api_https();
    kumactl.ok(
        &[
            "config",
            "control-planes",
            "add",
            "--name",
            "secure",
            "--address",
            &https,
            "--ca-cert-file",
            &ca,
        ],
        None,
    );
    let meshes = kumactl.ok(&["get", "meshes"], None);
    assert!(meshes.contains("default"), "{meshes}");
    let untrusted = kumactl.run(
        &[
            "config",
            "control-planes",
            "add",
            "--name",
            "untrusted",
            "--address",
            &https,
        ],
        None,
    );
    assert!(
        !untrusted.status.success(),
        "a certificate of an unknown CA is refused"
    );
    kumactl.ok(&["config", "control-planes", "switch", "--name", "e2e"], None);
    kumactl.ok(&["config", "control-planes", "remove", "--name", "secure"], None);

    // --dry-run prints and stores nothing.
    let dry = kumactl.ok(
        &["apply", "-f", "-", "--dry-run", "-v", "name=dry", "-v", "idle=5s"],
        Some(TIMEOUT_TEMPLATE),
    );
    assert!(
        dry.contains("name: dry") && dry.contains("idleTimeout: 5s"),
        "{dry}"
    );
    let missing = kumactl.run(&["get", "meshtimeout", "dry"], None);
    assert!(!missing.status.success());

    // Variables, and several documents at once.
    kumactl.ok(
        &["apply", "-f", "-", "-v", "name=from-vars", "-v", "idle=7s"],
        Some(TIMEOUT_TEMPLATE),
    );
    let many = format!("{}---\n{}", timeout("page-a", "1s"), timeout("page-b", "2s"));
    let applied = kumactl.ok(&["apply", "-f", "-"], Some(&many));
    assert_eq!(applied.matches("Created").count(), 2, "{applied}");
    let file = temp_dir("kumactl-file").join("timeout.yaml");
    std::fs::write(&file, timeout("page-c", "3s")).expect("write");
    kumactl.ok(&["apply", "-f", &file.display().to_string()], None);
    let again = kumactl.ok(&["apply", "-f", &file.display().to_string()], None);
    assert!(again.contains("Updated"), "{again}");

    // One resource in every format.
    let yaml = kumactl.ok(&["get", "meshtimeout", "from-vars", "-o", "yaml"], None);
    assert!(yaml.contains("idleTimeout: 7s"), "{yaml}");
    let json: serde_json::Value =
        serde_json::from_str(&kumactl.ok(&["get", "meshtimeout", "from-vars", "-o", "json"], None))
            .expect("json");
    assert_eq!(json["spec"]["to"][0]["default"]["idleTimeout"], "7s");
    let table = kumactl.ok(&["get", "meshtimeout", "from-vars"], None);
    assert!(table.contains("from-vars"), "{table}");

    // Pages: the table says how to get the next one.
    let all: serde_json::Value =
        serde_json::from_str(&kumactl.ok(&["get", "meshtimeouts", "-o", "json"], None)).expect("json");
    let total = all["total"].as_u64().expect("total");
    assert!(total >= 4, "{all}");
    let first = kumactl.ok(&["get", "meshtimeouts", "--size", "2"], None);
    assert!(first.contains("--offset=2"), "{first}");
    let last = kumactl.ok(
        &[
            "get",
            "meshtimeouts",
            "--size",
            "2",
            "--offset",
            &(total - 1).to_string(),
        ],
        None,
    );
    assert!(!last.contains("--offset="), "{last}");

    // Delete, then it is gone.
    kumactl.ok(&["delete", "meshtimeout", "page-a"], None);
    let gone = kumactl.run(&["get", "meshtimeout", "page-a"], None);
    assert!(!gone.status.success());
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains("No resources found in default mesh"),
        "{}",
        String::from_utf8_lossy(&gone.stderr)
    );

    // Inspect a dataplane that has not connected: its policies and the
    // configuration it would get.
    kumactl.ok(
        &["apply", "-f", "-"],
        Some("type: Dataplane\nmesh: default\nname: web-1\nnetworking:\n  address: 127.0.0.1\n  inbound:\n    - port: 18080\n      servicePort: 18081\n      tags:\n        kuma.io/service: web\n        kuma.io/protocol: http\n  outbound:\n    - port: 18090\n      tags:\n        kuma.io/service: backend\n"),
    );
    let table = kumactl.ok(&["inspect", "dataplane", "web-1"], None);
    assert!(
        table.starts_with("Kind") && table.lines().any(|l| l.starts_with("MeshTimeout")),
        "{table}"
    );
    let policies = kumactl.ok(
        &[
            "inspect",
            "dataplane",
            "web-1",
            "--type",
            "policies",
            "-o",
            "json",
        ],
        None,
    );
    assert!(
        policies.contains("MeshTimeout") && policies.contains("from-vars"),
        "{policies}"
    );
    let parsed: serde_json::Value = serde_json::from_str(&policies).expect("json");
    let timeouts = parsed["policies"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["kind"] == "MeshTimeout"))
        .expect("MeshTimeout");
    assert_eq!(timeouts["outbounds"][0]["service"], "backend", "{timeouts}");
    assert!(
        timeouts["outbounds"][0]["conf"]["idleTimeout"].is_string(),
        "{timeouts}"
    );
    let config = kumactl.ok(&["inspect", "dataplane", "web-1", "--type", "config"], None);
    assert!(config.contains("inbound:127.0.0.1:18080"), "{config}");
    let listed = kumactl.ok(&["inspect", "dataplanes"], None);
    assert!(
        listed
            .lines()
            .any(|l| l.contains("web-1") && l.contains("Offline")),
        "{listed}"
    );
}
