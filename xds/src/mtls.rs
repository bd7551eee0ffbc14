//! Mesh mTLS: the certificate authorities of a Mesh's `mtls.backends`, and
//! the identity certificates proxies present, as Kuma encodes them:
//!
//! - a proxy's certificate has the URI SANs `spiffe://<mesh>/<service>` for
//!   each service it serves and `kuma://<tag>/<value>` for its tags;
//! - it reaches Envoy over SDS as `identity_cert:secret:<mesh>`, with the
//!   trusted CAs as `mesh_ca:secret:<mesh>`;
//! - servers accept clients whose certificate has a `spiffe://<mesh>/` SAN,
//!   clients check the destination's exact SPIFFE id, send the ALPN `kuma`
//!   and an SNI naming the destination's tags.
//!
//! Certificates use ECDSA P-256 keys (fast to generate; Kuma uses RSA).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use kuma_crds::mesh::{MeshSpec, MtlsMode, parse_expiration};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};

/// The ALPN protocol of mesh traffic.
pub const KUMA_ALPN: &str = "kuma";

/// Kuma's default lifetime of proxy certificates.
pub const DEFAULT_CERT_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// The SDS name of a proxy's identity certificate.
pub fn identity_secret_name(mesh: &str) -> String {
    format!("identity_cert:secret:{mesh}")
}

/// The SDS name of the trusted CAs.
pub fn ca_secret_name(mesh: &str) -> String {
    format!("mesh_ca:secret:{mesh}")
}

/// A service's SPIFFE id.
pub fn spiffe_id(mesh: &str, service: &str) -> String {
    format!("spiffe://{mesh}/{service}")
}

/// A tag's Kuma URI.
pub fn kuma_id(tag: &str, value: &str) -> String {
    format!("kuma://{tag}/{value}")
}

/// Kuma's SNI for a destination: `<service>{mesh=<mesh>,k=v,…}`.
pub fn sni(mesh: &str, service: &str, tags: &BTreeMap<String, String>) -> String {
    let mut extra: BTreeMap<&str, &str> = tags
        .iter()
        .filter(|(k, _)| k.as_str() != kuma_crds::dataplane::SERVICE_TAG)
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    extra.insert("mesh", mesh);
    let rendered: Vec<String> = extra.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{service}{{{}}}", rendered.join(","))
}

/// The secrets holding a builtin backend's CA: `(cert, key)` names.
pub fn builtin_secret_names(mesh: &str, backend: &str) -> (String, String) {
    (
        format!("{mesh}.ca-builtin-cert-{backend}"),
        format!("{mesh}.ca-builtin-key-{backend}"),
    )
}

/// Why mTLS cannot be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MtlsError {
    /// The enabled backend is not declared.
    #[error("mtls.enabledBackend {0:?} is not one of mtls.backends")]
    UnknownBackend(String),
    /// A backend's CA material is missing.
    #[error("the CA of backend {backend:?} is not available: {reason}")]
    MissingCa {
        /// The backend.
        backend: String,
        /// What is missing.
        reason: String,
    },
    /// Certificate handling failed.
    #[error("certificate: {0}")]
    Certificate(String),
}

fn cert_err(e: impl std::fmt::Display) -> MtlsError {
    MtlsError::Certificate(e.to_string())
}

/// A certificate authority: its certificate and key, PEM.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Ca {
    /// The certificate.
    pub cert_pem: String,
    /// The private key.
    pub key_pem: String,
}

