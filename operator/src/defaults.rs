//! What a fresh control plane creates: the `default` mesh, and for every
//! new mesh — however it was created — its token signing key and Kuma's
//! default policies (timeouts, circuit breaker, retries), unless turned
//! off, and the CAs of its builtin mTLS backends. Both follow Meshes
//! through a [`Reflector`] on the leader.

use kuma_crds::admission::Context;
use kuma_crds::format::parse;
use kuma_crds::resource::{Meta, Resource, ResourceType, Spec};

use crate::config::Config;
use crate::reflector::{Change, Reflector};
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

/// The annotation marking a Mesh whose default resources were created
/// (Kuma's name): they are created once, so a default a user deleted stays
/// deleted, across restarts and leader changes.
pub const DEFAULTS_GENERATED: &str = "k8s.kuma.io/mesh-defaults-generated";

/// Creates `r` unless it exists (another control plane may be faster).
async fn create_if_absent(store: &Store, r: Resource) -> Result<bool, StoreError> {
    match store.create(r).await {
        Ok(_) => Ok(true),
        Err(StoreError::AlreadyExists(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The signing key and default policies of a new mesh (those the Mesh's
/// `skipCreatingInitialPolicies` does not exclude). Errors are returned so
/// the controller tries again rather than marking the mesh done.
pub async fn ensure_mesh_resources(
    store: &Store,
    mesh: &Resource,
    config: &Config,
    ctx: &Context,
) -> Result<(), StoreError> {
    let name = mesh.meta.name.as_str();
    if !config.defaults.skip_default_policies {
        let skip: Vec<String> = match &mesh.spec {
            Spec::Mesh(m) => m.skip_creating_initial_policies.clone().unwrap_or_default(),
            _ => Vec::new(),
        };
        for yaml in default_policies(name) {
            let Ok(policy) = parse(&yaml) else {
                tracing::error!(%yaml, "a default policy does not validate");
                continue;
            };
            let kind = policy.resource_type().name();
            if skip.iter().any(|s| s == "*" || s == kind) {
                continue;
            }
            let policy = kuma_crds::admission::computed(ctx, policy);
            let policy_name = policy.meta.core_name();
            if create_if_absent(store, policy).await? {
                tracing::info!(mesh = name, name = %policy_name, "default {kind} created");
            }
        }
    }
    Tokens::new(store.clone())
        .signing_key(name)
        .await
        .map_err(|e| match e {
            crate::tokens::TokenError::Store(e) => e,
            e => StoreError::Unavailable(e.to_string()),
        })?;
    Ok(())
}

/// Creates the default resources of every Mesh that appears without them
/// — created through the API, by kubectl, or by [`ensure_default_mesh`] —
/// and marks it. Leader only.
pub async fn run_mesh_defaults(store: Store, config: Config, ctx: Context) {
    let mut meshes = Reflector::new(store.clone(), [ResourceType::Mesh]);
    while let Some(changes) = meshes.next().await {
        for change in changes {
            let Change::Applied(mesh) = change else { continue };
            if mesh.meta.annotations.contains_key(DEFAULTS_GENERATED) {
                continue;
            }
            let mut delay = std::time::Duration::from_millis(200);
            loop {
                match mark_defaults(&store, &mesh, &config, &ctx).await {
                    Ok(()) => break,
                    // Gone meanwhile, or changed: a later change brings it back.
                    Err(StoreError::NotFound(_) | StoreError::Conflict { .. }) => break,
                    Err(e) => {
                        tracing::warn!(mesh = %mesh.meta.name, error = %e, "cannot create the mesh defaults yet");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(std::time::Duration::from_secs(5));
                    }
                }
            }
        }
    }
}

async fn mark_defaults(
    store: &Store,
    mesh: &Resource,
    config: &Config,
    ctx: &Context,
) -> Result<(), StoreError> {
    ensure_mesh_resources(store, mesh, config, ctx).await?;
    let mut marked = store.get(&ResourceKey::of(mesh)).await?;
    if marked.meta.annotations.contains_key(DEFAULTS_GENERATED) {
        return Ok(());
    }
    marked
        .meta
        .annotations
        .insert(DEFAULTS_GENERATED.into(), "true".into());
    store.update(marked).await.map(|_| ())
}

/// The `default` mesh unless turned off; its defaults follow from
/// [`run_mesh_defaults`].
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
    let mut meshes = Reflector::new(store.clone(), [ResourceType::Mesh]);
    while let Some(changes) = meshes.next().await {
        for change in changes {
            if let Change::Applied(mesh) = change {
                ensure_builtin_cas(&store, &mesh).await;
            }
        }
    }
}
