//! Matches shared by policies: inbound `rules[].matches` (client identity) and
//! HTTP header matching and modification.

use std::collections::BTreeSet;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::validation::{FieldPath, Violations, is_dns_name};

/// How a SPIFFE ID is compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
pub enum SpiffeIdMatchType {
    /// The whole ID must be equal.
    Exact,
    /// The ID must start with the value.
    Prefix,
}

/// Matches a client by its SPIFFE ID.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SpiffeIdMatch {
    /// How to compare.
    #[serde(rename = "type")]
    pub match_type: Option<SpiffeIdMatchType>,
    /// The SPIFFE ID (or prefix), e.g. `spiffe://default/backend`.
    pub value: String,
}

/// How an SNI is compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
pub enum SniMatchType {
    /// The whole SNI must be equal.
    Exact,
}

/// Matches a connection by the SNI it requested.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SniMatch {
    /// How to compare.
    #[serde(rename = "type")]
    pub match_type: Option<SniMatchType>,
    /// The server name.
    pub value: String,
}

/// One condition of an inbound rule: who the client is.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleMatch {
    /// The client's SPIFFE ID.
    #[serde(rename = "spiffeID")]
    pub spiffe_id: Option<SpiffeIdMatch>,
    /// The SNI the client requested.
    pub sni: Option<SniMatch>,
}

impl RuleMatch {
    /// Checks the SPIFFE ID syntax and the SNI, like Kuma's `ValidateMatch`.
    pub fn validate_common(&self, path: &FieldPath, v: &mut Violations) {
        if let Some(id) = &self.spiffe_id {
            // A prefix naturally ends with `/` (`spiffe://mesh/`), which a
            // full SPIFFE ID may not; check the prefix without it.
            let value = match id.match_type {
                Some(SpiffeIdMatchType::Prefix) => id.value.strip_suffix('/').unwrap_or(&id.value),
                _ => id.value.as_str(),
            };
            if let Err(e) = check_spiffe_id(value) {
                v.add(&path.field("spiffeID"), format!("must be a valid Spiffe ID: {e}"));
            }
        }
        if let Some(sni) = &self.sni {
            if sni.match_type.is_none() {
                v.add(&path.field("sni").field("type"), "must be set");
            }
            if sni.value.is_empty() {
                v.add(&path.field("sni").field("value"), "must be set");
            } else if !is_dns_name(&sni.value) || sni.value.ends_with('.') {
                v.add(
                    &path.field("sni").field("value"),
                    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com')",
                );
            }
        }
    }

    /// The checks of rules that condition on identity: at least one of
    /// `spiffeID` or `sni`, and a SPIFFE match type.
    pub fn validate_identity(&self, path: &FieldPath, v: &mut Violations) {
        self.validate_common(path, v);
        if self.spiffe_id.is_none() && self.sni.is_none() {
            v.add(path, "must specify at least one of 'spiffeID' or 'sni'");
        }
        if let Some(id) = &self.spiffe_id
            && id.match_type.is_none()
        {
            v.add(&path.field("spiffeID").field("type"), "must be set");
        }
    }
}

/// Why a SPIFFE ID is invalid, in go-spiffe's words.
pub fn check_spiffe_id(id: &str) -> Result<(), &'static str> {
    if id.is_empty() {
        return Err("cannot be empty");
    }
    let Some(rest) = id.strip_prefix("spiffe://") else {
        return Err("scheme is missing or invalid");
    };
    let (trust_domain, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if trust_domain.is_empty() {
        return Err("trust domain is missing");
    }
    if !trust_domain
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b))
    {
        return Err(
            "trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores",
        );
    }
    if path.is_empty() {
        return Ok(());
    }
    if path.ends_with('/') {
        return Err("path cannot have a trailing slash");
    }
    for segment in path[1..].split('/') {
        if segment.is_empty() {
            return Err("path cannot contain empty segments");
        }
        if segment == "." || segment == ".." {
            return Err("path cannot contain dot segments");
        }
        if !segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        {
            return Err(
                "path segment characters are limited to letters, numbers, dots, dashes, and underscores",
            );
        }
    }
    Ok(())
}

/// How an HTTP header is matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
pub enum HeaderMatchType {
    /// The value must be equal.
    Exact,
    /// The header must be present, whatever its value.
    Present,
    /// The value must match a regular expression.
    RegularExpression,
    /// The header must be absent.
    Absent,
    /// The value must start with the given value.
    Prefix,
}

/// Matches an HTTP header.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderMatch {
    /// How to match; `Exact` when absent.
    #[serde(rename = "type")]
    pub match_type: Option<HeaderMatchType>,
    /// The header name, lower case.
    pub name: String,
    /// The value to compare with.
    pub value: Option<String>,
}

