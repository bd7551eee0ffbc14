//! The ADS gRPC service: tonic decodes Envoy's requests, and the responses
//! are framed here, each message in a buffer of its own size.
//!
//! Why not tonic's generated server: its encoder keeps one buffer per
//! stream that grows to the largest message the stream ever sent and is
//! never given back. A state-of-the-world response carries every cluster
//! or listener of a proxy at once (about 450 KiB at 100 services), so each
//! idle stream held that much for its whole life: three quarters of the
//! control plane's memory at 1,000 proxies (jemalloc heap profile, README
//! "Where the memory goes"). A response framed here is freed once HTTP/2
//! has written it.

use std::convert::Infallible;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use futures::future::BoxFuture;
use http_body::Frame;
use prost::Message;
use tokio::sync::mpsc;
use tonic::codec::{BufferSettings, DecodeBuf, Decoder, Streaming};
use tonic::server::NamedService;
use tonic::{Request, Status};

use super::{AdsServer, DeltaStream, SotwStream};

/// The gRPC service name of ADS.
const SERVICE: &str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
const SOTW_PATH: &str = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const DELTA_PATH: &str = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

/// The ADS service, for tonic's or axum's router.
#[derive(Clone)]
pub struct AdsService {
    server: Arc<AdsServer>,
    max_request_bytes: usize,
}

impl AdsService {
    pub(super) fn new(server: AdsServer, max_request_bytes: usize) -> Self {
        AdsService {
            server: Arc::new(server),
            max_request_bytes,
        }
    }
}

impl NamedService for AdsService {
    const NAME: &'static str = SERVICE;
}

impl tonic::codegen::Service<http::Request<tonic::body::Body>> for AdsService {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let server = self.server.clone();
        let max = self.max_request_bytes;
        Box::pin(async move {
            if let Err(status) = check_request(&request) {
                return Ok(status.into_http());
            }
            let response = match request.uri().path() {
                SOTW_PATH => {
                    let request = decoding::<DiscoveryRequest>(request, max);
                    server.serve(request, SotwStream::new()).await
                }
                DELTA_PATH => {
                    let request = decoding::<DeltaDiscoveryRequest>(request, max);
                    server.serve(request, DeltaStream::new()).await
                }
                path => Err(Status::unimplemented(format!("no method {path}"))),
            };
            Ok(match response {
                Ok(frames) => grpc_response(frames),
                Err(status) => status.into_http(),
            })
        })
    }
}

/// Refuses what this server does not speak: compressed requests (Envoy
/// sends none) and anything but gRPC.
fn check_request<B>(request: &http::Request<B>) -> Result<(), Status> {
    let headers = request.headers();
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("application/grpc") {
        return Err(Status::invalid_argument(format!(
            "content-type {content_type:?} is not gRPC"
        )));
    }
    match headers.get("grpc-encoding").and_then(|v| v.to_str().ok()) {
        None | Some("identity") => Ok(()),
        Some(other) => Err(Status::unimplemented(format!(
            "grpc-encoding {other} is not supported; send uncompressed requests"
        ))),
    }
}

/// The request with its body as a stream of decoded messages.
fn decoding<M: Message + Default + Send + 'static>(
    request: http::Request<tonic::body::Body>,
    max_request_bytes: usize,
) -> Request<Streaming<M>> {
    Request::from_http(request.map(|body| {
        Streaming::new_request(
            ProstDecoder::<M>(PhantomData),
            body,
            None,
            Some(max_request_bytes),
        )
    }))
}

/// Decodes one protobuf message per gRPC frame.
struct ProstDecoder<M>(PhantomData<M>);

impl<M: Message + Default> Decoder for ProstDecoder<M> {
    type Item = M;
    type Error = Status;

    /// Envoy's requests are small (an ACK is a few hundred bytes; the first,
    /// with the node's metadata, a few KiB): start each stream's buffer at
    /// 1 KiB rather than tonic's 8 KiB; it grows when a request needs it.
    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(1024, 32 * 1024)
    }

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<M>, Status> {
        M::decode(buf)
            .map(Some)
            .map_err(|e| Status::internal(format!("undecodable request: {e}")))
    }
}

/// One gRPC message frame: the uncompressed flag, the length, the message.
pub(super) fn frame(message: &impl Message) -> Bytes {
    let len = message.encoded_len();
    let mut buf = Vec::with_capacity(5 + len);
    buf.push(0);
    // A response is far below 4 GiB (the snapshot of a whole mesh is MiBs).
    buf.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
    message.encode_raw(&mut buf);
    Bytes::from(buf)
}

/// The frames of one stream: messages, then an error or the end.
pub(super) type Frames = mpsc::Receiver<Result<Bytes, Status>>;

fn grpc_response(frames: Frames) -> http::Response<tonic::body::Body> {
    let mut response = http::Response::new(tonic::body::Body::new(ResponseBody { frames, done: false }));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    response
}

/// The response body: each frame as the driver sent it, then the trailers
/// with the stream's status.
struct ResponseBody {
    frames: Frames,
    done: bool,
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let status = match self.frames.poll_recv(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(Ok(data))) => return Poll::Ready(Some(Ok(Frame::data(data)))),
            Poll::Ready(Some(Err(status))) => status,
            Poll::Ready(None) => Status::ok(""),
        };
        self.done = true;
        let mut trailers = http::HeaderMap::new();
        if status.add_header(&mut trailers).is_err() {
            // Only a message that cannot be a header value fails; the code
            // alone still ends the stream as it should.
            trailers.insert("grpc-status", http::HeaderValue::from(status.code() as i32));
        }
        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;

    #[test]
    fn a_frame_is_the_flag_the_length_and_the_message() {
        let response = DiscoveryResponse {
            version_info: "v1".into(),
            type_url: "t".into(),
            ..Default::default()
        };
        let bytes = frame(&response);
        let body = response.encode_to_vec();
        assert_eq!(bytes[0], 0);
        assert_eq!(&bytes[1..5], &(body.len() as u32).to_be_bytes());
        assert_eq!(&bytes[5..], body.as_slice());
        // Exactly sized: nothing held beyond the message.
        assert_eq!(bytes.len(), 5 + body.len());
    }

    #[test]
    fn compressed_and_non_grpc_requests_are_refused() {
        let request = |headers: &[(&str, &str)]| {
            let mut r = http::Request::new(());
            for (k, v) in headers {
                r.headers_mut().insert(
                    http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    http::HeaderValue::from_str(v).unwrap(),
                );
            }
            r
        };
        assert!(check_request(&request(&[("content-type", "application/grpc")])).is_ok());
        let gzip = check_request(&request(&[
            ("content-type", "application/grpc"),
            ("grpc-encoding", "gzip"),
        ]));
        assert_eq!(gzip.unwrap_err().code(), tonic::Code::Unimplemented);
        let json = check_request(&request(&[("content-type", "application/json")]));
        assert_eq!(json.unwrap_err().code(), tonic::Code::InvalidArgument);
    }
}
