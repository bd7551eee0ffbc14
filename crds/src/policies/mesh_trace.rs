//! MeshTrace: tracing to Zipkin, Datadog or OpenTelemetry.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{PolicyContext, PolicyRole, PolicySpec, spec_path, validate_top};
use crate::common::{
    BackendResourceRef, IntOrString, TargetRef, TargetRefKind, TargetRefKind::*, TargetRefRules,
    validate_otel_endpoint_or_ref,
};
use crate::resource::ResourceType;
use crate::validation::{FieldPath, Violations};

/// MeshTrace spec.
#[serde_with::skip_serializing_none]
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kuma.io",
    version = "v1alpha1",
    kind = "MeshTrace",
    plural = "meshtraces",
    shortname = "mtr",
    category = "kuma",
    namespaced,
    printcolumn = r#"{"name":"TargetRef Kind","type":"string","jsonPath":".spec.targetRef.kind"}"#,
    printcolumn = r#"{"name":"TargetRef Name","type":"string","jsonPath":".spec.targetRef.name"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshTraceSpec {
    /// The proxies that trace; `{kind: Mesh}` when absent.
    pub target_ref: Option<TargetRef>,
    /// The tracing configuration.
    pub default: Option<Conf>,
}

/// Tracing configuration.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Conf {
    /// At most one backend; an empty list turns tracing off.
    pub backends: Option<Vec<Backend>>,
    /// Sampling percentages; 100 each by default.
    pub sampling: Option<Sampling>,
    /// Custom span tags.
    pub tags: Option<Vec<Tag>>,
}

/// Sampling percentages.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Sampling {
    /// Of all requests.
    pub overall: Option<IntOrString>,
    /// Of requests with `x-client-trace-id`.
    pub client: Option<IntOrString>,
    /// Of requests chosen at random.
    pub random: Option<IntOrString>,
}

/// A custom span tag.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Tag {
    /// The tag name.
    pub name: String,
    /// A fixed value.
    pub literal: Option<String>,
    /// A value from a request header.
    pub header: Option<HeaderTag>,
}

/// A tag value taken from a header.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderTag {
    /// The header.
    pub name: String,
    /// The value when the header is absent.
    pub default: Option<String>,
}

/// Backend types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum BackendType {
    /// Zipkin.
    Zipkin,
    /// Datadog.
    Datadog,
    /// OpenTelemetry.
    OpenTelemetry,
}

/// A tracing backend.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Backend {
    /// The backend type; the matching field below carries its settings.
    #[serde(rename = "type")]
    pub backend_type: BackendType,
    /// Zipkin settings.
    pub zipkin: Option<ZipkinBackend>,
    /// Datadog settings.
    pub datadog: Option<DatadogBackend>,
    /// OpenTelemetry settings.
    pub open_telemetry: Option<OtelBackend>,
}

/// Zipkin API versions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ZipkinApiVersion {
    /// JSON over HTTP (default).
    HttpJson,
    /// Protobuf over HTTP.
    HttpProto,
}

/// Zipkin settings.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ZipkinBackend {
    /// The collector URL, e.g. `http://zipkin:9411/api/v2/spans`.
    pub url: String,
    /// Whether to generate 128-bit trace IDs.
    #[serde(rename = "traceId128bit")]
    pub trace_id_128bit: Option<bool>,
    /// The API version; `httpJson` by default.
    pub api_version: Option<ZipkinApiVersion>,
    /// Whether client and server spans share a span context; true by default.
    pub shared_span_context: Option<bool>,
}

/// Datadog settings.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DatadogBackend {
    /// The agent URL, `http://host:port`.
    pub url: String,
    /// Whether to name services per direction.
    pub split_service: Option<bool>,
}

/// OpenTelemetry settings.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OtelBackend {
    /// The collector, `host:port` (deprecated: use backendRef).
    pub endpoint: Option<String>,
    /// A MeshOpenTelemetryBackend by labels.
    pub backend_ref: Option<BackendResourceRef>,
}

/// The parts of an `http://host:port[/path]` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpUrl {
    /// `http` or `https`.
    pub scheme: String,
    /// The host.
    pub host: String,
    /// The port (explicit, or from the scheme).
    pub port: u16,
    /// Whether the port was written.
    pub explicit_port: bool,
    /// The path, `/` when absent.
    pub path: String,
}

/// Parses an absolute http(s) URL with a host.
pub fn parse_http_url(url: &str) -> Option<HttpUrl> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.contains('@') || authority.is_empty() {
        return None;
    }
    let (host, port, explicit_port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (h, p.parse::<u16>().ok()?, true),
        _ => (authority, if scheme == "https" { 443 } else { 80 }, false),
    };
    if host.is_empty() || host.contains([' ', '_']) || port == 0 {
        return None;
    }
    Some(HttpUrl {
        scheme: scheme.into(),
        host: host.into(),
        port,
        explicit_port,
        path: path.into(),
    })
}

