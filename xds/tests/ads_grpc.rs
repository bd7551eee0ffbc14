//! The ADS service over real gRPC: malformed and oversized requests get a
//! gRPC error (and the server keeps serving), the stream limit holds, a
//! client gets its snapshot, and a client that never reads holds up nobody.

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
    let (url, cache, _) = serve_with_metrics(limits).await;
    (url, cache)
}

/// [`serve`], with the server's metrics.
async fn serve_with_metrics(limits: Limits) -> (String, Arc<SnapshotCache>, Arc<XdsMetrics>) {
    let cache = Arc::new(SnapshotCache::new());
    let metrics = Arc::new(XdsMetrics::default());
    let ads = AdsServer::new(cache.clone(), Arc::new(AcceptAll), metrics.clone(), &limits);
    let router = tonic::service::Routes::new(ads.into_service(&limits)).into_axum_router();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (format!("http://{addr}"), cache, metrics)
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

/// Counts the responses sent to each node.
#[derive(Default)]
struct CountSent(std::sync::Mutex<std::collections::BTreeMap<String, u64>>);

impl kuma_xds::server::ProxyRegistry for CountSent {
    fn connect<'a>(
        &'a self,
        _node: &'a Node,
        _metadata: &'a tonic::metadata::MetadataMap,
    ) -> kuma_xds::server::ConnectFuture<'a> {
        Box::pin(async { Ok(Box::new(()) as kuma_xds::server::ConnectionGuard) })
    }

    fn observe(&self, node: &str, event: kuma_xds::server::StreamEvent<'_>) {
        if let kuma_xds::server::StreamEvent::Sent { .. } = event {
            *self.0.lock().unwrap().entry(node.to_string()).or_default() += 1;
        }
    }
}

/// A snapshot of 20 clusters of about 2 KiB each whose content is `round`.
fn clusters(round: usize) -> kuma_xds::snapshot::Snapshot {
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use kuma_xds::resources::{Origin, Resource, ResourceSet};
    let mut set = ResourceSet::new();
    for i in 0..20 {
        set.add(
            Origin::Outbound,
            Resource::Cluster(Cluster {
                name: format!("cluster-{i}"),
                alt_stat_name: format!("{round}-{}", "x".repeat(2048)),
                ..Default::default()
            }),
        );
    }
    kuma_xds::snapshot::Snapshot::from_resources(&set)
}

/// The proof of the slow-reader rule: a stream whose client stops reading
/// is not answered again until it reads (its task waits on a one-frame
/// channel and later snapshots collapse into the latest), so what the
/// server holds for it is bounded, while every other stream is served.
#[tokio::test]
async fn a_client_that_never_reads_holds_up_nobody_and_is_sent_a_bounded_few_responses() {
    let limits = Limits::default();
    let cache = Arc::new(SnapshotCache::new());
    let sent = Arc::new(CountSent::default());
    let ads = AdsServer::new(
        cache.clone(),
        sent.clone(),
        Arc::new(XdsMetrics::default()),
        &limits,
    );
    let router = tonic::service::Routes::new(ads.into_service(&limits)).into_axum_router();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    cache.set("default.slow", clusters(0));
    cache.set("default.fast", clusters(0));

    // The slow client's windows hold less than one response, and it never
    // reads its stream.
    let slow_channel = tonic::transport::Endpoint::from_shared(url.clone())
        .unwrap()
        .initial_stream_window_size(16 * 1024)
        .initial_connection_window_size(16 * 1024)
        .connect()
        .await
        .unwrap();
    let (slow_tx, slow_rx) = tokio::sync::mpsc::channel(4);
    slow_tx
        .send(request(Some("default.slow"), XdsType::Cluster))
        .await
        .unwrap();
    let _slow = AggregatedDiscoveryServiceClient::new(slow_channel)
        .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(slow_rx))
        .await
        .unwrap();

    let mut fast_client = AggregatedDiscoveryServiceClient::connect(url).await.unwrap();
    let (fast_tx, fast_rx) = tokio::sync::mpsc::channel(4);
    fast_tx
        .send(request(Some("default.fast"), XdsType::Cluster))
        .await
        .unwrap();
    let mut fast = fast_client
        .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(fast_rx))
        .await
        .unwrap()
        .into_inner();

    const ROUNDS: usize = 30;
    for round in 0..=ROUNDS {
        if round > 0 {
            cache.set("default.slow", clusters(round));
            cache.set("default.fast", clusters(round));
        }
        let want = clusters(round).version(XdsType::Cluster).to_string();
        loop {
            let r = tokio::time::timeout(Duration::from_secs(10), fast.next())
                .await
                .expect("the fast client is served in time")
                .expect("the stream stays open")
                .expect("a response");
            let mut ack = request(Some("default.fast"), XdsType::Cluster);
            ack.version_info = r.version_info.clone();
            ack.response_nonce = r.nonce.clone();
            fast_tx.send(ack).await.unwrap();
            if r.version_info == want {
                break;
            }
        }
    }
    let counts = sent.0.lock().unwrap().clone();
    assert_eq!(
        counts.get("default.fast"),
        Some(&(ROUNDS as u64 + 1)),
        "{counts:?}"
    );
    // One response written into its windows, one taken by the body and one
    // waiting in the channel, and perhaps the one its task holds: the other
    // rounds were never encoded for it.
    let slow = counts.get("default.slow").copied().unwrap_or(0);
    assert!(
        (1..=4).contains(&slow),
        "responses sent to the slow client: {slow} ({counts:?})"
    );
    drop(slow_tx);
}

