//! The canonical encoding of a message, for content hashes.
//!
//! prost encodes proto `map` fields from a `HashMap`, so two equal messages
//! may encode to different bytes. The canonical form puts every map's
//! entries, sorted by their own canonical bytes, after the message's other
//! fields, and canonicalizes `Any` payloads by their type URL; everything
//! else keeps its bytes and order.
//!
//! Walking the descriptors for every field of every resource cost more
//! than generating the resources, so each message type is compiled once
//! (per thread) into a [`Plan`] naming only the fields that can hold a map
//! somewhere below them; every other field is copied as it is.

use std::cell::RefCell;
use std::collections::HashMap;

use prost_reflect::{Kind, MessageDescriptor};

use crate::proto;

/// The canonical bytes of `bytes`, an encoded message of type `full_name`,
/// or `None` when the type cannot contain a map (its bytes are canonical).
pub fn canonical(full_name: &str, bytes: &[u8]) -> Option<Vec<u8>> {
    PLANS.with(|plans| {
        let mut plans = plans.borrow_mut();
        let id = plans.by_name(full_name)?;
        let mut out = Vec::with_capacity(bytes.len());
        plans.canonicalize(id, bytes, &mut out);
        Some(out)
    })
}

thread_local! {
    static PLANS: RefCell<Plans> = RefCell::new(Plans::default());
}

/// What canonicalization does with one field.
#[derive(Clone, Copy, Debug)]
enum Step {
    /// A nested message that may hold a map: canonicalize it.
    Message(usize),
    /// A map entry: canonicalize it (when its value may hold a map) and
    /// sort it with its siblings at the end of the message.
    MapEntry(Option<usize>),
}

/// The fields of one message type that need work, by number.
#[derive(Debug, Default)]
struct Plan {
    is_any: bool,
    steps: Vec<(u32, Step)>,
}

impl Plan {
    fn step(&self, number: u32) -> Option<Step> {
        self.steps
            .binary_search_by_key(&number, |(n, _)| *n)
            .ok()
            .map(|i| self.steps[i].1)
    }
}

/// Compiled plans; a type that cannot contain a map has none.
#[derive(Debug, Default)]
struct Plans {
    ids: HashMap<String, Option<usize>>,
    plans: Vec<Plan>,
    may_contain_map: HashMap<String, bool>,
}

impl Plans {
    fn by_name(&mut self, full_name: &str) -> Option<usize> {
        if let Some(id) = self.ids.get(full_name) {
            return *id;
        }
        let desc = proto::descriptor(full_name).ok();
        match desc {
            Some(desc) => self.compile(&desc),
            None => {
                self.ids.insert(full_name.to_string(), None);
                None
            }
        }
    }

    fn compile(&mut self, desc: &MessageDescriptor) -> Option<usize> {
        if let Some(id) = self.ids.get(desc.full_name()) {
            return *id;
        }
        if !self.may_contain_map(desc, &mut Vec::new()) {
            self.ids.insert(desc.full_name().to_string(), None);
            return None;
        }
        // Registered before its fields, so recursive types find themselves.
        let id = self.plans.len();
        self.plans.push(Plan::default());
        self.ids.insert(desc.full_name().to_string(), Some(id));
        let mut steps = Vec::new();
        for field in desc.fields() {
            let Kind::Message(nested) = field.kind() else {
                continue;
            };
            let nested = self.compile(&nested);
            if field.is_map() {
                steps.push((field.number(), Step::MapEntry(nested)));
            } else if let Some(nested) = nested {
                steps.push((field.number(), Step::Message(nested)));
            }
        }
        steps.sort_by_key(|(n, _)| *n);
        self.plans[id] = Plan {
            is_any: desc.full_name() == "google.protobuf.Any",
            steps,
        };
        Some(id)
    }

    /// Whether messages of this type can contain maps (directly, nested or
    /// in an `Any`).
    fn may_contain_map(&mut self, desc: &MessageDescriptor, visiting: &mut Vec<String>) -> bool {
        let name = desc.full_name();
        if let Some(known) = self.may_contain_map.get(name) {
            return *known;
        }
        if name == "google.protobuf.Any" || name == "google.protobuf.Struct" {
            return true;
        }
        if visiting.iter().any(|v| v == name) {
            return false;
        }
        visiting.push(name.to_string());
        let found = desc.fields().any(|f| {
            f.is_map()
                || match f.kind() {
                    Kind::Message(m) => self.may_contain_map(&m, visiting),
                    _ => false,
                }
        });
        visiting.pop();
        // A type inside a cycle is only known once the cycle is left.
        if visiting.is_empty() || found {
            self.may_contain_map.insert(name.to_string(), found);
        }
        found
    }

