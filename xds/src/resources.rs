//! A proxy's Envoy resources while they are generated, and once encoded.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, OnceLock, Weak};

use bytes::Bytes;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use prost::{Message, Name};

use crate::proto;

/// The xDS resource types, in the order a change must reach Envoy so that
/// nothing refers to what does not exist yet (make before break).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum XdsType {
    /// Clusters (CDS) first: listeners and routes point at them.
    Cluster,
    /// Endpoints (EDS) of the clusters, which warm until they get them.
    Endpoints,
    /// Secrets (SDS), which clusters and listeners reference by name.
    Secret,
    /// Listeners (LDS) once what they use exists.
    Listener,
    /// Route configurations (RDS) last.
    Route,
}

impl XdsType {
    /// Every type, in push order.
    pub const ALL: [XdsType; 5] = [
        XdsType::Cluster,
        XdsType::Endpoints,
        XdsType::Secret,
        XdsType::Listener,
        XdsType::Route,
    ];

    /// The type URL Envoy uses.
    pub fn type_url(self) -> &'static str {
        match self {
            XdsType::Cluster => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            XdsType::Endpoints => "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
            XdsType::Secret => "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
            XdsType::Listener => "type.googleapis.com/envoy.config.listener.v3.Listener",
            XdsType::Route => "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
        }
    }

    /// The type of a type URL.
    pub fn from_type_url(url: &str) -> Option<XdsType> {
        XdsType::ALL.into_iter().find(|t| t.type_url() == url)
    }

    /// The full message name.
    pub fn message_name(self) -> &'static str {
        proto::type_name(self.type_url())
    }

    /// Whether Envoy subscribes to every resource of this type (wildcard)
    /// rather than naming the ones it wants.
    pub fn is_wildcard(self) -> bool {
        matches!(self, XdsType::Cluster | XdsType::Listener)
    }

    /// A short name for logs and metrics.
    pub fn short(self) -> &'static str {
        match self {
            XdsType::Cluster => "cds",
            XdsType::Endpoints => "eds",
            XdsType::Secret => "sds",
            XdsType::Listener => "lds",
            XdsType::Route => "rds",
        }
    }
}

impl fmt::Display for XdsType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.short())
    }
}

/// What part of the generator produced a resource; MeshProxyPatch matches on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Origin {
    /// Inbound listeners and local app clusters.
    Inbound,
    /// Outbound listeners, clusters and endpoints.
    Outbound,
    /// Transparent proxy passthrough.
    Transparent,
    /// Envoy admin and readiness.
    Admin,
    /// The Prometheus metrics listener.
    Prometheus,
    /// Tracing collectors.
    Tracing,
    /// Access log collectors.
    AccessLog,
    /// Resources added by MeshPassthrough.
    Passthrough,
    /// Clusters added by MeshProxyPatch.
    ProxyTemplateModifications,
    /// Listeners added by MeshProxyPatch.
    MeshProxyPatch,
    /// mTLS secrets.
    Secrets,
    /// kuma-dp's dynamic configuration (the DNS table).
    DynamicConfig,
}

impl Origin {
    /// Kuma's name for the origin.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Inbound => "inbound",
            Origin::Outbound => "outbound",
            Origin::Transparent => "transparent",
            Origin::Admin => "admin",
            Origin::Prometheus => "prometheus",
            Origin::Tracing => "mesh-trace",
            Origin::AccessLog => "meshaccesslog",
            Origin::Passthrough => "meshpassthrough",
            Origin::ProxyTemplateModifications => "proxy-template-modifications",
            Origin::MeshProxyPatch => "mesh-proxy-patch",
            Origin::Secrets => "secrets",
            Origin::DynamicConfig => "dynamic-config",
        }
    }
}

/// One typed Envoy resource.
// Resources are built once and kept in maps; boxing every variant would buy
// nothing but indirection.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Resource {
    /// A cluster.
    Cluster(Cluster),
    /// A cluster's endpoints.
    Endpoints(ClusterLoadAssignment),
    /// A secret.
    Secret(Secret),
    /// A listener.
    Listener(Listener),
    /// A route configuration.
    Route(RouteConfiguration),
}

