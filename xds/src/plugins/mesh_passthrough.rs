//! MeshPassthrough: which destinations outside the mesh a transparent proxy
//! lets through — everything, nothing, or the listed domains, IPs and CIDRs.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3::CidrRange;
use envoy_types::pb::envoy::config::listener::v3::{
    FilterChain, FilterChainMatch, ListenerFilter, listener_filter,
};
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, RouteConfiguration, VirtualHost, route,
};
use envoy_types::pb::envoy::extensions::filters::listener::http_inspector::v3::HttpInspector;
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use kuma_crds::policies::mesh_passthrough::{Conf, Match, MatchType, PassthroughMode, Protocol, parse_cidr};
use kuma_crds::resource::ResourceType;

use crate::context::{MeshContext, Proxy};
use crate::envoy;
use crate::generate::{Policies, original_dst_cluster};
use crate::resources::{Origin, Resource, ResourceSet, XdsType};

const T: ResourceType = ResourceType::MeshPassthrough;

fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Tls => "tls",
        Protocol::Grpc => "grpc",
        Protocol::Http => "http",
        Protocol::Http2 => "http2",
        Protocol::Mysql => "mysql",
    }
}

fn port_text(port: Option<u32>) -> String {
    port.map(|p| p.to_string()).unwrap_or_else(|| "*".into())
}

fn cidr(m: &Match) -> Option<CidrRange> {
    let (ip, len) = match m.match_type {
        MatchType::IP => {
            let ip: std::net::IpAddr = m.value.parse().ok()?;
            (ip, if ip.is_ipv4() { 32 } else { 128 })
        }
        MatchType::CIDR => parse_cidr(&m.value)?,
        MatchType::Domain => return None,
    };
    Some(CidrRange {
        address_prefix: ip.to_string(),
        prefix_len: Some(envoy::u32_value(u32::from(len))),
    })
}

fn cluster_for(rs: &mut ResourceSet, name: &str, http2: bool) {
    let mut c = original_dst_cluster(name);
    if http2 {
        envoy::set_upstream_http(&mut c, true);
    }
    rs.add(Origin::Passthrough, Resource::Cluster(c));
}

