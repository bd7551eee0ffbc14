//! The transparent proxy's configuration: Kuma's defaults, its YAML/JSON
//! config file (`--config`, `--config-file`) and its flags, checked before
//! anything changes.

use std::net::IpAddr;

use serde::Deserialize;

/// Which IP families get rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpFamilyMode {
    /// IPv4, and IPv6 when the host has IPv6.
    DualStack,
    /// IPv4 only.
    Ipv4,
}

impl std::str::FromStr for IpFamilyMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "" | "dualstack" => Ok(IpFamilyMode::DualStack),
            "ipv4" => Ok(IpFamilyMode::Ipv4),
            other => Err(format!(
                "invalid ip family mode {other:?}: must be one of 'dualstack' or 'ipv4'"
            )),
        }
    }
}

/// Outbound ports excluded for some UIDs (`[protocol:][ports:]uids`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UidExclusion {
    /// `tcp`, `udp`, or both.
    pub protocols: Vec<&'static str>,
    /// Ports and ranges, as iptables writes them (`1000:2000`).
    pub ports: String,
    /// A UID or a range (`106:108`).
    pub uids: String,
}

/// Everything `kumactl install transparent-proxy` decides from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The UID kuma-dp runs as (its traffic is not redirected).
    pub kuma_dp_uid: u32,
    /// IP families.
    pub ip_family_mode: IpFamilyMode,
    /// Whether inbound traffic is redirected.
    pub redirect_inbound: bool,
    /// Envoy's inbound port.
    pub inbound_port: u16,
    /// Envoy's outbound port.
    pub outbound_port: u16,
    /// Inbound ports not redirected.
    pub exclude_inbound_ports: Vec<u16>,
    /// Outbound ports not redirected.
    pub exclude_outbound_ports: Vec<u16>,
    /// Outbound ports not redirected for some UIDs.
    pub exclude_outbound_ports_for_uids: Vec<UidExclusion>,
    /// Sources whose inbound traffic is not redirected.
    pub exclude_inbound_ips: Vec<String>,
    /// Destinations not redirected.
    pub exclude_outbound_ips: Vec<String>,
    /// DNS to the resolvers of `/etc/resolv.conf` goes to kuma-dp's DNS proxy.
    pub redirect_dns: bool,
    /// All DNS goes to kuma-dp's DNS proxy.
    pub redirect_all_dns: bool,
    /// kuma-dp's DNS proxy port.
    pub dns_port: u16,
    /// Do not split DNS connection tracking into zones.
    pub skip_dns_conntrack_zone_split: bool,
    /// Drop packets in the INVALID conntrack state.
    pub drop_invalid_packets: bool,
    /// Log matching packets.
    pub iptables_logs: bool,
    /// Mark every rule with a `kuma/mesh/transparent/proxy/…` comment
    /// (uninstall finds rules by them).
    pub comments: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            kuma_dp_uid: 5678,
            ip_family_mode: IpFamilyMode::DualStack,
            redirect_inbound: true,
            inbound_port: 15006,
            outbound_port: 15001,
            exclude_inbound_ports: Vec::new(),
            exclude_outbound_ports: Vec::new(),
            exclude_outbound_ports_for_uids: Vec::new(),
            exclude_inbound_ips: Vec::new(),
            exclude_outbound_ips: Vec::new(),
            redirect_dns: false,
            redirect_all_dns: false,
            dns_port: 15053,
            skip_dns_conntrack_zone_split: false,
            drop_invalid_packets: false,
            iptables_logs: false,
            comments: true,
        }
    }
}

/// A port list: comma-separated numbers (a YAML list or a string).
pub fn parse_ports(what: &str, value: &str) -> Result<Vec<u16>, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| match p.parse::<u16>() {
            Ok(0) | Err(_) => Err(format!("{what}: {p:?} is not a port (1-65535)")),
            Ok(n) => Ok(n),
        })
        .collect()
}

