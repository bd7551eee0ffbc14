//! The kuma.io resource model shared by every part of the control plane:
//! the Kubernetes controllers, the PostgreSQL and in-memory stores, the REST
//! API and the Envoy config generator.
//!
//! - [`resource`]: resource types, metadata and typed specs;
//! - [`admission`]: what every write path decides before storing (computed
//!   labels, immutable fields, the mesh-delete guard);
//! - [`format`]: reading and writing the Universal and Kubernetes forms;
//! - [`validation`]: field paths and Kuma-style validation;
//! - [`policies`], [`mesh`], [`dataplane`], [`mesh_service`], [`secret`]: the types;
//! - [`matching`]: which policies select a dataplane and what they merge to;
//! - [`crd`]: CustomResourceDefinitions generated from the types.

#![forbid(unsafe_code)]

pub mod admission;
pub mod common;
pub mod crd;
pub mod dataplane;
pub mod dns;
pub mod format;
pub mod insight;
pub mod kubernetes;
pub mod matching;
pub mod mesh;
pub mod mesh_insight;
pub mod mesh_service;
pub mod mesh_service_port;
pub mod policies;
pub mod resource;
pub mod secret;
pub mod template;
pub mod validation;
