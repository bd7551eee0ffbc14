//! kuma-cp configuration: Kuma's YAML keys (`--config-file`) and `KUMA_*`
//! environment variables, environment winning. Kuma's settings this
//! control plane does not use are accepted and reported (see
//! `crate::kuma_settings`); other unknown keys in the file are errors naming
//! the key; malformed values name the variable.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A configuration problem, reported at startup.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file has an unknown key or a value of the wrong type.
    #[error("config file {path}: {key}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The key, e.g. `store.postgres.port`.
        key: String,
        /// Why.
        message: String,
    },
    /// An environment variable has a malformed value.
    #[error("environment variable {name}={value:?}: {message}")]
    Env {
        /// The variable.
        name: String,
        /// Its value.
        value: String,
        /// Why.
        message: String,
    },
}

/// The whole configuration.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Config {
    /// `universal` or `kubernetes`: selects the store, leadership and how
    /// proxies authenticate (see `crate::mode`).
    pub environment: Environment,
    /// Where resources live.
    pub store: StoreConfig,
    /// The REST API.
    pub api_server: ApiServerConfig,
    /// The dp-server (`/bootstrap` and xDS).
    pub dp_server: DpServerConfig,
    /// The diagnostics server.
    pub diagnostics: DiagnosticsConfig,
    /// Certificates and the working directory.
    pub general: GeneralConfig,
    /// What is created on first start.
    pub defaults: DefaultsConfig,
    /// xDS settings.
    pub xds_server: XdsServerConfig,
    /// Proxy status bookkeeping (`metrics.*`).
    pub metrics: MetricsConfig,
    /// Environment-specific runtime settings (`runtime.*`).
    pub runtime: RuntimeConfig,
    /// Who may do what in the API (`access.*`).
    pub access: AccessConfig,
}

/// `access.*`: Kuma's static access control.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct AccessConfig {
    /// `static`, the only kind.
    #[serde(rename = "type")]
    pub access_type: AccessType,
    /// The lists.
    #[serde(rename = "static")]
    pub static_lists: StaticAccess,
}

/// Access control kinds.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum AccessType {
    /// Users and groups listed in the configuration.
    #[default]
    Static,
}

/// `access.static.*`: for each action, the users and groups allowed.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct StaticAccess {
    /// Reading and writing Secrets and GlobalSecrets.
    pub admin_resources: UsersAndGroups,
    /// `POST /tokens/dataplane`.
    pub generate_dp_token: UsersAndGroups,
    /// `POST /tokens/user`.
    pub generate_user_token: UsersAndGroups,
    /// Zone tokens (no zones here; kept for configuration files).
    pub generate_zone_token: UsersAndGroups,
    /// A dataplane's Envoy configuration (`_config`).
    pub view_config_dump: UsersAndGroups,
    /// Envoy stats (kept for configuration files).
    pub view_stats: UsersAndGroups,
    /// Envoy clusters (kept for configuration files).
    pub view_clusters: UsersAndGroups,
    /// The control plane's configuration (`GET /config`).
    pub control_plane_metadata: UsersAndGroups,
}

/// Users and groups allowed to do something.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct UsersAndGroups {
    /// User names.
    pub users: Vec<String>,
    /// Group names.
    pub groups: Vec<String>,
}

impl UsersAndGroups {
    fn of(users: &[&str], groups: &[&str]) -> Self {
        UsersAndGroups {
            users: users.iter().map(|u| u.to_string()).collect(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    /// Whether the user `name` with `groups` is allowed.
    pub fn allows(&self, name: &str, groups: &[String]) -> bool {
        self.users.iter().any(|u| u == name) || groups.iter().any(|g| self.groups.contains(g))
    }
}

impl Default for StaticAccess {
    fn default() -> Self {
        let admin = UsersAndGroups::of(&["mesh-system:admin"], &["mesh-system:admin"]);
        let everyone = UsersAndGroups::of(&[], &["mesh-system:unauthenticated", "mesh-system:authenticated"]);
        StaticAccess {
            admin_resources: admin.clone(),
            generate_dp_token: admin.clone(),
            generate_user_token: admin.clone(),
            generate_zone_token: admin,
            view_config_dump: everyone.clone(),
            view_stats: everyone.clone(),
            view_clusters: everyone.clone(),
            control_plane_metadata: everyone,
        }
    }
}

/// `metrics.*`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `metrics.dataplane.*`.
    pub dataplane: DataplaneMetricsConfig,
}

/// `metrics.dataplane.*`: the DataplaneInsight subscriptions.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct DataplaneMetricsConfig {
    /// How many subscriptions an insight keeps (0 keeps all).
    pub subscription_limit: usize,
    /// A subscription whose control plane did not raise its generation
    /// for this long is closed by the leader; control planes raise theirs
    /// every half of it.
    #[serde(with = "duration_text")]
    pub idle_timeout: Duration,
}

impl Default for DataplaneMetricsConfig {
    fn default() -> Self {
        DataplaneMetricsConfig {
            subscription_limit: 2,
            idle_timeout: Duration::from_secs(5 * 60),
        }
    }
}

/// `runtime.*`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// `runtime.universal.*`.
    pub universal: UniversalRuntimeConfig,
    /// `runtime.kubernetes.*`.
    pub kubernetes: KubernetesRuntimeConfig,
}

/// `runtime.kubernetes.*`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct KubernetesRuntimeConfig {
    /// The admission webhooks' server.
    pub admission_server: AdmissionServerConfig,
    /// The sidecar injector.
    pub injector: InjectorSettings,
    /// Users whose kuma.io writes the validating webhook does not check
    /// (kuma-cp's own ServiceAccount, set by the manifests).
    pub allowed_users: Vec<String>,
    /// The Service proxies reach the control plane through.
    pub control_plane_service_name: String,
}

impl Default for KubernetesRuntimeConfig {
    fn default() -> Self {
        KubernetesRuntimeConfig {
            admission_server: AdmissionServerConfig::default(),
            injector: InjectorSettings::default(),
            allowed_users: Vec::new(),
            control_plane_service_name: "kuma-control-plane".into(),
        }
    }
}

/// `runtime.kubernetes.admissionServer.*`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct AdmissionServerConfig {
    /// Port.
    pub port: u16,
    /// Address to listen on (all when empty).
    pub address: String,
    /// Directory with `tls.crt` and `tls.key` (reloaded when they change);
    /// empty: kuma-cp generates its own and keeps the webhook
    /// configurations' caBundle current.
    pub cert_dir: String,
}

impl Default for AdmissionServerConfig {
    fn default() -> Self {
        AdmissionServerConfig {
            port: 5443,
            address: String::new(),
            cert_dir: String::new(),
        }
    }
}

