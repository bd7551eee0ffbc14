//! MeshService and MeshExternalService: destinations as resources.

use std::collections::BTreeMap;
use std::net::IpAddr;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::IntOrString;
use crate::policies::mesh_tls::Version;
use crate::validation::{FieldPath, Violations, check_port, is_dns_name};

/// MeshService spec.
#[serde_with::skip_serializing_none]
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kuma.io",
    version = "v1alpha1",
    kind = "MeshService",
    plural = "meshservices",
    shortname = "msvc",
    category = "kuma",
    namespaced,
    status = "MeshServiceStatus",
    printcolumn = r#"{"name":"Hostname","type":"string","jsonPath":".status.addresses[0].hostname"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshServiceSpec {
    /// Whether the service has healthy endpoints.
    pub state: Option<MeshServiceState>,
    /// Which dataplanes back the service.
    pub selector: Option<Selector>,
    /// The service's ports.
    pub ports: Option<Vec<Port>>,
    /// Identities the service's proxies have.
    pub identities: Option<Vec<Identity>>,
}

/// MeshService states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum MeshServiceState {
    /// It has healthy endpoints.
    Available,
    /// It has none.
    Unavailable,
}

/// Which dataplanes back a MeshService; exactly one field.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Selector {
    /// Dataplanes whose inbound tags match.
    pub dataplane_tags: Option<BTreeMap<String, String>>,
    /// One dataplane by name.
    pub dataplane_ref: Option<DataplaneRef>,
    /// Dataplanes whose labels match.
    pub dataplane_labels: Option<LabelSelector>,
}

/// A dataplane by name.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DataplaneRef {
    /// The name.
    pub name: String,
}

/// Labels that must all be equal.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    /// The labels.
    pub match_labels: Option<BTreeMap<String, String>>,
}

/// A MeshService port.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Port {
    /// The port's name (its sectionName).
    pub name: Option<String>,
    /// The port clients use.
    pub port: u32,
    /// The app's port, by number or inbound name.
    pub target_port: Option<IntOrString>,
    /// The protocol; `tcp` by default.
    pub app_protocol: Option<String>,
}

/// An identity of a MeshService's proxies.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Identity {
    /// `ServiceTag` or `SpiffeID`.
    #[serde(rename = "type")]
    pub identity_type: IdentityType,
    /// The value.
    pub value: String,
}

/// Identity types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum IdentityType {
    /// A `kuma.io/service` value.
    ServiceTag,
    /// A SPIFFE ID.
    SpiffeID,
}

/// MeshService status, written by the control plane.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeshServiceStatus {
    /// Host names of the service.
    pub addresses: Option<Vec<Address>>,
    /// Virtual IPs of the service.
    pub vips: Option<Vec<Vip>>,
    /// Proxy counts.
    pub dataplane_proxies: Option<DataplaneProxies>,
    /// TLS readiness.
    #[serde(default)]
    #[schemars(schema_with = "crate::common::any_object_schema")]
    pub tls: Option<serde_json::Value>,
    /// Host name generators that produced addresses.
    #[serde(default)]
    #[schemars(schema_with = "crate::common::any_json_schema")]
    pub hostname_generators: Option<serde_json::Value>,
}

/// A host name of a service.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Address {
    /// The host name.
    pub hostname: Option<String>,
    /// Where it came from.
    pub origin: Option<String>,
    /// The generator that produced it.
    #[serde(default)]
    #[schemars(schema_with = "crate::common::any_object_schema")]
    pub hostname_generator_ref: Option<serde_json::Value>,
}

/// A virtual IP.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Vip {
    /// The IP.
    pub ip: String,
}

/// Proxy counts.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataplaneProxies {
    /// Connected proxies.
    pub connected: Option<u32>,
    /// Healthy proxies.
    pub healthy: Option<u32>,
    /// All proxies.
    pub total: Option<u32>,
}

