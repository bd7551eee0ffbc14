//! Asking a proxy's Envoy admin, as Kuma's inspect endpoints do (`stats`,
//! `clusters`, `xds`): a proxy at a loopback address is asked in plaintext
//! on Envoy's own admin; any other through its admin listener over mutual
//! TLS, with a client certificate of the Envoy admin CA (see
//! [`kuma_xds::admin_tls`]). The CA is one GlobalSecret shared by every
//! control plane of the store, so any of them can ask any proxy.

use std::sync::Arc;
use std::time::Duration;

use kuma_crds::resource::{Meta, Resource, ResourceType, Spec};
use kuma_crds::secret::SecretSpec;
use kuma_xds::admin_tls::{self, CA_SECRET};
use kuma_xds::mtls::Ca;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;

use crate::store::{ResourceKey, Store, StoreError};

/// Kuma's timeouts towards a proxy's admin.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a proxy's admin could not answer.
#[derive(Debug, thiserror::Error)]
pub enum EnvoyAdminError {
    /// The CA could not be read, created or used.
    #[error("the Envoy admin CA: {0}")]
    Ca(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No answer.
    #[error("the proxy's Envoy admin at {url} did not answer: {reason}")]
    Unreachable {
        /// What was asked.
        url: String,
        /// Why, with every cause.
        reason: String,
    },
    /// An answer other than 200.
    #[error("the proxy's Envoy admin at {url} answered {status}: {body}")]
    Status {
        /// What was asked.
        url: String,
        /// Its status.
        status: u16,
        /// Its body.
        body: String,
    },
}

/// The Envoy admin CA of the store, created when there is none yet. Two
/// control planes starting together agree: the one whose create loses
/// reads the winner's.
pub async fn ensure_ca(store: &Store) -> Result<Ca, EnvoyAdminError> {
    let key = ResourceKey::new(ResourceType::GlobalSecret, "", CA_SECRET);
    let stored = |r: Resource| match &r.spec {
        Spec::GlobalSecret(s) => {
            admin_tls::ca_from_secret(&s.bytes()).map_err(|e| EnvoyAdminError::Ca(e.to_string()))
        }
        _ => Err(EnvoyAdminError::Ca(format!("{CA_SECRET} is not a GlobalSecret"))),
    };
    match store.get(&key).await {
        Ok(r) => return stored(r),
        Err(StoreError::NotFound(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let ca = admin_tls::generate_ca().map_err(|e| EnvoyAdminError::Ca(e.to_string()))?;
    let secret = Resource::new(
        Meta {
            name: CA_SECRET.into(),
            ..Meta::default()
        },
        Spec::GlobalSecret(SecretSpec::from_bytes(&admin_tls::ca_to_secret(&ca))),
    );
    match store.create(secret).await {
        Ok(_) => Ok(ca),
        Err(StoreError::AlreadyExists(_)) => stored(store.get(&key).await?),
        Err(e) => Err(e.into()),
    }
}

/// Whether the proxy's Envoy admin is reached in plaintext (as Kuma does
/// for `127.0.0.1`): Envoy's admin listens on loopback, and there the
/// control plane runs on the proxy's host.
fn plaintext(address: &str) -> bool {
    admin_tls::envoy_admin_is_at(address)
}

/// An HTTP client of proxies' Envoy admins.
#[derive(Clone, Debug)]
pub struct EnvoyAdmin {
    http: reqwest::Client,
}

impl EnvoyAdmin {
    /// A client presenting a new certificate of `ca` (SAN `kuma-cp`) and
    /// trusting only proxies' certificates of `ca`.
    pub fn new(ca: &Ca) -> Result<Self, EnvoyAdminError> {
        let ca_err = |e: &dyn std::fmt::Display| EnvoyAdminError::Ca(e.to_string());
        let (cert_pem, key_pem) = admin_tls::issue_client(ca).map_err(|e| ca_err(&e))?;
        let mut roots = rustls::RootCertStore::empty();
        let ca_der = CertificateDer::from_pem_slice(ca.cert_pem.as_bytes()).map_err(|e| ca_err(&e))?;
        roots.add(ca_der).map_err(|e| ca_err(&e))?;
        let chain = vec![CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| ca_err(&e))?];
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| ca_err(&e))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ca_err(&e))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| ca_err(&e))?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .no_proxy()
            .build()
            .map_err(|e| ca_err(&e))?;
        Ok(EnvoyAdmin { http })
    }

