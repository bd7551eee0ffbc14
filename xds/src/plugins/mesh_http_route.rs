//! MeshHTTPRoute: the routes of HTTP outbounds — matches, header filters,
//! redirects, rewrites, mirrors and weighted backends.
//!
//! As in Kuma, every HTTP-like outbound gets routes even without a policy
//! (one catch-all to the destination); rules are ordered by match
//! specificity (Gateway API precedence), a `MeshServiceSubset` backend gets
//! its own cluster (`<service>-<16 hex>`), and a `PathPrefix` match becomes
//! an exact route plus a `/`-terminated prefix route.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use base64::Engine;
use envoy_types::pb::envoy::config::core::v3::RuntimeFractionalPercent;
use envoy_types::pb::envoy::config::route::v3::{
    HeaderMatcher, QueryParameterMatcher, RedirectAction, Route as EnvoyRoute, RouteAction, RouteMatch,
    WeightedCluster, header_matcher, query_parameter_matcher, redirect_action, route, route_action,
    route_match, weighted_cluster,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    RegexMatchAndSubstitute, RegexMatcher, StringMatcher, string_matcher,
};
use kuma_crds::common::{BackendRef, HeaderMatchType, TargetRefKind};
use kuma_crds::dataplane::SERVICE_TAG;
use kuma_crds::matching::Merged;
use kuma_crds::policies::mesh_http_route::{
    Conf, Filter, FilterType, Match, PathMatch, PathMatchType, PathRewriteType, QueryParamsMatchType, Rule,
};
use sha2::{Digest, Sha256};

use crate::envoy;

/// One route before it becomes Envoy routes.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpRoute {
    /// Kuma's route name: a hash of the rule's matches.
    pub name: String,
    /// The MeshHTTPRoute that wrote the rule, when one did.
    pub origin: Option<String>,
    /// The match.
    pub matched: Match,
    /// The filters.
    pub filters: Vec<Filter>,
    /// The backends; never empty.
    pub backends: Vec<BackendRef>,
}

/// Kuma's route name: base64 of the SHA-256 of the rule's matches as JSON.
pub fn route_name(matches: &[Match]) -> String {
    let json = serde_json::to_vec(matches).unwrap_or_default();
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&json))
}

