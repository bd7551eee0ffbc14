//! Envoy messages as JSON and as content hashes, through the Envoy API
//! descriptors compiled at build time.
//!
//! prost encodes proto `map` fields from a `HashMap`, so two equal messages
//! may encode to different bytes. [`content_hash`] therefore hashes a
//! canonical encoding in which map entries are sorted, making versions
//! stable across processes and restarts.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, Kind, MessageDescriptor, SerializeOptions};
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

/// A stable 64-bit hash of an encoded message of type `full_name`.
pub fn content_hash(full_name: &str, bytes: &[u8]) -> u64 {
    match descriptor(full_name) {
        Ok(desc) if needs_canonical_form(&desc) => {
            let mut out = Vec::with_capacity(bytes.len());
            canonicalize(&desc, bytes, &mut out);
            xxhash_rust::xxh3::xxh3_64(&out)
        }
        _ => xxhash_rust::xxh3::xxh3_64(bytes),
    }
}

/// Whether messages of this type can contain maps (directly, nested or in
/// an `Any`), so their bytes may depend on hash map iteration order.
fn needs_canonical_form(desc: &MessageDescriptor) -> bool {
    static CACHE: OnceLock<Mutex<HashMap<String, bool>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(v) = cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(desc.full_name())
    {
        return *v;
    }
    let mut visiting = Vec::new();
    let result = may_contain_map(desc, &mut visiting);
    cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(desc.full_name().to_string(), result);
    result
}

fn may_contain_map(desc: &MessageDescriptor, visiting: &mut Vec<String>) -> bool {
    if desc.full_name() == "google.protobuf.Any" || desc.full_name() == "google.protobuf.Struct" {
        return true;
    }
    if visiting.iter().any(|v| v == desc.full_name()) {
        return false;
    }
    visiting.push(desc.full_name().to_string());
    let found = desc.fields().any(|f| {
        f.is_map()
            || match f.kind() {
                Kind::Message(m) => may_contain_map(&m, visiting),
                _ => false,
            }
    });
    visiting.pop();
    found
}

fn read_varint(bytes: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*pos)?;
        *pos += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

fn write_varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Re-encodes `bytes` with every map's entries sorted by their canonical
/// bytes and every `Any` payload canonicalized; other fields keep their order.
fn canonicalize(desc: &MessageDescriptor, bytes: &[u8], out: &mut Vec<u8>) {
    let mut pos = 0;
    let mut maps: Vec<(u32, Vec<Vec<u8>>)> = Vec::new();
    let is_any = desc.full_name() == "google.protobuf.Any";
    let mut any_type: Option<String> = None;
    while pos < bytes.len() {
        let start = pos;
        let Some(key) = read_varint(bytes, &mut pos) else {
            out.extend_from_slice(&bytes[start..]);
            return;
        };
        let (number, wire) = ((key >> 3) as u32, (key & 7) as u8);
        let field = desc.get_field(number);
        match wire {
            2 => {
                let Some(len) = read_varint(bytes, &mut pos) else {
                    out.extend_from_slice(&bytes[start..]);
                    return;
                };
                let end = pos.saturating_add(len as usize).min(bytes.len());
                let payload = &bytes[pos..end];
                pos = end;
                let nested = field.as_ref().and_then(|f| match f.kind() {
                    Kind::Message(m) => Some((m, f.is_map())),
                    _ => None,
                });
                if is_any && number == 1 {
                    any_type = std::str::from_utf8(payload)
                        .ok()
                        .map(|s| type_name(s).to_string());
                }
                let canonical_payload = match (&nested, is_any && number == 2) {
                    (_, true) => match any_type.as_deref().and_then(|t| descriptor(t).ok()) {
                        Some(m) => {
                            let mut c = Vec::with_capacity(payload.len());
                            canonicalize(&m, payload, &mut c);
                            c
                        }
                        None => payload.to_vec(),
                    },
                    (Some((m, _)), false) => {
                        let mut c = Vec::with_capacity(payload.len());
                        canonicalize(m, payload, &mut c);
                        c
                    }
                    (None, false) => payload.to_vec(),
                };
                if nested.as_ref().is_some_and(|(_, is_map)| *is_map) {
                    match maps.iter_mut().find(|(n, _)| *n == number) {
                        Some((_, entries)) => entries.push(canonical_payload),
                        None => maps.push((number, vec![canonical_payload])),
                    }
                } else {
                    write_varint(key, out);
                    write_varint(canonical_payload.len() as u64, out);
                    out.extend_from_slice(&canonical_payload);
                }
            }
            0 => {
                if read_varint(bytes, &mut pos).is_none() {
                    out.extend_from_slice(&bytes[start..]);
                    return;
                }
                out.extend_from_slice(&bytes[start..pos]);
            }
            1 => {
                pos = (pos + 8).min(bytes.len());
                out.extend_from_slice(&bytes[start..pos]);
            }
            5 => {
                pos = (pos + 4).min(bytes.len());
                out.extend_from_slice(&bytes[start..pos]);
            }
            _ => {
                out.extend_from_slice(&bytes[start..]);
                return;
            }
        }
    }
    for (number, mut entries) in maps {
        entries.sort();
        for e in entries {
            write_varint((u64::from(number) << 3) | 2, out);
            write_varint(e.len() as u64, out);
            out.extend_from_slice(&e);
        }
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
