//! The proxy's Envoy admin over mutual TLS, as Kuma exposes it: Envoy's
//! admin listens on loopback only, so a proxy whose address is not
//! loopback gets a listener on `<address>:<admin port>` that serves
//! `/ready` in plaintext and everything else only over TLS to a client
//! certificate of the control plane. One CA (the GlobalSecret
//! `envoy-admin-ca-default`) signs each proxy's server certificate (for its
//! address) and the control plane's client certificate (SAN `kuma-cp`).
//! Keys are ECDSA P-256 (Kuma uses RSA).

use std::net::IpAddr;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::mtls::{Ca, MtlsError};

/// The GlobalSecret holding the CA: its certificate then its key, PEM (as
/// Kuma stores it).
pub const CA_SECRET: &str = "envoy-admin-ca-default";
/// The DNS SAN of the control plane's client certificate; proxies accept
/// no other client.
pub const CLIENT_SAN: &str = "kuma-cp";
/// How long the CA and the certificates it signs are valid (Kuma: ten
/// years; certificates are issued again when a control plane restarts).
const VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Whether Envoy's own admin (listening on loopback) is at `address`, so a
/// proxy there needs no admin listener and is asked in plaintext.
pub fn envoy_admin_is_at(address: &str) -> bool {
    matches!(address, "127.0.0.1" | "::1" | "localhost")
}

fn cert_err(e: impl std::fmt::Display) -> MtlsError {
    MtlsError::Certificate(e.to_string())
}

/// The server side of one proxy's admin listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminTls {
    /// The CA clients must be signed by (one string for every proxy: see
    /// [`AdminTls::sharing_ca_pem`]).
    pub ca_pem: std::sync::Arc<str>,
    /// The server certificate (for the proxy's address) and its key.
    pub cert_pem: String,
    /// Its key.
    pub key_pem: String,
    /// The address it was issued for.
    pub address: String,
}

impl AdminTls {
    /// The same, holding `ca_pem` (equal to its own) instead of its own
    /// copy: a proxy's listener is issued once, but every proxy's copy of
    /// the CA was about 600 bytes a connected proxy held.
    pub fn sharing_ca_pem(mut self, ca_pem: &std::sync::Arc<str>) -> Self {
        if *self.ca_pem == **ca_pem {
            self.ca_pem = ca_pem.clone();
        }
        self
    }
}

fn validity(params: &mut CertificateParams) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::seconds(VALIDITY.as_secs() as i64);
}

/// A new CA.
pub fn generate_ca() -> Result<Ca, MtlsError> {
    let key = KeyPair::generate().map_err(cert_err)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "Envoy Admin CA");
    params.distinguished_name.push(DnType::OrganizationName, "Kuma");
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params);
    let cert = params.self_signed(&key).map_err(cert_err)?;
    Ok(Ca {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// The CA as stored: certificate then key.
pub fn ca_to_secret(ca: &Ca) -> Vec<u8> {
    format!("{}{}", ca.cert_pem, ca.key_pem).into_bytes()
}

/// The CA from its stored form.
pub fn ca_from_secret(bytes: &[u8]) -> Result<Ca, MtlsError> {
    let text = std::str::from_utf8(bytes).map_err(cert_err)?;
    let mut cert = None;
    let mut key = None;
    for block in pem_blocks(text) {
        if block.contains("CERTIFICATE-----") {
            cert.get_or_insert(block);
        } else if block.contains("PRIVATE KEY-----") {
            key.get_or_insert(block);
        }
    }
    match (cert, key) {
        (Some(cert_pem), Some(key_pem)) => {
            KeyPair::from_pem(&key_pem).map_err(cert_err)?;
            Ok(Ca { cert_pem, key_pem })
        }
        _ => Err(MtlsError::Certificate(format!(
            "the GlobalSecret {CA_SECRET:?} must hold a PEM certificate and a PEM private key"
        ))),
    }
}

/// The PEM blocks of `text`, each with its trailing newline.
fn pem_blocks(text: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if line.starts_with("-----BEGIN ") {
            current = Some(String::new());
        }
        if let Some(block) = current.as_mut() {
            block.push_str(line);
            block.push('\n');
            if line.starts_with("-----END ") {
                blocks.extend(current.take());
            }
        }
    }
    blocks
}

fn issue(ca: &Ca, san: SanType, usage: ExtendedKeyUsagePurpose) -> Result<(String, String), MtlsError> {
    let ca_key = KeyPair::from_pem(&ca.key_pem).map_err(cert_err)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key).map_err(cert_err)?;
    let key = KeyPair::generate().map_err(cert_err)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
    params.subject_alt_names = vec![san];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![usage];
    validity(&mut params);
    let cert = params.signed_by(&key, &issuer).map_err(cert_err)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A proxy's server certificate for `address` (an IP SAN, or a DNS SAN for
/// a name).
pub fn issue_server(ca: &Ca, address: &str) -> Result<AdminTls, MtlsError> {
    let san = match address.parse::<IpAddr>() {
        Ok(ip) => SanType::IpAddress(ip),
        Err(_) => SanType::DnsName(address.to_string().try_into().map_err(cert_err)?),
    };
    let (cert_pem, key_pem) = issue(ca, san, ExtendedKeyUsagePurpose::ServerAuth)?;
    Ok(AdminTls {
        ca_pem: ca.cert_pem.as_str().into(),
        cert_pem,
        key_pem,
        address: address.to_string(),
    })
}

/// The control plane's client certificate and key.
pub fn issue_client(ca: &Ca) -> Result<(String, String), MtlsError> {
    issue(
        ca,
        SanType::DnsName(CLIENT_SAN.to_string().try_into().map_err(cert_err)?),
        ExtendedKeyUsagePurpose::ClientAuth,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_round_trips_through_its_secret() {
        let ca = generate_ca().expect("ca");
        assert_eq!(ca_from_secret(&ca_to_secret(&ca)).expect("parse"), ca);
    }

    #[test]
    fn a_secret_without_a_key_is_refused_naming_it() {
        let ca = generate_ca().expect("ca");
        let err = ca_from_secret(ca.cert_pem.as_bytes()).expect_err("no key");
        assert!(err.to_string().contains(CA_SECRET), "{err}");
    }

    #[test]
    fn server_certificates_name_the_address() {
        let ca = generate_ca().expect("ca");
        for address in ["10.0.0.7", "fd00::7", "web.example"] {
            let tls = issue_server(&ca, address).expect("issue");
            assert_eq!(tls.address, address);
            assert!(tls.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        }
        assert!(issue_client(&ca).is_ok());
    }
}
