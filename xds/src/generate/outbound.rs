//! Outbound listeners, clusters and endpoints: one listener per outbound the
//! proxy has (explicit `networking.outbound[]`, or a VIP per service with a
//! transparent proxy), with MeshHTTPRoute routes for HTTP services and
//! MeshTCPRoute splits for the others.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Locality;
use envoy_types::pb::envoy::config::core::v3::TrafficDirection;
use envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, LbEndpoint, LocalityLbEndpoints};
use envoy_types::pb::envoy::config::listener::v3::FilterChain;
use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, VirtualHost, route};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy;
use kuma_crds::common::BackendRef;
use kuma_crds::dataplane::SERVICE_TAG;
use kuma_crds::matching::{Destination, tags_match};
use kuma_crds::resource::ResourceType;

use super::cache::OutboundCache;
use super::{Policies, PolicyRead};
use crate::context::{Endpoint, MeshContext, Proxy, Service, serialize_tag_set};
use crate::envoy;
use crate::plugins;
use crate::plugins::mesh_http_route::{backend_service, cluster_name};
use crate::resources::{Generated, Origin, Resource, ResourceSet, SharedLayer, XdsType};

/// The port a service's VIP listener uses.
pub const VIP_PORT: u32 = 80;

/// An outbound of the proxy: where the app calls and which service it reaches.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OutboundTarget {
    /// The destination `kuma.io/service`.
    pub service: String,
    /// The local address the app calls.
    pub address: String,
    /// The local port.
    pub port: u32,
    /// The outbound's tags (at least `kuma.io/service`).
    pub tags: BTreeMap<String, String>,
    /// Whether Envoy binds the port (not when a transparent proxy redirects).
    pub bind: bool,
}

impl OutboundTarget {
    /// The listener name.
    pub fn listener_name(&self) -> String {
        format!("outbound:{}:{}", self.address, self.port)
    }

    /// The destination for policy lookups.
    pub fn destination(&self, mesh: &MeshContext) -> Destination {
        let mut d = mesh.destination(&self.service, &self.tags);
        d.port = Some(self.port);
        d
    }
}

/// An outbound and the digest identifying it in cache keys.
pub type KeyedTarget = (Arc<OutboundTarget>, u64);

/// The VIP outbound of every service, as a transparent proxy sees them;
/// the same for every proxy of the mesh, so built once per mesh. Without
/// `service_tags` (a mesh whose MeshServices replace `kuma.io/service`)
/// only MeshServices have one.
pub fn vip_targets(services: &BTreeMap<String, Arc<Service>>, service_tags: bool) -> Vec<KeyedTarget> {
    services
        .values()
        .filter(|service| service_tags || service.is_mesh_service())
        .map(|service| {
            let target = OutboundTarget {
                service: service.name.clone(),
                address: service.vip.to_string(),
                port: service.port,
                tags: BTreeMap::from([(SERVICE_TAG.to_string(), service.name.clone())]),
                bind: false,
            };
            let digest = crate::digest::digest(&target);
            (Arc::new(target), digest)
        })
        .collect()
}

/// The outbounds of a proxy: its explicit outbounds, plus with a
/// transparent proxy a VIP outbound for every service of the mesh.
pub fn outbound_targets(proxy: &Proxy<'_>, mesh: &MeshContext) -> Vec<KeyedTarget> {
    let tp = proxy.transparent_proxy().is_some_and(|(_, out)| out > 0);
    let mut explicit: BTreeMap<(String, u32), OutboundTarget> = BTreeMap::new();
    for o in proxy.dataplane.outbounds() {
        let Some(tags) = &o.tags else { continue };
        let Some(service) = tags.get(SERVICE_TAG) else {
            continue;
        };
        let address = o.address.clone().unwrap_or_else(|| "127.0.0.1".to_string());
        let target = OutboundTarget {
            service: service.clone(),
            address: address.clone(),
            port: o.port,
            tags: tags.clone(),
            bind: !tp,
        };
        explicit.insert((address, o.port), target);
    }
    let mut out: Vec<KeyedTarget> =
        Vec::with_capacity(explicit.len() + if tp { mesh.vip_targets.len() } else { 0 });
    if tp {
        let reachable = reachable_services(proxy);
        // It names `kuma.io/service`s; MeshServices are not narrowed by it.
        let is_mesh_service =
            |t: &OutboundTarget| mesh.services.get(&t.service).is_some_and(|s| s.is_mesh_service());
        let inbounds = inbound_addresses(proxy);
        let taken = |t: &OutboundTarget| {
            reachable.is_some_and(|r| !r.contains(&t.service) && !is_mesh_service(t))
                || (!explicit.is_empty() && explicit.contains_key(&(t.address.clone(), t.port)))
                || inbounds
                    .iter()
                    .any(|(address, port)| *port == t.port && *address == t.address)
        };
        out.extend(mesh.vip_targets.iter().filter(|(t, _)| !taken(t)).cloned());
    }
    out.extend(explicit.into_values().map(|t| {
        let digest = crate::digest::digest(&t);
        (Arc::new(t), digest)
    }));
    out
}

