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
mod probes;
mod system;
pub mod tls;
mod transparent;

pub use cache::{CacheStats, OutboundCache};
pub use outbound::{
    KeyedTarget, OutboundBundle, OutboundLayer, OutboundTarget, VIP_PORT, outbound_targets, vip_targets,
};
pub use system::{ADMIN_CLUSTER, READINESS_CLUSTER, admin_port_sent, prefix_route, static_hcm};
pub use transparent::original_dst_cluster;

use std::collections::BTreeMap;

use kuma_crds::matching::{Destination, InboundRules, MatchOptions, MatchedPolicies, Merged};
use kuma_crds::resource::ResourceType;

use crate::context::{MeshContext, Proxy};
use crate::digest::JsonDigest;
use crate::resources::ResourceSet;

/// The policies of every type that apply to one proxy.
#[derive(Clone, Debug, Default)]
pub struct Policies {
    by_type: BTreeMap<ResourceType, MatchedPolicies>,
    to_signature: u128,
}

impl Policies {
    /// Matches every policy type of the mesh against the proxy.
    pub fn compute(proxy: &Proxy<'_>, mesh: &MeshContext) -> Self {
        let by_type = ResourceType::policies()
            .into_iter()
            .filter(|t| mesh.policies.contains_key(t))
            .map(|t| {
                (
                    t,
                    mesh.policy_index
                        .match_policies(t, proxy.resource, MatchOptions::default()),
                )
            })
            .filter(|(_, m)| !m.is_empty())
            .collect();
        let to_signature = to_signature(&by_type);
        Policies {
            by_type,
            to_signature,
        }
    }

    /// A digest of every `to` entry that applies to the proxy: proxies with
    /// the same signature get the same configuration for every destination.
    pub fn to_signature(&self) -> u128 {
        self.to_signature
    }

    /// The matched policies of a type.
    pub fn get(&self, t: ResourceType) -> Option<&MatchedPolicies> {
        self.by_type.get(&t)
    }

    /// Whether any policy of the type selects the proxy.
    pub fn has(&self, t: ResourceType) -> bool {
        self.by_type.contains_key(&t)
    }

    /// The merged `to` configuration of a type for a destination.
    pub fn to_conf(&self, t: ResourceType, destination: &Destination) -> Option<Merged> {
        self.by_type.get(&t)?.to.conf(destination)
    }

    /// The typed `to` configuration of a type for a destination.
    pub fn to_typed<C: serde::de::DeserializeOwned>(
        &self,
        t: ResourceType,
        destination: &Destination,
    ) -> Option<C> {
        self.to_conf(t, destination)?.conf().ok()
    }

    /// The inbound rules of a type for inbound `index`.
    pub fn inbound(&self, t: ResourceType, index: usize) -> Option<&InboundRules> {
        self.by_type.get(&t)?.inbounds.get(&index)
    }

    /// The typed catch-all inbound configuration of a type for inbound `index`.
    pub fn inbound_typed<C: serde::de::DeserializeOwned>(&self, t: ResourceType, index: usize) -> Option<C> {
        self.inbound(t, index)?.catch_all.as_ref()?.conf().ok()
    }

    /// The merged single-item configuration of a type.
    pub fn single(&self, t: ResourceType) -> Option<&Merged> {
        self.by_type.get(&t)?.single.as_ref()
    }

    /// The typed single-item configuration of a type.
    pub fn single_typed<C: serde::de::DeserializeOwned>(&self, t: ResourceType) -> Option<C> {
        self.single(t)?.conf().ok()
    }

    /// Every matched type.
    pub fn iter(&self) -> impl Iterator<Item = (&ResourceType, &MatchedPolicies)> {
        self.by_type.iter()
    }
}

fn to_signature(by_type: &BTreeMap<ResourceType, MatchedPolicies>) -> u128 {
    let mut d = JsonDigest::new();
    for (t, matched) in by_type {
        d.add(t.name());
        for e in &matched.to.entries {
            d.add(&e.target);
            d.add(&e.route_scope);
            d.add(&e.conf);
            d.add(&e.source);
        }
    }
    d.finish128()
}

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
    system::generate(proxy, mesh, policies, &mut rs);
    tls::generate(proxy, mesh, &mut rs);
    transparent::generate(proxy, mesh, policies, &mut rs);
    dns::generate(proxy, mesh, &mut rs);
    inbound::generate(proxy, mesh, policies, &mut rs);
    probes::generate(proxy, &mut rs);
    let layer = outbound::generate(proxy, mesh, policies, cache, &mut rs, &mut bundles);
    crate::plugins::mesh_proxy_patch::apply(policies, &mut rs);
    Generation {
        resources: rs,
        bundles,
        layer,
    }
}
