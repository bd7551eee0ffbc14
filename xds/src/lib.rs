//! Envoy configuration for Kuma dataplanes: generation, the snapshot cache
//! and the ADS server.

#![forbid(unsafe_code)]

pub mod admin_tls;
pub mod bootstrap;
mod canonical;
pub mod context;
pub mod digest;
pub mod dp_server;
pub mod envoy;
pub mod generate;
pub mod metrics;
pub mod mtls;
pub mod plugins;
pub mod proto;
pub mod resources;
pub mod retire;
pub mod server;
pub mod snapshot;
pub mod static_config;
pub mod sync;
