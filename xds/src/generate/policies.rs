//! The policies that apply to one proxy, and what generation read of them.
//!
//! An outbound's shared resources are a function of the mesh, the outbound
//! and what its generation read of the proxy's `to` policies: the merged
//! configuration for a few destinations and whether a type applies at all.
//! Recording those reads lets proxies whose policies differ elsewhere (a
//! policy for one service changes the signature of every proxy it selects)
//! share the outbounds the difference does not reach.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use kuma_crds::matching::{Destination, InboundRules, MatchedPolicies, Merged};
use kuma_crds::resource::ResourceType;

use crate::context::{MeshContext, Proxy};
use crate::digest::JsonDigest;

/// The digests of each shared matching result's `to` entries, made once per
/// result (proxies selected alike share it) rather than once per proxy:
/// digesting them was half of matching a proxy's policies. Kept with the
/// mesh's policy index, whose results it describes.
#[derive(Debug, Default)]
pub struct ToDigests {
    /// By the result's address; the result is held so the address stays its.
    by_result: Mutex<HashMap<usize, Digested>>,
    /// Digests of a result's inbound rules and single-item configuration,
    /// by the result's address (held in `by_result`) and the part.
    parts: Mutex<HashMap<(usize, Part), u128>>,
}

/// A part of a matching result that generation reads besides its `to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Part {
    Inbound(usize),
    Single,
}

/// A matching result and the digests of its `to` entries.
type Digested = (Arc<MatchedPolicies>, Arc<[u128]>);

impl ToDigests {
    /// The digest of each of `matched`'s `to` entries, in order.
    fn of(&self, matched: &Arc<MatchedPolicies>) -> Arc<[u128]> {
        let key = Arc::as_ptr(matched) as usize;
        let mut by_result = self.by_result.lock().unwrap_or_else(|e| e.into_inner());
        let (_, digests) = by_result.entry(key).or_insert_with(|| {
            let digests = matched
                .to
                .entries
                .iter()
                .map(|e| {
                    let mut d = JsonDigest::new();
                    d.add(&e.target);
                    d.add(&e.route_scope);
                    d.add(&e.conf);
                    d.add(&e.source);
                    d.finish128()
                })
                .collect();
            (matched.clone(), digests)
        });
        digests.clone()
    }

    /// A digest of `part` of `matched` (a result [`ToDigests::of`] holds).
    fn part(&self, matched: &Arc<MatchedPolicies>, part: Part) -> u128 {
        let key = (Arc::as_ptr(matched) as usize, part);
        let mut parts = self.parts.lock().unwrap_or_else(|e| e.into_inner());
        *parts.entry(key).or_insert_with(|| {
            // Nothing for the part digests as nothing of the type does (0).
            let mut d = JsonDigest::new();
            match part {
                Part::Inbound(index) => match matched.inbounds.get(&index) {
                    Some(rules) => d.add(rules),
                    None => return 0,
                },
                Part::Single => match &matched.single {
                    Some(single) => d.add(single),
                    None => return 0,
                },
            }
            d.finish128()
        })
    }
}

/// The policies of every type that apply to one proxy.
#[derive(Debug, Default)]
pub struct Policies {
    /// Shared with every proxy the policies select alike.
    by_type: BTreeMap<ResourceType, Arc<MatchedPolicies>>,
    /// A digest of each `to` entry, parallel to `by_type[t].to.entries`.
    entry_digests: BTreeMap<ResourceType, Arc<[u128]>>,
    to_signature: u128,
    /// Where the digests of the other parts are kept.
    digests: Arc<ToDigests>,
    /// The policy types the mesh has, whoever they select.
    mesh_types: BTreeSet<ResourceType>,
    recording: Mutex<Recording>,
}

impl Clone for Policies {
    fn clone(&self) -> Self {
        Policies {
            by_type: self.by_type.clone(),
            entry_digests: self.entry_digests.clone(),
            to_signature: self.to_signature,
            digests: self.digests.clone(),
            mesh_types: self.mesh_types.clone(),
            recording: Mutex::default(),
        }
    }
}

