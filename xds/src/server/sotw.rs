//! The state-of-the-world protocol of one ADS stream, as a state machine
//! over requests and snapshots (no I/O), so its rules are tested directly.

use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use tonic::Status;

use super::{
    ByTypeUrl, Feedback, FeedbackKind, Sorted, SotwResponse, StreamOutput, StreamProtocol, endpoints_pending,
    sorted_names, waits_for_endpoints,
};
use crate::resources::{EncodedResource, XdsType};
use crate::snapshot::Snapshot;

/// Names, sorted and unique.
type Names = Arc<[Arc<str>]>;

/// What was last sent for a type: the type version and the names sent,
/// sorted (`None` for a wildcard response). When every name subscribed to
/// was sent (the usual case) they are the subscription's own list, shared.
type Sent = (String, Option<Names>);

#[derive(Debug, Default)]
struct TypeState {
    wildcard: bool,
    /// The names Envoy subscribed to, sorted and unique. Names the snapshot
    /// holds share its strings (a stream keeps pointers, not copies: with
    /// a thousand streams asking for the same hundred endpoint names, the
    /// copies were a tenth of a stream's memory).
    names: Names,
    /// The nonce of the last response; requests quoting another are stale.
    nonce: Option<String>,
    sent: Option<Sent>,
    /// Endpoints only: the snapshot whose endpoints Envoy holds, for every
    /// name in `sent` (`None` after a rejection: the next response is whole).
    held: Option<Arc<Snapshot>>,
    /// Whether the next chance to respond must respond (a fresh subscription).
    must_respond: bool,
}

impl TypeState {
    /// Whether the last response is what a response now would be, seen
    /// without building one: `version` (a digest of every resource of the
    /// type) is the one sent, and the names sent are the subscription
    /// itself, unchanged since (every name was present; with the same
    /// resources, every name still is).
    fn sent_as_it_is(&self, version: &str) -> bool {
        if self.must_respond {
            return false;
        }
        match &self.sent {
            Some((sent_version, names)) if sent_version == version => match names {
                None => self.wildcard,
                Some(names) => !self.wildcard && Arc::ptr_eq(names, &self.names),
            },
            _ => false,
        }
    }
}

/// Whether a request's resource names are `names` (sorted and unique),
/// whichever order the request gives them in.
fn same_names(requested: &[String], names: &[Arc<str>]) -> bool {
    let wanted = requested.iter().filter(|n| *n != "*");
    if wanted.clone().map(String::as_str).eq(names.iter().map(|n| &**n)) {
        return true;
    }
    let mut sorted: Vec<&str> = wanted.map(String::as_str).collect();
    sorted.sort_unstable();
    sorted.dedup();
    sorted.into_iter().eq(names.iter().map(|n| &**n))
}

/// One SotW stream.
#[derive(Debug)]
pub struct SotwStream {
    types: ByTypeUrl<TypeState>,
    snapshot: Option<Arc<Snapshot>>,
    next_nonce: u64,
}

/// What handling an input on a SotW stream produced.
pub type SotwOutput = StreamOutput<SotwResponse>;

impl Default for SotwStream {
    fn default() -> Self {
        Self::new()
    }
}

impl SotwStream {
    /// A stream with no subscriptions and no snapshot yet.
    pub fn new() -> Self {
        SotwStream {
            types: ByTypeUrl::default(),
            snapshot: None,
            next_nonce: 0,
        }
    }

