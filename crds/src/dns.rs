//! The DNS table of a transparent proxy: the mesh names of the services it
//! reaches and their VIPs, as the control plane sends it to kuma-dp's DNS
//! proxy (Kuma's `/dns` dynamic configuration, served by Envoy on a Unix
//! socket and polled by kuma-dp). Shared by both ends so they agree.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};

/// The path of the table on the dynamic-configuration listener.
pub const DNS_PATH: &str = "/dns";
/// The mesh's DNS domain (Kuma's `dnsServer.domain`).
pub const MESH_DOMAIN: &str = "mesh";
/// How long answers may be cached, in seconds (Kuma's fixed 30).
pub const DNS_TTL: u32 = 30;

/// The Unix socket in kuma-dp's work directory where Envoy serves the
/// dynamic configuration (Kuma's name, cut to fit a socket path).
pub fn dynamic_config_socket(workdir: &str) -> String {
    let mut base = std::path::Path::new(workdir)
        .join("kuma-mesh-metric-config")
        .display()
        .to_string();
    if base.len() > 98 {
        let mut cut = 98;
        while !base.is_char_boundary(cut) {
            cut -= 1;
        }
        base.truncate(cut);
    }
    base + ".sock"
}

/// One name and its addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DnsRecord {
    /// The name, without a trailing dot.
    pub name: String,
    /// IPv4 and IPv6 addresses, as text.
    pub ips: Vec<String>,
}

/// The table (Kuma's `DNSProxyConfig`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsTable {
    /// The records, sorted by name.
    pub records: Vec<DnsRecord>,
    /// The TTL of every answer, in seconds.
    pub ttl: u32,
    /// Labels of the proxy's DNS metrics.
    #[serde(rename = "extraLabels", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra_labels: BTreeMap<String, String>,
}

impl DnsTable {
    /// A table of `records` (sorted and deduplicated here, so equal
    /// tables serialize to equal bytes).
    pub fn new(mut records: Vec<DnsRecord>) -> Self {
        records.sort();
        records.dedup_by(|a, b| a.name == b.name);
        DnsTable {
            records,
            ttl: DNS_TTL,
            extra_labels: BTreeMap::new(),
        }
    }

    /// The addresses of each name, lower-cased and without a trailing
    /// dot; addresses that do not parse are left out.
    pub fn lookup_map(&self) -> BTreeMap<String, Vec<IpAddr>> {
        self.records
            .iter()
            .map(|r| {
                (
                    r.name.trim_end_matches('.').to_ascii_lowercase(),
                    r.ips.iter().filter_map(|ip| ip.parse().ok()).collect(),
                )
            })
            .collect()
    }
}

/// The names a `kuma.io/service` is known by: `<service>.mesh`, and the
/// same with `_` turned into `.` (`backend_shop_svc_80.mesh` and
/// `backend.shop.svc.80.mesh`), as Kuma names them.
pub fn service_names(service: &str) -> Vec<String> {
    let mut names = vec![format!("{service}.{MESH_DOMAIN}")];
    let dotted = service.replace('_', ".");
    if dotted != service {
        names.push(format!("{dotted}.{MESH_DOMAIN}"));
    }
    names.into_iter().filter(|n| is_dns_name(n)).collect()
}

/// A VIP's IPv6 form for AAAA answers: the IPv4-mapped address, written
/// as Kuma writes it (`::ffff:f000:1`).
pub fn ipv6_of(vip: Ipv4Addr) -> String {
    let [a, b, c, d] = vip.octets();
    format!(
        "::ffff:{:x}:{:x}",
        u16::from_be_bytes([a, b]),
        u16::from_be_bytes([c, d])
    )
}

/// Whether `name` can be asked for in DNS: labels of 1–63 letters, digits,
/// `-` and `_`, 253 characters at most.
pub fn is_dns_name(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_get_kumas_two_names() {
        assert_eq!(
            service_names("backend_shop_svc_80"),
            vec!["backend_shop_svc_80.mesh", "backend.shop.svc.80.mesh"]
        );
        assert_eq!(service_names("web"), vec!["web.mesh"]);
        assert!(service_names("bad name").is_empty());
    }

    #[test]
    fn the_ipv6_form_is_the_mapped_address() {
        assert_eq!(ipv6_of(Ipv4Addr::new(240, 0, 0, 1)), "::ffff:f000:1");
        let parsed: std::net::Ipv6Addr = ipv6_of(Ipv4Addr::new(241, 2, 3, 4))
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed.to_ipv4_mapped(), Some(Ipv4Addr::new(241, 2, 3, 4)));
    }

    #[test]
    fn the_wire_form_is_kumas() {
        let table = DnsTable::new(vec![
            DnsRecord {
                name: "web.mesh".into(),
                ips: vec!["240.0.0.2".into()],
            },
            DnsRecord {
                name: "api.mesh".into(),
                ips: vec!["240.0.0.1".into(), "::ffff:f000:1".into()],
            },
        ]);
        let text = serde_json::to_string(&table).unwrap_or_default();
        assert_eq!(
            text,
            r#"{"records":[{"name":"api.mesh","ips":["240.0.0.1","::ffff:f000:1"]},{"name":"web.mesh","ips":["240.0.0.2"]}],"ttl":30}"#
        );
        let back: DnsTable = serde_json::from_str(&text).unwrap_or_default();
        assert_eq!(back, table);
        assert_eq!(back.lookup_map()["api.mesh"].len(), 2);
    }
}
