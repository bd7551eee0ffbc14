//! MeshMetric: which proxy and application metrics are exposed, and where.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{PolicyContext, PolicyRole, PolicySpec, spec_path, validate_top};
use crate::common::{
    BackendResourceRef, Duration, TargetRef, TargetRefKind, TargetRefKind::*, TargetRefRules,
    validate_otel_endpoint_or_ref,
};
use crate::resource::ResourceType;
use crate::validation::{Violations, check_port};

/// MeshMetric spec.
#[serde_with::skip_serializing_none]
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kuma.io",
    version = "v1alpha1",
    kind = "MeshMetric",
    plural = "meshmetrics",
    shortname = "mm",
    category = "kuma",
    namespaced,
    printcolumn = r#"{"name":"TargetRef Kind","type":"string","jsonPath":".spec.targetRef.kind"}"#,
    printcolumn = r#"{"name":"TargetRef Name","type":"string","jsonPath":".spec.targetRef.name"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshMetricSpec {
    /// The proxies whose metrics are configured; `{kind: Mesh}` when absent.
    pub target_ref: Option<TargetRef>,
    /// The metrics configuration.
    pub default: Option<Conf>,
}

/// Metrics configuration.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Conf {
    /// Which Envoy metrics are exposed.
    pub sidecar: Option<Sidecar>,
    /// Application metrics scraped and merged in.
    pub applications: Option<Vec<Application>>,
    /// Where metrics go.
    pub backends: Option<Vec<Backend>>,
}

/// Envoy metrics selection.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Sidecar {
    /// Profiles and filters.
    pub profiles: Option<Profiles>,
    /// Whether metrics never updated are included.
    pub include_unused: Option<bool>,
}

/// Metric profiles and filters.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Profiles {
    /// Profiles, concatenated across policies; the broadest wins.
    pub append_profiles: Option<Vec<Profile>>,
    /// Metrics to leave out.
    pub exclude: Option<Vec<Selector>>,
    /// Metrics to add back.
    pub include: Option<Vec<Selector>>,
}

/// A metric profile.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// The profile.
    pub name: ProfileName,
}

/// Metric profiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
pub enum ProfileName {
    /// No metrics.
    None,
    /// The commonly useful metrics (default).
    Basic,
    /// Every metric.
    All,
}

/// How a metric name is selected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SelectorType {
    /// Name starts with.
    Prefix,
    /// Name matches a regular expression.
    Regex,
    /// Name equals.
    Exact,
    /// Name contains.
    Contains,
}

/// A metric name selector.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    /// How to match.
    #[serde(rename = "type")]
    pub selector_type: SelectorType,
    /// What to match.
    #[serde(rename = "match")]
    pub match_value: String,
}

/// An application whose metrics are scraped.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Application {
    /// A name for the application.
    pub name: Option<String>,
    /// The metrics path; `/metrics` by default.
    pub path: Option<String>,
    /// The address; the proxy's by default.
    pub address: Option<String>,
    /// The port.
    pub port: u32,
}

/// Backend types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum BackendType {
    /// A Prometheus scrape endpoint.
    Prometheus,
    /// Pushed to an OpenTelemetry collector.
    OpenTelemetry,
}

/// A metrics backend.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Backend {
    /// The backend type; the matching field below carries its settings.
    #[serde(rename = "type")]
    pub backend_type: BackendType,
    /// Prometheus settings.
    pub prometheus: Option<PrometheusBackend>,
    /// OpenTelemetry settings.
    pub open_telemetry: Option<OtelBackend>,
}

/// TLS modes of the Prometheus endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TlsMode {
    /// Plain HTTP (default).
    Disabled,
    /// A certificate given to kuma-dp.
    ProvidedTLS,
    /// The mesh's mTLS.
    ActiveMTLSBackend,
}

/// Prometheus endpoint TLS.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrometheusTls {
    /// The mode.
    pub mode: Option<TlsMode>,
}

/// A Prometheus scrape endpoint.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrometheusBackend {
    /// Identifies this backend to a scraper.
    pub client_id: Option<String>,
    /// The port; 5670 by default.
    pub port: Option<u32>,
    /// The path; `/metrics` by default.
    pub path: Option<String>,
    /// TLS of the endpoint.
    pub tls: Option<PrometheusTls>,
}

