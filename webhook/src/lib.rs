//! kuma-cp's admission webhooks (served on 5443 in Kubernetes mode):
//!
//! - [`injector`]: `POST /inject-sidecar` — Kuma's sidecar and init
//!   containers for Pods of labelled namespaces or Pods (pure functions);
//! - [`validation`]: `POST /validate-kuma-io-v1alpha1` — the same parser,
//!   validator and admission module as the REST API;
//! - [`defaulting`]: Mesh defaulting and Mesh owner references;
//! - [`server`]: the thin HTTPS server, with certificates reloaded when
//!   they change on disk.
//!
//! The crate depends on the model (`kuma-crds`), never on kuma-cp; what it
//! needs to know about the cluster comes through [`server::Cluster`].

#![forbid(unsafe_code)]

pub mod defaulting;
pub mod injector;
pub mod review_check;
pub mod server;
pub mod validation;