/// A snapshot of one cluster (no endpoints) and one listener.
fn cluster_and_listener() -> kuma_xds::snapshot::Snapshot {
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::config::listener::v3::Listener;
    use kuma_xds::resources::{Origin, Resource, ResourceSet};
    let mut set = ResourceSet::new();
    set.add(
        Origin::Outbound,
        Resource::Cluster(Cluster {
            name: "backend".into(),
            ..Default::default()
        }),
    );
    set.add(
        Origin::Outbound,
        Resource::Listener(Listener {
            name: "outbound:backend".into(),
            ..Default::default()
        }),
    );
    kuma_xds::snapshot::Snapshot::from_resources(&set)
}

/// An ADS client stream: its requests' sender and its responses.
struct Client {
    tx: tokio::sync::mpsc::Sender<DiscoveryRequest>,
    responses: tonic::Streaming<envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse>,
}

impl Client {
    /// Opens a stream whose first request asks `node`'s `t`. Returns once
    /// the server has admitted the stream (its response headers come then).
    async fn open(url: &str, node: &str, t: XdsType) -> Client {
        let mut client = AggregatedDiscoveryServiceClient::connect(url.to_string())
            .await
            .unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(request(Some(node), t)).await.unwrap();
        let responses = client
            .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        Client { tx, responses }
    }

    async fn next(&mut self) -> envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse {
        tokio::time::timeout(Duration::from_secs(10), self.responses.next())
            .await
            .expect("a response in time")
            .expect("the stream stays open")
            .expect("a response")
    }

    async fn ack(
        &self,
        node: &str,
        t: XdsType,
        answered: &envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse,
    ) {
        let mut ack = request(Some(node), t);
        ack.version_info = answered.version_info.clone();
        ack.response_nonce = answered.nonce.clone();
        self.tx.send(ack).await.unwrap();
    }
}

/// Waits (bounded) until `gauge` reads `want`.
async fn gauge_reaches(gauge: &prometheus_client::metrics::gauge::Gauge, want: i64) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while gauge.get() != want {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the gauge stays at {}, not {want}", gauge.get()));
}

/// Limits admitting one stream to its first configuration at a time, for
/// at most `configuring_at_most`.
fn one_configuring_at_a_time(configuring_at_most: Duration) -> Limits {
    Limits {
        max_configuring: 1,
        configuring_at_most,
        ..Limits::default()
    }
}

/// Opens a cluster stream for `node` on a task of its own (it may have to
/// wait for admission while the test goes on).
fn open_in_background(url: &str, node: &'static str) -> tokio::task::JoinHandle<Client> {
    let url = url.to_string();
    tokio::spawn(async move { Client::open(&url, node, XdsType::Cluster).await })
}

