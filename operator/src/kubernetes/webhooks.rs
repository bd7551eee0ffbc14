//! Serving the admission webhooks (the `kuma-webhook` crate) from kuma-cp
//! in Kubernetes mode: the cluster facts they need, read from the API
//! server; their certificate, from `admissionServer.certDir` (reloaded on
//! renewal) or generated once per cluster and shared by every replica
//! through a Secret, in which case the webhook configurations' `caBundle`
//! is kept equal to its CA.

use std::path::Path;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, Service};
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kuma_crds::kubernetes::{PodOwners, owners_of};
use kuma_crds::resource::ResourceType;
use kuma_webhook::injector::NamespaceFacts;
use kuma_webhook::server::{Cluster, MeshFacts};

use crate::store::Store;

/// The webhook configurations whose `caBundle` kuma-cp keeps (Kuma's names).
pub const MUTATING_CONFIGURATION: &str = "kuma-admission-mutating-webhook-configuration";
/// See [`MUTATING_CONFIGURATION`].
pub const VALIDATING_CONFIGURATION: &str = "kuma-validating-webhook-configuration";
/// The Secret holding the control plane's generated certificate: the
/// webhooks' (without `certDir`) and the dp-server's (without
/// `general.tlsCertFile`), shared by every replica.
pub const CERTIFICATE_SECRET: &str = "kuma-admission-server-tls";

/// The cluster as the webhooks see it.
pub struct KubeCluster {
    /// The client.
    pub client: kube::Client,
    /// The store (Dataplanes of a mesh).
    pub store: Store,
}

fn err(e: kube::Error) -> String {
    e.to_string()
}

#[async_trait::async_trait]
impl Cluster for KubeCluster {
    async fn namespace(&self, name: &str) -> Result<NamespaceFacts, String> {
        let ns = Api::<Namespace>::all(self.client.clone())
            .get_opt(name)
            .await
            .map_err(err)?;
        let metadata = ns.map(|n| n.metadata).unwrap_or_default();
        Ok(NamespaceFacts {
            name: name.to_string(),
            labels: metadata.labels.unwrap_or_default(),
            annotations: metadata.annotations.unwrap_or_default(),
        })
    }

    async fn mesh(&self, name: &str) -> Result<Option<MeshFacts>, String> {
        let resource = crate::store::kubernetes::api_resource(ResourceType::Mesh);
        let mesh = Api::<DynamicObject>::all_with(self.client.clone(), &resource)
            .get_opt(name)
            .await
            .map_err(err)?;
        Ok(mesh.map(|m| MeshFacts {
            deleting: m.metadata.deletion_timestamp.is_some(),
            uid: m.metadata.uid.unwrap_or_default(),
        }))
    }

    async fn services(&self, namespace: &str) -> Result<Vec<Service>, String> {
        Ok(Api::<Service>::namespaced(self.client.clone(), namespace)
            .list(&ListParams::default())
            .await
            .map_err(err)?
            .items)
    }

    async fn pod_owners(&self, pod: &Pod) -> Result<PodOwners, String> {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let mut found = Vec::new();
        for owner in pod.metadata.owner_references.iter().flatten() {
            let refs = match owner.kind.as_str() {
                "ReplicaSet" => Api::<ReplicaSet>::namespaced(self.client.clone(), &namespace)
                    .get_opt(&owner.name)
                    .await
                    .map_err(err)?
                    .map(|o| o.metadata.owner_references.unwrap_or_default()),
                "Job" => Api::<Job>::namespaced(self.client.clone(), &namespace)
                    .get_opt(&owner.name)
                    .await
                    .map_err(err)?
                    .map(|o| o.metadata.owner_references.unwrap_or_default()),
                _ => None,
            };
            if let Some(refs) = refs {
                found.push((owner.kind.clone(), owner.name.clone(), refs));
            }
        }
        Ok(owners_of(pod, &found))
    }

    async fn dataplanes_in_mesh(&self, mesh: &str) -> Result<usize, String> {
        self.store
            .list(ResourceType::Dataplane, Some(mesh))
            .await
            .map(|l| l.len())
            .map_err(|e| e.to_string())
    }
}

/// A CA and a serving certificate for the webhook Service names (and
/// 127.0.0.1), as PEM: (ca, cert, key).
fn generate(service: &str, namespace: &str) -> Result<(String, String, String), String> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
    let e = |e: rcgen::Error| e.to_string();
    let ca_key = KeyPair::generate().map_err(e)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "kuma-admission-ca");
    ca.not_after = rcgen::date_time_ymd(2036, 1, 1);
    let ca_cert = ca.self_signed(&ca_key).map_err(e)?;
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().map_err(e)?;
    let mut params = CertificateParams::new(vec![
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
        "localhost".to_string(),
    ])
    .map_err(e)?;
    params
        .subject_alt_names
        .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
    params.not_after = rcgen::date_time_ymd(2036, 1, 1);
    let cert = params.signed_by(&key, &issuer).map_err(e)?;
    Ok((ca_cert.pem(), cert.pem(), key.serialize_pem()))
}

