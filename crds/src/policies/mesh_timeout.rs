//! MeshTimeout: connection, idle and HTTP timeouts, per destination (`to`)
//! and per client (`from`, `rules`).

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    MatchRule, PolicyContext, PolicyRole, PolicySpec, TargetItem, has_items, items, spec_path, top_ref,
    validate_top,
};
use crate::common::{Duration, TargetRefKind::*, TargetRefRules};
use crate::resource::ResourceType;
use crate::validation::{FieldPath, Violations, check_duration, check_positive_duration};

/// MeshTimeout spec.
#[serde_with::skip_serializing_none]
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kuma.io",
    version = "v1alpha1",
    kind = "MeshTimeout",
    plural = "meshtimeouts",
    shortname = "mt",
    category = "kuma",
    namespaced,
    printcolumn = r#"{"name":"TargetRef Kind","type":"string","jsonPath":".spec.targetRef.kind"}"#,
    printcolumn = r#"{"name":"TargetRef Name","type":"string","jsonPath":".spec.targetRef.name"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshTimeoutSpec {
    /// The proxies this policy configures; `{kind: Mesh}` when absent.
    pub target_ref: Option<crate::common::TargetRef>,
    /// Timeouts per destination.
    pub to: Option<Vec<TargetItem<Conf>>>,
    /// Timeouts per client (deprecated in favour of `rules`).
    pub from: Option<Vec<TargetItem<Conf>>>,
    /// Inbound timeouts, optionally per client identity.
    pub rules: Option<Vec<MatchRule<Conf>>>,
}

/// Timeout configuration.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Conf {
    /// Time to establish a connection; 5s by default, 0 is not allowed.
    pub connection_timeout: Option<Duration>,
    /// Time a connection may be idle; 1h by default, 0 disables.
    pub idle_timeout: Option<Duration>,
    /// HTTP timeouts.
    pub http: Option<Http>,
}

/// HTTP timeouts.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Http {
    /// Time for a whole request and response; 15s by default, 0 disables.
    pub request_timeout: Option<Duration>,
    /// Time a stream may be idle; 30m by default, 0 disables.
    pub stream_idle_timeout: Option<Duration>,
    /// Maximum stream duration; disabled by default.
    pub max_stream_duration: Option<Duration>,
    /// Maximum connection duration; disabled by default.
    pub max_connection_duration: Option<Duration>,
    /// Time to receive request headers; disabled by default.
    pub request_headers_timeout: Option<Duration>,
}

const TOP_SYSTEM: &[crate::common::TargetRefKind] = &[
    Mesh,
    MeshSubset,
    Dataplane,
    MeshGateway,
    MeshService,
    MeshServiceSubset,
    MeshHTTPRoute,
];
const TOP_OTHER: &[crate::common::TargetRefKind] =
    &[Mesh, Dataplane, MeshSubset, MeshService, MeshServiceSubset];
const TO_UNDER_ROUTE_OR_GATEWAY: &[crate::common::TargetRefKind] = &[Mesh, MeshExternalService];
const TO: &[crate::common::TargetRefKind] = &[
    Mesh,
    MeshService,
    MeshExternalService,
    MeshMultiZoneService,
    MeshHTTPRoute,
];

impl PolicySpec for MeshTimeoutSpec {
    const TYPE: ResourceType = ResourceType::MeshTimeout;
    type Conf = Conf;

    fn validate(&self, ctx: &PolicyContext, v: &mut Violations) {
        let spec = spec_path();
        let inbound = has_items(&self.from) || has_items(&self.rules);
        let system = ctx.role == PolicyRole::System;
        validate_top(
            &self.target_ref,
            TargetRefRules::kinds(if system { TOP_SYSTEM } else { TOP_OTHER })
                .with_gateway_listener_tags(system)
                .inbound(inbound),
            v,
        );
        let top_kind = top_ref(&self.target_ref).kind;
        if has_items(&self.rules) && (has_items(&self.to) || has_items(&self.from)) {
            v.add(
                &spec,
                "fields 'to' and 'from' must be empty when 'rules' is defined",
            );
        }
        if !has_items(&self.rules) && !has_items(&self.to) && !has_items(&self.from) {
            v.add(&spec, "at least one of 'from', 'to' or 'rules' has to be defined");
        }
        if matches!(top_kind, MeshHTTPRoute | MeshGateway) && has_items(&self.from) {
            v.add(&spec.field("from"), "must not be defined");
        } else {
            for (i, item) in items(&self.from) {
                let p = spec.field("from").index(i);
                item.target_ref
                    .validate(&TargetRefRules::kinds(&[Mesh]), &p.field("targetRef"), v);
                validate_conf(item.default.as_ref(), top_kind, &p.field("default"), v);
            }
        }
        let to_kinds = if matches!(top_kind, MeshHTTPRoute | MeshGateway) {
            TO_UNDER_ROUTE_OR_GATEWAY
        } else {
            TO
        };
        for (i, item) in items(&self.to) {
            let p = spec.field("to").index(i);
            item.target_ref
                .validate(&TargetRefRules::kinds(to_kinds), &p.field("targetRef"), v);
            validate_conf(item.default.as_ref(), top_kind, &p.field("default"), v);
        }
        for (i, rule) in items(&self.rules) {
            let p = spec.field("rules").index(i);
            let mut has_spiffe = false;
            for (j, m) in items(&rule.matches) {
                m.validate_identity(&p.field("matches").index(j), v);
                has_spiffe |= m.spiffe_id.is_some();
            }
            if has_spiffe && let Some(conf) = &rule.default {
                let d = p.field("default");
                let http = conf.http.as_ref();
                let not_per_identity = [
                    (conf.connection_timeout.is_some(), d.field("connectionTimeout")),
                    (conf.idle_timeout.is_some(), d.field("idleTimeout")),
                    (
                        http.is_some_and(|h| h.request_headers_timeout.is_some()),
                        d.field("http").field("requestHeadersTimeout"),
                    ),
                    (
                        http.is_some_and(|h| h.max_stream_duration.is_some()),
                        d.field("http").field("maxStreamDuration"),
                    ),
                    (
                        http.is_some_and(|h| h.max_connection_duration.is_some()),
                        d.field("http").field("maxConnectionDuration"),
                    ),
                ];
                for (set, path) in not_per_identity {
                    if set {
                        v.add(
                                &path,
                                "can't be specified when matches contain spiffeID because this field cannot be conditioned on source identity",
                            );
                    }
                }
            }
            validate_conf(rule.default.as_ref(), top_kind, &p.field("default"), v);
        }
    }
}

