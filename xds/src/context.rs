//! What config generation reads: a mesh's resources digested into services
//! and endpoints ([`MeshContext`]), and one proxy's own facts ([`Proxy`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;

use kuma_crds::dataplane::{DataplaneSpec, Inbound, PROTOCOL_TAG, SERVICE_TAG, ZONE_TAG};
use kuma_crds::matching::Destination;
use kuma_crds::mesh::MeshSpec;
use kuma_crds::mesh_service_port::{
    MeshServicePort, mode_uses_mesh_services, mode_uses_service_tags, ports_of,
};
use kuma_crds::resource::{Resource, ResourceType, Spec};

use crate::generate::VIP_PORT;

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
    /// The dataplane's labels, sent as Kuma sends them (`io.kuma.labels`,
    /// where the endpoint has no tags but its service).
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
    /// The port its VIP listener uses (80 for a `kuma.io/service`).
    pub port: u32,
    /// The `kuma.io/service` identities its endpoints' certificates hold
    /// (the service itself, or those a MeshService names or is served by).
    pub identities: Vec<String>,
    /// What a MeshService port adds; `None` for a `kuma.io/service`.
    pub mesh_service: Option<MeshServiceFacts>,
    /// A digest of all of the above: config built from a service is still
    /// valid while its digest is unchanged.
    pub digest: u64,
}

/// The next [`MeshContext::build`].
static NEXT_BUILD: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Everything about one mesh that generation needs, shared by all its proxies.
#[derive(Clone, Debug)]
pub struct MeshContext {
    /// The mesh name.
    pub name: String,
    /// The mesh spec.
    pub mesh: Arc<MeshSpec>,
    /// Services by name.
    pub services: BTreeMap<String, Arc<Service>>,
    /// The types of the mesh's policies and routes.
    pub policy_types: BTreeSet<ResourceType>,
    /// The policies prepared for matching. The same `Arc` while no policy
    /// changes, so what was matched against it stays valid.
    pub policy_index: Arc<kuma_crds::matching::PolicyIndex>,
    /// The digests of what `policy_index` matched, kept with it.
    pub to_digests: Arc<crate::generate::ToDigests>,
    /// A digest of the mesh name and spec.
    pub mesh_digest: u64,
    /// Unique to this build of the context (copies share it): what was
    /// found current in it stays current while it is in use.
    pub build: u64,
    /// Unique to what proxies' own resources (all but their outbounds) are
    /// generated from: a change of endpoints alone keeps it
    /// ([`MeshContext::with_dataplanes`]), so a proxy resting on a shared
    /// layer keeps its own resources and only has its layer replaced.
    pub own_build: u64,
    /// Unique to what proxies' own resources are generated from apart from
    /// the policies: a change of policies alone keeps it
    /// ([`MeshContext::with_policies`]), so a proxy whose own resources read
    /// the same of its new policies ([`crate::generate::Generation::own_reads`])
    /// keeps them too.
    pub base_build: u64,
    /// The VIP outbound of every service (what transparent proxies reach).
    pub vip_targets: Vec<crate::generate::KeyedTarget>,
    /// The mesh's mTLS, when enabled and its CA is available.
    pub mtls: Option<Arc<crate::mtls::MeshMtls>>,
    /// Why mTLS is enabled but unusable (its proxies then keep their last
    /// configuration rather than fall back to plaintext).
    pub mtls_error: Option<crate::mtls::MtlsError>,
}

/// What a MeshService port adds to a service.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MeshServiceFacts {
    /// The names its VIP is resolved by (a `kuma.io/service` has Kuma's
    /// `<service>.mesh` names instead).
    pub hostnames: Vec<String>,
    /// What `to` policies see of it (its name, namespace, labels and port).
    pub destination: Destination,
}

/// A range VIPs are given out from.
#[derive(Clone, Copy)]
struct VipRange {
    base: u32,
    size: u32,
}

/// `kuma.io/service` VIPs (`240.0.0.0/4`).
const SERVICE_VIPS: VipRange = VipRange {
    base: 0xF000_0000,
    size: 1 << 28,
};
/// MeshService VIPs when their status has none (`241.0.0.0/8`, Kuma's
/// `ipam.meshService.cidr`).
const MESH_SERVICE_VIPS: VipRange = VipRange {
    base: 0xF100_0000,
    size: 1 << 24,
};

