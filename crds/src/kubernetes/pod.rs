//! A Pod with Kuma's sidecar turned into its Dataplane, as Kuma's pod
//! converter does (`kuma.md` §3.2):
//!
//! - the Dataplane has the Pod's name and namespace, the Pod's labels (and
//!   its ServiceAccount as `k8s.kuma.io/service-account`), and its mesh;
//! - `networking.address` is the Pod's IP (no Dataplane before it has one);
//! - one inbound per Service × TCP port the Pod serves (the Services whose
//!   selector matches it, and those without one whose EndpointSlices list
//!   it), on the container port
//!   the `targetPort` names (by number or by container port name), tagged
//!   `kuma.io/service: <svc>_<ns>_svc_<port>` with the Pod's labels (not
//!   Kuma's own), `k8s.kuma.io/namespace|service-name|service-port`,
//!   `kuma.io/zone` and `kuma.io/protocol` (the port's `appProtocol`, else
//!   the Service's `<port>.service.kuma.io/protocol` annotation, else tcp);
//!   Ready or NotReady as the Pod is (a terminating Pod is NotReady);
//! - a Pod no Service selects serves `<workload>_<ns>_svc` on port 49151;
//! - transparent proxying, the admin port and metrics come from the Pod's
//!   annotations, and virtual probes (`probes`) from the probes the
//!   injector pointed at the probe listener.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Pod, Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Map, Value, json};

use super::annotations as a;
use super::{
    PodOwners, SERVICELESS_PORT, mesh_of, service_tag, serviceless_tag, serving_services, workload_name,
};
use crate::resource::{NAMESPACE_LABEL, Resource, ZONE_LABEL};

/// Everything a Pod's Dataplane depends on.
#[derive(Clone, Copy, Debug)]
pub struct PodInput<'a> {
    /// The Pod.
    pub pod: &'a Pod,
    /// Its namespace's labels (the mesh may be named there).
    pub namespace_labels: &'a BTreeMap<String, String>,
    /// Its namespace's annotations.
    pub namespace_annotations: &'a BTreeMap<String, String>,
    /// The Services of its namespace.
    pub services: &'a [Service],
    /// The Services without a selector whose EndpointSlices list the Pod
    /// (`super::services_listing`).
    pub listed_by: &'a BTreeSet<String>,
    /// Who owns its owner (for the name of a Pod without a Service).
    pub owners: &'a PodOwners,
    /// The zone of the control plane.
    pub zone: &'a str,
}

/// Protocols Kuma knows (`kuma.io/protocol` values).
const PROTOCOLS: &[&str] = &["tcp", "tls", "http", "http2", "grpc", "kafka", "mysql"];

