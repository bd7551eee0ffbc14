//! What a fresh control plane creates: the `default` mesh, and for every
//! new mesh its token signing key and Kuma's default policies (timeouts,
//! circuit breaker, retries), unless turned off.

use kuma_crds::format::parse;
use kuma_crds::resource::{Meta, Resource, ResourceType, Spec};

use crate::config::Config;
use crate::store::{ResourceKey, Store, StoreError};
use crate::tokens::Tokens;

/// Kuma's default policies of a mesh, as Universal YAML.
fn default_policies(mesh: &str) -> Vec<String> {
    vec![
        format!(
            "type: MeshTimeout\nname: mesh-gateways-timeout-all-{mesh}\nmesh: {mesh}\nspec:\n  targetRef:\n    kind: Mesh\n    proxyTypes: [Gateway]\n  to:\n    - targetRef:\n        kind: Mesh\n      default:\n        idleTimeout: 1h\n        http:\n          streamIdleTimeout: 5s\n  from:\n    - targetRef:\n        kind: Mesh\n      default:\n        idleTimeout: 5m\n        http:\n          streamIdleTimeout: 5s\n          requestHeadersTimeout: 500ms\n"
        ),
        format!(
            "type: MeshTimeout\nname: mesh-timeout-all-{mesh}\nmesh: {mesh}\nspec:\n  targetRef:\n    kind: Mesh\n    proxyTypes: [Sidecar]\n  to:\n    - targetRef:\n        kind: Mesh\n      default:\n        connectionTimeout: 5s\n        idleTimeout: 1h\n        http:\n          requestTimeout: 15s\n          streamIdleTimeout: 30m\n  from:\n    - targetRef:\n        kind: Mesh\n      default:\n        connectionTimeout: 10s\n        idleTimeout: 2h\n        http:\n          requestTimeout: 0s\n          streamIdleTimeout: 1h\n          maxStreamDuration: 0s\n"
        ),
        format!(
            "type: MeshCircuitBreaker\nname: mesh-circuit-breaker-all-{mesh}\nmesh: {mesh}\nspec:\n  targetRef:\n    kind: Mesh\n  to:\n    - targetRef:\n        kind: Mesh\n      default:\n        connectionLimits:\n          maxConnections: 1024\n          maxPendingRequests: 1024\n          maxRetries: 3\n          maxRequests: 1024\n"
        ),
        format!(
            "type: MeshRetry\nname: mesh-retry-all-{mesh}\nmesh: {mesh}\nspec:\n  targetRef:\n    kind: Mesh\n  to:\n    - targetRef:\n        kind: Mesh\n      default:\n        tcp:\n          maxConnectAttempt: 5\n        http:\n          numRetries: 5\n          perTryTimeout: 16s\n          backOff:\n            baseInterval: 25ms\n            maxInterval: 250ms\n        grpc:\n          numRetries: 5\n          perTryTimeout: 16s\n          backOff:\n            baseInterval: 25ms\n            maxInterval: 250ms\n"
        ),
    ]
}

