//! Dataplane: one proxy, its inbound services, outbounds and settings.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Duration, TagValues, validate_tags};
use crate::validation::{FieldPath, Violations, check_port, is_dns_name};

/// The `kuma.io/service` tag: the service an inbound belongs to.
pub const SERVICE_TAG: &str = "kuma.io/service";
/// The `kuma.io/protocol` tag: the protocol an inbound speaks.
pub const PROTOCOL_TAG: &str = "kuma.io/protocol";
/// The `kuma.io/zone` tag: the zone an inbound runs in.
pub const ZONE_TAG: &str = "kuma.io/zone";
/// The placeholder port of a serviceless inbound.
pub const SERVICELESS_PORT: u32 = 49151;

/// The Kubernetes form of a Dataplane: Kuma keeps `mesh` beside `spec`.
#[serde_with::skip_serializing_none]
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kuma.io",
    version = "v1alpha1",
    kind = "Dataplane",
    plural = "dataplanes",
    shortname = "dp",
    category = "kuma",
    namespaced,
    no_spec,
    printcolumn = r#"{"name":"kuma.io/service","type":"string","description":"Service tag of the first inbound","jsonPath":".spec.networking.inbound[0].tags['kuma\\.io/service']"}"#,
    printcolumn = r#"{"name":"kuma.io/service","type":"string","description":"Service tag of the second inbound","jsonPath":".spec.networking.inbound[1].tags['kuma\\.io/service']"}"#
)]
#[serde(deny_unknown_fields)]
pub struct DataplaneFields {
    /// The mesh the dataplane belongs to.
    pub mesh: Option<String>,
    /// The dataplane itself.
    pub spec: Option<DataplaneSpec>,
}

/// Dataplane spec; in Universal its fields sit at the top level beside `name`.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DataplaneSpec {
    /// Addresses, inbounds, outbounds and proxy settings.
    pub networking: Option<Networking>,
    /// A metrics backend overriding the mesh's.
    pub metrics: Option<MetricsBackend>,
    /// Virtual probes (deprecated).
    pub probes: Option<Probes>,
}

/// The dataplane's networking.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Networking {
    /// The proxy's IP (or resolvable hostname).
    pub address: Option<String>,
    /// The address other proxies use to reach this one.
    pub advertised_address: Option<String>,
    /// Services this proxy fronts.
    pub inbound: Option<Vec<Inbound>>,
    /// Destinations this proxy's app calls.
    pub outbound: Option<Vec<Outbound>>,
    /// Makes this proxy a gateway.
    pub gateway: Option<Gateway>,
    /// Transparent proxy settings.
    pub transparent_proxying: Option<TransparentProxying>,
    /// Envoy admin settings.
    pub admin: Option<Admin>,
    /// Embedded zone proxy listeners.
    pub listeners: Option<Vec<Listener>>,
}

/// The readiness state of an inbound.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum InboundState {
    /// Serving (default).
    #[default]
    Ready,
    /// Not serving.
    NotReady,
    /// Not part of the mesh.
    Ignored,
}

/// A service this proxy fronts.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Inbound {
    /// The port Envoy listens on.
    pub port: u32,
    /// The app's port; `port` by default.
    pub service_port: Option<u32>,
    /// The app's address; the inbound address by default.
    pub service_address: Option<String>,
    /// The address Envoy listens on; `networking.address` by default.
    pub address: Option<String>,
    /// Tags, including `kuma.io/service`.
    pub tags: Option<BTreeMap<String, String>>,
    /// Legacy health.
    pub health: Option<Health>,
    /// Active health checking of the app (Universal).
    pub service_probe: Option<ServiceProbe>,
    /// Readiness.
    pub state: Option<InboundState>,
    /// The inbound's name (its sectionName).
    pub name: Option<String>,
    /// The protocol; overrides the `kuma.io/protocol` tag.
    pub protocol: Option<String>,
}

/// Legacy health.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Health {
    /// Whether the inbound is ready.
    pub ready: Option<bool>,
}