pub(super) fn generate(
    proxy: &Proxy<'_>,
    mesh: &MeshContext,
    policies: &Policies,
    cache: Option<&OutboundCache>,
    rs: &mut ResourceSet,
    used: &mut Vec<Arc<OutboundBundle>>,
) -> Option<Arc<OutboundLayer>> {
    let edits = ProxyEdits::of(proxy, mesh, policies);
    if !edits.own_listeners
        && !edits.locality
        && !policies.has(ResourceType::MeshProxyPatch)
        && let Some(reach) = vip_reach(proxy, mesh)
    {
        // The layer is keyed by the `to` signature and the reach: what
        // building it reads is not the proxy's own resources' business.
        let layer = policies.unrecorded(|| match cache {
            Some(cache) => layer_for(mesh, policies.to_signature(), &reach, cache, || policies),
            None => build_layer(mesh, policies, &reach, None).map(Arc::new),
        });
        if let Some(layer) = layer {
            rs.set_layer(layer.resources().clone());
            return Some(layer);
        }
    }
    // Without a layer the proxy is generated whole on every policy change:
    // what its outbounds read need not be recorded.
    policies.unrecorded(|| {
        let targets = outbound_targets(proxy, mesh);
        used.reserve(targets.len());
        for (target, target_digest) in targets {
            let bundle = bundle(&target, target_digest, mesh, policies, cache);
            add_for_proxy(&target, &bundle, proxy, mesh, policies, &edits, rs);
            used.push(bundle);
        }
    });
    None
}

/// Which of the mesh's VIP outbounds a transparent proxy takes, when they
/// are all of its outbounds: every one (`None`) or, with
/// `reachableServices`, those of the services it names (sorted) and every
/// MeshService's, which it does not narrow ([`outbound_targets`]).
pub type VipReach = Option<Arc<[String]>>;

/// The proxy's [`VipReach`]; `None` when its outbounds are not only VIP
/// outbounds: no transparent proxy, explicit outbounds, or an inbound on a
/// VIP's address and port.
fn vip_reach(proxy: &Proxy<'_>, mesh: &MeshContext) -> Option<VipReach> {
    let tp = proxy.transparent_proxy().is_some_and(|(_, out)| out > 0);
    let only_vips = tp
        && proxy.dataplane.outbounds().is_empty()
        && inbound_addresses(proxy).iter().all(|(address, port)| {
            !mesh
                .vip_targets
                .iter()
                .any(|(t, _)| t.port == *port && t.address == *address)
        });
    only_vips.then(|| {
        reachable_services(proxy).map(|names| {
            let names: std::collections::BTreeSet<&String> = names.iter().collect();
            names.into_iter().cloned().collect()
        })
    })
}

/// Whether a proxy with `reach` takes the VIP outbound `target`, as
/// [`outbound_targets`] decides.
fn reaches_target(reach: &VipReach, target: &OutboundTarget, mesh: &MeshContext) -> bool {
    reach.as_ref().is_none_or(|names| {
        names.binary_search(&target.service).is_ok()
            || mesh
                .services
                .get(&target.service)
                .is_some_and(|s| s.is_mesh_service())
    })
}

/// The services `reachableServices` narrows a transparent proxy to (what
/// it calls), if it names any.
fn reachable_services<'a>(proxy: &'a Proxy<'_>) -> Option<&'a Vec<String>> {
    proxy
        .dataplane
        .networking()
        .transparent_proxying
        .as_ref()
        .and_then(|t| t.reachable_services.as_ref())
        .filter(|r| !r.is_empty())
}

