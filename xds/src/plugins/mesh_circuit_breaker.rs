//! MeshCircuitBreaker: connection limits and outlier detection on clusters
//! (outbound per destination, inbound for the local app).

use envoy_types::pb::envoy::config::cluster::v3::{
    CircuitBreakers, Cluster, OutlierDetection, circuit_breakers, cluster,
};
use envoy_types::pb::envoy::config::core::v3::RoutingPriority;
use envoy_types::pb::envoy::r#type::v3::Percent;
use kuma_crds::matching::Destination;
use kuma_crds::policies::mesh_circuit_breaker::Conf;
use kuma_crds::resource::ResourceType;

use crate::envoy;
use crate::generate::Policies;

const T: ResourceType = ResourceType::MeshCircuitBreaker;

fn default_threshold(cluster: &mut Cluster) -> &mut circuit_breakers::Thresholds {
    let cb = cluster
        .circuit_breakers
        .get_or_insert_with(CircuitBreakers::default);
    let at = match cb
        .thresholds
        .iter()
        .position(|t| t.priority == RoutingPriority::Default as i32)
    {
        Some(i) => i,
        None => {
            cb.thresholds.push(circuit_breakers::Thresholds::default());
            cb.thresholds.len() - 1
        }
    };
    &mut cb.thresholds[at]
}

/// Sets a cluster's limits and outlier detection from `conf`.
pub fn apply(cluster: &mut Cluster, conf: &Conf) {
    let threshold = default_threshold(cluster);
    threshold.track_remaining = true;
    if let Some(l) = &conf.connection_limits {
        let set = |v: Option<u32>, field: &mut Option<envoy_types::pb::google::protobuf::UInt32Value>| {
            if let Some(v) = v {
                *field = Some(envoy::u32_value(v));
            }
        };
        set(l.max_connections, &mut threshold.max_connections);
        set(l.max_connection_pools, &mut threshold.max_connection_pools);
        set(l.max_pending_requests, &mut threshold.max_pending_requests);
        set(l.max_retries, &mut threshold.max_retries);
        set(l.max_requests, &mut threshold.max_requests);
    }
    let Some(o) = conf
        .outlier_detection
        .as_ref()
        .filter(|o| o.disabled != Some(true))
    else {
        return;
    };
    let enforcing = |on: bool| Some(envoy::u32_value(if on { 100 } else { 0 }));
    let detectors = o.detectors.clone().unwrap_or_default();
    let mut od = OutlierDetection {
        interval: o.interval.as_ref().and_then(|d| d.to_std()).map(envoy::duration),
        base_ejection_time: o
            .base_ejection_time
            .as_ref()
            .and_then(|d| d.to_std())
            .map(envoy::duration),
        max_ejection_percent: o.max_ejection_percent.map(envoy::u32_value),
        split_external_local_origin_errors: o.split_external_and_local_errors.unwrap_or(false),
        enforcing_consecutive_5xx: enforcing(detectors.total_failures.is_some()),
        enforcing_consecutive_gateway_failure: enforcing(detectors.gateway_failures.is_some()),
        enforcing_consecutive_local_origin_failure: enforcing(detectors.local_origin_failures.is_some()),
        ..Default::default()
    };
    if let Some(c) = detectors.total_failures.and_then(|c| c.consecutive) {
        od.consecutive_5xx = Some(envoy::u32_value(c));
    }
    if let Some(c) = detectors.gateway_failures.and_then(|c| c.consecutive) {
        od.consecutive_gateway_failure = Some(envoy::u32_value(c));
    }
    if let Some(c) = detectors.local_origin_failures.and_then(|c| c.consecutive) {
        od.consecutive_local_origin_failure = Some(envoy::u32_value(c));
    }
    if o.detectors.is_some() {
        od.enforcing_success_rate = enforcing(detectors.success_rate.is_some());
        od.enforcing_local_origin_success_rate = enforcing(detectors.success_rate.is_some());
        od.enforcing_failure_percentage = enforcing(detectors.failure_percentage.is_some());
        od.enforcing_failure_percentage_local_origin = enforcing(detectors.failure_percentage.is_some());
    }
    if let Some(s) = &detectors.success_rate {
        od.success_rate_minimum_hosts = s.minimum_hosts.map(envoy::u32_value);
        od.success_rate_request_volume = s.request_volume.map(envoy::u32_value);
        od.success_rate_stdev_factor = s
            .standard_deviation_factor
            .as_ref()
            .and_then(|f| f.as_decimal())
            .map(|f| envoy::u32_value((f * 1000.0).round() as u32));
    }
    if let Some(f) = &detectors.failure_percentage {
        od.failure_percentage_minimum_hosts = f.minimum_hosts.map(envoy::u32_value);
        od.failure_percentage_request_volume = f.request_volume.map(envoy::u32_value);
        od.failure_percentage_threshold = f.threshold.map(envoy::u32_value);
    }
    cluster.outlier_detection = Some(od);
    if let Some(p) = o.healthy_panic_threshold.as_ref().and_then(|p| p.as_decimal()) {
        cluster
            .common_lb_config
            .get_or_insert_with(cluster::CommonLbConfig::default)
            .healthy_panic_threshold = Some(Percent { value: p });
    }
}

/// Outbound cluster.
pub fn outbound_cluster(cluster: &mut Cluster, policies: &Policies, destination: &Destination) {
    if policies.has(T) {
        apply(cluster, &policies.to_typed(T, destination).unwrap_or_default());
    }
}

/// Inbound (local app) cluster.
pub fn inbound_cluster(cluster: &mut Cluster, policies: &Policies, index: usize) {
    if policies.has(T) {
        apply(cluster, &policies.inbound_typed(T, index).unwrap_or_default());
    }
}
