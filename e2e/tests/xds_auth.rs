//! kuma-cp's ADS endpoint checks dataplane tokens itself (not only
//! `/bootstrap`): a stream without a token, with a forged one or with one
//! for another dataplane is refused; a valid one gets configuration.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use kuma_e2e::process::{ControlPlane, Kumactl};
use kuma_e2e::temp_dir;
use tokio_stream::StreamExt;

const LIMIT: Duration = Duration::from_secs(60);
const CLUSTERS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";

/// A gRPC channel to the dp-server over TLS, trusting the control plane's CA.
async fn channel(cp: &ControlPlane) -> tonic::transport::Channel {
    let pem = std::fs::read(cp.ca_file()).expect("CA");
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_certs(&pem) {
        roots.add(cert).expect("CA certificate");
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

fn rustls_pki_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .expect("PEM")
}

/// The first answer of a stream for `node` presenting `token`.
async fn first_answer(cp: &ControlPlane, node: &str, token: Option<&str>) -> Result<usize, tonic::Status> {
    let mut client = AggregatedDiscoveryServiceClient::new(channel(cp).await);
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
    let answer = tokio::time::timeout(LIMIT, responses.next())
        .await
        .expect("an answer in time");
    drop(tx);
    match answer {
        Some(Ok(r)) => Ok(r.resources.len()),
        Some(Err(status)) => Err(status),
        None => Err(tonic::Status::cancelled("stream ended")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ads_stream_checks_dataplane_tokens() {
    let cp = ControlPlane::start(
        "kuma-cp-xds-auth",
        ControlPlane::env(&BTreeMap::new(), &temp_dir("xds-auth")),
    )
    .await;
    let kumactl = Kumactl::new(&cp.api());
    kumactl.wait_for_default_mesh().await;
    kumactl.ok(
        &["apply", "-f", "-"],
        Some("type: Dataplane\nmesh: default\nname: web\nnetworking:\n  address: 127.0.0.1\n  inbound:\n    - port: 18080\n      servicePort: 18081\n      tags:\n        kuma.io/service: web\n"),
    );
    let web = kumactl.dataplane_token("web");
    let other = kumactl.dataplane_token("backend");

    let missing = first_answer(&cp, "default.web", None).await.unwrap_err();
    assert_eq!(missing.code(), tonic::Code::Unauthenticated, "{missing:?}");
    let forged = first_answer(&cp, "default.web", Some(&format!("{}x", web.trim())))
        .await
        .unwrap_err();
    assert_eq!(forged.code(), tonic::Code::Unauthenticated, "{forged:?}");
    let someone_else = first_answer(&cp, "default.web", Some(&other)).await.unwrap_err();
    assert_eq!(
        someone_else.code(),
        tonic::Code::Unauthenticated,
        "{someone_else:?}"
    );
    assert!(someone_else.message().contains("backend"), "{someone_else:?}");
    let clusters = first_answer(&cp, "default.web", Some(&web))
        .await
        .expect("a valid token gets configuration");
    assert!(clusters > 0);
}
