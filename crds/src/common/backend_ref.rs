//! References to where routes send traffic and to observability backends.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ProxyType, TargetRef, TargetRefKind, TargetRefRules};
use crate::validation::{FieldPath, Violations};

/// Where a route sends traffic: a target plus a weight and port.
///
/// Kuma inlines the targetRef fields here, so they sit beside `weight`.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendRef {
    /// The kind of the destination.
    pub kind: TargetRefKind,
    /// The destination's name (a `kuma.io/service` value for `MeshService`).
    pub name: Option<String>,
    /// Tags narrowing the destination (`MeshServiceSubset`).
    pub tags: Option<BTreeMap<String, String>>,
    /// Reserved; must not be set.
    pub mesh: Option<String>,
    /// Not allowed on backend references.
    pub proxy_types: Option<Vec<ProxyType>>,
    /// The destination's namespace.
    pub namespace: Option<String>,
    /// Labels selecting the destination.
    pub labels: Option<BTreeMap<String, String>>,
    /// A port name of the destination.
    pub section_name: Option<String>,
    /// The share of traffic, relative to the other backends; 1 when absent.
    pub weight: Option<u32>,
    /// The destination port (real MeshService resources only).
    pub port: Option<u32>,
}

impl BackendRef {
    /// The target part of this reference.
    pub fn target_ref(&self) -> TargetRef {
        TargetRef {
            kind: self.kind,
            name: self.name.clone(),
            tags: self.tags.clone(),
            mesh: self.mesh.clone(),
            proxy_types: self.proxy_types.clone(),
            namespace: self.namespace.clone(),
            labels: self.labels.clone(),
            section_name: self.section_name.clone(),
        }
    }

    /// A backend reference to a target with a weight.
    pub fn from_target(target: &TargetRef, weight: u32) -> Self {
        BackendRef {
            kind: target.kind,
            name: target.name.clone(),
            tags: target.tags.clone(),
            mesh: target.mesh.clone(),
            proxy_types: target.proxy_types.clone(),
            namespace: target.namespace.clone(),
            labels: target.labels.clone(),
            section_name: target.section_name.clone(),
            weight: Some(weight),
            port: None,
        }
    }

    /// The weight, 1 when absent.
    pub fn effective_weight(&self) -> u32 {
        self.weight.unwrap_or(1)
    }

    /// Checks the target and that a MeshMultiZoneService names a port.
    pub fn validate(&self, rules: &TargetRefRules<'_>, path: &FieldPath, v: &mut Violations) {
        self.target_ref().validate(rules, path, v);
        if self.kind == TargetRefKind::MeshMultiZoneService && self.port.is_none() {
            v.add(
                &path.field("port"),
                "must be defined with kind MeshMultiZoneService",
            );
        }
        if let Some(port) = self.port {
            crate::validation::check_port(port, &path.field("port"), v);
        }
    }
}

/// The kinds of resource an observability backend reference can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum BackendResourceKind {
    /// A MeshOpenTelemetryBackend resource.
    MeshOpenTelemetryBackend,
}

/// A reference to a backend resource by labels (the oldest match wins).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackendResourceRef {
    /// The kind of the backend resource.
    pub kind: BackendResourceKind,
    /// Labels selecting it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
}

/// Checks an OpenTelemetry backend given as exactly one of an endpoint or a
/// backend reference.
pub fn validate_otel_endpoint_or_ref(
    endpoint: Option<&str>,
    backend_ref: Option<&BackendResourceRef>,
    path: &FieldPath,
    v: &mut Violations,
) {
    let endpoint = endpoint.filter(|e| !e.is_empty());
    match (endpoint, backend_ref) {
        (Some(_), Some(_)) => v.add(
            path,
            "openTelemetry must have only one type defined: endpoint, backendRef",
        ),
        (None, None) => v.add(
            path,
            "openTelemetry must have exactly one defined: endpoint, backendRef",
        ),
        (None, Some(r)) => {
            if r.labels.as_ref().is_none_or(BTreeMap::is_empty) {
                v.add(
                    &path.field("backendRef"),
                    "backendRef must have exactly one defined: labels",
                );
            }
        }
        (Some(e), None) => {
            if e.contains(['/', '?', '#']) {
                v.add(&path.field("endpoint"), "must be in host:port format, not a URL");
            }
        }
    }
}
