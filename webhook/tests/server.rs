//! The webhook server's handling of what the API server (or anyone who
//! reaches the port) may send: malformed reviews, bodies over the limit,
//! objects of unknown kinds, Pods that cannot be injected, namespaces that
//! are never touched; and the serving certificate renewed on disk and
//! served without a restart. Through the real router and a real TLS
//! handshake; the cluster is a table.

use std::sync::Arc;

use axum::body::Body;
use k8s_openapi::api::core::v1::{Pod, Service};
use kuma_crds::admission::{Context, Environment};
use kuma_crds::kubernetes::PodOwners;
use kuma_webhook::injector::{InjectorConfig, NamespaceFacts};
use kuma_webhook::server::{Cluster, MAX_BODY, MeshFacts, ReloadingCertificate, Webhooks, router};
use serde_json::{Value, json};
use tower::ServiceExt;

/// Namespaces labelled for injection: `shop`, `kube-system`, `kuma-system`;
/// meshes: `default`.
struct TableCluster;

#[async_trait::async_trait]
impl Cluster for TableCluster {
    async fn namespace(&self, name: &str) -> Result<NamespaceFacts, String> {
        Ok(NamespaceFacts {
            name: name.into(),
            labels: [("kuma.io/sidecar-injection".to_string(), "enabled".to_string())].into(),
            annotations: Default::default(),
        })
    }
    async fn mesh(&self, name: &str) -> Result<Option<MeshFacts>, String> {
        Ok((name == "default").then(|| MeshFacts {
            uid: "uid".into(),
            deleting: false,
        }))
    }
    async fn services(&self, _: &str) -> Result<Vec<Service>, String> {
        Ok(Vec::new())
    }
    async fn pod_owners(&self, _: &Pod) -> Result<PodOwners, String> {
        Ok(PodOwners::default())
    }
    async fn dataplanes_in_mesh(&self, _: &str) -> Result<usize, String> {
        Ok(0)
    }
}

fn app() -> axum::Router {
    router(Arc::new(Webhooks {
        cluster: Arc::new(TableCluster),
        injector: InjectorConfig {
            ca_cert_pem: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into(),
            ..InjectorConfig::default()
        },
        admission: Context::new(Environment::Kubernetes),
        trusted_users: Vec::new(),
    }))
}

/// The HTTP status and the JSON body of a POST.
async fn post(path: &str, body: impl Into<Body>) -> (u16, Value) {
    let request = axum::http::Request::post(path)
        .header("content-type", "application/json")
        .body(body.into())
        .unwrap_or_else(|e| panic!("{e}"));
    let response = app().oneshot(request).await.unwrap_or_else(|e| match e {});
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn review(kind: &str, namespace: &str, object: Value) -> Value {
    let resource = if kind == "Pod" { "pods" } else { "meshtimeouts" };
    let group = if kind == "Pod" { "" } else { "kuma.io" };
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "review-1",
            "kind": {"group": group, "version": "v1", "kind": kind},
            "resource": {"group": group, "version": "v1", "resource": resource},
            "namespace": namespace, "operation": "CREATE",
            "userInfo": {"username": "alice"},
            "object": object, "dryRun": false,
        },
    })
}

fn pod(namespace: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "namespace": namespace, "labels": labels},
        "spec": {"containers": [{"name": "web", "image": "nginx", "ports": [{"containerPort": 8080}]}]},
    })
}

