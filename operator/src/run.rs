//! `kuma-cp run`: wires the store, the reconciler, the dp-server, the REST
//! API and diagnostics, and shuts them down gracefully.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Context;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use kuma_xds::metrics::XdsMetrics;
use kuma_xds::server::{AdsServer, Limits};
use kuma_xds::snapshot::SnapshotCache;
use kuma_xds::sync::{Generator, Reconciler};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::api::{ApiState, router as api_router};
use crate::config::Config;
use crate::dp_server::{DpServer, Registry as DpRegistry};
use crate::insights::{Insights, WriterTimings};
use crate::store::Store;
use crate::tokens::Tokens;

/// Binds a port, naming the setting in the error.
async fn bind(interface: &str, port: u16, what: &str, env: &str) -> anyhow::Result<TcpListener> {
    let addr = format!("{interface}:{port}");
    TcpListener::bind(&addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for the {what} (set {env} to change the port)"))
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Runs the control plane until a shutdown signal.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let hostname = std::env::var("HOSTNAME").unwrap_or_else(|_| "kuma-cp".into());
    let instance_id = format!("{hostname}-{}", &uuid::Uuid::new_v4().simple().to_string()[..4]);
    let mode = crate::mode::select(&config, &instance_id).await?;
    let store = mode.store.clone();
    let work_dir = config.work_dir();
    let tls = dp_server_tls(&config, &mode, &work_dir).await?;

    let dp_listener = bind(
        "0.0.0.0",
        config.dp_server.port,
        "dp-server",
        "KUMA_DP_SERVER_PORT",
    )
    .await?;
    let api_listener = bind(
        &config.api_server.http.interface,
        config.api_server.http.port,
        "API server",
        "KUMA_API_SERVER_HTTP_PORT",
    )
    .await?;
    let https = &config.api_server.https;
    let api_tls_listener = if https.enabled {
        let api_tls = if https.tls_cert_file.is_empty() && https.tls_key_file.is_empty() {
            tls.config.clone()
        } else {
            crate::tls::load_or_generate(&https.tls_cert_file, &https.tls_key_file, &work_dir)
                .context("API server certificate (apiServer.https.tlsCertFile/tlsKeyFile)")?
                .config
        };
        let listener = bind(
            &https.interface,
            https.port,
            "API server (HTTPS)",
            "KUMA_API_SERVER_HTTPS_PORT",
        )
        .await?;
        Some((listener, api_tls))
    } else {
        None
    };
    let diag_listener = bind(
        "0.0.0.0",
        config.diagnostics.server_port,
        "diagnostics server",
        "KUMA_DIAGNOSTICS_SERVER_PORT",
    )
    .await?;

    let snapshots = Arc::new(SnapshotCache::new());
    let xds_metrics = Arc::new(XdsMetrics::default());
    let admin_ca = envoy_admin_ca(&store).await;
    let envoy_admin = crate::envoy_admin::EnvoyAdmin::new(&admin_ca).context("the Envoy admin client")?;
    let generator = Generator::new(snapshots.clone(), xds_metrics.clone())
        .with_cluster_grace(config.xds_server.retired_cluster_grace_period)
        .with_admin_ca(admin_ca);
    let certs = generator.cert_registry();
    let reconciler = Reconciler::spawn(generator);
    let (ready_tx, ready_rx) = watch::channel(false);
    tokio::spawn(crate::feed::run(store.clone(), reconciler.clone(), ready_tx));

    let insights = Arc::new(Insights::new(
        Some(certs),
        config.metrics.dataplane.subscription_limit,
    ));
    tokio::spawn(crate::insights::run_writer(
        insights.clone(),
        store.clone(),
        WriterTimings {
            flush_interval: config.xds_server.dataplane_status_flush_interval,
            idle_timeout: config.metrics.dataplane.idle_timeout,
        },
    ));
    let pod_stats = Arc::new(crate::kubernetes::pods::PodControllerStats::default());
    tokio::spawn(lead(
        mode.clone(),
        config.clone(),
        insights.clone(),
        pod_stats.clone(),
    ));
    let insights_at_exit = insights.clone();

    let tokens = Tokens::new(store.clone());
    let dp = Arc::new(DpServer {
        store: store.clone(),
        tokens: tokens.clone(),
        authn: mode.dp_authn,
        reconciler: reconciler.clone(),
        insights: insights.clone(),
        instance_id: instance_id.clone(),
        port: config.dp_server.port,
        ca_pem: tls.ca_pem.clone(),
        deregistration_delay: config.xds_server.dataplane_deregistration_delay,
        shutting_down: Default::default(),
        admission: mode.admission.clone(),
        service_accounts: mode
            .kube
            .clone()
            .map(|c| Arc::new(crate::kubernetes::service_account::ServiceAccountAuthenticator::new(c))),
    });
    let limits = Limits {
        max_configuring: config.xds_server.max_configuring_streams,
        ..Limits::default()
    };
    let ads = AdsServer::new(
        snapshots.clone(),
        Arc::new(DpRegistry(dp.clone())),
        xds_metrics.clone(),
        &limits,
    );
    let dp_app = kuma_xds::dp_server::router(ads, &limits, dp.clone());

    let api_state = Arc::new(ApiState {
        store: store.clone(),
        tokens,
        insights,
        snapshots: snapshots.clone(),
        config: config.clone(),
        instance_id,
        cluster_id: uuid::Uuid::new_v4().to_string(),
        admission: mode.admission.clone(),
        envoy_admin,
    });
    let api_app = api_router(api_state);
    let api_tls_app = api_app.clone();

    let mut registry = Registry::default();
    xds_metrics.register(&mut registry);
    pod_stats.register(&mut registry);
    if mode.kube.is_some() {
        mode.kube_requests.register(&mut registry);
    }
    let diag_app = diagnostics(Arc::new(registry), ready_rx);

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    tracing::info!(
        dp_server = config.dp_server.port,
        api = config.api_server.http.port,
        api_https = config.api_server.https.enabled.then_some(config.api_server.https.port),
        diagnostics = config.diagnostics.server_port,
        environment = ?config.environment,
        store = ?config.effective_store_type(),
        ca = %tls.ca_file.display(),
        "kuma-cp is running"
    );
    let dp_task = tokio::spawn(crate::tls::serve(
        dp_listener,
        tls.config.clone(),
        dp_app,
        stopped(stop_rx.clone()),
    ));
    let api_task = tokio::spawn(
        axum::serve(
            api_listener,
            api_app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(stopped(stop_rx.clone()))
        .into_future(),
    );
    let api_tls_task = api_tls_listener.map(|(listener, api_tls)| {
        tokio::spawn(crate::tls::serve(
            listener,
            api_tls,
            api_tls_app,
            stopped(stop_rx.clone()),
        ))
    });
    let webhook_task = match &mode.kube {
        Some(client) => Some(
            start_webhooks(
                client.clone(),
                &mode,
                &config,
                &work_dir,
                &tls.ca_pem,
                stopped(stop_rx.clone()),
            )
            .await?,
        ),
        None => None,
    };
    let diag_task = tokio::spawn(
        axum::serve(diag_listener, diag_app)
            .with_graceful_shutdown(stopped(stop_rx.clone()))
            .into_future(),
    );

    shutdown_signal().await;
    tracing::info!("shutting down");
    dp.shutting_down.store(true, Ordering::SeqCst);
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        let _ = dp_task.await;
        let _ = api_task.await;
        let _ = diag_task.await;
        if let Some(t) = api_tls_task {
            let _ = t.await;
        }
        if let Some(t) = webhook_task {
            let _ = t.await;
        }
    })
    .await;
    // The streams end with this process: say so, or other instances show
    // the proxies online here until they reconnect elsewhere or the leader
    // finalizes the streams.
    insights_at_exit.close_all();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(3),
        crate::insights::flush(&insights_at_exit, &store),
    )
    .await;
    Ok(())
}

