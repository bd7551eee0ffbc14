//! Proxies on Kubernetes prove who they are with their Pod's projected
//! ServiceAccount token (`dpServer.authn.dpProxy.type:
//! serviceAccountToken`, Kuma's default there): the API server checks the
//! token (a TokenReview with the API server's own audiences, as Kuma sends
//! it), and the user it names must be `system:serviceaccount:<ns>:<sa>` of
//! the Pod that owns the Dataplane (`<pod>.<ns>`).
//!
//! Answers are cached for a short while (token reviews by a hash of the
//! token, Pods' ServiceAccounts by Pod), so a reconnect storm of thousands
//! of proxies does not become thousands of API requests each time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use sha2::Digest;

use crate::dp_server::AuthnError;

/// How long an answer is kept.
const TTL: Duration = Duration::from_secs(30);
/// Most answers kept (the oldest go first).
const MAX_ENTRIES: usize = 50_000;

type Cache<K, V> = Mutex<HashMap<K, (V, Instant)>>;

/// Checks ServiceAccount tokens against the API server.
pub struct ServiceAccountAuthenticator {
    client: kube::Client,
    reviews: Cache<[u8; 32], Result<String, String>>,
    pods: Cache<(String, String), String>,
}

impl std::fmt::Debug for ServiceAccountAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServiceAccountAuthenticator")
    }
}

fn cached<K: std::hash::Hash + Eq + Clone, V: Clone>(cache: &Cache<K, V>, key: &K) -> Option<V> {
    let guard = cache.lock().unwrap_or_else(|e| e.into_inner());
    guard
        .get(key)
        .filter(|(_, at)| at.elapsed() < TTL)
        .map(|(v, _)| v.clone())
}

fn remember<K: std::hash::Hash + Eq + Clone, V>(cache: &Cache<K, V>, key: K, value: V) {
    let mut guard = cache.lock().unwrap_or_else(|e| e.into_inner());
    if guard.len() >= MAX_ENTRIES {
        guard.retain(|_, (_, at)| at.elapsed() < TTL);
    }
    if guard.len() < MAX_ENTRIES {
        guard.insert(key, (value, Instant::now()));
    }
}

impl ServiceAccountAuthenticator {
    /// An authenticator using `client` (which needs `create` on
    /// `tokenreviews` and `get` on `pods`).
    pub fn new(client: kube::Client) -> Self {
        ServiceAccountAuthenticator {
            client,
            reviews: Mutex::new(HashMap::new()),
            pods: Mutex::new(HashMap::new()),
        }
    }

    /// The user the API server says `token` is; an error says why not.
    async fn user(&self, token: &str) -> Result<String, AuthnError> {
        let key: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        if let Some(answer) = cached(&self.reviews, &key) {
            return answer.map_err(AuthnError::Unauthenticated);
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: None,
            },
            ..TokenReview::default()
        };
        let reviewed = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| {
                AuthnError::Unavailable(format!(
                    "could not call the Kubernetes API server to verify the token: {e}"
                ))
            })?;
        let status = reviewed.status.unwrap_or_default();
        let answer = if status.authenticated == Some(true) {
            Ok(status.user.and_then(|u| u.username).unwrap_or_default())
        } else {
            Err(format!(
                "the ServiceAccount token is not valid: {}",
                status
                    .error
                    .unwrap_or_else(|| "the API server did not authenticate it".into())
            ))
        };
        remember(&self.reviews, key, answer.clone());
        answer.map_err(AuthnError::Unauthenticated)
    }

    /// The ServiceAccount of a Pod (`default` when unset).
    async fn pod_service_account(&self, namespace: &str, pod: &str) -> Result<String, AuthnError> {
        let key = (namespace.to_string(), pod.to_string());
        if let Some(sa) = cached(&self.pods, &key) {
            return Ok(sa);
        }
        let found = Api::<Pod>::namespaced(self.client.clone(), namespace)
            .get_opt(pod)
            .await
            .map_err(|e| AuthnError::Unavailable(format!("could not read Pod {namespace}/{pod}: {e}")))?
            .ok_or_else(|| {
                AuthnError::NotFound(format!("Pod {namespace}/{pod} of this dataplane does not exist"))
            })?;
        let sa = found
            .spec
            .and_then(|s| s.service_account_name)
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".into());
        remember(&self.pods, key, sa.clone());
        Ok(sa)
    }

    /// Whether `token` is the ServiceAccount token of the Pod behind the
    /// Dataplane `name` (`<pod>.<namespace>`).
    pub async fn authenticate(&self, name: &str, token: &str) -> Result<(), AuthnError> {
        let Some((pod, namespace)) = name.rsplit_once('.') else {
            return Err(AuthnError::Invalid(format!(
                "dataplane name {name:?} is not <pod>.<namespace>"
            )));
        };
        let user = self.user(token).await?;
        let service_account = self.pod_service_account(namespace, pod).await?;
        let expected = format!("system:serviceaccount:{namespace}:{service_account}");
        if user != expected {
            return Err(AuthnError::Unauthenticated(format!(
                "the token is of {user:?}, but Pod {namespace}/{pod} runs as {expected:?}"
            )));
        }
        Ok(())
    }
}