    /// Handles a request from Envoy.
    pub fn on_request(&mut self, request: DiscoveryRequest) -> Result<SotwOutput, Status> {
        if request.type_url.is_empty() {
            return Err(Status::invalid_argument("type_url is required on an ADS stream"));
        }
        let mut out = SotwOutput::default();
        let xds_type = XdsType::from_type_url(&request.type_url);
        let state = self.types.get_or_default(&request.type_url);
        if !request.response_nonce.is_empty() {
            if state.nonce.as_deref() != Some(request.response_nonce.as_str()) {
                if request.error_detail.is_some() {
                    // A rejection of an older response: what Envoy holds
                    // of it is unknown.
                    state.held = None;
                }
                // Envoy's reply to a response we have since superseded; its
                // answer to the newer one is on the way.
                out.feedback
                    .push(Feedback::new(&request.type_url, FeedbackKind::Stale, &request));
                return Ok(out);
            }
            let kind = if request.error_detail.is_some() {
                // What Envoy holds of a rejected response is unknown.
                state.held = None;
                FeedbackKind::Nack
            } else {
                FeedbackKind::Ack
            };
            out.feedback
                .push(Feedback::new(&request.type_url, kind, &request));
        } else {
            // A new subscription (stream start or a type Envoy starts
            // using): it always gets an answer, whatever version Envoy holds.
            state.must_respond = true;
        }
        let wildcard_type = xds_type.is_some_and(|t| t.is_wildcard());
        state.wildcard = request.resource_names.iter().any(|n| n == "*")
            || (wildcard_type && request.resource_names.is_empty());
        // An ACK names what the stream already subscribes to: the names
        // (and so the response they were last compared with) stay as they are.
        if !same_names(&request.resource_names, &state.names) {
            let known = xds_type.and_then(|t| self.snapshot.as_ref().map(|s| &s.get(t).resources));
            let mut names: Vec<Arc<str>> = request
                .resource_names
                .iter()
                .filter(|n| *n != "*")
                .map(|n| match known.and_then(|r| r.get(n)) {
                    Some(r) => r.encoded.name.clone(),
                    None => Arc::from(n.as_str()),
                })
                .collect();
            names.sort_unstable();
            names.dedup();
            state.names = names.into();
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
        let sent = self
            .types
            .get(XdsType::Endpoints.type_url())
            .and_then(|s| s.sent.as_ref());
        match sent {
            None => endpoints_pending(snapshot, |_| false),
            // A wildcard response delivered every one.
            Some((_, None)) => endpoints_pending(snapshot, |_| true),
            Some((_, Some(names))) => {
                let mut delivered = sorted_names(names.iter().map(|n| &**n));
                endpoints_pending(snapshot, |name| delivered.contains(name))
            }
        }
    }

    /// Handles a new snapshot: responds for every subscribed type whose
    /// content changed, clusters first (make before break); listeners and
    /// routes once Envoy has its clusters' endpoints.
    pub fn on_snapshot(&mut self, snapshot: Option<Arc<Snapshot>>) -> SotwOutput {
        self.snapshot = snapshot;
        let mut out = SotwOutput::default();
        for t in XdsType::ALL {
            self.respond(t, &mut out);
        }
        out
    }

    fn respond(&mut self, t: XdsType, out: &mut SotwOutput) {
        let Some(snapshot) = self.snapshot.clone() else {
            return;
        };
        // Nothing for a type Envoy did not subscribe to (routes, with Kuma's
        // listeners), before anything else: working out whether endpoints
        // are pending walks every cluster.
        let Some(state) = self.types.get_mut(t.type_url()) else {
            return;
        };
        if state.sent_as_it_is(&snapshot.get(t).version) {
            // Envoy has this version, of every name it asks for: nothing to
            // work out again (most calls: every ACK, every type a snapshot
            // leaves alone).
            if state.held.is_some() {
                state.held = Some(snapshot);
            }
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
        let (resources, names): (Vec<Arc<EncodedResource>>, Option<Names>) = if state.wildcard {
            (
                typed.resources.values().map(|r| r.encoded.clone()).collect(),
                None,
            )
        } else {
            // Sorted, as `names` is; the snapshot's own strings. One walk
            // along both sorted lists, not a search per name.
            let mut subscribed = sorted_names(state.names.iter().map(|n| &**n));
            let resources: Vec<Arc<EncodedResource>> = typed
                .resources
                .values()
                .filter(|r| subscribed.contains(r.name()))
                .map(|r| r.encoded.clone())
                .collect();
            let present = if resources.len() == state.names.len() {
                state.names.clone()
            } else {
                resources.iter().map(|r| r.name.clone()).collect()
            };
            (resources, Some(present))
        };
        let desired: Sent = (typed.version.clone(), names);
        // After a NACK `sent` holds the rejected version, so it is not sent
        // again until the configuration changes: no resend loop.
        if !state.must_respond && state.sent.as_ref() == Some(&desired) {
            // The same version: Envoy holds this snapshot's endpoints too,
            // and the older snapshot need not be kept for comparisons.
            if state.held.is_some() {
                state.held = Some(snapshot.clone());
            }
            return;
        }
        let resources = match (&state.held, &state.sent) {
            (Some(held), Some((_, Some(held_names))))
                if t == XdsType::Endpoints && !state.must_respond && !state.wildcard =>
            {
                let changed = changed_since(held.get(t), held_names, typed, resources);
                if changed.is_empty() {
                    // Nothing Envoy asked for changed: it already holds this.
                    state.held = Some(snapshot.clone());
                    state.sent = Some(desired);
                    return;
                }
                changed
            }
            _ => resources,
        };
        if t == XdsType::Endpoints {
            state.held = Some(snapshot.clone());
        }
        self.next_nonce += 1;
        let nonce = self.next_nonce.to_string();
        state.nonce = Some(nonce.clone());
        state.sent = Some(desired);
        state.must_respond = false;
        out.responses.push(SotwResponse {
            version_info: typed.version.clone(),
            resources,
            type_url: t.type_url(),
            nonce,
        });
    }
}

/// Endpoints, unlike clusters and listeners, are not a state of the world:
/// a response need not repeat the ones Envoy holds unchanged (xDS protocol,
/// "grouping resources into responses"), and Envoy keeps those it is not
/// sent. One endpoint added to a service every proxy reaches is then one
/// small response per proxy, not every service's endpoints again.
fn changed_since<'a>(
    held: &'a crate::snapshot::TypeSnapshot,
    held_names: &[Arc<str>],
    now: &'a crate::snapshot::TypeSnapshot,
    resources: Vec<Arc<EncodedResource>>,
) -> Vec<Arc<EncodedResource>> {
    // `resources` and everything below are sorted by name: one walk.
    let mut was_held = sorted_names(held_names.iter().map(|n| &**n));
    let versions = |s: &'a crate::snapshot::TypeSnapshot| {
        Sorted::new(s.resources.values().map(|r| (r.name(), r.version)))
    };
    let (mut held_versions, mut versions_now) = (versions(held), versions(now));
    resources
        .into_iter()
        .filter(|r| {
            let name = &*r.name;
            let moved = held_versions.get(name) != versions_now.get(name);
            !was_held.contains(name) || moved
        })
        .collect()
}

impl StreamProtocol for SotwStream {
    type Request = DiscoveryRequest;
    type Response = SotwResponse;
    const MODE: &'static str = "sotw";

    fn on_request(&mut self, request: DiscoveryRequest) -> Result<SotwOutput, Status> {
        SotwStream::on_request(self, request)
    }

    fn on_snapshot(&mut self, snapshot: Option<Arc<Snapshot>>) -> SotwOutput {
        SotwStream::on_snapshot(self, snapshot)
    }
}
