//! What this control plane knows about the proxies connected to it: when
//! each connected and disconnected, and per xDS type how many responses it
//! sent, how many Envoy accepted and rejected, and the last accepted
//! version — Kuma's DataplaneInsight subscriptions.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use kuma_xds::resources::XdsType;
use kuma_xds::server::{FeedbackKind, StreamEvent};
use serde_json::{Value, json};

/// Counters of one xDS type (or all).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Responses sent.
    pub sent: u64,
    /// Responses Envoy applied.
    pub acked: u64,
    /// Responses Envoy rejected.
    pub rejected: u64,
}

impl Counters {
    fn to_json(&self) -> Value {
        // Kuma's uint64 fields are JSON strings; zero values are omitted.
        let mut m = serde_json::Map::new();
        for (k, v) in [
            ("responsesSent", self.sent),
            ("responsesAcknowledged", self.acked),
            ("responsesRejected", self.rejected),
        ] {
            if v > 0 {
                m.insert(k.into(), v.to_string().into());
            }
        }
        Value::Object(m)
    }
}

/// One xDS stream of a proxy.
#[derive(Clone, Debug, Default)]
pub struct Subscription {
    /// A stream id.
    pub id: String,
    /// This control plane's instance id.
    pub control_plane: String,
    /// RFC 3339.
    pub connect_time: String,
    /// RFC 3339, once disconnected.
    pub disconnect_time: Option<String>,
    /// RFC 3339 of the last response or answer.
    pub last_update_time: Option<String>,
    /// All types together.
    pub total: Counters,
    /// Per type.
    pub by_type: BTreeMap<&'static str, Counters>,
    /// The last version Envoy applied, per type.
    pub acked_versions: BTreeMap<&'static str, String>,
    /// kuma-dp and Envoy versions from the node metadata.
    pub version: Value,
}

/// Every proxy's subscriptions, by node id, and its certificate.
#[derive(Debug, Default)]
pub struct Insights {
    by_node: Mutex<HashMap<String, Vec<Subscription>>>,
    certificates: Option<kuma_xds::sync::CertRegistry>,
}

/// How many subscriptions are remembered per proxy.
const KEEP: usize = 5;

fn rfc3339(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64;
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

impl Insights {
    /// Insights that also report the proxies' certificates.
    pub fn with_certificates(certificates: kuma_xds::sync::CertRegistry) -> Self {
        Insights {
            by_node: Mutex::default(),
            certificates: Some(certificates),
        }
    }

    /// Kuma's `mTLS` insight of a proxy: certificate expiry, regenerations,
    /// the backend that issued it and the backends it trusts.
    fn mtls_json(&self, node: &str) -> Option<Value> {
        let certs = self
            .certificates
            .as_ref()?
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let c = certs.get(node)?;
        Some(json!({
            "certificateExpirationTime": rfc3339(c.expiration),
            "lastCertificateRegeneration": rfc3339(c.issued_at),
            "certificateRegenerations": c.regenerations,
            "issuedBackend": c.backend,
            "supportedBackends": c.trusted_backends,
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Subscription>>> {
        self.by_node.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A stream opened.
    pub fn connected(&self, node: &str, control_plane: &str, version: Value) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        let now = crate::store::now();
        let mut map = self.lock();
        let subs = map.entry(node.to_string()).or_default();
        for s in subs.iter_mut().filter(|s| s.disconnect_time.is_none()) {
            s.disconnect_time = Some(now.clone());
        }
        subs.push(Subscription {
            id: id.clone(),
            control_plane: control_plane.to_string(),
            connect_time: now,
            version,
            ..Default::default()
        });
        if subs.len() > KEEP {
            let extra = subs.len() - KEEP;
            subs.drain(..extra);
        }
        id
    }

    /// A stream closed.
    pub fn disconnected(&self, node: &str, id: &str) {
        if let Some(s) = self
            .lock()
            .get_mut(node)
            .and_then(|subs| subs.iter_mut().find(|s| s.id == id))
        {
            s.disconnect_time = Some(crate::store::now());
        }
    }

    /// Something happened on a stream of `node`.
    pub fn observe(&self, node: &str, event: StreamEvent<'_>) {
        let mut map = self.lock();
        let Some(sub) = map
            .get_mut(node)
            .and_then(|subs| subs.iter_mut().rev().find(|s| s.disconnect_time.is_none()))
        else {
            return;
        };
        let (type_url, f): (&str, fn(&mut Counters)) = match event {
            StreamEvent::Sent { type_url, .. } => (type_url, |c| c.sent += 1),
            StreamEvent::Feedback(f) => match f.kind {
                FeedbackKind::Ack => {
                    if let Some(t) = XdsType::from_type_url(&f.type_url) {
                        sub.acked_versions.insert(t.short(), f.version.clone());
                    }
                    (f.type_url.as_str(), |c| c.acked += 1)
                }
                FeedbackKind::Nack => (f.type_url.as_str(), |c| c.rejected += 1),
                FeedbackKind::Stale => return,
            },
        };
        f(&mut sub.total);
        if let Some(t) = XdsType::from_type_url(type_url) {
            f(sub.by_type.entry(t.short()).or_default());
        }
        sub.last_update_time = Some(crate::store::now());
    }

    /// Whether a proxy has an open stream here.
    pub fn is_online(&self, node: &str) -> bool {
        self.lock()
            .get(node)
            .is_some_and(|subs| subs.iter().any(|s| s.disconnect_time.is_none()))
    }

    /// The subscriptions of a proxy.
    pub fn subscriptions(&self, node: &str) -> Vec<Subscription> {
        self.lock().get(node).cloned().unwrap_or_default()
    }

    /// Kuma's DataplaneInsight JSON of a proxy, `None` if never seen.
    pub fn insight_json(&self, node: &str) -> Option<Value> {
        let subs = self.subscriptions(node);
        if subs.is_empty() {
            return None;
        }
        let subscriptions: Vec<Value> = subs
            .iter()
            .map(|s| {
                let mut status = serde_json::Map::new();
                if let Some(t) = &s.last_update_time {
                    status.insert("lastUpdateTime".into(), t.clone().into());
                }
                status.insert("total".into(), s.total.to_json());
                for t in ["cds", "eds", "lds", "rds"] {
                    status.insert(
                        t.into(),
                        s.by_type
                            .get(t)
                            .map(Counters::to_json)
                            .unwrap_or_else(|| json!({})),
                    );
                }
                let mut sub = serde_json::Map::new();
                sub.insert("id".into(), s.id.clone().into());
                sub.insert("controlPlaneInstanceId".into(), s.control_plane.clone().into());
                sub.insert("connectTime".into(), s.connect_time.clone().into());
                if let Some(t) = &s.disconnect_time {
                    sub.insert("disconnectTime".into(), t.clone().into());
                }
                sub.insert("status".into(), Value::Object(status));
                if !s.version.is_null() {
                    sub.insert("version".into(), s.version.clone());
                }
                if !s.acked_versions.is_empty() {
                    sub.insert("ackedVersions".into(), json!(s.acked_versions));
                }
                Value::Object(sub)
            })
            .collect();
        let mut insight = json!({ "subscriptions": subscriptions });
        if let Some(mtls) = self.mtls_json(node) {
            insight["mTLS"] = mtls;
        }
        Some(insight)
    }
}
