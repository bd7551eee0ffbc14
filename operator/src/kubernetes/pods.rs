//! Pod → Dataplane: every Pod with Kuma's sidecar gets a Dataplane of the
//! same name in its namespace, owned by the Pod (the garbage collector
//! removes it with the Pod), converted by `kuma_crds::kubernetes::pod`.
//!
//! Event-driven (kube-runtime's `Controller`, no polling): a Pod change
//! reconciles that Pod; a Service change the Pods its selector matches (old
//! and new); an EndpointSlice change the Pods it lists (old and new: a
//! Service without a selector is served by the Pods its slices list); a
//! Namespace change (its mesh label) the Pods in it; a Dataplane change its
//! Pod. Those triggers come from the
//! caches the reconciliation reads, after the cache holds the change
//! (`cache_with_changes`). A Dataplane is written (server-side apply) only when what
//! it would hold differs from what is stored.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use kuma_crds::admission::Context;
use kuma_crds::format::to_kubernetes;
use kuma_crds::kubernetes::pod::{PodInput, pod_to_dataplane};
use kuma_crds::kubernetes::{is_injected, owners_of};
use kuma_crds::resource::ResourceType;
use serde_json::{Value, json};

use super::cache::{cache, cache_with_changes, in_namespace, prune};

/// The field manager of everything kuma-cp applies.
pub const FIELD_MANAGER: &str = "kuma-cp";

/// Why a Pod was not reconciled.
#[derive(Debug, thiserror::Error)]
pub enum PodError {
    /// The Pod cannot be converted (bad annotation and the like).
    #[error("{0}")]
    Convert(String),
    /// The API server refused or could not be reached.
    #[error("writing the Dataplane: {0}")]
    Write(#[from] kube::Error),
}

/// What the controller counts (`/metrics`: the benchmark reads them).
#[derive(Debug, Default)]
pub struct PodControllerStats {
    /// Reconciliations run.
    pub reconciled: prometheus_client::metrics::counter::Counter,
    /// Dataplanes written (each one API request).
    pub writes: prometheus_client::metrics::counter::Counter,
}

impl PodControllerStats {
    /// Registers the counters (`kuma_cp_pod_reconciliations_total`,
    /// `kuma_cp_dataplane_writes_total`).
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "kuma_cp_pod_reconciliations",
            "Pods reconciled into Dataplanes",
            self.reconciled.clone(),
        );
        registry.register(
            "kuma_cp_dataplane_writes",
            "Dataplanes written to the API server by the Pod controller",
            self.writes.clone(),
        );
    }
}

struct Ctx {
    client: kube::Client,
    admission: Context,
    services: Store<Service>,
    endpoint_slices: Store<EndpointSlice>,
    namespaces: Store<Namespace>,
    replica_sets: Store<ReplicaSet>,
    jobs: Store<Job>,
    dataplanes: Store<DynamicObject>,
    dataplane_resource: ApiResource,
    stats: Arc<PodControllerStats>,
}