/// The cluster's generated webhook certificate: the Secret's, or a new one
/// (the first replica to create the Secret wins; the others use it).
pub async fn shared_certificate(
    client: &kube::Client,
    namespace: &str,
    service: &str,
) -> Result<(String, String, String), String> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let read = |s: Secret| -> Option<(String, String, String)> {
        let data = s.data?;
        let get = |k: &str| data.get(k).map(|b| String::from_utf8_lossy(&b.0).to_string());
        Some((get("ca.crt")?, get("tls.crt")?, get("tls.key")?))
    };
    if let Some(existing) = api.get_opt(CERTIFICATE_SECRET).await.map_err(err)?.and_then(read) {
        return Ok(existing);
    }
    let (ca, cert, key) = generate(service, namespace)?;
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(CERTIFICATE_SECRET.into()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(
            [("ca.crt", &ca), ("tls.crt", &cert), ("tls.key", &key)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Default::default()
    };
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok((ca, cert, key)),
        Err(kube::Error::Api(s)) if s.code == 409 => api
            .get(CERTIFICATE_SECRET)
            .await
            .map_err(err)
            .and_then(|s| read(s).ok_or_else(|| format!("Secret {CERTIFICATE_SECRET} is incomplete"))),
        Err(e) => Err(err(e)),
    }
}

/// Writes `tls.crt` and `tls.key` into `dir` (what the server reloads from).
pub fn write_certificate(dir: &Path, cert: &str, key: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("tls.key"), key)?;
    std::fs::write(dir.join("tls.crt"), cert)
}

/// Keeps the `caBundle` of Kuma's webhook configurations equal to `ca`,
/// whenever they are created or changed.
pub async fn keep_ca_bundle(client: kube::Client, ca: String) {
    let bundle = ByteString(ca.into_bytes());
    let mutating =
        keep::<MutatingWebhookConfiguration>(client.clone(), MUTATING_CONFIGURATION, bundle.clone(), |c| {
            c.webhooks
                .iter()
                .flatten()
                .map(|w| w.client_config.ca_bundle.clone())
                .collect()
        });
    let validating = keep::<ValidatingWebhookConfiguration>(client, VALIDATING_CONFIGURATION, bundle, |c| {
        c.webhooks
            .iter()
            .flatten()
            .map(|w| w.client_config.ca_bundle.clone())
            .collect()
    });
    tokio::join!(mutating, validating);
}

async fn keep<K>(
    client: kube::Client,
    name: &'static str,
    bundle: ByteString,
    bundles: impl Fn(&K) -> Vec<Option<ByteString>>,
) where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let api: Api<K> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = watcher(api.clone(), config)
        .default_backoff()
        .applied_objects()
        .boxed();
    while let Some(event) = stream.next().await {
        let Ok(object) = event else { continue };
        let current = bundles(&object);
        if current.iter().all(|b| b.as_ref() == Some(&bundle)) {
            continue;
        }
        let ops: Vec<serde_json::Value> = (0..current.len())
            .map(|i| {
                serde_json::json!({
                    "op": "add",
                    "path": format!("/webhooks/{i}/clientConfig/caBundle"),
                    "value": bundle,
                })
            })
            .collect();
        let Ok(patch) = serde_json::from_value::<json_patch::Patch>(serde_json::Value::Array(ops)) else {
            continue;
        };
        match api
            .patch(name, &PatchParams::default(), &Patch::<()>::Json(patch))
            .await
        {
            Ok(_) => tracing::info!(configuration = name, "webhook caBundle updated"),
            Err(e) => tracing::warn!(configuration = name, error = %e, "cannot update the webhook caBundle"),
        }
    }
}

/// The webhooks' shared state, from the configuration.
pub fn webhooks(
    client: kube::Client,
    store: Store,
    config: &crate::config::Config,
    admission: kuma_crds::admission::Context,
    dp_server_ca: &str,
) -> Result<Arc<kuma_webhook::server::Webhooks>, String> {
    let settings = &config.runtime.kubernetes.injector;
    let ca_cert_pem = if settings.ca_cert_file.is_empty() {
        dp_server_ca.to_string()
    } else {
        std::fs::read_to_string(&settings.ca_cert_file).map_err(|e| {
            format!(
                "runtime.kubernetes.injector.caCertFile {}: {e}",
                settings.ca_cert_file
            )
        })?
    };
    let defaults = kuma_webhook::injector::InjectorConfig::default();
    let mut injector = kuma_webhook::injector::InjectorConfig {
        control_plane_url: format!(
            "https://{}.{}:{}",
            config.runtime.kubernetes.control_plane_service_name,
            admission.system_namespace,
            config.dp_server.port
        ),
        ca_cert_pem,
        sidecar_image: settings.sidecar_image.clone(),
        init_image: settings.init_image.clone(),
        native_sidecar: settings.sidecar_containers,
        builtin_dns: settings.builtin_dns_enabled,
        application_probe_proxy_port: settings.application_probe_proxy_port,
        virtual_probes_enabled: settings.virtual_probes_enabled,
        virtual_probes_port: settings.virtual_probes_port,
        exclude_inbound_ports: settings.exclude_inbound_ports.clone(),
        exclude_outbound_ports: settings.exclude_outbound_ports.clone(),
        exclude_inbound_ips: settings.exclude_inbound_ips.clone(),
        exclude_outbound_ips: settings.exclude_outbound_ips.clone(),
        sidecar_resources: settings.sidecar_container.to_injector(
            "runtime.kubernetes.injector.sidecarContainer",
            &defaults.sidecar_resources,
        )?,
        init_resources: settings.init_container.to_injector(
            "runtime.kubernetes.injector.initContainer",
            &defaults.init_resources,
        )?,
        ..Default::default()
    };
    injector.system_namespace = admission.system_namespace.clone();
    Ok(Arc::new(kuma_webhook::server::Webhooks {
        cluster: Arc::new(KubeCluster { client, store }),
        injector,
        admission,
        trusted_users: config.runtime.kubernetes.allowed_users.clone(),
    }))
}
