//! Variables in resource documents (`kumactl apply -v`, `kuma-dp --dataplane-var`):
//! the mustache subset Kuma renders them with: `{{ name }}`
//! (HTML-escaped, as Kuma's renderer does), `{{{ name }}}` and `{{& name }}`
//! (raw); unknown variables render empty.

use std::collections::BTreeMap;

fn escape(v: &str) -> String {
    v.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&#34;")
        .replace('\'', "&#39;")
}

/// Renders `text` with `vars`.
pub fn render(text: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let (raw, body_start, close) = if let Some(a) = after.strip_prefix('{') {
            (true, a, "}}}")
        } else {
            (false, after, "}}")
        };
        let Some(end) = body_start.find(close) else {
            out.push_str(&rest[start..]);
            return out;
        };
        let mut name = body_start[..end].trim();
        let mut raw = raw;
        if let Some(n) = name.strip_prefix('&') {
            name = n.trim();
            raw = true;
        }
        let value = vars.get(name).map(String::as_str).unwrap_or("");
        out.push_str(&if raw { value.to_string() } else { escape(value) });
        rest = &body_start[end + close.len()..];
    }
    out.push_str(rest);
    out
}

/// Parses `k=v` pairs.
pub fn parse_vars(pairs: &[String]) -> Result<BTreeMap<String, String>, String> {
    pairs
        .iter()
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| format!("invalid variable {p:?}: expected key=value"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_kuma() {
        let vars = BTreeMap::from([
            ("address".to_string(), "10.0.0.1".to_string()),
            ("q".to_string(), "a&b".to_string()),
        ]);
        assert_eq!(render("address: {{ address }}", &vars), "address: 10.0.0.1");
        assert_eq!(
            render("{{q}} {{{q}}} {{& q}} {{missing}}!", &vars),
            "a&amp;b a&b a&b !"
        );
        assert_eq!(render("no {{ end", &vars), "no {{ end");
    }
}
