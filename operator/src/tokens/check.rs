//! The properties of token verification, for the `token_verify` fuzz target
//! and its corpus replay: whatever string a proxy or a user presents, a
//! dataplane token is accepted only when it is the genuine token issued for
//! that mesh and dataplane, and a user token only when it is the genuine
//! user token; expired, revoked, foreign-key, unsigned (`alg: none`) and
//! HMAC-with-the-public-key tokens are refused, edited or not.
//!
//! An input is a base token chosen by its first byte (one of [`BASES`], or
//! the rest of the input as the token itself) and an edit script over the
//! base: 4-byte steps `op, position (u16 LE), byte` replacing, inserting or
//! deleting one byte. The keys are made afresh in every run, so an input
//! means the same edit of the same kind of token in every run.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use kuma_crds::resource::{Meta, Resource, ResourceType, Spec};
use kuma_crds::secret::SecretSpec;
use rsa::pkcs1::EncodeRsaPublicKey;

use super::{DataplaneClaims, RegisteredClaims, TokenError, Tokens, UserClaims, unix_now};
use crate::api::request_check::runtime;
use crate::store::Store;

/// The tokens an input starts from, by its first byte.
pub const BASES: &[&str] = &[
    "the dataplane token of default/web",
    "an expired dataplane token of default/web",
    "a revoked dataplane token of default/web",
    "default/web's claims signed by another key with the same serial",
    "the user token of alice",
    "a revoked user token of alice",
    "default/web's claims unsigned (alg: none)",
    "default/web's claims signed HS256 with the public key as secret",
];

/// The mesh and dataplane the genuine token is for.
const MESH: &str = "default";
const DATAPLANE: &str = "web";

/// Checks one input; `Err` says which property broke.
pub fn check_token(data: &[u8]) -> Result<(), String> {
    let template = template()?;
    let (selector, rest) = data.split_first().map_or((0, &[][..]), |(s, r)| (*s, r));
    let base = usize::from(selector) % (BASES.len() + 1);
    let (token, edited) = match template.tokens.get(base) {
        Some(token) => {
            let edited = apply_edits(token.as_bytes(), rest);
            let changed = edited != token.as_bytes();
            (String::from_utf8_lossy(&edited).into_owned(), changed)
        }
        None => (String::from_utf8_lossy(rest).into_owned(), true),
    };
    runtime()?.block_on(check(template, base, &token, edited))
}

/// Applies the edit script `edits` to `token`.
fn apply_edits(token: &[u8], edits: &[u8]) -> Vec<u8> {
    let mut out = token.to_vec();
    for step in edits.chunks_exact(4) {
        let position = usize::from(u16::from_le_bytes([step[1], step[2]]));
        match step[0] % 3 {
            0 if !out.is_empty() => {
                let at = position % out.len();
                out[at] = step[3];
            }
            1 => {
                let at = position % (out.len() + 1);
                out.insert(at, step[3]);
            }
            2 if !out.is_empty() => {
                let at = position % out.len();
                out.remove(at);
            }
            _ => {}
        }
    }
    out
}

async fn check(template: &Template, base: usize, token: &str, edited: bool) -> Result<(), String> {
    let store = Store::memory();
    for r in &template.resources {
        store.create(r.clone()).await.map_err(|e| e.to_string())?;
    }
    let tokens = Tokens::new(store);
    let what = BASES.get(base).copied().unwrap_or("a raw token");
    let context = |check: &str| format!("{check} ({what}, edited: {edited}, token {token:?})");

    match tokens.verify(token, MESH, DATAPLANE).await {
        Ok(claims) if claims != template.dataplane_claims => {
            return Err(context(&format!("accepted other claims {claims:?}")));
        }
        Ok(_) if base != 0 => return Err(context("accepted as default/web")),
        Err(e) if base == 0 && !edited => return Err(context(&format!("the genuine token refused: {e}"))),
        Err(e) if !edited => expect_reason(base, false, &e).map_err(|m| context(&m))?,
        _ => {}
    }
    if let Ok(claims) = tokens.verify(token, MESH, "db").await {
        return Err(context(&format!("accepted for another dataplane: {claims:?}")));
    }
    if let Ok(claims) = tokens.verify(token, "demo", DATAPLANE).await {
        return Err(context(&format!("accepted for another mesh: {claims:?}")));
    }
    match tokens.verify_user(token).await {
        Ok(claims) if claims != template.user_claims => {
            return Err(context(&format!(
                "accepted as a user with other claims {claims:?}"
            )));
        }
        Ok(_) if base != 4 => return Err(context("accepted as alice")),
        Err(e) if base == 4 && !edited => {
            return Err(context(&format!("the genuine user token refused: {e}")));
        }
        Err(e) if !edited => expect_reason(base, true, &e).map_err(|m| context(&m))?,
        _ => {}
    }
    Ok(())
}

/// An unedited base is refused for its own reason, not by accident
/// (`as_user`: verified as a user token, else as a dataplane token).
fn expect_reason(base: usize, as_user: bool, error: &TokenError) -> Result<(), String> {
    let ok = match (as_user, base) {
        (false, 1) => matches!(error, TokenError::Invalid(m) if m.contains("Expired")),
        (false, 2) | (true, 5) => matches!(error, TokenError::Revoked(_)),
        (false, 3 | 6 | 7) => matches!(error, TokenError::Invalid(_)),
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("refused for the wrong reason: {error}"))
    }
}

