//! The one mode switch: `environment: universal|kubernetes`
//! (`KUMA_ENVIRONMENT`) is read here, once, and selects everything that
//! differs between the two — the store, the leadership mechanism, how
//! proxies authenticate, whether the REST API accepts writes, and the
//! admission context (computed labels, namespaces). Everything else is the
//! same code in both environments.

use std::sync::Arc;

use anyhow::{Context as _, bail};
use kuma_crds::admission::{Context, Environment};

use crate::config::{Config, DpProxyAuthnType, StoreType};
use crate::kubernetes::api_requests::ApiRequests;
use crate::leader::lease::{LeaseLock, LeaseTimings};
use crate::leader::{AlwaysLeader, Leadership, PostgresLock};
use crate::store::Store;
use crate::store::kubernetes::KubernetesStore;
use crate::store::postgres::PostgresStore;

/// What the environment selected.
#[derive(Clone)]
pub struct Mode {
    /// Where the control plane runs (for admission).
    pub admission: Context,
    /// The store.
    pub store: Store,
    /// How this instance becomes the leader.
    pub leadership: Arc<dyn Leadership>,
    /// How proxies authenticate.
    pub dp_authn: DpProxyAuthnType,
    /// The Kubernetes client (Kubernetes only).
    pub kube: Option<kube::Client>,
    /// What that client has asked of the API server.
    pub kube_requests: ApiRequests,
}

impl std::fmt::Debug for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mode")
            .field("admission", &self.admission)
            .field("store", &self.store)
            .field("dp_authn", &self.dp_authn)
            .finish()
    }
}

impl Mode {
    /// Whether the REST API may write resources: on Kubernetes they are
    /// objects of the cluster, changed with kubectl (as in Kuma).
    pub fn api_writes_resources(&self) -> bool {
        self.admission.environment == Environment::Universal
    }
}

/// Selects the mode `config` describes; `instance_id` names this
/// instance where leadership needs a name.
pub async fn select(config: &Config, instance_id: &str) -> anyhow::Result<Mode> {
    let environment = config.environment;
    let mut admission = Context::new(environment);
    admission.system_namespace = config.store.kubernetes.system_namespace.clone();
    let store_type = config.effective_store_type();
    match (environment, store_type) {
        (Environment::Universal, StoreType::Kubernetes) => {
            bail!("store.type kubernetes needs environment kubernetes (KUMA_ENVIRONMENT=kubernetes)")
        }
        (Environment::Kubernetes, StoreType::Postgres) => {
            bail!(
                "the Kubernetes environment keeps its resources in the Kubernetes API: unset store.type (KUMA_STORE_TYPE)"
            )
        }
        _ => {}
    }
    let dp_authn = config.dp_proxy_authn();
    if environment == Environment::Universal && dp_authn == DpProxyAuthnType::ServiceAccountToken {
        bail!("dpServer.authn.dpProxy.type serviceAccountToken needs environment kubernetes");
    }
    let kube_requests = ApiRequests::default();
    let (store, leadership, kube): (Store, Arc<dyn Leadership>, _) = match store_type {
        StoreType::Memory => (Store::memory(), Arc::new(AlwaysLeader), None),
        StoreType::Postgres => {
            let pg = PostgresStore::open(config.store.postgres.clone()).await?;
            (Store::new(pg.clone()), Arc::new(PostgresLock(pg)), None)
        }
        StoreType::Kubernetes => {
            let kube_config = kube::Config::infer()
                .await
                .context("cannot reach the Kubernetes API (KUBECONFIG or the in-cluster service account)")?;
            let client = kube_requests
                .client(kube_config)
                .context("cannot build the Kubernetes client")?;
            let namespace = &admission.system_namespace;
            let store = KubernetesStore::new(client.clone(), namespace).await;
            let lease = LeaseLock::new(client.clone(), namespace, instance_id, LeaseTimings::default());
            (Store::new(store), Arc::new(lease), Some(client))
        }
    };
    Ok(Mode {
        admission,
        store,
        leadership,
        dp_authn,
        kube,
        kube_requests,
    })
}
