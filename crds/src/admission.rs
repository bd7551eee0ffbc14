//! What every write path decides before a resource is stored — the REST
//! API, the Kubernetes validating webhook, kuma-dp's self-registration and
//! the defaults a control plane creates — written once, as a pure function
//! of the operation: no HTTP, no store.
//!
//! [`admit`] turns an operation (create, update or delete; the old and new
//! resource; the environment, zone and system namespace) into the resource
//! to store or the list of violations:
//!
//! - the labels Kuma computes on every write: `kuma.io/mesh`; for kinds a
//!   zone provides (policies, Dataplanes, MeshServices),
//!   `kuma.io/origin: zone`, `kuma.io/zone` and `kuma.io/env`; on
//!   Kubernetes `k8s.kuma.io/namespace` and, for policies, the
//!   `kuma.io/policy-role` their namespace gives them; `kuma.io/proxy-type`
//!   for Dataplanes;
//! - on Kubernetes, mesh-scoped resources without a namespace belong to
//!   the system namespace, and the kinds Kuma allows only there are
//!   refused elsewhere;
//! - labels that may not change once set (`kuma.io/origin`, `kuma.io/zone`,
//!   `kuma.io/display-name`);
//! - a Mesh with Dataplanes still attached cannot be deleted.

use serde::{Deserialize, Serialize};

use crate::policies::PolicyRole;
use crate::resource::{
    DISPLAY_NAME_LABEL, MESH_LABEL, NAMESPACE_LABEL, ORIGIN_LABEL, POLICY_ROLE_LABEL, Resource, ResourceType,
    Scope, Spec, ZONE_LABEL,
};
use crate::validation::Violation;

/// The label naming the environment a resource was written in.
pub const ENV_LABEL: &str = "kuma.io/env";
/// The label naming a Dataplane's proxy type.
pub const PROXY_TYPE_LABEL: &str = "kuma.io/proxy-type";
/// The zone of a control plane that is not part of a multizone deployment.
pub const DEFAULT_ZONE: &str = "default";
/// The namespace the control plane runs in on Kubernetes.
pub const DEFAULT_SYSTEM_NAMESPACE: &str = "kuma-system";

/// Kuma's deployment environments (`environment`, `KUMA_ENVIRONMENT`).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    /// VMs and bare metal.
    #[default]
    Universal,
    /// Kubernetes.
    Kubernetes,
}

impl Environment {
    /// The value of the `kuma.io/env` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Universal => "universal",
            Environment::Kubernetes => "kubernetes",
        }
    }
}

/// Where the control plane runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Context {
    /// Universal or Kubernetes.
    pub environment: Environment,
    /// The zone (`default` outside multizone).
    pub zone: String,
    /// The control plane's namespace on Kubernetes.
    pub system_namespace: String,
}

impl Context {
    /// A context with Kuma's defaults for `environment`.
    pub fn new(environment: Environment) -> Self {
        Context {
            environment,
            zone: DEFAULT_ZONE.into(),
            system_namespace: DEFAULT_SYSTEM_NAMESPACE.into(),
        }
    }
}

/// A write to admit.
#[derive(Clone, Copy, Debug)]
pub enum Operation<'a> {
    /// A new resource.
    Create(&'a Resource),
    /// A replacement of `old` by `new`.
    Update {
        /// What is stored.
        old: &'a Resource,
        /// What replaces it.
        new: &'a Resource,
    },
    /// A deletion; for a Mesh, how many Dataplanes it still has.
    Delete {
        /// What is stored.
        old: &'a Resource,
        /// The Dataplanes in the mesh being deleted (0 for other kinds).
        dataplanes_in_mesh: usize,
    },
}

/// The resource to store (`None` for a deletion), or every reason not to.
pub fn admit(ctx: &Context, op: Operation<'_>) -> Result<Option<Resource>, Vec<Violation>> {
    match op {
        Operation::Create(new) => {
            let stored = computed(ctx, new.clone());
            check_namespace(ctx, &stored)?;
            Ok(Some(stored))
        }
        Operation::Update { old, new } => {
            let stored = computed(ctx, new.clone());
            check_namespace(ctx, &stored)?;
            let immutable = immutable_violations(old, &stored);
            if !immutable.is_empty() {
                return Err(immutable);
            }
            Ok(Some(stored))
        }
        Operation::Delete {
            old,
            dataplanes_in_mesh,
        } => {
            if old.resource_type() == ResourceType::Mesh && dataplanes_in_mesh > 0 {
                return Err(vec![Violation {
                    field: "mesh".into(),
                    message: "unable to delete mesh, there are still some dataplanes attached".into(),
                }]);
            }
            Ok(None)
        }
    }
}

/// Whether a kind is "provided by a zone" (gets origin and zone labels).
fn zone_provided(t: ResourceType) -> bool {
    t.is_policy()
        || matches!(
            t,
            ResourceType::Dataplane | ResourceType::MeshService | ResourceType::MeshExternalService
        )
}