/// IP addresses or CIDRs, comma-separated.
pub fn parse_ips(what: &str, value: &str) -> Result<Vec<String>, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|item| {
            let (address, prefix) = item.split_once('/').unwrap_or((item, ""));
            let ip: IpAddr = address
                .parse()
                .map_err(|_| format!("{what}: {item:?} is not an IP address or CIDR"))?;
            if !prefix.is_empty() {
                let max = if ip.is_ipv4() { 32 } else { 128 };
                match prefix.parse::<u8>() {
                    Ok(p) if p <= max => {}
                    _ => return Err(format!("{what}: {item:?} has an invalid prefix length")),
                }
            }
            Ok(item.to_string())
        })
        .collect()
}

/// One `--exclude-outbound-ports-for-uids` value.
pub fn parse_uid_exclusion(value: &str) -> Result<UidExclusion, String> {
    let parts: Vec<&str> = value.split(':').collect();
    let (protocol, ports, uids) = match parts.as_slice() {
        [uids] => ("*", "*", *uids),
        [ports, uids] => ("*", *ports, *uids),
        [protocol, ports, uids] => (*protocol, *ports, *uids),
        _ => {
            return Err(format!(
                "invalid --exclude-outbound-ports-for-uids value {value:?}: expected [protocol:][ports:]uids"
            ));
        }
    };
    let protocols = match protocol {
        "" | "*" => vec!["tcp", "udp"],
        p => {
            let mut out = Vec::new();
            for item in p.split(',') {
                match item {
                    "tcp" => out.push("tcp"),
                    "udp" => out.push("udp"),
                    other => return Err(format!("invalid or unsupported protocol: '{other}'")),
                }
            }
            out
        }
    };
    let ports = match ports {
        "" | "*" => "1:65535".to_string(),
        p => {
            let mut out = Vec::new();
            for item in p.split(',') {
                let range = number_or_range::<u16>(item)
                    .ok_or_else(|| format!("invalid port or range '{item}' in {value:?}"))?;
                out.push(range);
            }
            out.join(",")
        }
    };
    if uids == "*" {
        return Err("wildcard '*' is not allowed for UIDs".into());
    }
    if uids.contains(',') {
        return Err(format!(
            "invalid UID entry: '{uids}'. It should either be a single item or a range"
        ));
    }
    let uids = number_or_range::<u32>(uids).ok_or_else(|| format!("invalid UID entry: '{uids}'"))?;
    Ok(UidExclusion {
        protocols,
        ports,
        uids,
    })
}

/// `n` or `low-high` as iptables writes it (`n`, `low:high`), the numbers
/// as parsed (so `+22` or `022` become `22`: only digits reach the rules);
/// `None` for anything else, a reversed range included.
fn number_or_range<T: std::str::FromStr + Ord + std::fmt::Display>(item: &str) -> Option<String> {
    match item.split('-').collect::<Vec<_>>().as_slice() {
        [n] => n.parse::<T>().ok().map(|n| n.to_string()),
        [low, high] => {
            let (low, high) = (low.parse::<T>().ok()?, high.parse::<T>().ok()?);
            (low <= high).then(|| format!("{low}:{high}"))
        }
        _ => None,
    }
}

/// The config file (Kuma's keys; unknown keys are errors naming them).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigFile {
    /// kuma-dp's UID (a number).
    #[serde(rename = "kumaDPUser")]
    pub kuma_dp_user: Option<serde_yaml::Value>,
    /// `dualstack` or `ipv4`.
    pub ip_family_mode: Option<String>,
    /// Redirection.
    pub redirect: Option<RedirectFile>,
    /// Drop INVALID packets.
    pub drop_invalid_packets: Option<bool>,
    /// Print the rules.
    pub verbose: Option<bool>,
    /// Print only.
    pub dry_run: Option<bool>,
    /// Packet logging.
    pub log: Option<LogFile>,
    /// Comments on rules.
    pub comments: Option<CommentsFile>,
    /// Accepted for compatibility; no effect here.
    pub wait: Option<u32>,
    /// Accepted for compatibility; no effect here.
    pub wait_interval: Option<u32>,
    /// Accepted for compatibility; no effect here.
    pub retry: Option<serde_yaml::Value>,
    /// Accepted for compatibility; no effect here.
    pub store_firewalld: Option<bool>,
    /// Accepted for compatibility; no effect here.
    pub iptables_executables: Option<serde_yaml::Value>,
    /// Accepted for compatibility; no effect here.
    pub ebpf: Option<serde_yaml::Value>,
    /// Accepted for compatibility; no effect here.
    pub cni_mode: Option<bool>,
}