/// One thing generation read of a proxy's policies.
#[derive(Clone, Debug, PartialEq)]
pub enum PolicyRead {
    /// Whether any policy of the type selects the proxy.
    Has(ResourceType, bool),
    /// The `to` entries of the type that apply to the destination (a
    /// digest of them, in merge order). Boxed: the other reads are small,
    /// and every proxy resting on a layer keeps its own.
    To(ResourceType, Box<Destination>, u128),
    /// The inbound rules of the type for an inbound (a digest of them).
    Inbound(ResourceType, usize, u128),
    /// The merged single-item configuration of the type (a digest of it).
    Single(ResourceType, u128),
    /// Whether the mesh has a policy of the type, whoever it selects.
    MeshHas(ResourceType, bool),
}

#[derive(Debug, Default)]
enum Recording {
    #[default]
    Off,
    On(Vec<PolicyRead>),
    /// Something was read that [`PolicyRead`] cannot describe.
    Opaque,
}

impl Policies {
    /// Matches every policy type of the mesh against the proxy.
    pub fn compute(proxy: &Proxy<'_>, mesh: &MeshContext) -> Self {
        let by_type: BTreeMap<ResourceType, Arc<MatchedPolicies>> = ResourceType::policies()
            .into_iter()
            .filter(|t| mesh.policy_types.contains(t))
            .map(|t| (t, mesh.policy_index.match_shared(t, proxy.resource)))
            .filter(|(_, m)| !m.is_empty())
            .collect();
        let entry_digests: BTreeMap<ResourceType, Arc<[u128]>> = by_type
            .iter()
            .map(|(t, matched)| (*t, mesh.to_digests.of(matched)))
            .collect();
        let mut signature = JsonDigest::new();
        for (t, digests) in &entry_digests {
            signature.add(t.name());
            signature.add(&**digests);
        }
        Policies {
            by_type,
            entry_digests,
            to_signature: signature.finish128(),
            digests: mesh.to_digests.clone(),
            mesh_types: mesh.policy_types.clone(),
            recording: Mutex::default(),
        }
    }

    /// A digest of every `to` entry that applies to the proxy: proxies with
    /// the same signature get the same configuration for every destination.
    pub fn to_signature(&self) -> u128 {
        self.to_signature
    }

    /// The matched policies of a type.
    pub fn get(&self, t: ResourceType) -> Option<&MatchedPolicies> {
        self.record_opaque();
        self.by_type.get(&t).map(|m| &**m)
    }

    /// Whether any policy of the type selects the proxy.
    pub fn has(&self, t: ResourceType) -> bool {
        let has = self.by_type.contains_key(&t);
        self.record(|| PolicyRead::Has(t, has));
        has
    }

    /// The merged `to` configuration of a type for a destination.
    pub fn to_conf(&self, t: ResourceType, destination: &Destination) -> Option<Merged> {
        self.record(|| {
            PolicyRead::To(
                t,
                Box::new(destination.clone()),
                self.relevant_digest(t, destination),
            )
        });
        self.by_type.get(&t)?.to.conf(destination)
    }

    /// The typed `to` configuration of a type for a destination.
    pub fn to_typed<C: serde::de::DeserializeOwned>(
        &self,
        t: ResourceType,
        destination: &Destination,
    ) -> Option<C> {
        self.to_conf(t, destination)?.conf().ok()
    }

    /// Whether the mesh has a policy of the type, whoever it selects.
    /// Generation asks this rather than the mesh, so that it is recorded.
    pub fn mesh_has(&self, t: ResourceType) -> bool {
        let has = self.mesh_types.contains(&t);
        self.record(|| PolicyRead::MeshHas(t, has));
        has
    }

    /// The inbound rules of a type for inbound `index`.
    pub fn inbound(&self, t: ResourceType, index: usize) -> Option<&InboundRules> {
        self.record(|| PolicyRead::Inbound(t, index, self.part_digest(t, Part::Inbound(index))));
        self.by_type.get(&t)?.inbounds.get(&index)
    }

    /// The typed catch-all inbound configuration of a type for inbound `index`.
    pub fn inbound_typed<C: serde::de::DeserializeOwned>(&self, t: ResourceType, index: usize) -> Option<C> {
        self.inbound(t, index)?.catch_all.as_ref()?.conf().ok()
    }

    /// The merged single-item configuration of a type.
    pub fn single(&self, t: ResourceType) -> Option<&Merged> {
        self.record(|| PolicyRead::Single(t, self.part_digest(t, Part::Single)));
        self.by_type.get(&t)?.single.as_ref()
    }

