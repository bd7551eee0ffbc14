//! `POST /bootstrap`: kuma-dp asks for the Envoy bootstrap of its proxy.
//!
//! The request and response bodies are Kuma's, so an unmodified kuma-dp
//! can use this control plane. The bootstrap points Envoy's ADS back at the
//! control plane, names the node `<mesh>.<name>`, and keeps admin on
//! loopback.

use std::collections::BTreeMap;
use std::net::IpAddr;

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::context::{DEFAULT_ADMIN_PORT, DEFAULT_READINESS_PORT, metadata_keys};

/// The kuma-dp feature asking for the delta xDS protocol.
pub const FEATURE_DELTA_GRPC: &str = "feature-delta-grpc";
/// The static cluster of the control plane in every bootstrap.
pub const ADS_CLUSTER: &str = "ads_cluster";

/// The body kuma-dp posts (Kuma's `BootstrapRequest`; unknown fields are
/// accepted, as newer kuma-dp versions send more).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct BootstrapRequest {
    /// The mesh.
    pub mesh: String,
    /// The dataplane name.
    pub name: String,
    /// `dataplane` (default), `ingress` or `egress`.
    pub proxy_type: String,
    /// The dataplane token.
    pub dataplane_token: String,
    /// Where kuma-dp reads the token from.
    pub dataplane_token_path: String,
    /// The Dataplane resource (universal YAML or JSON), when kuma-dp
    /// registers it itself.
    pub dataplane_resource: String,
    /// kuma-dp and Envoy versions.
    pub version: Value,
    /// The CA kuma-dp trusts for the control plane.
    pub ca_cert: String,
    /// Extra node metadata.
    pub dynamic_metadata: BTreeMap<String, String>,
    /// kuma-dp's readiness port.
    pub readiness_port: u32,
    /// kuma-dp's DNS proxy port.
    pub dns_port: u32,
    /// kuma-dp feature flags.
    pub features: Vec<String>,
    /// kuma-dp's working directory.
    pub workdir: String,
    /// The transparent proxy configuration.
    pub dataplane_config: Value,
}

impl BootstrapRequest {
    /// The proxy type, defaulted.
    pub fn proxy_type(&self) -> &str {
        if self.proxy_type.is_empty() {
            "dataplane"
        } else {
            &self.proxy_type
        }
    }

    /// The node id.
    pub fn node_id(&self) -> String {
        format!("{}.{}", self.mesh, self.name)
    }

    /// Whether the proxy wants the delta protocol.
    pub fn wants_delta(&self) -> bool {
        self.features.iter().any(|f| f == FEATURE_DELTA_GRPC)
    }
}

/// What the control plane knows when answering.
#[derive(Clone, Debug)]
pub struct BootstrapParams {
    /// The host Envoy dials for ADS (the request's Host by default).
    pub xds_host: String,
    /// The dp-server port.
    pub xds_port: u16,
    /// The PEM CA Envoy verifies the control plane with; `None` for a
    /// plaintext dp-server.
    pub ca_pem: Option<String>,
    /// Envoy's admin port (the Dataplane's `networking.admin.port`).
    pub admin_port: u32,
    /// The proxy's service (`node.cluster`).
    pub service: String,
    /// The Dataplane's address (returned to kuma-dp).
    pub address: String,
}

/// Kuma's `BootstrapResponse`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BootstrapResponse {
    /// The Envoy bootstrap as YAML, base64-encoded in JSON like Go's `[]byte`.
    #[serde(with = "base64_bytes")]
    pub bootstrap: Vec<u8>,
    /// Settings for kuma-dp itself.
    pub kuma_sidecar_configuration: Value,
}

mod base64_bytes {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)
    }
}