    /// `GET <path>?<query>` on the admin of the proxy at `address`, whose
    /// Envoy admin (and admin listener) port is `port`.
    pub async fn get(
        &self,
        address: &str,
        port: u32,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<Vec<u8>, EnvoyAdminError> {
        let scheme = if plaintext(address) { "http" } else { "https" };
        let host = if address.contains(':') {
            format!("[{address}]")
        } else {
            address.to_string()
        };
        let mut url = format!("{scheme}://{host}:{port}/{path}");
        if !query.is_empty() {
            url.push('?');
            url.push_str(&serde_urlencoded::to_string(query).unwrap_or_default());
        }
        let unreachable = |e: reqwest::Error| EnvoyAdminError::Unreachable {
            url: url.clone(),
            reason: causes(&e),
        };
        let response = self.http.get(&url).send().await.map_err(unreachable)?;
        let status = response.status();
        let body = response.bytes().await.map_err(unreachable)?;
        if !status.is_success() {
            return Err(EnvoyAdminError::Status {
                url,
                status: status.as_u16(),
                body: String::from_utf8_lossy(&body).trim().to_string(),
            });
        }
        Ok(body.to_vec())
    }
}

/// An error and each of its causes, `: `-separated.
fn causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

/// Envoy's config dump without the proxy's credentials: every value sent
/// as `authorization` metadata (the dataplane token in the bootstrap's ADS
/// service) is replaced by `[redacted]` wherever it appears, as Kuma does.
pub fn sanitize_config_dump(dump: &[u8]) -> Result<Vec<u8>, serde_json::Error> {
    fn secrets(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                let is_authorization = map
                    .get("key")
                    .and_then(Value::as_str)
                    .is_some_and(|k| k.eq_ignore_ascii_case("authorization"));
                if is_authorization
                    && let Some(value) = map.get("value").and_then(Value::as_str)
                    && !value.is_empty()
                {
                    out.push(value.to_string());
                }
                map.values().for_each(|child| secrets(child, out));
            }
            Value::Array(items) => items.iter().for_each(|child| secrets(child, out)),
            _ => {}
        }
    }
    let parsed: Value = serde_json::from_slice(dump)?;
    let mut found = Vec::new();
    secrets(&parsed, &mut found);
    let mut text = String::from_utf8_lossy(dump).into_owned();
    for secret in found {
        text = text.replace(&secret, "[redacted]");
    }
    Ok(text.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_redacted_wherever_it_appears() {
        let dump = br#"{"configs":[{"@type":"type.googleapis.com/envoy.admin.v3.BootstrapConfigDump","bootstrap":{"dynamic_resources":{"ads_config":{"grpc_services":[{"initial_metadata":[{"key":"authorization","value":"secret-token"}]}]}}}},{"copy":"secret-token"}]}"#;
        let clean = String::from_utf8(sanitize_config_dump(dump).expect("json")).expect("utf8");
        assert!(!clean.contains("secret-token"), "{clean}");
        assert_eq!(clean.matches("[redacted]").count(), 2, "{clean}");
    }

    #[test]
    fn a_dump_without_credentials_is_unchanged() {
        let dump = br#"{"configs":[{"key":"x-other","value":"v"}]}"#;
        assert_eq!(sanitize_config_dump(dump).expect("json"), dump.to_vec());
    }

    #[test]
    fn loopback_proxies_are_asked_in_plaintext() {
        assert!(plaintext("127.0.0.1"));
        assert!(plaintext("::1"));
        assert!(!plaintext("127.0.0.2"));
        assert!(!plaintext("10.0.0.1"));
    }
}
