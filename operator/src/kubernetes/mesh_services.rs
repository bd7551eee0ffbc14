//! Service → MeshService, as Kuma's MeshService controller: in a mesh whose
//! `meshServices.mode` is `Everywhere` or `Exclusive`, every Service with a
//! selector gets a MeshService of the same name (owned by the Service,
//! converted by `kuma_crds::kubernetes::service`) with its ClusterIP as VIP;
//! in other meshes the MeshServices this controller made are removed. A
//! Service, its Namespace's mesh label or the Mesh's mode changing
//! reconciles the Services concerned.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kuma_crds::format::{parse_value, to_kubernetes};
use kuma_crds::kubernetes::annotations::MANAGED_BY_LABEL;
use kuma_crds::kubernetes::mesh_of;
use kuma_crds::kubernetes::service::{generates_mesh_services, service_to_mesh_service};
use kuma_crds::resource::{ResourceType, Spec};
use serde_json::json;

use super::cache::{cache_with_changes, in_namespace};
use super::pods::FIELD_MANAGER;

/// Why a Service was not reconciled.
#[derive(Debug, thiserror::Error)]
pub enum MeshServiceError {
    /// The Service cannot be converted.
    #[error("{0}")]
    Convert(String),
    /// The API server refused or could not be reached.
    #[error("writing the MeshService: {0}")]
    Write(#[from] kube::Error),
}

struct Ctx {
    client: kube::Client,
    namespaces: Store<Namespace>,
    meshes: Store<DynamicObject>,
    mesh_services: Store<DynamicObject>,
    mesh_service_resource: ApiResource,
}

/// Runs the controller until the client's watches end.
pub async fn run(client: kube::Client) {
    let mesh_resource = crate::store::kubernetes::api_resource(ResourceType::Mesh);
    let mesh_service_resource = crate::store::kubernetes::api_resource(ResourceType::MeshService);
    let (namespaces, t1, namespace_changes) = cache_with_changes(Api::<Namespace>::all(client.clone()), ());
    let (meshes, t2, mesh_changes) = cache_with_changes(
        Api::<DynamicObject>::all_with(client.clone(), &mesh_resource),
        mesh_resource.clone(),
    );
    let (mesh_services, t3, mesh_service_changes) = cache_with_changes(
        Api::<DynamicObject>::all_with(client.clone(), &mesh_service_resource),
        mesh_service_resource.clone(),
    );
    if namespaces.wait_until_ready().await.is_err()
        || meshes.wait_until_ready().await.is_err()
        || mesh_services.wait_until_ready().await.is_err()
    {
        return;
    }
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        namespaces,
        meshes,
        mesh_services,
        mesh_service_resource: mesh_service_resource.clone(),
    });
    let controller = Controller::new(Api::<Service>::all(client.clone()), watcher::Config::default());
    let services = controller.store();
    let services_of_namespace = services.clone();
    controller
        .watches_stream_with(
            mesh_changes,
            move |_mesh| {
                services
                    .state()
                    .into_iter()
                    .map(|s| ObjectRef::from_obj(&*s))
                    .collect::<Vec<_>>()
            },
            mesh_resource.clone(),
        )
        .watches_stream(namespace_changes, move |namespace| {
            in_namespace(&services_of_namespace, &namespace)
        })
        // A MeshService this controller made and someone else changed or
        // deleted is put back by reconciling its Service.
        .watches_stream_with(mesh_service_changes, owning_service, mesh_service_resource)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "service reconciliation");
            }
        })
        .await;
    for t in [t1, t2, t3] {
        t.abort();
    }
}

/// The Service a MeshService was made from, if a Service owns it.
fn owning_service(mesh_service: DynamicObject) -> Option<ObjectRef<Service>> {
    let namespace = mesh_service.metadata.namespace.as_deref()?;
    mesh_service
        .metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.kind == "Service" && o.api_version == "v1")
        .map(|o| ObjectRef::new(&o.name).within(namespace))
}

fn error_policy(service: Arc<Service>, error: &MeshServiceError, _: Arc<Ctx>) -> Action {
    tracing::warn!(
        service = service.metadata.name.as_deref().unwrap_or_default(),
        namespace = service.metadata.namespace.as_deref().unwrap_or_default(),
        %error,
        "cannot reconcile the MeshService of a Service"
    );
    Action::requeue(Duration::from_secs(5))
}

/// The `meshServices.mode` of `mesh`, if the Mesh exists.
fn mesh_generates(ctx: &Ctx, mesh: &str) -> bool {
    let Some(object) = ctx.meshes.get(&ObjectRef::new_with(mesh, ctx.meshes_resource())) else {
        return false;
    };
    let Ok(value) = serde_json::to_value(&*object) else {
        return false;
    };
    match parse_value(value).map(|r| r.spec) {
        Ok(Spec::Mesh(m)) => generates_mesh_services(m.mesh_services.as_ref().and_then(|s| s.mode)),
        _ => false,
    }
}

impl Ctx {
    fn meshes_resource(&self) -> ApiResource {
        crate::store::kubernetes::api_resource(ResourceType::Mesh)
    }
}

async fn reconcile(service: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action, MeshServiceError> {
    let name = service.metadata.name.clone().unwrap_or_default();
    let namespace = service.metadata.namespace.clone().unwrap_or_default();
    let empty = BTreeMap::new();
    let ns = ctx.namespaces.get(&ObjectRef::new(&namespace));
    let mesh = mesh_of(
        service.metadata.labels.as_ref().unwrap_or(&empty),
        service.metadata.annotations.as_ref().unwrap_or(&empty),
        ns.as_ref()
            .and_then(|n| n.metadata.labels.as_ref())
            .unwrap_or(&empty),
        ns.as_ref()
            .and_then(|n| n.metadata.annotations.as_ref())
            .unwrap_or(&empty),
    );
    let api: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), &namespace, &ctx.mesh_service_resource);
    let stored = ctx
        .mesh_services
        .get(&ObjectRef::new_with(&name, ctx.mesh_service_resource.clone()).within(&namespace));
    let desired = if mesh_generates(&ctx, &mesh) {
        service_to_mesh_service(&service, &mesh).map_err(MeshServiceError::Convert)?
    } else {
        None
    };
    let Some(mesh_service) = desired else {
        let ours = stored.as_ref().is_some_and(|s| {
            s.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(MANAGED_BY_LABEL))
                .is_some_and(|v| v == "k8s-controller")
        });
        if ours {
            api.delete(&name, &DeleteParams::default()).await?;
        }
        return Ok(Action::await_change());
    };
    let mut object = to_kubernetes(&mesh_service, &namespace);
    object["metadata"]["ownerReferences"] = json!([{
        "apiVersion": "v1",
        "kind": "Service",
        "name": name,
        "uid": service.metadata.uid,
        "controller": true,
        "blockOwnerDeletion": true,
    }]);
    let status = object.as_object_mut().and_then(|o| o.remove("status"));
    let unchanged = stored
        .as_ref()
        .is_some_and(|s| s.data.get("spec") == object.get("spec") && s.data.get("status") == status.as_ref());
    if unchanged {
        return Ok(Action::await_change());
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(&name, &params, &Patch::Apply(&object)).await?;
    if let Some(status) = status {
        let patch = json!({
            "apiVersion": object["apiVersion"],
            "kind": object["kind"],
            "status": status,
        });
        api.patch_status(&name, &params, &Patch::Apply(&patch)).await?;
    }
    Ok(Action::await_change())
}