/// Creates `r` unless it exists (another control plane may be faster).
async fn create_if_absent(store: &Store, r: Resource) -> Result<bool, StoreError> {
    match store.create(r).await {
        Ok(_) => Ok(true),
        Err(StoreError::AlreadyExists(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The signing key and default policies of a new mesh (those the Mesh's
/// `skipCreatingInitialPolicies` does not exclude).
pub async fn ensure_mesh_resources(store: &Store, mesh: &str, config: &Config) {
    if !config.defaults.skip_default_policies {
        ensure_default_policies(store, mesh).await;
    }
    // Last: generating the key takes a moment, and tokens create it on
    // demand anyway.
    if let Err(e) = Tokens::new(store.clone()).signing_key(mesh).await {
        tracing::warn!(mesh, error = %e, "cannot create the dataplane token signing key");
    }
}

async fn ensure_default_policies(store: &Store, mesh: &str) {
    let skip: Vec<String> = match store.get(&ResourceKey::new(ResourceType::Mesh, "", mesh)).await {
        Ok(Resource {
            spec: Spec::Mesh(m), ..
        }) => m.skip_creating_initial_policies.clone().unwrap_or_default(),
        _ => Vec::new(),
    };
    for yaml in default_policies(mesh) {
        let Ok(mut policy) = parse(&yaml) else {
            tracing::error!(%yaml, "a default policy does not validate");
            continue;
        };
        let kind = policy.resource_type().name();
        if skip.iter().any(|s| s == "*" || s == kind) {
            continue;
        }
        crate::labels::compute(&mut policy);
        let name = policy.meta.name.clone();
        match create_if_absent(store, policy).await {
            Ok(true) => tracing::info!(mesh, %name, "default {kind} created"),
            Ok(false) => {}
            Err(e) => tracing::warn!(mesh, %name, error = %e, "cannot create a default policy"),
        }
    }
}

/// The `default` mesh (with its resources) unless turned off.
pub async fn ensure_default_mesh(store: &Store, config: &Config) -> Result<(), StoreError> {
    if config.defaults.skip_mesh_creation {
        return Ok(());
    }
    let mesh = Resource::new(
        Meta {
            name: "default".into(),
            ..Meta::default()
        },
        Spec::Mesh(Default::default()),
    );
    if create_if_absent(store, mesh).await? {
        tracing::info!("default Mesh created");
        ensure_mesh_resources(store, "default", config).await;
    }
    Ok(())
}

/// The CA secrets of every `builtin` backend of a mesh, generated when
/// missing (keys never leave the store).
pub async fn ensure_builtin_cas(store: &Store, mesh: &Resource) {
    let Spec::Mesh(spec) = &mesh.spec else { return };
    let name = mesh.meta.name.clone();
    for backend in spec.mtls.iter().flat_map(|m| m.backends.iter().flatten()) {
        if backend.backend_type != "builtin" {
            continue;
        }
        let (cert_name, key_name) = kuma_xds::mtls::builtin_secret_names(&name, &backend.name);
        let cert = store
            .get(&ResourceKey::new(ResourceType::Secret, &name, &cert_name))
            .await;
        let key = store
            .get(&ResourceKey::new(ResourceType::Secret, &name, &key_name))
            .await;
        match (&cert, &key) {
            (Ok(_), Ok(_)) => continue,
            // Unknown: never replace a CA on a guess.
            (Err(e), _) | (_, Err(e)) if !matches!(e, crate::store::StoreError::NotFound(_)) => {
                tracing::warn!(mesh = %name, backend = %backend.name, error = %e, "cannot check the builtin CA");
                continue;
            }
            // A half-written pair (its writer died in between, or a Secret
            // was deleted) is useless: both are written anew below.
            _ => {}
        }
        let validity = backend
            .conf
            .as_ref()
            .and_then(|c| c.pointer("/caCert/expiration"))
            .and_then(|e| e.as_str())
            .and_then(kuma_crds::mesh::parse_expiration)
            .unwrap_or(std::time::Duration::from_secs(10 * 365 * 24 * 3600));
        let ca = match kuma_xds::mtls::generate_ca(&name, &backend.name, validity) {
            Ok(ca) => ca,
            Err(e) => {
                tracing::error!(mesh = %name, backend = %backend.name, error = %e, "cannot generate the CA");
                continue;
            }
        };
        // The key first: proxies use the CA once its certificate exists, and
        // by then the matching key is there.
        for (secret, pem) in [(key_name, ca.key_pem), (cert_name, ca.cert_pem)] {
            let r = Resource::new(
                Meta {
                    name: secret.clone(),
                    mesh: Some(name.clone()),
                    ..Meta::default()
                },
                Spec::Secret(kuma_crds::secret::SecretSpec::from_bytes(pem.as_bytes())),
            );
            match store.upsert(r).await {
                Ok(_) => tracing::info!(mesh = %name, %secret, "builtin CA created"),
                Err(e) => {
                    tracing::warn!(mesh = %name, %secret, error = %e, "cannot store the CA");
                    break;
                }
            }
        }
    }
}

/// Keeps builtin CAs present for every mesh, as meshes are created or
/// changed. Leader only: two control planes generating at once would
/// store one CA's certificate with the other's key.
pub async fn run_ca_controller(store: Store) {
    let mut events = store.subscribe();
    if let Ok(meshes) = store.list(ResourceType::Mesh, None).await {
        for m in meshes {
            ensure_builtin_cas(&store, &m).await;
        }
    }
    loop {
        match events.recv().await {
            Ok(crate::store::StoreEvent::Upserted(r)) if r.resource_type() == ResourceType::Mesh => {
                ensure_builtin_cas(&store, &r).await;
            }
            Ok(crate::store::StoreEvent::Resync)
            | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                if let Ok(meshes) = store.list(ResourceType::Mesh, None).await {
                    for m in meshes {
                        ensure_builtin_cas(&store, &m).await;
                    }
                }
            }
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}
