//! MeshHTTPRoute: HTTP routing by path, method, headers and query, with
//! header filters, redirects, rewrites, mirrors and weighted backends.

use std::collections::BTreeSet;
use std::net::IpAddr;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{PolicyContext, PolicyRole, PolicySpec, items, spec_path, top_ref, validate_top};
use crate::common::{
    BackendRef, HeaderMatch, HeaderModifier, IntOrString, TargetRef, TargetRefKind, TargetRefKind::*,
    TargetRefRules,
};
use crate::resource::ResourceType;
use crate::validation::{FieldPath, Violations, check_percentage, check_port, is_dns_name};

/// MeshHTTPRoute spec.
#[serde_with::skip_serializing_none]
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kuma.io",
    version = "v1alpha1",
    kind = "MeshHTTPRoute",
    plural = "meshhttproutes",
    shortname = "mhttpr",
    category = "kuma",
    namespaced,
    printcolumn = r#"{"name":"TargetRef Kind","type":"string","jsonPath":".spec.targetRef.kind"}"#,
    printcolumn = r#"{"name":"TargetRef Name","type":"string","jsonPath":".spec.targetRef.name"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshHTTPRouteSpec {
    /// The proxies whose outbound traffic is routed; `{kind: Mesh}` when absent.
    pub target_ref: Option<TargetRef>,
    /// Routes per destination.
    pub to: Option<Vec<To>>,
}

/// Routes for one destination.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct To {
    /// Host names the routes apply to (builtin gateways only).
    pub hostnames: Option<Vec<String>>,
    /// The destination.
    pub target_ref: TargetRef,
    /// The routes, first match wins.
    pub rules: Vec<Rule>,
}

/// One route: when it matches and what it does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    /// Conditions, any of which selects the route.
    pub matches: Vec<Match>,
    /// What to do with matching requests.
    pub default: RuleConf,
}

/// The merged configuration of a destination's routes: policies' rules with
/// equal `matches` are merged into one.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Conf {
    /// The routes, first match wins.
    pub rules: Option<Vec<Rule>>,
    /// Host names (builtin gateways only).
    pub hostnames: Option<Vec<String>>,
}

/// Conditions on a request; all given conditions must hold.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Match {
    /// The path.
    pub path: Option<PathMatch>,
    /// The method.
    pub method: Option<Method>,
    /// Query parameters.
    pub query_params: Option<Vec<QueryParamsMatch>>,
    /// Headers.
    pub headers: Option<Vec<HeaderMatch>>,
}

/// How a path is matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
pub enum PathMatchType {
    /// The whole path.
    Exact,
    /// A `/`-separated prefix.
    PathPrefix,
    /// A regular expression.
    RegularExpression,
}

/// A path condition.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PathMatch {
    /// The path, prefix or expression.
    pub value: String,
    /// How to match it.
    #[serde(rename = "type")]
    pub match_type: PathMatchType,
}

/// HTTP methods.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[allow(clippy::upper_case_acronyms)]
pub enum Method {
    /// CONNECT.
    CONNECT,
    /// DELETE.
    DELETE,
    /// GET.
    GET,
    /// HEAD.
    HEAD,
    /// OPTIONS.
    OPTIONS,
    /// PATCH.
    PATCH,
    /// POST.
    POST,
    /// PUT.
    PUT,
    /// TRACE.
    TRACE,
}

/// How a query parameter is matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
pub enum QueryParamsMatchType {
    /// Equal value.
    Exact,
    /// A regular expression.
    RegularExpression,
}

/// A query parameter condition.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QueryParamsMatch {
    /// How to match.
    #[serde(rename = "type")]
    pub match_type: QueryParamsMatchType,
    /// The parameter name.
    pub name: String,
    /// The value or expression.
    pub value: String,
}

/// What a route does.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleConf {
    /// Filters applied to matching requests.
    pub filters: Option<Vec<Filter>>,
    /// Where to send matching requests; the destination itself when absent.
    pub backend_refs: Option<Vec<BackendRef>>,
}

/// Filter types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum FilterType {
    /// Change request headers.
    RequestHeaderModifier,
    /// Change response headers.
    ResponseHeaderModifier,
    /// Redirect the client.
    RequestRedirect,
    /// Rewrite host or path.
    URLRewrite,
    /// Copy requests to another backend.
    RequestMirror,
}

