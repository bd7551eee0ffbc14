//! Reading and writing resources in the two forms Kuma users have:
//!
//! - **Universal** (`kumactl`, REST API): `type`, `name`, `mesh`, `labels`,
//!   then the spec fields at the top level for Mesh and Dataplane, or under
//!   `spec` for everything else.
//! - **Kubernetes**: `apiVersion: kuma.io/v1alpha1`, `kind`, `metadata`,
//!   `spec`; a Dataplane keeps `mesh` beside `spec`; other mesh-scoped kinds
//!   name their mesh with the `kuma.io/mesh` label.
//!
//! Parsing checks, in order: the document shape and metadata, the structure
//! of the spec against the CRD schema (unknown fields, types, enums — all of
//! them), and then Kuma's semantic rules (all of them). Nothing partial is
//! returned: a resource comes back only when it is entirely valid.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::resource::{
    DEFAULT_MESH, Form, MESH_LABEL, Meta, Resource, ResourceType, Scope, Spec, validate_meta, validate_spec,
};
use crate::validation::{FieldPath, ValidationError, Violations};

/// The Kubernetes API version of every kind.
pub const API_VERSION: &str = "kuma.io/v1alpha1";

/// Top-level keys of the Universal form that are not the spec: what the
/// user writes, then what the server owns and its clients send back (Kuma's
/// REST API adds `kri` and, for services, `snis`).
const UNIVERSAL_META_KEYS: &[&str] = &[
    "type",
    "name",
    "mesh",
    "labels",
    "creationTime",
    "modificationTime",
    "kri",
    "snis",
];

/// What becomes of fields nobody knows, as Kubernetes' field validation
/// (`?fieldValidation=`) decides. Fields the server owns (`status`,
/// `creationTime`, `kri`, `snis`, …) are never unknown: clients that read a
/// resource and write it back send them, and they are dropped or kept as
/// the kind says, in every mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FieldValidation {
    /// Refused, each named with its path.
    #[default]
    Strict,
    /// Dropped, each named in a warning.
    Warn,
}

impl std::str::FromStr for FieldValidation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "Strict" => Ok(FieldValidation::Strict),
            "Warn" => Ok(FieldValidation::Warn),
            other => Err(format!("{other:?} is not a field validation (Strict or Warn)")),
        }
    }
}

/// A resource that parsed, and the unknown fields dropped from it.
#[derive(Clone, Debug, PartialEq)]
pub struct Parsed {
    pub resource: Resource,
    /// Empty in [`FieldValidation::Strict`].
    pub warnings: Vec<crate::validation::Violation>,
}

/// Parses one YAML or JSON document of either form, refusing unknown fields.
pub fn parse(text: &str) -> Result<Resource, ValidationError> {
    parse_with(text, FieldValidation::Strict).map(|p| p.resource)
}

/// Parses one YAML or JSON document of either form.
pub fn parse_with(text: &str, mode: FieldValidation) -> Result<Parsed, ValidationError> {
    let value = yaml_to_value(text)?;
    parse_value_with(value, mode)
}

/// Parses one JSON value of either form, refusing unknown fields.
pub fn parse_value(value: Value) -> Result<Resource, ValidationError> {
    parse_value_with(value, FieldValidation::Strict).map(|p| p.resource)
}

/// Parses one JSON value of either form.
pub fn parse_value_with(value: Value, mode: FieldValidation) -> Result<Parsed, ValidationError> {
    if value.get("apiVersion").is_some() || value.get("kind").is_some() {
        parse_kubernetes(value, mode)
    } else {
        parse_universal(value, mode)
    }
}

/// Parses every document of a multi-document YAML stream; empty documents
/// are skipped. Each result says which document (0-based) it came from.
pub fn parse_documents(text: &str) -> Vec<Result<Resource, ValidationError>> {
    use serde::Deserialize;
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        match serde_yaml::Value::deserialize(doc) {
            Ok(serde_yaml::Value::Null) => {}
            Ok(y) => out.push(yaml_value_to_json(y).and_then(parse_value)),
            Err(e) => {
                out.push(Err(ValidationError::single(
                    &FieldPath::root(),
                    format!("invalid YAML: {e}"),
                )));
                break;
            }
        }
    }
    out
}