/// `runtime.kubernetes.injector.*` (the settings this injector uses).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct InjectorSettings {
    /// The CA kuma-dp verifies the dp-server with (a file).
    pub ca_cert_file: String,
    /// The kuma-dp image.
    pub sidecar_image: String,
    /// The kuma-init image.
    pub init_image: String,
    /// Native sidecars (init containers with restartPolicy Always).
    pub sidecar_containers: bool,
    /// kuma-dp answers DNS.
    pub builtin_dns_enabled: bool,
    /// The application probe proxy's port (0 turns it off).
    pub application_probe_proxy_port: u16,
    /// Virtual probes where the application probe proxy is off.
    pub virtual_probes_enabled: bool,
    /// The virtual probes' port.
    pub virtual_probes_port: u16,
    /// Inbound ports never redirected.
    pub exclude_inbound_ports: Vec<u16>,
    /// Outbound ports never redirected.
    pub exclude_outbound_ports: Vec<u16>,
    /// Sources never redirected.
    pub exclude_inbound_ips: Vec<String>,
    /// Destinations never redirected.
    pub exclude_outbound_ips: Vec<String>,
    /// `sidecarContainer.*` (its resources; Kuma's other keys there are
    /// accepted without effect).
    pub sidecar_container: InjectedContainerSettings,
    /// `initContainer.*` (its resources).
    pub init_container: InjectedContainerSettings,
}

/// An injected container's `resources` (Kubernetes quantities; unset:
/// Kuma's default; empty: not written).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct InjectedContainerSettings {
    /// `resources.requests` and `resources.limits`.
    pub resources: ContainerResources,
}

/// `requests` and `limits` of a container.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ContainerResources {
    /// What the container asks for.
    pub requests: Quantities,
    /// What it may use at most.
    pub limits: Quantities,
}

/// CPU and memory.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Quantities {
    /// CPU (`50m`, `1`).
    pub cpu: Option<String>,
    /// Memory (`64Mi`, `512M`).
    pub memory: Option<String>,
}

impl InjectedContainerSettings {
    /// The injector's form: each quantity set here (checked), else Kuma's
    /// default from `defaults`; an empty one is not written at all.
    /// `key` names the section in errors, e.g.
    /// `runtime.kubernetes.injector.sidecarContainer`.
    pub fn to_injector(
        &self,
        key: &str,
        defaults: &kuma_webhook::injector::Resources,
    ) -> Result<kuma_webhook::injector::Resources, String> {
        let pick = |q: &Option<String>,
                    default: &Option<String>,
                    field: &str|
         -> Result<Option<String>, String> {
            match q.as_deref() {
                None => Ok(default.clone()),
                Some("") => Ok(None),
                Some(v) if is_quantity(v) => Ok(Some(v.to_string())),
                Some(v) => Err(format!(
                    "{key}.resources.{field}: {v:?} is not a Kubernetes quantity (e.g. 50m, 1, 64Mi, 512M)"
                )),
            }
        };
        let r = &self.resources;
        Ok(kuma_webhook::injector::Resources {
            requests_cpu: pick(&r.requests.cpu, &defaults.requests_cpu, "requests.cpu")?,
            requests_memory: pick(&r.requests.memory, &defaults.requests_memory, "requests.memory")?,
            limits_cpu: pick(&r.limits.cpu, &defaults.limits_cpu, "limits.cpu")?,
            limits_memory: pick(&r.limits.memory, &defaults.limits_memory, "limits.memory")?,
        })
    }
}

/// Whether `v` reads as a Kubernetes quantity: a decimal number with an
/// optional SI, binary or exponent suffix.
fn is_quantity(v: &str) -> bool {
    const SUFFIXES: [&str; 14] = [
        "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "n", "u", "m", "k", "M", "G", "T", "P",
    ];
    let number = SUFFIXES
        .iter()
        .find_map(|s| v.strip_suffix(s))
        .or_else(|| v.strip_suffix('E'))
        .unwrap_or(v);
    let number = match number.split_once(['e', 'E']) {
        Some((mantissa, exponent))
            if exponent
                .trim_start_matches(['+', '-'])
                .bytes()
                .all(|b| b.is_ascii_digit())
                && !exponent.trim_start_matches(['+', '-']).is_empty() =>
        {
            mantissa
        }
        Some(_) => return false,
        None => number,
    };
    let number = number.strip_prefix(['+', '-']).unwrap_or(number);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    !(whole.is_empty() && fraction.is_empty())
        && whole.bytes().all(|b| b.is_ascii_digit())
        && fraction.bytes().all(|b| b.is_ascii_digit())
}

impl Default for InjectorSettings {
    fn default() -> Self {
        let defaults = kuma_webhook::injector::InjectorConfig::default();
        InjectorSettings {
            ca_cert_file: String::new(),
            sidecar_image: defaults.sidecar_image,
            init_image: defaults.init_image,
            sidecar_containers: defaults.native_sidecar,
            builtin_dns_enabled: defaults.builtin_dns,
            application_probe_proxy_port: defaults.application_probe_proxy_port,
            virtual_probes_enabled: defaults.virtual_probes_enabled,
            virtual_probes_port: defaults.virtual_probes_port,
            exclude_inbound_ports: Vec::new(),
            exclude_outbound_ports: Vec::new(),
            exclude_inbound_ips: Vec::new(),
            exclude_outbound_ips: Vec::new(),
            sidecar_container: InjectedContainerSettings::default(),
            init_container: InjectedContainerSettings::default(),
        }
    }
}

/// `runtime.universal.*`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct UniversalRuntimeConfig {
    /// A Dataplane whose proxy has been offline this long is deleted.
    #[serde(with = "duration_text")]
    pub dataplane_cleanup_age: Duration,
}

impl Default for UniversalRuntimeConfig {
    fn default() -> Self {
        UniversalRuntimeConfig {
            dataplane_cleanup_age: Duration::from_secs(72 * 3600),
        }
    }
}

pub use kuma_crds::admission::Environment;

/// Store settings (`store.*`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `memory` (default), `postgres`, or `kubernetes` (the only store of
    /// the Kubernetes environment).
    #[serde(rename = "type")]
    pub store_type: StoreType,
    /// PostgreSQL settings.
    pub postgres: PostgresConfig,
    /// Kubernetes settings.
    pub kubernetes: KubernetesStoreConfig,
}

/// Kubernetes store settings (`store.kubernetes.*`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct KubernetesStoreConfig {
    /// The control plane's namespace: its Secrets, its Lease, and the
    /// policies that apply mesh-wide.
    pub system_namespace: String,
}

impl Default for KubernetesStoreConfig {
    fn default() -> Self {
        KubernetesStoreConfig {
            system_namespace: kuma_crds::admission::DEFAULT_SYSTEM_NAMESPACE.into(),
        }
    }
}

