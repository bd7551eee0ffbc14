//! The Kubernetes API as a store: every kuma.io kind as its CRD object (Mesh
//! cluster-scoped, the rest namespaced), Secrets and GlobalSecrets as `v1`
//! Secrets of type `system.kuma.io/secret` / `system.kuma.io/global-secret`
//! in the system namespace.
//!
//! - Names: a namespaced object's core name is `<name>.<namespace>` (as in
//!   Kuma); a mesh-scoped resource written without a namespace goes to the
//!   system namespace, where policies apply mesh-wide. Secrets keep their
//!   plain name.
//! - The mesh of an object is its `kuma.io/mesh` label (a Dataplane's and
//!   an insight's top-level `mesh`), as the Kubernetes form says.
//! - Versions are `resourceVersion`s: an update replaces the object only if
//!   it is still at the version it was read at (else a conflict).
//! - Ownership: mesh-scoped objects carry an owner reference to their Mesh
//!   and an insight one to its Dataplane, so the garbage collector cleans up
//!   behind kubectl too; deletes through the store remove what an object
//!   owns first, so the promise "deleting a mesh deletes what is in it"
//!   holds when the call returns.
//! - Announcements come from one watch per kind (kube-runtime's watcher,
//!   list then watch, reconnecting with backoff); every completed
//!   (re-)listing is announced as a resync, so a watch broken by an API
//!   server restart turns into the difference for every reader.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use kuma_crds::format::{parse_value, to_kubernetes};
use kuma_crds::resource::{MESH_LABEL, Resource, ResourceType, Scope};
use kuma_crds::secret::{K8S_GLOBAL_SECRET_TYPE, K8S_SECRET_TYPE};
use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::{ResourceKey, ResourceStore, StoreError, StoreEvent, StoreResult};

/// The kuma.io API group and version of every CRD.
const GROUP: &str = "kuma.io";
const VERSION: &str = "v1alpha1";

/// The Kubernetes store.
pub struct KubernetesStore {
    client: kube::Client,
    system_namespace: String,
    /// Kind → (API resource, cluster-scoped).
    resources: BTreeMap<ResourceType, ApiResource>,
    events: broadcast::Sender<StoreEvent>,
    watches: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for KubernetesStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesStore")
            .field("system_namespace", &self.system_namespace)
            .finish()
    }
}

impl Drop for KubernetesStore {
    fn drop(&mut self) {
        for w in &self.watches {
            w.abort();
        }
    }
}

/// The API resource of every kind, from the generated CRDs (their plural
/// names are the URL segments). Computed once: generating the CRDs builds
/// every schema, which the webhooks and controllers would otherwise pay
/// on every request (seconds of a debug build's CPU under load).
fn api_resources() -> &'static BTreeMap<ResourceType, ApiResource> {
    static RESOURCES: std::sync::OnceLock<BTreeMap<ResourceType, ApiResource>> = std::sync::OnceLock::new();
    RESOURCES.get_or_init(generate_api_resources)
}

fn generate_api_resources() -> BTreeMap<ResourceType, ApiResource> {
    let plurals: BTreeMap<String, String> = kuma_crds::crd::all_crds()
        .into_iter()
        .map(|crd| (crd.spec.names.kind, crd.spec.names.plural))
        .collect();
    let mut out = BTreeMap::new();
    for t in ResourceType::ALL.iter().copied() {
        let resource = if t.descriptor().has_crd {
            let Some(plural) = plurals.get(t.name()) else {
                continue;
            };
            ApiResource {
                group: GROUP.into(),
                version: VERSION.into(),
                api_version: format!("{GROUP}/{VERSION}"),
                kind: t.name().into(),
                plural: plural.clone(),
            }
        } else {
            ApiResource {
                group: String::new(),
                version: "v1".into(),
                api_version: "v1".into(),
                kind: "Secret".into(),
                plural: "secrets".into(),
            }
        };
        out.insert(t, resource);
    }
    out
}

/// The API resource of kind `t`.
pub fn api_resource(t: ResourceType) -> ApiResource {
    api_resources()
        .get(&t)
        .cloned()
        .unwrap_or_else(|| ApiResource::erase::<k8s_openapi::api::core::v1::Secret>(&()))
}

/// The Secret type of a secret kind.
fn secret_type(t: ResourceType) -> Option<&'static str> {
    match t {
        ResourceType::Secret => Some(K8S_SECRET_TYPE),
        ResourceType::GlobalSecret => Some(K8S_GLOBAL_SECRET_TYPE),
        _ => None,
    }
}

