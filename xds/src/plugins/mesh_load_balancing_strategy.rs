//! MeshLoadBalancingStrategy: the load balancer of outbound clusters, hash
//! policies on routes, and locality priorities of endpoints.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{Locality, RuntimeDouble};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, LocalityLbEndpoints, cluster_load_assignment,
};
use envoy_types::pb::envoy::config::route::v3::{RouteAction, route_action};
use kuma_crds::dataplane::ZONE_TAG;
use kuma_crds::matching::Destination;
use kuma_crds::policies::mesh_load_balancing_strategy::{
    Conf, HashFunctionType, HashPolicy, HashPolicyType, LoadBalancerType, ToZoneType,
};
use kuma_crds::resource::ResourceType;

use crate::context::{MeshContext, Proxy};
use crate::envoy;
use crate::generate::Policies;

const T: ResourceType = ResourceType::MeshLoadBalancingStrategy;

fn envoy_hash_policy(h: &HashPolicy) -> Option<route_action::HashPolicy> {
    use route_action::hash_policy::{self, PolicySpecifier};
    let specifier = match h.policy_type {
        HashPolicyType::Header => PolicySpecifier::Header(hash_policy::Header {
            header_name: h.header.as_ref()?.name.clone(),
            ..Default::default()
        }),
        HashPolicyType::Cookie => {
            let c = h.cookie.as_ref()?;
            PolicySpecifier::Cookie(hash_policy::Cookie {
                name: c.name.clone(),
                ttl: c.ttl.as_ref().and_then(|t| t.to_std()).map(envoy::duration),
                path: c.path.clone().unwrap_or_default(),
                ..Default::default()
            })
        }
        HashPolicyType::Connection | HashPolicyType::SourceIp => {
            PolicySpecifier::ConnectionProperties(hash_policy::ConnectionProperties {
                source_ip: h.connection.as_ref().and_then(|c| c.source_ip).unwrap_or(true),
            })
        }
        HashPolicyType::QueryParameter => PolicySpecifier::QueryParameter(hash_policy::QueryParameter {
            name: h.query_parameter.as_ref()?.name.clone(),
        }),
        HashPolicyType::FilterState => PolicySpecifier::FilterState(hash_policy::FilterState {
            key: h.filter_state.as_ref()?.key.clone(),
        }),
    };
    Some(route_action::HashPolicy {
        terminal: h.terminal.unwrap_or(false),
        policy_specifier: Some(specifier),
    })
}

/// The hash policies of `conf`: the top-level list, else the deprecated
/// list inside ring hash or maglev.
pub fn hash_policies(conf: &Conf) -> Vec<HashPolicy> {
    if let Some(list) = &conf.hash_policies {
        return list.clone();
    }
    let lb = conf.load_balancer.as_ref();
    match lb.map(|l| l.lb_type) {
        Some(LoadBalancerType::RingHash) => lb
            .and_then(|l| l.ring_hash.as_ref())
            .and_then(|r| r.hash_policies.clone()),
        Some(LoadBalancerType::Maglev) => lb
            .and_then(|l| l.maglev.as_ref())
            .and_then(|m| m.hash_policies.clone()),
        _ => None,
    }
    .unwrap_or_default()
}

/// Outbound route: hash policies.
pub fn route(action: &mut RouteAction, policies: &Policies, destination: &Destination) {
    if let Some(conf) = policies.to_typed::<Conf>(T, destination) {
        action
            .hash_policy
            .extend(hash_policies(&conf).iter().filter_map(envoy_hash_policy));
    }
}

