//! The snapshot cache: the latest encoded configuration of every proxy,
//! versioned by content, which xDS streams watch.
//!
//! Versions are digests of content, so they are stable across restarts and
//! a regenerated but unchanged type keeps its version and is not pushed.

use std::collections::{BTreeMap, HashMap};

use std::sync::{Arc, RwLock};

use tokio::sync::watch;

pub use crate::resources::VersionedResource;
use crate::resources::{ResourceSet, SharedLayer, XdsType, merge_sorted};

/// The resources of one type in a snapshot.
#[derive(Clone, Debug, Default)]
pub struct TypeSnapshot {
    /// The type's version: a digest of every resource's name and version.
    pub version: String,
    /// The resources, by name.
    pub resources: Resources,
}

/// Resources sorted by name (a map without a key allocation per entry):
/// the proxy's own and those of the shared layer its configuration rests
/// on, which it does not copy.
#[derive(Clone, Debug, Default)]
pub struct Resources {
    own: Vec<VersionedResource>,
    shared: Option<Arc<[VersionedResource]>>,
}

fn find<'a>(list: &'a [VersionedResource], name: &str) -> Option<&'a VersionedResource> {
    list.binary_search_by(|r| r.name().cmp(name))
        .ok()
        .map(|i| &list[i])
}

impl Resources {
    fn shared(&self) -> &[VersionedResource] {
        self.shared.as_deref().unwrap_or(&[])
    }

    /// A resource by name.
    pub fn get(&self, name: &str) -> Option<&VersionedResource> {
        find(&self.own, name).or_else(|| find(self.shared(), name))
    }

    /// Whether a resource exists.
    pub fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// `(name, resource)` pairs by name.
    pub fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &VersionedResource)> {
        self.values().map(|r| (&r.encoded.name, r))
    }

    /// The names.
    pub fn keys(&self) -> impl Iterator<Item = &Arc<str>> {
        self.values().map(|r| &r.encoded.name)
    }

    /// The resources, by name.
    pub fn values(&self) -> impl Iterator<Item = &VersionedResource> {
        merge_sorted(self.own.iter(), self.shared().iter(), |r| r.name())
    }

    /// The resources whose version moved since `held`, by name, when both
    /// hold the same names split alike between own and shared (a proxy
    /// moved onto another layer of the same services); `None` otherwise.
    /// Each side is walked in lockstep and names are only tested for
    /// equality, a pointer comparison when they are the same string: a
    /// merge by name ordered every pair, and that was the largest part of
    /// a delta stream's work in a mesh-wide change.
    pub fn moved_since(&self, held: &Resources) -> Option<Vec<&VersionedResource>> {
        fn moved<'a>(
            now: &'a [VersionedResource],
            held: &[VersionedResource],
            out: &mut Vec<&'a VersionedResource>,
        ) -> Option<()> {
            if now.len() != held.len() {
                return None;
            }
            for (n, h) in now.iter().zip(held) {
                let (a, b) = (&n.encoded.name, &h.encoded.name);
                if !(Arc::ptr_eq(a, b) || a == b) {
                    return None;
                }
                if n.version != h.version {
                    out.push(n);
                }
            }
            Some(())
        }
        let mut own = Vec::new();
        moved(&self.own, &held.own, &mut own)?;
        let mut shared = Vec::new();
        match (&self.shared, &held.shared) {
            (Some(a), Some(b)) if Arc::ptr_eq(a, b) => {}
            _ => moved(self.shared(), held.shared(), &mut shared)?,
        }
        if own.is_empty() {
            return Some(shared);
        }
        Some(merge_sorted(own.into_iter(), shared.into_iter(), |r| r.name()).collect())
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.own.len() + self.shared().len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::ops::Index<&str> for Resources {
    type Output = VersionedResource;

    fn index(&self, name: &str) -> &VersionedResource {
        self.get(name).unwrap_or_else(|| panic!("no resource {name:?}"))
    }
}