/// Gives every name a stable VIP in `range`: a hash of the name, probing on
/// collisions (with each other or `reserved`) in name order, so adding a
/// service never moves another one's VIP unless they collide.
fn allocate_vips(
    names: &BTreeSet<String>,
    reserved: &BTreeSet<Ipv4Addr>,
    range: VipRange,
) -> BTreeMap<String, Ipv4Addr> {
    let mut used: BTreeSet<u32> = reserved
        .iter()
        .map(|ip| u32::from(*ip).wrapping_sub(range.base))
        .filter(|offset| *offset < range.size)
        .collect();
    let mut out = BTreeMap::new();
    for name in names {
        let mut offset = (xxhash_rust::xxh3::xxh3_64(name.as_bytes()) % u64::from(range.size - 2)) as u32 + 1;
        while !used.insert(offset) {
            offset = offset % (range.size - 2) + 1;
        }
        out.insert(name.clone(), Ipv4Addr::from(range.base + offset));
    }
    out
}

impl Service {
    /// A service and its digest; `mesh_service` for a MeshService port.
    pub fn new(
        name: String,
        protocol: Protocol,
        endpoints: Vec<Endpoint>,
        vip: Ipv4Addr,
        port: u32,
        identities: Vec<String>,
        mesh_service: Option<MeshServiceFacts>,
    ) -> Self {
        let digest =
            crate::digest::digest(&(&name, protocol, &endpoints, vip, port, &identities, &mesh_service));
        Service {
            name,
            protocol,
            endpoints,
            vip,
            port,
            identities,
            mesh_service,
            digest,
        }
    }

    /// Whether it is a MeshService port (not a `kuma.io/service`).
    pub fn is_mesh_service(&self) -> bool {
        self.mesh_service.is_some()
    }
}

