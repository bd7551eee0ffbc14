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

use bytes::{BufMut, Bytes, BytesMut};
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

/// The frames of one stream: messages (each as its chunks), then an error
/// or the end.
pub(super) type Frames = mpsc::Receiver<Result<Vec<Bytes>, Status>>;

fn grpc_response(frames: Frames) -> http::Response<tonic::body::Body> {
    let mut response = http::Response::new(tonic::body::Body::new(ResponseBody {
        frames,
        chunks: Vec::new().into_iter(),
        done: false,
    }));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    response
}

/// The response body: each frame's chunks as the driver sent them, then
/// the trailers with the stream's status.
struct ResponseBody {
    frames: Frames,
    /// What is left to write of the current frame.
    chunks: std::vec::IntoIter<Bytes>,
    done: bool,
}

/// The size HTTP/2 data is gathered to: a response's chunks (a few dozen
/// bytes of names and versions between shared resources of a few KiB) are
/// copied together up to it. HTTP/2 queues each piece of data as a frame in
/// a per-connection table that keeps its largest size for the connection's
/// life, so hundreds of small frames per response would cost each idle
/// proxy tens of KiB; a chunk of this size or more goes as it is, shared.
/// The copies are made only when HTTP/2 asks for data, so a proxy that
/// reads slowly holds at most the server's send buffer of them.
const DATA_FRAME_TARGET: usize = 16 * 1024;

impl ResponseBody {
    /// The next piece of the current frame: a large chunk as it is, small
    /// ones gathered (see [`DATA_FRAME_TARGET`]).
    fn next_data(&mut self) -> Option<Bytes> {
        let first = self.chunks.next()?;
        let mut total = first.len();
        let mut gathered = 0;
        for chunk in self.chunks.as_slice() {
            if total >= DATA_FRAME_TARGET || chunk.len() >= DATA_FRAME_TARGET {
                break;
            }
            total += chunk.len();
            gathered += 1;
        }
        let data = if gathered == 0 {
            first
        } else {
            let mut data = BytesMut::with_capacity(total);
            data.put(first);
            for chunk in self.chunks.by_ref().take(gathered) {
                data.put(chunk);
            }
            data.freeze()
        };
        if self.chunks.as_slice().is_empty() {
            // An exhausted iterator still holds its list; an idle stream
            // should not.
            self.chunks = Vec::new().into_iter();
        }
        Some(data)
    }
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
        // A frame is taken from the driver only once the previous one is
        // written out, which is what makes the driver wait for a slow proxy.
        if let Some(data) = self.next_data() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        let status = loop {
            match self.frames.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(chunks))) => {
                    self.chunks = chunks.into_iter();
                    if let Some(data) = self.next_data() {
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                Poll::Ready(Some(Err(status))) => break status,
                Poll::Ready(None) => break Status::ok(""),
            }
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

    #[test]
    fn small_chunks_are_gathered_and_large_ones_go_shared() {
        let large = Bytes::from(vec![9u8; DATA_FRAME_TARGET + 1]);
        let mut chunks = vec![Bytes::from_static(b"head")];
        for i in 0..20u8 {
            chunks.push(Bytes::from(vec![i; 3000]));
        }
        chunks.push(large.clone());
        chunks.push(Bytes::from_static(b"tail"));
        let whole: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        let (_tx, frames) = mpsc::channel(1);
        let mut body = ResponseBody {
            frames,
            chunks: chunks.into_iter(),
            done: false,
        };
        let pieces: Vec<Bytes> = std::iter::from_fn(|| body.next_data()).collect();
        let joined: Vec<u8> = pieces.iter().flat_map(|c| c.iter().copied()).collect();
        assert_eq!(joined, whole, "the same bytes in the same order");
        let sizes: Vec<usize> = pieces.iter().map(Bytes::len).collect();
        // 4 + 6 × 3,000 reaches the target; then 6 × 3,000 twice; the last
        // two small ones stop before the large chunk, which goes alone.
        assert_eq!(
            sizes,
            vec![18_004, 18_000, 18_000, 6_000, DATA_FRAME_TARGET + 1, 4]
        );
        assert_eq!(
            pieces[4].as_ptr(),
            large.as_ptr(),
            "the large chunk is not copied"
        );
        assert_eq!(body.chunks.as_slice().len(), 0);
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
