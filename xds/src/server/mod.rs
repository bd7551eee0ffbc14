//! The ADS server: `StreamAggregatedResources` (state of the world) and
//! `DeltaAggregatedResources` (incremental) over the snapshot cache.
//!
//! Each stream is a small state machine ([`SotwStream`], [`DeltaStream`])
//! driven by a task that waits for either Envoy's next request or a new
//! snapshot of its node; the protocol rules live in the state machines.

mod delta;
mod grpc;
mod response;
pub mod sequence;
mod sotw;

pub use grpc::AdsService;
pub use response::{DeltaResource, DeltaResponse, SotwResponse, XdsResponse};

pub use delta::{DeltaOutput, DeltaStream};
pub use sotw::{SotwOutput, SotwStream};

use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use envoy_types::pb::envoy::config::core::v3::{ControlPlane, Node};
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use tokio::sync::{Semaphore, mpsc};
use tonic::metadata::MetadataMap;
use tonic::{Request, Status};

use grpc::Requests;

use crate::metrics::XdsMetrics;
use crate::resources::XdsType;
use crate::snapshot::{Snapshot, SnapshotCache};

/// The control plane identifier sent with every response.
pub const CONTROL_PLANE_ID: &str = "kuma-cp-rs";

/// Whether Envoy holds clusters of `snapshot` whose endpoints it has not
/// been sent (`delivered` says which were, asked in name order). Envoy asks for a new cluster's
/// endpoints only after taking the cluster, and a listener routing to a
/// cluster still warming answers 503: so listeners and routes wait until
/// every cluster's endpoints are on their way, as the xDS protocol's
/// ordering rules ask (CDS, then EDS, then LDS and RDS).
fn endpoints_pending(snapshot: &Snapshot, mut delivered: impl FnMut(&str) -> bool) -> bool {
    // Endpoints, clusters and what was delivered are each sorted by name:
    // one walk along all three, not a search per name.
    let mut clusters = sorted_names(snapshot.get(XdsType::Cluster).resources.keys().map(|n| &**n));
    snapshot
        .get(XdsType::Endpoints)
        .resources
        .keys()
        .any(|name| clusters.contains(name) && !delivered(name))
}

/// A cursor over entries sorted by name, names unique, asked about names
/// in increasing order: each answer advances it, so a walk costs one pass,
/// not a search per name.
struct Sorted<'a, V, I: Iterator<Item = (&'a str, V)>> {
    entries: std::iter::Peekable<I>,
}

impl<'a, V: Copy, I: Iterator<Item = (&'a str, V)>> Sorted<'a, V, I> {
    fn new(entries: I) -> Self {
        Sorted {
            entries: entries.peekable(),
        }
    }

    /// The value named `name`; never ask for a smaller name than the last
    /// one asked for.
    fn get(&mut self, name: &str) -> Option<V> {
        while self.entries.next_if(|(n, _)| *n < name).is_some() {}
        self.entries.peek().filter(|(n, _)| *n == name).map(|(_, v)| *v)
    }

    /// Whether `name` is among the entries (same rule as [`Sorted::get`]).
    fn contains(&mut self, name: &str) -> bool {
        self.get(name).is_some()
    }
}

/// [`Sorted`] over bare names.
fn sorted_names<'a>(
    names: impl Iterator<Item = &'a str>,
) -> Sorted<'a, (), impl Iterator<Item = (&'a str, ())>> {
    Sorted::new(names.map(|n| (n, ())))
}

/// A stream's state per type URL: a vector sorted by URL, not a map (a
/// map's first node has room for eleven entries, about 1.3 KiB per stream
/// for the three or four types a proxy uses).
#[derive(Debug)]
struct ByTypeUrl<S>(Vec<(Box<str>, S)>);

impl<S> Default for ByTypeUrl<S> {
    fn default() -> Self {
        ByTypeUrl(Vec::new())
    }
}