/// Runs the controller until the client's watches end.
pub async fn run(client: kube::Client, admission: Context, stats: Arc<PodControllerStats>) {
    let dataplane_resource = crate::store::kubernetes::api_resource(ResourceType::Dataplane);
    let (services, t1, service_changes) = cache_with_changes(Api::<Service>::all(client.clone()), ());
    let (namespaces, t2, namespace_changes) = cache_with_changes(Api::<Namespace>::all(client.clone()), ());
    let (endpoint_slices, t6, endpoint_slice_changes) =
        cache_with_changes(Api::<EndpointSlice>::all(client.clone()), ());
    let (replica_sets, t3) = cache(Api::<ReplicaSet>::all(client.clone()), ());
    let (jobs, t4) = cache(Api::<Job>::all(client.clone()), ());
    let (dataplanes, t5, dataplane_changes) = cache_with_changes(
        Api::<DynamicObject>::all_with(client.clone(), &dataplane_resource),
        dataplane_resource.clone(),
    );
    for store in [
        &services.wait_until_ready().await,
        &namespaces.wait_until_ready().await,
        &endpoint_slices.wait_until_ready().await,
    ] {
        if store.is_err() {
            return;
        }
    }
    let _ = replica_sets.wait_until_ready().await;
    let _ = jobs.wait_until_ready().await;
    let _ = dataplanes.wait_until_ready().await;
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        admission,
        services,
        endpoint_slices,
        namespaces,
        replica_sets,
        jobs,
        dataplanes,
        dataplane_resource: dataplane_resource.clone(),
        stats,
    });
    // The controller's own cache of Pods, pruned as the others are.
    let (pod_cache, pod_writer) = reflector::store();
    let pod_events = reflector(
        pod_writer,
        watcher(Api::<Pod>::all(client.clone()), watcher::Config::default()).modify(prune::<Pod>),
    )
    .applied_objects();
    let controller = Controller::for_stream(pod_events, pod_cache);
    let services_for_slices = ctx.services.clone();
    let pods = controller.store();
    let pods_for_namespace = pods.clone();
    controller
        .with_config(kube::runtime::controller::Config::default().concurrency(10))
        .watches_stream(service_changes, move |service| pods_selected_by(&pods, &service))
        .watches_stream(endpoint_slice_changes, move |slice| {
            pods_listed_by(&services_for_slices, &slice)
        })
        .watches_stream(namespace_changes, move |namespace| {
            in_namespace(&pods_for_namespace, &namespace)
        })
        // A Dataplane changed or deleted by someone else is put back.
        .watches_stream_with(dataplane_changes, owning_pod, dataplane_resource)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "pod reconciliation");
            }
        })
        .await;
    for t in [t1, t2, t3, t4, t5, t6] {
        t.abort();
    }
}

/// The Pods a Service's selector matches (in its namespace).
fn pods_selected_by(pods: &Store<Pod>, service: &Service) -> Vec<ObjectRef<Pod>> {
    let namespace = service.metadata.namespace.clone();
    let selector = service
        .spec
        .as_ref()
        .and_then(|s| s.selector.clone())
        .unwrap_or_default();
    if selector.is_empty() {
        return Vec::new();
    }
    pods.state()
        .into_iter()
        .filter(|p| p.metadata.namespace == namespace)
        .filter(|p| {
            let labels = p.metadata.labels.clone().unwrap_or_default();
            selector.iter().all(|(k, v)| labels.get(k) == Some(v))
        })
        .map(|p| ObjectRef::from_obj(&*p))
        .collect()
}

/// The Pods an EndpointSlice lists, when the slice can change what they
/// serve: the slices of a Service with a selector follow the selector
/// (whose changes come through the Service), so only those of Services
/// without one (or not known yet) matter. Skipping the rest keeps a Pod's
/// readiness change, which rewrites its Service's slices, from
/// reconciling every Pod of the Service.
fn pods_listed_by(services: &Store<Service>, slice: &EndpointSlice) -> Vec<ObjectRef<Pod>> {
    let Some(namespace) = slice.metadata.namespace.as_deref() else {
        return Vec::new();
    };
    let service = slice
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(kuma_crds::kubernetes::SERVICE_NAME_LABEL))
        .and_then(|name| services.get(&ObjectRef::new(name).within(namespace)));
    if service.is_some_and(|s| !kuma_crds::kubernetes::served_by_listing(&s)) {
        return Vec::new();
    }
    kuma_crds::kubernetes::pods_listed(slice)
        .map(|pod| ObjectRef::new(pod).within(namespace))
        .collect()
}

/// The Pod a Dataplane was made from, if a Pod owns it.
fn owning_pod(dataplane: DynamicObject) -> Option<ObjectRef<Pod>> {
    let namespace = dataplane.metadata.namespace.as_deref()?;
    dataplane
        .metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.kind == "Pod" && o.api_version == "v1")
        .map(|o| ObjectRef::new(&o.name).within(namespace))
}

fn error_policy(pod: Arc<Pod>, error: &PodError, _: Arc<Ctx>) -> Action {
    tracing::warn!(
        pod = pod.metadata.name.as_deref().unwrap_or_default(),
        namespace = pod.metadata.namespace.as_deref().unwrap_or_default(),
        %error,
        "cannot reconcile the Dataplane of a Pod"
    );
    Action::requeue(Duration::from_secs(5))
}