impl std::ops::Index<&String> for Resources {
    type Output = VersionedResource;

    fn index(&self, name: &String) -> &VersionedResource {
        &self[name.as_str()]
    }
}

/// A proxy's whole configuration, ready to send. Two snapshots are the
/// same when every type has the same version.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    types: BTreeMap<XdsType, TypeSnapshot>,
}

impl Snapshot {
    /// Encodes and versions a generated resource set. A type's version is
    /// the sum of its resources' version terms, so the resources of the
    /// set's shared layer are versioned once for every proxy resting on it.
    pub fn from_resources(set: &ResourceSet) -> Self {
        let layer = set.layer();
        let types = XdsType::ALL
            .into_iter()
            .map(|t| {
                let own: Vec<VersionedResource> = set
                    .own_of_type(t)
                    .map(|(name, g)| {
                        let cluster = (t == XdsType::Endpoints)
                            .then(|| set.shared(XdsType::Cluster, name))
                            .flatten()
                            .map(|c| c.encoded().clone());
                        VersionedResource::new(g.encoded().clone(), cluster.as_deref())
                    })
                    .collect();
                let shared = layer.map(|l| l.versioned(t)).filter(|v| !v.is_empty());
                let sum = own.iter().fold(layer.map_or(0, |l| l.version_sum(t)), |sum, r| {
                    sum.wrapping_add(r.version_term())
                });
                let resources = Resources {
                    own,
                    shared: shared.cloned(),
                };
                (
                    t,
                    TypeSnapshot {
                        version: format!("{sum:016x}"),
                        resources,
                    },
                )
            })
            .collect();
        Snapshot { types }
    }

    /// This snapshot with the shared layer `old` it rests on replaced by
    /// `new`, its own resources kept as they are (versioned as
    /// [`Snapshot::from_resources`] would). `None` when it does not rest on
    /// `old` whole, or when one of its own endpoints is named like a
    /// layer's cluster (its version would cover that cluster).
    pub fn on_layer(&self, old: &SharedLayer, new: &SharedLayer) -> Option<Snapshot> {
        let mut types = BTreeMap::new();
        for t in XdsType::ALL {
            let current = self.get(t);
            let rests_on_old = match &current.resources.shared {
                Some(shared) => Arc::ptr_eq(shared, old.versioned(t)),
                None => old.versioned(t).is_empty(),
            };
            if !rests_on_old {
                return None;
            }
            let own = &current.resources.own;
            if t == XdsType::Endpoints
                && own.iter().any(|e| {
                    old.get(XdsType::Cluster, e.name()).is_some()
                        || new.get(XdsType::Cluster, e.name()).is_some()
                })
            {
                return None;
            }
            let sum = own
                .iter()
                .fold(new.version_sum(t), |sum, r| sum.wrapping_add(r.version_term()));
            let resources = Resources {
                own: own.clone(),
                shared: Some(new.versioned(t)).filter(|v| !v.is_empty()).cloned(),
            };
            types.insert(
                t,
                TypeSnapshot {
                    version: format!("{sum:016x}"),
                    resources,
                },
            );
        }
        Some(Snapshot { types })
    }

    /// The resources of a type.
    pub fn get(&self, t: XdsType) -> &TypeSnapshot {
        static EMPTY: std::sync::OnceLock<TypeSnapshot> = std::sync::OnceLock::new();
        self.types
            .get(&t)
            .unwrap_or_else(|| EMPTY.get_or_init(TypeSnapshot::default))
    }

    /// The version of a type.
    pub fn version(&self, t: XdsType) -> &str {
        &self.get(t).version
    }

