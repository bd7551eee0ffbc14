//! Merging policy configurations, remembering who set what.
//!
//! Confs are folded from least to most specific with JSON merge patch
//! (RFC 7396): objects merge key by key, scalars and lists are replaced,
//! absent fields leave earlier values alone. Lists whose field name starts
//! with `append` are concatenated instead. MeshHTTPRoute confs merge their
//! `rules` per `matches`, see [`merge_routes`].
//!
//! Every leaf of the result records which contribution set it (as a JSON
//! pointer → contribution index), which is what lets `inspect` explain
//! precedence instead of leaving users to guess.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::resource::ResourceType;

/// Where a piece of configuration came from.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct Source {
    /// The policy type.
    #[serde(rename = "type")]
    pub resource_type: String,
    /// The policy's mesh.
    pub mesh: String,
    /// The policy's core name.
    pub name: String,
    /// The entry inside the policy, e.g. `to[1]`, `from[0]`, `rules[2]`, `default`.
    pub entry: String,
}

impl Source {
    /// A source for `entry` of a policy.
    pub fn new(resource_type: ResourceType, mesh: &str, name: &str, entry: impl Into<String>) -> Self {
        Source {
            resource_type: resource_type.name().to_string(),
            mesh: mesh.to_string(),
            name: name.to_string(),
            entry: entry.into(),
        }
    }
}

/// A merged configuration and the provenance of each of its leaves.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Merged {
    /// The merged configuration as JSON.
    pub value: Value,
    /// Every contribution, from least to most specific.
    pub sources: Vec<Source>,
    /// For each leaf (JSON pointer), the index in `sources` of its setter.
    pub fields: BTreeMap<String, usize>,
}

impl Merged {
    /// The configuration as its typed form.
    pub fn conf<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_value(self.value.clone())
    }

    /// The contribution that set the leaf at `pointer` (e.g. `/http/requestTimeout`).
    pub fn source_of(&self, pointer: &str) -> Option<&Source> {
        self.fields.get(pointer).map(|i| &self.sources[*i])
    }

    /// Each leaf with the contribution that set it, in pointer order.
    pub fn explain(&self) -> Vec<(String, &Source)> {
        self.fields
            .iter()
            .map(|(p, i)| (p.clone(), &self.sources[*i]))
            .collect()
    }
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn forget_below(fields: &mut BTreeMap<String, usize>, pointer: &str) {
    let prefix = format!("{pointer}/");
    fields.retain(|p, _| p != pointer && !p.starts_with(&prefix));
}

/// Records every leaf of `value` below `pointer` as set by `source`.
fn record_leaves(value: &Value, pointer: &str, source: usize, fields: &mut BTreeMap<String, usize>) {
    match value {
        Value::Object(m) if !m.is_empty() => {
            for (k, v) in m {
                record_leaves(v, &format!("{pointer}/{}", escape(k)), source, fields);
            }
        }
        _ => {
            fields.insert(pointer.to_string(), source);
        }
    }
}

fn patch(
    target: &mut Value,
    with: &Value,
    pointer: &str,
    source: usize,
    fields: &mut BTreeMap<String, usize>,
) {
    let Value::Object(p) = with else {
        *target = with.clone();
        forget_below(fields, pointer);
        record_leaves(with, pointer, source, fields);
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
        forget_below(fields, pointer);
    }
    let Value::Object(t) = target else { return };
    for (key, value) in p {
        let child = format!("{pointer}/{}", escape(key));
        if value.is_null() {
            t.remove(key);
            forget_below(fields, &child);
        } else if key.starts_with("append") && value.is_array() {
            let list = t.entry(key.clone()).or_insert_with(|| Value::Array(Vec::new()));
            if !list.is_array() {
                *list = Value::Array(Vec::new());
            }
            if let Value::Array(items) = list {
                for item in value.as_array().into_iter().flatten() {
                    record_leaves(item, &format!("{child}/{}", items.len()), source, fields);
                    items.push(item.clone());
                }
            }
        } else {
            patch(
                t.entry(key.clone()).or_insert(Value::Null),
                value,
                &child,
                source,
                fields,
            );
        }
    }
}

/// Merges confs from least to most specific.
pub fn merge(contributions: Vec<(Source, Value)>) -> Merged {
    let mut merged = Merged {
        value: Value::Object(Map::new()),
        ..Default::default()
    };
    for (i, (source, conf)) in contributions.into_iter().enumerate() {
        merged.sources.push(source);
        if !conf.is_null() {
            patch(&mut merged.value, &conf, "", i, &mut merged.fields);
        }
    }
    merged
}

