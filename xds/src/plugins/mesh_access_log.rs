//! MeshAccessLog: access logs on inbound and outbound connection managers
//! and TCP proxies, to files, TCP collectors (through kuma-dp's socket) or
//! OpenTelemetry collectors.
//!
//! Kuma's placeholders (`%KUMA_MESH%`, `%KUMA_SOURCE_SERVICE%`, …) are
//! replaced here; the rest of the format is Envoy's.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::accesslog::v3::{
    AccessLog, AccessLogFilter, ExtensionFilter, access_log, access_log_filter, extension_filter,
};
use envoy_types::pb::envoy::config::core::v3::{
    GrpcService, SubstitutionFormatString, grpc_service, substitution_format_string,
};
use envoy_types::pb::envoy::extensions::access_loggers::file::v3::{FileAccessLog, file_access_log};
use envoy_types::pb::envoy::extensions::access_loggers::filters::cel::v3::ExpressionFilter;
use envoy_types::pb::envoy::extensions::access_loggers::open_telemetry::v3::OpenTelemetryAccessLogConfig;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy;
use envoy_types::pb::opentelemetry::proto::common::v1::{AnyValue, KeyValue, KeyValueList, any_value};
use kuma_crds::common::{RuleMatch, SpiffeIdMatchType};
use kuma_crds::matching::Destination;
use kuma_crds::policies::mesh_access_log::{Backend, BackendType, Conf, Format, FormatType};
use kuma_crds::resource::ResourceType;

use envoy_types::pb::google::protobuf::{Value as ProtoValue, value};

use crate::context::{MeshContext, Proxy};
use crate::envoy;
use crate::generate::Policies;
use crate::resources::{Origin, Resource, ResourceSet};

const T: ResourceType = ResourceType::MeshAccessLog;

/// Kuma's default line for TCP traffic.
pub const DEFAULT_TCP_FORMAT: &str = "[%START_TIME%] %RESPONSE_FLAGS% %KUMA_MESH% %KUMA_SOURCE_ADDRESS_WITHOUT_PORT%(%KUMA_SOURCE_SERVICE%)->%UPSTREAM_HOST%(%KUMA_DESTINATION_SERVICE%) took %DURATION%ms, sent %BYTES_SENT% bytes, received: %BYTES_RECEIVED% bytes";
/// Kuma's default line for HTTP traffic.
pub const DEFAULT_HTTP_FORMAT: &str = "[%START_TIME%] %KUMA_MESH% \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-B3-TRACEID?X-DATADOG-TRACEID)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%KUMA_SOURCE_SERVICE%\" \"%KUMA_DESTINATION_SERVICE%\" \"%KUMA_SOURCE_ADDRESS_WITHOUT_PORT%\" \"%UPSTREAM_HOST%\"";

/// The values Kuma's placeholders stand for on one listener.
pub struct KumaValues {
    mesh: String,
    source_service: String,
    destination_service: String,
    source_ip: String,
    direction: &'static str,
    zone: String,
}

impl KumaValues {
    fn interpolate(&self, text: &str) -> String {
        text.replace("%KUMA_SOURCE_ADDRESS%", &format!("{}:0", self.source_ip))
            .replace("%KUMA_SOURCE_ADDRESS_WITHOUT_PORT%", &self.source_ip)
            .replace("%KUMA_SOURCE_SERVICE%", &self.source_service)
            .replace("%KUMA_DESTINATION_SERVICE%", &self.destination_service)
            .replace("%KUMA_MESH%", &self.mesh)
            .replace("%KUMA_TRAFFIC_DIRECTION%", self.direction)
            .replace("%KUMA_ZONE%", &self.zone)
    }
}

/// The unix socket kuma-dp reads TCP access logs from.
pub fn tcp_socket_path(proxy: &Proxy<'_>) -> String {
    let dir = proxy.metadata.workdir.clone().unwrap_or_else(|| "/tmp".into());
    let mut base = format!(
        "{dir}/kuma-al-{}-{}",
        proxy.resource.meta.core_name(),
        proxy.resource.meta.mesh_or_default()
    );
    base.truncate(98);
    format!("{base}.sock")
}

