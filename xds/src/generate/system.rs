//! Kuma's system resources: the Envoy admin and kuma-dp readiness clusters,
//! the admin listener on the proxy's address (`/ready` in plaintext, the
//! whole admin over mTLS to the control plane, see [`crate::admin_tls`]), and
//! Prometheus metrics listeners (MeshMetric, or the Mesh's legacy backend).

use envoy_types::pb::envoy::config::core::v3::TrafficDirection;
use envoy_types::pb::envoy::config::listener::v3::{FilterChain, FilterChainMatch};
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route, route_action, route_match,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager,
};

use super::Policies;
use crate::context::{MeshContext, Proxy};
use crate::envoy;
use crate::plugins;
use crate::resources::{Origin, Resource, ResourceSet};

/// The cluster of Envoy's own admin interface.
pub const ADMIN_CLUSTER: &str = "kuma:envoy:admin";
/// The cluster of kuma-dp's readiness reporter.
pub const READINESS_CLUSTER: &str = "kuma:readiness";

/// The port of Envoy's admin in a configuration sent to a proxy (its
/// bootstrap's, which the control plane learnt when the proxy connected).
pub fn admin_port_sent(snapshot: &crate::snapshot::Snapshot) -> Option<u32> {
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::config::core::v3::{address, socket_address};
    use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint;
    use prost::Message;
    let sent = snapshot
        .get(crate::resources::XdsType::Cluster)
        .resources
        .get(ADMIN_CLUSTER)?;
    let cluster = Cluster::decode(sent.encoded.bytes()).ok()?;
    let endpoint = cluster
        .load_assignment?
        .endpoints
        .into_iter()
        .next()?
        .lb_endpoints
        .into_iter()
        .next()?;
    let Some(lb_endpoint::HostIdentifier::Endpoint(endpoint)) = endpoint.host_identifier else {
        return None;
    };
    let Some(address::Address::SocketAddress(socket)) = endpoint.address?.address else {
        return None;
    };
    match socket.port_specifier? {
        socket_address::PortSpecifier::PortValue(port) => Some(port),
        socket_address::PortSpecifier::NamedPort(_) => None,
    }
}

/// A route forwarding a path prefix to a cluster, rewriting the prefix.
pub fn prefix_route(prefix: &str, cluster: &str, rewrite: &str) -> Route {
    Route {
        r#match: Some(RouteMatch {
            path_specifier: Some(route_match::PathSpecifier::Prefix(prefix.into())),
            ..Default::default()
        }),
        action: Some(route::Action::Route(RouteAction {
            cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(cluster.into())),
            prefix_rewrite: rewrite.into(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// An HTTP connection manager serving fixed routes, reachable from loopback only.
pub fn static_hcm(stat_prefix: &str, vhost: &str, routes: Vec<Route>) -> HttpConnectionManager {
    HttpConnectionManager {
        stat_prefix: envoy::sanitize_metric(stat_prefix),
        codec_type: http_connection_manager::CodecType::Auto as i32,
        http_filters: vec![envoy::router_filter()],
        route_specifier: Some(http_connection_manager::RouteSpecifier::RouteConfig(
            RouteConfiguration {
                validate_clusters: Some(envoy::bool_value(false)),
                virtual_hosts: vec![VirtualHost {
                    name: vhost.into(),
                    domains: vec!["*".into()],
                    routes,
                    ..Default::default()
                }],
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

pub(super) fn generate(proxy: &Proxy<'_>, mesh: &MeshContext, policies: &Policies, rs: &mut ResourceSet) {
    let admin_port = proxy.metadata.admin_port;
    let readiness_port = proxy.metadata.readiness_port;
    let timeout = envoy::seconds(5);
    rs.add(
        Origin::Admin,
        Resource::Cluster(envoy::static_cluster(
            ADMIN_CLUSTER,
            &[("127.0.0.1".into(), admin_port)],
            timeout,
        )),
    );
    rs.add(
        Origin::Admin,
        Resource::Cluster(envoy::static_cluster(
            READINESS_CLUSTER,
            &[("127.0.0.1".into(), readiness_port)],
            timeout,
        )),
    );
    // Envoy's admin already listens on loopback. Elsewhere plaintext reaches
    // only `/ready`; the whole admin needs TLS and the control plane's client
    // certificate.
    if !proxy.admin_on_own_address() {
        let plain = static_hcm(
            ADMIN_CLUSTER,
            ADMIN_CLUSTER,
            vec![prefix_route("/ready", READINESS_CLUSTER, "/ready")],
        );
        let mut chains = vec![FilterChain {
            filters: vec![envoy::network_filter(envoy::HCM, &plain)],
            ..Default::default()
        }];
        if let Some(admin_tls) = &proxy.admin_tls {
            let secured = static_hcm(
                ADMIN_CLUSTER,
                ADMIN_CLUSTER,
                vec![
                    prefix_route("/ready", READINESS_CLUSTER, "/ready"),
                    prefix_route("/", ADMIN_CLUSTER, "/"),
                ],
            );
            chains.push(FilterChain {
                filter_chain_match: Some(FilterChainMatch {
                    transport_protocol: "tls".into(),
                    ..Default::default()
                }),
                filters: vec![envoy::network_filter(envoy::HCM, &secured)],
                transport_socket: Some(super::tls::admin_downstream(admin_tls)),
                ..Default::default()
            });
        }
        let mut listener = envoy::listener(
            ADMIN_CLUSTER,
            proxy.address(),
            admin_port,
            TrafficDirection::Inbound,
            chains,
        );
        if proxy.admin_tls.is_some() {
            listener.listener_filters = vec![envoy::tls_inspector()];
        }
        rs.add(Origin::Admin, Resource::Listener(listener));
    }
    plugins::mesh_metric::generate(proxy, mesh, policies, rs);
}