/// Leader-only work: the default mesh, every mesh's defaults and builtin
/// CAs, the admin token, closing subscriptions of dead control planes and
/// collecting Dataplanes offline for too long. Leadership is the mode's
/// (see `crate::leader`); a leader that loses it stops its leader work at
/// once and competes again.
async fn lead(
    mode: crate::mode::Mode,
    config: Config,
    insights: Arc<Insights>,
    pod_stats: Arc<crate::kubernetes::pods::PodControllerStats>,
) {
    let store = mode.store.clone();
    loop {
        let mut leader = mode.leadership.acquire().await;
        let work = async {
            let mut delay = std::time::Duration::from_millis(200);
            while let Err(e) = crate::defaults::ensure_default_mesh(&store, &config).await {
                tracing::warn!(error = %e, "cannot create the default mesh yet");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(5));
            }
            // Beside the mesh defaults, not before them: making its signing
            // key takes seconds (RSA), and the default policies shape every
            // proxy's configuration, so proxies connecting meanwhile would
            // be configured twice.
            let admin_token = async {
                if config.api_server.authn.tokens.bootstrap_admin_token {
                    bootstrap_admin_token(&store, &config).await;
                }
            };
            let gc = crate::gc::run(
                store.clone(),
                insights.clone(),
                crate::gc::GcTimings {
                    idle_timeout: config.metrics.dataplane.idle_timeout,
                    cleanup_age: config.runtime.universal.dataplane_cleanup_age,
                },
            );
            let controllers = async {
                if let Some(client) = mode.kube.clone() {
                    crate::kubernetes::run_controllers(client, mode.admission.clone(), pod_stats.clone())
                        .await;
                }
            };
            tokio::join!(
                admin_token,
                gc,
                crate::defaults::run_mesh_defaults(store.clone(), config.clone(), mode.admission.clone()),
                crate::defaults::run_ca_controller(store.clone()),
                controllers,
            );
        };
        tokio::select! {
            _ = work => return,
            _ = leader.lost() => tracing::warn!("lost leadership; stopping leader work"),
        }
    }
}

