//! The shape every targetRef policy shares, read from its spec: the
//! top-level target and its `to`, `from`, `rules` and `default` entries.

use serde_json::{Value, json};

use crate::common::{RuleMatch, TargetRef};
use crate::resource::{ResourceType, Spec};

/// One `to[]`/`from[]` entry: a target and its configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct TargetEntry {
    /// The destination or client target.
    pub target: TargetRef,
    /// The configuration (`default`, or a route's rules).
    pub conf: Value,
}

/// One `rules[]` entry: optional client matches and a configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleEntry {
    /// Client matches; empty means every client.
    pub matches: Vec<RuleMatch>,
    /// The configuration.
    pub conf: Value,
}

/// A policy's entries, independent of its type.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyView {
    /// The top-level target (`{kind: Mesh}` when omitted).
    pub top: TargetRef,
    /// `to[]` entries.
    pub to: Vec<TargetEntry>,
    /// `from[]` entries.
    pub from: Vec<TargetEntry>,
    /// `rules[]` entries.
    pub rules: Vec<RuleEntry>,
    /// The single `default`.
    pub default: Option<Value>,
}

impl PolicyView {
    /// The view of a policy spec; `None` for non-policy resources.
    pub fn of(spec: &Spec) -> Option<PolicyView> {
        let rt = spec.resource_type();
        if !rt.is_policy() {
            return None;
        }
        let value = spec.to_value();
        let top = value
            .get("targetRef")
            .and_then(|t| serde_json::from_value(t.clone()).ok())
            .unwrap_or_else(TargetRef::mesh);
        let list = |key: &str| {
            value
                .get(key)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        let target_of = |item: &Value| -> TargetRef {
            item.get("targetRef")
                .and_then(|t| serde_json::from_value(t.clone()).ok())
                .unwrap_or_else(TargetRef::mesh)
        };
        let to = list("to")
            .iter()
            .map(|item| {
                let conf = match rt {
                    ResourceType::MeshHTTPRoute => {
                        // Kuma merges a route's rules in reverse then reverses
                        // the result; `merge_routes` does the equivalent directly.
                        let mut c = serde_json::Map::new();
                        if let Some(r) = item.get("rules") {
                            c.insert("rules".into(), r.clone());
                        }
                        if let Some(h) = item.get("hostnames") {
                            c.insert("hostnames".into(), h.clone());
                        }
                        Value::Object(c)
                    }
                    ResourceType::MeshTCPRoute => match item.get("rules").and_then(|r| r.get(0)) {
                        Some(rule) => rule.get("default").cloned().unwrap_or(Value::Null),
                        None => {
                            let mut backend =
                                item.get("targetRef").cloned().unwrap_or(json!({"kind": "Mesh"}));
                            if let Some(b) = backend.as_object_mut() {
                                b.insert("weight".into(), json!(1));
                            }
                            json!({"backendRefs": [backend]})
                        }
                    },
                    _ => item.get("default").cloned().unwrap_or(Value::Null),
                };
                TargetEntry {
                    target: target_of(item),
                    conf,
                }
            })
            .collect();
        let from = list("from")
            .iter()
            .map(|item| TargetEntry {
                target: target_of(item),
                conf: item.get("default").cloned().unwrap_or(Value::Null),
            })
            .collect();
        let rules = list("rules")
            .iter()
            .map(|item| RuleEntry {
                matches: item
                    .get("matches")
                    .and_then(|m| serde_json::from_value(m.clone()).ok())
                    .unwrap_or_default(),
                conf: item.get("default").cloned().unwrap_or(Value::Null),
            })
            .collect();
        let default = if rt.descriptor().single_item {
            value.get("default").cloned()
        } else {
            None
        };
        Some(PolicyView {
            top,
            to,
            from,
            rules,
            default,
        })
    }
}
