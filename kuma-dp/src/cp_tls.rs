//! How kuma-dp trusts the control plane's dp-server certificate.
//!
//! Kuma's default dp-server certificate is self-signed with the basic
//! constraint CA:TRUE and serves both as the CA users hand to kuma-dp and as
//! the server certificate. Go's verifier accepts it (the leaf is itself in
//! the root pool); webpki refuses a CA as an end entity. So a certificate
//! the user named byte for byte is trusted as it stands (still checked for
//! its validity period and the server's name); every other certificate goes
//! through webpki's chain verification unchanged. A refusal says why, with
//! the certificate's subject, issuer, CA constraint and validity, because
//! "error sending request" alone sends users to tcpdump.

use std::fmt;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error, OtherError, RootCertStore, SignatureScheme};

/// A CA bundle that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CaBundleError {
    #[error("{source_name} holds no PEM certificate")]
    Empty { source_name: String },
    #[error("{source_name}: certificate {index} is not usable as a CA: {reason}")]
    Unusable {
        source_name: String,
        index: usize,
        reason: String,
    },
}

/// A rustls client configuration trusting the control plane as Kuma's
/// kuma-dp does: the CAs in `pem` (from `source_name`, for messages), and
/// any certificate in it presented as the server's own.
pub fn client_config(pem: &[u8], source_name: &str) -> Result<rustls::ClientConfig, CaBundleError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = ControlPlaneVerifier::new(pem, source_name, provider.clone())?;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| CaBundleError::Unusable {
            source_name: source_name.into(),
            index: 0,
            reason: e.to_string(),
        })?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(config)
}

/// webpki's verifier plus the certificates the user named.
#[derive(Debug)]
pub struct ControlPlaneVerifier {
    webpki: Arc<WebPkiServerVerifier>,
    named: Vec<CertificateDer<'static>>,
    source_name: String,
}

impl ControlPlaneVerifier {
    pub fn new(pem: &[u8], source_name: &str, provider: Arc<CryptoProvider>) -> Result<Self, CaBundleError> {
        let named: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
            .filter_map(Result::ok)
            .collect();
        if named.is_empty() {
            return Err(CaBundleError::Empty {
                source_name: source_name.into(),
            });
        }
        let mut roots = RootCertStore::empty();
        for (index, cert) in named.iter().enumerate() {
            roots.add(cert.clone()).map_err(|e| CaBundleError::Unusable {
                source_name: source_name.into(),
                index,
                reason: e.to_string(),
            })?;
        }
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| CaBundleError::Unusable {
                source_name: source_name.into(),
                index: 0,
                reason: e.to_string(),
            })?;
        Ok(ControlPlaneVerifier {
            webpki,
            named,
            source_name: source_name.into(),
        })
    }

    /// A certificate the user named itself: trusted as it stands, if it is
    /// valid now and names the server.
    fn verify_named(
        &self,
        end_entity: &CertificateDer<'_>,
        server_name: &ServerName<'_>,
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let cert = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|e| self.refused(end_entity, Error::InvalidCertificate(pki_error(e))))?;
        if let Some(summary) = Summary::of(end_entity) {
            let now_secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
            if now_secs < summary.not_before {
                return Err(self.refused(
                    end_entity,
                    Error::InvalidCertificate(CertificateError::NotValidYet),
                ));
            }
            if now_secs > summary.not_after {
                return Err(self.refused(end_entity, Error::InvalidCertificate(CertificateError::Expired)));
            }
        }
        cert.verify_is_valid_for_subject_name(server_name)
            .map_err(|e| self.refused(end_entity, Error::InvalidCertificate(pki_error(e))))?;
        Ok(ServerCertVerified::assertion())
    }

    /// `cause` with what the certificate says about itself.
    /// (rustls prints `Error::Other` with its `Display`, but a
    /// `CertificateError::Other` with `Debug`.)
    fn refused(&self, end_entity: &CertificateDer<'_>, cause: Error) -> Error {
        Error::Other(OtherError(Arc::new(Refused {
            cause,
            certificate: Summary::of(end_entity),
            source_name: self.source_name.clone(),
        })))
    }
}

