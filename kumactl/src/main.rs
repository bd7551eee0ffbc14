//! `kumactl`: manage the control plane from the command line.

mod client;
mod config;
mod output;

use std::io::Read;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use kuma_crds::format::{FieldValidation, parse_with, to_universal};
use kuma_crds::resource::{Resource, ResourceType, Scope};
use serde_json::{Value, json};

use crate::client::{Api, is_not_found};
use crate::config::{ApiServer, Context as CpContext, ControlPlane, Coordinates, KumactlConfig};

/// The Kuma version this kumactl speaks.
pub const VERSION: &str = "2.14.3";

#[derive(Parser)]
#[command(name = "kumactl", about = "Management tool for Kuma", version = VERSION)]
struct Cli {
    /// The kumactl configuration file.
    #[arg(long, global = true, env = "KUMACTL_CONFIG")]
    config_file: Option<PathBuf>,
    /// The mesh.
    #[arg(short = 'm', long, global = true, default_value = "default")]
    mesh: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum Format {
    Table,
    Yaml,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Manage the kumactl configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Create or update resources from files.
    Apply {
        /// A file, or `-` for stdin.
        #[arg(short = 'f', long = "file")]
        file: String,
        /// Variables for `{{ name }}` placeholders, as key=value.
        #[arg(short = 'v', long = "var")]
        vars: Vec<String>,
        /// Print the resources instead of applying them.
        #[arg(long)]
        dry_run: bool,
        /// Refuse fields nobody knows instead of dropping them with a
        /// warning (the API's `?fieldValidation=Strict`).
        #[arg(long)]
        strict: bool,
    },
    /// Show resources.
    Get {
        /// The resource type (e.g. meshes, dataplanes, meshtimeouts) or its singular.
        kind: String,
        /// A name, to show one resource.
        name: Option<String>,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Format,
        /// Page size.
        #[arg(long)]
        size: Option<usize>,
        /// Page offset.
        #[arg(long)]
        offset: Option<usize>,
    },
    /// Delete a resource.
    Delete {
        /// The resource type.
        kind: String,
        /// Its name.
        name: String,
    },
    /// Inspect dataplanes.
    Inspect {
        #[command(subcommand)]
        command: InspectCommand,
    },
    /// Generate tokens.
    Generate {
        #[command(subcommand)]
        command: GenerateCommand,
    },
    /// Install Kuma: transparent proxying on this host, the CRDs on Kubernetes.
    Install {
        #[command(subcommand)]
        command: InstallCommand,
    },
    /// Remove what `install` put in place.
    Uninstall {
        #[command(subcommand)]
        command: UninstallCommand,
    },
    /// Print the client and server versions.
    Version,
}

#[derive(Subcommand)]
enum InstallCommand {
    /// Redirect this host's traffic into Envoy with iptables (what kuma-init runs).
    #[command(name = "transparent-proxy")]
    TransparentProxy(Box<kumactl::transparent_proxy::cli::TransparentProxyArgs>),
    /// Print the kuma.io CustomResourceDefinitions (`| kubectl apply --server-side -f -`).
    Crds,
    /// Print the control plane's manifests (`| kubectl apply --server-side -f -`).
    #[command(name = "control-plane")]
    ControlPlane(Box<ControlPlaneArgs>),
    /// Write the OLM bundle and catalog (`config/olm/`; not in Kuma).
    #[command(name = "olm-bundle")]
    OlmBundle(OlmBundleArgs),
}

/// `kumactl install olm-bundle`.
#[derive(clap::Args)]
struct OlmBundleArgs {
    /// The directory to write (bundle/, bundle.Dockerfile, catalog/).
    #[arg(long, default_value = "config/olm")]
    output_dir: std::path::PathBuf,
    /// The operator's version.
    #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
    version: String,
    /// The version this one upgrades.
    #[arg(long)]
    replaces: Option<String>,
    /// The registry of the images.
    #[arg(long, default_value = "ghcr.io/kuma-rs")]
    registry: String,
}

/// Kuma's `kumactl install control-plane` flags that apply here.
#[derive(clap::Args)]
struct ControlPlaneArgs {
    /// The namespace of the control plane.
    #[arg(long, default_value = "kuma-system")]
    namespace: String,
    /// kuma-cp replicas.
    #[arg(long, default_value_t = 1)]
    control_plane_replicas: u32,
    /// The registry of the kuma-cp image.
    #[arg(long, default_value = "ghcr.io/kuma-rs")]
    control_plane_registry: String,
    /// The repository of the kuma-cp image.
    #[arg(long, default_value = "kuma-cp")]
    control_plane_repository: String,
    /// The version of the kuma-cp image.
    #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
    control_plane_version: String,
    /// The registry of the kuma-dp image.
    #[arg(long, default_value = "ghcr.io/kuma-rs")]
    dataplane_registry: String,
    /// The repository of the kuma-dp image.
    #[arg(long, default_value = "kuma-dp")]
    dataplane_repository: String,
    /// The registry of the kuma-init image.
    #[arg(long, default_value = "ghcr.io/kuma-rs")]
    dataplane_init_registry: String,
    /// The repository of the kuma-init image.
    #[arg(long, default_value = "kuma-init")]
    dataplane_init_repository: String,
    /// What the API server does when the injector cannot be reached: Fail or Ignore.
    #[arg(long, default_value = "Fail")]
    injector_failure_policy: String,
    /// A Secret (tls.crt, tls.key, ca.crt) for the control plane's
    /// certificate; without it one is generated.
    #[arg(long)]
    tls_general_secret: Option<String>,
    /// The base64 of that Secret's ca.crt (required with it): the webhooks
    /// then trust it and kuma-cp serves them with the Secret's certificate.
    #[arg(long)]
    tls_general_ca_bundle: Option<String>,
}

#[derive(Subcommand)]
enum UninstallCommand {
    /// Remove the transparent proxy's iptables rules.
    #[command(name = "transparent-proxy")]
    TransparentProxy {
        /// Print the rules that would remain, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print more.
        #[arg(long)]
        verbose: bool,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Manage known control planes.
    #[command(name = "control-planes")]
    ControlPlanes {
        #[command(subcommand)]
        command: ControlPlanesCommand,
    },
    /// Print the configuration.
    View,
}

#[derive(Subcommand)]
enum ControlPlanesCommand {
    /// Add a control plane and switch to it.
    Add {
        /// Its name.
        #[arg(long)]
        name: String,
        /// The API server URL, e.g. http://localhost:5681.
        #[arg(long)]
        address: String,
        /// Replace a control plane of the same name.
        #[arg(long)]
        overwrite: bool,
        /// CA to verify an https API server.
        #[arg(long)]
        ca_cert_file: Option<String>,
        /// Do not verify the API server's certificate.
        #[arg(long)]
        skip_verify: bool,
        /// Do not check that the address answers.
        #[arg(long)]
        skip_check: bool,
        /// How to authenticate: `tokens` (a user token).
        #[arg(long)]
        auth_type: Option<String>,
        /// Authentication settings as key=value, e.g. token=YOUR_TOKEN.
        #[arg(long)]
        auth_conf: Vec<String>,
    },
    /// List control planes.
    List,
    /// Use another control plane.
    Switch {
        /// Its name.
        #[arg(long)]
        name: String,
    },
    /// Forget a control plane.
    Remove {
        /// Its name.
        #[arg(long)]
        name: String,
    },
}

#[derive(Subcommand)]
enum InspectCommand {
    /// Dataplanes with their connection status.
    Dataplanes {
        /// Only dataplanes with this tag, as key:value.
        #[arg(long)]
        tag: Vec<String>,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Format,
    },
    /// Meshes at a glance: dataplanes online/total and policy counts.
    Meshes {
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Format,
    },
    /// One dataplane: its policies, or what its Envoy holds.
    Dataplane {
        /// Its name.
        name: String,
        /// `policies` (the policies it matches), `config-dump` (its Envoy's
        /// configuration), `stats`, `clusters` (from its Envoy's admin) or
        /// `config` (what the control plane sends it).
        #[arg(long = "type", default_value = "policies")]
        inspect_type: String,
        /// With `--type config-dump`: the endpoints too.
        #[arg(long = "include-eds")]
        include_eds: bool,
        /// Output format of `--type policies`.
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Format,
    },
    /// A policy (e.g. `kumactl inspect meshtimeout NAME`): the data plane
    /// proxies it affects.
    #[command(external_subcommand)]
    Policy(Vec<String>),
}

#[derive(Subcommand)]
enum GenerateCommand {
    /// A dataplane token.
    #[command(name = "dataplane-token")]
    DataplaneToken {
        /// The dataplane name (empty: any dataplane of the mesh).
        #[arg(long, default_value = "")]
        name: String,
        /// Proxy type.
        #[arg(long, default_value = "dataplane")]
        proxy_type: String,
        /// Tags the dataplane must have, as key=value1,value2.
        #[arg(long)]
        tag: Vec<String>,
        /// Validity, e.g. 24h.
        #[arg(long)]
        valid_for: String,
    },
    /// A user token for the API.
    #[command(name = "user-token")]
    UserToken {
        /// The user name.
        #[arg(long)]
        name: String,
        /// A group of the user (repeatable).
        #[arg(long)]
        group: Vec<String>,
        /// Validity, e.g. 24h.
        #[arg(long)]
        valid_for: String,
    },
}

fn config_path(cli: &Cli) -> PathBuf {
    cli.config_file.clone().unwrap_or_else(config::default_path)
}

fn api(cli: &Cli) -> anyhow::Result<Api> {
    let config = KumactlConfig::load(&config_path(cli))?;
    Api::new(config.current()?)
}

fn resource_type(text: &str) -> anyhow::Result<ResourceType> {
    ResourceType::lookup(text)
        .ok_or_else(|| anyhow::anyhow!("unknown TYPE: {text}. Allowed values: {}", allowed_types()))
}

fn allowed_types() -> String {
    ResourceType::ALL
        .iter()
        .map(|t| t.descriptor().plural)
        .collect::<Vec<_>>()
        .join(", ")
}

fn collection_path(t: ResourceType, mesh: &str) -> String {
    match t {
        ResourceType::Mesh => "/meshes".into(),
        t if t.descriptor().scope == Scope::Global => format!("/{}", t.descriptor().plural),
        t => format!("/meshes/{mesh}/{}", t.descriptor().plural),
    }
}

fn item_path(r: &Resource) -> String {
    format!(
        "{}/{}",
        collection_path(r.resource_type(), r.meta.mesh_or_default()),
        r.meta.core_name()
    )
}

fn read_input(file: &str) -> anyhow::Result<String> {
    if file == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        Ok(text)
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {file}"))
    }
}

fn split_documents(text: &str) -> Vec<String> {
    let mut docs = vec![String::new()];
    for line in text.lines() {
        if line.trim_end() == "---" {
            docs.push(String::new());
        } else if let Some(last) = docs.last_mut() {
            last.push_str(line);
            last.push('\n');
        }
    }
    docs.into_iter()
        .filter(|d| {
            d.lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        })
        .collect()
}

fn apply(cli: &Cli, file: &str, vars: &[String], dry_run: bool, strict: bool) -> anyhow::Result<()> {
    let mode = if strict {
        FieldValidation::Strict
    } else {
        FieldValidation::Warn
    };
    let text = read_input(file)?;
    let vars = kuma_crds::template::parse_vars(vars).map_err(|e| anyhow::anyhow!(e))?;
    let mut resources = Vec::new();
    let mut failed = false;
    for (i, doc) in split_documents(&text).into_iter().enumerate() {
        let doc = if vars.is_empty() {
            doc
        } else {
            kuma_crds::template::render(&doc, &vars)
        };
        match parse_with(&doc, mode) {
            Ok(parsed) => {
                for w in &parsed.warnings {
                    eprintln!("Warning: resource[{i}]: {w} (dropped; --strict refuses it)");
                }
                resources.push(parsed.resource);
            }
            Err(e) => {
                failed = true;
                let causes: Vec<String> = e.violations().iter().map(|v| v.to_string()).collect();
                eprintln!("resource[{i}]: failed to parse resource: {}", causes.join("; "));
            }
        }
    }
    if failed {
        anyhow::bail!("failed to validate some resources");
    }
    if dry_run {
        for (i, r) in resources.iter().enumerate() {
            if i > 0 {
                println!("---");
            }
            print!("{}", output::yaml(&to_universal(r)));
        }
        return Ok(());
    }
    let api = api(cli)?;
    for r in resources {
        let path = item_path(&r);
        let describe = format!(
            "resource type=\"{}\" mesh=\"{}\" name=\"{}\"",
            r.resource_type(),
            r.meta.mesh.clone().unwrap_or_default(),
            r.meta.core_name()
        );
        let path = if strict {
            format!("{path}?fieldValidation=Strict")
        } else {
            path
        };
        let (status, warnings) = api
            .put(&path, &to_universal(&r))
            .map_err(|e| anyhow::anyhow!("{describe}: failed server side: {e}"))?;
        for w in warnings {
            eprintln!("Warning: {w}");
        }
        println!("{describe} {}", if status == 201 { "Created" } else { "Updated" });
    }
    Ok(())
}

fn get(
    cli: &Cli,
    kind: &str,
    name: Option<&str>,
    format: Format,
    size: Option<usize>,
    offset: Option<usize>,
) -> anyhow::Result<()> {
    let t = resource_type(kind)?;
    let api = api(cli)?;
    let base = collection_path(t, &cli.mesh);
    if let Some(name) = name {
        let r = match api.get(&format!("{base}/{name}")) {
            Ok(r) => r,
            Err(e) if is_not_found(&e) => {
                if t.descriptor().scope == Scope::Mesh {
                    anyhow::bail!("No resources found in {} mesh", cli.mesh);
                }
                anyhow::bail!("No resources found");
            }
            Err(e) => return Err(e),
        };
        match format {
            Format::Table => print!("{}", output::resources_table(t, &[r])),
            Format::Yaml => print!("{}", output::yaml(&r)),
            Format::Json => print!("{}", output::json(&r)),
        }
        return Ok(());
    }
    let mut query = Vec::new();
    if let Some(s) = size {
        query.push(format!("size={s}"));
    }
    if let Some(o) = offset {
        query.push(format!("offset={o}"));
    }
    let (list, items) = api.list(&base, &query)?;
    match format {
        Format::Table => {
            print!("{}", output::resources_table(t, &items));
            if let Some(next) = list.get("next").and_then(Value::as_str)
                && let Some(off) = next.split(['?', '&']).find_map(|p| p.strip_prefix("offset="))
            {
                println!("\nRerun command with --offset={off} argument to retrieve more resources");
            }
        }
        Format::Yaml => print!(
            "{}",
            output::yaml(&json!({"items": items, "next": null, "total": list.get("total")}))
        ),
        Format::Json => print!(
            "{}",
            output::json(&json!({"total": list.get("total"), "items": items, "next": null}))
        ),
    }
    Ok(())
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Apply {
            file,
            vars,
            dry_run,
            strict,
        } => apply(cli, file, vars, *dry_run, *strict),
        Command::Get {
            kind,
            name,
            output,
            size,
            offset,
        } => get(cli, kind, name.as_deref(), *output, *size, *offset),
        Command::Delete { kind, name } => {
            let t = resource_type(kind)?;
            let api = api(cli)?;
            match api.delete(&format!("{}/{name}", collection_path(t, &cli.mesh))) {
                Ok(()) => {
                    println!("deleted {t} \"{name}\"");
                    Ok(())
                }
                Err(e) if is_not_found(&e) => anyhow::bail!("there is no {t} with name \"{name}\""),
                Err(e) => Err(e),
            }
        }
        Command::Inspect {
            command: InspectCommand::Dataplanes { tag, output },
        } => {
            let api = api(cli)?;
            let query: Vec<String> = tag.iter().map(|t| format!("tag={t}")).collect();
            let path = format!("/meshes/{}/dataplanes/_overview", cli.mesh);
            let (list, items) = api.list(&path, &query)?;
            match output {
                Format::Table => print!("{}", output::overview_table(&items)),
                Format::Yaml => print!("{}", output::yaml(&list)),
                Format::Json => print!("{}", output::json(&list)),
            }
            Ok(())
        }
        Command::Inspect {
            command: InspectCommand::Meshes { output },
        } => {
            let api = api(cli)?;
            let (list, items) = api.list("/mesh-insights", &[])?;
            match output {
                Format::Table => print!("{}", output::mesh_insights_table(&items)),
                Format::Yaml => print!("{}", output::yaml(&list)),
                Format::Json => print!("{}", output::json(&list)),
            }
            Ok(())
        }
        Command::Inspect {
            command:
                InspectCommand::Dataplane {
                    name,
                    inspect_type,
                    include_eds,
                    output,
                },
        } => {
            let api = api(cli)?;
            let base = format!("/meshes/{}/dataplanes/{name}", cli.mesh);
            if *include_eds && inspect_type != "config-dump" {
                anyhow::bail!("flag '--include-eds' can be used only when '--type=config-dump'");
            }
            match inspect_type.as_str() {
                "policies" => {
                    let list = api.get(&format!("{base}/_policies"))?;
                    match output {
                        Format::Table => print!("{}", output::dataplane_policies_table(&list)),
                        Format::Yaml => print!("{}", output::yaml(&list)),
                        Format::Json => print!("{}", output::json(&list)),
                    }
                }
                "config-dump" => {
                    let eds = if *include_eds { "?include_eds=true" } else { "" };
                    print!("{}", api.get_text(&format!("{base}/xds{eds}"))?);
                }
                "stats" | "clusters" => print!("{}", api.get_text(&format!("{base}/{inspect_type}"))?),
                "config" => print!("{}", output::json(&api.get(&format!("{base}/_config"))?)),
                other => anyhow::bail!(
                    "unknown inspect type {other:?}: use policies, config-dump, stats, clusters or config"
                ),
            }
            Ok(())
        }
        Command::Inspect {
            command: InspectCommand::Policy(args),
        } => {
            let [kind, name] = args.as_slice() else {
                anyhow::bail!(
                    "usage: kumactl inspect <policy type> <name>, e.g. kumactl inspect meshtimeout my-timeout"
                );
            };
            let t = resource_type(kind)?;
            if !t.is_policy() {
                anyhow::bail!("{t} is not a policy: inspect dataplanes, dataplane or a policy type");
            }
            let api = api(cli)?;
            let v = api.get(&format!(
                "/meshes/{}/{}/{name}/_resources/dataplanes",
                cli.mesh,
                t.descriptor().plural
            ))?;
            print!("{}", output::affected_dataplanes(&v));
            Ok(())
        }
        Command::Generate {
            command:
                GenerateCommand::DataplaneToken {
                    name,
                    proxy_type,
                    tag,
                    valid_for,
                },
        } => {
            let mut tags: std::collections::BTreeMap<String, Vec<String>> = Default::default();
            for t in tag {
                let (k, v) = t
                    .split_once('=')
                    .ok_or_else(|| anyhow::anyhow!("invalid tag {t:?}: expected key=value"))?;
                tags.entry(k.to_string())
                    .or_default()
                    .extend(v.split(',').map(str::to_string));
            }
            humantime::parse_duration(valid_for).map_err(|e| anyhow::anyhow!("--valid-for: {e}"))?;
            let body = json!({"name": name, "mesh": cli.mesh, "tags": tags, "type": proxy_type, "validFor": valid_for});
            let token = api(cli)?.post_text("/tokens/dataplane", &body)?;
            print!("{token}");
            Ok(())
        }
        Command::Generate {
            command:
                GenerateCommand::UserToken {
                    name,
                    group,
                    valid_for,
                },
        } => {
            humantime::parse_duration(valid_for).map_err(|e| anyhow::anyhow!("--valid-for: {e}"))?;
            let body = json!({"name": name, "groups": group, "validFor": valid_for});
            let token = api(cli)?.post_text("/tokens/user", &body)?;
            print!("{token}");
            Ok(())
        }
        Command::Install {
            command: InstallCommand::TransparentProxy(args),
        } => {
            use kumactl::transparent_proxy::apply;
            let config = args.config().map_err(|e| anyhow::anyhow!(e))?;
            if args.dry_run {
                let host = apply::host();
                print!("{}", apply::dry_run(&config, &host, false));
                return Ok(());
            }
            let applied = apply::install(&config).map_err(|e| anyhow::anyhow!(e))?;
            if args.verbose {
                print!("{applied}");
            }
            println!(
                "transparent proxy setup completed successfully. You can now run kuma-dp with the transparent-proxy feature enabled"
            );
            Ok(())
        }
        Command::Install {
            command: InstallCommand::Crds,
        } => {
            // The same generator writes config/crds/, so the two never differ.
            for crd in kuma_crds::crd::all_crds() {
                print!("{}", kuma_crds::crd::to_yaml(&crd));
            }
            Ok(())
        }
        Command::Install {
            command: InstallCommand::ControlPlane(a),
        } => {
            use kumactl::install::{ControlPlaneOptions, generate_tls, render_control_plane};
            let version = &a.control_plane_version;
            let options = ControlPlaneOptions {
                namespace: a.namespace.clone(),
                replicas: a.control_plane_replicas,
                control_plane_image: format!(
                    "{}/{}:{version}",
                    a.control_plane_registry, a.control_plane_repository
                ),
                dataplane_image: format!("{}/{}:{version}", a.dataplane_registry, a.dataplane_repository),
                init_image: format!(
                    "{}/{}:{version}",
                    a.dataplane_init_registry, a.dataplane_init_repository
                ),
                injector_failure_policy: a.injector_failure_policy.clone(),
                tls_secret: a.tls_general_secret.clone(),
                tls_ca_bundle: a.tls_general_ca_bundle.clone(),
            };
            let tls = match &a.tls_general_secret {
                Some(_) => None,
                None => Some(generate_tls(&a.namespace).map_err(|e| anyhow::anyhow!(e))?),
            };
            print!(
                "{}",
                render_control_plane(&options, tls.as_ref()).map_err(|e| anyhow::anyhow!(e))?
            );
            Ok(())
        }
        Command::Install {
            command: InstallCommand::OlmBundle(a),
        } => {
            let options = kumactl::olm::BundleOptions {
                version: a.version.clone(),
                replaces: a.replaces.clone(),
                registry: a.registry.clone(),
            };
            let files = kumactl::olm::render_bundle(&options).map_err(|e| anyhow::anyhow!(e))?;
            for (path, text) in files {
                let path = a.output_dir.join(path);
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
                }
                std::fs::write(&path, text).with_context(|| path.display().to_string())?;
                println!("{}", path.display());
            }
            Ok(())
        }
        Command::Uninstall {
            command: UninstallCommand::TransparentProxy { dry_run, verbose: _ },
        } => {
            let report =
                kumactl::transparent_proxy::apply::uninstall(*dry_run).map_err(|e| anyhow::anyhow!(e))?;
            print!("{report}");
            Ok(())
        }
        Command::Version => {
            println!("Client: Kuma {VERSION}");
            match api(cli).and_then(|a| a.get("/")) {
                Ok(index) => println!(
                    "Server: {} {}",
                    index.get("product").and_then(Value::as_str).unwrap_or("Kuma"),
                    index.get("version").and_then(Value::as_str).unwrap_or("unknown")
                ),
                Err(e) => {
                    eprintln!("Unable to connect to control plane: Unable to retrieve server version: {e}")
                }
            }
            Ok(())
        }
        Command::Config {
            command: ConfigCommand::View,
        } => {
            print!(
                "{}",
                serde_yaml::to_string(&KumactlConfig::load(&config_path(cli))?)?
            );
            Ok(())
        }
        Command::Config {
            command: ConfigCommand::ControlPlanes { command },
        } => control_planes(cli, command),
    }
}

