//! MeshRetry: TCP connect attempts and HTTP/gRPC retries per destination.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{PolicyContext, PolicyRole, PolicySpec, TargetItem, items, spec_path, top_ref, validate_top};
use crate::common::{Duration, HeaderMatch, TargetRef, TargetRefKind, TargetRefKind::*, TargetRefRules};
use crate::resource::ResourceType;
use crate::validation::{FieldPath, Violations, check_positive_duration};

/// MeshRetry spec.
#[serde_with::skip_serializing_none]
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kuma.io",
    version = "v1alpha1",
    kind = "MeshRetry",
    plural = "meshretries",
    shortname = "mr",
    category = "kuma",
    namespaced,
    printcolumn = r#"{"name":"TargetRef Kind","type":"string","jsonPath":".spec.targetRef.kind"}"#,
    printcolumn = r#"{"name":"TargetRef Name","type":"string","jsonPath":".spec.targetRef.name"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshRetrySpec {
    /// The proxies this policy configures; `{kind: Mesh}` when absent.
    pub target_ref: Option<TargetRef>,
    /// Retries per destination. An empty list overrides inherited retries.
    pub to: Option<Vec<TargetItem<Conf>>>,
}

/// Retry configuration per protocol.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Conf {
    /// TCP connection attempts.
    pub tcp: Option<Tcp>,
    /// HTTP retries.
    pub http: Option<Http>,
    /// gRPC retries.
    pub grpc: Option<Grpc>,
}

/// TCP retries.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Tcp {
    /// How many times to try connecting.
    pub max_connect_attempt: Option<u32>,
}

/// Exponential back-off between retries.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackOff {
    /// The first interval; 25ms by default.
    pub base_interval: Option<Duration>,
    /// The largest interval; 10 × baseInterval by default.
    pub max_interval: Option<Duration>,
}

/// How a rate-limit reset header is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RateLimitFormat {
    /// A number of seconds to wait.
    Seconds,
    /// A UNIX timestamp to wait until.
    UnixTimestamp,
}

/// A header telling when to retry after a rate limit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResetHeader {
    /// The header name.
    pub name: String,
    /// How its value is written.
    pub format: RateLimitFormat,
}

/// Back-off driven by the server's rate-limit headers.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitedBackOff {
    /// Headers carrying the reset time.
    pub reset_headers: Option<Vec<ResetHeader>>,
    /// The longest wait; 300s by default.
    pub max_interval: Option<Duration>,
}

/// Host selection predicates for retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PredicateType {
    /// Do not retry on a host already tried.
    OmitPreviousHosts,
    /// Do not retry on hosts with these tags.
    OmitHostsWithTags,
    /// Do not retry on priorities already tried.
    OmitPreviousPriorities,
}

/// A host selection predicate.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Predicate {
    /// Which predicate.
    pub predicate: PredicateType,
    /// Tags of hosts to omit (`OmitHostsWithTags`).
    pub tags: Option<BTreeMap<String, String>>,
    /// How often priorities are re-evaluated (`OmitPreviousPriorities`); 2 by default.
    pub update_frequency: Option<i32>,
}

/// HTTP retries.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Http {
    /// How many retries; 1 by default.
    pub num_retries: Option<u32>,
    /// Timeout of each try; 0 disables.
    pub per_try_timeout: Option<Duration>,
    /// Back-off between tries.
    pub back_off: Option<BackOff>,
    /// Back-off from rate-limit headers.
    pub rate_limited_back_off: Option<RateLimitedBackOff>,
    /// Conditions to retry on (`5xx`, `GatewayError`, `Reset`, status codes, methods…).
    pub retry_on: Option<Vec<String>>,
    /// Retry when a response header matches.
    pub retriable_response_headers: Option<Vec<HeaderMatch>>,
    /// Retry only requests whose headers match.
    pub retriable_request_headers: Option<Vec<HeaderMatch>>,
    /// Host selection predicates.
    pub host_selection: Option<Vec<Predicate>>,
    /// Attempts to select a host per retry.
    pub host_selection_max_attempts: Option<i64>,
}

/// gRPC retry conditions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum GrpcRetryOn {
    /// Status CANCELLED.
    Canceled,
    /// Status DEADLINE_EXCEEDED.
    DeadlineExceeded,
    /// Status INTERNAL.
    Internal,
    /// Status RESOURCE_EXHAUSTED.
    ResourceExhausted,
    /// Status UNAVAILABLE.
    Unavailable,
}

/// gRPC retries.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Grpc {
    /// How many retries; 1 by default.
    pub num_retries: Option<u32>,
    /// Timeout of each try.
    pub per_try_timeout: Option<Duration>,
    /// Back-off between tries.
    pub back_off: Option<BackOff>,
    /// Back-off from rate-limit headers.
    pub rate_limited_back_off: Option<RateLimitedBackOff>,
    /// Status codes to retry on.
    pub retry_on: Option<Vec<GrpcRetryOn>>,
}

