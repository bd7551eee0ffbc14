//! `kubectl apply` of kuma.io objects checked as the REST API checks them:
//! the one parser and validator of the model (every violation, with its
//! field path), then the admission module's rules (system-namespace-only
//! kinds, immutable labels), then Kuma's Kubernetes rules (the mesh a
//! resource names must exist; a Mesh with Dataplanes cannot be deleted;
//! DataplaneInsights and the Dataplanes of Pods are kuma-cp's alone).
//! Pure: the facts about the cluster come in as arguments.

use kuma_crds::admission::{Context, Operation, admit};
use kuma_crds::format::parse_value;
use kuma_crds::resource::{Resource, ResourceType, Scope};
use serde_json::Value;

/// Why a write is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The object is not valid: every violation (field, message).
    Invalid(Vec<(String, String)>),
    /// The write is not allowed (message).
    Forbidden(String),
    /// Something it refers to does not exist (message).
    NotFound(String),
}

impl Refusal {
    /// The message kubectl prints.
    pub fn message(&self) -> String {
        match self {
            Refusal::Invalid(v) => v
                .iter()
                .map(|(f, m)| {
                    if f.is_empty() {
                        m.clone()
                    } else {
                        format!("{f}: {m}")
                    }
                })
                .collect::<Vec<_>>()
                .join("; "),
            Refusal::Forbidden(m) | Refusal::NotFound(m) => m.clone(),
        }
    }
}

/// What a write looks like to the validator.
#[derive(Debug, Clone, Copy)]
pub struct Write<'a> {
    /// `CREATE`, `UPDATE` or `DELETE`.
    pub operation: &'a str,
    /// The object written (for DELETE, none).
    pub object: Option<&'a Value>,
    /// The object replaced or deleted.
    pub old_object: Option<&'a Value>,
    /// Who writes.
    pub user: &'a str,
}

/// Where the Mesh an object names stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeshState {
    /// It exists.
    Present,
    /// It exists but is being deleted (its deletion timestamp is set).
    Deleting,
    /// It does not exist.
    Absent,
}

/// Facts about the cluster the validator needs.
#[derive(Debug, Clone, Copy)]
pub struct Facts {
    /// The mesh the object names.
    pub mesh: MeshState,
    /// For a Mesh being deleted, its Dataplanes.
    pub dataplanes_in_mesh: usize,
}

/// Users whose writes are not checked (kuma-cp's own ServiceAccount and
/// the garbage collector), as Kuma's allowed users.
pub fn is_trusted(user: &str, trusted: &[String]) -> bool {
    user == "system:serviceaccount:kube-system:generic-garbage-collector" || trusted.iter().any(|t| t == user)
}

/// Whether an object is a Dataplane made from a Pod (owned by it).
fn owned_by_pod(object: &Value) -> bool {
    object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|refs| {
            refs.iter()
                .any(|r| r.get("kind").and_then(Value::as_str) == Some("Pod"))
        })
}

/// The resource an object holds, or every violation.
pub fn parse(object: &Value) -> Result<Resource, Refusal> {
    parse_value(object.clone()).map_err(|e| {
        Refusal::Invalid(
            e.violations()
                .iter()
                .map(|v| (v.field.clone(), v.message.clone()))
                .collect(),
        )
    })
}

/// The mesh an object names, if its kind lives in a mesh.
pub fn mesh_of(object: &Value) -> Option<String> {
    let r = parse(object).ok()?;
    (r.resource_type().descriptor().scope == Scope::Mesh).then(|| r.meta.mesh_or_default().to_string())
}