impl Resource {
    /// The resource's xDS type.
    pub fn xds_type(&self) -> XdsType {
        match self {
            Resource::Cluster(_) => XdsType::Cluster,
            Resource::Endpoints(_) => XdsType::Endpoints,
            Resource::Secret(_) => XdsType::Secret,
            Resource::Listener(_) => XdsType::Listener,
            Resource::Route(_) => XdsType::Route,
        }
    }

    /// The resource's name.
    pub fn name(&self) -> &str {
        match self {
            Resource::Cluster(c) => &c.name,
            Resource::Endpoints(c) => &c.cluster_name,
            Resource::Secret(s) => &s.name,
            Resource::Listener(l) => &l.name,
            Resource::Route(r) => &r.name,
        }
    }

    /// The protobuf encoding.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Resource::Cluster(m) => m.encode_to_vec(),
            Resource::Endpoints(m) => m.encode_to_vec(),
            Resource::Secret(m) => m.encode_to_vec(),
            Resource::Listener(m) => m.encode_to_vec(),
            Resource::Route(m) => m.encode_to_vec(),
        }
    }

    /// A resource from its protobuf encoding.
    pub fn decode(xds_type: XdsType, bytes: &[u8]) -> Result<Resource, prost::DecodeError> {
        Ok(match xds_type {
            XdsType::Cluster => Resource::Cluster(Cluster::decode(bytes)?),
            XdsType::Endpoints => Resource::Endpoints(ClusterLoadAssignment::decode(bytes)?),
            XdsType::Secret => Resource::Secret(Secret::decode(bytes)?),
            XdsType::Listener => Resource::Listener(Listener::decode(bytes)?),
            XdsType::Route => Resource::Route(RouteConfiguration::decode(bytes)?),
        })
    }

    /// Envoy's JSON form.
    pub fn to_json(&self) -> serde_json::Value {
        let json = proto::bytes_to_json(self.xds_type().message_name(), &self.encode());
        // The descriptors describe every type above, so this cannot fail.
        json.unwrap_or(serde_json::Value::Null)
    }

    /// The full message name.
    pub fn message_name(&self) -> String {
        match self {
            Resource::Cluster(_) => Cluster::full_name(),
            Resource::Endpoints(_) => ClusterLoadAssignment::full_name(),
            Resource::Secret(_) => Secret::full_name(),
            Resource::Listener(_) => Listener::full_name(),
            Resource::Route(_) => RouteConfiguration::full_name(),
        }
    }
}

/// A resource ready to send: its encoding, wrapped once as every response
/// carries it, and a content hash used as its version (stable across
/// restarts).
///
/// Both ADS protocols carry a resource as field 2 holding an `Any` (a
/// `DiscoveryResponse`'s `resources`, a delta `Resource`'s `resource`), so
/// that field is encoded here once and every response to every proxy that
/// holds the resource sends these very bytes: a response costs references,
/// not copies, however many streams are waiting to be written to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedResource {
    /// The resource type.
    pub xds_type: XdsType,
    /// The resource name (shared with the generated entry it came from and
    /// with every stream's record of what it sent).
    pub name: Arc<str>,
    /// Field 2 of an xDS response: tag, length, then the `Any` (type URL,
    /// value).
    any_field: Bytes,
    /// Where the value (the resource's own encoding) starts in `any_field`.
    value_start: u32,
    /// The content hash.
    pub hash: u64,
}

impl EncodedResource {
    /// Encodes and hashes a resource.
    pub fn new(resource: &Resource) -> Self {
        Self::from_bytes(resource.xds_type(), resource.name(), &resource.encode())
    }