/// Converts YAML text to JSON, rejecting what JSON cannot hold.
pub fn yaml_to_value(text: &str) -> Result<Value, ValidationError> {
    let y: serde_yaml::Value = serde_yaml::from_str(text)
        .map_err(|e| ValidationError::single(&FieldPath::root(), format!("invalid YAML: {e}")))?;
    yaml_value_to_json(y)
}

fn yaml_value_to_json(y: serde_yaml::Value) -> Result<Value, ValidationError> {
    serde_json::to_value(y).map_err(|e| {
        ValidationError::single(
            &FieldPath::root(),
            format!("invalid document: {e} (map keys must be strings)"),
        )
    })
}

fn string_field(obj: &Map<String, Value>, key: &str, path: &FieldPath, v: &mut Violations) -> Option<String> {
    match obj.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            v.add(path, "must be a string");
            None
        }
    }
}

fn string_map(value: Option<&Value>, path: &FieldPath, v: &mut Violations) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    match value {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (k, val) in m {
                match val {
                    Value::String(s) => {
                        out.insert(k.clone(), s.clone());
                    }
                    _ => v.add(&path.key(k), "must be a string"),
                }
            }
        }
        Some(_) => v.add(path, "must be a map of strings"),
    }
    out
}

/// Structural check, typed parse and semantic validation of a spec value.
fn finish(
    resource_type: ResourceType,
    meta: Meta,
    mut spec_value: Value,
    status: Option<Value>,
    form: Form,
    mode: FieldValidation,
    mut v: Violations,
) -> Result<Parsed, ValidationError> {
    let root = Resource::spec_root(resource_type, form);
    crate::validation::schema::check(&spec_value, Spec::schema(resource_type), &root, &mut v);
    validate_meta(resource_type, &meta, form, &mut v);
    // Unknown fields alone do not stop the semantic checks: they are set
    // aside so that every problem of the document is reported at once.
    let only_unknown_fields = v
        .as_slice()
        .iter()
        .all(|x| x.message.starts_with("unknown field"));
    if !v.is_empty() {
        if !only_unknown_fields {
            return Err(ValidationError(v.into_vec()));
        }
        crate::validation::schema::strip_unknown(&mut spec_value, Spec::schema(resource_type));
    }
    let spec = match Spec::from_value(resource_type, spec_value) {
        Ok(spec) => spec,
        Err(_) if !v.is_empty() => return Err(ValidationError(v.into_vec())),
        Err((path, message)) => {
            let field = if path == "." {
                root.to_string()
            } else if root.as_str().is_empty() {
                path
            } else {
                format!("{root}.{path}")
            };
            return Err(ValidationError(vec![crate::validation::Violation {
                field,
                message,
            }]));
        }
    };
    validate_spec(&spec, &meta, form, &mut v);
    // In Warn mode unknown fields alone are warnings; a document refused
    // for anything else still names them, so every problem shows at once.
    let only_unknown_fields = v
        .as_slice()
        .iter()
        .all(|x| x.message.starts_with("unknown field"));
    let warnings = match mode {
        FieldValidation::Warn if only_unknown_fields => v.into_vec(),
        _ => {
            v.into_result()?;
            Vec::new()
        }
    };
    Ok(Parsed {
        resource: Resource { meta, spec, status },
        warnings,
    })
}

