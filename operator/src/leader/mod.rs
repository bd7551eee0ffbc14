//! Leadership: one control plane instance does the leader-only work
//! (defaults, builtin CAs, insight upkeep, Dataplane collection). Behind one
//! trait, chosen with the store:
//!
//! - memory: the only instance always leads;
//! - PostgreSQL: a session advisory lock held by a dedicated connection;
//! - Kubernetes: a `coordination.k8s.io` Lease in the system namespace
//!   ([`lease`]).
//!
//! Losing leadership resolves [`Leader::lost`] at once; the caller stops
//! its leader work and competes again.

pub mod lease;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::store::postgres::PostgresStore;

/// Leadership held; dropping it gives it up.
pub struct Leader {
    lost: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl std::fmt::Debug for Leader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Leader")
    }
}

impl Leader {
    /// Leadership that ends when `lost` resolves (and is given up when
    /// `lost` is dropped).
    pub fn new(lost: impl Future<Output = ()> + Send + 'static) -> Self {
        Leader { lost: Box::pin(lost) }
    }

    /// Resolves when leadership is lost.
    pub async fn lost(&mut self) {
        (&mut self.lost).await
    }
}

/// A way to become the leader.
#[async_trait::async_trait]
pub trait Leadership: Send + Sync {
    /// Waits until this instance leads.
    async fn acquire(&self) -> Leader;
}

/// The memory store's: the only instance leads, for ever.
#[derive(Debug, Default)]
pub struct AlwaysLeader;

#[async_trait::async_trait]
impl Leadership for AlwaysLeader {
    async fn acquire(&self) -> Leader {
        Leader::new(std::future::pending())
    }
}

/// PostgreSQL's: an advisory lock; instances that do not hold it retry.
#[derive(Debug)]
pub struct PostgresLock(pub Arc<PostgresStore>);

#[async_trait::async_trait]
impl Leadership for PostgresLock {
    async fn acquire(&self) -> Leader {
        loop {
            if let Some(mut lock) = self.0.try_lead().await {
                return Leader::new(async move { lock.lost().await });
            }
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        }
    }
}
