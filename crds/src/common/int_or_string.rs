//! Kubernetes' `IntOrString`, which Kuma uses for percentages (`50`, `"50.5"`)
//! and for ports that may be named (`8080`, `"http"`).

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A value written either as an integer or as a string.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IntOrString {
    /// Written as a number.
    Int(i64),
    /// Written as a string.
    String(String),
}

impl IntOrString {
    /// The value as a decimal number when it is one (`50` or `"50.5"`).
    pub fn as_decimal(&self) -> Option<f64> {
        match self {
            IntOrString::Int(i) => Some(*i as f64),
            IntOrString::String(s) => {
                let s = s.trim();
                // Only plain decimals: no exponents, signs, `inf` or `NaN`.
                let valid = !s.is_empty()
                    && s.bytes().all(|b| b.is_ascii_digit() || b == b'.' || b == b'-')
                    && s.bytes().filter(|b| *b == b'.').count() <= 1
                    && !s[1..].contains('-');
                if valid {
                    s.parse::<f64>().ok().filter(|f| f.is_finite())
                } else {
                    None
                }
            }
        }
    }
}

impl fmt::Display for IntOrString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IntOrString::Int(i) => write!(f, "{i}"),
            IntOrString::String(s) => f.write_str(s),
        }
    }
}

impl Serialize for IntOrString {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            IntOrString::Int(i) => s.serialize_i64(*i),
            IntOrString::String(v) => s.serialize_str(v),
        }
    }
}

impl<'de> Deserialize<'de> for IntOrString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = IntOrString;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer or a string")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<IntOrString, E> {
                Ok(IntOrString::Int(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<IntOrString, E> {
                i64::try_from(v)
                    .map(IntOrString::Int)
                    .map_err(|_| E::custom("integer is too large"))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<IntOrString, E> {
                // YAML users write `percentage: 50.5`; keep it, as a string, exactly.
                Ok(IntOrString::String(v.to_string()))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<IntOrString, E> {
                Ok(IntOrString::String(v.to_string()))
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl JsonSchema for IntOrString {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "IntOrString".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"x-kubernetes-int-or-string": true})
    }

    fn inline_schema() -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals() {
        assert_eq!(IntOrString::Int(50).as_decimal(), Some(50.0));
        assert_eq!(IntOrString::String("50.5".into()).as_decimal(), Some(50.5));
        assert_eq!(IntOrString::String("abc".into()).as_decimal(), None);
        assert_eq!(IntOrString::String("1e3".into()).as_decimal(), None);
        assert_eq!(IntOrString::String("NaN".into()).as_decimal(), None);
        assert_eq!(IntOrString::String("".into()).as_decimal(), None);
    }

    #[test]
    fn round_trips_both_forms() {
        let v: IntOrString = serde_json::from_str("8080").unwrap();
        assert_eq!(v, IntOrString::Int(8080));
        assert_eq!(serde_json::to_string(&v).unwrap(), "8080");
        let s: IntOrString = serde_json::from_str("\"http\"").unwrap();
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"http\"");
    }
}
