//! MeshRateLimit: local rate limits on inbound traffic — HTTP requests per
//! route, TCP connections per listener.

use envoy_types::pb::envoy::config::core::v3::RuntimeFractionalPercent;
use envoy_types::pb::envoy::config::listener::v3::Filter;
use envoy_types::pb::envoy::config::route::v3::route;
use envoy_types::pb::envoy::extensions::filters::http::local_ratelimit::v3::LocalRateLimit as HttpLocalRateLimit;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager,
};
use envoy_types::pb::envoy::extensions::filters::network::local_ratelimit::v3::LocalRateLimit as TcpLocalRateLimit;
use envoy_types::pb::envoy::r#type::v3::{HttpStatus, TokenBucket};
use kuma_crds::policies::mesh_rate_limit::{Conf, Rate};
use kuma_crds::resource::ResourceType;

use crate::envoy;
use crate::generate::Policies;

const T: ResourceType = ResourceType::MeshRateLimit;
const HTTP_FILTER: &str = "envoy.filters.http.local_ratelimit";
/// Kuma's name for the network filter (MeshProxyPatch matches on it).
const TCP_FILTER: &str = "envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit";

fn bucket(rate: &Rate) -> TokenBucket {
    TokenBucket {
        max_tokens: rate.num,
        tokens_per_fill: Some(envoy::u32_value(rate.num)),
        fill_interval: rate.interval.to_std().map(envoy::duration),
    }
}

fn always(runtime_key: &str) -> RuntimeFractionalPercent {
    RuntimeFractionalPercent {
        default_value: Some(envoy::fractional_percent(100.0)),
        runtime_key: runtime_key.into(),
    }
}

/// The per-route HTTP rate limit of a conf, when it limits HTTP.
pub fn http_limit(conf: &Conf) -> Option<HttpLocalRateLimit> {
    let http = conf.local.as_ref()?.http.as_ref()?;
    if http.disabled == Some(true) {
        return None;
    }
    let rate = http.request_rate.as_ref()?;
    let on = http.on_rate_limit.clone().unwrap_or_default();
    let mut headers = Vec::new();
    if let Some(h) = &on.headers {
        for kv in h.add.iter().flatten() {
            headers.push(envoy::header(&kv.name, &kv.value, false));
        }
        for kv in h.set.iter().flatten() {
            for v in kv.value.split(',') {
                headers.push(envoy::header(&kv.name, v, true));
            }
        }
    }
    Some(HttpLocalRateLimit {
        stat_prefix: "rate_limit".into(),
        status: on
            .status
            .filter(|s| *s != 0)
            .map(|code| HttpStatus { code: code as i32 }),
        token_bucket: Some(bucket(rate)),
        filter_enabled: Some(always("local_rate_limit_enabled")),
        filter_enforced: Some(always("local_rate_limit_enforced")),
        response_headers_to_add: headers,
        ..Default::default()
    })
}

/// Inbound connection manager: the limit on every route, and the filter.
pub fn inbound_hcm(hcm: &mut HttpConnectionManager, policies: &Policies, index: usize) {
    let Some(conf) = policies.inbound_typed::<Conf>(T, index) else {
        return;
    };
    let Some(limit) = http_limit(&conf) else { return };
    if let Some(http_connection_manager::RouteSpecifier::RouteConfig(rc)) = &mut hcm.route_specifier {
        for vh in &mut rc.virtual_hosts {
            for r in &mut vh.routes {
                if matches!(r.action, Some(route::Action::Route(_))) {
                    r.typed_per_filter_config
                        .insert(HTTP_FILTER.into(), envoy::any(&limit));
                }
            }
        }
    }
    hcm.http_filters.retain(|f| f.name != HTTP_FILTER);
    let filter = envoy::http_filter(
        HTTP_FILTER,
        &HttpLocalRateLimit {
            stat_prefix: "rate_limit".into(),
            ..Default::default()
        },
    );
    envoy::insert_before_router(hcm, vec![filter]);
}

/// Inbound network filters (TCP or HTTP): a connection rate limit first.
pub fn inbound_tcp(filters: &mut Vec<Filter>, policies: &Policies, index: usize) {
    let Some(conf) = policies.inbound_typed::<Conf>(T, index) else {
        return;
    };
    let Some(tcp) = conf.local.as_ref().and_then(|l| l.tcp.as_ref()) else {
        return;
    };
    if tcp.disabled == Some(true) {
        return;
    }
    let Some(rate) = &tcp.connection_rate else { return };
    let limit = TcpLocalRateLimit {
        stat_prefix: "tcp_rate_limit".into(),
        token_bucket: Some(bucket(rate)),
        ..Default::default()
    };
    filters.retain(|f| f.name != TCP_FILTER);
    filters.insert(0, envoy::network_filter(TCP_FILTER, &limit));
}