/// The name of the cluster for a service narrowed by tags: the service name
/// alone, or `<service>-<first 8 bytes of SHA-256 of sorted key+value>` in hex.
pub fn cluster_name(service: &str, tags: &BTreeMap<String, String>) -> String {
    let mut all = tags.clone();
    all.insert(SERVICE_TAG.to_string(), service.to_string());
    if all.len() == 1 {
        return service.to_string();
    }
    let mut hasher = Sha256::new();
    for (k, v) in &all {
        hasher.update(k.as_bytes());
        hasher.update(v.as_bytes());
    }
    let digest = hasher.finalize();
    format!(
        "{service}-{}",
        digest[..8].iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// Gateway API precedence between two matches: exact paths before prefixes
/// before regexes, longer values first, then method, more headers, more
/// query parameters.
pub fn compare_matches(a: &Match, b: &Match) -> Ordering {
    fn path_rank(p: &PathMatch) -> u8 {
        match p.match_type {
            PathMatchType::Exact => 0,
            PathMatchType::PathPrefix => 1,
            PathMatchType::RegularExpression => 2,
        }
    }
    let paths = match (&a.path, &b.path) {
        (Some(x), Some(y)) => path_rank(x).cmp(&path_rank(y)).then_with(|| {
            if x.match_type == PathMatchType::Exact {
                Ordering::Equal
            } else {
                y.value.len().cmp(&x.value.len())
            }
        }),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    };
    paths
        .then_with(|| b.method.is_some().cmp(&a.method.is_some()))
        .then_with(|| {
            b.headers
                .as_ref()
                .map_or(0, Vec::len)
                .cmp(&a.headers.as_ref().map_or(0, Vec::len))
        })
        .then_with(|| {
            b.query_params
                .as_ref()
                .map_or(0, Vec::len)
                .cmp(&a.query_params.as_ref().map_or(0, Vec::len))
        })
}

fn catch_all() -> Match {
    Match {
        path: Some(PathMatch {
            value: "/".into(),
            match_type: PathMatchType::PathPrefix,
        }),
        ..Default::default()
    }
}

/// The routes of an outbound to `service`: the merged MeshHTTPRoute rules
/// (if any) in precedence order, then the catch-all to the service itself.
pub fn routes(
    conf: Option<&Merged>,
    service: &str,
    outbound_tags: &BTreeMap<String, String>,
) -> Vec<HttpRoute> {
    let typed: Conf = conf.and_then(|c| c.conf().ok()).unwrap_or_default();
    let default_backend = BackendRef {
        tags: (outbound_tags.len() > 1).then(|| {
            outbound_tags
                .iter()
                .filter(|(k, _)| *k != SERVICE_TAG)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        }),
        weight: Some(100),
        ..BackendRef::from_target(
            &kuma_crds::common::TargetRef::named(TargetRefKind::MeshService, service),
            100,
        )
    };
    let mut out = Vec::new();
    for (r, rule) in typed.rules.iter().flatten().enumerate() {
        let origin = conf
            .and_then(|c| {
                c.source_of(&format!("/rules/{r}/matches/0"))
                    .or_else(|| c.source_of(&format!("/rules/{r}/matches")))
            })
            .map(|s| s.name.clone());
        let name = route_name(&rule.matches);
        for m in &rule.matches {
            out.push(route_for(
                rule,
                m.clone(),
                name.clone(),
                origin.clone(),
                &default_backend,
            ));
        }
    }
    // A match without a path matches every path (Gateway API), and ranks
    // as the prefix `/` it is.
    for r in &mut out {
        if r.matched.path.is_none() {
            r.matched.path = catch_all().path;
        }
    }
    out.sort_by(|a, b| compare_matches(&a.matched, &b.matched));
    if !out.iter().any(|r| r.matched == catch_all()) {
        out.push(HttpRoute {
            name: route_name(&[catch_all()]),
            origin: None,
            matched: catch_all(),
            filters: Vec::new(),
            backends: vec![default_backend],
        });
    }
    out
}

fn route_for(
    rule: &Rule,
    matched: Match,
    name: String,
    origin: Option<String>,
    default: &BackendRef,
) -> HttpRoute {
    let backends = match rule.default.backend_refs.as_deref() {
        Some(b) if !b.is_empty() => b.to_vec(),
        _ => vec![default.clone()],
    };
    HttpRoute {
        name,
        origin,
        matched,
        filters: rule.default.filters.clone().unwrap_or_default(),
        backends,
    }
}

/// The service a backend reference sends to, with its subset tags.
pub fn backend_service(b: &BackendRef) -> Option<(String, BTreeMap<String, String>)> {
    match b.kind {
        TargetRefKind::MeshService | TargetRefKind::MeshServiceSubset => {
            let name = b.name.clone()?;
            let tags = b
                .tags
                .clone()
                .unwrap_or_default()
                .into_iter()
                .filter(|(k, _)| k != SERVICE_TAG)
                .collect();
            Some((name, tags))
        }
        _ => None,
    }
}

fn string_match(exact: Option<&str>, prefix: Option<&str>, regex: Option<&str>) -> StringMatcher {
    let pattern = if let Some(e) = exact {
        string_matcher::MatchPattern::Exact(e.to_string())
    } else if let Some(p) = prefix {
        string_matcher::MatchPattern::Prefix(p.to_string())
    } else {
        string_matcher::MatchPattern::SafeRegex(RegexMatcher {
            regex: regex.unwrap_or("").to_string(),
            ..Default::default()
        })
    };
    StringMatcher {
        match_pattern: Some(pattern),
        ..Default::default()
    }
}

/// An Envoy header matcher for a Kuma header match.
pub fn header_matcher(h: &kuma_crds::common::HeaderMatch) -> HeaderMatcher {
    let value = h.value.as_deref().unwrap_or("");
    let specifier = match h.effective_type() {
        HeaderMatchType::Exact => {
            header_matcher::HeaderMatchSpecifier::StringMatch(string_match(Some(value), None, None))
        }
        HeaderMatchType::Present => header_matcher::HeaderMatchSpecifier::PresentMatch(true),
        HeaderMatchType::Absent => header_matcher::HeaderMatchSpecifier::PresentMatch(false),
        HeaderMatchType::RegularExpression => {
            header_matcher::HeaderMatchSpecifier::StringMatch(string_match(None, None, Some(value)))
        }
        HeaderMatchType::Prefix if value.is_empty() => {
            header_matcher::HeaderMatchSpecifier::PresentMatch(true)
        }
        HeaderMatchType::Prefix => {
            header_matcher::HeaderMatchSpecifier::StringMatch(string_match(None, Some(value), None))
        }
    };
    HeaderMatcher {
        name: h.name.clone(),
        header_match_specifier: Some(specifier),
        ..Default::default()
    }
}

/// The Envoy matches of one Kuma match (a `PathPrefix` gives two).
fn envoy_matches(m: &Match) -> Vec<(RouteMatch, bool)> {
    let mut headers = Vec::new();
    if let Some(method) = m.method {
        let name = serde_json::to_value(method)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        headers.push(HeaderMatcher {
            name: ":method".into(),
            header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(string_match(
                Some(&name),
                None,
                None,
            ))),
            ..Default::default()
        });
    }
    let mut seen = std::collections::BTreeSet::new();
    for h in m.headers.iter().flatten() {
        if seen.insert(h.name.clone()) {
            headers.push(header_matcher(h));
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    let query_parameters: Vec<QueryParameterMatcher> = m
        .query_params
        .iter()
        .flatten()
        .filter(|q| seen.insert(q.name.clone()))
        .map(|q| QueryParameterMatcher {
            name: q.name.clone(),
            query_parameter_match_specifier: Some(
                query_parameter_matcher::QueryParameterMatchSpecifier::StringMatch(match q.match_type {
                    QueryParamsMatchType::Exact => string_match(Some(&q.value), None, None),
                    QueryParamsMatchType::RegularExpression => string_match(None, None, Some(&q.value)),
                }),
            ),
        })
        .collect();
    let base = |path: route_match::PathSpecifier| RouteMatch {
        path_specifier: Some(path),
        headers: headers.clone(),
        query_parameters: query_parameters.clone(),
        ..Default::default()
    };
    match &m.path {
        None => vec![(base(route_match::PathSpecifier::Prefix("/".into())), false)],
        Some(p) => match p.match_type {
            PathMatchType::Exact => vec![(base(route_match::PathSpecifier::Path(p.value.clone())), false)],
            PathMatchType::PathPrefix if p.value == "/" => {
                vec![(base(route_match::PathSpecifier::Prefix("/".into())), true)]
            }
            PathMatchType::PathPrefix => {
                let trimmed = p.value.trim_end_matches('/').to_string();
                vec![
                    (base(route_match::PathSpecifier::Path(trimmed.clone())), false),
                    (
                        base(route_match::PathSpecifier::Prefix(format!("{trimmed}/"))),
                        true,
                    ),
                ]
            }
            PathMatchType::RegularExpression => vec![(
                base(route_match::PathSpecifier::SafeRegex(RegexMatcher {
                    regex: p.value.clone(),
                    ..Default::default()
                })),
                false,
            )],
        },
    }
}

fn path_rewrite(
    rewrite: &kuma_crds::policies::mesh_http_route::PathRewrite,
    api_prefix: bool,
    is_prefix_route: bool,
) -> (Option<RegexMatchAndSubstitute>, Option<String>) {
    let regex = |s: &str| {
        Some(RegexMatchAndSubstitute {
            pattern: Some(RegexMatcher {
                regex: ".*".into(),
                ..Default::default()
            }),
            substitution: s.to_string(),
        })
    };
    match rewrite.rewrite_type {
        PathRewriteType::ReplaceFullPath => (rewrite.replace_full_path.as_deref().and_then(regex), None),
        PathRewriteType::ReplacePrefixMatch => match (&rewrite.replace_prefix_match, api_prefix) {
            (Some(s), true) if is_prefix_route => (None, Some(s.clone())),
            (Some(s), true) => (regex(s), None),
            _ => (None, None),
        },
    }
}

/// The Envoy routes of one route; `cluster_of` names the cluster of a
/// backend (`None` drops it).
pub fn envoy_routes(r: &HttpRoute, cluster_of: &dyn Fn(&BackendRef) -> Option<String>) -> Vec<EnvoyRoute> {
    let splits: Vec<(String, u32)> = r
        .backends
        .iter()
        .filter(|b| b.effective_weight() > 0)
        .filter_map(|b| cluster_of(b).map(|c| (c, b.effective_weight())))
        .collect();
    if splits.is_empty() {
        return Vec::new();
    }
    let api_prefix = r
        .matched
        .path
        .as_ref()
        .is_some_and(|p| p.match_type == PathMatchType::PathPrefix);
    envoy_matches(&r.matched)
        .into_iter()
        .map(|(m, is_prefix_route)| {
            let cluster_specifier = if splits.len() == 1 {
                route_action::ClusterSpecifier::Cluster(splits[0].0.clone())
            } else {
                route_action::ClusterSpecifier::WeightedClusters(WeightedCluster {
                    clusters: splits
                        .iter()
                        .map(|(name, weight)| weighted_cluster::ClusterWeight {
                            name: name.clone(),
                            weight: Some(envoy::u32_value(*weight)),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                })
            };
            let mut action = RouteAction {
                cluster_specifier: Some(cluster_specifier),
                timeout: Some(envoy::seconds(0)),
                ..Default::default()
            };
            let mut envoy_route = EnvoyRoute {
                name: r.name.clone(),
                r#match: Some(m),
                ..Default::default()
            };
            let mut redirect = None;
            for f in &r.filters {
                match f.filter_type {
                    FilterType::RequestHeaderModifier => {
                        if let Some(h) = &f.request_header_modifier {
                            for kv in h.set.iter().flatten() {
                                envoy_route
                                    .request_headers_to_add
                                    .push(envoy::header(&kv.name, &kv.value, true));
                            }
                            for kv in h.add.iter().flatten() {
                                envoy_route
                                    .request_headers_to_add
                                    .push(envoy::header(&kv.name, &kv.value, false));
                            }
                            envoy_route
                                .request_headers_to_remove
                                .extend(h.remove.iter().flatten().cloned());
                        }
                    }
                    FilterType::ResponseHeaderModifier => {
                        if let Some(h) = &f.response_header_modifier {
                            for kv in h.set.iter().flatten() {
                                envoy_route
                                    .response_headers_to_add
                                    .push(envoy::header(&kv.name, &kv.value, true));
                            }
                            for kv in h.add.iter().flatten() {
                                envoy_route
                                    .response_headers_to_add
                                    .push(envoy::header(&kv.name, &kv.value, false));
                            }
                            envoy_route
                                .response_headers_to_remove
                                .extend(h.remove.iter().flatten().cloned());
                        }
                    }
                    FilterType::RequestRedirect => {
                        if let Some(rr) = &f.request_redirect {
                            let mut action = RedirectAction {
                                host_redirect: rr.hostname.clone().unwrap_or_default(),
                                port_redirect: rr.port.unwrap_or(0),
                                response_code: match rr.status_code.unwrap_or(302) {
                                    301 => redirect_action::RedirectResponseCode::MovedPermanently as i32,
                                    303 => redirect_action::RedirectResponseCode::SeeOther as i32,
                                    307 => redirect_action::RedirectResponseCode::TemporaryRedirect as i32,
                                    308 => redirect_action::RedirectResponseCode::PermanentRedirect as i32,
                                    _ => redirect_action::RedirectResponseCode::Found as i32,
                                },
                                ..Default::default()
                            };
                            if let Some(s) = rr.scheme {
                                let scheme = serde_json::to_value(s)
                                    .ok()
                                    .and_then(|v| v.as_str().map(String::from));
                                action.scheme_rewrite_specifier =
                                    scheme.map(redirect_action::SchemeRewriteSpecifier::SchemeRedirect);
                            }
                            if let Some(p) = &rr.path {
                                let (regex, prefix) = path_rewrite(p, api_prefix, is_prefix_route);
                                action.path_rewrite_specifier = regex
                                    .map(redirect_action::PathRewriteSpecifier::RegexRewrite)
                                    .or(prefix.map(redirect_action::PathRewriteSpecifier::PrefixRewrite));
                            }
                            redirect = Some(action);
                        }
                    }
                    FilterType::URLRewrite => {
                        if let Some(u) = &f.url_rewrite {
                            if let Some(h) = &u.hostname {
                                action.host_rewrite_specifier =
                                    Some(route_action::HostRewriteSpecifier::HostRewriteLiteral(h.clone()));
                            }
                            if let Some(p) = &u.path {
                                let (regex, prefix) = path_rewrite(p, api_prefix, is_prefix_route);
                                action.regex_rewrite = regex;
                                action.prefix_rewrite = prefix.unwrap_or_default();
                            }
                        }
                    }
                    FilterType::RequestMirror => {
                        if let Some(m) = &f.request_mirror
                            && let Some(cluster) = cluster_of(&m.backend_ref)
                        {
                            action
                                .request_mirror_policies
                                .push(route_action::RequestMirrorPolicy {
                                    cluster,
                                    runtime_fraction: m.percentage.as_ref().and_then(|p| p.as_decimal()).map(
                                        |p| RuntimeFractionalPercent {
                                            default_value: Some(envoy::fractional_percent(p)),
                                            ..Default::default()
                                        },
                                    ),
                                    ..Default::default()
                                });
                        }
                    }
                }
            }
            envoy_route.action = Some(match redirect {
                Some(r) => route::Action::Redirect(r),
                None => route::Action::Route(action),
            });
            envoy_route
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_kuma() {
        assert_eq!(
            route_name(&[catch_all()]),
            "9Zuf5Tg79OuZcQITwBbQykxAk2u4fRKrwYn3//AL4Yo="
        );
        let v1 = Match {
            path: Some(PathMatch {
                value: "/v1".into(),
                match_type: PathMatchType::PathPrefix,
            }),
            ..Default::default()
        };
        assert_eq!(route_name(&[v1]), "bzv64o+joRk33jfDADgGv5ar4QyONO0NEVKnoBfJW/E=");
        let tags = BTreeMap::from([("region".to_string(), "us".to_string())]);
        assert_eq!(cluster_name("backend", &tags), "backend-c72efb5be46fae6b");
        assert_eq!(cluster_name("backend", &BTreeMap::new()), "backend");
    }
}