/// Generates a builtin backend's CA.
pub fn generate_ca(mesh: &str, backend: &str, validity: Duration) -> Result<Ca, MtlsError> {
    let key = KeyPair::generate().map_err(cert_err)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, format!("{mesh} {backend}"));
    params.distinguished_name.push(DnType::OrganizationName, "Kuma");
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.subject_alt_names = vec![SanType::URI(
        format!("spiffe://{mesh}").try_into().map_err(cert_err)?,
    )];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::seconds(validity.as_secs() as i64);
    let cert = params.self_signed(&key).map_err(cert_err)?;
    Ok(Ca {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Whether a connection mode accepts plaintext too.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Only mesh mTLS.
    Strict,
    /// mTLS, plaintext and application TLS.
    Permissive,
}

/// A mesh's resolved mTLS: who signs, whom to trust.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MeshMtls {
    /// The mesh.
    pub mesh: String,
    /// The enabled backend.
    pub backend: String,
    /// Its mode.
    pub mode: Mode,
    /// Its CA, which signs proxy certificates.
    pub signer: Ca,
    /// Every backend's CA certificate whose material is known (rotation
    /// trusts old and new), concatenated.
    pub trusted_pem: String,
    /// The names of the trusted backends.
    pub trusted_backends: Vec<String>,
    /// How long proxy certificates live.
    pub cert_lifetime: Duration,
}

/// Bytes of a data source (`secret`, `inline`, `inlineString`, `file`).
fn data_source(
    v: Option<&serde_json::Value>,
    secrets: &BTreeMap<String, Vec<u8>>,
) -> Result<Vec<u8>, String> {
    let Some(v) = v else {
        return Err("no data source".into());
    };
    if let Some(name) = v.get("secret").and_then(|s| s.as_str()) {
        return secrets
            .get(name)
            .cloned()
            .ok_or_else(|| format!("secret {name:?} does not exist"));
    }
    if let Some(text) = v.get("inlineString").and_then(|s| s.as_str()) {
        return Ok(text.as_bytes().to_vec());
    }
    if let Some(b64) = v.get("inline").and_then(|s| s.as_str()) {
        use base64::Engine;
        return base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| e.to_string());
    }
    if let Some(path) = v.get("file").and_then(|s| s.as_str()) {
        return std::fs::read(path).map_err(|e| format!("{path}: {e}"));
    }
    Err("unknown data source".into())
}

/// The CA of a backend, from the mesh's secrets.
fn backend_ca(
    mesh: &str,
    backend: &kuma_crds::mesh::CertificateAuthorityBackend,
    secrets: &BTreeMap<String, Vec<u8>>,
) -> Result<Ca, MtlsError> {
    let missing = |reason: String| MtlsError::MissingCa {
        backend: backend.name.clone(),
        reason,
    };
    let text = |b: Vec<u8>| String::from_utf8(b).map_err(|e| missing(e.to_string()));
    match backend.backend_type.as_str() {
        "builtin" => {
            let (cert, key) = builtin_secret_names(mesh, &backend.name);
            let cert = secrets
                .get(&cert)
                .cloned()
                .ok_or_else(|| missing(format!("secret {cert:?} is not created yet")))?;
            let key = secrets
                .get(&key)
                .cloned()
                .ok_or_else(|| missing(format!("secret {key:?} is not created yet")))?;
            Ok(Ca {
                cert_pem: text(cert)?,
                key_pem: text(key)?,
            })
        }
        "provided" => {
            let conf = backend.conf.as_ref();
            let cert = data_source(conf.and_then(|c| c.get("cert")), secrets).map_err(missing)?;
            let key = data_source(conf.and_then(|c| c.get("key")), secrets).map_err(missing)?;
            Ok(Ca {
                cert_pem: text(cert)?,
                key_pem: text(key)?,
            })
        }
        other => Err(missing(format!("backend type {other:?} is not supported"))),
    }
}

