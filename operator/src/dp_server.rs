//! kuma-cp's side of the dp-server: answering `/bootstrap`, admitting xDS
//! streams (dataplane tokens), registering the Dataplanes kuma-dp brings
//! along and deregistering them after their proxy leaves, and recording
//! insights.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::value::Kind;
use kuma_crds::format::parse;
use kuma_crds::resource::{Resource, ResourceType, Spec};
use kuma_xds::bootstrap::{BootstrapParams, BootstrapRequest, admin_port_or_default};
use kuma_xds::context::metadata_keys;
use kuma_xds::dp_server::{BootstrapError, BootstrapSource};
use kuma_xds::server::{ConnectFuture, ConnectionGuard, ProxyRegistry, StreamEvent};
use kuma_xds::sync::{Reconciler, parse_node_id};
use tonic::Status;
use tonic::metadata::MetadataMap;

use crate::config::DpProxyAuthnType;
use crate::insights::Insights;
use crate::store::{ResourceKey, Store, StoreError};
use crate::tokens::{TokenError, Tokens};

/// The dp-server's view of the control plane.
pub struct DpServer {
    /// The store.
    pub store: Store,
    /// Token checks.
    pub tokens: Tokens,
    /// How proxies authenticate.
    pub authn: DpProxyAuthnType,
    /// The xDS reconciler.
    pub reconciler: Reconciler,
    /// Connection insights.
    pub insights: Arc<Insights>,
    /// This instance's id.
    pub instance_id: String,
    /// The dp-server port (ADS shares it).
    pub port: u16,
    /// The PEM Envoy verifies the control plane with.
    pub ca_pem: String,
    /// How long a self-registered Dataplane outlives its proxy's last stream.
    pub deregistration_delay: Duration,
    /// Set at shutdown: leaving proxies are then not deregistered.
    pub shutting_down: AtomicBool,
    /// How self-registered Dataplanes are admitted (computed labels).
    pub admission: kuma_crds::admission::Context,
    /// ServiceAccount token checks (Kubernetes).
    pub service_accounts: Option<Arc<crate::kubernetes::service_account::ServiceAccountAuthenticator>>,
}

/// Why a proxy was not let in; `/bootstrap` and the ADS stream each map it
/// to their own error form.
#[derive(Debug, thiserror::Error)]
pub enum AuthnError {
    /// No or bad credentials.
    #[error("{0}")]
    Unauthenticated(String),
    /// The request is malformed (e.g. its inline Dataplane).
    #[error("{0}")]
    Invalid(String),
    /// The Dataplane the credentials are checked against does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The store (or token source) cannot be read.
    #[error("{0}")]
    Unavailable(String),
}

impl From<AuthnError> for BootstrapError {
    fn from(e: AuthnError) -> Self {
        match e {
            AuthnError::Unauthenticated(m) => BootstrapError::Unauthorized(m),
            AuthnError::Invalid(m) => BootstrapError::Invalid(m),
            AuthnError::NotFound(m) => BootstrapError::NotFound(m),
            AuthnError::Unavailable(m) => BootstrapError::Internal(m),
        }
    }
}

impl From<AuthnError> for Status {
    fn from(e: AuthnError) -> Self {
        match e {
            AuthnError::Unauthenticated(m) => Status::unauthenticated(m),
            AuthnError::Invalid(m) => Status::invalid_argument(m),
            AuthnError::NotFound(m) => Status::not_found(m),
            AuthnError::Unavailable(m) => Status::unavailable(m),
        }
    }
}

const TOKEN_REQUIRED: &str = "Dataplane Token is required. Generate token using 'kumactl generate dataplane-token > /path/file' and provide it via --dataplane-token-file=/path/file argument to Kuma DP";

impl DpServer {
    /// Whether another control plane holds an open stream of the proxy of
    /// `dataplane` (it reconnected there): its Dataplane must stay. A store
    /// that cannot be read counts as yes — deleting on a guess loses a
    /// registration.
    async fn served_elsewhere(&self, dataplane: &ResourceKey) -> bool {
        let key = ResourceKey::new(ResourceType::DataplaneInsight, &dataplane.mesh, &dataplane.name);
        match self.store.get(&key).await {
            Ok(r) => crate::insights::insight_spec(&r).is_some_and(|i| {
                i.subscriptions
                    .iter()
                    .any(|s| s.is_online() && s.control_plane_instance_id != self.instance_id)
            }),
            Err(StoreError::NotFound(_)) => false,
            Err(_) => true,
        }
    }

