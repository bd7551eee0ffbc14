//! MeshRetry: route retry policies for HTTP and gRPC outbounds, connect
//! attempts for TCP ones.
//!
//! As in Kuma, only `http` and `grpc` destinations get a route retry policy
//! (an `http2` destination gets none), and `numRetries: 0` turns retries off.

use envoy_types::pb::envoy::config::route::v3::HeaderMatcher;
use envoy_types::pb::envoy::config::route::v3::{RetryPolicy, RouteAction, retry_policy};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy;
use envoy_types::pb::envoy::extensions::retry::host::omit_host_metadata::v3::OmitHostMetadataConfig;
use envoy_types::pb::envoy::extensions::retry::host::previous_hosts::v3::PreviousHostsPredicate;
use envoy_types::pb::envoy::extensions::retry::priority::previous_priorities::v3::PreviousPrioritiesConfig;
use kuma_crds::common::{Duration, HeaderMatch};
use kuma_crds::matching::Destination;
use kuma_crds::policies::mesh_retry::{
    BackOff, Conf, GrpcRetryOn, HTTP_RETRY_ON, PredicateType, RateLimitFormat, RateLimitedBackOff,
};
use kuma_crds::resource::ResourceType;

use crate::context::Protocol;
use crate::envoy;
use crate::generate::Policies;

const T: ResourceType = ResourceType::MeshRetry;
const HTTP_DEFAULT_RETRY_ON: &str = "gateway-error,connect-failure,refused-stream";
const GRPC_DEFAULT_RETRY_ON: &str =
    "cancelled,connect-failure,gateway-error,refused-stream,reset,resource-exhausted,unavailable";

fn d(v: &Option<Duration>) -> Option<envoy_types::pb::google::protobuf::Duration> {
    v.as_ref().and_then(Duration::to_std).map(envoy::duration)
}

fn back_off(
    b: &Option<BackOff>,
    default_base: Option<std::time::Duration>,
) -> Option<retry_policy::RetryBackOff> {
    let b = b.as_ref()?;
    Some(retry_policy::RetryBackOff {
        base_interval: d(&b.base_interval).or(default_base.map(envoy::duration)),
        max_interval: d(&b.max_interval),
    })
}

fn rate_limited(r: &Option<RateLimitedBackOff>) -> Option<retry_policy::RateLimitedRetryBackOff> {
    let r = r.as_ref()?;
    Some(retry_policy::RateLimitedRetryBackOff {
        reset_headers: r
            .reset_headers
            .iter()
            .flatten()
            .map(|h| retry_policy::ResetHeader {
                name: h.name.clone(),
                format: match h.format {
                    RateLimitFormat::Seconds => retry_policy::ResetHeaderFormat::Seconds as i32,
                    RateLimitFormat::UnixTimestamp => retry_policy::ResetHeaderFormat::UnixTimestamp as i32,
                },
            })
            .collect(),
        max_interval: d(&r.max_interval),
    })
}

fn header_matchers(list: &Option<Vec<HeaderMatch>>) -> Vec<HeaderMatcher> {
    list.iter()
        .flatten()
        .map(super::mesh_http_route::header_matcher)
        .collect()
}