fn validate_conf(
    conf: Option<&Conf>,
    top_kind: crate::common::TargetRefKind,
    path: &FieldPath,
    v: &mut Violations,
) {
    let Some(conf) =
        conf.filter(|c| c.connection_timeout.is_some() || c.idle_timeout.is_some() || c.http.is_some())
    else {
        v.add(path, "at least one timeout should be configured");
        return;
    };
    if top_kind == MeshHTTPRoute {
        let http = conf.http.as_ref();
        for (set, field) in [
            (conf.connection_timeout.is_some(), path.field("connectionTimeout")),
            (conf.idle_timeout.is_some(), path.field("idleTimeout")),
            (
                http.is_some_and(|h| h.max_stream_duration.is_some()),
                path.field("http").field("maxStreamDuration"),
            ),
            (
                http.is_some_and(|h| h.max_connection_duration.is_some()),
                path.field("http").field("maxConnectionDuration"),
            ),
        ] {
            if set {
                v.add(
                    &field,
                    "can't be specified when top-level TargetRef is referencing MeshHTTPRoute",
                );
            }
        }
    }
    if let Some(d) = &conf.connection_timeout {
        check_positive_duration(d, &path.field("connectionTimeout"), v);
    }
    if let Some(d) = &conf.idle_timeout {
        check_duration(d, &path.field("idleTimeout"), v);
    }
    if let Some(http) = &conf.http {
        let hp = path.field("http");
        if http.request_timeout.is_none()
            && http.stream_idle_timeout.is_none()
            && http.max_stream_duration.is_none()
            && http.max_connection_duration.is_none()
            && http.request_headers_timeout.is_none()
        {
            v.add(&hp, "at least one timeout in this section should be configured");
        }
        for (d, name) in [
            (&http.request_timeout, "requestTimeout"),
            (&http.stream_idle_timeout, "streamIdleTimeout"),
            (&http.max_stream_duration, "maxStreamDuration"),
            (&http.max_connection_duration, "maxConnectionDuration"),
            (&http.request_headers_timeout, "requestHeadersTimeout"),
        ] {
            if let Some(d) = d {
                check_duration(d, &hp.field(name), v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::violations;
    use super::*;

    #[test]
    fn valid_default_policy() {
        let errs = violations::<MeshTimeoutSpec>(
            r#"
targetRef: {kind: Mesh, proxyTypes: [Sidecar]}
from:
  - targetRef: {kind: Mesh}
    default: {connectionTimeout: 10s, idleTimeout: 2h0m0s, http: {requestTimeout: 0s, streamIdleTimeout: 1h0m0s, maxStreamDuration: 0s}}
to:
  - targetRef: {kind: Mesh}
    default: {connectionTimeout: 5s, idleTimeout: 1h0m0s, http: {requestTimeout: 15s, streamIdleTimeout: 30m0s}}
"#,
        );
        assert!(errs.is_empty(), "{errs:?}");
    }

    #[test]
    fn reports_every_problem() {
        let errs = violations::<MeshTimeoutSpec>(
            r#"
to:
  - targetRef: {kind: MeshServiceSubset, name: x}
  - targetRef: {kind: Mesh}
    default: {connectionTimeout: -1s, idleTimeout: 1 minute, http: {requestTimeout: -10s}}
  - targetRef: {kind: Mesh}
    default: {http: {}}
"#,
        );
        assert_eq!(
            errs,
            vec![
                "spec.to[0].targetRef.kind: value 'MeshServiceSubset' is not supported",
                "spec.to[0].default: at least one timeout should be configured",
                "spec.to[1].default.connectionTimeout: must be greater than 0",
                "spec.to[1].default.idleTimeout: must be a valid duration, e.g. 10s (\"1 minute\" has an unknown unit (use ns, us, ms, s, m or h))",
                "spec.to[1].default.http.requestTimeout: must not be negative",
                "spec.to[2].default.http: at least one timeout in this section should be configured",
            ]
        );
    }

    #[test]
    fn rules_exclusive_with_to_and_from() {
        let errs = violations::<MeshTimeoutSpec>(
            r#"
targetRef: {kind: Dataplane, labels: {app: web}}
rules:
  - matches: [{spiffeID: {type: Exact, value: "spiffe://default/web"}}]
    default: {connectionTimeout: 1s, http: {requestTimeout: 1s}}
to:
  - targetRef: {kind: Mesh}
    default: {idleTimeout: 1s}
"#,
        );
        assert_eq!(
            errs,
            vec![
                "spec: fields 'to' and 'from' must be empty when 'rules' is defined",
                "spec.rules[0].default.connectionTimeout: can't be specified when matches contain spiffeID because this field cannot be conditioned on source identity",
            ]
        );
    }
}
