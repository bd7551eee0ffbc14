//! The xDS protocol rules, checked on the stream state machines directly:
//! nonces, ACK/NACK without resend loops, make-before-break order, named
//! and wildcard subscriptions, and delta reconnects that skip what Envoy
//! already holds.

mod support;

use std::path::Path;
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use kuma_xds::resources::XdsType;
use kuma_xds::server::{DeltaStream, FeedbackKind, SotwStream};
use kuma_xds::snapshot::{Snapshot, resource_version};
use support::Fixture;

/// A snapshot of the first proxy of a golden input.
fn snapshot(case: &str) -> Arc<Snapshot> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{case}.input.yaml"));
    let (_, resources) = Fixture::load(&path).generate();
    Arc::new(Snapshot::from_resources(&resources))
}

fn sotw(t: XdsType, names: &[&str], version: &str, nonce: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        type_url: t.type_url().into(),
        resource_names: names.iter().map(|n| n.to_string()).collect(),
        version_info: version.into(),
        response_nonce: nonce.into(),
        ..Default::default()
    }
}

fn nack(mut r: DiscoveryRequest) -> DiscoveryRequest {
    r.error_detail = Some(RpcStatus {
        code: 3,
        message: "rejected".into(),
        ..Default::default()
    });
    r
}

#[test]
fn sotw_answers_subscriptions_once_a_snapshot_exists() {
    let mut s = SotwStream::new();
    let out = s.on_request(sotw(XdsType::Cluster, &[], "", "")).unwrap();
    assert!(
        out.responses.is_empty(),
        "nothing to send before the first snapshot"
    );
    let snap = snapshot("basic/base-mesh");
    let out = s.on_snapshot(Some(snap.clone()));
    assert_eq!(out.responses.len(), 1);
    let r = &out.responses[0];
    assert_eq!(r.type_url, XdsType::Cluster.type_url());
    assert_eq!(r.version_info, snap.version(XdsType::Cluster));
    assert_eq!(
        r.resources.len(),
        snap.get(XdsType::Cluster).resources.len(),
        "wildcard: every cluster"
    );
}

#[test]
fn sotw_ack_nack_and_stale_nonces() {
    let snap = snapshot("basic/base-mesh");
    let mut s = SotwStream::new();
    s.on_snapshot(Some(snap.clone()));
    let first = s
        .on_request(sotw(XdsType::Cluster, &[], "", ""))
        .unwrap()
        .responses
        .remove(0);

    // A NACK is reported and the same version is not sent again.
    let out = s
        .on_request(nack(sotw(XdsType::Cluster, &[], "", &first.nonce)))
        .unwrap();
    assert_eq!(out.feedback[0].kind, FeedbackKind::Nack);
    assert_eq!(out.feedback[0].error.as_deref(), Some("rejected"));
    assert!(out.responses.is_empty(), "no resend loop after a NACK");
    // Nor on an unchanged snapshot.
    assert!(s.on_snapshot(Some(snap.clone())).responses.is_empty());

    // A new configuration is sent; a reply quoting the old nonce is stale.
    let changed = snapshot("mesh_timeout/outbound-and-inbound");
    let next = s.on_snapshot(Some(changed.clone())).responses;
    assert_eq!(next.len(), 1, "only clusters are subscribed");
    assert_ne!(next[0].nonce, first.nonce);
    let out = s
        .on_request(sotw(XdsType::Cluster, &[], &first.version_info, &first.nonce))
        .unwrap();
    assert_eq!(out.feedback[0].kind, FeedbackKind::Stale);
    assert!(out.responses.is_empty());

    // The ACK of the latest response is reported, and nothing is resent.
    let out = s
        .on_request(sotw(XdsType::Cluster, &[], &next[0].version_info, &next[0].nonce))
        .unwrap();
    assert_eq!(out.feedback[0].kind, FeedbackKind::Ack);
    assert_eq!(out.feedback[0].version, changed.version(XdsType::Cluster));
    assert!(out.responses.is_empty());
}

/// The names of every cluster's endpoints in `snap`.
fn endpoint_names(snap: &Snapshot) -> Vec<&str> {
    snap.get(XdsType::Endpoints)
        .resources
        .keys()
        .map(|n| &**n)
        .collect()
}

