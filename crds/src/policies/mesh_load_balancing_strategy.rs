//! MeshLoadBalancingStrategy: load balancer type, hashing and locality.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{PolicyContext, PolicySpec, TargetItem, items, spec_path, top_ref, validate_top};
use crate::common::{Duration, IntOrString, TargetRef, TargetRefKind, TargetRefKind::*, TargetRefRules};
use crate::resource::ResourceType;
use crate::validation::{FieldPath, Violations, check_percentage};

/// MeshLoadBalancingStrategy spec.
#[serde_with::skip_serializing_none]
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kuma.io",
    version = "v1alpha1",
    kind = "MeshLoadBalancingStrategy",
    plural = "meshloadbalancingstrategies",
    shortname = "mlbs",
    category = "kuma",
    namespaced,
    printcolumn = r#"{"name":"TargetRef Kind","type":"string","jsonPath":".spec.targetRef.kind"}"#,
    printcolumn = r#"{"name":"TargetRef Name","type":"string","jsonPath":".spec.targetRef.name"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshLoadBalancingStrategySpec {
    /// The proxies this policy configures; `{kind: Mesh}` when absent.
    pub target_ref: Option<TargetRef>,
    /// Strategies per destination.
    pub to: Option<Vec<TargetItem<Conf>>>,
}

/// Load balancing configuration.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Conf {
    /// Zone and locality preferences.
    pub locality_awareness: Option<LocalityAwareness>,
    /// The load balancer.
    pub load_balancer: Option<LoadBalancer>,
    /// What consistent hashing hashes.
    pub hash_policies: Option<Vec<HashPolicy>>,
}

/// Locality-aware load balancing.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityAwareness {
    /// Turns locality awareness off.
    pub disabled: Option<bool>,
    /// Preferences inside the local zone.
    pub local_zone: Option<LocalZone>,
    /// Failover between zones.
    pub cross_zone: Option<CrossZone>,
}

/// Preferences inside the local zone.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalZone {
    /// Tags to prefer endpoints by, most important first.
    pub affinity_tags: Option<Vec<AffinityTag>>,
}

/// A tag to prefer endpoints by.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AffinityTag {
    /// The tag name.
    pub key: String,
    /// The relative weight; by default 90%/9%/1%… by position.
    pub weight: Option<u32>,
}

/// Failover between zones.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CrossZone {
    /// Failover rules, in order.
    pub failover: Option<Vec<Failover>>,
    /// Healthy share of local endpoints below which failover starts.
    pub failover_threshold: Option<FailoverThreshold>,
}

/// A failover rule.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Failover {
    /// The zones this rule applies to; all when absent.
    pub from: Option<FromZone>,
    /// Where to fail over to.
    pub to: ToZone,
}

/// Zones a failover rule applies to.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FromZone {
    /// The zones.
    pub zones: Vec<String>,
}

/// Which zones to fail over to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ToZoneType {
    /// Never leave the zone.
    None,
    /// Only the listed zones.
    Only,
    /// Any zone.
    Any,
    /// Any zone but the listed ones.
    AnyExcept,
}

/// Where to fail over to.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ToZone {
    /// The kind of rule.
    #[serde(rename = "type")]
    pub zone_type: ToZoneType,
    /// The zones for `Only`/`AnyExcept`.
    pub zones: Option<Vec<String>>,
}

/// The failover threshold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FailoverThreshold {
    /// The percentage; 50 by default.
    pub percentage: IntOrString,
}

/// Load balancer types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum LoadBalancerType {
    /// Round robin.
    RoundRobin,
    /// Least outstanding requests.
    LeastRequest,
    /// Consistent hashing on a ring.
    RingHash,
    /// Random choice.
    Random,
    /// Maglev consistent hashing.
    Maglev,
}

/// The load balancer.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancer {
    /// The type.
    #[serde(rename = "type")]
    pub lb_type: LoadBalancerType,
    /// Round robin settings (none).
    pub round_robin: Option<Empty>,
    /// Least request settings.
    pub least_request: Option<LeastRequest>,
    /// Ring hash settings.
    pub ring_hash: Option<RingHash>,
    /// Random settings (none).
    pub random: Option<Empty>,
    /// Maglev settings.
    pub maglev: Option<Maglev>,
}

/// An object without fields.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// Least request settings.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LeastRequest {
    /// Hosts compared per pick; 2 by default.
    pub choice_count: Option<u32>,
    /// How strongly active requests weigh (e.g. `"1.3"`).
    pub active_request_bias: Option<IntOrString>,
}

/// Hash functions for ring hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum HashFunctionType {
    /// xxHash (default).
    XXHash,
    /// MurmurHash2.
    MurmurHash2,
}

