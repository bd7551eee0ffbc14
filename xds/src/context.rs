//! What config generation reads: a mesh's resources digested into services
//! and endpoints ([`MeshContext`]), and one proxy's own facts ([`Proxy`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;

use kuma_crds::dataplane::{DataplaneSpec, PROTOCOL_TAG, SERVICE_TAG, ZONE_TAG};
use kuma_crds::mesh::MeshSpec;
use kuma_crds::resource::{Resource, ResourceType, Spec};

/// A protocol a service speaks, as far as Envoy config is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// Opaque TCP.
    Tcp,
    /// HTTP/1.1.
    Http,
    /// HTTP/2.
    Http2,
    /// gRPC.
    Grpc,
    /// Kafka (proxied as TCP).
    Kafka,
}

impl Protocol {
    /// Parses Kuma's protocol names; unknown ones are TCP.
    pub fn parse(text: &str) -> Protocol {
        match text.to_ascii_lowercase().as_str() {
            "http" => Protocol::Http,
            "http2" => Protocol::Http2,
            "grpc" => Protocol::Grpc,
            "kafka" => Protocol::Kafka,
            _ => Protocol::Tcp,
        }
    }

    /// Whether Envoy handles it with the HTTP connection manager.
    pub fn is_http(self) -> bool {
        matches!(self, Protocol::Http | Protocol::Http2 | Protocol::Grpc)
    }

    /// Kuma's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Http => "http",
            Protocol::Http2 => "http2",
            Protocol::Grpc => "grpc",
            Protocol::Kafka => "kafka",
        }
    }
}

/// One instance of a service: a ready inbound of some dataplane.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    /// The address other proxies connect to.
    pub address: String,
    /// The inbound port (Envoy's, not the app's).
    pub port: u32,
    /// The inbound's tags.
    pub tags: BTreeMap<String, String>,
    /// The zone, from `kuma.io/zone`.
    pub zone: Option<String>,
    /// The dataplane's core name.
    pub dataplane: String,
    /// The dataplane's labels, sent as Kuma sends them (`io.kuma.labels`).
    pub labels: BTreeMap<String, String>,
}

/// A service of the mesh, known from the dataplane inbounds carrying its
/// `kuma.io/service` tag.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Service {
    /// The `kuma.io/service` value.
    pub name: String,
    /// The protocol all its inbounds agree on (TCP when they disagree).
    pub protocol: Protocol,
    /// Ready endpoints, sorted.
    pub endpoints: Vec<Endpoint>,
    /// The virtual IP transparent proxies reach it on.
    pub vip: Ipv4Addr,
    /// A digest of all of the above: config built from a service is still
    /// valid while its digest is unchanged.
    pub digest: u64,
}

/// Everything about one mesh that generation needs, shared by all its proxies.
#[derive(Clone, Debug)]
pub struct MeshContext {
    /// The mesh name.
    pub name: String,
    /// The mesh spec.
    pub mesh: Arc<MeshSpec>,
    /// Services by name.
    pub services: BTreeMap<String, Arc<Service>>,
    /// Policies and routes of the mesh, by type, sorted by name.
    pub policies: BTreeMap<ResourceType, Vec<Resource>>,
    /// Every policy resource in one list.
    pub all_policies: Vec<Resource>,
    /// The policies prepared for matching.
    pub policy_index: Arc<kuma_crds::matching::PolicyIndex>,
    /// A digest of the mesh name and spec.
    pub mesh_digest: u64,
    /// The VIP outbound of every service (what transparent proxies reach).
    pub vip_targets: Vec<crate::generate::KeyedTarget>,
    /// The mesh's mTLS, when enabled and its CA is available.
    pub mtls: Option<Arc<crate::mtls::MeshMtls>>,
    /// Why mTLS is enabled but unusable (its proxies then keep their last
    /// configuration rather than fall back to plaintext).
    pub mtls_error: Option<crate::mtls::MtlsError>,
}

/// The VIP range transparent proxies use for services (`240.0.0.0/4`).
const VIP_BASE: u32 = 0xF000_0000;
const VIP_SIZE: u32 = 1 << 28;

/// Gives every service a stable VIP: a hash of its name into `240.0.0.0/4`,
/// probing on collisions in name order, so adding a service never moves
/// another one's VIP unless they collide.
fn allocate_vips(names: &BTreeSet<String>) -> BTreeMap<String, Ipv4Addr> {
    let mut used = BTreeSet::new();
    let mut out = BTreeMap::new();
    for name in names {
        let mut offset = (xxhash_rust::xxh3::xxh3_64(name.as_bytes()) % u64::from(VIP_SIZE - 2)) as u32 + 1;
        while !used.insert(offset) {
            offset = offset % (VIP_SIZE - 2) + 1;
        }
        out.insert(name.clone(), Ipv4Addr::from(VIP_BASE + offset));
    }
    out
}

