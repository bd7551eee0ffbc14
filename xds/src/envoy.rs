//! Small builders for the Envoy messages the generators assemble, so the
//! generators read as what they build rather than as protobuf plumbing.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{
    Address, AggregatedConfigSource, ApiVersion, ConfigSource, DataSource, HeaderValue, HeaderValueOption,
    Metadata, SocketAddress, TrafficDirection, address, config_source, data_source, header_value_option,
    socket_address,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, http_filter,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{HttpProtocolOptions, http_protocol_options};
use envoy_types::pb::google::protobuf::{Any, BoolValue, Duration, Struct, UInt32Value, Value, value};
use prost::{Message, Name};

/// The network filter name of the HTTP connection manager.
pub const HCM: &str = "envoy.filters.network.http_connection_manager";
/// The network filter name of the TCP proxy.
pub const TCP_PROXY: &str = "envoy.filters.network.tcp_proxy";
/// The HTTP filter name of the router.
pub const ROUTER: &str = "envoy.filters.http.router";
/// The typed extension protocol options key of upstream HTTP settings.
pub const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// Packs a message into an `Any`.
pub fn any<M: Message + Name>(message: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: message.encode_to_vec(),
    }
}

/// Unpacks an `Any` of type `M`.
pub fn unpack<M: Message + Name + Default>(any: &Any) -> Option<M> {
    (any.type_url == M::type_url())
        .then(|| M::decode(any.value.as_slice()).ok())
        .flatten()
}

/// A protobuf duration.
pub fn duration(d: std::time::Duration) -> Duration {
    Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// A protobuf duration of whole seconds.
pub fn seconds(s: i64) -> Duration {
    Duration { seconds: s, nanos: 0 }
}

/// A `UInt32Value`.
pub fn u32_value(v: u32) -> UInt32Value {
    UInt32Value { value: v }
}

/// A `BoolValue`.
pub fn bool_value(v: bool) -> BoolValue {
    BoolValue { value: v }
}

/// A TCP socket address.
pub fn socket_address(ip: &str, port: u32) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    }
}

/// `{ads: {}, resourceApiVersion: V3}`.
pub fn ads_config_source() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
            AggregatedConfigSource {},
        )),
        ..Default::default()
    }
}

/// A struct of string values.
pub fn string_struct(pairs: &BTreeMap<String, String>) -> Struct {
    Struct {
        fields: pairs
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    Value {
                        kind: Some(value::Kind::StringValue(v.clone())),
                    },
                )
            })
            .collect(),
    }
}

/// Listener metadata carrying the tags Kuma puts on listeners (`io.kuma.tags`).
pub fn tags_metadata(tags: &BTreeMap<String, String>) -> Option<Metadata> {
    (!tags.is_empty()).then(|| Metadata {
        filter_metadata: [("io.kuma.tags".to_string(), string_struct(tags))].into(),
        ..Default::default()
    })
}

/// Replaces every character Envoy stats names dislike with `_`.
pub fn sanitize_metric(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A cluster fed by EDS over ADS.
pub fn eds_cluster(name: &str) -> Cluster {
    let mut c = Cluster {
        name: name.to_string(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cluster::EdsClusterConfig {
            eds_config: Some(ads_config_source()),
            ..Default::default()
        }),
        ..Default::default()
    };
    set_alt_stat_name(&mut c);
    track_remaining(&mut c);
    c
}

/// Kuma has every cluster report its remaining capacity (`remaining_*`
/// gauges), with or without a MeshCircuitBreaker.
pub fn track_remaining(cluster: &mut Cluster) {
    let cb = cluster.circuit_breakers.get_or_insert_with(Default::default);
    match cb.thresholds.iter_mut().find(|t| t.priority == 0) {
        Some(t) => t.track_remaining = true,
        None => cb.thresholds.push(
            envoy_types::pb::envoy::config::cluster::v3::circuit_breakers::Thresholds {
                track_remaining: true,
                ..Default::default()
            },
        ),
    }
}

/// A cluster with fixed endpoints (IPs, or host names resolved by Envoy).
pub fn static_cluster(name: &str, endpoints: &[(String, u32)], connect_timeout: Duration) -> Cluster {
    let by_dns = endpoints
        .iter()
        .any(|(a, _)| a.parse::<std::net::IpAddr>().is_err());
    let discovery = if by_dns {
        cluster::DiscoveryType::StrictDns
    } else {
        cluster::DiscoveryType::Static
    };
    let mut c = Cluster {
        name: name.to_string(),
        connect_timeout: Some(connect_timeout),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(discovery as i32)),
        load_assignment: Some(load_assignment(
            name,
            endpoints.iter().map(|(a, p)| lb_endpoint(a, *p)).collect(),
        )),
        ..Default::default()
    };
    if by_dns {
        c.dns_lookup_family = cluster::DnsLookupFamily::V4Only as i32;
    }
    set_alt_stat_name(&mut c);
    track_remaining(&mut c);
    c
}