impl<S: Default> ByTypeUrl<S> {
    fn position(&self, type_url: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(url, _)| (**url).cmp(type_url))
    }

    fn get(&self, type_url: &str) -> Option<&S> {
        self.position(type_url).ok().map(|i| &self.0[i].1)
    }

    fn get_mut(&mut self, type_url: &str) -> Option<&mut S> {
        self.position(type_url).ok().map(|i| &mut self.0[i].1)
    }

    fn contains_key(&self, type_url: &str) -> bool {
        self.position(type_url).is_ok()
    }

    /// The state of `type_url`, a fresh one when it has none.
    fn get_or_default(&mut self, type_url: &str) -> &mut S {
        let i = match self.position(type_url) {
            Ok(i) => i,
            Err(i) => {
                self.0.insert(i, (type_url.into(), S::default()));
                i
            }
        };
        &mut self.0[i].1
    }
}

/// Types that wait for [`endpoints_pending`].
fn waits_for_endpoints(t: XdsType) -> bool {
    matches!(t, XdsType::Listener | XdsType::Route)
}

fn control_plane() -> ControlPlane {
    ControlPlane {
        identifier: CONTROL_PLANE_ID.to_string(),
    }
}

/// How Envoy answered a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeedbackKind {
    /// Applied.
    Ack,
    /// Rejected; the previous configuration stays.
    Nack,
    /// A reply to a superseded response, ignored.
    Stale,
}

/// Envoy's answer to one response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Feedback {
    /// The type URL.
    pub type_url: String,
    /// ACK, NACK or stale.
    pub kind: FeedbackKind,
    /// The version Envoy reports (SotW) or the nonce (delta).
    pub version: String,
    /// Envoy's error, for a NACK.
    pub error: Option<String>,
}

impl Feedback {
    fn new(type_url: &str, kind: FeedbackKind, r: &DiscoveryRequest) -> Self {
        Feedback {
            type_url: type_url.to_string(),
            kind,
            version: r.version_info.clone(),
            error: r.error_detail.as_ref().map(|e| e.message.clone()),
        }
    }

    fn delta(type_url: &str, kind: FeedbackKind, r: &DeltaDiscoveryRequest) -> Self {
        Feedback {
            type_url: type_url.to_string(),
            kind,
            version: r.response_nonce.clone(),
            error: r.error_detail.as_ref().map(|e| e.message.clone()),
        }
    }
}

/// Something that happened on a proxy's stream.
#[derive(Clone, Copy, Debug)]
pub enum StreamEvent<'a> {
    /// A response was sent.
    Sent {
        /// Its type URL.
        type_url: &'a str,
        /// Its version (SotW) or system version (delta).
        version: &'a str,
    },
    /// Envoy answered a response.
    Feedback(&'a Feedback),
}

/// A guard kept for a stream's lifetime; dropping it means the proxy left.
pub type ConnectionGuard = Box<dyn Send + Sync>;

/// The future [`ProxyRegistry::connect`] returns.
pub type ConnectFuture<'a> =
    Pin<Box<dyn std::future::Future<Output = Result<ConnectionGuard, Status>> + Send + 'a>>;

/// What the control plane decides about a connecting proxy.
pub trait ProxyRegistry: Send + Sync + 'static {
    /// Called with the node of a stream's first request and the stream's
    /// metadata (which carries the dataplane token). Resolves to a guard
    /// kept for the stream's lifetime, or the status refusing the stream.
    fn connect<'a>(&'a self, node: &'a Node, metadata: &'a MetadataMap) -> ConnectFuture<'a>;

    /// Observes the stream (for insights); nothing by default.
    fn observe(&self, _node: &str, _event: StreamEvent<'_>) {}
}

/// Accepts every proxy and tracks nothing.
#[derive(Debug, Default)]
pub struct AcceptAll;

impl ProxyRegistry for AcceptAll {
    fn connect<'a>(&'a self, _node: &'a Node, _metadata: &'a MetadataMap) -> ConnectFuture<'a> {
        Box::pin(async { Ok(Box::new(()) as ConnectionGuard) })
    }
}