/// The Envoy bootstrap (as Envoy's JSON) for a request.
pub fn envoy_bootstrap(request: &BootstrapRequest, params: &BootstrapParams) -> Value {
    let node_id = request.node_id();
    let readiness = if request.readiness_port == 0 {
        DEFAULT_READINESS_PORT
    } else {
        request.readiness_port
    };
    let mut metadata = serde_json::Map::new();
    metadata.insert(metadata_keys::ADMIN_ADDRESS.into(), "127.0.0.1".into());
    metadata.insert(
        metadata_keys::ADMIN_PORT.into(),
        params.admin_port.to_string().into(),
    );
    metadata.insert(metadata_keys::READINESS_PORT.into(), readiness.to_string().into());
    metadata.insert(metadata_keys::PROXY_TYPE.into(), request.proxy_type().into());
    metadata.insert(metadata_keys::FEATURES.into(), json!(request.features));
    metadata.insert(metadata_keys::WORKDIR.into(), request.workdir.clone().into());
    if !request.version.is_null() {
        metadata.insert(metadata_keys::VERSION.into(), request.version.clone());
    }
    if !request.dataplane_resource.is_empty() {
        metadata.insert(
            metadata_keys::DATAPLANE_RESOURCE.into(),
            request.dataplane_resource.clone().into(),
        );
    }
    if !request.dynamic_metadata.is_empty() {
        metadata.insert("dynamicMetadata".into(), json!(request.dynamic_metadata));
    }

    let mut grpc_service = json!({"envoyGrpc": {"clusterName": ADS_CLUSTER}});
    if !request.dataplane_token.is_empty() {
        grpc_service["initialMetadata"] = json!([{"key": "authorization", "value": request.dataplane_token}]);
    }
    let ads_source = json!({"ads": {}, "initialFetchTimeout": "0s", "resourceApiVersion": "V3"});
    let keepalive =
        json!({"tcpKeepalive": {"keepaliveProbes": 3, "keepaliveTime": 10, "keepaliveInterval": 10}});
    let is_ip = params.xds_host.parse::<IpAddr>().is_ok();
    let mut ads_cluster = json!({
        "name": ADS_CLUSTER,
        "type": if is_ip { "STATIC" } else { "STRICT_DNS" },
        "connectTimeout": "1s",
        "loadAssignment": {"clusterName": ADS_CLUSTER, "endpoints": [{"lbEndpoints": [{"endpoint": {"address":
            {"socketAddress": {"address": params.xds_host, "portValue": params.xds_port}}}}]}]},
        "upstreamConnectionOptions": keepalive,
        "typedExtensionProtocolOptions": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicitHttpConfig": {"http2ProtocolOptions": {}}}},
    });
    if !is_ip {
        ads_cluster["dnsLookupFamily"] = "V4_PREFERRED".into();
    }
    let mut secrets = Vec::new();
    if let Some(ca) = &params.ca_pem {
        ads_cluster["transportSocket"] = json!({
            "name": "envoy.transport_sockets.tls",
            "typedConfig": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "sni": params.xds_host,
                "commonTlsContext": {
                    "tlsParams": {"tlsMinimumProtocolVersion": "TLSv1_2"},
                    "validationContextSdsSecretConfig": {"name": "cp_validation_ctx"}
                }
            }
        });
        let san_type = if is_ip { "IP_ADDRESS" } else { "DNS" };
        secrets.push(json!({
            "name": "cp_validation_ctx",
            "validationContext": {
                "trustedCa": {"inlineString": ca},
                "matchTypedSubjectAltNames": [{"sanType": san_type, "matcher": {"exact": params.xds_host}}]
            }
        }));
    }
    json!({
        "node": {"id": node_id, "cluster": params.service, "metadata": metadata},
        "admin": {
            "address": {"socketAddress": {"address": "127.0.0.1", "portValue": params.admin_port}},
            "accessLog": [{"name": "envoy.access_loggers.file", "typedConfig": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                "path": "/dev/null"}}]
        },
        "dynamicResources": {
            "adsConfig": {
                "apiType": if request.wants_delta() { "DELTA_GRPC" } else { "GRPC" },
                "transportApiVersion": "V3",
                "setNodeOnFirstMessageOnly": true,
                "grpcServices": [grpc_service]
            },
            "cdsConfig": ads_source,
            "ldsConfig": ads_source
        },
        "staticResources": {"clusters": [ads_cluster], "secrets": secrets},
        "layeredRuntime": {"layers": [{"name": "kuma", "staticLayer": {
            "re2.max_program_size.error_level": 4294967295u64,
            "re2.max_program_size.warn_level": 1000}}]},
        "defaultRegexEngine": {"name": "envoy.regex_engines.google_re2", "typedConfig": {
            "@type": "type.googleapis.com/envoy.extensions.regex_engines.v3.GoogleRE2"}},
        "statsConfig": {"statsTags": [
            {"tagName": "name", "regex": "^grpc\\.((.+)\\.)"},
            {"tagName": "status", "regex": "^grpc.*streams_closed(_([0-9]+))"},
            {"tagName": "worker", "regex": "(worker_([0-9]+)\\.)"},
            {"tagName": "listener", "regex": "((.+?)\\.)rbac\\."}
        ]}
    })
}

/// The whole response: the bootstrap as YAML plus kuma-dp's settings.
pub fn response(request: &BootstrapRequest, params: &BootstrapParams) -> BootstrapResponse {
    let bootstrap = envoy_bootstrap(request, params);
    let yaml = serde_yaml::to_string(&bootstrap).unwrap_or_default();
    BootstrapResponse {
        bootstrap: yaml.into_bytes(),
        kuma_sidecar_configuration: json!({
            "networking": {"address": params.address, "corefileTemplate": Value::Null},
            "metrics": {"aggregate": []}
        }),
    }
}

/// The default admin port when the Dataplane names none.
pub fn admin_port_or_default(port: Option<u32>) -> u32 {
    port.filter(|p| *p != 0).unwrap_or(DEFAULT_ADMIN_PORT)
}