/// Where an object of kind `t` with core name `name` lives.
enum Location {
    Cluster(String),
    Namespaced { namespace: String, name: String },
}

fn unavailable(e: kube::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// The API server's status code of an error, if it answered.
fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        e => e.to_string(),
    }
}

impl KubernetesStore {
    /// A store on the cluster `client` talks to. It starts watching every
    /// kind and returns once each watch has listed (bounded: if the API
    /// server cannot be reached the watches keep trying and announce a
    /// resync when they do), so no change after this returns is missed.
    pub async fn new(client: kube::Client, system_namespace: &str) -> Arc<Self> {
        let (events, _) = broadcast::channel(16_384);
        let mut store = KubernetesStore {
            client,
            system_namespace: system_namespace.to_string(),
            resources: api_resources().clone(),
            events,
            watches: Vec::new(),
        };
        let kinds: Vec<ResourceType> = ResourceType::ALL
            .iter()
            .copied()
            .filter(|t| !t.is_read_only())
            .collect();
        let (listed_tx, mut listed) = tokio::sync::mpsc::channel(kinds.len());
        store.watches = kinds
            .iter()
            .map(|t| {
                tokio::spawn(watch(
                    store.api_all(*t, None),
                    *t,
                    store.events.clone(),
                    listed_tx.clone(),
                ))
            })
            .collect();
        drop(listed_tx);
        let all_listed = async {
            for _ in 0..kinds.len() {
                if listed.recv().await.is_none() {
                    return;
                }
            }
        };
        if tokio::time::timeout(std::time::Duration::from_secs(30), all_listed)
            .await
            .is_err()
        {
            tracing::warn!("the Kubernetes watches have not listed yet; they keep trying");
        }
        Arc::new(store)
    }

    /// The system namespace.
    pub fn system_namespace(&self) -> &str {
        &self.system_namespace
    }

    fn resource(&self, t: ResourceType) -> &ApiResource {
        // Every kind has an entry (api_resources covers ResourceType::ALL;
        // the CRDs are generated from the same table).
        &self.resources[&t]
    }

    fn cluster_scoped(t: ResourceType) -> bool {
        t.descriptor().scope == Scope::Global && t.descriptor().has_crd
    }

    /// An API over every namespace (or the system namespace for secrets),
    /// with the secret type as field selector for secret kinds.
    fn api_all(&self, t: ResourceType, _mesh: Option<&str>) -> (Api<DynamicObject>, ListParams) {
        let resource = self.resource(t);
        match secret_type(t) {
            Some(st) => (
                Api::namespaced_with(self.client.clone(), &self.system_namespace, resource),
                ListParams::default().fields(&format!("type={st}")),
            ),
            None => (
                Api::all_with(self.client.clone(), resource),
                ListParams::default(),
            ),
        }
    }

    fn api_at(&self, t: ResourceType, location: &Location) -> Api<DynamicObject> {
        let resource = self.resource(t);
        match location {
            Location::Cluster(_) => Api::all_with(self.client.clone(), resource),
            Location::Namespaced { namespace, .. } => {
                Api::namespaced_with(self.client.clone(), namespace, resource)
            }
        }
    }

    /// Where the object with `key` lives; `None` for a namespaced kind
    /// whose core name has no namespace (no such object can exist).
    fn locate(&self, key: &ResourceKey) -> Option<Location> {
        let t = key.resource_type;
        if Self::cluster_scoped(t) {
            return Some(Location::Cluster(key.name.clone()));
        }
        if secret_type(t).is_some() {
            return Some(Location::Namespaced {
                namespace: self.system_namespace.clone(),
                name: key.name.clone(),
            });
        }
        // Namespaces are DNS labels (no dots), names may have dots.
        let (name, namespace) = key.name.rsplit_once('.')?;
        Some(Location::Namespaced {
            namespace: namespace.into(),
            name: name.into(),
        })
    }

    fn location_name(location: &Location) -> &str {
        match location {
            Location::Cluster(n) => n,
            Location::Namespaced { name, .. } => name,
        }
    }