/// The kinds of store.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StoreType {
    /// In memory: nothing survives a restart.
    #[default]
    Memory,
    /// PostgreSQL.
    Postgres,
    /// The Kubernetes API (kuma.io CRDs and Secrets).
    Kubernetes,
}

/// PostgreSQL settings (`store.postgres.*`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct PostgresConfig {
    /// Host.
    pub host: String,
    /// Port (Kuma's default 15432).
    pub port: u16,
    /// User.
    pub user: String,
    /// Password.
    pub password: String,
    /// Database.
    pub db_name: String,
    /// TLS.
    pub tls: PostgresTls,
    /// Connection attempt timeout, in seconds.
    pub connection_timeout: u64,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            host: "127.0.0.1".into(),
            port: 15432,
            user: "kuma".into(),
            password: "kuma".into(),
            db_name: "kuma".into(),
            tls: PostgresTls::default(),
            connection_timeout: 5,
        }
    }
}

/// PostgreSQL TLS (`store.postgres.tls.*`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct PostgresTls {
    /// `disable` (default), `verifyNone`, `verifyCa`, `verifyFull`.
    pub mode: PostgresTlsMode,
    /// The client certificate (PEM), when the server asks for one.
    pub cert_path: String,
    /// The client certificate's key (PEM).
    pub key_path: String,
    /// The CA the server's certificate must chain to (`verifyCa`,
    /// `verifyFull`).
    pub ca_path: String,
    /// Send no SNI.
    #[serde(rename = "disableSSLSNI")]
    pub disable_ssl_sni: bool,
}

/// PostgreSQL TLS modes.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum PostgresTlsMode {
    /// Plaintext.
    #[default]
    Disable,
    /// TLS without verification.
    VerifyNone,
    /// TLS verifying the CA.
    VerifyCa,
    /// TLS verifying the CA and host name.
    VerifyFull,
}

/// REST API settings (`apiServer.*`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ApiServerConfig {
    /// The HTTP listener.
    pub http: HttpListener,
    /// The HTTPS listener.
    pub https: HttpsListener,
    /// Authentication.
    pub authn: ApiAuthn,
    /// Origins allowed by CORS (none by default).
    pub cors_allowed_domains: Vec<String>,
}

impl Default for ApiServerConfig {
    fn default() -> Self {
        ApiServerConfig {
            http: HttpListener {
                port: 5681,
                interface: "0.0.0.0".into(),
            },
            https: HttpsListener::default(),
            authn: ApiAuthn::default(),
            cors_allowed_domains: Vec::new(),
        }
    }
}

/// The API's HTTPS listener (`apiServer.https.*`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpsListener {
    /// Whether it listens.
    pub enabled: bool,
    /// Port.
    pub port: u16,
    /// Interface.
    pub interface: String,
    /// Certificate (PEM); the dp-server's when empty.
    pub tls_cert_file: String,
    /// Its key (PEM).
    pub tls_key_file: String,
}

impl Default for HttpsListener {
    fn default() -> Self {
        HttpsListener {
            enabled: true,
            port: 5682,
            interface: "0.0.0.0".into(),
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
        }
    }
}

/// A plain HTTP listener.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpListener {
    /// Port.
    pub port: u16,
    /// Interface.
    pub interface: String,
}

impl Default for HttpListener {
    fn default() -> Self {
        HttpListener {
            port: 0,
            interface: "0.0.0.0".into(),
        }
    }
}

/// API authentication (`apiServer.authn.*`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ApiAuthn {
    /// How callers authenticate (`tokens`, the only kind here).
    #[serde(rename = "type")]
    pub authn_type: ApiAuthnType,
    /// Whether requests from loopback are admin.
    pub localhost_is_admin: bool,
    /// User tokens.
    pub tokens: ApiTokens,
}

impl Default for ApiAuthn {
    fn default() -> Self {
        ApiAuthn {
            authn_type: ApiAuthnType::Tokens,
            localhost_is_admin: true,
            tokens: ApiTokens::default(),
        }
    }
}

/// API authentication kinds.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum ApiAuthnType {
    /// User tokens (JWT) in `Authorization: Bearer`.
    #[default]
    Tokens,
}

/// `apiServer.authn.tokens.*`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ApiTokens {
    /// Whether the leader creates the GlobalSecret `admin-user-token`.
    pub bootstrap_admin_token: bool,
    /// Whether `POST /tokens/user` issues tokens.
    pub enable_issuer: bool,
}

impl Default for ApiTokens {
    fn default() -> Self {
        ApiTokens {
            bootstrap_admin_token: true,
            enable_issuer: true,
        }
    }
}

/// dp-server settings (`dpServer.*`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct DpServerConfig {
    /// Port.
    pub port: u16,
    /// Proxy authentication.
    pub authn: DpServerAuthn,
}

impl Default for DpServerConfig {
    fn default() -> Self {
        DpServerConfig {
            port: 5678,
            authn: DpServerAuthn::default(),
        }
    }
}

/// dp-server authentication (`dpServer.authn.*`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct DpServerAuthn {
    /// How proxies authenticate.
    pub dp_proxy: DpProxyAuthn,
}

/// Proxy authentication (`dpServer.authn.dpProxy.*`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct DpProxyAuthn {
    /// `dpToken`, `serviceAccountToken` or `none`; unset means Kuma's
    /// default for the environment (see [`Config::dp_proxy_authn`]).
    #[serde(rename = "type")]
    pub authn_type: Option<DpProxyAuthnType>,
}

/// Proxy authentication types.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub enum DpProxyAuthnType {
    /// Dataplane tokens.
    #[default]
    #[serde(rename = "dpToken")]
    DpToken,
    /// The Pod's projected ServiceAccount token, checked with a
    /// TokenReview (Kubernetes).
    #[serde(rename = "serviceAccountToken")]
    ServiceAccountToken,
    /// None.
    #[serde(rename = "none")]
    None,
}

/// Diagnostics (`diagnostics.*`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct DiagnosticsConfig {
    /// Port.
    pub server_port: u16,
}

impl Default for DiagnosticsConfig {
    fn default() -> Self {
        DiagnosticsConfig { server_port: 5680 }
    }
}

/// General settings (`general.*`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct GeneralConfig {
    /// The dp-server certificate (PEM); generated when empty.
    pub tls_cert_file: String,
    /// Its key.
    pub tls_key_file: String,
    /// Where generated files go (`~/.kuma` by default).
    pub work_dir: String,
}

/// Defaults (`defaults.*`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct DefaultsConfig {
    /// Do not create the `default` mesh.
    pub skip_mesh_creation: bool,
    /// Do not create the default policies of new meshes.
    pub skip_default_policies: bool,
}