fn text_format(
    format: Option<&Format>,
    http: bool,
    values: &KumaValues,
) -> (String, Option<BTreeMap<String, String>>, bool) {
    match format {
        Some(f) if f.format_type == FormatType::Json => {
            let json = f
                .json
                .iter()
                .flatten()
                .map(|kv| (kv.key.clone(), values.interpolate(&kv.value)))
                .collect();
            (String::new(), Some(json), f.omit_empty_values.unwrap_or(false))
        }
        Some(f) => (
            values.interpolate(f.plain.as_deref().unwrap_or("")),
            None,
            f.omit_empty_values.unwrap_or(false),
        ),
        None => (
            values.interpolate(if http {
                DEFAULT_HTTP_FORMAT
            } else {
                DEFAULT_TCP_FORMAT
            }),
            None,
            false,
        ),
    }
}

fn file_log(path: &str, format: Option<&Format>, http: bool, values: &KumaValues) -> FileAccessLog {
    let (text, json, omit) = text_format(format, http, values);
    let fmt = match json {
        Some(fields) => substitution_format_string::Format::JsonFormat(envoy::string_struct(&fields)),
        None => {
            substitution_format_string::Format::TextFormatSource(envoy::inline_string(format!("{text}\n")))
        }
    };
    FileAccessLog {
        path: path.into(),
        access_log_format: Some(file_access_log::AccessLogFormat::LogFormat(
            SubstitutionFormatString {
                format: Some(fmt),
                omit_empty_values: omit,
                ..Default::default()
            },
        )),
    }
}

const OTEL_CLUSTER_PREFIX: &str = "meshaccesslog:opentelemetry:";

/// The cluster of an OpenTelemetry collector: like Kuma, numbered per
/// proxy in the order collectors are first seen, one per endpoint.
fn otel_cluster(rs: &mut ResourceSet, host: &str, port: u32) -> String {
    let existing: Vec<(String, bool)> = rs
        .of_type(crate::resources::XdsType::Cluster)
        .filter(|g| g.resource().name().starts_with(OTEL_CLUSTER_PREFIX))
        .map(|g| {
            let same = match g.resource() {
                Resource::Cluster(c) => c
                    .load_assignment
                    .iter()
                    .flat_map(|la| &la.endpoints)
                    .flat_map(|e| &e.lb_endpoints)
                    .any(|lb| envoy::lb_endpoint(host, port) == *lb),
                _ => false,
            };
            (g.resource().name().to_string(), same)
        })
        .collect();
    if let Some((name, _)) = existing.iter().find(|(_, same)| *same) {
        return name.clone();
    }
    let name = format!("{OTEL_CLUSTER_PREFIX}{}", existing.len());
    let mut cluster = envoy::static_cluster(&name, &[(host.to_string(), port)], envoy::seconds(5));
    envoy::set_upstream_http(&mut cluster, true);
    rs.add(Origin::AccessLog, Resource::Cluster(cluster));
    name
}

fn string_kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
        ..Default::default()
    }
}

/// Fills Kuma's placeholders in every string of a JSON value.
fn interpolate_json(v: &serde_json::Value, values: &KumaValues) -> serde_json::Value {
    match v {
        serde_json::Value::String(s) => serde_json::Value::String(values.interpolate(s)),
        serde_json::Value::Array(items) => items.iter().map(|i| interpolate_json(i, values)).collect(),
        serde_json::Value::Object(map) => map
            .iter()
            .map(|(k, i)| (k.clone(), interpolate_json(i, values)))
            .collect(),
        other => other.clone(),
    }
}