/// Active health checking of the app.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceProbe {
    /// Time between probes.
    pub interval: Option<Duration>,
    /// Time to wait for a probe.
    pub timeout: Option<Duration>,
    /// Failures before unhealthy.
    pub unhealthy_threshold: Option<u32>,
    /// Successes before healthy.
    pub healthy_threshold: Option<u32>,
    /// Probe with a TCP connection.
    pub tcp: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A destination this proxy's app calls.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Outbound {
    /// The local address the app calls; 127.0.0.1 by default.
    pub address: Option<String>,
    /// The local port the app calls.
    pub port: u32,
    /// The destination by `kuma.io/service` (and other tags).
    pub tags: Option<BTreeMap<String, String>>,
    /// The destination as a resource.
    pub backend_ref: Option<OutboundBackendRef>,
}

/// An outbound destination resource.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutboundBackendRef {
    /// MeshService, MeshExternalService or MeshMultiZoneService.
    pub kind: String,
    /// The resource name.
    pub name: Option<String>,
    /// The resource port.
    pub port: Option<u32>,
    /// Labels selecting the resource.
    pub labels: Option<BTreeMap<String, String>>,
}

/// Gateway types.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[allow(clippy::upper_case_acronyms)]
pub enum GatewayType {
    /// A third-party gateway next to this proxy (default).
    #[default]
    DELEGATED,
    /// Kuma's builtin gateway.
    BUILTIN,
}

/// Makes the proxy a gateway.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Gateway {
    /// Tags, including `kuma.io/service`.
    pub tags: Option<BTreeMap<String, String>>,
    /// The gateway type.
    #[serde(rename = "type")]
    pub gateway_type: Option<GatewayType>,
}

/// IP families a transparent proxy handles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum IpFamilyMode {
    /// Not set.
    UnSpecified,
    /// IPv4 and IPv6.
    DualStack,
    /// IPv4 only.
    IPv4,
    /// IPv6 only.
    IPv6,
}

/// Transparent proxy settings.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TransparentProxying {
    /// The port inbound traffic is redirected to; 15006 by default.
    pub redirect_port_inbound: Option<u32>,
    /// The port outbound traffic is redirected to; 15001 by default.
    pub redirect_port_outbound: Option<u32>,
    /// Services reached directly, bypassing the mesh (`*` for all).
    pub direct_access_services: Option<Vec<String>>,
    /// The only services this proxy needs (by `kuma.io/service`).
    pub reachable_services: Option<Vec<String>>,
    /// IP families handled.
    pub ip_family_mode: Option<IpFamilyMode>,
    /// The only backends this proxy needs (by resource).
    pub reachable_backends: Option<ReachableBackends>,
}

/// Reachable backends.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReachableBackends {
    /// The backends.
    pub refs: Option<Vec<ReachableBackendRef>>,
}

/// A reachable backend.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReachableBackendRef {
    /// MeshService, MeshExternalService or MeshMultiZoneService.
    pub kind: String,
    /// The name.
    pub name: Option<String>,
    /// The namespace.
    pub namespace: Option<String>,
    /// The port.
    pub port: Option<u32>,
    /// Labels selecting backends.
    pub labels: Option<BTreeMap<String, String>>,
}

/// Envoy admin settings.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Admin {
    /// The admin port; 9901 by default.
    pub port: Option<u32>,
}

/// Embedded zone proxy listener types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ListenerType {
    /// Not set.
    Unspecified,
    /// Zone ingress.
    ZoneIngress,
    /// Zone egress.
    ZoneEgress,
}

/// An embedded zone proxy listener.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Listener {
    /// The type.
    #[serde(rename = "type")]
    pub listener_type: ListenerType,
    /// The address; `networking.address` by default.
    pub address: Option<String>,
    /// The port.
    pub port: u32,
    /// The listener's name.
    pub name: Option<String>,
    /// Readiness.
    pub state: Option<InboundState>,
}

/// A metrics backend.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricsBackend {
    /// The name.
    pub name: Option<String>,
    /// `prometheus`.
    #[serde(rename = "type")]
    pub backend_type: String,
    /// Backend settings.
    #[serde(default)]
    #[schemars(schema_with = "crate::common::any_object_schema")]
    pub conf: Option<serde_json::Value>,
}