#[test]
fn sotw_pushes_changed_types_clusters_first() {
    let mut s = SotwStream::new();
    let base = snapshot("basic/base-mesh");
    s.on_snapshot(Some(base.clone()));
    // Envoy's order: clusters, their endpoints, then listeners.
    let r = s
        .on_request(sotw(XdsType::Cluster, &[], "", ""))
        .unwrap()
        .responses
        .remove(0);
    s.on_request(sotw(XdsType::Cluster, &[], &r.version_info, &r.nonce))
        .unwrap();
    let names = endpoint_names(&base);
    let out = s.on_request(sotw(XdsType::Listener, &[], "", "")).unwrap();
    assert!(
        out.responses.is_empty(),
        "listeners wait for the clusters' endpoints"
    );
    let out = s
        .on_request(sotw(XdsType::Endpoints, &names, "", ""))
        .unwrap()
        .responses;
    let types: Vec<&str> = out.iter().map(|r| r.type_url).collect();
    assert_eq!(
        types,
        [XdsType::Endpoints.type_url(), XdsType::Listener.type_url()]
    );
    assert_eq!(
        out[0].resources.len(),
        names.len(),
        "named subscription: the names asked for"
    );
    for r in &out {
        let t = XdsType::from_type_url(r.type_url).unwrap();
        let asked: &[&str] = if t == XdsType::Endpoints { &names } else { &[] };
        s.on_request(sotw(t, asked, &r.version_info, &r.nonce)).unwrap();
    }

    let changed = snapshot("mesh_timeout/outbound-and-inbound");
    let out = s.on_snapshot(Some(changed.clone())).responses;
    let types: Vec<&str> = out.iter().map(|r| r.type_url).collect();
    assert_eq!(types[0], XdsType::Cluster.type_url(), "clusters first");
    let new_clusters = endpoint_names(&changed).iter().any(|n| !names.contains(n));
    if new_clusters {
        assert!(!types.contains(&XdsType::Listener.type_url()), "{types:?}");
        // Envoy asks for the new clusters' endpoints: then the listeners.
        let eds_nonce = out
            .iter()
            .rfind(|r| r.type_url == XdsType::Endpoints.type_url())
            .map(|r| (r.version_info.clone(), r.nonce.clone()))
            .unwrap_or_default();
        let after = s
            .on_request(sotw(
                XdsType::Endpoints,
                &endpoint_names(&changed),
                &eds_nonce.0,
                &eds_nonce.1,
            ))
            .unwrap()
            .responses;
        let types: Vec<&str> = after.iter().map(|r| r.type_url).collect();
        assert_eq!(
            types,
            [XdsType::Endpoints.type_url(), XdsType::Listener.type_url()]
        );
    } else {
        assert_eq!(
            types,
            [
                XdsType::Cluster.type_url(),
                XdsType::Endpoints.type_url(),
                XdsType::Listener.type_url()
            ],
            "clusters, then their endpoints (re-sent after a cluster change), then listeners"
        );
    }
}

#[test]
fn sotw_named_subscription_changes_are_answered() {
    let mut s = SotwStream::new();
    s.on_snapshot(Some(snapshot("basic/base-mesh")));
    let r = s
        .on_request(sotw(XdsType::Endpoints, &["backend"], "", ""))
        .unwrap()
        .responses
        .remove(0);
    assert_eq!(r.resources.len(), 1);
    // Envoy adds a name in its ACK: the new set is sent.
    let out = s
        .on_request(sotw(
            XdsType::Endpoints,
            &["backend", "db"],
            &r.version_info,
            &r.nonce,
        ))
        .unwrap();
    assert_eq!(out.responses.len(), 1);
    // Endpoints are not a state of the world: Envoy keeps `backend`.
    let sent: Vec<&str> = out.responses[0].resources.iter().map(|r| &*r.name).collect();
    assert_eq!(sent, ["db"]);
}

