//! The ADS stream state machines under any sequence of requests and
//! snapshots, as the `ads_sequence` fuzz target (`xds/fuzz`) drives them:
//! [`check_sequence`] reads a byte string as such a sequence and checks the
//! protocol's rules on everything the state machine answers. The same
//! function replays the committed corpus in `cargo test`.
//!
//! The rules checked, for both protocols:
//! - only a request without a type URL is refused, and nothing panics;
//! - nonces increase; every resource is of its response's type and is the
//!   snapshot's, at the version the snapshot gives it;
//! - make before break: listeners and routes are sent only once Envoy holds
//!   the endpoints of every cluster of the snapshot;
//! - no resend loop: a NACK that changes no subscription is not answered
//!   with another response of its type;
//! - delta: nothing is both sent and removed;
//! - every response frames into exactly its protobuf message.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use prost::Message;

use super::{DeltaResponse, DeltaStream, SotwResponse, SotwStream, XdsResponse};
use crate::resources::{Origin, Resource, ResourceSet, XdsType};
use crate::snapshot::{Snapshot, resource_version};

/// The resource names requests pick from.
const NAMES: [&str; 4] = ["a", "b", "c", "d"];

/// Reads `data` as a sequence of requests and snapshots for one stream
/// and checks the rules of the module's documentation; the error says
/// which rule broke and where.
pub fn check_sequence(data: &[u8]) -> Result<(), String> {
    let Some((&protocol, data)) = data.split_first() else {
        return Ok(());
    };
    let snapshots = snapshots();
    let mut ops = Ops { data };
    if protocol.is_multiple_of(2) {
        SotwCheck::default().run(&mut ops, &snapshots)
    } else {
        DeltaCheck::default().run(&mut ops, &snapshots)
    }
}

/// The input, read a byte at a time (zero once it runs out).
struct Ops<'a> {
    data: &'a [u8],
}

impl Ops<'_> {
    fn next(&mut self) -> Option<u8> {
        let (&b, rest) = self.data.split_first()?;
        self.data = rest;
        Some(b)
    }

    fn byte(&mut self) -> u8 {
        self.next().unwrap_or(0)
    }

    /// A type URL: one of the five, or now and then an unknown or none.
    fn type_url(&mut self) -> String {
        match self.byte() % 7 {
            5 => "type.googleapis.com/unknown.Type".to_string(),
            6 => String::new(),
            i => XdsType::ALL[i as usize].type_url().to_string(),
        }
    }

    /// Names from a bit mask, "*" on the fifth bit.
    fn names(&mut self) -> Vec<String> {
        let mask = self.byte();
        let mut names: Vec<String> = NAMES
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, n)| n.to_string())
            .collect();
        if mask & 0x10 != 0 {
            names.push("*".to_string());
        }
        names
    }
}

/// Four snapshots over the names, differing in which resources exist and
/// in their content; index 4 is no snapshot.
fn snapshots() -> Vec<Arc<Snapshot>> {
    (0..4u32)
        .map(|variant| {
            let mut set = ResourceSet::new();
            for (i, name) in NAMES.iter().enumerate() {
                if (variant + i as u32) % 4 == 3 {
                    continue;
                }
                let timeout = u64::from(variant % 2) + 1;
                set.add(
                    Origin::Outbound,
                    Resource::Cluster(Cluster {
                        name: name.to_string(),
                        alt_stat_name: format!("{name}-{timeout}"),
                        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
                            cluster::DiscoveryType::Eds as i32,
                        )),
                        ..Default::default()
                    }),
                );
                if !(variant + i as u32).is_multiple_of(3) {
                    set.add(
                        Origin::Outbound,
                        Resource::Endpoints(ClusterLoadAssignment {
                            cluster_name: name.to_string(),
                            ..Default::default()
                        }),
                    );
                }
                if i < 2 {
                    set.add(
                        Origin::Outbound,
                        Resource::Listener(Listener {
                            name: name.to_string(),
                            stat_prefix: format!("{variant}"),
                            ..Default::default()
                        }),
                    );
                    set.add(
                        Origin::Outbound,
                        Resource::Route(RouteConfiguration {
                            name: name.to_string(),
                            ..Default::default()
                        }),
                    );
                }
            }
            Arc::new(Snapshot::from_resources(&set))
        })
        .collect()
}

