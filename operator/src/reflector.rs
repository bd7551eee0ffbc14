//! The one way every reader follows the store: the reconciler feed, the CA
//! controller and the mesh defaults controller alike.
//!
//! A [`Reflector`] subscribes to the store's announcements, lists the kinds
//! it follows, and from then on hands out batches of [`Change`]s: first the
//! whole listing, then the announced changes (whatever arrived together is
//! one batch). After a [`StoreEvent::Resync`] (the watch restarted: an API
//! server or database restart, a lost connection) or when it fell behind,
//! it lists again and hands out the difference from what it knew — what
//! changed, appeared or disappeared meanwhile — as one batch, so nothing is
//! lost or applied twice and a reader never sees half a re-listing.

use std::collections::BTreeMap;
use std::time::Duration;

use kuma_crds::resource::{Resource, ResourceType};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::broadcast::{self};

use crate::store::{ResourceKey, Store, StoreEvent, StoreResult};

/// One change of a followed resource.
#[derive(Clone, Debug)]
pub enum Change {
    /// Created or updated.
    Applied(Box<Resource>),
    /// Deleted.
    Deleted(ResourceKey),
}

impl Change {
    /// The key of the changed resource.
    pub fn key(&self) -> ResourceKey {
        match self {
            Change::Applied(r) => ResourceKey::of(r),
            Change::Deleted(k) => k.clone(),
        }
    }
}

/// Most announcements handed out in one batch.
const MAX_BATCH: usize = 1024;

/// Follows some kinds of the store.
#[derive(Debug)]
pub struct Reflector {
    store: Store,
    kinds: Vec<ResourceType>,
    events: broadcast::Receiver<StoreEvent>,
    /// The version of every resource handed out and not deleted since.
    known: BTreeMap<ResourceKey, String>,
    relist: bool,
    listed_once: bool,
}

impl Reflector {
    /// A reflector of `kinds`; it subscribes at once, so no change made
    /// from now on is missed.
    pub fn new(store: Store, kinds: impl IntoIterator<Item = ResourceType>) -> Self {
        let events = store.subscribe();
        Reflector {
            store,
            kinds: kinds.into_iter().collect(),
            events,
            known: BTreeMap::new(),
            relist: true,
            listed_once: false,
        }
    }

