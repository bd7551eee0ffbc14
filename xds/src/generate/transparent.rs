//! Transparent proxy: the listeners traffic redirected by iptables lands on
//! (`outbound:passthrough:ipv4` on 15001, `inbound:passthrough:ipv4` on
//! 15006) and the original-destination clusters behind them.

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{BindConfig, SocketAddress, TrafficDirection, socket_address};
use envoy_types::pb::envoy::config::listener::v3::FilterChain;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};

use super::Policies;
use crate::context::{MeshContext, Proxy};
use crate::envoy;
use crate::plugins;
use crate::resources::{Origin, Resource, ResourceSet};

/// An original-destination cluster (connects where the client meant to).
pub fn original_dst_cluster(name: &str) -> Cluster {
    let mut c = Cluster {
        name: name.into(),
        connect_timeout: Some(envoy::seconds(5)),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::OriginalDst as i32,
        )),
        lb_policy: cluster::LbPolicy::ClusterProvided as i32,
        ..Default::default()
    };
    envoy::set_alt_stat_name(&mut c);
    envoy::track_remaining(&mut c);
    c
}

/// A catch-all listener handing connections to their original destination.
fn passthrough_listener(
    name: &str,
    ip: &str,
    port: u32,
    direction: TrafficDirection,
) -> envoy_types::pb::envoy::config::listener::v3::Listener {
    let tcp = TcpProxy {
        stat_prefix: envoy::sanitize_metric(name),
        cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(name.into())),
        ..Default::default()
    };
    let mut l = envoy::listener(
        name,
        ip,
        port,
        direction,
        vec![FilterChain {
            filters: vec![envoy::network_filter(envoy::TCP_PROXY, &tcp)],
            ..Default::default()
        }],
    );
    l.use_original_dst = Some(envoy::bool_value(true));
    l
}

pub(super) fn generate(proxy: &Proxy<'_>, mesh: &MeshContext, policies: &Policies, rs: &mut ResourceSet) {
    let Some((inbound_port, outbound_port)) = proxy.transparent_proxy() else {
        return;
    };
    let ipv6 = proxy.transparent_ipv6();
    let families: &[(&str, &str, &str)] = if ipv6 {
        &[("ipv4", "0.0.0.0", "127.0.0.6"), ("ipv6", "::", "::6")]
    } else {
        &[("ipv4", "0.0.0.0", "127.0.0.6")]
    };
    for (family, any, source) in families {
        if outbound_port > 0 {
            let name = format!("outbound:passthrough:{family}");
            rs.add(
                Origin::Transparent,
                Resource::Listener(passthrough_listener(
                    &name,
                    any,
                    outbound_port,
                    TrafficDirection::Outbound,
                )),
            );
            if mesh.mesh.passthrough() {
                rs.add(
                    Origin::Transparent,
                    Resource::Cluster(original_dst_cluster(&name)),
                );
            }
        }
        if inbound_port > 0 {
            let name = format!("inbound:passthrough:{family}");
            rs.add(
                Origin::Transparent,
                Resource::Listener(passthrough_listener(
                    &name,
                    any,
                    inbound_port,
                    TrafficDirection::Inbound,
                )),
            );
            let mut c = original_dst_cluster(&name);
            c.upstream_bind_config = Some(BindConfig {
                source_address: Some(SocketAddress {
                    address: source.to_string(),
                    port_specifier: Some(socket_address::PortSpecifier::PortValue(0)),
                    ..Default::default()
                }),
                ..Default::default()
            });
            rs.add(Origin::Transparent, Resource::Cluster(c));
        }
    }
    plugins::mesh_passthrough::apply(proxy, mesh, policies, rs);
}
