//! The reconciler regenerates exactly the proxies a change can affect,
//! coalesces bursts, and publishes a snapshot only when it changed.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use kuma_crds::format::parse;
use kuma_crds::resource::{Resource, ResourceType};
use kuma_xds::context::ProxyMetadata;
use kuma_xds::metrics::XdsMetrics;
use kuma_xds::resources::XdsType;
use kuma_xds::snapshot::SnapshotCache;
use kuma_xds::sync::{BatchReport, Event, Generator};
use support::Fixture;

/// A generator over the shared golden mesh with every proxy connected.
fn connected_mesh() -> (Generator, Arc<SnapshotCache>, Arc<XdsMetrics>) {
    connected_mesh_with(Vec::new())
}

/// [`connected_mesh`] with `extra` events in the same first batch.
fn connected_mesh_with(extra: Vec<Event>) -> (Generator, Arc<SnapshotCache>, Arc<XdsMetrics>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/_base/web.yaml");
    let fixture = Fixture::load(&path);
    let snapshots = Arc::new(SnapshotCache::new());
    let metrics = Arc::new(XdsMetrics::default());
    let mut g = Generator::new(snapshots.clone(), metrics.clone());
    let mut events = vec![Event::Upsert(Box::new(
        parse("type: Mesh\nname: default").unwrap(),
    ))];
    for r in &fixture.resources {
        events.push(Event::Upsert(Box::new(r.clone())));
        events.push(Event::Connected {
            node: format!("default.{}", r.meta.name),
            metadata: ProxyMetadata {
                admin_port: 9901,
                readiness_port: 9902,
                ..Default::default()
            },
        });
    }
    events.extend(extra);
    let report = g.apply(events);
    assert_eq!(
        report.regenerated.len(),
        fixture.resources.len(),
        "every connected proxy gets a config"
    );
    (g, snapshots, metrics)
}

fn upsert(yaml: &str) -> Event {
    Event::Upsert(Box::new(parse(yaml).unwrap_or_else(|e| panic!("{e}"))))
}

fn nodes(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| format!("default.{n}")).collect()
}

const WEB_TIMEOUT: &str = "type: MeshTimeout\nmesh: default\nname: web-timeout\nspec:\n  targetRef:\n    kind: MeshService\n    name: web\n  to:\n    - targetRef:\n        kind: Mesh\n      default:\n        idleTimeout: 20s\n";

#[test]
fn a_policy_regenerates_only_the_proxies_it_selects() {
    let (mut g, snapshots, _) = connected_mesh();
    let before = snapshots.get("default.web-1").unwrap();
    let report = g.apply(vec![upsert(WEB_TIMEOUT)]);
    assert_eq!(report.regenerated, nodes(&["web-1"]));
    assert_eq!(report.changed, nodes(&["web-1"]));
    let after = snapshots.get("default.web-1").unwrap();
    // Cluster idle timeouts, the TCP proxy's idle timeout on the db
    // listener, and endpoints re-sent for the changed clusters.
    assert_eq!(
        after.changed_types(&before),
        vec![XdsType::Cluster, XdsType::Endpoints, XdsType::Listener]
    );

    // Retargeting it moves it: both the old and the new targets regenerate.
    let retargeted = WEB_TIMEOUT.replace("name: web\n", "name: frontend\n");
    let report = g.apply(vec![upsert(&retargeted)]);
    assert_eq!(report.regenerated, nodes(&["frontend-1", "web-1"]));

    let report = g.apply(vec![Event::Delete {
        resource_type: ResourceType::MeshTimeout,
        mesh: "default".into(),
        name: "web-timeout".into(),
    }]);
    assert_eq!(report.regenerated, nodes(&["frontend-1"]));
}

