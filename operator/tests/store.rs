//! Every store keeps the same promises — memory, PostgreSQL and the
//! Kubernetes API alike: optimistic concurrency, mesh ownership, cascading
//! deletes, and an announcement for every change. Versions are opaque (the
//! API server's resourceVersions are not 1, 2, …), and names are what the
//! store made of them (on Kubernetes a policy written without a namespace
//! lives in the system namespace: `t1.kuma-system`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kuma_crds::format::parse;
use kuma_crds::resource::ResourceType;
use kuma_operator::store::postgres::{PostgresStore, migrate_up};
use kuma_operator::store::{ResourceKey, Store, StoreError, StoreEvent};

fn timeout_policy(name: &str, idle: &str) -> kuma_crds::resource::Resource {
    parse(&format!(
        "type: MeshTimeout\nmesh: default\nname: {name}\nspec:\n  targetRef:\n    kind: Mesh\n  to:\n    - targetRef:\n        kind: Mesh\n      default:\n        idleTimeout: {idle}\n"
    ))
    .expect("valid policy")
}

/// Waits (bounded) for an announcement matching `want`.
async fn announced(
    events: &mut tokio::sync::broadcast::Receiver<StoreEvent>,
    want: impl Fn(&StoreEvent) -> bool,
) {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.recv().await {
                Ok(e) if want(&e) => return,
                Ok(_) => {}
                Err(e) => panic!("announcements ended: {e}"),
            }
        }
    })
    .await
    .expect("the change was announced");
}

/// The namespace a store gave a resource written without one.
fn store_namespace(r: &kuma_crds::resource::Resource) -> Option<String> {
    r.meta.namespace.clone()
}

async fn promises(store: Store) {
    let mut events = store.subscribe();
    let policy = timeout_policy("t1", "10s");
    assert!(matches!(store.create(policy.clone()).await, Err(StoreError::MeshNotFound(m)) if m == "default"));

    store
        .create(parse("type: Mesh\nname: default").unwrap())
        .await
        .expect("create mesh");
    let created = store.create(policy.clone()).await.expect("create policy");
    assert!(created.meta.version.is_some(), "a stored resource has a version");
    assert!(created.meta.creation_time.is_some());
    announced(
        &mut events,
        |e| matches!(e, StoreEvent::Upserted(r) if r.meta.name == "t1"),
    )
    .await;
    assert!(matches!(
        store.create(policy.clone()).await,
        Err(StoreError::AlreadyExists(_))
    ));

    // Two writers read version 1; the second update conflicts.
    let mut first = created.clone();
    first.spec = timeout_policy("t1", "20s").spec;
    let updated = store.update(first).await.expect("first update");
    assert!(updated.meta.version.is_some() && updated.meta.version != created.meta.version);
    let mut stale = created.clone();
    stale.spec = timeout_policy("t1", "30s").spec;
    assert!(matches!(
        store.update(stale).await,
        Err(StoreError::Conflict { .. })
    ));
    let key = ResourceKey::of(&created);
    assert_eq!(
        store.get(&key).await.unwrap().spec,
        timeout_policy("t1", "20s").spec,
        "the conflicting write changed nothing"
    );

    // An insight belongs to its Dataplane: none without it, gone with it.
    let insight = parse(
        "type: DataplaneInsight\nmesh: default\nname: web-1\nsubscriptions:\n  - id: s1\n    controlPlaneInstanceId: cp-1\n    connectTime: \"2026-11-24T10:00:00Z\"\n",
    )
    .expect("valid insight");
    let dataplane = parse("type: Dataplane\nmesh: default\nname: web-1\nnetworking:\n  address: 127.0.0.1\n  inbound:\n    - port: 8080\n      tags:\n        kuma.io/service: web\n")
        .expect("valid dataplane");
    let mut insight = insight;
    insight.meta.namespace = store_namespace(&created);
    let insight_key = ResourceKey::of(&insight);
    let dataplane_key = ResourceKey::new(ResourceType::Dataplane, "default", &insight_key.name);
    assert!(matches!(
        store.create(insight.clone()).await,
        Err(StoreError::NotFound(owner)) if owner == dataplane_key
    ));
    let dataplane = store.create(dataplane).await.expect("create dataplane");
    assert_eq!(ResourceKey::of(&dataplane), dataplane_key);
    store.create(insight).await.expect("create insight");
    assert_eq!(
        store
            .list(ResourceType::DataplaneInsight, None)
            .await
            .unwrap()
            .len(),
        1
    );
    store.delete(&dataplane_key).await.expect("delete dataplane");
    assert!(matches!(
        store.get(&insight_key).await,
        Err(StoreError::NotFound(_))
    ));

    // Deleting the mesh deletes what is in it.
    let second = store
        .create(timeout_policy("t2", "5s"))
        .await
        .expect("second policy");
    let second_key = ResourceKey::of(&second);
    assert_eq!(
        store
            .list(ResourceType::MeshTimeout, Some("default"))
            .await
            .unwrap()
            .len(),
        2
    );
    store
        .delete(&ResourceKey::new(ResourceType::Mesh, "", "default"))
        .await
        .expect("delete mesh");
    assert!(
        store
            .list(ResourceType::MeshTimeout, None)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(store.get(&key).await, Err(StoreError::NotFound(_))));
    announced(
        &mut events,
        |e| matches!(e, StoreEvent::Deleted(k) if *k == second_key),
    )
    .await;
    assert!(matches!(store.delete(&key).await, Err(StoreError::NotFound(_))));
}

