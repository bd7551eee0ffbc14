//! Mesh: an isolated set of dataplanes with its own mTLS, networking and
//! observability defaults.

use std::collections::{BTreeMap, BTreeSet};

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Duration, TagValues, validate_tags};
use crate::validation::{FieldPath, Violations, check_duration};

/// Mesh spec; in Universal its fields sit at the top level beside `name`.
#[serde_with::skip_serializing_none]
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kuma.io",
    version = "v1alpha1",
    kind = "Mesh",
    plural = "meshes",
    shortname = "m",
    category = "kuma",
    printcolumn = r#"{"name":"mTLS Backend","type":"string","jsonPath":".spec.mtls.enabledBackend"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshSpec {
    /// Mutual TLS between the mesh's proxies.
    pub mtls: Option<Mtls>,
    /// Legacy tracing backends.
    pub tracing: Option<Tracing>,
    /// Legacy logging backends.
    pub logging: Option<Logging>,
    /// Legacy metrics backends.
    pub metrics: Option<Metrics>,
    /// Networking defaults.
    pub networking: Option<Networking>,
    /// Routing defaults.
    pub routing: Option<Routing>,
    /// Tags dataplanes must or must not have to join.
    pub constraints: Option<Constraints>,
    /// Default policies not to create (`*` for all).
    pub skip_creating_initial_policies: Option<Vec<String>>,
    /// How MeshService resources are used.
    pub mesh_services: Option<MeshServices>,
}

/// Mutual TLS.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Mtls {
    /// The backend that signs certificates; mTLS is off when empty.
    pub enabled_backend: Option<String>,
    /// Certificate authorities; all are trusted, only the enabled one signs.
    pub backends: Option<Vec<CertificateAuthorityBackend>>,
    /// Skip checking the backends' configuration.
    pub skip_validation: Option<bool>,
}

/// Whether plaintext is accepted beside mTLS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[allow(clippy::upper_case_acronyms)]
pub enum MtlsMode {
    /// mTLS only (default).
    #[default]
    STRICT,
    /// mTLS and plaintext.
    PERMISSIVE,
}

/// A certificate authority.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CertificateAuthorityBackend {
    /// The backend's name.
    pub name: String,
    /// `builtin` (the CP generates the CA) or `provided` (you give it).
    #[serde(rename = "type")]
    pub backend_type: String,
    /// STRICT or PERMISSIVE.
    pub mode: Option<MtlsMode>,
    /// Dataplane certificate settings.
    pub dp_cert: Option<DpCert>,
    /// Root chain settings.
    pub root_chain: Option<RootChain>,
    /// Backend-specific configuration.
    #[serde(default)]
    #[schemars(schema_with = "crate::common::any_object_schema")]
    pub conf: Option<serde_json::Value>,
}

/// Dataplane certificate settings.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DpCert {
    /// Rotation.
    pub rotation: Option<Rotation>,
    /// Time to wait for a certificate.
    pub request_timeout: Option<Duration>,
}

/// Certificate rotation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rotation {
    /// Certificate lifetime, e.g. `1d`, `24h`, `30m`; 24h by default.
    pub expiration: String,
}

/// Root chain settings.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RootChain {
    /// Time to wait for the root chain.
    pub request_timeout: Option<Duration>,
}

/// A named backend of a legacy observability section.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TracingBackend {
    /// The backend name.
    pub name: String,
    /// Sampling percentage.
    pub sampling: Option<f64>,
    /// `zipkin` or `datadog`.
    #[serde(rename = "type")]
    pub backend_type: String,
    /// Backend-specific configuration.
    #[serde(default)]
    #[schemars(schema_with = "crate::common::any_object_schema")]
    pub conf: Option<serde_json::Value>,
}

/// Legacy tracing.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Tracing {
    /// The default backend's name.
    pub default_backend: Option<String>,
    /// The backends.
    pub backends: Option<Vec<TracingBackend>>,
}

/// A legacy logging backend.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoggingBackend {
    /// The backend name.
    pub name: String,
    /// The line format.
    pub format: Option<String>,
    /// `file` or `tcp`.
    #[serde(rename = "type")]
    pub backend_type: String,
    /// Backend-specific configuration.
    #[serde(default)]
    #[schemars(schema_with = "crate::common::any_object_schema")]
    pub conf: Option<serde_json::Value>,
}

/// Legacy logging.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Logging {
    /// The default backend's name.
    pub default_backend: Option<String>,
    /// The backends.
    pub backends: Option<Vec<LoggingBackend>>,
}

/// A legacy metrics backend.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricsBackend {
    /// The backend name.
    pub name: String,
    /// `prometheus`.
    #[serde(rename = "type")]
    pub backend_type: String,
    /// Backend-specific configuration.
    #[serde(default)]
    #[schemars(schema_with = "crate::common::any_object_schema")]
    pub conf: Option<serde_json::Value>,
}