#[test]
fn policies_changed_alone_give_what_a_fresh_control_plane_gives() {
    // A change of policies alone keeps the services digested before; the
    // proxies it reaches must end up exactly as if everything had been
    // digested at once.
    let (mut g, snapshots, _) = connected_mesh();
    let retry = "type: MeshRetry\nmesh: default\nname: web-retry\nspec:\n  targetRef:\n    kind: Mesh\n  to:\n    - targetRef:\n        kind: MeshService\n        name: backend\n      default:\n        http:\n          numRetries: 4\n";
    g.apply(vec![upsert(WEB_TIMEOUT)]);
    g.apply(vec![upsert(retry)]);
    g.apply(vec![upsert(&WEB_TIMEOUT.replace("20s", "25s"))]);
    g.apply(vec![Event::Delete {
        resource_type: ResourceType::MeshRetry,
        mesh: "default".into(),
        name: "web-retry".into(),
    }]);
    g.apply(vec![upsert(&retry.replace("numRetries: 4", "numRetries: 2"))]);

    let (_, fresh, _) = connected_mesh_with(vec![
        upsert(&WEB_TIMEOUT.replace("20s", "25s")),
        upsert(&retry.replace("numRetries: 4", "numRetries: 2")),
    ]);
    assert_same_configs(&snapshots, &fresh, "");
}

/// Asserts that every proxy has the same configuration in both caches.
fn assert_same_configs(ours: &SnapshotCache, fresh: &SnapshotCache, context: &str) {
    assert_eq!(ours.nodes(), fresh.nodes(), "{context}");
    for node in fresh.nodes() {
        let (ours, theirs) = (ours.get(&node).unwrap(), fresh.get(&node).unwrap());
        assert_eq!(ours.changed_types(&theirs), vec![], "{context} {node}");
    }
}

#[test]
fn policies_matched_before_are_matched_again_when_the_dataplane_changes() {
    // What policies match to is kept while no policy changes (a new
    // endpoint keeps it) and shared by the proxies they select alike:
    // after a new endpoint and a retag that makes a policy select web-1,
    // every proxy must be as if everything had been digested at once.
    let canary = "type: MeshTimeout\nmesh: default\nname: canary\nspec:\n  targetRef:\n    kind: MeshSubset\n    tags:\n      version: canary\n  to:\n    - targetRef:\n        kind: Mesh\n      default:\n        idleTimeout: 33s\n";
    let db2 = "type: Dataplane\nmesh: default\nname: db-2\nnetworking:\n  address: 192.168.0.40\n  inbound:\n    - port: 5432\n      tags:\n        kuma.io/service: db\n        kuma.io/protocol: tcp\n";
    let web =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/_base/web.yaml"))
            .unwrap();
    let web_1 = web.split("\n---\n").next().unwrap();
    let web_1_canary = web_1.replace(
        "        kuma.io/zone: east\n  outbound:",
        "        kuma.io/zone: east\n        version: canary\n  outbound:",
    );
    assert_ne!(web_1, web_1_canary);

    let (mut g, snapshots, _) = connected_mesh();
    g.apply(vec![upsert(canary)]);
    g.apply(vec![upsert(db2)]);
    let report = g.apply(vec![upsert(&web_1_canary)]);
    assert!(
        report.changed.contains("default.web-1"),
        "the canary timeout now applies"
    );

    let (_, fresh, _) = connected_mesh_with(vec![upsert(canary), upsert(db2), upsert(&web_1_canary)]);
    assert_same_configs(&snapshots, &fresh, "");
}