fn pki_error(e: webpki::Error) -> CertificateError {
    match e {
        webpki::Error::CertNotValidForName(_) => CertificateError::NotValidForName,
        webpki::Error::CertExpired { .. } => CertificateError::Expired,
        webpki::Error::CertNotValidYet { .. } => CertificateError::NotValidYet,
        webpki::Error::UnknownIssuer => CertificateError::UnknownIssuer,
        webpki::Error::BadDer | webpki::Error::BadDerTime => CertificateError::BadEncoding,
        other => CertificateError::Other(OtherError(Arc::new(other))),
    }
}

impl ServerCertVerifier for ControlPlaneVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        if self.named.iter().any(|c| c.as_ref() == end_entity.as_ref()) {
            return self.verify_named(end_entity, server_name, now);
        }
        self.webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .map_err(|cause| self.refused(end_entity, cause))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// Why the control plane's certificate was refused.
#[derive(Debug)]
struct Refused {
    cause: Error,
    certificate: Option<Summary>,
    source_name: String,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the control plane's certificate")?;
        if let Some(c) = &self.certificate {
            write!(f, " ({c})")?;
        }
        write!(
            f,
            " is not trusted with the CA in {}: {}",
            self.source_name, self.cause
        )?;
        if self
            .certificate
            .as_ref()
            .is_some_and(|c| c.is_ca && c.subject == c.issuer)
        {
            write!(
                f,
                " (a self-signed CA:TRUE certificate is trusted only when it is itself in the CA file)"
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for Refused {}

/// What a certificate says about itself, for messages.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub subject: String,
    pub issuer: String,
    pub is_ca: bool,
    /// Seconds since the Unix epoch.
    pub not_before: i64,
    pub not_after: i64,
}

impl Summary {
    pub fn of(der: &CertificateDer<'_>) -> Option<Summary> {
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
        let is_ca = cert
            .basic_constraints()
            .ok()
            .flatten()
            .is_some_and(|bc| bc.value.ca);
        Some(Summary {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            is_ca,
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
        })
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let until = x509_parser::time::ASN1Time::from_timestamp(self.not_after)
            .map(|t| t.to_string())
            .unwrap_or_else(|_| self.not_after.to_string());
        write!(
            f,
            "subject \"{}\", issuer \"{}\", CA:{}, valid until {until}",
            self.subject,
            self.issuer,
            if self.is_ca { "TRUE" } else { "FALSE" }
        )
    }
}

/// The property every certificate a server presents must keep (checked by
/// the `cp_certificate` fuzz target and its replayed corpus): with `bundle`
/// named as the CA, verifying `der` as the certificate of 127.0.0.1 at
/// 2027-01-01 never panics, and succeeds only for a certificate in
/// `accepted` (those the bundle names as themselves or signs; nothing else
/// can pass without forging a signature).
pub fn check_server_certificate(
    der: &[u8],
    bundle: &[u8],
    accepted: &[CertificateDer<'_>],
) -> Result<(), String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = ControlPlaneVerifier::new(bundle, "bundle", provider).map_err(|e| e.to_string())?;
    let end_entity = CertificateDer::from(der);
    let name = ServerName::try_from("127.0.0.1").map_err(|e| e.to_string())?;
    let at = UnixTime::since_unix_epoch(std::time::Duration::from_secs(1_798_761_600));
    let verdict = verifier.verify_server_cert(&end_entity, &[], &name, &[], at);
    let expected = accepted.iter().any(|c| c.as_ref() == der);
    match (verdict, expected) {
        (Ok(_), true) => Ok(()),
        (Err(e), false) => {
            // A refusal always says why, naming the CA file.
            let text = e.to_string();
            if text.contains("is not trusted with the CA in bundle") {
                Ok(())
            } else {
                Err(format!("a refusal that does not say why: {text}"))
            }
        }
        (Ok(_), false) => Err(format!(
            "accepted a certificate it should refuse ({} bytes)",
            der.len()
        )),
        (Err(e), true) => Err(format!("refused a certificate it should accept: {e}")),
    }
}