/// Legacy metrics.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metrics {
    /// The enabled backend's name.
    pub enabled_backend: Option<String>,
    /// The backends.
    pub backends: Option<Vec<MetricsBackend>>,
}

/// Networking defaults.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Networking {
    /// Outbound traffic.
    pub outbound: Option<Outbound>,
}

/// Outbound defaults.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Outbound {
    /// Whether transparent proxies let traffic to unknown destinations
    /// through; true when absent.
    pub passthrough: Option<bool>,
}

/// Routing defaults.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Routing {
    /// Prefer endpoints in the same locality.
    pub locality_aware_load_balancing: Option<bool>,
    /// Send cross-zone and external traffic through zone egress.
    pub zone_egress: Option<bool>,
    /// Forbid MeshExternalService unless allowed by MeshTrafficPermission.
    pub default_forbid_mesh_external_service_access: Option<bool>,
}

/// Admission constraints.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Constraints {
    /// Constraints on dataplanes.
    pub dataplane_proxy: Option<DataplaneProxyConstraints>,
}

/// Tag rules a dataplane must satisfy.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DataplaneProxyConstraints {
    /// A dataplane must match one of these.
    pub requirements: Option<Vec<TagRule>>,
    /// A dataplane must match none of these.
    pub restrictions: Option<Vec<TagRule>>,
}

/// A tag selector (`*` matches any value).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TagRule {
    /// The tags.
    pub tags: BTreeMap<String, String>,
}

/// How MeshService resources are used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum MeshServicesMode {
    /// Not generated (default).
    #[default]
    Disabled,
    /// Generated and used.
    Everywhere,
    /// Used only through reachableBackends.
    ReachableBackends,
    /// Used instead of `kuma.io/service`.
    Exclusive,
}

/// MeshService settings.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshServices {
    /// The mode.
    pub mode: Option<MeshServicesMode>,
}

/// Parses Kuma's certificate expiration syntax: `0` or one number with one
/// unit among `y`, `w`, `d`, `h`, `m`, `s`, `ms` (also Go durations like `1h30m`).
pub fn parse_expiration(text: &str) -> Option<std::time::Duration> {
    if text == "0" {
        return Some(std::time::Duration::ZERO);
    }
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    if digits > 0
        && let Ok(n) = text[..digits].parse::<u64>()
    {
        let secs = match &text[digits..] {
            "y" => Some(n.checked_mul(365 * 86_400)?),
            "w" => Some(n.checked_mul(7 * 86_400)?),
            "d" => Some(n.checked_mul(86_400)?),
            _ => None,
        };
        if let Some(secs) = secs {
            return Some(std::time::Duration::from_secs(secs));
        }
    }
    match crate::common::parse_go_duration(text) {
        Ok(d) if !d.negative => Some(d.magnitude),
        _ => None,
    }
}

impl MeshSpec {
    /// The enabled CA backend, when mTLS is on.
    pub fn enabled_mtls_backend(&self) -> Option<&CertificateAuthorityBackend> {
        let mtls = self.mtls.as_ref()?;
        let name = mtls.enabled_backend.as_deref().filter(|n| !n.is_empty())?;
        mtls.backends.iter().flatten().find(|b| b.name == name)
    }

    /// Whether mTLS is on.
    pub fn mtls_enabled(&self) -> bool {
        self.mtls
            .as_ref()
            .and_then(|m| m.enabled_backend.as_deref())
            .is_some_and(|n| !n.is_empty())
    }

    /// Whether transparent proxies pass unknown traffic through.
    pub fn passthrough(&self) -> bool {
        self.networking
            .as_ref()
            .and_then(|n| n.outbound.as_ref())
            .and_then(|o| o.passthrough)
            .unwrap_or(true)
    }