#[test]
fn dataplane_changes_give_what_a_fresh_control_plane_gives() {
    // Dataplane changes digest only the services whose endpoints moved
    // (the whole mesh when the set of services changes); after each step
    // every proxy must be as if everything had been digested at once.
    let db2 = "type: Dataplane\nmesh: default\nname: db-2\nnetworking:\n  address: 192.168.0.40\n  inbound:\n    - port: 5432\n      tags:\n        kuma.io/service: db\n        kuma.io/protocol: tcp\n";
    let db2_relabelled = format!("{db2}labels:\n  team: storage\n");
    let db2_not_ready = format!("{db2}      health:\n        ready: false\n");
    let db2_http = db2.replace("kuma.io/protocol: tcp", "kuma.io/protocol: http");
    let cache = "type: Dataplane\nmesh: default\nname: cache-1\nnetworking:\n  address: 192.168.0.41\n  inbound:\n    - port: 6379\n      tags:\n        kuma.io/service: cache\n";
    let delete = |name: &str| Event::Delete {
        resource_type: ResourceType::Dataplane,
        mesh: "default".into(),
        name: name.into(),
    };
    let steps: Vec<(&str, Vec<Event>)> = vec![
        ("a new endpoint", vec![upsert(db2)]),
        ("its labels", vec![upsert(&db2_relabelled)]),
        ("not ready", vec![upsert(&db2_not_ready)]),
        ("protocols disagree", vec![upsert(&db2_http)]),
        ("a new service", vec![upsert(cache)]),
        ("a service gone", vec![delete("cache-1")]),
        ("an endpoint gone", vec![delete("db-2")]),
    ];
    let (mut g, snapshots, _) = connected_mesh();
    let mut applied = Vec::new();
    for (step, events) in steps {
        applied.extend(events.iter().cloned());
        g.apply(events);
        let (_, fresh, _) = connected_mesh_with(applied.clone());
        assert_same_configs(&snapshots, &fresh, step);
    }
}

#[test]
fn a_new_endpoint_regenerates_the_proxies_that_reach_its_service() {
    let (mut g, _, _) = connected_mesh();
    let db2 = "type: Dataplane\nmesh: default\nname: db-2\nnetworking:\n  address: 192.168.0.40\n  inbound:\n    - port: 5432\n      tags:\n        kuma.io/service: db\n        kuma.io/protocol: tcp\n";
    let report = g.apply(vec![
        upsert(db2),
        Event::Connected {
            node: "default.db-2".into(),
            metadata: ProxyMetadata::default(),
        },
    ]);
    // web-1 calls db; nobody else does.
    assert_eq!(report.regenerated, nodes(&["db-2", "web-1"]));

    // A dataplane's labels reach Envoy on its endpoints (Kuma's
    // `io.kuma.labels`) only where it has no tags but its service: then a
    // label change regenerates that proxy and the ones reaching its
    // service, and changes only the latter's endpoints.
    let untagged = db2.replace("        kuma.io/protocol: tcp\n", "");
    let report = g.apply(vec![upsert(&untagged)]);
    // db-1's protocol tag now tells it from db-2: web-1's endpoints change.
    assert_eq!(report.changed, nodes(&["db-2", "web-1"]), "its protocol tag gone");
    let relabelled = format!("{untagged}labels:\n  team: storage\n");
    let report = g.apply(vec![upsert(&relabelled)]);
    assert_eq!(report.regenerated, nodes(&["db-2", "web-1"]));
    assert_eq!(report.changed, nodes(&["web-1"]));

    // With tags, the labels would repeat them: nobody's configuration changes.
    let report = g.apply(vec![upsert(db2)]);
    assert_eq!(
        report.changed,
        nodes(&["db-2", "web-1"]),
        "its protocol tag back, its labels gone from web-1's endpoints"
    );
    let relabelled = format!("{db2}labels:\n  team: compute\n");
    let report = g.apply(vec![upsert(&relabelled)]);
    assert_eq!(report.changed, nodes(&[]));
}

#[test]
fn a_burst_is_applied_once() {
    let (mut g, _, metrics) = connected_mesh();
    let before = metrics.generations.get();
    let burst: Vec<Event> = (1..=20)
        .map(|i| upsert(&WEB_TIMEOUT.replace("20s", &format!("{i}s"))))
        .collect();
    let report = g.apply(burst);
    assert_eq!(report.regenerated, nodes(&["web-1"]));
    assert_eq!(
        metrics.generations.get() - before,
        1,
        "twenty updates, one generation"
    );
}

#[test]
fn an_unchanged_resource_publishes_nothing() {
    let (mut g, snapshots, _) = connected_mesh();
    let mut watch = snapshots.watch("default.web-1");
    watch.borrow_and_update();
    let web: Resource =
        Fixture::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/_base/web.yaml"))
            .proxy_resource()
            .clone();
    let report = g.apply(vec![Event::Upsert(Box::new(web))]);
    assert_eq!(report.regenerated, nodes(&["web-1"]));
    assert!(report.changed.is_empty());
    assert!(
        !watch.has_changed().unwrap(),
        "streams are not woken for an identical config"
    );
}

