//! The outbound cache: bundles of outbound resources shared by every proxy
//! whose `to` policies are the same, so that a mesh of a thousand proxies
//! builds and encodes each distinct outbound once, and a change rebuilds
//! only the bundles it touches.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use super::Policies;
use super::outbound::{OutboundBundle, OutboundLayer};
use crate::context::MeshContext;

/// Shared outbound bundles of one mesh, keyed by a digest of everything
/// that goes into them except the services they read, which each bundle
/// checks itself.
#[derive(Debug, Default)]
pub struct OutboundCache {
    inner: Mutex<Inner>,
}

/// How many bundles of an outbound built under other policies are tried
/// before building one (each try compares a few recorded reads).
const SIBLINGS_TRIED: usize = 8;

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<u128, Entry>,
    /// The bundles of each outbound (under any policies), newest last.
    siblings: HashMap<u128, Vec<Weak<OutboundBundle>>>,
    /// Outbound layers by `to` signature and mesh context; `None` where
    /// the outbounds need something of each proxy.
    layers: HashMap<u128, Option<Arc<OutboundLayer>>>,
    hits: u64,
    shared: u64,
    misses: u64,
}

impl Inner {
    fn insert(&mut self, key: u128, bundle: Arc<OutboundBundle>, checked_in: u64) {
        self.entries.insert(key, Entry { bundle, checked_in });
    }
}

#[derive(Debug)]
struct Entry {
    bundle: Arc<OutboundBundle>,
    /// The mesh context the bundle was last found current in: a thousand
    /// proxies using it need one check per context, not one each.
    checked_in: u64,
}

/// Counters of an [`OutboundCache`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Bundles held.
    pub entries: usize,
    /// Lookups served from the cache.
    pub hits: u64,
    /// Lookups served by a bundle built under other policies that give
    /// the same.
    pub shared: u64,
    /// Lookups that built a bundle.
    pub misses: u64,
}

impl OutboundCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The bundle for `key` (an outbound under one proxy's `to` policies),
    /// else one built for the same `outbound` under other policies that
    /// `policies` give the same reads, else one built by `build`.
    pub(super) fn get_or_build(
        &self,
        key: u128,
        outbound: u128,
        mesh: &MeshContext,
        policies: &Policies,
        build: impl FnOnce() -> OutboundBundle,
    ) -> Arc<OutboundBundle> {
        {
            let mut inner = self.lock();
            if let Some(entry) = inner.entries.get_mut(&key)
                && (entry.checked_in == mesh.build || entry.bundle.is_current(mesh))
            {
                entry.checked_in = mesh.build;
                let bundle = entry.bundle.clone();
                inner.hits += 1;
                return bundle;
            }
            let sibling = inner.siblings.get(&outbound).and_then(|list| {
                list.iter()
                    .rev()
                    .take(SIBLINGS_TRIED)
                    .filter_map(Weak::upgrade)
                    .find(|b| b.fits(policies) && b.is_current(mesh))
            });
            if let Some(bundle) = sibling {
                inner.shared += 1;
                inner.insert(key, bundle.clone(), mesh.build);
                return bundle;
            }
        }
        // Built without the lock: two proxies may build the same bundle
        // concurrently, which wastes a little work but never blocks.
        let bundle = Arc::new(build());
        let mut inner = self.lock();
        inner.misses += 1;
        inner.insert(key, bundle.clone(), mesh.build);
        let siblings = inner.siblings.entry(outbound).or_default();
        siblings.push(Arc::downgrade(&bundle));
        bundle
    }

    /// The layer for `key`, built by `build` when absent.
    pub(super) fn get_or_build_layer(
        &self,
        key: u128,
        build: impl FnOnce() -> Option<OutboundLayer>,
    ) -> Option<Arc<OutboundLayer>> {
        if let Some(layer) = self.lock().layers.get(&key) {
            return layer.clone();
        }
        // Built without the lock, which building takes for each bundle.
        let layer = build().map(Arc::new);
        self.lock().layers.insert(key, layer.clone());
        layer
    }

    /// Drops the bundles nobody but the cache holds (callers keep the
    /// bundles their proxies use, see [`super::Generation`]).
    pub fn drop_unreferenced(&self) {
        let mut inner = self.lock();
        // Layers first: they hold bundles.
        inner
            .layers
            .retain(|_, layer| layer.as_ref().is_some_and(|l| Arc::strong_count(l) > 1));
        inner.entries.retain(|_, e| Arc::strong_count(&e.bundle) > 1);
        inner.siblings.retain(|_, list| {
            list.retain(|b| b.strong_count() > 0);
            !list.is_empty()
        });
    }

    /// Current counters.
    pub fn stats(&self) -> CacheStats {
        let inner = self.lock();
        CacheStats {
            entries: inner.entries.len(),
            hits: inner.hits,
            shared: inner.shared,
            misses: inner.misses,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves the map consistent (every
        // mutation is a single insert or retain), so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}
