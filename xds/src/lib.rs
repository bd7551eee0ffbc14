//! Envoy configuration for Kuma dataplanes: generation, the snapshot cache
//! and the ADS server.

#![forbid(unsafe_code)]

pub mod context;
pub mod envoy;
pub mod generate;
pub mod plugins;
pub mod proto;
pub mod resources;
pub mod static_config;