#[test]
fn a_mesh_change_regenerates_the_whole_mesh_and_a_missing_mesh_clears_it() {
    let (mut g, snapshots, _) = connected_mesh();
    let report = g.apply(vec![upsert("type: Mesh\nname: default\nlabels:\n  env: prod")]);
    assert_eq!(report.regenerated.len(), 6);
    g.apply(vec![Event::Delete {
        resource_type: ResourceType::Mesh,
        mesh: "default".into(),
        name: "default".into(),
    }]);
    assert!(
        snapshots.get("default.web-1").is_none(),
        "no mesh, no configuration"
    );
}

#[test]
fn a_disconnected_proxy_is_forgotten() {
    let (mut g, snapshots, _) = connected_mesh();
    g.apply(vec![Event::Disconnected {
        node: "default.web-1".into(),
    }]);
    assert!(snapshots.get("default.web-1").is_none());
    let report = g.apply(vec![upsert(WEB_TIMEOUT)]);
    assert!(
        report.regenerated.is_empty(),
        "only connected proxies are generated"
    );
}

#[test]
fn enabling_mtls_once_the_ca_exists_secures_every_proxy() {
    use base64::Engine;
    use kuma_xds::resources::XdsType;
    let (mut g, snapshots, _) = connected_mesh();
    let mesh = "type: Mesh\nname: default\nmtls:\n  enabledBackend: ca-1\n  backends:\n    - name: ca-1\n      type: builtin\n";
    let report = g.apply(vec![upsert(mesh)]);
    assert!(
        report.changed.is_empty(),
        "without its CA, mTLS changes nothing yet"
    );
    let ca = kuma_xds::mtls::generate_ca("default", "ca-1", std::time::Duration::from_secs(3600)).unwrap();
    let (cert, key) = kuma_xds::mtls::builtin_secret_names("default", "ca-1");
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    g.apply(vec![upsert(&format!(
        "type: Secret\nmesh: default\nname: {cert}\ndata: {}\n",
        b64(&ca.cert_pem)
    ))]);
    let report = g.apply(vec![upsert(&format!(
        "type: Secret\nmesh: default\nname: {key}\ndata: {}\n",
        b64(&ca.key_pem)
    ))]);
    assert_eq!(report.changed.len(), 6, "every proxy gets mTLS");
    let web = snapshots.get("default.web-1").unwrap();
    assert_eq!(
        web.get(XdsType::Secret).resources.len(),
        2,
        "identity and CA over SDS"
    );
    let backend = &web.get(XdsType::Cluster).resources["backend"];
    let cluster =
        kuma_xds::proto::bytes_to_json("envoy.config.cluster.v3.Cluster", backend.encoded.bytes()).unwrap();
    assert_eq!(
        cluster["transportSocket"]["name"], "envoy.transport_sockets.tls",
        "{cluster}"
    );

    // A policy change regenerates web's configuration and keeps its
    // certificate: issuing one is the costly part, and a new one would be
    // pushed to the proxy for nothing.
    let secrets = |node: &str| -> Vec<(String, u64)> {
        let snapshot = snapshots.get(node).unwrap();
        snapshot
            .get(XdsType::Secret)
            .resources
            .iter()
            .map(|(name, r)| (name.to_string(), r.version))
            .collect()
    };
    let before = secrets("default.web-1");
    let report = g.apply(vec![upsert(WEB_TIMEOUT)]);
    assert!(report.changed.contains("default.web-1"), "{report:?}");
    assert_eq!(secrets("default.web-1"), before, "the same certificate");
}

