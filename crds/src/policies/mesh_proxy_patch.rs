//! MeshProxyPatch: direct edits of the generated Envoy resources, applied
//! after every other policy.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{PolicyContext, PolicyRole, PolicySpec, spec_path, validate_top};
use crate::common::{TargetRef, TargetRefKind, TargetRefKind::*, TargetRefRules};
use crate::resource::ResourceType;
use crate::validation::{FieldPath, Violations};

/// MeshProxyPatch spec.
#[serde_with::skip_serializing_none]
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kuma.io",
    version = "v1alpha1",
    kind = "MeshProxyPatch",
    plural = "meshproxypatches",
    shortname = "mpp",
    category = "kuma",
    namespaced,
    printcolumn = r#"{"name":"TargetRef Kind","type":"string","jsonPath":".spec.targetRef.kind"}"#,
    printcolumn = r#"{"name":"TargetRef Name","type":"string","jsonPath":".spec.targetRef.name"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshProxyPatchSpec {
    /// The proxies to patch; `{kind: Mesh}` when absent.
    pub target_ref: Option<TargetRef>,
    /// The patches.
    pub default: Conf,
}

impl MeshProxyPatchSpec {
    /// Whether a modification changes resources of the xDS type `short`
    /// (`cds`, `lds`, `rds`). Filter and virtual-host patches land in
    /// listeners (virtual hosts of inline route configurations) or in
    /// route configurations, so they count for both.
    pub fn changes_xds_type(&self, short: &str) -> bool {
        self.default
            .append_modifications
            .iter()
            .flatten()
            .any(|m| match short {
                "cds" => m.cluster.is_some(),
                "lds" => {
                    m.listener.is_some()
                        || m.network_filter.is_some()
                        || m.http_filter.is_some()
                        || m.virtual_host.is_some()
                }
                "rds" => m.virtual_host.is_some(),
                _ => false,
            })
    }
}

/// The patches.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Conf {
    /// Modifications, concatenated across policies and applied in order.
    pub append_modifications: Option<Vec<Modification>>,
}

/// One modification; exactly one field is set.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Modification {
    /// Add, remove or patch clusters.
    pub cluster: Option<ResourceMod<ClusterMatch>>,
    /// Add, remove or patch listeners.
    pub listener: Option<ResourceMod<ListenerMatch>>,
    /// Add, remove or patch network filters of listeners.
    pub network_filter: Option<FilterMod>,
    /// Add, remove or patch HTTP filters of listeners.
    pub http_filter: Option<FilterMod>,
    /// Add, remove or patch virtual hosts of inline route configurations.
    pub virtual_host: Option<VirtualHostMod>,
}

/// Operations on whole resources.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ResourceOperation {
    /// Add the `value` as a new resource.
    Add,
    /// Remove matching resources.
    Remove,
    /// Merge `value` into, or apply `jsonPatches` to, matching resources.
    Patch,
}

/// Operations on filters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum FilterOperation {
    /// Insert first in every chain.
    AddFirst,
    /// Insert last in every chain.
    AddLast,
    /// Insert before the filter named by `match.name`.
    AddBefore,
    /// Insert after the filter named by `match.name`.
    AddAfter,
    /// Merge into, or apply `jsonPatches` to, the matching filters' config.
    Patch,
    /// Remove matching filters.
    Remove,
}

/// A JSON patch operation (RFC 6902).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum JsonPatchOp {
    /// add.
    Add,
    /// remove.
    Remove,
    /// replace.
    Replace,
    /// move.
    Move,
    /// copy.
    Copy,
}

/// One JSON patch operation on the JSON form of an Envoy resource.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JsonPatchBlock {
    /// The operation.
    pub op: JsonPatchOp,
    /// A JSON pointer, e.g. `/connectTimeout`.
    pub path: Option<String>,
    /// The value for add and replace.
    #[serde(default)]
    #[schemars(schema_with = "crate::common::any_json_schema")]
    pub value: Option<serde_json::Value>,
    /// The source pointer for move and copy.
    pub from: Option<String>,
}

