//! The 16 targetRef policies, one module each: the spec types as Kuma 2.x
//! documents them and their validation.
//!
//! Every policy has a top-level `targetRef` choosing the proxies it
//! configures and then one of these shapes:
//! - `to[]`: per destination (outbound) configuration,
//! - `from[]` / `rules[]`: per client (inbound) configuration,
//! - `default`: one configuration for the whole proxy ("single item").
//!
//! Validation mirrors Kuma's validators and messages; the places where
//! Kuma reports a wrong path (MeshRetry's extra `conf`, MeshCircuitBreaker
//! reporting `rules` under `from`, MeshMetric's `backends.backend[0]`) report
//! the real path here.

use std::fmt::Debug;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::common::{RuleMatch, TargetRef, TargetRefRules};
use crate::resource::ResourceType;
use crate::validation::{FieldPath, Violations};

pub mod mesh_access_log;
pub mod mesh_circuit_breaker;
pub mod mesh_fault_injection;
pub mod mesh_health_check;
pub mod mesh_http_route;
pub mod mesh_load_balancing_strategy;
pub mod mesh_metric;
pub mod mesh_passthrough;
pub mod mesh_proxy_patch;
pub mod mesh_rate_limit;
pub mod mesh_retry;
pub mod mesh_tcp_route;
pub mod mesh_timeout;
pub mod mesh_tls;
pub mod mesh_trace;
pub mod mesh_traffic_permission;

/// Who owns a policy, from the `kuma.io/policy-role` label. It decides which
/// proxies a policy may select and how it ranks against others.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PolicyRole {
    /// Written by mesh operators (Universal, or the system namespace). Ranks lowest.
    #[default]
    System,
    /// Written by a service's owners about how clients reach it.
    Producer,
    /// Written by a client's owners about what it calls.
    Consumer,
    /// Written by a workload's owners about itself. Ranks highest.
    WorkloadOwner,
}

impl PolicyRole {
    /// The role named by a `kuma.io/policy-role` label value; absent or
    /// unknown values mean `system`, as in Kuma.
    pub fn from_label(value: Option<&str>) -> Self {
        match value {
            Some("producer") => PolicyRole::Producer,
            Some("consumer") => PolicyRole::Consumer,
            Some("workload-owner") => PolicyRole::WorkloadOwner,
            _ => PolicyRole::System,
        }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyRole::System => "system",
            PolicyRole::Producer => "producer",
            PolicyRole::Consumer => "consumer",
            PolicyRole::WorkloadOwner => "workload-owner",
        }
    }
}

/// What validation needs to know beyond the spec itself.
#[derive(Clone, Copy, Debug, Default)]
pub struct PolicyContext {
    /// The policy's role.
    pub role: PolicyRole,
}

/// Implemented by the spec type of every targetRef policy.
pub trait PolicySpec:
    Serialize + DeserializeOwned + JsonSchema + Clone + Debug + PartialEq + Send + Sync + 'static
{
    /// The resource type this spec belongs to.
    const TYPE: ResourceType;

    /// The merged configuration type (`to[].default`, `from[].default`, …).
    type Conf: Serialize + DeserializeOwned + Clone + Debug + PartialEq;

    /// Appends every problem of the spec; paths start with `spec`.
    fn validate(&self, ctx: &PolicyContext, v: &mut Violations);
}

/// One `to[]` or `from[]` entry: a target and its configuration.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetItem<C> {
    /// The destinations (`to`) or clients (`from`) this entry applies to.
    pub target_ref: TargetRef,
    /// The configuration for them.
    pub default: Option<C>,
}

/// One inbound `rules[]` entry: optional client matches and a configuration.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MatchRule<C> {
    /// The clients this rule applies to; all when absent.
    pub matches: Option<Vec<RuleMatch>>,
    /// The configuration for them.
    pub default: Option<C>,
}

/// One inbound `rules[]` entry of a policy whose rules apply to all clients.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DefaultRule<C> {
    /// The configuration for every client.
    pub default: Option<C>,
}

/// The top-level targetRef, `{kind: Mesh}` when omitted.
pub(crate) fn top_ref(target: &Option<TargetRef>) -> TargetRef {
    target.clone().unwrap_or_else(TargetRef::mesh)
}

/// Validates the top-level targetRef when present.
pub(crate) fn validate_top(target: &Option<TargetRef>, rules: TargetRefRules<'_>, v: &mut Violations) {
    if let Some(t) = target {
        t.validate(&rules, &spec_path().field("targetRef"), v);
    }
}

/// `spec`.
pub(crate) fn spec_path() -> FieldPath {
    FieldPath::new("spec")
}

/// Whether an optional list has items.
pub(crate) fn has_items<T>(list: &Option<Vec<T>>) -> bool {
    list.as_ref().is_some_and(|l| !l.is_empty())
}

/// Iterates an optional list with indexes.
pub(crate) fn items<T>(list: &Option<Vec<T>>) -> impl Iterator<Item = (usize, &T)> {
    list.iter().flatten().enumerate()
}

/// Serializes a spec for the generic (JSON) view of matching and merging.
pub fn spec_to_value<S: Serialize>(spec: &S) -> serde_json::Value {
    // Serializing plain data structures into a JSON value cannot fail: all
    // map keys are strings and there are no custom serializers that error.
    serde_json::to_value(spec).unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// Parses a spec from YAML and returns `field: message` lines.
    pub fn violations<S: PolicySpec>(yaml: &str) -> Vec<String> {
        violations_with_role::<S>(yaml, PolicyRole::System)
    }

    /// Like [`violations`], for a policy with a role.
    pub fn violations_with_role<S: PolicySpec>(yaml: &str, role: PolicyRole) -> Vec<String> {
        let spec: S =
            serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("test spec does not parse: {e}\n{yaml}"));
        let mut v = Violations::new();
        spec.validate(&PolicyContext { role }, &mut v);
        v.into_vec().into_iter().map(|v| v.to_string()).collect()
    }
}
