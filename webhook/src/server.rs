//! The thin part: AdmissionReviews in, decisions of the pure modules out.
//! What the decisions need to know about the cluster comes through the
//! [`Cluster`] trait kuma-cp implements; certificates come from files that
//! are reloaded when they change (no restart on renewal).

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use kube::core::{DynamicObject, Status};
use kuma_crds::admission::Context;
use kuma_crds::kubernetes::PodOwners;
use serde_json::Value;

use crate::injector::{Decision, InjectInput, InjectorConfig, NamespaceFacts, inject, patch, precheck};
use crate::validation::{Facts, MeshState, Refusal, Write, validate};

/// The largest AdmissionReview accepted (the API server's own limit on
/// objects is 1.5 MiB; reviews carry two).
pub const MAX_BODY: usize = 4 * 1024 * 1024;

/// What the webhooks ask of the cluster.
#[async_trait::async_trait]
pub trait Cluster: Send + Sync {
    /// A namespace's labels and annotations.
    async fn namespace(&self, name: &str) -> Result<NamespaceFacts, String>;
    /// A Mesh, `None` if it does not exist.
    async fn mesh(&self, name: &str) -> Result<Option<MeshFacts>, String>;
    /// The Services of a namespace.
    async fn services(&self, namespace: &str) -> Result<Vec<Service>, String>;
    /// Who owns the Pod's ReplicaSet or Job.
    async fn pod_owners(&self, pod: &Pod) -> Result<PodOwners, String>;
    /// How many Dataplanes a mesh has.
    async fn dataplanes_in_mesh(&self, mesh: &str) -> Result<usize, String>;
}

/// What the webhooks need to know of a Mesh.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MeshFacts {
    /// Its uid (owner references name it).
    pub uid: String,
    /// Whether it is being deleted.
    pub deleting: bool,
}

/// What the handlers share.
pub struct Webhooks {
    /// The cluster.
    pub cluster: Arc<dyn Cluster>,
    /// The injector's configuration.
    pub injector: InjectorConfig,
    /// Where the control plane runs.
    pub admission: Context,
    /// Users whose kuma.io writes are not checked (kuma-cp's ServiceAccount).
    pub trusted_users: Vec<String>,
}

/// The routes: `/inject-sidecar`, `/validate-kuma-io-v1alpha1`,
/// `/default-kuma-io-v1alpha1-mesh`, `/owner-reference-kuma-io-v1alpha1`
/// (the API server appends `?timeout=…`, which is ignored).
pub fn router(webhooks: Arc<Webhooks>) -> axum::Router {
    axum::Router::new()
        .route("/inject-sidecar", post(inject_sidecar))
        .route("/validate-kuma-io-v1alpha1", post(validate_kuma))
        .route("/default-kuma-io-v1alpha1-mesh", post(default_kuma))
        .route("/owner-reference-kuma-io-v1alpha1", post(owner_reference))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(webhooks)
}

fn review(response: AdmissionResponse) -> Response {
    (StatusCode::OK, axum::Json(response.into_review())).into_response()
}

/// The request of a review body, or the answer for a body that is not one.
fn request(body: &Bytes) -> Result<AdmissionRequest<DynamicObject>, Box<Response>> {
    let parsed: AdmissionReview<DynamicObject> = serde_json::from_slice(body).map_err(|e| {
        Box::new(review(AdmissionResponse::invalid(format!(
            "malformed AdmissionReview: {e}"
        ))))
    })?;
    parsed
        .try_into()
        .map_err(|e: kube::core::admission::ConvertAdmissionReviewError| {
            Box::new(review(AdmissionResponse::invalid(format!(
                "malformed AdmissionReview: {e}"
            ))))
        })
}

fn deny(req: &AdmissionRequest<DynamicObject>, code: u16, reason: &str, message: String) -> Response {
    let mut response = AdmissionResponse::from(req).deny(&message);
    response.result = Status::failure(&message, reason).with_code(code);
    review(response)
}

fn patched(req: &AdmissionRequest<DynamicObject>, ops: json_patch::Patch) -> Response {
    let response = AdmissionResponse::from(req);
    if ops.0.is_empty() {
        return review(response);
    }
    match response.with_patch(ops) {
        Ok(r) => review(r),
        Err(e) => deny(req, 500, "InternalError", format!("cannot encode the patch: {e}")),
    }
}

