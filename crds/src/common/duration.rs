//! Durations written the way Kuma users write them (`10s`, `1m30s`, `250ms`).

use std::fmt;
use std::time::Duration as StdDuration;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration as written in a document, in Go's `time.ParseDuration` syntax.
///
/// The text is kept as written so a document round-trips unchanged; it is
/// parsed when validated and when used. An unparsable value is still
/// deserialized so that validation can report it with its field path instead
/// of failing the whole document at the first bad value.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Duration(String);

impl Duration {
    /// A duration from its text, e.g. `Duration::from_text("10s")`.
    pub fn from_text(text: impl Into<String>) -> Self {
        Duration(text.into())
    }

    /// The duration as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The parsed value; an error says what is wrong with the text.
    pub fn parse(&self) -> Result<SignedDuration, DurationError> {
        parse_go_duration(&self.0)
    }

    /// The parsed value when it is valid and not negative.
    pub fn to_std(&self) -> Option<StdDuration> {
        match self.parse() {
            Ok(d) if !d.negative => Some(d.magnitude),
            _ => None,
        }
    }
}

impl From<StdDuration> for Duration {
    fn from(d: StdDuration) -> Self {
        Duration(format_go_duration(d))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Duration)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string"})
    }

    fn inline_schema() -> bool {
        true
    }
}

/// A parsed duration, which Go's syntax allows to be negative.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignedDuration {
    /// Whether a leading `-` was given.
    pub negative: bool,
    /// The absolute value.
    pub magnitude: StdDuration,
}

/// Why a duration's text could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DurationError(&'static str);

/// Parses Go's duration syntax: an optional sign, then one or more decimal
/// numbers (with an optional fraction) each followed by a unit among
/// `ns`, `us`, `µs`, `ms`, `s`, `m`, `h`; `0` alone is allowed.
pub fn parse_go_duration(text: &str) -> Result<SignedDuration, DurationError> {
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Ok(SignedDuration {
            negative,
            magnitude: StdDuration::ZERO,
        });
    }
    if rest.is_empty() {
        return Err(DurationError("is empty"));
    }
    let mut total_nanos: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let int_part = &rest[..int_len];
        rest = &rest[int_len..];
        let mut frac_part = "";
        if let Some(after_dot) = rest.strip_prefix('.') {
            let frac_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
            frac_part = &after_dot[..frac_len];
            rest = &after_dot[frac_len..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(DurationError("has a unit without a number"));
        }
        let unit_len = rest
            .bytes()
            .take_while(|b| !(b.is_ascii_digit() || *b == b'.'))
            .count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(DurationError("is missing a unit (ns, us, ms, s, m or h)")),
            _ => return Err(DurationError("has an unknown unit (use ns, us, ms, s, m or h)")),
        };
        let int_value: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| DurationError("is too large"))?
        };
        let mut nanos = int_value
            .checked_mul(unit_nanos)
            .ok_or(DurationError("is too large"))?;
        if !frac_part.is_empty() {
            // Only the digits that can still matter at nanosecond precision.
            let digits = &frac_part[..frac_part.len().min(18)];
            let frac_value: u128 = digits.parse().map_err(|_| DurationError("is invalid"))?;
            let scale = 10u128.pow(digits.len() as u32);
            nanos = nanos
                .checked_add(frac_value * unit_nanos / scale)
                .ok_or(DurationError("is too large"))?;
        }
        total_nanos = total_nanos
            .checked_add(nanos)
            .ok_or(DurationError("is too large"))?;
    }
    // Go durations are an int64 of nanoseconds.
    if total_nanos > i64::MAX as u128 {
        return Err(DurationError("is too large"));
    }
    let magnitude = StdDuration::new(
        (total_nanos / 1_000_000_000) as u64,
        (total_nanos % 1_000_000_000) as u32,
    );
    Ok(SignedDuration { negative, magnitude })
}

/// Formats a duration the way Go's `Duration.String` does (`1m30s`, `250ms`).
pub fn format_go_duration(d: StdDuration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < 1_000_000_000 {
        return if nanos.is_multiple_of(1_000_000) {
            format!("{}ms", nanos / 1_000_000)
        } else if nanos.is_multiple_of(1_000) {
            format!("{}us", nanos / 1_000)
        } else {
            format!("{nanos}ns")
        };
    }
    let mut out = String::new();
    let hours = nanos / 3_600_000_000_000;
    let minutes = (nanos / 60_000_000_000) % 60;
    let sec_nanos = nanos % 60_000_000_000;
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if hours > 0 || minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    let secs = sec_nanos / 1_000_000_000;
    let frac = sec_nanos % 1_000_000_000;
    if frac == 0 {
        out.push_str(&format!("{secs}s"));
    } else {
        let frac_text = format!("{frac:09}");
        out.push_str(&format!("{secs}.{}s", frac_text.trim_end_matches('0')));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> StdDuration {
        let d = parse_go_duration(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert!(!d.negative);
        d.magnitude
    }

    #[test]
    fn parses_go_syntax() {
        assert_eq!(ok("10s"), StdDuration::from_secs(10));
        assert_eq!(ok("1m30s"), StdDuration::from_secs(90));
        assert_eq!(ok("1h"), StdDuration::from_secs(3600));
        assert_eq!(ok("250ms"), StdDuration::from_millis(250));
        assert_eq!(ok("1.5s"), StdDuration::from_millis(1500));
        assert_eq!(ok("0"), StdDuration::ZERO);
        assert_eq!(ok("0s"), StdDuration::ZERO);
        assert_eq!(ok("100us"), StdDuration::from_micros(100));
        assert_eq!(ok("100µs"), StdDuration::from_micros(100));
        assert_eq!(ok(".5s"), StdDuration::from_millis(500));
        assert!(parse_go_duration("-1s").unwrap().negative);
    }

    #[test]
    fn rejects_bad_text() {
        for bad in [
            "",
            "10",
            "s",
            "1x",
            "ten seconds",
            "1..5s",
            "-",
            "99999999999999999999h",
            "1.s5",
        ] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(format_go_duration(StdDuration::from_secs(90)), "1m30s");
        assert_eq!(format_go_duration(StdDuration::from_secs(3600)), "1h0m0s");
        assert_eq!(format_go_duration(StdDuration::from_millis(250)), "250ms");
        assert_eq!(format_go_duration(StdDuration::from_millis(1500)), "1.5s");
        assert_eq!(format_go_duration(StdDuration::ZERO), "0s");
    }
}
