//! Kuma's virtual probes (a Dataplane's `probes`, deprecated in Kuma in
//! favour of kuma-dp's application probe proxy): a plaintext HTTP listener
//! `probe:listener` on the Dataplane's address and the probes' port, so the
//! kubelet can probe an app whose inbounds require mTLS. Each probe path
//! (`/<port><path>`, exact, GET only) is routed to the app's local cluster
//! with its own path; a port no inbound serves has no local cluster, so
//! the prober is redirected to the app's port instead, as Kuma does.

use std::collections::BTreeSet;

use envoy_types::pb::envoy::config::core::v3::TrafficDirection;
use envoy_types::pb::envoy::config::listener::v3::FilterChain;
use envoy_types::pb::envoy::config::route::v3::{
    HeaderMatcher, RedirectAction, Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost,
    header_matcher, redirect_action, route, route_action, route_match,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};

use crate::context::Proxy;
use crate::envoy;
use crate::resources::{Origin, Resource, ResourceSet};

/// Kuma's name of the probe listener.
pub const LISTENER: &str = "probe:listener";

pub(super) fn generate(proxy: &Proxy<'_>, rs: &mut ResourceSet) {
    let dp = proxy.dataplane;
    let Some(probes) = &dp.probes else { return };
    let Some(port) = probes.port else { return };
    let Some(address) = dp.networking.as_ref().and_then(|n| n.address.clone()) else {
        return;
    };
    // The app ports that have a local cluster (`localhost:<port>`).
    let local: BTreeSet<u32> = dp
        .inbounds()
        .iter()
        .filter(|i| i.port != kuma_crds::dataplane::SERVICELESS_PORT)
        .map(|i| i.service_port.unwrap_or(i.port))
        .collect();
    let routes: Vec<Route> = probes
        .endpoints
        .iter()
        .flatten()
        .filter_map(|e| Some((e.inbound_port?, e.inbound_path.clone()?, e.path.clone()?)))
        .map(|(app_port, app_path, path)| {
            let r#match = RouteMatch {
                path_specifier: Some(route_match::PathSpecifier::Path(path)),
                headers: vec![HeaderMatcher {
                    name: ":method".into(),
                    header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(
                        StringMatcher {
                            match_pattern: Some(string_matcher::MatchPattern::Exact("GET".into())),
                            ..Default::default()
                        },
                    )),
                    ..Default::default()
                }],
                ..Default::default()
            };
            let action = if local.contains(&app_port) {
                route::Action::Route(RouteAction {
                    cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(format!(
                        "localhost:{app_port}"
                    ))),
                    prefix_rewrite: app_path,
                    ..Default::default()
                })
            } else {
                route::Action::Redirect(RedirectAction {
                    path_rewrite_specifier: Some(redirect_action::PathRewriteSpecifier::PathRedirect(
                        app_path,
                    )),
                    port_redirect: app_port,
                    ..Default::default()
                })
            };
            Route {
                r#match: Some(r#match),
                action: Some(action),
                ..Default::default()
            }
        })
        .collect();
    let hcm = HttpConnectionManager {
        stat_prefix: "probe_listener".into(),
        codec_type: http_connection_manager::CodecType::Auto as i32,
        http_filters: envoy::base_http_filters(false),
        route_specifier: Some(http_connection_manager::RouteSpecifier::RouteConfig(
            RouteConfiguration {
                name: "probe:route_configuration".into(),
                validate_clusters: Some(envoy::bool_value(false)),
                virtual_hosts: vec![VirtualHost {
                    name: "probe".into(),
                    domains: vec!["*".into()],
                    routes,
                    ..Default::default()
                }],
                ..Default::default()
            },
        )),
        ..Default::default()
    };
    let chain = FilterChain {
        filters: vec![envoy::network_filter(envoy::HCM, &hcm)],
        ..Default::default()
    };
    let mut listener = envoy::listener(LISTENER, &address, port, TrafficDirection::Inbound, vec![chain]);
    if proxy.transparent_proxy().is_some() {
        // Reached through the inbound redirect, as Kuma's probe listener.
        listener.bind_to_port = Some(envoy::bool_value(false));
    }
    rs.add(Origin::Inbound, Resource::Listener(listener));
}
