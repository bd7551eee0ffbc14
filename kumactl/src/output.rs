//! Tables, YAML and JSON as kumactl prints them.

use kuma_crds::resource::{ResourceType, Scope};
use serde_json::Value;

/// Columns separated by at least three spaces (Go's tabwriter, padding 3).
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.len());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i == last {
                    c.to_string()
                } else {
                    format!("{c:<w$}   ", w = widths.get(i).copied().unwrap_or(0))
                }
            })
            .collect::<String>()
            .trim_end_matches(' ')
            .to_string()
    };
    let mut out = line(header.to_vec());
    out.push('\n');
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

/// Kuma's age: `Ns`, `Nm`, `Nh`, `Nd`, `Ny` since an RFC 3339 time.
pub fn age(time: Option<&str>) -> String {
    let Some(t) = time.and_then(|t| {
        ::time::OffsetDateTime::parse(t, &::time::format_description::well_known::Rfc3339).ok()
    }) else {
        return "never".into();
    };
    let secs = (::time::OffsetDateTime::now_utc() - t).whole_seconds().max(0);
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s if s < 365 * 86_400 => format!("{}d", s / 86_400),
        s => format!("{}y", s / (365 * 86_400)),
    }
}

fn s(v: &Value, pointer: &str) -> String {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// Dataplane tags as `k=v1,v2 k2=v` (sorted).
pub fn dataplane_tags(dp: &Value) -> String {
    let mut tags: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> = Default::default();
    let networking = dp
        .get("networking")
        .or_else(|| dp.pointer("/dataplane/networking"));
    for inbound in networking
        .and_then(|n| n.get("inbound"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        for (k, v) in inbound
            .get("tags")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            tags.entry(k.clone())
                .or_default()
                .insert(v.as_str().unwrap_or("").to_string());
        }
    }
    if let Some(g) = networking
        .and_then(|n| n.pointer("/gateway/tags"))
        .and_then(Value::as_object)
    {
        for (k, v) in g {
            tags.entry(k.clone())
                .or_default()
                .insert(v.as_str().unwrap_or("").to_string());
        }
    }
    tags.iter()
        .map(|(k, vs)| format!("{k}={}", vs.iter().cloned().collect::<Vec<_>>().join(",")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The table of a list of resources of one type.
pub fn resources_table(t: ResourceType, items: &[Value]) -> String {
    match t {
        ResourceType::Mesh => {
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|m| {
                    let mtls = match m.pointer("/mtls/enabledBackend").and_then(Value::as_str) {
                        Some(b) => {
                            let kind = m
                                .pointer("/mtls/backends")
                                .and_then(Value::as_array)
                                .and_then(|bs| {
                                    bs.iter()
                                        .find(|x| x.get("name").and_then(Value::as_str) == Some(b))
                                })
                                .and_then(|x| x.get("type").and_then(Value::as_str))
                                .unwrap_or("");
                            format!("{kind}/{b}")
                        }
                        None => "off".into(),
                    };
                    let on = |p: &str| {
                        if m.pointer(p).and_then(Value::as_bool) == Some(true) {
                            "on"
                        } else {
                            "off"
                        }
                    };
                    vec![
                        s(m, "/name"),
                        mtls,
                        on("/routing/localityAwareLoadBalancing").into(),
                        on("/routing/zoneEgress").into(),
                        age(m.get("modificationTime").and_then(Value::as_str)),
                    ]
                })
                .collect();
            table(&["NAME", "mTLS", "LOCALITY", "ZONEEGRESS", "AGE"], &rows)
        }
        ResourceType::Dataplane => {
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|d| {
                    let address = d
                        .pointer("/networking/advertisedAddress")
                        .or_else(|| d.pointer("/networking/address"))
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string();
                    vec![
                        s(d, "/mesh"),
                        s(d, "/name"),
                        dataplane_tags(d),
                        address,
                        age(d.get("modificationTime").and_then(Value::as_str)),
                    ]
                })
                .collect();
            table(&["MESH", "NAME", "TAGS", "ADDRESS", "AGE"], &rows)
        }
        t if t.descriptor().scope == Scope::Global => {
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|r| {
                    vec![
                        s(r, "/name"),
                        age(r.get("modificationTime").and_then(Value::as_str)),
                    ]
                })
                .collect();
            table(&["NAME", "AGE"], &rows)
        }
        _ => {
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|r| {
                    vec![
                        s(r, "/mesh"),
                        s(r, "/name"),
                        age(r.get("modificationTime").and_then(Value::as_str)),
                    ]
                })
                .collect();
            table(&["MESH", "NAME", "AGE"], &rows)
        }
    }
}