fn control_planes(cli: &Cli, command: &ControlPlanesCommand) -> anyhow::Result<()> {
    let path = config_path(cli);
    let mut config = KumactlConfig::load(&path)?;
    match command {
        ControlPlanesCommand::Add {
            name,
            address,
            overwrite,
            ca_cert_file,
            skip_verify,
            skip_check,
            auth_type,
            auth_conf,
        } => {
            if config.control_planes.iter().any(|cp| &cp.name == name) && !overwrite {
                anyhow::bail!(
                    "Control Plane with name {name:?} already exists. Use --overwrite to replace an existing one."
                );
            }
            let mut conf = std::collections::BTreeMap::new();
            for kv in auth_conf {
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| anyhow::anyhow!("--auth-conf {kv:?}: expected key=value"))?;
                conf.insert(k.to_string(), v.to_string());
            }
            match auth_type.as_deref() {
                None if !conf.is_empty() => anyhow::bail!("--auth-conf needs --auth-type"),
                None => {}
                Some("tokens") if conf.get("token").is_none_or(|t| t.is_empty()) => {
                    anyhow::bail!("--auth-type tokens: provide --auth-conf token=YOUR_TOKEN")
                }
                Some("tokens") => {}
                Some(other) => anyhow::bail!("--auth-type {other:?} is not supported: use tokens"),
            }
            let server = ApiServer {
                url: address.clone(),
                ca_cert_file: ca_cert_file.clone().unwrap_or_default(),
                skip_verify: *skip_verify,
                auth_type: auth_type.clone().unwrap_or_default(),
                auth_conf: conf,
            };
            if !skip_check {
                let index = Api::new(&server)?.get("/").with_context(|| {
                    format!("could not connect to the Control Plane API Server at {address}")
                })?;
                if index.get("product").and_then(Value::as_str) != Some("Kuma") {
                    anyhow::bail!("this CLI is for Kuma but the control plane you're connected to is not");
                }
            }
            config.control_planes.retain(|cp| &cp.name != name);
            config.control_planes.push(ControlPlane {
                name: name.clone(),
                coordinates: Coordinates { api_server: server },
            });
            config.contexts.retain(|c| &c.name != name);
            config.contexts.push(CpContext {
                name: name.clone(),
                control_plane: name.clone(),
            });
            config.current_context = name.clone();
            config.save(&path)?;
            println!("added Control Plane \"{name}\"");
            println!("switched active Control Plane to \"{name}\"");
        }
        ControlPlanesCommand::List => {
            let rows: Vec<Vec<String>> = config
                .control_planes
                .iter()
                .map(|cp| {
                    let active = config
                        .contexts
                        .iter()
                        .any(|c| c.name == config.current_context && c.control_plane == cp.name);
                    vec![
                        if active { "*" } else { "" }.into(),
                        cp.name.clone(),
                        cp.coordinates.api_server.url.clone(),
                    ]
                })
                .collect();
            print!("{}", output::table(&["ACTIVE", "NAME", "ADDRESS"], &rows));
        }
        ControlPlanesCommand::Switch { name } => {
            let context = config
                .contexts
                .iter()
                .find(|c| &c.control_plane == name)
                .ok_or_else(|| anyhow::anyhow!("there is no Control Plane with name {name:?}"))?
                .name
                .clone();
            config.current_context = context;
            config.save(&path)?;
            println!("switched active Control Plane to \"{name}\"");
        }
        ControlPlanesCommand::Remove { name } => {
            if !config.control_planes.iter().any(|cp| &cp.name == name) {
                anyhow::bail!("there is no Control Plane with name {name:?}");
            }
            config.control_planes.retain(|cp| &cp.name != name);
            config.contexts.retain(|c| &c.control_plane != name);
            if !config.contexts.iter().any(|c| c.name == config.current_context) {
                config.current_context = config
                    .contexts
                    .first()
                    .map(|c| c.name.clone())
                    .unwrap_or_default();
            }
            config.save(&path)?;
            println!("removed Control Plane \"{name}\"");
        }
    }
    Ok(())
}

fn main() {
    // reqwest takes the process-wide TLS provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    if let Err(e) = run(&cli) {
        eprintln!("Error: {e:#}");
        std::process::exit(1);
    }
}
