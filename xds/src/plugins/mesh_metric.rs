//! MeshMetric (and the Mesh's legacy Prometheus backend): a listener on the
//! proxy's address serving Envoy's Prometheus stats.
//!
//! Kuma routes the listener to kuma-dp's metrics hijacker, which merges
//! application metrics in; this control plane routes it to Envoy's admin
//! `/stats/prometheus` directly, so metrics work with any kuma-dp.

use envoy_types::pb::envoy::config::core::v3::TrafficDirection;
use envoy_types::pb::envoy::config::listener::v3::FilterChain;
use kuma_crds::policies::mesh_metric::{BackendType, Conf, DEFAULT_METRICS_PATH, DEFAULT_PROMETHEUS_PORT};
use kuma_crds::resource::ResourceType;

use crate::context::{MeshContext, Proxy};
use crate::envoy;
use crate::generate::{ADMIN_CLUSTER, Policies, prefix_route, static_hcm};
use crate::resources::{Origin, Resource, ResourceSet};

const T: ResourceType = ResourceType::MeshMetric;

fn prometheus_listener(name: &str, address: &str, port: u32, path: &str, used_only: bool) -> Resource {
    let rewrite = if used_only {
        "/stats/prometheus?usedonly"
    } else {
        "/stats/prometheus"
    };
    let hcm = static_hcm(name, name, vec![prefix_route(path, ADMIN_CLUSTER, rewrite)]);
    Resource::Listener(envoy::listener(
        name,
        address,
        port,
        TrafficDirection::Inbound,
        vec![FilterChain {
            filters: vec![envoy::network_filter(envoy::HCM, &hcm)],
            ..Default::default()
        }],
    ))
}

/// Adds the Prometheus listeners of the proxy.
pub fn generate(proxy: &Proxy<'_>, mesh: &MeshContext, policies: &Policies, rs: &mut ResourceSet) {
    let address = proxy.address();
    if let Some(conf) = policies.single_typed::<Conf>(T) {
        let used_only = conf.sidecar.as_ref().and_then(|s| s.include_unused) != Some(true);
        for b in conf.backends.iter().flatten() {
            if b.backend_type != BackendType::Prometheus {
                continue;
            }
            let p = b.prometheus.clone();
            let name = p
                .as_ref()
                .and_then(|p| p.client_id.clone())
                .unwrap_or_else(|| "default-backend".into());
            let port = p.as_ref().and_then(|p| p.port).unwrap_or(DEFAULT_PROMETHEUS_PORT);
            let path = p
                .as_ref()
                .and_then(|p| p.path.clone())
                .unwrap_or_else(|| DEFAULT_METRICS_PATH.into());
            rs.add(
                Origin::Prometheus,
                prometheus_listener(
                    &format!("_kuma:metrics:prometheus:{name}"),
                    address,
                    port,
                    &path,
                    used_only,
                ),
            );
        }
        return;
    }
    // The Mesh's legacy backend, when MeshMetric does not configure metrics.
    let Some(metrics) = &mesh.mesh.metrics else { return };
    let Some(enabled) = metrics.enabled_backend.as_deref() else {
        return;
    };
    let Some(backend) = metrics
        .backends
        .iter()
        .flatten()
        .find(|b| b.name == enabled && b.backend_type == "prometheus")
    else {
        return;
    };
    let conf = backend.conf.clone().unwrap_or_default();
    let port = conf
        .get("port")
        .and_then(|p| p.as_u64())
        .unwrap_or(u64::from(DEFAULT_PROMETHEUS_PORT)) as u32;
    let path = conf
        .get("path")
        .and_then(|p| p.as_str())
        .unwrap_or(DEFAULT_METRICS_PATH)
        .to_string();
    rs.add(
        Origin::Prometheus,
        prometheus_listener("kuma:metrics:prometheus", address, port, &path, false),
    );
}
