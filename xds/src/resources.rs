//! A proxy's Envoy resources while they are generated, and once encoded.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, OnceLock};

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
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResourceSet {
    /// One map per type, in [`XdsType::ALL`] order.
    items: [BTreeMap<Arc<str>, Arc<Generated>>; 5],
}

fn slot(t: XdsType) -> usize {
    XdsType::ALL.iter().position(|x| *x == t).unwrap_or(0)
}

impl ResourceSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a resource.
    pub fn add(&mut self, origin: Origin, resource: Resource) {
        self.add_shared(Arc::new(Generated::new(origin, resource)));
    }

    /// Adds or replaces a resource shared with other sets.
    pub fn add_shared(&mut self, generated: Arc<Generated>) {
        let t = generated.resource.xds_type();
        self.items[slot(t)].insert(generated.name.clone(), generated);
    }

    /// Removes a resource.
    pub fn remove(&mut self, xds_type: XdsType, name: &str) -> Option<Arc<Generated>> {
        self.items[slot(xds_type)].remove(name)
    }

    /// A resource by type and name.
    pub fn get(&self, xds_type: XdsType, name: &str) -> Option<&Generated> {
        self.items[slot(xds_type)].get(name).map(|g| g.as_ref())
    }

    /// A resource by type and name, as shared.
    pub fn shared(&self, xds_type: XdsType, name: &str) -> Option<&Arc<Generated>> {
        self.items[slot(xds_type)].get(name)
    }

    /// The resources of one type with their names, as shared.
    pub fn shared_of_type(&self, xds_type: XdsType) -> impl Iterator<Item = (&Arc<str>, &Arc<Generated>)> {
        self.items[slot(xds_type)].iter()
    }

    /// Whether a resource exists.
    pub fn contains(&self, xds_type: XdsType, name: &str) -> bool {
        self.items[slot(xds_type)].contains_key(name)
    }

    /// A resource by type and name, for editing.
    pub fn get_mut(&mut self, xds_type: XdsType, name: &str) -> Option<Entry<'_>> {
        self.items[slot(xds_type)]
            .get_mut(name)
            .map(|slot| Entry { slot })
    }

    /// Every resource, by type then name.
    pub fn iter(&self) -> impl Iterator<Item = &Generated> {
        self.items.iter().flat_map(|m| m.values()).map(|g| g.as_ref())
    }

    /// Every resource, for editing.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = Entry<'_>> {
        self.items
            .iter_mut()
            .flat_map(|m| m.values_mut())
            .map(|slot| Entry { slot })
    }

    /// The resources of one type.
    pub fn of_type(&self, xds_type: XdsType) -> impl Iterator<Item = &Generated> {
        self.items[slot(xds_type)].values().map(|g| g.as_ref())
    }

    /// The names of one type.
    pub fn names(&self, xds_type: XdsType) -> Vec<String> {
        self.items[slot(xds_type)].keys().map(|k| k.to_string()).collect()
    }

    /// The number of resources.
    pub fn len(&self) -> usize {
        self.items.iter().map(BTreeMap::len).sum()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Moves every resource of `other` into this set.
    pub fn merge(&mut self, other: ResourceSet) {
        for (mine, theirs) in self.items.iter_mut().zip(other.items) {
            mine.extend(theirs);
        }
    }

    /// Keeps the resources `keep` accepts.
    pub fn retain(&mut self, mut keep: impl FnMut(&Generated) -> bool) {
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
