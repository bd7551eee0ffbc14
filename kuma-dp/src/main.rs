//! `kuma-dp run`: fetches the Envoy bootstrap of a dataplane from the
//! control plane (verifying its certificate), runs Envoy and keeps it
//! running, reports readiness, and drains on SIGTERM.
//!
//! Flags have Kuma's names; Kuma's `KUMA_*` environment variables override
//! them, as in Kuma.

mod dns;
mod envoy;
mod probes;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use kuma_crds::format::{parse, to_universal};
use kuma_crds::resource::ResourceType;
use serde_json::{Value, json};

/// The Kuma version this kuma-dp speaks.
const VERSION: &str = "2.14.3";

#[derive(Parser)]
#[command(name = "kuma-dp", about = "Dataplane manager for Envoy-based Service Mesh", version = VERSION)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Launch the dataplane (Envoy).
    Run(Box<RunArgs>),
    /// Print the version.
    Version,
}

#[derive(Args, Clone, Debug)]
struct RunArgs {
    /// The control plane's dp-server URL.
    #[arg(long, default_value = "https://localhost:5678")]
    cp_address: String,
    /// The CA that signed the control plane's certificate.
    #[arg(long)]
    ca_cert_file: Option<PathBuf>,
    /// The CA that signed the control plane's certificate, as PEM
    /// (`KUMA_CONTROL_PLANE_CA_CERT`, as Kuma's injector sets it).
    #[arg(skip)]
    ca_cert: Option<String>,
    /// Do not verify the control plane's certificate (insecure; never the default).
    #[arg(long)]
    skip_verify: bool,
    /// The dataplane name (when the Dataplane already exists in the control plane).
    #[arg(long)]
    name: Option<String>,
    /// The mesh (with --name).
    #[arg(long)]
    mesh: Option<String>,
    /// `dataplane`, `ingress` or `egress`.
    #[arg(long, default_value = "dataplane")]
    proxy_type: String,
    /// The Dataplane resource, inline.
    #[arg(long)]
    dataplane: Option<String>,
    /// The Dataplane resource file (`-` for stdin).
    #[arg(short = 'd', long)]
    dataplane_file: Option<PathBuf>,
    /// Values of `{{ name }}` placeholders of the Dataplane, as key=value.
    #[arg(short = 'v', long = "dataplane-var")]
    dataplane_vars: Vec<String>,
    /// The dataplane token file.
    #[arg(long)]
    dataplane_token_file: Option<PathBuf>,
    /// The dataplane token.
    #[arg(long)]
    dataplane_token: Option<String>,
    /// The Envoy binary.
    #[arg(long, default_value = "envoy")]
    binary_path: String,
    /// How long Envoy drains connections on shutdown.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    drain_time: Duration,
    /// Where the bootstrap and sockets go (a temporary directory by default).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Envoy's log level.
    #[arg(long, default_value = "info")]
    envoy_log_level: String,
    /// Envoy worker threads.
    #[arg(long)]
    concurrency: Option<u32>,
    /// kuma-dp's own log level: `off`, `error`, `warn`, `info`, `debug`.
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Whether kuma-dp answers DNS for the mesh (`KUMA_DNS_ENABLED`).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    dns_enabled: bool,
    /// The DNS proxy's port on loopback; 0 turns it off
    /// (`KUMA_DNS_PROXY_PORT`; the injector sets 15053).
    #[arg(long, default_value_t = 0)]
    dns_proxy_port: u16,
    /// How often the DNS table is read from Envoy
    /// (`KUMA_DATAPLANE_RUNTIME_DYNAMIC_CONFIGURATION_REFRESH_INTERVAL`).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    dynamic_configuration_refresh_interval: Duration,
}

