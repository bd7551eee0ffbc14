//! Kubernetes objects as Kuma sees them, as pure functions over plain data
//! (no client, no I/O): which mesh an object belongs to, what service name
//! a Pod serves as, a Pod turned into its Dataplane ([`pod`]) and a Service
//! into its MeshService ([`service`]). The controllers feed them from their
//! caches; the injector uses the same naming.

pub mod annotations;
pub mod pod;
pub mod service;

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::resource::{DEFAULT_MESH, MESH_LABEL};

/// The name of the sidecar container Kuma injects.
pub const SIDECAR_CONTAINER: &str = "kuma-sidecar";
/// The name of the init container that sets up transparent proxying.
pub const INIT_CONTAINER: &str = "kuma-init";
/// The inbound port of a Pod no Service selects.
pub const SERVICELESS_PORT: u32 = 49151;

/// The mesh of an object: its `kuma.io/mesh` label, its annotation
/// (deprecated), its namespace's label, its namespace's annotation, else
/// `default` — the first that is set, as in Kuma.
pub fn mesh_of(
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
    namespace_labels: &BTreeMap<String, String>,
    namespace_annotations: &BTreeMap<String, String>,
) -> String {
    [labels, annotations, namespace_labels, namespace_annotations]
        .iter()
        .find_map(|m| m.get(MESH_LABEL).filter(|v| !v.is_empty()))
        .cloned()
        .unwrap_or_else(|| DEFAULT_MESH.to_string())
}

/// Kuma's service tag of a Service port: `<name>_<namespace>_svc_<port>`.
pub fn service_tag(service: &str, namespace: &str, port: i32) -> String {
    format!("{service}_{namespace}_svc_{port}")
}

/// Kuma's service tag of a Pod no Service selects: `<workload>_<namespace>_svc`.
pub fn serviceless_tag(workload: &str, namespace: &str) -> String {
    format!("{workload}_{namespace}_svc")
}

/// What owns a Pod, as far as naming goes: the owner references of the
/// Pod's ReplicaSet or Job, when the Pod has one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodOwners {
    /// The kind and name of each owner of the Pod's owning ReplicaSet or Job.
    pub owners_of_owner: Vec<(String, String)>,
    /// Whether the Pod's ReplicaSet or Job was found.
    pub owner_found: bool,
}

/// The [`PodOwners`] of `pod` given the owner objects found (ReplicaSets
/// and Jobs of its namespace, as kind, name and their owner references).
pub fn owners_of(
    pod: &Pod,
    found: &[(
        String,
        String,
        Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>,
    )],
) -> PodOwners {
    for owner in pod.metadata.owner_references.iter().flatten() {
        if let Some((_, _, refs)) = found
            .iter()
            .find(|(kind, name, _)| *kind == owner.kind && *name == owner.name)
        {
            return PodOwners {
                owners_of_owner: refs.iter().map(|r| (r.kind.clone(), r.name.clone())).collect(),
                owner_found: true,
            };
        }
    }
    PodOwners::default()
}

/// The workload a Pod without a Service is named after, as Kuma names it:
/// the Deployment of its ReplicaSet, the CronJob of its Job, else the Pod's
/// name without the two generated suffixes (`web-5d4f8-x7k2p` → `web`).
pub fn workload_name(pod: &Pod, owners: &PodOwners) -> String {
    let pod_owners = pod.metadata.owner_references.as_deref().unwrap_or_default();
    for owner in pod_owners {
        let wanted = match owner.kind.as_str() {
            "ReplicaSet" => "Deployment",
            "Job" => "CronJob",
            _ => return name_from_pod(pod),
        };
        if !owners.owner_found || owners.owners_of_owner.is_empty() {
            return name_from_pod(pod);
        }
        if let Some((_, name)) = owners.owners_of_owner.iter().find(|(kind, _)| kind == wanted) {
            return name.clone();
        }
    }
    name_from_pod(pod)
}

