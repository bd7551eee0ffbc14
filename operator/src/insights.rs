//! What this control plane knows about the proxies connected to it — Kuma's
//! DataplaneInsight subscriptions: when each stream connected and
//! disconnected, per xDS type how many responses it sent, how many Envoy
//! accepted and rejected, and the last accepted version.
//!
//! Streams are tracked here in memory and written to the store by
//! [`run_writer`], so every control plane sharing the store (and the
//! leader's garbage collection) sees every proxy: at once when a stream
//! opens or closes, and at most every flush interval for counters.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use futures::StreamExt;
use kuma_crds::insight::{
    DataplaneInsightSpec, DiscoveryStats, DiscoverySubscription, MtlsInsight, Rejection,
};
use kuma_crds::resource::{Meta, Resource, ResourceType, Spec};
use kuma_xds::resources::XdsType;
use kuma_xds::server::{FeedbackKind, StreamEvent};
use serde_json::Value;
use tokio::sync::Notify;

use crate::store::{ResourceKey, Store, StoreError, now};

/// The streams of one proxy that the store does not have yet in their
/// current state: the open ones and the closed ones not yet written.
#[derive(Debug, Default)]
struct Proxy {
    subscriptions: Vec<DiscoverySubscription>,
    metadata: Option<Value>,
    /// Changed since the last write.
    dirty: bool,
}

/// Every connected proxy's streams, by node id (`<mesh>.<name>`).
#[derive(Debug, Default)]
pub struct Insights {
    by_node: Mutex<HashMap<String, Proxy>>,
    certificates: Option<kuma_xds::sync::CertRegistry>,
    /// Wakes the writer for connects and disconnects.
    urgent: Notify,
    subscription_limit: usize,
}

/// What the writer stores for one proxy.
#[derive(Debug)]
struct Pending {
    node: String,
    subscriptions: Vec<DiscoverySubscription>,
    metadata: Option<Value>,
    mtls: Option<MtlsInsight>,
}