/// Sets `alt_stat_name` when the name has characters stats do not like.
pub fn set_alt_stat_name(cluster: &mut Cluster) {
    let sanitized = sanitize_metric(&cluster.name);
    if sanitized != cluster.name {
        cluster.alt_stat_name = sanitized;
    }
}

/// One endpoint of a load assignment.
pub fn lb_endpoint(address: &str, port: u32) -> LbEndpoint {
    LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
            address: Some(socket_address(address, port)),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// A load assignment with one (locality-less) group of endpoints.
pub fn load_assignment(cluster: &str, endpoints: Vec<LbEndpoint>) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: cluster.to_string(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: endpoints,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Upstream HTTP settings for a cluster, as typed extension protocol options.
pub fn set_upstream_http(cluster: &mut Cluster, http2: bool) {
    let config = if http2 {
        http_protocol_options::explicit_http_config::ProtocolConfig::Http2ProtocolOptions(Default::default())
    } else {
        http_protocol_options::explicit_http_config::ProtocolConfig::HttpProtocolOptions(Default::default())
    };
    let mut options = upstream_http_options(cluster).unwrap_or_default();
    options.upstream_protocol_options = Some(
        http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(
            http_protocol_options::ExplicitHttpConfig {
                protocol_config: Some(config),
            },
        ),
    );
    set_upstream_http_options(cluster, &options);
}

/// The cluster's upstream HTTP settings, when it has some.
pub fn upstream_http_options(cluster: &Cluster) -> Option<HttpProtocolOptions> {
    cluster
        .typed_extension_protocol_options
        .get(HTTP_PROTOCOL_OPTIONS)
        .and_then(unpack)
}

/// Replaces the cluster's upstream HTTP settings.
pub fn set_upstream_http_options(cluster: &mut Cluster, options: &HttpProtocolOptions) {
    cluster
        .typed_extension_protocol_options
        .insert(HTTP_PROTOCOL_OPTIONS.to_string(), any(options));
}

/// A network filter with a typed config.
pub fn network_filter<M: Message + Name>(name: &str, config: &M) -> Filter {
    Filter {
        name: name.to_string(),
        config_type: Some(filter::ConfigType::TypedConfig(any(config))),
    }
}

/// An HTTP filter with a typed config.
pub fn http_filter<M: Message + Name>(name: &str, config: &M) -> HttpFilter {
    HttpFilter {
        name: name.to_string(),
        config_type: Some(http_filter::ConfigType::TypedConfig(any(config))),
        ..Default::default()
    }
}

/// The router HTTP filter.
/// The gRPC statistics filter Kuma puts first on gRPC connection managers
/// (per-status stats, and filter state for access logs).
pub fn grpc_stats_filter() -> HttpFilter {
    http_filter(
        "envoy.filters.http.grpc_stats",
        &envoy_types::pb::envoy::extensions::filters::http::grpc_stats::v3::FilterConfig {
            emit_filter_state: true,
            ..Default::default()
        },
    )
}

/// The HTTP filters a connection manager starts with: gRPC statistics for
/// gRPC, then the router; plugins insert theirs before the router.
pub fn base_http_filters(grpc: bool) -> Vec<HttpFilter> {
    let mut filters = Vec::new();
    if grpc {
        filters.push(grpc_stats_filter());
    }
    filters.push(router_filter());
    filters
}

/// The peers a connection manager treats as internal: Kuma's default
/// `ipam.knownInternalCIDRs`. The IPv6 ranges are kept for IPv4-only
/// proxies too (they never match there), so configs can be shared.
pub fn internal_address_config()
-> envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::InternalAddressConfig
{
    let ranges = [
        ("10.0.0.0", 8),
        ("192.168.0.0", 16),
        ("172.16.0.0", 12),
        ("127.0.0.1", 32),
        ("fc00::", 7),
        ("fd00::", 8),
        ("::1", 128),
    ];
    envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::InternalAddressConfig {
        cidr_ranges: ranges
            .into_iter()
            .map(|(prefix, len)| envoy_types::pb::envoy::config::core::v3::CidrRange {
                address_prefix: prefix.to_string(),
                prefix_len: Some(u32_value(len)),
            })
            .collect(),
        ..Default::default()
    }
}

/// The TLS inspector listener filter (tells TLS from plaintext and reads
/// SNI and ALPN).
pub fn tls_inspector() -> envoy_types::pb::envoy::config::listener::v3::ListenerFilter {
    envoy_types::pb::envoy::config::listener::v3::ListenerFilter {
        name: "envoy.filters.listener.tls_inspector".into(),
        config_type: Some(envoy_types::pb::envoy::config::listener::v3::listener_filter::ConfigType::TypedConfig(any(
            &envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector::default(),
        ))),
        ..Default::default()
    }
}

/// The router filter.
pub fn router_filter() -> HttpFilter {
    http_filter(
        ROUTER,
        &envoy_types::pb::envoy::extensions::filters::http::router::v3::Router::default(),
    )
}

/// A listener on `ip:port` with filter chains.
pub fn listener(
    name: &str,
    ip: &str,
    port: u32,
    direction: TrafficDirection,
    chains: Vec<FilterChain>,
) -> Listener {
    Listener {
        name: name.to_string(),
        address: Some(socket_address(ip, port)),
        traffic_direction: direction as i32,
        filter_chains: chains,
        ..Default::default()
    }
}

/// The typed config of a network filter.
pub fn filter_config<M: Message + Name + Default>(f: &Filter) -> Option<M> {
    match &f.config_type {
        Some(filter::ConfigType::TypedConfig(a)) => unpack(a),
        _ => None,
    }
}

/// Applies `edit` to the HTTP connection manager of every filter chain.
pub fn edit_hcms(listener: &mut Listener, edit: impl FnMut(&mut HttpConnectionManager)) {
    edit_network_filters(listener, HCM, edit);
}

/// Applies `edit` to every network filter named `name` whose config is an `M`.
pub fn edit_network_filters<M: Message + Name + Default>(
    listener: &mut Listener,
    name: &str,
    mut edit: impl FnMut(&mut M),
) {
    for chain in &mut listener.filter_chains {
        for f in &mut chain.filters {
            if f.name == name
                && let Some(mut config) = filter_config::<M>(f)
            {
                edit(&mut config);
                f.config_type = Some(filter::ConfigType::TypedConfig(any(&config)));
            }
        }
    }
}

/// Inserts HTTP filters right before the router (or last).
pub fn insert_before_router(hcm: &mut HttpConnectionManager, filters: Vec<HttpFilter>) {
    let at = hcm
        .http_filters
        .iter()
        .position(|f| f.name == ROUTER)
        .unwrap_or(hcm.http_filters.len());
    for (i, f) in filters.into_iter().enumerate() {
        hcm.http_filters.insert(at + i, f);
    }
}

/// A header to set (or add, with `append`).
pub fn header(key: &str, value: &str, overwrite: bool) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_string(),
            value: value.to_string(),
            ..Default::default()
        }),
        append_action: if overwrite {
            header_value_option::HeaderAppendAction::OverwriteIfExistsOrAdd as i32
        } else {
            header_value_option::HeaderAppendAction::AppendIfExistsOrAdd as i32
        },
        ..Default::default()
    }
}

