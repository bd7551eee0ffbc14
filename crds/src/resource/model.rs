//! A resource as every layer sees it: metadata plus a typed spec.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde_json::Value;

use super::ResourceType;
use crate::dataplane::DataplaneSpec;
use crate::insight::DataplaneInsightSpec;
use crate::mesh::MeshSpec;
use crate::mesh_service::{MeshExternalServiceSpec, MeshServiceSpec};
use crate::policies::*;
use crate::secret::SecretSpec;
use crate::validation::{FieldPath, ValidationError, Violations};

/// The label holding a resource's mesh on Kubernetes.
pub const MESH_LABEL: &str = "kuma.io/mesh";
/// The label holding a policy's role.
pub const POLICY_ROLE_LABEL: &str = "kuma.io/policy-role";
/// The label holding where a resource came from (`global` or `zone`).
pub const ORIGIN_LABEL: &str = "kuma.io/origin";
/// The label holding a resource's zone.
pub const ZONE_LABEL: &str = "kuma.io/zone";
/// The label holding a resource's name without namespace or hash.
pub const DISPLAY_NAME_LABEL: &str = "kuma.io/display-name";
/// The label holding a resource's Kubernetes namespace.
pub const NAMESPACE_LABEL: &str = "k8s.kuma.io/namespace";
/// The label that makes a policy computed but not applied (`shadow`).
pub const EFFECT_LABEL: &str = "kuma.io/effect";
/// The mesh a resource belongs to when none is given.
pub const DEFAULT_MESH: &str = "default";

/// Identity and bookkeeping of a resource.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    /// The name as written (Kubernetes: without the namespace).
    pub name: String,
    /// The Kubernetes namespace, for namespaced kinds read from Kubernetes.
    pub namespace: Option<String>,
    /// The mesh, for mesh-scoped kinds.
    pub mesh: Option<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Kubernetes annotations.
    pub annotations: BTreeMap<String, String>,
    /// The store's version, for optimistic concurrency.
    pub version: Option<String>,
    /// When the resource was created (RFC 3339).
    pub creation_time: Option<String>,
    /// When the resource was last changed (RFC 3339).
    pub modification_time: Option<String>,
}

impl Meta {
    /// Kuma's core name: `<name>.<namespace>` for namespaced Kubernetes
    /// resources, the name otherwise.
    pub fn core_name(&self) -> String {
        match &self.namespace {
            Some(ns) if !ns.is_empty() => format!("{}.{}", self.name, ns),
            _ => self.name.clone(),
        }
    }

    /// The name shown to users: the `kuma.io/display-name` label or the name.
    pub fn display_name(&self) -> &str {
        self.labels
            .get(DISPLAY_NAME_LABEL)
            .map(String::as_str)
            .unwrap_or(&self.name)
    }

    /// The mesh, `default` when absent.
    pub fn mesh_or_default(&self) -> &str {
        self.mesh.as_deref().unwrap_or(DEFAULT_MESH)
    }

    /// The policy role from the labels.
    pub fn policy_role(&self) -> PolicyRole {
        PolicyRole::from_label(self.labels.get(POLICY_ROLE_LABEL).map(String::as_str))
    }
}