/// xDS settings (`xdsServer.*`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct XdsServerConfig {
    /// How long a self-registered Dataplane outlives its last xDS stream.
    #[serde(with = "duration_text")]
    pub dataplane_deregistration_delay: Duration,
    /// How long a cluster removed from a proxy's configuration stays there
    /// so that connections still draining on the old listener can reach
    /// it; longer than kuma-dp's drain time. Not in Kuma (it removes
    /// clusters at once, which fails requests in flight).
    #[serde(with = "duration_text")]
    pub retired_cluster_grace_period: Duration,
    /// How often changed proxy statuses are written to the store
    /// (connects and disconnects are written at once).
    #[serde(with = "duration_text")]
    pub dataplane_status_flush_interval: Duration,
    /// How many xDS streams get their first configuration at once; others
    /// wait, unanswered, in arrival order, so that all proxies reconnecting at
    /// once are admitted at the rate their configurations are delivered.
    /// Not in Kuma (it admits every stream at once).
    pub max_configuring_streams: usize,
}

impl Default for XdsServerConfig {
    fn default() -> Self {
        XdsServerConfig {
            dataplane_deregistration_delay: Duration::from_secs(10),
            retired_cluster_grace_period: kuma_xds::retire::DEFAULT_GRACE,
            dataplane_status_flush_interval: Duration::from_secs(10),
            max_configuring_streams: kuma_xds::server::DEFAULT_MAX_CONFIGURING,
        }
    }
}

mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

type Setter = fn(&mut Config, &str) -> Result<(), String>;

fn parse<T: std::str::FromStr>(v: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    v.parse::<T>().map_err(|e| e.to_string())
}

/// A comma-separated list.
fn list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn positive_duration(v: &str) -> Result<Duration, String> {
    match humantime::parse_duration(v).map_err(|e| e.to_string())? {
        d if d.is_zero() => Err("must be longer than zero".into()),
        d => Ok(d),
    }
}

fn parse_bool(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err("must be true or false".into()),
    }
}

fn from_yaml<T: serde::de::DeserializeOwned>(v: &str) -> Result<T, String> {
    serde_yaml::from_str(v).map_err(|e| e.to_string())
}

/// The setter of one injected container quantity
/// (`runtime.kubernetes.injector.<container>.resources.<kind>.<quantity>`).
macro_rules! quantity {
    ($name:literal, $container:ident, $kind:ident, $quantity:ident) => {
        ($name, |c, v| {
            c.runtime.kubernetes.injector.$container.resources.$kind.$quantity = Some(v.to_string());
            Ok(())
        })
    };
}