/// `redirect`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RedirectFile {
    /// `redirect.inbound`.
    pub inbound: Option<TrafficFile>,
    /// `redirect.outbound`.
    pub outbound: Option<TrafficFile>,
    /// `redirect.dns`.
    pub dns: Option<DnsFile>,
    /// Accepted for compatibility; no effect here.
    pub vnet: Option<serde_yaml::Value>,
}

/// `redirect.inbound` / `redirect.outbound`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficFile {
    /// Redirect at all.
    pub enabled: Option<bool>,
    /// Envoy's port.
    pub port: Option<u16>,
    /// Ports not redirected.
    pub exclude_ports: Option<serde_yaml::Value>,
    /// Ports not redirected for UIDs.
    #[serde(rename = "excludePortsForUIDs")]
    pub exclude_ports_for_uids: Option<Vec<String>>,
    /// Addresses not redirected.
    #[serde(rename = "excludePortsForIPs")]
    pub exclude_ports_for_ips: Option<Vec<String>>,
    /// Accepted for compatibility; no effect here.
    pub include_ports: Option<serde_yaml::Value>,
    /// Accepted for compatibility; no effect here.
    pub insert_redirect_instead_of_append: Option<bool>,
}

/// `redirect.dns`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DnsFile {
    /// Redirect DNS.
    pub enabled: Option<bool>,
    /// kuma-dp's DNS proxy port.
    pub port: Option<u16>,
    /// All DNS, not only to the configured resolvers.
    pub capture_all: Option<bool>,
    /// No conntrack zones.
    pub skip_conntrack_zone_split: Option<bool>,
    /// Accepted for compatibility; `/etc/resolv.conf` is read.
    pub resolv_config_path: Option<String>,
}

/// `log`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LogFile {
    /// Log packets.
    pub enabled: Option<bool>,
    /// Accepted for compatibility.
    pub level: Option<u32>,
}

/// `comments`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CommentsFile {
    /// No comments on rules.
    pub disabled: Option<bool>,
}

fn ports_value(what: &str, v: &serde_yaml::Value) -> Result<Vec<u16>, String> {
    match v {
        serde_yaml::Value::String(s) => parse_ports(what, s),
        serde_yaml::Value::Number(n) => parse_ports(what, &n.to_string()),
        serde_yaml::Value::Sequence(items) => {
            let mut out = Vec::new();
            for item in items {
                out.extend(ports_value(what, item)?);
            }
            Ok(out)
        }
        serde_yaml::Value::Null => Ok(Vec::new()),
        _ => Err(format!("{what}: expected a list of ports")),
    }
}

