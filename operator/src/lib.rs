//! kuma-cp: the control plane. Universal mode keeps resources in memory or
//! in PostgreSQL, serves Kuma's REST API, kuma-dp's `/bootstrap` and ADS,
//! and feeds every change to the xDS reconciler.

#![forbid(unsafe_code)]

pub mod api;
pub mod config;
pub mod defaults;
pub mod dp_server;
pub mod feed;
pub mod gc;
pub mod insights;
pub mod labels;
pub mod run;
pub mod store;
pub mod tls;
pub mod tokens;
