//! Conditions on who the client is, as Envoy unified matchers: its SPIFFE ID
//! (the URI SAN of its certificate) and the SNI it requested. Used by the
//! inbound policies whose `rules[].matches` name clients.

use envoy_types::pb::envoy::extensions::matching::common_inputs::ssl::v3::UriSanInput;
use envoy_types::pb::xds::core::v3::TypedExtensionConfig;
use envoy_types::pb::xds::r#type::matcher::v3::{
    StringMatcher,
    matcher::matcher_list::{Predicate, predicate},
    string_matcher,
};
use kuma_crds::common::{RuleMatch, SpiffeIdMatchType};

use crate::envoy;

fn single(
    input_name: &str,
    input: envoy_types::pb::google::protobuf::Any,
    pattern: string_matcher::MatchPattern,
) -> Predicate {
    Predicate {
        match_type: Some(predicate::MatchType::SinglePredicate(
            predicate::SinglePredicate {
                input: Some(TypedExtensionConfig {
                    name: input_name.into(),
                    typed_config: Some(input),
                }),
                matcher: Some(predicate::single_predicate::Matcher::ValueMatch(StringMatcher {
                    match_pattern: Some(pattern),
                    ..Default::default()
                })),
            },
        )),
    }
}

/// The predicate of one client match: SPIFFE ID and/or SNI, both required
/// when both are given.
pub fn predicate(m: &RuleMatch) -> Option<Predicate> {
    let mut parts = Vec::new();
    if let Some(id) = &m.spiffe_id {
        let pattern = match id.match_type {
            Some(SpiffeIdMatchType::Prefix) => string_matcher::MatchPattern::Prefix(id.value.clone()),
            _ => string_matcher::MatchPattern::Exact(id.value.clone()),
        };
        parts.push(single(
            "envoy.matching.inputs.uri_san",
            envoy::any(&UriSanInput {}),
            pattern,
        ));
    }
    if let Some(sni) = &m.sni {
        let input =
            envoy_types::pb::envoy::extensions::matching::common_inputs::network::v3::ServerNameInput {};
        parts.push(single(
            "envoy.matching.inputs.server_name",
            envoy::any(&input),
            string_matcher::MatchPattern::Exact(sni.value.clone()),
        ));
    }
    combine(parts, false)
}

/// Any of several matches.
pub fn any_of(matches: &[RuleMatch]) -> Option<Predicate> {
    combine(matches.iter().filter_map(predicate).collect(), true)
}

fn combine(mut parts: Vec<Predicate>, or: bool) -> Option<Predicate> {
    match parts.len() {
        0 => None,
        1 => parts.pop(),
        _ => Some(Predicate {
            match_type: Some(if or {
                predicate::MatchType::OrMatcher(predicate::PredicateList { predicate: parts })
            } else {
                predicate::MatchType::AndMatcher(predicate::PredicateList { predicate: parts })
            }),
        }),
    }
}

/// The negation of a predicate.
pub fn not(p: Predicate) -> Predicate {
    Predicate {
        match_type: Some(predicate::MatchType::NotMatcher(Box::new(p))),
    }
}
