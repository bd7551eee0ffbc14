//! Where resources live: in memory (the default), in PostgreSQL, or in the
//! Kubernetes API as kuma.io objects. Every store gives the same
//! guarantees, behind one trait ([`ResourceStore`]): a write is
//! acknowledged only once stored, updates carry the version they replace
//! (a stale one is a conflict), mesh-scoped resources need their mesh,
//! deleting a mesh deletes what is in it, and every change is announced to
//! subscribers — with a [`StoreEvent::Resync`] whenever announcements may
//! have been missed, after which readers list again (what the
//! [`crate::reflector`] does for every reader).

pub mod kubernetes;
pub mod memory;
pub mod postgres;
mod postgres_tls;

use std::fmt;
use std::sync::Arc;

use kuma_crds::resource::{Resource, ResourceType, Scope};
use tokio::sync::broadcast;

/// Identifies a resource: its type, mesh (empty for global types) and core name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceKey {
    /// The type.
    pub resource_type: ResourceType,
    /// The mesh; empty for global types.
    pub mesh: String,
    /// The core name.
    pub name: String,
}

impl ResourceKey {
    /// A key; the mesh is dropped for global types.
    pub fn new(resource_type: ResourceType, mesh: &str, name: &str) -> Self {
        let mesh = match resource_type.descriptor().scope {
            Scope::Global => String::new(),
            Scope::Mesh => mesh.to_string(),
        };
        ResourceKey {
            resource_type,
            mesh,
            name: name.to_string(),
        }
    }

    /// The resource that owns this one beside its mesh (an insight's
    /// Dataplane): it must exist, and deleting it deletes this one.
    pub fn owner(&self) -> Option<ResourceKey> {
        self.resource_type
            .owner()
            .map(|t| ResourceKey::new(t, &self.mesh, &self.name))
    }

    /// The key of a resource.
    pub fn of(r: &Resource) -> Self {
        Self::new(
            r.resource_type(),
            r.meta.mesh.as_deref().unwrap_or(""),
            &r.meta.core_name(),
        )
    }
}

impl fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.mesh.is_empty() {
            write!(f, "{} {:?}", self.resource_type, self.name)
        } else {
            write!(
                f,
                "{} {:?} in mesh {:?}",
                self.resource_type, self.name, self.mesh
            )
        }
    }
}

/// A change announced to subscribers; the three events of a Kubernetes
/// watch.
#[derive(Clone, Debug)]
pub enum StoreEvent {
    /// Created or updated (the stored resource, with its new version).
    Upserted(Box<Resource>),
    /// Deleted.
    Deleted(ResourceKey),
    /// The watch restarted (after a restart or a lost connection: the API
    /// server re-listed, PostgreSQL's LISTEN reconnected): changes may have
    /// been missed, so what `list` returns now is the truth. Readers turn
    /// the listing into the difference.
    Resync,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No such resource.
    #[error("{0} not found")]
    NotFound(ResourceKey),
    /// Creating what exists.
    #[error("{0} already exists")]
    AlreadyExists(ResourceKey),
    /// The update replaces a version that is no longer current.
    #[error(
        "{key} was changed concurrently (version {expected:?} is not the current one); read it again and retry"
    )]
    Conflict {
        /// The resource.
        key: ResourceKey,
        /// The version the update was based on.
        expected: String,
    },
    /// A mesh-scoped resource whose mesh does not exist.
    #[error("mesh {0:?} does not exist")]
    MeshNotFound(String),
    /// The backend cannot be reached.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The backend refused the write (e.g. Kubernetes admission).
    #[error("{0}")]
    Refused(String),
}

/// Result of store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// What every store does: memory, PostgreSQL and the Kubernetes API give
/// the same promises (see the module documentation), so everything above
/// the store — the API, the reflectors, the controllers — is written once.
#[async_trait::async_trait]
pub trait ResourceStore: Send + Sync + fmt::Debug {
    /// One resource.
    async fn get(&self, key: &ResourceKey) -> StoreResult<Resource>;

    /// The resources of a type, in one mesh or all, sorted by mesh and name.
    async fn list(&self, resource_type: ResourceType, mesh: Option<&str>) -> StoreResult<Vec<Resource>>;

    /// Creates a resource; the stored one comes back with its version.
    async fn create(&self, resource: Resource) -> StoreResult<Resource>;

    /// Replaces a resource; `resource.meta.version` must be the current
    /// one (optimistic concurrency), else [`StoreError::Conflict`].
    async fn update(&self, resource: Resource) -> StoreResult<Resource>;

    /// Deletes a resource, and what it owns (a mesh with everything in
    /// it, a Dataplane with its insight) before it.
    async fn delete(&self, key: &ResourceKey) -> StoreResult<()>;

    /// Announcements of every change from now on. Insights (status kinds,
    /// written at every proxy update and followed by nobody) are not
    /// announced.
    fn subscribe(&self) -> broadcast::Receiver<StoreEvent>;
}

/// The store in use: one of the [`ResourceStore`]s, shared.
#[derive(Clone, Debug)]
pub struct Store(Arc<dyn ResourceStore>);

impl Store {
    /// A store backed by `inner`.
    pub fn new(inner: Arc<dyn ResourceStore>) -> Self {
        Store(inner)
    }

    /// A fresh in-memory store.
    pub fn memory() -> Self {
        Store(Arc::new(memory::MemoryStore::new()))
    }

    /// One resource.
    pub async fn get(&self, key: &ResourceKey) -> StoreResult<Resource> {
        self.0.get(key).await
    }

    /// The resources of a type, in one mesh or all, sorted by mesh and name.
    pub async fn list(&self, resource_type: ResourceType, mesh: Option<&str>) -> StoreResult<Vec<Resource>> {
        self.0.list(resource_type, mesh).await
    }

    /// Creates a resource.
    pub async fn create(&self, resource: Resource) -> StoreResult<Resource> {
        self.0.create(resource).await
    }

    /// Replaces a resource; `resource.meta.version` must be the current one.
    pub async fn update(&self, resource: Resource) -> StoreResult<Resource> {
        self.0.update(resource).await
    }

    /// Deletes a resource (a mesh with everything in it).
    pub async fn delete(&self, key: &ResourceKey) -> StoreResult<()> {
        self.0.delete(key).await
    }

    /// Announcements of every change from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<StoreEvent> {
        self.0.subscribe()
    }

    /// Creates the resource or replaces it whatever its version: `PUT`
    /// semantics. Returns the stored resource and whether it was created.
    pub async fn upsert(&self, mut resource: Resource) -> StoreResult<(Resource, bool)> {
        let key = ResourceKey::of(&resource);
        match self.get(&key).await {
            Ok(current) => {
                resource.meta.version = current.meta.version.clone();
                resource.meta.creation_time = current.meta.creation_time.clone();
                Ok((self.update(resource).await?, false))
            }
            Err(StoreError::NotFound(_)) => match self.create(resource.clone()).await {
                Ok(r) => Ok((r, true)),
                // Created concurrently: report it as the conflict it is.
                Err(StoreError::AlreadyExists(key)) => Err(StoreError::Conflict {
                    key,
                    expected: "none".into(),
                }),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        }
    }
}

/// The current time in Kuma's format (RFC 3339, UTC).
pub fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