impl MeshContext {
    /// Digests a mesh's resources: `mesh` must be a Mesh, `resources` the
    /// mesh's dataplanes and policies (other kinds are ignored).
    pub fn build<'a>(
        mesh_name: &str,
        mesh: &MeshSpec,
        resources: impl IntoIterator<Item = &'a Resource> + Clone,
    ) -> Self {
        let policies = MeshPolicies::of(
            resources
                .clone()
                .into_iter()
                .filter(|r| r.resource_type().is_policy()),
        );
        Self::build_with(mesh_name, mesh, resources, policies)
    }

    /// [`MeshContext::build`] for a change of anything but policies: this
    /// context's prepared policies stay (the same `Arc`), so a new endpoint
    /// does not make every proxy's policies be matched again.
    pub fn with_resources<'a>(
        &self,
        mesh: &MeshSpec,
        resources: impl IntoIterator<Item = &'a Resource>,
    ) -> Self {
        let policies = MeshPolicies {
            types: self.policy_types.clone(),
            index: self.policy_index.clone(),
            to_digests: self.to_digests.clone(),
        };
        Self::build_with(&self.name, mesh, resources, policies)
    }

    /// This context after changes of Dataplanes alone that moved the
    /// endpoints or protocol of `changed` services: only those services
    /// are digested again, from the Dataplanes that serve them (a new
    /// endpoint at 10,000 proxies cost 30 ms of digesting every one). The
    /// whole mesh is digested when the set of services changes (VIPs are
    /// allotted over it) or MeshServices select endpoints by their own
    /// rules.
    pub fn with_dataplanes<'a>(
        &self,
        mesh: &MeshSpec,
        resources: impl IntoIterator<Item = &'a Resource> + Clone,
        changed: &BTreeSet<String>,
    ) -> Self {
        if self.services.values().any(|s| s.is_mesh_service()) {
            return self.with_resources(mesh, resources);
        }
        let mut endpoints: BTreeMap<&str, Vec<Endpoint>> = BTreeMap::new();
        let mut protocols: BTreeMap<&str, BTreeSet<Protocol>> = BTreeMap::new();
        for r in resources.clone() {
            let Spec::Dataplane(dp) = &r.spec else { continue };
            let serves_changed = dp
                .inbounds()
                .iter()
                .any(|i| i.service().is_some_and(|s| changed.contains(s)));
            if !serves_changed {
                continue;
            }
            for (service, endpoint, protocol) in dataplane_endpoints(&r.meta.core_name(), &r.meta.labels, dp)
            {
                let Some(service) = changed.get(&service) else {
                    continue;
                };
                protocols.entry(service).or_default().insert(protocol);
                let list = endpoints.entry(service).or_default();
                list.extend(endpoint);
            }
        }
        let same_names = changed
            .iter()
            .all(|name| self.services.contains_key(name) == endpoints.contains_key(name.as_str()));
        if !same_names {
            return self.with_resources(mesh, resources);
        }
        let mut services = self.services.clone();
        for (name, mut eps) in endpoints {
            let Some(previous) = self.services.get(name) else {
                continue;
            };
            eps.sort();
            let service = Service::new(
                name.to_string(),
                single_protocol(protocols.get(name)),
                eps,
                previous.vip,
                VIP_PORT,
                vec![name.to_string()],
                None,
            );
            services.insert(name.to_string(), Arc::new(service));
        }
        // Only endpoints and protocols moved: what proxies' own resources
        // read (the mesh, its mTLS, policies, service names and VIPs) did not.
        MeshContext {
            services,
            build: NEXT_BUILD.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            ..self.clone()
        }
    }

    fn build_with<'a>(
        mesh_name: &str,
        mesh: &MeshSpec,
        resources: impl IntoIterator<Item = &'a Resource>,
        policies: MeshPolicies,
    ) -> Self {
        let mut endpoints: BTreeMap<String, Vec<Endpoint>> = BTreeMap::new();
        let mut protocols: BTreeMap<String, BTreeSet<Protocol>> = BTreeMap::new();
        let mut secrets: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut dataplanes: Vec<&Resource> = Vec::new();
        let mut mesh_services: Vec<MeshServicePort> = Vec::new();
        let mode = mesh.mesh_services.as_ref().and_then(|m| m.mode);
        for r in resources {
            match &r.spec {
                Spec::MeshService(ms) if mode_uses_mesh_services(mode) => {
                    mesh_services.extend(ports_of(&r.meta, ms, r.status.as_ref()));
                }
                Spec::Secret(s) => {
                    secrets.insert(r.meta.core_name(), s.bytes());
                }
                Spec::Dataplane(dp) => {
                    dataplanes.push(r);
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
                _ => {}
            }
        }
        // MeshService VIPs come from their status (Kubernetes: the ClusterIP)
        // or, when it has none, from a hash of the name as `kuma.io/service`
        // VIPs do (stable, and the same on every control plane); either way
        // reserved before those.
        let mut reserved: BTreeSet<Ipv4Addr> = mesh_services.iter().filter_map(|d| d.vip).collect();
        let unallocated: BTreeSet<String> = mesh_services
            .iter()
            .filter(|d| d.vip.is_none())
            .map(|d| d.name.clone())
            .collect();
        let msvc_vips = allocate_vips(&unallocated, &reserved, MESH_SERVICE_VIPS);
        reserved.extend(msvc_vips.values());
        let names: BTreeSet<String> = endpoints.keys().cloned().collect();
        let vips = allocate_vips(&names, &reserved, SERVICE_VIPS);
        let mut services = endpoints
            .into_iter()
            .map(|(name, mut eps)| {
                eps.sort();
                let service = Service::new(
                    name.clone(),
                    single_protocol(protocols.get(&name)),
                    eps,
                    vips[&name],
                    VIP_PORT,
                    vec![name.clone()],
                    None,
                );
                (name, Arc::new(service))
            })
            .collect::<BTreeMap<String, Arc<Service>>>();
        for d in mesh_services {
            let mut eps = Vec::new();
            let mut serving = Vec::new();
            for r in &dataplanes {
                let Spec::Dataplane(dp) = &r.spec else { continue };
                let name = r.meta.core_name();
                for (i, inbound) in dp.inbounds().iter().enumerate() {
                    if !d.served_by(&name, &r.meta.labels, inbound, i == 0) {
                        continue;
                    }
                    serving.push(inbound);
                    eps.extend(inbound_endpoint(&name, &r.meta.labels, dp, inbound));
                }
            }
            eps.sort();
            let identities = d.required_identities(serving);
            let vip = d
                .vip
                .or_else(|| msvc_vips.get(&d.name).copied())
                .unwrap_or(Ipv4Addr::UNSPECIFIED);
            let destination = Destination {
                service: d.service_name.clone(),
                tags: BTreeMap::from([(SERVICE_TAG.to_string(), d.name.clone())]),
                labels: d.labels.clone(),
                port: Some(d.port),
                port_name: d.port_name.clone(),
                namespace: d.namespace.clone(),
                ..Default::default()
            };
            let service = Service::new(
                d.name.clone(),
                Protocol::parse(&d.protocol),
                eps,
                vip,
                d.port,
                identities,
                Some(MeshServiceFacts {
                    hostnames: d.hostnames,
                    destination,
                }),
            );
            services.insert(d.name, Arc::new(service));
        }
        let vip_targets = crate::generate::vip_targets(&services, mode_uses_service_tags(mode));
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
        let build = NEXT_BUILD.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        MeshContext {
            name: mesh_name.to_string(),
            mesh: Arc::new(mesh.clone()),
            services,
            policy_types: policies.types,
            policy_index: policies.index,
            to_digests: policies.to_digests,
            build,
            own_build: build,
            base_build: build,
            vip_targets,
            mtls,
            mtls_error,
            mesh_digest: mesh_digest.finish128() as u64,
        }
    }

    /// This context with the policies among `resources` in place of its
    /// own, for a change of policies alone: the services, VIPs and mTLS
    /// digested from the rest stay as they are, so a policy change costs
    /// its policies, not the mesh's dataplanes.
    pub fn with_policies<'a>(&self, resources: impl IntoIterator<Item = &'a Resource>) -> Self {
        let policies = MeshPolicies::of(resources.into_iter().filter(|r| r.resource_type().is_policy()));
        let build = NEXT_BUILD.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        MeshContext {
            policy_types: policies.types,
            policy_index: policies.index,
            to_digests: policies.to_digests,
            build,
            own_build: build,
            ..self.clone()
        }
    }

    /// A service's digest (0 for unknown services).
    pub fn service_digest(&self, service: &str) -> u64 {
        self.services.get(service).map(|s| s.digest).unwrap_or(0)
    }

    /// What `to` policies match for traffic to `service` (a
    /// `kuma.io/service` or a MeshService port's cluster), narrowed by `tags`.
    pub fn destination(&self, service: &str, tags: &BTreeMap<String, String>) -> Destination {
        match self.services.get(service).and_then(|s| s.mesh_service.as_ref()) {
            Some(m) => m.destination.clone().with_tags(tags),
            None => Destination::service(service).with_tags(tags),
        }
    }

    /// A service's protocol (TCP for unknown services).
    pub fn protocol_of(&self, service: &str) -> Protocol {
        self.services
            .get(service)
            .map(|s| s.protocol)
            .unwrap_or(Protocol::Tcp)
    }
}

