//! Tokens, as Kuma issues them: RS256 JWTs whose `kid` is the serial of the
//! signing key.
//!
//! - Dataplane tokens are bound to a mesh and a dataplane name (and
//!   optionally tags), signed with a per-mesh key kept as the Secret
//!   `dataplane-token-signing-key-<mesh>-<serial>`.
//! - User tokens carry a user name and groups for the REST API, signed with
//!   the GlobalSecret `user-token-signing-key-<serial>`.
//!
//! Rotation as in Kuma: add a key with the next serial; new tokens are
//! signed with it, older ones verify with theirs until it is deleted.
//!
//! Keys are 2048-bit PKCS#1 PEM RSA keys created on first use, so every
//! control plane sharing a store signs and verifies with the same key. A
//! token whose id is listed (comma-separated) in the revocations secret
//! (`dataplane-token-revocations-<mesh>`, `user-token-revocations`) is
//! refused.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use kuma_crds::resource::{Meta, Resource, ResourceType, Spec};
use kuma_crds::secret::SecretSpec;
use rsa::pkcs1::{EncodeRsaPrivateKey, EncodeRsaPublicKey, LineEnding};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::store::{ResourceKey, Store, StoreError};

pub mod check;

/// JWT's registered claims, as Kuma's tokens carry them.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RegisteredClaims {
    /// Issued at.
    #[serde(default)]
    pub iat: u64,
    /// Expires at (absent: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    /// Not before.
    #[serde(default)]
    pub nbf: u64,
    /// Token id (what revocation lists name).
    #[serde(default)]
    pub jti: String,
}

impl RegisteredClaims {
    /// Claims of a token issued now, valid for `valid_for` (forever when
    /// `None`), with a fresh id.
    fn issued_now(valid_for: Option<Duration>) -> Self {
        let now = unix_now();
        RegisteredClaims {
            iat: now,
            exp: valid_for.map(|d| now + d.as_secs()),
            // A minute of slack for clocks running behind.
            nbf: now.saturating_sub(60),
            jti: uuid::Uuid::new_v4().to_string(),
        }
    }
}

/// The claims of a user token (Kuma's names).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct UserClaims {
    /// The user name.
    #[serde(rename = "Name", default)]
    pub name: String,
    /// The user's groups.
    #[serde(rename = "Groups", default)]
    pub groups: Vec<String>,
    /// Expiry, id and the like.
    #[serde(flatten)]
    pub registered: RegisteredClaims,
}

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
    /// Expiry, id and the like.
    #[serde(flatten)]
    pub registered: RegisteredClaims,
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
    /// The dataplane carries a tag value the token does not allow.
    #[error("{0}")]
    Tags(String),
    /// The token's id is in the revocations secret.
    #[error("token {0} is revoked")]
    Revoked(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Key handling failed.
    #[error("signing key: {0}")]
    Key(String),
}

/// A family of signing keys: secrets named `<prefix><serial>`. The newest
/// signs new tokens; a token is verified with the key its `kid` names, so
/// tokens signed before a rotation stay valid until their key is deleted.
#[derive(Clone, Debug)]
struct KeyFamily {
    resource_type: ResourceType,
    mesh: String,
    prefix: String,
}

impl KeyFamily {
    /// `dataplane-token-signing-key-<mesh>-<serial>` Secrets.
    fn dataplane(mesh: &str) -> Self {
        KeyFamily {
            resource_type: ResourceType::Secret,
            mesh: mesh.to_string(),
            prefix: format!("dataplane-token-signing-key-{mesh}-"),
        }
    }

    /// `user-token-signing-key-<serial>` GlobalSecrets.
    fn user() -> Self {
        KeyFamily {
            resource_type: ResourceType::GlobalSecret,
            mesh: String::new(),
            prefix: USER_SIGNING_KEY_PREFIX.to_string(),
        }
    }

    fn key(&self, serial: u64) -> ResourceKey {
        ResourceKey::new(
            self.resource_type,
            &self.mesh,
            &format!("{}{serial}", self.prefix),
        )
    }
}

/// The name prefix of the GlobalSecrets holding user token signing keys.
pub const USER_SIGNING_KEY_PREFIX: &str = "user-token-signing-key-";
/// The GlobalSecret listing revoked user token ids.
pub const USER_REVOCATIONS: &str = "user-token-revocations";
/// The GlobalSecret holding the bootstrapped admin user token.
pub const ADMIN_USER_TOKEN: &str = "admin-user-token";

/// Seconds since the epoch.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// Issues and verifies tokens.
#[derive(Clone, Debug)]
pub struct Tokens {
    store: Store,
}

impl Tokens {
    /// Tokens backed by `store`.
    pub fn new(store: Store) -> Self {
        Tokens { store }
    }

    /// The mesh's newest signing key PEM (serial 1 is created when there is
    /// none).
    pub async fn signing_key(&self, mesh: &str) -> Result<String, TokenError> {
        Ok(self.newest_key(&KeyFamily::dataplane(mesh)).await?.1)
    }