/// Virtual probes.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Probes {
    /// The port of the virtual probe listener.
    pub port: Option<u32>,
    /// Probe endpoints.
    pub endpoints: Option<Vec<ProbeEndpoint>>,
}

/// A virtual probe endpoint.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProbeEndpoint {
    /// The app port probed.
    pub inbound_port: Option<u32>,
    /// The app path probed.
    pub inbound_path: Option<String>,
    /// The path on the probe listener.
    pub path: Option<String>,
}

/// The protocols an inbound may speak.
pub const PROTOCOLS: &[&str] = &["tcp", "tls", "http", "http2", "grpc", "kafka", "mysql"];

impl Inbound {
    /// The `kuma.io/service` tag.
    pub fn service(&self) -> Option<&str> {
        self.tags.as_ref()?.get(SERVICE_TAG).map(String::as_str)
    }

    /// The protocol: the `protocol` field, else the `kuma.io/protocol` tag, else `tcp`.
    pub fn protocol(&self) -> &str {
        self.protocol
            .as_deref()
            .or_else(|| {
                self.tags
                    .as_ref()
                    .and_then(|t| t.get(PROTOCOL_TAG))
                    .map(String::as_str)
            })
            .filter(|p| PROTOCOLS.contains(&p.to_ascii_lowercase().as_str()))
            .unwrap_or("tcp")
    }

    /// The inbound's name, or its port as text.
    pub fn section_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.port.to_string())
    }

    /// Whether the inbound serves traffic: Ready and not reported unhealthy.
    pub fn is_ready(&self) -> bool {
        self.state.unwrap_or_default() == InboundState::Ready
            && self.health.as_ref().and_then(|h| h.ready) != Some(false)
    }
}

impl DataplaneSpec {
    /// The networking section, empty when absent.
    pub fn networking(&self) -> &Networking {
        static EMPTY: Networking = Networking {
            address: None,
            advertised_address: None,
            inbound: None,
            outbound: None,
            gateway: None,
            transparent_proxying: None,
            admin: None,
            listeners: None,
        };
        self.networking.as_ref().unwrap_or(&EMPTY)
    }

    /// The inbounds.
    pub fn inbounds(&self) -> &[Inbound] {
        self.networking().inbound.as_deref().unwrap_or(&[])
    }

    /// The outbounds.
    pub fn outbounds(&self) -> &[Outbound] {
        self.networking().outbound.as_deref().unwrap_or(&[])
    }

    /// Whether this proxy is a gateway (builtin or delegated).
    pub fn is_gateway(&self) -> bool {
        self.networking().gateway.is_some()
    }

    /// Whether this proxy is a builtin gateway.
    pub fn is_builtin_gateway(&self) -> bool {
        self.networking().gateway.as_ref().and_then(|g| g.gateway_type) == Some(GatewayType::BUILTIN)
    }

    /// Whether this proxy is a delegated gateway.
    pub fn is_delegated_gateway(&self) -> bool {
        self.networking()
            .gateway
            .as_ref()
            .is_some_and(|g| g.gateway_type.unwrap_or_default() == GatewayType::DELEGATED)
    }

    /// The `kuma.io/service` of the first inbound, or of the gateway.
    pub fn service(&self) -> Option<&str> {
        self.inbounds().iter().find_map(Inbound::service).or_else(|| {
            self.networking()
                .gateway
                .as_ref()?
                .tags
                .as_ref()?
                .get(SERVICE_TAG)
                .map(String::as_str)
        })
    }

    /// The IP Envoy binds inbound `i` on.
    pub fn inbound_address<'a>(&'a self, inbound: &'a Inbound) -> &'a str {
        inbound
            .address
            .as_deref()
            .or(self.networking().address.as_deref())
            .unwrap_or("")
    }

