//! `DataplaneInsight`: what the control planes know about a proxy's xDS
//! streams, written by them (never by users) and owned by the Dataplane of
//! the same name, so it goes when the Dataplane goes.
//!
//! Each stream is a subscription. A proxy is online while one of its
//! subscriptions has no `disconnectTime`. A control plane that dies cannot
//! close its subscriptions, so live ones carry a `generation` their control
//! plane raises regularly; the leader closes subscriptions whose generation
//! stopped moving.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The Kubernetes form of a DataplaneInsight: as in Kuma, the insight is
/// the object's `status` beside `mesh`, and there is no spec.
#[serde_with::skip_serializing_none]
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kuma.io",
    version = "v1alpha1",
    kind = "DataplaneInsight",
    plural = "dataplaneinsights",
    shortname = "dpi",
    category = "kuma",
    namespaced,
    no_spec,
    status = "DataplaneInsightSpec"
)]
#[serde(deny_unknown_fields)]
pub struct DataplaneInsightFields {
    /// The mesh of the Dataplane.
    pub mesh: Option<String>,
}

/// The spec of a DataplaneInsight (Kuma's JSON names; zero values omitted).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DataplaneInsightSpec {
    /// The proxy's streams, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subscriptions: Vec<DiscoverySubscription>,
    /// The proxy's certificate, when the mesh has mTLS.
    #[serde(rename = "mTLS", default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<MtlsInsight>,
    /// The node metadata the proxy sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::common::any_object_schema")]
    pub metadata: Option<serde_json::Value>,
}

/// One xDS stream of a proxy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DiscoverySubscription {
    /// Unique per stream.
    pub id: String,
    /// The control plane instance serving it.
    #[serde(default)]
    pub control_plane_instance_id: String,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_time: Option<String>,
    /// RFC 3339; absent while connected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disconnect_time: Option<String>,
    /// Response and answer counters.
    #[serde(default)]
    pub status: SubscriptionStatus,
    /// kuma-dp and Envoy versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::common::any_object_schema")]
    pub version: Option<serde_json::Value>,
    /// Raised regularly by the serving control plane while it lives.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub generation: u32,
    /// The last version the proxy applied, per xDS type (`cds`, `lds`, …);
    /// not in Kuma.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub acked_versions: std::collections::BTreeMap<String, String>,
    /// The configuration the proxy refuses, per xDS type (`cds`, `lds`,
    /// …): set by a NACK, cleared by the next ACK of that type; not in
    /// Kuma, which only counts rejections.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub rejections: std::collections::BTreeMap<String, Rejection>,
}

/// A configuration Envoy rejected and still refuses (it keeps serving with
/// the last one it accepted).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rejection {
    /// RFC 3339 of the NACK.
    #[serde(default)]
    pub time: String,
    /// Envoy's reason, shortened to [`Rejection::MAX_ERROR`] bytes.
    #[serde(default)]
    pub error: String,
    /// The policies that may have caused it (MeshProxyPatches that change
    /// this type of resource for the proxy), as `Kind/name`; filled in when
    /// the insight is read through the API.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<String>,
}

impl Rejection {
    /// The longest error kept: Envoy's messages can quote whole resources.
    pub const MAX_ERROR: usize = 1024;

    /// A rejection with `error` cut at a character boundary.
    pub fn new(time: String, error: &str) -> Self {
        let mut end = error.len().min(Self::MAX_ERROR);
        while !error.is_char_boundary(end) {
            end -= 1;
        }
        Rejection {
            time,
            error: error[..end].to_string(),
            policies: Vec::new(),
        }
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Counters of a subscription, in total and per type.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubscriptionStatus {
    /// RFC 3339 of the last response or answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<String>,
    /// All types together.
    #[serde(default)]
    pub total: DiscoveryStats,
    /// Clusters.
    #[serde(default)]
    pub cds: DiscoveryStats,
    /// Endpoints.
    #[serde(default)]
    pub eds: DiscoveryStats,
    /// Listeners.
    #[serde(default)]
    pub lds: DiscoveryStats,
    /// Routes.
    #[serde(default)]
    pub rds: DiscoveryStats,
}

/// Responses sent, applied and rejected. Kuma writes these uint64 counters
/// as JSON strings; numbers are accepted too.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DiscoveryStats {
    /// Responses sent.
    #[serde(default, skip_serializing_if = "Counter::is_zero")]
    pub responses_sent: Counter,
    /// Responses the proxy applied.
    #[serde(default, skip_serializing_if = "Counter::is_zero")]
    pub responses_acknowledged: Counter,
    /// Responses the proxy rejected.
    #[serde(default, skip_serializing_if = "Counter::is_zero")]
    pub responses_rejected: Counter,
}

/// A uint64 counter written as a JSON string.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Counter(pub u64);

impl Counter {
    fn is_zero(&self) -> bool {
        self.0 == 0
    }
}

impl Serialize for Counter {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_string())
    }
}

impl<'de> Deserialize<'de> for Counter {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Text {
            Number(u64),
            String(String),
        }
        match Text::deserialize(d)? {
            Text::Number(n) => Ok(Counter(n)),
            Text::String(s) => s
                .parse()
                .map(Counter)
                .map_err(|_| serde::de::Error::custom(format!("{s:?} is not a counter"))),
        }
    }
}

