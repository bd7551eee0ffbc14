//! MeshAccessLog: access logs to files, TCP collectors or OpenTelemetry.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    MatchRule, PolicyContext, PolicySpec, TargetItem, has_items, items, spec_path, top_ref, validate_top,
};
use crate::common::{
    BackendResourceRef, TargetRef, TargetRefKind, TargetRefKind::*, TargetRefRules,
    validate_otel_endpoint_or_ref,
};
use crate::resource::ResourceType;
use crate::validation::{FieldPath, Violations};

/// MeshAccessLog spec.
#[serde_with::skip_serializing_none]
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kuma.io",
    version = "v1alpha1",
    kind = "MeshAccessLog",
    plural = "meshaccesslogs",
    shortname = "mal",
    category = "kuma",
    namespaced,
    printcolumn = r#"{"name":"TargetRef Kind","type":"string","jsonPath":".spec.targetRef.kind"}"#,
    printcolumn = r#"{"name":"TargetRef Name","type":"string","jsonPath":".spec.targetRef.name"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshAccessLogSpec {
    /// The proxies that log; `{kind: Mesh}` when absent.
    pub target_ref: Option<TargetRef>,
    /// Logs of outbound traffic per destination.
    pub to: Option<Vec<TargetItem<Conf>>>,
    /// Logs of inbound traffic per client (deprecated in favour of `rules`).
    pub from: Option<Vec<TargetItem<Conf>>>,
    /// Logs of inbound traffic by client identity.
    pub rules: Option<Vec<MatchRule<Conf>>>,
}

/// Where to log.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Conf {
    /// The backends; an empty list turns logging off.
    pub backends: Option<Vec<Backend>>,
}

/// Backend types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum BackendType {
    /// A TCP collector.
    Tcp,
    /// A file.
    File,
    /// An OpenTelemetry collector.
    OpenTelemetry,
}

/// A log backend.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Backend {
    /// The backend type; the matching field below carries its settings.
    #[serde(rename = "type")]
    pub backend_type: BackendType,
    /// TCP settings.
    pub tcp: Option<TcpBackend>,
    /// File settings.
    pub file: Option<FileBackend>,
    /// OpenTelemetry settings.
    pub open_telemetry: Option<OtelBackend>,
}

/// Log lines sent to a TCP collector.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpBackend {
    /// The line format; Kuma's default when absent.
    pub format: Option<Format>,
    /// The collector, `host:port`.
    pub address: String,
}

/// Log lines written to a file.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileBackend {
    /// The line format; Kuma's default when absent.
    pub format: Option<Format>,
    /// The file path.
    pub path: String,
}

/// An OpenTelemetry attribute.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OtelAttribute {
    /// The attribute name.
    pub key: String,
    /// The value; may contain placeholders.
    pub value: String,
}

/// Logs sent to an OpenTelemetry collector.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OtelBackend {
    /// Attributes of each log record.
    pub attributes: Option<Vec<OtelAttribute>>,
    /// The record body (an OTLP AnyValue or any JSON).
    #[serde(default)]
    #[schemars(schema_with = "crate::common::any_json_schema")]
    pub body: Option<serde_json::Value>,
    /// The collector, `host:port` (deprecated: use backendRef).
    pub endpoint: Option<String>,
    /// A MeshOpenTelemetryBackend by labels.
    pub backend_ref: Option<BackendResourceRef>,
}

/// Line format types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum FormatType {
    /// A text line with placeholders.
    Plain,
    /// A JSON object.
    Json,
}

/// A JSON log field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JsonValue {
    /// The field name.
    pub key: String,
    /// The value; may contain placeholders.
    pub value: String,
}

/// A line format.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Format {
    /// The format type.
    #[serde(rename = "type")]
    pub format_type: FormatType,
    /// The text for `Plain`.
    pub plain: Option<String>,
    /// The fields for `Json`.
    pub json: Option<Vec<JsonValue>>,
    /// Whether empty values are left out.
    pub omit_empty_values: Option<bool>,
}