/// Admits or refuses a write of a kuma.io object.
pub fn validate(ctx: &Context, write: Write<'_>, facts: Facts, trusted: &[String]) -> Result<(), Refusal> {
    if is_trusted(write.user, trusted) {
        return Ok(());
    }
    let subject = write.object.or(write.old_object);
    let kind = subject
        .and_then(|o| o.get("kind"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    if kind == ResourceType::DataplaneInsight.name() {
        return Err(Refusal::Forbidden(format!(
            "DataplaneInsights are written by the control plane only, not by {:?}",
            write.user
        )));
    }
    if kind == ResourceType::Dataplane.name() && subject.is_some_and(owned_by_pod) {
        return Err(Refusal::Forbidden(format!(
            "this Dataplane is generated from its Pod by the control plane; {:?} cannot change it (change the Pod instead)",
            write.user
        )));
    }
    if write.operation == "DELETE" {
        if kind == ResourceType::Mesh.name() && facts.dataplanes_in_mesh > 0 {
            return Err(Refusal::Forbidden(
                "unable to delete mesh, there are still some dataplanes attached".into(),
            ));
        }
        return Ok(());
    }
    let Some(object) = write.object else {
        return Err(Refusal::Invalid(vec![(
            String::new(),
            "the request holds no object".into(),
        )]));
    };
    let resource = parse(object)?;
    let op = match write.old_object.map(parse) {
        Some(Ok(old)) if write.operation == "UPDATE" => admit(
            ctx,
            Operation::Update {
                old: &old,
                new: &resource,
            },
        ),
        _ => admit(ctx, Operation::Create(&resource)),
    };
    op.map_err(|v| Refusal::Invalid(v.into_iter().map(|v| (v.field, v.message)).collect()))?;
    if resource.resource_type().descriptor().scope == Scope::Mesh {
        let mesh = resource.meta.mesh_or_default();
        match facts.mesh {
            MeshState::Present => {}
            MeshState::Absent => return Err(Refusal::NotFound(format!("meshes.kuma.io {mesh:?} not found"))),
            // A policy created while its mesh is going would outlive it
            // (the garbage collector has already listed what the mesh owns);
            // changes to what it already has stay allowed so that
            // finalizers can run.
            MeshState::Deleting if write.operation == "CREATE" => {
                return Err(Refusal::Forbidden(format!(
                    "mesh {mesh:?} is being deleted: nothing new can be added to it"
                )));
            }
            MeshState::Deleting => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kuma_crds::admission::Environment;
    use serde_json::json;

    fn timeout(idle: &str) -> Value {
        json!({
            "apiVersion": "kuma.io/v1alpha1", "kind": "MeshTimeout",
            "metadata": {"name": "t", "namespace": "kuma-system", "labels": {"kuma.io/mesh": "default"}},
            "spec": {"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": {"kind": "Mesh"}, "default": {"idleTimeout": idle}}]},
        })
    }

    const FACTS: Facts = Facts {
        mesh: MeshState::Present,
        dataplanes_in_mesh: 0,
    };

    fn write<'a>(op: &'a str, object: Option<&'a Value>, user: &'a str) -> Write<'a> {
        Write {
            operation: op,
            object,
            old_object: None,
            user,
        }
    }

    #[test]
    fn invalid_fields_are_named() {
        let ctx = Context::new(Environment::Kubernetes);
        let bad = timeout("ten");
        let refused = validate(&ctx, write("CREATE", Some(&bad), "alice"), FACTS, &[]).unwrap_err();
        let message = refused.message();
        assert!(
            message.starts_with("spec.to[0].default.idleTimeout: "),
            "{message}"
        );
        let good = timeout("10s");
        assert!(validate(&ctx, write("CREATE", Some(&good), "alice"), FACTS, &[]).is_ok());
    }

    #[test]
    fn the_mesh_must_exist() {
        let ctx = Context::new(Environment::Kubernetes);
        let good = timeout("10s");
        let facts = Facts {
            mesh: MeshState::Absent,
            ..FACTS
        };
        let refused = validate(&ctx, write("CREATE", Some(&good), "alice"), facts, &[]).unwrap_err();
        assert_eq!(refused.message(), "meshes.kuma.io \"default\" not found");
    }

    #[test]
    fn a_mesh_being_deleted_takes_nothing_new() {
        let ctx = Context::new(Environment::Kubernetes);
        let policy = timeout("10s");
        let facts = Facts {
            mesh: MeshState::Deleting,
            ..FACTS
        };
        let refused = validate(&ctx, write("CREATE", Some(&policy), "alice"), facts, &[]).unwrap_err();
        assert_eq!(
            refused.message(),
            "mesh \"default\" is being deleted: nothing new can be added to it"
        );
        let update = Write {
            old_object: Some(&policy),
            ..write("UPDATE", Some(&policy), "alice")
        };
        assert!(
            validate(&ctx, update, facts, &[]).is_ok(),
            "an existing policy may still change"
        );
        assert!(validate(&ctx, write("DELETE", None, "alice"), facts, &[]).is_ok());
    }

    #[test]
    fn insights_and_pod_dataplanes_are_kuma_cps() {
        let ctx = Context::new(Environment::Kubernetes);
        let insight = json!({"apiVersion": "kuma.io/v1alpha1", "kind": "DataplaneInsight", "metadata": {"name": "x", "namespace": "a"}, "mesh": "default", "status": {}});
        let sa = "system:serviceaccount:kuma-system:kuma-control-plane".to_string();
        assert!(
            validate(
                &ctx,
                write("CREATE", Some(&insight), "alice"),
                FACTS,
                std::slice::from_ref(&sa)
            )
            .is_err()
        );
        assert!(
            validate(
                &ctx,
                write("CREATE", Some(&insight), &sa),
                FACTS,
                std::slice::from_ref(&sa)
            )
            .is_ok()
        );
        let dp = json!({"apiVersion": "kuma.io/v1alpha1", "kind": "Dataplane",
            "metadata": {"name": "p", "namespace": "a", "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": "p", "uid": "u"}]},
            "mesh": "default", "spec": {"networking": {"address": "10.0.0.1", "inbound": [{"port": 80, "tags": {"kuma.io/service": "s"}}]}}});
        let refused = validate(&ctx, write("UPDATE", Some(&dp), "alice"), FACTS, &[sa]).unwrap_err();
        assert!(matches!(refused, Refusal::Forbidden(_)));
    }

    #[test]
    fn a_mesh_with_dataplanes_stays() {
        let ctx = Context::new(Environment::Kubernetes);
        let mesh = json!({"apiVersion": "kuma.io/v1alpha1", "kind": "Mesh", "metadata": {"name": "default"}});
        let w = Write {
            operation: "DELETE",
            object: None,
            old_object: Some(&mesh),
            user: "alice",
        };
        let facts = Facts {
            dataplanes_in_mesh: 2,
            ..FACTS
        };
        assert!(validate(&ctx, w, facts, &[]).is_err());
        assert!(validate(&ctx, w, FACTS, &[]).is_ok());
    }
}