/// Parses the Universal form.
pub fn parse_universal(value: Value, mode: FieldValidation) -> Result<Parsed, ValidationError> {
    let mut v = Violations::new();
    let Value::Object(mut obj) = value else {
        return Err(ValidationError::single(
            &FieldPath::root(),
            "must be an object with `type` and `name`",
        ));
    };
    let type_path = FieldPath::new("type");
    let resource_type = match obj.get("type") {
        Some(Value::String(t)) => match t.parse::<ResourceType>() {
            Ok(rt) => rt,
            Err(_) => {
                return Err(ValidationError::single(
                    &type_path,
                    format!("unknown resource type {t:?}"),
                ));
            }
        },
        Some(_) => return Err(ValidationError::single(&type_path, "must be a string")),
        None => {
            return Err(ValidationError::single(
                &type_path,
                "must be set (e.g. `type: MeshTimeout`)",
            ));
        }
    };
    let descriptor = resource_type.descriptor();
    let name = string_field(&obj, "name", &FieldPath::new("name"), &mut v).unwrap_or_default();
    let mut mesh = string_field(&obj, "mesh", &FieldPath::new("mesh"), &mut v);
    if descriptor.scope == Scope::Global {
        if mesh.is_some() {
            v.add(
                &FieldPath::new("mesh"),
                format!("must not be set for {resource_type}"),
            );
        }
        mesh = None;
    } else if mesh.is_none() {
        mesh = Some(DEFAULT_MESH.to_string());
    }
    let labels = string_map(obj.get("labels"), &FieldPath::new("labels"), &mut v);
    let meta = Meta {
        name,
        namespace: None,
        mesh,
        labels,
        annotations: BTreeMap::new(),
        version: None,
        creation_time: string_field(&obj, "creationTime", &FieldPath::new("creationTime"), &mut v),
        modification_time: string_field(
            &obj,
            "modificationTime",
            &FieldPath::new("modificationTime"),
            &mut v,
        ),
    };
    let status = obj.remove("status");
    let spec_value = if descriptor.flat_universal {
        Value::Object(
            obj.into_iter()
                .filter(|(k, _)| !UNIVERSAL_META_KEYS.contains(&k.as_str()))
                .collect(),
        )
    } else {
        for key in obj.keys() {
            if !UNIVERSAL_META_KEYS.contains(&key.as_str()) && key != "spec" {
                v.add(
                    &FieldPath::new(key),
                    format!(
                        "unknown field (allowed: {}, spec)",
                        UNIVERSAL_META_KEYS[..4].join(", ")
                    ),
                );
            }
        }
        obj.remove("spec").unwrap_or_else(|| json!({}))
    };
    // A status is the server's: kept for kinds that have one, dropped for
    // the others (as the Kubernetes form's is), so both forms agree.
    let status = status.filter(|_| descriptor.has_status);
    finish(resource_type, meta, spec_value, status, Form::Universal, mode, v)
}