/// Where the proxy's inbounds listen: no VIP outbound may take one's place.
fn inbound_addresses<'a>(proxy: &'a Proxy<'_>) -> Vec<(&'a str, u32)> {
    proxy
        .dataplane
        .inbounds()
        .iter()
        .map(|i| (proxy.dataplane.inbound_address(i), i.port))
        .collect()
}

/// The VIP outbounds of a mesh as the proxies with the same `to` policies,
/// the same reach (every service, or the same `reachableServices`) and
/// nothing of their own in their outbounds get them: one layer that all of
/// them rest on, encoded and versioned once.
#[derive(Debug)]
pub struct OutboundLayer {
    resources: Arc<SharedLayer>,
    /// The bundles it is made of: held only to keep them in the cache
    /// while a proxy rests on the layer.
    _bundles: Vec<Arc<OutboundBundle>>,
    /// The services they were built from.
    services: BTreeSet<String>,
    /// Which VIP outbounds it holds.
    reach: VipReach,
}

/// The shared layer of the proxies whose `to` policies have `to_signature`
/// and whose outbounds are the mesh's VIP outbounds `reach` takes, built
/// when absent from `policies` (asked for only then).
pub fn layer_for<P: std::borrow::Borrow<Policies>>(
    mesh: &MeshContext,
    to_signature: u128,
    reach: &VipReach,
    cache: &OutboundCache,
    policies: impl FnOnce() -> P,
) -> Option<Arc<OutboundLayer>> {
    let reach_digest = reach.as_ref().map_or(0, |names| crate::digest::digest(&**names));
    let key = bundle_key(to_signature, mesh.build, reach_digest);
    cache.get_or_build_layer(key, || build_layer(mesh, policies().borrow(), reach, Some(cache)))
}

impl OutboundLayer {
    /// Which VIP outbounds it holds.
    pub fn reach(&self) -> &VipReach {
        &self.reach
    }

    /// Its resources.
    pub fn resources(&self) -> &Arc<SharedLayer> {
        &self.resources
    }

    /// Whether it was built from any of `services`.
    pub fn reaches_any(&self, services: &BTreeSet<String>) -> bool {
        services.iter().any(|s| self.services.contains(s))
    }
}

/// The layer of the mesh's VIP outbounds `reach` takes under `policies`;
/// `None` when an outbound needs something of each proxy (HTTP health
/// checks send the proxy's tags).
fn build_layer(
    mesh: &MeshContext,
    policies: &Policies,
    reach: &VipReach,
    cache: Option<&OutboundCache>,
) -> Option<OutboundLayer> {
    let mut set = ResourceSet::new();
    let mut bundles = Vec::new();
    for (target, target_digest) in &mesh.vip_targets {
        if !reaches_target(reach, target, mesh) {
            continue;
        }
        let bundle = bundle(target, *target_digest, mesh, policies, cache);
        set.add_shared(bundle.listener.clone());
        for c in &bundle.clusters {
            if matches!(c.cluster.resource(), Resource::Cluster(cluster) if plugins::mesh_health_check::has_http_checks(cluster))
            {
                return None;
            }
            // The same cluster may serve several outbounds; the first wins.
            if !set.contains(XdsType::Cluster, c.cluster.resource().name()) {
                set.add_shared(c.cluster.clone());
                set.add_shared(c.endpoints.clone());
            }
        }
        bundles.push(bundle);
    }
    let services = bundles
        .iter()
        .flat_map(|b| b.services())
        .map(str::to_string)
        .collect();
    Some(OutboundLayer {
        resources: Arc::new(SharedLayer::new(set)),
        _bundles: bundles,
        services,
        reach: reach.clone(),
    })
}

/// The cache key of an outbound's bundle: everything that goes into it
/// except the services it reads (which the bundle checks itself). A
/// one-shot hash of fixed-size words, as it is computed once per outbound
/// of every proxy.
fn bundle_key(to_signature: u128, mesh_digest: u64, target_digest: u64) -> u128 {
    let mut words = [0u8; 32];
    words[..16].copy_from_slice(&to_signature.to_le_bytes());
    words[16..24].copy_from_slice(&mesh_digest.to_le_bytes());
    words[24..].copy_from_slice(&target_digest.to_le_bytes());
    xxhash_rust::xxh3::xxh3_128(&words)
}