/// The mesh's mTLS, `None` when it is off. `secrets` are the mesh's
/// secrets by name.
pub fn resolve(
    mesh: &str,
    spec: &MeshSpec,
    secrets: &BTreeMap<String, Vec<u8>>,
) -> Result<Option<MeshMtls>, MtlsError> {
    let Some(mtls) = &spec.mtls else { return Ok(None) };
    let Some(enabled) = mtls.enabled_backend.as_deref().filter(|b| !b.is_empty()) else {
        return Ok(None);
    };
    let backends = mtls.backends.as_deref().unwrap_or(&[]);
    let backend = backends
        .iter()
        .find(|b| b.name == enabled)
        .ok_or_else(|| MtlsError::UnknownBackend(enabled.into()))?;
    let signer = backend_ca(mesh, backend, secrets)?;
    let mut trusted_pem = String::new();
    let mut trusted_backends = Vec::new();
    for b in backends {
        // Backends being rotated in or out are trusted once their CA exists.
        if let Ok(ca) = if b.name == enabled {
            Ok(signer.clone())
        } else {
            backend_ca(mesh, b, secrets)
        } {
            trusted_pem.push_str(ca.cert_pem.trim_end());
            trusted_pem.push('\n');
            trusted_backends.push(b.name.clone());
        }
    }
    let cert_lifetime = backend
        .dp_cert
        .as_ref()
        .and_then(|d| d.rotation.as_ref())
        .and_then(|r| parse_expiration(&r.expiration))
        .filter(|d| !d.is_zero())
        .unwrap_or(DEFAULT_CERT_LIFETIME);
    let mode = match backend.mode {
        Some(MtlsMode::PERMISSIVE) => Mode::Permissive,
        _ => Mode::Strict,
    };
    Ok(Some(MeshMtls {
        mesh: mesh.to_string(),
        backend: enabled.to_string(),
        mode,
        signer,
        trusted_pem,
        trusted_backends,
        cert_lifetime,
    }))
}

/// A proxy's identity certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The certificate.
    pub cert_pem: String,
    /// Its key.
    pub key_pem: String,
    /// The backend that signed it.
    pub backend: String,
    /// Its URI SANs.
    pub sans: Vec<String>,
    /// When it was issued.
    pub issued_at: SystemTime,
    /// When it expires.
    pub not_after: SystemTime,
}

impl Identity {
    /// When to replace it: at 4/5 of its lifetime, as Kuma does.
    pub fn renew_at(&self) -> SystemTime {
        let life = self.not_after.duration_since(self.issued_at).unwrap_or_default();
        self.issued_at + life * 4 / 5
    }
}

/// The URI SANs of a proxy: its services' SPIFFE ids and its tags.
pub fn proxy_sans(mesh: &str, tags: &BTreeMap<String, std::collections::BTreeSet<String>>) -> Vec<String> {
    let mut sans = Vec::new();
    for (k, values) in tags {
        for v in values {
            if k == kuma_crds::dataplane::SERVICE_TAG {
                sans.push(spiffe_id(mesh, v));
            }
            sans.push(kuma_id(k, v));
        }
    }
    sans.sort();
    sans.dedup();
    sans
}