/// Kinds Kuma accepts on Kubernetes only in the system namespace.
pub fn system_namespace_only(t: ResourceType) -> bool {
    matches!(t, ResourceType::MeshExternalService)
}

/// Whether a kind is a namespaced kuma.io object on Kubernetes (Secrets
/// are `v1` Secrets in the system namespace, named without it).
fn namespaced(t: ResourceType) -> bool {
    t.descriptor().scope == Scope::Mesh && t.descriptor().has_crd
}

/// `r` with Kuma's computed labels (the user's kept where not computed)
/// and, on Kubernetes, its namespace.
pub fn computed(ctx: &Context, mut r: Resource) -> Resource {
    let t = r.resource_type();
    if ctx.environment == Environment::Kubernetes && namespaced(t) && r.meta.namespace.is_none() {
        r.meta.namespace = Some(ctx.system_namespace.clone());
    }
    let namespace = r.meta.namespace.clone();
    let labels = &mut r.meta.labels;
    if t.descriptor().scope == Scope::Mesh
        && let Some(mesh) = &r.meta.mesh
    {
        labels.insert(MESH_LABEL.into(), mesh.clone());
    }
    if zone_provided(t) {
        labels.entry(ORIGIN_LABEL.into()).or_insert_with(|| "zone".into());
        labels
            .entry(ZONE_LABEL.into())
            .or_insert_with(|| ctx.zone.clone());
        labels.insert(ENV_LABEL.into(), ctx.environment.as_str().into());
    }
    if ctx.environment == Environment::Kubernetes
        && namespaced(t)
        && let Some(ns) = &namespace
    {
        labels.insert(NAMESPACE_LABEL.into(), ns.clone());
        if t.is_policy() && !labels.contains_key(POLICY_ROLE_LABEL) && *ns == ctx.system_namespace {
            labels.insert(POLICY_ROLE_LABEL.into(), PolicyRole::System.as_str().into());
        }
    }
    // Kuma tags every inbound of a Universal Dataplane with its zone, so
    // endpoints carry it to Envoy (locality, `x-kuma-tags`, access logs);
    // on Kubernetes the pod converter writes the Dataplane whole. A
    // tag-free inbound stays tag-free: a zone tag alone would make it a
    // tagged inbound without `kuma.io/service`, which does not validate.
    if ctx.environment == Environment::Universal
        && let Spec::Dataplane(dp) = &mut r.spec
        && let Some(inbounds) = dp.networking.as_mut().and_then(|n| n.inbound.as_mut())
    {
        for tags in inbounds.iter_mut().filter_map(|i| i.tags.as_mut()) {
            if !tags.is_empty() {
                tags.entry(crate::dataplane::ZONE_TAG.into())
                    .or_insert_with(|| ctx.zone.clone());
            }
        }
    }
    if let Spec::Dataplane(dp) = &r.spec {
        let kind = if dp.networking().gateway.is_some() {
            "gateway"
        } else {
            "sidecar"
        };
        labels.insert(PROXY_TYPE_LABEL.into(), kind.into());
    }
    r
}

fn check_namespace(ctx: &Context, r: &Resource) -> Result<(), Vec<Violation>> {
    let t = r.resource_type();
    if ctx.environment == Environment::Kubernetes
        && system_namespace_only(t)
        && r.meta.namespace.as_deref() != Some(ctx.system_namespace.as_str())
    {
        return Err(vec![Violation {
            field: "metadata.namespace".into(),
            message: format!(
                "{t} can only be created in the system namespace {:?}",
                ctx.system_namespace
            ),
        }]);
    }
    Ok(())
}

