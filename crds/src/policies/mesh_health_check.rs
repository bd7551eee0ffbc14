//! MeshHealthCheck: active health checking of destination endpoints.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{PolicyContext, PolicySpec, TargetItem, items, spec_path, validate_top};
use crate::common::{Duration, HeaderModifier, IntOrString, TargetRef, TargetRefKind::*, TargetRefRules};
use crate::resource::ResourceType;
use crate::validation::{FieldPath, Violations, check_percentage, check_positive_duration};

/// MeshHealthCheck spec.
#[serde_with::skip_serializing_none]
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kuma.io",
    version = "v1alpha1",
    kind = "MeshHealthCheck",
    plural = "meshhealthchecks",
    shortname = "mhc",
    category = "kuma",
    namespaced,
    printcolumn = r#"{"name":"TargetRef Kind","type":"string","jsonPath":".spec.targetRef.kind"}"#,
    printcolumn = r#"{"name":"TargetRef Name","type":"string","jsonPath":".spec.targetRef.name"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshHealthCheckSpec {
    /// The proxies this policy configures; `{kind: Mesh}` when absent.
    pub target_ref: Option<TargetRef>,
    /// Health checks per destination.
    pub to: Option<Vec<TargetItem<Conf>>>,
}

/// Health check configuration.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Conf {
    /// Time between checks; 1m by default.
    pub interval: Option<Duration>,
    /// Time to wait for a check; 15s by default.
    pub timeout: Option<Duration>,
    /// Failed checks before a host is unhealthy; 5 by default.
    pub unhealthy_threshold: Option<i32>,
    /// Passed checks before a host is healthy; 1 by default.
    pub healthy_threshold: Option<i32>,
    /// Random delay before the first check.
    pub initial_jitter: Option<Duration>,
    /// Random delay added to each interval.
    pub interval_jitter: Option<Duration>,
    /// Random delay added to each interval, as a percentage of it.
    pub interval_jitter_percent: Option<i32>,
    /// Deprecated: moved to MeshCircuitBreaker.
    pub healthy_panic_threshold: Option<IntOrString>,
    /// Whether to fail traffic when in panic mode.
    pub fail_traffic_on_panic: Option<bool>,
    /// A file to log health check events to.
    pub event_log_path: Option<String>,
    /// Whether to log every failure, not only state changes.
    pub always_log_health_check_failures: Option<bool>,
    /// Interval used for hosts that got no traffic; 60s by default.
    pub no_traffic_interval: Option<Duration>,
    /// TCP checks.
    pub tcp: Option<TcpHealthCheck>,
    /// HTTP checks.
    pub http: Option<HttpHealthCheck>,
    /// gRPC checks.
    pub grpc: Option<GrpcHealthCheck>,
    /// Whether to reuse the connection between checks; true by default.
    pub reuse_connection: Option<bool>,
}

/// TCP health check.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpHealthCheck {
    /// Turns TCP checks off.
    pub disabled: Option<bool>,
    /// Base64 payload to send.
    pub send: Option<String>,
    /// Base64 payloads expected back; connect-only when empty.
    pub receive: Option<Vec<String>>,
}

/// HTTP health check.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpHealthCheck {
    /// Turns HTTP checks off.
    pub disabled: Option<bool>,
    /// The path to request; `/` by default.
    pub path: Option<String>,
    /// Headers to add to check requests.
    pub request_headers_to_add: Option<HeaderModifier>,
    /// Statuses counted as healthy; 200 by default.
    pub expected_statuses: Option<Vec<i32>>,
}

/// gRPC health check.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcHealthCheck {
    /// Turns gRPC checks off.
    pub disabled: Option<bool>,
    /// The service name sent in the check.
    pub service_name: Option<String>,
    /// The authority header; the cluster name by default.
    pub authority: Option<String>,
}

impl PolicySpec for MeshHealthCheckSpec {
    const TYPE: ResourceType = ResourceType::MeshHealthCheck;
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
        for (i, item) in items(&self.to) {
            let p = spec_path().field("to").index(i);
            item.target_ref.validate(
                &TargetRefRules::kinds(&[Mesh, MeshService, MeshExternalService, MeshMultiZoneService]),
                &p.field("targetRef"),
                v,
            );
            validate_conf(&item.default.clone().unwrap_or_default(), &p.field("default"), v);
        }
    }
}

