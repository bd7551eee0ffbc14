//! Make before break for removed clusters.
//!
//! When a new configuration drops a cluster, Envoy may still route to it:
//! for a moment, because clusters are updated before listeners, and for up
//! to its drain time on kept-alive connections that the listener update
//! left on the old, draining filter chain. Removing the cluster at once
//! fails those requests with 503 (Kuma has the same problem). So a removed
//! cluster, with its endpoints, stays in the proxy's configuration for a
//! grace period longer than the proxy's drain time; nothing new routes to
//! it, and it goes once the old connections are gone.
//!
//! Clusters a MeshProxyPatch added go at once: they are the ones Envoy may
//! have refused, and keeping a refused cluster would make Envoy refuse
//! every cluster update to the proxy for the whole grace period after the
//! bad patch is removed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::resources::{EncodedResource, Generated, Origin, ResourceSet, SharedLayer, XdsType};

/// Longer than kuma-dp's default drain time (30s), so the connections on a
/// draining filter chain are closed before their clusters go.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(40);

/// A cluster and its endpoints (none for clusters that resolve their own),
/// as sent: their encodings are shared with the proxy's snapshot, whereas
/// holding the generated entries would keep a decoded copy of every
/// cluster built for this proxy alone (about 12 KiB per proxy).
#[derive(Clone, Debug)]
struct ClusterResources {
    origin: Origin,
    cluster: Arc<EncodedResource>,
    endpoints: Option<Arc<EncodedResource>>,
}

impl ClusterResources {
    fn add_to(&self, set: &mut ResourceSet) {
        for encoded in std::iter::once(&self.cluster).chain(self.endpoints.as_ref()) {
            match Generated::from_encoded(self.origin, encoded.clone()) {
                Ok(generated) => set.add_shared(Arc::new(generated)),
                // Its own encoding always decodes; were it not to, the
                // cluster just goes without its grace period.
                Err(e) => {
                    tracing::warn!(resource = %encoded.name, error = %e, "cannot keep a removed cluster")
                }
            }
        }
    }
}

/// A cluster kept after its removal.
#[derive(Clone, Debug)]
struct Retiring {
    until: SystemTime,
    resources: ClusterResources,
}

/// The clusters of one proxy: what its last configuration had and which
/// removed ones it still keeps.
#[derive(Clone, Debug, Default)]
pub struct ClusterRetirement {
    /// Every cluster of the last configuration with its endpoints,
    /// retiring ones included, except those of its shared layer.
    published: BTreeMap<Arc<str>, ClusterResources>,
    /// The shared layer the last configuration rested on: its clusters
    /// were published too, and are compared only when the layer changes.
    published_layer: Option<Arc<SharedLayer>>,
    retiring: BTreeMap<Arc<str>, Retiring>,
}