impl Config {
    /// Applies a config file's text (YAML or JSON) over `self`.
    pub fn apply_file(&mut self, text: &str) -> Result<(), String> {
        let de = serde_yaml::Deserializer::from_str(text);
        let file: ConfigFile = serde_path_to_error_like(de)?;
        if let Some(user) = &file.kuma_dp_user {
            self.kuma_dp_uid = match user {
                serde_yaml::Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
                serde_yaml::Value::String(s) if s.is_empty() => Some(self.kuma_dp_uid),
                serde_yaml::Value::String(s) => s.parse().ok(),
                _ => None,
            }
            .ok_or_else(|| format!("kumaDPUser: {user:?} is not a UID"))?;
        }
        if let Some(m) = &file.ip_family_mode {
            self.ip_family_mode = m.parse()?;
        }
        if let Some(r) = &file.redirect {
            if let Some(i) = &r.inbound {
                if let Some(e) = i.enabled {
                    self.redirect_inbound = e;
                }
                if let Some(p) = i.port {
                    self.inbound_port = p;
                }
                if let Some(v) = &i.exclude_ports {
                    self.exclude_inbound_ports = ports_value("redirect.inbound.excludePorts", v)?;
                }
                if let Some(v) = &i.exclude_ports_for_ips {
                    self.exclude_inbound_ips =
                        parse_ips("redirect.inbound.excludePortsForIPs", &v.join(","))?;
                }
            }
            if let Some(o) = &r.outbound {
                if let Some(p) = o.port {
                    self.outbound_port = p;
                }
                if let Some(v) = &o.exclude_ports {
                    self.exclude_outbound_ports = ports_value("redirect.outbound.excludePorts", v)?;
                }
                if let Some(v) = &o.exclude_ports_for_ips {
                    self.exclude_outbound_ips =
                        parse_ips("redirect.outbound.excludePortsForIPs", &v.join(","))?;
                }
                if let Some(v) = &o.exclude_ports_for_uids {
                    self.exclude_outbound_ports_for_uids = v
                        .iter()
                        .map(|x| parse_uid_exclusion(x))
                        .collect::<Result<_, _>>()?;
                }
            }
            if let Some(d) = &r.dns {
                let enabled = d.enabled.unwrap_or(false);
                let all = d.capture_all.unwrap_or(false);
                self.redirect_all_dns = enabled && all;
                self.redirect_dns = enabled && !all;
                if let Some(p) = d.port {
                    self.dns_port = p;
                }
                if let Some(s) = d.skip_conntrack_zone_split {
                    self.skip_dns_conntrack_zone_split = s;
                }
            }
        }
        if let Some(d) = file.drop_invalid_packets {
            self.drop_invalid_packets = d;
        }
        if let Some(l) = &file.log
            && let Some(e) = l.enabled
        {
            self.iptables_logs = e;
        }
        if let Some(c) = &file.comments
            && let Some(d) = c.disabled
        {
            self.comments = !d;
        }
        Ok(())
    }

    /// Rejects what cannot work before anything changes.
    pub fn check(&self) -> Result<(), String> {
        if self.redirect_dns && self.redirect_all_dns {
            return Err(
                "only one of '--redirect-dns' or '--redirect-all-dns-traffic' should be specified".into(),
            );
        }
        let mut ports = vec![
            ("--redirect-inbound-port", self.inbound_port),
            ("--redirect-outbound-port", self.outbound_port),
        ];
        if self.redirect_dns || self.redirect_all_dns {
            ports.push(("--redirect-dns-port", self.dns_port));
        }
        for (i, (a, pa)) in ports.iter().enumerate() {
            if *pa == 0 {
                return Err(format!("{a}: 0 is not a port"));
            }
            for (b, pb) in &ports[i + 1..] {
                if pa == pb {
                    return Err(format!("{a} and {b} are both {pa}: each needs a port of its own"));
                }
            }
        }
        for (what, excluded) in [
            ("--exclude-inbound-ports", &self.exclude_inbound_ports),
            ("--exclude-outbound-ports", &self.exclude_outbound_ports),
        ] {
            for (name, port) in &ports {
                if excluded.contains(port) {
                    return Err(format!(
                        "{what} lists {port}, the port of {name}: traffic to Envoy must not be excluded"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Deserializes with the path of the first field that does not fit.
fn serde_path_to_error_like(de: serde_yaml::Deserializer<'_>) -> Result<ConfigFile, String> {
    match ConfigFile::deserialize(de) {
        Ok(f) => Ok(f),
        Err(e) if e.to_string().contains("EOF") => Ok(ConfigFile::default()),
        Err(e) => Err(format!("transparent proxy config: {e}")),
    }
}