    /// Appends every problem; paths are relative to the spec (Universal form).
    pub fn validate(&self, root: &FieldPath, v: &mut Violations) {
        if let Some(mtls) = &self.mtls {
            let mp = root.field("mtls");
            let mut names = BTreeSet::new();
            for (i, b) in mtls.backends.iter().flatten().enumerate() {
                let bp = mp.field("backends").index(i);
                if b.name.is_empty() {
                    v.add(&bp.field("name"), "cannot be empty");
                } else if !crate::validation::is_dns_name(&b.name) {
                    v.add(
                        &bp.field("name"),
                        format!(
                            "{:?} must be a valid DNS name (lower case letters, digits and '-')",
                            b.name
                        ),
                    );
                }
                if !names.insert(b.name.as_str()) {
                    v.add(
                        &bp.field("name"),
                        format!("{:?} name is already used for another backend", b.name),
                    );
                }
                match b.backend_type.as_str() {
                    "builtin" => validate_builtin_conf(b.conf.as_ref(), &bp.field("conf"), v),
                    "provided" => validate_provided_conf(b.conf.as_ref(), &bp.field("conf"), v),
                    other => v.add(
                        &bp.field("type"),
                        format!("could not find installed plugin for this type: {other:?} (use builtin or provided)"),
                    ),
                }
                if let Some(dp) = &b.dp_cert {
                    if let Some(r) = &dp.rotation {
                        match parse_expiration(&r.expiration) {
                            None => v.add(
                                &bp.field("dpCert").field("rotation").field("expiration"),
                                "has to be a valid format, e.g. 1d, 24h or 10m",
                            ),
                            Some(d) if d.is_zero() => v.add(
                                &bp.field("dpCert").field("rotation").field("expiration"),
                                "must be greater than 0",
                            ),
                            Some(_) => {}
                        }
                    }
                    if let Some(t) = &dp.request_timeout {
                        check_duration(t, &bp.field("dpCert").field("requestTimeout"), v);
                    }
                }
            }
            if let Some(enabled) = mtls.enabled_backend.as_deref().filter(|e| !e.is_empty())
                && !names.contains(enabled)
            {
                v.add(
                    &mp.field("enabledBackend"),
                    "has to be set to one of the backends in the mesh",
                );
            }
        }
        for (section, backends, default, known) in [
            (
                "logging",
                self.logging.as_ref().map(|l| {
                    l.backends
                        .iter()
                        .flatten()
                        .map(|b| (b.name.as_str(), b.backend_type.as_str()))
                        .collect::<Vec<_>>()
                }),
                self.logging.as_ref().and_then(|l| l.default_backend.as_deref()),
                &["tcp", "file"][..],
            ),
            (
                "tracing",
                self.tracing.as_ref().map(|l| {
                    l.backends
                        .iter()
                        .flatten()
                        .map(|b| (b.name.as_str(), b.backend_type.as_str()))
                        .collect::<Vec<_>>()
                }),
                self.tracing.as_ref().and_then(|l| l.default_backend.as_deref()),
                &["zipkin", "datadog"][..],
            ),
            (
                "metrics",
                self.metrics.as_ref().map(|l| {
                    l.backends
                        .iter()
                        .flatten()
                        .map(|b| (b.name.as_str(), b.backend_type.as_str()))
                        .collect::<Vec<_>>()
                }),
                self.metrics.as_ref().and_then(|l| l.enabled_backend.as_deref()),
                &["prometheus"][..],
            ),
        ] {
            let sp = root.field(section);
            let backends = backends.unwrap_or_default();
            let mut names = BTreeSet::new();
            for (i, (name, ty)) in backends.iter().enumerate() {
                let bp = sp.field("backends").index(i);
                if name.is_empty() {
                    v.add(&bp.field("name"), "cannot be empty");
                }
                if !known.contains(ty) {
                    let list: Vec<String> = known.iter().map(|k| format!("{k:?}")).collect();
                    v.add(
                        &bp.field("type"),
                        format!("unknown backend type. Available backends: {}", list.join(", ")),
                    );
                }
                if !names.insert(*name) {
                    v.add(
                        &bp.field("name"),
                        format!("{name:?} name is already used for another backend"),
                    );
                }
            }
            if let Some(d) = default.filter(|d| !d.is_empty())
                && !names.contains(d)
            {
                let field = if section == "metrics" {
                    "enabledBackend"
                } else {
                    "defaultBackend"
                };
                v.add(
                    &sp.field(field),
                    format!("has to be set to one of the {section} backends in the mesh"),
                );
            }
        }
        if let Some(t) = &self.tracing {
            for (i, b) in t.backends.iter().flatten().enumerate() {
                if b.sampling.is_some_and(|s| !(0.0..=100.0).contains(&s)) {
                    v.add(
                        &root.field("tracing").field("backends").index(i).field("sampling"),
                        "has to be in [0.0 - 100.0] range",
                    );
                }
            }
        }
        if let Some(dp) = self.constraints.as_ref().and_then(|c| c.dataplane_proxy.as_ref()) {
            let cp = root.field("constraints").field("dataplaneProxy");
            for (field, list) in [
                ("requirements", &dp.requirements),
                ("restrictions", &dp.restrictions),
            ] {
                for (i, rule) in list.iter().flatten().enumerate() {
                    let tp = cp.field(field).index(i).field("tags");
                    if rule.tags.is_empty() {
                        v.add(&tp, "must have at least one tag");
                    }
                    validate_tags(&rule.tags, TagValues::Selector, &tp, v);
                }
            }
        }
        if self.routing.as_ref().and_then(|r| r.zone_egress) == Some(true) && !self.mtls_enabled() {
            v.add(&root.field("mtls"), "has to be set when zoneEgress enabled");
        }
    }
}