#[tokio::test]
async fn memory_store_keeps_its_promises() {
    promises(Store::memory()).await;
}

#[tokio::test]
async fn postgres_store_keeps_its_promises() {
    let pg = kuma_e2e::postgres::Postgres::start().await;
    let config = kuma_operator::config::PostgresConfig {
        port: pg.port,
        ..Default::default()
    };
    assert!(matches!(
        PostgresStore::open(config.clone()).await,
        Err(kuma_operator::store::postgres::SchemaError::NotMigrated)
    ));
    assert_eq!(migrate_up(&config).await.expect("migrate"), None);
    assert_eq!(
        migrate_up(&config).await.expect("migrate again"),
        Some(kuma_operator::store::postgres::SCHEMA_VERSION)
    );
    let store = Store::new(PostgresStore::open(config).await.expect("open"));
    promises(store).await;
}

#[tokio::test]
async fn postgres_store_recovers_from_a_database_restart() {
    let mut pg = kuma_e2e::postgres::Postgres::start().await;
    let config = kuma_operator::config::PostgresConfig {
        port: pg.port,
        ..Default::default()
    };
    migrate_up(&config).await.expect("migrate");
    let watcher = Store::new(PostgresStore::open(config.clone()).await.expect("open"));
    let mut events = watcher.subscribe();
    watcher
        .create(parse("type: Mesh\nname: default").unwrap())
        .await
        .expect("create mesh");
    // Listening has started (a resync announces it, or the write itself).
    announced(&mut events, |e| {
        matches!(e, StoreEvent::Resync) || matches!(e, StoreEvent::Upserted(r) if r.meta.name == "default")
    })
    .await;

    // While the database is away the store says so rather than answering
    // from nothing.
    pg.stop();
    assert!(matches!(
        watcher.list(ResourceType::Mesh, None).await,
        Err(StoreError::Unavailable(_))
    ));
    pg.restart().await;

    // Another control plane writes once the database is back; the watcher
    // hears of it, by notification or by the resync after reconnecting.
    let writer = Store::new(PostgresStore::open(config).await.expect("open again"));
    writer
        .create(timeout_policy("after-restart", "5s"))
        .await
        .expect("write after the restart");
    let key = ResourceKey::new(ResourceType::MeshTimeout, "default", "after-restart");
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match events.recv().await {
                Ok(StoreEvent::Upserted(r)) if r.meta.name == "after-restart" => return,
                Ok(StoreEvent::Resync) if watcher.get(&key).await.is_ok() => return,
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("announcements ended: {e}"),
            }
        }
    })
    .await
    .expect("the watcher learned of the write made after the restart");
    assert!(watcher.get(&key).await.is_ok(), "the watcher reads again");
}

/// A CA and a server certificate for `host` signed by it, as PEM.
fn server_certificate(host: &str) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).expect("CA");
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec![host.to_string()])
        .expect("params")
        .signed_by(&key, &issuer)
        .expect("certificate");
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

#[tokio::test]
async fn postgres_tls_modes_are_kumas() {
    use kuma_operator::config::{PostgresConfig, PostgresTls, PostgresTlsMode};
    let pg = kuma_e2e::postgres::Postgres::start().await;
    // The certificate names another host than the one connected to.
    let (ca, cert, key) = server_certificate("db.internal");
    let (other_ca, _, _) = server_certificate("db.internal");
    pg.require_tls(&cert, &key).await;
    let dir = kuma_e2e::temp_dir("pg-tls");
    let (ca_path, other_ca_path) = (dir.join("ca.crt"), dir.join("other-ca.crt"));
    std::fs::write(&ca_path, &ca).unwrap();
    std::fs::write(&other_ca_path, &other_ca).unwrap();
    let config = |mode, ca: &std::path::Path| PostgresConfig {
        port: pg.port,
        connection_timeout: 5,
        tls: PostgresTls {
            mode,
            ca_path: ca.display().to_string(),
            ..Default::default()
        },
        ..Default::default()
    };
    let none = std::path::Path::new("");

    // Plaintext is refused by the server; TLS without checks works.
    let refused = migrate_up(&config(PostgresTlsMode::Disable, none))
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("no encryption"), "{refused}");
    migrate_up(&config(PostgresTlsMode::VerifyNone, none))
        .await
        .expect("verifyNone connects");
    // verifyCa checks the chain only; verifyFull the host name too.
    PostgresStore::open(config(PostgresTlsMode::VerifyCa, &ca_path))
        .await
        .expect("verifyCa accepts a certificate of the CA for another name");
    let wrong_name = PostgresStore::open(config(PostgresTlsMode::VerifyFull, &ca_path))
        .await
        .unwrap_err()
        .to_string();
    assert!(wrong_name.contains("not valid for name"), "{wrong_name}");
    let wrong_ca = PostgresStore::open(config(PostgresTlsMode::VerifyCa, &other_ca_path))
        .await
        .unwrap_err()
        .to_string();
    assert!(wrong_ca.contains("invalid peer certificate"), "{wrong_ca}");
    let no_ca = PostgresStore::open(config(PostgresTlsMode::VerifyFull, none))
        .await
        .unwrap_err()
        .to_string();
    assert!(no_ca.contains("KUMA_STORE_POSTGRES_TLS_CA_PATH"), "{no_ca}");
}

