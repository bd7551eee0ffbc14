//! Leader-only upkeep of proxy insights.
//!
//! - The **subscription finalizer** closes streams whose control plane
//!   died: a live control plane raises the generation of its open streams
//!   every half idle timeout, so an open stream whose generation did not
//!   move for a whole idle timeout has nobody serving it. Without this a
//!   proxy that went away while its control plane was down stays Online
//!   forever.
//! - The **Dataplane collector** (universal) deletes Dataplanes whose
//!   proxy has been offline for longer than the cleanup age; their insight
//!   goes with them. A Dataplane whose proxy never connected is kept.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kuma_crds::insight::DataplaneInsightSpec;
use kuma_crds::resource::{Resource, ResourceType, Spec};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::insights::{Insights, insight_spec};
use crate::store::{ResourceKey, Store, StoreError, now};

/// Remembers the generation each open stream had at the previous tick.
#[derive(Debug, Default)]
pub struct Finalizer {
    generations: HashMap<String, u32>,
}

impl Finalizer {
    /// The ids of `insight`'s open streams whose generation did not move
    /// since the previous tick. Streams seen for the first time, or that
    /// moved, are remembered instead.
    pub fn stale(&mut self, insight: &DataplaneInsightSpec, seen: &mut HashMap<String, u32>) -> Vec<String> {
        let mut stale = Vec::new();
        for sub in insight.subscriptions.iter().filter(|s| s.is_online()) {
            if self.generations.get(&sub.id) == Some(&sub.generation) {
                stale.push(sub.id.clone());
            }
            seen.insert(sub.id.clone(), sub.generation);
        }
        stale
    }

    /// One pass over every stored insight; forgets streams no longer open.
    pub async fn tick(&mut self, store: &Store, local: &Insights) -> Result<usize, StoreError> {
        let mut seen = HashMap::new();
        let mut closed = 0;
        for r in store.list(ResourceType::DataplaneInsight, None).await? {
            let Some(insight) = insight_spec(&r) else { continue };
            let node = format!("{}.{}", r.meta.mesh_or_default(), r.meta.core_name());
            let served_here: Vec<String> = local
                .subscriptions(&node)
                .into_iter()
                .filter(|s| s.is_online())
                .map(|s| s.id)
                .collect();
            let stale: Vec<String> = self
                .stale(insight, &mut seen)
                .into_iter()
                .filter(|id| !served_here.contains(id))
                .collect();
            if stale.is_empty() {
                continue;
            }
            let key = ResourceKey::of(&r);
            match close(store, &key, &stale, &self.generations).await {
                Ok(n) => closed += n,
                Err(StoreError::NotFound(_)) => {}
                Err(e) => tracing::warn!(insight = %key, error = %e, "cannot close abandoned subscriptions"),
            }
        }
        self.generations = seen;
        Ok(closed)
    }
}

