//! The properties of one AdmissionReview through the real router, for the
//! `admission_review` fuzz target and its corpus replay. Whatever the API
//! server (or anyone reaching the port) sends:
//!
//! - the answer is HTTP 200 with an AdmissionReview response (what the API
//!   server needs to apply the failure policy), carrying the request's uid
//!   when the request had one, and a message when it denies;
//! - a patch is a JSON Patch that applies to the object it was made for;
//! - an injected Pod is still a Pod, keeps every container it had, has
//!   `kuma-sidecar` and `kuma-init` exactly once, and injecting it again
//!   changes nothing; once it has an IP, the pod converter makes it a
//!   Dataplane that validates (or says why it cannot);
//! - defaulting and owner references, applied, are applied: a second
//!   review of the patched object asks for no further change;
//! - validation never patches;
//! - the pod converter alone, on any Pod and Services (input
//!   `{"pod": …, "services": […]}`): a Pod without an IP has no Dataplane
//!   yet; a Dataplane it makes validates, is the same when made again, and
//!   serves only as a Service that selects the Pod, or as its workload.
//!
//! An input is a route chosen by its first byte (one past the routes: the
//! converter), then the body.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use k8s_openapi::api::core::v1::{Pod, PodCondition, PodStatus, Service};
use kube::core::DynamicObject;
use kube::core::admission::AdmissionReview;
use kuma_crds::admission::{Context, Environment};
use kuma_crds::kubernetes::PodOwners;
use kuma_crds::kubernetes::pod::{PodInput, pod_to_dataplane};
use kuma_crds::resource::Form;
use serde_json::Value;
use tower::ServiceExt;

use crate::injector::{InjectorConfig, NamespaceFacts};
use crate::server::{Cluster, MeshFacts, Webhooks, router};

/// The routes, by an input's first byte.
pub const ROUTES: &[&str] = &[
    "/inject-sidecar",
    "/validate-kuma-io-v1alpha1",
    "/default-kuma-io-v1alpha1-mesh",
    "/owner-reference-kuma-io-v1alpha1",
];

/// Labels of every namespace of the fixed cluster (injection enabled).
fn namespace_labels() -> BTreeMap<String, String> {
    [("kuma.io/sidecar-injection".to_string(), "enabled".to_string())].into()
}

/// The Service every namespace has: `web`, selecting `app: web`, port 80 to
/// the named port `http`.
fn services() -> Vec<Service> {
    let service = serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "annotations": {"80.service.kuma.io/protocol": "http"}},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]},
    });
    serde_json::from_value(service).map_or_else(|_| Vec::new(), |s| vec![s])
}

/// A cluster of namespaces labelled for injection, the mesh `default`, and
/// the Service of [`services`] in every namespace.
struct FixedCluster;

#[async_trait::async_trait]
impl Cluster for FixedCluster {
    async fn namespace(&self, name: &str) -> Result<NamespaceFacts, String> {
        Ok(NamespaceFacts {
            name: name.into(),
            labels: namespace_labels(),
            annotations: BTreeMap::new(),
        })
    }
    async fn mesh(&self, name: &str) -> Result<Option<MeshFacts>, String> {
        Ok((name == "default").then(|| MeshFacts {
            uid: "mesh-uid".into(),
            deleting: false,
        }))
    }
    async fn services(&self, _: &str) -> Result<Vec<Service>, String> {
        Ok(services())
    }
    async fn pod_owners(&self, _: &Pod) -> Result<PodOwners, String> {
        Ok(PodOwners::default())
    }
    async fn dataplanes_in_mesh(&self, _: &str) -> Result<usize, String> {
        Ok(0)
    }
}

fn webhooks() -> Arc<Webhooks> {
    Arc::new(Webhooks {
        cluster: Arc::new(FixedCluster),
        injector: InjectorConfig {
            ca_cert_pem: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into(),
            ..InjectorConfig::default()
        },
        admission: Context::new(Environment::Kubernetes),
        trusted_users: Vec::new(),
    })
}

