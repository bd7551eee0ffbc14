//! ADS clients that behave as Envoy does, for tests and benchmarks of the
//! real kuma-cp: a gRPC channel to its dp-server over TLS, and a stream
//! (state of the world or delta) that subscribes to clusters and listeners,
//! asks for the endpoints of every EDS cluster it is sent and ACKs every
//! response, handing each response to an observer.

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use futures::StreamExt;
use prost::Message;
use tokio::sync::mpsc;

use crate::process::ControlPlane;

/// Envoy's type URLs.
pub const CLUSTERS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const LISTENERS: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const ENDPOINTS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

/// A TLS client trusting the control plane's CA, speaking HTTP/2.
fn tls_connector(cp: &ControlPlane) -> tokio_rustls::TlsConnector {
    tls_connector_trusting(&std::fs::read(cp.ca_file()).expect("CA"))
}

/// A TLS client trusting the CA certificates of `pem`, speaking HTTP/2.
fn tls_connector_trusting(pem: &[u8]) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pem) {
        roots.add(cert.expect("PEM")).expect("CA certificate");
    }
    let mut tls =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(tls))
}

async fn tls_stream(
    connector: tokio_rustls::TlsConnector,
    port: u16,
) -> std::io::Result<hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let tls = connector.connect(name, tcp).await?;
    Ok(hyper_util::rt::TokioIo::new(tls))
}

/// A gRPC channel to the dp-server over TLS, trusting the control plane's CA.
pub async fn channel(cp: &ControlPlane) -> tonic::transport::Channel {
    channel_over(tls_connector(cp), cp.dp_port).await
}

/// A gRPC channel to a dp-server on `port` whose certificate a CA of
/// `ca_pem` signed (a control plane whose CA the test made).
pub async fn channel_trusting(port: u16, ca_pem: &str) -> tonic::transport::Channel {
    channel_over(tls_connector_trusting(ca_pem.as_bytes()), port).await
}

async fn channel_over(connector: tokio_rustls::TlsConnector, port: u16) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_static("http://127.0.0.1")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            tls_stream(connector.clone(), port)
        }))
        .await
        .expect("connect to the dp-server")
}

/// One HTTP/2 connection to the dp-server for one ADS stream, as Envoy
/// opens. The load generator uses this rather than tonic's client because
/// tonic keeps, per stream, a receive buffer as large as the largest
/// message (about 0.5 MiB at 100 services): 10,000 streams did not fit in
/// the machine's memory next to kuma-cp. Here each message is read into a
/// buffer of its own size, and small HTTP/2 windows keep what is in flight
/// on the server, which sends faster than 10,000 streams are read.
pub struct AdsConnection {
    sender: hyper::client::conn::http2::SendRequest<RequestBody>,
}

type RequestBody = http_body_util::StreamBody<
    futures::stream::Map<
        tokio_stream::wrappers::UnboundedReceiverStream<Bytes>,
        fn(Bytes) -> Result<hyper::body::Frame<Bytes>, std::convert::Infallible>,
    >,
>;

/// Opens an [`AdsConnection`].
pub async fn connect(cp: &ControlPlane) -> AdsConnection {
    let io = tls_stream(tls_connector(cp), cp.dp_port)
        .await
        .expect("connect to the dp-server");
    let (sender, connection) = hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
        .initial_stream_window_size(256 * 1024)
        .initial_connection_window_size(256 * 1024)
        .handshake(io)
        .await
        .expect("HTTP/2 handshake with the dp-server");
    tokio::spawn(connection);
    AdsConnection { sender }
}

