//! Sidecar injection as Kuma's injector does it, as pure functions: no
//! server, no client. [`precheck`] decides whether a Pod is injected and
//! into which mesh; [`inject`] returns the Pod with Kuma's containers,
//! annotations, label and rewritten probes; [`patch`] is the JSON Patch the
//! webhook answers with. Injecting an injected Pod changes nothing.

pub mod config;
mod containers;
mod probes;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, Service, Volume};
use kuma_crds::kubernetes::annotations as a;
use kuma_crds::kubernetes::{
    PodOwners, SIDECAR_CONTAINER, mesh_of, selecting_services, service_tag, serviceless_tag, workload_name,
};
use kuma_crds::resource::MESH_LABEL;

pub use config::{InjectorConfig, Resources};

/// Why a Pod cannot be injected (the webhook denies it with this reason).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InjectError {
    /// A label or annotation has a value Kuma does not accept.
    #[error("annotation {key:?} has wrong value {value:?}")]
    BadValue {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// The Pod's mesh does not exist.
    #[error("meshes.kuma.io {0:?} not found")]
    MeshNotFound(String),
    /// App containers run as the sidecar's user.
    #[error("containers using same UID as sidecar is unsupported: {0:?}")]
    SameUid(Vec<String>),
    /// A probe cannot go through the application probe proxy.
    #[error("{0}")]
    Probe(String),
    /// A setting the Pod asks for is not valid.
    #[error("failed to parse annotation {key:?}: {reason}")]
    Annotation {
        /// The key.
        key: String,
        /// Why.
        reason: String,
    },
}

/// What the precheck decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Leave the Pod as it is, and why.
    Skip(String),
    /// Inject the Pod into this mesh (which must exist).
    Inject {
        /// The mesh.
        mesh: String,
    },
}

/// Kuma's booleans: `enabled|true|yes`, `disabled|false|no`.
pub fn parse_enabled(key: &str, value: &str) -> Result<bool, InjectError> {
    match value {
        "enabled" | "true" | "yes" => Ok(true),
        "disabled" | "false" | "no" => Ok(false),
        _ => Err(InjectError::BadValue {
            key: key.into(),
            value: value.into(),
        }),
    }
}

/// The Namespace facts injection depends on.
#[derive(Clone, Debug, Default)]
pub struct NamespaceFacts {
    /// Its name.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its annotations.
    pub annotations: BTreeMap<String, String>,
}

/// Whether `pod` (in `namespace`) is injected, as Kuma's precheck decides:
/// never in `kube-system` or the system namespace; not when an exception
/// label matches or the sidecar is already there; else the Pod's
/// `kuma.io/sidecar-injection` label, else the Namespace's.
pub fn precheck(
    pod: &Pod,
    namespace: &NamespaceFacts,
    config: &InjectorConfig,
) -> Result<Decision, InjectError> {
    if namespace.name == "kube-system" || namespace.name == config.system_namespace {
        return Ok(Decision::Skip(format!(
            "namespace {} is never injected",
            namespace.name
        )));
    }
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    for (key, value) in &config.exception_labels {
        if labels.get(key).is_some_and(|v| value == "*" || v == value) {
            return Ok(Decision::Skip(format!("the Pod has the exception label {key}")));
        }
    }
    let spec = pod.spec.clone().unwrap_or_default();
    let has_sidecar = spec.containers.iter().any(|c| c.name == SIDECAR_CONTAINER)
        || spec
            .init_containers
            .iter()
            .flatten()
            .any(|c| c.name == SIDECAR_CONTAINER);
    if has_sidecar {
        return Ok(Decision::Skip("already injected".into()));
    }
    let wanted = match labels.get(a::SIDECAR_INJECTION) {
        Some(v) => parse_enabled(a::SIDECAR_INJECTION, v)?,
        None => match namespace.labels.get(a::SIDECAR_INJECTION) {
            Some(v) => parse_enabled(a::SIDECAR_INJECTION, v)?,
            None => false,
        },
    };
    if !wanted {
        return Ok(Decision::Skip("injection is not enabled".into()));
    }
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    let mesh = mesh_of(&labels, &annotations, &namespace.labels, &namespace.annotations);
    Ok(Decision::Inject { mesh })
}

/// What injection needs besides the Pod and its mesh.
#[derive(Clone, Copy, Debug)]
pub struct InjectInput<'a> {
    /// The Services of the Pod's namespace (for the `kuma.io/service` annotation).
    pub services: &'a [Service],
    /// Who owns the Pod's owner (for the name of a Pod without a Service).
    pub owners: &'a PodOwners,
}