    /// The number of resources.
    pub fn len(&self) -> usize {
        self.types.values().map(|t| t.resources.len()).sum()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Which types differ from `other`.
    pub fn changed_types(&self, other: &Snapshot) -> Vec<XdsType> {
        XdsType::ALL
            .into_iter()
            .filter(|t| self.version(*t) != other.version(*t))
            .collect()
    }
}

/// The version string of one resource.
pub fn resource_version(version: u64) -> String {
    format!("{version:016x}")
}

/// The latest snapshot of every proxy, by node id (`<mesh>.<name>`).
///
/// Each node has a watch channel: a stream always sees the newest snapshot,
/// and a burst of updates while it is busy collapses into one.
#[derive(Debug, Default)]
pub struct SnapshotCache {
    nodes: RwLock<HashMap<String, watch::Sender<Option<Arc<Snapshot>>>>>,
}

impl SnapshotCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a node's snapshot; returns whether any type changed (an
    /// identical snapshot wakes no stream). An identical snapshot still
    /// takes the old one's place: it may rest on a newer shared layer of
    /// the same content, which the proxy's record now names, and the old
    /// layer should not be kept alive for it.
    pub fn set(&self, node: &str, snapshot: Snapshot) -> bool {
        let sender = self.sender(node);
        sender.send_if_modified(|current| {
            let changed = !current
                .as_ref()
                .is_some_and(|c| c.changed_types(&snapshot).is_empty());
            *current = Some(Arc::new(snapshot));
            changed
        })
    }

    /// A node's current snapshot.
    pub fn get(&self, node: &str) -> Option<Arc<Snapshot>> {
        let nodes = self.nodes.read().unwrap_or_else(|e| e.into_inner());
        nodes.get(node).and_then(|s| s.borrow().clone())
    }

    /// Watches a node's snapshots (created empty if unknown).
    pub fn watch(&self, node: &str) -> watch::Receiver<Option<Arc<Snapshot>>> {
        self.sender(node).subscribe()
    }

    /// Forgets a node's snapshot when no stream watches it any more.
    pub fn remove_if_unwatched(&self, node: &str) {
        let mut nodes = self.nodes.write().unwrap_or_else(|e| e.into_inner());
        if nodes.get(node).is_some_and(|s| s.receiver_count() == 0) {
            nodes.remove(node);
        }
    }

    /// Forgets a node's snapshot; its streams see `None` and keep waiting.
    pub fn clear(&self, node: &str) {
        let nodes = self.nodes.read().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = nodes.get(node) {
            s.send_replace(None);
        }
    }

    /// The nodes with a snapshot.
    pub fn nodes(&self) -> Vec<String> {
        let nodes = self.nodes.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<String> = nodes
            .iter()
            .filter(|(_, s)| s.borrow().is_some())
            .map(|(n, _)| n.clone())
            .collect();
        out.sort();
        out
    }

    /// How many nodes have a snapshot (what [`Self::nodes`] would list,
    /// without copying and sorting every name).
    pub fn configured(&self) -> usize {
        let nodes = self.nodes.read().unwrap_or_else(|e| e.into_inner());
        nodes.values().filter(|s| s.borrow().is_some()).count()
    }

    fn sender(&self, node: &str) -> watch::Sender<Option<Arc<Snapshot>>> {
        if let Some(s) = self.nodes.read().unwrap_or_else(|e| e.into_inner()).get(node) {
            return s.clone();
        }
        let mut nodes = self.nodes.write().unwrap_or_else(|e| e.into_inner());
        nodes
            .entry(node.to_string())
            .or_insert_with(|| watch::channel(None).0)
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{Origin, Resource};
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, LocalityLbEndpoints};
    use envoy_types::pb::envoy::config::listener::v3::Listener;

