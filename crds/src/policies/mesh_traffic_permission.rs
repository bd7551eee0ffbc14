//! MeshTrafficPermission: which clients may reach the selected proxies.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{DefaultRule, PolicyContext, PolicySpec, TargetItem, has_items, items, spec_path, validate_top};
use crate::common::{RuleMatch, TargetRef, TargetRefKind::*, TargetRefRules};
use crate::resource::ResourceType;
use crate::validation::{FieldPath, Violations};

/// MeshTrafficPermission spec.
#[serde_with::skip_serializing_none]
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kuma.io",
    version = "v1alpha1",
    kind = "MeshTrafficPermission",
    plural = "meshtrafficpermissions",
    shortname = "mtp",
    category = "kuma",
    namespaced,
    printcolumn = r#"{"name":"TargetRef Kind","type":"string","jsonPath":".spec.targetRef.kind"}"#,
    printcolumn = r#"{"name":"TargetRef Name","type":"string","jsonPath":".spec.targetRef.name"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshTrafficPermissionSpec {
    /// The proxies whose inbound traffic is authorized; `{kind: Mesh}` when absent.
    pub target_ref: Option<TargetRef>,
    /// Actions per client (deprecated in favour of `rules`).
    pub from: Option<Vec<TargetItem<Conf>>>,
    /// Allow/deny lists by client identity.
    pub rules: Option<Vec<DefaultRule<RuleConf>>>,
}

/// What happens to a client's requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Action {
    /// Let them through.
    Allow,
    /// Refuse them.
    Deny,
    /// Let them through, logging that a deny would have refused them.
    AllowWithShadowDeny,
}

/// The `from[].default` of a MeshTrafficPermission.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Conf {
    /// The action.
    pub action: Option<Action>,
}

/// The `rules[].default` of a MeshTrafficPermission.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleConf {
    /// Clients to refuse; wins over `allow`.
    pub deny: Option<Vec<RuleMatch>>,
    /// Clients to let through while logging a would-be deny.
    pub allow_with_shadow_deny: Option<Vec<RuleMatch>>,
    /// Clients to let through.
    pub allow: Option<Vec<RuleMatch>>,
}

impl PolicySpec for MeshTrafficPermissionSpec {
    const TYPE: ResourceType = ResourceType::MeshTrafficPermission;
    type Conf = Conf;

    fn validate(&self, _ctx: &PolicyContext, v: &mut Violations) {
        let spec = spec_path();
        validate_top(
            &self.target_ref,
            TargetRefRules::kinds(&[Mesh, MeshSubset, MeshService, MeshServiceSubset, Dataplane])
                .inbound(has_items(&self.from) || has_items(&self.rules)),
            v,
        );
        if has_items(&self.from) && has_items(&self.rules) {
            v.add(&spec, "field 'from' must be empty when 'rules' is defined");
        }
        if !has_items(&self.from) && !has_items(&self.rules) {
            v.add(&spec, "at least one of 'from' or 'rules' has to be defined");
        }
        for (i, rule) in items(&self.rules) {
            let p = spec.field("rules").index(i);
            let conf = rule.default.clone().unwrap_or_default();
            if !has_items(&conf.allow) && !has_items(&conf.allow_with_shadow_deny) && !has_items(&conf.deny) {
                v.add(
                    &p,
                    "at least one of 'allow', 'allowWithShadowDeny', 'deny' has to be defined",
                );
            }
            let dp = p.field("default");
            for (field, list) in [
                ("allow", &conf.allow),
                ("allowWithShadowDeny", &conf.allow_with_shadow_deny),
                ("deny", &conf.deny),
            ] {
                validate_matches(list, &dp.field(field), v);
            }
        }
        for (i, item) in items(&self.from) {
            let p = spec.field("from").index(i);
            item.target_ref.validate(
                &TargetRefRules::kinds(&[Mesh, MeshSubset, MeshService, MeshServiceSubset]),
                &p.field("targetRef"),
                v,
            );
            if item.default.as_ref().and_then(|d| d.action).is_none() {
                v.add(&p.field("default").field("action"), "must be defined");
            }
        }
    }
}

fn validate_matches(list: &Option<Vec<RuleMatch>>, path: &FieldPath, v: &mut Violations) {
    for (j, m) in items(list) {
        let mp = path.index(j);
        m.validate_common(&mp, v);
        if m.spiffe_id.is_none() && m.sni.is_none() {
            v.add(&mp, "must specify at least one of 'spiffeID' or 'sni'");
        }
        if m.spiffe_id.as_ref().is_some_and(|s| s.match_type.is_none()) {
            v.add(&mp.field("spiffeID").field("type"), "must be set");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::violations;
    use super::*;

    #[test]
    fn needs_from_or_rules() {
        assert_eq!(
            violations::<MeshTrafficPermissionSpec>(
                "targetRef: {kind: MeshService, name: backend}\nfrom: []"
            ),
            vec!["spec: at least one of 'from' or 'rules' has to be defined"]
        );
    }

    #[test]
    fn rule_matches() {
        let errs = violations::<MeshTrafficPermissionSpec>(
            r#"
targetRef: {kind: Dataplane, labels: {app: backend}}
rules:
  - default: {deny: []}
  - default:
      allow: [{spiffeID: {type: Exact, value: some-service}}]
      deny: [{sni: {type: Exact, value: ""}}, {}]
from:
  - targetRef: {kind: Mesh}
"#,
        );
        assert_eq!(
            errs,
            vec![
                "spec: field 'from' must be empty when 'rules' is defined",
                "spec.rules[0]: at least one of 'allow', 'allowWithShadowDeny', 'deny' has to be defined",
                "spec.rules[1].default.allow[0].spiffeID: must be a valid Spiffe ID: scheme is missing or invalid",
                "spec.rules[1].default.deny[0].sni.value: must be set",
                "spec.rules[1].default.deny[1]: must specify at least one of 'spiffeID' or 'sni'",
                "spec.from[0].default.action: must be defined",
            ]
        );
    }
}