/// `kumactl inspect dataplanes`.
pub fn overview_table(items: &[Value]) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|o| {
            let subs = o
                .pointer("/dataplaneInsight/subscriptions")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let online = subs
                .iter()
                .any(|s| s.get("connectTime").is_some() && s.get("disconnectTime").is_none());
            let sum = |field: &str| -> u64 {
                subs.iter()
                    .filter_map(|s| {
                        s.pointer(&format!("/status/total/{field}"))
                            .and_then(Value::as_str)
                    })
                    .filter_map(|v| v.parse::<u64>().ok())
                    .sum()
            };
            let last = subs.last();
            let mtls = o.pointer("/dataplaneInsight/mTLS");
            let mtls_str = |p: &str| {
                mtls.and_then(|m| m.pointer(p))
                    .and_then(Value::as_str)
                    .map(str::to_string)
            };
            let expiration = mtls_str("/certificateExpirationTime")
                .and_then(|t| {
                    ::time::OffsetDateTime::parse(&t, &::time::format_description::well_known::Rfc3339).ok()
                })
                .map(|t| {
                    format!(
                        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
                        t.year(),
                        u8::from(t.month()),
                        t.day(),
                        t.hour(),
                        t.minute(),
                        t.second()
                    )
                })
                .unwrap_or_else(|| "-".into());
            vec![
                s(o, "/mesh"),
                s(o, "/name"),
                dataplane_tags(o),
                if online { "Online" } else { "Offline" }.to_string(),
                age(last.and_then(|l| l.get("connectTime")).and_then(Value::as_str)),
                age(last
                    .and_then(|l| l.pointer("/status/lastUpdateTime"))
                    .and_then(Value::as_str)),
                sum("responsesSent").to_string(),
                sum("responsesRejected").to_string(),
                age(mtls_str("/lastCertificateRegeneration").as_deref()),
                expiration,
                mtls.and_then(|m| m.get("certificateRegenerations"))
                    .and_then(Value::as_u64)
                    .unwrap_or(0)
                    .to_string(),
                mtls_str("/issuedBackend").unwrap_or_else(|| "-".into()),
                mtls.and_then(|m| m.get("supportedBackends"))
                    .and_then(Value::as_array)
                    .map(|b| b.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","))
                    .unwrap_or_default(),
                last.and_then(|l| l.pointer("/version/kumaDp/version"))
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                last.and_then(|l| l.pointer("/version/envoy/version"))
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            ]
        })
        .collect();
    table(
        &[
            "MESH",
            "NAME",
            "TAGS",
            "STATUS",
            "LAST CONNECTED AGO",
            "LAST UPDATED AGO",
            "TOTAL UPDATES",
            "TOTAL ERRORS",
            "CERT REGENERATED AGO",
            "CERT EXPIRATION",
            "CERT REGENERATIONS",
            "CERT BACKEND",
            "SUPPORTED CERT BACKENDS",
            "KUMA-DP VERSION",
            "ENVOY VERSION",
        ],
        &rows,
    ) + &rejections_table(items)
}

/// How much of Envoy's reason the table shows (`-o json` has it whole).
const MAX_ERROR_SHOWN: usize = 120;

