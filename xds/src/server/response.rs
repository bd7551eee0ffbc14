//! The responses the stream state machines produce, and their gRPC frames.
//!
//! A response holds the snapshot's encoded resources, not copies of them,
//! and is framed into a list of chunks in which every resource is the
//! shared [`EncodedResource::any_field`]: only the few bytes around them
//! (versions, names, nonce) are written per stream. So a mesh-wide change
//! queued for thousands of proxies that read slowly costs references to
//! one copy of the configuration, not one copy per proxy.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryResponse, DiscoveryResponse, Resource};
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

use super::control_plane;
use crate::resources::EncodedResource;

/// A response on an ADS stream, whichever protocol.
pub trait XdsResponse: Send + 'static {
    /// The type of the resources it carries.
    fn type_url(&self) -> &str;
    /// The version it reports.
    fn version(&self) -> &str;
    /// The gRPC message frame (flag, length, message) as chunks to write in
    /// order; the resources' chunks are shared, not copied.
    fn frame(&self) -> Vec<Bytes>;
}

/// A state-of-the-world response.
#[derive(Clone, Debug)]
pub struct SotwResponse {
    /// The type version.
    pub version_info: String,
    /// The type URL.
    pub type_url: &'static str,
    /// The nonce Envoy quotes in its answer.
    pub nonce: String,
    /// Every resource of the type Envoy asked for.
    pub resources: Vec<Arc<EncodedResource>>,
}

impl SotwResponse {
    /// The protobuf message it frames (for tests and tools; the server
    /// never builds it).
    pub fn to_message(&self) -> DiscoveryResponse {
        DiscoveryResponse {
            version_info: self.version_info.clone(),
            resources: self.resources.iter().map(|r| any(r)).collect(),
            type_url: self.type_url.to_string(),
            nonce: self.nonce.clone(),
            control_plane: Some(control_plane()),
            ..Default::default()
        }
    }
}

impl XdsResponse for SotwResponse {
    fn type_url(&self) -> &str {
        self.type_url
    }

    fn version(&self) -> &str {
        &self.version_info
    }

    fn frame(&self) -> Vec<Bytes> {
        // DiscoveryResponse: version_info = 1, resources = 2, type_url = 4,
        // nonce = 5, control_plane = 6.
        let control_plane = control_plane();
        let shared: usize = self.resources.iter().map(|r| r.any_field().len()).sum();
        let len = string_len(1, &self.version_info)
            + shared
            + string_len(4, self.type_url)
            + string_len(5, &self.nonce)
            + message_len(6, &control_plane);
        let mut framer = Framer::new(len, self.resources.len(), shared);
        framer.string(1, &self.version_info);
        for r in &self.resources {
            framer.shared(r.any_field());
        }
        framer.string(4, self.type_url);
        framer.string(5, &self.nonce);
        framer.message(6, &control_plane);
        framer.finish()
    }
}

/// A resource of a delta response.
#[derive(Clone, Debug)]
pub struct DeltaResource {
    /// Its version (what Envoy quotes back after a reconnection), written as
    /// [`crate::snapshot::resource_version`] does, without a string per
    /// resource and stream.
    pub version: u64,
    /// The resource.
    pub encoded: Arc<EncodedResource>,
}

impl DeltaResource {
    /// The resource name.
    pub fn name(&self) -> &str {
        &self.encoded.name
    }

    /// Resource: version = 1, resource = 2 (the shared field), name = 3.
    fn fields_len(&self) -> usize {
        length_delimited_len(1, VERSION_LEN) + self.encoded.any_field().len() + string_len(3, self.name())
    }
}

/// An incremental response.
#[derive(Clone, Debug)]
pub struct DeltaResponse {
    /// The version of the whole type.
    pub system_version_info: String,
    /// The type URL.
    pub type_url: &'static str,
    /// The nonce Envoy quotes in its answer.
    pub nonce: String,
    /// The resources added or changed.
    pub resources: Vec<DeltaResource>,
    /// The names of the resources removed.
    pub removed_resources: Vec<String>,
}

