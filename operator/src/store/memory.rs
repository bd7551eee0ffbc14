//! The in-memory store: a map under a lock. Nothing survives a restart.

use std::collections::BTreeMap;
use std::sync::Mutex;

use kuma_crds::resource::{Resource, ResourceType, Scope};
use tokio::sync::broadcast;

use super::{ResourceKey, ResourceStore, StoreError, StoreEvent, StoreResult, now};

/// The in-memory store.
#[derive(Debug)]
pub struct MemoryStore {
    resources: Mutex<BTreeMap<ResourceKey, Resource>>,
    events: broadcast::Sender<StoreEvent>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// Tells subscribers of a change, except of status kinds (insights),
    /// which nobody follows and which change with every proxy update — as
    /// with PostgreSQL, where their notifications are dropped.
    fn announce(&self, event: StoreEvent) {
        let read_only = match &event {
            StoreEvent::Upserted(r) => r.resource_type().is_read_only(),
            StoreEvent::Deleted(k) => k.resource_type.is_read_only(),
            StoreEvent::Resync => false,
        };
        if !read_only {
            let _ = self.events.send(event);
        }
    }

    /// An empty store.
    pub fn new() -> Self {
        MemoryStore {
            resources: Mutex::new(BTreeMap::new()),
            events: broadcast::channel(4096).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<ResourceKey, Resource>> {
        self.resources.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get_now(&self, key: &ResourceKey) -> StoreResult<Resource> {
        self.lock()
            .get(key)
            .cloned()
            .ok_or_else(|| StoreError::NotFound(key.clone()))
    }

    fn list_now(&self, t: ResourceType, mesh: Option<&str>) -> StoreResult<Vec<Resource>> {
        Ok(self
            .lock()
            .iter()
            .filter(|(k, _)| k.resource_type == t && mesh.is_none_or(|m| k.mesh == m))
            .map(|(_, r)| r.clone())
            .collect())
    }

    fn check_mesh(map: &BTreeMap<ResourceKey, Resource>, key: &ResourceKey) -> StoreResult<()> {
        if key.resource_type.descriptor().scope == Scope::Mesh
            && !map.contains_key(&ResourceKey::new(ResourceType::Mesh, "", &key.mesh))
        {
            return Err(StoreError::MeshNotFound(key.mesh.clone()));
        }
        Ok(())
    }

    fn create_now(&self, mut r: Resource) -> StoreResult<Resource> {
        let key = ResourceKey::of(&r);
        let mut map = self.lock();
        if map.contains_key(&key) {
            return Err(StoreError::AlreadyExists(key));
        }
        Self::check_mesh(&map, &key)?;
        if let Some(owner) = key.owner()
            && !map.contains_key(&owner)
        {
            return Err(StoreError::NotFound(owner));
        }
        let t = now();
        r.meta.version = Some("1".into());
        r.meta.creation_time = Some(t.clone());
        r.meta.modification_time = Some(t);
        map.insert(key, r.clone());
        self.announce(StoreEvent::Upserted(Box::new(r.clone())));
        Ok(r)
    }

    fn update_now(&self, mut r: Resource) -> StoreResult<Resource> {
        let key = ResourceKey::of(&r);
        let mut map = self.lock();
        let Some(current) = map.get(&key) else {
            return Err(StoreError::NotFound(key));
        };
        let expected = r.meta.version.clone().unwrap_or_default();
        if current.meta.version.as_deref() != Some(expected.as_str()) {
            return Err(StoreError::Conflict { key, expected });
        }
        let next = expected.parse::<u64>().unwrap_or(0) + 1;
        r.meta.version = Some(next.to_string());
        r.meta.creation_time = current.meta.creation_time.clone();
        r.meta.modification_time = Some(now());
        map.insert(key, r.clone());
        self.announce(StoreEvent::Upserted(Box::new(r.clone())));
        Ok(r)
    }

    fn delete_now(&self, key: &ResourceKey) -> StoreResult<()> {
        let mut map = self.lock();
        if map.remove(key).is_none() {
            return Err(StoreError::NotFound(key.clone()));
        }
        let mut deleted = vec![key.clone()];
        let owned: Vec<ResourceKey> = if key.resource_type == ResourceType::Mesh {
            map.keys().filter(|k| k.mesh == key.name).cloned().collect()
        } else {
            map.keys()
                .filter(|k| k.owner().as_ref() == Some(key))
                .cloned()
                .collect()
        };
        for k in owned {
            map.remove(&k);
            deleted.push(k);
        }
        // Contents first, the owner last, as a cascade would.
        deleted.rotate_left(1);
        for k in deleted {
            self.announce(StoreEvent::Deleted(k));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl ResourceStore for MemoryStore {
    async fn get(&self, key: &ResourceKey) -> StoreResult<Resource> {
        self.get_now(key)
    }

    async fn list(&self, t: ResourceType, mesh: Option<&str>) -> StoreResult<Vec<Resource>> {
        self.list_now(t, mesh)
    }

    async fn create(&self, r: Resource) -> StoreResult<Resource> {
        self.create_now(r)
    }

    async fn update(&self, r: Resource) -> StoreResult<Resource> {
        self.update_now(r)
    }

    async fn delete(&self, key: &ResourceKey) -> StoreResult<()> {
        self.delete_now(key)
    }

    fn subscribe(&self) -> broadcast::Receiver<StoreEvent> {
        self.events.subscribe()
    }
}
