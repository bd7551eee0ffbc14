//! The DNS table of a transparent proxy, served to its kuma-dp as Kuma
//! does: Envoy's `_kuma:dynamicconfig` listener on a Unix socket in the
//! proxy's work directory answers `GET /dns` with the table (JSON) and its
//! ETag, or 304 when the caller already has it. kuma-dp polls it and its
//! DNS proxy answers the names with the VIPs. Only for proxies that ask
//! (`feature-embedded-dns`) and redirect outbound traffic.

use std::net::Ipv4Addr;

use envoy_types::pb::envoy::config::core::v3::{Address, Pipe, TrafficDirection, address};
use envoy_types::pb::envoy::config::listener::v3::{FilterChain, Listener};
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, HeaderMatcher, Route, RouteConfiguration, RouteMatch, VirtualHost, header_matcher,
    route, route_match,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
use kuma_crds::dns::{DNS_PATH, DnsRecord, DnsTable, dynamic_config_socket, ipv6_of, service_names};
use sha2::{Digest, Sha256};

use super::outbound::outbound_targets;
use crate::context::{MeshContext, Proxy};
use crate::envoy;
use crate::resources::{Origin, Resource, ResourceSet};

/// The feature kuma-dp announces when its DNS proxy reads the table.
pub const FEATURE_EMBEDDED_DNS: &str = "feature-embedded-dns";
/// The listener serving dynamic configuration to kuma-dp.
pub const DYNAMIC_CONFIG_LISTENER: &str = "_kuma:dynamicconfig";

/// The names of the VIPs `proxy` reaches, as its DNS proxy answers them.
pub fn table(proxy: &Proxy<'_>, mesh: &MeshContext) -> DnsTable {
    let ipv6 = proxy.transparent_ipv6();
    let mut records = Vec::new();
    for (target, _) in outbound_targets(proxy, mesh) {
        // Only the VIPs the control plane gave out: an explicit outbound
        // on a local address is not a name in the mesh domain.
        let Ok(vip) = target.address.parse::<Ipv4Addr>() else {
            continue;
        };
        let Some(service) = mesh.services.get(&target.service).filter(|s| s.vip == vip) else {
            continue;
        };
        let mut ips = vec![vip.to_string()];
        if ipv6 {
            ips.push(ipv6_of(vip));
        }
        let names = match &service.mesh_service {
            Some(m) => m.hostnames.clone(),
            None => service_names(&target.service),
        };
        for name in names {
            records.push(DnsRecord {
                name,
                ips: ips.clone(),
            });
        }
    }
    DnsTable::new(records)
}

fn path_match(etag: Option<&str>) -> RouteMatch {
    RouteMatch {
        path_specifier: Some(route_match::PathSpecifier::Path(DNS_PATH.into())),
        headers: etag
            .map(|etag| HeaderMatcher {
                name: "If-None-Match".into(),
                header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(
                    StringMatcher {
                        match_pattern: Some(string_matcher::MatchPattern::Exact(etag.into())),
                        ..Default::default()
                    },
                )),
                ..Default::default()
            })
            .into_iter()
            .collect(),
        ..Default::default()
    }
}

/// The listener answering `GET /dns` with `body` (or 304 for its ETag).
pub fn dynamic_config_listener(socket: &str, body: &str) -> Listener {
    let etag: String = Sha256::digest(body.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let routes = vec![
        Route {
            r#match: Some(path_match(Some(&etag))),
            action: Some(route::Action::DirectResponse(DirectResponseAction {
                status: 304,
                ..Default::default()
            })),
            ..Default::default()
        },
        Route {
            name: format!("{DYNAMIC_CONFIG_LISTENER}:{DNS_PATH}"),
            r#match: Some(path_match(None)),
            action: Some(route::Action::DirectResponse(DirectResponseAction {
                status: 200,
                body: Some(envoy::inline_string(body)),
                body_format: None,
            })),
            response_headers_to_add: vec![envoy::header("Etag", &etag, true)],
            ..Default::default()
        },
    ];
    let hcm = HttpConnectionManager {
        stat_prefix: envoy::sanitize_metric(DYNAMIC_CONFIG_LISTENER),
        codec_type: http_connection_manager::CodecType::Auto as i32,
        http_filters: vec![envoy::router_filter()],
        route_specifier: Some(http_connection_manager::RouteSpecifier::RouteConfig(
            RouteConfiguration {
                name: DYNAMIC_CONFIG_LISTENER.into(),
                validate_clusters: Some(envoy::bool_value(false)),
                // Envoy refuses direct responses over 4 KiB unless told.
                max_direct_response_body_size_bytes: Some(envoy::u32_value(body.len().max(4096) as u32)),
                virtual_hosts: vec![VirtualHost {
                    name: DYNAMIC_CONFIG_LISTENER.into(),
                    domains: vec!["*".into()],
                    routes,
                    ..Default::default()
                }],
                ..Default::default()
            },
        )),
        ..Default::default()
    };
    Listener {
        name: DYNAMIC_CONFIG_LISTENER.into(),
        address: Some(Address {
            address: Some(address::Address::Pipe(Pipe {
                path: socket.into(),
                mode: 0,
            })),
        }),
        traffic_direction: TrafficDirection::Inbound as i32,
        filter_chains: vec![FilterChain {
            filters: vec![envoy::network_filter(envoy::HCM, &hcm)],
            ..Default::default()
        }],
        ..Default::default()
    }
}

pub(super) fn generate(proxy: &Proxy<'_>, mesh: &MeshContext, rs: &mut ResourceSet) {
    let redirects_outbound = proxy.transparent_proxy().is_some_and(|(_, out)| out > 0);
    if !redirects_outbound || !proxy.metadata.features.contains(FEATURE_EMBEDDED_DNS) {
        return;
    }
    let Some(workdir) = proxy.metadata.workdir.as_deref().filter(|w| !w.is_empty()) else {
        return;
    };
    let body = serde_json::to_string(&table(proxy, mesh)).unwrap_or_default();
    rs.add(
        Origin::DynamicConfig,
        Resource::Listener(dynamic_config_listener(&dynamic_config_socket(workdir), &body)),
    );
}