impl DeltaResponse {
    /// The protobuf message it frames (for tests and tools).
    pub fn to_message(&self) -> DeltaDiscoveryResponse {
        DeltaDiscoveryResponse {
            system_version_info: self.system_version_info.clone(),
            resources: self
                .resources
                .iter()
                .map(|r| Resource {
                    name: r.name().to_string(),
                    version: crate::snapshot::resource_version(r.version),
                    resource: Some(any(&r.encoded)),
                    ..Default::default()
                })
                .collect(),
            type_url: self.type_url.to_string(),
            removed_resources: self.removed_resources.clone(),
            nonce: self.nonce.clone(),
            control_plane: Some(control_plane()),
            ..Default::default()
        }
    }
}

impl XdsResponse for DeltaResponse {
    fn type_url(&self) -> &str {
        self.type_url
    }

    fn version(&self) -> &str {
        &self.system_version_info
    }

    fn frame(&self) -> Vec<Bytes> {
        // DeltaDiscoveryResponse: system_version_info = 1, resources = 2,
        // type_url = 4, nonce = 5, removed_resources = 6, control_plane = 7.
        let control_plane = control_plane();
        let len = string_len(1, &self.system_version_info)
            + self
                .resources
                .iter()
                .map(|r| length_delimited_len(2, r.fields_len()))
                .sum::<usize>()
            + string_len(4, self.type_url)
            + string_len(5, &self.nonce)
            + self
                .removed_resources
                .iter()
                .map(|n| length_delimited_len(6, n.len()))
                .sum::<usize>()
            + message_len(7, &control_plane);
        let shared = self.resources.iter().map(|r| r.encoded.any_field().len()).sum();
        let mut framer = Framer::new(len, self.resources.len(), shared);
        framer.string(1, &self.system_version_info);
        for r in &self.resources {
            framer.key_and_len(2, r.fields_len());
            framer.hex(1, r.version);
            framer.string(3, r.name());
            framer.shared(r.encoded.any_field());
        }
        framer.string(4, self.type_url);
        framer.string(5, &self.nonce);
        for name in &self.removed_resources {
            framer.key_and_len(6, name.len());
            framer.small.put_slice(name.as_bytes());
        }
        framer.message(7, &control_plane);
        framer.finish()
    }
}

fn any(r: &EncodedResource) -> Any {
    Any {
        type_url: r.xds_type.type_url().to_string(),
        value: r.bytes().to_vec(),
    }
}

/// The length of a resource version: a `u64` in hex, zero-padded.
const VERSION_LEN: usize = 16;

/// The length of a length-delimited field holding `len` bytes.
fn length_delimited_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

/// The length of a string field; proto3 leaves empty strings out.
fn string_len(tag: u32, s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        length_delimited_len(tag, s.len())
    }
}

fn message_len(tag: u32, m: &impl Message) -> usize {
    length_delimited_len(tag, m.encoded_len())
}

/// Writes a gRPC frame as chunks: the bytes written here gather in one
/// small buffer, cut wherever a shared chunk goes in between.
struct Framer {
    chunks: Vec<Bytes>,
    small: BytesMut,
    len: usize,
}

impl Framer {
    /// Starts the frame of a message of `len` bytes of which `shared_count`
    /// shared chunks hold `shared_bytes`: the rest, written here, fits one
    /// buffer of exactly its size.
    fn new(len: usize, shared_count: usize, shared_bytes: usize) -> Self {
        let mut small = BytesMut::with_capacity(5 + len.saturating_sub(shared_bytes));
        small.put_u8(0);
        // A response is far below 4 GiB (a whole mesh's snapshot is MiBs).
        small.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
        Framer {
            // Small and shared chunks alternate at most.
            chunks: Vec::with_capacity(2 * shared_count + 1),
            small,
            len: 5 + len,
        }
    }

    fn key_and_len(&mut self, tag: u32, len: usize) {
        encode_key(tag, WireType::LengthDelimited, &mut self.small);
        encode_varint(len as u64, &mut self.small);
    }

    fn string(&mut self, tag: u32, s: &str) {
        if !s.is_empty() {
            self.key_and_len(tag, s.len());
            self.small.put_slice(s.as_bytes());
        }
    }

