//! Envoy configuration of one proxy, as a pure function of the proxy and its
//! mesh ([`generate`]).
//!
//! The generators build Kuma's resources (same names, same origins) and
//! apply each policy where the resource is built, in Kuma's plugin order;
//! MeshProxyPatch runs last over the whole set.

mod cache;
pub mod dns;
mod inbound;
mod outbound;
mod policies;
mod probes;
mod system;
pub mod tls;
mod transparent;

pub use cache::{CacheStats, OutboundCache};
pub use outbound::{
    KeyedTarget, OutboundBundle, OutboundLayer, OutboundTarget, VIP_PORT, layer_for, outbound_targets,
    vip_targets,
};
pub use policies::{Policies, PolicyRead, ToDigests};
pub use system::{ADMIN_CLUSTER, READINESS_CLUSTER, admin_port_sent, prefix_route, static_hcm};
pub use transparent::original_dst_cluster;

use crate::context::{MeshContext, Proxy};
use crate::resources::ResourceSet;

/// Generates the whole Envoy configuration of `proxy`.
pub fn generate(proxy: &Proxy<'_>, mesh: &MeshContext) -> ResourceSet {
    let policies = Policies::compute(proxy, mesh);
    generate_with(proxy, mesh, &policies)
}

/// Generates with policies already matched.
pub fn generate_with(proxy: &Proxy<'_>, mesh: &MeshContext, policies: &Policies) -> ResourceSet {
    generate_cached(proxy, mesh, policies, None)
}

/// Generates with policies already matched, sharing outbound resources
/// with other proxies of the mesh through `cache`.
pub fn generate_cached(
    proxy: &Proxy<'_>,
    mesh: &MeshContext,
    policies: &Policies,
    cache: Option<&OutboundCache>,
) -> ResourceSet {
    generate_shared(proxy, mesh, policies, cache).resources
}

/// A proxy's generated configuration and the shared outbound bundles it
/// uses (which keeps them in the cache while the proxy needs them).
#[derive(Debug)]
pub struct Generation {
    /// The resources.
    pub resources: ResourceSet,
    /// The outbound bundles used outside the shared layer.
    pub bundles: Vec<std::sync::Arc<OutboundBundle>>,
    /// The shared layer of outbounds the resources rest on.
    pub layer: Option<std::sync::Arc<OutboundLayer>>,
    /// What the resources besides the layer read of the proxy's policies,
    /// when they rest on a layer and all of it could be recorded: while
    /// other policies give the same reads, only the layer changes.
    pub own_reads: Option<Box<[policies::PolicyRead]>>,
}

/// Generates with policies already matched, sharing outbound resources
/// through `cache`, and reports the bundles used.
pub fn generate_shared(
    proxy: &Proxy<'_>,
    mesh: &MeshContext,
    policies: &Policies,
    cache: Option<&OutboundCache>,
) -> Generation {
    let mut rs = ResourceSet::new();
    let mut bundles = Vec::new();
    let (layer, own_reads) = policies.recording(|| {
        system::generate(proxy, mesh, policies, &mut rs);
        tls::generate(proxy, mesh, &mut rs);
        transparent::generate(proxy, mesh, policies, &mut rs);
        dns::generate(proxy, mesh, &mut rs);
        inbound::generate(proxy, mesh, policies, &mut rs);
        probes::generate(proxy, &mut rs);
        let layer = outbound::generate(proxy, mesh, policies, cache, &mut rs, &mut bundles);
        crate::plugins::mesh_proxy_patch::apply(policies, &mut rs);
        layer
    });
    Generation {
        resources: rs,
        bundles,
        own_reads: own_reads.filter(|_| layer.is_some()).map(Vec::into_boxed_slice),
        layer,
    }
}
