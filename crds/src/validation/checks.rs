//! Checks shared by many resource types.

use std::net::IpAddr;

use super::{FieldPath, Violations};
use crate::common::{Duration, IntOrString};

/// A duration must parse and must not be negative.
pub fn check_duration(d: &Duration, path: &FieldPath, v: &mut Violations) {
    match d.parse() {
        Err(e) => v.add(
            path,
            format!("must be a valid duration, e.g. 10s ({:?} {e})", d.as_str()),
        ),
        Ok(parsed) if parsed.negative => v.add(path, "must not be negative"),
        Ok(_) => {}
    }
}

/// A duration must parse and be strictly positive.
pub fn check_positive_duration(d: &Duration, path: &FieldPath, v: &mut Violations) {
    match d.parse() {
        Err(e) => v.add(
            path,
            format!("must be a valid duration, e.g. 10s ({:?} {e})", d.as_str()),
        ),
        Ok(parsed) if parsed.negative || parsed.magnitude.is_zero() => v.add(path, "must be greater than 0"),
        Ok(_) => {}
    }
}

/// A percentage: an integer or decimal string between 0 and 100.
pub fn check_percentage(p: &IntOrString, path: &FieldPath, v: &mut Violations) {
    match p.as_decimal() {
        None => v.add(
            path,
            format!("string must be a valid number, e.g. 50 or \"50.5\" (got \"{p}\")"),
        ),
        Some(x) if !(0.0..=100.0).contains(&x) => v.add(path, "must be in inclusive range [0.0, 100.0]"),
        Some(_) => {}
    }
}

/// A TCP/UDP port number.
pub fn check_port(port: u32, path: &FieldPath, v: &mut Violations) {
    if !(1..=65535).contains(&port) {
        v.add(path, "must be in the range [1, 65535]");
    }
}

/// An optional port number, when present.
pub fn check_optional_port(port: Option<u32>, path: &FieldPath, v: &mut Violations) {
    if let Some(p) = port {
        check_port(p, path, v);
    }
}

/// A string that must be present and non-empty.
pub fn check_not_empty(value: Option<&str>, path: &FieldPath, v: &mut Violations) {
    if value.is_none_or(str::is_empty) {
        v.add(path, "must not be empty");
    }
}

/// A number that must be strictly positive.
pub fn check_greater_than_zero<N: PartialOrd + Default>(n: &N, path: &FieldPath, v: &mut Violations) {
    if *n <= N::default() {
        v.add(path, "must be greater than 0");
    }
}

/// An IPv4 or IPv6 address.
pub fn check_ip(addr: &str, path: &FieldPath, v: &mut Violations) {
    if addr.parse::<IpAddr>().is_err() {
        v.add(path, format!("must be a valid IP address, got {addr:?}"));
    }
}

/// An IP address or a DNS hostname.
pub fn check_address(addr: &str, path: &FieldPath, v: &mut Violations) {
    if addr.is_empty() {
        v.add(path, "must not be empty");
    } else if addr.parse::<IpAddr>().is_err() && !is_dns_name(addr) {
        v.add(
            path,
            format!("must be a valid IP address or hostname, got {addr:?}"),
        );
    }
}

/// Whether `s` is a DNS name (RFC 1123 labels separated by dots).
pub fn is_dns_name(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// Whether `s` is one RFC 1123 label: lower-case alphanumerics and `-`, at most 63.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A resource name: what Kubernetes accepts as an object name (RFC 1123
/// subdomain), which is also what Kuma requires in Universal mode.
pub fn check_resource_name(name: &str, path: &FieldPath, v: &mut Violations) {
    if name.is_empty() {
        v.add(path, "must not be empty");
    } else if name.len() > 253 {
        v.add(path, "must be at most 253 characters");
    } else if !name.split('.').all(is_dns_label) {
        v.add(
            path,
            format!(
                "{name:?} is invalid: use lower-case letters, digits, '-' and '.', starting and ending with a letter or digit"
            ),
        );
    }
}

/// Whether `c` may appear in a Kuma tag name or value.
fn is_tag_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '/' | '_' | '-' | ':')
}

