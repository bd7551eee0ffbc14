//! TLS to PostgreSQL with Kuma's modes: `verifyNone` (encrypted, any
//! certificate), `verifyCa` (signed by `caPath`, any host name),
//! `verifyFull` (signed by `caPath` and naming the host); a client
//! certificate when `certPath`/`keyPath` are set; SNI unless
//! `disableSSLSNI`.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error, RootCertStore, SignatureScheme};

use crate::config::{PostgresTls, PostgresTlsMode};

/// The rustls client configuration of a TLS mode, or why it cannot be made
/// (naming the setting).
pub fn client_config(tls: &PostgresTls) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier: Arc<dyn ServerCertVerifier> = match tls.mode {
        PostgresTlsMode::Disable | PostgresTlsMode::VerifyNone => Arc::new(AnyCertificate(provider.clone())),
        PostgresTlsMode::VerifyCa | PostgresTlsMode::VerifyFull => {
            if tls.ca_path.is_empty() {
                return Err(format!(
                    "store.postgres.tls.caPath (KUMA_STORE_POSTGRES_TLS_CA_PATH) is required in mode {:?}",
                    tls.mode
                ));
            }
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(&tls.ca_path)
                .map_err(|e| format!("store.postgres.tls.caPath {}: {e}", tls.ca_path))?
            {
                let cert = cert.map_err(|e| format!("store.postgres.tls.caPath {}: {e}", tls.ca_path))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("store.postgres.tls.caPath {}: {e}", tls.ca_path))?;
            }
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| format!("store.postgres.tls.caPath {}: {e}", tls.ca_path))?;
            if tls.mode == PostgresTlsMode::VerifyCa {
                Arc::new(AnyHostName(webpki))
            } else {
                webpki
            }
        }
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match (tls.cert_path.is_empty(), tls.key_path.is_empty()) {
        (true, true) => builder.with_no_client_auth(),
        (false, false) => {
            let chain = CertificateDer::pem_file_iter(&tls.cert_path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("store.postgres.tls.certPath {}: {e}", tls.cert_path))?;
            let key = PrivateKeyDer::from_pem_file(&tls.key_path)
                .map_err(|e| format!("store.postgres.tls.keyPath {}: {e}", tls.key_path))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("store.postgres.tls.certPath/keyPath: {e}"))?
        }
        (true, false) => return Err("store.postgres.tls.certPath is required with keyPath".into()),
        (false, true) => return Err("store.postgres.tls.keyPath is required with certPath".into()),
    };
    config.enable_sni = !tls.disable_ssl_sni;
    Ok(config)
}

/// `verifyNone`: the channel is encrypted but the server is not checked.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verifyCa`: the chain must lead to the CA; the host name is not checked
/// (as libpq's `verify-ca`).
#[derive(Debug)]
struct AnyHostName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyHostName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