async fn inject_sidecar(State(w): State<Arc<Webhooks>>, body: Bytes) -> Response {
    let req = match request(&body) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    let Some(object) = &req.object else {
        return review(AdmissionResponse::from(&req));
    };
    // The object exactly as sent: the patch must apply to it, and it must
    // say it is a Pod if it says anything.
    let sent = sent_object(&body);
    for (field, expected) in [("kind", "Pod"), ("apiVersion", "v1")] {
        if let Some(found) = sent.get(field).filter(|v| v.as_str() != Some(expected)) {
            return deny(
                &req,
                400,
                "BadRequest",
                format!("the object is not a Pod: its {field} is {found}"),
            );
        }
    }
    let mut pod: Pod = match serde_json::to_value(object).and_then(serde_json::from_value) {
        Ok(p) => p,
        Err(e) => return deny(&req, 400, "BadRequest", format!("the object is not a Pod: {e}")),
    };
    // Pods of a Deployment have no namespace yet; the request says it.
    let namespace = req.namespace.clone().unwrap_or_else(|| "default".into());
    pod.metadata.namespace = Some(namespace.clone());
    let facts = match w.cluster.namespace(&namespace).await {
        Ok(f) => f,
        Err(e) => {
            return deny(
                &req,
                500,
                "InternalError",
                format!("could not retrieve namespace for pod: {e}"),
            );
        }
    };
    let mesh = match precheck(&pod, &facts, &w.injector) {
        Ok(Decision::Skip(reason)) => {
            tracing::debug!(%namespace, %reason, "not injected");
            return review(AdmissionResponse::from(&req));
        }
        Ok(Decision::Inject { mesh }) => mesh,
        Err(e) => return deny(&req, 500, "InternalError", e.to_string()),
    };
    match w.cluster.mesh(&mesh).await {
        Ok(Some(m)) if m.deleting => {
            return deny(
                &req,
                403,
                "Forbidden",
                format!("mesh {mesh:?} is being deleted: no Pod can join it"),
            );
        }
        Ok(Some(_)) => {}
        Ok(None) => {
            return deny(
                &req,
                500,
                "InternalError",
                format!("meshes.kuma.io {mesh:?} not found"),
            );
        }
        Err(e) => return deny(&req, 500, "InternalError", e),
    }
    let services = w.cluster.services(&namespace).await.unwrap_or_default();
    let owners = w.cluster.pod_owners(&pod).await.unwrap_or_default();
    let input = InjectInput {
        services: &services,
        owners: &owners,
    };
    match inject(&pod, &mesh, &input, &w.injector) {
        Ok(injected) => {
            let ops = patch(&pod, &injected);
            let mut applied = sent;
            match json_patch::patch(&mut applied, &ops) {
                Ok(()) => patched(&req, ops),
                Err(e) => deny(
                    &req,
                    400,
                    "BadRequest",
                    format!("the Pod as sent cannot take the injection patch: {e}"),
                ),
            }
        }
        Err(e) => deny(&req, 500, "InternalError", e.to_string()),
    }
}

/// The object exactly as the review carried it. The injection patch is
/// computed on the typed Pod, which fills in what the sender left out (an
/// absent `metadata`); the API server applies it to what it sent, so a
/// patch that would not apply there is refused here with its reason rather
/// than failing the request on the API server's side.
fn sent_object(body: &Bytes) -> Value {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|review| review.pointer("/request/object").cloned())
        .unwrap_or(Value::Null)
}

fn refused(req: &AdmissionRequest<DynamicObject>, refusal: &Refusal) -> Response {
    let (code, reason) = match refusal {
        Refusal::Invalid(_) => (422, "Invalid"),
        Refusal::Forbidden(_) => (403, "Forbidden"),
        Refusal::NotFound(_) => (400, "BadRequest"),
    };
    deny(req, code, reason, refusal.message())
}

fn json(object: Option<&DynamicObject>) -> Option<Value> {
    object.and_then(|o| serde_json::to_value(o).ok())
}