/// A bidirectional gRPC stream: messages sent, messages received.
struct GrpcStream {
    tx: mpsc::UnboundedSender<Bytes>,
    body: hyper::body::Incoming,
    reader: FrameReader,
    /// The share of [`receive_budget`] held for the message being read or
    /// the last one returned (until the next is asked for).
    held: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// What all the streams of this process may hold of messages being read
/// and decoded, in KiB (`ADS_LOAD_RECEIVE_BUDGET_MIB`, default 2,048 MiB),
/// and its size. Envoys are separate processes that each buffer a whole
/// message before decoding it; 10,000 streams in one process, each mid-way
/// through a 3.5 MiB response, would need 35 GiB. A stream that cannot get
/// its share stops reading until it can, which is what a slow proxy looks
/// like to the control plane.
fn receive_budget() -> &'static (Arc<tokio::sync::Semaphore>, usize) {
    static BUDGET: std::sync::OnceLock<(Arc<tokio::sync::Semaphore>, usize)> = std::sync::OnceLock::new();
    BUDGET.get_or_init(|| {
        let mib: usize = std::env::var("ADS_LOAD_RECEIVE_BUDGET_MIB")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2048);
        let kib = mib.max(1) * 1024;
        (Arc::new(tokio::sync::Semaphore::new(kib)), kib)
    })
}

/// The share of [`receive_budget`] a message of `len` bytes takes (all of
/// it for a message larger than the whole budget).
fn budget_share(len: usize) -> u32 {
    let kib = len.div_ceil(1024).max(1);
    u32::try_from(kib.min(receive_budget().1)).unwrap_or(u32::MAX)
}

impl GrpcStream {
    /// Opens the stream with its first messages (the server answers the
    /// headers only once it has read the first request).
    async fn open(connection: AdsConnection, method: &str, first: &[impl Message]) -> Result<Self, String> {
        let AdsConnection { mut sender } = connection;
        let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
        for message in first {
            let _ = tx.send(grpc_frame(message));
        }
        let data: fn(Bytes) -> Result<hyper::body::Frame<Bytes>, std::convert::Infallible> =
            |b| Ok(hyper::body::Frame::data(b));
        let body = http_body_util::StreamBody::new(
            tokio_stream::wrappers::UnboundedReceiverStream::new(rx).map(data),
        );
        let request = http::Request::post(format!(
            "http://127.0.0.1/envoy.service.discovery.v3.AggregatedDiscoveryService/{method}"
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body)
        .map_err(|e| e.to_string())?;
        let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
        if let Some(status) = grpc_error(response.headers()) {
            return Err(status);
        }
        Ok(GrpcStream {
            tx,
            body: response.into_body(),
            reader: FrameReader::default(),
            held: None,
        })
    }

    fn send(&self, message: &impl Message) {
        let _ = self.tx.send(grpc_frame(message));
    }

    /// The next message, `Ok(None)` at the end of the stream, or why it failed.
    async fn next<M: Message + Default>(&mut self) -> Result<Option<(M, usize)>, String> {
        use http_body_util::BodyExt;
        // The caller is done with the last message.
        self.held = None;
        loop {
            if let Some(len) = self.reader.starting.take() {
                // Never wait while holding a share: a message that ended in
                // the frame that started this one is complete already.
                self.held = None;
                let share = budget_share(len);
                let permit = receive_budget()
                    .0
                    .clone()
                    .acquire_many_owned(share)
                    .await
                    .map_err(|e| e.to_string())?;
                self.held = Some(permit);
                self.reader.reserve();
            }
            if let Some(message) = self.reader.ready.pop_front() {
                let len = message.len();
                return M::decode(Bytes::from(message))
                    .map(|m| Some((m, len)))
                    .map_err(|e| e.to_string());
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(e.to_string()),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => self.reader.feed(&data),
                    Err(frame) => {
                        if let Some(status) = frame.trailers_ref().and_then(grpc_error) {
                            return Err(status);
                        }
                    }
                },
            }
        }
    }
}

/// One gRPC message frame: the uncompressed flag, the length, the message.
fn grpc_frame(message: &impl Message) -> Bytes {
    let len = message.encoded_len();
    let mut buf = Vec::with_capacity(5 + len);
    buf.push(0);
    buf.extend_from_slice(&(len as u32).to_be_bytes());
    message.encode_raw(&mut buf);
    Bytes::from(buf)
}