/// What Envoy's side of the stream looks like to the checks.
#[derive(Default)]
struct Envoy {
    /// Per type URL: the nonce and version of the last response.
    last: BTreeMap<String, (String, String)>,
    /// The endpoints Envoy holds.
    endpoints: BTreeSet<String>,
    nonce: u64,
    snapshot: Option<Arc<Snapshot>>,
}

impl Envoy {
    /// The next snapshot (one of the four, or none), as Envoy's side knows it.
    fn next_snapshot(&mut self, ops: &mut Ops<'_>, snapshots: &[Arc<Snapshot>]) -> Option<Arc<Snapshot>> {
        self.snapshot = snapshots.get(usize::from(ops.byte() % 5)).cloned();
        self.snapshot.clone()
    }

    /// How a request answers the last response of its type: the nonce and
    /// version it quotes and whether it is a NACK. An ACK or NACK of the
    /// last response, a stale nonce ("0"), or none (a new subscription).
    fn answer(&self, ops: &mut Ops<'_>, type_url: &str) -> (String, String, bool) {
        match (ops.byte() % 4, self.last.get(type_url).cloned()) {
            (1, Some((nonce, version))) => (nonce, version, false),
            (2, Some((nonce, version))) => (nonce, version, true),
            (3, _) => ("0".to_string(), "0".to_string(), false),
            _ => (String::new(), String::new(), false),
        }
    }

    /// The checks every response of either protocol passes.
    fn response_common(&mut self, type_url: &str, nonce: &str) -> Result<XdsType, String> {
        let n: u64 = nonce
            .parse()
            .map_err(|_| format!("nonce {nonce:?} is not a counter"))?;
        if n <= self.nonce {
            return Err(format!("nonce {n} after {}", self.nonce));
        }
        self.nonce = n;
        let t = XdsType::from_type_url(type_url).ok_or_else(|| format!("a response of type {type_url}"))?;
        let snapshot = self
            .snapshot
            .as_ref()
            .ok_or_else(|| format!("a {type_url} response without a snapshot"))?;
        if matches!(t, XdsType::Listener | XdsType::Route) {
            let clusters = &snapshot.get(XdsType::Cluster).resources;
            for name in snapshot.get(XdsType::Endpoints).resources.keys() {
                if clusters.contains_key(name) && !self.endpoints.contains(&**name) {
                    return Err(format!(
                        "{} sent while Envoy lacks the endpoints of cluster {name}",
                        t.short()
                    ));
                }
            }
        }
        Ok(t)
    }

    fn resource_is_the_snapshots(
        &self,
        t: XdsType,
        name: &str,
        encoded: &crate::resources::EncodedResource,
    ) -> Result<(), String> {
        if encoded.xds_type != t {
            return Err(format!(
                "{name} of type {:?} in a {} response",
                encoded.xds_type,
                t.short()
            ));
        }
        let in_snapshot = self
            .snapshot
            .as_ref()
            .and_then(|s| s.get(t).resources.get(name).map(|r| r.encoded.clone()));
        match in_snapshot {
            Some(e) if *e == *encoded => Ok(()),
            _ => Err(format!("{} {name} sent is not the snapshot's", t.short())),
        }
    }
}

/// The state machine's output for a request, which it refuses only
/// without a type URL (`None` then).
fn answered<T>(type_url: &str, result: Result<T, tonic::Status>) -> Result<Option<T>, String> {
    match result {
        Err(_) if type_url.is_empty() => Ok(None),
        Err(status) => Err(format!("{type_url} refused: {}", status.message())),
        Ok(_) if type_url.is_empty() => Err("a request without a type URL accepted".into()),
        Ok(out) => Ok(Some(out)),
    }
}

fn nack_status() -> Option<RpcStatus> {
    Some(RpcStatus {
        code: 3,
        message: "rejected".into(),
        ..Default::default()
    })
}

fn frames_as<M: Message + Default + PartialEq>(r: &impl XdsResponse, expected: &M) -> Result<(), String> {
    let bytes: Vec<u8> = r.frame().iter().flat_map(|c| c.iter().copied()).collect();
    let body = bytes.get(5..).ok_or("a frame shorter than its prefix")?;
    let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
    if bytes[0] != 0 || len != body.len() {
        return Err(format!("frame prefix {:?} for {} bytes", &bytes[..5], body.len()));
    }
    match M::decode(body) {
        Ok(m) if m == *expected => Ok(()),
        Ok(_) => Err("the frame decodes to another message".into()),
        Err(e) => Err(format!("the frame does not decode: {e}")),
    }
}