/// The dp-server's certificate: the configured files; else on Kubernetes
/// the certificate every replica shares through a Secret (the one the
/// webhooks use when no `certDir` is given), so proxies trust whichever
/// replica answers and nothing has to be generated before installing (an
/// OLM bundle cannot ship a Secret); else one generated in the work dir.
async fn dp_server_tls(
    config: &Config,
    mode: &crate::mode::Mode,
    work_dir: &std::path::Path,
) -> anyhow::Result<crate::tls::ServerTls> {
    let general = &config.general;
    if let (Some(client), true) = (
        &mode.kube,
        general.tls_cert_file.is_empty() && general.tls_key_file.is_empty(),
    ) {
        let (ca, cert, key) = crate::kubernetes::webhooks::shared_certificate(
            client,
            &mode.admission.system_namespace,
            &config.runtime.kubernetes.control_plane_service_name,
        )
        .await
        .map_err(|e| anyhow::anyhow!("the dp-server's certificate: {e}"))?;
        return crate::tls::from_pems(&cert, &key, &ca, &work_dir.join("dp-server").join("ca.crt"))
            .context("dp-server certificate (shared Secret)");
    }
    crate::tls::load_or_generate(&general.tls_cert_file, &general.tls_key_file, work_dir)
        .context("dp-server certificate")
}