impl PolicySpec for MeshAccessLogSpec {
    const TYPE: ResourceType = ResourceType::MeshAccessLog;
    type Conf = Conf;

    fn validate(&self, _ctx: &PolicyContext, v: &mut Violations) {
        let spec = spec_path();
        validate_top(
            &self.target_ref,
            TargetRefRules::kinds(&[
                Mesh,
                MeshSubset,
                MeshGateway,
                MeshService,
                MeshServiceSubset,
                Dataplane,
            ])
            .with_gateway_listener_tags(true)
            .inbound(has_items(&self.from) || has_items(&self.rules)),
            v,
        );
        if has_items(&self.rules) && (has_items(&self.to) || has_items(&self.from)) {
            v.add(
                &spec,
                "fields 'to' and 'from' must be empty when 'rules' is defined",
            );
        }
        if !has_items(&self.rules) && !has_items(&self.to) && !has_items(&self.from) {
            v.add(&spec, "at least one of 'from', 'to' or 'rules' has to be defined");
        }
        let to_kinds: &[TargetRefKind] = if top_ref(&self.target_ref).kind == MeshGateway {
            &[Mesh]
        } else {
            &[
                Mesh,
                MeshService,
                MeshExternalService,
                MeshMultiZoneService,
                MeshHTTPRoute,
            ]
        };
        for (i, item) in items(&self.to) {
            let p = spec.field("to").index(i);
            item.target_ref
                .validate(&TargetRefRules::kinds(to_kinds), &p.field("targetRef"), v);
            validate_conf(item.default.as_ref(), &p.field("default"), v);
        }
        for (i, item) in items(&self.from) {
            let p = spec.field("from").index(i);
            item.target_ref
                .validate(&TargetRefRules::kinds(&[Mesh]), &p.field("targetRef"), v);
            validate_conf(item.default.as_ref(), &p.field("default"), v);
        }
        for (i, rule) in items(&self.rules) {
            let p = spec.field("rules").index(i);
            for (j, m) in items(&rule.matches) {
                m.validate_identity(&p.field("matches").index(j), v);
            }
            validate_conf(rule.default.as_ref(), &p.field("default"), v);
        }
    }
}

fn validate_conf(conf: Option<&Conf>, path: &FieldPath, v: &mut Violations) {
    let Some(backends) = conf.and_then(|c| c.backends.as_ref()) else {
        v.add(&path.field("backends"), "must be defined");
        return;
    };
    for (k, b) in backends.iter().enumerate() {
        let bp = path.field("backends").index(k);
        match b.backend_type {
            BackendType::File => match &b.file {
                None => v.add(&bp.field("file"), "must be defined"),
                Some(f) => {
                    validate_format(&f.format, &bp.field("file").field("format"), v);
                    if !f.path.starts_with('/') || f.path.contains('\0') {
                        v.add(
                            &bp.field("file").field("path"),
                            "file backend requires a valid absolute path",
                        );
                    }
                }
            },
            BackendType::Tcp => match &b.tcp {
                None => v.add(&bp.field("tcp"), "must be defined"),
                Some(t) => {
                    validate_format(&t.format, &bp.field("tcp").field("format"), v);
                    if !is_host_port(&t.address) {
                        v.add(
                            &bp.field("tcp").field("address"),
                            "tcp backend requires valid address (host:port)",
                        );
                    }
                }
            },
            BackendType::OpenTelemetry => match &b.open_telemetry {
                None => v.add(&bp.field("openTelemetry"), "must be defined"),
                Some(o) => {
                    let op = bp.field("openTelemetry");
                    validate_otel_endpoint_or_ref(o.endpoint.as_deref(), o.backend_ref.as_ref(), &op, v);
                    for (n, a) in o.attributes.iter().flatten().enumerate() {
                        check_otel_attribute_name(&a.key, &op.field("attributes").index(n).field("key"), v);
                    }
                }
            },
        }
    }
}