/// A filter.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Filter {
    /// The filter type; the matching field below carries its settings.
    #[serde(rename = "type")]
    pub filter_type: FilterType,
    /// RequestHeaderModifier settings.
    pub request_header_modifier: Option<HeaderModifier>,
    /// ResponseHeaderModifier settings.
    pub response_header_modifier: Option<HeaderModifier>,
    /// RequestRedirect settings.
    pub request_redirect: Option<RequestRedirect>,
    /// URLRewrite settings.
    pub url_rewrite: Option<UrlRewrite>,
    /// RequestMirror settings.
    pub request_mirror: Option<RequestMirror>,
}

/// Redirect schemes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// http.
    Http,
    /// https.
    Https,
}

/// A redirect.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestRedirect {
    /// The scheme to redirect to.
    pub scheme: Option<Scheme>,
    /// The host to redirect to.
    pub hostname: Option<String>,
    /// The path to redirect to.
    pub path: Option<PathRewrite>,
    /// The port to redirect to.
    pub port: Option<u32>,
    /// The status code; 302 by default.
    pub status_code: Option<u16>,
}

/// Path rewrite types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PathRewriteType {
    /// Replace the whole path.
    ReplaceFullPath,
    /// Replace the matched prefix.
    ReplacePrefixMatch,
}

/// A path rewrite.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PathRewrite {
    /// Which rewrite.
    #[serde(rename = "type")]
    pub rewrite_type: PathRewriteType,
    /// The new path.
    pub replace_full_path: Option<String>,
    /// The new prefix.
    pub replace_prefix_match: Option<String>,
}

/// A URL rewrite.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UrlRewrite {
    /// The new host.
    pub hostname: Option<String>,
    /// The new path.
    pub path: Option<PathRewrite>,
    /// Use the backend's host name (builtin gateways only).
    pub host_to_backend_hostname: Option<bool>,
}

/// A request mirror.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestMirror {
    /// Share of requests to mirror; all when absent.
    pub percentage: Option<IntOrString>,
    /// Where to mirror to.
    pub backend_ref: BackendRef,
}

/// Backends whose names need not be valid, e.g. Kuma's marker for an
/// unresolved backend.
pub const ALLOWED_INVALID_BACKEND_NAMES: &[&str] = &["kuma.io/unresolved-backend"];

impl PolicySpec for MeshHTTPRouteSpec {
    const TYPE: ResourceType = ResourceType::MeshHTTPRoute;
    type Conf = Conf;

    fn validate(&self, ctx: &PolicyContext, v: &mut Violations) {
        let system = ctx.role == PolicyRole::System;
        let top: &[TargetRefKind] = if system {
            &[
                Mesh,
                MeshGateway,
                MeshSubset,
                MeshService,
                MeshServiceSubset,
                Dataplane,
            ]
        } else {
            &[Mesh, MeshSubset, MeshService, MeshServiceSubset, Dataplane]
        };
        validate_top(
            &self.target_ref,
            TargetRefRules::kinds(top).with_gateway_listener_tags(system),
            v,
        );
        let top_kind = top_ref(&self.target_ref).kind;
        let to_kinds: &[TargetRefKind] = if top_kind == MeshGateway {
            &[Mesh]
        } else {
            &[MeshService, MeshExternalService, MeshMultiZoneService]
        };
        for (i, to) in items(&self.to) {
            let p = spec_path().field("to").index(i);
            to.target_ref
                .validate(&TargetRefRules::kinds(to_kinds), &p.field("targetRef"), v);
            for (r, rule) in to.rules.iter().enumerate() {
                validate_rule(rule, top_kind, &p.field("rules").index(r), v);
            }
            if to.hostnames.as_ref().is_some_and(|h| !h.is_empty()) && top_kind != MeshGateway {
                v.add(&p.field("hostnames"), "must not be defined");
            }
        }
    }
}

