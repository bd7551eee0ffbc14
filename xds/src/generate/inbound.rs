//! Inbound listeners (`inbound:<ip>:<port>`) and the local app clusters
//! (`localhost:<servicePort>`) they forward to.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3::{BindConfig, SocketAddress, TrafficDirection, socket_address};
use envoy_types::pb::envoy::config::listener::v3::{FilterChain, FilterChainMatch};
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route, route_action, route_match,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};

use super::Policies;
use crate::context::{MeshContext, Protocol, Proxy};
use crate::envoy;
use crate::plugins;
use crate::resources::{Origin, Resource, ResourceSet};

/// The stream idle timeout of inbound connection managers; the other
/// timeouts come from MeshTimeout (or its defaults), which always applies.
const STREAM_IDLE_TIMEOUT_SECS: i64 = 3600;
/// Placeholder connect timeout, replaced by MeshTimeout's.
const CONNECT_TIMEOUT_SECS: i64 = 5;

/// The source address of connections from Envoy to the app under a
/// transparent proxy, which iptables leaves alone.
const PASSTHROUGH_SOURCE: &str = "127.0.0.6";

pub(super) fn generate(proxy: &Proxy<'_>, mesh: &MeshContext, policies: &Policies, rs: &mut ResourceSet) {
    let dp = proxy.dataplane;
    let tp = proxy.transparent_proxy().is_some();
    for (index, inbound) in dp.inbounds().iter().enumerate() {
        if inbound.port == kuma_crds::dataplane::SERVICELESS_PORT {
            continue;
        }
        let ip = dp.inbound_address(inbound).to_string();
        let workload_ip = inbound.service_address.clone().unwrap_or_else(|| ip.clone());
        let workload_port = inbound.service_port.unwrap_or(inbound.port);
        let protocol = Protocol::parse(inbound.protocol());
        let cluster_name = format!("localhost:{workload_port}");
        let service = inbound.service().map(str::to_string);

        let mut cluster = envoy::static_cluster(
            &cluster_name,
            &[(workload_ip.clone(), workload_port)],
            envoy::seconds(CONNECT_TIMEOUT_SECS),
        );
        match protocol {
            Protocol::Http => envoy::set_upstream_http(&mut cluster, false),
            Protocol::Http2 | Protocol::Grpc => envoy::set_upstream_http(&mut cluster, true),
            Protocol::Tcp | Protocol::Kafka => {}
        }
        if tp && workload_ip != "127.0.0.1" && workload_ip != "::1" {
            cluster.upstream_bind_config = Some(BindConfig {
                source_address: Some(SocketAddress {
                    address: PASSTHROUGH_SOURCE.into(),
                    port_specifier: Some(socket_address::PortSpecifier::PortValue(0)),
                    ..Default::default()
                }),
                ..Default::default()
            });
        }

        let stat_prefix = envoy::sanitize_metric(&cluster_name);
        let chain = if protocol.is_http() {
            let name = service
                .clone()
                .unwrap_or_else(|| format!("inbound:{ip}:{}", inbound.port));
            let mut hcm = HttpConnectionManager {
                stat_prefix: stat_prefix.clone(),
                codec_type: http_connection_manager::CodecType::Auto as i32,
                forward_client_cert_details: http_connection_manager::ForwardClientCertDetails::SanitizeSet
                    as i32,
                set_current_client_cert_details: Some(http_connection_manager::SetCurrentClientCertDetails {
                    uri: true,
                    ..Default::default()
                }),
                stream_idle_timeout: Some(envoy::seconds(STREAM_IDLE_TIMEOUT_SECS)),
                internal_address_config: Some(envoy::internal_address_config()),
                http_filters: envoy::base_http_filters(protocol == Protocol::Grpc),
                route_specifier: Some(http_connection_manager::RouteSpecifier::RouteConfig(
                    RouteConfiguration {
                        name: service
                            .as_ref()
                            .map(|s| format!("inbound:{s}"))
                            .unwrap_or_else(|| name.clone()),
                        validate_clusters: Some(envoy::bool_value(false)),
                        request_headers_to_remove: vec!["x-kuma-tags".into()],
                        virtual_hosts: vec![VirtualHost {
                            name,
                            domains: vec!["*".into()],
                            routes: vec![Route {
                                r#match: Some(RouteMatch {
                                    path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
                                    ..Default::default()
                                }),
                                action: Some(route::Action::Route(RouteAction {
                                    cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(
                                        cluster_name.clone(),
                                    )),
                                    timeout: Some(envoy::seconds(0)),
                                    ..Default::default()
                                })),
                                ..Default::default()
                            }],
                            ..Default::default()
                        }],
                        ..Default::default()
                    },
                )),
                ..Default::default()
            };
            plugins::mesh_access_log::inbound_hcm(&mut hcm, proxy, mesh, policies, index, rs);
            plugins::mesh_trace::hcm(&mut hcm, proxy, mesh, policies, None, rs);
            plugins::mesh_fault_injection::inbound_hcm(&mut hcm, policies, index);
            plugins::mesh_rate_limit::inbound_hcm(&mut hcm, policies, index);
            plugins::mesh_timeout::inbound_hcm(&mut hcm, policies, index);
            let mut filters = vec![envoy::network_filter(envoy::HCM, &hcm)];
            plugins::mesh_rate_limit::inbound_tcp(&mut filters, policies, index);
            FilterChain {
                filters,
                ..Default::default()
            }
        } else {
            let mut tcp = TcpProxy {
                stat_prefix,
                cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(cluster_name.clone())),
                ..Default::default()
            };
            plugins::mesh_access_log::inbound_tcp(&mut tcp, proxy, mesh, policies, index, rs);
            plugins::mesh_timeout::inbound_tcp(&mut tcp, policies, index);
            let mut filters = vec![envoy::network_filter(envoy::TCP_PROXY, &tcp)];
            plugins::mesh_rate_limit::inbound_tcp(&mut filters, policies, index);
            FilterChain {
                filters,
                ..Default::default()
            }
        };

        plugins::mesh_timeout::inbound_cluster(&mut cluster, policies, index, protocol);
        plugins::mesh_circuit_breaker::inbound_cluster(&mut cluster, policies, index);
        rs.add(Origin::Inbound, Resource::Cluster(cluster));

        let listener_name = format!("inbound:{ip}:{}", inbound.port);
        let (chains, inspect_tls) = match &mesh.mtls {
            None => (vec![chain], false),
            Some(mtls) => secure_chains(chain, protocol, policies, index, mtls, &listener_name),
        };
        let mut listener = envoy::listener(
            &listener_name,
            &ip,
            inbound.port,
            TrafficDirection::Inbound,
            chains,
        );
        if inspect_tls {
            listener.listener_filters.push(envoy::tls_inspector());
        }
        let tags: BTreeMap<String, String> = inbound.tags.clone().unwrap_or_default();
        listener.metadata = envoy::tags_metadata(&tags);
        if tp {
            listener.bind_to_port = Some(envoy::bool_value(false));
        }
        rs.add(Origin::Inbound, Resource::Listener(listener));
    }
}

