//! Whether a policy selects a dataplane, and how policies rank.

use std::cmp::{Ordering, Reverse};
use std::collections::BTreeMap;

use crate::common::{ProxyType, TargetRef, TargetRefKind};
use crate::dataplane::{DataplaneSpec, SERVICE_TAG};
use crate::policies::PolicyRole;
use crate::resource::{NAMESPACE_LABEL, ORIGIN_LABEL, Resource, ZONE_LABEL};

/// What a policy selected on a dataplane.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    /// Indexes of the selected inbounds.
    pub inbounds: Vec<usize>,
}

/// Whether `selector` matches `tags`: every key present with an equal value,
/// or any value for `*`. An empty selector matches everything.
pub fn tags_match(selector: &BTreeMap<String, String>, tags: &BTreeMap<String, String>) -> bool {
    selector
        .iter()
        .all(|(k, v)| tags.get(k).is_some_and(|t| v == "*" || t == v))
}

fn namespace_of(resource: &Resource) -> Option<&str> {
    resource
        .meta
        .namespace
        .as_deref()
        .or_else(|| resource.meta.labels.get(NAMESPACE_LABEL).map(String::as_str))
}

/// Whether `policy` selects the dataplane, and which inbounds.
///
/// `Ok(None)` means not selected; an error means the policy's target could
/// not be resolved (a route that does not exist).
pub fn select(
    policy: &Resource,
    top: &TargetRef,
    dataplane: &Resource,
    dp: &DataplaneSpec,
    routes: &[&Resource],
) -> Result<Option<Selection>, String> {
    let role = policy.meta.policy_role();
    if matches!(role, PolicyRole::Consumer | PolicyRole::WorkloadOwner)
        && namespace_of(policy) != namespace_of(dataplane)
    {
        return Ok(None);
    }
    if role != PolicyRole::Producer
        && policy.meta.labels.get(ORIGIN_LABEL).is_some_and(|o| o == "zone")
        && let (Some(pz), Some(dz)) = (
            policy.meta.labels.get(ZONE_LABEL),
            dataplane.meta.labels.get(ZONE_LABEL),
        )
        && pz != dz
    {
        return Ok(None);
    }
    select_target(policy, top, dataplane, dp, routes, 0)
}