impl RunArgs {
    /// Kuma's environment variables, which win over flags.
    fn apply_env(&mut self) -> anyhow::Result<()> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        if let Some(v) = var("KUMA_CONTROL_PLANE_URL") {
            self.cp_address = v;
        }
        if let Some(v) = var("KUMA_CONTROL_PLANE_CA_CERT_FILE") {
            self.ca_cert_file = Some(v.into());
        }
        if let Some(v) = var("KUMA_CONTROL_PLANE_CA_CERT") {
            self.ca_cert = Some(v);
        }
        if let Some(v) = var("KUMA_CONTROL_PLANE_TLS_SKIP_VERIFY") {
            self.skip_verify = v == "true";
        }
        if let Some(v) = var("KUMA_DATAPLANE_NAME") {
            self.name = Some(v);
        }
        if let Some(v) = var("KUMA_DATAPLANE_MESH") {
            self.mesh = Some(v);
        }
        if let Some(v) = var("KUMA_DATAPLANE_PROXY_TYPE") {
            self.proxy_type = v;
        }
        if let Some(v) = var("KUMA_DATAPLANE_RUNTIME_RESOURCE") {
            self.dataplane = Some(v);
        }
        if let Some(v) = var("KUMA_DATAPLANE_RUNTIME_RESOURCE_PATH") {
            self.dataplane_file = Some(v.into());
        }
        if let Some(v) = var("KUMA_DATAPLANE_RUNTIME_TOKEN_PATH") {
            self.dataplane_token_file = Some(v.into());
        }
        if let Some(v) = var("KUMA_DATAPLANE_RUNTIME_TOKEN") {
            self.dataplane_token = Some(v);
        }
        if let Some(v) = var("KUMA_DATAPLANE_RUNTIME_BINARY_PATH") {
            self.binary_path = v;
        }
        if let Some(v) = var("KUMA_DATAPLANE_DRAIN_TIME") {
            self.drain_time = humantime::parse_duration(&v).context("KUMA_DATAPLANE_DRAIN_TIME")?;
        }
        if let Some(v) = var("KUMA_DATAPLANE_RUNTIME_WORK_DIR") {
            self.work_dir = Some(v.into());
        }
        if let Some(v) = var("KUMA_DATAPLANE_RUNTIME_ENVOY_LOG_LEVEL") {
            self.envoy_log_level = v;
        }
        if let Some(v) = var("KUMA_DNS_ENABLED") {
            self.dns_enabled = v.parse().context("KUMA_DNS_ENABLED")?;
        }
        if let Some(v) = var("KUMA_DNS_PROXY_PORT") {
            self.dns_proxy_port = v.parse().context("KUMA_DNS_PROXY_PORT")?;
        }
        if let Some(v) = var("KUMA_DATAPLANE_RUNTIME_DYNAMIC_CONFIGURATION_REFRESH_INTERVAL") {
            self.dynamic_configuration_refresh_interval = humantime::parse_duration(&v)
                .context("KUMA_DATAPLANE_RUNTIME_DYNAMIC_CONFIGURATION_REFRESH_INTERVAL")?;
        }
        if let Some(v) = var("KUMA_DATAPLANE_RUNTIME_CONCURRENCY") {
            self.concurrency = Some(v.parse().context("KUMA_DATAPLANE_RUNTIME_CONCURRENCY")?);
        }
        Ok(())
    }
}

/// The Dataplane given to kuma-dp, rendered and validated, as JSON.
fn dataplane_resource(args: &RunArgs) -> anyhow::Result<Option<(String, String, Value)>> {
    let text = match (&args.dataplane, &args.dataplane_file) {
        (Some(inline), _) => inline.clone(),
        (None, Some(path)) if path.as_os_str() == "-" => std::io::read_to_string(std::io::stdin())?,
        (None, Some(path)) => {
            std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?
        }
        (None, None) => return Ok(None),
    };
    if args.name.is_some() || args.mesh.is_some() {
        anyhow::bail!(
            "--name and --mesh cannot be specified when a dataplane definition is provided, mesh and name will be read from the dataplane definition"
        );
    }
    let vars = kuma_crds::template::parse_vars(&args.dataplane_vars).map_err(|e| anyhow::anyhow!(e))?;
    let rendered = kuma_crds::template::render(&text, &vars);
    let resource = parse(&rendered).map_err(|e| anyhow::anyhow!("invalid Dataplane: {e}"))?;
    if resource.resource_type() != ResourceType::Dataplane {
        anyhow::bail!(
            "the dataplane definition is a {}, not a Dataplane",
            resource.resource_type()
        );
    }
    Ok(Some((
        resource.meta.mesh_or_default().to_string(),
        resource.meta.core_name(),
        to_universal(&resource),
    )))
}

