//! The dp-server certificate: the configured one, or a CA and a server
//! certificate generated once into the working directory (and reused on
//! restart, so running Envoys keep trusting the control plane).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};

/// The dp-server's TLS material.
#[derive(Clone, Debug)]
pub struct ServerTls {
    /// The rustls configuration (ALPN h2 and http/1.1).
    pub config: Arc<rustls::ServerConfig>,
    /// The PEM a client verifies the server with (the CA, or the
    /// configured certificate chain).
    pub ca_pem: String,
    /// Where that PEM is on disk (for `kuma-dp --ca-cert-file`).
    pub ca_file: PathBuf,
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The certificate or key is unusable.
    #[error("{0}")]
    Invalid(String),
}

fn read(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn write(path: &Path, text: &str) -> Result<(), TlsError> {
    std::fs::write(path, text).map_err(|source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Loads `cert_file`/`key_file`, or generates (once) into `work_dir`.
pub fn load_or_generate(cert_file: &str, key_file: &str, work_dir: &Path) -> Result<ServerTls, TlsError> {
    let (cert_pem, key_pem, ca_pem, ca_file) = if !cert_file.is_empty() || !key_file.is_empty() {
        if cert_file.is_empty() || key_file.is_empty() {
            return Err(TlsError::Invalid(
                "KUMA_GENERAL_TLS_CERT_FILE and KUMA_GENERAL_TLS_KEY_FILE must be set together".into(),
            ));
        }
        let cert = read(Path::new(cert_file))?;
        (
            cert.clone(),
            read(Path::new(key_file))?,
            cert,
            PathBuf::from(cert_file),
        )
    } else {
        std::fs::create_dir_all(work_dir).map_err(|source| TlsError::Io {
            path: work_dir.to_path_buf(),
            source,
        })?;
        let (ca, cert, key) = (
            work_dir.join("ca.crt"),
            work_dir.join("kuma-cp.crt"),
            work_dir.join("kuma-cp.key"),
        );
        if !(ca.exists() && cert.exists() && key.exists()) {
            let generated = generate()?;
            write(&ca, &generated.0)?;
            write(&cert, &generated.1)?;
            write(&key, &generated.2)?;
            tracing::info!(ca = %ca.display(), "generated a dp-server certificate; give kuma-dp --ca-cert-file {}", ca.display());
        }
        (read(&cert)?, read(&key)?, read(&ca)?, ca)
    };
    let config = server_config(&cert_pem, &key_pem)?;
    Ok(ServerTls {
        config: Arc::new(config),
        ca_pem,
        ca_file,
    })
}

/// A server certificate given as PEMs (e.g. the one every replica shares
/// through a Secret on Kubernetes), its CA written to `ca_file` for
/// kuma-dp's `--ca-cert-file`.
pub fn from_pems(cert_pem: &str, key_pem: &str, ca_pem: &str, ca_file: &Path) -> Result<ServerTls, TlsError> {
    if let Some(dir) = ca_file.parent() {
        std::fs::create_dir_all(dir).map_err(|source| TlsError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    write(ca_file, ca_pem)?;
    Ok(ServerTls {
        config: Arc::new(server_config(cert_pem, key_pem)?),
        ca_pem: ca_pem.to_string(),
        ca_file: ca_file.to_path_buf(),
    })
}

/// A CA and a server certificate for this host: `(ca, cert, key)` PEMs.
fn generate() -> Result<(String, String, String), TlsError> {
    let bad = |e: rcgen::Error| TlsError::Invalid(e.to_string());
    let ca_key = KeyPair::generate().map_err(bad)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(bad)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "kuma-cp CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_after = rcgen::date_time_ymd(2036, 1, 1);
    let ca_cert = ca.self_signed(&ca_key).map_err(bad)?;
    let issuer = Issuer::new(ca, ca_key);

    let mut names = vec!["localhost".to_string()];
    if let Ok(host) = std::env::var("HOSTNAME")
        && !host.is_empty()
    {
        names.push(host);
    }
    let key = KeyPair::generate().map_err(bad)?;
    let mut params = CertificateParams::new(names).map_err(bad)?;
    for ip in ["127.0.0.1", "::1"] {
        params.subject_alt_names.push(SanType::IpAddress(
            ip.parse::<IpAddr>()
                .map_err(|e| TlsError::Invalid(e.to_string()))?,
        ));
    }
    params
        .distinguished_name
        .push(DnType::CommonName, "kuma-control-plane");
    params.not_after = rcgen::date_time_ymd(2036, 1, 1);
    let cert = params.signed_by(&key, &issuer).map_err(bad)?;
    Ok((ca_cert.pem(), cert.pem(), key.serialize_pem()))
}

fn server_config(cert_pem: &str, key_pem: &str) -> Result<rustls::ServerConfig, TlsError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Invalid(format!("certificate: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError::Invalid(
            "the certificate file holds no certificate".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| TlsError::Invalid(format!("key: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Invalid(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Invalid(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// HTTP/2 data buffered per stream at most (see [`serve`]).
const SEND_BUFFER_PER_STREAM: usize = 64 * 1024;

/// How long a client may take over its TLS handshake: a connection that
/// never completes one is closed instead of held for ever.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves `app` over TLS on `listener` until `shutdown` resolves, then
/// lets open connections finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: axum::Router,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::debug!(error = %e, "accept failed");
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Each HTTP/2 flush is a whole response or a full frame: Nagle's
        // algorithm would only hold its last segment back for an ACK.
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        // Handlers see the peer as over plain HTTP (the API's loopback
        // admin). Inserted into each request rather than layered onto the
        // router: a layered router is a copy of its route table, 3-5 KiB
        // held by every connection (every proxy's ADS stream).
        let app = tower::ServiceExt::map_request(
            app.clone(),
            move |mut request: http::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(axum::extract::ConnectInfo(peer));
                request
            },
        );
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let Ok(Ok(stream)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await else {
                return;
            };
            let service = hyper_util::service::TowerToHyperService::new(app);
            let mut builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            // What HTTP/2 buffers per stream beyond what the peer has read:
            // hyper's default is 400 KiB, which a proxy that reads slowly
            // would hold for its whole xDS response; 64 KiB keeps thousands
            // of slow proxies bounded and still fills a loopback or LAN pipe.
            builder.http2().max_send_buf_size(SEND_BUFFER_PER_STREAM);
            let conn = builder.serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(stream), service);
            let _ = watcher.watch(conn.into_owned()).await;
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(std::time::Duration::from_secs(3)) => {}
    }
}