/// The configurations proxies refuse now (Envoy keeps the last it
/// accepted), with the policies that may cause it: printed below the
/// overview, and only when there are any, so Kuma's table stays as it is.
fn rejections_table(items: &[Value]) -> String {
    let mut rows = Vec::new();
    for o in items {
        let subs = o
            .pointer("/dataplaneInsight/subscriptions")
            .and_then(Value::as_array);
        let Some(open) = subs.and_then(|s| s.iter().rev().find(|s| s.get("disconnectTime").is_none())) else {
            continue;
        };
        let Some(rejections) = open.get("rejections").and_then(Value::as_object) else {
            continue;
        };
        for (short, r) in rejections {
            let policies: Vec<&str> = r
                .get("policies")
                .and_then(Value::as_array)
                .map(|p| p.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            // Envoy's reason comes last, after the resource it quotes.
            let error = s(r, "/error").split_whitespace().collect::<Vec<_>>().join(" ");
            let chars = error.chars().count();
            let error = if chars > MAX_ERROR_SHOWN {
                let tail: String = error.chars().skip(chars - MAX_ERROR_SHOWN).collect();
                format!("…{tail}")
            } else {
                error
            };
            rows.push(vec![
                s(o, "/mesh"),
                s(o, "/name"),
                short.to_uppercase(),
                if policies.is_empty() {
                    "-".into()
                } else {
                    policies.join(",")
                },
                error,
            ]);
        }
    }
    if rows.is_empty() {
        return String::new();
    }
    format!(
        "\nREJECTED BY ENVOY (it keeps the last configuration it accepted):\n{}",
        table(&["MESH", "NAME", "TYPE", "POLICIES", "ERROR"], &rows)
    )
}

/// JSON with two-space indentation and a newline.
pub fn json(v: &Value) -> String {
    format!("{}\n", serde_json::to_string_pretty(v).unwrap_or_default())
}

/// YAML.
pub fn yaml(v: &Value) -> String {
    serde_yaml::to_string(v).unwrap_or_default()
}

/// Kuma's `kumactl inspect <policy>`: the data plane proxies a policy affects.
pub fn affected_dataplanes(v: &Value) -> String {
    let mut out = String::from("Affected data plane proxies:\n\n");
    for item in v.get("items").and_then(Value::as_array).into_iter().flatten() {
        if let Some(name) = item.get("name").and_then(Value::as_str) {
            out.push_str(&format!("  {name}\n\n"));
        }
    }
    out
}

/// `kumactl inspect dataplane NAME` (`--type policies`): Kuma's columns,
/// each policy kind with the KRIs of the policies it merges.
pub fn dataplane_policies_table(list: &Value) -> String {
    let rows: Vec<Vec<String>> = list
        .get("policies")
        .and_then(Value::as_array)
        .map(|policies| {
            policies
                .iter()
                .map(|p| {
                    let kind = p.get("kind").and_then(Value::as_str).unwrap_or_default();
                    let origins: Vec<&str> = p
                        .get("origins")
                        .and_then(Value::as_array)
                        .map(|o| {
                            o.iter()
                                .filter_map(|o| o.get("kri").and_then(Value::as_str))
                                .collect()
                        })
                        .unwrap_or_default();
                    vec![kind.to_string(), origins.join(",")]
                })
                .collect()
        })
        .unwrap_or_default();
    table(&["Kind", "Origins"], &rows)
}

/// `kumactl inspect meshes`: Kuma 2.14's columns (the legacy policy kinds
/// it still shows count 0 here, as they do in a mesh that has none).
pub fn mesh_insights_table(items: &[Value]) -> String {
    const POLICIES: &[(&str, &str)] = &[
        ("TRAFFIC PERMISSIONS", "TrafficPermission"),
        ("TRAFFIC ROUTES", "TrafficRoute"),
        ("CIRCUIT BREAKERS", "CircuitBreaker"),
        ("HEALTH CHECKS", "HealthCheck"),
        ("FAULT INJECTIONS", "FaultInjection"),
        ("EXTERNAL SERVICES", "ExternalService"),
        ("TRAFFIC TRACES", "TrafficTrace"),
        ("TRAFFIC LOGS", "TrafficLog"),
        ("PROXY TEMPLATES", "ProxyTemplate"),
        ("RATE LIMITS", "RateLimit"),
    ];
    let count = |v: &Value, pointer: &str| v.pointer(pointer).and_then(Value::as_u64).unwrap_or(0);
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|m| {
            let mut row = vec![
                m.get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                format!(
                    "{}/{}",
                    count(m, "/dataplanes/online"),
                    count(m, "/dataplanes/total")
                ),
            ];
            row.extend(
                POLICIES
                    .iter()
                    .map(|(_, t)| count(m, &format!("/policies/{t}/total")).to_string()),
            );
            row
        })
        .collect();
    let mut header = vec!["MESH", "DATAPLANES"];
    header.extend(POLICIES.iter().map(|(h, _)| *h));
    table(&header, &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mesh_insights_table_is_kumas_layout() {
        let item = serde_json::json!({
            "type": "MeshInsight",
            "name": "default",
            "dataplanes": {"total": 100, "online": 90, "offline": 10},
            "policies": {
                "TrafficPermission": {"total": 7}, "TrafficRoute": {"total": 2},
                "CircuitBreaker": {"total": 5}, "HealthCheck": {"total": 4},
                "FaultInjection": {"total": 6}, "ExternalService": {"total": 9},
                "TrafficTrace": {"total": 1}, "TrafficLog": {"total": 3},
                "ProxyTemplate": {"total": 8}, "RateLimit": {"total": 10},
                "MeshTimeout": {"total": 4}
            }
        });
        assert_eq!(
            mesh_insights_table(&[item]),
            "MESH      DATAPLANES   TRAFFIC PERMISSIONS   TRAFFIC ROUTES   CIRCUIT BREAKERS   HEALTH CHECKS   FAULT INJECTIONS   EXTERNAL SERVICES   TRAFFIC TRACES   TRAFFIC LOGS   PROXY TEMPLATES   RATE LIMITS\n\
             default   90/100       7                     2                5                  4               6                  9                   1                3              8                 10\n"
        );
    }

    #[test]
    fn refused_configuration_is_listed_below_the_overview_only_when_there_is_some() {
        let overview = |rejections: serde_json::Value| {
            serde_json::json!({"mesh": "default", "name": "web", "dataplaneInsight": {"subscriptions": [
                {"connectTime": "2026-01-01T00:00:00Z", "disconnectTime": "2026-01-01T00:00:01Z",
                 "rejections": {"lds": {"error": "old"}}},
                {"connectTime": "2026-01-01T00:00:02Z", "rejections": rejections}
            ]}})
        };
        assert_eq!(rejections_table(&[overview(serde_json::json!({}))]), "");
        let refused = overview(serde_json::json!({"cds": {
            "time": "2026-01-01T00:00:03Z", "version": "v2",
            "error": format!("name: \"rejected-cluster\"\nconnect_timeout {{\n}}\n: {}(value must be greater than 0s)", "x".repeat(200)),
            "policies": ["MeshProxyPatch/bad"]
        }}));
        assert_eq!(
            rejections_table(&[refused]),
            format!(
                "\nREJECTED BY ENVOY (it keeps the last configuration it accepted):\n\
             MESH      NAME   TYPE   POLICIES             ERROR\n\
             default   web    CDS    MeshProxyPatch/bad   …{}(value must be greater than 0s)\n",
                "x".repeat(89)
            )
        );
    }

    #[test]
    fn dataplane_policies_table_is_kumas_layout() {
        let list = serde_json::json!({"policies": [
            {"kind": "MeshTimeout", "origins": [
                {"kri": "kri_mt_default___web_", "name": "web"},
                {"kri": "kri_mt_default___all_", "name": "all"}
            ]},
            {"kind": "MeshTrafficPermission", "origins": [{"kri": "kri_mtp_default___allow_"}]}
        ]});
        assert_eq!(
            dataplane_policies_table(&list),
            "Kind                    Origins\n\
             MeshTimeout             kri_mt_default___web_,kri_mt_default___all_\n\
             MeshTrafficPermission   kri_mtp_default___allow_\n"
        );
    }
}
