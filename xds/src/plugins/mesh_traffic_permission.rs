//! MeshTrafficPermission: Envoy RBAC on the mTLS filter chain of inbounds
//! (HTTP RBAC for HTTP, network RBAC otherwise), principals from the
//! clients' certificate SANs. With mTLS on, a client nothing allows is
//! denied, as in Kuma 2.x.
//!
//! `from` entries become client-tag regions in precedence order (first
//! match wins); each region turns into the principal "in this region and in
//! none before it", so the unordered RBAC policy means exactly the same.
//! `rules` entries allow (or shadow-deny) SPIFFE ids and deny others.

use envoy_types::pb::envoy::config::rbac::v3::{
    Permission, Policy, Principal, Rbac, permission, principal, rbac,
};
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as HttpRbac;
use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac as NetworkRbac;
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
use kuma_crds::common::{RuleMatch, SpiffeIdMatchType};
use kuma_crds::dataplane::SERVICE_TAG;
use kuma_crds::matching::Tag;
use kuma_crds::policies::mesh_traffic_permission::{Action, Conf, RuleConf};
use kuma_crds::resource::ResourceType;

use crate::generate::Policies;
use crate::mtls::{kuma_id, spiffe_id};

const T: ResourceType = ResourceType::MeshTrafficPermission;
/// The HTTP filter name.
pub const HTTP_FILTER: &str = "envoy.filters.http.rbac";
/// The network filter name.
pub const NETWORK_FILTER: &str = "envoy.filters.network.rbac";

fn authenticated(pattern: string_matcher::MatchPattern) -> Principal {
    Principal {
        identifier: Some(principal::Identifier::Authenticated(principal::Authenticated {
            principal_name: Some(StringMatcher {
                match_pattern: Some(pattern),
                ignore_case: false,
            }),
        })),
    }
}

fn and(ids: Vec<Principal>) -> Principal {
    match ids.len() {
        0 => Principal {
            identifier: Some(principal::Identifier::Any(true)),
        },
        1 => ids.into_iter().next().unwrap_or_default(),
        _ => Principal {
            identifier: Some(principal::Identifier::AndIds(principal::Set { ids })),
        },
    }
}

fn or(ids: Vec<Principal>) -> Principal {
    Principal {
        identifier: Some(principal::Identifier::OrIds(principal::Set { ids })),
    }
}

fn not(p: Principal) -> Principal {
    Principal {
        identifier: Some(principal::Identifier::NotId(Box::new(p))),
    }
}

/// The principal of one tag condition.
fn tag_principal(mesh: &str, tag: &Tag) -> Principal {
    let id = if tag.key == SERVICE_TAG {
        spiffe_id(mesh, &tag.value)
    } else {
        kuma_id(&tag.key, &tag.value)
    };
    let p = authenticated(string_matcher::MatchPattern::Exact(id));
    if tag.not { not(p) } else { p }
}

fn match_principal(m: &RuleMatch) -> Option<Principal> {
    let id = m.spiffe_id.as_ref()?;
    Some(authenticated(match id.match_type {
        Some(SpiffeIdMatchType::Prefix) => string_matcher::MatchPattern::Prefix(id.value.clone()),
        _ => string_matcher::MatchPattern::Exact(id.value.clone()),
    }))
}

/// What MeshTrafficPermission decides for one inbound: the allowed and the
/// shadow-denied principals.
struct Decision {
    allow: Vec<Principal>,
    shadow_deny: Vec<Principal>,
}

fn decide(policies: &Policies, index: usize, mesh: &str) -> Decision {
    let mut decision = Decision {
        allow: Vec::new(),
        shadow_deny: Vec::new(),
    };
    let Some(rules) = policies.inbound(T, index) else {
        return decision;
    };
    let mut before: Vec<Principal> = Vec::new();
    for region in &rules.source_rules {
        let own = and(region.subset.iter().map(|t| tag_principal(mesh, t)).collect());
        let mut parts = vec![own.clone()];
        parts.extend(before.iter().cloned().map(not));
        let exclusive = and(parts);
        before.push(own);
        match region.conf.conf::<Conf>().ok().and_then(|c| c.action) {
            Some(Action::Allow) => decision.allow.push(exclusive),
            Some(Action::AllowWithShadowDeny) => {
                decision.allow.push(exclusive.clone());
                decision.shadow_deny.push(exclusive);
            }
            Some(Action::Deny) | None => {}
        }
    }
    let rule_conf: Option<RuleConf> = rules.catch_all.as_ref().and_then(|m| m.conf().ok());
    if let Some(conf) = rule_conf {
        let list =
            |l: &Option<Vec<RuleMatch>>| l.iter().flatten().filter_map(match_principal).collect::<Vec<_>>();
        let (allow, shadow, deny) = (
            list(&conf.allow),
            list(&conf.allow_with_shadow_deny),
            list(&conf.deny),
        );
        let allowed: Vec<Principal> = allow.into_iter().chain(shadow.iter().cloned()).collect();
        if !allowed.is_empty() {
            let p = if deny.is_empty() {
                or(allowed)
            } else {
                and(vec![or(allowed), not(or(deny))])
            };
            decision.allow.push(p);
        }
        if !shadow.is_empty() {
            decision.shadow_deny.push(or(shadow));
        }
    }
    decision
}

fn policy(principals: Vec<Principal>) -> Policy {
    Policy {
        permissions: vec![Permission {
            rule: Some(permission::Rule::Any(true)),
        }],
        principals,
        ..Default::default()
    }
}

fn rbac_rules(decision: &Decision) -> (Rbac, Option<Rbac>) {
    let mut rules = Rbac {
        action: rbac::Action::Allow as i32,
        ..Default::default()
    };
    if !decision.allow.is_empty() {
        rules
            .policies
            .insert("MeshTrafficPermission".into(), policy(decision.allow.clone()));
    }
    let shadow = (!decision.shadow_deny.is_empty()).then(|| {
        let mut shadow = Rbac {
            action: rbac::Action::Deny as i32,
            ..Default::default()
        };
        shadow.policies.insert(
            "MeshTrafficPermission".into(),
            policy(decision.shadow_deny.clone()),
        );
        shadow
    });
    (rules, shadow)
}

/// The HTTP RBAC filter of an inbound.
pub fn http_filter(
    policies: &Policies,
    index: usize,
    mesh: &str,
) -> envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter {
    let (rules, shadow) = rbac_rules(&decide(policies, index, mesh));
    crate::envoy::http_filter(
        HTTP_FILTER,
        &HttpRbac {
            rules: Some(rules),
            shadow_rules: shadow,
            ..Default::default()
        },
    )
}

/// The network RBAC filter of an inbound.
pub fn network_filter(
    policies: &Policies,
    index: usize,
    mesh: &str,
    stat_prefix: &str,
) -> envoy_types::pb::envoy::config::listener::v3::Filter {
    let (rules, shadow) = rbac_rules(&decide(policies, index, mesh));
    crate::envoy::network_filter(
        NETWORK_FILTER,
        &NetworkRbac {
            rules: Some(rules),
            shadow_rules: shadow,
            stat_prefix: stat_prefix.to_string(),
            ..Default::default()
        },
    )
}
