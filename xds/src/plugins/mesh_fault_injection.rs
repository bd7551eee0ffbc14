//! MeshFaultInjection: aborts, delays and response bandwidth limits on
//! inbound HTTP traffic, per client.
//!
//! `from` entries scope faults by the client's tags, which client proxies
//! send in the `x-kuma-tags` header when the mesh uses fault injection;
//! `rules` entries scope them by the client's SPIFFE ID with a matcher that
//! skips the filter for other clients.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::route::v3::{HeaderMatcher, header_matcher};
use envoy_types::pb::envoy::extensions::common::matching::v3::ExtensionWithMatcher;
use envoy_types::pb::envoy::extensions::filters::common::fault::v3::{
    FaultDelay, FaultRateLimit, fault_delay, fault_rate_limit,
};
use envoy_types::pb::envoy::extensions::filters::common::matcher::action::v3::SkipFilter;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{FaultAbort, HttpFault, fault_abort};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{RegexMatcher, StringMatcher, string_matcher};
use envoy_types::pb::xds::core::v3::TypedExtensionConfig as XdsTypedConfig;
use envoy_types::pb::xds::r#type::matcher::v3::{Matcher, matcher};
use kuma_crds::matching::{Merged, Tag};
use kuma_crds::policies::mesh_fault_injection::{Conf, parse_bandwidth_kbps};
use kuma_crds::resource::ResourceType;

use super::peer;
use crate::envoy;
use crate::generate::Policies;

const T: ResourceType = ResourceType::MeshFaultInjection;
const FAULT: &str = "envoy.filters.http.fault";

/// The HTTP faults of a conf, one per `http[]` entry.
pub fn faults(conf: &Conf) -> Vec<HttpFault> {
    conf.http
        .iter()
        .flatten()
        .map(|f| HttpFault {
            abort: f.abort.as_ref().map(|a| FaultAbort {
                percentage: a.percentage.as_decimal().map(envoy::fractional_percent),
                error_type: Some(fault_abort::ErrorType::HttpStatus(a.http_status.max(0) as u32)),
                ..Default::default()
            }),
            delay: f.delay.as_ref().map(|d| FaultDelay {
                percentage: d.percentage.as_decimal().map(envoy::fractional_percent),
                fault_delay_secifier: d
                    .value
                    .to_std()
                    .map(|v| fault_delay::FaultDelaySecifier::FixedDelay(envoy::duration(v))),
            }),
            response_rate_limit: f.response_bandwidth.as_ref().map(|b| FaultRateLimit {
                percentage: b.percentage.as_decimal().map(envoy::fractional_percent),
                limit_type: parse_bandwidth_kbps(&b.limit).map(|kbps| {
                    fault_rate_limit::LimitType::FixedLimit(fault_rate_limit::FixedLimit { limit_kbps: kbps })
                }),
            }),
            ..Default::default()
        })
        .collect()
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if "\\.+*?()|[]{}^$".contains(c) {
                vec!['\\', c]
            } else {
                vec![c]
            }
        })
        .collect()
}

/// A regex matching `x-kuma-tags` values that carry all `tags`.
pub fn tags_regex(tags: &BTreeMap<String, String>) -> String {
    let mut out = String::from(".*");
    for (k, v) in tags {
        out.push_str(&format!("&{}=[^&]*{}[,&].*", regex_escape(k), regex_escape(v)));
    }
    out
}

fn header_regex(regex: String, invert: bool) -> HeaderMatcher {
    HeaderMatcher {
        name: "x-kuma-tags".into(),
        header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(StringMatcher {
            match_pattern: Some(string_matcher::MatchPattern::SafeRegex(RegexMatcher {
                regex,
                ..Default::default()
            })),
            ..Default::default()
        })),
        invert_match: invert,
        ..Default::default()
    }
}

/// The header conditions of a client-tag region: positive tags must be in
/// `x-kuma-tags`, each negated tag must not.
fn region_headers(subset: &[Tag]) -> Vec<HeaderMatcher> {
    let positive: BTreeMap<String, String> = subset
        .iter()
        .filter(|t| !t.not)
        .map(|t| (t.key.clone(), t.value.clone()))
        .collect();
    let mut headers = Vec::new();
    if !positive.is_empty() {
        headers.push(header_regex(tags_regex(&positive), false));
    }
    for t in subset.iter().filter(|t| t.not) {
        headers.push(header_regex(
            tags_regex(&BTreeMap::from([(t.key.clone(), t.value.clone())])),
            true,
        ));
    }
    headers
}

fn typed(merged: &Merged) -> Conf {
    merged.conf().unwrap_or_default()
}

/// Inbound connection manager: fault filters before the router.
pub fn inbound_hcm(hcm: &mut HttpConnectionManager, policies: &Policies, index: usize) {
    let Some(rules) = policies.inbound(T, index) else {
        return;
    };
    let mut filters: Vec<HttpFilter> = Vec::new();
    if rules.rules.is_empty() {
        for region in &rules.source_rules {
            for mut fault in faults(&typed(&region.conf)) {
                fault.headers = region_headers(&region.subset);
                filters.push(envoy::http_filter(FAULT, &fault));
            }
        }
    } else {
        for rule in &rules.rules {
            let predicate = rule.matches.as_ref().and_then(peer::predicate);
            for fault in faults(&typed(&rule.conf)) {
                match &predicate {
                    None => filters.push(envoy::http_filter(FAULT, &fault)),
                    Some(p) => {
                        let skip_unless_matched = Matcher {
                            matcher_type: Some(matcher::MatcherType::MatcherList(matcher::MatcherList {
                                matchers: vec![matcher::matcher_list::FieldMatcher {
                                    predicate: Some(peer::not(p.clone())),
                                    on_match: Some(matcher::OnMatch {
                                        on_match: Some(matcher::on_match::OnMatch::Action(XdsTypedConfig {
                                            name: "skip".into(),
                                            typed_config: Some(envoy::any(&SkipFilter {})),
                                        })),
                                        ..Default::default()
                                    }),
                                }],
                            })),
                            ..Default::default()
                        };
                        let wrapped = ExtensionWithMatcher {
                            xds_matcher: Some(skip_unless_matched),
                            extension_config: Some(
                                envoy_types::pb::envoy::config::core::v3::TypedExtensionConfig {
                                    name: FAULT.into(),
                                    typed_config: Some(envoy::any(&fault)),
                                },
                            ),
                            ..Default::default()
                        };
                        let name = rule
                            .conf
                            .sources
                            .first()
                            .map(|s| format!("{FAULT}.{}", s.name))
                            .unwrap_or(FAULT.into());
                        filters.push(envoy::http_filter(&name, &wrapped));
                    }
                }
            }
        }
    }
    envoy::insert_before_router(hcm, filters);
}