    /// Appends every problem; paths are relative to the spec (Universal form).
    pub fn validate(&self, root: &FieldPath, v: &mut Violations) {
        let np = root.field("networking");
        let Some(net) = &self.networking else {
            v.add(&np, "must be defined");
            return;
        };
        match net.address.as_deref() {
            None | Some("") => v.add(&np.field("address"), "address can't be empty"),
            Some("0.0.0.0" | "::") => v.add(&np.field("address"), "must not be 0.0.0.0 or ::"),
            Some(a) => {
                if a.parse::<IpAddr>().is_err() && !is_dns_name(a) {
                    v.add(
                        &np.field("address"),
                        "address has to be valid IP address or domain name",
                    );
                }
            }
        }
        if let Some(a) = net.advertised_address.as_deref()
            && a.parse::<IpAddr>().is_err()
            && !is_dns_name(a)
        {
            v.add(
                &np.field("advertisedAddress"),
                "has to be valid IP address or domain name",
            );
        }
        let inbounds = net.inbound.as_deref().unwrap_or(&[]);
        let outbounds = net.outbound.as_deref().unwrap_or(&[]);
        let listeners = net.listeners.as_deref().unwrap_or(&[]);
        if let Some(gw) = &net.gateway {
            let builtin = gw.gateway_type == Some(GatewayType::BUILTIN);
            let what = if builtin { "builtin" } else { "delegated" };
            if !inbounds.is_empty() {
                v.add(
                    &np.field("inbound"),
                    format!("inbound cannot be defined for {what} gateways"),
                );
            }
            if builtin && !outbounds.is_empty() {
                v.add(
                    &np.field("outbound"),
                    "outbound cannot be defined for builtin gateways",
                );
            }
            if !listeners.is_empty() {
                v.add(
                    &np.field("listeners"),
                    format!("listeners cannot be defined for {what} gateways"),
                );
            }
            let tags = gw.tags.clone().unwrap_or_default();
            let tp = np.field("gateway").field("tags");
            if !tags.contains_key(SERVICE_TAG) {
                v.add(&tp, "mandatory tag \"kuma.io/service\" is missing");
            }
            if let Some(p) = tags.get(PROTOCOL_TAG)
                && p != "tcp"
            {
                v.add(
                    &tp.key(PROTOCOL_TAG),
                    format!("other values than tcp are not allowed, provided value {p:?}"),
                );
            }
            validate_tags(&tags, TagValues::Plain, &tp, v);
        } else if inbounds.is_empty()
            && outbounds.is_empty()
            && net.transparent_proxying.is_none()
            && listeners.is_empty()
        {
            v.add(
                &np,
                "must define at least one inbound or a gateway (or outbounds or transparentProxying for a client-only proxy)",
            );
        }
        let mut section_names = BTreeSet::new();
        for (i, inbound) in inbounds.iter().enumerate() {
            let ip = np.field("inbound").index(i);
            check_port(inbound.port, &ip.field("port"), v);
            if let Some(sp) = inbound.service_port {
                check_port(sp, &ip.field("servicePort"), v);
            }
            let same_port = inbound.service_port.is_none_or(|p| p == inbound.port);
            if let Some(sa) = inbound.service_address.as_deref() {
                if sa.parse::<IpAddr>().is_err() {
                    v.add(
                        &ip.field("serviceAddress"),
                        "serviceAddress has to be valid IP address",
                    );
                } else if Some(sa) == inbound.address.as_deref().or(net.address.as_deref()) && same_port {
                    v.add(
                        &ip.field("serviceAddress"),
                        "serviceAddress and servicePort has to differ from address and port",
                    );
                }
            }
            if let Some(a) = inbound.address.as_deref()
                && a.parse::<IpAddr>().is_err()
            {
                v.add(&ip.field("address"), "address has to be valid IP address");
            }
            let tags = inbound.tags.clone().unwrap_or_default();
            if let Some(p) = tags.get(PROTOCOL_TAG)
                && !PROTOCOLS.contains(&p.to_ascii_lowercase().as_str())
            {
                v.add(
                    &ip.field("tags").key(PROTOCOL_TAG),
                    format!(
                        "tag \"kuma.io/protocol\" has an invalid value {p:?}. Allowed values: {}",
                        PROTOCOLS.join(", ")
                    ),
                );
            }
            validate_tags(&tags, TagValues::Plain, &ip.field("tags"), v);
            if let Some(p) = &inbound.protocol
                && !PROTOCOLS.contains(&p.to_ascii_lowercase().as_str())
            {
                v.add(
                    &ip.field("protocol"),
                    format!(
                        "has an invalid value {p:?}. Allowed values: {}",
                        PROTOCOLS.join(", ")
                    ),
                );
            }
            if let Some(probe) = &inbound.service_probe {
                for (d, name) in [(&probe.interval, "interval"), (&probe.timeout, "timeout")] {
                    if let Some(d) = d {
                        crate::validation::check_positive_duration(
                            d,
                            &ip.field("serviceProbe").field(name),
                            v,
                        );
                    }
                }
                for (n, name) in [
                    (probe.unhealthy_threshold, "unhealthyThreshold"),
                    (probe.healthy_threshold, "healthyThreshold"),
                ] {
                    if n == Some(0) {
                        v.add(
                            &ip.field("serviceProbe").field(name),
                            "must have a positive value",
                        );
                    }
                }
            }
            if !tags.is_empty() && !tags.contains_key(SERVICE_TAG) {
                v.add(&ip.field("tags").key(SERVICE_TAG), "tag has to exist");
            }
            if !section_names.insert(inbound.section_name()) {
                v.add(
                    &ip.field("name"),
                    format!(
                        "name {:?} must be unique across inbounds and listeners",
                        inbound.section_name()
                    ),
                );
            }
        }
        for (i, outbound) in outbounds.iter().enumerate() {
            let op = np.field("outbound").index(i);
            check_port(outbound.port, &op.field("port"), v);
            if let Some(a) = outbound.address.as_deref()
                && a.parse::<IpAddr>().is_err()
            {
                v.add(&op.field("address"), "address has to be valid IP address");
            }
            let tags = outbound.tags.clone().unwrap_or_default();
            match &outbound.backend_ref {
                Some(b) => {
                    let bp = op.field("backendRef");
                    if !["MeshService", "MeshExternalService", "MeshMultiZoneService"]
                        .contains(&b.kind.as_str())
                    {
                        v.add(
                            &bp.field("kind"),
                            "invalid value. Available values are: MeshExternalService,MeshMultiZoneService,MeshService",
                        );
                    }
                    if b.name.is_none() && b.labels.as_ref().is_none_or(BTreeMap::is_empty) {
                        v.add(&bp, "either 'name' or 'labels' should be specified");
                    }
                    if b.kind != "MeshExternalService" {
                        match b.port {
                            Some(p) => check_port(p, &bp.field("port"), v),
                            None => v.add(&bp.field("port"), "must be defined"),
                        }
                    }
                    if !tags.is_empty() {
                        v.add(&bp, "both backendRef and tags/service cannot be defined");
                    }
                }
                None => {
                    if !tags.contains_key(SERVICE_TAG) {
                        v.add(&op.field("tags"), "mandatory tag \"kuma.io/service\" is missing");
                    }
                    validate_tags(&tags, TagValues::Plain, &op.field("tags"), v);
                }
            }
        }
        if let Some(tp) = &net.transparent_proxying {
            let tpp = np.field("transparentProxying");
            for (port, name) in [
                (tp.redirect_port_inbound, "redirectPortInbound"),
                (tp.redirect_port_outbound, "redirectPortOutbound"),
            ] {
                if let Some(p) = port {
                    check_port(p, &tpp.field(name), v);
                }
            }
            for (i, r) in tp
                .reachable_backends
                .iter()
                .flat_map(|r| r.refs.iter().flatten())
                .enumerate()
            {
                let rp = tpp.field("reachableBackends").field("refs").index(i);
                if !["MeshService", "MeshExternalService", "MeshMultiZoneService"].contains(&r.kind.as_str())
                {
                    v.add(&rp.field("kind"), "invalid value. Available values are: MeshExternalService,MeshMultiZoneService,MeshService");
                }
                let has_labels = r.labels.as_ref().is_some_and(|l| !l.is_empty());
                if r.name.is_none() && r.namespace.is_none() && !has_labels {
                    v.add(&rp.field("name"), "name or labels are required");
                }
                if r.name.is_none() && r.namespace.is_some() {
                    v.add(&rp.field("name"), "name is required, when namespace is defined");
                }
                if (r.name.is_some() || r.namespace.is_some()) && has_labels {
                    v.add(
                        &rp.field("labels"),
                        "labels cannot be defined when name is specified",
                    );
                }
            }
        }
        if let Some(admin) = net.admin.as_ref().and_then(|a| a.port) {
            check_port(admin, &np.field("admin").field("port"), v);
            if inbounds
                .iter()
                .any(|i| i.port == admin || i.service_port == Some(admin))
            {
                v.add(&np.field("admin").field("port"), "must differ from inbound");
            }
            if outbounds.iter().any(|o| o.port == admin) {
                v.add(&np.field("admin").field("port"), "must differ from outbound");
            }
        }
        for (i, l) in listeners.iter().enumerate() {
            let lp = np.field("listeners").index(i);
            if l.listener_type == ListenerType::Unspecified {
                v.add(&lp.field("type"), "type must be ZoneIngress or ZoneEgress");
            }
            check_port(l.port, &lp.field("port"), v);
            let name = l.name.clone().unwrap_or_else(|| l.port.to_string());
            if !section_names.insert(name.clone()) {
                v.add(
                    &lp.field("name"),
                    format!("name {name:?} must be unique across inbounds and listeners"),
                );
            }
        }
        if let Some(probes) = &self.probes {
            let pp = root.field("probes");
            if let Some(p) = probes.port {
                check_port(p, &pp.field("port"), v);
            }
            for (i, e) in probes.endpoints.iter().flatten().enumerate() {
                let ep = pp.field("endpoints").index(i);
                if let Some(p) = e.inbound_port {
                    check_port(p, &ep.field("inboundPort"), v);
                }
                for (path, name) in [(&e.inbound_path, "inboundPath"), (&e.path, "path")] {
                    if path.as_deref().is_some_and(|p| !p.starts_with('/')) {
                        v.add(&ep.field(name), "should be a valid URL Path");
                    }
                }
            }
        }
        if let Some(m) = &self.metrics
            && m.backend_type != "prometheus"
        {
            v.add(
                &root.field("metrics").field("type"),
                "unknown backend type. Available backends: \"prometheus\"",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(yaml: &str) -> Vec<String> {
        let spec: DataplaneSpec = serde_yaml::from_str(yaml).unwrap();
        let mut v = Violations::new();
        spec.validate(&FieldPath::root(), &mut v);
        v.into_vec().into_iter().map(|v| v.to_string()).collect()
    }

    #[test]
    fn valid_sidecar() {
        let errs = errors(
            r#"
networking:
  address: 192.168.0.1
  inbound:
    - port: 8080
      servicePort: 7777
      name: http
      tags: {kuma.io/service: backend, kuma.io/protocol: http, version: "1"}
  outbound:
    - port: 3333
      tags: {kuma.io/service: redis}
  admin: {port: 9901}
"#,
        );
        assert!(errs.is_empty(), "{errs:?}");
    }

    #[test]
    fn needs_something_to_do() {
        assert_eq!(
            errors("networking: {address: 10.0.0.1}"),
            vec![
                "networking: must define at least one inbound or a gateway (or outbounds or transparentProxying for a client-only proxy)"
            ]
        );
    }

    #[test]
    fn inbound_problems() {
        let errs = errors(
            r#"
networking:
  address: 0.0.0.0
  inbound:
    - port: 0
      serviceAddress: not-an-ip
      tags: {kuma.io/protocol: smtp, version: "v 1"}
  outbound:
    - {port: 70000}
"#,
        );
        assert_eq!(
            errs,
            vec![
                "networking.address: must not be 0.0.0.0 or ::",
                "networking.inbound[0].port: must be in the range [1, 65535]",
                "networking.inbound[0].serviceAddress: serviceAddress has to be valid IP address",
                "networking.inbound[0].tags[\"kuma.io/protocol\"]: tag \"kuma.io/protocol\" has an invalid value \"smtp\". Allowed values: tcp, tls, http, http2, grpc, kafka, mysql",
                "networking.inbound[0].tags[\"version\"]: tag value must consist of alphanumeric characters, dots, dashes and underscores",
                "networking.inbound[0].tags[\"kuma.io/service\"]: tag has to exist",
                "networking.outbound[0].port: must be in the range [1, 65535]",
                "networking.outbound[0].tags: mandatory tag \"kuma.io/service\" is missing",
            ]
        );
    }
}
