//! Envoy messages as JSON and as content hashes, through the Envoy API
//! descriptors compiled at build time.
//!
//! [`content_hash`] hashes a canonical encoding (map entries sorted, see
//! [`crate::canonical`]), making versions stable across processes and
//! restarts.

use std::sync::OnceLock;

use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};
use serde::de::DeserializeSeed;

/// The compiled Envoy API descriptors.
const DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/envoy_descriptors.bin"));

/// A problem converting between JSON and protobuf.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// The message type is not in the Envoy API.
    #[error("unknown message type {0:?}")]
    UnknownType(String),
    /// The bytes are not a valid message.
    #[error("invalid protobuf: {0}")]
    Decode(#[from] prost::DecodeError),
    /// The JSON does not fit the message.
    #[error("{0}")]
    Json(String),
}

/// The descriptor pool of the Envoy API.
pub fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| DescriptorPool::decode(DESCRIPTORS).expect("descriptors compiled by build.rs decode"))
}

/// The descriptor of a message by full name, e.g. `envoy.config.cluster.v3.Cluster`.
pub fn descriptor(full_name: &str) -> Result<MessageDescriptor, ProtoError> {
    pool()
        .get_message_by_name(full_name)
        .ok_or_else(|| ProtoError::UnknownType(full_name.to_string()))
}

/// The full message name of a type URL.
pub fn type_name(type_url: &str) -> &str {
    type_url.rsplit('/').next().unwrap_or(type_url)
}

/// Envoy's JSON form of encoded message `bytes` of type `full_name`.
pub fn bytes_to_json(full_name: &str, bytes: &[u8]) -> Result<serde_json::Value, ProtoError> {
    let message = DynamicMessage::decode(descriptor(full_name)?, bytes)?;
    let options = SerializeOptions::new().stringify_64_bit_integers(false);
    let json = message
        .serialize_with_options(serde_json::value::Serializer, &options)
        .map_err(|e| ProtoError::Json(e.to_string()))?;
    Ok(sort_keys(json))
}

/// Sorts object keys recursively: proto maps (metadata, typed options)
/// serialize in hash order, and output must not depend on it. Sorted keys
/// are also the layout of Kuma's golden files.
fn sort_keys(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<(String, serde_json::Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            serde_json::Value::Object(entries.into_iter().map(|(k, v)| (k, sort_keys(v))).collect())
        }
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.into_iter().map(sort_keys).collect())
        }
        other => other,
    }
}

/// Envoy's JSON form of a typed message.
pub fn to_json<M: Message + prost::Name>(message: &M) -> Result<serde_json::Value, ProtoError> {
    bytes_to_json(&M::full_name(), &message.encode_to_vec())
}

/// Encodes Envoy's JSON form of a message of type `full_name`.
pub fn json_to_bytes(full_name: &str, json: &serde_json::Value) -> Result<Vec<u8>, ProtoError> {
    let desc = descriptor(full_name)?;
    let message = desc
        .deserialize(json.clone())
        .map_err(|e| ProtoError::Json(e.to_string()))?;
    Ok(message.encode_to_vec())
}

/// A typed message from Envoy's JSON form.
pub fn from_json<M: Message + prost::Name + Default>(json: &serde_json::Value) -> Result<M, ProtoError> {
    Ok(M::decode(json_to_bytes(&M::full_name(), json)?.as_slice())?)
}

/// A stable 64-bit hash of an encoded message of type `full_name`: the
/// hash of its canonical form (see [`crate::canonical`]).
pub fn content_hash(full_name: &str, bytes: &[u8]) -> u64 {
    match crate::canonical::canonical(full_name, bytes) {
        Some(canonical) => xxhash_rust::xxh3::xxh3_64(&canonical),
        None => xxhash_rust::xxh3::xxh3_64(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::Metadata;
    use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind as ValueKind};

    fn metadata(pairs: &[(&str, &str)]) -> Metadata {
        let fields = pairs
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    Value {
                        kind: Some(ValueKind::StringValue(v.to_string())),
                    },
                )
            })
            .collect();
        Metadata {
            filter_metadata: [("envoy.lb".to_string(), Struct { fields })].into(),
            ..Default::default()
        }
    }

    #[test]
    fn hash_ignores_map_order() {
        let pairs: Vec<(String, String)> = (0..20).map(|i| (format!("k{i}"), format!("v{i}"))).collect();
        let borrowed: Vec<(&str, &str)> = pairs.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        let hashes: std::collections::BTreeSet<u64> = (0..10)
            .map(|_| {
                content_hash(
                    "envoy.config.core.v3.Metadata",
                    &metadata(&borrowed).encode_to_vec(),
                )
            })
            .collect();
        assert_eq!(hashes.len(), 1, "equal messages must hash equally");
        let other = content_hash(
            "envoy.config.core.v3.Metadata",
            &metadata(&[("k0", "other")]).encode_to_vec(),
        );
        assert!(!hashes.contains(&other));
    }

    #[test]
    fn json_round_trip() {
        use envoy_types::pb::envoy::config::cluster::v3::Cluster;
        let json = serde_json::json!({"name": "backend", "connectTimeout": "5s", "type": "EDS"});
        let cluster: Cluster = from_json(&json).unwrap();
        assert_eq!(cluster.name, "backend");
        assert_eq!(to_json(&cluster).unwrap(), json);
    }
}