/// HTTP `retryOn` names and the Envoy condition each stands for.
pub const HTTP_RETRY_ON: &[(&str, &str)] = &[
    ("5xx", "5xx"),
    ("GatewayError", "gateway-error"),
    ("Reset", "reset"),
    ("Retriable4xx", "retriable-4xx"),
    ("ConnectFailure", "connect-failure"),
    ("EnvoyRatelimited", "envoy-ratelimited"),
    ("RefusedStream", "refused-stream"),
    ("Http3PostConnectFailure", "http3-post-connect-failure"),
    ("HttpMethodConnect", "CONNECT"),
    ("HttpMethodDelete", "DELETE"),
    ("HttpMethodGet", "GET"),
    ("HttpMethodHead", "HEAD"),
    ("HttpMethodOptions", "OPTIONS"),
    ("HttpMethodPatch", "PATCH"),
    ("HttpMethodPost", "POST"),
    ("HttpMethodPut", "PUT"),
    ("HttpMethodTrace", "TRACE"),
];

/// Whether `code` is an HTTP status code with a standard meaning.
pub fn is_known_status_code(code: u16) -> bool {
    matches!(code, 100..=103 | 200..=208 | 226 | 300..=305 | 307 | 308 | 400..=418 | 421..=426 | 428 | 429 | 431 | 451 | 500..=508 | 510 | 511)
}

const TOP_SYSTEM: &[TargetRefKind] = &[
    Mesh,
    MeshSubset,
    MeshGateway,
    MeshService,
    MeshServiceSubset,
    MeshHTTPRoute,
    Dataplane,
];
const TOP_OTHER: &[TargetRefKind] = &[Mesh, MeshSubset, MeshService, MeshServiceSubset, Dataplane];

impl PolicySpec for MeshRetrySpec {
    const TYPE: ResourceType = ResourceType::MeshRetry;
    type Conf = Conf;

    fn validate(&self, ctx: &PolicyContext, v: &mut Violations) {
        let system = ctx.role == PolicyRole::System;
        validate_top(
            &self.target_ref,
            TargetRefRules::kinds(if system { TOP_SYSTEM } else { TOP_OTHER })
                .with_gateway_listener_tags(system),
            v,
        );
        let top_kind = top_ref(&self.target_ref).kind;
        let to_kinds: &[TargetRefKind] = if matches!(top_kind, MeshGateway | MeshHTTPRoute) {
            &[Mesh, MeshExternalService]
        } else {
            &[
                Mesh,
                MeshService,
                MeshExternalService,
                MeshMultiZoneService,
                MeshHTTPRoute,
            ]
        };
        for (i, item) in items(&self.to) {
            let p = spec_path().field("to").index(i);
            item.target_ref
                .validate(&TargetRefRules::kinds(to_kinds), &p.field("targetRef"), v);
            validate_conf(item.default.as_ref(), &p.field("default"), v);
        }
    }
}

fn validate_conf(conf: Option<&Conf>, path: &FieldPath, v: &mut Violations) {
    let conf = conf.cloned().unwrap_or_default();
    if conf.tcp.is_none() && conf.http.is_none() && conf.grpc.is_none() {
        v.add(
            path,
            "at least one of the 'tcp', 'http', 'grpc' must be specified",
        );
    }
    if let Some(tcp) = &conf.tcp {
        match tcp.max_connect_attempt {
            None => v.add(&path.field("tcp"), "must not be empty"),
            Some(0) => v.add(
                &path.field("tcp").field("maxConnectAttempt"),
                "must be greater than 0",
            ),
            Some(_) => {}
        }
    }
    if let Some(http) = &conf.http {
        let hp = path.field("http");
        if http.num_retries.is_none()
            && http.per_try_timeout.is_none()
            && http.back_off.is_none()
            && http.retry_on.is_none()
            && http.retriable_request_headers.is_none()
            && http.retriable_response_headers.is_none()
            && http.rate_limited_back_off.is_none()
            && http.host_selection.is_none()
        {
            v.add(&hp, "must not be empty");
        }
        validate_timing(
            &http.per_try_timeout,
            &http.back_off,
            &http.rate_limited_back_off,
            &hp,
            v,
        );
        for (k, item) in http.retry_on.iter().flatten().enumerate() {
            let known = HTTP_RETRY_ON.iter().any(|(name, _)| name == item)
                || item.parse::<u16>().is_ok_and(is_known_status_code);
            if !known {
                v.add(&hp.field("retryOn").index(k), format!("unknown item '{item}'"));
            }
        }
        for (field, list) in [
            ("retriableResponseHeaders", &http.retriable_response_headers),
            ("retriableRequestHeaders", &http.retriable_request_headers),
        ] {
            for (k, m) in list.iter().flatten().enumerate() {
                m.validate(&hp.field(field).index(k), v);
            }
        }
        let mut seen_priorities = false;
        for (k, p) in http.host_selection.iter().flatten().enumerate() {
            let pp = hp.field("hostSelection").index(k);
            match p.predicate {
                PredicateType::OmitHostsWithTags => {
                    if p.tags.is_none() {
                        v.add(&pp.field("tags"), "must be defined");
                    }
                }
                PredicateType::OmitPreviousPriorities => {
                    if seen_priorities {
                        v.add(
                            &pp.field("predicate"),
                            "OmitPreviousPriorities must only be specified once",
                        );
                    }
                    seen_priorities = true;
                    if p.update_frequency.unwrap_or(2) <= 0 {
                        v.add(
                            &pp.field("updateFrequency"),
                            "must be defined and greater than zero",
                        );
                    }
                }
                PredicateType::OmitPreviousHosts => {}
            }
        }
        if http.host_selection_max_attempts.is_some_and(|n| n <= 0) {
            v.add(&hp.field("hostSelectionMaxAttempts"), "must be greater than 0");
        }
    }
    if let Some(grpc) = &conf.grpc {
        let gp = path.field("grpc");
        if grpc.num_retries.is_none()
            && grpc.per_try_timeout.is_none()
            && grpc.back_off.is_none()
            && grpc.retry_on.is_none()
            && grpc.rate_limited_back_off.is_none()
        {
            v.add(&gp, "must not be empty");
        }
        validate_timing(
            &grpc.per_try_timeout,
            &grpc.back_off,
            &grpc.rate_limited_back_off,
            &gp,
            v,
        );
    }
}

