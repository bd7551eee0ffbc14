//! Certificates for tests of TLS setups users run: Kuma's default
//! self-signed CA:TRUE dp-server certificate, a CA with a CA:FALSE leaf, and
//! ones that must be refused (expired, another name, another CA).

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// A PEM certificate and its PEM key.
pub struct CertAndKey {
    pub cert_pem: String,
    pub key_pem: String,
}

/// What to put in a certificate.
pub struct Spec<'a> {
    pub common_name: &'a str,
    /// Subject alternative names (IP addresses or DNS names).
    pub names: &'a [&'a str],
    pub is_ca: bool,
    /// Already expired.
    pub expired: bool,
}

fn params(spec: &Spec<'_>) -> CertificateParams {
    let mut params = CertificateParams::new(spec.names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .expect("subject alternative names");
    params
        .distinguished_name
        .push(DnType::CommonName, spec.common_name);
    if spec.is_ca {
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    }
    if spec.expired {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    } else {
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(2040, 1, 1);
    }
    params
}

/// A self-signed certificate.
pub fn self_signed(spec: &Spec<'_>) -> CertAndKey {
    let key = KeyPair::generate().expect("key");
    let cert = params(spec).self_signed(&key).expect("self-signed certificate");
    CertAndKey {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// A certificate signed by `ca` (a [`self_signed`] CA).
pub fn signed_by(spec: &Spec<'_>, ca: &CertAndKey) -> CertAndKey {
    let ca_key = KeyPair::from_pem(&ca.key_pem).expect("CA key");
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key).expect("CA certificate");
    let key = KeyPair::generate().expect("key");
    let cert = params(spec).signed_by(&key, &issuer).expect("signed certificate");
    CertAndKey {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}