#[test]
fn a_cluster_a_route_drops_stays_for_the_grace_period_then_goes() {
    use kuma_xds::resources::XdsType;
    use std::time::{Duration, SystemTime};
    let (g, snapshots, _) = connected_mesh();
    let grace = Duration::from_secs(40);
    let mut g = g.with_cluster_grace(grace);
    let clusters = || -> BTreeSet<String> {
        snapshots
            .get("default.web-1")
            .unwrap()
            .get(XdsType::Cluster)
            .resources
            .keys()
            .map(|n| n.to_string())
            .collect()
    };
    let t0 = SystemTime::now();
    let before = clusters();
    g.apply_at(
        vec![upsert(
            "type: MeshHTTPRoute\nmesh: default\nname: to-v2\nspec:\n  targetRef:\n    kind: MeshService\n    name: web\n  to:\n    - targetRef:\n        kind: MeshService\n        name: backend\n      rules:\n        - matches:\n            - path:\n                type: PathPrefix\n                value: /\n          default:\n            backendRefs:\n              - kind: MeshServiceSubset\n                name: backend\n                tags:\n                  version: v2\n",
        )],
        t0,
    );
    let with_route = clusters();
    let added: Vec<&String> = with_route.difference(&before).collect();
    assert_eq!(added.len(), 1, "the route adds the v2 subset cluster: {added:?}");
    let subset = added[0].clone();

    g.apply_at(
        vec![Event::Delete {
            resource_type: ResourceType::MeshHTTPRoute,
            mesh: "default".into(),
            name: "to-v2".into(),
        }],
        t0 + Duration::from_secs(1),
    );
    assert!(clusters().contains(&subset), "kept while connections drain");
    assert_eq!(g.next_deadline(), Some(t0 + Duration::from_secs(1) + grace));

    let report = g.apply_at(vec![Event::Tick], t0 + Duration::from_secs(2));
    assert!(report.regenerated.is_empty(), "nothing is due yet");
    let report = g.apply_at(vec![Event::Tick], t0 + Duration::from_secs(1) + grace);
    assert_eq!(report.changed, nodes(&["web-1"]));
    assert_eq!(clusters(), before);
    assert_eq!(g.next_deadline(), None);
}

#[test]
fn an_endpoint_of_a_mesh_service_regenerates_the_proxies_that_reach_it() {
    // In an Exclusive mesh the client reaches `store` only as a MeshService,
    // whose endpoints follow its selector rather than a `kuma.io/service`.
    let snapshots = Arc::new(SnapshotCache::new());
    let mut g = Generator::new(snapshots, Arc::new(XdsMetrics::default()));
    let store = |state: &str| {
        format!(
            "type: Dataplane\nmesh: default\nname: store-1\nnetworking:\n  address: 192.168.0.50\n  inbound:\n    - port: 8080\n      state: {state}\n      tags:\n        kuma.io/service: store-backend\n        app: store\n"
        )
    };
    let connected = |name: &str| Event::Connected {
        node: format!("default.{name}"),
        metadata: ProxyMetadata::default(),
    };
    g.apply(vec![
        upsert("type: Mesh\nname: default\nmeshServices:\n  mode: Exclusive\n"),
        upsert("type: MeshService\nmesh: default\nname: store\nspec:\n  selector:\n    dataplaneTags:\n      app: store\n  ports:\n    - port: 80\n      targetPort: 8080\n"),
        upsert("type: Dataplane\nmesh: default\nname: client-1\nnetworking:\n  address: 192.168.0.51\n  inbound:\n    - port: 8080\n      tags:\n        kuma.io/service: client\n  transparentProxying:\n    redirectPortInbound: 15006\n    redirectPortOutbound: 15001\n"),
        upsert(&store("NotReady")),
        connected("client-1"),
        connected("store-1"),
    ]);
    let report = g.apply(vec![upsert(&store("Ready"))]);
    assert!(
        report.changed.contains("default.client-1"),
        "the client's endpoints of the MeshService changed: {:?}",
        report.changed
    );
}

/// A transparent proxy (it reaches every service, so its outbounds are the
/// mesh's shared layer).
fn transparent_proxy(name: &str, service: &str, address: &str, protocol: &str) -> String {
    format!(
        "type: Dataplane\nmesh: default\nname: {name}\nnetworking:\n  address: {address}\n  inbound:\n    - port: 8080\n      tags:\n        kuma.io/service: {service}\n        kuma.io/protocol: {protocol}\n  transparentProxying:\n    redirectPortInbound: 15006\n    redirectPortOutbound: 15001\n"
    )
}