    /// Wraps a resource's protobuf encoding.
    pub fn from_bytes(xds_type: XdsType, name: impl Into<Arc<str>>, value: &[u8]) -> Self {
        use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
        let type_url = xds_type.type_url().as_bytes();
        let field_len = |len: usize| key_len(1) + encoded_len_varint(len as u64) + len;
        let any_len = field_len(type_url.len())
            + if value.is_empty() {
                0
            } else {
                field_len(value.len())
            };
        let mut buf = Vec::with_capacity(field_len(any_len));
        encode_key(2, WireType::LengthDelimited, &mut buf);
        encode_varint(any_len as u64, &mut buf);
        encode_key(1, WireType::LengthDelimited, &mut buf);
        encode_varint(type_url.len() as u64, &mut buf);
        buf.extend_from_slice(type_url);
        if !value.is_empty() {
            encode_key(2, WireType::LengthDelimited, &mut buf);
            encode_varint(value.len() as u64, &mut buf);
        }
        // A resource is far below 4 GiB (a whole mesh's snapshot is MiBs).
        let value_start = u32::try_from(buf.len()).unwrap_or(u32::MAX);
        buf.extend_from_slice(value);
        EncodedResource {
            xds_type,
            hash: proto::content_hash(xds_type.message_name(), value),
            name: name.into(),
            any_field: Bytes::from(buf),
            value_start,
        }
    }

    /// The resource's protobuf encoding.
    pub fn bytes(&self) -> &[u8] {
        &self.any_field[self.value_start as usize..]
    }

    /// The resource as field 2 of an xDS response (see the type's doc);
    /// cloning it shares the bytes.
    pub fn any_field(&self) -> &Bytes {
        &self.any_field
    }

    /// The version string of this resource.
    pub fn version(&self) -> String {
        format!("{:016x}", self.hash)
    }
}

/// Encodings shared by every proxy that has a resource byte for byte: most
/// of a proxy's own resources (its passthrough listeners and clusters, its
/// readiness and admin clusters, often its application cluster) are those
/// of every other proxy, and each held its own copy (about 2.5 KiB of
/// bytes per proxy of a thousand).
#[derive(Debug, Default)]
pub struct SharedEncodings {
    by_content: HashMap<(XdsType, u64), Weak<EncodedResource>>,
    /// How many entries the table may hold before the dead ones are swept.
    sweep_at: usize,
}

impl SharedEncodings {
    /// The encoding held for `encoded`'s content, else `encoded`, which is
    /// then held for whoever has the same.
    pub fn share(&mut self, encoded: &Arc<EncodedResource>) -> Arc<EncodedResource> {
        let key = (encoded.xds_type, encoded.hash);
        if let Some(held) = self.by_content.get(&key).and_then(Weak::upgrade)
            && held.any_field == encoded.any_field
        {
            return held;
        }
        if self.by_content.len() >= self.sweep_at {
            self.by_content.retain(|_, e| e.strong_count() > 0);
            self.sweep_at = (2 * self.by_content.len()).max(1024);
        }
        self.by_content.insert(key, Arc::downgrade(encoded));
        encoded.clone()
    }
}

/// A generated resource, where it came from, and (once asked for) its
/// encoding. Entries are shared between the proxies whose config contains
/// the same resource, so each is encoded and hashed once.
#[derive(Debug)]
pub struct Generated {
    origin: Origin,
    resource: Resource,
    /// The name, shared with the set's key.
    name: Arc<str>,
    encoded: OnceLock<Arc<EncodedResource>>,
}

impl Clone for Generated {
    fn clone(&self) -> Self {
        Generated {
            origin: self.origin,
            resource: self.resource.clone(),
            name: self.name.clone(),
            encoded: self.encoded.clone(),
        }
    }
}

impl PartialEq for Generated {
    fn eq(&self, other: &Self) -> bool {
        self.origin == other.origin && self.resource == other.resource
    }
}

impl Generated {
    /// A new entry.
    pub fn new(origin: Origin, resource: Resource) -> Self {
        let name = Arc::from(resource.name());
        Generated {
            origin,
            resource,
            name,
            encoded: OnceLock::new(),
        }
    }

    /// An entry back from its encoding (which it keeps, so its version
    /// stays): what is kept of a resource between generations is only its
    /// encoding, decoded again in the rare case it is needed.
    pub fn from_encoded(origin: Origin, encoded: Arc<EncodedResource>) -> Result<Self, prost::DecodeError> {
        let resource = Resource::decode(encoded.xds_type, encoded.bytes())?;
        Ok(Generated {
            origin,
            name: encoded.name.clone(),
            resource,
            encoded: OnceLock::from(encoded),
        })
    }