/// Ring hash settings.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RingHash {
    /// The hash function.
    pub hash_function: Option<HashFunctionType>,
    /// Minimum ring size; 1024 by default.
    pub min_ring_size: Option<u32>,
    /// Maximum ring size; 8M by default.
    pub max_ring_size: Option<u32>,
    /// Deprecated: use `hashPolicies` beside `loadBalancer`.
    pub hash_policies: Option<Vec<HashPolicy>>,
}

/// Maglev settings.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Maglev {
    /// The lookup table size (prime); 65537 by default.
    pub table_size: Option<u32>,
    /// Deprecated: use `hashPolicies` beside `loadBalancer`.
    pub hash_policies: Option<Vec<HashPolicy>>,
}

/// What a hash policy hashes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum HashPolicyType {
    /// A request header.
    Header,
    /// A cookie.
    Cookie,
    /// The connection (source IP).
    Connection,
    /// The source IP (deprecated, same as Connection).
    #[serde(rename = "SourceIP")]
    SourceIp,
    /// A query parameter.
    QueryParameter,
    /// A filter state key.
    FilterState,
}

/// A hash policy.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HashPolicy {
    /// What to hash.
    #[serde(rename = "type")]
    pub policy_type: HashPolicyType,
    /// Stop evaluating further policies when this one produced a hash.
    pub terminal: Option<bool>,
    /// The header to hash.
    pub header: Option<NamedKey>,
    /// The cookie to hash.
    pub cookie: Option<Cookie>,
    /// Hash the connection.
    pub connection: Option<Connection>,
    /// The query parameter to hash.
    pub query_parameter: Option<NamedKey>,
    /// The filter state key to hash.
    pub filter_state: Option<FilterStateKey>,
}

/// A name to hash by.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NamedKey {
    /// The name.
    pub name: String,
}

/// A filter state key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FilterStateKey {
    /// The key.
    pub key: String,
}

/// A cookie to hash by, generated when absent.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Cookie {
    /// The cookie name.
    pub name: String,
    /// Lifetime of a generated cookie.
    pub ttl: Option<Duration>,
    /// Path of a generated cookie.
    pub path: Option<String>,
}

/// Hash by connection.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Connection {
    /// Hash the source IP.
    #[serde(rename = "sourceIP")]
    pub source_ip: Option<bool>,
}

impl PolicySpec for MeshLoadBalancingStrategySpec {
    const TYPE: ResourceType = ResourceType::MeshLoadBalancingStrategy;
    type Conf = Conf;

    fn validate(&self, _ctx: &PolicyContext, v: &mut Violations) {
        validate_top(
            &self.target_ref,
            TargetRefRules::kinds(&[
                Mesh,
                MeshSubset,
                MeshGateway,
                MeshService,
                MeshServiceSubset,
                Dataplane,
            ])
            .with_gateway_listener_tags(true),
            v,
        );
        let top_kind = top_ref(&self.target_ref).kind;
        for (i, item) in items(&self.to) {
            let p = spec_path().field("to").index(i);
            let conf = item.default.clone().unwrap_or_default();
            let kinds: &[TargetRefKind] = if top_kind == MeshGateway {
                if conf.load_balancer.is_some() {
                    &[Mesh]
                } else {
                    &[Mesh, MeshService, MeshMultiZoneService]
                }
            } else {
                &[Mesh, MeshService, MeshMultiZoneService, MeshHTTPRoute]
            };
            if item.target_ref.kind == MeshExternalService {
                v.add(
                    &p.field("targetRef").field("kind"),
                    "value 'MeshExternalService' is not supported: load balancing to external services is configured on the zone egress",
                );
            } else if top_kind == MeshGateway && conf.load_balancer.is_some() && item.target_ref.kind != Mesh
            {
                v.add(
                    &p.field("targetRef").field("kind"),
                    format!(
                        "value '{}' is not supported, only Mesh is allowed if loadBalancer is set",
                        item.target_ref.kind
                    ),
                );
            } else {
                item.target_ref
                    .validate(&TargetRefRules::kinds(kinds), &p.field("targetRef"), v);
            }
            validate_conf(&conf, &item.target_ref, &p.field("default"), v);
        }
    }
}

