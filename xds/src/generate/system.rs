//! Kuma's system resources: the Envoy admin and kuma-dp readiness clusters,
//! the admin listener that exposes `/ready` on the proxy's address, and
//! Prometheus metrics listeners (MeshMetric, or the Mesh's legacy backend).

use envoy_types::pb::envoy::config::core::v3::TrafficDirection;
use envoy_types::pb::envoy::config::listener::v3::FilterChain;
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
    // Envoy's admin already listens on loopback; elsewhere expose only `/ready`.
    let address = proxy.address();
    if address != "127.0.0.1" && address != "::1" && address != "localhost" {
        let hcm = static_hcm(
            ADMIN_CLUSTER,
            ADMIN_CLUSTER,
            vec![prefix_route("/ready", READINESS_CLUSTER, "/ready")],
        );
        rs.add(
            Origin::Admin,
            Resource::Listener(envoy::listener(
                ADMIN_CLUSTER,
                address,
                admin_port,
                TrafficDirection::Inbound,
                vec![FilterChain {
                    filters: vec![envoy::network_filter(envoy::HCM, &hcm)],
                    ..Default::default()
                }],
            )),
        );
    }
    plugins::mesh_metric::generate(proxy, mesh, policies, rs);
}