/// A percentage as Envoy's `FractionalPercent`, exact where the value allows.
pub fn fractional_percent(value: f64) -> envoy_types::pb::envoy::r#type::v3::FractionalPercent {
    use envoy_types::pb::envoy::r#type::v3::{FractionalPercent, fractional_percent::DenominatorType};
    let value = value.clamp(0.0, 100.0);
    if value.fract() == 0.0 {
        FractionalPercent {
            numerator: value as u32,
            denominator: DenominatorType::Hundred as i32,
        }
    } else if (value * 100.0).fract().abs() < 1e-9 {
        FractionalPercent {
            numerator: (value * 100.0).round() as u32,
            denominator: DenominatorType::TenThousand as i32,
        }
    } else {
        FractionalPercent {
            numerator: (value * 10_000.0).round() as u32,
            denominator: DenominatorType::Million as i32,
        }
    }
}

/// A data source holding `bytes` inline.
pub fn inline_bytes(bytes: &[u8]) -> DataSource {
    DataSource {
        specifier: Some(data_source::Specifier::InlineBytes(bytes.to_vec())),
        ..Default::default()
    }
}

/// A data source holding `text` inline.
pub fn inline_string(text: impl Into<String>) -> DataSource {
    DataSource {
        specifier: Some(data_source::Specifier::InlineString(text.into())),
        ..Default::default()
    }
}