/// Every `KUMA_*` variable understood, with Kuma's names.
const ENV: &[(&str, Setter)] = &[
    quantity!(
        "KUMA_INJECTOR_SIDECAR_CONTAINER_RESOURCES_REQUESTS_CPU",
        sidecar_container,
        requests,
        cpu
    ),
    quantity!(
        "KUMA_INJECTOR_SIDECAR_CONTAINER_RESOURCES_REQUESTS_MEMORY",
        sidecar_container,
        requests,
        memory
    ),
    quantity!(
        "KUMA_INJECTOR_SIDECAR_CONTAINER_RESOURCES_LIMITS_CPU",
        sidecar_container,
        limits,
        cpu
    ),
    quantity!(
        "KUMA_INJECTOR_SIDECAR_CONTAINER_RESOURCES_LIMITS_MEMORY",
        sidecar_container,
        limits,
        memory
    ),
    quantity!(
        "KUMA_INJECTOR_INIT_CONTAINER_RESOURCES_REQUESTS_CPU",
        init_container,
        requests,
        cpu
    ),
    quantity!(
        "KUMA_INJECTOR_INIT_CONTAINER_RESOURCES_REQUESTS_MEMORY",
        init_container,
        requests,
        memory
    ),
    quantity!(
        "KUMA_INJECTOR_INIT_CONTAINER_RESOURCES_LIMITS_CPU",
        init_container,
        limits,
        cpu
    ),
    quantity!(
        "KUMA_INJECTOR_INIT_CONTAINER_RESOURCES_LIMITS_MEMORY",
        init_container,
        limits,
        memory
    ),
    ("KUMA_ENVIRONMENT", |c, v| {
        let _: () = c.environment = from_yaml(v)?;
        Ok(())
    }),
    ("KUMA_STORE_TYPE", |c, v| {
        let _: () = c.store.store_type = from_yaml(v)?;
        Ok(())
    }),
    ("KUMA_RUNTIME_KUBERNETES_ADMISSION_SERVER_PORT", |c, v| {
        let _: () = c.runtime.kubernetes.admission_server.port = parse(v)?;
        Ok(())
    }),
    ("KUMA_RUNTIME_KUBERNETES_ADMISSION_SERVER_ADDRESS", |c, v| {
        let _: () = c.runtime.kubernetes.admission_server.address = v.into();
        Ok(())
    }),
    ("KUMA_RUNTIME_KUBERNETES_ADMISSION_SERVER_CERT_DIR", |c, v| {
        let _: () = c.runtime.kubernetes.admission_server.cert_dir = v.into();
        Ok(())
    }),
    ("KUMA_RUNTIME_KUBERNETES_ALLOWED_USERS", |c, v| {
        c.runtime.kubernetes.allowed_users = list(v);
        Ok(())
    }),
    ("KUMA_RUNTIME_KUBERNETES_CONTROL_PLANE_SERVICE_NAME", |c, v| {
        let _: () = c.runtime.kubernetes.control_plane_service_name = v.into();
        Ok(())
    }),
    ("KUMA_RUNTIME_KUBERNETES_INJECTOR_CA_CERT_FILE", |c, v| {
        let _: () = c.runtime.kubernetes.injector.ca_cert_file = v.into();
        Ok(())
    }),
    (
        "KUMA_RUNTIME_KUBERNETES_INJECTOR_SIDECAR_CONTAINER_IMAGE",
        |c, v| {
            let _: () = c.runtime.kubernetes.injector.sidecar_image = v.into();
            Ok(())
        },
    ),
    ("KUMA_INJECTOR_INIT_CONTAINER_IMAGE", |c, v| {
        let _: () = c.runtime.kubernetes.injector.init_image = v.into();
        Ok(())
    }),
    ("KUMA_EXPERIMENTAL_SIDECAR_CONTAINERS", |c, v| {
        let _: () = c.runtime.kubernetes.injector.sidecar_containers = parse_bool(v)?;
        Ok(())
    }),
    ("KUMA_RUNTIME_KUBERNETES_INJECTOR_BUILTIN_DNS_ENABLED", |c, v| {
        let _: () = c.runtime.kubernetes.injector.builtin_dns_enabled = parse_bool(v)?;
        Ok(())
    }),
    ("KUMA_RUNTIME_KUBERNETES_VIRTUAL_PROBES_ENABLED", |c, v| {
        let _: () = c.runtime.kubernetes.injector.virtual_probes_enabled = parse_bool(v)?;
        Ok(())
    }),
    ("KUMA_RUNTIME_KUBERNETES_VIRTUAL_PROBES_PORT", |c, v| {
        let _: () = c.runtime.kubernetes.injector.virtual_probes_port = parse(v)?;
        Ok(())
    }),
    ("KUMA_RUNTIME_KUBERNETES_APPLICATION_PROBE_PROXY_PORT", |c, v| {
        let _: () = c.runtime.kubernetes.injector.application_probe_proxy_port = parse(v)?;
        Ok(())
    }),
    (
        "KUMA_RUNTIME_KUBERNETES_SIDECAR_TRAFFIC_EXCLUDE_INBOUND_PORTS",
        |c, v| {
            c.runtime.kubernetes.injector.exclude_inbound_ports =
                list(v).iter().map(|p| parse(p)).collect::<Result<_, _>>()?;
            Ok(())
        },
    ),
    (
        "KUMA_RUNTIME_KUBERNETES_SIDECAR_TRAFFIC_EXCLUDE_OUTBOUND_PORTS",
        |c, v| {
            c.runtime.kubernetes.injector.exclude_outbound_ports =
                list(v).iter().map(|p| parse(p)).collect::<Result<_, _>>()?;
            Ok(())
        },
    ),
    (
        "KUMA_RUNTIME_KUBERNETES_SIDECAR_TRAFFIC_EXCLUDE_INBOUND_IPS",
        |c, v| {
            c.runtime.kubernetes.injector.exclude_inbound_ips = list(v);
            Ok(())
        },
    ),
    (
        "KUMA_RUNTIME_KUBERNETES_SIDECAR_TRAFFIC_EXCLUDE_OUTBOUND_IPS",
        |c, v| {
            c.runtime.kubernetes.injector.exclude_outbound_ips = list(v);
            Ok(())
        },
    ),
    ("KUMA_STORE_KUBERNETES_SYSTEM_NAMESPACE", |c, v| {
        let _: () = c.store.kubernetes.system_namespace = v.into();
        Ok(())
    }),
    ("KUMA_STORE_POSTGRES_HOST", |c, v| {
        let _: () = c.store.postgres.host = v.into();
        Ok(())
    }),
    ("KUMA_STORE_POSTGRES_PORT", |c, v| {
        let _: () = c.store.postgres.port = parse(v)?;
        Ok(())
    }),
    ("KUMA_STORE_POSTGRES_USER", |c, v| {
        let _: () = c.store.postgres.user = v.into();
        Ok(())
    }),
    ("KUMA_STORE_POSTGRES_PASSWORD", |c, v| {
        let _: () = c.store.postgres.password = v.into();
        Ok(())
    }),
    ("KUMA_STORE_POSTGRES_DB_NAME", |c, v| {
        let _: () = c.store.postgres.db_name = v.into();
        Ok(())
    }),
    ("KUMA_STORE_POSTGRES_TLS_MODE", |c, v| {
        let _: () = c.store.postgres.tls.mode = from_yaml(v)?;
        Ok(())
    }),
    ("KUMA_STORE_POSTGRES_TLS_CERT_PATH", |c, v| {
        let _: () = c.store.postgres.tls.cert_path = v.into();
        Ok(())
    }),
    ("KUMA_STORE_POSTGRES_TLS_KEY_PATH", |c, v| {
        let _: () = c.store.postgres.tls.key_path = v.into();
        Ok(())
    }),
    ("KUMA_STORE_POSTGRES_TLS_CA_PATH", |c, v| {
        let _: () = c.store.postgres.tls.ca_path = v.into();
        Ok(())
    }),
    ("KUMA_STORE_POSTGRES_TLS_DISABLE_SSLSNI", |c, v| {
        let _: () = c.store.postgres.tls.disable_ssl_sni = parse_bool(v)?;
        Ok(())
    }),
    ("KUMA_STORE_POSTGRES_CONNECTION_TIMEOUT", |c, v| {
        let _: () = c.store.postgres.connection_timeout = parse(v)?;
        Ok(())
    }),
    ("KUMA_API_SERVER_HTTP_PORT", |c, v| {
        let _: () = c.api_server.http.port = parse(v)?;
        Ok(())
    }),
    ("KUMA_API_SERVER_HTTP_INTERFACE", |c, v| {
        let _: () = c.api_server.http.interface = v.into();
        Ok(())
    }),
    ("KUMA_API_SERVER_HTTPS_ENABLED", |c, v| {
        let _: () = c.api_server.https.enabled = parse_bool(v)?;
        Ok(())
    }),
    ("KUMA_API_SERVER_HTTPS_PORT", |c, v| {
        let _: () = c.api_server.https.port = parse(v)?;
        Ok(())
    }),
    ("KUMA_API_SERVER_HTTPS_INTERFACE", |c, v| {
        let _: () = c.api_server.https.interface = v.into();
        Ok(())
    }),
    ("KUMA_API_SERVER_HTTPS_TLS_CERT_FILE", |c, v| {
        let _: () = c.api_server.https.tls_cert_file = v.into();
        Ok(())
    }),
    ("KUMA_API_SERVER_HTTPS_TLS_KEY_FILE", |c, v| {
        let _: () = c.api_server.https.tls_key_file = v.into();
        Ok(())
    }),
    ("KUMA_API_SERVER_AUTHN_LOCALHOST_IS_ADMIN", |c, v| {
        let _: () = c.api_server.authn.localhost_is_admin = parse_bool(v)?;
        Ok(())
    }),
    ("KUMA_API_SERVER_AUTHN_TYPE", |c, v| {
        let _: () = c.api_server.authn.authn_type = from_yaml(v)?;
        Ok(())
    }),
    ("KUMA_API_SERVER_AUTHN_TOKENS_BOOTSTRAP_ADMIN_TOKEN", |c, v| {
        let _: () = c.api_server.authn.tokens.bootstrap_admin_token = parse_bool(v)?;
        Ok(())
    }),
    ("KUMA_API_SERVER_AUTHN_TOKENS_ENABLE_ISSUER", |c, v| {
        let _: () = c.api_server.authn.tokens.enable_issuer = parse_bool(v)?;
        Ok(())
    }),
    ("KUMA_ACCESS_STATIC_ADMIN_RESOURCES_USERS", |c, v| {
        c.access.static_lists.admin_resources.users = list(v);
        Ok(())
    }),
    ("KUMA_ACCESS_STATIC_ADMIN_RESOURCES_GROUPS", |c, v| {
        c.access.static_lists.admin_resources.groups = list(v);
        Ok(())
    }),
    ("KUMA_ACCESS_STATIC_GENERATE_DP_TOKEN_USERS", |c, v| {
        c.access.static_lists.generate_dp_token.users = list(v);
        Ok(())
    }),
    ("KUMA_ACCESS_STATIC_GENERATE_DP_TOKEN_GROUPS", |c, v| {
        c.access.static_lists.generate_dp_token.groups = list(v);
        Ok(())
    }),
    ("KUMA_ACCESS_STATIC_GENERATE_USER_TOKEN_USERS", |c, v| {
        c.access.static_lists.generate_user_token.users = list(v);
        Ok(())
    }),
    ("KUMA_ACCESS_STATIC_GENERATE_USER_TOKEN_GROUPS", |c, v| {
        c.access.static_lists.generate_user_token.groups = list(v);
        Ok(())
    }),
    ("KUMA_ACCESS_STATIC_GENERATE_ZONE_TOKEN_USERS", |c, v| {
        c.access.static_lists.generate_zone_token.users = list(v);
        Ok(())
    }),
    ("KUMA_ACCESS_STATIC_GENERATE_ZONE_TOKEN_GROUPS", |c, v| {
        c.access.static_lists.generate_zone_token.groups = list(v);
        Ok(())
    }),
    ("KUMA_ACCESS_STATIC_GET_CONFIG_DUMP_USERS", |c, v| {
        c.access.static_lists.view_config_dump.users = list(v);
        Ok(())
    }),
    ("KUMA_ACCESS_STATIC_GET_CONFIG_DUMP_GROUPS", |c, v| {
        c.access.static_lists.view_config_dump.groups = list(v);
        Ok(())
    }),
    ("KUMA_ACCESS_STATIC_VIEW_STATS_USERS", |c, v| {
        c.access.static_lists.view_stats.users = list(v);
        Ok(())
    }),
    ("KUMA_ACCESS_STATIC_VIEW_STATS_GROUPS", |c, v| {
        c.access.static_lists.view_stats.groups = list(v);
        Ok(())
    }),
    ("KUMA_ACCESS_STATIC_VIEW_CLUSTERS_USERS", |c, v| {
        c.access.static_lists.view_clusters.users = list(v);
        Ok(())
    }),
    ("KUMA_ACCESS_STATIC_VIEW_CLUSTERS_GROUPS", |c, v| {
        c.access.static_lists.view_clusters.groups = list(v);
        Ok(())
    }),
    ("KUMA_ACCESS_STATIC_CONTROL_PLANE_METADATA_USERS", |c, v| {
        c.access.static_lists.control_plane_metadata.users = list(v);
        Ok(())
    }),
    ("KUMA_ACCESS_STATIC_CONTROL_PLANE_METADATA_GROUPS", |c, v| {
        c.access.static_lists.control_plane_metadata.groups = list(v);
        Ok(())
    }),
    ("KUMA_API_SERVER_CORS_ALLOWED_DOMAINS", |c, v| {
        c.api_server.cors_allowed_domains = v
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        Ok(())
    }),
    ("KUMA_DP_SERVER_PORT", |c, v| {
        let _: () = c.dp_server.port = parse(v)?;
        Ok(())
    }),
    ("KUMA_DP_SERVER_AUTHN_DP_PROXY_TYPE", |c, v| {
        let _: () = c.dp_server.authn.dp_proxy.authn_type = Some(from_yaml(v)?);
        Ok(())
    }),
    ("KUMA_DIAGNOSTICS_SERVER_PORT", |c, v| {
        let _: () = c.diagnostics.server_port = parse(v)?;
        Ok(())
    }),
    ("KUMA_GENERAL_TLS_CERT_FILE", |c, v| {
        let _: () = c.general.tls_cert_file = v.into();
        Ok(())
    }),
    ("KUMA_GENERAL_TLS_KEY_FILE", |c, v| {
        let _: () = c.general.tls_key_file = v.into();
        Ok(())
    }),
    ("KUMA_GENERAL_WORK_DIR", |c, v| {
        let _: () = c.general.work_dir = v.into();
        Ok(())
    }),
    ("KUMA_DEFAULTS_SKIP_MESH_CREATION", |c, v| {
        let _: () = c.defaults.skip_mesh_creation = parse_bool(v)?;
        Ok(())
    }),
    ("KUMA_DEFAULTS_SKIP_DEFAULT_POLICIES", |c, v| {
        let _: () = c.defaults.skip_default_policies = parse_bool(v)?;
        Ok(())
    }),
    ("KUMA_XDS_DATAPLANE_DEREGISTRATION_DELAY", |c, v| {
        c.xds_server.dataplane_deregistration_delay =
            humantime::parse_duration(v).map_err(|e| e.to_string())?;
        Ok(())
    }),
    ("KUMA_XDS_SERVER_RETIRED_CLUSTER_GRACE_PERIOD", |c, v| {
        c.xds_server.retired_cluster_grace_period =
            humantime::parse_duration(v).map_err(|e| e.to_string())?;
        Ok(())
    }),
    ("KUMA_XDS_SERVER_MAX_CONFIGURING_STREAMS", |c, v| {
        c.xds_server.max_configuring_streams = match parse(v)? {
            0 => return Err("must be at least 1".into()),
            n => n,
        };
        Ok(())
    }),
    ("KUMA_XDS_SERVER_DATAPLANE_STATUS_FLUSH_INTERVAL", |c, v| {
        c.xds_server.dataplane_status_flush_interval = positive_duration(v)?;
        Ok(())
    }),
    ("KUMA_METRICS_DATAPLANE_IDLE_TIMEOUT", |c, v| {
        c.metrics.dataplane.idle_timeout = positive_duration(v)?;
        Ok(())
    }),
    ("KUMA_METRICS_DATAPLANE_SUBSCRIPTION_LIMIT", |c, v| {
        let _: () = c.metrics.dataplane.subscription_limit = parse(v)?;
        Ok(())
    }),
    ("KUMA_RUNTIME_UNIVERSAL_DATAPLANE_CLEANUP_AGE", |c, v| {
        c.runtime.universal.dataplane_cleanup_age = positive_duration(v)?;
        Ok(())
    }),
];