impl PolicySpec for MeshTraceSpec {
    const TYPE: ResourceType = ResourceType::MeshTrace;
    type Conf = Conf;

    fn validate(&self, ctx: &PolicyContext, v: &mut Violations) {
        let top: &[TargetRefKind] = if ctx.role == PolicyRole::System {
            &[
                Mesh,
                MeshSubset,
                MeshGateway,
                MeshService,
                MeshServiceSubset,
                Dataplane,
            ]
        } else {
            &[Mesh, MeshSubset, MeshService, MeshServiceSubset, Dataplane]
        };
        validate_top(&self.target_ref, TargetRefRules::kinds(top), v);
        let dp = spec_path().field("default");
        let conf = self.default.clone().unwrap_or_default();
        match &conf.backends {
            None => v.add(&dp.field("backends"), "must be defined"),
            Some(b) if b.len() > 1 => v.add(&dp.field("backends"), "must have zero or one backend defined"),
            Some(b) => {
                if let Some(backend) = b.first() {
                    validate_backend(backend, &dp.field("backends").index(0), v);
                }
            }
        }
        for (t, tag) in conf.tags.iter().flatten().enumerate() {
            let tp = dp.field("tags").index(t);
            if tag.name.is_empty() {
                v.add(&tp.field("name"), "must not be empty");
            }
            if tag.header.is_some() == tag.literal.is_some() {
                v.add(&tp, "tag must have only one type defined: header, literal");
            }
        }
        if let Some(s) = &conf.sampling {
            for (p, name) in [
                (&s.client, "client"),
                (&s.random, "random"),
                (&s.overall, "overall"),
            ] {
                if let Some(p) = p {
                    crate::validation::check_percentage(p, &dp.field("sampling").field(name), v);
                }
            }
        }
    }
}

fn validate_backend(b: &Backend, path: &FieldPath, v: &mut Violations) {
    match b.backend_type {
        BackendType::Zipkin => match &b.zipkin {
            None => v.add(&path.field("zipkin"), "must be defined"),
            Some(z) if z.url.is_empty() => v.add(&path.field("zipkin").field("url"), "must not be empty"),
            Some(z) => {
                if parse_http_url(&z.url).is_none() {
                    v.add(
                        &path.field("zipkin").field("url"),
                        "must be a valid url, e.g. http://zipkin:9411/api/v2/spans",
                    );
                }
            }
        },
        BackendType::Datadog => match &b.datadog {
            None => v.add(&path.field("datadog"), "must be defined"),
            Some(d) => {
                let up = path.field("datadog").field("url");
                match parse_http_url(&d.url) {
                    None => v.add(&up, "must be a valid url"),
                    Some(u) => {
                        if u.scheme != "http" {
                            v.add(&up, "scheme must be http");
                        }
                        if !u.explicit_port {
                            v.add(&up, "port must be defined");
                        }
                        if u.path != "/" || d.url.contains(['?', '#']) {
                            v.add(&up, "path must not be defined");
                        }
                    }
                }
            }
        },
        BackendType::OpenTelemetry => match &b.open_telemetry {
            None => v.add(&path.field("openTelemetry"), "must be defined"),
            Some(o) => validate_otel_endpoint_or_ref(
                o.endpoint.as_deref(),
                o.backend_ref.as_ref(),
                &path.field("openTelemetry"),
                v,
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::violations;
    use super::*;

    #[test]
    fn backends_and_sampling() {
        let errs = violations::<MeshTraceSpec>(
            r#"
default:
  backends: [{type: Datadog, datadog: {url: "https://dd/path"}}]
  tags: [{name: a, literal: x, header: {name: h}}]
  sampling: {overall: 101, client: abc}
"#,
        );
        assert_eq!(
            errs,
            vec![
                "spec.default.backends[0].datadog.url: scheme must be http",
                "spec.default.backends[0].datadog.url: port must be defined",
                "spec.default.backends[0].datadog.url: path must not be defined",
                "spec.default.tags[0]: tag must have only one type defined: header, literal",
                "spec.default.sampling.client: string must be a valid number, e.g. 50 or \"50.5\" (got \"abc\")",
                "spec.default.sampling.overall: must be in inclusive range [0.0, 100.0]",
            ]
        );
        assert_eq!(
            violations::<MeshTraceSpec>("default: {}"),
            vec!["spec.default.backends: must be defined"]
        );
    }

    #[test]
    fn urls() {
        let u = parse_http_url("http://zipkin:9411/api/v2/spans").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("zipkin", 9411, "/api/v2/spans")
        );
        assert!(parse_http_url("zipkin:9411").is_none());
        assert_eq!(parse_http_url("http://a").unwrap().port, 80);
    }
}