    /// Checks a proxy's credentials, the same way for `/bootstrap` and for
    /// its xDS stream: the dataplane token of `mesh`/`name` and, when the
    /// token binds tags, that the Dataplane (`inline`, as kuma-dp brought
    /// it, or the stored one) has only values it allows.
    pub async fn authenticate(
        &self,
        mesh: &str,
        name: &str,
        token: Option<&str>,
        inline: Option<&Resource>,
    ) -> Result<(), AuthnError> {
        match self.authn {
            DpProxyAuthnType::None => Ok(()),
            DpProxyAuthnType::ServiceAccountToken => {
                let token = token.map(str::trim).filter(|t| !t.is_empty());
                let Some(token) = token else {
                    return Err(AuthnError::Unauthenticated(
                        "a ServiceAccount token is required (KUMA_DATAPLANE_RUNTIME_TOKEN_PATH)".into(),
                    ));
                };
                let Some(service_accounts) = &self.service_accounts else {
                    return Err(AuthnError::Unavailable(
                        "ServiceAccount token authentication needs the Kubernetes API".into(),
                    ));
                };
                let _ = mesh;
                service_accounts
                    .authenticate(name, token)
                    .await
                    .map_err(|e| match e {
                        AuthnError::Unauthenticated(m) => {
                            AuthnError::Unauthenticated(format!("authentication failed: {m}"))
                        }
                        e => e,
                    })
            }
            DpProxyAuthnType::DpToken => {
                let token = token.map(str::trim).filter(|t| !t.is_empty());
                let Some(token) = token else {
                    return Err(AuthnError::Invalid(TOKEN_REQUIRED.into()));
                };
                let claims = self.tokens.verify(token, mesh, name).await.map_err(|e| match e {
                    TokenError::Store(StoreError::Unavailable(m)) => AuthnError::Unavailable(m),
                    e => AuthnError::Unauthenticated(format!("authentication failed: {e}")),
                })?;
                if claims.tags.is_empty() {
                    return Ok(());
                }
                let stored;
                let dataplane = match inline {
                    Some(d) => d,
                    None => {
                        stored = self
                            .store
                            .get(&ResourceKey::new(ResourceType::Dataplane, mesh, name))
                            .await
                            .map_err(|e| match e {
                                StoreError::NotFound(_) => AuthnError::NotFound(e.to_string()),
                                e => AuthnError::Unavailable(format!("could not read the Dataplane: {e}")),
                            })?;
                        &stored
                    }
                };
                if let Spec::Dataplane(spec) = &dataplane.spec {
                    crate::tokens::check_tags(&claims.tags, spec)
                        .map_err(|e| AuthnError::Unauthenticated(format!("authentication failed: {e}")))?;
                }
                Ok(())
            }
        }
    }

    /// The Dataplane a request or node carries (universal self-registration).
    fn inline_dataplane(text: &str, mesh: &str, name: &str) -> Result<Resource, String> {
        let r = parse(text).map_err(|e| format!("invalid Dataplane: {e}"))?;
        if r.resource_type() != ResourceType::Dataplane {
            return Err(format!("expected a Dataplane, got {}", r.resource_type()));
        }
        if r.meta.mesh_or_default() != mesh || r.meta.core_name() != name {
            return Err(format!(
                "the Dataplane is {}/{}, but the request is for {mesh}/{name}",
                r.meta.mesh_or_default(),
                r.meta.core_name()
            ));
        }
        Ok(r)
    }
}

impl BootstrapSource for DpServer {
    async fn resolve(
        &self,
        request: &BootstrapRequest,
        host: &str,
    ) -> Result<BootstrapParams, BootstrapError> {
        let (mesh, name) = (request.mesh.as_str(), request.name.as_str());
        let inline = if request.dataplane_resource.trim().is_empty() {
            None
        } else {
            Some(
                Self::inline_dataplane(&request.dataplane_resource, mesh, name)
                    .map_err(BootstrapError::Invalid)?,
            )
        };
        self.authenticate(mesh, name, Some(&request.dataplane_token), inline.as_ref())
            .await?;
        let dataplane = match inline {
            Some(d) => d,
            None => {
                let key = ResourceKey::new(ResourceType::Dataplane, mesh, name);
                match self.store.get(&key).await {
                    Ok(r) => r,
                    Err(StoreError::NotFound(_)) => {
                        return Err(BootstrapError::NotFound(format!(
                            "resource \"{mesh}.{name}\" not found; create a Dataplane in Kuma CP first or pass it as an argument to kuma-dp"
                        )));
                    }
                    Err(e) => return Err(BootstrapError::Internal(e.to_string())),
                }
            }
        };
        let mesh_key = ResourceKey::new(ResourceType::Mesh, "", mesh);
        match self.store.get(&mesh_key).await {
            Ok(_) => {}
            Err(StoreError::NotFound(_)) => {
                return Err(BootstrapError::Invalid(format!("mesh \"{mesh}\" does not exist")));
            }
            Err(e) => return Err(BootstrapError::Internal(e.to_string())),
        }
        let Spec::Dataplane(dp) = &dataplane.spec else {
            return Err(BootstrapError::Internal("not a Dataplane".into()));
        };
        Ok(BootstrapParams {
            xds_host: host.to_string(),
            xds_port: self.port,
            // The CA kuma-dp itself trusts for this control plane (as
            // Kuma uses it), else the one the dp-server was given.
            ca_pem: Some(if request.ca_cert.trim().is_empty() {
                self.ca_pem.clone()
            } else {
                request.ca_cert.clone()
            }),
            admin_port: admin_port_or_default(dp.networking().admin.as_ref().and_then(|a| a.port)),
            service: dp.service().unwrap_or("unknown").to_string(),
            address: dp.networking().address.clone().unwrap_or_default(),
        })
    }
}