/// The keys, the revocation lists and the base tokens. Made once: RSA keys
/// take seconds in a debug build.
struct Template {
    resources: Vec<Resource>,
    tokens: Vec<String>,
    dataplane_claims: DataplaneClaims,
    user_claims: UserClaims,
}

fn template() -> Result<&'static Template, String> {
    static TEMPLATE: std::sync::OnceLock<Result<Template, String>> = std::sync::OnceLock::new();
    TEMPLATE
        .get_or_init(|| runtime()?.block_on(make_template()).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(Clone::clone)
}

async fn make_template() -> Result<Template, TokenError> {
    let store = Store::memory();
    let mesh = kuma_crds::format::parse(&format!("type: Mesh\nname: {MESH}"))
        .map_err(|e| TokenError::Key(e.to_string()))?;
    store.create(mesh).await?;
    let tokens = Tokens::new(store.clone());
    let tags = BTreeMap::from([("kuma.io/service".to_string(), vec![DATAPLANE.to_string()])]);
    let genuine = tokens.issue(MESH, DATAPLANE, tags.clone(), "", None).await?;
    let revoked = tokens.issue(MESH, DATAPLANE, tags.clone(), "", None).await?;
    let user = tokens
        .issue_user(
            "alice",
            &["mesh-system:admin".to_string()],
            Duration::from_secs(3600),
        )
        .await?;
    let revoked_user = tokens
        .issue_user(
            "alice",
            &["mesh-system:admin".to_string()],
            Duration::from_secs(3600),
        )
        .await?;
    let (serial, pem) = tokens.newest_key(&super::KeyFamily::dataplane(MESH)).await?;
    let dataplane_claims: DataplaneClaims = Tokens::decode(&pem, &genuine)?;
    let (_, user_pem) = tokens.newest_key(&super::KeyFamily::user()).await?;
    let user_claims: UserClaims = Tokens::decode(&user_pem, &user)?;

    let expired = Tokens::sign(
        &pem,
        serial,
        &DataplaneClaims {
            registered: RegisteredClaims {
                exp: Some(unix_now().saturating_sub(3600)),
                ..dataplane_claims.registered.clone()
            },
            ..dataplane_claims.clone()
        },
    )?;
    let foreign_store = Store::memory();
    foreign_store
        .create(store.list(ResourceType::Mesh, None).await?.remove(0))
        .await?;
    let foreign_pem = Tokens::new(foreign_store.clone()).signing_key(MESH).await?;
    let foreign = Tokens::sign(&foreign_pem, serial, &dataplane_claims)?;
    let payload = serde_json::to_vec(&dataplane_claims).map_err(|e| TokenError::Key(e.to_string()))?;
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"none","typ":"JWT","kid":"{serial}"}}"#)),
        URL_SAFE_NO_PAD.encode(&payload)
    );
    let public_pem = <rsa::RsaPrivateKey as rsa::pkcs1::DecodeRsaPrivateKey>::from_pkcs1_pem(&pem)
        .map_err(|e| TokenError::Key(e.to_string()))?
        .to_public_key()
        .to_pkcs1_pem(rsa::pkcs1::LineEnding::LF)
        .map_err(|e| TokenError::Key(e.to_string()))?;
    let mut hmac_header = Header::new(Algorithm::HS256);
    hmac_header.kid = Some(serial.to_string());
    let hmac = jsonwebtoken::encode(
        &hmac_header,
        &dataplane_claims,
        &EncodingKey::from_secret(public_pem.as_bytes()),
    )
    .map_err(|e| TokenError::Key(e.to_string()))?;

    let revoked_claims: DataplaneClaims = Tokens::decode(&pem, &revoked)?;
    let revoked_user_claims: UserClaims = Tokens::decode(&user_pem, &revoked_user)?;
    for (resource_type, mesh, name, jti) in [
        (
            ResourceType::Secret,
            Some(MESH.to_string()),
            format!("dataplane-token-revocations-{MESH}"),
            revoked_claims.registered.jti,
        ),
        (
            ResourceType::GlobalSecret,
            None,
            super::USER_REVOCATIONS.to_string(),
            revoked_user_claims.registered.jti,
        ),
    ] {
        let data = SecretSpec::from_bytes(format!("some-other-id,{jti}").as_bytes());
        let spec = match resource_type {
            ResourceType::GlobalSecret => Spec::GlobalSecret(data),
            _ => Spec::Secret(data),
        };
        let meta = Meta {
            name,
            mesh,
            ..Meta::default()
        };
        store.create(Resource::new(meta, spec)).await?;
    }
    // Meshes first: secrets live in one.
    let mut resources = store.list(ResourceType::Mesh, None).await?;
    resources.extend(store.list(ResourceType::Secret, None).await?);
    resources.extend(store.list(ResourceType::GlobalSecret, None).await?);
    Ok(Template {
        resources,
        tokens: vec![
            genuine,
            expired,
            revoked,
            foreign,
            user,
            revoked_user,
            unsigned,
            hmac,
        ],
        dataplane_claims,
        user_claims,
    })
}