/// Serves the admission webhooks (Kubernetes mode) on
/// `runtime.kubernetes.admissionServer.port` (5443).
async fn start_webhooks(
    client: kube::Client,
    mode: &crate::mode::Mode,
    config: &Config,
    work_dir: &std::path::Path,
    dp_server_ca: &str,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use crate::kubernetes::webhooks;
    let server = &config.runtime.kubernetes.admission_server;
    let cert_dir = if server.cert_dir.is_empty() {
        let (ca, cert, key) = webhooks::shared_certificate(
            &client,
            &mode.admission.system_namespace,
            &config.runtime.kubernetes.control_plane_service_name,
        )
        .await
        .map_err(|e| anyhow::anyhow!("the admission server's certificate: {e}"))?;
        let dir = work_dir.join("webhook");
        webhooks::write_certificate(&dir, &cert, &key)
            .context("writing the admission server's certificate")?;
        tokio::spawn(webhooks::keep_ca_bundle(client.clone(), ca));
        dir
    } else {
        std::path::PathBuf::from(&server.cert_dir)
    };
    let certificate = kuma_webhook::server::ReloadingCertificate::from_dir(&cert_dir)
        .context("runtime.kubernetes.admissionServer.certDir")?;
    let state = webhooks::webhooks(
        client,
        mode.store.clone(),
        config,
        mode.admission.clone(),
        dp_server_ca,
    )
    .map_err(|e| anyhow::anyhow!(e))?;
    let interface = if server.address.is_empty() {
        "0.0.0.0"
    } else {
        &server.address
    };
    let listener = bind(
        interface,
        server.port,
        "admission webhooks",
        "KUMA_RUNTIME_KUBERNETES_ADMISSION_SERVER_PORT",
    )
    .await?;
    Ok(tokio::spawn(crate::tls::serve(
        listener,
        certificate.server_config(),
        kuma_webhook::server::router(state),
        shutdown,
    )))
}

/// The Envoy admin CA, created by the first control plane of the store;
/// retries while the store is away (proxies' admin listeners and the
/// inspect endpoints need it).
async fn envoy_admin_ca(store: &Store) -> kuma_xds::mtls::Ca {
    let mut delay = std::time::Duration::from_millis(200);
    loop {
        match crate::envoy_admin::ensure_ca(store).await {
            Ok(ca) => return ca,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read or create the Envoy admin CA yet");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(5));
            }
        }
    }
}

/// Creates the admin user token once, retrying while the store is away.
async fn bootstrap_admin_token(store: &Store, config: &Config) {
    let tokens = Tokens::new(store.clone());
    let mut delay = std::time::Duration::from_millis(200);
    loop {
        match tokens.bootstrap_admin_token().await {
            Ok(created) => {
                if created {
                    tracing::info!("generated the admin user token");
                }
                tracing::info!(
                    "admin user token: `curl http://localhost:{}/global-secrets/{} | jq -r .data | base64 -d`, then `kumactl config control-planes add --auth-type=tokens --auth-conf token=YOUR_TOKEN`; KUMA_API_SERVER_AUTHN_TOKENS_BOOTSTRAP_ADMIN_TOKEN=false turns this off",
                    config.api_server.http.port,
                    crate::tokens::ADMIN_USER_TOKEN
                );
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot create the admin user token yet");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(5));
            }
        }
    }
}

/// `/ready` (the first full sync reached the reconciler), `/healthy`,
/// `/metrics`.
fn diagnostics(registry: Arc<Registry>, ready: watch::Receiver<bool>) -> axum::Router {
    use axum::routing::get;
    axum::Router::new()
        .route(
            "/ready",
            get(move || {
                let ready = *ready.borrow();
                async move {
                    if ready {
                        (StatusCode::OK, "ok")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
                    }
                }
            }),
        )
        .route("/healthy", get(|| async { (StatusCode::OK, "ok") }))
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move {
                    let mut text = String::new();
                    match prometheus_client::encoding::text::encode(&mut text, &registry) {
                        Ok(()) => (
                            StatusCode::OK,
                            [(
                                axum::http::header::CONTENT_TYPE,
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )],
                            text,
                        )
                            .into_response(),
                        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                    }
                }
            }),
        )
}