/// What a proxy changes in the shared bundles of all its outbounds,
/// worked out once per proxy rather than once per outbound.
struct ProxyEdits {
    /// The proxy's tags sent to peers (once the mesh has a MeshFaultInjection).
    kuma_tags: Option<String>,
    /// Whether each listener gets its own copy (access logs, tracing or tags
    /// name the proxy).
    own_listeners: bool,
    /// Whether endpoints get locality-aware priorities.
    locality: bool,
    /// The proxy's tags for HTTP health checks, serialized on first use.
    source_tags: std::cell::OnceCell<String>,
}

impl ProxyEdits {
    fn of(proxy: &Proxy<'_>, mesh: &MeshContext, policies: &Policies) -> Self {
        // Peers match `from`-scoped faults on the caller's tags, which Kuma
        // sends on every request once the mesh has a MeshFaultInjection.
        let kuma_tags = policies
            .mesh_has(ResourceType::MeshFaultInjection)
            .then(|| serialize_tag_set(&proxy.tag_set()));
        ProxyEdits {
            own_listeners: policies.has(ResourceType::MeshAccessLog)
                || policies.has(ResourceType::MeshTrace)
                || kuma_tags.is_some(),
            kuma_tags,
            locality: plugins::mesh_load_balancing_strategy::applies(policies, mesh),
            source_tags: std::cell::OnceCell::new(),
        }
    }
}

/// The resources of one outbound that depend only on the outbound, the
/// services it reaches and the proxy's `to` policies, so that every proxy
/// with the same `to` policies shares them (built and encoded once).
#[derive(Debug)]
pub struct OutboundBundle {
    listener: Arc<Generated>,
    clusters: Vec<BundleCluster>,
    /// The services read while building, with their digests at the time:
    /// the bundle is stale once one of them changes.
    deps: Vec<(String, u64)>,
    /// What building read of the proxy's policies (`None` when that cannot
    /// be compared): proxies whose policies give the same share the bundle.
    reads: Option<Vec<PolicyRead>>,
}

impl OutboundBundle {
    /// The services the bundle was built from.
    pub fn services(&self) -> impl Iterator<Item = &str> {
        self.deps.iter().map(|(s, _)| s.as_str())
    }

    /// Whether `policies` give what the bundle was built from.
    pub fn fits(&self, policies: &Policies) -> bool {
        self.reads
            .as_ref()
            .is_some_and(|reads| policies.reads_match(reads))
    }

    /// Whether every service the bundle was built from is unchanged.
    pub fn is_current(&self, mesh: &MeshContext) -> bool {
        self.deps
            .iter()
            .all(|(service, digest)| mesh.service_digest(service) == *digest)
    }
}

#[derive(Debug)]
struct BundleCluster {
    service: String,
    tags: BTreeMap<String, String>,
    cluster: Arc<Generated>,
    endpoints: Arc<Generated>,
}

/// The clusters an outbound needs: cluster name → (service, subset tags).
type ClusterSet = BTreeMap<String, (String, BTreeMap<String, String>)>;