#[derive(Default)]
struct SotwCheck {
    stream: SotwStream,
    envoy: Envoy,
    /// The names of the last request per type URL.
    asked: BTreeMap<String, Vec<String>>,
}

impl SotwCheck {
    fn run(mut self, ops: &mut Ops<'_>, snapshots: &[Arc<Snapshot>]) -> Result<(), String> {
        while let Some(op) = ops.next() {
            if op % 4 == 3 {
                let out = self.stream.on_snapshot(self.envoy.next_snapshot(ops, snapshots));
                self.responses(&out.responses)?;
                continue;
            }
            let type_url = ops.type_url();
            let names = ops.names();
            let (nonce, version, nack) = self.envoy.answer(ops, &type_url);
            let unchanged = self.asked.get(&type_url) == Some(&names);
            // A request quoting a superseded nonce is ignored whole, its
            // names included (Envoy's answer to the newer response follows).
            if nonce != "0" {
                self.asked.insert(type_url.clone(), names.clone());
            }
            let request = DiscoveryRequest {
                version_info: version,
                resource_names: names,
                type_url: type_url.clone(),
                response_nonce: nonce,
                error_detail: if nack { nack_status() } else { None },
                ..Default::default()
            };
            if let Some(out) = answered(&type_url, self.stream.on_request(request))? {
                if nack && unchanged && out.responses.iter().any(|r| r.type_url == type_url) {
                    return Err(format!("{type_url} sent again after a NACK"));
                }
                self.responses(&out.responses)?;
            }
        }
        Ok(())
    }

    fn responses(&mut self, responses: &[SotwResponse]) -> Result<(), String> {
        for r in responses {
            let t = self.envoy.response_common(r.type_url, &r.nonce)?;
            let expected_version = self.envoy.snapshot.as_ref().map(|s| s.version(t).to_string());
            if expected_version.as_deref() != Some(r.version_info.as_str()) {
                return Err(format!(
                    "{} sent at version {} of another snapshot",
                    t.short(),
                    r.version_info
                ));
            }
            let mut names = BTreeSet::new();
            for e in &r.resources {
                self.envoy.resource_is_the_snapshots(t, &e.name, e)?;
                if !names.insert(e.name.to_string()) {
                    return Err(format!("{} {} twice in one response", t.short(), e.name));
                }
            }
            if t == XdsType::Endpoints {
                // Endpoints are not a state of the world: Envoy keeps those
                // it still asks for and is not sent again.
                let asked = self.asked.get(r.type_url).cloned().unwrap_or_default();
                self.envoy.endpoints.retain(|n| asked.contains(n));
                self.envoy.endpoints.extend(names);
            }
            frames_as::<DiscoveryResponse>(r, &r.to_message())?;
            self.envoy
                .last
                .insert(r.type_url.to_string(), (r.nonce.clone(), r.version_info.clone()));
        }
        Ok(())
    }
}

#[derive(Default)]
struct DeltaCheck {
    stream: DeltaStream,
    envoy: Envoy,
    /// The type URLs requested so far.
    requested: BTreeSet<String>,
}