fn token(args: &RunArgs) -> anyhow::Result<String> {
    if let Some(t) = &args.dataplane_token {
        return Ok(t.trim().to_string());
    }
    match &args.dataplane_token_file {
        Some(path) => Ok(std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .trim()
            .to_string()),
        None => Ok(String::new()),
    }
}

/// The CA the control plane is verified with, as PEM (empty over plain
/// HTTP or with --skip-verify): sent in the bootstrap request so Envoy
/// trusts the control plane as kuma-dp does.
fn ca_pem(args: &RunArgs) -> anyhow::Result<String> {
    if !args.cp_address.starts_with("https://") || args.skip_verify {
        return Ok(String::new());
    }
    match (&args.ca_cert, &args.ca_cert_file) {
        (Some(pem), _) => Ok(pem.clone()),
        (None, Some(path)) => {
            std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
        }
        (None, None) => Ok(String::new()),
    }
}

/// An HTTP client that verifies the control plane's certificate.
fn client(args: &RunArgs) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(30));
    if args.cp_address.starts_with("https://") {
        if args.skip_verify {
            tracing::warn!("the control plane's certificate is NOT verified (--skip-verify)");
            builder = builder.danger_accept_invalid_certs(true);
        } else {
            let (pem, source) = match (&args.ca_cert, &args.ca_cert_file) {
                (Some(pem), _) => (pem.as_bytes().to_vec(), "KUMA_CONTROL_PLANE_CA_CERT".to_string()),
                (None, Some(path)) => (
                    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?,
                    path.display().to_string(),
                ),
                (None, None) => anyhow::bail!(
                    "the control plane is https: give its CA with --ca-cert-file (or KUMA_CONTROL_PLANE_CA_CERT_FILE, KUMA_CONTROL_PLANE_CA_CERT)"
                ),
            };
            builder = builder.tls_backend_preconfigured(kuma_dp::cp_tls::client_config(&pem, &source)?);
        }
    }
    Ok(builder.build()?)
}