fn select_target(
    policy: &Resource,
    top: &TargetRef,
    dataplane: &Resource,
    dp: &DataplaneSpec,
    routes: &[&Resource],
    depth: usize,
) -> Result<Option<Selection>, String> {
    let proxy_type = if dp.is_gateway() {
        ProxyType::Gateway
    } else {
        ProxyType::Sidecar
    };
    let proxy_type_ok = top
        .proxy_types
        .as_ref()
        .is_none_or(|t| t.is_empty() || t.contains(&proxy_type));
    let all_inbounds = || Selection {
        inbounds: (0..dp.inbounds().len()).collect(),
    };
    let by_tags = |selector: &BTreeMap<String, String>| -> Option<Selection> {
        let inbounds: Vec<usize> = dp
            .inbounds()
            .iter()
            .enumerate()
            .filter(|(_, i)| i.tags.as_ref().is_some_and(|t| tags_match(selector, t)))
            .map(|(n, _)| n)
            .collect();
        let gateway = dp.is_delegated_gateway()
            && dp
                .networking()
                .gateway
                .as_ref()
                .and_then(|g| g.tags.as_ref())
                .is_some_and(|t| tags_match(selector, t));
        (gateway || !inbounds.is_empty()).then_some(Selection { inbounds })
    };
    Ok(match top.kind {
        TargetRefKind::Mesh => proxy_type_ok.then(all_inbounds),
        TargetRefKind::MeshSubset => {
            if proxy_type_ok {
                by_tags(top.tags_or_empty())
            } else {
                None
            }
        }
        TargetRefKind::MeshService => by_tags(&BTreeMap::from([(
            SERVICE_TAG.to_string(),
            top.name_or_empty().to_string(),
        )])),
        TargetRefKind::MeshServiceSubset => {
            let mut selector = BTreeMap::from([(SERVICE_TAG.to_string(), top.name_or_empty().to_string())]);
            selector.extend(top.tags_or_empty().clone());
            by_tags(&selector)
        }
        TargetRefKind::Dataplane => {
            if dp.is_builtin_gateway() {
                return Ok(None);
            }
            let selected = if let Some(name) = top.name.as_deref().filter(|n| !n.is_empty()) {
                let ns = top.namespace.as_deref().or_else(|| namespace_of(policy));
                dataplane.meta.name == name
                    && (dataplane.meta.namespace.is_none() || namespace_of(dataplane) == ns)
            } else if !top.labels_or_empty().is_empty() {
                top.labels_or_empty()
                    .iter()
                    .all(|(k, v)| dataplane.meta.labels.get(k) == Some(v))
            } else {
                true
            };
            if !selected {
                return Ok(None);
            }
            match top.section_name.as_deref().filter(|s| !s.is_empty()) {
                None => Some(all_inbounds()),
                Some(section) => {
                    let inbounds: Vec<usize> = dp
                        .inbounds()
                        .iter()
                        .enumerate()
                        .filter(|(_, i)| i.section_name() == section)
                        .map(|(n, _)| n)
                        .collect();
                    (!inbounds.is_empty()).then_some(Selection { inbounds })
                }
            }
        }
        TargetRefKind::MeshHTTPRoute => {
            let name = top.name_or_empty();
            let route = routes
                .iter()
                .find(|r| r.meta.display_name() == name || r.meta.core_name() == name)
                .ok_or_else(|| format!("couldn't resolve MeshHTTPRoute targetRef with name '{name}'"))?;
            if depth > 0 {
                return Err("a MeshHTTPRoute cannot target another MeshHTTPRoute".into());
            }
            let route_top = super::PolicyView::of(&route.spec)
                .map(|v| v.top)
                .unwrap_or_else(TargetRef::mesh);
            return select_target(route, &route_top, dataplane, dp, routes, depth + 1);
        }
        // Builtin gateways and multi-zone services are not served here.
        TargetRefKind::MeshGateway
        | TargetRefKind::MeshExternalService
        | TargetRefKind::MeshMultiZoneService => None,
    })
}

/// Where a policy came from, ordered so that a more local origin wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Origin {
    /// Synced from the global control plane: least specific.
    Global,
    /// Written here, without an origin label.
    Unset,
    /// Written in this zone: most specific.
    Zone,
}

/// A policy's rank among the policies of its type; a greater value is more
/// specific and wins conflicts.
///
/// The field order is the comparison order. `name` is reversed because Kuma
/// breaks ties in favour of the alphabetically *smallest* name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Precedence {
    /// The top-level kind's specificity.
    pub kind: u8,
    /// For `Dataplane` targets: selected by name (more specific than labels).
    pub dataplane_by_name: bool,
    /// For `Dataplane` targets: narrowed to an inbound.
    pub dataplane_by_section: bool,
    /// The origin.
    pub origin: Origin,
    /// The role.
    pub role: PolicyRole,
    /// The display name, reversed.
    pub name: Reverse<String>,
}

impl Precedence {
    /// The rank of `policy` whose top-level target is `top`.
    pub fn of(policy: &Resource, top: &TargetRef) -> Self {
        let is_dp = top.kind == TargetRefKind::Dataplane;
        Precedence {
            kind: top.kind.specificity(),
            dataplane_by_name: is_dp && !top.name_or_empty().is_empty(),
            dataplane_by_section: is_dp && top.section_name.as_deref().is_some_and(|s| !s.is_empty()),
            origin: match policy.meta.labels.get(ORIGIN_LABEL).map(String::as_str) {
                Some("global") => Origin::Global,
                Some("zone") => Origin::Zone,
                _ => Origin::Unset,
            },
            role: policy.meta.policy_role(),
            name: Reverse(policy.meta.display_name().to_string()),
        }
    }

    /// Compares everything but the name.
    pub fn cmp_attributes(&self, other: &Self) -> Ordering {
        (
            self.kind,
            self.dataplane_by_name,
            self.dataplane_by_section,
            self.origin,
            self.role,
        )
            .cmp(&(
                other.kind,
                other.dataplane_by_name,
                other.dataplane_by_section,
                other.origin,
                other.role,
            ))
    }
}
