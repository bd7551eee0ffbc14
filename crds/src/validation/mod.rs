//! Validation: field paths, the list of violations a document has, and the
//! checks shared by every resource type (durations, ports, names, tags…).
//!
//! Every validator appends to a [`Violations`] list instead of returning at the
//! first problem, so a user sees everything wrong with a document at once.
//! Paths are rendered the way Kuma renders them: `spec.to[0].default.idleTimeout`,
//! `networking.inbound[0].tags["kuma.io/service"]`.

mod checks;
pub mod schema;

pub use checks::*;

use std::fmt;

/// A path to a field inside a document, e.g. `spec.to[0].default`.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FieldPath(String);

impl FieldPath {
    /// The document root; its rendering is empty.
    pub fn root() -> Self {
        FieldPath(String::new())
    }

    /// A path starting with one field name.
    pub fn new(field: &str) -> Self {
        FieldPath(field.to_string())
    }

    /// The path of a named field below this one.
    pub fn field(&self, name: &str) -> Self {
        if self.0.is_empty() {
            FieldPath(name.to_string())
        } else {
            FieldPath(format!("{}.{}", self.0, name))
        }
    }

    /// The path of a list element below this one.
    pub fn index(&self, index: usize) -> Self {
        FieldPath(format!("{}[{}]", self.0, index))
    }

    /// The path of a map entry below this one.
    pub fn key(&self, key: &str) -> Self {
        FieldPath(format!("{}[{:?}]", self.0, key))
    }

    /// The rendered path.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One problem found in a document: where it is and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Violation {
    /// The field path, e.g. `spec.to[0].default.http.requestTimeout`.
    pub field: String,
    /// A plain-language message, e.g. `must be a valid duration, e.g. 10s`.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

/// Every problem found in one document, in the order they were found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Violations(Vec<Violation>);

impl Violations {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a problem at `path`.
    pub fn add(&mut self, path: &FieldPath, message: impl Into<String>) {
        self.0.push(Violation {
            field: path.as_str().to_string(),
            message: message.into(),
        });
    }

    /// Records every problem of `other`.
    pub fn extend(&mut self, other: Violations) {
        self.0.extend(other.0);
    }

    /// Whether no problem was found.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The problems found.
    pub fn as_slice(&self) -> &[Violation] {
        &self.0
    }

    /// The problems found, by value.
    pub fn into_vec(self) -> Vec<Violation> {
        self.0
    }

    /// `Ok(())` when nothing was found, else the violations as an error.
    pub fn into_result(self) -> Result<(), ValidationError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ValidationError(self.0))
        }
    }
}

impl From<Vec<Violation>> for Violations {
    fn from(list: Vec<Violation>) -> Self {
        Violations(list)
    }
}

/// A document that failed validation, with every violation found.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ValidationError(pub Vec<Violation>);

impl ValidationError {
    /// One violation.
    pub fn single(path: &FieldPath, message: impl Into<String>) -> Self {
        ValidationError(vec![Violation {
            field: path.as_str().to_string(),
            message: message.into(),
        }])
    }

    /// The violations.
    pub fn violations(&self) -> &[Violation] {
        &self.0
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{v}")?;
        }
        Ok(())
    }
}

/// Types that can check themselves and report problems below a path.
pub trait Validate {
    /// Appends every problem of `self` to `violations`, with paths below `path`.
    fn validate(&self, path: &FieldPath, violations: &mut Violations);
}

impl<T: Validate> Validate for Option<T> {
    fn validate(&self, path: &FieldPath, violations: &mut Violations) {
        if let Some(v) = self {
            v.validate(path, violations);
        }
    }
}

impl<T: Validate> Validate for Vec<T> {
    fn validate(&self, path: &FieldPath, violations: &mut Violations) {
        for (i, v) in self.iter().enumerate() {
            v.validate(&path.index(i), violations);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_render_like_kuma() {
        let p = FieldPath::new("spec")
            .field("to")
            .index(0)
            .field("default")
            .field("idleTimeout");
        assert_eq!(p.as_str(), "spec.to[0].default.idleTimeout");
        let t = FieldPath::new("networking")
            .field("inbound")
            .index(2)
            .field("tags")
            .key("kuma.io/service");
        assert_eq!(t.as_str(), "networking.inbound[2].tags[\"kuma.io/service\"]");
        assert_eq!(FieldPath::root().field("name").as_str(), "name");
    }

    #[test]
    fn violations_collect_in_order() {
        let mut v = Violations::new();
        v.add(&FieldPath::new("a"), "first");
        v.add(&FieldPath::new("b"), "second");
        let err = v.into_result().unwrap_err();
        assert_eq!(err.to_string(), "a: first; b: second");
    }
}