/// Metrics pushed to OpenTelemetry.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OtelBackend {
    /// The collector, `host:port` (deprecated: use backendRef).
    pub endpoint: Option<String>,
    /// A MeshOpenTelemetryBackend by labels.
    pub backend_ref: Option<BackendResourceRef>,
    /// How often to push; 1m by default.
    pub refresh_interval: Option<Duration>,
}

/// The default Prometheus port.
pub const DEFAULT_PROMETHEUS_PORT: u32 = 5670;
/// The default metrics path.
pub const DEFAULT_METRICS_PATH: &str = "/metrics";

impl PolicySpec for MeshMetricSpec {
    const TYPE: ResourceType = ResourceType::MeshMetric;
    type Conf = Conf;

    fn validate(&self, ctx: &PolicyContext, v: &mut Violations) {
        let system = ctx.role == PolicyRole::System;
        let top: &[TargetRefKind] = if system {
            &[
                Mesh,
                MeshSubset,
                MeshService,
                MeshServiceSubset,
                MeshGateway,
                Dataplane,
            ]
        } else {
            &[Mesh, MeshSubset, MeshService, Dataplane, MeshServiceSubset]
        };
        validate_top(
            &self.target_ref,
            TargetRefRules::kinds(top).with_gateway_listener_tags(system),
            v,
        );
        let dp = spec_path().field("default");
        let Some(conf) = &self.default else { return };
        if let Some(profiles) = conf.sidecar.as_ref().and_then(|s| s.profiles.as_ref()) {
            let pp = dp.field("sidecar").field("profiles");
            for (field, list) in [("exclude", &profiles.exclude), ("include", &profiles.include)] {
                for (n, s) in list.iter().flatten().enumerate() {
                    if s.selector_type == SelectorType::Regex && regex::Regex::new(&s.match_value).is_err() {
                        v.add(&pp.field(field).index(n).field("match"), "invalid regex");
                    }
                }
            }
        }
        for (n, app) in conf.applications.iter().flatten().enumerate() {
            let ap = dp.field("applications").index(n);
            check_port(app.port, &ap.field("port"), v);
            if app.path.as_deref().is_some_and(|p| !p.starts_with('/')) {
                v.add(&ap.field("path"), "must be an absolute path");
            }
        }
        for (n, b) in conf.backends.iter().flatten().enumerate() {
            let bp = dp.field("backends").index(n);
            match b.backend_type {
                BackendType::Prometheus => match &b.prometheus {
                    None => v.add(&bp.field("prometheus"), "must be defined"),
                    Some(p) => {
                        check_port(
                            p.port.unwrap_or(DEFAULT_PROMETHEUS_PORT),
                            &bp.field("prometheus").field("port"),
                            v,
                        );
                        if p.path.as_deref().is_some_and(|p| !p.starts_with('/')) {
                            v.add(&bp.field("prometheus").field("path"), "must be an absolute path");
                        }
                    }
                },
                BackendType::OpenTelemetry => match &b.open_telemetry {
                    None => v.add(&bp.field("openTelemetry"), "must be defined"),
                    Some(o) => {
                        let op = bp.field("openTelemetry");
                        validate_otel_endpoint_or_ref(o.endpoint.as_deref(), o.backend_ref.as_ref(), &op, v);
                        if let Some(e) = o
                            .endpoint
                            .as_deref()
                            .filter(|e| !e.is_empty() && !e.contains(['/', '?', '#']))
                            && !super::mesh_access_log::is_host_port(e)
                        {
                            v.add(&op.field("endpoint"), "must be in host:port format");
                        }
                        if let Some(d) = &o.refresh_interval {
                            crate::validation::check_positive_duration(d, &op.field("refreshInterval"), v);
                        }
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::violations;
    use super::*;

    #[test]
    fn real_paths_for_backends_and_applications() {
        let errs = violations::<MeshMetricSpec>(
            r#"
default:
  sidecar: {profiles: {appendProfiles: [{name: Basic}], exclude: [{type: Regex, match: "(["}]}}
  applications: [{port: 0}]
  backends:
    - type: Prometheus
      prometheus: {port: 70000}
    - type: OpenTelemetry
      openTelemetry: {endpoint: "collector"}
"#,
        );
        assert_eq!(
            errs,
            vec![
                "spec.default.sidecar.profiles.exclude[0].match: invalid regex",
                "spec.default.applications[0].port: must be in the range [1, 65535]",
                "spec.default.backends[0].prometheus.port: must be in the range [1, 65535]",
                "spec.default.backends[1].openTelemetry.endpoint: must be in host:port format",
            ]
        );
    }
}