#[test]
fn sotw_acks_naming_the_subscription_in_any_order_are_not_answered() {
    let mut s = SotwStream::new();
    s.on_snapshot(Some(eds_snapshot(&[("a", 1), ("b", 1), ("c", 1)])));
    let first = s
        .on_request(sotw(XdsType::Endpoints, &["c", "a", "b"], "", ""))
        .unwrap()
        .responses
        .remove(0);
    assert_eq!(first.resources.len(), 3);
    // ACKs naming the subscription in another order; then fewer names
    // (Envoy holds those already); then a name the snapshot lacks (nothing
    // to send until it has it).
    let acks: [&[&str]; 4] = [&["a", "b", "c"], &["b", "c", "a"], &["c", "a"], &["a", "c", "d"]];
    for names in acks {
        let out = s
            .on_request(sotw(XdsType::Endpoints, names, &first.version_info, &first.nonce))
            .unwrap();
        assert!(out.responses.is_empty(), "{names:?}: {:?}", out.responses);
    }
    let out = s
        .on_snapshot(Some(eds_snapshot(&[("a", 1), ("b", 1), ("c", 1), ("d", 1)])))
        .responses;
    let sent: Vec<&str> = out[0].resources.iter().map(|r| &*r.name).collect();
    assert_eq!(sent, ["d"]);
}

/// A snapshot of EDS clusters with one endpoint each at `ports[i]`.
fn eds_snapshot(ports: &[(&str, u32)]) -> Arc<Snapshot> {
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, LocalityLbEndpoints};
    use kuma_xds::resources::{Origin, Resource, ResourceSet};
    let mut set = ResourceSet::new();
    for (name, port) in ports {
        set.add(
            Origin::Outbound,
            Resource::Cluster(Cluster {
                name: name.to_string(),
                ..Default::default()
            }),
        );
        set.add(
            Origin::Outbound,
            Resource::Endpoints(ClusterLoadAssignment {
                cluster_name: name.to_string(),
                endpoints: vec![LocalityLbEndpoints {
                    lb_endpoints: vec![kuma_xds::envoy::lb_endpoint("10.0.0.1", *port)],
                    ..Default::default()
                }],
                ..Default::default()
            }),
        );
    }
    Arc::new(Snapshot::from_resources(&set))
}

#[test]
fn sotw_endpoints_repeat_only_what_changed_except_after_a_rejection() {
    let mut s = SotwStream::new();
    s.on_snapshot(Some(eds_snapshot(&[("a", 1), ("b", 1), ("c", 1)])));
    let names = ["a", "b", "c"];
    let first = s
        .on_request(sotw(XdsType::Endpoints, &names, "", ""))
        .unwrap()
        .responses
        .remove(0);
    assert_eq!(first.resources.len(), 3, "a new subscription gets everything");
    s.on_request(sotw(
        XdsType::Endpoints,
        &names,
        &first.version_info,
        &first.nonce,
    ))
    .unwrap();

    // b's endpoints change: b alone is sent, under the type's new version.
    let next = eds_snapshot(&[("a", 1), ("b", 2), ("c", 1)]);
    let out = s.on_snapshot(Some(next.clone())).responses;
    assert_eq!(out.len(), 1);
    let sent: Vec<&str> = out[0].resources.iter().map(|r| &*r.name).collect();
    assert_eq!(sent, ["b"]);
    assert_eq!(out[0].version_info, next.version(XdsType::Endpoints));

    // Envoy rejects it: what it holds is unknown, so the next change
    // sends every endpoint it asked for.
    s.on_request(nack(sotw(
        XdsType::Endpoints,
        &names,
        &first.version_info,
        &out[0].nonce,
    )))
    .unwrap();
    let out = s
        .on_snapshot(Some(eds_snapshot(&[("a", 1), ("b", 3), ("c", 1)])))
        .responses;
    assert_eq!(out[0].resources.len(), 3);
    s.on_request(sotw(
        XdsType::Endpoints,
        &names,
        &out[0].version_info,
        &out[0].nonce,
    ))
    .unwrap();

    // A change to nothing Envoy asked for sends nothing.
    let out = s
        .on_snapshot(Some(eds_snapshot(&[("a", 1), ("b", 3), ("c", 1), ("d", 1)])))
        .responses;
    assert!(out.is_empty(), "{out:?}");
}

#[test]
fn sotw_refuses_requests_without_a_type() {
    let mut s = SotwStream::new();
    let err = s.on_request(DiscoveryRequest::default()).unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}