/// Checks one input; `Err` says which property broke.
pub fn check_review(data: &[u8]) -> Result<(), String> {
    let (selector, body) = data.split_first().map_or((0, &[][..]), |(s, b)| (*s, b));
    let Some(route) = ROUTES.get(usize::from(selector) % (ROUTES.len() + 1)) else {
        return check_conversion(body);
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(check(route, body.to_vec()))
}

/// What a route answered: allowed, message, patch (decoded), uid.
struct Answer {
    allowed: bool,
    message: String,
    patch: Option<json_patch::Patch>,
    uid: String,
}

async fn post(route: &str, body: Vec<u8>) -> Result<Answer, String> {
    let request = Request::post(route)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .map_err(|e| e.to_string())?;
    let response = match router(webhooks()).oneshot(request).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .map_err(|e| e.to_string())?;
    if status != axum::http::StatusCode::OK {
        return Err(format!(
            "{route}: HTTP {status}: {}",
            String::from_utf8_lossy(&bytes)
        ));
    }
    let review: AdmissionReview<DynamicObject> = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{route}: the answer is not an AdmissionReview: {e}"))?;
    let response = review
        .response
        .ok_or_else(|| format!("{route}: the answer has no response"))?;
    let patch = match &response.patch {
        None => None,
        Some(bytes) => Some(
            serde_json::from_slice::<json_patch::Patch>(bytes)
                .map_err(|e| format!("{route}: the patch is not a JSON Patch: {e}"))?,
        ),
    };
    Ok(Answer {
        allowed: response.allowed,
        message: response.result.message.clone(),
        patch,
        uid: response.uid,
    })
}

async fn check(route: &str, body: Vec<u8>) -> Result<(), String> {
    let request: Option<Value> = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("request").cloned());
    let answer = post(route, body.clone()).await?;
    // The request's uid, when the review parsed as one.
    let parsed = serde_json::from_slice::<AdmissionReview<DynamicObject>>(&body)
        .ok()
        .and_then(|r| r.request);
    if let Some(request) = &parsed
        && answer.uid != request.uid
    {
        return Err(format!(
            "{route}: uid {:?} answered as {:?}",
            request.uid, answer.uid
        ));
    }
    if !answer.allowed && answer.message.trim().is_empty() {
        return Err(format!("{route}: denied without a message"));
    }
    let Some(patch) = answer.patch else {
        return Ok(());
    };
    if !answer.allowed {
        return Err(format!("{route}: a denial carries a patch"));
    }
    if route == ROUTES[1] {
        return Err(format!("{route}: validation patched the object"));
    }
    // A body serde_json reads as a review but not as a JSON value (invalid
    // UTF-8 in a field the review ignores): the request as read.
    let request = request.or_else(|| parsed.as_ref().and_then(|r| serde_json::to_value(r).ok()));
    let Some(request) = request else {
        return Err(format!("{route}: a patch without a request"));
    };
    let mut object = request.get("object").cloned().unwrap_or(Value::Null);
    let original = object.clone();
    json_patch::patch(&mut object, &patch)
        .map_err(|e| format!("{route}: the patch does not apply to the object: {e}"))?;

    // Reviewed again, the patched object needs nothing more.
    let mut again = request.clone();
    again["object"] = object.clone();
    let again_body = serde_json::to_vec(&serde_json::json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": again,
    }))
    .map_err(|e| e.to_string())?;
    let second = post(route, again_body).await?;
    if !second.allowed || second.patch.as_ref().is_some_and(|p| !p.0.is_empty()) {
        return Err(format!(
            "{route}: reviewing the patched object again: allowed {}, patch {:?}, {}",
            second.allowed, second.patch, second.message
        ));
    }
    if route == ROUTES[0] {
        let namespace = request
            .get("namespace")
            .and_then(Value::as_str)
            .unwrap_or("default")
            .to_string();
        check_injected(&original, object, &namespace)?;
    }
    Ok(())
}

