//! MeshTimeout: connect/idle timeouts on clusters and TCP proxies, request
//! and stream-idle timeouts on routes, header timeouts on connection managers.
//!
//! Like Kuma, the plugin always runs: inbounds and outbound clusters get the
//! matching configuration or Kuma's defaults (connect 5s, idle 1h, request
//! 15s, stream idle 30m, the rest off), while outbound routes and TCP
//! proxies change only where a `to` entry covers the destination.

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::HttpProtocolOptions as CommonHttpOptions;
use envoy_types::pb::envoy::config::route::v3::{RouteAction, route};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy;
use envoy_types::pb::google::protobuf::Duration as ProtoDuration;
use kuma_crds::common::Duration;
use kuma_crds::matching::Destination;
use kuma_crds::policies::mesh_timeout::Conf;
use kuma_crds::resource::ResourceType;

use crate::context::Protocol;
use crate::envoy;
use crate::generate::Policies;

const T: ResourceType = ResourceType::MeshTimeout;

fn or_default(d: Option<&Duration>, default_secs: u64) -> ProtoDuration {
    envoy::duration(
        d.and_then(Duration::to_std)
            .unwrap_or(std::time::Duration::from_secs(default_secs)),
    )
}

fn http_field(
    conf: &Conf,
    f: impl Fn(&kuma_crds::policies::mesh_timeout::Http) -> Option<&Duration>,
) -> Option<&Duration> {
    conf.http.as_ref().and_then(f)
}

/// Sets a cluster's timeouts from `conf`.
pub fn apply_cluster(cluster: &mut Cluster, conf: &Conf, protocol: Protocol) {
    cluster.connect_timeout = Some(or_default(conf.connection_timeout.as_ref(), 5));
    if matches!(protocol, Protocol::Http | Protocol::Http2) {
        let mut options = envoy::upstream_http_options(cluster).unwrap_or_default();
        options.common_http_protocol_options = Some(CommonHttpOptions {
            idle_timeout: Some(or_default(conf.idle_timeout.as_ref(), 3600)),
            max_stream_duration: Some(or_default(
                http_field(conf, |h| h.max_stream_duration.as_ref()),
                0,
            )),
            max_connection_duration: Some(or_default(
                http_field(conf, |h| h.max_connection_duration.as_ref()),
                0,
            )),
            ..Default::default()
        });
        envoy::set_upstream_http_options(cluster, &options);
    }
}

/// Sets a route's request and stream-idle timeouts from `conf`.
pub fn apply_route(action: &mut RouteAction, conf: &Conf) {
    action.timeout = Some(or_default(http_field(conf, |h| h.request_timeout.as_ref()), 15));
    action.idle_timeout = Some(or_default(
        http_field(conf, |h| h.stream_idle_timeout.as_ref()),
        1800,
    ));
}

/// Sets a connection manager's timeouts; idle timeouts live on clusters.
pub fn apply_hcm(hcm: &mut HttpConnectionManager, conf: &Conf) {
    hcm.request_headers_timeout = Some(or_default(
        http_field(conf, |h| h.request_headers_timeout.as_ref()),
        0,
    ));
    let mut common = hcm.common_http_protocol_options.unwrap_or_default();
    common.idle_timeout = Some(envoy::seconds(0));
    hcm.common_http_protocol_options = Some(common);
}

/// Sets a TCP proxy's idle timeout.
pub fn apply_tcp(tcp: &mut TcpProxy, conf: &Conf) {
    tcp.idle_timeout = Some(or_default(conf.idle_timeout.as_ref(), 3600));
}

/// The `to` configuration covering the destination, if any.
fn outbound(policies: &Policies, destination: &Destination) -> Option<Conf> {
    policies.to_typed(T, destination)
}

/// The inbound's configuration, Kuma's defaults without a policy.
fn inbound(policies: &Policies, index: usize) -> Conf {
    policies.inbound_typed(T, index).unwrap_or_default()
}

/// Outbound cluster: the covering configuration or the defaults.
pub fn outbound_cluster(
    cluster: &mut Cluster,
    policies: &Policies,
    destination: &Destination,
    protocol: Protocol,
) {
    apply_cluster(
        cluster,
        &outbound(policies, destination).unwrap_or_default(),
        protocol,
    );
}

/// Outbound route: only where a `to` entry covers the destination.
pub fn outbound_route(action: &mut RouteAction, policies: &Policies, destination: &Destination) {
    if let Some(conf) = outbound(policies, destination) {
        apply_route(action, &conf);
    }
}

/// Outbound connection manager: connection idle timeouts live on the
/// clusters, so the manager's own is always off; the header timeout only
/// where a `to` entry covers the destination.
pub fn outbound_hcm(hcm: &mut HttpConnectionManager, policies: &Policies, destination: &Destination) {
    match outbound(policies, destination) {
        Some(conf) => apply_hcm(hcm, &conf),
        None => {
            let mut common = hcm.common_http_protocol_options.unwrap_or_default();
            common.idle_timeout = Some(envoy::seconds(0));
            hcm.common_http_protocol_options = Some(common);
        }
    }
}

/// Outbound TCP proxy: only where a `to` entry covers the destination.
pub fn outbound_tcp(tcp: &mut TcpProxy, policies: &Policies, destination: &Destination) {
    if let Some(conf) = outbound(policies, destination) {
        apply_tcp(tcp, &conf);
    }
}

/// Inbound (local app) cluster.
pub fn inbound_cluster(cluster: &mut Cluster, policies: &Policies, index: usize, protocol: Protocol) {
    apply_cluster(cluster, &inbound(policies, index), protocol);
}

/// Inbound connection manager and its routes.
pub fn inbound_hcm(hcm: &mut HttpConnectionManager, policies: &Policies, index: usize) {
    let conf = inbound(policies, index);
    apply_hcm(hcm, &conf);
    if let Some(http_connection_manager::RouteSpecifier::RouteConfig(rc)) = &mut hcm.route_specifier {
        for vh in &mut rc.virtual_hosts {
            for r in &mut vh.routes {
                if let Some(route::Action::Route(action)) = &mut r.action {
                    apply_route(action, &conf);
                }
            }
        }
    }
}

/// Inbound TCP proxy.
pub fn inbound_tcp(tcp: &mut TcpProxy, policies: &Policies, index: usize) {
    apply_tcp(tcp, &inbound(policies, index));
}