/// Outbound cluster: the load balancer.
pub fn cluster(cluster: &mut Cluster, policies: &Policies, destination: &Destination) {
    let Some(conf) = policies.to_typed::<Conf>(T, destination) else {
        return;
    };
    let affinity = conf
        .locality_awareness
        .as_ref()
        .and_then(|l| l.local_zone.as_ref())
        .and_then(|z| z.affinity_tags.as_ref())
        .is_some_and(|t| !t.is_empty());
    if affinity {
        cluster
            .common_lb_config
            .get_or_insert_with(cluster::CommonLbConfig::default)
            .locality_config_specifier = Some(
            cluster::common_lb_config::LocalityConfigSpecifier::LocalityWeightedLbConfig(Default::default()),
        );
    }
    let Some(lb) = &conf.load_balancer else { return };
    match lb.lb_type {
        LoadBalancerType::RoundRobin => cluster.lb_policy = cluster::LbPolicy::RoundRobin as i32,
        LoadBalancerType::Random => cluster.lb_policy = cluster::LbPolicy::Random as i32,
        LoadBalancerType::LeastRequest => {
            cluster.lb_policy = cluster::LbPolicy::LeastRequest as i32;
            let l = lb.least_request.clone().unwrap_or_default();
            cluster.lb_config = Some(cluster::LbConfig::LeastRequestLbConfig(
                cluster::LeastRequestLbConfig {
                    choice_count: l.choice_count.map(envoy::u32_value),
                    active_request_bias: l.active_request_bias.and_then(|b| b.as_decimal()).map(|b| {
                        RuntimeDouble {
                            default_value: b,
                            runtime_key: String::new(),
                        }
                    }),
                    ..Default::default()
                },
            ));
        }
        LoadBalancerType::RingHash => {
            cluster.lb_policy = cluster::LbPolicy::RingHash as i32;
            let r = lb.ring_hash.clone().unwrap_or_default();
            cluster.lb_config = Some(cluster::LbConfig::RingHashLbConfig(cluster::RingHashLbConfig {
                minimum_ring_size: r
                    .min_ring_size
                    .map(|v| envoy_types::pb::google::protobuf::UInt64Value { value: u64::from(v) }),
                maximum_ring_size: r
                    .max_ring_size
                    .map(|v| envoy_types::pb::google::protobuf::UInt64Value { value: u64::from(v) }),
                hash_function: match r.hash_function {
                    Some(HashFunctionType::MurmurHash2) => {
                        cluster::ring_hash_lb_config::HashFunction::MurmurHash2
                    }
                    _ => cluster::ring_hash_lb_config::HashFunction::XxHash,
                } as i32,
            }));
        }
        LoadBalancerType::Maglev => {
            cluster.lb_policy = cluster::LbPolicy::Maglev as i32;
            let m = lb.maglev.clone().unwrap_or_default();
            cluster.lb_config = Some(cluster::LbConfig::MaglevLbConfig(cluster::MaglevLbConfig {
                table_size: m
                    .table_size
                    .map(|v| envoy_types::pb::google::protobuf::UInt64Value { value: u64::from(v) }),
            }));
        }
    }
}

/// Whether outbound endpoints of the proxy may need locality priorities.
pub fn applies(policies: &Policies, mesh: &MeshContext) -> bool {
    policies.has(T) || legacy_locality(mesh)
}

/// The Mesh's legacy `routing.localityAwareLoadBalancing` switch.
fn legacy_locality(mesh: &MeshContext) -> bool {
    mesh.mesh
        .routing
        .as_ref()
        .and_then(|r| r.locality_aware_load_balancing)
        == Some(true)
}

