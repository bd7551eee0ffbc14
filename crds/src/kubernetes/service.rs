//! A Kubernetes Service turned into its MeshService, as Kuma's MeshService
//! controller does when the mesh's `meshServices.mode` is `Everywhere` or
//! `Exclusive`: same name and namespace, the Service's selector (and
//! namespace) as `dataplaneTags`, its TCP ports with their target ports and
//! protocols, the ClusterIP as VIP, and the Kubernetes host name as the
//! address (`<name>.<namespace>.svc.cluster.local`, what the local
//! hostname generator gives Services on Kubernetes).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Value, json};

use super::annotations as a;
use crate::mesh::MeshServicesMode;
use crate::resource::{NAMESPACE_LABEL, Resource};

/// Whether a mesh in `mode` gets MeshServices from Kubernetes Services.
pub fn generates_mesh_services(mode: Option<MeshServicesMode>) -> bool {
    matches!(
        mode,
        Some(MeshServicesMode::Everywhere | MeshServicesMode::Exclusive)
    )
}

/// The MeshService of `service` in `mesh`; `None` for Services Kuma does
/// not mirror (ExternalName, headless or selector-less ones).
pub fn service_to_mesh_service(service: &Service, mesh: &str) -> Result<Option<Resource>, String> {
    let Some(spec) = &service.spec else {
        return Ok(None);
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        return Ok(None);
    }
    let Some(selector) = spec.selector.as_ref().filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let cluster_ip = spec.cluster_ip.clone().unwrap_or_default();
    if cluster_ip.is_empty() || cluster_ip == "None" {
        return Ok(None);
    }
    let name = service.metadata.name.clone().unwrap_or_default();
    let namespace = service.metadata.namespace.clone().unwrap_or_default();
    let annotations = service.metadata.annotations.clone().unwrap_or_default();
    let mut tags: BTreeMap<String, String> = selector.clone();
    tags.insert(NAMESPACE_LABEL.into(), namespace.clone());
    let mut ports = Vec::new();
    for port in spec.ports.iter().flatten() {
        if port.protocol.as_deref().is_some_and(|p| p != "TCP") {
            continue;
        }
        let target = match &port.target_port {
            Some(IntOrString::Int(n)) => json!(n),
            Some(IntOrString::String(s)) => json!(s),
            None => json!(port.port),
        };
        let protocol = port
            .app_protocol
            .clone()
            .or_else(|| {
                annotations
                    .get(&format!("{}{}", port.port, a::SERVICE_PROTOCOL_SUFFIX))
                    .cloned()
            })
            .unwrap_or_else(|| "tcp".into());
        let mut entry = serde_json::Map::new();
        if let Some(n) = &port.name {
            entry.insert("name".into(), n.clone().into());
        }
        entry.insert("port".into(), port.port.into());
        entry.insert("targetPort".into(), target);
        entry.insert("appProtocol".into(), protocol.into());
        ports.push(Value::Object(entry));
    }
    let object = json!({
        "apiVersion": crate::format::API_VERSION,
        "kind": "MeshService",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                crate::resource::MESH_LABEL: mesh,
                NAMESPACE_LABEL: namespace,
                a::SERVICE_NAME_TAG: name,
                a::MANAGED_BY_LABEL: "k8s-controller",
            },
        },
        "spec": {
            "selector": {"dataplaneTags": tags},
            "ports": ports,
        },
        "status": {
            "vips": [{"ip": cluster_ip}],
            "addresses": [{"hostname": format!("{name}.{namespace}.svc.cluster.local"), "origin": "KubernetesService"}],
        },
    });
    crate::format::parse_value(object)
        .map(Some)
        .map_err(|e| format!("the MeshService of Service {namespace}/{name} is not valid: {e}"))
}