fn validate_builtin_conf(conf: Option<&serde_json::Value>, path: &FieldPath, v: &mut Violations) {
    let Some(conf) = conf else { return };
    let Some(obj) = conf.as_object() else {
        v.add(path, "must be an object");
        return;
    };
    for (key, value) in obj {
        match key.as_str() {
            "caCert" => {
                let Some(ca) = value.as_object() else {
                    v.add(&path.field("caCert"), "must be an object");
                    continue;
                };
                for (k, val) in ca {
                    match k.as_str() {
                        "RSAbits" => {
                            if !matches!(val.as_u64(), Some(2048 | 3072 | 4096)) {
                                v.add(
                                    &path.field("caCert").field("RSAbits"),
                                    "must be 2048, 3072 or 4096",
                                );
                            }
                        }
                        "expiration" => {
                            if val
                                .as_str()
                                .and_then(parse_expiration)
                                .is_none_or(|d| d.is_zero())
                            {
                                v.add(
                                    &path.field("caCert").field("expiration"),
                                    "has to be a valid format, e.g. 10y or 8760h",
                                );
                            }
                        }
                        _ => v.add(
                            &path.field("caCert").field(k),
                            "unknown field (allowed: RSAbits, expiration)",
                        ),
                    }
                }
            }
            _ => v.add(&path.field(key), "unknown field (allowed: caCert)"),
        }
    }
}

fn validate_provided_conf(conf: Option<&serde_json::Value>, path: &FieldPath, v: &mut Violations) {
    let obj = conf.and_then(|c| c.as_object());
    for field in ["cert", "key"] {
        let fp = path.field(field);
        match obj.and_then(|o| o.get(field)) {
            None => v.add(&fp, "has to be defined"),
            Some(ds) => validate_data_source(ds, &fp, v),
        }
    }
    for key in obj.into_iter().flat_map(|o| o.keys()) {
        if key != "cert" && key != "key" {
            v.add(&path.field(key), "unknown field (allowed: cert, key)");
        }
    }
}

/// Checks a data source: exactly one of `secret`, `file`, `inline` (base64) or `inlineString`.
pub fn validate_data_source(ds: &serde_json::Value, path: &FieldPath, v: &mut Violations) {
    let Some(obj) = ds.as_object() else {
        v.add(
            path,
            "must be an object with one of: secret, file, inline, inlineString",
        );
        return;
    };
    let kinds: Vec<&String> = obj.keys().collect();
    if kinds.len() != 1 || !["secret", "file", "inline", "inlineString"].contains(&kinds[0].as_str()) {
        v.add(
            path,
            "data source has to be chosen. Available sources: secret, file, inline, inlineString",
        );
        return;
    }
    let value = &obj[kinds[0]];
    if value.as_str().is_none_or(str::is_empty) {
        v.add(&path.field(kinds[0]), "cannot be empty");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(yaml: &str) -> Vec<String> {
        let spec: MeshSpec = serde_yaml::from_str(yaml).unwrap();
        let mut v = Violations::new();
        spec.validate(&FieldPath::root(), &mut v);
        v.into_vec().into_iter().map(|v| v.to_string()).collect()
    }

    #[test]
    fn expiration_syntax() {
        assert_eq!(
            parse_expiration("1d"),
            Some(std::time::Duration::from_secs(86_400))
        );
        assert_eq!(
            parse_expiration("10y"),
            Some(std::time::Duration::from_secs(10 * 365 * 86_400))
        );
        assert_eq!(parse_expiration("30s"), Some(std::time::Duration::from_secs(30)));
        assert_eq!(
            parse_expiration("1h30m"),
            Some(std::time::Duration::from_secs(5400))
        );
        assert_eq!(parse_expiration("soon"), None);
    }

    #[test]
    fn mtls_backends() {
        let errs = errors(
            r#"
mtls:
  enabledBackend: ca-2
  backends:
    - {name: ca-1, type: builtin, dpCert: {rotation: {expiration: 1x}}}
    - {name: ca-1, type: vault}
    - {name: ca-3, type: provided, conf: {cert: {secret: ""}}}
routing: {zoneEgress: true}
"#,
        );
        assert_eq!(
            errs,
            vec![
                "mtls.backends[0].dpCert.rotation.expiration: has to be a valid format, e.g. 1d, 24h or 10m",
                "mtls.backends[1].name: \"ca-1\" name is already used for another backend",
                "mtls.backends[1].type: could not find installed plugin for this type: \"vault\" (use builtin or provided)",
                "mtls.backends[2].conf.cert.secret: cannot be empty",
                "mtls.backends[2].conf.key: has to be defined",
                "mtls.enabledBackend: has to be set to one of the backends in the mesh",
            ]
        );
    }
}