macro_rules! specs {
    ($($variant:ident($ty:ty),)*) => {
        /// The typed spec of a resource.
        #[derive(Clone, Debug, PartialEq)]
        pub enum Spec {
            $(
                #[doc = concat!("A `", stringify!($variant), "` spec.")]
                $variant($ty),
            )*
        }

        impl Spec {
            /// The resource type of this spec.
            pub fn resource_type(&self) -> ResourceType {
                match self {
                    $(Spec::$variant(_) => ResourceType::$variant,)*
                }
            }

            /// The spec as JSON.
            pub fn to_value(&self) -> Value {
                match self {
                    $(Spec::$variant(s) => spec_to_value(s),)*
                }
            }

            /// Deserializes a spec of `resource_type`; the error carries the
            /// path of the first field that does not fit.
            pub fn from_value(resource_type: ResourceType, value: Value) -> Result<Spec, (String, String)> {
                match resource_type {
                    $(ResourceType::$variant => serde_path_to_error::deserialize::<_, $ty>(value)
                        .map(Spec::$variant)
                        .map_err(|e| (e.path().to_string(), e.inner().to_string())),)*
                }
            }

            /// The OpenAPI schema of the spec of `resource_type`, as in the CRD.
            pub fn schema(resource_type: ResourceType) -> &'static Value {
                static SCHEMAS: OnceLock<BTreeMap<ResourceType, Value>> = OnceLock::new();
                let schemas = SCHEMAS.get_or_init(|| {
                    let mut m = BTreeMap::new();
                    $(m.insert(ResourceType::$variant, crate::crd::schema_for::<$ty>());)*
                    m
                });
                &schemas[&resource_type]
            }
        }
    };
}

specs! {
    Mesh(MeshSpec),
    Dataplane(DataplaneSpec),
    Secret(SecretSpec),
    GlobalSecret(SecretSpec),
    DataplaneInsight(DataplaneInsightSpec),
    MeshService(MeshServiceSpec),
    MeshExternalService(MeshExternalServiceSpec),
    MeshHTTPRoute(mesh_http_route::MeshHTTPRouteSpec),
    MeshTCPRoute(mesh_tcp_route::MeshTCPRouteSpec),
    MeshTLS(mesh_tls::MeshTLSSpec),
    MeshLoadBalancingStrategy(mesh_load_balancing_strategy::MeshLoadBalancingStrategySpec),
    MeshPassthrough(mesh_passthrough::MeshPassthroughSpec),
    MeshAccessLog(mesh_access_log::MeshAccessLogSpec),
    MeshTrace(mesh_trace::MeshTraceSpec),
    MeshFaultInjection(mesh_fault_injection::MeshFaultInjectionSpec),
    MeshRateLimit(mesh_rate_limit::MeshRateLimitSpec),
    MeshTimeout(mesh_timeout::MeshTimeoutSpec),
    MeshTrafficPermission(mesh_traffic_permission::MeshTrafficPermissionSpec),
    MeshHealthCheck(mesh_health_check::MeshHealthCheckSpec),
    MeshCircuitBreaker(mesh_circuit_breaker::MeshCircuitBreakerSpec),
    MeshRetry(mesh_retry::MeshRetrySpec),
    MeshMetric(mesh_metric::MeshMetricSpec),
    MeshProxyPatch(mesh_proxy_patch::MeshProxyPatchSpec),
}

/// A resource: metadata, spec and (for some kinds) a status.
#[derive(Clone, Debug, PartialEq)]
pub struct Resource {
    /// Identity and bookkeeping.
    pub meta: Meta,
    /// The typed spec.
    pub spec: Spec,
    /// Status written by the control plane, kept as JSON.
    pub status: Option<Value>,
}

/// How paths of a resource's spec fields are rendered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// Universal: Mesh and Dataplane fields at the top level, others under `spec`.
    Universal,
    /// Kubernetes: every spec under `spec`.
    Kubernetes,
}

impl Resource {
    /// A resource from its parts.
    pub fn new(meta: Meta, spec: Spec) -> Self {
        Resource {
            meta,
            spec,
            status: None,
        }
    }

    /// The resource type.
    pub fn resource_type(&self) -> ResourceType {
        self.spec.resource_type()
    }

    /// The path under which the spec's fields are reported in `form`.
    pub fn spec_root(resource_type: ResourceType, form: Form) -> FieldPath {
        if resource_type.descriptor().flat_universal && form == Form::Universal {
            FieldPath::root()
        } else {
            FieldPath::new("spec")
        }
    }

    /// Checks the metadata and the spec, reporting every problem.
    pub fn validate(&self, form: Form) -> Result<(), ValidationError> {
        let mut v = Violations::new();
        validate_meta(self.resource_type(), &self.meta, form, &mut v);
        validate_spec(&self.spec, &self.meta, form, &mut v);
        v.into_result()
    }
}

