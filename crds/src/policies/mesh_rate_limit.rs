//! MeshRateLimit: local HTTP request and TCP connection rate limits.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    MatchRule, PolicyContext, PolicyRole, PolicySpec, TargetItem, has_items, items, spec_path, top_ref,
    validate_top,
};
use crate::common::{Duration, HeaderKeyValue, TargetRef, TargetRefKind, TargetRefKind::*, TargetRefRules};
use crate::resource::ResourceType;
use crate::validation::{FieldPath, Violations};

/// MeshRateLimit spec.
#[serde_with::skip_serializing_none]
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kuma.io",
    version = "v1alpha1",
    kind = "MeshRateLimit",
    plural = "meshratelimits",
    shortname = "mrl",
    category = "kuma",
    namespaced,
    printcolumn = r#"{"name":"TargetRef Kind","type":"string","jsonPath":".spec.targetRef.kind"}"#,
    printcolumn = r#"{"name":"TargetRef Name","type":"string","jsonPath":".spec.targetRef.name"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshRateLimitSpec {
    /// The proxies this policy configures; `{kind: Mesh}` when absent.
    pub target_ref: Option<TargetRef>,
    /// Limits per client (sidecars; deprecated in favour of `rules`).
    pub from: Option<Vec<TargetItem<Conf>>>,
    /// Limits per destination (gateways only).
    pub to: Option<Vec<TargetItem<Conf>>>,
    /// Limits by client identity.
    pub rules: Option<Vec<MatchRule<Conf>>>,
}

/// Rate limits.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Conf {
    /// Limits enforced by each proxy on its own.
    pub local: Option<Local>,
}

/// Local rate limits.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Local {
    /// HTTP request limits.
    pub http: Option<LocalHttp>,
    /// TCP connection limits.
    pub tcp: Option<LocalTcp>,
}

/// A number of events per interval.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rate {
    /// Events allowed per interval.
    pub num: u32,
    /// The interval; more than 50ms.
    pub interval: Duration,
}

/// HTTP request limits.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalHttp {
    /// Turns the limit off.
    pub disabled: Option<bool>,
    /// The allowed rate.
    pub request_rate: Option<Rate>,
    /// What limited requests get.
    pub on_rate_limit: Option<OnRateLimit>,
}

/// The answer to rate-limited requests.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OnRateLimit {
    /// The status; 429 by default.
    pub status: Option<u32>,
    /// Headers to add to the answer.
    pub headers: Option<HeaderAdditions>,
}

/// Headers to set or add.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderAdditions {
    /// Headers to set.
    pub set: Option<Vec<HeaderKeyValue>>,
    /// Headers to add.
    pub add: Option<Vec<HeaderKeyValue>>,
}

/// TCP connection limits.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalTcp {
    /// Turns the limit off.
    pub disabled: Option<bool>,
    /// The allowed connection rate.
    pub connection_rate: Option<Rate>,
}

impl PolicySpec for MeshRateLimitSpec {
    const TYPE: ResourceType = ResourceType::MeshRateLimit;
    type Conf = Conf;