/// A string field of the node metadata.
fn node_string(node: &Node, key: &str) -> Option<String> {
    match node.metadata.as_ref()?.fields.get(key)?.kind.as_ref()? {
        Kind::StringValue(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

fn node_json(node: &Node, key: &str) -> serde_json::Value {
    node.metadata
        .as_ref()
        .and_then(|m| m.fields.get(key))
        .and_then(|v| kuma_xds::proto::to_json(v).ok())
        .unwrap_or(serde_json::Value::Null)
}

/// Everything a stream holds; dropping it records the disconnect and
/// schedules deregistration of a self-registered Dataplane.
struct StreamGuard {
    node: String,
    subscription: String,
    registered: Option<ResourceKey>,
    server: Arc<DpServer>,
    _reconciler: ConnectionGuard,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.server.insights.disconnected(&self.node, &self.subscription);
        let Some(key) = self.registered.take() else { return };
        if self.server.shutting_down.load(Ordering::SeqCst) {
            return;
        }
        let server = self.server.clone();
        let node = self.node.clone();
        tokio::spawn(async move {
            tokio::time::sleep(server.deregistration_delay).await;
            if server.insights.is_online(&node)
                || server.shutting_down.load(Ordering::SeqCst)
                || server.served_elsewhere(&key).await
            {
                return;
            }
            match server.store.delete(&key).await {
                Ok(()) => {
                    tracing::info!(dataplane = %node, "deregistered the Dataplane of a proxy that left")
                }
                Err(StoreError::NotFound(_)) => {}
                Err(e) => tracing::warn!(dataplane = %node, error = %e, "cannot deregister"),
            }
        });
    }
}

/// The ADS admission of kuma-cp.
#[derive(Clone)]
pub struct Registry(pub Arc<DpServer>);

impl Registry {
    async fn admit(&self, node: &Node, metadata: &MetadataMap) -> Result<ConnectionGuard, Status> {
        let server = &self.0;
        let Some((mesh, name)) = parse_node_id(&node.id) else {
            return Err(Status::invalid_argument(format!(
                "node.id {:?} is not <mesh>.<name>",
                node.id
            )));
        };
        let inline = node_string(node, metadata_keys::DATAPLANE_RESOURCE)
            .map(|text| DpServer::inline_dataplane(&text, mesh, name).map_err(Status::invalid_argument))
            .transpose()?;
        let token = match server.authn {
            DpProxyAuthnType::None => None,
            _ => {
                let values: Vec<_> = metadata.get_all("authorization").iter().collect();
                match values.as_slice() {
                    [one] => Some(one.to_str().unwrap_or_default().to_string()),
                    [] => {
                        return Err(Status::unauthenticated(
                            "authentication failed: missing dataplane token",
                        ));
                    }
                    _ => {
                        return Err(Status::unauthenticated(
                            "authentication failed: more than one authorization value",
                        ));
                    }
                }
            }
        };
        server
            .authenticate(mesh, name, token.as_deref(), inline.as_ref())
            .await?;
        let mut registered = None;
        if let Some(dp) = inline {
            let dp = kuma_crds::admission::computed(&server.admission, dp);
            let key = ResourceKey::of(&dp);
            server.store.upsert(dp).await.map_err(|e| match e {
                StoreError::MeshNotFound(m) => {
                    Status::failed_precondition(format!("mesh {m:?} does not exist"))
                }
                e => Status::unavailable(format!("could not register the Dataplane: {e}")),
            })?;
            registered = Some(key);
        }
        let reconciler = server.reconciler.connect_node(node)?;
        let subscription = server.insights.connected(
            &node.id,
            &server.instance_id,
            node_json(node, metadata_keys::VERSION),
            node.metadata
                .as_ref()
                .and_then(|m| kuma_xds::proto::to_json(m).ok())
                .unwrap_or_default(),
        );
        Ok(Box::new(StreamGuard {
            node: node.id.clone(),
            subscription,
            registered,
            server: server.clone(),
            _reconciler: reconciler,
        }))
    }
}

impl ProxyRegistry for Registry {
    fn connect<'a>(&'a self, node: &'a Node, metadata: &'a MetadataMap) -> ConnectFuture<'a> {
        Box::pin(self.admit(node, metadata))
    }

    fn observe(&self, node: &str, event: StreamEvent<'_>) {
        self.0.insights.observe(node, event);
    }
}