impl HeaderMatch {
    /// The effective match type.
    pub fn effective_type(&self) -> HeaderMatchType {
        self.match_type.unwrap_or(HeaderMatchType::Exact)
    }

    /// Checks the header name and that `Present`/`Absent` carry no value.
    pub fn validate(&self, path: &FieldPath, v: &mut Violations) {
        check_header_name(&self.name, &path.field("name"), v);
        let valueless = matches!(
            self.effective_type(),
            HeaderMatchType::Present | HeaderMatchType::Absent
        );
        if valueless && self.value.as_deref().is_some_and(|s| !s.is_empty()) {
            v.add(&path.field("value"), "must not be defined");
        }
        if self.effective_type() == HeaderMatchType::RegularExpression
            && let Some(re) = &self.value
            && regex::Regex::new(re).is_err()
        {
            v.add(&path.field("value"), "must be a valid regular expression");
        }
    }
}

/// Checks an HTTP header name: 1-256 lower-case token characters.
pub fn check_header_name(name: &str, path: &FieldPath, v: &mut Violations) {
    if name.is_empty() {
        v.add(path, "must be defined");
    } else if name.len() > 256 {
        v.add(path, "must be at most 256 characters");
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b))
    {
        v.add(
            path,
            "must be a lower-case HTTP header name (letters, digits and !#$%&'*+-.^_`|~)",
        );
    }
}

/// A header name and value to set or add.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HeaderKeyValue {
    /// The header name.
    pub name: String,
    /// The header value.
    pub value: String,
}

/// Changes to HTTP headers.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HeaderModifier {
    /// Headers to set, replacing existing values.
    pub set: Option<Vec<HeaderKeyValue>>,
    /// Headers to add, keeping existing values.
    pub add: Option<Vec<HeaderKeyValue>>,
    /// Header names to remove.
    pub remove: Option<Vec<String>>,
}

impl HeaderModifier {
    /// Checks names and duplicates; `allow_remove` is false where Kuma's type
    /// has no `remove` list.
    pub fn validate(&self, path: &FieldPath, v: &mut Violations) {
        if self.set.is_none() && self.add.is_none() && self.remove.is_none() {
            v.add(path, "must have at least one defined: set, add, remove");
            return;
        }
        let mut seen = BTreeSet::new();
        for (field, list) in [("set", &self.set), ("add", &self.add)] {
            for (i, kv) in list.iter().flatten().enumerate() {
                let p = path.field(field).index(i).field("name");
                check_header_name(&kv.name, &p, v);
                if !seen.insert(kv.name.clone()) {
                    v.add(&p, "duplicate header name");
                }
            }
            if list.as_ref().is_some_and(|l| l.len() > 16) {
                v.add(&path.field(field), "must have at most 16 items");
            }
        }
        for (i, name) in self.remove.iter().flatten().enumerate() {
            let p = path.field("remove").index(i);
            check_header_name(name, &p, v);
            if !seen.insert(name.clone()) {
                v.add(&p, "duplicate header name");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_ids() {
        assert_eq!(check_spiffe_id("spiffe://default/backend"), Ok(()));
        assert_eq!(check_spiffe_id("spiffe://default"), Ok(()));
        assert_eq!(check_spiffe_id("backend"), Err("scheme is missing or invalid"));
        assert_eq!(check_spiffe_id("spiffe:///x"), Err("trust domain is missing"));
        assert_eq!(
            check_spiffe_id("spiffe://d/x/"),
            Err("path cannot have a trailing slash")
        );
        assert_eq!(
            check_spiffe_id("spiffe://d/a//b"),
            Err("path cannot contain empty segments")
        );
        assert_eq!(
            check_spiffe_id("spiffe://d/a/../b"),
            Err("path cannot contain dot segments")
        );
        assert!(check_spiffe_id("spiffe://D/x").is_err());
    }

    #[test]
    fn header_modifier_duplicates() {
        let m = HeaderModifier {
            set: Some(vec![
                HeaderKeyValue {
                    name: "x-a".into(),
                    value: "1".into(),
                },
                HeaderKeyValue {
                    name: "x-a".into(),
                    value: "2".into(),
                },
            ]),
            add: None,
            remove: Some(vec!["x-a".into()]),
        };
        let mut v = Violations::new();
        m.validate(&FieldPath::new("m"), &mut v);
        let fields: Vec<_> = v.into_vec().into_iter().map(|v| v.field).collect();
        assert_eq!(fields, vec!["m.set[1].name", "m.remove[0]"]);
    }
}
