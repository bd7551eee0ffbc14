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
    let chain = match tls.mode {
        PostgresTlsMode::Disable | PostgresTlsMode::VerifyNone => None,
        PostgresTlsMode::VerifyCa | PostgresTlsMode::VerifyFull => {
            if tls.ca_path.is_empty() {
                return Err(format!(
                    "store.postgres.tls.caPath (KUMA_STORE_POSTGRES_TLS_CA_PATH) is required in mode {:?}",
                    tls.mode
                ));
            }
            let bad_ca =
                |e: &dyn std::fmt::Display| format!("store.postgres.tls.caPath {}: {e}", tls.ca_path);
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(&tls.ca_path).map_err(|e| bad_ca(&e))? {
                roots.add(cert.map_err(|e| bad_ca(&e))?).map_err(|e| bad_ca(&e))?;
            }
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| bad_ca(&e))?;
            Some(webpki)
        }
    };
    let verifier = Arc::new(ModeVerifier {
        chain,
        check_name: tls.mode == PostgresTlsMode::VerifyFull,
        provider: provider.clone(),
    });
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

/// Checks the server as the mode says: not at all (`verifyNone`: the
/// channel is still encrypted), its chain to the CA (`verifyCa`, any host
/// name, as libpq's `verify-ca`), or chain and host name (`verifyFull`).
/// Handshake signatures are always checked.
#[derive(Debug)]
struct ModeVerifier {
    chain: Option<Arc<WebPkiServerVerifier>>,
    check_name: bool,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for ModeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