/// The access loggers of a conf's backends; OpenTelemetry collectors get a
/// cluster in `rs`.
fn loggers(
    backends: &[Backend],
    http: bool,
    values: &KumaValues,
    proxy: &Proxy<'_>,
    filter: Option<AccessLogFilter>,
    rs: &mut ResourceSet,
) -> Vec<AccessLog> {
    let mut out = Vec::new();
    for b in backends {
        let (name, config) = match b.backend_type {
            BackendType::File => {
                let Some(f) = &b.file else { continue };
                (
                    "envoy.access_loggers.file",
                    envoy::any(&file_log(&f.path, f.format.as_ref(), http, values)),
                )
            }
            BackendType::Tcp => {
                let Some(t) = &b.tcp else { continue };
                let (text, json, _) = text_format(t.format.as_ref(), http, values);
                // kuma-dp forwards a structured message as one JSON line; a
                // plain one is sent as written, so it carries its newline.
                let message = match json {
                    Some(fields) => ProtoValue {
                        kind: Some(value::Kind::StructValue(envoy::string_struct(&fields))),
                    },
                    None => ProtoValue {
                        kind: Some(value::Kind::StringValue(format!("{text}\n"))),
                    },
                };
                let mut record =
                    envoy::string_struct(&BTreeMap::from([("address".to_string(), t.address.clone())]));
                record.fields.insert("message".to_string(), message);
                let log = FileAccessLog {
                    path: tcp_socket_path(proxy),
                    access_log_format: Some(file_access_log::AccessLogFormat::LogFormat(
                        SubstitutionFormatString {
                            format: Some(substitution_format_string::Format::JsonFormat(record)),
                            ..Default::default()
                        },
                    )),
                };
                ("envoy.access_loggers.file", envoy::any(&log))
            }
            BackendType::OpenTelemetry => {
                let Some(o) = &b.open_telemetry else { continue };
                let Some(endpoint) = o.endpoint.as_deref().filter(|e| !e.is_empty()) else {
                    continue;
                };
                let (host, port) = match endpoint.rsplit_once(':') {
                    Some((h, p)) => (h.to_string(), p.parse().unwrap_or(4317)),
                    None => (endpoint.to_string(), 4317),
                };
                let cluster_name = otel_cluster(rs, &host, port);
                let (text, _, _) = text_format(None, http, values);
                let body = match &o.body {
                    None => AnyValue {
                        value: Some(any_value::Value::StringValue(text)),
                    },
                    Some(serde_json::Value::String(s)) => AnyValue {
                        value: Some(any_value::Value::StringValue(values.interpolate(s))),
                    },
                    // OTLP's JSON form of an AnyValue, placeholders filled in
                    // every string; anything else is logged as its text.
                    Some(other) => {
                        let filled = interpolate_json(other, values);
                        crate::proto::from_json::<AnyValue>(&filled).unwrap_or_else(|_| AnyValue {
                            value: Some(any_value::Value::StringValue(filled.to_string())),
                        })
                    }
                };
                let mut resource_attributes = vec![string_kv("kuma.mesh", &values.mesh)];
                if !values.zone.is_empty() {
                    resource_attributes.push(string_kv("kuma.zone", &values.zone));
                }
                let config = OpenTelemetryAccessLogConfig {
                    // Kuma still fills the deprecated `common_config`; the
                    // replacement fields carry the same meaning.
                    log_name: "MeshAccessLog".into(),
                    grpc_service: Some(GrpcService {
                        target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                            grpc_service::EnvoyGrpc {
                                cluster_name,
                                ..Default::default()
                            },
                        )),
                        ..Default::default()
                    }),
                    body: Some(body),
                    resource_attributes: Some(KeyValueList {
                        values: resource_attributes,
                    }),
                    attributes: Some(KeyValueList {
                        values: o
                            .attributes
                            .iter()
                            .flatten()
                            .map(|a| KeyValue {
                                key: a.key.clone(),
                                value: Some(AnyValue {
                                    value: Some(any_value::Value::StringValue(values.interpolate(&a.value))),
                                }),
                                ..Default::default()
                            })
                            .collect(),
                    }),
                    ..Default::default()
                };
                ("envoy.access_loggers.open_telemetry", envoy::any(&config))
            }
        };
        out.push(AccessLog {
            name: name.into(),
            filter: filter.clone(),
            config_type: Some(access_log::ConfigType::TypedConfig(config)),
        });
    }
    out
}

/// A CEL filter keeping entries of clients matching `m`.
fn match_filter(m: &RuleMatch) -> AccessLogFilter {
    let mut parts = Vec::new();
    if let Some(id) = &m.spiffe_id {
        parts.push(match id.match_type {
            Some(SpiffeIdMatchType::Prefix) => {
                format!("connection.uri_san_peer_certificate.startsWith({:?})", id.value)
            }
            _ => format!("connection.uri_san_peer_certificate == {:?}", id.value),
        });
    }
    if let Some(sni) = &m.sni {
        parts.push(format!("connection.requested_server_name == {:?}", sni.value));
    }
    AccessLogFilter {
        filter_specifier: Some(access_log_filter::FilterSpecifier::ExtensionFilter(
            ExtensionFilter {
                name: "envoy.access_loggers.extension_filters.cel".into(),
                config_type: Some(extension_filter::ConfigType::TypedConfig(envoy::any(
                    &ExpressionFilter {
                        expression: parts.join(" && "),
                        cel_config: None,
                    },
                ))),
            },
        )),
    }
}

