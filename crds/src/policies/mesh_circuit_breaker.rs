//! MeshCircuitBreaker: connection limits and outlier detection.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{DefaultRule, PolicyContext, PolicySpec, TargetItem, has_items, items, spec_path, validate_top};
use crate::common::{Duration, IntOrString, TargetRef, TargetRefKind::*, TargetRefRules};
use crate::resource::ResourceType;
use crate::validation::{FieldPath, Violations, check_percentage, check_positive_duration};

/// MeshCircuitBreaker spec.
#[serde_with::skip_serializing_none]
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kuma.io",
    version = "v1alpha1",
    kind = "MeshCircuitBreaker",
    plural = "meshcircuitbreakers",
    shortname = "mcb",
    category = "kuma",
    namespaced,
    printcolumn = r#"{"name":"TargetRef Kind","type":"string","jsonPath":".spec.targetRef.kind"}"#,
    printcolumn = r#"{"name":"TargetRef Name","type":"string","jsonPath":".spec.targetRef.name"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshCircuitBreakerSpec {
    /// The proxies this policy configures; `{kind: Mesh}` when absent.
    pub target_ref: Option<TargetRef>,
    /// Limits per destination.
    pub to: Option<Vec<TargetItem<Conf>>>,
    /// Limits per client (deprecated in favour of `rules`).
    pub from: Option<Vec<TargetItem<Conf>>>,
    /// Limits for all inbound traffic.
    pub rules: Option<Vec<DefaultRule<Conf>>>,
}

/// Circuit breaker configuration.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Conf {
    /// Limits on connections and requests.
    pub connection_limits: Option<ConnectionLimits>,
    /// Ejection of misbehaving hosts.
    pub outlier_detection: Option<OutlierDetection>,
}

/// Limits on connections and requests.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionLimits {
    /// Maximum connections.
    pub max_connections: Option<u32>,
    /// Maximum connection pools.
    pub max_connection_pools: Option<u32>,
    /// Maximum queued requests.
    pub max_pending_requests: Option<u32>,
    /// Maximum parallel retries.
    pub max_retries: Option<u32>,
    /// Maximum parallel requests.
    pub max_requests: Option<u32>,
}

/// Outlier detection.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierDetection {
    /// Turns outlier detection off.
    pub disabled: Option<bool>,
    /// Time between ejection sweeps.
    pub interval: Option<Duration>,
    /// Base ejection time, multiplied by the number of ejections.
    pub base_ejection_time: Option<Duration>,
    /// Largest share of hosts that can be ejected; 10% by default.
    pub max_ejection_percent: Option<u32>,
    /// Whether to tell local-origin failures from external ones.
    pub split_external_and_local_errors: Option<bool>,
    /// What counts as a failure.
    pub detectors: Option<Detectors>,
    /// Healthy hosts below which all hosts are used (panic); 50% by default.
    pub healthy_panic_threshold: Option<IntOrString>,
}

/// Outlier detectors.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Detectors {
    /// Consecutive errors of any kind.
    pub total_failures: Option<Consecutive>,
    /// Consecutive gateway errors (502, 503, 504).
    pub gateway_failures: Option<Consecutive>,
    /// Consecutive local-origin failures.
    pub local_origin_failures: Option<Consecutive>,
    /// Success rate compared with other hosts.
    pub success_rate: Option<SuccessRate>,
    /// Failure percentage above a threshold.
    pub failure_percentage: Option<FailurePercentage>,
}

/// A consecutive failure count.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Consecutive {
    /// Failures in a row before ejection.
    pub consecutive: Option<u32>,
}

/// Success-rate detector.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SuccessRate {
    /// Hosts needed for the detector to run.
    pub minimum_hosts: Option<u32>,
    /// Requests per host needed to be counted.
    pub request_volume: Option<u32>,
    /// Ejection threshold in standard deviations (e.g. `"1.9"`).
    pub standard_deviation_factor: Option<IntOrString>,
}

/// Failure-percentage detector.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FailurePercentage {
    /// Hosts needed for the detector to run.
    pub minimum_hosts: Option<u32>,
    /// Requests per host needed to be counted.
    pub request_volume: Option<u32>,
    /// Failure percentage causing ejection.
    pub threshold: Option<u32>,
}

impl PolicySpec for MeshCircuitBreakerSpec {
    const TYPE: ResourceType = ResourceType::MeshCircuitBreaker;
    type Conf = Conf;

    fn validate(&self, _ctx: &PolicyContext, v: &mut Violations) {
        let spec = spec_path();
        validate_top(
            &self.target_ref,
            TargetRefRules::kinds(&[
                Mesh,
                MeshSubset,
                MeshService,
                MeshGateway,
                MeshServiceSubset,
                Dataplane,
            ])
            .with_gateway_listener_tags(true)
            .inbound(has_items(&self.from) || has_items(&self.rules)),
            v,
        );
        if !has_items(&self.rules) && !has_items(&self.to) && !has_items(&self.from) {
            v.add(&spec, "at least one of 'from', 'to' or 'rules' has to be defined");
        }
        if has_items(&self.rules) && (has_items(&self.to) || has_items(&self.from)) {
            v.add(
                &spec,
                "fields 'to' and 'from' must be empty when 'rules' is defined",
            );
        }
        for (i, rule) in items(&self.rules) {
            validate_conf(
                rule.default.as_ref(),
                &spec.field("rules").index(i).field("default"),
                v,
            );
        }
        for (i, item) in items(&self.from) {
            let p = spec.field("from").index(i);
            item.target_ref
                .validate(&TargetRefRules::kinds(&[Mesh]), &p.field("targetRef"), v);
            validate_conf(item.default.as_ref(), &p.field("default"), v);
        }
        for (i, item) in items(&self.to) {
            let p = spec.field("to").index(i);
            item.target_ref.validate(
                &TargetRefRules::kinds(&[Mesh, MeshService, MeshExternalService, MeshMultiZoneService]),
                &p.field("targetRef"),
                v,
            );
            validate_conf(item.default.as_ref(), &p.field("default"), v);
        }
    }
}