impl MeshServiceSpec {
    /// Appends every problem; paths start with `spec`.
    pub fn validate(&self, v: &mut Violations) {
        let sp = FieldPath::new("spec");
        if let Some(sel) = &self.selector {
            let set = [
                sel.dataplane_tags.is_some(),
                sel.dataplane_ref.is_some(),
                sel.dataplane_labels.is_some(),
            ]
            .into_iter()
            .filter(|x| *x)
            .count();
            if set > 1 {
                v.add(
                    &sp.field("selector"),
                    "must specify only one of: dataplaneTags, dataplaneRef, or dataplaneLabels",
                );
            }
        }
        for (i, port) in self.ports.iter().flatten().enumerate() {
            let pp = sp.field("ports").index(i);
            check_port(port.port, &pp.field("port"), v);
            if let Some(IntOrString::Int(t)) = &port.target_port
                && !(1..=65535).contains(t)
            {
                v.add(&pp.field("targetPort"), "must be in the range [1, 65535]");
            }
            if let Some(p) = &port.app_protocol
                && !crate::dataplane::PROTOCOLS.contains(&p.as_str())
            {
                v.add(
                    &pp.field("appProtocol"),
                    format!(
                        "has an invalid value {p:?}. Allowed values: {}",
                        crate::dataplane::PROTOCOLS.join(", ")
                    ),
                );
            }
        }
    }
}

/// MeshExternalService spec.
#[serde_with::skip_serializing_none]
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kuma.io",
    version = "v1alpha1",
    kind = "MeshExternalService",
    plural = "meshexternalservices",
    shortname = "extsvc",
    category = "kuma",
    namespaced,
    status = "MeshExternalServiceStatus",
    printcolumn = r#"{"name":"Hostname","type":"string","jsonPath":".status.addresses[0].hostname"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshExternalServiceSpec {
    /// How traffic to the service is recognised.
    #[serde(rename = "match")]
    pub match_: ExternalMatch,
    /// A custom extension.
    pub extension: Option<Extension>,
    /// Where the service is.
    pub endpoints: Option<Vec<Endpoint>>,
    /// TLS towards the service.
    pub tls: Option<ExternalTls>,
}

/// How traffic to an external service is recognised.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExternalMatch {
    /// `HostnameGenerator`.
    #[serde(rename = "type")]
    pub match_type: Option<String>,
    /// The port.
    pub port: u32,
    /// `tcp` (default), `grpc`, `http` or `http2`.
    pub protocol: Option<String>,
}

/// An extension.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Extension {
    /// The extension type.
    #[serde(rename = "type")]
    pub extension_type: String,
    /// Its configuration.
    #[serde(default)]
    #[schemars(schema_with = "crate::common::any_json_schema")]
    pub config: Option<serde_json::Value>,
}

/// An external endpoint.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Endpoint {
    /// IP or host name.
    pub address: String,
    /// Port.
    pub port: u32,
    /// Priority (lower first).
    pub priority: Option<u32>,
}

/// TLS towards an external service.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExternalTls {
    /// Whether to originate TLS.
    pub enabled: Option<bool>,
    /// TLS versions.
    pub version: Option<Version>,
    /// Whether renegotiation is allowed.
    pub allow_renegotiation: Option<bool>,
    /// Server verification.
    pub verification: Option<Verification>,
}

/// Verification of an external server.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Verification {
    /// `Secured` (default), `SkipSAN`, `SkipCA` or `SkipAll`.
    pub mode: Option<String>,
    /// The SNI to send.
    pub server_name: Option<String>,
    /// Accepted SANs.
    pub subject_alt_names: Option<Vec<SubjectAltName>>,
    /// The CA to trust.
    #[serde(default)]
    #[schemars(schema_with = "crate::common::any_object_schema")]
    pub ca_cert: Option<serde_json::Value>,
    /// A client certificate.
    #[serde(default)]
    #[schemars(schema_with = "crate::common::any_object_schema")]
    pub client_cert: Option<serde_json::Value>,
    /// A client key.
    #[serde(default)]
    #[schemars(schema_with = "crate::common::any_object_schema")]
    pub client_key: Option<serde_json::Value>,
}

/// An accepted SAN.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubjectAltName {
    /// `Exact` (default) or `Prefix`.
    #[serde(rename = "type")]
    pub san_type: Option<String>,
    /// The value.
    pub value: String,
}

/// MeshExternalService status.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeshExternalServiceStatus {
    /// The virtual IP.
    pub vip: Option<Vip>,
    /// Host names.
    pub addresses: Option<Vec<Address>>,
    /// Host name generators.
    #[serde(default)]
    #[schemars(schema_with = "crate::common::any_json_schema")]
    pub hostname_generators: Option<serde_json::Value>,
}