/// Selects clusters.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterMatch {
    /// Where the cluster came from (`inbound`, `outbound`, …).
    pub origin: Option<String>,
    /// The cluster name.
    pub name: Option<String>,
}

/// Selects listeners.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListenerMatch {
    /// Where the listener came from.
    pub origin: Option<String>,
    /// The listener name.
    pub name: Option<String>,
    /// Tags of the listener.
    pub tags: Option<BTreeMap<String, String>>,
}

/// A modification of whole clusters or listeners.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceMod<M> {
    /// Which resources; all when absent.
    #[serde(rename = "match")]
    pub match_: Option<M>,
    /// What to do.
    pub operation: ResourceOperation,
    /// The Envoy resource as YAML.
    pub value: Option<String>,
    /// JSON patches for `Patch`.
    pub json_patches: Option<Vec<JsonPatchBlock>>,
}

/// Selects filters.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FilterMatch {
    /// Where the listener came from.
    pub origin: Option<String>,
    /// The filter name, e.g. `envoy.filters.network.tcp_proxy`.
    pub name: Option<String>,
    /// The listener name.
    pub listener_name: Option<String>,
    /// Tags of the listener.
    pub listener_tags: Option<BTreeMap<String, String>>,
}

/// A modification of network or HTTP filters.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FilterMod {
    /// Which filters.
    #[serde(rename = "match")]
    pub match_: Option<FilterMatch>,
    /// What to do.
    pub operation: FilterOperation,
    /// The filter as YAML.
    pub value: Option<String>,
    /// JSON patches of the filter's typed config, for `Patch`.
    pub json_patches: Option<Vec<JsonPatchBlock>>,
}

/// Selects virtual hosts.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualHostMatch {
    /// Where the listener came from.
    pub origin: Option<String>,
    /// The virtual host name.
    pub name: Option<String>,
    /// The route configuration name.
    pub route_configuration_name: Option<String>,
}

/// A modification of virtual hosts.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualHostMod {
    /// Which virtual hosts.
    #[serde(rename = "match")]
    pub match_: VirtualHostMatch,
    /// What to do.
    pub operation: ResourceOperation,
    /// The virtual host as YAML.
    pub value: Option<String>,
    /// JSON patches for `Patch`.
    pub json_patches: Option<Vec<JsonPatchBlock>>,
}

impl PolicySpec for MeshProxyPatchSpec {
    const TYPE: ResourceType = ResourceType::MeshProxyPatch;
    type Conf = Conf;

    fn validate(&self, ctx: &PolicyContext, v: &mut Violations) {
        let top: &[TargetRefKind] = if ctx.role == PolicyRole::System {
            &[
                Mesh,
                MeshSubset,
                MeshService,
                MeshServiceSubset,
                MeshGateway,
                Dataplane,
            ]
        } else {
            &[Mesh, MeshSubset, Dataplane, MeshService, MeshServiceSubset]
        };
        validate_top(&self.target_ref, TargetRefRules::kinds(top), v);
        let mp = spec_path().field("default").field("appendModifications");
        let mods = self.default.append_modifications.as_deref().unwrap_or(&[]);
        if mods.is_empty() {
            v.add(&mp, "must not be empty");
        }
        for (i, m) in mods.iter().enumerate() {
            let p = mp.index(i);
            let count = [
                m.cluster.is_some(),
                m.listener.is_some(),
                m.network_filter.is_some(),
                m.http_filter.is_some(),
                m.virtual_host.is_some(),
            ]
            .into_iter()
            .filter(|x| *x)
            .count();
            if count != 1 {
                v.add(
                    &p,
                    format!("exactly one modification can be defined at a time. Currently, {count} modifications are defined"),
                );
            }
            if let Some(c) = &m.cluster {
                validate_resource_mod(
                    c.operation,
                    c.match_.is_some(),
                    &c.value,
                    &c.json_patches,
                    "cluster",
                    &p.field("cluster"),
                    v,
                );
            }
            if let Some(l) = &m.listener {
                validate_resource_mod(
                    l.operation,
                    l.match_.is_some(),
                    &l.value,
                    &l.json_patches,
                    "listener",
                    &p.field("listener"),
                    v,
                );
            }
            if let Some(vh) = &m.virtual_host {
                let vp = p.field("virtualHost");
                if vh.operation == ResourceOperation::Add && vh.match_.name.is_some() {
                    v.add(&vp.field("match").field("name"), "must not be defined");
                }
                validate_resource_mod(
                    vh.operation,
                    false,
                    &vh.value,
                    &vh.json_patches,
                    "virtualHost",
                    &vp,
                    v,
                );
            }
            for (field, f) in [
                ("networkFilter", &m.network_filter),
                ("httpFilter", &m.http_filter),
            ] {
                if let Some(f) = f {
                    validate_filter_mod(f, field, &p.field(field), v);
                }
            }
        }
    }
}