    fn canonicalize(&mut self, id: usize, bytes: &[u8], out: &mut Vec<u8>) {
        let is_any = self.plans[id].is_any;
        let mut maps: Vec<(u32, Vec<Vec<u8>>)> = Vec::new();
        let mut any_type: Option<usize> = None;
        let mut pos = 0;
        while pos < bytes.len() {
            let start = pos;
            let Some(key) = read_varint(bytes, &mut pos) else {
                out.extend_from_slice(&bytes[start..]);
                return;
            };
            let (number, wire) = ((key >> 3) as u32, (key & 7) as u8);
            let skip = match wire {
                0 => read_varint(bytes, &mut pos).map(|_| 0),
                1 => Some(8),
                5 => Some(4),
                2 => read_varint(bytes, &mut pos).map(|len| len as usize),
                _ => None,
            };
            let Some(skip) = skip else {
                out.extend_from_slice(&bytes[start..]);
                return;
            };
            let payload_start = pos;
            pos = pos.saturating_add(skip).min(bytes.len());
            let payload = &bytes[payload_start..pos];
            if wire != 2 {
                out.extend_from_slice(&bytes[start..pos]);
                continue;
            }
            let step = if is_any {
                match number {
                    1 => {
                        any_type = std::str::from_utf8(payload)
                            .ok()
                            .and_then(|url| self.by_name(proto::type_name(url)));
                        None
                    }
                    2 => any_type.map(Step::Message),
                    _ => None,
                }
            } else {
                self.plans[id].step(number)
            };
            match step {
                None => out.extend_from_slice(&bytes[start..pos]),
                Some(Step::Message(nested)) => {
                    // The canonical form of a payload is as long as the
                    // payload, so the key and length stay as they are.
                    out.extend_from_slice(&bytes[start..payload_start]);
                    self.canonicalize(nested, payload, out);
                }
                Some(Step::MapEntry(entry)) => {
                    let canonical = match entry {
                        Some(entry) => {
                            let mut c = Vec::with_capacity(payload.len());
                            self.canonicalize(entry, payload, &mut c);
                            c
                        }
                        None => payload.to_vec(),
                    };
                    match maps.iter_mut().find(|(n, _)| *n == number) {
                        Some((_, entries)) => entries.push(canonical),
                        None => maps.push((number, vec![canonical])),
                    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::google::protobuf::value::Kind as ValueKind;
    use envoy_types::pb::google::protobuf::{Any, Struct, Value};
    use prost::Message;

    fn nested_struct(depth: usize) -> Struct {
        let fields = (0..8)
            .map(|i| {
                let kind = if depth == 0 {
                    ValueKind::StringValue(format!("v{i}"))
                } else {
                    ValueKind::StructValue(nested_struct(depth - 1))
                };
                (format!("k{i}"), Value { kind: Some(kind) })
            })
            .collect();
        Struct { fields }
    }

    fn cluster() -> Cluster {
        let options = (0..5)
            .map(|i| {
                let any = Any {
                    type_url: "type.googleapis.com/google.protobuf.Struct".into(),
                    value: nested_struct(2).encode_to_vec(),
                };
                (format!("option-{i}"), any)
            })
            .collect();
        Cluster {
            name: "c".into(),
            typed_extension_protocol_options: options,
            ..Default::default()
        }
    }

    #[test]
    fn equal_messages_have_one_canonical_form_through_maps_any_and_recursion() {
        let forms: std::collections::BTreeSet<Vec<u8>> = (0..10)
            .map(|_| canonical("envoy.config.cluster.v3.Cluster", &cluster().encode_to_vec()))
            .map(|c| c.expect("a cluster may hold maps"))
            .collect();
        assert_eq!(forms.len(), 1);
        let form = forms.into_iter().next().unwrap_or_default();
        assert_eq!(
            form.len(),
            cluster().encoded_len(),
            "the canonical form keeps the length"
        );
    }

    #[test]
    fn a_type_without_maps_is_canonical_as_encoded() {
        let duration = envoy_types::pb::google::protobuf::Duration { seconds: 5, nanos: 1 };
        assert_eq!(
            canonical("google.protobuf.Duration", &duration.encode_to_vec()),
            None
        );
        assert_eq!(canonical("no.such.Type", b"\x08\x01"), None);
    }
}
