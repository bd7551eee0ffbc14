//! ADS clients that behave as Envoy does, for tests and benchmarks of the
//! real kuma-cp: a gRPC channel to its dp-server over TLS, and a stream
//! (state of the world or delta) that subscribes to clusters and listeners,
//! asks for the endpoints of every EDS cluster it is sent and ACKs every
//! response, handing each response to an observer.

use std::collections::BTreeSet;
use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

use crate::process::ControlPlane;

/// Envoy's type URLs.
pub const CLUSTERS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const LISTENERS: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const ENDPOINTS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

/// A gRPC channel to the dp-server over TLS, trusting the control plane's CA.
pub async fn channel(cp: &ControlPlane) -> tonic::transport::Channel {
    use rustls::pki_types::pem::PemObject;
    let pem = std::fs::read(cp.ca_file()).expect("CA");
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.expect("PEM")).expect("CA certificate");
    }
    let mut tls =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let port = cp.dp_port;
    tonic::transport::Endpoint::from_static("http://127.0.0.1")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let connector = connector.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
                let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        }))
        .await
        .expect("connect to the dp-server")
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
    /// Its resources (for delta: the added or changed ones).
    pub resources: Vec<&'a Any>,
    /// Its encoded size.
    pub bytes: usize,
    /// Whether the stream now has clusters, listeners and the endpoints of
    /// every EDS cluster.
    pub complete: bool,
}

/// Names of the EDS clusters among `clusters`.
fn eds_names<'a>(clusters: impl Iterator<Item = &'a Any>) -> BTreeSet<String> {
    clusters
        .filter_map(|any| Cluster::decode(any.value.as_slice()).ok())
        .filter(|c| {
            c.cluster_discovery_type
                == Some(cluster::ClusterDiscoveryType::Type(
                    cluster::DiscoveryType::Eds as i32,
                ))
        })
        .map(|c| {
            c.eds_cluster_config
                .map(|e| e.service_name)
                .filter(|s| !s.is_empty())
                .unwrap_or(c.name)
        })
        .collect()
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
    channel: tonic::transport::Channel,
    protocol: Protocol,
    node_id: &str,
    mut observe: impl FnMut(Received<'_>),
) -> String {
    let mut client =
        AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(64 * 1024 * 1024);
    match protocol {
        Protocol::Sotw => {
            let (tx, rx) = mpsc::unbounded_channel::<DiscoveryRequest>();
            for (i, type_url) in [CLUSTERS, LISTENERS].into_iter().enumerate() {
                let _ = tx.send(DiscoveryRequest {
                    node: (i == 0).then(|| node(node_id)),
                    type_url: type_url.into(),
                    ..Default::default()
                });
            }
            let stream = tokio_stream::wrappers::UnboundedReceiverStream::new(rx);
            let mut responses = match client.stream_aggregated_resources(stream).await {
                Ok(r) => r.into_inner(),
                Err(status) => return status.to_string(),
            };
            let mut progress = Progress::default();
            let mut endpoints = (String::new(), String::new());
            while let Some(next) = responses.next().await {
                let response = match next {
                    Ok(r) => r,
                    Err(status) => return status.to_string(),
                };
                let mut names = Vec::new();
                match response.type_url.as_str() {
                    CLUSTERS => {
                        progress.clusters = true;
                        let wanted = eds_names(response.resources.iter());
                        if wanted != progress.endpoints_wanted {
                            progress.endpoints_wanted = wanted;
                            progress.endpoints_answered = false;
                            let _ = tx.send(DiscoveryRequest {
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
                    resources: response.resources.iter().collect(),
                    bytes: response.encoded_len(),
                    complete: progress.complete(),
                });
                let _ = tx.send(DiscoveryRequest {
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
            let (tx, rx) = mpsc::unbounded_channel::<DeltaDiscoveryRequest>();
            for (i, type_url) in [CLUSTERS, LISTENERS].into_iter().enumerate() {
                let _ = tx.send(DeltaDiscoveryRequest {
                    node: (i == 0).then(|| node(node_id)),
                    type_url: type_url.into(),
                    ..Default::default()
                });
            }
            let stream = tokio_stream::wrappers::UnboundedReceiverStream::new(rx);
            let mut responses = match client.delta_aggregated_resources(stream).await {
                Ok(r) => r.into_inner(),
                Err(status) => return status.to_string(),
            };
            let mut progress = Progress::default();
            // Every EDS cluster by the cluster resource naming it.
            let mut eds_of: std::collections::BTreeMap<String, BTreeSet<String>> = Default::default();
            while let Some(next) = responses.next().await {
                let response = match next {
                    Ok(r) => r,
                    Err(status) => return status.to_string(),
                };
                let anys: Vec<&Any> = response
                    .resources
                    .iter()
                    .filter_map(|r| r.resource.as_ref())
                    .collect();
                match response.type_url.as_str() {
                    CLUSTERS => {
                        progress.clusters = true;
                        for r in &response.resources {
                            let names = r
                                .resource
                                .as_ref()
                                .map(|a| eds_names(std::iter::once(a)))
                                .unwrap_or_default();
                            eds_of.insert(r.name.clone(), names);
                        }
                        for removed in &response.removed_resources {
                            eds_of.remove(removed);
                        }
                        let wanted: BTreeSet<String> = eds_of.values().flatten().cloned().collect();
                        if wanted != progress.endpoints_wanted {
                            let subscribe = wanted.difference(&progress.endpoints_wanted).cloned().collect();
                            let unsubscribe =
                                progress.endpoints_wanted.difference(&wanted).cloned().collect();
                            progress.endpoints_wanted = wanted;
                            progress.endpoints_answered = false;
                            let _ = tx.send(DeltaDiscoveryRequest {
                                type_url: ENDPOINTS.into(),
                                resource_names_subscribe: subscribe,
                                resource_names_unsubscribe: unsubscribe,
                                ..Default::default()
                            });
                        }
                    }
                    LISTENERS => progress.listeners = true,
                    ENDPOINTS => progress.endpoints_answered = true,
                    _ => {}
                }
                observe(Received {
                    type_url: &response.type_url,
                    resources: anys,
                    bytes: response.encoded_len(),
                    complete: progress.complete(),
                });
                let _ = tx.send(DeltaDiscoveryRequest {
                    type_url: response.type_url.clone(),
                    response_nonce: response.nonce.clone(),
                    ..Default::default()
                });
            }
            "the server ended the stream".into()
        }
    }
}