/// An error with its causes (a TLS failure hides under "error sending
/// request").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Posts the bootstrap request until the control plane answers (a 404
/// without a body means "not yet"; other client errors are final).
async fn fetch_bootstrap(client: &reqwest::Client, args: &RunArgs, body: &Value) -> anyhow::Result<Value> {
    let url = format!("{}/bootstrap", args.cp_address.trim_end_matches('/'));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    loop {
        let attempt = client
            .post(&url)
            .header("accept", "application/json")
            .json(body)
            .send()
            .await;
        match attempt {
            Ok(r) if r.status().is_success() => return Ok(r.json().await?),
            Ok(r) => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                if status.as_u16() != 404 || !text.trim().is_empty() && !text.contains("not found") {
                    anyhow::bail!("Invalid request: {text}");
                }
                tracing::info!(%text, "the control plane does not know this dataplane yet; retrying");
            }
            Err(e) => tracing::warn!(error = %error_chain(&e), "cannot reach the control plane; retrying"),
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("the control plane did not provide a bootstrap in 5 minutes");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn run(mut args: RunArgs) -> anyhow::Result<()> {
    args.apply_env()?;
    let inline = dataplane_resource(&args)?;
    let (mesh, name, resource) = match inline {
        Some((m, n, r)) => (m, n, Some(r)),
        None => (
            args.mesh.clone().unwrap_or_else(|| "default".into()),
            args.name
                .clone()
                .ok_or_else(|| anyhow::anyhow!("--name is required without a dataplane definition"))?,
            None,
        ),
    };
    let work_dir = match &args.work_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("kuma-dp-{}", std::process::id())),
    };
    std::fs::create_dir_all(&work_dir)?;
    let envoy_version = envoy::version(&args.binary_path).await?;
    let readiness_port: u16 = std::env::var("KUMA_READINESS_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(9902);
    let mut features: Vec<&str> = vec![];
    if std::env::var("KUMA_DATAPLANE_RUNTIME_ENVOY_XDS_TRANSPORT_PROTOCOL_VARIANT").as_deref()
        == Ok("DELTA_GRPC")
    {
        features.push("feature-delta-grpc");
    }
    let dns_proxy = args.dns_enabled && args.dns_proxy_port != 0;
    if dns_proxy {
        features.push("feature-embedded-dns");
    }
    let request = json!({
        "mesh": mesh,
        "name": name,
        "proxyType": args.proxy_type,
        "dataplaneToken": token(&args)?,
        "dataplaneResource": resource.map(|r| r.to_string()).unwrap_or_default(),
        "version": {
            "kumaDp": {"version": VERSION, "gitTag": VERSION, "gitCommit": "", "buildDate": ""},
            "envoy": {"version": envoy_version, "build": "", "kumaDpCompatible": true},
        },
        "caCert": ca_pem(&args)?,
        "readinessPort": readiness_port,
        "features": features,
        "workdir": work_dir.display().to_string(),
    });
    let client = client(&args)?;
    let response = fetch_bootstrap(&client, &args, &request).await?;
    let bootstrap = response
        .get("bootstrap")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow::anyhow!("the bootstrap response has no bootstrap"))?;
    let yaml = String::from_utf8(base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        bootstrap,
    )?)?;
    let config_path = work_dir.join("bootstrap.yaml");
    std::fs::write(&config_path, &yaml)?;
    let admin_port = envoy::admin_port(&yaml).unwrap_or(9901);
    tracing::info!(mesh, name, admin_port, bootstrap = %config_path.display(), "starting Envoy");

    if dns_proxy {
        let table = dns::SharedLookup::default();
        let loopback: [std::net::IpAddr; 2] = [
            std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::Ipv6Addr::LOCALHOST.into(),
        ];
        dns::start(&loopback, args.dns_proxy_port, table.clone()).await?;
        let socket = kuma_crds::dns::dynamic_config_socket(&work_dir.display().to_string()).into();
        tokio::spawn(dns::keep_table(
            socket,
            args.dynamic_configuration_refresh_interval,
            table,
        ));
    }

    let terminating = Arc::new(AtomicBool::new(false));
    if let Some(port) = std::env::var("KUMA_APPLICATION_PROBE_PROXY_PORT")
        .ok()
        .and_then(|p| p.parse::<u16>().ok())
        .filter(|p| *p != 0)
    {
        tokio::spawn(probes::serve(port));
    }
    tokio::spawn(envoy::readiness_server(
        readiness_port,
        admin_port,
        terminating.clone(),
    ));
    let supervisor = envoy::Supervisor::new(
        args.binary_path.clone(),
        config_path,
        args.drain_time,
        args.envoy_log_level.clone(),
        args.concurrency,
    );
    let envoy_task = tokio::spawn(supervisor.clone().run());

    shutdown_signal().await;
    tracing::info!(drain = ?args.drain_time, "draining");
    terminating.store(true, Ordering::SeqCst);
    envoy::fail_health_checks(admin_port).await;
    tokio::time::sleep(args.drain_time).await;
    supervisor.stop().await;
    envoy_task.abort();
    if args.work_dir.is_none() {
        let _ = std::fs::remove_dir_all(&work_dir);
    }
    Ok(())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}

fn main() -> anyhow::Result<()> {
    // reqwest takes the process-wide TLS provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let level = match &cli.command {
        Command::Run(args) => args.log_level.clone(),
        Command::Version => "info".into(),
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&level).unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cli.command {
        Command::Version => {
            println!("Kuma DP: {VERSION}");
            Ok(())
        }
        Command::Run(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(run(*args)),
    }
}