/// Parses the Kubernetes form.
pub fn parse_kubernetes(value: Value, mode: FieldValidation) -> Result<Parsed, ValidationError> {
    let mut v = Violations::new();
    let Value::Object(mut obj) = value else {
        return Err(ValidationError::single(
            &FieldPath::root(),
            "must be an object with `apiVersion` and `kind`",
        ));
    };
    if obj.get("apiVersion").and_then(Value::as_str) == Some("v1")
        && obj.get("kind").and_then(Value::as_str) == Some("Secret")
    {
        return parse_kubernetes_secret(obj, mode);
    }
    match obj.get("apiVersion") {
        Some(Value::String(a)) if a == API_VERSION => {}
        _ => v.add(&FieldPath::new("apiVersion"), format!("must be {API_VERSION}")),
    }
    let kind_path = FieldPath::new("kind");
    let resource_type = match obj.get("kind") {
        Some(Value::String(k)) => match k.parse::<ResourceType>() {
            Ok(rt) => rt,
            Err(_) => return Err(ValidationError::single(&kind_path, format!("unknown kind {k:?}"))),
        },
        _ => {
            return Err(ValidationError::single(
                &kind_path,
                "must be set (e.g. `kind: MeshTimeout`)",
            ));
        }
    };
    let mp = FieldPath::new("metadata");
    let metadata = obj.remove("metadata").unwrap_or_else(|| json!({}));
    const OBJECT_META_KEYS: &[&str] = &[
        "annotations",
        "creationTimestamp",
        "deletionGracePeriodSeconds",
        "deletionTimestamp",
        "finalizers",
        "generateName",
        "generation",
        "labels",
        "managedFields",
        "name",
        "namespace",
        "ownerReferences",
        "resourceVersion",
        "selfLink",
        "uid",
    ];
    let metadata_schema: Map<String, Value> = OBJECT_META_KEYS
        .iter()
        .map(|k| (k.to_string(), json!({})))
        .collect();
    crate::validation::schema::check(
        &metadata,
        &json!({"type": "object", "properties": metadata_schema}),
        &mp,
        &mut v,
    );
    if let Err(e) = serde_path_to_error::deserialize::<
        _,
        k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    >(metadata.clone())
    {
        v.add(&mp.field(&e.path().to_string()), e.inner().to_string());
    }
    let md = metadata.as_object().cloned().unwrap_or_default();
    let labels = string_map(md.get("labels"), &mp.field("labels"), &mut v);
    let annotations = string_map(md.get("annotations"), &mp.field("annotations"), &mut v);
    let name = string_field(&md, "name", &mp.field("name"), &mut v).unwrap_or_default();
    let namespace = string_field(&md, "namespace", &mp.field("namespace"), &mut v);
    let descriptor = resource_type.descriptor();
    let top_mesh = obj.remove("mesh");
    let mesh = if descriptor.scope == Scope::Global {
        None
    } else {
        let from_top = match &top_mesh {
            Some(Value::String(m)) if mesh_at_top(resource_type) => Some(m.clone()),
            _ => None,
        };
        Some(
            from_top
                .or_else(|| labels.get(MESH_LABEL).cloned())
                .or_else(|| annotations.get(MESH_LABEL).cloned())
                .unwrap_or_else(|| DEFAULT_MESH.to_string()),
        )
    };
    if top_mesh.is_some() && !mesh_at_top(resource_type) {
        v.add(
            &FieldPath::new("mesh"),
            format!("unknown field: {resource_type} names its mesh with the kuma.io/mesh label"),
        );
    }
    let (spec_value, status) = if descriptor.read_only {
        (obj.remove("status").unwrap_or_else(|| json!({})), None)
    } else {
        // The API server prunes a status the CRD does not declare; kinds
        // with one keep it (written through the status subresource).
        let status = obj.remove("status").filter(|_| descriptor.has_status);
        (obj.remove("spec").unwrap_or_else(|| json!({})), status)
    };
    for key in obj.keys() {
        if key != "apiVersion" && key != "kind" {
            v.add(
                &FieldPath::new(key),
                "unknown field (allowed: apiVersion, kind, metadata, spec)",
            );
        }
    }
    let meta = Meta {
        name,
        namespace: if descriptor.scope == Scope::Global {
            None
        } else {
            namespace
        },
        mesh,
        labels,
        annotations,
        version: md
            .get("resourceVersion")
            .and_then(Value::as_str)
            .map(String::from),
        creation_time: md
            .get("creationTimestamp")
            .and_then(Value::as_str)
            .map(String::from),
        modification_time: None,
    };
    finish(resource_type, meta, spec_value, status, Form::Kubernetes, mode, v)
}