fn validate_conf(conf: &Conf, to: &TargetRef, path: &FieldPath, v: &mut Violations) {
    if to.kind == MeshHTTPRoute {
        validate_hash_policies(&conf.hash_policies, &path.field("hashPolicies"), v);
        for (set, name) in [
            (conf.load_balancer.is_some(), "loadBalancer"),
            (conf.locality_awareness.is_some(), "localityAwareness"),
        ] {
            if set {
                v.add(
                    &path.field(name),
                    "field is not allowed when targetRef.kind is MeshHTTPRoute, only hashPolicies is supported",
                );
            }
        }
        return;
    }
    if let Some(lb) = &conf.load_balancer {
        let lp = path.field("loadBalancer");
        match lb.lb_type {
            LoadBalancerType::RingHash => {
                if let Some(r) = &lb.ring_hash {
                    let rp = lp.field("ringHash");
                    validate_hash_policies(&r.hash_policies, &rp.field("hashPolicies"), v);
                    if let (Some(min), Some(max)) = (r.min_ring_size, r.max_ring_size)
                        && min > max
                    {
                        v.add(
                            &rp.field("minRingSize"),
                            "must be less than or equal to maxRingSize",
                        );
                    }
                    for (n, name) in [(r.min_ring_size, "minRingSize"), (r.max_ring_size, "maxRingSize")] {
                        if n.is_some_and(|n| !(1..=8_000_000).contains(&n)) {
                            v.add(&rp.field(name), "must be in inclusive range [1, 8000000]");
                        }
                    }
                }
            }
            LoadBalancerType::Maglev => {
                if let Some(m) = &lb.maglev {
                    validate_hash_policies(&m.hash_policies, &lp.field("maglev").field("hashPolicies"), v);
                    if m.table_size.is_some_and(|n| !(1..=5_000_011).contains(&n)) {
                        v.add(
                            &lp.field("maglev").field("tableSize"),
                            "must be in inclusive range [1, 5000011]",
                        );
                    } else if m.table_size.is_some_and(|n| !is_prime(n)) {
                        // Kuma accepts it and Envoy then rejects the cluster.
                        v.add(&lp.field("maglev").field("tableSize"), "must be a prime number");
                    }
                }
            }
            LoadBalancerType::LeastRequest => {
                if let Some(l) = &lb.least_request {
                    if let Some(bias) = &l.active_request_bias {
                        match bias.as_decimal() {
                            None => v.add(
                                &lp.field("leastRequest").field("activeRequestBias"),
                                "string must be a valid number",
                            ),
                            Some(x) if x < 0.0 => v.add(
                                &lp.field("leastRequest").field("activeRequestBias"),
                                "must be greater or equal then: 0",
                            ),
                            Some(_) => {}
                        }
                    }
                    if l.choice_count.is_some_and(|c| c < 2) {
                        v.add(
                            &lp.field("leastRequest").field("choiceCount"),
                            "must be greater than or equal to 2",
                        );
                    }
                }
            }
            LoadBalancerType::RoundRobin | LoadBalancerType::Random => {}
        }
    }
    if let Some(la) = &conf.locality_awareness {
        let lap = path.field("localityAwareness");
        if let Some(tags) = la.local_zone.as_ref().and_then(|l| l.affinity_tags.as_ref()) {
            let tp = lap.field("localZone").field("affinityTags");
            for (k, t) in tags.iter().enumerate() {
                if t.key.is_empty() {
                    v.add(&tp.index(k).field("key"), "must not be empty");
                }
                if t.weight == Some(0) {
                    v.add(&tp.index(k).field("weight"), "must be greater than 0");
                }
            }
            let weighted = tags.iter().filter(|t| t.weight.is_some()).count();
            if weighted != 0 && weighted != tags.len() {
                v.add(&tp, "all or none affinity tags should have weight");
            }
        }
        if let Some(cz) = &la.cross_zone {
            let cp = lap.field("crossZone");
            if to.kind == MeshService
                && (to.section_name.is_some() || to.labels.as_ref().is_some_and(|l| !l.is_empty()))
            {
                v.add(&cp, "must not be set: MeshService traffic is local");
            }
            for (k, f) in cz.failover.iter().flatten().enumerate() {
                let fp = cp.field("failover").index(k);
                if let Some(from) = &f.from {
                    if from.zones.is_empty() {
                        v.add(&fp.field("from").field("zones"), "must not be empty");
                    }
                    for (z, zone) in from.zones.iter().enumerate() {
                        if zone.is_empty() {
                            v.add(&fp.field("from").field("zones").index(z), "must not be empty");
                        }
                    }
                }
                let has_zones = f.to.zones.as_ref().is_some_and(|z| !z.is_empty());
                match f.to.zone_type {
                    ToZoneType::Any | ToZoneType::None if has_zones => v.add(
                        &fp.field("to").field("zones"),
                        format!("must be empty when type is {:?}", f.to.zone_type),
                    ),
                    ToZoneType::Only | ToZoneType::AnyExcept if !has_zones => v.add(
                        &fp.field("to").field("zones"),
                        format!("must not be empty when type is {:?}", f.to.zone_type),
                    ),
                    _ => {}
                }
            }
            if let Some(t) = &cz.failover_threshold {
                let tp = cp.field("failoverThreshold").field("percentage");
                check_percentage(&t.percentage, &tp, v);
                if t.percentage.as_decimal() == Some(0.0) {
                    v.add(&tp, "must be greater than 0");
                }
            }
        }
    }
    validate_hash_policies(&conf.hash_policies, &path.field("hashPolicies"), v);
    if conf.hash_policies.is_some()
        && let Some(lb) = &conf.load_balancer
    {
        if lb.ring_hash.as_ref().is_some_and(|r| r.hash_policies.is_some()) {
            v.add(
                &path.field("loadBalancer").field("ringHash").field("hashPolicies"),
                "hashPolicies already specified in the root level",
            );
        }
        if lb.maglev.as_ref().is_some_and(|m| m.hash_policies.is_some()) {
            v.add(
                &path.field("loadBalancer").field("maglev").field("hashPolicies"),
                "hashPolicies already specified in the root level",
            );
        }
    }
}

