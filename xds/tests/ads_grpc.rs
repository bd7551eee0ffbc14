//! The ADS service over real gRPC: malformed and oversized requests get a
//! gRPC error (and the server keeps serving), the stream limit holds, and a
//! client gets its snapshot.

mod support;

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use kuma_xds::metrics::XdsMetrics;
use kuma_xds::resources::XdsType;
use kuma_xds::server::{AcceptAll, AdsServer, Limits};
use kuma_xds::snapshot::SnapshotCache;
use tokio::net::TcpListener;
use tokio_stream::StreamExt;

async fn serve(limits: Limits) -> (String, Arc<SnapshotCache>) {
    let cache = Arc::new(SnapshotCache::new());
    let ads = AdsServer::new(
        cache.clone(),
        Arc::new(AcceptAll),
        Arc::new(XdsMetrics::default()),
        &limits,
    );
    let router = tonic::service::Routes::new(ads.into_service(&limits)).into_axum_router();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (format!("http://{addr}"), cache)
}

fn request(node: Option<&str>, t: XdsType) -> DiscoveryRequest {
    DiscoveryRequest {
        node: node.map(|id| Node {
            id: id.into(),
            ..Default::default()
        }),
        type_url: t.type_url().into(),
        ..Default::default()
    }
}

/// Opens a stream sending `first` and returns the first response or status.
async fn first_answer(
    url: &str,
    first: DiscoveryRequest,
) -> Result<envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse, tonic::Status> {
    let mut client = AggregatedDiscoveryServiceClient::connect(url.to_string())
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(first).await.unwrap();
    let mut responses = client
        .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let next = tokio::time::timeout(Duration::from_secs(10), responses.next())
        .await
        .expect("an answer in time");
    drop(tx);
    next.unwrap_or_else(|| Err(tonic::Status::cancelled("stream ended")))
}

#[tokio::test]
async fn a_stream_without_a_node_is_refused_and_the_server_keeps_serving() {
    let (url, cache) = serve(Limits::default()).await;
    let err = first_answer(&url, request(None, XdsType::Cluster))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("node.id"), "{}", err.message());

    let err = first_answer(
        &url,
        DiscoveryRequest {
            type_url: String::new(),
            ..request(Some("default.web"), XdsType::Cluster)
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    // A well-formed stream is served its snapshot.
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/basic/base-mesh.input.yaml");
    let (_, resources) = support::Fixture::load(&path).generate();
    let snapshot = kuma_xds::snapshot::Snapshot::from_resources(&resources);
    let version = snapshot.version(XdsType::Cluster).to_string();
    cache.set("default.web-1", snapshot);
    let r = first_answer(&url, request(Some("default.web-1"), XdsType::Cluster))
        .await
        .unwrap();
    assert_eq!(r.version_info, version);
    assert!(!r.resources.is_empty());
}

#[tokio::test]
async fn streams_beyond_the_limit_are_refused() {
    let (url, _) = serve(Limits {
        max_streams: 1,
        ..Limits::default()
    })
    .await;
    let mut client = AggregatedDiscoveryServiceClient::connect(url.clone())
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(request(Some("default.a"), XdsType::Cluster))
        .await
        .unwrap();
    let _open = client
        .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap();
    let err = first_answer(&url, request(Some("default.b"), XdsType::Cluster))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    drop(tx);
}

#[tokio::test]
async fn an_oversized_request_is_refused_and_the_server_keeps_serving() {
    let (url, cache) = serve(Limits {
        max_request_bytes: 64 * 1024,
        ..Limits::default()
    })
    .await;
    let mut huge = request(Some("default.big"), XdsType::Cluster);
    huge.resource_names = vec!["x".repeat(128 * 1024)];
    let err = first_answer(&url, huge).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::OutOfRange, "{err:?}");

    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/basic/base-mesh.input.yaml");
    let (_, resources) = support::Fixture::load(&path).generate();
    cache.set(
        "default.web-1",
        kuma_xds::snapshot::Snapshot::from_resources(&resources),
    );
    let r = first_answer(&url, request(Some("default.web-1"), XdsType::Cluster))
        .await
        .expect("a normal stream is served");
    assert!(!r.resources.is_empty());
}
