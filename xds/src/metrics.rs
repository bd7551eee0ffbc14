//! Prometheus metrics of config generation and delivery.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels naming an xDS type and the protocol variant.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabels {
    /// `cds`, `eds`, `lds`, `rds`, `sds` or `other`.
    pub type_url: String,
    /// `sotw` or `delta`.
    pub mode: String,
}

/// Labels naming the protocol variant.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModeLabels {
    /// `sotw` or `delta`.
    pub mode: String,
}

/// Every xDS metric.
#[derive(Debug)]
pub struct XdsMetrics {
    /// Open ADS streams.
    pub streams: Family<ModeLabels, Gauge>,
    /// Responses sent.
    pub responses: Family<TypeLabels, Counter>,
    /// Responses Envoy accepted.
    pub acks: Family<TypeLabels, Counter>,
    /// Responses Envoy rejected.
    pub nacks: Family<TypeLabels, Counter>,
    /// Requests ignored because their nonce was stale.
    pub stale_requests: Family<TypeLabels, Counter>,
    /// Streams refused (bad request, unknown node, limit reached).
    pub refused_streams: Counter,
    /// Streams waiting for a place among those being configured.
    pub waiting_streams: Gauge,
    /// Time to generate one proxy's configuration.
    pub generation_seconds: Histogram,
    /// Time to apply one batch of changes to every affected proxy.
    pub reconcile_seconds: Histogram,
    /// Proxies regenerated.
    pub generations: Counter,
    /// Snapshots that changed and were published.
    pub snapshot_updates: Counter,
    /// Proxies with a snapshot.
    pub proxies: Gauge,
}

impl Default for XdsMetrics {
    fn default() -> Self {
        XdsMetrics {
            streams: Family::default(),
            responses: Family::default(),
            acks: Family::default(),
            nacks: Family::default(),
            stale_requests: Family::default(),
            refused_streams: Counter::default(),
            waiting_streams: Gauge::default(),
            generation_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            reconcile_seconds: Histogram::new(exponential_buckets(0.000_1, 2.0, 18)),
            generations: Counter::default(),
            snapshot_updates: Counter::default(),
            proxies: Gauge::default(),
        }
    }
}

impl XdsMetrics {
    /// Registers every metric under `xds_`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("xds");
        r.register("streams", "Open ADS streams", self.streams.clone());
        r.register("responses", "Discovery responses sent", self.responses.clone());
        r.register("acks", "Discovery responses accepted by Envoy", self.acks.clone());
        r.register(
            "nacks",
            "Discovery responses rejected by Envoy",
            self.nacks.clone(),
        );
        r.register(
            "stale_requests",
            "Requests ignored for a stale nonce",
            self.stale_requests.clone(),
        );
        r.register(
            "refused_streams",
            "ADS streams refused",
            self.refused_streams.clone(),
        );
        r.register(
            "waiting_streams",
            "ADS streams waiting, unanswered, for their first configuration to start",
            self.waiting_streams.clone(),
        );
        r.register(
            "generation_seconds",
            "Time to generate one proxy's Envoy configuration",
            self.generation_seconds.clone(),
        );
        r.register(
            "reconcile_seconds",
            "Time to apply a batch of changes to every affected proxy",
            self.reconcile_seconds.clone(),
        );
        r.register(
            "generations",
            "Proxy configurations generated",
            self.generations.clone(),
        );
        r.register(
            "snapshot_updates",
            "Proxy snapshots changed and published",
            self.snapshot_updates.clone(),
        );
        r.register(
            "proxies",
            "Proxies with a configuration snapshot",
            self.proxies.clone(),
        );
    }

    pub(crate) fn type_labels(type_url: &str, mode: &str) -> TypeLabels {
        let short = crate::resources::XdsType::from_type_url(type_url)
            .map(|t| t.short())
            .unwrap_or("other");
        TypeLabels {
            type_url: short.to_string(),
            mode: mode.to_string(),
        }
    }
}