/// The Dataplane of a Pod; `Ok(None)` while the Pod has no IP yet.
/// An error names what in the Pod cannot be converted.
pub fn pod_to_dataplane(input: &PodInput<'_>) -> Result<Option<Resource>, String> {
    let pod = input.pod;
    let Some(address) = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .filter(|ip| !ip.is_empty())
    else {
        return Ok(None);
    };
    let name = pod.metadata.name.clone().unwrap_or_default();
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    let mesh = mesh_of(
        &labels,
        &annotations,
        input.namespace_labels,
        input.namespace_annotations,
    );
    let ready = pod_ready(pod);
    let state = if ready { "Ready" } else { "NotReady" };
    // Tags every inbound carries: the Pod's own labels, not Kuma's.
    let mut common: BTreeMap<String, String> = labels
        .iter()
        .filter(|(k, v)| !k.contains("kuma.io/") && !v.is_empty())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    common.insert(NAMESPACE_LABEL.into(), namespace.clone());
    common.insert(ZONE_LABEL.into(), input.zone.into());

    let mut inbounds = Vec::new();
    let services = serving_services(pod, input.services, input.listed_by);
    for service in &services {
        let service_name = service.metadata.name.clone().unwrap_or_default();
        let service_annotations = service.metadata.annotations.clone().unwrap_or_default();
        let ports = service.spec.as_ref().and_then(|s| s.ports.as_ref());
        for port in ports.into_iter().flatten() {
            if port.protocol.as_deref().is_some_and(|p| p != "TCP") {
                continue;
            }
            let Some((container_port, port_name)) = container_port(pod, port) else {
                continue;
            };
            let protocol = protocol_of(port, &service_annotations);
            let mut tags = common.clone();
            tags.insert(a::SERVICE_NAME_TAG.into(), service_name.clone());
            tags.insert(a::SERVICE_PORT_TAG.into(), port.port.to_string());
            tags.insert(
                crate::dataplane::SERVICE_TAG.into(),
                service_tag(&service_name, &namespace, port.port),
            );
            tags.insert(crate::dataplane::PROTOCOL_TAG.into(), protocol.clone());
            let mut inbound = Map::new();
            if let Some(n) = port_name {
                inbound.insert("name".into(), n.into());
            }
            inbound.insert("port".into(), container_port.into());
            inbound.insert("protocol".into(), protocol.into());
            inbound.insert("state".into(), state.into());
            inbound.insert("tags".into(), json!(tags));
            inbounds.push(Value::Object(inbound));
        }
    }
    if services.is_empty() {
        let mut tags = common.clone();
        tags.insert(
            crate::dataplane::SERVICE_TAG.into(),
            serviceless_tag(&workload_name(pod, input.owners), &namespace),
        );
        inbounds.push(json!({"port": SERVICELESS_PORT, "state": state, "tags": tags}));
    }

    let mut networking = Map::new();
    networking.insert("address".into(), address.into());
    networking.insert("inbound".into(), Value::Array(inbounds));
    if let Some(tp) = transparent_proxying(&annotations)? {
        networking.insert("transparentProxying".into(), tp);
    }
    if let Some(port) = annotations.get(a::ENVOY_ADMIN_PORT) {
        let port: u32 = port
            .parse()
            .map_err(|_| format!("annotation {}: {port:?} is not a port", a::ENVOY_ADMIN_PORT))?;
        networking.insert("admin".into(), json!({ "port": port }));
    }
    let mut spec = Map::new();
    spec.insert("networking".into(), Value::Object(networking));
    if let Some(port) = annotations.get(a::METRICS_PORT) {
        let port: u32 = port
            .parse()
            .map_err(|_| format!("annotation {}: {port:?} is not a port", a::METRICS_PORT))?;
        let path = annotations
            .get(a::METRICS_PATH)
            .cloned()
            .unwrap_or_else(|| "/metrics".into());
        spec.insert(
            "metrics".into(),
            json!({"type": "prometheus", "conf": {"port": port, "path": path}}),
        );
    }

    if let Some(probes) = virtual_probes(pod, &annotations)? {
        spec.insert("probes".into(), probes);
    }

    let mut dataplane_labels = labels.clone();
    let service_account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    dataplane_labels.insert(a::SERVICE_ACCOUNT_LABEL.into(), service_account);
    let object = json!({
        "apiVersion": crate::format::API_VERSION,
        "kind": "Dataplane",
        "metadata": {"name": name, "namespace": namespace, "labels": dataplane_labels},
        "mesh": mesh,
        "spec": spec,
    });
    crate::format::parse_value(object)
        .map(Some)
        .map_err(|e| format!("the Dataplane of Pod {namespace}/{name} is not valid: {e}"))
}

/// `probes` of a Pod whose injector turned on virtual probes
/// (`kuma.io/virtual-probes: enabled`): the probe listener's port and, for
/// each HTTP probe of its containers the injector pointed there
/// (`GET /<port><path>`), the app port and path it stands for.
fn virtual_probes(pod: &Pod, annotations: &BTreeMap<String, String>) -> Result<Option<Value>, String> {
    if annotations.get(a::VIRTUAL_PROBES).map(String::as_str) != Some("enabled") {
        return Ok(None);
    }
    let port: u16 = match annotations.get(a::VIRTUAL_PROBES_PORT) {
        Some(p) => p
            .parse()
            .map_err(|_| format!("annotation {}: {p:?} is not a port", a::VIRTUAL_PROBES_PORT))?,
        None => 9000,
    };
    let mut endpoints: Vec<Value> = Vec::new();
    let spec = pod.spec.as_ref();
    let containers = spec.map(|s| s.containers.as_slice()).unwrap_or_default();
    let sidecars = spec
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or_default()
        .iter()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"));
    for container in containers.iter().chain(sidecars) {
        let probes = [
            &container.liveness_probe,
            &container.readiness_probe,
            &container.startup_probe,
        ];
        for get in probes.into_iter().flatten().filter_map(|p| p.http_get.as_ref()) {
            if get.port != IntOrString::Int(i32::from(port)) {
                continue;
            }
            let Some(path) = get.path.as_deref() else { continue };
            let Some((app_port, app_path)) = path.strip_prefix('/').and_then(|rest| {
                let (number, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
                let app_port: u16 = number.parse().ok()?;
                Some((app_port, if tail.is_empty() { "/" } else { tail }))
            }) else {
                continue;
            };
            let endpoint = json!({"inboundPort": app_port, "inboundPath": app_path, "path": path});
            if !endpoints.contains(&endpoint) {
                endpoints.push(endpoint);
            }
        }
    }
    Ok(Some(json!({"port": port, "endpoints": endpoints})))
}

/// Whether the Pod serves: not terminating, and Ready (its Ready condition,
/// or every container ready when there is none).
pub fn pod_ready(pod: &Pod) -> bool {
    if pod.metadata.deletion_timestamp.is_some() {
        return false;
    }
    let Some(status) = &pod.status else { return false };
    if let Some(ready) = status.conditions.iter().flatten().find(|c| c.type_ == "Ready") {
        return ready.status == "True";
    }
    let statuses = status.container_statuses.as_deref().unwrap_or_default();
    !statuses.is_empty() && statuses.iter().all(|c| c.ready)
}

/// The container port a Service port reaches, with its name: the
/// `targetPort` number (or the Service port when none), or the container
/// port of that name.
fn container_port(pod: &Pod, port: &ServicePort) -> Option<(i32, Option<String>)> {
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    let declared = containers.iter().flat_map(|c| c.ports.iter().flatten());
    match &port.target_port {
        Some(IntOrString::String(name)) => declared
            .into_iter()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| (p.container_port, p.name.clone())),
        other => {
            let number = match other {
                Some(IntOrString::Int(n)) => *n,
                _ => port.port,
            };
            let name = declared
                .into_iter()
                .find(|p| p.container_port == number)
                .and_then(|p| p.name.clone());
            Some((number, name))
        }
    }
}

