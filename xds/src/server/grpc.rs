//! The ADS gRPC service: Envoy's requests are decoded and the responses
//! framed here, each message in a buffer of its own size.
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

use bytes::{Buf, BufMut, Bytes, BytesMut};
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use futures::future::BoxFuture;
use http_body::Frame;
use prost::Message;
use tokio::sync::mpsc;
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
fn decoding<M: Message + Default>(
    request: http::Request<tonic::body::Body>,
    max_request_bytes: usize,
) -> Request<Requests<M>> {
    Request::from_http(request.map(|body| Requests::new(body, max_request_bytes)))
}

/// Envoy's requests on one stream, one gRPC message at a time. The bytes
/// of a message are gathered only until it is decoded: tonic's `Streaming`
/// kept a buffer as large as the largest request the stream had sent (a
/// state-of-the-world ACK names every endpoint resource Envoy holds, a few
/// KiB at a hundred services) for the stream's life.
pub struct Requests<M> {
    body: tonic::body::Body,
    /// Received and not yet decoded; no allocation while empty.
    buf: BytesMut,
    max_request_bytes: usize,
    ended: bool,
    message: PhantomData<fn() -> M>,
}

impl<M: Message + Default> Requests<M> {
    fn new(body: tonic::body::Body, max_request_bytes: usize) -> Self {
        Requests {
            body,
            buf: BytesMut::new(),
            max_request_bytes,
            ended: false,
            message: PhantomData,
        }
    }

    /// The next request, `None` once Envoy ends the stream, or why it
    /// cannot be read (the stream then ends with that status).
    pub async fn message(&mut self) -> Result<Option<M>, Status> {
        loop {
            if let Some(message) = self.decode_buffered()? {
                return Ok(Some(message));
            }
            if self.ended {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(Status::internal("the request stream ended inside a message"))
                };
            }
            let body = &mut self.body;
            match std::future::poll_fn(|cx| http_body::Body::poll_frame(Pin::new(&mut *body), cx)).await {
                None => self.ended = true,
                Some(Err(status)) => return Err(status),
                // Trailers of a request stream carry nothing to act on.
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }

    /// The first whole message buffered, decoded.
    fn decode_buffered(&mut self) -> Result<Option<M>, Status> {
        let Some(prefix) = self.buf.get(..5) else {
            return Ok(None);
        };
        if prefix[0] != 0 {
            return Err(Status::unimplemented(
                "compressed requests are not supported; send uncompressed requests",
            ));
        }
        let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
        if len > self.max_request_bytes {
            return Err(Status::out_of_range(format!(
                "request of {len} bytes, over the limit of {} bytes",
                self.max_request_bytes
            )));
        }
        if self.buf.len() < 5 + len {
            // Room for the rest of it at once.
            self.buf.reserve(5 + len - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(5);
        let message = self.buf.split_to(len).freeze();
        if self.buf.is_empty() {
            // Give the allocation back with the message (the usual case:
            // one request per HTTP/2 frame).
            self.buf = BytesMut::new();
        }
        M::decode(message)
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

    /// A request body of the given DATA frames.
    struct Frames(std::collections::VecDeque<Bytes>);

    impl http_body::Body for Frames {
        type Data = Bytes;
        type Error = Status;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
            Poll::Ready(self.0.pop_front().map(|data| Ok(Frame::data(data))))
        }
    }

    fn requests(frames: Vec<Vec<u8>>, max: usize) -> Requests<DiscoveryRequest> {
        let body = Frames(frames.into_iter().map(Bytes::from).collect());
        Requests::new(tonic::body::Body::new(body), max)
    }

    /// A gRPC message frame of a request for `type_url`.
    fn framed(type_url: &str) -> Vec<u8> {
        let message = DiscoveryRequest {
            type_url: type_url.into(),
            resource_names: vec!["backend".into(); 40],
            ..Default::default()
        }
        .encode_to_vec();
        let mut frame = vec![0];
        frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
        frame.extend_from_slice(&message);
        frame
    }

    async fn type_urls(mut requests: Requests<DiscoveryRequest>) -> Result<Vec<String>, Status> {
        let mut urls = Vec::new();
        while let Some(request) = requests.message().await? {
            urls.push(request.type_url);
            assert!(
                requests.buf.is_empty() == (requests.buf.capacity() == 0),
                "an empty buffer holds no allocation"
            );
        }
        Ok(urls)
    }

    #[tokio::test]
    async fn requests_are_read_across_and_within_frames() {
        let (a, b, c) = (framed("a"), framed("b"), framed("c"));
        // One per frame; one split over three frames (inside the prefix
        // too); two in one frame; the second of them ending in the next.
        let mut joined = b.clone();
        joined.extend_from_slice(&c[..10]);
        let cases = [
            vec![a.clone(), b.clone()],
            vec![a[..3].to_vec(), a[3..20].to_vec(), a[20..].to_vec()],
            vec![[a.clone(), b.clone()].concat()],
            vec![a.clone(), joined, c[10..].to_vec()],
        ];
        let expected = [vec!["a", "b"], vec!["a"], vec!["a", "b"], vec!["a", "b", "c"]];
        for (frames, expected) in cases.into_iter().zip(expected) {
            let urls = type_urls(requests(frames, 1 << 20)).await.expect("read");
            assert_eq!(urls, expected);
        }
    }

    #[tokio::test]
    async fn bad_request_streams_end_with_a_status() {
        let a = framed("a");
        let cut = type_urls(requests(vec![a[..a.len() - 1].to_vec()], 1 << 20)).await;
        assert_eq!(cut.expect_err("cut short").code(), tonic::Code::Internal);
        let over = type_urls(requests(vec![a.clone()], a.len() - 6)).await;
        assert_eq!(over.expect_err("too large").code(), tonic::Code::OutOfRange);
        let mut compressed = a.clone();
        compressed[0] = 1;
        let compressed = type_urls(requests(vec![compressed], 1 << 20)).await;
        assert_eq!(
            compressed.expect_err("compressed").code(),
            tonic::Code::Unimplemented
        );
        let garbage = type_urls(requests(vec![vec![0, 0, 0, 0, 2, 0xff, 0xff]], 1 << 20)).await;
        assert_eq!(garbage.expect_err("undecodable").code(), tonic::Code::Internal);
    }

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