/// Checks names, mesh and labels.
pub fn validate_meta(resource_type: ResourceType, meta: &Meta, form: Form, v: &mut Violations) {
    let (name_path, labels_path) = match form {
        Form::Universal => (FieldPath::new("name"), FieldPath::new("labels")),
        Form::Kubernetes => (
            FieldPath::new("metadata").field("name"),
            FieldPath::new("metadata").field("labels"),
        ),
    };
    crate::validation::check_resource_name(&meta.name, &name_path, v);
    if resource_type == ResourceType::Mesh && meta.name.len() > 63 {
        v.add(&name_path, "cannot be longer than 63 characters");
    }
    if let Some(ns) = &meta.namespace
        && !crate::validation::is_dns_label(ns)
    {
        v.add(
            &FieldPath::new("metadata").field("namespace"),
            format!("{ns:?} is not a valid namespace: use at most 63 lower-case letters, digits and '-'"),
        );
    }
    if let Some(mesh) = &meta.mesh {
        let mesh_path = if form == Form::Universal {
            FieldPath::new("mesh")
        } else {
            labels_path.key(MESH_LABEL)
        };
        crate::validation::check_resource_name(mesh, &mesh_path, v);
        if meta.labels.get(MESH_LABEL).is_some_and(|l| l != mesh) {
            v.add(
                &labels_path.key(MESH_LABEL),
                "kuma.io/mesh label must not differ from mesh set on resource",
            );
        }
    }
    for (key, value) in &meta.labels {
        let p = labels_path.key(key);
        crate::validation::check_label_key(key, &p, v);
        crate::validation::check_label_value(value, &p, v);
    }
    if let Some(origin) = meta.labels.get(ORIGIN_LABEL)
        && origin != "global"
        && origin != "zone"
    {
        v.add(
            &labels_path.key(ORIGIN_LABEL),
            format!("unknown resource origin {origin:?}"),
        );
    }
}

/// Checks a spec; `meta` supplies the policy role.
pub fn validate_spec(spec: &Spec, meta: &Meta, form: Form, v: &mut Violations) {
    let root = Resource::spec_root(spec.resource_type(), form);
    let ctx = PolicyContext {
        role: meta.policy_role(),
    };
    match spec {
        Spec::Mesh(s) => s.validate(&root, v),
        Spec::Dataplane(s) => s.validate(&root, v),
        Spec::Secret(s) | Spec::GlobalSecret(s) => s.validate(&root, v),
        // Written by the control plane only.
        Spec::DataplaneInsight(_) => {}
        Spec::MeshService(s) => s.validate(v),
        Spec::MeshExternalService(s) => s.validate(v),
        Spec::MeshHTTPRoute(s) => s.validate(&ctx, v),
        Spec::MeshTCPRoute(s) => s.validate(&ctx, v),
        Spec::MeshTLS(s) => s.validate(&ctx, v),
        Spec::MeshLoadBalancingStrategy(s) => s.validate(&ctx, v),
        Spec::MeshPassthrough(s) => s.validate(&ctx, v),
        Spec::MeshAccessLog(s) => s.validate(&ctx, v),
        Spec::MeshTrace(s) => s.validate(&ctx, v),
        Spec::MeshFaultInjection(s) => s.validate(&ctx, v),
        Spec::MeshRateLimit(s) => s.validate(&ctx, v),
        Spec::MeshTimeout(s) => s.validate(&ctx, v),
        Spec::MeshTrafficPermission(s) => s.validate(&ctx, v),
        Spec::MeshHealthCheck(s) => s.validate(&ctx, v),
        Spec::MeshCircuitBreaker(s) => s.validate(&ctx, v),
        Spec::MeshRetry(s) => s.validate(&ctx, v),
        Spec::MeshMetric(s) => s.validate(&ctx, v),
        Spec::MeshProxyPatch(s) => s.validate(&ctx, v),
    }
}