    /// Which generator part produced it.
    pub fn origin(&self) -> Origin {
        self.origin
    }

    /// The resource.
    pub fn resource(&self) -> &Resource {
        &self.resource
    }

    /// The resource for editing; forgets the stale encoding.
    pub fn resource_mut(&mut self) -> &mut Resource {
        self.encoded = OnceLock::new();
        &mut self.resource
    }

    /// The encoding, computed on first use.
    pub fn encoded(&self) -> &Arc<EncodedResource> {
        self.encoded.get_or_init(|| {
            let resource = &self.resource;
            // The entry's name, shared, unless an edit renamed the resource.
            let name = if *self.name == *resource.name() {
                self.name.clone()
            } else {
                Arc::from(resource.name())
            };
            Arc::new(EncodedResource::from_bytes(
                resource.xds_type(),
                name,
                &resource.encode(),
            ))
        })
    }
}

/// A resource and the version it is sent with.
#[derive(Clone, Debug)]
pub struct VersionedResource {
    /// The encoded resource.
    pub encoded: Arc<EncodedResource>,
    /// Its version: its content hash, except for endpoints, whose version
    /// also covers their cluster's so that a changed cluster gets its
    /// endpoints again (Envoy keeps a re-created cluster warming until then).
    pub version: u64,
}

impl VersionedResource {
    /// Versions a resource; `cluster` is the cluster named like it.
    pub fn new(encoded: Arc<EncodedResource>, cluster: Option<&EncodedResource>) -> Self {
        let version = match cluster {
            Some(cluster) if encoded.xds_type == XdsType::Endpoints => {
                crate::digest::digest(&(encoded.hash, cluster.hash))
            }
            _ => encoded.hash,
        };
        VersionedResource { encoded, version }
    }

    /// The resource name.
    pub fn name(&self) -> &str {
        &self.encoded.name
    }

    /// Its part of its type's version, which is the wrapping sum of the
    /// parts of the type's resources: the same for the same resources
    /// however they are split between a proxy and a shared layer.
    pub fn version_term(&self) -> u64 {
        xxhash_rust::xxh3::xxh3_64_with_seed(self.encoded.name.as_bytes(), self.version)
    }
}

/// Resources that many proxies share whole (e.g. every outbound of the
/// transparent proxies with the same `to` policies), sorted by name,
/// encoded and versioned once for all of them.
#[derive(Debug)]
pub struct SharedLayer {
    items: [Vec<Arc<Generated>>; 5],
    versioned: [Arc<[VersionedResource]>; 5],
    version_sums: [u64; 5],
}

impl SharedLayer {
    /// A layer of every resource of `set`.
    pub fn new(mut set: ResourceSet) -> Self {
        set.flatten();
        let items: [Vec<Arc<Generated>>; 5] = set.items.map(|m| m.into_values().collect());
        let cluster = |name: &str| {
            let clusters = &items[slot(XdsType::Cluster)];
            clusters
                .binary_search_by(|c| (*c.name).cmp(name))
                .ok()
                .map(|i| clusters[i].encoded().clone())
        };
        let versioned: [Arc<[VersionedResource]>; 5] = std::array::from_fn(|i| {
            items[i]
                .iter()
                .map(|g| {
                    let cluster = (XdsType::ALL[i] == XdsType::Endpoints)
                        .then(|| cluster(&g.name))
                        .flatten();
                    VersionedResource::new(g.encoded().clone(), cluster.as_deref())
                })
                .collect()
        });
        let version_sums = std::array::from_fn(|i| {
            versioned[i]
                .iter()
                .fold(0u64, |sum, r| sum.wrapping_add(r.version_term()))
        });
        SharedLayer {
            items,
            versioned,
            version_sums,
        }
    }