fn validate_rule(rule: &Rule, top_kind: TargetRefKind, path: &FieldPath, v: &mut Violations) {
    if rule.matches.is_empty() {
        v.add(&path.field("matches"), "must have at least one element");
    }
    for (m, matched) in rule.matches.iter().enumerate() {
        let mp = path.field("matches").index(m);
        if let Some(pm) = &matched.path {
            let vp = mp.field("path").field("value");
            match pm.match_type {
                PathMatchType::Exact => {
                    if !pm.value.starts_with('/') {
                        v.add(&vp, "must be an absolute path");
                    }
                }
                PathMatchType::PathPrefix => {
                    if pm.value != "/" && pm.value.ends_with('/') {
                        v.add(
                            &vp,
                            "does not need a trailing slash because only a `/`-separated prefix or an entire path is matched",
                        );
                    }
                    if !pm.value.starts_with('/') {
                        v.add(&vp, "must be an absolute path");
                    }
                }
                PathMatchType::RegularExpression => {
                    if regex::Regex::new(&pm.value).is_err() {
                        v.add(&vp, "must be a valid regular expression");
                    }
                }
            }
        }
        let mut names = BTreeSet::new();
        for (q, qp) in matched.query_params.iter().flatten().enumerate() {
            if !names.insert(qp.name.as_str()) {
                v.add(
                    &mp.field("queryParams").index(q).field("name"),
                    format!("multiple entries for name {}", qp.name),
                );
            }
            if qp.name.is_empty() {
                v.add(
                    &mp.field("queryParams").index(q).field("name"),
                    "must not be empty",
                );
            }
        }
        for (h, hm) in matched.headers.iter().flatten().enumerate() {
            hm.validate(&mp.field("headers").index(h), v);
        }
    }
    let dp = path.field("default");
    let all_prefix = rule.matches.iter().all(|m| {
        m.path
            .as_ref()
            .is_none_or(|p| p.match_type == PathMatchType::PathPrefix)
    });
    let mut has_redirect = false;
    for (f, filter) in rule.default.filters.iter().flatten().enumerate() {
        let fp = dp.field("filters").index(f);
        match filter.filter_type {
            FilterType::RequestHeaderModifier => match &filter.request_header_modifier {
                None => v.add(&fp.field("requestHeaderModifier"), "must be defined"),
                Some(m) => m.validate(&fp.field("requestHeaderModifier"), v),
            },
            FilterType::ResponseHeaderModifier => match &filter.response_header_modifier {
                None => v.add(&fp.field("responseHeaderModifier"), "must be defined"),
                Some(m) => m.validate(&fp.field("responseHeaderModifier"), v),
            },
            FilterType::RequestRedirect => {
                has_redirect = true;
                let rp = fp.field("requestRedirect");
                match &filter.request_redirect {
                    None => v.add(&rp, "must be defined"),
                    Some(r) => {
                        validate_path_rewrite(&r.path, all_prefix, &rp.field("path"), v);
                        validate_hostname(&r.hostname, &rp.field("hostname"), v);
                        if let Some(port) = r.port {
                            check_port(port, &rp.field("port"), v);
                        }
                        if r.status_code
                            .is_some_and(|c| ![301, 302, 303, 307, 308].contains(&c))
                        {
                            v.add(&rp.field("statusCode"), "must be one of: 301, 302, 303, 307, 308");
                        }
                    }
                }
            }
            FilterType::URLRewrite => {
                let up = fp.field("urlRewrite");
                match &filter.url_rewrite {
                    None => v.add(&up, "must be defined"),
                    Some(u) => {
                        validate_path_rewrite(&u.path, all_prefix, &up.field("path"), v);
                        validate_hostname(&u.hostname, &up.field("hostname"), v);
                        if u.host_to_backend_hostname == Some(true) {
                            if top_kind != MeshGateway {
                                v.add(
                                    &up.field("hostToBackendHostname"),
                                    "can only be set with MeshGateway",
                                );
                            } else if u.hostname.is_some() {
                                v.add(
                                    &up.field("hostToBackendHostname"),
                                    "cannot be set together with hostname",
                                );
                            }
                        }
                    }
                }
            }
            FilterType::RequestMirror => {
                let mp = fp.field("requestMirror");
                match &filter.request_mirror {
                    None => v.add(&mp, "must be defined"),
                    Some(m) => {
                        m.backend_ref.validate(
                            &TargetRefRules::kinds(&[MeshService, MeshServiceSubset]),
                            &mp.field("backendRef"),
                            v,
                        );
                        if let Some(pct) = &m.percentage {
                            check_percentage(pct, &mp.field("percentage"), v);
                        }
                    }
                }
            }
        }
    }
    let backends = rule.default.backend_refs.as_deref().unwrap_or(&[]);
    if backends.is_empty() && top_kind == MeshGateway && !has_redirect {
        v.add(&dp.field("backendRefs"), "must not be empty");
    }
    let rules = TargetRefRules::kinds(&[
        MeshService,
        MeshServiceSubset,
        MeshExternalService,
        MeshMultiZoneService,
    ])
    .allowing_names(ALLOWED_INVALID_BACKEND_NAMES);
    for (b, backend) in backends.iter().enumerate() {
        backend.validate(&rules, &dp.field("backendRefs").index(b), v);
    }
}