fn validate_hash_policies(list: &Option<Vec<HashPolicy>>, path: &FieldPath, v: &mut Violations) {
    for (k, h) in list.iter().flatten().enumerate() {
        let hp = path.index(k);
        match h.policy_type {
            HashPolicyType::Header => match &h.header {
                None => v.add(&hp.field("header"), "must be defined"),
                Some(n) if n.name.is_empty() => v.add(&hp.field("header").field("name"), "must not be empty"),
                Some(_) => {}
            },
            HashPolicyType::Cookie => match &h.cookie {
                None => v.add(&hp.field("cookie"), "must be defined"),
                Some(c) => {
                    if c.name.is_empty() {
                        v.add(&hp.field("cookie").field("name"), "must not be empty");
                    }
                    if c.path.as_deref().is_some_and(|p| !p.starts_with('/')) {
                        v.add(&hp.field("cookie").field("path"), "must be an absolute path");
                    }
                }
            },
            HashPolicyType::QueryParameter => match &h.query_parameter {
                None => v.add(&hp.field("queryParameter"), "must be defined"),
                Some(n) if n.name.is_empty() => {
                    v.add(&hp.field("queryParameter").field("name"), "must not be empty")
                }
                Some(_) => {}
            },
            HashPolicyType::FilterState => match &h.filter_state {
                None => v.add(&hp.field("filterState"), "must be defined"),
                Some(k) if k.key.is_empty() => {
                    v.add(&hp.field("filterState").field("key"), "must not be empty")
                }
                Some(_) => {}
            },
            HashPolicyType::Connection | HashPolicyType::SourceIp => {
                if h.connection.is_none() {
                    v.add(&hp.field("connection"), "must be defined");
                }
            }
        }
    }
}

/// Trial division; table sizes are at most 5000011.
fn is_prime(n: u32) -> bool {
    n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| !n.is_multiple_of(d))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::violations;
    use super::*;

    #[test]
    fn failover_and_hash_policies() {
        let errs = violations::<MeshLoadBalancingStrategySpec>(
            r#"
to:
  - targetRef: {kind: MeshService, name: backend}
    default:
      loadBalancer:
        type: RingHash
        ringHash:
          hashPolicies: [{type: Header}, {type: Cookie, cookie: {name: c, path: relative}}]
      localityAwareness:
        localZone: {affinityTags: [{key: k8s/node, weight: 0}, {key: ""}]}
        crossZone:
          failover:
            - to: {type: None, zones: [a]}
            - from: {zones: []}
              to: {type: Only}
          failoverThreshold: {percentage: 0}
"#,
        );
        assert_eq!(
            errs,
            vec![
                "spec.to[0].default.loadBalancer.ringHash.hashPolicies[0].header: must be defined",
                "spec.to[0].default.loadBalancer.ringHash.hashPolicies[1].cookie.path: must be an absolute path",
                "spec.to[0].default.localityAwareness.localZone.affinityTags[0].weight: must be greater than 0",
                "spec.to[0].default.localityAwareness.localZone.affinityTags[1].key: must not be empty",
                "spec.to[0].default.localityAwareness.localZone.affinityTags: all or none affinity tags should have weight",
                "spec.to[0].default.localityAwareness.crossZone.failover[0].to.zones: must be empty when type is None",
                "spec.to[0].default.localityAwareness.crossZone.failover[1].from.zones: must not be empty",
                "spec.to[0].default.localityAwareness.crossZone.failover[1].to.zones: must not be empty when type is Only",
                "spec.to[0].default.localityAwareness.crossZone.failoverThreshold.percentage: must be greater than 0",
            ]
        );
    }
}