    /// A string field holding `value` as [`VERSION_LEN`] hex digits.
    fn hex(&mut self, tag: u32, value: u64) {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        self.key_and_len(tag, VERSION_LEN);
        let mut digits = [0u8; VERSION_LEN];
        for (i, d) in digits.iter_mut().enumerate() {
            *d = DIGITS[((value >> (4 * (VERSION_LEN - 1 - i))) & 0xf) as usize];
        }
        self.small.put_slice(&digits);
    }

    fn message(&mut self, tag: u32, m: &impl Message) {
        self.key_and_len(tag, m.encoded_len());
        m.encode_raw(&mut self.small);
    }

    fn shared(&mut self, bytes: &Bytes) {
        if !self.small.is_empty() {
            self.chunks.push(self.small.split().freeze());
        }
        self.chunks.push(bytes.clone());
    }

    fn finish(mut self) -> Vec<Bytes> {
        if !self.small.is_empty() {
            self.chunks.push(self.small.split().freeze());
        }
        debug_assert_eq!(
            self.chunks.iter().map(Bytes::len).sum::<usize>(),
            self.len,
            "the frame's length prefix must match what was written"
        );
        self.chunks
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::XdsType;

    fn encoded(t: XdsType, name: &str, value: &[u8]) -> Arc<EncodedResource> {
        Arc::new(EncodedResource::from_bytes(t, name, value))
    }

    /// The frame as one buffer, checked to be a gRPC frame of `expected`.
    fn assert_frames<M: Message + Default + PartialEq + std::fmt::Debug>(chunks: &[Bytes], expected: &M) {
        let bytes: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        assert_eq!(bytes[0], 0, "uncompressed");
        let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
        assert_eq!(len, bytes.len() - 5, "the length prefix is the message's length");
        assert_eq!(len, expected.encoded_len(), "as long as prost's own encoding");
        assert_eq!(&M::decode(&bytes[5..]).unwrap(), expected);
    }

    #[test]
    fn a_sotw_frame_is_the_response_with_the_resources_shared() {
        let a = encoded(XdsType::Cluster, "a", b"\x0a\x01a");
        let b = encoded(XdsType::Cluster, "b", &[7; 300]);
        let response = SotwResponse {
            version_info: "v1".into(),
            type_url: XdsType::Cluster.type_url(),
            nonce: "3".into(),
            resources: vec![a.clone(), b.clone()],
        };
        let chunks = response.frame();
        assert_frames(&chunks, &response.to_message());
        // The resources are the very bytes of the snapshot's encodings.
        let shared: Vec<_> = chunks
            .iter()
            .filter(|c| c.as_ptr() == a.any_field().as_ptr() || c.as_ptr() == b.any_field().as_ptr())
            .collect();
        assert_eq!(shared.len(), 2);
    }

    #[test]
    fn a_delta_frame_is_the_response_with_the_resources_shared() {
        let a = encoded(XdsType::Listener, "a", b"\x0a\x01a");
        let response = DeltaResponse {
            system_version_info: "v2".into(),
            type_url: XdsType::Listener.type_url(),
            nonce: "4".into(),
            resources: vec![DeltaResource {
                version: 0xff,
                encoded: a.clone(),
            }],
            removed_resources: vec!["gone".into(), "also-gone".into()],
        };
        let chunks = response.frame();
        assert_frames(&chunks, &response.to_message());
        assert!(chunks.iter().any(|c| c.as_ptr() == a.any_field().as_ptr()));
    }

    #[test]
    fn empty_responses_and_empty_resources_frame_as_prost_encodes_them() {
        let sotw = SotwResponse {
            version_info: String::new(),
            type_url: XdsType::Secret.type_url(),
            nonce: "1".into(),
            resources: vec![encoded(XdsType::Secret, "", b"")],
        };
        assert_frames(&sotw.frame(), &sotw.to_message());
        let delta = DeltaResponse {
            system_version_info: String::new(),
            type_url: XdsType::Route.type_url(),
            nonce: "2".into(),
            resources: Vec::new(),
            removed_resources: vec![String::new()],
        };
        assert_frames(&delta.frame(), &delta.to_message());
    }
}
