//! The incremental (delta) protocol of one ADS stream, as a state machine
//! over requests and snapshots (no I/O).

use std::collections::BTreeSet;
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use tonic::Status;

use super::{
    ByTypeUrl, DeltaResource, DeltaResponse, Feedback, FeedbackKind, StreamOutput, StreamProtocol,
    endpoints_pending, sorted_names, waits_for_endpoints,
};
use crate::resources::XdsType;
use crate::snapshot::Snapshot;

/// What Envoy holds of a type: `(name, version)` pairs sorted by name and
/// unique, so that a response is one walk along the snapshot's sorted
/// resources (a lookup per resource, each comparing names, was most of a
/// thousand streams' work for a new endpoint).
#[derive(Debug)]
enum Held {
    /// Exactly the type's resources in this snapshot: what Envoy holds once
    /// it has everything it subscribed to, kept as the snapshot (shared
    /// with the cache) rather than as a list of its own (about 7 KiB per
    /// stream at a hundred services).
    All(Arc<Snapshot>),
    /// Anything else. The names are the snapshot's own strings, shared.
    List(Vec<(Arc<str>, u64)>),
}

impl Default for Held {
    fn default() -> Self {
        Held::List(Vec::new())
    }
}

impl Held {
    /// The pairs of type `t`, by name.
    fn iter(&self, t: XdsType) -> impl Iterator<Item = (&Arc<str>, u64)> {
        let (all, list) = match self {
            Held::All(snapshot) => (Some(snapshot.get(t).resources.iter()), None),
            Held::List(list) => (None, Some(list.iter())),
        };
        all.into_iter()
            .flatten()
            .map(|(name, r)| (name, r.version))
            .chain(list.into_iter().flatten().map(|(name, version)| (name, *version)))
    }

    /// Forgets `name` of type `t`.
    fn remove(&mut self, t: XdsType, name: &str) {
        if let Held::All(snapshot) = self {
            if !snapshot.get(t).resources.contains_key(name) {
                return;
            }
            *self = Held::List(self.iter(t).map(|(n, v)| (n.clone(), v)).collect());
        }
        if let Held::List(list) = self
            && let Ok(i) = list.binary_search_by(|(n, _)| (**n).cmp(name))
        {
            list.remove(i);
        }
    }
}

#[derive(Debug, Default)]
struct TypeState {
    wildcard: bool,
    /// The names Envoy subscribed to (beyond a wildcard).
    names: BTreeSet<Arc<str>>,
    /// What Envoy holds.
    client: Held,
    nonce: Option<String>,
    must_respond: bool,
    /// Whether `client` is [`Held::All`] as the last response left it,
    /// the subscription unchanged since: then a snapshot whose version of
    /// the type is the held one's has nothing to send.
    settled: bool,
}

impl TypeState {
    /// A response of type `t` at `typed`'s version, under the next nonce.
    fn response(
        &mut self,
        next_nonce: &mut u64,
        t: XdsType,
        typed: &crate::snapshot::TypeSnapshot,
        resources: Vec<DeltaResource>,
        removed_resources: Vec<String>,
    ) -> DeltaResponse {
        *next_nonce += 1;
        let nonce = next_nonce.to_string();
        self.nonce = Some(nonce.clone());
        self.must_respond = false;
        DeltaResponse {
            system_version_info: typed.version.clone(),
            resources,
            type_url: t.type_url(),
            removed_resources,
            nonce,
        }
    }

    /// Whether Envoy holds exactly the type's resources of `snapshot`, seen
    /// without a walk: every ACK, and every type a snapshot leaves alone.
    fn holds_all_of(&self, t: XdsType, snapshot: &Snapshot) -> bool {
        self.settled
            && !self.must_respond
            && matches!(&self.client, Held::All(held) if held.get(t).version == snapshot.get(t).version)
    }
}

/// One delta stream.
#[derive(Debug, Default)]
pub struct DeltaStream {
    types: ByTypeUrl<TypeState>,
    snapshot: Option<Arc<Snapshot>>,
    next_nonce: u64,
}

