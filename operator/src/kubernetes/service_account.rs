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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http::{Request, Response};
    use kube::client::Body;
    use serde_json::json;

    use super::*;

    /// API requests the fake API server answered, by kind.
    #[derive(Default)]
    struct Calls {
        reviews: AtomicUsize,
        pods: AtomicUsize,
    }

    /// An authenticator whose API server knows one valid token (of
    /// `kuma-test:web`) and one Pod (`api-0` in `kuma-test`, running as
    /// `web`), and says every other token has expired.
    fn authenticator() -> (ServiceAccountAuthenticator, Arc<Calls>) {
        let calls = Arc::new(Calls::default());
        let seen = calls.clone();
        let service = tower::service_fn(move |request: Request<Body>| {
            let seen = seen.clone();
            async move {
                let path = request.uri().path().to_string();
                let body = if path.ends_with("/tokenreviews") {
                    seen.reviews.fetch_add(1, Ordering::SeqCst);
                    let bytes = http_body_util::BodyExt::collect(request.into_body())
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    let review: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
                    let status = if review["spec"]["token"] == "valid" {
                        json!({"authenticated": true, "user": {"username": "system:serviceaccount:kuma-test:web"}})
                    } else {
                        json!({"authenticated": false, "error": "[invalid bearer token, service account token has expired]"})
                    };
                    json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": review["spec"], "status": status})
                } else {
                    seen.pods.fetch_add(1, Ordering::SeqCst);
                    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "api-0", "namespace": "kuma-test"}, "spec": {"serviceAccountName": "web", "containers": []}})
                };
                Ok::<_, std::convert::Infallible>(Response::new(Body::from(body.to_string().into_bytes())))
            }
        });
        let client = kube::Client::new(service, "default");
        (ServiceAccountAuthenticator::new(client), calls)
    }

    #[tokio::test]
    async fn a_reconnecting_proxy_is_checked_once_while_the_answer_is_fresh() {
        let (authn, calls) = authenticator();
        for _ in 0..3 {
            authn
                .authenticate("api-0.kuma-test", "valid")
                .await
                .expect("accepted");
        }
        assert_eq!(calls.reviews.load(Ordering::SeqCst), 1, "one TokenReview");
        assert_eq!(calls.pods.load(Ordering::SeqCst), 1, "one read of the Pod");
    }

    #[tokio::test]
    async fn an_expired_token_is_refused_with_the_api_servers_reason() {
        let (authn, calls) = authenticator();
        for _ in 0..2 {
            match authn.authenticate("api-0.kuma-test", "expired").await {
                Err(AuthnError::Unauthenticated(m)) => assert_eq!(
                    m,
                    "the ServiceAccount token is not valid: [invalid bearer token, service account token has expired]"
                ),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            calls.reviews.load(Ordering::SeqCst),
            1,
            "the refusal is remembered too"
        );
        assert_eq!(
            calls.pods.load(Ordering::SeqCst),
            0,
            "no Pod read for a bad token"
        );
    }

    #[tokio::test]
    async fn a_token_of_another_service_account_is_refused() {
        let (authn, _) = authenticator();
        // The Pod runs as `web`; the token is of `web` too, but the name
        // claims a Pod of another namespace.
        match authn.authenticate("api-0.other", "valid").await {
            Err(AuthnError::Unauthenticated(m)) => assert_eq!(
                m,
                "the token is of \"system:serviceaccount:kuma-test:web\", but Pod other/api-0 runs as \"system:serviceaccount:other:web\""
            ),
            other => panic!("{other:?}"),
        }
        match authn.authenticate("no-namespace", "valid").await {
            Err(AuthnError::Invalid(m)) => assert!(m.contains("<pod>.<namespace>"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
