//! Dataplane tokens: RS256 JWTs signed with a per-mesh key, bound to the
//! mesh and the dataplane name (and optionally tags), as Kuma issues them.
//!
//! The signing key is a mesh Secret (`dataplane-token-signing-key-<mesh>-1`)
//! holding a 2048-bit PKCS#1 PEM RSA key; the token's `kid` is the key's
//! serial, `1`.
//! The key is created on first use, so every control plane sharing a store
//! signs and verifies with the same key.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use kuma_crds::resource::{Meta, Resource, ResourceType, Spec};
use kuma_crds::secret::SecretSpec;
use rsa::pkcs1::{EncodeRsaPrivateKey, EncodeRsaPublicKey, LineEnding};
use serde::{Deserialize, Serialize};

use crate::store::{ResourceKey, Store, StoreError};

/// The serial (and `kid`) of the signing keys this control plane creates.
const KEY_SERIAL: &str = "1";

/// The claims of a dataplane token (Kuma's names).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DataplaneClaims {
    /// The dataplane name.
    #[serde(rename = "Name", default)]
    pub name: String,
    /// The mesh.
    #[serde(rename = "Mesh", default)]
    pub mesh: String,
    /// Tags the dataplane must carry (`kuma.io/service` and others).
    #[serde(rename = "Tags", default)]
    pub tags: BTreeMap<String, Vec<String>>,
    /// `dataplane` (default), `ingress` or `egress`.
    #[serde(rename = "Type", default)]
    pub proxy_type: String,
    /// Issued at.
    #[serde(default)]
    pub iat: u64,
    /// Expires at (absent: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    /// Not before.
    #[serde(default)]
    pub nbf: u64,
    /// Token id.
    #[serde(default)]
    pub jti: String,
}

/// Why a token was refused or could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// No token was presented.
    #[error("missing dataplane token")]
    Missing,
    /// The token does not verify.
    #[error("invalid dataplane token: {0}")]
    Invalid(String),
    /// The token is for someone else.
    #[error("dataplane token is for {what} {token:?}, not {actual:?}")]
    Mismatch {
        /// Which claim.
        what: &'static str,
        /// The token's value.
        token: String,
        /// The proxy's value.
        actual: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Key handling failed.
    #[error("signing key: {0}")]
    Key(String),
}

/// The name of a mesh's signing key secret.
pub fn signing_key_name(mesh: &str) -> String {
    format!("dataplane-token-signing-key-{mesh}-{KEY_SERIAL}")
}

/// Issues and verifies dataplane tokens.
#[derive(Clone, Debug)]
pub struct Tokens {
    store: Store,
}

impl Tokens {
    /// Tokens backed by `store`.
    pub fn new(store: Store) -> Self {
        Tokens { store }
    }

    /// The mesh's signing key PEM, created when absent.
    pub async fn signing_key(&self, mesh: &str) -> Result<String, TokenError> {
        let key = ResourceKey::new(ResourceType::Secret, mesh, &signing_key_name(mesh));
        match self.store.get(&key).await {
            Ok(r) => return pem_of(&r),
            Err(StoreError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let pem = tokio::task::spawn_blocking(|| {
            let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).map_err(|e| e.to_string())?;
            key.to_pkcs1_pem(LineEnding::LF)
                .map(|p| p.to_string())
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| TokenError::Key(e.to_string()))?
        .map_err(TokenError::Key)?;
        let secret = Resource::new(
            Meta {
                name: key.name.clone(),
                mesh: Some(mesh.to_string()),
                ..Meta::default()
            },
            Spec::Secret(SecretSpec::from_bytes(pem.as_bytes())),
        );
        match self.store.create(secret).await {
            Ok(r) => pem_of(&r),
            // Another control plane created it first: use theirs.
            Err(StoreError::AlreadyExists(_)) => pem_of(&self.store.get(&key).await?),
            Err(e) => Err(e.into()),
        }
    }

    /// Issues a token for a dataplane of `mesh`.
    pub async fn issue(
        &self,
        mesh: &str,
        name: &str,
        tags: BTreeMap<String, Vec<String>>,
        proxy_type: &str,
        valid_for: Option<Duration>,
    ) -> Result<String, TokenError> {
        let pem = self.signing_key(mesh).await?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let claims = DataplaneClaims {
            name: name.to_string(),
            mesh: mesh.to_string(),
            tags,
            proxy_type: if proxy_type.is_empty() {
                "dataplane".into()
            } else {
                proxy_type.to_string()
            },
            iat: now,
            exp: valid_for.map(|d| now + d.as_secs()),
            nbf: now.saturating_sub(60),
            jti: uuid::Uuid::new_v4().to_string(),
        };
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(KEY_SERIAL.to_string());
        let key = EncodingKey::from_rsa_pem(pem.as_bytes()).map_err(|e| TokenError::Key(e.to_string()))?;
        jsonwebtoken::encode(&header, &claims, &key).map_err(|e| TokenError::Key(e.to_string()))
    }

    /// Verifies a token presented for dataplane `name` of `mesh`.
    pub async fn verify(&self, token: &str, mesh: &str, name: &str) -> Result<DataplaneClaims, TokenError> {
        let token = token.trim();
        let token = token.strip_prefix("Bearer ").unwrap_or(token).trim();
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        let pem = self.signing_key(mesh).await?;
        let private = <rsa::RsaPrivateKey as rsa::pkcs1::DecodeRsaPrivateKey>::from_pkcs1_pem(&pem)
            .map_err(|e| TokenError::Key(e.to_string()))?;
        let public_pem = private
            .to_public_key()
            .to_pkcs1_pem(LineEnding::LF)
            .map_err(|e| TokenError::Key(e.to_string()))?;
        let key =
            DecodingKey::from_rsa_pem(public_pem.as_bytes()).map_err(|e| TokenError::Key(e.to_string()))?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.required_spec_claims.clear();
        validation.validate_exp = true;
        let data = jsonwebtoken::decode::<DataplaneClaims>(token, &key, &validation)
            .map_err(|e| TokenError::Invalid(e.to_string()))?;
        let claims = data.claims;
        if claims.mesh != mesh {
            return Err(TokenError::Mismatch {
                what: "mesh",
                token: claims.mesh,
                actual: mesh.into(),
            });
        }
        if !claims.name.is_empty() && claims.name != name {
            return Err(TokenError::Mismatch {
                what: "dataplane",
                token: claims.name,
                actual: name.into(),
            });
        }
        Ok(claims)
    }
}

fn pem_of(r: &Resource) -> Result<String, TokenError> {
    match &r.spec {
        Spec::Secret(s) => String::from_utf8(s.bytes()).map_err(|e| TokenError::Key(e.to_string())),
        _ => Err(TokenError::Key("the signing key is not a Secret".into())),
    }
}