/// A client of the cluster `kubeconfig` names.
async fn kube_client(kubeconfig: &std::path::Path) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("client config");
    kube::Client::try_from(config).expect("client")
}

/// A cluster with the CRDs and the system namespace.
async fn kuma_cluster(options: kuma_e2e::k8s::Options) -> kuma_e2e::k8s::Cluster {
    let cluster = kuma_e2e::k8s::Cluster::start(options).await;
    cluster.install_crds();
    cluster.create_namespace("kuma-system", &[]).await;
    cluster
}

#[tokio::test]
async fn kubernetes_store_keeps_its_promises() {
    use kuma_operator::store::kubernetes::KubernetesStore;
    let cluster = kuma_cluster(Default::default()).await;
    let client = kube_client(&cluster.kubeconfig).await;
    let store = Store::new(KubernetesStore::new(client, "kuma-system").await);
    promises(store).await;
}

/// A watch broken by an API server restart: what changed while the API
/// server was down (written through a second one) reaches a reflector
/// exactly once — the update, the deletion, the creation — and nothing
/// that did not change is handed out again.
#[tokio::test]
async fn kubernetes_reflector_learns_what_changed_while_the_api_server_was_down() {
    use kuma_operator::reflector::{Change, Reflector};
    use kuma_operator::store::kubernetes::KubernetesStore;
    let mut cluster = kuma_cluster(kuma_e2e::k8s::Options {
        second_apiserver: true,
        ..Default::default()
    })
    .await;
    let store = Store::new(KubernetesStore::new(kube_client(&cluster.kubeconfig).await, "kuma-system").await);
    let other = Store::new(
        KubernetesStore::new(kube_client(&cluster.second_kubeconfig()).await, "kuma-system").await,
    );
    other
        .create(parse("type: Mesh\nname: default").unwrap())
        .await
        .expect("mesh");
    let mut created = BTreeMap::new();
    for name in ["a", "b", "c"] {
        let r = other.create(timeout_policy(name, "10s")).await.expect("policy");
        created.insert(name, r);
    }
    let mut reflector = Reflector::new(store.clone(), [ResourceType::Mesh, ResourceType::MeshTimeout]);
    let first = tokio::time::timeout(Duration::from_secs(30), reflector.next())
        .await
        .expect("the first listing")
        .expect("a batch");
    assert_eq!(first.len(), 4, "the mesh and three policies: {first:?}");

    cluster.stop_apiserver();
    let mut a = created["a"].clone();
    a.spec = timeout_policy("a", "20s").spec;
    let a = other
        .update(a)
        .await
        .expect("update while the first API server is down");
    other
        .delete(&ResourceKey::of(&created["b"]))
        .await
        .expect("delete while down");
    let d = other
        .create(timeout_policy("d", "5s"))
        .await
        .expect("create while down");
    let restarted = std::time::Instant::now();
    cluster.start_apiserver_again().await;

    let expected: BTreeSet<ResourceKey> = [
        ResourceKey::of(&a),
        ResourceKey::of(&created["b"]),
        ResourceKey::of(&d),
    ]
    .into_iter()
    .collect();
    let mut seen: Vec<Change> = Vec::new();
    tokio::time::timeout(Duration::from_secs(90), async {
        while !expected.iter().all(|k| seen.iter().any(|c| c.key() == *k)) {
            seen.extend(reflector.next().await.expect("a batch"));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the changes made while the API server was down arrived; seen {seen:?}"));
    eprintln!(
        "changes made while down arrived {:?} after the restart began",
        restarted.elapsed()
    );
    // Nothing else is pending: no duplicate, nothing unchanged handed out.
    if let Ok(Some(more)) = tokio::time::timeout(Duration::from_secs(3), reflector.next()).await {
        seen.extend(more);
    }
    let keys: Vec<ResourceKey> = seen.iter().map(Change::key).collect();
    assert_eq!(keys.len(), 3, "each change exactly once: {seen:?}");
    for change in &seen {
        match change {
            Change::Applied(r) if ResourceKey::of(r) == ResourceKey::of(&a) => {
                assert_eq!(r.spec, a.spec, "the update made while down")
            }
            Change::Applied(r) => assert_eq!(ResourceKey::of(r), ResourceKey::of(&d)),
            Change::Deleted(k) => assert_eq!(*k, ResourceKey::of(&created["b"])),
        }
    }
}