fn validate_resource_mod(
    op: ResourceOperation,
    has_match: bool,
    value: &Option<String>,
    patches: &Option<Vec<JsonPatchBlock>>,
    kind: &str,
    path: &FieldPath,
    v: &mut Violations,
) {
    match op {
        ResourceOperation::Add => {
            if has_match {
                v.add(&path.field("match"), "must not be defined");
            }
            validate_value(value, &path.field("value"), v);
        }
        ResourceOperation::Patch => validate_patch(value, patches, kind, path, v),
        ResourceOperation::Remove => {
            if value.is_some() {
                v.add(&path.field("value"), "must not be defined");
            }
        }
    }
}

fn validate_filter_mod(f: &FilterMod, kind: &str, path: &FieldPath, v: &mut Violations) {
    let name_set = f.match_.as_ref().is_some_and(|m| m.name.is_some());
    match f.operation {
        FilterOperation::AddFirst | FilterOperation::AddLast => {
            validate_value(&f.value, &path.field("value"), v)
        }
        FilterOperation::AddBefore | FilterOperation::AddAfter => {
            if !name_set {
                let which = if f.operation == FilterOperation::AddBefore {
                    "before"
                } else {
                    "after"
                };
                v.add(
                    &path.field("match").field("name"),
                    format!(
                        "must be defined. You need to pick a filter {which} which this one will be added"
                    ),
                );
            }
            validate_value(&f.value, &path.field("value"), v);
        }
        FilterOperation::Patch => {
            if !name_set {
                v.add(&path.field("match").field("name"), "must be defined");
            }
            validate_patch(&f.value, &f.json_patches, kind, path, v);
        }
        FilterOperation::Remove => {
            if f.value.is_some() {
                v.add(&path.field("value"), "must not be defined");
            }
        }
    }
}

/// The value must be a YAML (or JSON) object; whether it is a valid Envoy
/// resource of the right type is checked when the patch is applied.
fn validate_value(value: &Option<String>, path: &FieldPath, v: &mut Violations) {
    match value {
        None => v.add(path, "must be defined"),
        Some(text) => match serde_yaml::from_str::<serde_yaml::Value>(text) {
            Ok(serde_yaml::Value::Mapping(_)) => {}
            Ok(_) => v.add(path, "native Envoy resource is not valid: must be a YAML object"),
            Err(e) => v.add(path, format!("native Envoy resource is not valid: {e}")),
        },
    }
}

fn validate_patch(
    value: &Option<String>,
    patches: &Option<Vec<JsonPatchBlock>>,
    kind: &str,
    path: &FieldPath,
    v: &mut Violations,
) {
    let has_patches = patches.as_ref().is_some_and(|p| !p.is_empty());
    match (value.is_some(), has_patches) {
        (true, true) => v.add(
            path,
            format!("{kind} must have only one type defined: value, jsonPatches"),
        ),
        (false, false) => v.add(
            path,
            format!("{kind} must have exactly one defined: value, jsonPatches"),
        ),
        (true, false) => validate_value(value, &path.field("value"), v),
        (false, true) => {
            for (n, block) in patches.iter().flatten().enumerate() {
                validate_json_patch(block, &path.field("jsonPatches").index(n), v);
            }
        }
    }
}