impl MeshExternalServiceSpec {
    /// Appends every problem; paths start with `spec`.
    pub fn validate(&self, v: &mut Violations) {
        let sp = FieldPath::new("spec");
        let mp = sp.field("match");
        if let Some(t) = self.match_.match_type.as_deref()
            && t != "HostnameGenerator"
        {
            v.add(
                &mp.field("type"),
                format!("unrecognized type '{t}' - only 'HostnameGenerator' is supported"),
            );
        }
        check_port(self.match_.port, &mp.field("port"), v);
        if let Some(p) = self.match_.protocol.as_deref()
            && !["tcp", "grpc", "http", "http2"].contains(&p)
        {
            v.add(
                &mp.field("protocol"),
                "\"protocol\" must be one of [\"tcp\", \"grpc\", \"http\", \"http2\"]",
            );
        }
        if let Some(ext) = &self.extension {
            if ext.extension_type.is_empty() {
                v.add(&sp.field("extension").field("type"), "must not be empty");
            }
            return;
        }
        let endpoints = self.endpoints.as_deref().unwrap_or(&[]);
        if endpoints.is_empty() {
            v.add(&sp.field("endpoints"), "must be defined when extension is not");
        }
        for (i, e) in endpoints.iter().enumerate() {
            let ep = sp.field("endpoints").index(i);
            if e.address.parse::<IpAddr>().is_err() && !is_dns_name(&e.address) {
                v.add(&ep.field("address"), "address has to be a valid IP or hostname");
            }
            check_port(e.port, &ep.field("port"), v);
        }
        if let Some(tls) = &self.tls {
            let tp = sp.field("tls");
            if let Some(version) = &tls.version {
                version.validate(&tp.field("version"), v);
            }
            if let Some(ver) = &tls.verification {
                let vp = tp.field("verification");
                if let Some(sn) = &ver.server_name
                    && !is_dns_name(sn)
                {
                    v.add(&vp.field("serverName"), "must be a valid DNS name");
                }
                if let Some(m) = ver.mode.as_deref()
                    && !["SkipSAN", "SkipCA", "SkipAll", "Secured"].contains(&m)
                {
                    v.add(
                        &vp.field("mode"),
                        "\"mode\" must be one of [\"SkipSAN\", \"SkipCA\", \"SkipAll\", \"Secured\"]",
                    );
                }
                for (i, san) in ver.subject_alt_names.iter().flatten().enumerate() {
                    if san
                        .san_type
                        .as_deref()
                        .is_some_and(|t| t != "Exact" && t != "Prefix")
                    {
                        v.add(
                            &vp.field("subjectAltNames").index(i).field("type"),
                            "\"type\" must be one of [\"Prefix\", \"Exact\"]",
                        );
                    }
                }
                match (&ver.client_cert, &ver.client_key) {
                    (Some(_), None) => v.add(
                        &vp.field("clientKey"),
                        "must be defined when clientCert is defined",
                    ),
                    (None, Some(_)) => v.add(
                        &vp.field("clientCert"),
                        "must be defined when clientKey is defined",
                    ),
                    _ => {}
                }
                for (ds, name) in [
                    (&ver.ca_cert, "caCert"),
                    (&ver.client_cert, "clientCert"),
                    (&ver.client_key, "clientKey"),
                ] {
                    if let Some(ds) = ds {
                        crate::mesh::validate_data_source(ds, &vp.field(name), v);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mesh_service_selector() {
        let spec: MeshServiceSpec = serde_yaml::from_str(
            "selector: {dataplaneTags: {app: x}, dataplaneRef: {name: y}}\nports: [{port: 0}]",
        )
        .unwrap();
        let mut v = Violations::new();
        spec.validate(&mut v);
        let errs: Vec<_> = v.into_vec().into_iter().map(|v| v.to_string()).collect();
        assert_eq!(
            errs,
            vec![
                "spec.selector: must specify only one of: dataplaneTags, dataplaneRef, or dataplaneLabels",
                "spec.ports[0].port: must be in the range [1, 65535]",
            ]
        );
    }

    #[test]
    fn external_service() {
        let spec: MeshExternalServiceSpec = serde_yaml::from_str(
            r#"
match: {type: HostnameGenerator, port: 443, protocol: smtp}
endpoints: [{address: "bad host", port: 443}]
tls: {verification: {clientCert: {inline: x}}}
"#,
        )
        .unwrap();
        let mut v = Violations::new();
        spec.validate(&mut v);
        let errs: Vec<_> = v.into_vec().into_iter().map(|v| v.to_string()).collect();
        assert_eq!(
            errs,
            vec![
                "spec.match.protocol: \"protocol\" must be one of [\"tcp\", \"grpc\", \"http\", \"http2\"]",
                "spec.endpoints[0].address: address has to be a valid IP or hostname",
                "spec.tls.verification.clientKey: must be defined when clientCert is defined",
            ]
        );
    }
}