fn validate_timing(
    per_try: &Option<Duration>,
    back_off: &Option<BackOff>,
    rate_limited: &Option<RateLimitedBackOff>,
    path: &FieldPath,
    v: &mut Violations,
) {
    if let Some(d) = per_try {
        crate::validation::check_duration(d, &path.field("perTryTimeout"), v);
    }
    if let Some(b) = back_off {
        let bp = path.field("backOff");
        if b.base_interval.is_none() && b.max_interval.is_none() {
            v.add(&bp, "must not be empty");
        }
        if let Some(d) = &b.base_interval {
            check_positive_duration(d, &bp.field("baseInterval"), v);
        }
        if let Some(d) = &b.max_interval {
            check_positive_duration(d, &bp.field("maxInterval"), v);
        }
        if let (Some(base), Some(max)) = (
            b.base_interval.as_ref().and_then(Duration::to_std),
            b.max_interval.as_ref().and_then(Duration::to_std),
        ) && max < base
        {
            v.add(
                &bp.field("maxInterval"),
                "must be greater than or equal to baseInterval",
            );
        }
    }
    if let Some(r) = rate_limited {
        let rp = path.field("rateLimitedBackOff");
        if let Some(d) = &r.max_interval {
            check_positive_duration(d, &rp.field("maxInterval"), v);
        }
        match &r.reset_headers {
            None => v.add(&rp.field("resetHeaders"), "must be defined"),
            Some(headers) => {
                for (k, h) in headers.iter().enumerate() {
                    crate::common::check_header_name(
                        &h.name,
                        &rp.field("resetHeaders").index(k).field("name"),
                        v,
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::violations;
    use super::*;

    #[test]
    fn default_policy_is_valid() {
        let errs = violations::<MeshRetrySpec>(
            r#"
targetRef: {kind: Mesh}
to:
  - targetRef: {kind: Mesh}
    default:
      tcp: {maxConnectAttempt: 5}
      http: {numRetries: 5, perTryTimeout: 16s, backOff: {baseInterval: 25ms, maxInterval: 250ms}}
      grpc: {numRetries: 5, perTryTimeout: 16s, backOff: {baseInterval: 25ms, maxInterval: 250ms}}
"#,
        );
        assert!(errs.is_empty(), "{errs:?}");
    }

    #[test]
    fn paths_have_no_extra_conf_segment() {
        let errs = violations::<MeshRetrySpec>(
            r#"
to:
  - targetRef: {kind: Mesh}
    default:
      tcp: {maxConnectAttempt: 0}
      http: {retryOn: [5xx, WRONG, "503", "952"], rateLimitedBackOff: {}}
      grpc: {}
"#,
        );
        assert_eq!(
            errs,
            vec![
                "spec.to[0].default.tcp.maxConnectAttempt: must be greater than 0",
                "spec.to[0].default.http.rateLimitedBackOff.resetHeaders: must be defined",
                "spec.to[0].default.http.retryOn[1]: unknown item 'WRONG'",
                "spec.to[0].default.http.retryOn[3]: unknown item '952'",
                "spec.to[0].default.grpc: must not be empty",
            ]
        );
    }
}