/// What handling an input on a delta stream produced.
pub type DeltaOutput = StreamOutput<DeltaResponse>;

impl DeltaStream {
    /// A stream with no subscriptions and no snapshot yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Handles a request from Envoy.
    pub fn on_request(&mut self, request: DeltaDiscoveryRequest) -> Result<DeltaOutput, Status> {
        if request.type_url.is_empty() {
            return Err(Status::invalid_argument("type_url is required on an ADS stream"));
        }
        let mut out = DeltaOutput::default();
        let xds_type = XdsType::from_type_url(&request.type_url);
        let first = !self.types.contains_key(&request.type_url);
        let state = self.types.get_or_default(&request.type_url);
        if first {
            // Resources Envoy still holds from an earlier stream are not
            // sent again unless they changed.
            let mut held: Vec<(Arc<str>, u64)> = request
                .initial_resource_versions
                .iter()
                .filter_map(|(name, version)| {
                    Some((Arc::from(name.as_str()), u64::from_str_radix(version, 16).ok()?))
                })
                .collect();
            held.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            state.client = Held::List(held);
            state.wildcard =
                xds_type.is_some_and(|t| t.is_wildcard()) && request.resource_names_subscribe.is_empty();
            state.must_respond = true;
        }
        if first
            || !request.resource_names_subscribe.is_empty()
            || !request.resource_names_unsubscribe.is_empty()
        {
            state.settled = false;
        }
        if !request.response_nonce.is_empty() {
            let kind = if state.nonce.as_deref() != Some(request.response_nonce.as_str()) {
                FeedbackKind::Stale
            } else if request.error_detail.is_some() {
                FeedbackKind::Nack
            } else {
                FeedbackKind::Ack
            };
            out.feedback
                .push(Feedback::delta(&request.type_url, kind, &request));
        }
        for name in &request.resource_names_subscribe {
            if name == "*" {
                state.wildcard = true;
            } else {
                let known = xds_type
                    .and_then(|t| self.snapshot.as_ref()?.get(t).resources.get(name))
                    .map(|r| r.encoded.name.clone());
                state
                    .names
                    .insert(known.unwrap_or_else(|| Arc::from(name.as_str())));
            }
        }
        for name in &request.resource_names_unsubscribe {
            if name == "*" {
                state.wildcard = false;
            } else {
                state.names.remove(name.as_str());
                // Forgotten by Envoy: a later subscription must send it again.
                if let Some(t) = xds_type {
                    state.client.remove(t, name);
                }
            }
        }
        if let Some(t) = xds_type {
            self.respond(t, &mut out);
            if t == XdsType::Endpoints {
                // Endpoints Envoy asked for may release held listeners.
                self.respond(XdsType::Listener, &mut out);
                self.respond(XdsType::Route, &mut out);
            }
        }
        Ok(out)
    }

    /// Whether listeners and routes must wait (see [`endpoints_pending`]).
    fn endpoints_pending(&self, snapshot: &Snapshot) -> bool {
        let Some(state) = self.types.get(XdsType::Endpoints.type_url()) else {
            return endpoints_pending(snapshot, |_| false);
        };
        let mut delivered = sorted_names(state.client.iter(XdsType::Endpoints).map(|(n, _)| &**n));
        endpoints_pending(snapshot, |name| delivered.contains(name))
    }

    /// Handles a new snapshot: sends what changed, clusters first;
    /// listeners and routes once Envoy has its clusters' endpoints.
    pub fn on_snapshot(&mut self, snapshot: Option<Arc<Snapshot>>) -> DeltaOutput {
        self.snapshot = snapshot;
        let mut out = DeltaOutput::default();
        for t in XdsType::ALL {
            self.respond(t, &mut out);
        }
        out
    }