impl MeshContext {
    /// Digests a mesh's resources: `mesh` must be a Mesh, `resources` the
    /// mesh's dataplanes and policies (other kinds are ignored).
    pub fn build<'a>(
        mesh_name: &str,
        mesh: &MeshSpec,
        resources: impl IntoIterator<Item = &'a Resource>,
    ) -> Self {
        let mut endpoints: BTreeMap<String, Vec<Endpoint>> = BTreeMap::new();
        let mut protocols: BTreeMap<String, BTreeSet<Protocol>> = BTreeMap::new();
        let mut policies: BTreeMap<ResourceType, Vec<Resource>> = BTreeMap::new();
        let mut secrets: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for r in resources {
            match &r.spec {
                Spec::Secret(s) => {
                    secrets.insert(r.meta.core_name(), s.bytes());
                }
                Spec::Dataplane(dp) => {
                    for (service, endpoint, protocol) in
                        dataplane_endpoints(&r.meta.core_name(), &r.meta.labels, dp)
                    {
                        protocols.entry(service.clone()).or_default().insert(protocol);
                        if let Some(e) = endpoint {
                            endpoints.entry(service).or_default().push(e);
                        } else {
                            endpoints.entry(service).or_default();
                        }
                    }
                }
                _ if r.resource_type().is_policy() => {
                    policies.entry(r.resource_type()).or_default().push(r.clone());
                }
                _ => {}
            }
        }
        for list in policies.values_mut() {
            list.sort_by_key(|r| r.meta.core_name());
        }
        let names: BTreeSet<String> = endpoints.keys().cloned().collect();
        let vips = allocate_vips(&names);
        let services = endpoints
            .into_iter()
            .map(|(name, mut eps)| {
                eps.sort();
                let protocol = match protocols.get(&name) {
                    Some(set) if set.len() == 1 => *set.iter().next().unwrap_or(&Protocol::Tcp),
                    _ => Protocol::Tcp,
                };
                let vip = vips[&name];
                let digest = crate::digest::digest(&(&name, protocol, &eps, vip));
                (
                    name.clone(),
                    Arc::new(Service {
                        name,
                        protocol,
                        endpoints: eps,
                        vip,
                        digest,
                    }),
                )
            })
            .collect::<BTreeMap<String, Arc<Service>>>();
        let all_policies: Vec<Resource> = policies.values().flatten().cloned().collect();
        let policy_index = Arc::new(kuma_crds::matching::PolicyIndex::new(&all_policies));
        let vip_targets = crate::generate::vip_targets(&services);
        let (mtls, mtls_error) = match crate::mtls::resolve(mesh_name, mesh, &secrets) {
            Ok(m) => (m.map(Arc::new), None),
            Err(e) => (None, Some(e)),
        };
        // What outbound bundles read of the mesh: its spec, and whether its
        // mTLS is in force (which depends on secrets as well).
        let mut mesh_digest = crate::digest::JsonDigest::new();
        mesh_digest.add(mesh_name);
        mesh_digest.add(mesh);
        mesh_digest.add(&mtls.as_ref().map(|m| m.backend.as_str()));
        MeshContext {
            name: mesh_name.to_string(),
            mesh: Arc::new(mesh.clone()),
            services,
            policies,
            all_policies,
            policy_index,
            vip_targets,
            mtls,
            mtls_error,
            mesh_digest: mesh_digest.finish128() as u64,
        }
    }

    /// A service's digest (0 for unknown services).
    pub fn service_digest(&self, service: &str) -> u64 {
        self.services.get(service).map(|s| s.digest).unwrap_or(0)
    }

    /// A service's protocol (TCP for unknown services).
    pub fn protocol_of(&self, service: &str) -> Protocol {
        self.services
            .get(service)
            .map(|s| s.protocol)
            .unwrap_or(Protocol::Tcp)
    }
}

