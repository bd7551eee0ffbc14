//! Structural checks of a JSON document against the OpenAPI v3 schema that is
//! also published in the CRDs.
//!
//! Kubernetes checks a custom resource against its CRD schema before anything
//! else; running the same schema over Universal documents makes both modes
//! reject the same things. Unlike a deserializer, which stops at the first
//! problem, this walk reports every unknown field, wrong type and value outside
//! an enum of the document at once.

use serde_json::Value;

use super::{FieldPath, Violations};

/// Checks `value` against `schema`, appending every structural problem found.
pub fn check(value: &Value, schema: &Value, path: &FieldPath, violations: &mut Violations) {
    // An explicit null is what an omitted optional field deserializes to.
    if value.is_null() {
        return;
    }
    let Some(schema) = schema.as_object() else { return };

    if schema.get("x-kubernetes-int-or-string").and_then(Value::as_bool) == Some(true) {
        if !(value.is_number() || value.is_string()) {
            violations.add(path, "must be an integer or a string");
        }
        return;
    }

    for key in ["anyOf", "oneOf"] {
        if let Some(Value::Array(branches)) = schema.get(key)
            && !branches.is_empty()
            && !matches_any(value, branches, path)
        {
            // Report the branch that got furthest: the one with fewest problems.
            let best = branches
                .iter()
                .map(|b| {
                    let mut v = Violations::new();
                    check(value, b, path, &mut v);
                    v
                })
                .min_by_key(|v| v.as_slice().len());
            if let Some(best) = best {
                violations.extend(best);
            }
            return;
        }
    }

    let ty = schema.get("type").and_then(Value::as_str);
    match ty {
        Some("object") => check_object(value, schema, path, violations),
        Some("array") => {
            let Some(items) = value.as_array() else {
                violations.add(path, "must be a list");
                return;
            };
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check(item, item_schema, &path.index(i), violations);
                }
            }
        }
        Some("string") => match value.as_str() {
            Some(s) => check_enum(value, s, schema, path, violations),
            None => violations.add(path, "must be a string"),
        },
        Some("integer") => {
            if value.as_i64().is_none() && value.as_u64().is_none() {
                violations.add(path, "must be an integer");
                return;
            }
            check_range(value, schema, path, violations);
        }
        Some("number") => {
            if !value.is_number() {
                violations.add(path, "must be a number");
                return;
            }
            check_range(value, schema, path, violations);
        }
        Some("boolean") => {
            if !value.is_boolean() {
                violations.add(path, "must be true or false");
            }
        }
        _ => {
            if schema.contains_key("properties") {
                check_object(value, schema, path, violations);
            }
        }
    }
}

/// Removes the fields [`check`] reports as unknown, so that the rest of a
/// document can still be checked semantically (and every problem reported
/// at once).
pub fn strip_unknown(value: &mut Value, schema: &Value) {
    let Some(schema) = schema.as_object() else { return };
    if schema.contains_key("anyOf") || schema.contains_key("oneOf") {
        return;
    }
    match value {
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for item in items {
                    strip_unknown(item, item_schema);
                }
            }
        }
        Value::Object(object) => {
            let preserve = schema
                .get("x-kubernetes-preserve-unknown-fields")
                .and_then(Value::as_bool)
                == Some(true);
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            if properties.is_none() && additional.is_none() {
                return;
            }
            object.retain(|k, _| {
                preserve
                    || properties.is_some_and(|p| p.contains_key(k))
                    || additional.is_some_and(|a| a.is_object() || a.as_bool() == Some(true))
            });
            for (k, v) in object.iter_mut() {
                match properties.and_then(|p| p.get(k)) {
                    Some(field_schema) => strip_unknown(v, field_schema),
                    None => {
                        if let Some(extra) = additional.filter(|a| a.is_object()) {
                            strip_unknown(v, extra);
                        }
                    }
                }
            }
        }
        _ => {}
    }
}

fn matches_any(value: &Value, branches: &[Value], path: &FieldPath) -> bool {
    branches.iter().any(|b| {
        let mut v = Violations::new();
        check(value, b, path, &mut v);
        v.is_empty()
    })
}

