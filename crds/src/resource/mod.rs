//! Resources as one model: type descriptors, metadata and typed specs.

mod descriptor;
mod model;

pub use descriptor::*;
pub use model::*;