impl JsonSchema for Counter {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Counter".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string", "pattern": "^[0-9]+$"})
    }
}

/// The certificate of a proxy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MtlsInsight {
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_expiration_time: Option<String>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_certificate_regeneration: Option<String>,
    /// How many certificates the proxy got.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub certificate_regenerations: u32,
    /// The backend that issued the current one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub issued_backend: String,
    /// The backends the proxy trusts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub supported_backends: Vec<String>,
}

impl DiscoverySubscription {
    /// Whether the stream is open.
    pub fn is_online(&self) -> bool {
        self.connect_time.is_some() && self.disconnect_time.is_none()
    }
}

impl DataplaneInsightSpec {
    /// Whether any stream of the proxy is open.
    pub fn is_online(&self) -> bool {
        self.subscriptions.iter().any(DiscoverySubscription::is_online)
    }

    /// The newest subscription.
    pub fn last_subscription(&self) -> Option<&DiscoverySubscription> {
        self.subscriptions.last()
    }

    /// Records `sub`: it replaces the subscription with its id, or else is
    /// appended after closing (at `now`) every subscription still open —
    /// a proxy that opens a new stream has left its old ones, even when
    /// the control plane serving them died before it could say so.
    pub fn update_subscription(&mut self, sub: DiscoverySubscription, now: &str) {
        if let Some(existing) = self.subscriptions.iter_mut().find(|s| s.id == sub.id) {
            *existing = sub;
            return;
        }
        for s in self
            .subscriptions
            .iter_mut()
            .filter(|s| s.disconnect_time.is_none())
        {
            s.disconnect_time = Some(now.to_string());
        }
        self.subscriptions.push(sub);
    }

    /// Keeps the newest `limit` subscriptions (all of them when zero).
    pub fn limit_subscriptions(&mut self, limit: usize) {
        if limit > 0 && self.subscriptions.len() > limit {
            let extra = self.subscriptions.len() - limit;
            self.subscriptions.drain(..extra);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(id: &str, cp: &str, connect: &str, disconnect: Option<&str>) -> DiscoverySubscription {
        DiscoverySubscription {
            id: id.into(),
            control_plane_instance_id: cp.into(),
            connect_time: Some(connect.into()),
            disconnect_time: disconnect.map(str::to_string),
            ..Default::default()
        }
    }

    #[test]
    fn a_new_stream_closes_the_open_ones_a_known_stream_is_replaced() {
        let mut insight = DataplaneInsightSpec::default();
        insight.update_subscription(sub("a", "cp-1", "t1", None), "t2");
        assert!(insight.is_online());
        // cp-1 died; the proxy reconnected to cp-2.
        insight.update_subscription(sub("b", "cp-2", "t3", None), "t3");
        assert_eq!(insight.subscriptions[0].disconnect_time.as_deref(), Some("t3"));
        assert!(insight.subscriptions[1].is_online());
        // cp-2 writes its stream again: replaced in place.
        let mut again = sub("b", "cp-2", "t3", None);
        again.generation = 4;
        insight.update_subscription(again, "t4");
        assert_eq!(insight.subscriptions.len(), 2);
        assert_eq!(insight.last_subscription().map(|s| s.generation), Some(4));
    }

    #[test]
    fn the_newest_subscriptions_are_kept_and_zero_keeps_all() {
        let mut insight = DataplaneInsightSpec::default();
        for id in ["a", "b", "c"] {
            insight.update_subscription(sub(id, "cp", "t", Some("t")), "t");
        }
        let mut all = insight.clone();
        all.limit_subscriptions(0);
        assert_eq!(all.subscriptions.len(), 3);
        insight.limit_subscriptions(2);
        let ids: Vec<&str> = insight.subscriptions.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["b", "c"]);
    }

    #[test]
    fn kuma_json_round_trips_with_string_counters() {
        let text = r#"{"subscriptions":[{"id":"1","controlPlaneInstanceId":"cp","connectTime":"2026-01-01T00:00:00Z","status":{"lastUpdateTime":"2026-01-01T00:00:01Z","total":{"responsesSent":"3","responsesAcknowledged":"2"},"cds":{"responsesSent":"1"},"eds":{},"lds":{},"rds":{}},"version":{"kumaDp":{"version":"2.14.3"}},"generation":2}],"mTLS":{"certificateExpirationTime":"2026-01-02T00:00:00Z","certificateRegenerations":1,"issuedBackend":"ca-1","supportedBackends":["ca-1"]}}"#;
        let spec: DataplaneInsightSpec = serde_json::from_str(text).unwrap();
        assert_eq!(spec.subscriptions[0].status.total.responses_sent, Counter(3));
        assert_eq!(serde_json::to_string(&spec).unwrap(), text);
        // Numbers are read too.
        let numeric: DiscoveryStats = serde_json::from_str(r#"{"responsesSent":7}"#).unwrap();
        assert_eq!(numeric.responses_sent, Counter(7));
    }
}