    /// The newest key of a family, with its serial.
    async fn newest_key(&self, family: &KeyFamily) -> Result<(u64, String), TokenError> {
        let mesh = (!family.mesh.is_empty()).then_some(family.mesh.as_str());
        let keys = self.store.list(family.resource_type, mesh).await?;
        let newest = keys
            .iter()
            .filter_map(|r| {
                let serial = r.meta.name.strip_prefix(&family.prefix)?.parse::<u64>().ok()?;
                Some((serial, r))
            })
            .max_by_key(|(serial, _)| *serial);
        match newest {
            Some((serial, r)) => Ok((serial, pem_of(r)?)),
            None => Ok((1, self.key_pem(family.key(1)).await?)),
        }
    }

    /// The key a token's `kid` names.
    async fn key_for(&self, family: &KeyFamily, token: &str) -> Result<String, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| TokenError::Invalid(e.to_string()))?;
        let serial: u64 = header
            .kid
            .as_deref()
            .and_then(|k| k.parse().ok())
            .ok_or_else(|| TokenError::Invalid("the token has no key serial (kid)".into()))?;
        match self.store.get(&family.key(serial)).await {
            Ok(r) => pem_of(&r),
            Err(StoreError::NotFound(_)) => Err(TokenError::Invalid(format!(
                "there is no signing key with serial {serial}"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// The signing key PEM kept in the secret `key`, created when absent.
    async fn key_pem(&self, key: ResourceKey) -> Result<String, TokenError> {
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
        let data = SecretSpec::from_bytes(pem.as_bytes());
        let (mesh, spec) = match key.resource_type {
            ResourceType::GlobalSecret => (None, Spec::GlobalSecret(data)),
            _ => (Some(key.mesh.clone()), Spec::Secret(data)),
        };
        let secret = Resource::new(
            Meta {
                name: key.name.clone(),
                mesh,
                ..Meta::default()
            },
            spec,
        );
        match self.store.create(secret).await {
            Ok(r) => pem_of(&r),
            // Another control plane created it first: use theirs.
            Err(StoreError::AlreadyExists(_)) => pem_of(&self.store.get(&key).await?),
            Err(e) => Err(e.into()),
        }
    }

    /// Signs `claims` with the key PEM `pem` of serial `serial`.
    fn sign<C: Serialize>(pem: &str, serial: u64, claims: &C) -> Result<String, TokenError> {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(serial.to_string());
        let key = EncodingKey::from_rsa_pem(pem.as_bytes()).map_err(|e| TokenError::Key(e.to_string()))?;
        jsonwebtoken::encode(&header, claims, &key).map_err(|e| TokenError::Key(e.to_string()))
    }

    /// Verifies `token` against the key PEM `pem` and reads its claims.
    fn decode<C: DeserializeOwned>(pem: &str, token: &str) -> Result<C, TokenError> {
        let private = <rsa::RsaPrivateKey as rsa::pkcs1::DecodeRsaPrivateKey>::from_pkcs1_pem(pem)
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
        jsonwebtoken::decode::<C>(token, &key, &validation)
            .map(|data| data.claims)
            .map_err(|e| TokenError::Invalid(e.to_string()))
    }

    /// Refuses `jti` when the secret `list` names it.
    async fn check_revocations(&self, list: ResourceKey, jti: &str) -> Result<(), TokenError> {
        let data = match self.store.get(&list).await {
            Ok(r) => pem_of(&r)?,
            Err(StoreError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        if data
            .trim_end()
            .split(',')
            .any(|id| !id.is_empty() && id.trim() == jti)
        {
            return Err(TokenError::Revoked(jti.to_string()));
        }
        Ok(())
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
        let (serial, pem) = self.newest_key(&KeyFamily::dataplane(mesh)).await?;
        let claims = DataplaneClaims {
            name: name.to_string(),
            mesh: mesh.to_string(),
            tags,
            proxy_type: if proxy_type.is_empty() {
                "dataplane".into()
            } else {
                proxy_type.to_string()
            },
            registered: RegisteredClaims::issued_now(valid_for),
        };
        Self::sign(&pem, serial, &claims)
    }

    /// Verifies a token presented for dataplane `name` of `mesh`.
    pub async fn verify(&self, token: &str, mesh: &str, name: &str) -> Result<DataplaneClaims, TokenError> {
        let token = token.trim();
        let token = token.strip_prefix("Bearer ").unwrap_or(token).trim();
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        let pem = self.key_for(&KeyFamily::dataplane(mesh), token).await?;
        let claims: DataplaneClaims = Self::decode(&pem, token)?;
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
        let revocations = format!("dataplane-token-revocations-{mesh}");
        self.check_revocations(
            ResourceKey::new(ResourceType::Secret, mesh, &revocations),
            &claims.registered.jti,
        )
        .await?;
        Ok(claims)
    }

    /// Issues a user token for the REST API.
    pub async fn issue_user(
        &self,
        name: &str,
        groups: &[String],
        valid_for: Duration,
    ) -> Result<String, TokenError> {
        let (serial, pem) = self.newest_key(&KeyFamily::user()).await?;
        let claims = UserClaims {
            name: name.to_string(),
            groups: groups.to_vec(),
            registered: RegisteredClaims::issued_now(Some(valid_for)),
        };
        Self::sign(&pem, serial, &claims)
    }

    /// Verifies a user token.
    pub async fn verify_user(&self, token: &str) -> Result<UserClaims, TokenError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        let pem = self.key_for(&KeyFamily::user(), token).await?;
        let claims: UserClaims = Self::decode(&pem, token)?;
        self.check_revocations(
            ResourceKey::new(ResourceType::GlobalSecret, "", USER_REVOCATIONS),
            &claims.registered.jti,
        )
        .await?;
        Ok(claims)
    }

    /// Creates the GlobalSecret `admin-user-token` (a ten-year token of
    /// `mesh-system:admin`) unless it exists; true when created.
    pub async fn bootstrap_admin_token(&self) -> Result<bool, TokenError> {
        let key = ResourceKey::new(ResourceType::GlobalSecret, "", ADMIN_USER_TOKEN);
        match self.store.get(&key).await {
            Ok(_) => return Ok(false),
            Err(StoreError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let admin = [crate::api::ADMIN_GROUP.to_string()];
        let token = self
            .issue_user(
                crate::api::ADMIN_USER,
                &admin,
                Duration::from_secs(10 * 365 * 24 * 3600),
            )
            .await?;
        let secret = Resource::new(
            Meta {
                name: ADMIN_USER_TOKEN.into(),
                ..Meta::default()
            },
            Spec::GlobalSecret(SecretSpec::from_bytes(token.as_bytes())),
        );
        match self.store.create(secret).await {
            Ok(_) => Ok(true),
            Err(StoreError::AlreadyExists(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

/// Checks a dataplane's tags against its token's `Tags` claim, as Kuma
/// does: every tag the token names must be on the dataplane (inbounds or
/// gateway), with only values the token allows.
pub fn check_tags(
    token_tags: &BTreeMap<String, Vec<String>>,
    dataplane: &kuma_crds::dataplane::DataplaneSpec,
) -> Result<(), TokenError> {
    if token_tags.is_empty() {
        return Ok(());
    }
    let networking = dataplane.networking.as_ref();
    let mut dp_tags: BTreeMap<&str, std::collections::BTreeSet<&str>> = BTreeMap::new();
    let inbound_tags = dataplane.inbounds().iter().filter_map(|i| i.tags.as_ref());
    let gateway_tags = networking
        .and_then(|n| n.gateway.as_ref())
        .and_then(|g| g.tags.as_ref());
    for tags in inbound_tags.chain(gateway_tags) {
        for (k, v) in tags {
            dp_tags.entry(k).or_default().insert(v);
        }
    }
    for (name, allowed) in token_tags {
        let Some(values) = dp_tags.get(name.as_str()) else {
            return Err(TokenError::Tags(format!(
                "dataplane has no tag {name:?} required by the token"
            )));
        };
        if let Some(value) = values.iter().find(|v| !allowed.iter().any(|a| a == *v)) {
            return Err(TokenError::Tags(format!(
                "dataplane contains tag {name:?} with value {value:?} which is not allowed with this token. Allowed values in token are {allowed:?}"
            )));
        }
    }
    Ok(())
}

/// The text of a secret (a key PEM, a token, a revocation list).
fn pem_of(r: &Resource) -> Result<String, TokenError> {
    match &r.spec {
        Spec::Secret(s) | Spec::GlobalSecret(s) => {
            String::from_utf8(s.bytes()).map_err(|e| TokenError::Key(e.to_string()))
        }
        _ => Err(TokenError::Key(format!("{} is not a secret", r.meta.name))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dataplane(services: &[&str]) -> kuma_crds::dataplane::DataplaneSpec {
        let inbounds: String = services
            .iter()
            .enumerate()
            .map(|(i, s)| {
                format!(
                    "    - port: {}\n      tags:\n        kuma.io/service: {s}\n",
                    8080 + i
                )
            })
            .collect();
        let text = format!(
            "type: Dataplane\nmesh: default\nname: dp\nnetworking:\n  address: 127.0.0.1\n  inbound:\n{inbounds}"
        );
        match kuma_crds::format::parse(&text).expect("dataplane").spec {
            Spec::Dataplane(d) => d,
            _ => unreachable!(),
        }
    }

    #[test]
    fn token_tags_bound_the_dataplane_tags() {
        let token = BTreeMap::from([(
            "kuma.io/service".to_string(),
            vec!["web".to_string(), "api".to_string()],
        )]);
        assert!(check_tags(&BTreeMap::new(), &dataplane(&["anything"])).is_ok());
        assert!(check_tags(&token, &dataplane(&["web"])).is_ok());
        assert!(check_tags(&token, &dataplane(&["web", "api"])).is_ok());
        let err = check_tags(&token, &dataplane(&["web", "db"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"db\" which is not allowed"), "{err}");
        let version = BTreeMap::from([("version".to_string(), vec!["v1".to_string()])]);
        let err = check_tags(&version, &dataplane(&["web"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no tag \"version\""), "{err}");
    }
}