fn check_object(
    value: &Value,
    schema: &serde_json::Map<String, Value>,
    path: &FieldPath,
    violations: &mut Violations,
) {
    let Some(object) = value.as_object() else {
        violations.add(path, "must be an object");
        return;
    };
    let preserve_unknown = schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true);
    let properties = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties");
    for (key, field_value) in object {
        let field_path = if additional.is_some_and(Value::is_object) {
            path.key(key)
        } else {
            path.field(key)
        };
        if let Some(field_schema) = properties.and_then(|p| p.get(key)) {
            check(field_value, field_schema, &path.field(key), violations);
        } else if let Some(extra) = additional.filter(|a| a.is_object()) {
            check(field_value, extra, &field_path, violations);
        } else if !preserve_unknown && additional.and_then(Value::as_bool) != Some(true) {
            let known: Vec<&str> = properties
                .map(|p| p.keys().map(String::as_str).collect())
                .unwrap_or_default();
            violations.add(&path.field(key), unknown_field_message(key, &known));
        }
    }
    if let Some(Value::Array(required)) = schema.get("required") {
        for name in required.iter().filter_map(Value::as_str) {
            if object.get(name).is_none_or(Value::is_null) {
                violations.add(&path.field(name), "must be set");
            }
        }
    }
}

fn check_enum(
    value: &Value,
    text: &str,
    schema: &serde_json::Map<String, Value>,
    path: &FieldPath,
    violations: &mut Violations,
) {
    if let Some(Value::Array(allowed)) = schema.get("enum")
        && !allowed.contains(value)
    {
        let names: Vec<&str> = allowed.iter().filter_map(Value::as_str).collect();
        let shown = if text.is_empty() {
            "\"\"".to_string()
        } else {
            format!("{text:?}")
        };
        violations.add(path, format!("{shown} is not one of: {}", names.join(", ")));
    }
}

fn check_range(
    value: &Value,
    schema: &serde_json::Map<String, Value>,
    path: &FieldPath,
    violations: &mut Violations,
) {
    let Some(n) = value.as_f64() else { return };
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
        && n < min
    {
        violations.add(path, format!("must be greater than or equal to {min}"));
        return;
    }
    if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
        && n > max
    {
        violations.add(path, format!("must be less than or equal to {max}"));
    }
}

/// `unknown field`, with the closest known name when there is a plausible one.
fn unknown_field_message(name: &str, known: &[&str]) -> String {
    let closest = known
        .iter()
        .map(|k| {
            (
                edit_distance(&name.to_ascii_lowercase(), &k.to_ascii_lowercase()),
                *k,
            )
        })
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min();
    match closest {
        Some((_, k)) => format!("unknown field (did you mean {k:?}?)"),
        None if known.is_empty() => "unknown field".to_string(),
        None => format!("unknown field (allowed: {})", known.join(", ")),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(value: Value, schema: Value) -> Vec<String> {
        let mut v = Violations::new();
        check(&value, &schema, &FieldPath::new("spec"), &mut v);
        v.into_vec().into_iter().map(|v| v.to_string()).collect()
    }

    #[test]
    fn reports_every_problem() {
        let schema = json!({
            "type": "object",
            "properties": {
                "idleTimeout": {"type": "string"},
                "mode": {"type": "string", "enum": ["Strict", "Permissive"]},
                "ports": {"type": "array", "items": {"type": "integer", "minimum": 0.0}},
                "tags": {"type": "object", "additionalProperties": {"type": "string"}},
            }
        });
        let errors = run(
            json!({"idleTimeot": "1s", "mode": "strict", "ports": [1, "x", -1], "tags": {"a": 1}}),
            schema,
        );
        assert_eq!(
            errors,
            vec![
                "spec.idleTimeot: unknown field (did you mean \"idleTimeout\"?)",
                "spec.mode: \"strict\" is not one of: Strict, Permissive",
                "spec.ports[1]: must be an integer",
                "spec.ports[2]: must be greater than or equal to 0",
                "spec.tags[\"a\"]: must be a string",
            ]
        );
    }

    #[test]
    fn preserve_unknown_and_int_or_string() {
        let schema = json!({
            "type": "object",
            "properties": {
                "any": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "pct": {"x-kubernetes-int-or-string": true},
            }
        });
        assert!(run(json!({"any": {"x": [1]}, "pct": "50.5"}), schema.clone()).is_empty());
        assert_eq!(
            run(json!({"pct": [1]}), schema),
            vec!["spec.pct: must be an integer or a string"]
        );
    }
}
