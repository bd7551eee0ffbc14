//! MeshHealthCheck: active health checks on outbound clusters.
//!
//! The checker follows the destination protocol (HTTP for http/http2, gRPC
//! for grpc, TCP for tcp), falling back to TCP when the protocol's checker
//! is disabled. TCP payloads are base64 in the policy and sent decoded
//! (Kuma sends the base64 text itself, which no server expects).

use base64::Engine;
use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{HealthCheck, TypedExtensionConfig, health_check};
use envoy_types::pb::envoy::extensions::health_check::event_sinks::file::v3::HealthCheckEventFileSink;
use envoy_types::pb::envoy::r#type::v3::{CodecClientType, Int64Range, Percent};
use kuma_crds::matching::Destination;
use kuma_crds::policies::mesh_health_check::Conf;
use kuma_crds::resource::ResourceType;

use crate::context::Protocol;
use crate::envoy;
use crate::generate::Policies;

const T: ResourceType = ResourceType::MeshHealthCheck;

fn payload(b64: &str) -> health_check::Payload {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap_or_else(|_| b64.as_bytes().to_vec());
    health_check::Payload {
        payload: Some(health_check::payload::Payload::Text(
            bytes.iter().map(|b| format!("{b:02x}")).collect(),
        )),
    }
}

/// The health check of `conf` for a destination speaking `protocol`, if any.
pub fn health_check(conf: &Conf, protocol: Protocol) -> Option<HealthCheck> {
    let enabled = |disabled: Option<bool>| disabled != Some(true);
    let http = conf.http.as_ref().filter(|h| enabled(h.disabled));
    let grpc = conf.grpc.as_ref().filter(|g| enabled(g.disabled));
    let tcp = conf.tcp.as_ref().filter(|t| enabled(t.disabled));
    let checker = match protocol {
        Protocol::Http | Protocol::Http2 if http.is_some() => {
            let h = http?;
            let mut headers = Vec::new();
            if let Some(m) = &h.request_headers_to_add {
                for kv in m.add.iter().flatten() {
                    headers.push(envoy::header(&kv.name, &kv.value, false));
                }
                for kv in m.set.iter().flatten() {
                    headers.push(envoy::header(&kv.name, &kv.value, true));
                }
            }
            health_check::HealthChecker::HttpHealthCheck(health_check::HttpHealthCheck {
                path: h.path.clone().unwrap_or_else(|| "/".into()),
                codec_client_type: if protocol == Protocol::Http2 {
                    CodecClientType::Http2
                } else {
                    CodecClientType::Http1
                } as i32,
                expected_statuses: h
                    .expected_statuses
                    .iter()
                    .flatten()
                    .map(|s| Int64Range {
                        start: i64::from(*s),
                        end: i64::from(*s) + 1,
                    })
                    .collect(),
                request_headers_to_add: headers,
                ..Default::default()
            })
        }
        Protocol::Grpc if grpc.is_some() => {
            let g = grpc?;
            health_check::HealthChecker::GrpcHealthCheck(health_check::GrpcHealthCheck {
                service_name: g.service_name.clone().unwrap_or_default(),
                authority: g.authority.clone().unwrap_or_default(),
                ..Default::default()
            })
        }
        _ if tcp.is_some() => {
            let t = tcp?;
            health_check::HealthChecker::TcpHealthCheck(health_check::TcpHealthCheck {
                send: t.send.as_deref().map(payload),
                receive: t.receive.iter().flatten().map(|r| payload(r)).collect(),
                ..Default::default()
            })
        }
        _ => return None,
    };
    let d =
        |v: &Option<kuma_crds::common::Duration>| v.as_ref().and_then(|d| d.to_std()).map(envoy::duration);
    Some(HealthCheck {
        interval: Some(d(&conf.interval).unwrap_or(envoy::seconds(60))),
        timeout: Some(d(&conf.timeout).unwrap_or(envoy::seconds(15))),
        unhealthy_threshold: Some(envoy::u32_value(
            conf.unhealthy_threshold.unwrap_or(5).max(0) as u32
        )),
        healthy_threshold: Some(envoy::u32_value(conf.healthy_threshold.unwrap_or(1).max(0) as u32)),
        initial_jitter: d(&conf.initial_jitter),
        interval_jitter: d(&conf.interval_jitter),
        interval_jitter_percent: conf.interval_jitter_percent.unwrap_or(0).max(0) as u32,
        no_traffic_interval: d(&conf.no_traffic_interval),
        reuse_connection: conf.reuse_connection.map(envoy::bool_value),
        always_log_health_check_failures: conf.always_log_health_check_failures.unwrap_or(false),
        event_logger: conf
            .event_log_path
            .iter()
            .map(|path| TypedExtensionConfig {
                name: "envoy.health_check.event_sinks.file".into(),
                typed_config: Some(envoy::any(&HealthCheckEventFileSink {
                    event_log_path: path.clone(),
                })),
            })
            .collect(),
        health_checker: Some(checker),
        ..Default::default()
    })
}

/// Outbound cluster: appends the health check and the panic settings. The
/// checking proxy's tags are added per proxy by [`add_source_tags`], so that
/// the cluster itself can be shared by proxies with different tags.
pub fn cluster(cluster: &mut Cluster, policies: &Policies, destination: &Destination, protocol: Protocol) {
    let Some(conf) = policies.to_typed::<Conf>(T, destination) else {
        return;
    };
    if let Some(p) = conf.healthy_panic_threshold.as_ref().and_then(|p| p.as_decimal()) {
        cluster
            .common_lb_config
            .get_or_insert_with(cluster::CommonLbConfig::default)
            .healthy_panic_threshold = Some(Percent { value: p });
    }
    if let Some(fail) = conf.fail_traffic_on_panic {
        let lb = cluster
            .common_lb_config
            .get_or_insert_with(cluster::CommonLbConfig::default);
        if !matches!(
            lb.locality_config_specifier,
            Some(cluster::common_lb_config::LocalityConfigSpecifier::LocalityWeightedLbConfig(_))
        ) {
            lb.locality_config_specifier = Some(
                cluster::common_lb_config::LocalityConfigSpecifier::ZoneAwareLbConfig(
                    cluster::common_lb_config::ZoneAwareLbConfig {
                        fail_traffic_on_panic: fail,
                        ..Default::default()
                    },
                ),
            );
        }
    }
    if let Some(hc) = health_check(&conf, protocol) {
        cluster.health_checks.push(hc);
    }
}

/// Whether the cluster has HTTP health checks (which carry the checking
/// proxy's tags).
pub fn has_http_checks(cluster: &Cluster) -> bool {
    cluster.health_checks.iter().any(|hc| {
        matches!(
            hc.health_checker,
            Some(health_check::HealthChecker::HttpHealthCheck(_))
        )
    })
}

/// Adds Kuma's `x-kuma-tags` header (the checking proxy's tags, see
/// [`crate::context::serialize_tag_set`]) to every HTTP health check of the
/// cluster.
pub fn add_source_tags(cluster: &mut Cluster, kuma_tags: &str) {
    if kuma_tags.is_empty() {
        return;
    }
    for hc in &mut cluster.health_checks {
        if let Some(health_check::HealthChecker::HttpHealthCheck(http)) = &mut hc.health_checker {
            http.request_headers_to_add
                .insert(0, envoy::header("x-kuma-tags", kuma_tags, false));
        }
    }
}