/// The admission rule for reconnect storms: while `max_configuring`
/// streams are getting their first configuration, the next waits unanswered;
/// it is let in when Envoy answers a configuring stream's listeners, when
/// such a stream ends, or when one has held its place too long.
#[tokio::test]
async fn new_streams_wait_while_others_get_their_first_configuration() {
    let limits = one_configuring_at_a_time(Duration::from_secs(3600));
    let (url, cache, metrics) = serve_with_metrics(limits).await;
    for node in ["default.a", "default.b", "default.c"] {
        cache.set(node, cluster_and_listener());
    }

    // a configures: its clusters come; b waits behind it, unanswered.
    let mut a = Client::open(&url, "default.a", XdsType::Cluster).await;
    let clusters = a.next().await;
    let b = open_in_background(&url, "default.b");
    gauge_reaches(&metrics.waiting_streams, 1).await;

    // a's clusters ACKed, then its listeners asked for, sent and ACKed:
    // its first configuration is complete and b is let in.
    a.ack("default.a", XdsType::Cluster, &clusters).await;
    a.tx.send(request(Some("default.a"), XdsType::Listener))
        .await
        .unwrap();
    let listeners = a.next().await;
    assert_eq!(listeners.type_url, XdsType::Listener.type_url());
    assert_eq!(
        metrics.waiting_streams.get(),
        1,
        "b waits until a's listeners are answered"
    );
    a.ack("default.a", XdsType::Listener, &listeners).await;
    let mut b = b.await.unwrap();
    let answered = b.next().await;
    assert_eq!(answered.type_url, XdsType::Cluster.type_url());
    assert_eq!(metrics.waiting_streams.get(), 0);

    // b never asks for listeners; c waits until b goes away.
    let c = open_in_background(&url, "default.c");
    gauge_reaches(&metrics.waiting_streams, 1).await;
    drop(b);
    let mut c = c.await.unwrap();
    assert_eq!(c.next().await.type_url, XdsType::Cluster.type_url());
    drop(a);
}

/// A client that opens a stream and never sends its first request holds
/// no place: the next stream is served.
#[tokio::test]
async fn a_stream_without_its_first_request_holds_no_place() {
    let limits = one_configuring_at_a_time(Duration::from_secs(3600));
    let (url, cache) = serve(limits).await;
    cache.set("default.b", cluster_and_listener());
    // One connection: the silent stream's headers reach the server first.
    let client = AggregatedDiscoveryServiceClient::connect(url.clone())
        .await
        .unwrap();
    let (_silent_tx, silent_rx) = tokio::sync::mpsc::channel::<DiscoveryRequest>(1);
    let silent = tokio::spawn({
        let mut client = client.clone();
        async move {
            client
                .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(silent_rx))
                .await
        }
    });
    tokio::task::yield_now().await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(request(Some("default.b"), XdsType::Cluster))
        .await
        .unwrap();
    let admitted = tokio::time::timeout(
        Duration::from_secs(10),
        client
            .clone()
            .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
    .await
    .expect("the next stream is admitted in time");
    let mut b = Client {
        tx,
        responses: admitted.unwrap().into_inner(),
    };
    assert_eq!(b.next().await.type_url, XdsType::Cluster.type_url());
    silent.abort();
}

/// A stream that gets no configuration does not hold its place for ever.
#[tokio::test]
async fn a_stream_holds_its_place_among_configuring_ones_for_a_bounded_time() {
    let limits = one_configuring_at_a_time(Duration::from_millis(200));
    let (url, cache, metrics) = serve_with_metrics(limits).await;
    cache.set("default.b", cluster_and_listener());

    // No snapshot for a (its mesh does not exist): it gets nothing, and b
    // is let in once a's time is up (it would wait for ever otherwise).
    let a = Client::open(&url, "default.a", XdsType::Cluster).await;
    let mut b = Client::open(&url, "default.b", XdsType::Cluster).await;
    assert_eq!(b.next().await.type_url, XdsType::Cluster.type_url());
    assert_eq!(metrics.waiting_streams.get(), 0);
    drop(a);
}