/// A gRPC error in headers or trailers, as `code: message`.
fn grpc_error(headers: &http::HeaderMap) -> Option<String> {
    let code = headers.get("grpc-status")?.to_str().ok()?;
    (code != "0").then(|| {
        let message = headers
            .get("grpc-message")
            .and_then(|m| m.to_str().ok())
            .unwrap_or("");
        format!("gRPC status {code}: {message}")
    })
}

/// Reassembles gRPC messages from DATA frames, each into a buffer of its
/// size, reserved once the stream holds its share of the receive budget.
#[derive(Default)]
struct FrameReader {
    header: Vec<u8>,
    message: Option<(usize, Vec<u8>)>,
    /// The length of a message just started, until its share is taken.
    starting: Option<usize>,
    ready: std::collections::VecDeque<Vec<u8>>,
}

impl FrameReader {
    /// Sizes the buffer of the message being read to the whole message.
    fn reserve(&mut self) {
        if let Some((len, buf)) = &mut self.message {
            buf.reserve_exact(*len - buf.len());
        }
    }

    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match &mut self.message {
                None => {
                    let take = (5 - self.header.len()).min(data.len());
                    self.header.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if self.header.len() == 5 {
                        let len = u32::from_be_bytes([
                            self.header[1],
                            self.header[2],
                            self.header[3],
                            self.header[4],
                        ]) as usize;
                        self.header.clear();
                        self.message = Some((len, Vec::new()));
                        self.starting = Some(len);
                    }
                }
                Some((len, buf)) => {
                    let take = (*len - buf.len()).min(data.len());
                    buf.extend_from_slice(&data[..take]);
                    data = &data[take..];
                }
            }
            if self.message.as_ref().is_some_and(|(len, buf)| buf.len() == *len)
                && let Some((_, buf)) = self.message.take()
            {
                self.ready.push_back(buf);
            }
        }
    }
}

/// Which ADS protocol a stream speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// State of the world.
    Sotw,
    /// Incremental.
    Delta,
}

/// One response as the stream saw it.
pub struct Received<'a> {
    /// Its type URL.
    pub type_url: &'a str,
    /// Its resources, encoded (for delta: the added or changed ones).
    pub resources: Vec<&'a [u8]>,
    /// Its encoded size.
    pub bytes: usize,
    /// Whether the stream now has clusters, listeners and the endpoints of
    /// every EDS cluster.
    pub complete: bool,
}

/// What the load generator reads of responses and clusters. Envoy decodes
/// all of it, on cores of its own; the load generator shares the control
/// plane's, so it decodes only what it acts on (prost skips the other
/// fields) and keeps resources as slices of the message they came in.
pub mod lite {
    use bytes::Bytes;

    /// A `google.protobuf.Any`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Any {
        #[prost(string, tag = "1")]
        pub type_url: String,
        #[prost(bytes = "bytes", tag = "2")]
        pub value: Bytes,
    }

    /// A state-of-the-world `DiscoveryResponse`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Response {
        #[prost(string, tag = "1")]
        pub version_info: String,
        #[prost(message, repeated, tag = "2")]
        pub resources: Vec<Any>,
        #[prost(string, tag = "4")]
        pub type_url: String,
        #[prost(string, tag = "5")]
        pub nonce: String,
    }

    /// A `Resource` of a delta response.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct DeltaResource {
        #[prost(message, optional, tag = "2")]
        pub resource: Option<Any>,
        #[prost(string, tag = "3")]
        pub name: String,
    }

    /// A `DeltaDiscoveryResponse`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct DeltaResponse {
        #[prost(message, repeated, tag = "2")]
        pub resources: Vec<DeltaResource>,
        #[prost(string, tag = "4")]
        pub type_url: String,
        #[prost(string, tag = "5")]
        pub nonce: String,
        #[prost(string, repeated, tag = "6")]
        pub removed_resources: Vec<String>,
    }

    /// A `Cluster`: its name, discovery type, EDS name and connect timeout.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Cluster {
        #[prost(string, tag = "1")]
        pub name: String,
        /// `DiscoveryType` (3: EDS), when given.
        #[prost(int32, optional, tag = "2")]
        pub discovery_type: Option<i32>,
        #[prost(message, optional, tag = "3")]
        pub eds_cluster_config: Option<EdsClusterConfig>,
        #[prost(message, optional, tag = "4")]
        pub connect_timeout: Option<Duration>,
    }

    /// A cluster's `EdsClusterConfig`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct EdsClusterConfig {
        #[prost(string, tag = "2")]
        pub service_name: String,
    }

    /// A `google.protobuf.Duration`'s seconds.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Duration {
        #[prost(int64, tag = "1")]
        pub seconds: i64,
    }

    /// `DiscoveryType::Eds`.
    pub const EDS: i32 = 3;
}