/// The protocol of a Service port: a known `appProtocol`, else the
/// Service's `<port>.service.kuma.io/protocol` annotation, else tcp.
fn protocol_of(port: &ServicePort, service_annotations: &BTreeMap<String, String>) -> String {
    let known = |p: &str| {
        let p = p.to_ascii_lowercase();
        let p = match p.as_str() {
            "kubernetes.io/h2c" => "http2".to_string(),
            _ => p,
        };
        PROTOCOLS.contains(&p.as_str()).then_some(p)
    };
    if let Some(p) = port.app_protocol.as_deref().and_then(known) {
        return p;
    }
    let key = format!("{}{}", port.port, a::SERVICE_PROTOCOL_SUFFIX);
    service_annotations
        .get(&key)
        .and_then(|p| known(p))
        .unwrap_or_else(|| "tcp".into())
}

fn split_list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// `transparentProxying` from the legacy annotations, or from the
/// ConfigMap-mode JSON annotation.
fn transparent_proxying(annotations: &BTreeMap<String, String>) -> Result<Option<Value>, String> {
    let port = |key: &str, default: u32| -> Result<u32, String> {
        match annotations.get(key) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("annotation {key}: {v:?} is not a port")),
        }
    };
    let family = |v: &str| match v.to_ascii_lowercase().as_str() {
        "ipv4" => "IPv4",
        "ipv6" => "IPv6",
        _ => "DualStack",
    };
    let mut tp = Map::new();
    if annotations.get(a::TRANSPARENT_PROXYING).map(String::as_str) == Some("enabled") {
        tp.insert(
            "redirectPortInbound".into(),
            port(a::TRANSPARENT_PROXYING_INBOUND_PORT, 15006)?.into(),
        );
        tp.insert(
            "redirectPortOutbound".into(),
            port(a::TRANSPARENT_PROXYING_OUTBOUND_PORT, 15001)?.into(),
        );
        if let Some(m) = annotations.get(a::TRANSPARENT_PROXYING_IP_FAMILY_MODE) {
            tp.insert("ipFamilyMode".into(), family(m).into());
        }
    } else if let Some(config) = annotations.get(a::TRANSPARENT_PROXY_CONFIG) {
        let config: Value = serde_json::from_str(config)
            .map_err(|e| format!("annotation {}: not JSON: {e}", a::TRANSPARENT_PROXY_CONFIG))?;
        let get_port =
            |path: &str, default: u64| config.pointer(path).and_then(Value::as_u64).unwrap_or(default);
        tp.insert(
            "redirectPortInbound".into(),
            get_port("/redirect/inbound/port", 15006).into(),
        );
        tp.insert(
            "redirectPortOutbound".into(),
            get_port("/redirect/outbound/port", 15001).into(),
        );
        if let Some(m) = config.get("ipFamilyMode").and_then(Value::as_str) {
            tp.insert("ipFamilyMode".into(), family(m).into());
        }
    } else {
        return Ok(None);
    }
    if let Some(v) = annotations.get(a::DIRECT_ACCESS_SERVICES) {
        tp.insert("directAccessServices".into(), json!(split_list(v)));
    }
    if let Some(v) = annotations.get(a::REACHABLE_SERVICES) {
        tp.insert("reachableServices".into(), json!(split_list(v)));
    }
    if let Some(v) = annotations.get(a::REACHABLE_BACKENDS) {
        let refs: Value = serde_yaml::from_str(v)
            .map_err(|e| format!("annotation {}: not YAML: {e}", a::REACHABLE_BACKENDS))?;
        tp.insert("reachableBackends".into(), refs);
    }
    Ok(Some(Value::Object(tp)))
}
