//! Feeds the reconciler from the store: every announced change becomes a
//! reconciler event; a resync (or a subscriber that fell behind) lists the
//! whole store again and turns the difference into events.

use std::collections::BTreeMap;

use kuma_crds::resource::{Resource, ResourceType};
use kuma_xds::sync::{Event, Reconciler};
use tokio::sync::broadcast::error::RecvError;

use crate::store::{ResourceKey, Store, StoreEvent, StoreResult};

/// The kinds config generation reads (mesh Secrets hold mTLS CAs; insights
/// are status, not configuration).
fn relevant(t: ResourceType) -> bool {
    t != ResourceType::GlobalSecret && !t.is_read_only()
}

/// Everything relevant in the store, by key.
async fn snapshot(store: &Store) -> StoreResult<BTreeMap<ResourceKey, Resource>> {
    let mut out = BTreeMap::new();
    for t in ResourceType::ALL.iter().copied().filter(|t| relevant(*t)) {
        for r in store.list(t, None).await? {
            out.insert(ResourceKey::of(&r), r);
        }
    }
    Ok(out)
}

/// Runs until the store's announcements end. `ready` is told once the
/// first full listing reached the reconciler.
pub async fn run(store: Store, reconciler: Reconciler, ready: tokio::sync::watch::Sender<bool>) {
    let mut events = store.subscribe();
    let mut known: BTreeMap<ResourceKey, String> = BTreeMap::new();
    let mut need_resync = true;
    loop {
        if need_resync {
            match snapshot(&store).await {
                Ok(all) => {
                    for key in known
                        .keys()
                        .filter(|k| !all.contains_key(*k))
                        .cloned()
                        .collect::<Vec<_>>()
                    {
                        known.remove(&key);
                        reconciler.send(delete_event(&key));
                    }
                    for (key, r) in all {
                        let version = r.meta.version.clone().unwrap_or_default();
                        if known.get(&key) != Some(&version) {
                            known.insert(key, version);
                            reconciler.send(Event::Upsert(Box::new(r)));
                        }
                    }
                    need_resync = false;
                    ready.send_replace(true);
                }
                Err(e) => {
                    // Keep serving the last configuration; try again soon.
                    tracing::warn!(error = %e, "cannot list resources; keeping the current configuration");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    continue;
                }
            }
        }
        match events.recv().await {
            Ok(StoreEvent::Upserted(r)) => {
                let key = ResourceKey::of(&r);
                if relevant(key.resource_type) {
                    known.insert(key, r.meta.version.clone().unwrap_or_default());
                    reconciler.send(Event::Upsert(r));
                }
            }
            Ok(StoreEvent::Deleted(key)) => {
                if known.remove(&key).is_some() {
                    reconciler.send(delete_event(&key));
                }
            }
            Ok(StoreEvent::Resync) | Err(RecvError::Lagged(_)) => need_resync = true,
            Err(RecvError::Closed) => return,
        }
    }
}

fn delete_event(key: &ResourceKey) -> Event {
    let mesh = if key.resource_type == ResourceType::Mesh {
        key.name.clone()
    } else {
        key.mesh.clone()
    };
    Event::Delete {
        resource_type: key.resource_type,
        mesh,
        name: key.name.clone(),
    }
}