/// A mesh of the connected proxies `dataplanes` (name, YAML), with `extra`
/// events in the same first batch.
fn mesh_of_connected(
    dataplanes: Vec<(String, String)>,
    extra: Vec<Event>,
) -> (Generator, Arc<SnapshotCache>, Arc<XdsMetrics>) {
    let snapshots = Arc::new(SnapshotCache::new());
    let metrics = Arc::new(XdsMetrics::default());
    let mut g = Generator::new(snapshots.clone(), metrics.clone());
    let mut events = vec![upsert("type: Mesh\nname: default")];
    for (name, yaml) in dataplanes {
        events.push(upsert(&yaml));
        events.push(Event::Connected {
            node: format!("default.{name}"),
            metadata: ProxyMetadata::default(),
        });
    }
    events.extend(extra);
    g.apply(events);
    (g, snapshots, metrics)
}

/// Six connected transparent proxies of three services, with `extra`
/// events in the same first batch.
fn transparent_mesh_with(extra: Vec<Event>) -> (Generator, Arc<SnapshotCache>, Arc<XdsMetrics>) {
    let mut dataplanes = Vec::new();
    for (i, (service, protocol)) in [("web", "http"), ("backend", "http"), ("db", "tcp")]
        .iter()
        .enumerate()
    {
        for n in 1..=2 {
            let name = format!("{service}-{n}");
            let address = format!("192.168.1.{}", 10 * i + n);
            let yaml = transparent_proxy(&name, service, &address, protocol);
            dataplanes.push((name, yaml));
        }
    }
    mesh_of_connected(dataplanes, extra)
}

/// A mesh built by `mesh_with` from a first batch of events.
type MeshWith = fn(Vec<Event>) -> (Generator, Arc<SnapshotCache>, Arc<XdsMetrics>);

/// Applies each step's events to the mesh `mesh_with` builds from no extra
/// events and checks whether every proxy kept its
/// own resources (none generated whole) as the step says, `check` on the
/// report, and that every proxy is as a fresh control plane given all the
/// events so far generates it.
fn apply_steps(
    steps: Vec<(&str, Vec<Event>, bool)>,
    mesh_with: MeshWith,
    check: impl Fn(&str, &BatchReport),
) {
    let (mut g, snapshots, metrics) = mesh_with(Vec::new());
    let mut applied = Vec::new();
    for (step, events, kept) in steps {
        applied.extend(events.iter().cloned());
        let generated_before = metrics.generations.get();
        let report = g.apply(events);
        check(step, &report);
        let generated = metrics.generations.get() - generated_before;
        if kept {
            assert_eq!(generated, 0, "{step}: no proxy generated whole");
        } else {
            assert!(generated > 0, "{step}: proxies generated whole");
        }
        let (_, fresh, _) = mesh_with(applied.clone());
        assert_same_configs(&snapshots, &fresh, step);
    }
}

/// A step's check: it changed some proxy's configuration.
fn some_proxy_changes(step: &str, report: &BatchReport) {
    assert!(!report.changed.is_empty(), "{step}: some proxy changes");
}

/// A transparent proxy that names what it reaches (every service when
/// `reach` is empty).
fn reaching_proxy(name: &str, service: &str, address: &str, reach: &[&str]) -> String {
    let mut yaml = transparent_proxy(name, service, address, "http");
    if !reach.is_empty() {
        yaml.push_str("    reachableServices:\n");
        for r in reach {
            yaml.push_str(&format!("      - {r}\n"));
        }
    }
    yaml
}

/// Two proxies each of web (reaching backend), backend (reaching db) and
/// db (reaching everything), connected, with `extra` in the first batch.
fn reaching_mesh_with(extra: Vec<Event>) -> (Generator, Arc<SnapshotCache>, Arc<XdsMetrics>) {
    let mut dataplanes = Vec::new();
    for (i, (service, reach)) in [("web", vec!["backend"]), ("backend", vec!["db"]), ("db", vec![])]
        .iter()
        .enumerate()
    {
        for n in 1..=2 {
            let name = format!("{service}-{n}");
            let yaml = reaching_proxy(&name, service, &format!("192.168.2.{}", 10 * i + n), reach);
            dataplanes.push((name, yaml));
        }
    }
    mesh_of_connected(dataplanes, extra)
}

