//! Kubernetes mode's controllers and identity: Pods and Services become
//! Dataplanes and MeshServices (conversion in `kuma_crds::kubernetes`,
//! reconciliation here), and proxies authenticate with their Pod's
//! ServiceAccount token.

pub mod api_requests;
pub mod cache;
pub mod mesh_services;
pub mod pods;
pub mod service_account;
pub mod webhooks;

use std::sync::Arc;

use kuma_crds::admission::Context;

/// Runs every Kubernetes controller (leader only: they write).
pub async fn run_controllers(client: kube::Client, admission: Context, stats: Arc<pods::PodControllerStats>) {
    tokio::join!(
        pods::run(client.clone(), admission, stats),
        mesh_services::run(client),
    );
}
