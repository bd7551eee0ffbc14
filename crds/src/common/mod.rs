//! Types shared by many resources: durations, percentages, targetRefs,
//! backend references and matches.

mod backend_ref;
mod duration;
mod int_or_string;
mod matches;
mod target_ref;

pub use backend_ref::*;
pub use duration::*;
pub use int_or_string::*;
pub use matches::*;
pub use target_ref::*;

/// The schema of a field that holds any JSON value.
pub fn any_json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"x-kubernetes-preserve-unknown-fields": true})
}

/// The schema of a field that holds any JSON object.
pub fn any_object_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
}