/// A Kubernetes `v1` Secret of type `system.kuma.io/secret` (a mesh
/// Secret, mesh from the `kuma.io/mesh` label) or
/// `system.kuma.io/global-secret`, the bytes under `data.value`.
fn parse_kubernetes_secret(
    mut obj: Map<String, Value>,
    mode: FieldValidation,
) -> Result<Parsed, ValidationError> {
    let mut v = Violations::new();
    let resource_type = match obj.get("type").and_then(Value::as_str) {
        Some(crate::secret::K8S_SECRET_TYPE) => ResourceType::Secret,
        Some(crate::secret::K8S_GLOBAL_SECRET_TYPE) => ResourceType::GlobalSecret,
        _ => {
            return Err(ValidationError::single(
                &FieldPath::new("type"),
                format!(
                    "must be {} or {}",
                    crate::secret::K8S_SECRET_TYPE,
                    crate::secret::K8S_GLOBAL_SECRET_TYPE
                ),
            ));
        }
    };
    let mp = FieldPath::new("metadata");
    let md = obj
        .remove("metadata")
        .and_then(|m| m.as_object().cloned())
        .unwrap_or_default();
    let labels = string_map(md.get("labels"), &mp.field("labels"), &mut v);
    let name = string_field(&md, "name", &mp.field("name"), &mut v).unwrap_or_default();
    let namespace = string_field(&md, "namespace", &mp.field("namespace"), &mut v);
    let data = obj
        .get("data")
        .and_then(|d| d.get("value"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    for key in obj.keys() {
        if !["apiVersion", "kind", "type", "data"].contains(&key.as_str()) {
            v.add(
                &FieldPath::new(key),
                "unknown field (allowed: apiVersion, kind, type, metadata, data)",
            );
        }
    }
    let mesh = (resource_type == ResourceType::Secret).then(|| {
        labels
            .get(MESH_LABEL)
            .cloned()
            .unwrap_or_else(|| DEFAULT_MESH.to_string())
    });
    let meta = Meta {
        name,
        namespace: None,
        mesh,
        labels: labels.into_iter().filter(|(k, _)| k != MESH_LABEL).collect(),
        annotations: BTreeMap::new(),
        version: md
            .get("resourceVersion")
            .and_then(Value::as_str)
            .map(String::from),
        creation_time: md
            .get("creationTimestamp")
            .and_then(Value::as_str)
            .map(String::from),
        modification_time: None,
    };
    let _ = namespace;
    let spec = json!({ "data": data });
    let mut parsed = finish(resource_type, meta, spec, None, Form::Universal, mode, v)?;
    parsed.resource.meta.namespace = None;
    Ok(parsed)
}

/// The Universal form of a resource, with keys in Kuma's order.
pub fn to_universal(resource: &Resource) -> Value {
    let rt = resource.resource_type();
    let mut obj = Map::new();
    obj.insert("type".into(), json!(rt.name()));
    if let Some(mesh) = &resource.meta.mesh {
        obj.insert("mesh".into(), json!(mesh));
    }
    obj.insert("name".into(), json!(resource.meta.core_name()));
    if let Some(t) = &resource.meta.creation_time {
        obj.insert("creationTime".into(), json!(t));
    }
    if let Some(t) = &resource.meta.modification_time {
        obj.insert("modificationTime".into(), json!(t));
    }
    if !resource.meta.labels.is_empty() {
        obj.insert("labels".into(), json!(resource.meta.labels));
    }
    let spec = resource.spec.to_value();
    if rt.descriptor().flat_universal {
        if let Value::Object(fields) = spec {
            obj.extend(fields);
        }
    } else {
        obj.insert("spec".into(), spec);
    }
    if let Some(status) = &resource.status {
        obj.insert("status".into(), status.clone());
    }
    Value::Object(obj)
}

/// The Kubernetes form of a resource. A resource without a namespace (read
/// from Universal) is placed in `default_namespace` when namespaced.
pub fn to_kubernetes(resource: &Resource, default_namespace: &str) -> Value {
    let rt = resource.resource_type();
    if !rt.descriptor().has_crd {
        return kubernetes_secret(resource, default_namespace);
    }
    let mut metadata = Map::new();
    metadata.insert("name".into(), json!(resource.meta.name));
    if rt.descriptor().scope == Scope::Mesh {
        metadata.insert(
            "namespace".into(),
            json!(
                resource
                    .meta
                    .namespace
                    .clone()
                    .unwrap_or_else(|| default_namespace.to_string())
            ),
        );
    }
    let mut labels = resource.meta.labels.clone();
    if !mesh_at_top(rt)
        && let Some(mesh) = &resource.meta.mesh
    {
        labels
            .entry(MESH_LABEL.to_string())
            .or_insert_with(|| mesh.clone());
    }
    if !labels.is_empty() {
        metadata.insert("labels".into(), json!(labels));
    }
    if !resource.meta.annotations.is_empty() {
        metadata.insert("annotations".into(), json!(resource.meta.annotations));
    }
    if let Some(v) = &resource.meta.version {
        metadata.insert("resourceVersion".into(), json!(v));
    }
    let mut obj = Map::new();
    obj.insert("apiVersion".into(), json!(API_VERSION));
    obj.insert("kind".into(), json!(rt.name()));
    obj.insert("metadata".into(), Value::Object(metadata));
    if mesh_at_top(rt) {
        obj.insert("mesh".into(), json!(resource.meta.mesh_or_default()));
    }
    if rt.descriptor().read_only {
        obj.insert("status".into(), resource.spec.to_value());
        return Value::Object(obj);
    }
    obj.insert("spec".into(), resource.spec.to_value());
    if let Some(status) = &resource.status {
        obj.insert("status".into(), status.clone());
    }
    Value::Object(obj)
}

/// Kinds whose Kubernetes form names the mesh in a top-level `mesh` field
/// (as Kuma's legacy kinds do) rather than the `kuma.io/mesh` label.
fn mesh_at_top(t: ResourceType) -> bool {
    t == ResourceType::Dataplane || t.is_read_only()
}

/// Secrets live in the control plane's namespace as `v1` Secrets.
fn kubernetes_secret(resource: &Resource, namespace: &str) -> Value {
    let mut labels = resource.meta.labels.clone();
    let secret_type = match &resource.meta.mesh {
        Some(mesh) => {
            labels.insert(MESH_LABEL.to_string(), mesh.clone());
            crate::secret::K8S_SECRET_TYPE
        }
        None => crate::secret::K8S_GLOBAL_SECRET_TYPE,
    };
    let data = resource
        .spec
        .to_value()
        .get("data")
        .cloned()
        .unwrap_or(Value::Null);
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": resource.meta.name, "namespace": namespace, "labels": labels},
        "type": secret_type,
        "data": {"value": data},
    })
}

