//! Builtin CAs: generated once per backend, kept when complete, and
//! regenerated as a pair when only half of one is stored (so a certificate
//! is never served with another CA's key).

use std::collections::BTreeMap;

use kuma_crds::format::parse;
use kuma_crds::resource::{ResourceType, Spec};
use kuma_operator::defaults::ensure_builtin_cas;
use kuma_operator::store::{ResourceKey, Store};

const MESH: &str = "type: Mesh\nname: default\nmtls:\n  enabledBackend: ca-1\n  backends:\n    - name: ca-1\n      type: builtin\n";

async fn secrets(store: &Store) -> BTreeMap<String, Vec<u8>> {
    store
        .list(ResourceType::Secret, Some("default"))
        .await
        .expect("list")
        .into_iter()
        .filter_map(|r| match &r.spec {
            Spec::Secret(s) => Some((r.meta.name.clone(), s.bytes())),
            _ => None,
        })
        .collect()
}

/// Whether the stored pair makes a usable CA for the mesh.
fn usable(mesh: &kuma_crds::resource::Resource, secrets: &BTreeMap<String, Vec<u8>>) -> bool {
    let Spec::Mesh(spec) = &mesh.spec else {
        return false;
    };
    matches!(kuma_xds::mtls::resolve("default", spec, secrets), Ok(Some(_)))
}

#[tokio::test]
async fn a_half_written_ca_is_replaced_as_a_pair() {
    let store = Store::memory();
    let mesh = store.create(parse(MESH).unwrap()).await.expect("mesh");
    let (cert, key) = kuma_xds::mtls::builtin_secret_names("default", "ca-1");

    ensure_builtin_cas(&store, &mesh).await;
    let first = secrets(&store).await;
    assert!(first.contains_key(&cert) && first.contains_key(&key));
    assert!(usable(&mesh, &first));

    // Complete: left alone.
    ensure_builtin_cas(&store, &mesh).await;
    assert_eq!(secrets(&store).await, first);

    // The key is lost: a new pair, not the old certificate with a new key.
    store
        .delete(&ResourceKey::new(ResourceType::Secret, "default", &key))
        .await
        .expect("delete key");
    ensure_builtin_cas(&store, &mesh).await;
    let second = secrets(&store).await;
    assert_ne!(second[&cert], first[&cert]);
    assert!(usable(&mesh, &second), "the new certificate matches the new key");
}
