//! Leadership on Kubernetes: a `coordination.k8s.io/v1` Lease
//! (`cp-leader-lease` in the system namespace, as Kuma names it), with
//! client-go's rules: the holder renews every retry period; it gives up when
//! it could not renew for the renew deadline; another instance takes the
//! lease once it has seen it unchanged for a whole lease duration (its own
//! clock, never the holder's, decides: clocks need not agree).

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};

use super::{Leader, Leadership};

/// Kuma's lease name.
pub const LEASE_NAME: &str = "cp-leader-lease";

/// How long a lease lasts and how often it is renewed (Kuma's: 15s, 10s, 2s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseTimings {
    /// How long others wait, after the last renewal they saw, before
    /// taking the lease.
    pub lease_duration: Duration,
    /// How long the holder keeps leading without a successful renewal.
    pub renew_deadline: Duration,
    /// How often the holder renews and others retry.
    pub retry_period: Duration,
}

impl Default for LeaseTimings {
    fn default() -> Self {
        LeaseTimings {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// Leadership through a Lease.
#[derive(Clone)]
pub struct LeaseLock {
    api: Api<Lease>,
    identity: String,
    timings: LeaseTimings,
}

impl std::fmt::Debug for LeaseLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseLock")
            .field("identity", &self.identity)
            .field("timings", &self.timings)
            .finish()
    }
}

/// What a try to lead found.
enum Attempt {
    /// This instance holds the lease now.
    Held,
    /// Another instance holds it (or won a race); try again later.
    Taken,
}

impl LeaseLock {
    /// Competes for the lease in `namespace` as `identity`.
    pub fn new(client: kube::Client, namespace: &str, identity: &str, timings: LeaseTimings) -> Self {
        LeaseLock {
            api: Api::namespaced(client, namespace),
            identity: identity.to_string(),
            timings,
        }
    }

    fn spec(&self, previous: Option<&LeaseSpec>) -> LeaseSpec {
        let now = MicroTime(Timestamp::now());
        let ours = previous.and_then(|p| p.holder_identity.as_deref()) == Some(self.identity.as_str());
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.timings.lease_duration.as_secs().max(1) as i32),
            acquire_time: if ours {
                previous.and_then(|p| p.acquire_time.clone())
            } else {
                Some(now.clone())
            },
            renew_time: Some(now),
            lease_transitions: Some(
                previous.and_then(|p| p.lease_transitions).unwrap_or(0)
                    + i32::from(!ours && previous.is_some()),
            ),
            ..LeaseSpec::default()
        }
    }

    /// One try: create, renew or take over the lease. `observed` is the
    /// lease version last seen and when it was first seen.
    async fn try_lead(&self, observed: &mut Option<(String, Instant)>) -> Result<Attempt, kube::Error> {
        let Some(mut lease) = self.api.get_opt(LEASE_NAME).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(LEASE_NAME.into()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(None)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Attempt::Held),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::Taken),
                Err(e) => Err(e),
            };
        };
        let holder = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.clone())
            .unwrap_or_default();
        if !holder.is_empty() && holder != self.identity {
            let version = lease.metadata.resource_version.clone().unwrap_or_default();
            match observed {
                Some((seen, since)) if *seen == version => {
                    if since.elapsed() < self.timings.lease_duration {
                        return Ok(Attempt::Taken);
                    }
                    tracing::info!(previous = %holder, "the leader lease expired; taking it over");
                }
                _ => {
                    *observed = Some((version, Instant::now()));
                    return Ok(Attempt::Taken);
                }
            }
        }
        lease.spec = Some(self.spec(lease.spec.as_ref()));
        match self.api.replace(LEASE_NAME, &PostParams::default(), &lease).await {
            Ok(_) => Ok(Attempt::Held),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::Taken),
            Err(e) => Err(e),
        }
    }

    /// Renews until a renewal fails for longer than the renew deadline or
    /// another instance took the lease; returns then.
    async fn keep(self) {
        let mut last_renewal = Instant::now();
        let mut observed = None;
        loop {
            tokio::time::sleep(self.timings.retry_period).await;
            match self.try_lead(&mut observed).await {
                Ok(Attempt::Held) => last_renewal = Instant::now(),
                Ok(Attempt::Taken) => {
                    tracing::warn!("another control plane holds the leader lease");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot renew the leader lease");
                    if last_renewal.elapsed() >= self.timings.renew_deadline {
                        return;
                    }
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl Leadership for LeaseLock {
    async fn acquire(&self) -> Leader {
        let mut observed = None;
        loop {
            let mut wait = self.timings.retry_period;
            match self.try_lead(&mut observed).await {
                Ok(Attempt::Held) => break,
                Ok(Attempt::Taken) => {
                    // Try again as soon as the lease seen can be taken,
                    // not up to a retry period later.
                    if let Some((_, since)) = &observed {
                        let expires =
                            (*since + self.timings.lease_duration).saturating_duration_since(Instant::now());
                        wait = wait.min(expires.max(Duration::from_millis(10)));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot read the leader lease"),
            }
            tokio::time::sleep(wait).await;
        }
        tracing::info!(identity = %self.identity, "this control plane holds the leader lease");
        let renewal = tokio::spawn(self.clone().keep());
        Leader::new(async move {
            // Dropping leadership stops renewing: the lease then expires.
            struct StopOnDrop(tokio::task::JoinHandle<()>);
            impl Drop for StopOnDrop {
                fn drop(&mut self) {
                    self.0.abort();
                }
            }
            let mut renewal = StopOnDrop(renewal);
            let _ = (&mut renewal.0).await;
        })
    }
}