fn name_from_pod(pod: &Pod) -> String {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let parts: Vec<&str> = name.split('-').collect();
    if parts.len() > 2 {
        parts[..parts.len() - 2].join("-")
    } else {
        name
    }
}

/// Whether a Pod has Kuma's sidecar: a `kuma-sidecar` container (regular,
/// or native as an init container) or the injected annotation.
pub fn is_injected(pod: &Pod) -> bool {
    let annotated = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(annotations::SIDECAR_INJECTED))
        .is_some_and(|v| v == "true");
    let spec = pod.spec.as_ref();
    let has_container = spec.is_some_and(|s| {
        s.containers.iter().any(|c| c.name == SIDECAR_CONTAINER)
            || s.init_containers
                .iter()
                .flatten()
                .any(|c| c.name == SIDECAR_CONTAINER)
    });
    annotated || has_container
}

/// The Services of `services` (the Pod's namespace's) that select `pod`
/// (see [`selects`]), by name.
pub fn selecting_services<'a>(pod: &Pod, services: &'a [Service]) -> Vec<&'a Service> {
    serving_services(pod, services, &BTreeSet::new())
}

/// The Services `pod` serves, by name: those whose selector matches it
/// and, as Kuma matches them "also via EndpointSlices", those without a
/// selector whose EndpointSlices list the Pod (`listed_by`, from
/// [`services_listing`]).
pub fn serving_services<'a>(
    pod: &Pod,
    services: &'a [Service],
    listed_by: &BTreeSet<String>,
) -> Vec<&'a Service> {
    let mut out: Vec<&Service> = services.iter().filter(|s| serves(s, pod, listed_by)).collect();
    out.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    out
}

/// Whether `pod` serves `service`: the Service selects it, or has no
/// selector and is one of `listed_by` (see [`serving_services`]).
pub fn serves(service: &Service, pod: &Pod, listed_by: &BTreeSet<String>) -> bool {
    if selects(service, pod) {
        return true;
    }
    service.metadata.namespace == pod.metadata.namespace
        && served_by_listing(service)
        && service
            .metadata
            .name
            .as_ref()
            .is_some_and(|n| listed_by.contains(n))
}

/// Whether the Pods `service` reaches are those its EndpointSlices list
/// (not ones a selector picks): it has no selector and is not an
/// ExternalName.
pub fn served_by_listing(service: &Service) -> bool {
    let Some(spec) = &service.spec else { return false };
    spec.type_.as_deref() != Some("ExternalName") && spec.selector.as_ref().is_none_or(|s| s.is_empty())
}

/// The label an EndpointSlice names its Service with.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The names of the Services whose EndpointSlices (of `slices`, any
/// namespace) list the Pod `name` in `namespace` as an endpoint's target.
pub fn services_listing<'a>(
    namespace: &str,
    name: &str,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
) -> BTreeSet<String> {
    slices
        .into_iter()
        .filter(|slice| slice.metadata.namespace.as_deref() == Some(namespace))
        .filter(|slice| pods_listed(slice).any(|pod| pod == name))
        .filter_map(|slice| slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL).cloned())
        .collect()
}

/// The names of the Pods an EndpointSlice lists (its namespace's).
pub fn pods_listed(slice: &EndpointSlice) -> impl Iterator<Item = &str> {
    slice
        .endpoints
        .iter()
        .filter_map(|e| e.target_ref.as_ref())
        .filter(|r| r.kind.as_deref() == Some("Pod"))
        .filter_map(|r| r.name.as_deref())
}

/// Whether `service` selects `pod`: the same namespace, a non-empty
/// selector all of whose labels the Pod has; ExternalName Services select
/// nothing.
pub fn selects(service: &Service, pod: &Pod) -> bool {
    if service.metadata.namespace != pod.metadata.namespace {
        return false;
    }
    let Some(spec) = &service.spec else { return false };
    if spec.type_.as_deref() == Some("ExternalName") {
        return false;
    }
    let labels = pod.metadata.labels.as_ref();
    match &spec.selector {
        Some(selector) if !selector.is_empty() => selector
            .iter()
            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v)),
        _ => false,
    }
}