/// The filter chains letting the matched destinations through.
fn chains(matches: &[Match], rs: &mut ResourceSet) -> Vec<FilterChain> {
    let mut out = Vec::new();
    // HTTP-like domains on one port share a chain with one virtual host each.
    let mut http_domains: BTreeMap<(Protocol, Option<u32>), Vec<&Match>> = BTreeMap::new();
    for m in matches {
        let protocol = m.protocol.unwrap_or(Protocol::Tcp);
        let http = matches!(protocol, Protocol::Http | Protocol::Http2 | Protocol::Grpc);
        if http && m.match_type == MatchType::Domain {
            http_domains.entry((protocol, m.port)).or_default().push(m);
            continue;
        }
        let name = format!(
            "meshpassthrough_{}_{}_{}",
            protocol_name(protocol),
            m.value,
            port_text(m.port)
        );
        cluster_for(rs, &name, matches!(protocol, Protocol::Http2 | Protocol::Grpc));
        let mut chain_match = FilterChainMatch {
            destination_port: m.port.map(envoy::u32_value),
            prefix_ranges: cidr(m).into_iter().collect(),
            ..Default::default()
        };
        if protocol == Protocol::Tls {
            chain_match.transport_protocol = "tls".into();
            if m.match_type == MatchType::Domain {
                chain_match.server_names = vec![m.value.clone()];
            }
        } else {
            chain_match.transport_protocol = "raw_buffer".into();
        }
        let tcp = TcpProxy {
            stat_prefix: envoy::sanitize_metric(&name),
            cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(name.clone())),
            ..Default::default()
        };
        out.push(FilterChain {
            name,
            filter_chain_match: Some(chain_match),
            filters: vec![envoy::network_filter(envoy::TCP_PROXY, &tcp)],
            ..Default::default()
        });
    }
    for ((protocol, port), domains) in http_domains {
        let chain_name = format!("meshpassthrough_{}_{}", protocol_name(protocol), port_text(port));
        let mut vhosts = Vec::new();
        for d in domains {
            let cluster = format!(
                "meshpassthrough_{}_{}_{}",
                protocol_name(protocol),
                d.value,
                port_text(port)
            );
            cluster_for(rs, &cluster, matches!(protocol, Protocol::Http2 | Protocol::Grpc));
            let mut names = vec![d.value.clone()];
            names.push(format!("{}:{}", d.value, port_text(port)));
            vhosts.push(VirtualHost {
                name: d.value.clone(),
                domains: names,
                routes: vec![crate::generate::prefix_route("/", &cluster, "")],
                ..Default::default()
            });
        }
        vhosts.push(VirtualHost {
            name: "no_match".into(),
            domains: vec!["*".into()],
            routes: vec![envoy_types::pb::envoy::config::route::v3::Route {
                r#match: crate::generate::prefix_route("/", "", "").r#match,
                action: Some(route::Action::DirectResponse(DirectResponseAction {
                    status: 503,
                    body: Some(envoy::inline_string(
                        "This response comes from Kuma Sidecar. No routes matched this domain - check configuration of your MeshPassthrough policy.\n",
                    )),
                    body_format: None,
                })),
                ..Default::default()
            }],
            ..Default::default()
        });
        let hcm = HttpConnectionManager {
            stat_prefix: envoy::sanitize_metric(&chain_name),
            http_filters: vec![envoy::router_filter()],
            route_specifier: Some(http_connection_manager::RouteSpecifier::RouteConfig(
                RouteConfiguration {
                    name: chain_name.clone(),
                    validate_clusters: Some(envoy::bool_value(false)),
                    virtual_hosts: vhosts,
                    ..Default::default()
                },
            )),
            ..Default::default()
        };
        out.push(FilterChain {
            name: chain_name,
            filter_chain_match: Some(FilterChainMatch {
                destination_port: port.map(envoy::u32_value),
                transport_protocol: "raw_buffer".into(),
                application_protocols: vec!["http/1.1".into(), "h2c".into()],
                ..Default::default()
            }),
            filters: vec![envoy::network_filter(envoy::HCM, &hcm)],
            ..Default::default()
        });
    }
    out
}

/// Applies the passthrough mode to the transparent proxy's resources.
pub fn apply(_proxy: &Proxy<'_>, mesh: &MeshContext, policies: &Policies, rs: &mut ResourceSet) {
    let Some(conf) = policies.single_typed::<Conf>(T) else {
        return;
    };
    let families = ["outbound:passthrough:ipv4", "outbound:passthrough:ipv6"];
    let present: Vec<&str> = families
        .into_iter()
        .filter(|n| rs.get(XdsType::Listener, n).is_some())
        .collect();
    match (
        conf.passthrough_mode.unwrap_or(PassthroughMode::Matched),
        mesh.mesh.passthrough(),
    ) {
        (PassthroughMode::All, true) => {}
        (PassthroughMode::All, false) => {
            for name in &present {
                rs.add(Origin::Transparent, Resource::Cluster(original_dst_cluster(name)));
            }
        }
        (PassthroughMode::None, _) => {
            for name in &present {
                rs.remove(XdsType::Cluster, name);
            }
        }
        (PassthroughMode::Matched, _) => {
            for name in &present {
                rs.remove(XdsType::Cluster, name);
            }
            let matches = conf.append_match.unwrap_or_default();
            if matches.is_empty() {
                return;
            }
            let new_chains = chains(&matches, rs);
            for name in &present {
                if let Some(mut g) = rs.get_mut(XdsType::Listener, name)
                    && let Resource::Listener(l) = g.resource_mut()
                {
                    l.filter_chains = new_chains.clone();
                    l.listener_filters = vec![
                        ListenerFilter {
                            name: "envoy.filters.listener.tls_inspector".into(),
                            config_type: Some(listener_filter::ConfigType::TypedConfig(envoy::any(
                                &TlsInspector::default(),
                            ))),
                            ..Default::default()
                        },
                        ListenerFilter {
                            name: "envoy.filters.listener.http_inspector".into(),
                            config_type: Some(listener_filter::ConfigType::TypedConfig(envoy::any(
                                &HttpInspector::default(),
                            ))),
                            ..Default::default()
                        },
                    ];
                }
            }
        }
    }
}