    /// A resource by type and name.
    pub fn get(&self, xds_type: XdsType, name: &str) -> Option<&Arc<Generated>> {
        let list = &self.items[slot(xds_type)];
        list.binary_search_by(|g| (*g.name).cmp(name))
            .ok()
            .map(|i| &list[i])
    }

    /// The resources of one type with their names, by name.
    pub fn of_type(&self, xds_type: XdsType) -> impl Iterator<Item = (&Arc<str>, &Arc<Generated>)> {
        self.items[slot(xds_type)].iter().map(|g| (&g.name, g))
    }

    /// Whether `other` has resources of type `t` named as this one's.
    pub fn same_names(&self, other: &SharedLayer, t: XdsType) -> bool {
        let (a, b) = (&self.items[slot(t)], &other.items[slot(t)]);
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| Arc::ptr_eq(&x.name, &y.name) || x.name == y.name)
    }

    /// The versioned resources of one type, by name.
    pub fn versioned(&self, xds_type: XdsType) -> &Arc<[VersionedResource]> {
        &self.versioned[slot(xds_type)]
    }

    /// The sum of the version terms of one type's resources.
    pub fn version_sum(&self, xds_type: XdsType) -> u64 {
        self.version_sums[slot(xds_type)]
    }

    /// The number of resources.
    pub fn len(&self) -> usize {
        self.items.iter().map(Vec::len).sum()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One resource of a [`ResourceSet`] being edited: reading is free, the
/// first write copies the entry if other proxies share it.
pub struct Entry<'a> {
    slot: &'a mut Arc<Generated>,
}

impl Entry<'_> {
    /// Which generator part produced it.
    pub fn origin(&self) -> Origin {
        self.slot.origin
    }

    /// The resource.
    pub fn resource(&self) -> &Resource {
        &self.slot.resource
    }

    /// The resource for editing.
    pub fn resource_mut(&mut self) -> &mut Resource {
        Arc::make_mut(self.slot).resource_mut()
    }
}

/// All resources generated for one proxy, ordered by type then name so that
/// output is deterministic.
///
/// A set may rest on a [`SharedLayer`]: resources many proxies share whole,
/// which the set then neither copies nor indexes. The layer is invisible to
/// readers (they see one set ordered by name); the first edit that would
/// touch it copies it into the set.
#[derive(Clone, Debug, Default)]
pub struct ResourceSet {
    /// One map per type, in [`XdsType::ALL`] order.
    items: [BTreeMap<Arc<str>, Arc<Generated>>; 5],
    layer: Option<Arc<SharedLayer>>,
}

impl PartialEq for ResourceSet {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

fn slot(t: XdsType) -> usize {
    XdsType::ALL.iter().position(|x| *x == t).unwrap_or(0)
}

/// Named resources of one type, sorted by name.
type Named<'a> = (&'a Arc<str>, &'a Arc<Generated>);

/// Two sequences sorted by `key`, without a key in common, as one.
pub(crate) fn merge_sorted<T, K: Ord + ?Sized>(
    a: impl Iterator<Item = T>,
    b: impl Iterator<Item = T>,
    key: impl Fn(&T) -> &K,
) -> impl Iterator<Item = T> {
    let mut a = a.peekable();
    let mut b = b.peekable();
    std::iter::from_fn(move || match (a.peek(), b.peek()) {
        (Some(x), Some(y)) if key(y) < key(x) => b.next(),
        (Some(_), _) => a.next(),
        (None, _) => b.next(),
    })
}

fn merge_by_name<'a>(
    own: impl Iterator<Item = Named<'a>>,
    layer: impl Iterator<Item = Named<'a>>,
) -> impl Iterator<Item = Named<'a>> {
    merge_sorted(own, layer, |(name, _)| &***name)
}