    /// The next batch of changes, waiting for one; `None` once the store's
    /// announcements ended. The first batch is the first listing, even
    /// when empty (readers use it to know they are in sync). A listing the store cannot answer is retried
    /// (with backoff) until it can: readers keep what they have meanwhile.
    pub async fn next(&mut self) -> Option<Vec<Change>> {
        let mut backoff = Duration::from_millis(100);
        loop {
            if self.relist {
                // Whatever is queued now is older than the listing below.
                self.drain_queued();
                match self.listing().await {
                    Ok(all) => {
                        self.relist = false;
                        let changes = self.difference(all);
                        if !changes.is_empty() || !self.listed_once {
                            self.listed_once = true;
                            return Some(changes);
                        }
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in = ?backoff, "cannot list resources; keeping what is known");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        continue;
                    }
                }
            }
            let first = match self.events.recv().await {
                Ok(e) => e,
                Err(RecvError::Lagged(_)) => {
                    self.relist = true;
                    continue;
                }
                Err(RecvError::Closed) => return None,
            };
            let mut changes = Vec::new();
            self.take(first, &mut changes);
            while !self.relist && changes.len() < MAX_BATCH {
                match self.events.try_recv() {
                    Ok(e) => self.take(e, &mut changes),
                    Err(TryRecvError::Lagged(_)) => self.relist = true,
                    Err(TryRecvError::Empty | TryRecvError::Closed) => break,
                }
            }
            if self.relist {
                // The listing covers these too; hand them out with it.
                continue;
            }
            if !changes.is_empty() {
                return Some(changes);
            }
        }
    }

    /// Whether the reflector follows `t`.
    fn follows(&self, t: ResourceType) -> bool {
        self.kinds.contains(&t)
    }

    /// Turns one announcement into a change, unless it says nothing new.
    fn take(&mut self, event: StoreEvent, out: &mut Vec<Change>) {
        match event {
            StoreEvent::Upserted(r) => {
                let key = ResourceKey::of(&r);
                if !self.follows(key.resource_type) {
                    return;
                }
                let version = r.meta.version.clone().unwrap_or_default();
                if let Some(known) = self.known.get(&key)
                    && !newer(&version, known)
                {
                    return;
                }
                self.known.insert(key, version);
                out.push(Change::Applied(r));
            }
            StoreEvent::Deleted(key) => {
                if self.known.remove(&key).is_some() {
                    out.push(Change::Deleted(key));
                }
            }
            StoreEvent::Resync => self.relist = true,
        }
    }

    fn drain_queued(&mut self) {
        loop {
            match self.events.try_recv() {
                Ok(_) | Err(TryRecvError::Lagged(_)) => {}
                Err(TryRecvError::Empty | TryRecvError::Closed) => return,
            }
        }
    }

    async fn listing(&self) -> StoreResult<BTreeMap<ResourceKey, Resource>> {
        let mut all = BTreeMap::new();
        for t in &self.kinds {
            for r in self.store.list(*t, None).await? {
                all.insert(ResourceKey::of(&r), r);
            }
        }
        Ok(all)
    }

    /// What changed between what was known and a fresh listing; the
    /// listing becomes what is known.
    fn difference(&mut self, all: BTreeMap<ResourceKey, Resource>) -> Vec<Change> {
        let mut changes: Vec<Change> = self
            .known
            .keys()
            .filter(|k| !all.contains_key(*k))
            .cloned()
            .map(Change::Deleted)
            .collect();
        let mut known = BTreeMap::new();
        for (key, r) in all {
            let version = r.meta.version.clone().unwrap_or_default();
            if self.known.get(&key) != Some(&version) {
                changes.push(Change::Applied(Box::new(r)));
            }
            known.insert(key, version);
        }
        self.known = known;
        changes
    }
}

/// Whether version `a` is newer than `b`. Stores number their versions
/// (PostgreSQL's counter, the API server's resourceVersion), so an
/// announcement older than the listing it arrives after is not applied;
/// versions that are not numbers are newer when different.
fn newer(a: &str, b: &str) -> bool {
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(a), Ok(b)) => a > b,
        _ => a != b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kuma_crds::format::parse;

    fn mesh(name: &str) -> Resource {
        parse(&format!("type: Mesh\nname: {name}")).expect("mesh")
    }

    #[tokio::test]
    async fn first_the_listing_then_changes_then_differences_after_a_resync() {
        let store = Store::memory();
        store.create(mesh("a")).await.unwrap();
        let mut reflector = Reflector::new(store.clone(), [ResourceType::Mesh]);
        let first = reflector.next().await.unwrap();
        assert_eq!(first.len(), 1, "{first:?}");

        store.create(mesh("b")).await.unwrap();
        let next = reflector.next().await.unwrap();
        assert!(matches!(&next[..], [Change::Applied(r)] if r.meta.name == "b"));

        // Changes the announcements missed arrive as one difference.
        let key_a = ResourceKey::new(ResourceType::Mesh, "", "a");
        reflector
            .known
            .insert(ResourceKey::new(ResourceType::Mesh, "", "gone"), "1".into());
        reflector.known.insert(key_a.clone(), "0".into());
        reflector.relist = true;
        let diff = reflector.next().await.unwrap();
        let keys: Vec<_> = diff.iter().map(Change::key).collect();
        assert_eq!(
            keys,
            vec![ResourceKey::new(ResourceType::Mesh, "", "gone"), key_a],
            "{diff:?}"
        );
        assert!(matches!(diff[0], Change::Deleted(_)));
    }

    #[test]
    fn older_announcements_are_not_newer() {
        assert!(newer("10", "9"));
        assert!(!newer("9", "10"));
        assert!(!newer("3", "3"));
        assert!(newer("b", "a"));
    }
}