/// The container names of a Pod's JSON (`initContainers` and `containers`).
fn container_names(pod: &Value) -> Vec<String> {
    ["initContainers", "containers"]
        .iter()
        .flat_map(|list| {
            pod.pointer(&format!("/spec/{list}"))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|c| c.get("name").and_then(Value::as_str).map(String::from))
        .collect()
}

fn check_injected(original: &Value, injected: Value, namespace: &str) -> Result<(), String> {
    let before = container_names(original);
    let after = container_names(&injected);
    for name in &before {
        if !after.contains(name) {
            return Err(format!("injection lost the container {name:?}: {after:?}"));
        }
    }
    for sidecar in ["kuma-sidecar", "kuma-init"] {
        let count = after.iter().filter(|n| n.as_str() == sidecar).count();
        if count != 1 {
            return Err(format!("{sidecar} {count} times after injection: {after:?}"));
        }
    }
    let mut pod: Pod =
        serde_json::from_value(injected).map_err(|e| format!("the injected object is not a Pod: {e}"))?;
    pod.metadata.namespace = Some(namespace.to_string());
    if pod.metadata.name.as_deref().unwrap_or_default().is_empty() {
        // The API server names a generated Pod before the converter sees it.
        pod.metadata.name = Some("generated-x1y2z".into());
    }
    pod.status = Some(PodStatus {
        pod_ip: Some("10.0.0.7".into()),
        phase: Some("Running".into()),
        conditions: Some(vec![PodCondition {
            type_: "Ready".into(),
            status: "True".into(),
            ..PodCondition::default()
        }]),
        ..PodStatus::default()
    });
    let services = services();
    let owners = PodOwners::default();
    let labels = namespace_labels();
    let annotations = BTreeMap::new();
    let input = PodInput {
        pod: &pod,
        namespace_labels: &labels,
        namespace_annotations: &annotations,
        services: &services,
        listed_by: &Default::default(),
        owners: &owners,
        zone: kuma_crds::admission::DEFAULT_ZONE,
    };
    match pod_to_dataplane(&input) {
        Ok(Some(dataplane)) => dataplane
            .validate(Form::Kubernetes)
            .map_err(|e| format!("the injected Pod's Dataplane does not validate: {e}")),
        Ok(None) => Err("an injected Pod with an IP has no Dataplane".into()),
        // The converter names what it cannot convert (an annotation it
        // cannot read); that is its answer, not a broken property.
        Err(_) => Ok(()),
    }
}

/// The converter on any Pod and Services.
fn check_conversion(body: &[u8]) -> Result<(), String> {
    #[derive(serde::Deserialize)]
    struct Input {
        pod: Pod,
        #[serde(default)]
        services: Vec<Service>,
    }
    let Ok(input) = serde_json::from_slice::<Input>(body) else {
        return Ok(());
    };
    let owners = PodOwners::default();
    let labels = namespace_labels();
    let annotations = BTreeMap::new();
    let convert = |pod: &Pod| {
        pod_to_dataplane(&PodInput {
            pod,
            namespace_labels: &labels,
            namespace_annotations: &annotations,
            services: &input.services,
            listed_by: &Default::default(),
            owners: &owners,
            zone: kuma_crds::admission::DEFAULT_ZONE,
        })
    };
    let has_ip = input
        .pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.as_deref())
        .is_some_and(|ip| !ip.is_empty());
    let first = convert(&input.pod);
    if first != convert(&input.pod) {
        return Err("the converter gave two answers for one Pod".into());
    }
    let dataplane = match first {
        Ok(Some(dataplane)) if has_ip => dataplane,
        Ok(Some(_)) => return Err("a Pod without an IP has a Dataplane".into()),
        Ok(None) if has_ip => return Err("a Pod with an IP has no Dataplane".into()),
        Ok(None) | Err(_) => return Ok(()),
    };
    dataplane
        .validate(Form::Kubernetes)
        .map_err(|e| format!("the Dataplane does not validate: {e}"))?;
    let namespace = input.pod.metadata.namespace.clone().unwrap_or_default();
    let selecting = kuma_crds::kubernetes::selecting_services(&input.pod, &input.services);
    let serviceless = kuma_crds::kubernetes::serviceless_tag(
        &kuma_crds::kubernetes::workload_name(&input.pod, &owners),
        &namespace,
    );
    let kuma_crds::resource::Spec::Dataplane(spec) = &dataplane.spec else {
        return Err("the converter made something other than a Dataplane".into());
    };
    let inbounds = spec.networking.iter().flat_map(|n| n.inbound.iter().flatten());
    for inbound in inbounds {
        let service = inbound
            .tags
            .as_ref()
            .and_then(|t| t.get(kuma_crds::dataplane::SERVICE_TAG))
            .map(String::as_str)
            .unwrap_or_default();
        let from_a_service = selecting.iter().any(|s| {
            let name = s.metadata.name.clone().unwrap_or_default();
            s.spec
                .iter()
                .flat_map(|spec| spec.ports.iter().flatten())
                .any(|p| kuma_crds::kubernetes::service_tag(&name, &namespace, p.port) == service)
        });
        if !from_a_service && service != serviceless {
            return Err(format!(
                "an inbound serves as {service:?}, which no selecting Service nor the workload names"
            ));
        }
    }
    Ok(())
}