/// The Dataplane the Pod should have, in its Kubernetes form with the Pod
/// as owner; `None` when it should have none (yet).
fn desired(pod: &Pod, ctx: &Ctx) -> Result<Option<Value>, PodError> {
    if !is_injected(pod) {
        return Ok(None);
    }
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let ns = ctx.namespaces.get(&ObjectRef::new(&namespace));
    let empty = BTreeMap::new();
    let all_services = ctx.services.state();
    // The EndpointSlices are read only where a Service of the namespace has
    // no selector (rare), not on every reconciliation.
    let listed_by = if all_services.iter().any(|s| {
        s.metadata.namespace.as_deref() == Some(namespace.as_str())
            && kuma_crds::kubernetes::served_by_listing(s)
    }) {
        let pod_name = pod.metadata.name.clone().unwrap_or_default();
        let slices = ctx.endpoint_slices.state();
        kuma_crds::kubernetes::services_listing(&namespace, &pod_name, slices.iter().map(|s| &**s))
    } else {
        Default::default()
    };
    // Only the Services the Pod serves are copied for the converter
    // (copying every Service of the namespace per reconciliation was most
    // of the controller's time with 1,000 Pods).
    let services: Vec<Service> = all_services
        .into_iter()
        .filter(|s| kuma_crds::kubernetes::serves(s, pod, &listed_by))
        .map(|s| (*s).clone())
        .collect();
    let found: Vec<_> = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .filter_map(|owner| {
            let refs = match owner.kind.as_str() {
                "ReplicaSet" => ctx
                    .replica_sets
                    .get(&ObjectRef::new(&owner.name).within(&namespace))
                    .map(|o| o.metadata.owner_references.clone().unwrap_or_default()),
                "Job" => ctx
                    .jobs
                    .get(&ObjectRef::new(&owner.name).within(&namespace))
                    .map(|o| o.metadata.owner_references.clone().unwrap_or_default()),
                _ => None,
            }?;
            Some((owner.kind.clone(), owner.name.clone(), refs))
        })
        .collect();
    let owners = owners_of(pod, &found);
    let input = PodInput {
        pod,
        namespace_labels: ns
            .as_ref()
            .and_then(|n| n.metadata.labels.as_ref())
            .unwrap_or(&empty),
        namespace_annotations: ns
            .as_ref()
            .and_then(|n| n.metadata.annotations.as_ref())
            .unwrap_or(&empty),
        services: &services,
        listed_by: &listed_by,
        owners: &owners,
        zone: &ctx.admission.zone,
    };
    let Some(dataplane) = pod_to_dataplane(&input).map_err(PodError::Convert)? else {
        return Ok(None);
    };
    let dataplane = kuma_crds::admission::computed(&ctx.admission, dataplane);
    let mut object = to_kubernetes(&dataplane, &namespace);
    object["metadata"]["ownerReferences"] = json!([{
        "apiVersion": "v1",
        "kind": "Pod",
        "name": pod.metadata.name,
        "uid": pod.metadata.uid,
        "controller": true,
        "blockOwnerDeletion": true,
    }]);
    Ok(Some(object))
}

/// Whether the stored Dataplane already holds what `desired` says.
fn up_to_date(stored: &DynamicObject, desired: &Value) -> bool {
    let labels = stored.metadata.labels.clone().unwrap_or_default();
    let desired_labels: BTreeMap<String, String> = desired
        .pointer("/metadata/labels")
        .and_then(|l| serde_json::from_value(l.clone()).ok())
        .unwrap_or_default();
    stored.data.get("spec") == desired.get("spec")
        && stored.data.get("mesh") == desired.get("mesh")
        && labels == desired_labels
}

async fn reconcile(pod: Arc<Pod>, ctx: Arc<Ctx>) -> Result<Action, PodError> {
    ctx.stats.reconciled.inc();
    let Some(desired) = desired(&pod, &ctx)? else {
        return Ok(Action::await_change());
    };
    let name = pod.metadata.name.clone().unwrap_or_default();
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let stored = ctx
        .dataplanes
        .get(&ObjectRef::new_with(&name, ctx.dataplane_resource.clone()).within(&namespace));
    if stored.as_deref().is_some_and(|s| up_to_date(s, &desired)) {
        return Ok(Action::await_change());
    }
    let api: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), &namespace, &ctx.dataplane_resource);
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&desired),
    )
    .await?;
    ctx.stats.writes.inc();
    tracing::debug!(pod = %name, %namespace, "Dataplane written");
    Ok(Action::await_change())
}