fn greater_than_zero(n: Option<u32>, path: &FieldPath, v: &mut Violations) {
    if n == Some(0) {
        v.add(path, "must be greater than 0");
    }
}

fn validate_conf(conf: Option<&Conf>, path: &FieldPath, v: &mut Violations) {
    let Some(conf) = conf.filter(|c| c.connection_limits.is_some() || c.outlier_detection.is_some()) else {
        v.add(
            path,
            "at least one of: 'connectionLimits' or 'outlierDetection' should be configured",
        );
        return;
    };
    if let Some(l) = &conf.connection_limits {
        let lp = path.field("connectionLimits");
        for (n, name) in [
            (l.max_connections, "maxConnections"),
            (l.max_connection_pools, "maxConnectionPools"),
            (l.max_pending_requests, "maxPendingRequests"),
            (l.max_retries, "maxRetries"),
            (l.max_requests, "maxRequests"),
        ] {
            greater_than_zero(n, &lp.field(name), v);
        }
    }
    if let Some(o) = &conf.outlier_detection {
        let op = path.field("outlierDetection");
        if let Some(d) = &o.interval {
            check_positive_duration(d, &op.field("interval"), v);
        }
        if let Some(d) = &o.base_ejection_time {
            check_positive_duration(d, &op.field("baseEjectionTime"), v);
        }
        if o.max_ejection_percent.is_some_and(|p| p > 100) {
            v.add(
                &op.field("maxEjectionPercent"),
                "must be in inclusive range [0, 100]",
            );
        }
        if let Some(p) = &o.healthy_panic_threshold {
            check_percentage(p, &op.field("healthyPanicThreshold"), v);
        }
        let dp = op.field("detectors");
        match &o.detectors {
            None => v.add(&dp, "must be defined"),
            Some(d) => {
                if d.total_failures.is_none()
                    && d.gateway_failures.is_none()
                    && d.local_origin_failures.is_none()
                    && d.success_rate.is_none()
                    && d.failure_percentage.is_none()
                {
                    v.add(
                        &dp,
                        "must have at least one defined: totalFailures, gatewayFailures, localOriginFailures, successRate, failurePercentage",
                    );
                }
                for (c, name) in [
                    (&d.total_failures, "totalFailures"),
                    (&d.gateway_failures, "gatewayFailures"),
                    (&d.local_origin_failures, "localOriginFailures"),
                ] {
                    if let Some(c) = c {
                        greater_than_zero(c.consecutive, &dp.field(name).field("consecutive"), v);
                    }
                }
                if let Some(s) = &d.success_rate {
                    let sp = dp.field("successRate");
                    greater_than_zero(s.minimum_hosts, &sp.field("minimumHosts"), v);
                    greater_than_zero(s.request_volume, &sp.field("requestVolume"), v);
                    if let Some(f) = &s.standard_deviation_factor {
                        match f.as_decimal() {
                            None => v.add(&sp.field("standardDeviationFactor"), "invalid number"),
                            Some(x) if x <= 0.0 => {
                                v.add(&sp.field("standardDeviationFactor"), "must be greater than 0")
                            }
                            Some(_) => {}
                        }
                    }
                }
                if let Some(f) = &d.failure_percentage {
                    let fp = dp.field("failurePercentage");
                    greater_than_zero(f.minimum_hosts, &fp.field("minimumHosts"), v);
                    greater_than_zero(f.request_volume, &fp.field("requestVolume"), v);
                    if f.threshold.is_some_and(|t| t > 100) {
                        v.add(&fp.field("threshold"), "must be in inclusive range [0, 100]");
                    }
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
    fn rules_are_reported_at_their_own_path() {
        let errs = violations::<MeshCircuitBreakerSpec>(
            r#"
targetRef: {kind: Dataplane, labels: {app: web}}
rules:
  - default: {}
  - default:
      connectionLimits: {maxConnections: 0}
      outlierDetection: {maxEjectionPercent: 101, detectors: {}}
"#,
        );
        assert_eq!(
            errs,
            vec![
                "spec.rules[0].default: at least one of: 'connectionLimits' or 'outlierDetection' should be configured",
                "spec.rules[1].default.connectionLimits.maxConnections: must be greater than 0",
                "spec.rules[1].default.outlierDetection.maxEjectionPercent: must be in inclusive range [0, 100]",
                "spec.rules[1].default.outlierDetection.detectors: must have at least one defined: totalFailures, gatewayFailures, localOriginFailures, successRate, failurePercentage",
            ]
        );
    }
}