fn validate_conf(conf: &Conf, path: &FieldPath, v: &mut Violations) {
    for (d, name) in [
        (&conf.interval, "interval"),
        (&conf.timeout, "timeout"),
        (&conf.initial_jitter, "initialJitter"),
        (&conf.interval_jitter, "intervalJitter"),
        (&conf.no_traffic_interval, "noTrafficInterval"),
    ] {
        if let Some(d) = d {
            check_positive_duration(d, &path.field(name), v);
        }
    }
    for (n, name) in [
        (conf.unhealthy_threshold, "unhealthyThreshold"),
        (conf.healthy_threshold, "healthyThreshold"),
    ] {
        if n.is_some_and(|n| n <= 0) {
            v.add(&path.field(name), "must be greater than zero when defined");
        }
    }
    if conf
        .interval_jitter_percent
        .is_some_and(|p| !(0..=100).contains(&p))
    {
        v.add(
            &path.field("intervalJitterPercent"),
            "must be in inclusive range [0, 100]",
        );
    }
    if let Some(p) = &conf.healthy_panic_threshold {
        check_percentage(p, &path.field("healthyPanicThreshold"), v);
    }
    if let Some(log) = &conf.event_log_path
        && (!log.starts_with('/') || log.contains('\0'))
    {
        v.add(
            &path.field("eventLogPath"),
            "must be an absolute file path when defined",
        );
    }
    if let Some(http) = &conf.http {
        let hp = path.field("http");
        if http.path.as_deref() == Some("") {
            v.add(&hp.field("path"), "must be defined");
        }
        for (k, s) in http.expected_statuses.iter().flatten().enumerate() {
            if !(100..=599).contains(s) {
                v.add(
                    &hp.field("expectedStatuses").index(k),
                    "must be in inclusive range [100, 599]",
                );
            }
        }
        if let Some(m) = &http.request_headers_to_add {
            if m.remove.is_some() {
                v.add(
                    &hp.field("requestHeadersToAdd").field("remove"),
                    "is not supported here",
                );
            }
            m.validate(&hp.field("requestHeadersToAdd"), v);
        }
    }
    if let Some(tcp) = &conf.tcp {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        if tcp.send.as_deref().is_some_and(|s| b64.decode(s).is_err()) {
            v.add(&path.field("tcp").field("send"), "must be base64");
        }
        for (k, r) in tcp.receive.iter().flatten().enumerate() {
            if b64.decode(r).is_err() {
                v.add(&path.field("tcp").field("receive").index(k), "must be base64");
            }
        }
    }
    if conf.http.is_none() && conf.tcp.is_none() && conf.grpc.is_none() {
        v.add(path, "must have at least one defined: http, tcp, grpc");
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::violations;
    use super::*;

    #[test]
    fn checks_values() {
        let errs = violations::<MeshHealthCheckSpec>(
            r##"
to:
  - targetRef: {kind: Mesh}
    default: {}
  - targetRef: {kind: MeshService, name: backend}
    default:
      interval: 0s
      unhealthyThreshold: -3
      intervalJitterPercent: 110
      healthyPanicThreshold: -10
      eventLogPath: "#not_valid_path"
      http: {path: /health, expectedStatuses: [99, 200, 600]}
"##,
        );
        assert_eq!(
            errs,
            vec![
                "spec.to[0].default: must have at least one defined: http, tcp, grpc",
                "spec.to[1].default.interval: must be greater than 0",
                "spec.to[1].default.unhealthyThreshold: must be greater than zero when defined",
                "spec.to[1].default.intervalJitterPercent: must be in inclusive range [0, 100]",
                "spec.to[1].default.healthyPanicThreshold: must be in inclusive range [0.0, 100.0]",
                "spec.to[1].default.eventLogPath: must be an absolute file path when defined",
                "spec.to[1].default.http.expectedStatuses[0]: must be in inclusive range [100, 599]",
                "spec.to[1].default.http.expectedStatuses[2]: must be in inclusive range [100, 599]",
            ]
        );
    }
}
