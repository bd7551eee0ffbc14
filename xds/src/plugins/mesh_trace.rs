//! MeshTrace: the tracing provider, sampling and tags of every connection
//! manager, and the collector cluster.

use envoy_types::pb::envoy::config::core::v3::{GrpcService, grpc_service};
use envoy_types::pb::envoy::config::trace::v3::{
    DatadogConfig, OpenTelemetryConfig, ZipkinConfig, tracing, zipkin_config,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager,
};
use envoy_types::pb::envoy::r#type::tracing::v3::{CustomTag, custom_tag};
use envoy_types::pb::envoy::r#type::v3::Percent;
use kuma_crds::policies::mesh_trace::{BackendType, Conf, ZipkinApiVersion, parse_http_url};
use kuma_crds::resource::ResourceType;

use crate::context::{MeshContext, Proxy};
use crate::envoy;
use crate::generate::Policies;
use crate::resources::{Origin, Resource, ResourceSet};

const T: ResourceType = ResourceType::MeshTrace;

fn literal(tag: &str, value: &str) -> CustomTag {
    CustomTag {
        tag: tag.into(),
        r#type: Some(custom_tag::Type::Literal(custom_tag::Literal {
            value: value.into(),
        })),
    }
}

/// Sets the tracing of a connection manager and adds the collector cluster
/// to `rs`. `outbound_to` is the destination service of an outbound (`None`
/// for an inbound); Datadog's split service names include it.
pub fn hcm(
    hcm: &mut HttpConnectionManager,
    proxy: &Proxy<'_>,
    mesh: &MeshContext,
    policies: &Policies,
    outbound_to: Option<&str>,
    rs: &mut ResourceSet,
) {
    let Some(conf) = policies.single_typed::<Conf>(T) else {
        return;
    };
    let Some(backend) = conf.backends.as_ref().and_then(|b| b.first()) else {
        return;
    };
    let service = proxy.service().to_string();
    let (provider_name, provider, cluster) = match backend.backend_type {
        BackendType::Zipkin => {
            let Some(z) = &backend.zipkin else { return };
            let Some(url) = parse_http_url(&z.url) else { return };
            let cluster = "meshtrace:zipkin".to_string();
            let config = ZipkinConfig {
                collector_cluster: cluster.clone(),
                collector_endpoint: url.path.clone(),
                trace_id_128bit: z.trace_id_128bit.unwrap_or(false),
                shared_span_context: Some(envoy::bool_value(z.shared_span_context.unwrap_or(true))),
                collector_endpoint_version: match z.api_version {
                    Some(ZipkinApiVersion::HttpProto) => zipkin_config::CollectorEndpointVersion::HttpProto,
                    _ => zipkin_config::CollectorEndpointVersion::HttpJson,
                } as i32,
                collector_hostname: if url.explicit_port {
                    format!("{}:{}", url.host, url.port)
                } else {
                    url.host.clone()
                },
                ..Default::default()
            };
            (
                "envoy.tracers.zipkin",
                envoy::any(&config),
                (cluster, url.host, url.port),
            )
        }
        BackendType::Datadog => {
            let Some(d) = &backend.datadog else { return };
            let Some(url) = parse_http_url(&d.url) else { return };
            let cluster = "meshtrace:datadog".to_string();
            let service_name = if d.split_service == Some(true) {
                match outbound_to {
                    None => format!("{service}_INBOUND"),
                    Some(destination) => format!("{service}_OUTBOUND_{destination}"),
                }
            } else {
                service.clone()
            };
            let config = DatadogConfig {
                collector_cluster: cluster.clone(),
                service_name,
                ..Default::default()
            };
            (
                "envoy.tracers.datadog",
                envoy::any(&config),
                (cluster, url.host, url.port),
            )
        }
        BackendType::OpenTelemetry => {
            let Some(o) = &backend.open_telemetry else { return };
            let Some(endpoint) = o.endpoint.as_deref().filter(|e| !e.is_empty()) else {
                return;
            };
            let (host, port) = match endpoint.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse().unwrap_or(4317)),
                None => (endpoint.to_string(), 4317),
            };
            let cluster = "meshtrace:opentelemetry".to_string();
            let config = OpenTelemetryConfig {
                service_name: service.clone(),
                grpc_service: Some(GrpcService {
                    target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                        grpc_service::EnvoyGrpc {
                            cluster_name: cluster.clone(),
                            ..Default::default()
                        },
                    )),
                    ..Default::default()
                }),
                ..Default::default()
            };
            (
                "envoy.tracers.opentelemetry",
                envoy::any(&config),
                (cluster, host, port),
            )
        }
    };
    let (cluster_name, host, port) = cluster;
    let mut collector = envoy::static_cluster(&cluster_name, &[(host, u32::from(port))], envoy::seconds(5));
    if backend.backend_type == BackendType::OpenTelemetry {
        envoy::set_upstream_http(&mut collector, true);
    }
    rs.add(Origin::Tracing, Resource::Cluster(collector));

    let percent = |v: &Option<kuma_crds::common::IntOrString>| {
        v.as_ref()
            .and_then(|p| p.as_decimal())
            .map(|value| Percent { value })
    };
    let sampling = conf.sampling.clone().unwrap_or_default();
    let mut custom_tags: Vec<CustomTag> = conf
        .tags
        .iter()
        .flatten()
        .map(|t| match (&t.literal, &t.header) {
            (Some(l), _) => literal(&t.name, l),
            (None, Some(h)) => CustomTag {
                tag: t.name.clone(),
                r#type: Some(custom_tag::Type::RequestHeader(custom_tag::Header {
                    name: h.name.clone(),
                    default_value: h.default.clone().unwrap_or_default(),
                })),
            },
            (None, None) => literal(&t.name, ""),
        })
        .collect();
    if !custom_tags.iter().any(|t| t.tag == "kuma.mesh") {
        custom_tags.push(literal("kuma.mesh", &mesh.name));
    }
    if let Some(zone) = proxy.tags().get(kuma_crds::dataplane::ZONE_TAG)
        && !custom_tags.iter().any(|t| t.tag == "kuma.zone")
    {
        custom_tags.push(literal("kuma.zone", zone));
    }
    hcm.tracing = Some(http_connection_manager::Tracing {
        client_sampling: percent(&sampling.client),
        random_sampling: percent(&sampling.random),
        overall_sampling: percent(&sampling.overall),
        custom_tags,
        provider: Some(envoy_types::pb::envoy::config::trace::v3::tracing::Http {
            name: provider_name.into(),
            config_type: Some(tracing::http::ConfigType::TypedConfig(provider)),
        }),
        spawn_upstream_span: Some(envoy::bool_value(false)),
        ..Default::default()
    });
}