    /// The raw object with `key`, if it is what the key says (its mesh and,
    /// for secrets, its type).
    async fn get_object(&self, key: &ResourceKey) -> StoreResult<DynamicObject> {
        let not_found = || StoreError::NotFound(key.clone());
        let location = self.locate(key).ok_or_else(not_found)?;
        let api = self.api_at(key.resource_type, &location);
        let object = api
            .get_opt(Self::location_name(&location))
            .await
            .map_err(unavailable)?
            .ok_or_else(not_found)?;
        let matches = key_of(key.resource_type, &object).is_some_and(|k| k == *key);
        if !matches {
            return Err(not_found());
        }
        Ok(object)
    }

    async fn create_now(&self, mut r: Resource) -> StoreResult<Resource> {
        let t = r.resource_type();
        if t.descriptor().scope == Scope::Mesh && r.meta.namespace.is_none() && t.descriptor().has_crd {
            r.meta.namespace = Some(self.system_namespace.clone());
        }
        let key = ResourceKey::of(&r);
        let mut owners = Vec::new();
        if t.descriptor().scope == Scope::Mesh {
            let mesh_key = ResourceKey::new(ResourceType::Mesh, "", &key.mesh);
            let mesh = match self.get_object(&mesh_key).await {
                Ok(m) => m,
                Err(StoreError::NotFound(_)) => return Err(StoreError::MeshNotFound(key.mesh.clone())),
                Err(e) => return Err(e),
            };
            if let Some(owner_key) = key.owner() {
                let owner = self.get_object(&owner_key).await?;
                owners.push(owner_reference(self.resource(owner_key.resource_type), &owner));
            } else if t.descriptor().has_crd {
                owners.push(owner_reference(self.resource(ResourceType::Mesh), &mesh));
            }
        }
        let location = self
            .locate(&key)
            .ok_or_else(|| StoreError::Refused(format!("{key}: a namespaced name is <name>.<namespace>")))?;
        let mut body = to_kubernetes(&r, &self.system_namespace);
        let status = body.get("status").cloned();
        if let Some(md) = body.get_mut("metadata").and_then(Value::as_object_mut) {
            md.remove("resourceVersion");
            if !owners.is_empty() {
                md.insert("ownerReferences".into(), Value::Array(owners));
            }
        }
        let object: DynamicObject = serde_json::from_value(body)
            .map_err(|e| StoreError::Refused(format!("cannot encode {key}: {e}")))?;
        let api = self.api_at(t, &location);
        let created = match api.create(&PostParams::default(), &object).await {
            Ok(o) => o,
            Err(e) if status_code(&e) == Some(409) => return Err(StoreError::AlreadyExists(key)),
            Err(e) => return Err(write_error(e)),
        };
        let created = self.write_status(&api, created, status.as_ref()).await?;
        self.resource_of(t, &created)
    }

    /// Writes the status (MeshService's, an insight's content) through the
    /// status subresource: the object's own writes ignore it.
    async fn write_status(
        &self,
        api: &Api<DynamicObject>,
        mut object: DynamicObject,
        status: Option<&Value>,
    ) -> StoreResult<DynamicObject> {
        let Some(status) = status else {
            return Ok(object);
        };
        if object.data.get("status") == Some(status) {
            return Ok(object);
        }
        object.data["status"] = status.clone();
        let name = object.metadata.name.clone().unwrap_or_default();
        api.replace_status(&name, &PostParams::default(), &object)
            .await
            .map_err(write_error)
    }