    /// The typed single-item configuration of a type.
    pub fn single_typed<C: serde::de::DeserializeOwned>(&self, t: ResourceType) -> Option<C> {
        self.single(t)?.conf().ok()
    }

    /// Every matched type.
    pub fn iter(&self) -> impl Iterator<Item = (&ResourceType, &MatchedPolicies)> {
        self.record_opaque();
        self.by_type.iter().map(|(t, m)| (t, &**m))
    }

    /// Runs `f`, recording what it reads: `None` when it read something
    /// that cannot be compared with another proxy's policies. Within an
    /// outer recording, what `f` read is the outer run's read too.
    pub fn recording<T>(&self, f: impl FnOnce() -> T) -> (T, Option<Vec<PolicyRead>>) {
        let outer = std::mem::replace(&mut *self.lock(), Recording::On(Vec::new()));
        let out = f();
        let mut recording = self.lock();
        let reads = match std::mem::replace(&mut *recording, outer) {
            // Each read once: several generators ask the same.
            Recording::On(all) => Some(all.into_iter().fold(Vec::new(), |mut unique, read| {
                if !unique.contains(&read) {
                    unique.push(read);
                }
                unique
            })),
            Recording::Off | Recording::Opaque => None,
        };
        match (&mut *recording, &reads) {
            (Recording::On(outer), Some(reads)) => outer.extend(reads.iter().cloned()),
            (Recording::On(_), None) => *recording = Recording::Opaque,
            _ => {}
        }
        drop(recording);
        (out, reads)
    }

    /// Runs `f` without recording what it reads (what it builds is keyed
    /// by what it depends on, e.g. a shared layer by the `to` signature).
    pub fn unrecorded<T>(&self, f: impl FnOnce() -> T) -> T {
        let outer = std::mem::take(&mut *self.lock());
        let out = f();
        *self.lock() = outer;
        out
    }

    /// Whether these policies give what `reads` recorded of others.
    pub fn reads_match(&self, reads: &[PolicyRead]) -> bool {
        reads.iter().all(|read| match read {
            PolicyRead::Has(t, has) => self.by_type.contains_key(t) == *has,
            PolicyRead::To(t, destination, digest) => self.relevant_digest(*t, destination) == *digest,
            PolicyRead::Inbound(t, index, digest) => self.part_digest(*t, Part::Inbound(*index)) == *digest,
            PolicyRead::Single(t, digest) => self.part_digest(*t, Part::Single) == *digest,
            PolicyRead::MeshHas(t, has) => self.mesh_types.contains(t) == *has,
        })
    }

    /// A digest of a part of the type's matched policies (0 when none of
    /// the type apply).
    fn part_digest(&self, t: ResourceType, part: Part) -> u128 {
        self.by_type
            .get(&t)
            .map_or(0, |matched| self.digests.part(matched, part))
    }

    /// A digest of the `to` entries of a type that apply to `destination`,
    /// in merge order (0 when none do).
    fn relevant_digest(&self, t: ResourceType, destination: &Destination) -> u128 {
        let (Some(matched), Some(digests)) = (self.by_type.get(&t), self.entry_digests.get(&t)) else {
            return 0;
        };
        matched
            .to
            .entries
            .iter()
            .zip(digests.iter())
            .filter(|(e, _)| e.applies_to(destination))
            .fold(0u128, |acc, (_, digest)| {
                let mut words = [0u8; 32];
                words[..16].copy_from_slice(&acc.to_le_bytes());
                words[16..].copy_from_slice(&digest.to_le_bytes());
                xxhash_rust::xxh3::xxh3_128(&words)
            })
    }

    fn record(&self, read: impl FnOnce() -> PolicyRead) {
        let mut recording = self.lock();
        if let Recording::On(reads) = &mut *recording {
            reads.push(read());
        }
    }

    fn record_opaque(&self) {
        let mut recording = self.lock();
        if matches!(*recording, Recording::On(_)) {
            *recording = Recording::Opaque;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Recording> {
        // Recording state is a plain value; a panic cannot leave it torn.
        self.recording.lock().unwrap_or_else(|e| e.into_inner())
    }
}