#[test]
fn proxies_naming_what_they_reach_rest_on_a_layer_of_their_reach() {
    // Proxies with the same `reachableServices` share a layer of those
    // services' outbounds: endpoint and `to` policy changes replace only
    // the layer, and every proxy stays as if generated at once.
    let timeout = |target: &str| {
        format!(
            "type: MeshTimeout\nmesh: default\nname: timeout\nspec:\n  targetRef:\n    kind: Mesh\n  to:\n    - targetRef:\n{target}      default:\n        connectionTimeout: 4s\n"
        )
    };
    // (step, its events, whether every proxy keeps its own resources)
    let steps: Vec<(&str, Vec<Event>, bool)> = vec![
        (
            "a new backend endpoint",
            vec![upsert(&reaching_proxy(
                "backend-3",
                "backend",
                "192.168.2.99",
                &["db"],
            ))],
            true,
        ),
        (
            "a mesh-wide `to` timeout",
            vec![upsert(&timeout("        kind: Mesh\n"))],
            true,
        ),
        (
            "the timeout for db alone",
            vec![upsert(&timeout("        kind: MeshService\n        name: db\n"))],
            true,
        ),
        (
            "web-1 reaches db too",
            vec![upsert(&reaching_proxy(
                "web-1",
                "web",
                "192.168.2.1",
                &["backend", "db"],
            ))],
            false,
        ),
        (
            "a new db endpoint",
            vec![upsert(&reaching_proxy("db-3", "db", "192.168.2.98", &[]))],
            true,
        ),
    ];
    let (_, snapshots, _) = reaching_mesh_with(Vec::new());
    let web = snapshots.get("default.web-1").expect("web-1 configured");
    let has_cluster = |name: &str| web.get(XdsType::Cluster).resources.keys().any(|n| &**n == name);
    assert!(
        has_cluster("backend") && !has_cluster("db"),
        "web reaches backend only"
    );
    apply_steps(steps, reaching_mesh_with, some_proxy_changes);
}