    async fn update_now(&self, r: Resource) -> StoreResult<Resource> {
        let t = r.resource_type();
        let key = ResourceKey::of(&r);
        let expected = r.meta.version.clone().unwrap_or_default();
        let current = self.get_object(&key).await?;
        if current.metadata.resource_version.as_deref() != Some(expected.as_str()) {
            return Err(StoreError::Conflict { key, expected });
        }
        // The stored object with the resource's content: what Kubernetes
        // keeps beside it (uid, owner references, finalizers) stays.
        let written = to_kubernetes(&r, &self.system_namespace);
        let status = written.get("status").cloned();
        let mut object = current;
        object.metadata.labels = string_map(written.pointer("/metadata/labels"));
        object.metadata.annotations = string_map(written.pointer("/metadata/annotations"));
        object.metadata.resource_version = Some(expected.clone());
        object.metadata.managed_fields = None;
        if let Value::Object(fields) = written {
            for (k, v) in fields {
                if !matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status") {
                    object.data[k] = v;
                }
            }
        }
        let location = self
            .locate(&key)
            .ok_or_else(|| StoreError::NotFound(key.clone()))?;
        let api = self.api_at(t, &location);
        let name = Self::location_name(&location).to_string();
        let replaced = match api.replace(&name, &PostParams::default(), &object).await {
            Ok(o) => o,
            Err(e) if status_code(&e) == Some(409) => return Err(StoreError::Conflict { key, expected }),
            Err(e) if status_code(&e) == Some(404) => return Err(StoreError::NotFound(key)),
            Err(e) => return Err(write_error(e)),
        };
        let replaced = self.write_status(&api, replaced, status.as_ref()).await?;
        self.resource_of(t, &replaced)
    }

    async fn delete_now(&self, key: &ResourceKey) -> StoreResult<()> {
        // What it owns first, so nothing outlives it even for a moment.
        if key.resource_type == ResourceType::Mesh {
            self.get_object(key).await?;
            for t in ResourceType::ALL
                .iter()
                .copied()
                .filter(|t| t.descriptor().scope == Scope::Mesh)
            {
                for r in self.list_now(t, Some(&key.name)).await? {
                    match self.delete_one(&ResourceKey::of(&r)).await {
                        Ok(()) | Err(StoreError::NotFound(_)) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        if let Some(owned) = ResourceType::ALL
            .iter()
            .copied()
            .find(|t| t.owner() == Some(key.resource_type))
        {
            match self
                .delete_one(&ResourceKey::new(owned, &key.mesh, &key.name))
                .await
            {
                Ok(()) | Err(StoreError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        self.delete_one(key).await
    }

    async fn delete_one(&self, key: &ResourceKey) -> StoreResult<()> {
        // Checks the object is the key's (mesh, secret type) first.
        self.get_object(key).await?;
        let location = self
            .locate(key)
            .ok_or_else(|| StoreError::NotFound(key.clone()))?;
        let api = self.api_at(key.resource_type, &location);
        match api
            .delete(Self::location_name(&location), &DeleteParams::background())
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if status_code(&e) == Some(404) => Err(StoreError::NotFound(key.clone())),
            Err(e) => Err(write_error(e)),
        }
    }

    async fn list_now(&self, t: ResourceType, mesh: Option<&str>) -> StoreResult<Vec<Resource>> {
        let (api, params) = self.api_all(t, mesh);
        let objects = api.list(&params).await.map_err(unavailable)?;
        let mut out: Vec<Resource> = objects
            .items
            .iter()
            .filter_map(|o| self.resource_of(t, o).ok())
            .filter(|r| mesh.is_none_or(|m| r.meta.mesh.as_deref() == Some(m)))
            .collect();
        out.sort_by(|a, b| {
            (a.meta.mesh.as_deref(), a.meta.core_name()).cmp(&(b.meta.mesh.as_deref(), b.meta.core_name()))
        });
        Ok(out)
    }

    /// The resource an object holds; objects that do not validate (written
    /// around the admission webhook) are skipped with a warning, as the
    /// PostgreSQL store skips such rows.
    fn resource_of(&self, t: ResourceType, object: &DynamicObject) -> StoreResult<Resource> {
        resource_of(t, object).map_err(|message| {
            tracing::warn!(
                kind = %t,
                name = object.metadata.name.as_deref().unwrap_or_default(),
                namespace = object.metadata.namespace.as_deref().unwrap_or_default(),
                error = %message,
                "skipping a stored object that does not validate"
            );
            StoreError::NotFound(ResourceKey::new(
                t,
                "",
                object.metadata.name.as_deref().unwrap_or_default(),
            ))
        })
    }
}

/// An error of a write the API server refused (admission, validation,
/// a missing namespace) or could not take.
fn write_error(e: kube::Error) -> StoreError {
    match status_code(&e) {
        Some(400 | 403 | 404 | 422) => StoreError::Refused(api_message(&e)),
        _ => unavailable(e),
    }
}

fn string_map(value: Option<&Value>) -> Option<BTreeMap<String, String>> {
    let map: BTreeMap<String, String> = value
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default();
    (!map.is_empty()).then_some(map)
}

fn owner_reference(resource: &ApiResource, owner: &DynamicObject) -> Value {
    json!({
        "apiVersion": resource.api_version,
        "kind": resource.kind,
        "name": owner.metadata.name,
        "uid": owner.metadata.uid,
    })
}

/// The resource an object of kind `t` holds, through the one parser of
/// the Kubernetes form.
fn resource_of(t: ResourceType, object: &DynamicObject) -> Result<Resource, String> {
    let mut value = serde_json::to_value(object).map_err(|e| e.to_string())?;
    if let Some(obj) = value.as_object_mut() {
        // Watch events and lists may leave out the type fields.
        let api_version = if t.descriptor().has_crd {
            format!("{GROUP}/{VERSION}")
        } else {
            "v1".into()
        };
        obj.insert("apiVersion".into(), api_version.into());
        obj.insert(
            "kind".into(),
            (if t.descriptor().has_crd {
                t.name()
            } else {
                "Secret"
            })
            .into(),
        );
    }
    let r = parse_value(value).map_err(|e| e.to_string())?;
    if r.resource_type() != t {
        return Err(format!("expected a {t}, found a {}", r.resource_type()));
    }
    Ok(r)
}

/// The key of an object of kind `t`, even one that does not validate
/// (deletions must be announced whatever was stored).
fn key_of(t: ResourceType, object: &DynamicObject) -> Option<ResourceKey> {
    let name = object.metadata.name.clone()?;
    if let Some(st) = secret_type(t)
        && object.data.get("type").and_then(Value::as_str) != Some(st)
    {
        return None;
    }
    let labels = object.metadata.labels.clone().unwrap_or_default();
    let mesh = if t.descriptor().scope == Scope::Global {
        String::new()
    } else {
        object
            .data
            .get("mesh")
            .and_then(Value::as_str)
            .filter(|_| t == ResourceType::Dataplane || t.is_read_only())
            .map(String::from)
            .or_else(|| labels.get(MESH_LABEL).cloned())
            .unwrap_or_else(|| kuma_crds::resource::DEFAULT_MESH.into())
    };
    let core_name = match (&object.metadata.namespace, t.descriptor().has_crd) {
        (Some(ns), true) if t.descriptor().scope == Scope::Mesh => format!("{name}.{ns}"),
        _ => name,
    };
    Some(ResourceKey::new(t, &mesh, &core_name))
}

/// Follows one kind for as long as the store lives: list, then watch,
/// re-listing after any break (kube-runtime's watcher, with backoff).
async fn watch(
    (api, params): (Api<DynamicObject>, ListParams),
    t: ResourceType,
    events: broadcast::Sender<StoreEvent>,
    listed: tokio::sync::mpsc::Sender<()>,
) {
    let mut listed = Some(listed);
    let mut config = watcher::Config::default();
    if let Some(fields) = &params.field_selector {
        config = config.fields(fields);
    }
    let mut stream = watcher(api, config).default_backoff().boxed();
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Apply(object)) => match resource_of(t, &object) {
                Ok(r) => {
                    let _ = events.send(StoreEvent::Upserted(Box::new(r)));
                }
                Err(e) => {
                    tracing::warn!(kind = %t, name = ?object.metadata.name, error = %e, "ignoring an object that does not validate")
                }
            },
            Ok(watcher::Event::Delete(object)) => {
                if let Some(key) = key_of(t, &object) {
                    let _ = events.send(StoreEvent::Deleted(key));
                }
            }
            Ok(watcher::Event::InitDone) => {
                // The first listing is what the store starts from (unless
                // it came after the store stopped waiting for it); every
                // later one follows a break, and readers re-list.
                let started_from = match listed.take() {
                    Some(first) => first.send(()).await.is_ok(),
                    None => false,
                };
                if !started_from {
                    let _ = events.send(StoreEvent::Resync);
                }
            }
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
            Err(e) => tracing::warn!(kind = %t, error = %e, "watch interrupted; it re-lists"),
        }
    }
}

#[async_trait::async_trait]
impl ResourceStore for KubernetesStore {
    async fn get(&self, key: &ResourceKey) -> StoreResult<Resource> {
        let object = self.get_object(key).await?;
        self.resource_of(key.resource_type, &object)
            .map_err(|_| StoreError::NotFound(key.clone()))
    }

    async fn list(&self, t: ResourceType, mesh: Option<&str>) -> StoreResult<Vec<Resource>> {
        self.list_now(t, mesh).await
    }

    async fn create(&self, r: Resource) -> StoreResult<Resource> {
        self.create_now(r).await
    }

    async fn update(&self, r: Resource) -> StoreResult<Resource> {
        self.update_now(r).await
    }

    async fn delete(&self, key: &ResourceKey) -> StoreResult<()> {
        self.delete_now(key).await
    }

    fn subscribe(&self) -> broadcast::Receiver<StoreEvent> {
        self.events.subscribe()
    }
}