fn delta(t: XdsType, subscribe: &[&str], nonce: &str) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: t.type_url().into(),
        resource_names_subscribe: subscribe.iter().map(|n| n.to_string()).collect(),
        response_nonce: nonce.into(),
        ..Default::default()
    }
}

/// A delta stream on `base` that subscribed to every cluster, was sent
/// them all and ACKed.
fn acked_wildcard_clusters(base: &Arc<Snapshot>) -> DeltaStream {
    let mut s = DeltaStream::new();
    s.on_snapshot(Some(base.clone()));
    let first = s
        .on_request(delta(XdsType::Cluster, &[], ""))
        .unwrap()
        .responses
        .remove(0);
    assert_eq!(first.resources.len(), base.get(XdsType::Cluster).resources.len());
    let out = s.on_request(delta(XdsType::Cluster, &[], &first.nonce)).unwrap();
    assert_eq!(out.feedback[0].kind, FeedbackKind::Ack);
    assert!(out.responses.is_empty());
    s
}

#[test]
fn delta_settled_streams_answer_a_changed_subscription_even_on_the_same_snapshot() {
    let base = snapshot("basic/base-mesh");
    let clusters = base.get(XdsType::Cluster).resources.len();
    let mut s = acked_wildcard_clusters(&base);
    // Settled: the same snapshot again sends nothing.
    assert!(s.on_snapshot(Some(base.clone())).responses.is_empty());
    // Envoy leaves the wildcard for one name: every other cluster it
    // holds is removed, although the snapshot did not change.
    let one = base
        .get(XdsType::Cluster)
        .resources
        .keys()
        .next()
        .expect("a cluster")
        .to_string();
    let leave = DeltaDiscoveryRequest {
        type_url: XdsType::Cluster.type_url().into(),
        resource_names_subscribe: vec![one.clone()],
        resource_names_unsubscribe: vec!["*".into()],
        ..Default::default()
    };
    let out = s.on_request(leave).unwrap().responses;
    assert_eq!(out.len(), 1, "{out:?}");
    assert!(out[0].resources.is_empty());
    assert_eq!(out[0].removed_resources.len(), clusters - 1);
    assert!(!out[0].removed_resources.contains(&one));
}

#[test]
fn delta_sends_only_what_changed_and_removals() {
    let base = snapshot("basic/base-mesh");
    let mut s = acked_wildcard_clusters(&base);

    // A snapshot that changes a few clusters sends just those.
    let changed = snapshot("mesh_circuit_breaker/outbound-inbound");
    let next = s.on_snapshot(Some(changed.clone())).responses.remove(0);
    let names: Vec<&str> = next.resources.iter().map(|r| r.name()).collect();
    let expected: Vec<&str> = changed
        .get(XdsType::Cluster)
        .resources
        .iter()
        .filter(|(n, r)| base.get(XdsType::Cluster).resources.get(n).map(|b| b.version) != Some(r.version))
        .map(|(n, _)| &**n)
        .collect();
    assert_eq!(names, expected);
    assert!(!names.is_empty() && names.len() < changed.get(XdsType::Cluster).resources.len());
    for r in &next.to_message().resources {
        assert_eq!(
            r.version,
            resource_version(changed.get(XdsType::Cluster).resources[r.name.as_str()].version)
        );
    }
}

#[test]
fn delta_reconnect_skips_resources_envoy_holds() {
    let snap = snapshot("basic/base-mesh");
    let clusters = &snap.get(XdsType::Cluster).resources;
    let mut s = DeltaStream::new();
    s.on_snapshot(Some(snap.clone()));
    let mut request = delta(XdsType::Cluster, &[], "");
    // Envoy holds every cluster but one at the current version, and one
    // cluster that no longer exists.
    let kept: Vec<&str> = clusters.keys().skip(1).map(|n| &**n).collect();
    for name in &kept {
        request
            .initial_resource_versions
            .insert(name.to_string(), resource_version(clusters[*name].version));
    }
    request
        .initial_resource_versions
        .insert("gone".into(), "0000000000000001".into());
    let r = s.on_request(request).unwrap().responses.remove(0);
    let sent: Vec<&str> = r.resources.iter().map(|r| r.name()).collect();
    assert_eq!(sent, vec![&**clusters.keys().next().unwrap()]);
    assert_eq!(r.removed_resources, vec!["gone".to_string()]);
}