async fn validate_kuma(State(w): State<Arc<Webhooks>>, body: Bytes) -> Response {
    let req = match request(&body) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    let object = json(req.object.as_ref());
    let old_object = json(req.old_object.as_ref());
    let operation = format!("{:?}", req.operation).to_uppercase();
    let user = req.user_info.username.clone().unwrap_or_default();
    let subject = object.as_ref().or(old_object.as_ref());
    let kind = subject
        .and_then(|o| o.get("kind"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let mut facts = Facts {
        mesh: MeshState::Present,
        dataplanes_in_mesh: 0,
    };
    if let Some(mesh) = object.as_ref().and_then(crate::validation::mesh_of) {
        facts.mesh = match w.cluster.mesh(&mesh).await {
            Ok(Some(m)) if m.deleting => MeshState::Deleting,
            Ok(Some(_)) => MeshState::Present,
            Ok(None) => MeshState::Absent,
            Err(e) => return deny(&req, 500, "InternalError", e),
        };
    }
    if operation == "DELETE" && kind == "Mesh" {
        let name = subject
            .and_then(|o| o.pointer("/metadata/name"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        facts.dataplanes_in_mesh = match w.cluster.dataplanes_in_mesh(name).await {
            Ok(n) => n,
            Err(e) => return deny(&req, 500, "InternalError", e),
        };
    }
    let write = Write {
        operation: &operation,
        object: object.as_ref(),
        old_object: old_object.as_ref(),
        user: &user,
    };
    match validate(&w.admission, write, facts, &w.trusted_users) {
        Ok(()) => review(AdmissionResponse::from(&req)),
        Err(refusal) => refused(&req, &refusal),
    }
}

async fn default_kuma(State(w): State<Arc<Webhooks>>, body: Bytes) -> Response {
    let req = match request(&body) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    let Some(object) = json(req.object.as_ref()) else {
        return review(AdmissionResponse::from(&req));
    };
    match crate::defaulting::with_computed_labels(&w.admission, &object) {
        Ok(defaulted) => patched(&req, json_patch::diff(&object, &defaulted)),
        Err(refusal) => refused(&req, &refusal),
    }
}

async fn owner_reference(State(w): State<Arc<Webhooks>>, body: Bytes) -> Response {
    let req = match request(&body) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    let Some(object) = json(req.object.as_ref()) else {
        return review(AdmissionResponse::from(&req));
    };
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or_default();
    if !crate::defaulting::owned_by_mesh(kind) {
        return review(AdmissionResponse::from(&req));
    }
    let Some(mesh) = crate::validation::mesh_of(&object) else {
        return review(AdmissionResponse::from(&req));
    };
    match w.cluster.mesh(&mesh).await {
        Ok(Some(m)) => {
            let owned = crate::defaulting::with_mesh_owner(&object, &mesh, &m.uid);
            patched(&req, json_patch::diff(&object, &owned))
        }
        Ok(None) => deny(
            &req,
            400,
            "BadRequest",
            format!("meshes.kuma.io {mesh:?} not found"),
        ),
        Err(e) => deny(&req, 500, "InternalError", e),
    }
}

/// A certificate read from files and read again when they change, so a
/// renewed certificate is served without a restart.
#[derive(Debug)]
pub struct ReloadingCertificate {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<(Option<SystemTime>, Arc<rustls::sign::CertifiedKey>)>,
}

/// Why a certificate cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CertificateError(String);

fn load(cert: &PathBuf, key: &PathBuf) -> Result<Arc<rustls::sign::CertifiedKey>, CertificateError> {
    use rustls_pki_types::pem::PemObject;
    let chain = rustls_pki_types::CertificateDer::pem_file_iter(cert)
        .map_err(|e| CertificateError(format!("{}: {e}", cert.display())))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertificateError(format!("{}: {e}", cert.display())))?;
    let private = rustls_pki_types::PrivateKeyDer::from_pem_file(key)
        .map_err(|e| CertificateError(format!("{}: {e}", key.display())))?;
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(private)
        .map_err(|e| CertificateError(format!("{}: {e}", key.display())))?;
    Ok(Arc::new(rustls::sign::CertifiedKey::new(chain, signing)))
}

fn modified(path: &PathBuf) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl ReloadingCertificate {
    /// Loads `dir/tls.crt` and `dir/tls.key`.
    pub fn from_dir(dir: &std::path::Path) -> Result<Self, CertificateError> {
        let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
        let loaded = load(&cert, &key)?;
        Ok(ReloadingCertificate {
            current: RwLock::new((modified(&cert), loaded)),
            cert,
            key,
        })
    }

    /// A rustls server configuration serving this certificate.
    pub fn server_config(self) -> Arc<rustls::ServerConfig> {
        let mut config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map(|b| b.with_no_client_auth().with_cert_resolver(Arc::new(self)))
                .unwrap_or_else(|_| {
                    rustls::ServerConfig::builder()
                        .with_no_client_auth()
                        .with_cert_resolver(Arc::new(NoCertificate))
                });
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

#[derive(Debug)]
struct NoCertificate;

impl rustls::server::ResolvesServerCert for NoCertificate {
    fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<rustls::sign::CertifiedKey>> {
        None
    }
}

impl rustls::server::ResolvesServerCert for ReloadingCertificate {
    fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let now = modified(&self.cert);
        {
            let current = self.current.read().unwrap_or_else(|e| e.into_inner());
            if current.0 == now {
                return Some(current.1.clone());
            }
        }
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        match load(&self.cert, &self.key) {
            Ok(fresh) => {
                tracing::info!(cert = %self.cert.display(), "webhook certificate reloaded");
                *current = (now, fresh);
            }
            // A half-written renewal: keep serving the last good one.
            Err(e) => tracing::warn!(error = %e, "cannot reload the webhook certificate"),
        }
        Some(current.1.clone())
    }
}