/// Names of the EDS clusters among `clusters`.
fn eds_names<'a>(clusters: impl Iterator<Item = &'a lite::Any>) -> BTreeSet<String> {
    clusters.filter_map(eds_name).collect()
}

/// The EDS name of a cluster, when it is an EDS cluster.
fn eds_name(cluster: &lite::Any) -> Option<String> {
    let c = lite::Cluster::decode(cluster.value.clone()).ok()?;
    (c.discovery_type == Some(lite::EDS)).then(|| {
        c.eds_cluster_config
            .map(|e| e.service_name)
            .filter(|s| !s.is_empty())
            .unwrap_or(c.name)
    })
}

/// What a stream has received so far.
#[derive(Default)]
struct Progress {
    clusters: bool,
    listeners: bool,
    /// The EDS names asked for, and whether an answer to that ask came.
    endpoints_wanted: BTreeSet<String>,
    endpoints_answered: bool,
}

impl Progress {
    fn complete(&self) -> bool {
        self.clusters && self.listeners && (self.endpoints_wanted.is_empty() || self.endpoints_answered)
    }
}

fn node(id: &str) -> Node {
    Node {
        id: id.to_string(),
        ..Default::default()
    }
}

/// Runs one Envoy-like stream for `node_id` until the server ends it,
/// calling `observe` on every response; returns why it ended.
pub async fn run_stream(
    connection: AdsConnection,
    protocol: Protocol,
    node_id: &str,
    mut observe: impl FnMut(Received<'_>),
) -> String {
    match protocol {
        Protocol::Sotw => {
            let first = [CLUSTERS, LISTENERS].map(|type_url| DiscoveryRequest {
                node: (type_url == CLUSTERS).then(|| node(node_id)),
                type_url: type_url.into(),
                ..Default::default()
            });
            let mut stream = match GrpcStream::open(connection, "StreamAggregatedResources", &first).await {
                Ok(s) => s,
                Err(e) => return e,
            };
            let mut progress = Progress::default();
            let mut endpoints = (String::new(), String::new());
            loop {
                let (response, bytes) = match stream.next::<lite::Response>().await {
                    Ok(Some(r)) => r,
                    Ok(None) => break,
                    Err(e) => return e,
                };
                let mut names = Vec::new();
                match response.type_url.as_str() {
                    CLUSTERS => {
                        progress.clusters = true;
                        let wanted = eds_names(response.resources.iter());
                        if wanted != progress.endpoints_wanted {
                            progress.endpoints_wanted = wanted;
                            progress.endpoints_answered = false;
                            stream.send(&DiscoveryRequest {
                                type_url: ENDPOINTS.into(),
                                version_info: endpoints.0.clone(),
                                response_nonce: endpoints.1.clone(),
                                resource_names: progress.endpoints_wanted.iter().cloned().collect(),
                                ..Default::default()
                            });
                        }
                    }
                    LISTENERS => progress.listeners = true,
                    ENDPOINTS => {
                        progress.endpoints_answered = true;
                        endpoints = (response.version_info.clone(), response.nonce.clone());
                        names = progress.endpoints_wanted.iter().cloned().collect();
                    }
                    _ => {}
                }
                observe(Received {
                    type_url: &response.type_url,
                    resources: response.resources.iter().map(|a| a.value.as_ref()).collect(),
                    bytes,
                    complete: progress.complete(),
                });
                stream.send(&DiscoveryRequest {
                    type_url: response.type_url.clone(),
                    version_info: response.version_info.clone(),
                    response_nonce: response.nonce.clone(),
                    resource_names: names,
                    ..Default::default()
                });
            }
            "the server ended the stream".into()
        }
        Protocol::Delta => {
            let first = [CLUSTERS, LISTENERS].map(|type_url| DeltaDiscoveryRequest {
                node: (type_url == CLUSTERS).then(|| node(node_id)),
                type_url: type_url.into(),
                ..Default::default()
            });
            let mut stream = match GrpcStream::open(connection, "DeltaAggregatedResources", &first).await {
                Ok(s) => s,
                Err(e) => return e,
            };
            let mut progress = Progress::default();
            // The EDS name of every cluster resource, by its name.
            let mut eds_of: std::collections::BTreeMap<String, Option<String>> = Default::default();
            loop {
                let (response, bytes) = match stream.next::<lite::DeltaResponse>().await {
                    Ok(Some(r)) => r,
                    Ok(None) => break,
                    Err(e) => return e,
                };
                let anys: Vec<&[u8]> = response
                    .resources
                    .iter()
                    .filter_map(|r| r.resource.as_ref().map(|a| a.value.as_ref()))
                    .collect();
                match response.type_url.as_str() {
                    CLUSTERS => {
                        progress.clusters = true;
                        // Whether any cluster names other endpoints than
                        // before (a changed cluster usually names the same).
                        let mut moved = false;
                        for r in &response.resources {
                            let name = r.resource.as_ref().and_then(eds_name);
                            if eds_of.get(&r.name) != Some(&name) {
                                eds_of.insert(r.name.clone(), name);
                                moved = true;
                            }
                        }
                        for removed in &response.removed_resources {
                            moved |= eds_of.remove(removed).is_some();
                        }
                        if moved {
                            let wanted: BTreeSet<String> = eds_of.values().flatten().cloned().collect();
                            if wanted != progress.endpoints_wanted {
                                let subscribe =
                                    wanted.difference(&progress.endpoints_wanted).cloned().collect();
                                let unsubscribe =
                                    progress.endpoints_wanted.difference(&wanted).cloned().collect();
                                progress.endpoints_wanted = wanted;
                                progress.endpoints_answered = false;
                                stream.send(&DeltaDiscoveryRequest {
                                    type_url: ENDPOINTS.into(),
                                    resource_names_subscribe: subscribe,
                                    resource_names_unsubscribe: unsubscribe,
                                    ..Default::default()
                                });
                            }
                        }
                    }
                    LISTENERS => progress.listeners = true,
                    ENDPOINTS => progress.endpoints_answered = true,
                    _ => {}
                }
                observe(Received {
                    type_url: &response.type_url,
                    resources: anys,
                    bytes,
                    complete: progress.complete(),
                });
                stream.send(&DeltaDiscoveryRequest {
                    type_url: response.type_url.clone(),
                    response_nonce: response.nonce.clone(),
                    ..Default::default()
                });
            }
            "the server ended the stream".into()
        }
    }
}

/// The first answer of a state-of-the-world stream for `node` presenting
/// `token` (kuma-dp's `authorization` metadata): how many clusters it
/// carries, or the status the stream was refused with.
pub async fn first_answer(
    cp: &ControlPlane,
    node: &str,
    token: Option<&str>,
) -> Result<usize, tonic::Status> {
    first_answer_over(channel(cp).await, node, token).await
}

/// [`first_answer`] over a channel of the caller's.
pub async fn first_answer_over(
    channel: tonic::transport::Channel,
    node: &str,
    token: Option<&str>,
) -> Result<usize, tonic::Status> {
    let mut client =
        envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient::new(
            channel,
        );
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(DiscoveryRequest {
        node: Some(Node {
            id: node.into(),
            ..Default::default()
        }),
        type_url: CLUSTERS.into(),
        ..Default::default()
    })
    .await
    .expect("send");
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    if let Some(t) = token {
        request
            .metadata_mut()
            .insert("authorization", t.trim().parse().expect("metadata"));
    }
    let mut responses = client.stream_aggregated_resources(request).await?.into_inner();
    let answer = tokio::time::timeout(std::time::Duration::from_secs(60), responses.next())
        .await
        .expect("an answer in time");
    drop(tx);
    match answer {
        Some(Ok(r)) => Ok(r.resources.len()),
        Some(Err(status)) => Err(status),
        None => Err(tonic::Status::cancelled("stream ended")),
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
    use envoy_types::pb::envoy::service::discovery::v3::{
        DeltaDiscoveryResponse, DiscoveryResponse, Resource,
    };
    use envoy_types::pb::google::protobuf::{Any, Duration};
    use prost::Message;

    use super::lite;

    fn eds_cluster() -> Cluster {
        Cluster {
            name: "backend".into(),
            cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::Eds as i32,
            )),
            eds_cluster_config: Some(cluster::EdsClusterConfig {
                service_name: "backend_eds".into(),
                ..Default::default()
            }),
            connect_timeout: Some(Duration { seconds: 7, nanos: 0 }),
            ..Default::default()
        }
    }

    #[test]
    fn the_lite_messages_read_what_envoys_own_say() {
        let any = Any {
            type_url: super::CLUSTERS.into(),
            value: eds_cluster().encode_to_vec(),
        };
        let response = DiscoveryResponse {
            version_info: "v1".into(),
            resources: vec![any.clone()],
            type_url: super::CLUSTERS.into(),
            nonce: "n1".into(),
            ..Default::default()
        };
        let lite = lite::Response::decode(bytes::Bytes::from(response.encode_to_vec())).expect("decodes");
        assert_eq!(
            (
                lite.version_info.as_str(),
                lite.type_url.as_str(),
                lite.nonce.as_str()
            ),
            ("v1", super::CLUSTERS, "n1")
        );
        assert_eq!(lite.resources[0].value.as_ref(), any.value.as_slice());
        let cluster = lite::Cluster::decode(lite.resources[0].value.clone()).expect("decodes");
        assert_eq!(cluster.name, "backend");
        assert_eq!(cluster.connect_timeout.map(|d| d.seconds), Some(7));
        assert_eq!(
            super::eds_names(lite.resources.iter()),
            ["backend_eds".to_string()].into()
        );

        let delta = DeltaDiscoveryResponse {
            resources: vec![Resource {
                name: "backend".into(),
                resource: Some(any.clone()),
                ..Default::default()
            }],
            type_url: super::CLUSTERS.into(),
            nonce: "n2".into(),
            removed_resources: vec!["gone".into()],
            ..Default::default()
        };
        let lite = lite::DeltaResponse::decode(bytes::Bytes::from(delta.encode_to_vec())).expect("decodes");
        assert_eq!(lite.resources[0].name, "backend");
        assert_eq!(
            lite.resources[0].resource.as_ref().map(|a| a.value.as_ref()),
            Some(any.value.as_slice())
        );
        assert_eq!(
            (lite.nonce.as_str(), lite.removed_resources),
            ("n2", vec!["gone".to_string()])
        );

        let static_cluster = Cluster {
            cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::Static as i32,
            )),
            ..eds_cluster()
        };
        let any = lite::Any {
            type_url: super::CLUSTERS.into(),
            value: static_cluster.encode_to_vec().into(),
        };
        assert!(
            super::eds_names(std::iter::once(&any)).is_empty(),
            "not an EDS cluster"
        );
    }
}