/// Outbound endpoints: locality priorities, as Kuma computes them.
///
/// Without a strategy for the destination nothing changes, unless the
/// Mesh's legacy switch is on. Plain locality awareness puts the proxy's
/// zone first and every other zone (and zone-less endpoints) at priority 1.
/// With `localZone` or `crossZone` configured, other zones are kept only
/// when a `crossZone.failover` rule lets them in (at that rule's priority),
/// `localZone.affinityTags` weight local sub-zones, and the overprovisioning
/// factor comes from `failoverThreshold` (200 by default). `alike` are the
/// tags every endpoint of the service has with the same value, left out of
/// their metadata (by the outbound generator's `endpoints`): affinity reads
/// them as every endpoint's own, as Kuma does.
pub fn endpoints(
    cla: &mut ClusterLoadAssignment,
    proxy: &Proxy<'_>,
    mesh: &MeshContext,
    policies: &Policies,
    destination: &Destination,
    alike: &BTreeMap<&str, &str>,
) {
    let locality = match policies.to_typed::<Conf>(T, destination) {
        Some(conf) => conf.locality_awareness.clone(),
        None if legacy_locality(mesh) => None,
        None => return,
    };
    if locality.as_ref().and_then(|l| l.disabled) == Some(true) {
        return;
    }
    let configured = locality
        .as_ref()
        .is_some_and(|l| l.local_zone.is_some() || l.cross_zone.is_some());
    let proxy_tags = proxy.tags();
    let Some(local_zone) = proxy_tags.get(ZONE_TAG).cloned() else {
        return;
    };
    let cross = locality.as_ref().and_then(|l| l.cross_zone.clone());
    let affinity = locality
        .as_ref()
        .and_then(|l| l.local_zone.as_ref())
        .and_then(|z| z.affinity_tags.clone())
        .unwrap_or_default();
    let mut groups: BTreeMap<(u32, String, String), (u32, Vec<_>)> = BTreeMap::new();
    for group in std::mem::take(&mut cla.endpoints) {
        let zone = group
            .locality
            .as_ref()
            .map(|l| l.zone.clone())
            .unwrap_or_default();
        for lb in group.lb_endpoints {
            let (priority, sub_zone, weight) = if zone == local_zone {
                // Its tags: its metadata's, or the ones every endpoint of
                // the service shares (left out of the metadata).
                let own = lb
                    .metadata
                    .as_ref()
                    .and_then(|m| m.filter_metadata.get("envoy.lb"));
                let tag = |key: &str| match own.and_then(|s| s.fields.get(key)).and_then(|v| v.kind.as_ref())
                {
                    Some(envoy_types::pb::google::protobuf::value::Kind::StringValue(v)) => Some(v.as_str()),
                    _ => alike.get(key).copied(),
                };
                let n = affinity.len() as u32;
                let matched = affinity.iter().enumerate().find_map(|(i, a)| {
                    tag(&a.key)
                        .filter(|v| proxy_tags.get(&a.key).map(String::as_str) == Some(*v))
                        .map(|v| (i, a, v))
                });
                match matched {
                    Some((i, a, value)) => {
                        let weight = a.weight.unwrap_or_else(|| 9 * 10u32.pow(n - i as u32 - 1));
                        (0, format!("{}={value}", a.key), weight)
                    }
                    None => (0, String::new(), 1),
                }
            } else {
                match &cross {
                    None if configured => continue,
                    None => (1, String::new(), 1),
                    Some(c) => {
                        let rule = c.failover.iter().flatten().enumerate().find(|(_, f)| {
                            let from_ok = f.from.as_ref().is_none_or(|fz| fz.zones.contains(&local_zone));
                            let zones = f.to.zones.clone().unwrap_or_default();
                            from_ok
                                && match f.to.zone_type {
                                    ToZoneType::Any => true,
                                    ToZoneType::AnyExcept => !zones.contains(&zone),
                                    ToZoneType::Only => zones.contains(&zone),
                                    ToZoneType::None => false,
                                }
                        });
                        match rule {
                            Some((k, _)) => (k as u32 + 1, String::new(), 1),
                            None => continue,
                        }
                    }
                }
            };
            let entry = groups
                .entry((priority, zone.clone(), sub_zone))
                .or_insert((weight, Vec::new()));
            entry.1.push(lb);
        }
    }
    cla.endpoints = groups
        .into_iter()
        .map(
            |((priority, zone, sub_zone), (weight, lb_endpoints))| LocalityLbEndpoints {
                locality: (!zone.is_empty()).then(|| Locality {
                    zone,
                    sub_zone,
                    ..Default::default()
                }),
                lb_endpoints,
                priority,
                load_balancing_weight: (!affinity.is_empty()).then(|| envoy::u32_value(weight)),
                ..Default::default()
            },
        )
        .collect();
    if configured {
        let factor = match cross
            .as_ref()
            .and_then(|c| c.failover_threshold.as_ref())
            .and_then(|t| t.percentage.as_decimal())
        {
            Some(threshold) if threshold > 0.0 => ((100.0 / threshold) as u32) * 100,
            _ => 200,
        };
        cla.policy
            .get_or_insert_with(cluster_load_assignment::Policy::default)
            .overprovisioning_factor = Some(envoy::u32_value(factor));
    }
}