/// Closes the streams `ids` of the insight `key` that are still open at
/// the generation remembered for them, re-reading on concurrent writes.
async fn close(
    store: &Store,
    key: &ResourceKey,
    ids: &[String],
    generations: &HashMap<String, u32>,
) -> Result<usize, StoreError> {
    let mut attempt = 0;
    loop {
        let mut r = store.get(key).await?;
        let Spec::DataplaneInsight(insight) = &mut r.spec else {
            return Ok(0);
        };
        let now = now();
        let mut closed = 0;
        for sub in insight
            .subscriptions
            .iter_mut()
            .filter(|s| s.is_online() && ids.contains(&s.id) && generations.get(&s.id) == Some(&s.generation))
        {
            sub.disconnect_time = Some(now.clone());
            closed += 1;
        }
        if closed == 0 {
            return Ok(0);
        }
        match store.update(r).await {
            Ok(_) => {
                tracing::info!(insight = %key, closed, "closed subscriptions of a control plane that stopped serving them");
                return Ok(closed);
            }
            Err(StoreError::Conflict { .. }) if attempt < 10 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether the proxy of `insight` has been offline for longer than `age`
/// at `now`: no open stream, and the newest one closed before `now - age`.
pub fn expired(insight: &DataplaneInsightSpec, now: OffsetDateTime, age: Duration) -> bool {
    if insight.is_online() {
        return false;
    }
    let Some(closed) = insight
        .last_subscription()
        .and_then(|s| s.disconnect_time.as_deref())
        .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
    else {
        return false;
    };
    now - closed > age
}

/// Deletes the Dataplanes whose proxy expired; returns how many.
pub async fn collect(store: &Store, age: Duration) -> Result<usize, StoreError> {
    let now = OffsetDateTime::now_utc();
    let mut deleted = 0;
    let insights: Vec<Resource> = store.list(ResourceType::DataplaneInsight, None).await?;
    for r in insights {
        if !insight_spec(&r).is_some_and(|i| expired(i, now, age)) {
            continue;
        }
        let key = ResourceKey::new(
            ResourceType::Dataplane,
            r.meta.mesh_or_default(),
            &r.meta.core_name(),
        );
        match store.delete(&key).await {
            Ok(()) => {
                deleted += 1;
                tracing::info!(dataplane = %key, "deleted a Dataplane whose proxy has been offline for longer than the cleanup age");
            }
            Err(StoreError::NotFound(_)) => {}
            Err(e) => tracing::warn!(dataplane = %key, error = %e, "cannot delete an offline Dataplane"),
        }
    }
    Ok(deleted)
}

/// Timings of the leader's upkeep.
#[derive(Clone, Copy, Debug)]
pub struct GcTimings {
    /// The finalizer's period (`metrics.dataplane.idleTimeout`).
    pub idle_timeout: Duration,
    /// Offline this long, a Dataplane is deleted
    /// (`runtime.universal.dataplaneCleanupAge`).
    pub cleanup_age: Duration,
}

/// Runs the finalizer and the collector until dropped.
pub async fn run(store: Store, local: Arc<Insights>, timings: GcTimings) {
    let floor = Duration::from_millis(10);
    let mut finalizer = Finalizer::default();
    let mut finalize = tokio::time::interval(timings.idle_timeout.max(floor));
    finalize.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Kuma looks every minute; a short cleanup age is looked at sooner.
    let collect_period = (timings.cleanup_age / 2).clamp(floor, Duration::from_secs(60));
    let mut collector = tokio::time::interval(collect_period);
    collector.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = finalize.tick() => {
                if let Err(e) = finalizer.tick(&store, &local).await {
                    tracing::warn!(error = %e, "subscription finalizer");
                }
            }
            _ = collector.tick() => {
                if let Err(e) = collect(&store, timings.cleanup_age).await {
                    tracing::warn!(error = %e, "dataplane collector");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use kuma_crds::insight::DiscoverySubscription;

    use super::*;

    fn sub(id: &str, generation: u32, disconnect: Option<&str>) -> DiscoverySubscription {
        DiscoverySubscription {
            id: id.into(),
            connect_time: Some("2026-01-01T00:00:00Z".into()),
            disconnect_time: disconnect.map(str::to_string),
            generation,
            ..Default::default()
        }
    }

    fn insight(subs: Vec<DiscoverySubscription>) -> DataplaneInsightSpec {
        DataplaneInsightSpec {
            subscriptions: subs,
            ..Default::default()
        }
    }

    #[test]
    fn a_stream_is_stale_after_a_whole_tick_without_a_new_generation() {
        let mut finalizer = Finalizer::default();
        let mut tick = |i: &DataplaneInsightSpec| {
            let mut seen = HashMap::new();
            let stale = finalizer.stale(i, &mut seen);
            finalizer.generations = seen;
            stale
        };
        assert!(tick(&insight(vec![sub("a", 1, None)])).is_empty(), "first seen");
        assert!(tick(&insight(vec![sub("a", 2, None)])).is_empty(), "moved");
        assert_eq!(tick(&insight(vec![sub("a", 2, None)])), ["a"]);
        assert!(
            tick(&insight(vec![sub("a", 2, Some("2026-01-01T00:01:00Z"))])).is_empty(),
            "closed streams are never stale"
        );
    }

    #[test]
    fn only_proxies_offline_for_longer_than_the_age_expire() {
        let now = OffsetDateTime::parse("2026-01-04T00:00:00Z", &Rfc3339).unwrap();
        let day = Duration::from_secs(24 * 3600);
        let gone_3_days = insight(vec![sub("a", 0, Some("2026-01-01T00:00:00Z"))]);
        assert!(expired(&gone_3_days, now, 2 * day));
        assert!(!expired(&gone_3_days, now, 3 * day + Duration::from_secs(1)));
        // Online again on another stream.
        let back = insight(vec![sub("a", 0, Some("2026-01-01T00:00:00Z")), sub("b", 0, None)]);
        assert!(!expired(&back, now, day));
        // No stream recorded, or an unreadable time: kept.
        assert!(!expired(&insight(vec![]), now, day));
        assert!(!expired(&insight(vec![sub("a", 0, Some("yesterday"))]), now, day));
    }
}
