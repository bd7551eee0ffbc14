//! MeshFaultInjection: aborts, delays and bandwidth limits for testing.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    MatchRule, PolicyContext, PolicyRole, PolicySpec, TargetItem, has_items, items, spec_path, top_ref,
    validate_top,
};
use crate::common::{Duration, IntOrString, TargetRef, TargetRefKind, TargetRefKind::*, TargetRefRules};
use crate::resource::ResourceType;
use crate::validation::{FieldPath, Violations, check_duration, check_percentage};

/// MeshFaultInjection spec.
#[serde_with::skip_serializing_none]
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kuma.io",
    version = "v1alpha1",
    kind = "MeshFaultInjection",
    plural = "meshfaultinjections",
    shortname = "mfi",
    category = "kuma",
    namespaced,
    printcolumn = r#"{"name":"TargetRef Kind","type":"string","jsonPath":".spec.targetRef.kind"}"#,
    printcolumn = r#"{"name":"TargetRef Name","type":"string","jsonPath":".spec.targetRef.name"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshFaultInjectionSpec {
    /// The proxies this policy configures; `{kind: Mesh}` when absent.
    pub target_ref: Option<TargetRef>,
    /// Faults per client (sidecars; deprecated in favour of `rules`).
    pub from: Option<Vec<TargetItem<Conf>>>,
    /// Faults per destination (gateways only).
    pub to: Option<Vec<TargetItem<Conf>>>,
    /// Faults by client identity.
    pub rules: Option<Vec<MatchRule<Conf>>>,
}

/// Faults to inject.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Conf {
    /// HTTP faults.
    pub http: Option<Vec<FaultInjectionConf>>,
}

/// One set of HTTP faults.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultInjectionConf {
    /// Answer with an error status.
    pub abort: Option<Abort>,
    /// Delay requests.
    pub delay: Option<Delay>,
    /// Limit response bandwidth.
    pub response_bandwidth: Option<ResponseBandwidth>,
}

/// Abort requests with a status.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Abort {
    /// The status to answer.
    pub http_status: i32,
    /// The share of requests to abort.
    pub percentage: IntOrString,
}

/// Delay requests.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Delay {
    /// The delay.
    pub value: Duration,
    /// The share of requests to delay.
    pub percentage: IntOrString,
}

/// Limit response bandwidth.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResponseBandwidth {
    /// The limit, e.g. `10kbps`, `1Mbps`, `1Gbps`.
    pub limit: String,
    /// The share of responses to limit.
    pub percentage: IntOrString,
}

/// A bandwidth in kbit/s when `text` is written like `10kbps`, `5 Mbps`, `1Gbps`.
pub fn parse_bandwidth_kbps(text: &str) -> Option<u64> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let number: u64 = text[..digits].parse().ok()?;
    let multiplier = match text[digits..].trim_start() {
        "kbps" => 1,
        "Mbps" => 1_000,
        "Gbps" => 1_000_000,
        _ => return None,
    };
    number.checked_mul(multiplier)
}

impl PolicySpec for MeshFaultInjectionSpec {
    const TYPE: ResourceType = ResourceType::MeshFaultInjection;
    type Conf = Conf;

