//! Feeds the reconciler from the store through a [`Reflector`]: every batch
//! of changes becomes one reconciler event, so a re-listing (after a
//! restart or a lost watch) is applied as a whole — never half a mesh.

use kuma_crds::resource::ResourceType;
use kuma_xds::sync::{Event, Reconciler};

use crate::reflector::{Change, Reflector};
use crate::store::{ResourceKey, Store};

/// Runs until the store's announcements end. `ready` is told once the
/// first full listing reached the reconciler.
pub async fn run(store: Store, reconciler: Reconciler, ready: tokio::sync::watch::Sender<bool>) {
    let kinds = ResourceType::ALL.iter().copied().filter(|t| t.feeds_generation());
    let mut reflector = Reflector::new(store, kinds);
    while let Some(changes) = reflector.next().await {
        let mut events: Vec<Event> = changes.into_iter().map(event_of).collect();
        let event = if events.len() == 1 {
            events.remove(0)
        } else {
            Event::Batch(events)
        };
        reconciler.send(event);
        ready.send_replace(true);
    }
}

fn event_of(change: Change) -> Event {
    match change {
        Change::Applied(r) => Event::Upsert(r),
        Change::Deleted(key) => delete_event(&key),
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