/// Labels users may not change once set, with why.
pub fn immutable_violations(old: &Resource, new: &Resource) -> Vec<Violation> {
    let mut out = Vec::new();
    for key in [ORIGIN_LABEL, ZONE_LABEL, DISPLAY_NAME_LABEL] {
        match (old.meta.labels.get(key), new.meta.labels.get(key)) {
            (Some(a), Some(b)) if a != b => out.push(Violation {
                field: format!("labels[\"{key}\"]"),
                message: format!("is immutable, cannot be changed from \"{a}\" to \"{b}\""),
            }),
            (Some(a), None) => out.push(Violation {
                field: format!("labels[\"{key}\"]"),
                message: format!("is immutable, cannot be removed (was \"{a}\")"),
            }),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::parse;

    fn policy(extra_labels: &str) -> Resource {
        parse(&format!(
            "type: MeshTimeout\nname: t\nmesh: default\nlabels:\n  team: a\n{extra_labels}spec:\n  targetRef:\n    kind: Mesh\n  to:\n    - targetRef:\n        kind: Mesh\n      default:\n        idleTimeout: 10s\n"
        ))
        .expect("valid policy")
    }

    fn labels(r: &Resource) -> Vec<(&str, &str)> {
        r.meta
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    #[test]
    fn universal_labels() {
        let ctx = Context::new(Environment::Universal);
        let stored = admit(&ctx, Operation::Create(&policy(""))).unwrap().unwrap();
        assert_eq!(
            labels(&stored),
            vec![
                ("kuma.io/env", "universal"),
                ("kuma.io/mesh", "default"),
                ("kuma.io/origin", "zone"),
                ("kuma.io/zone", "default"),
                ("team", "a"),
            ]
        );
        assert_eq!(stored.meta.namespace, None);
    }

    #[test]
    fn universal_dataplanes_get_labels_and_their_zone_on_every_inbound() {
        let dp = parse(
            "type: Dataplane\nmesh: default\nname: web-1\nnetworking:\n  address: 10.0.0.1\n  inbound:\n    - port: 8080\n      tags:\n        kuma.io/service: web\n    - port: 8081\n      tags:\n        kuma.io/service: admin\n        kuma.io/zone: east\n    - port: 8082\n",
        )
        .expect("valid dataplane");
        let ctx = Context::new(Environment::Universal);
        let stored = admit(&ctx, Operation::Create(&dp)).unwrap().unwrap();
        assert_eq!(
            labels(&stored),
            vec![
                ("kuma.io/env", "universal"),
                ("kuma.io/mesh", "default"),
                ("kuma.io/origin", "zone"),
                ("kuma.io/proxy-type", "sidecar"),
                ("kuma.io/zone", "default"),
            ]
        );
        let Spec::Dataplane(spec) = &stored.spec else {
            panic!("a dataplane")
        };
        let zones: Vec<Option<&str>> = spec
            .inbounds()
            .iter()
            .map(|i| {
                i.tags
                    .as_ref()
                    .and_then(|t| t.get("kuma.io/zone"))
                    .map(String::as_str)
            })
            .collect();
        assert_eq!(
            zones,
            [Some("default"), Some("east"), None],
            "a zone the user set is kept, a tag-free inbound stays tag-free"
        );
        assert_eq!(
            stored.validate(crate::resource::Form::Universal),
            Ok(()),
            "what is stored validates"
        );
    }

    #[test]
    fn kubernetes_labels_and_namespace() {
        let ctx = Context::new(Environment::Kubernetes);
        let stored = admit(&ctx, Operation::Create(&policy(""))).unwrap().unwrap();
        assert_eq!(stored.meta.namespace.as_deref(), Some("kuma-system"));
        assert_eq!(stored.meta.core_name(), "t.kuma-system");
        assert_eq!(
            labels(&stored),
            vec![
                ("k8s.kuma.io/namespace", "kuma-system"),
                ("kuma.io/env", "kubernetes"),
                ("kuma.io/mesh", "default"),
                ("kuma.io/origin", "zone"),
                ("kuma.io/policy-role", "system"),
                ("kuma.io/zone", "default"),
                ("team", "a"),
            ]
        );
    }

    #[test]
    fn immutable_labels_stay() {
        let ctx = Context::new(Environment::Universal);
        let old = admit(&ctx, Operation::Create(&policy(""))).unwrap().unwrap();
        let new = policy("  kuma.io/zone: other\n");
        let violations = admit(&ctx, Operation::Update { old: &old, new: &new }).unwrap_err();
        assert_eq!(violations.len(), 1);
        assert_eq!(violations[0].field, "labels[\"kuma.io/zone\"]");
        assert!(
            admit(
                &ctx,
                Operation::Update {
                    old: &old,
                    new: &policy("")
                }
            )
            .is_ok()
        );
    }

    #[test]
    fn a_mesh_with_dataplanes_stays() {
        let ctx = Context::new(Environment::Universal);
        let mesh = parse("type: Mesh\nname: default").unwrap();
        let refused = admit(
            &ctx,
            Operation::Delete {
                old: &mesh,
                dataplanes_in_mesh: 1,
            },
        )
        .unwrap_err();
        assert_eq!(refused[0].field, "mesh");
        assert!(matches!(
            admit(
                &ctx,
                Operation::Delete {
                    old: &mesh,
                    dataplanes_in_mesh: 0
                }
            ),
            Ok(None)
        ));
    }

    #[test]
    fn system_namespace_only_kinds() {
        let ctx = Context::new(Environment::Kubernetes);
        let mut external = parse(
            "type: MeshExternalService\nname: httpbin\nmesh: default\nspec:\n  match:\n    type: HostnameGenerator\n    port: 80\n    protocol: http\n  endpoints:\n    - address: httpbin.org\n      port: 80\n",
        )
        .expect("valid");
        assert!(admit(&ctx, Operation::Create(&external)).is_ok());
        external.meta.namespace = Some("apps".into());
        let refused = admit(&ctx, Operation::Create(&external)).unwrap_err();
        assert_eq!(refused[0].field, "metadata.namespace");
    }
}