    /// A layer of one cluster `svc` with endpoints at `addresses`.
    fn layer(addresses: &[&str]) -> Arc<SharedLayer> {
        let mut set = ResourceSet::new();
        set.add(
            Origin::Outbound,
            Resource::Cluster(Cluster {
                name: "svc".into(),
                ..Default::default()
            }),
        );
        let lb_endpoints = addresses
            .iter()
            .map(|a| crate::envoy::lb_endpoint(a, 8080))
            .collect();
        set.add(
            Origin::Outbound,
            Resource::Endpoints(ClusterLoadAssignment {
                cluster_name: "svc".into(),
                endpoints: vec![LocalityLbEndpoints {
                    lb_endpoints,
                    ..Default::default()
                }],
                ..Default::default()
            }),
        );
        Arc::new(SharedLayer::new(set))
    }

    /// A proxy's own listener (and, when given, endpoints named `own_eds`)
    /// on `layer`.
    fn proxy_on(layer: &Arc<SharedLayer>, own_eds: Option<&str>) -> ResourceSet {
        let mut set = ResourceSet::new();
        set.add(
            Origin::Inbound,
            Resource::Listener(Listener {
                name: "inbound:10.0.0.1:8080".into(),
                ..Default::default()
            }),
        );
        if let Some(name) = own_eds {
            set.add(
                Origin::Inbound,
                Resource::Endpoints(ClusterLoadAssignment {
                    cluster_name: name.into(),
                    ..Default::default()
                }),
            );
        }
        set.set_layer(layer.clone());
        set
    }

    /// The names of what moved in `now` since `held`, of type `t`.
    fn moved(t: XdsType, now: &Snapshot, held: &Snapshot) -> Option<Vec<String>> {
        let moved = now.get(t).resources.moved_since(&held.get(t).resources)?;
        Some(moved.into_iter().map(|r| r.name().to_string()).collect())
    }

    #[test]
    fn moved_since_names_what_changed_only_when_the_names_are_the_same() {
        let (old, new) = (layer(&["10.0.0.2"]), layer(&["10.0.0.3"]));
        let before = Snapshot::from_resources(&proxy_on(&old, None));
        let after = before.on_layer(&old, &new).expect("rests on the old layer");
        assert_eq!(
            moved(XdsType::Endpoints, &after, &before),
            Some(vec!["svc".to_string()])
        );
        assert_eq!(
            moved(XdsType::Cluster, &after, &before),
            Some(vec![]),
            "the same cluster"
        );
        assert_eq!(
            moved(XdsType::Listener, &after, &before),
            Some(vec![]),
            "its own listener"
        );
        // Another name of its own: not the same names.
        let beside = Snapshot::from_resources(&proxy_on(&new, Some("local")));
        assert_eq!(moved(XdsType::Endpoints, &beside, &after), None);
    }