impl ClusterRetirement {
    /// Completes `next` (a freshly generated configuration) with the
    /// clusters removed less than `grace` ago, and remembers it.
    pub fn carry(&mut self, next: &mut ResourceSet, now: SystemTime, grace: Duration) {
        let returned_or_expired =
            |name: &str, r: &Retiring| next.contains(XdsType::Cluster, name) || r.until <= now;
        let expired: Vec<Arc<str>> = self
            .retiring
            .iter()
            .filter(|(name, r)| returned_or_expired(name, r))
            .map(|(name, _)| name.clone())
            .collect();
        for name in &expired {
            self.retiring.remove(name);
        }
        if !grace.is_zero() {
            let removed = |name: &Arc<str>, origin: Origin| {
                !next.contains(XdsType::Cluster, name)
                    && !self.retiring.contains_key(name)
                    && !expired.contains(name)
                    && origin != Origin::ProxyTemplateModifications
            };
            let mut newly: Vec<(Arc<str>, ClusterResources)> = self
                .published
                .iter()
                .filter(|(name, resources)| removed(name, resources.origin))
                .map(|(name, resources)| (name.clone(), resources.clone()))
                .collect();
            if let Some(old) = &self.published_layer
                && !next.layer().is_some_and(|layer| Arc::ptr_eq(layer, old))
            {
                // Both layers are sorted by name, and mostly share their
                // names' strings: one walk, comparing pointers first.
                let mut in_next = next
                    .layer()
                    .into_iter()
                    .flat_map(|l| l.of_type(XdsType::Cluster))
                    .peekable();
                let mut still_in_next_layer = |name: &Arc<str>| {
                    while let Some((n, _)) = in_next.peek() {
                        if Arc::ptr_eq(n, name) || n == &name {
                            return true;
                        }
                        if *n > name {
                            return false;
                        }
                        in_next.next();
                    }
                    false
                };
                newly.extend(
                    old.of_type(XdsType::Cluster)
                        .filter(|(name, _)| !still_in_next_layer(name))
                        .filter(|(name, cluster)| removed(name, cluster.origin()))
                        .map(|(name, cluster)| {
                            let resources = ClusterResources {
                                origin: cluster.origin(),
                                cluster: cluster.encoded().clone(),
                                endpoints: old.get(XdsType::Endpoints, name).map(|e| e.encoded().clone()),
                            };
                            (name.clone(), resources)
                        }),
                );
            }
            for (name, resources) in newly {
                self.retiring.insert(
                    name,
                    Retiring {
                        until: now + grace,
                        resources,
                    },
                );
            }
        }
        for r in self.retiring.values() {
            r.resources.add_to(next);
        }
        self.published = next
            .own_of_type(XdsType::Cluster)
            .map(|(name, c)| {
                let endpoints = next.shared(XdsType::Endpoints, name).map(|e| e.encoded().clone());
                (
                    name.clone(),
                    ClusterResources {
                        origin: c.origin(),
                        cluster: c.encoded().clone(),
                        endpoints,
                    },
                )
            })
            .collect();
        self.published_layer = next.layer().cloned();
    }

    /// Records a configuration that only had its shared layer replaced by
    /// `layer`, with the same clusters (see [`crate::snapshot::Snapshot::on_layer`]).
    /// `false`, recording nothing, when clusters are retiring or the last
    /// configuration rested on no layer: it must then be generated whole.
    pub fn rest_on(&mut self, layer: &Arc<SharedLayer>) -> bool {
        if !self.retiring.is_empty() || self.published_layer.is_none() {
            return false;
        }
        self.published_layer = Some(layer.clone());
        true
    }

    /// When the next retiring cluster is due to go.
    pub fn next_expiry(&self) -> Option<SystemTime> {
        self.retiring.values().map(|r| r.until).min()
    }

