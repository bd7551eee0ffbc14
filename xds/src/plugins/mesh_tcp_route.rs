//! MeshTCPRoute: where a TCP outbound sends its connections — the route's
//! weighted backends, or, without a route, the outbound's own service (a
//! subset when the outbound names more tags than `kuma.io/service`).

use std::collections::BTreeMap;

use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::tcp_proxy;
use kuma_crds::common::{BackendRef, TargetRef, TargetRefKind};
use kuma_crds::dataplane::SERVICE_TAG;
use kuma_crds::policies::mesh_tcp_route::Conf;

/// The backends of a TCP outbound to `service` with `tags`.
pub fn backends(conf: Option<Conf>, service: &str, tags: &BTreeMap<String, String>) -> Vec<BackendRef> {
    if let Some(routed) = conf.and_then(|c| c.backend_refs).filter(|b| !b.is_empty()) {
        return routed;
    }
    let mut default = BackendRef::from_target(&TargetRef::named(TargetRefKind::MeshService, service), 100);
    let subset: BTreeMap<String, String> = tags
        .iter()
        .filter(|(k, _)| *k != SERVICE_TAG)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    default.tags = (!subset.is_empty()).then_some(subset);
    vec![default]
}

/// TcpProxy's cluster choice for clusters with their weights: one cluster
/// plainly, several as weighted clusters, none when nothing is left.
pub fn cluster_specifier(splits: &[(String, u32)]) -> Option<tcp_proxy::ClusterSpecifier> {
    match splits {
        [] => None,
        [(single, _)] => Some(tcp_proxy::ClusterSpecifier::Cluster(single.clone())),
        many => Some(tcp_proxy::ClusterSpecifier::WeightedClusters(
            tcp_proxy::WeightedCluster {
                clusters: many
                    .iter()
                    .map(|(name, weight)| tcp_proxy::weighted_cluster::ClusterWeight {
                        name: name.clone(),
                        weight: *weight,
                        ..Default::default()
                    })
                    .collect(),
            },
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_route_the_outbound_service_is_the_backend() {
        let tags = BTreeMap::from([
            (SERVICE_TAG.to_string(), "db".to_string()),
            ("version".to_string(), "v2".to_string()),
        ]);
        let backends = backends(None, "db", &tags);
        assert_eq!(backends.len(), 1);
        assert_eq!(backends[0].name.as_deref(), Some("db"));
        assert_eq!(
            backends[0]
                .tags
                .as_ref()
                .and_then(|t| t.get("version"))
                .map(String::as_str),
            Some("v2")
        );
    }

    #[test]
    fn one_cluster_is_plain_several_are_weighted() {
        assert_eq!(cluster_specifier(&[]), None);
        assert_eq!(
            cluster_specifier(&[("db".into(), 100)]),
            Some(tcp_proxy::ClusterSpecifier::Cluster("db".into()))
        );
        let Some(tcp_proxy::ClusterSpecifier::WeightedClusters(w)) =
            cluster_specifier(&[("a".into(), 90), ("b".into(), 10)])
        else {
            panic!("weighted")
        };
        assert_eq!(w.clusters.iter().map(|c| c.weight).collect::<Vec<_>>(), [90, 10]);
    }
}