/// The filter chains of an inbound in a mesh with mTLS: the mTLS chain
/// (with MeshTrafficPermission's RBAC) alone when strict; behind a TLS
/// inspector with plaintext and application-TLS chains when permissive.
/// Returns the chains and whether the listener needs the TLS inspector.
fn secure_chains(
    plain: FilterChain,
    protocol: Protocol,
    policies: &Policies,
    index: usize,
    mtls: &crate::mtls::MeshMtls,
    stat_prefix: &str,
) -> (Vec<FilterChain>, bool) {
    let (mode, params) = plugins::mesh_tls::inbound(policies, index, mtls.mode);
    let mut secure = plain.clone();
    if protocol.is_http() {
        for f in &mut secure.filters {
            if f.name == envoy::HCM
                && let Some(mut hcm) = envoy::filter_config::<HttpConnectionManager>(f)
            {
                hcm.http_filters.insert(
                    0,
                    plugins::mesh_traffic_permission::http_filter(policies, index, &mtls.mesh),
                );
                *f = envoy::network_filter(envoy::HCM, &hcm);
            }
        }
    } else {
        let rbac = plugins::mesh_traffic_permission::network_filter(
            policies,
            index,
            &mtls.mesh,
            &envoy::sanitize_metric(stat_prefix),
        );
        secure.filters.insert(0, rbac);
    }
    secure.transport_socket = Some(super::tls::downstream(&mtls.mesh, params));
    match mode {
        crate::mtls::Mode::Strict => (vec![secure], false),
        crate::mtls::Mode::Permissive => {
            let with_match = |mut chain: FilterChain, transport: &str, alpn: &[&str]| {
                chain.filter_chain_match = Some(FilterChainMatch {
                    transport_protocol: transport.to_string(),
                    application_protocols: alpn.iter().map(|a| a.to_string()).collect(),
                    ..Default::default()
                });
                chain
            };
            (
                vec![
                    with_match(plain.clone(), "raw_buffer", &[]),
                    // TLS the application itself speaks passes through.
                    with_match(plain, "tls", &[]),
                    with_match(secure, "tls", &[crate::mtls::KUMA_ALPN]),
                ],
                true,
            )
        }
    }
}