/// Limits of the server.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Open streams at most; more are refused with `RESOURCE_EXHAUSTED`.
    pub max_streams: usize,
    /// The largest request accepted, in bytes.
    pub max_request_bytes: usize,
    /// Streams getting their first configuration at once (see
    /// [`Configuring`]); the others wait, unanswered, in arrival order.
    pub max_configuring: usize,
    /// How long a stream may hold its place among those: a proxy that gets
    /// no configuration (its mesh does not exist) or never asks for
    /// listeners lets the next one in after this.
    pub configuring_at_most: std::time::Duration,
}

/// [`Limits::max_configuring`] by default: enough in flight to keep both
/// ends busy, few enough that an established stream's update is not queued
/// behind thousands of first configurations.
pub const DEFAULT_MAX_CONFIGURING: usize = 64;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_streams: 20_000,
            max_request_bytes: 4 * 1024 * 1024,
            max_configuring: DEFAULT_MAX_CONFIGURING,
            configuring_at_most: std::time::Duration::from_secs(5),
        }
    }
}

/// A stream's place among those getting their first configuration. When
/// every proxy reconnects at once (a control plane restart), each first
/// configuration costs generation, encryption and Envoy's work on about
/// half a megabyte; admitting them all at once queues established streams'
/// updates behind all of that. Holding new streams, unanswered after their
/// first request, until a place frees admits a storm at the rate its
/// configurations are delivered. The
/// place is given back when Envoy answers the stream's first listeners
/// (listeners come last: clusters and endpoints were delivered before
/// them), when the stream ends, or after [`Limits::configuring_at_most`].
struct Configuring {
    _permit: tokio::sync::OwnedSemaphorePermit,
    until: tokio::time::Instant,
}

impl Configuring {
    /// Whether `feedback` ends the first configuration.
    fn done_by(feedback: &[Feedback]) -> bool {
        feedback.iter().any(|f| {
            f.kind != FeedbackKind::Stale && XdsType::from_type_url(&f.type_url) == Some(XdsType::Listener)
        })
    }
}

/// The ADS service.
pub struct AdsServer {
    cache: Arc<SnapshotCache>,
    registry: Arc<dyn ProxyRegistry>,
    metrics: Arc<XdsMetrics>,
    streams: Arc<Semaphore>,
    configuring: Arc<Semaphore>,
    configuring_at_most: std::time::Duration,
}

impl AdsServer {
    /// A server over `cache`.
    pub fn new(
        cache: Arc<SnapshotCache>,
        registry: Arc<dyn ProxyRegistry>,
        metrics: Arc<XdsMetrics>,
        limits: &Limits,
    ) -> Self {
        AdsServer {
            cache,
            registry,
            metrics,
            streams: Arc::new(Semaphore::new(limits.max_streams)),
            configuring: Arc::new(Semaphore::new(limits.max_configuring.max(1))),
            configuring_at_most: limits.configuring_at_most,
        }
    }

    /// The gRPC service, with the request size limit applied.
    pub fn into_service(self, limits: &Limits) -> AdsService {
        AdsService::new(self, limits.max_request_bytes)
    }

    /// Admits a stream and spawns the task that drives it; the task sends
    /// the stream's encoded responses.
    async fn serve<P: StreamProtocol>(
        &self,
        request: Request<Requests<P::Request>>,
        protocol: P,
    ) -> Result<grpc::Frames, Status> {
        let (admitted, configuring, first, requests) = self.admit(request).await?;
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let driver = Driver {
            cache: self.cache.clone(),
            metrics: self.metrics.clone(),
            registry: self.registry.clone(),
            mode: P::MODE,
        };
        tokio::spawn(driver.run(admitted, configuring, protocol, first, requests, tx));
        Ok(rx)
    }