/// The route retry policy of `conf` for a destination speaking `protocol`.
pub fn retry_policy(conf: &Conf, protocol: Protocol) -> Option<RetryPolicy> {
    match protocol {
        Protocol::Http => {
            let http = conf.http.as_ref()?;
            if http.num_retries == Some(0) {
                return None;
            }
            let mut policy = RetryPolicy {
                retry_on: HTTP_DEFAULT_RETRY_ON.into(),
                num_retries: http.num_retries.map(envoy::u32_value),
                per_try_timeout: d(&http.per_try_timeout),
                retry_back_off: back_off(&http.back_off, None),
                rate_limited_retry_back_off: rate_limited(&http.rate_limited_back_off),
                host_selection_retry_max_attempts: http.host_selection_max_attempts.unwrap_or(0),
                ..Default::default()
            };
            if let Some(retry_on) = &http.retry_on {
                let mut conditions = Vec::new();
                for item in retry_on {
                    if let Ok(code) = item.parse::<u32>() {
                        policy.retriable_status_codes.push(code);
                    } else if let Some(method) = item.strip_prefix("HttpMethod") {
                        policy
                            .retriable_request_headers
                            .push(super::mesh_http_route::header_matcher(&HeaderMatch {
                                match_type: None,
                                name: ":method".into(),
                                value: Some(method.to_ascii_uppercase()),
                            }));
                    } else if let Some((_, envoy_name)) = HTTP_RETRY_ON.iter().find(|(n, _)| n == item) {
                        conditions.push(*envoy_name);
                    }
                }
                if !policy.retriable_status_codes.is_empty()
                    && !conditions.contains(&"retriable-status-codes")
                {
                    conditions.push("retriable-status-codes");
                }
                if !conditions.is_empty() {
                    policy.retry_on = conditions.join(",");
                }
            }
            policy
                .retriable_request_headers
                .extend(header_matchers(&http.retriable_request_headers));
            policy.retriable_headers = header_matchers(&http.retriable_response_headers);
            for p in http.host_selection.iter().flatten() {
                match p.predicate {
                    PredicateType::OmitPreviousHosts => {
                        policy
                            .retry_host_predicate
                            .push(retry_policy::RetryHostPredicate {
                                name: "envoy.retry_host_predicates.previous_hosts".into(),
                                config_type: Some(
                                    retry_policy::retry_host_predicate::ConfigType::TypedConfig(envoy::any(
                                        &PreviousHostsPredicate {},
                                    )),
                                ),
                            })
                    }
                    PredicateType::OmitHostsWithTags => {
                        let tags = p.tags.clone().unwrap_or_default();
                        let config = OmitHostMetadataConfig {
                            metadata_match: Some(envoy_types::pb::envoy::config::core::v3::Metadata {
                                filter_metadata: [("envoy.lb".to_string(), envoy::string_struct(&tags))]
                                    .into(),
                                ..Default::default()
                            }),
                        };
                        policy
                            .retry_host_predicate
                            .push(retry_policy::RetryHostPredicate {
                                name: "envoy.retry_host_predicates.omit_host_metadata".into(),
                                config_type: Some(
                                    retry_policy::retry_host_predicate::ConfigType::TypedConfig(envoy::any(
                                        &config,
                                    )),
                                ),
                            });
                    }
                    PredicateType::OmitPreviousPriorities => {
                        let config = PreviousPrioritiesConfig {
                            update_frequency: p.update_frequency.unwrap_or(2),
                        };
                        policy.retry_priority = Some(retry_policy::RetryPriority {
                            name: "envoy.retry_priorities.previous_priorities".into(),
                            config_type: Some(retry_policy::retry_priority::ConfigType::TypedConfig(
                                envoy::any(&config),
                            )),
                        });
                    }
                }
            }
            Some(policy)
        }
        Protocol::Grpc => {
            let grpc = conf.grpc.as_ref()?;
            if grpc.num_retries == Some(0) {
                return None;
            }
            let retry_on = match &grpc.retry_on {
                Some(list) if !list.is_empty() => list
                    .iter()
                    .map(|r| match r {
                        GrpcRetryOn::Canceled => "canceled",
                        GrpcRetryOn::DeadlineExceeded => "deadline-exceeded",
                        GrpcRetryOn::Internal => "internal",
                        GrpcRetryOn::ResourceExhausted => "resource-exhausted",
                        GrpcRetryOn::Unavailable => "unavailable",
                    })
                    .collect::<Vec<_>>()
                    .join(","),
                _ => GRPC_DEFAULT_RETRY_ON.into(),
            };
            Some(RetryPolicy {
                retry_on,
                num_retries: grpc.num_retries.map(envoy::u32_value),
                per_try_timeout: d(&grpc.per_try_timeout),
                retry_back_off: back_off(&grpc.back_off, Some(std::time::Duration::from_millis(25))),
                rate_limited_retry_back_off: rate_limited(&grpc.rate_limited_back_off),
                ..Default::default()
            })
        }
        _ => None,
    }
}

/// Outbound route: the retry policy for its destination.
pub fn route(action: &mut RouteAction, policies: &Policies, destination: &Destination, protocol: Protocol) {
    if let Some(conf) = policies.to_typed::<Conf>(T, destination)
        && let Some(policy) = retry_policy(&conf, protocol)
    {
        action.retry_policy = Some(policy);
    }
}

/// Outbound TCP proxy: connect attempts.
pub fn tcp(tcp: &mut TcpProxy, policies: &Policies, destination: &Destination) {
    if let Some(attempts) = policies
        .to_typed::<Conf>(T, destination)
        .and_then(|c| c.tcp)
        .and_then(|t| t.max_connect_attempt)
    {
        tcp.max_connect_attempts = Some(envoy::u32_value(attempts));
    }
}