fn outbound_values(proxy: &Proxy<'_>, mesh: &MeshContext, destination: &Destination) -> KumaValues {
    KumaValues {
        mesh: mesh.name.clone(),
        source_service: proxy.service().to_string(),
        destination_service: destination.service.clone(),
        source_ip: proxy.address().to_string(),
        direction: "OUTBOUND",
        zone: proxy
            .tags()
            .get(kuma_crds::dataplane::ZONE_TAG)
            .cloned()
            .unwrap_or_default(),
    }
}

fn inbound_values(proxy: &Proxy<'_>, mesh: &MeshContext, index: usize) -> KumaValues {
    let inbound = &proxy.dataplane.inbounds()[index];
    KumaValues {
        mesh: mesh.name.clone(),
        source_service: "unknown".into(),
        destination_service: inbound.service().unwrap_or("unknown").to_string(),
        source_ip: proxy.address().to_string(),
        direction: "INBOUND",
        zone: proxy
            .tags()
            .get(kuma_crds::dataplane::ZONE_TAG)
            .cloned()
            .unwrap_or_default(),
    }
}

fn outbound_logs(
    proxy: &Proxy<'_>,
    mesh: &MeshContext,
    policies: &Policies,
    destination: &Destination,
    http: bool,
    rs: &mut ResourceSet,
) -> Vec<AccessLog> {
    let Some(conf) = policies.to_typed::<Conf>(T, destination) else {
        return Vec::new();
    };
    let values = outbound_values(proxy, mesh, destination);
    loggers(
        conf.backends.as_deref().unwrap_or(&[]),
        http,
        &values,
        proxy,
        None,
        rs,
    )
}

fn inbound_logs(
    proxy: &Proxy<'_>,
    mesh: &MeshContext,
    policies: &Policies,
    index: usize,
    http: bool,
    rs: &mut ResourceSet,
) -> Vec<AccessLog> {
    let Some(rules) = policies.inbound(T, index) else {
        return Vec::new();
    };
    let values = inbound_values(proxy, mesh, index);
    let mut out = Vec::new();
    for rule in &rules.rules {
        let conf: Conf = rule.conf.conf().unwrap_or_default();
        let filter = rule.matches.as_ref().map(match_filter);
        out.extend(loggers(
            conf.backends.as_deref().unwrap_or(&[]),
            http,
            &values,
            proxy,
            filter,
            rs,
        ));
    }
    out
}

/// Outbound connection manager.
pub fn outbound_hcm(
    hcm: &mut HttpConnectionManager,
    proxy: &Proxy<'_>,
    mesh: &MeshContext,
    policies: &Policies,
    destination: &Destination,
    rs: &mut ResourceSet,
) {
    hcm.access_log
        .extend(outbound_logs(proxy, mesh, policies, destination, true, rs));
}

/// Outbound TCP proxy.
pub fn outbound_tcp(
    tcp: &mut TcpProxy,
    proxy: &Proxy<'_>,
    mesh: &MeshContext,
    policies: &Policies,
    destination: &Destination,
    rs: &mut ResourceSet,
) {
    tcp.access_log
        .extend(outbound_logs(proxy, mesh, policies, destination, false, rs));
}

/// Inbound connection manager.
pub fn inbound_hcm(
    hcm: &mut HttpConnectionManager,
    proxy: &Proxy<'_>,
    mesh: &MeshContext,
    policies: &Policies,
    index: usize,
    rs: &mut ResourceSet,
) {
    hcm.access_log
        .extend(inbound_logs(proxy, mesh, policies, index, true, rs));
}

/// Inbound TCP proxy.
pub fn inbound_tcp(
    tcp: &mut TcpProxy,
    proxy: &Proxy<'_>,
    mesh: &MeshContext,
    policies: &Policies,
    index: usize,
    rs: &mut ResourceSet,
) {
    tcp.access_log
        .extend(inbound_logs(proxy, mesh, policies, index, false, rs));
}
