//! kuma-cp: the control plane. Universal mode keeps resources in memory or
//! in PostgreSQL, Kubernetes mode in the Kubernetes API (kuma.io objects);
//! both serve Kuma's REST API, kuma-dp's `/bootstrap` and ADS, and feed
//! every change to the xDS reconciler. `mode` is where the two differ.

#![forbid(unsafe_code)]

pub mod api;
pub mod config;
pub mod defaults;
pub mod dp_server;
pub mod envoy_admin;
pub mod feed;
pub mod gc;
pub mod insights;
pub mod kubernetes;
pub mod kuma_settings;
pub mod labels;
pub mod leader;
pub mod mode;
pub mod reflector;
pub mod run;
pub mod store;
pub mod tls;
pub mod tokens;