#[test]
fn delta_nack_is_reported_without_a_resend() {
    let mut s = DeltaStream::new();
    let base = snapshot("basic/base-mesh");
    s.on_snapshot(Some(base.clone()));
    s.on_request(delta(XdsType::Endpoints, &endpoint_names(&base), ""))
        .unwrap();
    let r = s
        .on_request(delta(XdsType::Listener, &[], ""))
        .unwrap()
        .responses
        .remove(0);
    let mut reply = delta(XdsType::Listener, &[], &r.nonce);
    reply.error_detail = Some(RpcStatus {
        code: 3,
        message: "bad listener".into(),
        ..Default::default()
    });
    let out = s.on_request(reply).unwrap();
    assert_eq!(out.feedback[0].kind, FeedbackKind::Nack);
    assert!(out.responses.is_empty());
    assert!(
        s.on_snapshot(Some(snapshot("basic/base-mesh")))
            .responses
            .is_empty()
    );
}

#[test]
fn delta_unsubscribe_then_subscribe_sends_again() {
    let mut s = DeltaStream::new();
    s.on_snapshot(Some(snapshot("basic/base-mesh")));
    let r = s
        .on_request(delta(XdsType::Endpoints, &["backend"], ""))
        .unwrap()
        .responses
        .remove(0);
    assert_eq!(r.resources.len(), 1);
    let mut unsub = delta(XdsType::Endpoints, &[], &r.nonce);
    unsub.resource_names_unsubscribe = vec!["backend".into()];
    let out = s.on_request(unsub).unwrap();
    assert!(
        out.responses.is_empty(),
        "an unsubscribed name is simply forgotten"
    );
    let again = s
        .on_request(delta(XdsType::Endpoints, &["backend"], ""))
        .unwrap()
        .responses
        .remove(0);
    assert_eq!(
        again.resources.len(),
        1,
        "a renewed subscription gets the resource again"
    );
}

#[test]
fn delta_listeners_wait_for_the_endpoints_of_their_clusters() {
    let mut s = DeltaStream::new();
    let base = snapshot("basic/base-mesh");
    s.on_snapshot(Some(base.clone()));
    let clusters = s.on_request(delta(XdsType::Cluster, &[], "")).unwrap().responses;
    assert_eq!(clusters.len(), 1);
    let held = s.on_request(delta(XdsType::Listener, &[], "")).unwrap();
    assert!(
        held.responses.is_empty(),
        "no endpoints yet: a listener could route to a warming cluster"
    );
    let out = s
        .on_request(delta(XdsType::Endpoints, &endpoint_names(&base), ""))
        .unwrap()
        .responses;
    let types: Vec<&str> = out.iter().map(|r| r.type_url).collect();
    assert_eq!(
        types,
        [XdsType::Endpoints.type_url(), XdsType::Listener.type_url()]
    );
}

#[test]
fn delta_unsubscribe_of_one_of_everything_held_then_subscribe_sends_it_again() {
    // Once Envoy holds every endpoint of the snapshot, the stream keeps
    // the snapshot as what Envoy holds; forgetting one must still work.
    let snap = snapshot("basic/base-mesh");
    let names = endpoint_names(&snap);
    assert!(names.len() > 1, "{names:?}");
    let mut s = DeltaStream::new();
    s.on_snapshot(Some(snap.clone()));
    let r = s
        .on_request(delta(XdsType::Endpoints, &names, ""))
        .unwrap()
        .responses
        .remove(0);
    assert_eq!(r.resources.len(), names.len());
    let mut unsub = delta(XdsType::Endpoints, &[], &r.nonce);
    unsub.resource_names_unsubscribe = vec![names[0].into()];
    assert!(s.on_request(unsub).unwrap().responses.is_empty());
    let again = s
        .on_request(delta(XdsType::Endpoints, &[names[0]], ""))
        .unwrap()
        .responses
        .remove(0);
    let sent: Vec<&str> = again.resources.iter().map(|r| &*r.encoded.name).collect();
    assert_eq!(sent, vec![names[0]], "only the forgotten one is sent again");
    // The same snapshot again sends nothing: Envoy holds all of it.
    assert!(s.on_snapshot(Some(snap)).responses.is_empty());
}
