//! MeshTCPRoute: weighted TCP backends per destination.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{PolicyContext, PolicyRole, PolicySpec, items, spec_path, top_ref, validate_top};
use crate::common::{BackendRef, TargetRef, TargetRefKind, TargetRefKind::*, TargetRefRules};
use crate::resource::ResourceType;
use crate::validation::Violations;

/// MeshTCPRoute spec.
#[serde_with::skip_serializing_none]
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kuma.io",
    version = "v1alpha1",
    kind = "MeshTCPRoute",
    plural = "meshtcproutes",
    shortname = "mtcpr",
    category = "kuma",
    namespaced,
    printcolumn = r#"{"name":"TargetRef Kind","type":"string","jsonPath":".spec.targetRef.kind"}"#,
    printcolumn = r#"{"name":"TargetRef Name","type":"string","jsonPath":".spec.targetRef.name"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshTCPRouteSpec {
    /// The proxies whose outbound traffic is routed; `{kind: Mesh}` when absent.
    pub target_ref: Option<TargetRef>,
    /// Routes per destination.
    pub to: Option<Vec<To>>,
}

/// The route of one destination.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct To {
    /// The destination.
    pub target_ref: TargetRef,
    /// At most one rule; the destination itself when absent.
    pub rules: Option<Vec<Rule>>,
}

/// A TCP route.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    /// Where to send connections.
    pub default: Conf,
}

/// Where a TCP route sends connections.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Conf {
    /// Weighted backends.
    pub backend_refs: Option<Vec<BackendRef>>,
}

impl To {
    /// The effective configuration: the first rule, or the destination itself.
    pub fn effective_conf(&self) -> Conf {
        match self.rules.as_ref().and_then(|r| r.first()) {
            Some(rule) => rule.default.clone(),
            None => Conf {
                backend_refs: Some(vec![BackendRef::from_target(&self.target_ref, 1)]),
            },
        }
    }
}

impl PolicySpec for MeshTCPRouteSpec {
    const TYPE: ResourceType = ResourceType::MeshTCPRoute;
    type Conf = Conf;

    fn validate(&self, ctx: &PolicyContext, v: &mut Violations) {
        let system = ctx.role == PolicyRole::System;
        let top: &[TargetRefKind] = if system {
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
            TargetRefRules::kinds(top).with_gateway_listener_tags(system),
            v,
        );
        let top_kind = top_ref(&self.target_ref).kind;
        let to_kinds: &[TargetRefKind] = if top_kind == MeshGateway {
            &[Mesh]
        } else {
            &[MeshService, MeshExternalService, MeshMultiZoneService]
        };
        let backend_rules = TargetRefRules::kinds(&[
            MeshService,
            MeshServiceSubset,
            MeshExternalService,
            MeshMultiZoneService,
        ]);
        for (i, to) in items(&self.to) {
            let p = spec_path().field("to").index(i);
            to.target_ref
                .validate(&TargetRefRules::kinds(to_kinds), &p.field("targetRef"), v);
            if to.rules.as_ref().is_some_and(|r| r.len() > 1) {
                v.add(&p.field("rules"), "must have at most one rule");
            }
            for (r, rule) in to.rules.iter().flatten().enumerate() {
                let bp = p.field("rules").index(r).field("default").field("backendRefs");
                match rule.default.backend_refs.as_deref() {
                    None | Some([]) => v.add(&bp, "must be defined"),
                    Some(refs) => {
                        for (b, backend) in refs.iter().enumerate() {
                            backend.validate(&backend_rules, &bp.index(b), v);
                        }
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
    fn checks_backends() {
        let errs = violations::<MeshTCPRouteSpec>(
            r#"
targetRef: {kind: MeshService, name: frontend}
to:
  - targetRef: {kind: Mesh}
  - targetRef: {kind: MeshService, name: backend}
    rules:
      - default: {backendRefs: []}
  - targetRef: {kind: MeshService, name: backend}
    rules:
      - default: {backendRefs: [{kind: MeshServiceSubset, tags: {version: v1}}]}
"#,
        );
        assert_eq!(
            errs,
            vec![
                "spec.to[0].targetRef.kind: value 'Mesh' is not supported",
                "spec.to[1].rules[0].default.backendRefs: must be defined",
                "spec.to[2].rules[0].default.backendRefs[0].name: must be set when kind is MeshServiceSubset",
            ]
        );
    }
}