/// Issues a certificate with `sans` signed by the mesh's enabled CA.
pub fn issue(mtls: &MeshMtls, sans: &[String], now: SystemTime) -> Result<Identity, MtlsError> {
    let ca_key = KeyPair::from_pem(&mtls.signer.key_pem).map_err(cert_err)?;
    let issuer = Issuer::from_ca_cert_pem(&mtls.signer.cert_pem, ca_key).map_err(cert_err)?;
    let key = KeyPair::generate().map_err(cert_err)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
    params.subject_alt_names = sans
        .iter()
        .map(|s| s.clone().try_into().map(SanType::URI).map_err(cert_err))
        .collect::<Result<_, _>>()?;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let since_epoch = now.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let now_odt =
        time::OffsetDateTime::from_unix_timestamp(since_epoch.as_secs() as i64).map_err(cert_err)?;
    // Valid a little before issuance so that small clock differences do
    // not reject a fresh certificate.
    params.not_before = now_odt - time::Duration::minutes(1);
    params.not_after = now_odt + time::Duration::seconds(mtls.cert_lifetime.as_secs().max(1) as i64);
    let cert = params.signed_by(&key, &issuer).map_err(cert_err)?;
    let mut chain = cert.pem();
    // The chain up to the CA lets peers trusting only the CA verify it.
    chain.push_str(&mtls.signer.cert_pem);
    // Whole seconds, as in the certificate: an identity's lifetime must be
    // exactly the configured one, or the reconciler (which compares them)
    // would take it for another setting and issue a new certificate on
    // every regeneration of the proxy.
    let issued_at = SystemTime::UNIX_EPOCH + Duration::from_secs(since_epoch.as_secs());
    Ok(Identity {
        cert_pem: chain,
        key_pem: key.serialize_pem(),
        backend: mtls.backend.clone(),
        sans: sans.to_vec(),
        issued_at,
        not_after: issued_at + Duration::from_secs(mtls.cert_lifetime.as_secs().max(1)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mesh(yaml: &str) -> MeshSpec {
        serde_yaml::from_str(yaml).expect("mesh spec")
    }

    const BUILTIN: &str = "
mtls:
  enabledBackend: ca-1
  backends:
    - name: ca-1
      type: builtin
      mode: PERMISSIVE
      dpCert:
        rotation:
          expiration: 2h
";

    fn builtin_secrets(mesh: &str, backend: &str, ca: &Ca) -> BTreeMap<String, Vec<u8>> {
        let (cert, key) = builtin_secret_names(mesh, backend);
        BTreeMap::from([
            (cert, ca.cert_pem.clone().into_bytes()),
            (key, ca.key_pem.clone().into_bytes()),
        ])
    }

    #[test]
    fn names_follow_kuma() {
        let tags = BTreeMap::from([
            ("kuma.io/service".to_string(), "backend".to_string()),
            ("version".to_string(), "v2".to_string()),
        ]);
        assert_eq!(
            sni("default", "backend", &tags),
            "backend{mesh=default,version=v2}"
        );
        assert_eq!(identity_secret_name("m"), "identity_cert:secret:m");
        assert_eq!(ca_secret_name("m"), "mesh_ca:secret:m");
        assert_eq!(
            builtin_secret_names("m", "ca-1"),
            (
                "m.ca-builtin-cert-ca-1".to_string(),
                "m.ca-builtin-key-ca-1".to_string()
            )
        );
    }

    #[test]
    fn proxy_sans_have_spiffe_ids_for_services_and_kuma_ids_for_tags() {
        let tags = BTreeMap::from([
            (
                "kuma.io/service".to_string(),
                ["a".to_string(), "b".to_string()].into(),
            ),
            ("zone".to_string(), ["east".to_string()].into()),
        ]);
        assert_eq!(
            proxy_sans("m", &tags),
            vec![
                "kuma://kuma.io/service/a",
                "kuma://kuma.io/service/b",
                "kuma://zone/east",
                "spiffe://m/a",
                "spiffe://m/b",
            ]
        );
    }

    #[test]
    fn off_without_an_enabled_backend() {
        let secrets = BTreeMap::new();
        assert_eq!(resolve("m", &mesh("{}"), &secrets), Ok(None));
        let declared_only = mesh("mtls: {backends: [{name: ca-1, type: builtin}]}");
        assert_eq!(resolve("m", &declared_only, &secrets), Ok(None));
    }

    #[test]
    fn errors_name_what_is_missing() {
        let secrets = BTreeMap::new();
        let unknown = mesh("mtls: {enabledBackend: ca-2, backends: [{name: ca-1, type: builtin}]}");
        assert_eq!(
            resolve("m", &unknown, &secrets),
            Err(MtlsError::UnknownBackend("ca-2".into()))
        );
        let err = resolve("m", &mesh(BUILTIN), &secrets).unwrap_err();
        assert!(
            err.to_string()
                .contains("\"m.ca-builtin-cert-ca-1\" is not created yet"),
            "{err}"
        );
        let provided = mesh(
            "mtls: {enabledBackend: p, backends: [{name: p, type: provided, conf: {cert: {secret: c}, key: {secret: k}}}]}",
        );
        let err = resolve("m", &provided, &secrets).unwrap_err();
        assert!(err.to_string().contains("secret \"c\" does not exist"), "{err}");
    }

    #[test]
    fn builtin_backend_resolves_mode_and_lifetime() {
        let ca = generate_ca("m", "ca-1", Duration::from_secs(3600)).unwrap();
        let resolved = resolve("m", &mesh(BUILTIN), &builtin_secrets("m", "ca-1", &ca))
            .unwrap()
            .unwrap();
        assert_eq!(resolved.mode, Mode::Permissive);
        assert_eq!(resolved.cert_lifetime, Duration::from_secs(7200));
        assert_eq!(resolved.signer, ca);
        assert_eq!(resolved.trusted_backends, vec!["ca-1"]);
    }

    #[test]
    fn provided_backend_reads_secrets_and_inline_data() {
        use base64::Engine;
        let ca = generate_ca("m", "p", Duration::from_secs(3600)).unwrap();
        let key_b64 = base64::engine::general_purpose::STANDARD.encode(&ca.key_pem);
        let provided = mesh(&format!(
            "mtls: {{enabledBackend: p, backends: [{{name: p, type: provided, conf: {{cert: {{secret: c}}, key: {{inline: {key_b64}}}}}}}]}}"
        ));
        let secrets = BTreeMap::from([("c".to_string(), ca.cert_pem.clone().into_bytes())]);
        let resolved = resolve("m", &provided, &secrets).unwrap().unwrap();
        assert_eq!(resolved.signer, ca);
        assert_eq!(resolved.mode, Mode::Strict);
        assert_eq!(resolved.cert_lifetime, DEFAULT_CERT_LIFETIME);
    }

    #[test]
    fn rotation_trusts_every_backend_whose_ca_exists() {
        let old = generate_ca("m", "ca-1", Duration::from_secs(3600)).unwrap();
        let new = generate_ca("m", "ca-2", Duration::from_secs(3600)).unwrap();
        let spec = mesh(
            "mtls: {enabledBackend: ca-2, backends: [{name: ca-1, type: builtin}, {name: ca-2, type: builtin}, {name: ca-3, type: builtin}]}",
        );
        let mut secrets = builtin_secrets("m", "ca-1", &old);
        secrets.extend(builtin_secrets("m", "ca-2", &new));
        let resolved = resolve("m", &spec, &secrets).unwrap().unwrap();
        assert_eq!(resolved.signer, new);
        assert_eq!(resolved.trusted_backends, vec!["ca-1", "ca-2"]);
        assert!(resolved.trusted_pem.contains(old.cert_pem.trim_end()));
        assert!(resolved.trusted_pem.contains(new.cert_pem.trim_end()));
    }

    #[test]
    fn issued_identity_carries_the_sans_and_lifetime_and_renews_at_four_fifths() {
        let ca = generate_ca("m", "ca-1", Duration::from_secs(3600)).unwrap();
        let resolved = resolve("m", &mesh(BUILTIN), &builtin_secrets("m", "ca-1", &ca))
            .unwrap()
            .unwrap();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let sans = vec![
            "spiffe://m/web".to_string(),
            "kuma://kuma.io/service/web".to_string(),
        ];
        let identity = issue(&resolved, &sans, now).unwrap();
        assert_eq!(identity.backend, "ca-1");
        assert_eq!(identity.not_after, now + Duration::from_secs(7200));
        assert_eq!(identity.renew_at(), now + Duration::from_secs(5760));
        // Issued within a second, its lifetime is still exactly the
        // configured one (what tells the reconciler to keep it).
        let mid_second = issue(&resolved, &sans, now + Duration::from_millis(700)).unwrap();
        assert_eq!(
            mid_second.not_after.duration_since(mid_second.issued_at).unwrap(),
            Duration::from_secs(7200)
        );
        assert_eq!(mid_second.issued_at, now);
        // The chain ends with the CA so that peers trusting only it verify.
        assert!(identity.cert_pem.ends_with(&ca.cert_pem));
        let (_, pem) = x509_parser::pem::parse_x509_pem(identity.cert_pem.as_bytes()).unwrap();
        let leaf = pem.parse_x509().unwrap();
        let uris: Vec<String> = leaf
            .subject_alternative_name()
            .unwrap()
            .expect("URI SANs")
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                x509_parser::extensions::GeneralName::URI(u) => Some(u.to_string()),
                _ => None,
            })
            .collect();
        let mut expected = sans.clone();
        expected.sort();
        let mut uris_sorted = uris.clone();
        uris_sorted.sort();
        assert_eq!(uris_sorted, expected);
        assert!(!leaf.is_ca(), "a proxy certificate cannot sign");
        assert_eq!(
            leaf.validity().not_after.timestamp(),
            1_800_000_000 + 7200,
            "the certificate itself expires with the identity"
        );
    }
}