    fn validate(&self, ctx: &PolicyContext, v: &mut Violations) {
        let spec = spec_path();
        let system = ctx.role == PolicyRole::System;
        if has_items(&self.rules) && (has_items(&self.to) || has_items(&self.from)) {
            v.add(
                &spec,
                "fields 'to' and 'from' must be empty when 'rules' is defined",
            );
        }
        let top_kinds: &[TargetRefKind] = if system {
            &[
                Mesh,
                MeshSubset,
                MeshGateway,
                MeshService,
                MeshServiceSubset,
                MeshHTTPRoute,
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
        if gateways && has_items(&self.rules) {
            v.add(
                &spec.field("rules"),
                "must not be defined when the scope includes a Gateway, select only proxyType Sidecar",
            );
        } else {
            for (i, rule) in items(&self.rules) {
                let p = spec.field("rules").index(i);
                let mut has_spiffe = false;
                for (j, m) in items(&rule.matches) {
                    m.validate_identity(&p.field("matches").index(j), v);
                    has_spiffe |= m.spiffe_id.is_some();
                }
                if has_spiffe
                    && rule
                        .default
                        .as_ref()
                        .and_then(|d| d.local.as_ref())
                        .is_some_and(|l| l.tcp.is_some())
                {
                    v.add(
                        &p.field("default").field("local").field("tcp"),
                        "can't be specified when matches contain spiffeID because this field cannot be conditioned on source identity",
                    );
                }
                validate_conf(rule.default.as_ref(), &p.field("default"), v);
            }
        }
        if gateways && has_items(&self.from) {
            v.add(
                &spec.field("from"),
                "must not be defined when the scope includes a Gateway, select only proxyType Sidecar or select only gateways and use spec.to",
            );
        } else {
            for (i, item) in items(&self.from) {
                let p = spec.field("from").index(i);
                item.target_ref
                    .validate(&TargetRefRules::kinds(&[Mesh]), &p.field("targetRef"), v);
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

fn validate_rate(rate: &Rate, path: &FieldPath, v: &mut Violations) {
    if rate.num == 0 {
        v.add(&path.field("num"), "must be greater than 0");
    }
    match rate.interval.parse() {
        Err(e) => v.add(
            &path.field("interval"),
            format!("must be a valid duration, e.g. 1s ({e})"),
        ),
        Ok(d) if d.negative || d.magnitude <= std::time::Duration::from_millis(50) => {
            v.add(&path.field("interval"), "must be greater than: 50ms")
        }
        Ok(_) => {}
    }
}

fn validate_conf(conf: Option<&Conf>, path: &FieldPath, v: &mut Violations) {
    let lp = path.field("local");
    let Some(local) = conf.and_then(|c| c.local.as_ref()) else {
        v.add(&lp, "must be defined");
        return;
    };
    if local.http.is_none() && local.tcp.is_none() {
        v.add(&lp, "must have at least one defined: tcp, http");
    }
    if let Some(http) = &local.http {
        let hp = lp.field("http");
        if http.disabled.is_none() && http.request_rate.is_none() && http.on_rate_limit.is_none() {
            v.add(
                &hp,
                "must have at least one defined: disabled, requestRate, onRateLimit",
            );
        }
        if let Some(rate) = &http.request_rate {
            validate_rate(rate, &hp.field("requestRate"), v);
        }
        if let Some(on) = &http.on_rate_limit {
            if let Some(status) = on.status
                && !(100..600).contains(&status)
            {
                v.add(
                    &hp.field("onRateLimit").field("status"),
                    "must be in inclusive range [100, 599]",
                );
            }
            if let Some(h) = &on.headers {
                for (field, list) in [("set", &h.set), ("add", &h.add)] {
                    for (k, kv) in list.iter().flatten().enumerate() {
                        crate::common::check_header_name(
                            &kv.name,
                            &hp.field("onRateLimit")
                                .field("headers")
                                .field(field)
                                .index(k)
                                .field("name"),
                            v,
                        );
                    }
                }
            }
        }
    }
    if let Some(tcp) = &local.tcp {
        let tp = lp.field("tcp");
        if tcp.disabled.is_none() && tcp.connection_rate.is_none() {
            v.add(&tp, "must have at least one defined: disabled, connectionRate");
        }
        if let Some(rate) = &tcp.connection_rate {
            validate_rate(rate, &tp.field("connectionRate"), v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::violations;
    use super::*;

    #[test]
    fn rates() {
        let errs = violations::<MeshRateLimitSpec>(
            r#"
targetRef: {kind: Dataplane, labels: {app: backend}}
from:
  - targetRef: {kind: Mesh}
    default: {local: {http: {requestRate: {num: 0, interval: 10ms}}, tcp: {}}}
  - targetRef: {kind: Mesh}
    default: {}
"#,
        );
        assert_eq!(
            errs,
            vec![
                "spec.from[0].default.local.http.requestRate.num: must be greater than 0",
                "spec.from[0].default.local.http.requestRate.interval: must be greater than: 50ms",
                "spec.from[0].default.local.tcp: must have at least one defined: disabled, connectionRate",
                "spec.from[1].default.local: must be defined",
            ]
        );
    }

    #[test]
    fn rules_not_for_gateway_scopes() {
        let errs = violations::<MeshRateLimitSpec>(
            "rules:\n  - default: {local: {http: {requestRate: {num: 1, interval: 1s}}}}",
        );
        assert_eq!(
            errs,
            vec![
                "spec.rules: must not be defined when the scope includes a Gateway, select only proxyType Sidecar"
            ]
        );
    }
}