    fn validate(&self, ctx: &PolicyContext, v: &mut Violations) {
        let spec = spec_path();
        let system = ctx.role == PolicyRole::System;
        let top_kinds: &[TargetRefKind] = if system {
            &[
                Mesh,
                MeshSubset,
                MeshGateway,
                MeshService,
                MeshServiceSubset,
                Dataplane,
            ]
        } else {
            &[Mesh, MeshSubset, MeshService, MeshServiceSubset, Dataplane]
        };
        validate_top(
            &self.target_ref,
            TargetRefRules::kinds(top_kinds)
                .with_gateway_listener_tags(system)
                .inbound(has_items(&self.from) || has_items(&self.rules)),
            v,
        );
        let gateways = top_ref(&self.target_ref).includes_gateways();
        if has_items(&self.from) && has_items(&self.rules) {
            v.add(&spec, "field 'from' must be empty when 'rules' is defined");
        }
        for (i, rule) in items(&self.rules) {
            let p = spec.field("rules").index(i);
            for (j, m) in items(&rule.matches) {
                m.validate_identity(&p.field("matches").index(j), v);
            }
            validate_conf(rule.default.as_ref(), &p.field("default"), v);
        }
        if gateways && has_items(&self.from) {
            v.add(
                &spec.field("from"),
                "must not be defined when the scope includes a Gateway, select only proxyType Sidecar or select only gateways and use spec.to",
            );
        } else {
            for (i, item) in items(&self.from) {
                let p = spec.field("from").index(i);
                item.target_ref.validate(
                    &TargetRefRules::kinds(&[Mesh, MeshSubset, MeshServiceSubset, MeshService]),
                    &p.field("targetRef"),
                    v,
                );
                validate_conf(item.default.as_ref(), &p.field("default"), v);
            }
        }
        if !gateways && has_items(&self.to) {
            v.add(&spec.field("to"), "must not be defined");
        } else {
            for (i, item) in items(&self.to) {
                let p = spec.field("to").index(i);
                item.target_ref
                    .validate(&TargetRefRules::kinds(&[Mesh]), &p.field("targetRef"), v);
                validate_conf(item.default.as_ref(), &p.field("default"), v);
            }
        }
    }
}

fn validate_conf(conf: Option<&Conf>, path: &FieldPath, v: &mut Violations) {
    for (idx, fault) in conf
        .and_then(|c| c.http.as_ref())
        .into_iter()
        .flatten()
        .enumerate()
    {
        let fp = path.field("http").index(idx);
        if let Some(abort) = &fault.abort {
            if !(100..600).contains(&abort.http_status) {
                v.add(
                    &fp.field("abort").field("httpStatus"),
                    "must be in inclusive range [100, 599]",
                );
            }
            check_percentage(&abort.percentage, &fp.field("abort").field("percentage"), v);
        }
        if let Some(delay) = &fault.delay {
            check_duration(&delay.value, &fp.field("delay").field("value"), v);
            check_percentage(&delay.percentage, &fp.field("delay").field("percentage"), v);
        }
        if let Some(bw) = &fault.response_bandwidth {
            if bw.limit.is_empty() {
                v.add(&fp.field("responseBandwidth").field("limit"), "must be defined");
            } else if parse_bandwidth_kbps(&bw.limit).is_none() {
                v.add(
                    &fp.field("responseBandwidth").field("limit"),
                    "must be in kbps/Mbps/Gbps units, e.g. 10kbps",
                );
            }
            check_percentage(
                &bw.percentage,
                &fp.field("responseBandwidth").field("percentage"),
                v,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::violations;
    use super::*;

    #[test]
    fn bandwidth_units() {
        assert_eq!(parse_bandwidth_kbps("10kbps"), Some(10));
        assert_eq!(parse_bandwidth_kbps("5 Mbps"), Some(5000));
        assert_eq!(parse_bandwidth_kbps("1Gbps"), Some(1_000_000));
        assert_eq!(parse_bandwidth_kbps("10mbps"), None);
        assert_eq!(parse_bandwidth_kbps("kbps"), None);
    }

    #[test]
    fn fault_values_and_scope() {
        let errs = violations::<MeshFaultInjectionSpec>(
            r#"
targetRef: {kind: MeshService, name: backend}
from:
  - targetRef: {kind: Mesh}
    default:
      http:
        - abort: {httpStatus: 600, percentage: 101}
        - delay: {value: -5s, percentage: "xyz"}
        - responseBandwidth: {limit: 10kb, percentage: 50}
to:
  - targetRef: {kind: Mesh}
"#,
        );
        assert_eq!(
            errs,
            vec![
                "spec.from[0].default.http[0].abort.httpStatus: must be in inclusive range [100, 599]",
                "spec.from[0].default.http[0].abort.percentage: must be in inclusive range [0.0, 100.0]",
                "spec.from[0].default.http[1].delay.value: must not be negative",
                "spec.from[0].default.http[1].delay.percentage: string must be a valid number, e.g. 50 or \"50.5\" (got \"xyz\")",
                "spec.from[0].default.http[2].responseBandwidth.limit: must be in kbps/Mbps/Gbps units, e.g. 10kbps",
                "spec.to: must not be defined",
            ]
        );
    }
}