    /// The names of the clusters kept after their removal.
    pub fn retiring(&self) -> impl Iterator<Item = &str> {
        self.retiring.keys().map(|k| k.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{Origin, Resource};
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;

    fn set(clusters: &[&str]) -> ResourceSet {
        let mut s = ResourceSet::new();
        for c in clusters {
            s.add(
                Origin::Outbound,
                Resource::Cluster(Cluster {
                    name: c.to_string(),
                    ..Default::default()
                }),
            );
            s.add(
                Origin::Outbound,
                Resource::Endpoints(ClusterLoadAssignment {
                    cluster_name: c.to_string(),
                    ..Default::default()
                }),
            );
        }
        s
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    const GRACE: Duration = Duration::from_secs(40);

    #[test]
    fn a_removed_cluster_stays_with_its_endpoints_until_the_grace_period_ends() {
        let mut r = ClusterRetirement::default();
        let mut first = set(&["a", "b"]);
        r.carry(&mut first, at(0), GRACE);
        assert_eq!(first.names(XdsType::Cluster), ["a", "b"]);

        let mut without_b = set(&["a"]);
        r.carry(&mut without_b, at(10), GRACE);
        assert_eq!(without_b.names(XdsType::Cluster), ["a", "b"]);
        assert_eq!(without_b.names(XdsType::Endpoints), ["a", "b"]);
        assert_eq!(r.next_expiry(), Some(at(50)));

        // Regenerating meanwhile neither drops it nor extends its time.
        let mut again = set(&["a"]);
        r.carry(&mut again, at(30), GRACE);
        assert_eq!(again.names(XdsType::Cluster), ["a", "b"]);
        assert_eq!(r.next_expiry(), Some(at(50)));

        let mut later = set(&["a"]);
        r.carry(&mut later, at(50), GRACE);
        assert_eq!(later.names(XdsType::Cluster), ["a"]);
        assert_eq!(later.names(XdsType::Endpoints), ["a"]);
        assert_eq!(r.next_expiry(), None);

        // Gone for good: the next configuration does not bring it back.
        let mut after = set(&["a"]);
        r.carry(&mut after, at(60), GRACE);
        assert_eq!(after.names(XdsType::Cluster), ["a"]);
    }

    #[test]
    fn a_cluster_leaving_with_the_shared_layer_retires_like_an_own_one() {
        let mut r = ClusterRetirement::default();
        let layer = Arc::new(SharedLayer::new(set(&["shared-a", "shared-b"])));
        let mut first = set(&["own"]);
        first.set_layer(layer.clone());
        r.carry(&mut first, at(0), GRACE);

        // The same layer again: nothing retires.
        let mut again = set(&["own"]);
        again.set_layer(layer);
        r.carry(&mut again, at(5), GRACE);
        assert_eq!(r.retiring().count(), 0);

        // A new layer without shared-b: it stays with its endpoints.
        let mut next = set(&["own"]);
        next.set_layer(Arc::new(SharedLayer::new(set(&["shared-a"]))));
        r.carry(&mut next, at(10), GRACE);
        assert_eq!(next.names(XdsType::Cluster), ["own", "shared-a", "shared-b"]);
        assert_eq!(next.names(XdsType::Endpoints), ["own", "shared-a", "shared-b"]);
        assert_eq!(r.next_expiry(), Some(at(50)));
    }

    #[test]
    fn a_cluster_a_patch_added_goes_at_once() {
        let mut r = ClusterRetirement::default();
        let mut patched = set(&["a"]);
        patched.add(
            Origin::ProxyTemplateModifications,
            Resource::Cluster(Cluster {
                name: "added".into(),
                ..Default::default()
            }),
        );
        r.carry(&mut patched, at(0), GRACE);
        let mut unpatched = set(&["a"]);
        r.carry(&mut unpatched, at(1), GRACE);
        assert_eq!(unpatched.names(XdsType::Cluster), ["a"]);
        assert_eq!(r.next_expiry(), None);
    }

    #[test]
    fn a_cluster_that_comes_back_is_the_new_one_and_no_longer_retiring() {
        let mut r = ClusterRetirement::default();
        r.carry(&mut set(&["a", "b"]), at(0), GRACE);
        r.carry(&mut set(&["a"]), at(1), GRACE);
        let mut back = set(&["a", "b"]);
        r.carry(&mut back, at(2), GRACE);
        assert_eq!(r.retiring().count(), 0);
        assert_eq!(r.next_expiry(), None);
        // Removed again: a new grace period starts.
        let mut removed = set(&["a"]);
        r.carry(&mut removed, at(3), GRACE);
        assert_eq!(removed.names(XdsType::Cluster), ["a", "b"]);
        assert_eq!(r.next_expiry(), Some(at(43)));
    }

    #[test]
    fn a_kept_cluster_is_sent_as_it_was_with_its_origin() {
        let mut r = ClusterRetirement::default();
        let mut first = set(&["a", "b"]);
        r.carry(&mut first, at(0), GRACE);
        let sent = |s: &ResourceSet, t: XdsType| s.shared(t, "b").map(|g| g.encoded().clone());
        let (cluster, endpoints) = (sent(&first, XdsType::Cluster), sent(&first, XdsType::Endpoints));
        let mut without_b = set(&["a"]);
        r.carry(&mut without_b, at(1), GRACE);
        // The very encodings sent before: same bytes, same version.
        assert_eq!(sent(&without_b, XdsType::Cluster), cluster);
        assert_eq!(sent(&without_b, XdsType::Endpoints), endpoints);
        let kept = without_b
            .get(XdsType::Cluster, "b")
            .map(|g| (g.origin(), g.resource().name().to_string()));
        assert_eq!(kept, Some((Origin::Outbound, "b".to_string())));
    }

    #[test]
    fn no_grace_removes_at_once() {
        let mut r = ClusterRetirement::default();
        r.carry(&mut set(&["a", "b"]), at(0), Duration::ZERO);
        let mut next = set(&["a"]);
        r.carry(&mut next, at(1), Duration::ZERO);
        assert_eq!(next.names(XdsType::Cluster), ["a"]);
    }
}