    /// Admits a stream: checks the limit, reads the first request,
    /// identifies the node and waits for a place among the streams being
    /// configured.
    async fn admit<Req: FirstRequest>(
        &self,
        request: Request<Requests<Req>>,
    ) -> Result<(Admitted, Configuring, Req, Requests<Req>), Status> {
        let Ok(permit) = self.streams.clone().try_acquire_owned() else {
            self.metrics.refused_streams.inc();
            return Err(Status::resource_exhausted("too many xDS streams"));
        };
        let metadata = request.metadata().clone();
        let mut stream = request.into_inner();
        let first = match stream.message().await {
            Ok(Some(first)) => first,
            Ok(None) => return Err(Status::cancelled("stream closed before its first request")),
            Err(status) => return Err(status),
        };
        let node = match first.node() {
            Some(node) if !node.id.is_empty() => node.clone(),
            _ => {
                self.metrics.refused_streams.inc();
                return Err(Status::invalid_argument(
                    "the first request must carry node.id (<mesh>.<name>)",
                ));
            }
        };
        // The place is taken only now: a client that never sends its first
        // request must not hold one.
        let waiting = Waiting::new(&self.metrics.waiting_streams);
        let place = self.configuring.clone().acquire_owned().await;
        drop(waiting);
        let Ok(place) = place else {
            return Err(Status::unavailable("the server is stopping"));
        };
        let configuring = Configuring {
            _permit: place,
            until: tokio::time::Instant::now() + self.configuring_at_most,
        };
        let guard = self.registry.connect(&node, &metadata).await.inspect_err(|_| {
            self.metrics.refused_streams.inc();
        })?;
        Ok((
            Admitted {
                node_id: node.id,
                _guard: guard,
                _permit: permit,
            },
            configuring,
            first,
            stream,
        ))
    }
}

/// Counts a stream as waiting while it lives (the wait may end by the
/// stream going away).
struct Waiting(prometheus_client::metrics::gauge::Gauge);

impl Waiting {
    fn new(gauge: &prometheus_client::metrics::gauge::Gauge) -> Self {
        gauge.inc();
        Waiting(gauge.clone())
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A stream that passed admission; dropping it releases the proxy.
struct Admitted {
    node_id: String,
    _guard: Box<dyn Send + Sync>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// The first request of a stream names the node.
pub trait FirstRequest: prost::Message + Default + Send + 'static {
    /// The node the request comes from.
    fn node(&self) -> Option<&Node>;
}

impl FirstRequest for DiscoveryRequest {
    fn node(&self) -> Option<&Node> {
        self.node.as_ref()
    }
}

impl FirstRequest for DeltaDiscoveryRequest {
    fn node(&self) -> Option<&Node> {
        self.node.as_ref()
    }
}

/// What handling one input (a request or a new snapshot) produced.
#[derive(Debug)]
pub struct StreamOutput<R> {
    /// Responses to send, in order.
    pub responses: Vec<R>,
    /// ACKs, NACKs and stale requests seen.
    pub feedback: Vec<Feedback>,
}

impl<R> Default for StreamOutput<R> {
    fn default() -> Self {
        StreamOutput {
            responses: Vec::new(),
            feedback: Vec::new(),
        }
    }
}

/// The protocol of one ADS stream as a state machine with no I/O; one
/// driver task serves both protocols through it.
pub trait StreamProtocol: Send + 'static {
    /// What Envoy sends.
    type Request: FirstRequest;
    /// What the control plane answers.
    type Response: XdsResponse;
    /// The protocol's name in metrics.
    const MODE: &'static str;
    /// Handles a request from Envoy; an error ends the stream with it.
    fn on_request(&mut self, request: Self::Request) -> Result<StreamOutput<Self::Response>, Status>;
    /// Handles a new snapshot of the stream's node.
    fn on_snapshot(&mut self, snapshot: Option<Arc<Snapshot>>) -> StreamOutput<Self::Response>;
}

/// Framed responses waiting per stream beyond the one being written. One:
/// while Envoy reads slowly its task waits, and the snapshots that arrive
/// meanwhile collapse into the latest (the cache's watch keeps only that),
/// so a slow proxy holds a bounded few responses, all references to the
/// snapshot's shared encodings, and holds up nobody else.
const STREAM_BUFFER: usize = 1;

/// Runs one stream's task.
struct Driver {
    cache: Arc<SnapshotCache>,
    metrics: Arc<XdsMetrics>,
    registry: Arc<dyn ProxyRegistry>,
    mode: &'static str,
}

impl Driver {
    fn record(&self, node: &str, feedback: &[Feedback]) {
        for f in feedback {
            self.registry.observe(node, StreamEvent::Feedback(f));
            let labels = XdsMetrics::type_labels(&f.type_url, self.mode);
            match f.kind {
                FeedbackKind::Ack => {
                    self.metrics.acks.get_or_create(&labels).inc();
                    tracing::debug!(node, type_url = %f.type_url, version = %f.version, "ACK");
                }
                FeedbackKind::Nack => {
                    self.metrics.nacks.get_or_create(&labels).inc();
                    tracing::warn!(
                        node,
                        type_url = %f.type_url,
                        version = %f.version,
                        error = f.error.as_deref().unwrap_or(""),
                        "Envoy rejected the configuration; it keeps the last one it accepted"
                    );
                }
                FeedbackKind::Stale => {
                    self.metrics.stale_requests.get_or_create(&labels).inc();
                }
            }
        }
    }