impl ResourceSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Puts the set on `layer`. Resources of the set named like one of the
    /// layer's stay and replace it (the layer is then copied in).
    pub fn set_layer(&mut self, layer: Arc<SharedLayer>) {
        self.flatten();
        // The set's own resources are the few; the layer's the many.
        let collides = XdsType::ALL.into_iter().any(|t| {
            self.items[slot(t)]
                .keys()
                .any(|name| layer.get(t, name).is_some())
        });
        if collides {
            for t in XdsType::ALL {
                for (name, g) in layer.of_type(t) {
                    self.items[slot(t)]
                        .entry(name.clone())
                        .or_insert_with(|| g.clone());
                }
            }
        } else {
            self.layer = Some(layer);
        }
    }

    /// The shared layer the set rests on.
    pub fn layer(&self) -> Option<&Arc<SharedLayer>> {
        self.layer.as_ref()
    }

    /// Encodes the set's own resources, sharing each encoding with the
    /// proxies that have the same (see [`SharedEncodings`]). Resources the
    /// set shares with others already (outbound bundles) keep theirs.
    pub fn share_encodings(&mut self, encodings: &mut SharedEncodings) {
        for map in &mut self.items {
            for generated in map.values_mut() {
                let encoded = generated.encoded();
                let shared = encodings.share(encoded);
                if !Arc::ptr_eq(&shared, encoded)
                    && let Some(generated) = Arc::get_mut(generated)
                {
                    generated.encoded = OnceLock::from(shared);
                }
            }
        }
    }

    /// The set's own resources of one type (not the layer's).
    pub fn own_of_type(&self, xds_type: XdsType) -> impl Iterator<Item = Named<'_>> {
        self.items[slot(xds_type)].iter()
    }

    /// Copies the layer into the set, before an edit that may touch it.
    fn flatten(&mut self) {
        if let Some(layer) = self.layer.take() {
            for t in XdsType::ALL {
                self.items[slot(t)].extend(layer.of_type(t).map(|(n, g)| (n.clone(), g.clone())));
            }
        }
    }

    /// Adds or replaces a resource.
    pub fn add(&mut self, origin: Origin, resource: Resource) {
        self.add_shared(Arc::new(Generated::new(origin, resource)));
    }

    /// Adds or replaces a resource shared with other sets.
    pub fn add_shared(&mut self, generated: Arc<Generated>) {
        let t = generated.resource.xds_type();
        if self
            .layer
            .as_ref()
            .is_some_and(|l| l.get(t, &generated.name).is_some())
        {
            self.flatten();
        }
        self.items[slot(t)].insert(generated.name.clone(), generated);
    }

    /// Removes a resource.
    pub fn remove(&mut self, xds_type: XdsType, name: &str) -> Option<Arc<Generated>> {
        self.flatten();
        self.items[slot(xds_type)].remove(name)
    }

    /// A resource by type and name.
    pub fn get(&self, xds_type: XdsType, name: &str) -> Option<&Generated> {
        self.shared(xds_type, name).map(|g| g.as_ref())
    }

    /// A resource by type and name, as shared.
    pub fn shared(&self, xds_type: XdsType, name: &str) -> Option<&Arc<Generated>> {
        self.items[slot(xds_type)]
            .get(name)
            .or_else(|| self.layer.as_ref()?.get(xds_type, name))
    }

    /// The resources of one type with their names, as shared.
    pub fn shared_of_type(&self, xds_type: XdsType) -> impl Iterator<Item = Named<'_>> {
        let layer = self.layer.as_ref().map(|l| l.of_type(xds_type));
        merge_by_name(self.items[slot(xds_type)].iter(), layer.into_iter().flatten())
    }

    /// Whether a resource exists.
    pub fn contains(&self, xds_type: XdsType, name: &str) -> bool {
        self.shared(xds_type, name).is_some()
    }

    /// A resource by type and name, for editing.
    pub fn get_mut(&mut self, xds_type: XdsType, name: &str) -> Option<Entry<'_>> {
        self.flatten();
        self.items[slot(xds_type)]
            .get_mut(name)
            .map(|slot| Entry { slot })
    }

    /// Every resource, by type then name.
    pub fn iter(&self) -> impl Iterator<Item = &Generated> {
        XdsType::ALL.into_iter().flat_map(|t| self.of_type(t))
    }

    /// Every resource, for editing.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = Entry<'_>> {
        self.flatten();
        self.items
            .iter_mut()
            .flat_map(|m| m.values_mut())
            .map(|slot| Entry { slot })
    }

    /// The resources of one type.
    pub fn of_type(&self, xds_type: XdsType) -> impl Iterator<Item = &Generated> {
        self.shared_of_type(xds_type).map(|(_, g)| g.as_ref())
    }

    /// The names of one type.
    pub fn names(&self, xds_type: XdsType) -> Vec<String> {
        self.shared_of_type(xds_type)
            .map(|(k, _)| k.to_string())
            .collect()
    }

    /// The number of resources.
    pub fn len(&self) -> usize {
        self.items.iter().map(BTreeMap::len).sum::<usize>() + self.layer.as_ref().map_or(0, |l| l.len())
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Moves every resource of `other` into this set.
    pub fn merge(&mut self, mut other: ResourceSet) {
        self.flatten();
        other.flatten();
        for (mine, theirs) in self.items.iter_mut().zip(other.items) {
            mine.extend(theirs);
        }
    }

    /// Keeps the resources `keep` accepts.
    pub fn retain(&mut self, mut keep: impl FnMut(&Generated) -> bool) {
        self.flatten();
        for m in &mut self.items {
            m.retain(|_, g| keep(g));
        }
    }

    /// Every resource encoded (each encoded at most once however many
    /// proxies share it).
    pub fn encode(&self) -> Vec<Arc<EncodedResource>> {
        self.iter().map(|g| g.encoded().clone()).collect()
    }

    /// The resources as YAML in Kuma's golden-file layout: a list of
    /// `{name, origin, resource: {'@type': …, …}}`, by type then name.
    pub fn to_yaml(&self) -> String {
        let list: Vec<serde_json::Value> = self
            .iter()
            .map(|g| {
                let mut resource = serde_json::Map::new();
                resource.insert("@type".into(), format!("type.googleapis.com/{}", g.resource.message_name()).into());
                if let serde_json::Value::Object(fields) = g.resource.to_json() {
                    resource.extend(fields);
                }
                serde_json::json!({"name": g.resource.name(), "origin": g.origin.as_str(), "resource": resource})
            })
            .collect();
        serde_yaml::to_string(&list).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;

    fn cluster_and_endpoints(set: &mut ResourceSet, origin: Origin, name: &str) {
        set.add(
            origin,
            Resource::Cluster(Cluster {
                name: name.into(),
                ..Default::default()
            }),
        );
        set.add(
            origin,
            Resource::Endpoints(ClusterLoadAssignment {
                cluster_name: name.into(),
                ..Default::default()
            }),
        );
    }

    #[test]
    fn proxies_hold_one_encoding_of_what_they_have_alike() {
        let mut encodings = SharedEncodings::default();
        let proxy = |cluster: &str| {
            let mut set = ResourceSet::new();
            cluster_and_endpoints(&mut set, Origin::Inbound, "localhost:8080");
            cluster_and_endpoints(&mut set, Origin::Inbound, cluster);
            set
        };
        let (mut first, mut second) = (proxy("a"), proxy("b"));
        first.share_encodings(&mut encodings);
        second.share_encodings(&mut encodings);
        let encoding =
            |set: &ResourceSet, name: &str| set.get(XdsType::Cluster, name).unwrap().encoded().clone();
        assert!(Arc::ptr_eq(
            &encoding(&first, "localhost:8080"),
            &encoding(&second, "localhost:8080")
        ));
        assert_eq!(
            encoding(&second, "b").name.as_ref(),
            "b",
            "different content, own encoding"
        );
        let before = crate::snapshot::Snapshot::from_resources(&proxy("a"));
        assert_eq!(
            crate::snapshot::Snapshot::from_resources(&first).changed_types(&before),
            vec![]
        );
    }

    #[test]
    fn encodings_nobody_holds_are_swept_as_the_table_grows() {
        let mut encodings = SharedEncodings::default();
        let encoded = |name: &str| {
            let mut set = ResourceSet::new();
            cluster_and_endpoints(&mut set, Origin::Inbound, name);
            set.get(XdsType::Cluster, name).unwrap().encoded().clone()
        };
        // Held by nobody but the table's weak references once shared.
        for i in 0..3000 {
            encodings.share(&encoded(&format!("gone-{i}")));
        }
        let kept = encoded("kept");
        let held = encodings.share(&kept);
        for i in 0..3000 {
            encodings.share(&encoded(&format!("later-{i}")));
        }
        assert!(
            encodings.by_content.len() < 2048,
            "dead entries are swept: {} left",
            encodings.by_content.len()
        );
        assert!(
            Arc::ptr_eq(&encodings.share(&encoded("kept")), &held),
            "a live encoding stays shared"
        );
    }

    #[test]
    fn a_set_on_a_layer_reads_and_versions_like_the_same_set_flat() {
        let mut shared = ResourceSet::new();
        for name in ["b", "d"] {
            cluster_and_endpoints(&mut shared, Origin::Outbound, name);
        }
        let layer = Arc::new(SharedLayer::new(shared.clone()));
        let mut layered = ResourceSet::new();
        let mut flat = shared;
        for name in ["a", "c", "e"] {
            cluster_and_endpoints(&mut layered, Origin::Inbound, name);
            cluster_and_endpoints(&mut flat, Origin::Inbound, name);
        }
        layered.set_layer(layer.clone());
        assert!(layered.layer().is_some());
        assert_eq!(layered, flat);
        assert_eq!(layered.len(), 10);
        assert_eq!(layered.names(XdsType::Cluster), ["a", "b", "c", "d", "e"]);
        assert!(layered.contains(XdsType::Endpoints, "d"));

        let (on_layer, alone) = (
            crate::snapshot::Snapshot::from_resources(&layered),
            crate::snapshot::Snapshot::from_resources(&flat),
        );
        for t in XdsType::ALL {
            assert_eq!(on_layer.version(t), alone.version(t), "{t}");
            let versions = |s: &crate::snapshot::Snapshot| -> Vec<(String, u64)> {
                s.get(t)
                    .resources
                    .iter()
                    .map(|(n, r)| (n.to_string(), r.version))
                    .collect()
            };
            assert_eq!(versions(&on_layer), versions(&alone), "{t}");
        }
        assert!(on_layer.get(XdsType::Endpoints).resources.contains_key("b"));

        // The first edit of the layer's resources copies it in.
        if let Some(mut b) = layered.get_mut(XdsType::Cluster, "b")
            && let Resource::Cluster(c) = b.resource_mut()
        {
            c.alt_stat_name = "edited".into();
        }
        assert!(layered.layer().is_none());
        assert_ne!(layered, flat);
        assert_eq!(
            layer.get(XdsType::Cluster, "b").map(|g| g.resource().clone()),
            flat.get(XdsType::Cluster, "b").map(|g| g.resource().clone())
        );

        // A resource of the set named like one of the layer's stays.
        let mut own = ResourceSet::new();
        cluster_and_endpoints(&mut own, Origin::Inbound, "b");
        own.set_layer(layer);
        assert_eq!(
            own.get(XdsType::Cluster, "b").map(Generated::origin),
            Some(Origin::Inbound)
        );
        assert_eq!(own.len(), 4);
    }

    #[test]
    fn the_shared_field_is_a_responses_resource_and_ends_with_the_encoding() {
        let cluster = Resource::Cluster(Cluster {
            name: "backend".into(),
            ..Default::default()
        });
        let encoded = EncodedResource::new(&cluster);
        assert_eq!(encoded.bytes(), cluster.encode().as_slice());
        // Read as a response holding only it, the field is the resource
        // wrapped in an Any of its type.
        let response = DiscoveryResponse::decode(&encoded.any_field()[..]).unwrap();
        assert_eq!(response.resources.len(), 1);
        assert_eq!(response.resources[0].type_url, XdsType::Cluster.type_url());
        assert_eq!(response.resources[0].value, cluster.encode());
        assert_eq!(
            encoded.hash,
            proto::content_hash(XdsType::Cluster.message_name(), &cluster.encode())
        );
    }
}