/// The services a dataplane's inbounds provide, with the endpoint each
/// contributes when it is ready (`None` when not ready).
pub fn dataplane_endpoints(
    name: &str,
    labels: &BTreeMap<String, String>,
    dp: &DataplaneSpec,
) -> Vec<(String, Option<Endpoint>, Protocol)> {
    let net = dp.networking();
    let mut out = Vec::new();
    for inbound in dp.inbounds() {
        let Some(service) = inbound.service() else {
            continue;
        };
        if inbound.port == kuma_crds::dataplane::SERVICELESS_PORT {
            continue;
        }
        let protocol = Protocol::parse(inbound.protocol());
        let tags = inbound.tags.clone().unwrap_or_default();
        let address = net
            .advertised_address
            .clone()
            .or_else(|| inbound.address.clone())
            .or_else(|| net.address.clone())
            .unwrap_or_default();
        let endpoint = inbound.is_ready().then(|| Endpoint {
            address,
            port: inbound.port,
            zone: tags.get(ZONE_TAG).cloned(),
            tags,
            dataplane: name.to_string(),
            labels: labels.clone(),
        });
        out.push((service.to_string(), endpoint, protocol));
    }
    out
}

/// Kuma's `x-kuma-tags` header value: `&key=v1,v2&` per key, keys sorted.
pub fn serialize_tag_set(tags: &BTreeMap<String, BTreeSet<String>>) -> String {
    tags.iter()
        .map(|(k, values)| format!("&{k}={}&", values.iter().cloned().collect::<Vec<_>>().join(",")))
        .collect()
}

/// What a proxy told the control plane about itself at bootstrap.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ProxyMetadata {
    /// Envoy's admin port.
    pub admin_port: u32,
    /// kuma-dp's readiness port.
    pub readiness_port: u32,
    /// Feature flags (`feature-delta-grpc`, …).
    pub features: BTreeSet<String>,
    /// kuma-dp's working directory.
    pub workdir: Option<String>,
}

/// Default Envoy admin port.
pub const DEFAULT_ADMIN_PORT: u32 = 9901;
/// Default kuma-dp readiness port.
pub const DEFAULT_READINESS_PORT: u32 = 9902;

/// Node metadata keys kuma-dp's bootstrap sets (Kuma's names).
pub mod metadata_keys {
    /// Envoy's admin port, as a string.
    pub const ADMIN_PORT: &str = "dataplane.admin.port";
    /// Envoy's admin address.
    pub const ADMIN_ADDRESS: &str = "dataplane.admin.address";
    /// kuma-dp's readiness reporter port, as a string.
    pub const READINESS_PORT: &str = "dataplane.readinessReporter.port";
    /// The proxy type.
    pub const PROXY_TYPE: &str = "dataplane.proxyType";
    /// The Dataplane as sent at bootstrap (universal).
    pub const DATAPLANE_RESOURCE: &str = "dataplane.resource";
    /// kuma-dp feature flags.
    pub const FEATURES: &str = "features";
    /// kuma-dp's working directory.
    pub const WORKDIR: &str = "workdir";
    /// kuma-dp and Envoy versions.
    pub const VERSION: &str = "version";
}

impl ProxyMetadata {
    /// Reads what kuma-dp's bootstrap put in Envoy's node metadata;
    /// missing or malformed values take the defaults.
    pub fn from_node(node: &envoy_types::pb::envoy::config::core::v3::Node) -> Self {
        use envoy_types::pb::google::protobuf::value::Kind;
        let fields = node.metadata.as_ref().map(|m| &m.fields);
        let get = |k: &str| fields.and_then(|f| f.get(k)).and_then(|v| v.kind.as_ref());
        let port = |k: &str, default: u32| match get(k) {
            Some(Kind::StringValue(s)) => s.parse().unwrap_or(default),
            Some(Kind::NumberValue(n)) if *n > 0.0 && *n < 65536.0 => *n as u32,
            _ => default,
        };
        let features = match get(metadata_keys::FEATURES) {
            Some(Kind::ListValue(l)) => l
                .values
                .iter()
                .filter_map(|v| match &v.kind {
                    Some(Kind::StringValue(s)) => Some(s.clone()),
                    _ => None,
                })
                .collect(),
            _ => BTreeSet::new(),
        };
        let workdir = match get(metadata_keys::WORKDIR) {
            Some(Kind::StringValue(s)) if !s.is_empty() => Some(s.clone()),
            _ => None,
        };
        ProxyMetadata {
            admin_port: port(metadata_keys::ADMIN_PORT, DEFAULT_ADMIN_PORT),
            readiness_port: port(metadata_keys::READINESS_PORT, DEFAULT_READINESS_PORT),
            features,
            workdir,
        }
    }

