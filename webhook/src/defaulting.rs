//! The mutating kuma.io webhooks, as pure functions returning the object
//! to store: `/default-kuma-io-v1alpha1-mesh` adds the labels Kuma computes
//! on every write (the admission module's), and
//! `/owner-reference-kuma-io-v1alpha1` makes mesh-scoped objects owned by
//! their Mesh, so deleting the Mesh with kubectl deletes what is in it.

use kuma_crds::admission::{Context, computed};
use kuma_crds::resource::{ResourceType, Scope};
use serde_json::{Value, json};

use crate::validation::{Refusal, parse};

/// `object` with Kuma's computed labels added (the user's kept).
pub fn with_computed_labels(ctx: &Context, object: &Value) -> Result<Value, Refusal> {
    let resource = parse(object)?;
    let labels = computed(ctx, resource).meta.labels;
    let mut out = object.clone();
    if let Some(meta) = out.get_mut("metadata").and_then(Value::as_object_mut) {
        let existing = meta.entry("labels").or_insert_with(|| json!({}));
        if let Some(existing) = existing.as_object_mut() {
            for (k, v) in labels {
                existing.entry(k).or_insert(Value::String(v));
            }
        }
    }
    Ok(out)
}

/// The kinds that get their Mesh as owner (not the Mesh itself, not
/// Dataplanes — their owner is their Pod — nor MeshServices — theirs is the
/// Service — nor insights, owned by their Dataplane).
pub fn owned_by_mesh(kind: &str) -> bool {
    ResourceType::ALL.iter().any(|t| {
        t.name() == kind
            && t.descriptor().scope == Scope::Mesh
            && t.descriptor().has_crd
            && !matches!(
                t,
                ResourceType::Dataplane | ResourceType::DataplaneInsight | ResourceType::MeshService
            )
    })
}

/// `object` with an owner reference to the Mesh `mesh` (uid `mesh_uid`),
/// unless it has one.
pub fn with_mesh_owner(object: &Value, mesh: &str, mesh_uid: &str) -> Value {
    let mut out = object.clone();
    let owner = json!({"apiVersion": "kuma.io/v1alpha1", "kind": "Mesh", "name": mesh, "uid": mesh_uid});
    if let Some(meta) = out.get_mut("metadata").and_then(Value::as_object_mut) {
        let refs = meta.entry("ownerReferences").or_insert_with(|| json!([]));
        if let Some(refs) = refs.as_array_mut()
            && !refs
                .iter()
                .any(|r| r.get("kind") == Some(&json!("Mesh")) && r.get("name") == Some(&json!(mesh)))
        {
            refs.push(owner);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kuma_crds::admission::Environment;

    #[test]
    fn labels_and_owner() {
        let ctx = Context::new(Environment::Kubernetes);
        let object = json!({
            "apiVersion": "kuma.io/v1alpha1", "kind": "MeshTimeout",
            "metadata": {"name": "t", "namespace": "kuma-system", "labels": {"team": "a"}},
            "spec": {"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": {"kind": "Mesh"}, "default": {"idleTimeout": "10s"}}]},
        });
        let labelled = with_computed_labels(&ctx, &object).unwrap();
        let labels = &labelled["metadata"]["labels"];
        assert_eq!(labels["kuma.io/mesh"], "default");
        assert_eq!(labels["k8s.kuma.io/namespace"], "kuma-system");
        assert_eq!(labels["kuma.io/env"], "kubernetes");
        assert_eq!(labels["team"], "a");
        assert!(owned_by_mesh("MeshTimeout"));
        assert!(!owned_by_mesh("Dataplane") && !owned_by_mesh("Mesh"));
        let owned = with_mesh_owner(&labelled, "default", "uid-1");
        assert_eq!(owned["metadata"]["ownerReferences"][0]["uid"], "uid-1");
        assert_eq!(with_mesh_owner(&owned, "default", "uid-1"), owned, "idempotent");
    }
}