fn validate_path_rewrite(
    rewrite: &Option<PathRewrite>,
    all_prefix: bool,
    path: &FieldPath,
    v: &mut Violations,
) {
    let Some(r) = rewrite else { return };
    if r.replace_prefix_match.is_some() && !all_prefix {
        v.add(
            &path.field("replacePrefixMatch"),
            "can only appear if all matches match a path prefix",
        );
    }
    match r.rewrite_type {
        PathRewriteType::ReplaceFullPath if r.replace_full_path.is_none() => v.add(
            &path.field("replaceFullPath"),
            "must be set when type is ReplaceFullPath",
        ),
        PathRewriteType::ReplacePrefixMatch if r.replace_prefix_match.is_none() => v.add(
            &path.field("replacePrefixMatch"),
            "must be set when type is ReplacePrefixMatch",
        ),
        _ => {}
    }
}

fn validate_hostname(hostname: &Option<String>, path: &FieldPath, v: &mut Violations) {
    let Some(h) = hostname else { return };
    if h.parse::<IpAddr>().is_ok() {
        v.add(path, "cannot be an IP address");
    } else if h.len() > 253 {
        v.add(path, "must be no more than 253 characters");
    } else if !is_dns_name(h) || h.ends_with('.') {
        v.add(
            path,
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com')",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::violations;
    use super::*;

    #[test]
    fn valid_split() {
        let errs = violations::<MeshHTTPRouteSpec>(
            r#"
targetRef: {kind: Dataplane, labels: {app: frontend}}
to:
  - targetRef: {kind: MeshService, name: backend_kuma-demo_svc_8080}
    rules:
      - matches: [{path: {type: PathPrefix, value: /api}, headers: [{name: x-version, value: v2}]}]
        default:
          filters:
            - type: RequestHeaderModifier
              requestHeaderModifier: {set: [{name: x-routed, value: "yes"}]}
          backendRefs:
            - {kind: MeshServiceSubset, name: backend_kuma-demo_svc_8080, tags: {version: v1}, weight: 90}
            - {kind: MeshServiceSubset, name: backend_kuma-demo_svc_8080, tags: {version: v2}, weight: 10}
"#,
        );
        assert!(errs.is_empty(), "{errs:?}");
    }

    #[test]
    fn path_and_filter_problems() {
        let errs = violations::<MeshHTTPRouteSpec>(
            r#"
to:
  - targetRef: {kind: Mesh}
    hostnames: [example.com]
    rules:
      - matches:
          - path: {type: Exact, value: relative}
          - path: {type: PathPrefix, value: /trailing/}
            queryParams: [{type: Exact, name: foo, value: a}, {type: Exact, name: foo, value: b}]
        default:
          filters:
            - type: RequestRedirect
            - type: URLRewrite
              urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /x}, hostname: 127.0.0.1}
          backendRefs: [{kind: MeshMultiZoneService, name: x}]
"#,
        );
        assert_eq!(
            errs,
            vec![
                "spec.to[0].targetRef.kind: value 'Mesh' is not supported",
                "spec.to[0].rules[0].matches[0].path.value: must be an absolute path",
                "spec.to[0].rules[0].matches[1].path.value: does not need a trailing slash because only a `/`-separated prefix or an entire path is matched",
                "spec.to[0].rules[0].matches[1].queryParams[1].name: multiple entries for name foo",
                "spec.to[0].rules[0].default.filters[0].requestRedirect: must be defined",
                "spec.to[0].rules[0].default.filters[1].urlRewrite.path.replacePrefixMatch: can only appear if all matches match a path prefix",
                "spec.to[0].rules[0].default.filters[1].urlRewrite.hostname: cannot be an IP address",
                "spec.to[0].rules[0].default.backendRefs[0].port: must be defined with kind MeshMultiZoneService",
                "spec.to[0].hostnames: must not be defined",
            ]
        );
    }
}