/// The Pod with Kuma's sidecar in `mesh`.
pub fn inject(
    pod: &Pod,
    mesh: &str,
    input: &InjectInput<'_>,
    config: &InjectorConfig,
) -> Result<Pod, InjectError> {
    let mut pod = pod.clone();
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let mut spec = pod.spec.clone().unwrap_or_default();
    let same_uid: Vec<String> = spec
        .containers
        .iter()
        .filter(|c| c.security_context.as_ref().and_then(|s| s.run_as_user) == Some(config.uid))
        .map(|c| c.name.clone())
        .collect();
    if !same_uid.is_empty() {
        return Err(InjectError::SameUid(same_uid));
    }
    let mut annotations = pod.metadata.annotations.clone().unwrap_or_default();
    let single_container = (spec.containers.len() == 1).then(|| spec.containers[0].name.clone());
    let written = containers::annotations(&annotations, config)?;
    annotations.extend(written);
    if let Some(name) = single_container {
        annotations
            .entry("kubectl.kubernetes.io/default-container".into())
            .or_insert(name);
    }
    // The services the Pod will serve as.
    let services: Vec<String> = {
        let selecting = selecting_services(&pod, input.services);
        if selecting.is_empty() {
            vec![serviceless_tag(&workload_name(&pod, input.owners), &namespace)]
        } else {
            selecting
                .iter()
                .flat_map(|s| {
                    let name = s.metadata.name.clone().unwrap_or_default();
                    let ns = namespace.clone();
                    s.spec
                        .iter()
                        .flat_map(|spec| spec.ports.iter().flatten())
                        .filter(|p| p.protocol.as_deref().is_none_or(|p| p == "TCP"))
                        .map(move |p| service_tag(&name, &ns, p.port))
                        .collect::<Vec<_>>()
                })
                .collect()
        }
    };
    annotations.insert(a::SERVICE.into(), services.join(","));

    let probe_proxy_port: u16 = annotations
        .get(a::APPLICATION_PROBE_PROXY_PORT)
        .and_then(|p| p.parse().ok())
        .unwrap_or(config.application_probe_proxy_port);
    if probe_proxy_port != 0 {
        probes::rewrite(&mut spec, probe_proxy_port)?;
    } else if annotations.get(a::VIRTUAL_PROBES).map(String::as_str) == Some("enabled") {
        let virtual_port: u16 = annotations
            .get(a::VIRTUAL_PROBES_PORT)
            .and_then(|p| p.parse().ok())
            .unwrap_or(config.virtual_probes_port);
        probes::rewrite_virtual(&mut spec, virtual_port)?;
    }
    let sidecar = containers::sidecar(&spec, &annotations, mesh, config)?;
    let init = containers::init(&annotations, config);
    if config.native_sidecar {
        let mut init_containers = vec![init, sidecar];
        init_containers.extend(spec.init_containers.take().unwrap_or_default());
        spec.init_containers = Some(init_containers);
    } else {
        spec.containers.insert(0, sidecar);
        let mut init_containers = spec.init_containers.take().unwrap_or_default();
        let first = annotations
            .get("kuma.io/init-first")
            .is_some_and(|v| parse_enabled("kuma.io/init-first", v).unwrap_or(false));
        if first {
            init_containers.insert(0, init);
        } else {
            init_containers.push(init);
        }
        spec.init_containers = Some(init_containers);
    }
    let mut volumes = spec.volumes.take().unwrap_or_default();
    for name in ["kuma-init-tmp", "kuma-sidecar-tmp"] {
        if !volumes.iter().any(|v| v.name == name) {
            let volume: Volume = serde_json::from_value(serde_json::json!({
                "name": name,
                "emptyDir": {"sizeLimit": "10M"},
            }))
            .map_err(|e| InjectError::Probe(e.to_string()))?;
            volumes.push(volume);
        }
    }
    spec.volumes = Some(volumes);
    let mut labels = pod.metadata.labels.clone().unwrap_or_default();
    labels.insert(MESH_LABEL.into(), mesh.into());
    pod.metadata.labels = Some(labels);
    pod.metadata.annotations = Some(annotations);
    pod.spec = Some(spec);
    Ok(pod)
}

/// The JSON Patch turning `before` into `after`.
pub fn patch(before: &Pod, after: &Pod) -> json_patch::Patch {
    let before = serde_json::to_value(before).unwrap_or_default();
    let after = serde_json::to_value(after).unwrap_or_default();
    json_patch::diff(&before, &after)
}