    fn count_responses<'a>(&self, type_urls: impl Iterator<Item = &'a str>) {
        for t in type_urls {
            self.metrics
                .responses
                .get_or_create(&XdsMetrics::type_labels(t, self.mode))
                .inc();
        }
    }

    async fn run<P: StreamProtocol>(
        self,
        admitted: Admitted,
        configuring: Configuring,
        mut state: P,
        first: P::Request,
        mut requests: Requests<P::Request>,
        tx: mpsc::Sender<Result<Vec<Bytes>, Status>>,
    ) {
        let labels = crate::metrics::ModeLabels {
            mode: self.mode.to_string(),
        };
        let gauge = self.metrics.streams.get_or_create(&labels).clone();
        gauge.inc();
        let node = admitted.node_id.clone();
        let mut snapshots = self.cache.watch(&node);
        let initial = snapshots.borrow_and_update().clone();
        let mut outputs = vec![Ok(state.on_snapshot(initial))];
        outputs.push(state.on_request(first));
        let configuring_until = configuring.until;
        let mut configuring = Some(configuring);
        'stream: loop {
            for output in outputs.drain(..) {
                match output {
                    Ok(out) => {
                        if configuring.is_some() && Configuring::done_by(&out.feedback) {
                            configuring = None;
                        }
                        self.record(&node, &out.feedback);
                        self.count_responses(out.responses.iter().map(XdsResponse::type_url));
                        for r in out.responses {
                            self.registry.observe(
                                &node,
                                StreamEvent::Sent {
                                    type_url: r.type_url(),
                                    version: r.version(),
                                },
                            );
                            if tx.send(Ok(r.frame())).await.is_err() {
                                break 'stream;
                            }
                        }
                    }
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        break 'stream;
                    }
                }
            }
            tokio::select! {
                message = requests.message() => match message {
                    Ok(Some(request)) => outputs.push(state.on_request(request)),
                    Ok(None) | Err(_) => break,
                },
                changed = snapshots.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let snapshot = snapshots.borrow_and_update().clone();
                    outputs.push(Ok(state.on_snapshot(snapshot)));
                }
                () = tx.closed() => break,
                () = tokio::time::sleep_until(configuring_until), if configuring.is_some() => {
                    configuring = None;
                }
            }
        }
        gauge.dec();
        drop(snapshots);
        self.cache.remove_if_unwatched(&node);
        drop(admitted);
    }
}