    fn respond(&mut self, t: XdsType, out: &mut DeltaOutput) {
        let Some(snapshot) = self.snapshot.clone() else {
            return;
        };
        // Nothing for a type Envoy did not subscribe to (routes, with Kuma's
        // listeners), before anything else: working out whether endpoints
        // are pending walks every cluster.
        let Some(state) = self.types.get_mut(t.type_url()) else {
            return;
        };
        if state.holds_all_of(t, &snapshot) {
            // The record moves to the current snapshot, as the walk's would.
            state.client = Held::All(snapshot);
            return;
        }
        if waits_for_endpoints(t) && self.endpoints_pending(&snapshot) {
            return;
        }
        // Looked up again: working out the pending endpoints read the stream.
        let Some(state) = self.types.get_mut(t.type_url()) else {
            return;
        };
        let typed = snapshot.get(t);
        if let Held::All(held) = &state.client
            && state.settled
            && !state.must_respond
            && let Some(moved) = typed.resources.moved_since(&held.get(t).resources)
        {
            // Envoy holds every resource of the type it held before, under
            // the same subscription, and the names are the same: it gets
            // what moved, and holds all of them again.
            let resources: Vec<DeltaResource> = moved
                .into_iter()
                .map(|r| DeltaResource {
                    version: r.version,
                    encoded: r.encoded.clone(),
                })
                .collect();
            state.client = Held::All(snapshot.clone());
            if !resources.is_empty() {
                let response = state.response(&mut self.next_nonce, t, typed, resources, Vec::new());
                out.responses.push(response);
            }
            return;
        }
        // One walk along three sorted sequences: the snapshot's resources,
        // what Envoy holds, and (without a wildcard) what it subscribed to.
        let mut subscribed = sorted_names(state.names.iter().map(|n| &**n));
        let mut held = state.client.iter(t).peekable();
        let mut resources = Vec::new();
        let mut removed: Vec<String> = Vec::new();
        // How many of the snapshot's resources Envoy will hold: the list of
        // them is built only when that is not all (else it was a list per
        // stream and snapshot, and a reference count taken on names every
        // stream shares, thrown away at once).
        let mut kept = 0;
        for (name, r) in typed.resources.iter() {
            while let Some((gone, _)) = held.next_if(|(n, _)| ***n < **name) {
                removed.push(gone.to_string());
            }
            let holds = held.next_if(|(n, _)| ***n == **name).map(|(_, v)| v);
            if state.wildcard || subscribed.contains(name) {
                if holds != Some(r.version) {
                    resources.push(DeltaResource {
                        version: r.version,
                        encoded: r.encoded.clone(),
                    });
                }
                kept += 1;
            } else if holds.is_some() {
                removed.push(name.to_string());
            }
        }
        removed.extend(held.map(|(gone, _)| gone.to_string()));
        drop(subscribed);
        // Held as the snapshot when Envoy will hold all of its resources of
        // the type; also when nothing is sent, so that an older snapshot
        // (and the shared layer it rests on) is not kept alive by the stream.
        state.client = if kept == typed.resources.len() {
            Held::All(snapshot.clone())
        } else {
            let mut subscribed = sorted_names(state.names.iter().map(|n| &**n));
            let mut list: Vec<(Arc<str>, u64)> = typed
                .resources
                .iter()
                .filter(|(name, _)| state.wildcard || subscribed.contains(name))
                .map(|(name, r)| (name.clone(), r.version))
                .collect();
            list.shrink_to_fit();
            Held::List(list)
        };
        state.settled = matches!(state.client, Held::All(_));
        if resources.is_empty() && removed.is_empty() && !state.must_respond {
            // Envoy holds exactly what it wants of this snapshot already.
            return;
        }
        let response = state.response(&mut self.next_nonce, t, typed, resources, removed);
        out.responses.push(response);
    }
}

impl StreamProtocol for DeltaStream {
    type Request = DeltaDiscoveryRequest;
    type Response = DeltaResponse;
    const MODE: &'static str = "delta";

    fn on_request(&mut self, request: DeltaDiscoveryRequest) -> Result<DeltaOutput, Status> {
        DeltaStream::on_request(self, request)
    }

    fn on_snapshot(&mut self, snapshot: Option<Arc<Snapshot>>) -> DeltaOutput {
        DeltaStream::on_snapshot(self, snapshot)
    }
}