/// What [`Config::load`] set aside.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SetAside {
    /// `KUMA_*` variables nobody knows (likely typos): warned about.
    pub unknown: Vec<String>,
    /// Kuma's settings this control plane does not use (file paths and
    /// variables): accepted, reported as having no effect.
    pub without_effect: Vec<String>,
}

impl Config {
    /// Loads the file (if any), then applies `vars` (the environment).
    /// Returns the configuration and what it set aside.
    pub fn load(
        file: Option<&Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(Config, SetAside), ConfigError> {
        let mut set_aside = SetAside::default();
        let mut config = match file {
            Some(path) => {
                let invalid = |key: String, message: String| ConfigError::Invalid {
                    path: path.to_path_buf(),
                    key,
                    message,
                };
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                let mut value: serde_yaml::Value =
                    serde_yaml::from_str(&text).map_err(|e| invalid(".".into(), e.to_string()))?;
                if value.is_null() {
                    value = serde_yaml::Value::Mapping(Default::default());
                }
                let ours = serde_yaml::to_value(Config::default())
                    .map_err(|e| invalid(".".into(), e.to_string()))?;
                set_aside.without_effect = crate::kuma_settings::strip_kuma_only(&mut value, &ours);
                serde_path_to_error::deserialize::<_, Config>(value)
                    .map_err(|e| invalid(e.path().to_string(), e.inner().to_string()))?
            }
            None => Config::default(),
        };
        let mut unknown = Vec::new();
        for (name, value) in vars {
            if !name.starts_with("KUMA_") {
                continue;
            }
            match ENV.iter().find(|(n, _)| *n == name) {
                Some((_, set)) => {
                    set(&mut config, &value).map_err(|message| ConfigError::Env { name, value, message })?
                }
                None if crate::kuma_settings::is_kuma_variable(&name) => set_aside.without_effect.push(name),
                None => unknown.push(name),
            }
        }
        unknown.sort();
        set_aside.unknown = unknown;
        set_aside.without_effect.sort();
        Ok((config, set_aside))
    }

    /// How proxies authenticate: as configured, else Kuma's default for the
    /// environment (dataplane tokens on Universal, the Pod's ServiceAccount
    /// token on Kubernetes).
    pub fn dp_proxy_authn(&self) -> DpProxyAuthnType {
        self.dp_server
            .authn
            .dp_proxy
            .authn_type
            .unwrap_or(match self.environment {
                Environment::Universal => DpProxyAuthnType::DpToken,
                Environment::Kubernetes => DpProxyAuthnType::ServiceAccountToken,
            })
    }

    /// The store: as configured; the Kubernetes environment keeps its
    /// resources in the Kubernetes API (an explicit other choice is refused
    /// by `crate::mode`).
    pub fn effective_store_type(&self) -> StoreType {
        match (self.environment, self.store.store_type) {
            (Environment::Kubernetes, StoreType::Memory) => StoreType::Kubernetes,
            (_, t) => t,
        }
    }

    /// The working directory, created if needed.
    pub fn work_dir(&self) -> PathBuf {
        if !self.general.work_dir.is_empty() {
            return PathBuf::from(&self.general.work_dir);
        }
        std::env::var_os("HOME")
            .map(|h| PathBuf::from(h).join(".kuma"))
            .unwrap_or_else(|| PathBuf::from(".kuma"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> tempfile_path::TempFile {
        tempfile_path::TempFile::new(text)
    }

    /// A throwaway file for config tests.
    mod tempfile_path {
        pub struct TempFile(pub std::path::PathBuf);
        impl TempFile {
            pub fn new(text: &str) -> Self {
                let p = std::env::temp_dir().join(format!("kuma-cp-config-{}.yaml", uuid::Uuid::new_v4()));
                std::fs::write(&p, text).unwrap();
                TempFile(p)
            }
        }
        impl Drop for TempFile {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    #[test]
    fn defaults_are_kumas() {
        let (c, unknown) = Config::load(None, Vec::new()).unwrap();
        assert_eq!(c.store.store_type, StoreType::Memory);
        assert_eq!(
            (
                c.api_server.http.port,
                c.dp_server.port,
                c.diagnostics.server_port
            ),
            (5681, 5678, 5680)
        );
        assert_eq!(c.dp_proxy_authn(), DpProxyAuthnType::DpToken);
        assert_eq!(unknown, SetAside::default());
        let (k8s, _) = Config::load(None, vec![("KUMA_ENVIRONMENT".into(), "kubernetes".into())]).unwrap();
        assert_eq!(k8s.dp_proxy_authn(), DpProxyAuthnType::ServiceAccountToken);
        assert_eq!(k8s.effective_store_type(), StoreType::Kubernetes);
    }

    #[test]
    fn injected_containers_take_their_resources_from_the_settings() {
        let f = write(
            "runtime:\n  kubernetes:\n    injector:\n      sidecarContainer:\n        drainTime: 30s\n        resources:\n          limits:\n            cpu: \"2\"\n            memory: 1Gi\n",
        );
        let env = vec![(
            "KUMA_INJECTOR_INIT_CONTAINER_RESOURCES_REQUESTS_MEMORY".to_string(),
            "32Mi".to_string(),
        )];
        let (c, set_aside) = Config::load(Some(&f.0), env).unwrap();
        assert_eq!(
            set_aside.without_effect,
            ["runtime.kubernetes.injector.sidecarContainer.drainTime"]
        );
        let injector = &c.runtime.kubernetes.injector;
        let defaults = kuma_webhook::injector::InjectorConfig::default();
        let sidecar = injector
            .sidecar_container
            .to_injector("s", &defaults.sidecar_resources)
            .unwrap();
        assert_eq!(
            (sidecar.limits_cpu.as_deref(), sidecar.limits_memory.as_deref()),
            (Some("2"), Some("1Gi"))
        );
        assert_eq!(
            sidecar.requests_cpu.as_deref(),
            Some("50m"),
            "Kuma's default stays"
        );
        let init = injector
            .init_container
            .to_injector("i", &defaults.init_resources)
            .unwrap();
        assert_eq!(init.requests_memory.as_deref(), Some("32Mi"));

        let mut unlimited = injector.sidecar_container.clone();
        unlimited.resources.limits.memory = Some(String::new());
        let unlimited = unlimited.to_injector("s", &defaults.sidecar_resources).unwrap();
        assert_eq!(unlimited.limits_memory, None, "an empty quantity is not written");

        let mut bad = injector.sidecar_container.clone();
        bad.resources.requests.memory = Some("lots".into());
        assert_eq!(
            bad.to_injector(
                "runtime.kubernetes.injector.sidecarContainer",
                &defaults.sidecar_resources
            )
            .unwrap_err(),
            "runtime.kubernetes.injector.sidecarContainer.resources.requests.memory: \"lots\" is not a Kubernetes quantity (e.g. 50m, 1, 64Mi, 512M)"
        );
        for good in ["50m", "1", "0.5", "64Mi", "512M", "1e3", "2E", "+1.5Gi"] {
            assert!(is_quantity(good), "{good}");
        }
        for bad in ["", "m", "1.2.3", "5 Mi", "1mi", "1e", "abc"] {
            assert!(!is_quantity(bad), "{bad}");
        }
    }

    #[test]
    fn environment_overrides_the_file() {
        let f = write(
            "store:\n  type: postgres\n  postgres:\n    host: db\n    port: 5432\napiServer:\n  http:\n    port: 6681\n",
        );
        let env = vec![
            ("KUMA_STORE_POSTGRES_PORT".to_string(), "6432".to_string()),
            (
                "KUMA_DP_SERVER_AUTHN_DP_PROXY_TYPE".to_string(),
                "none".to_string(),
            ),
            ("KUMA_NOT_A_SETTING".to_string(), "x".to_string()),
            ("PATH".to_string(), "/bin".to_string()),
            (
                "KUMA_ACCESS_STATIC_ADMIN_RESOURCES_GROUPS".to_string(),
                "ops, security".to_string(),
            ),
        ];
        let (c, unknown) = Config::load(Some(&f.0), env).unwrap();
        assert_eq!(c.store.store_type, StoreType::Postgres);
        assert_eq!(
            (c.store.postgres.host.as_str(), c.store.postgres.port),
            ("db", 6432)
        );
        assert_eq!(c.api_server.http.port, 6681);
        assert_eq!(c.dp_proxy_authn(), DpProxyAuthnType::None);
        assert_eq!(unknown.unknown, vec!["KUMA_NOT_A_SETTING".to_string()]);
        assert_eq!(c.access.static_lists.admin_resources.groups, ["ops", "security"]);
        assert_eq!(
            c.access.static_lists.admin_resources.users,
            ["mesh-system:admin"],
            "the other list keeps Kuma's default"
        );
    }

    #[test]
    fn kumas_own_settings_move_over_unchanged() {
        let f = write(
            "store:\n  type: memory\ninterCp:\n  server:\n    port: 5683\nbootstrapServer:\n  params:\n    envoyAdminUnixSocket: true\napiServer:\n  http:\n    port: 6681\n  corsAllowedDomains: [\".*\"]\n",
        );
        let env = vec![
            ("KUMA_INTER_CP_SERVER_PORT".to_string(), "5683".to_string()),
            (
                "KUMA_MONITORING_ASSIGNMENT_SERVER_PORT".to_string(),
                "5676".to_string(),
            ),
            (
                "KUMA_BOOTSTRAP_SERVER_PARAMS_ENVOY_ADMIN_UNIX_SOCKET".to_string(),
                "true".to_string(),
            ),
        ];
        let (c, set_aside) = Config::load(Some(&f.0), env).unwrap();
        assert_eq!(c.api_server.http.port, 6681);
        assert!(set_aside.unknown.is_empty(), "{set_aside:?}");
        assert_eq!(
            set_aside.without_effect,
            [
                "KUMA_BOOTSTRAP_SERVER_PARAMS_ENVOY_ADMIN_UNIX_SOCKET",
                "KUMA_INTER_CP_SERVER_PORT",
                "KUMA_MONITORING_ASSIGNMENT_SERVER_PORT",
                "bootstrapServer",
                "interCp",
            ]
        );
    }

    /// `docs/kuma-cp-settings.md`: each of Kuma's settings, used here or
    /// without effect. `UPDATE_GOLDEN=1` rewrites it.
    #[test]
    fn the_settings_document_is_current() {
        let ours = serde_yaml::to_value(Config::default()).unwrap();
        let used_path = |path: &str| {
            let mut v = &ours;
            for part in path.split('.') {
                match v.get(part) {
                    Some(next) => v = next,
                    // A free-form section of ours holds whatever is below.
                    None => return v.as_mapping().is_some_and(|m| m.is_empty()) && !std::ptr::eq(v, &ours),
                }
            }
            true
        };
        let mut doc = String::from(
            "# Kuma's kuma-cp settings here\n\nEvery setting of Kuma 2.14's `kuma-cp.defaults.yaml` is accepted, in the\nconfiguration file and as its environment variable. **used** settings\nwork as in Kuma; the others are accepted, logged once at startup, and have\nno effect. Generated by `cargo test -p kuma-operator` (`UPDATE_GOLDEN=1`).\n\n| Setting | Environment variable | Here |\n|---|---|---|\n",
        );
        let mut used = 0;
        for setting in crate::kuma_settings::all() {
            let by_env = setting.env.iter().any(|e| ENV.iter().any(|(n, _)| n == e));
            let here = if used_path(setting.path) || by_env {
                used += 1;
                "used"
            } else {
                "no effect"
            };
            doc.push_str(&format!(
                "| `{}` | {} | {here} |\n",
                setting.path,
                setting
                    .env
                    .iter()
                    .map(|e| format!("`{e}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        doc.push_str(&format!(
            "\n{used} of {} settings are used.\n",
            crate::kuma_settings::all().len()
        ));
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/kuma-cp-settings.md");
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(&file, &doc).unwrap();
        }
        let committed = std::fs::read_to_string(&file).unwrap_or_default();
        assert!(
            committed == doc,
            "docs/kuma-cp-settings.md is stale: run UPDATE_GOLDEN=1 cargo test -p kuma-operator"
        );
    }

    #[test]
    fn streams_configured_at_once_are_set_by_file_or_variable_and_never_zero() {
        assert_eq!(
            Config::default().xds_server.max_configuring_streams,
            kuma_xds::server::DEFAULT_MAX_CONFIGURING
        );
        let f = write("xdsServer:\n  maxConfiguringStreams: 8\n");
        let (c, _) = Config::load(Some(&f.0), Vec::new()).unwrap();
        assert_eq!(c.xds_server.max_configuring_streams, 8);
        let var = |v: &str| {
            vec![(
                "KUMA_XDS_SERVER_MAX_CONFIGURING_STREAMS".to_string(),
                v.to_string(),
            )]
        };
        let (c, _) = Config::load(Some(&f.0), var("256")).unwrap();
        assert_eq!(c.xds_server.max_configuring_streams, 256);
        let err = Config::load(None, var("0")).unwrap_err().to_string();
        assert!(
            err.contains("KUMA_XDS_SERVER_MAX_CONFIGURING_STREAMS") && err.contains("at least 1"),
            "{err}"
        );
    }

    #[test]
    fn bad_keys_and_values_are_named() {
        let f = write("store:\n  postgres:\n    hots: db\n");
        let err = Config::load(Some(&f.0), Vec::new()).unwrap_err().to_string();
        assert!(err.contains("store.postgres") && err.contains("hots"), "{err}");
        let err = Config::load(None, vec![("KUMA_DP_SERVER_PORT".into(), "http".into())])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("environment variable KUMA_DP_SERVER_PORT=\"http\""),
            "{err}"
        );
        let err = Config::load(None, vec![("KUMA_STORE_TYPE".into(), "etcd".into())])
            .unwrap_err()
            .to_string();
        assert!(err.contains("KUMA_STORE_TYPE"), "{err}");
    }
}