#[test]
fn a_policy_change_replaces_only_the_layer_under_proxies_whose_own_resources_read_the_same() {
    // A proxy resting on the shared layer keeps its own resources when a
    // policy change leaves what they read of its policies as it was (a
    // mesh-wide `to` change): only its layer is replaced. After every step
    // each proxy must be as if everything had been generated at once.
    let timeout = |secs: u32| {
        format!(
            "type: MeshTimeout\nmesh: default\nname: mesh-wide\nspec:\n  targetRef:\n    kind: Mesh\n  to:\n    - targetRef:\n        kind: Mesh\n      default:\n        connectionTimeout: {secs}s\n"
        )
    };
    let retry = "type: MeshRetry\nmesh: default\nname: retry-backend\nspec:\n  targetRef:\n    kind: Mesh\n  to:\n    - targetRef:\n        kind: MeshService\n        name: backend\n      default:\n        http:\n          numRetries: 3\n";
    let inbound_timeout = "type: MeshTimeout\nmesh: default\nname: backend-inbound\nspec:\n  targetRef:\n    kind: MeshService\n    name: backend\n  from:\n    - targetRef:\n        kind: Mesh\n      default:\n        idleTimeout: 7s\n";
    // The mesh's first fault injection makes every proxy send its tags,
    // also those it does not select.
    let faults = "type: MeshFaultInjection\nmesh: default\nname: db-faults\nspec:\n  targetRef:\n    kind: MeshService\n    name: db\n  from:\n    - targetRef:\n        kind: Mesh\n      default:\n        http:\n          - abort:\n              httpStatus: 500\n              percentage: 50\n";
    let trace = "type: MeshTrace\nmesh: default\nname: trace\nspec:\n  targetRef:\n    kind: Mesh\n  default:\n    backends:\n      - type: Zipkin\n        zipkin:\n          url: http://zipkin.local:9411/api/v2/spans\n";
    let metric = |port: u32| {
        format!(
            "type: MeshMetric\nmesh: default\nname: metrics\nspec:\n  targetRef:\n    kind: Mesh\n  default:\n    backends:\n      - type: Prometheus\n        prometheus:\n          port: {port}\n          path: /metrics\n"
        )
    };
    let delete = |resource_type: ResourceType, name: &str| Event::Delete {
        resource_type,
        mesh: "default".into(),
        name: name.into(),
    };
    // (step, its events, whether every proxy keeps its own resources)
    let steps: Vec<(&str, Vec<Event>, bool)> = vec![
        ("a mesh-wide `to` timeout", vec![upsert(&timeout(3))], true),
        ("the timeout changed", vec![upsert(&timeout(4))], true),
        ("a retry towards one service", vec![upsert(retry)], true),
        (
            "the timeout gone",
            vec![delete(ResourceType::MeshTimeout, "mesh-wide")],
            true,
        ),
        ("an inbound timeout", vec![upsert(inbound_timeout)], false),
        (
            "an endpoint after it",
            vec![upsert(&transparent_proxy(
                "backend-3",
                "backend",
                "192.168.1.99",
                "http",
            ))],
            true,
        ),
        ("the timeout again", vec![upsert(&timeout(5))], true),
        ("a mesh-wide metric", vec![upsert(&metric(5670))], false),
        ("its port changed", vec![upsert(&metric(5671))], false),
        ("the timeout with the metric", vec![upsert(&timeout(6))], true),
        ("a fault injection for db alone", vec![upsert(faults)], false),
        ("a trace for every proxy", vec![upsert(trace)], false),
    ];
    apply_steps(steps, transparent_mesh_with, some_proxy_changes);
}

#[test]
fn a_moved_endpoint_replaces_only_the_layer_under_proxies_resting_on_one() {
    // Proxies whose outbounds are the mesh's shared layer keep their own
    // resources when only endpoints move, and have the layer replaced;
    // after every step each proxy must be as if everything had been
    // digested and generated at once.
    let backend_3 = |extra: &str| {
        format!(
            "{}{extra}",
            transparent_proxy("backend-3", "backend", "192.168.1.99", "http")
        )
    };
    let timeout = "type: MeshTimeout\nmesh: default\nname: to-backend\nspec:\n  targetRef:\n    kind: Mesh\n  to:\n    - targetRef:\n        kind: MeshService\n        name: backend\n      default:\n        idleTimeout: 21s\n";
    let delete = |name: &str| Event::Delete {
        resource_type: ResourceType::Dataplane,
        mesh: "default".into(),
        name: name.into(),
    };
    // (step, its events, whether every proxy keeps its own resources)
    let steps: Vec<(&str, Vec<Event>, bool)> = vec![
        ("a new endpoint", vec![upsert(&backend_3(""))], true),
        (
            "its labels",
            vec![upsert(&backend_3("labels:\n  team: b\n"))],
            true,
        ),
        (
            "protocols disagree",
            vec![upsert(&backend_3("").replace("protocol: http", "protocol: tcp"))],
            true,
        ),
        // A `to` policy leaves their own resources too (the next test).
        ("a policy", vec![upsert(timeout)], true),
        ("an endpoint after the policy", vec![upsert(&backend_3(""))], true),
        (
            "a proxy's own inbound and an endpoint",
            vec![
                upsert(&transparent_proxy("web-1", "web", "192.168.1.1", "tcp")),
                upsert(&backend_3("labels:\n  team: c\n")),
            ],
            false,
        ),
        (
            "a new service",
            vec![upsert(&transparent_proxy(
                "cache-1",
                "cache",
                "192.168.1.98",
                "tcp",
            ))],
            false,
        ),
        ("an endpoint gone", vec![delete("backend-3")], true),
    ];
    apply_steps(steps, transparent_mesh_with, |step, report| {
        assert_eq!(report.regenerated.len(), 6, "{step}: every proxy reaches backend");
    });
}