/// The protocol a service's inbounds agree on (TCP when they disagree).
fn single_protocol(protocols: Option<&BTreeSet<Protocol>>) -> Protocol {
    match protocols {
        Some(set) if set.len() == 1 => set.first().copied().unwrap_or(Protocol::Tcp),
        _ => Protocol::Tcp,
    }
}

/// A mesh's policies and routes, ready for matching.
struct MeshPolicies {
    types: BTreeSet<ResourceType>,
    index: Arc<kuma_crds::matching::PolicyIndex>,
    to_digests: Arc<crate::generate::ToDigests>,
}

impl MeshPolicies {
    fn of<'a>(resources: impl IntoIterator<Item = &'a Resource>) -> Self {
        let mut policies: BTreeMap<ResourceType, Vec<&Resource>> = BTreeMap::new();
        for r in resources {
            policies.entry(r.resource_type()).or_default().push(r);
        }
        for list in policies.values_mut() {
            list.sort_by_key(|r| r.meta.core_name());
        }
        let all: Vec<Resource> = policies.values().flatten().map(|r| (*r).clone()).collect();
        MeshPolicies {
            types: policies.keys().copied().collect(),
            index: Arc::new(kuma_crds::matching::PolicyIndex::new(&all)),
            to_digests: Arc::default(),
        }
    }
}

/// The services a dataplane's inbounds provide, with the endpoint each
/// contributes when it is ready (`None` when not ready).
pub fn dataplane_endpoints(
    name: &str,
    labels: &BTreeMap<String, String>,
    dp: &DataplaneSpec,
) -> Vec<(String, Option<Endpoint>, Protocol)> {
    let mut out = Vec::new();
    for inbound in dp.inbounds() {
        let Some(service) = inbound.service() else {
            continue;
        };
        if inbound.port == kuma_crds::dataplane::SERVICELESS_PORT {
            continue;
        }
        let protocol = Protocol::parse(inbound.protocol());
        out.push((
            service.to_string(),
            inbound_endpoint(name, labels, dp, inbound),
            protocol,
        ));
    }
    out
}

/// The endpoint an inbound of a dataplane is, when it is ready.
fn inbound_endpoint(
    name: &str,
    labels: &BTreeMap<String, String>,
    dp: &DataplaneSpec,
    inbound: &Inbound,
) -> Option<Endpoint> {
    if !inbound.is_ready() {
        return None;
    }
    let net = dp.networking();
    let tags = inbound.tags.clone().unwrap_or_default();
    let address = net
        .advertised_address
        .clone()
        .or_else(|| inbound.address.clone())
        .or_else(|| net.address.clone())
        .unwrap_or_default();
    Some(Endpoint {
        address,
        port: inbound.port,
        zone: tags.get(ZONE_TAG).cloned(),
        tags,
        dataplane: name.to_string(),
        labels: labels.clone(),
    })
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