impl DeltaCheck {
    fn run(mut self, ops: &mut Ops<'_>, snapshots: &[Arc<Snapshot>]) -> Result<(), String> {
        while let Some(op) = ops.next() {
            if op % 4 == 3 {
                let out = self.stream.on_snapshot(self.envoy.next_snapshot(ops, snapshots));
                self.responses(&out.responses)?;
                continue;
            }
            let type_url = ops.type_url();
            let subscribe = ops.names();
            let unsubscribe = ops.names();
            let (nonce, _, nack) = self.envoy.answer(ops, &type_url);
            // Versions Envoy says it holds (a reconnecting Envoy's claim),
            // honoured only on a type's first request.
            let initial: std::collections::HashMap<String, String> = if op % 4 == 2 {
                NAMES
                    .iter()
                    .take(usize::from(op >> 6))
                    .map(|n| (n.to_string(), format!("{:016x}", op)))
                    .collect()
            } else {
                Default::default()
            };
            let unchanged = subscribe.is_empty() && unsubscribe.is_empty();
            let first_request = self.requested.insert(type_url.clone());
            if type_url == XdsType::Endpoints.type_url() {
                if first_request {
                    // What a reconnecting Envoy says it holds counts as held.
                    self.envoy.endpoints.extend(initial.keys().cloned());
                }
                for name in &unsubscribe {
                    self.envoy.endpoints.remove(name);
                }
            }
            let request = DeltaDiscoveryRequest {
                type_url: type_url.clone(),
                resource_names_subscribe: subscribe,
                resource_names_unsubscribe: unsubscribe,
                initial_resource_versions: initial,
                response_nonce: nonce,
                error_detail: if nack { nack_status() } else { None },
                ..Default::default()
            };
            let first = !self.envoy.last.contains_key(&type_url);
            if let Some(out) = answered(&type_url, self.stream.on_request(request))? {
                if nack && unchanged && !first && out.responses.iter().any(|r| r.type_url == type_url) {
                    return Err(format!("{type_url} sent again after a NACK"));
                }
                self.responses(&out.responses)?;
            }
        }
        Ok(())
    }

    fn responses(&mut self, responses: &[DeltaResponse]) -> Result<(), String> {
        for r in responses {
            let t = self.envoy.response_common(r.type_url, &r.nonce)?;
            let mut names = BTreeSet::new();
            for d in &r.resources {
                self.envoy.resource_is_the_snapshots(t, d.name(), &d.encoded)?;
                let version = self
                    .envoy
                    .snapshot
                    .as_ref()
                    .and_then(|s| s.get(t).resources.get(d.name()).map(|v| v.version));
                if version != Some(d.version) {
                    return Err(format!(
                        "{} {} sent at version {}",
                        t.short(),
                        d.name(),
                        resource_version(d.version)
                    ));
                }
                if !names.insert(d.name().to_string()) {
                    return Err(format!("{} {} twice in one response", t.short(), d.name()));
                }
            }
            for name in &r.removed_resources {
                if names.contains(name) {
                    return Err(format!("{} {name} both sent and removed", t.short()));
                }
            }
            if t == XdsType::Endpoints {
                self.envoy.endpoints.extend(names);
                for name in &r.removed_resources {
                    self.envoy.endpoints.remove(name);
                }
            }
            frames_as::<DeltaDiscoveryResponse>(r, &r.to_message())?;
            self.envoy.last.insert(
                r.type_url.to_string(),
                (r.nonce.clone(), r.system_version_info.clone()),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_empty_inputs_pass() {
        assert_eq!(check_sequence(b""), Ok(()));
        assert_eq!(check_sequence(b"\x00"), Ok(()));
        assert_eq!(check_sequence(b"\x01"), Ok(()));
    }

    #[test]
    fn a_typical_stream_passes_both_protocols() {
        // Subscribe to CDS, EDS (all names), LDS and RDS wildcard; a
        // snapshot; ACK each; another snapshot; NACK listeners.
        let ops: &[u8] = &[
            0, 0x1f, 0, //
            0, 1, 0x0f, 0, //
            0, 3, 0x10, 0, //
            0, 4, 0x10, 0, //
            3, 0, //
            0, 0, 0x1f, 1, 0, 1, 0x0f, 1, 0, 3, 0x10, 1, 0, 4, 0x10, 1, //
            3, 1, //
            0, 3, 0x10, 2,
        ];
        for protocol in [0u8, 1] {
            let mut data = vec![protocol];
            data.extend_from_slice(ops);
            assert_eq!(check_sequence(&data), Ok(()), "protocol {protocol}");
        }
    }

    #[test]
    fn every_short_input_passes() {
        // Every input of up to three bytes after the protocol byte.
        for protocol in [0u8, 1] {
            for a in 0..=255u8 {
                for b in [0u8, 1, 3, 0x0f, 0x10, 0x1f, 0xff] {
                    for c in [0u8, 1, 2, 3] {
                        let data = [protocol, a, b, c, 3, a % 5, a, b, c];
                        if let Err(e) = check_sequence(&data) {
                            panic!("{data:?}: {e}");
                        }
                    }
                }
            }
        }
    }
}