fn validate_json_patch(block: &JsonPatchBlock, path: &FieldPath, v: &mut Violations) {
    use JsonPatchOp::*;
    let moves = matches!(block.op, Move | Copy);
    let sets = matches!(block.op, Add | Replace);
    if moves && block.from.is_none() {
        v.add(
            &path.field("from"),
            "\"from\" must not be empty when \"op\" is one of [\"move\", \"copy\"]",
        );
    }
    if !moves && block.from.is_some() {
        v.add(
            &path.field("from"),
            "\"from\" is allowed only when \"op\" is one of [\"move\", \"copy\"]",
        );
    }
    if sets && block.value.is_none() {
        v.add(
            &path.field("value"),
            "\"value\" must not be empty when \"op\" is one of [\"add\", \"replace\"]",
        );
    }
    if !sets && block.value.is_some() {
        v.add(
            &path.field("value"),
            "\"value\" is allowed only when \"op\" is one of [\"add\", \"replace\"]",
        );
    }
    match block.path.as_deref() {
        None => v.add(&path.field("path"), "must be defined"),
        Some("" | "/") if block.op == Remove => v.add(&path.field("path"), "root path cannot be removed"),
        Some(p) if !p.is_empty() && !p.starts_with('/') => {
            v.add(&path.field("path"), "must be a JSON pointer starting with '/'")
        }
        Some(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::violations;
    use super::*;

    #[test]
    fn modifications() {
        let errs = violations::<MeshProxyPatchSpec>(
            r#"
default:
  appendModifications:
    - {}
    - cluster: {operation: Add, value: "{", match: {name: x}}
    - cluster: {operation: Remove, value: "name: x"}
    - cluster: {operation: Patch}
    - networkFilter: {operation: AddBefore, value: "name: f"}
    - httpFilter:
        operation: Patch
        match: {name: envoy.filters.http.router}
        jsonPatches: [{op: remove, path: /}, {op: add, path: /x}]
"#,
        );
        assert_eq!(
            errs,
            vec![
                "spec.default.appendModifications[0]: exactly one modification can be defined at a time. Currently, 0 modifications are defined",
                "spec.default.appendModifications[1].cluster.match: must not be defined",
                "spec.default.appendModifications[1].cluster.value: native Envoy resource is not valid: did not find expected node content at line 2 column 1, while parsing a flow node",
                "spec.default.appendModifications[2].cluster.value: must not be defined",
                "spec.default.appendModifications[3].cluster: cluster must have exactly one defined: value, jsonPatches",
                "spec.default.appendModifications[4].networkFilter.match.name: must be defined. You need to pick a filter before which this one will be added",
                "spec.default.appendModifications[5].httpFilter.jsonPatches[0].path: root path cannot be removed",
                "spec.default.appendModifications[5].httpFilter.jsonPatches[1].value: \"value\" must not be empty when \"op\" is one of [\"add\", \"replace\"]",
            ]
        );
    }

    #[test]
    fn the_xds_types_a_patch_changes() {
        let spec = |modification: &str| -> MeshProxyPatchSpec {
            serde_yaml::from_str(&format!(
                "default:\n  appendModifications:\n    - {modification}\n"
            ))
            .expect("spec")
        };
        for (modification, types) in [
            ("cluster: {operation: Remove}", vec!["cds"]),
            ("listener: {operation: Remove}", vec!["lds"]),
            ("networkFilter: {operation: Remove}", vec!["lds"]),
            ("httpFilter: {operation: Remove}", vec!["lds"]),
            ("virtualHost: {operation: Remove, match: {}}", vec!["lds", "rds"]),
        ] {
            let spec = spec(modification);
            let changed: Vec<&str> = ["cds", "eds", "lds", "rds", "sds"]
                .into_iter()
                .filter(|t| spec.changes_xds_type(t))
                .collect();
            assert_eq!(changed, types, "{modification}");
        }
    }
}