/// Whether the review allowed the object, its message, and whether it
/// carries a patch (kube encodes the patch's bytes as a JSON array, which
/// the API server's decoder accepts as well as base64).
fn answer(body: &Value) -> (bool, String, Option<&Value>) {
    let response = &body["response"];
    (
        response["allowed"].as_bool().unwrap_or(false),
        response["status"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        response.get("patch").filter(|p| !p.is_null()),
    )
}

/// The injector's answer for `object` created in `namespace`: allowed,
/// message, whether it carries a patch.
async fn inject(namespace: &str, object: Value) -> (bool, String, bool) {
    let body = serde_json::to_vec(&review("Pod", namespace, object)).unwrap_or_default();
    let (_, reply) = post("/inject-sidecar", body).await;
    let (allowed, message, patch) = answer(&reply);
    (allowed, message, patch.is_some())
}

#[tokio::test]
async fn malformed_reviews_get_a_clear_refusal() {
    for path in [
        "/inject-sidecar",
        "/validate-kuma-io-v1alpha1",
        "/default-kuma-io-v1alpha1-mesh",
        "/owner-reference-kuma-io-v1alpha1",
    ] {
        for body in [
            "not json at all".to_string(),
            "{\"apiVersion\": \"admission.k8s.io/v1\", \"kind\": \"AdmissionReview\"}".to_string(),
            "{\"request\": {\"uid\": 7}}".to_string(),
            "[]".to_string(),
        ] {
            let (status, reply) = post(path, body.clone()).await;
            assert_eq!(status, 200, "{path} {body}");
            let (allowed, message, patch) = answer(&reply);
            assert!(!allowed, "{path} {body}: {reply}");
            assert!(patch.is_none(), "{path} {body}");
            assert!(
                message.starts_with("malformed AdmissionReview: "),
                "{path} {body}: {message}"
            );
        }
    }
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused_unread() {
    let object = pod("shop", json!({"padding": "x".repeat(MAX_BODY)}));
    let body = serde_json::to_vec(&review("Pod", "shop", object)).unwrap_or_default();
    assert!(body.len() > MAX_BODY);
    let (status, _) = post("/inject-sidecar", body).await;
    assert_eq!(status, 413);
    // Just under the limit is still read (and refused on its merits).
    let object = pod("shop", json!({"padding": "x".repeat(MAX_BODY - 2048)}));
    let body = serde_json::to_vec(&review("Pod", "shop", object)).unwrap_or_default();
    assert!(body.len() <= MAX_BODY, "{}", body.len());
    let (status, reply) = post("/inject-sidecar", body).await;
    assert_eq!(status, 200);
    assert_eq!(reply["response"]["uid"], "review-1");
}

#[tokio::test]
async fn unknown_kinds_are_refused_by_name() {
    let object = json!({
        "apiVersion": "kuma.io/v1alpha1", "kind": "MeshTeleport",
        "metadata": {"name": "t", "namespace": "kuma-system", "labels": {"kuma.io/mesh": "default"}},
        "spec": {},
    });
    let (status, reply) = post(
        "/validate-kuma-io-v1alpha1",
        serde_json::to_vec(&review("MeshTeleport", "kuma-system", object)).unwrap_or_default(),
    )
    .await;
    assert_eq!(status, 200);
    let (allowed, message, _) = answer(&reply);
    assert!(!allowed);
    assert!(message.contains("MeshTeleport"), "{message}");
    assert_eq!(reply["response"]["uid"], "review-1");
}

#[tokio::test]
async fn a_pod_that_is_not_a_pod_is_denied_with_the_reason() {
    let object = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"}, "spec": {"containers": "web"}});
    let (allowed, message, _) = inject("shop", object).await;
    assert!(!allowed);
    assert!(message.starts_with("the object is not a Pod: "), "{message}");
}

#[tokio::test]
async fn a_pod_of_a_missing_mesh_is_denied_naming_it() {
    let object = pod("shop", json!({"kuma.io/mesh": "payments"}));
    let (allowed, message, _) = inject("shop", object).await;
    assert!(!allowed);
    assert_eq!(message, "meshes.kuma.io \"payments\" not found");
}

#[tokio::test]
async fn system_namespaces_are_never_touched() {
    for namespace in ["kube-system", "kuma-system"] {
        let object = pod(namespace, json!({"kuma.io/sidecar-injection": "enabled"}));
        let (allowed, message, patched) = inject(namespace, object).await;
        assert!(allowed, "{namespace}: {message}");
        assert!(!patched, "{namespace} was patched");
    }
    // The same Pod elsewhere is injected.
    let (allowed, message, patched) = inject("shop", pod("shop", json!({}))).await;
    assert!(allowed && patched, "{message}");
}

/// A self-signed certificate for 127.0.0.1 named `name`: (cert, key) PEM.
fn certificate(name: &str) -> (String, String) {
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap_or_else(|e| panic!("{e}"));
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    let key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
    let cert = params.self_signed(&key).unwrap_or_else(|e| panic!("{e}"));
    (cert.pem(), key.serialize_pem())
}

/// Writes `tls.crt` and `tls.key`, with a modification time `age_secs`
/// after the epoch of the test (so a renewal is seen even on file systems
/// with coarse timestamps).
fn install(dir: &std::path::Path, (cert, key): &(String, String), age_secs: u64) {
    let stamp = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000 + age_secs);
    for (file, text) in [("tls.key", key), ("tls.crt", cert)] {
        std::fs::write(dir.join(file), text).unwrap_or_else(|e| panic!("{e}"));
        let f = std::fs::File::options()
            .write(true)
            .open(dir.join(file))
            .unwrap_or_else(|e| panic!("{e}"));
        f.set_modified(stamp).unwrap_or_else(|e| panic!("{e}"));
    }
}

/// Whether a TLS handshake with the server succeeds for a client trusting
/// only `trusted`.
async fn handshake(port: u16, trusted: &str) -> bool {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(trusted.as_bytes()) {
        roots
            .add(cert.unwrap_or_else(|e| panic!("{e}")))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap_or_else(|e| panic!("{e}"))
            .with_root_certificates(roots)
            .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap_or_else(|e| panic!("{e}"));
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .is_ok()
}

#[tokio::test]
async fn a_renewed_certificate_is_served_without_a_restart() {
    let dir = std::env::temp_dir().join(format!("kuma-webhook-cert-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let (first, renewed) = (certificate("first"), certificate("renewed"));
    install(&dir, &first, 0);
    let config = ReloadingCertificate::from_dir(&dir)
        .unwrap_or_else(|e| panic!("{e}"))
        .server_config();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let port = listener.local_addr().unwrap_or_else(|e| panic!("{e}")).port();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = acceptor.accept(tcp).await;
            });
        }
    });

    assert!(handshake(port, &first.0).await, "the first certificate is served");
    assert!(!handshake(port, &renewed.0).await);

    install(&dir, &renewed, 60);
    assert!(handshake(port, &renewed.0).await, "the renewal is served");
    assert!(!handshake(port, &first.0).await, "the old certificate is gone");

    // A half-written renewal keeps the last good certificate in service.
    std::fs::write(dir.join("tls.crt"), "-----BEGIN CERTIFICATE-----\ntrunc")
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        handshake(port, &renewed.0).await,
        "the last good certificate stays"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
