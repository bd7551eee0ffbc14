//! MeshPassthrough: which traffic to destinations outside the mesh a
//! transparent proxy lets through.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{PolicyContext, PolicySpec, spec_path, validate_top};
use crate::common::{TargetRef, TargetRefKind::*, TargetRefRules};
use crate::resource::ResourceType;
use crate::validation::{Violations, is_dns_name};

/// MeshPassthrough spec.
#[serde_with::skip_serializing_none]
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kuma.io",
    version = "v1alpha1",
    kind = "MeshPassthrough",
    plural = "meshpassthroughs",
    shortname = "mp",
    category = "kuma",
    namespaced,
    printcolumn = r#"{"name":"TargetRef Kind","type":"string","jsonPath":".spec.targetRef.kind"}"#,
    printcolumn = r#"{"name":"TargetRef Name","type":"string","jsonPath":".spec.targetRef.name"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshPassthroughSpec {
    /// The proxies configured; `{kind: Mesh}` when absent.
    pub target_ref: Option<TargetRef>,
    /// The passthrough configuration.
    pub default: Option<Conf>,
}

/// Which traffic passes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PassthroughMode {
    /// Everything.
    All,
    /// Only what `appendMatch` lists (default).
    Matched,
    /// Nothing.
    None,
}

/// Passthrough configuration.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Conf {
    /// The mode; `Matched` when absent.
    pub passthrough_mode: Option<PassthroughMode>,
    /// Allowed destinations, concatenated across policies.
    pub append_match: Option<Vec<Match>>,
}

/// How a destination is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum MatchType {
    /// A domain, optionally `*.`-wildcarded.
    Domain,
    /// An IP address.
    IP,
    /// An IP range.
    CIDR,
}

/// Protocols of passthrough destinations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Raw TCP.
    Tcp,
    /// TLS (matched by SNI).
    Tls,
    /// gRPC.
    Grpc,
    /// HTTP/1.1.
    Http,
    /// HTTP/2.
    Http2,
    /// MySQL.
    Mysql,
}

/// An allowed destination.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Match {
    /// How `value` is written.
    #[serde(rename = "type")]
    pub match_type: MatchType,
    /// The domain, IP or CIDR.
    pub value: String,
    /// The port; all ports when absent.
    pub port: Option<u32>,
    /// The protocol; `tcp` when absent.
    pub protocol: Option<Protocol>,
}

/// Parses `a.b.c.d/n` or `x::/n`.
pub fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (ip, len) = s.split_once('/')?;
    let ip: IpAddr = ip.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some((ip, len))
}

impl PolicySpec for MeshPassthroughSpec {
    const TYPE: ResourceType = ResourceType::MeshPassthrough;
    type Conf = Conf;

    fn validate(&self, _ctx: &PolicyContext, v: &mut Violations) {
        validate_top(
            &self.target_ref,
            TargetRefRules::kinds(&[Mesh, MeshSubset, Dataplane]),
            v,
        );
        let mp = spec_path().field("default").field("appendMatch");
        let mut protocol_by_port: BTreeMap<u32, Protocol> = BTreeMap::new();
        let mut seen = BTreeSet::new();
        let l7 = |p: Protocol| matches!(p, Protocol::Grpc | Protocol::Http | Protocol::Http2);
        for (i, m) in self
            .default
            .iter()
            .flat_map(|d| d.append_match.iter().flatten())
            .enumerate()
        {
            let p = mp.index(i);
            let protocol = m.protocol.unwrap_or(Protocol::Tcp);
            if protocol == Protocol::Mysql && m.port.is_none() {
                v.add(&p.field("port"), "port must be defined for Mysql protocol");
            }
            if let Some(port) = m.port {
                crate::validation::check_port(port, &p.field("port"), v);
                match protocol_by_port.get(&port) {
                    Some(first) if *first != protocol && l7(protocol) => v.add(
                        &p.field("port"),
                        "using the same port in multiple matches requires the same protocol for the following protocols: [grpc http http2]",
                    ),
                    Some(_) => {}
                    None => {
                        protocol_by_port.insert(port, protocol);
                    }
                }
                if !seen.insert((port, protocol, m.value.clone())) {
                    v.add(
                        &p.field("value"),
                        format!("value {} is already defined for this port and protocol", m.value),
                    );
                }
            }
            match m.match_type {
                MatchType::CIDR => {
                    if parse_cidr(&m.value).is_none() {
                        v.add(&p.field("value"), "provided CIDR has incorrect value");
                    }
                }
                MatchType::IP => {
                    if m.value.parse::<IpAddr>().is_err() {
                        v.add(&p.field("value"), "provided IP has incorrect value");
                    }
                }
                MatchType::Domain => {
                    if matches!(protocol, Protocol::Tcp | Protocol::Mysql) {
                        v.add(
                            &p.field("protocol"),
                            format!(
                                "protocol {} is not supported for a domain",
                                serde_json::to_value(protocol)
                                    .ok()
                                    .and_then(|x| x.as_str().map(String::from))
                                    .unwrap_or_default()
                            ),
                        );
                    }
                    if m.value.starts_with('*') && !m.value.starts_with("*.") {
                        v.add(
                            &p.field("value"),
                            "provided DNS has incorrect value, partial wildcard is currently not supported",
                        );
                    } else {
                        if m.port.is_none() && m.value.starts_with('*') && l7(protocol) {
                            v.add(
                                &p.field("port"),
                                "wildcard domains doesn't work for all ports and layer 7 protocol",
                            );
                        }
                        let rest = m.value.strip_prefix("*.").unwrap_or(&m.value);
                        if !is_dns_name(&rest.to_ascii_lowercase()) {
                            v.add(&p.field("value"), "provided DNS has incorrect value");
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::violations;
    use super::*;

    #[test]
    fn matches() {
        let errs = violations::<MeshPassthroughSpec>(
            r#"
default:
  passthroughMode: Matched
  appendMatch:
    - {type: IP, value: 192.168.1.1, port: 8000, protocol: tcp}
    - {type: Domain, value: example.com, protocol: tcp}
    - {type: IP, value: 300.1.1.1}
    - {type: CIDR, value: 1.2.3.4/33}
    - {type: Domain, value: "*w.example.com", protocol: tls}
    - {type: Domain, value: "*.example.com", protocol: http}
    - {type: Domain, value: google.com, port: 443, protocol: tls}
    - {type: Domain, value: google.com, port: 443, protocol: tls}
    - {type: IP, value: 10.0.0.1, protocol: mysql}
    - {type: Domain, value: x.com, port: 8000, protocol: http}
"#,
        );
        assert_eq!(
            errs,
            vec![
                "spec.default.appendMatch[1].protocol: protocol tcp is not supported for a domain",
                "spec.default.appendMatch[2].value: provided IP has incorrect value",
                "spec.default.appendMatch[3].value: provided CIDR has incorrect value",
                "spec.default.appendMatch[4].value: provided DNS has incorrect value, partial wildcard is currently not supported",
                "spec.default.appendMatch[5].port: wildcard domains doesn't work for all ports and layer 7 protocol",
                "spec.default.appendMatch[7].value: value google.com is already defined for this port and protocol",
                "spec.default.appendMatch[8].port: port must be defined for Mysql protocol",
                "spec.default.appendMatch[9].port: using the same port in multiple matches requires the same protocol for the following protocols: [grpc http http2]",
            ]
        );
    }
}