    /// Defaults for a dataplane: its admin port, the default readiness port.
    pub fn for_dataplane(dp: &DataplaneSpec) -> Self {
        ProxyMetadata {
            admin_port: dp
                .networking()
                .admin
                .as_ref()
                .and_then(|a| a.port)
                .unwrap_or(DEFAULT_ADMIN_PORT),
            readiness_port: DEFAULT_READINESS_PORT,
            features: BTreeSet::new(),
            workdir: None,
        }
    }
}

/// One proxy to generate config for.
#[derive(Clone, Debug)]
pub struct Proxy<'a> {
    /// The Dataplane resource.
    pub resource: &'a Resource,
    /// Its spec.
    pub dataplane: &'a DataplaneSpec,
    /// Its bootstrap metadata.
    pub metadata: ProxyMetadata,
    /// Its identity certificate, in a mesh with mTLS.
    pub identity: Option<Arc<crate::mtls::Identity>>,
    /// The server side of its Envoy admin over mTLS (see [`crate::admin_tls`]).
    pub admin_tls: Option<Arc<crate::admin_tls::AdminTls>>,
}

impl<'a> Proxy<'a> {
    /// A proxy for a Dataplane resource; `None` for other kinds.
    pub fn new(resource: &'a Resource, metadata: ProxyMetadata) -> Option<Self> {
        match &resource.spec {
            Spec::Dataplane(dp) => Some(Proxy {
                resource,
                dataplane: dp,
                metadata,
                identity: None,
                admin_tls: None,
            }),
            _ => None,
        }
    }

    /// The proxy with an identity certificate.
    pub fn with_identity(mut self, identity: Option<Arc<crate::mtls::Identity>>) -> Self {
        self.identity = identity;
        self
    }

    /// The proxy with the server side of its Envoy admin over mTLS.
    pub fn with_admin_tls(mut self, admin_tls: Option<Arc<crate::admin_tls::AdminTls>>) -> Self {
        self.admin_tls = admin_tls;
        self
    }

    /// Whether Envoy's own admin (on loopback) is reachable at the proxy's
    /// address, so it needs no admin listener there.
    pub fn admin_on_own_address(&self) -> bool {
        crate::admin_tls::envoy_admin_is_at(self.address())
    }

    /// The proxy's `<mesh>.<name>` id, as in Envoy's node id.
    pub fn id(&self) -> String {
        format!(
            "{}.{}",
            self.resource.meta.mesh_or_default(),
            self.resource.meta.core_name()
        )
    }

    /// The dataplane's address.
    pub fn address(&self) -> &str {
        self.dataplane
            .networking()
            .address
            .as_deref()
            .unwrap_or("127.0.0.1")
    }

    /// The service the proxy belongs to (first inbound or gateway), `unknown` otherwise.
    pub fn service(&self) -> &str {
        self.dataplane.service().unwrap_or("unknown")
    }

    /// Whether traffic is redirected to Envoy by a transparent proxy.
    pub fn transparent_proxy(&self) -> Option<(u32, u32)> {
        let tp = self.dataplane.networking().transparent_proxying.as_ref()?;
        let outbound = tp.redirect_port_outbound.unwrap_or(0);
        let inbound = tp.redirect_port_inbound.unwrap_or(0);
        (outbound > 0 || inbound > 0).then_some((inbound, outbound))
    }

    /// Whether the transparent proxy handles IPv6 too (every mode but
    /// `IPv4`; dual stack when unset, as in Kuma).
    pub fn transparent_ipv6(&self) -> bool {
        self.dataplane
            .networking()
            .transparent_proxying
            .as_ref()
            .and_then(|t| t.ip_family_mode)
            .is_none_or(|m| m != kuma_crds::dataplane::IpFamilyMode::IPv4)
    }

    /// All tags of the proxy's inbounds, merged.
    pub fn tags(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for i in self.dataplane.inbounds() {
            if let Some(t) = &i.tags {
                out.extend(t.clone());
            }
        }
        out.remove(PROTOCOL_TAG);
        out
    }

    /// Every tag of the proxy's inbounds with all its values (including
    /// `kuma.io/protocol`), as Kuma's `x-kuma-tags` header carries them.
    pub fn tag_set(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for i in self.dataplane.inbounds() {
            for (k, v) in i.tags.iter().flatten() {
                out.entry(k.clone()).or_default().insert(v.clone());
            }
        }
        out
    }

    /// The proxy's own `kuma.io/service` values.
    pub fn services(&self) -> BTreeSet<String> {
        self.dataplane
            .inbounds()
            .iter()
            .filter_map(|i| i.tags.as_ref()?.get(SERVICE_TAG).cloned())
            .collect()
    }
}