/// A Dataplane tag name: `[a-zA-Z0-9.\/_:-]+`.
pub fn check_tag_key(key: &str, path: &FieldPath, v: &mut Violations) {
    if key.is_empty() {
        v.add(path, "tag name must not be empty");
    } else if !key.chars().all(is_tag_char) {
        v.add(
            path,
            "tag name must consist of alphanumeric characters, dots, dashes, slashes, colons and underscores",
        );
    }
}

/// A Dataplane tag value: `[a-zA-Z0-9.\/_:-]+`.
pub fn check_tag_value(key_path: &FieldPath, value: &str, v: &mut Violations) {
    if value.is_empty() {
        v.add(key_path, "tag value must not be empty");
    } else if !value.chars().all(is_tag_char) {
        v.add(
            key_path,
            "tag value must consist of alphanumeric characters, dots, dashes, slashes, colons and underscores",
        );
    }
}

/// A Kubernetes label key: an optional DNS-subdomain prefix and `/`, then a
/// name of at most 63 alphanumerics, `-`, `_` or `.`.
pub fn check_label_key(key: &str, path: &FieldPath, v: &mut Violations) {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && !is_dns_name(p)
    {
        v.add(
            path,
            format!("label key {key:?} has an invalid prefix: it must be a DNS subdomain"),
        );
        return;
    }
    if !is_label_value(name) || name.is_empty() {
        v.add(
            path,
            format!(
                "label key {key:?} is invalid: the name part must be 1-63 alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric"
            ),
        );
    }
}

/// Whether `s` is a valid Kubernetes label value (empty allowed).
pub fn is_label_value(s: &str) -> bool {
    s.is_empty()
        || (s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && s.as_bytes()[0].is_ascii_alphanumeric()
            && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric())
}

/// A Kubernetes label value.
pub fn check_label_value(value: &str, path: &FieldPath, v: &mut Violations) {
    if !is_label_value(value) {
        v.add(
            path,
            format!(
                "label value {value:?} is invalid: at most 63 alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric"
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgs(f: impl FnOnce(&FieldPath, &mut Violations)) -> Vec<String> {
        let mut v = Violations::new();
        f(&FieldPath::new("x"), &mut v);
        v.into_vec().into_iter().map(|v| v.message).collect()
    }

    #[test]
    fn names() {
        assert!(msgs(|p, v| check_resource_name("backend-1.kuma-demo", p, v)).is_empty());
        assert_eq!(msgs(|p, v| check_resource_name("Backend", p, v)).len(), 1);
        assert_eq!(
            msgs(|p, v| check_resource_name("", p, v)),
            vec!["must not be empty"]
        );
        assert_eq!(msgs(|p, v| check_resource_name("a..b", p, v)).len(), 1);
    }

    #[test]
    fn labels() {
        assert!(msgs(|p, v| check_label_key("kuma.io/service", p, v)).is_empty());
        assert!(msgs(|p, v| check_label_key("app", p, v)).is_empty());
        assert_eq!(msgs(|p, v| check_label_key("Bad_/x", p, v)).len(), 1);
        assert_eq!(msgs(|p, v| check_label_key("a/", p, v)).len(), 1);
        assert!(msgs(|p, v| check_label_value("", p, v)).is_empty());
        assert_eq!(msgs(|p, v| check_label_value("-x", p, v)).len(), 1);
    }

    #[test]
    fn percentages() {
        assert!(msgs(|p, v| check_percentage(&IntOrString::Int(100), p, v)).is_empty());
        assert!(msgs(|p, v| check_percentage(&IntOrString::String("0.5".into()), p, v)).is_empty());
        assert_eq!(
            msgs(|p, v| check_percentage(&IntOrString::Int(101), p, v)),
            vec!["must be in inclusive range [0.0, 100.0]"]
        );
        assert_eq!(
            msgs(|p, v| check_percentage(&IntOrString::String("x".into()), p, v)).len(),
            1
        );
    }
}