/// YAML text of a JSON value.
pub fn to_yaml(value: &Value) -> String {
    serde_yaml::to_string(value).unwrap_or_default()
}

/// The property every accepted document keeps, checked by the fuzz target
/// and by the replay of its corpus in the tests: each resource `text` holds
/// is written back in both forms, and each form parses again to the same
/// kind, name, mesh, spec and status (the Universal form keeps the core
/// name `<name>.<namespace>`; the Kubernetes form the name, in a namespace).
/// Returns what broke, if anything.
pub fn check_round_trip(text: &str) -> Result<(), String> {
    for resource in parse_documents(text).into_iter().flatten() {
        let forms = [
            ("Universal", to_universal(&resource)),
            ("Kubernetes", to_kubernetes(&resource, "kuma-system")),
        ];
        for (form, written) in forms {
            let again = parse_value(written.clone()).map_err(|e| {
                format!(
                    "the {form} form written back is refused: {e}\n{}",
                    to_yaml(&written)
                )
            })?;
            let same_name = if form == "Universal" {
                again.meta.core_name() == resource.meta.core_name()
            } else {
                again.meta.name == resource.meta.name
            };
            let same = again.resource_type() == resource.resource_type()
                && same_name
                && again.meta.mesh == resource.meta.mesh
                && again.spec == resource.spec
                && again.status == resource.status;
            if !same {
                return Err(format!(
                    "the {form} form written back means something else:\n{}",
                    to_yaml(&written)
                ));
            }
        }
    }
    Ok(())
}