/// Merges MeshHTTPRoute confs (`{rules, hostnames}`) from least to most
/// specific: the most specific policy's rules come first in their written
/// order, followed by less specific ones; rules with equal `matches` become
/// one rule, at the position of their most specific occurrence, whose
/// `default` is the merge of theirs (most specific wins).
pub fn merge_routes(contributions: Vec<(Source, Value)>) -> Merged {
    struct Group {
        matches: Value,
        defaults: Vec<(usize, Value)>,
    }
    let mut groups: Vec<Group> = Vec::new();
    let mut merged = Merged::default();
    let mut hostnames: Option<(usize, Value)> = None;
    // Walk from most to least specific so first-seen is the winning position.
    let indexed: Vec<(usize, Source, Value)> = contributions
        .into_iter()
        .enumerate()
        .map(|(i, (s, v))| (i, s, v))
        .collect();
    for (i, source, _) in &indexed {
        debug_assert_eq!(*i, merged.sources.len());
        merged.sources.push(source.clone());
    }
    for (i, _, conf) in indexed.iter().rev() {
        if let Some(h) = conf.get("hostnames").filter(|h| !h.is_null())
            && hostnames.is_none()
        {
            hostnames = Some((*i, h.clone()));
        }
        for rule in conf.get("rules").and_then(Value::as_array).into_iter().flatten() {
            let matches = rule.get("matches").cloned().unwrap_or(Value::Null);
            let default = rule.get("default").cloned().unwrap_or(Value::Null);
            match groups.iter_mut().find(|g| g.matches == matches) {
                Some(g) => g.defaults.push((*i, default)),
                None => groups.push(Group {
                    matches,
                    defaults: vec![(*i, default)],
                }),
            }
        }
    }
    let mut rules = Vec::new();
    for (r, group) in groups.into_iter().enumerate() {
        let mut default = Value::Object(Map::new());
        let mut fields = BTreeMap::new();
        // Defaults were collected most specific first; fold least specific first.
        for (i, d) in group.defaults.iter().rev() {
            if !d.is_null() {
                patch(&mut default, d, "", *i, &mut fields);
            }
        }
        let first = group.defaults.first().map(|(i, _)| *i).unwrap_or(0);
        record_leaves(
            &group.matches,
            &format!("/rules/{r}/matches"),
            first,
            &mut merged.fields,
        );
        for (p, i) in fields {
            merged.fields.insert(format!("/rules/{r}/default{p}"), i);
        }
        let mut rule = Map::new();
        rule.insert("matches".into(), group.matches);
        rule.insert("default".into(), default);
        rules.push(Value::Object(rule));
    }
    let mut value = Map::new();
    if !rules.is_empty() {
        value.insert("rules".into(), Value::Array(rules));
    }
    if let Some((i, h)) = hostnames {
        record_leaves(&h, "/hostnames", i, &mut merged.fields);
        value.insert("hostnames".into(), h);
    }
    merged.value = Value::Object(value);
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn src(name: &str) -> Source {
        Source::new(ResourceType::MeshTimeout, "default", name, "to[0]")
    }

    #[test]
    fn merge_patch_with_provenance() {
        let m = merge(vec![
            (
                src("a"),
                json!({"idleTimeout": "20s", "http": {"requestTimeout": "10s", "streamIdleTimeout": "1m"}}),
            ),
            (src("b"), json!({"http": {"requestTimeout": "15s"}})),
        ]);
        assert_eq!(
            m.value,
            json!({"idleTimeout": "20s", "http": {"requestTimeout": "15s", "streamIdleTimeout": "1m"}})
        );
        assert_eq!(m.source_of("/http/requestTimeout").unwrap().name, "b");
        assert_eq!(m.source_of("/http/streamIdleTimeout").unwrap().name, "a");
        assert_eq!(m.source_of("/idleTimeout").unwrap().name, "a");
    }

    #[test]
    fn lists_replace_and_append_lists_concatenate() {
        let m = merge(vec![
            (
                src("a"),
                json!({"backends": [1, 2], "appendModifications": [{"x": 1}]}),
            ),
            (
                src("b"),
                json!({"backends": [3], "appendModifications": [{"x": 2}]}),
            ),
        ]);
        assert_eq!(
            m.value,
            json!({"backends": [3], "appendModifications": [{"x": 1}, {"x": 2}]})
        );
        assert_eq!(m.source_of("/backends").unwrap().name, "b");
        assert_eq!(m.source_of("/appendModifications/0/x").unwrap().name, "a");
        assert_eq!(m.source_of("/appendModifications/1/x").unwrap().name, "b");
    }

    #[test]
    fn null_removes() {
        let m = merge(vec![
            (src("a"), json!({"x": {"y": 1}})),
            (src("b"), json!({"x": null})),
        ]);
        assert_eq!(m.value, json!({}));
        assert!(m.fields.is_empty());
    }

    #[test]
    fn route_rules_merge_by_matches() {
        let a1 = json!({"matches": [{"path": {"type": "PathPrefix", "value": "/a"}}], "default": {"backendRefs": [{"kind": "MeshService", "name": "v1"}], "filters": [1]}});
        let b1 = json!({"matches": [{"path": {"type": "PathPrefix", "value": "/b"}}], "default": {}});
        let c2 = json!({"matches": [{"path": {"type": "PathPrefix", "value": "/c"}}], "default": {}});
        let a2 = json!({"matches": [{"path": {"type": "PathPrefix", "value": "/a"}}], "default": {"backendRefs": [{"kind": "MeshService", "name": "v2"}]}});
        let m = merge_routes(vec![
            (src("p1"), json!({"rules": [a1, b1]})),
            (src("p2"), json!({"rules": [c2, a2]})),
        ]);
        let paths: Vec<&str> = m.value["rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["matches"][0]["path"]["value"].as_str().unwrap())
            .collect();
        assert_eq!(paths, vec!["/c", "/a", "/b"]);
        assert_eq!(
            m.value["rules"][1]["default"],
            json!({"backendRefs": [{"kind": "MeshService", "name": "v2"}], "filters": [1]})
        );
        assert_eq!(m.source_of("/rules/1/default/backendRefs").unwrap().name, "p2");
        assert_eq!(m.source_of("/rules/1/default/filters").unwrap().name, "p1");
    }
}