/// Builds an outbound's shared resources. Reads the mesh only through
/// `protocol_of`/`service`, which record the services it depends on.
fn build_bundle(target: &OutboundTarget, mesh: &MeshContext, policies: &Policies) -> OutboundBundle {
    let read = RefCell::new(BTreeSet::from([target.service.clone()]));
    let protocol_of = |service: &str| {
        read.borrow_mut().insert(service.to_string());
        mesh.protocol_of(service)
    };
    let destination = target.destination(mesh);
    let protocol = protocol_of(&target.service);
    let http_conf = policies.to_conf(ResourceType::MeshHTTPRoute, &destination);
    let tcp_conf = policies.to_conf(ResourceType::MeshTCPRoute, &destination);
    let use_http = protocol.is_http() && !(tcp_conf.is_some() && http_conf.is_none());
    let clusters = RefCell::new(ClusterSet::new());
    let record = |b: &BackendRef, need_http: bool| -> Option<String> {
        let (service, tags) = backend_service(b)?;
        if need_http && !protocol_of(&service).is_http() {
            return None;
        }
        let name = cluster_name(&service, &tags);
        clusters.borrow_mut().insert(name.clone(), (service, tags));
        Some(name)
    };

    let chain = if use_http {
        let routes = plugins::mesh_http_route::routes(http_conf.as_ref(), &target.service, &target.tags);
        let mut envoy_routes = Vec::new();
        for r in &routes {
            let route_destination = match &r.origin {
                Some(origin) => destination.clone().with_route(origin),
                None => destination.clone(),
            };
            for mut er in plugins::mesh_http_route::envoy_routes(r, &|b| record(b, true)) {
                if let Some(route::Action::Route(action)) = &mut er.action {
                    plugins::mesh_load_balancing_strategy::route(action, policies, &route_destination);
                    plugins::mesh_timeout::outbound_route(action, policies, &route_destination);
                    plugins::mesh_retry::route(action, policies, &route_destination, protocol);
                }
                envoy_routes.push(er);
            }
        }
        let mut hcm = HttpConnectionManager {
            stat_prefix: envoy::sanitize_metric(&target.service),
            codec_type: http_connection_manager::CodecType::Auto as i32,
            normalize_path: Some(envoy::bool_value(true)),
            internal_address_config: Some(envoy::internal_address_config()),
            http_filters: envoy::base_http_filters(protocol == crate::context::Protocol::Grpc),
            route_specifier: Some(http_connection_manager::RouteSpecifier::RouteConfig(
                RouteConfiguration {
                    name: format!("outbound:{}", target.service),
                    validate_clusters: Some(envoy::bool_value(false)),
                    virtual_hosts: vec![VirtualHost {
                        name: target.service.clone(),
                        domains: vec!["*".into()],
                        routes: envoy_routes,
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            )),
            ..Default::default()
        };
        plugins::mesh_timeout::outbound_hcm(&mut hcm, policies, &destination);
        FilterChain {
            filters: vec![envoy::network_filter(envoy::HCM, &hcm)],
            ..Default::default()
        }
    } else {
        let conf: Option<kuma_crds::policies::mesh_tcp_route::Conf> = tcp_conf.and_then(|c| c.conf().ok());
        let backends = plugins::mesh_tcp_route::backends(conf, &target.service, &target.tags);
        let splits: Vec<(String, u32)> = backends
            .iter()
            .filter(|b| b.effective_weight() > 0)
            .filter_map(|b| record(b, false).map(|c| (c, b.effective_weight())))
            .collect();
        let mut tcp = TcpProxy {
            stat_prefix: envoy::sanitize_metric(&target.service),
            cluster_specifier: plugins::mesh_tcp_route::cluster_specifier(&splits),
            ..Default::default()
        };
        plugins::mesh_timeout::outbound_tcp(&mut tcp, policies, &destination);
        plugins::mesh_retry::tcp(&mut tcp, policies, &destination);
        // Kafka gets plain TCP proxying: the kafka_broker filter is an Envoy
        // contrib extension that the standard Envoy build lacks.
        FilterChain {
            filters: vec![envoy::network_filter(envoy::TCP_PROXY, &tcp)],
            ..Default::default()
        }
    };

    let mut listener = envoy::listener(
        &target.listener_name(),
        &target.address,
        target.port,
        TrafficDirection::Outbound,
        vec![chain],
    );
    listener.metadata = envoy::tags_metadata(&target.tags);
    if !target.bind {
        listener.bind_to_port = Some(envoy::bool_value(false));
    }

    let mut bundle_clusters = Vec::new();
    for (name, (service, tags)) in clusters.into_inner() {
        let cluster_destination = mesh.destination(&service, &tags);
        let mut cluster = envoy::eds_cluster(&name);
        // Sidecars talk HTTP/2 to each other whatever the app protocol; the
        // peer's inbound connection manager negotiates.
        envoy::set_upstream_http(&mut cluster, true);
        let svc_protocol = protocol_of(&service);
        plugins::mesh_load_balancing_strategy::cluster(&mut cluster, policies, &cluster_destination);
        plugins::mesh_timeout::outbound_cluster(&mut cluster, policies, &cluster_destination, svc_protocol);
        plugins::mesh_health_check::cluster(&mut cluster, policies, &cluster_destination, svc_protocol);
        plugins::mesh_circuit_breaker::outbound_cluster(&mut cluster, policies, &cluster_destination);
        if mesh.mtls.is_some() {
            let sni = crate::mtls::sni(&mesh.name, &service, &tags);
            let identities = match mesh.services.get(&service) {
                Some(s) => s.identities.clone(),
                None => vec![service.clone()],
            };
            cluster.transport_socket = Some(super::tls::upstream(&mesh.name, &identities, sni));
        }
        let cla = endpoints(&name, mesh.services.get(&service).map(|s| s.as_ref()), &tags);
        bundle_clusters.push(BundleCluster {
            service,
            tags,
            cluster: Arc::new(Generated::new(Origin::Outbound, Resource::Cluster(cluster))),
            endpoints: Arc::new(Generated::new(Origin::Outbound, Resource::Endpoints(cla))),
        });
    }
    let deps = read.into_inner().into_iter().map(|s| {
        let digest = mesh.service_digest(&s);
        (s, digest)
    });
    OutboundBundle {
        listener: Arc::new(Generated::new(Origin::Outbound, Resource::Listener(listener))),
        clusters: bundle_clusters,
        deps: deps.collect(),
        reads: None,
    }
}

/// An outbound's bundle: from the cache (built for these `to` policies, or
/// for others that give the same), else built and recorded there.
fn bundle(
    target: &OutboundTarget,
    target_digest: u64,
    mesh: &MeshContext,
    policies: &Policies,
    cache: Option<&OutboundCache>,
) -> Arc<OutboundBundle> {
    let build = || {
        let (mut bundle, reads) = policies.recording(|| build_bundle(target, mesh, policies));
        bundle.reads = reads;
        bundle
    };
    match cache {
        Some(cache) => {
            let key = bundle_key(policies.to_signature(), mesh.mesh_digest, target_digest);
            let outbound = bundle_key(0, mesh.mesh_digest, target_digest);
            cache.get_or_build(key, outbound, mesh, policies, build)
        }
        None => Arc::new(build()),
    }
}

/// Adds a bundle to the proxy's resources, with what depends on the proxy
/// itself: access logs and tracing (which name the proxy), the proxy's
/// tags on health checks, locality-aware endpoint priorities.
fn add_for_proxy(
    target: &OutboundTarget,
    bundle: &OutboundBundle,
    proxy: &Proxy<'_>,
    mesh: &MeshContext,
    policies: &Policies,
    edits: &ProxyEdits,
    rs: &mut ResourceSet,
) {
    if edits.own_listeners {
        let destination = target.destination(mesh);
        let kuma_tags = &edits.kuma_tags;
        let mut listener = bundle.listener.resource().clone();
        if let Resource::Listener(l) = &mut listener {
            envoy::edit_hcms(l, |hcm| {
                if let (Some(tags), Some(http_connection_manager::RouteSpecifier::RouteConfig(rc))) =
                    (kuma_tags, &mut hcm.route_specifier)
                {
                    rc.request_headers_to_add
                        .push(envoy::header("x-kuma-tags", tags, true));
                }
                plugins::mesh_access_log::outbound_hcm(hcm, proxy, mesh, policies, &destination, rs);
                plugins::mesh_trace::hcm(hcm, proxy, mesh, policies, Some(&target.service), rs);
            });
            envoy::edit_network_filters(l, envoy::TCP_PROXY, |tcp: &mut TcpProxy| {
                plugins::mesh_access_log::outbound_tcp(tcp, proxy, mesh, policies, &destination, rs);
            });
        }
        rs.add(Origin::Outbound, listener);
    } else {
        rs.add_shared(bundle.listener.clone());
    }

    for c in &bundle.clusters {
        let name = c.cluster.resource().name();
        // The same cluster may serve several outbounds; the first wins.
        if rs.contains(XdsType::Cluster, name) {
            continue;
        }
        match c.cluster.resource() {
            Resource::Cluster(cluster) if plugins::mesh_health_check::has_http_checks(cluster) => {
                let mut cluster = cluster.clone();
                let tags = edits
                    .source_tags
                    .get_or_init(|| serialize_tag_set(&proxy.tag_set()));
                plugins::mesh_health_check::add_source_tags(&mut cluster, tags);
                rs.add(Origin::Outbound, Resource::Cluster(cluster));
            }
            _ => rs.add_shared(c.cluster.clone()),
        }
        match c.endpoints.resource() {
            Resource::Endpoints(cla) if edits.locality => {
                let mut cla = cla.clone();
                let cluster_destination = mesh.destination(&c.service, &c.tags);
                let service = mesh.services.get(&c.service);
                let alike = tags_alike(service.map(|s| s.endpoints.as_slice()).unwrap_or(&[]));
                plugins::mesh_load_balancing_strategy::endpoints(
                    &mut cla,
                    proxy,
                    mesh,
                    policies,
                    &cluster_destination,
                    &alike,
                );
                rs.add(Origin::Outbound, Resource::Endpoints(cla));
            }
            _ => rs.add_shared(c.endpoints.clone()),
        }
    }
}

/// The endpoints of a cluster: the service's ready endpoints whose tags
/// include the subset's, grouped by zone, each with the tags that tell it
/// from the service's other endpoints as metadata (see [`tags_alike`]), or
/// its labels where it has no tags but `kuma.io/service`. A service without
/// endpoints gets an empty assignment, which Envoy needs to finish warming
/// the cluster.
///
/// Every endpoint goes to every proxy reaching its service, and again
/// whenever the cluster changes (Envoy keeps a changed EDS cluster warming
/// until its endpoints come again), so it carries no byte Envoy would not
/// miss: no weight of 1 (Envoy's default; Kuma writes it) and no tag every
/// endpoint has alike (Kuma leaves out only `kuma.io/service`). In the load
/// bench's mesh that was 79 of an endpoint's 107 bytes.
pub fn endpoints(
    cluster: &str,
    service: Option<&Service>,
    subset: &BTreeMap<String, String>,
) -> ClusterLoadAssignment {
    let all = service.map(|s| s.endpoints.as_slice()).unwrap_or(&[]);
    let alike = tags_alike(all);
    let mut by_zone: BTreeMap<Option<String>, Vec<LbEndpoint>> = BTreeMap::new();
    for e in all {
        if !tags_match(subset, &e.tags) {
            continue;
        }
        let mut lb = envoy::lb_endpoint(&e.address, e.port);
        let mut filter_metadata = std::collections::HashMap::new();
        let meta: BTreeMap<String, String> = e
            .tags
            .iter()
            .filter(|(k, v)| alike.get(k.as_str()) != Some(&v.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        // Only `envoy.lb`: Kuma repeats the tags under
        // `envoy.transport_socket_match`, which Envoy reads only for a
        // cluster with `transport_socket_matches`, and no cluster here has
        // them; the copy was nearly half of every endpoint's bytes.
        if !meta.is_empty() {
            filter_metadata.insert("envoy.lb".to_string(), envoy::string_struct(&meta));
        }
        // Workload labels stand in for tags only where there are none but
        // `kuma.io/service` (as Kuma sends them): with tags they would
        // repeat what `envoy.lb` says and be most of every endpoint's bytes.
        let service_tag_only = e.tags.keys().all(|k| k == SERVICE_TAG);
        if service_tag_only && !e.labels.is_empty() {
            filter_metadata.insert("io.kuma.labels".to_string(), envoy::string_struct(&e.labels));
        }
        if !filter_metadata.is_empty() {
            lb.metadata = Some(envoy_types::pb::envoy::config::core::v3::Metadata {
                filter_metadata,
                ..Default::default()
            });
        }
        by_zone.entry(e.zone.clone()).or_default().push(lb);
    }
    ClusterLoadAssignment {
        cluster_name: cluster.to_string(),
        endpoints: by_zone
            .into_iter()
            .map(|(zone, lb_endpoints)| LocalityLbEndpoints {
                locality: zone.map(|z| Locality {
                    zone: z,
                    ..Default::default()
                }),
                lb_endpoints,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// The tags every one of `endpoints` has, with the same value: the
/// service's name, usually its protocol and zone, on Kubernetes the
/// Service, namespace and port the name is made of and the labels of its
/// Pods' template. As endpoint metadata they could tell no endpoint from
/// another: a MeshRetry `omitHostsWithTags` naming one matches all of a
/// service's endpoints or none, and either way picks among them alike.
/// Locality affinity, which weighs one tag after another, reads them back
/// ([`plugins::mesh_load_balancing_strategy::endpoints`]).
fn tags_alike(endpoints: &[Endpoint]) -> BTreeMap<&str, &str> {
    let Some((first, rest)) = endpoints.split_first() else {
        return BTreeMap::new();
    };
    first
        .tags
        .iter()
        .filter(|(k, v)| rest.iter().all(|e| e.tags.get(*k) == Some(*v)))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::net::Ipv4Addr;

    use envoy_types::pb::envoy::config::core::v3::address::Address;
    use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
    use envoy_types::pb::google::protobuf::value::Kind;

    use super::{ClusterLoadAssignment, endpoints};
    use crate::context::{Endpoint, Protocol, Service};

    fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn service(endpoint_tags: &[&[(&str, &str)]]) -> Service {
        let endpoints = endpoint_tags
            .iter()
            .enumerate()
            .map(|(i, pairs)| Endpoint {
                address: format!("10.0.0.{i}"),
                port: 8080,
                tags: tags(pairs),
                zone: None,
                dataplane: format!("dp-{i}"),
                labels: BTreeMap::new(),
            })
            .collect();
        Service::new(
            "web".into(),
            Protocol::Http,
            endpoints,
            Ipv4Addr::LOCALHOST,
            80,
            vec![],
            None,
        )
    }

    /// Each endpoint's `envoy.lb` metadata, by address.
    fn metadata(cla: &ClusterLoadAssignment) -> BTreeMap<String, BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        for lb in cla.endpoints.iter().flat_map(|l| &l.lb_endpoints) {
            assert_eq!(lb.load_balancing_weight, None, "a weight of 1 is Envoy's default");
            let Some(HostIdentifier::Endpoint(e)) = &lb.host_identifier else {
                continue;
            };
            let Some(Address::SocketAddress(a)) = e.address.as_ref().and_then(|a| a.address.as_ref()) else {
                continue;
            };
            let fields = lb
                .metadata
                .iter()
                .flat_map(|m| m.filter_metadata.get("envoy.lb"))
                .flat_map(|s| &s.fields)
                .filter_map(|(k, v)| match &v.kind {
                    Some(Kind::StringValue(s)) => Some((k.clone(), s.clone())),
                    _ => None,
                })
                .collect();
            out.insert(a.address.clone(), fields);
        }
        out
    }

    /// A case: each endpoint's tags, the subset, and the metadata expected by
    /// address.
    type Case = (
        &'static str,
        Vec<&'static [(&'static str, &'static str)]>,
        &'static [(&'static str, &'static str)],
        Vec<(&'static str, &'static [(&'static str, &'static str)])>,
    );

    #[test]
    fn endpoints_carry_the_tags_that_tell_them_apart() {
        const SVC: (&str, &str) = ("kuma.io/service", "web");
        const HTTP: (&str, &str) = ("kuma.io/protocol", "http");
        let cases: Vec<Case> = vec![
            ("one endpoint", vec![&[SVC, HTTP]], &[], vec![("10.0.0.0", &[])]),
            (
                "tags alike",
                vec![&[SVC, HTTP, ("app", "web")], &[SVC, HTTP, ("app", "web")]],
                &[],
                vec![("10.0.0.0", &[]), ("10.0.0.1", &[])],
            ),
            (
                "versions differ",
                vec![&[SVC, HTTP, ("version", "v1")], &[SVC, HTTP, ("version", "v2")]],
                &[],
                vec![
                    ("10.0.0.0", &[("version", "v1")]),
                    ("10.0.0.1", &[("version", "v2")]),
                ],
            ),
            (
                "a tag only one has",
                vec![&[SVC, HTTP, ("canary", "yes")], &[SVC, HTTP]],
                &[],
                vec![("10.0.0.0", &[("canary", "yes")]), ("10.0.0.1", &[])],
            ),
            (
                "protocols disagree",
                vec![&[SVC, HTTP], &[SVC, ("kuma.io/protocol", "tcp")]],
                &[],
                vec![
                    ("10.0.0.0", &[HTTP]),
                    ("10.0.0.1", &[("kuma.io/protocol", "tcp")]),
                ],
            ),
            (
                // A subset's tag is alike within the subset, not the service.
                "a subset",
                vec![&[SVC, ("version", "v1")], &[SVC, ("version", "v2")]],
                &[("version", "v2")],
                vec![("10.0.0.1", &[("version", "v2")])],
            ),
        ];
        for (name, endpoint_tags, subset, expected) in cases {
            let cla = endpoints("web", Some(&service(&endpoint_tags)), &tags(subset));
            let expected: BTreeMap<String, BTreeMap<String, String>> = expected
                .into_iter()
                .map(|(a, t)| (a.to_string(), tags(t)))
                .collect();
            assert_eq!(metadata(&cla), expected, "{name}");
        }
    }
}