/// Decodes a response's bootstrap YAML (for kuma-dp and tests).
pub fn decode_base64(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    base64::engine::general_purpose::STANDARD.decode(text)
}

/// `host:port`, `[v6]:port` or a bare host → the host.
pub fn host_without_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) && !h.contains(':') => h,
        _ => host,
    }
}

/// The host Envoy is to dial for ADS: the one kuma-dp reached, from its
/// `Host` header or else the URI's authority (HTTP/2), without the port;
/// loopback when neither names one (an empty header included: an empty
/// address would make Envoy refuse the whole bootstrap).
pub fn xds_host(host_header: Option<&str>, uri_host: Option<&str>) -> String {
    host_header
        .map(host_without_port)
        .or_else(|| uri_host.map(|h| h.trim_start_matches('[').trim_end_matches(']')))
        .filter(|h| !h.is_empty())
        .unwrap_or("127.0.0.1")
        .to_string()
}

/// The `/bootstrap` handler's pure part under any input, as the
/// `bootstrap_request` fuzz target (`xds/fuzz`) drives it: `data` is a Host
/// header line, then a request body. A body the handler would accept
/// yields a bootstrap that Envoy's own schema takes (the descriptor pool's
/// `Bootstrap`), whose node is exactly `<mesh>.<name>` and whose ADS
/// cluster dials exactly the host (nothing in the request reaches another
/// field), and whose YAML reads back as the same document.
pub fn check_bootstrap(data: &[u8]) -> Result<(), String> {
    let (host_line, body) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&data[..0], data),
    };
    let Ok(request) = serde_json::from_slice::<BootstrapRequest>(body) else {
        return Ok(());
    };
    if request.mesh.is_empty() || request.name.is_empty() {
        return Ok(());
    }
    let host = xds_host(std::str::from_utf8(host_line).ok(), None);
    let params = BootstrapParams {
        xds_host: host.clone(),
        xds_port: 5678,
        ca_pem: Some("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n".into()),
        admin_port: admin_port_or_default(None),
        service: "backend_default_svc_80".into(),
        address: "10.0.0.1".into(),
    };
    let json = envoy_bootstrap(&request, &params);
    let bytes = crate::proto::json_to_bytes("envoy.config.bootstrap.v3.Bootstrap", &json)
        .map_err(|e| format!("the bootstrap is not an Envoy Bootstrap: {e}"))?;
    let back = crate::proto::bytes_to_json("envoy.config.bootstrap.v3.Bootstrap", &bytes)
        .map_err(|e| format!("the bootstrap does not read back: {e}"))?;
    if back["node"]["id"].as_str() != Some(request.node_id().as_str()) {
        return Err(format!(
            "node id {} for {}",
            back["node"]["id"],
            request.node_id()
        ));
    }
    let address = &back["staticResources"]["clusters"][0]["loadAssignment"]["endpoints"][0]["lbEndpoints"][0]
        ["endpoint"]["address"]["socketAddress"]["address"];
    if address.as_str() != Some(host.as_str()) {
        return Err(format!("the ADS cluster dials {address}, not {host:?}"));
    }
    let yaml = response(&request, &params).bootstrap;
    let read: Value =
        serde_yaml::from_slice(&yaml).map_err(|e| format!("the bootstrap YAML does not parse: {e}"))?;
    if read != json {
        return Err("the bootstrap YAML reads back as another document".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{check_bootstrap, host_without_port};

    #[test]
    fn host_header_forms() {
        for (header, host) in [
            ("cp:5678", "cp"),
            ("cp", "cp"),
            ("127.0.0.1:5678", "127.0.0.1"),
            ("[::1]:5678", "::1"),
            ("[::1]", "::1"),
        ] {
            assert_eq!(host_without_port(header), host, "{header}");
        }
    }

    #[test]
    fn requests_kuma_dp_sends_and_odd_ones_keep_the_properties() {
        for input in [
            "cp:5678\n{\"mesh\":\"default\",\"name\":\"web-1\",\"version\":{\"kumaDp\":{\"version\":\"2.9.0\"}}}",
            "[::1]:5678\n{\"mesh\":\"m\",\"name\":\"n\",\"features\":[\"feature-delta-grpc\"],\"dataplaneToken\":\"t\"}",
            "\n{\"mesh\":\"yes\",\"name\":\"0x10\",\"workdir\":\"~\",\"dynamicMetadata\":{\"a\":\"null\"}}",
            "{\"mesh\":\"a\\\"b\",\"name\":\"\\n: x\",\"version\":[1.5e300,-0,{}]}",
            "not json",
            "{\"mesh\":\"\",\"name\":\"x\"}",
        ] {
            assert_eq!(check_bootstrap(input.as_bytes()), Ok(()), "{input}");
        }
    }
}