/// Whether `s` is `host:port` with a valid port (the host may be empty-free text).
pub fn is_host_port(s: &str) -> bool {
    let s = s.strip_prefix("tcp://").unwrap_or(s);
    match s.rsplit_once(':') {
        Some((host, port)) => {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            !host.is_empty() && !host.contains(['/', ' ', '_']) && port.parse::<u16>().is_ok_and(|p| p > 0)
        }
        None => false,
    }
}

fn validate_format(format: &Option<Format>, path: &FieldPath, v: &mut Violations) {
    let Some(f) = format else { return };
    match f.format_type {
        FormatType::Plain => match &f.plain {
            None => v.add(&path.field("plain"), "must be defined"),
            Some(p) if p.is_empty() => v.add(&path.field("plain"), "must not be empty"),
            Some(_) => {}
        },
        FormatType::Json => match &f.json {
            None => v.add(&path.field("json"), "must be defined"),
            Some(list) if list.is_empty() => v.add(&path.field("json"), "must not be empty"),
            Some(list) => {
                for (n, kv) in list.iter().enumerate() {
                    if kv.key.is_empty() {
                        v.add(&path.field("json").index(n).field("key"), "key cannot be empty");
                    }
                    if kv.value.is_empty() {
                        v.add(
                            &path.field("json").index(n).field("value"),
                            "value cannot be empty",
                        );
                    }
                }
            }
        },
    }
}

fn check_otel_attribute_name(key: &str, path: &FieldPath, v: &mut Violations) {
    if key.is_empty() {
        v.add(path, "must be defined");
    } else if key.contains('%') {
        v.add(
            path,
            "must be a static OpenTelemetry attribute name; placeholders are only supported in values",
        );
    } else if key.starts_with("otel.") {
        v.add(path, "must not use the reserved OpenTelemetry prefix 'otel.'");
    } else {
        let bytes = key.as_bytes();
        let mut valid = bytes[0].is_ascii_lowercase();
        for w in bytes.windows(2) {
            let delim = |b: u8| b == b'.' || b == b'_';
            if delim(w[0]) && delim(w[1]) {
                valid = false;
            }
        }
        valid &= bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'.' || *b == b'_');
        valid &= !matches!(bytes[bytes.len() - 1], b'.' | b'_');
        if !valid {
            v.add(
                path,
                "must start with a lowercase letter, use only lowercase letters, digits, '.' or '_', avoid consecutive delimiters, and end with a letter or digit",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::violations;
    use super::*;

    #[test]
    fn backends() {
        let errs = violations::<MeshAccessLogSpec>(
            r##"
targetRef: {kind: Mesh}
from:
  - targetRef: {kind: Mesh}
    default:
      backends:
        - type: File
          file: {path: "#not_valid", format: {type: Json, json: [{key: "", value: x}]}}
        - type: Tcp
          tcp: {address: not_valid_url, format: {type: Plain, plain: ""}}
        - type: OpenTelemetry
          openTelemetry: {attributes: [{key: "%KUMA_MESH%", value: x}]}
to:
  - targetRef: {kind: Mesh}
"##,
        );
        assert_eq!(
            errs,
            vec![
                "spec.to[0].default.backends: must be defined",
                "spec.from[0].default.backends[0].file.format.json[0].key: key cannot be empty",
                "spec.from[0].default.backends[0].file.path: file backend requires a valid absolute path",
                "spec.from[0].default.backends[1].tcp.format.plain: must not be empty",
                "spec.from[0].default.backends[1].tcp.address: tcp backend requires valid address (host:port)",
                "spec.from[0].default.backends[2].openTelemetry: openTelemetry must have exactly one defined: endpoint, backendRef",
                "spec.from[0].default.backends[2].openTelemetry.attributes[0].key: must be a static OpenTelemetry attribute name; placeholders are only supported in values",
            ]
        );
    }

    #[test]
    fn host_port() {
        assert!(is_host_port("127.0.0.1:5000"));
        assert!(is_host_port("logs.example.com:514"));
        assert!(!is_host_port("127.0.0.1"));
        assert!(!is_host_port("not_valid:1"));
        assert!(!is_host_port("h:0"));
    }
}