fn rfc3339(t: std::time::SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

impl Insights {
    /// Insights that report the proxies' certificates and keep
    /// `subscription_limit` subscriptions per proxy (0 keeps all).
    pub fn new(certificates: Option<kuma_xds::sync::CertRegistry>, subscription_limit: usize) -> Self {
        Insights {
            certificates,
            subscription_limit,
            ..Default::default()
        }
    }

    /// Kuma's `mTLS` insight of a proxy: certificate expiry, regenerations,
    /// the backend that issued it and the backends it trusts.
    fn mtls(&self, node: &str) -> Option<MtlsInsight> {
        let certs = self
            .certificates
            .as_ref()?
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let c = certs.get(node)?;
        Some(MtlsInsight {
            certificate_expiration_time: Some(rfc3339(c.expiration)),
            last_certificate_regeneration: Some(rfc3339(c.issued_at)),
            certificate_regenerations: c.regenerations,
            issued_backend: c.backend.clone(),
            supported_backends: c.trusted_backends.clone(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Proxy>> {
        self.by_node.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A stream opened; returns its subscription id.
    pub fn connected(&self, node: &str, control_plane: &str, version: Value, metadata: Value) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        let now = now();
        let mut map = self.lock();
        let proxy = map.entry(node.to_string()).or_default();
        for s in proxy
            .subscriptions
            .iter_mut()
            .filter(|s| s.disconnect_time.is_none())
        {
            s.disconnect_time = Some(now.clone());
        }
        // Room for this one alone: a proxy usually has one stream, and a
        // Vec's first growth makes room for four (about 1.1 KiB unused per
        // proxy).
        proxy.subscriptions.reserve_exact(1);
        proxy.subscriptions.push(DiscoverySubscription {
            id: id.clone(),
            control_plane_instance_id: control_plane.to_string(),
            connect_time: Some(now.clone()),
            status: kuma_crds::insight::SubscriptionStatus {
                last_update_time: Some(now),
                ..Default::default()
            },
            version: (!version.is_null()).then_some(version),
            ..Default::default()
        });
        proxy.metadata = (!metadata.is_null()).then_some(metadata);
        proxy.dirty = true;
        drop(map);
        self.urgent.notify_one();
        id
    }

    /// A stream closed.
    pub fn disconnected(&self, node: &str, id: &str) {
        let mut map = self.lock();
        let Some(proxy) = map.get_mut(node) else { return };
        if let Some(s) = proxy.subscriptions.iter_mut().find(|s| s.id == id) {
            s.disconnect_time.get_or_insert_with(now);
            proxy.dirty = true;
        }
        drop(map);
        self.urgent.notify_one();
    }

    /// Something happened on a stream of `node`.
    pub fn observe(&self, node: &str, event: StreamEvent<'_>) {
        let mut map = self.lock();
        let Some(proxy) = map.get_mut(node) else { return };
        let Some(sub) = proxy
            .subscriptions
            .iter_mut()
            .rev()
            .find(|s| s.disconnect_time.is_none())
        else {
            return;
        };
        let (type_url, count): (&str, fn(&mut DiscoveryStats)) = match event {
            StreamEvent::Sent { type_url, .. } => (type_url, |c| c.responses_sent.0 += 1),
            StreamEvent::Feedback(f) => match f.kind {
                FeedbackKind::Ack => {
                    if let Some(t) = XdsType::from_type_url(&f.type_url) {
                        sub.acked_versions
                            .insert(t.short().to_string(), f.version.clone());
                        sub.rejections.remove(t.short());
                    }
                    (f.type_url.as_str(), |c| c.responses_acknowledged.0 += 1)
                }
                FeedbackKind::Nack => {
                    if let Some(t) = XdsType::from_type_url(&f.type_url) {
                        sub.rejections.insert(
                            t.short().to_string(),
                            Rejection::new(now(), f.error.as_deref().unwrap_or("")),
                        );
                    }
                    (f.type_url.as_str(), |c| c.responses_rejected.0 += 1)
                }
                FeedbackKind::Stale => return,
            },
        };
        let status = &mut sub.status;
        count(&mut status.total);
        match XdsType::from_type_url(type_url).map(|t| t.short()) {
            Some("cds") => count(&mut status.cds),
            Some("eds") => count(&mut status.eds),
            Some("lds") => count(&mut status.lds),
            Some("rds") => count(&mut status.rds),
            _ => {}
        }
        status.last_update_time = Some(now());
        proxy.dirty = true;
    }

    /// Whether a proxy has an open stream here.
    pub fn is_online(&self, node: &str) -> bool {
        self.lock()
            .get(node)
            .is_some_and(|p| p.subscriptions.iter().any(|s| s.disconnect_time.is_none()))
    }

    /// The subscriptions of a proxy this control plane holds in memory.
    pub fn subscriptions(&self, node: &str) -> Vec<DiscoverySubscription> {
        self.lock()
            .get(node)
            .map(|p| p.subscriptions.clone())
            .unwrap_or_default()
    }

    /// The insight of a proxy as stored, brought up to date with what this
    /// control plane knows; `None` if no control plane ever saw it.
    pub fn merged(&self, node: &str, stored: Option<DataplaneInsightSpec>) -> Option<DataplaneInsightSpec> {
        let (subscriptions, metadata) = match self.lock().get(node) {
            Some(p) => (p.subscriptions.clone(), p.metadata.clone()),
            None => (Vec::new(), None),
        };
        if stored.is_none() && subscriptions.is_empty() {
            return None;
        }
        let mut insight = stored.unwrap_or_default();
        apply(
            &mut insight,
            subscriptions,
            metadata,
            self.mtls(node),
            self.subscription_limit,
        );
        Some(insight)
    }

    /// Closes every open stream (the process is stopping; its streams
    /// end with it).
    pub fn close_all(&self) {
        let now = now();
        for proxy in self.lock().values_mut() {
            for s in proxy
                .subscriptions
                .iter_mut()
                .filter(|s| s.disconnect_time.is_none())
            {
                s.disconnect_time = Some(now.clone());
                proxy.dirty = true;
            }
        }
    }

    /// Raises the generation of every open stream: the heartbeat that
    /// tells the leader this control plane still serves them.
    fn bump_generations(&self) {
        for proxy in self.lock().values_mut() {
            for s in proxy
                .subscriptions
                .iter_mut()
                .filter(|s| s.disconnect_time.is_none())
            {
                s.generation = s.generation.wrapping_add(1);
                proxy.dirty = true;
            }
        }
    }

    /// The proxies changed since their last write, marked clean.
    fn take_dirty(&self) -> Vec<Pending> {
        let dirty: Vec<(String, Vec<DiscoverySubscription>, Option<Value>)> = self
            .lock()
            .iter_mut()
            .filter(|(_, p)| p.dirty)
            .map(|(node, p)| {
                p.dirty = false;
                (node.clone(), p.subscriptions.clone(), p.metadata.clone())
            })
            .collect();
        dirty
            .into_iter()
            .map(|(node, subscriptions, metadata)| Pending {
                mtls: self.mtls(&node),
                node,
                subscriptions,
                metadata,
            })
            .collect()
    }

    /// `pending` is stored: closed streams it held need not be kept.
    fn written(&self, pending: &Pending) {
        let mut map = self.lock();
        let Some(proxy) = map.get_mut(&pending.node) else {
            return;
        };
        let stored_closed = |s: &DiscoverySubscription| {
            s.disconnect_time.is_some() && pending.subscriptions.iter().any(|p| p.id == s.id)
        };
        proxy.subscriptions.retain(|s| !stored_closed(s));
        if proxy.subscriptions.is_empty() && !proxy.dirty {
            map.remove(&pending.node);
        }
    }

    /// Writing `pending` failed; try again on the next flush.
    fn retry(&self, pending: &Pending) {
        if let Some(proxy) = self.lock().get_mut(&pending.node) {
            proxy.dirty = true;
        }
    }
}

/// Folds this control plane's view of a proxy into its stored insight.
fn apply(
    insight: &mut DataplaneInsightSpec,
    subscriptions: Vec<DiscoverySubscription>,
    metadata: Option<Value>,
    mtls: Option<MtlsInsight>,
    limit: usize,
) {
    let now = now();
    for sub in subscriptions {
        insight.update_subscription(sub, &now);
    }
    if metadata.is_some() {
        insight.metadata = metadata;
    }
    if mtls.is_some() {
        insight.mtls = mtls;
    }
    insight.limit_subscriptions(limit);
}

/// The spec of a stored DataplaneInsight.
pub fn insight_spec(r: &Resource) -> Option<&DataplaneInsightSpec> {
    match &r.spec {
        Spec::DataplaneInsight(s) => Some(s),
        _ => None,
    }
}

/// What became of one write.
enum Written {
    /// Stored.
    Stored,
    /// The Dataplane does not exist (not yet, or no more).
    NoDataplane,
}

/// Writes one proxy's insight: read, fold in, write back if unchanged
/// since the read (retried a few times when another control plane wrote
/// in between).
async fn write(store: &Store, pending: &Pending, limit: usize) -> Result<Written, StoreError> {
    let Some((mesh, name)) = kuma_xds::sync::parse_node_id(&pending.node) else {
        return Ok(Written::NoDataplane);
    };
    let key = ResourceKey::new(ResourceType::DataplaneInsight, mesh, name);
    let mut last = None;
    for _ in 0..3 {
        let existing = match store.get(&key).await {
            Ok(r) => Some(r),
            Err(StoreError::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        let mut insight = existing
            .as_ref()
            .and_then(insight_spec)
            .cloned()
            .unwrap_or_default();
        apply(
            &mut insight,
            pending.subscriptions.clone(),
            pending.metadata.clone(),
            pending.mtls.clone(),
            limit,
        );
        let result = match existing {
            Some(mut r) => {
                if insight_spec(&r) == Some(&insight) {
                    return Ok(Written::Stored);
                }
                r.spec = Spec::DataplaneInsight(insight);
                store.update(r).await
            }
            None => {
                let meta = Meta {
                    name: name.to_string(),
                    mesh: Some(mesh.to_string()),
                    ..Default::default()
                };
                store
                    .create(Resource::new(meta, Spec::DataplaneInsight(insight)))
                    .await
            }
        };
        match result {
            Ok(_) => return Ok(Written::Stored),
            Err(StoreError::NotFound(_)) | Err(StoreError::MeshNotFound(_)) => {
                return Ok(Written::NoDataplane);
            }
            Err(e @ (StoreError::Conflict { .. } | StoreError::AlreadyExists(_))) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| StoreError::Unavailable("insight write retries exhausted".into())))
}

/// How many insight writes are in flight at once.
const WRITES_IN_FLIGHT: usize = 16;

/// Timings of the insight writer.
#[derive(Clone, Copy, Debug)]
pub struct WriterTimings {
    /// How often changed counters are written.
    pub flush_interval: Duration,
    /// Generations are raised every half of it.
    pub idle_timeout: Duration,
}

/// Writes changed insights until the process ends: connects and
/// disconnects at once, counters every flush interval, and every open
/// stream's generation every half idle timeout.
pub async fn run_writer(insights: std::sync::Arc<Insights>, store: Store, timings: WriterTimings) {
    let floor = Duration::from_millis(10);
    let mut ticks = tokio::time::interval(timings.flush_interval.max(floor));
    let heartbeat_period = (timings.idle_timeout / 2).max(floor);
    let mut heartbeat =
        tokio::time::interval_at(tokio::time::Instant::now() + heartbeat_period, heartbeat_period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = insights.urgent.notified() => {}
            _ = heartbeat.tick() => insights.bump_generations(),
        }
        flush(&insights, &store).await;
    }
}

/// Writes every changed insight now (also at shutdown, so the streams this
/// control plane closed show as closed).
pub async fn flush(insights: &Insights, store: &Store) {
    // Several at once: each write is a read and a write round trip.
    futures::stream::iter(insights.take_dirty())
        .for_each_concurrent(WRITES_IN_FLIGHT, |pending| async move {
            match write(store, &pending, insights.subscription_limit).await {
                Ok(Written::Stored) | Ok(Written::NoDataplane) => insights.written(&pending),
                Err(e) => {
                    tracing::debug!(proxy = %pending.node, error = %e, "cannot store the proxy's insight; will retry");
                    insights.retry(&pending);
                }
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(sent: u64) -> DiscoveryStats {
        DiscoveryStats {
            responses_sent: kuma_crds::insight::Counter(sent),
            ..Default::default()
        }
    }

    #[test]
    fn streams_are_folded_into_the_stored_insight_by_id() {
        let insights = Insights::new(None, 2);
        let id = insights.connected("default.web", "cp-2", Value::Null, Value::Null);
        insights.observe(
            "default.web",
            StreamEvent::Sent {
                type_url: XdsType::Cluster.type_url(),
                version: "v1",
            },
        );
        // cp-1 served the proxy before and died without closing its stream.
        let stored = DataplaneInsightSpec {
            subscriptions: vec![DiscoverySubscription {
                id: "old".into(),
                control_plane_instance_id: "cp-1".into(),
                connect_time: Some("2026-01-01T00:00:00Z".into()),
                ..Default::default()
            }],
            ..Default::default()
        };
        let merged = insights.merged("default.web", Some(stored)).unwrap();
        assert_eq!(merged.subscriptions.len(), 2);
        assert!(
            !merged.subscriptions[0].is_online(),
            "the dead control plane's stream is closed"
        );
        assert_eq!(merged.subscriptions[1].id, id);
        assert_eq!(merged.subscriptions[1].status.total, stats(1));
        assert_eq!(merged.subscriptions[1].status.cds, stats(1));
        assert!(insights.merged("default.other", None).is_none());
    }

    #[test]
    fn a_nack_stands_in_the_insight_until_that_type_is_acked() {
        let insights = Insights::new(None, 0);
        insights.connected("default.web", "cp", Value::Null, Value::Null);
        let feedback = |kind, version: &str, error: Option<&str>| kuma_xds::server::Feedback {
            type_url: XdsType::Cluster.type_url().to_string(),
            kind,
            version: version.into(),
            error: error.map(str::to_string),
        };
        let long = "x".repeat(5000);
        let nack = feedback(FeedbackKind::Nack, "v2", Some(&long));
        insights.observe("default.web", StreamEvent::Feedback(&nack));
        let rejections = |i: &Insights| i.subscriptions("default.web")[0].rejections.clone();
        let standing = rejections(&insights);
        assert_eq!(standing.keys().collect::<Vec<_>>(), ["cds"]);
        assert_eq!(standing["cds"].error.len(), Rejection::MAX_ERROR, "shortened");

        let other = kuma_xds::server::Feedback {
            type_url: XdsType::Listener.type_url().to_string(),
            ..feedback(FeedbackKind::Ack, "v3", None)
        };
        insights.observe("default.web", StreamEvent::Feedback(&other));
        assert!(
            rejections(&insights).contains_key("cds"),
            "an ACK of another type leaves it"
        );
        let ack = feedback(FeedbackKind::Ack, "v3", None);
        insights.observe("default.web", StreamEvent::Feedback(&ack));
        assert!(rejections(&insights).is_empty(), "an ACK of clusters clears it");
    }

    #[test]
    fn closed_streams_are_forgotten_once_written() {
        let insights = Insights::new(None, 0);
        let id = insights.connected("default.web", "cp", Value::Null, Value::Null);
        insights.disconnected("default.web", &id);
        let pending = insights.take_dirty();
        assert_eq!(pending.len(), 1);
        assert!(insights.take_dirty().is_empty(), "taking marks clean");
        insights.retry(&pending[0]);
        let pending = insights.take_dirty();
        assert_eq!(pending.len(), 1, "a failed write is retried");
        insights.written(&pending[0]);
        assert!(insights.subscriptions("default.web").is_empty());
    }

    #[test]
    fn the_heartbeat_raises_open_streams_only() {
        let insights = Insights::new(None, 0);
        let old = insights.connected("default.web", "cp", Value::Null, Value::Null);
        let new = insights.connected("default.web", "cp", Value::Null, Value::Null);
        insights.take_dirty();
        insights.bump_generations();
        let subs = insights.subscriptions("default.web");
        let generation = |id: &str| subs.iter().find(|s| s.id == id).map(|s| s.generation);
        assert_eq!(generation(&old), Some(0));
        assert_eq!(generation(&new), Some(1));
        assert_eq!(insights.take_dirty().len(), 1);
    }
}