    #[test]
    fn a_delta_stream_holding_everything_gets_what_moved_onto_a_new_layer() {
        use crate::server::DeltaStream;
        use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
        let (old, new) = (layer(&["10.0.0.2"]), layer(&["10.0.0.3"]));
        let before = Arc::new(Snapshot::from_resources(&proxy_on(&old, None)));
        let after = Arc::new(before.on_layer(&old, &new).expect("rests on the old layer"));
        let request = |t: XdsType, subscribe: &[&str], nonce: &str| DeltaDiscoveryRequest {
            type_url: t.type_url().into(),
            resource_names_subscribe: subscribe.iter().map(|n| n.to_string()).collect(),
            response_nonce: nonce.into(),
            ..Default::default()
        };
        let mut stream = DeltaStream::new();
        stream.on_snapshot(Some(before));
        for (t, names) in [(XdsType::Cluster, &[][..]), (XdsType::Endpoints, &["svc"][..])] {
            let sent = stream
                .on_request(request(t, names, ""))
                .expect("answered")
                .responses;
            assert_eq!(sent.len(), 1, "{t:?}");
            let acked = stream.on_request(request(t, &[], &sent[0].nonce)).expect("ACKed");
            assert!(acked.responses.is_empty(), "{t:?}");
        }
        let out = stream.on_snapshot(Some(after.clone())).responses;
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].type_url, XdsType::Endpoints.type_url());
        let sent: Vec<(&str, u64)> = out[0].resources.iter().map(|r| (r.name(), r.version)).collect();
        let svc = after.get(XdsType::Endpoints).resources["svc"].version;
        assert_eq!(sent, [("svc", svc)]);
        assert!(out[0].removed_resources.is_empty());
        // Envoy holds that snapshot now: it again sends nothing.
        assert!(stream.on_snapshot(Some(after)).responses.is_empty());
    }

    #[test]
    fn a_snapshot_on_a_new_layer_is_what_generating_on_it_gives() {
        let (old, new) = (layer(&["10.0.0.2"]), layer(&["10.0.0.2", "10.0.0.3"]));
        let before = Snapshot::from_resources(&proxy_on(&old, None));
        let swapped = before.on_layer(&old, &new).expect("rests on the old layer");
        let generated = Snapshot::from_resources(&proxy_on(&new, None));
        assert_eq!(swapped.changed_types(&generated), vec![]);
        assert_eq!(swapped.changed_types(&before), vec![XdsType::Endpoints]);
        let names = |s: &Snapshot| -> Vec<String> {
            XdsType::ALL
                .into_iter()
                .flat_map(|t| {
                    s.get(t)
                        .resources
                        .keys()
                        .map(|n| n.to_string())
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        assert_eq!(names(&swapped), names(&generated));
    }

    #[test]
    fn a_snapshot_not_resting_on_the_old_layer_or_versioned_with_its_clusters_is_not_swapped() {
        let (old, new) = (layer(&["10.0.0.2"]), layer(&["10.0.0.3"]));
        let elsewhere = layer(&["10.0.0.9"]);
        let on_another = Snapshot::from_resources(&proxy_on(&elsewhere, None));
        assert!(
            on_another.on_layer(&old, &new).is_none(),
            "rests on another layer"
        );
        let flat = Snapshot::from_resources(&{
            let mut set = proxy_on(&old, None);
            set.remove(XdsType::Listener, "inbound:10.0.0.1:8080");
            set
        });
        assert!(flat.on_layer(&old, &new).is_none(), "copied out of the layer");
        // Endpoints of its own named like a layer's cluster are versioned
        // with that cluster; they must be versioned again.
        let own_eds = Snapshot::from_resources(&{
            let mut set = ResourceSet::new();
            set.add(
                Origin::Inbound,
                Resource::Endpoints(ClusterLoadAssignment {
                    cluster_name: "svc".into(),
                    ..Default::default()
                }),
            );
            set
        });
        assert!(
            own_eds
                .on_layer(&SharedLayer::new(ResourceSet::new()), &new)
                .is_none()
        );
        let beside = Snapshot::from_resources(&proxy_on(&old, Some("local")));
        assert!(
            beside.on_layer(&old, &new).is_some(),
            "other own endpoints are kept"
        );
    }

    #[test]
    fn an_identical_snapshot_takes_the_old_ones_place_without_waking_streams() {
        let (old, same) = (layer(&["10.0.0.2"]), layer(&["10.0.0.2"]));
        let cache = SnapshotCache::new();
        let mut watch = cache.watch("node");
        assert!(cache.set("node", Snapshot::from_resources(&proxy_on(&old, None))));
        watch.mark_unchanged();
        let on_same = Snapshot::from_resources(&proxy_on(&same, None))
            .on_layer(&same, &same)
            .expect("rests on its layer");
        assert!(!cache.set("node", on_same), "nothing changed");
        assert!(!watch.has_changed().expect("open"), "no stream woken");
        // The next swap finds the proxy resting on the layer its record
        // names, not on the one of the same content before it.
        let current = cache.get("node").expect("set");
        assert!(current.on_layer(&same, &layer(&["10.0.0.3"])).is_some());
        assert!(current.on_layer(&old, &layer(&["10.0.0.3"])).is_none());
    }
}
