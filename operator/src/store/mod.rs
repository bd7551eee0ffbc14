//! Where resources live: in memory (the default) or in PostgreSQL. Both
//! give the same guarantees: a write is acknowledged only once stored,
//! updates carry the version they replace (a stale one is a conflict),
//! mesh-scoped resources need their mesh, deleting a mesh deletes what is
//! in it, and every change is announced to subscribers.

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

/// A change announced to subscribers.
#[derive(Clone, Debug)]
pub enum StoreEvent {
    /// Created or updated (the stored resource, with its new version).
    Upserted(Box<Resource>),
    /// Deleted.
    Deleted(ResourceKey),
    /// Changes may have been missed (a reconnect): list everything again.
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
}

/// Result of store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// The store in use.
#[derive(Clone, Debug)]
pub enum Store {
    /// In memory.
    Memory(Arc<memory::MemoryStore>),
    /// PostgreSQL.
    Postgres(Arc<postgres::PostgresStore>),
}

impl Store {
    /// A fresh in-memory store.
    pub fn memory() -> Self {
        Store::Memory(Arc::new(memory::MemoryStore::new()))
    }

    /// One resource.
    pub async fn get(&self, key: &ResourceKey) -> StoreResult<Resource> {
        match self {
            Store::Memory(s) => s.get(key),
            Store::Postgres(s) => s.get(key).await,
        }
    }

    /// The resources of a type, in one mesh or all, sorted by mesh and name.
    pub async fn list(&self, resource_type: ResourceType, mesh: Option<&str>) -> StoreResult<Vec<Resource>> {
        match self {
            Store::Memory(s) => s.list(resource_type, mesh),
            Store::Postgres(s) => s.list(resource_type, mesh).await,
        }
    }

    /// Creates a resource (version 1).
    pub async fn create(&self, resource: Resource) -> StoreResult<Resource> {
        match self {
            Store::Memory(s) => s.create(resource),
            Store::Postgres(s) => s.create(resource).await,
        }
    }

    /// Replaces a resource; `resource.meta.version` must be the current one.
    pub async fn update(&self, resource: Resource) -> StoreResult<Resource> {
        match self {
            Store::Memory(s) => s.update(resource),
            Store::Postgres(s) => s.update(resource).await,
        }
    }

    /// Deletes a resource (a mesh with everything in it).
    pub async fn delete(&self, key: &ResourceKey) -> StoreResult<()> {
        match self {
            Store::Memory(s) => s.delete(key),
            Store::Postgres(s) => s.delete(key).await,
        }
    }

    /// Announcements of every change from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<StoreEvent> {
        match self {
            Store::Memory(s) => s.subscribe(),
            Store::Postgres(s) => s.subscribe(),
        }
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
