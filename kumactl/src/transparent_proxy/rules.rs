//! The rules of the transparent proxy, as `iptables-restore` input, in
//! Kuma's layout: the chains `KUMA_MESH_INBOUND`, `KUMA_MESH_OUTBOUND` and
//! their `_REDIRECT` chains in the nat table, DNS redirection in nat
//! OUTPUT, DNS connection tracking zones in raw, INVALID packets dropped
//! in mangle; every rule carries a `kuma/mesh/transparent/proxy/…` comment
//! (uninstall finds Kuma's rules by it). A pure function of the
//! configuration and a few facts about the host.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::config::Config;

/// The prefix of every rule's comment.
pub const COMMENT_PREFIX: &str = "kuma/mesh/transparent/proxy";
/// The prefix of Kuma's chains.
pub const CHAIN_PREFIX: &str = "KUMA_MESH";

const INBOUND: &str = "KUMA_MESH_INBOUND";
const OUTBOUND: &str = "KUMA_MESH_OUTBOUND";
const INBOUND_REDIRECT: &str = "KUMA_MESH_INBOUND_REDIRECT";
const OUTBOUND_REDIRECT: &str = "KUMA_MESH_OUTBOUND_REDIRECT";

/// An IP family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// iptables.
    V4,
    /// ip6tables.
    V6,
}

impl Family {
    fn inbound_passthrough(self) -> &'static str {
        match self {
            Family::V4 => "127.0.0.6/32",
            Family::V6 => "::6/128",
        }
    }

    fn localhost(self) -> &'static str {
        match self {
            Family::V4 => "127.0.0.1/32",
            Family::V6 => "::1/128",
        }
    }

    /// Whether an address (or CIDR) is of this family.
    pub fn holds(self, address: &str) -> bool {
        let ip = address.split('/').next().unwrap_or(address);
        match ip.parse::<IpAddr>() {
            Ok(IpAddr::V4(_)) => self == Family::V4,
            Ok(IpAddr::V6(_)) => self == Family::V6,
            Err(_) => false,
        }
    }
}

/// What the rules depend on besides the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    /// The loopback interface's name.
    pub loopback: String,
    /// The DNS servers of `/etc/resolv.conf` (for `--redirect-dns`).
    pub nameservers: Vec<IpAddr>,
    /// Whether the `conntrack` match and the raw table can be used.
    pub conntrack: bool,
}

impl Default for Host {
    fn default() -> Self {
        Host {
            loopback: "lo".into(),
            nameservers: Vec::new(),
            conntrack: true,
        }
    }
}

/// One chain's rules, in order of addition (`-I` numbered per chain).
#[derive(Default)]
struct Chain {
    name: &'static str,
    lines: Vec<String>,
    inserts: usize,
}

impl Chain {
    fn new(name: &'static str) -> Self {
        Chain {
            name,
            ..Chain::default()
        }
    }

    fn rule(comment: &str, comments: bool, params: &str) -> String {
        if comments {
            format!("-m comment --comment \"{COMMENT_PREFIX}/{comment}\" {params}")
        } else {
            params.to_string()
        }
    }

    fn append(&mut self, comments: bool, comment: &str, params: &str) {
        self.lines.push(format!(
            "-A {} {}",
            self.name,
            Self::rule(comment, comments, params)
        ));
    }

    fn insert(&mut self, comments: bool, comment: &str, params: &str) {
        self.inserts += 1;
        self.lines.push(format!(
            "-I {} {} {}",
            self.name,
            self.inserts,
            Self::rule(comment, comments, params)
        ));
    }
}

/// A table: its custom chains and its chains' rules; empty tables are
/// left out.
fn table(name: &str, custom: &[&str], chains: &[&Chain]) -> Option<String> {
    if chains.iter().all(|c| c.lines.is_empty()) {
        return None;
    }
    let mut out = format!("* {name}\n");
    for c in custom {
        out.push_str(&format!("-N {c}\n"));
    }
    for c in chains {
        for line in &c.lines {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.push_str("COMMIT\n");
    Some(out)
}

/// The `iptables-restore` input (`ip6tables-restore` for IPv6) that sets
/// up the transparent proxy for `family`.
pub fn restore_input(config: &Config, family: Family, host: &Host) -> String {
    let c = config.comments;
    let uid = config.kuma_dp_uid;
    let lo = host.loopback.as_str();
    let dns = config.redirect_dns || config.redirect_all_dns;
    let nameservers: Vec<String> = host
        .nameservers
        .iter()
        .map(|ip| match ip {
            IpAddr::V4(v) => format!("{v}"),
            IpAddr::V6(v) => format!("{v}"),
        })
        .filter(|ip| family.holds(ip))
        .collect();
    // Without a resolver of this family, `--redirect-dns` has nothing to do.
    let dns = dns && (config.redirect_all_dns || !nameservers.is_empty());
    let zone_split = dns && host.conntrack && !config.skip_dns_conntrack_zone_split;

    // raw: DNS connection tracking zones.
    let mut raw_prerouting = Chain::new("PREROUTING");
    let mut raw_output = Chain::new("OUTPUT");
    if zone_split {
        if config.redirect_all_dns {
            raw_prerouting.append(
                c,
                "assign connection tracking zone 1 to all DNS responses",
                "-p udp --sport 53 -j CT --zone 1",
            );
        } else {
            for ip in &nameservers {
                raw_prerouting.append(
                    c,
                    &format!("assign connection tracking zone 1 to DNS responses from {ip}"),
                    &format!("-s {ip} -p udp --sport 53 -j CT --zone 1"),
                );
            }
        }
        raw_output.append(
            c,
            &format!("assign connection tracking zone 1 to DNS traffic from the kuma-dp user (UID {uid})"),
            &format!("-p udp --dport 53 -m owner --uid-owner {uid} -j CT --zone 1"),
        );
        raw_output.append(
            c,
            "assign connection tracking zone 2 to DNS responses from the kuma-dp DNS proxy",
            &format!(
                "-p udp --sport {} -m owner --uid-owner {uid} -j CT --zone 2",
                config.dns_port
            ),
        );
        if config.redirect_all_dns {
            raw_output.append(
                c,
                "assign connection tracking zone 2 to all DNS requests",
                "-p udp --dport 53 -j CT --zone 2",
            );
        } else {
            for ip in &nameservers {
                raw_output.append(
                    c,
                    &format!("assign connection tracking zone 2 to DNS requests destined for {ip}"),
                    &format!("-d {ip} -p udp --dport 53 -j CT --zone 2"),
                );
            }
        }
    }

    // nat.
    let mut prerouting = Chain::new("PREROUTING");
    let input = Chain::new("INPUT");
    let mut output = Chain::new("OUTPUT");
    let postrouting = Chain::new("POSTROUTING");
    let mut inbound = Chain::new(INBOUND);
    let mut outbound = Chain::new(OUTBOUND);
    let mut inbound_redirect = Chain::new(INBOUND_REDIRECT);
    let mut outbound_redirect = Chain::new(OUTBOUND_REDIRECT);

    if config.iptables_logs {
        prerouting.append(
            c,
            "log matching packets using kernel logging",
            "-j LOG --log-prefix PREROUTING: --log-level 7",
        );
        output.insert(
            c,
            "log matching packets using kernel logging",
            "-j LOG --log-prefix OUTPUT: --log-level 7",
        );
    }
    prerouting.append(
        c,
        "redirect inbound TCP traffic to our custom chain for processing",
        &format!("-p tcp -j {INBOUND}"),
    );

    let skip = "skip further processing for configured IP addresses, ports and UIDs";
    for exclusion in &config.exclude_outbound_ports_for_uids {
        for protocol in &exclusion.protocols {
            output.insert(
                c,
                skip,
                &format!(
                    "-m multiport -p {protocol} --dport {} -m owner --uid-owner {} -j RETURN",
                    exclusion.ports, exclusion.uids
                ),
            );
        }
    }
    for ip in config.exclude_outbound_ips.iter().filter(|ip| family.holds(ip)) {
        output.insert(c, skip, &format!("-d {ip} -j RETURN"));
    }
    if dns {
        output.insert(
            c,
            "return early for DNS traffic from kuma-dp",
            &format!("-p udp --dport 53 -m owner --uid-owner {uid} -j RETURN"),
        );
        output.append(
            c,
            &format!(
                "allow applications to perform DNS queries over TCP to port 53 without mesh redirection (only traffic not owned by UID {uid} (kuma-dp user))"
            ),
            &format!("-p tcp --dport 53 -m owner ! --uid-owner {uid} -j RETURN"),
        );
        if config.redirect_all_dns {
            output.insert(
                c,
                &format!(
                    "redirect all DNS requests to the kuma-dp DNS proxy (listening on port {})",
                    config.dns_port
                ),
                &format!("-p udp --dport 53 -j REDIRECT --to-ports {}", config.dns_port),
            );
        } else {
            for ip in &nameservers {
                output.insert(
                    c,
                    &format!(
                        "redirect DNS requests to {ip} to the kuma-dp DNS proxy (listening on port {})",
                        config.dns_port
                    ),
                    &format!(
                        "-d {ip} -p udp --dport 53 -j REDIRECT --to-ports {}",
                        config.dns_port
                    ),
                );
            }
        }
    }
    output.append(
        c,
        "redirect outbound TCP traffic to our custom chain for processing",
        &format!("-p tcp -j {OUTBOUND}"),
    );

    if config.redirect_inbound {
        for ip in config.exclude_inbound_ips.iter().filter(|ip| family.holds(ip)) {
            inbound.append(
                c,
                "skip further processing for configured IP address",
                &format!("-s {ip} -j RETURN"),
            );
        }
        for port in &config.exclude_inbound_ports {
            inbound.append(
                c,
                &format!("exclude inbound traffic from port {port} from redirection"),
                &format!("-p tcp --dport {port} -j RETURN"),
            );
        }
        inbound.append(
            c,
            "redirect all inbound traffic to the custom chain for processing",
            &format!("-p tcp -j {INBOUND_REDIRECT}"),
        );
    } else {
        inbound.append(c, "inbound traffic redirection is disabled", "-p tcp -j RETURN");
    }

    for port in &config.exclude_outbound_ports {
        outbound.append(
            c,
            &format!("exclude outbound traffic from port {port} from redirection"),
            &format!("-p tcp --dport {port} -j RETURN"),
        );
    }
    let passthrough = family.inbound_passthrough();
    let localhost = family.localhost();
    outbound.append(
        c,
        &format!(
            "prevent traffic loops by ensuring traffic from the sidecar proxy (using {passthrough}) to loopback interface is not redirected again"
        ),
        &format!("-s {passthrough} -o {lo} -j RETURN"),
    );
    outbound.append(
        c,
        &format!(
            "redirect outbound TCP traffic destined for loopback interface, but not targeting address {localhost}, and owned by UID {uid} (kuma-dp user) to {INBOUND_REDIRECT} chain for proper handling"
        ),
        &format!("-p tcp -o {lo} ! -d {localhost} -m owner --uid-owner {uid} -j {INBOUND_REDIRECT}"),
    );
    outbound.append(
        c,
        &format!(
            "return outbound TCP traffic destined for loopback interface, owned by any UID other than {uid} (kuma-dp user)"
        ),
        &format!("-p tcp -o {lo} -m owner ! --uid-owner {uid} -j RETURN"),
    );
    outbound.append(
        c,
        &format!("return outbound traffic owned by UID {uid} (kuma-dp user)"),
        &format!("-m owner --uid-owner {uid} -j RETURN"),
    );
    outbound.append(
        c,
        &format!("return traffic destined for localhost ({localhost}) to avoid redirection"),
        &format!("-d {localhost} -j RETURN"),
    );
    outbound.append(
        c,
        "redirect all other outbound traffic to our custom chain for further processing",
        &format!("-j {OUTBOUND_REDIRECT}"),
    );
    inbound_redirect.append(
        c,
        &format!("redirect TCP traffic to envoy (port {})", config.inbound_port),
        &format!("-p tcp -j REDIRECT --to-ports {}", config.inbound_port),
    );
    outbound_redirect.append(
        c,
        &format!("redirect TCP traffic to envoy (port {})", config.outbound_port),
        &format!("-p tcp -j REDIRECT --to-ports {}", config.outbound_port),
    );

    // mangle.
    let mut mangle_prerouting = Chain::new("PREROUTING");
    if config.drop_invalid_packets {
        mangle_prerouting.append(
            c,
            "drop packets in the INVALID state to prevent potential issues with malformed or out-of-order packets",
            "-m conntrack --ctstate INVALID -j DROP",
        );
    }

    let tables = [
        table("raw", &[], &[&raw_prerouting, &raw_output]),
        table(
            "nat",
            &[INBOUND, OUTBOUND, INBOUND_REDIRECT, OUTBOUND_REDIRECT],
            &[
                &prerouting,
                &input,
                &output,
                &postrouting,
                &inbound,
                &outbound,
                &inbound_redirect,
                &outbound_redirect,
            ],
        ),
        table("mangle", &[], &[&mangle_prerouting]),
    ];
    tables.into_iter().flatten().collect::<Vec<_>>().join("\n")
}

/// `iptables-save` output without Kuma's rules and chains: what uninstall
/// leaves (every line naming a `KUMA_MESH` chain or carrying Kuma's
/// comment goes; comment lines and counters too).
pub fn without_kuma_rules(saved: &str) -> String {
    saved
        .lines()
        .filter(|l| !l.starts_with('#') && !is_kuma_line(l))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Whether a line of `iptables-save` output is Kuma's: a Kuma chain, a
/// rule in one, a jump to one, or a rule carrying Kuma's comment.
fn is_kuma_line(line: &str) -> bool {
    line.contains(CHAIN_PREFIX) || line.contains(COMMENT_PREFIX)
}

/// The tables of `iptables-save` output: each table's name and its chain
/// (`:`) and rule (`-A`) lines, in order.
fn saved_tables(saved: &str) -> Vec<(&str, Vec<&str>)> {
    let mut tables: Vec<(&str, Vec<&str>)> = Vec::new();
    for line in saved.lines() {
        if let Some(name) = line.strip_prefix('*') {
            tables.push((name.trim(), Vec::new()));
        } else if (line.starts_with(':') || line.starts_with("-A "))
            && let Some((_, lines)) = tables.last_mut()
        {
            lines.push(line);
        }
    }
    tables
}

/// The chain a `:CHAIN POLICY [p:b]` line declares.
fn declared_chain(line: &str) -> Option<&str> {
    line.strip_prefix(':')?.split_whitespace().next()
}

/// `iptables-restore --noflush` input that takes out of the tables
/// `saved` shows exactly Kuma's rules and chains, touching nothing else:
/// no table is flushed, so rules iptables cannot even show (an nftables
/// table of another tool) stay as they are. `None` when there is nothing
/// of Kuma's.
pub fn removal_input(saved: &str) -> Option<String> {
    let mut out = String::new();
    for (table, lines) in saved_tables(saved) {
        let kuma_chains: Vec<&str> = lines
            .iter()
            .filter_map(|l| declared_chain(l))
            .filter(|c| c.starts_with(CHAIN_PREFIX))
            .collect();
        let jumps: Vec<&str> = lines
            .iter()
            .filter_map(|l| l.strip_prefix("-A "))
            .filter(|rule| {
                let chain = rule.split_whitespace().next().unwrap_or_default();
                !chain.starts_with(CHAIN_PREFIX) && is_kuma_line(rule)
            })
            .collect();
        if kuma_chains.is_empty() && jumps.is_empty() {
            continue;
        }
        out.push_str(&format!("*{table}\n"));
        for rule in jumps {
            out.push_str(&format!("-D {rule}\n"));
        }
        // Emptied first: Kuma's chains jump to one another.
        for chain in &kuma_chains {
            out.push_str(&format!("-F {chain}\n"));
        }
        for chain in &kuma_chains {
            out.push_str(&format!("-X {chain}\n"));
        }
        out.push_str("COMMIT\n");
    }
    (!out.is_empty()).then_some(out)
}

/// `iptables-restore --noflush` input that puts Kuma's rules and chains of
/// `saved` back where they were, into tables that hold the rest of `saved`
/// and nothing of Kuma's: each rule of a chain not Kuma's is inserted at
/// the position it had. `None` when `saved` has nothing of Kuma's.
pub fn kuma_rules_of(saved: &str) -> Option<String> {
    let mut out = String::new();
    for (table, lines) in saved_tables(saved) {
        let mut chains = String::new();
        let mut own_rules = String::new();
        let mut jumps = String::new();
        let mut position: BTreeMap<&str, usize> = BTreeMap::new();
        for line in &lines {
            if let Some(chain) = declared_chain(line) {
                if chain.starts_with(CHAIN_PREFIX) {
                    chains.push_str(&format!(":{chain} - [0:0]\n"));
                }
                continue;
            }
            let Some(rule) = line.strip_prefix("-A ") else {
                continue;
            };
            let (chain, spec) = rule.split_once(' ').unwrap_or((rule, ""));
            let index = position.entry(chain).or_insert(0);
            *index += 1;
            if chain.starts_with(CHAIN_PREFIX) {
                own_rules.push_str(&format!("{line}\n"));
            } else if is_kuma_line(rule) {
                jumps.push_str(&format!("-I {chain} {index} {spec}\n"));
            }
        }
        if chains.is_empty() && jumps.is_empty() {
            continue;
        }
        out.push_str(&format!("*{table}\n{chains}{own_rules}{jumps}COMMIT\n"));
    }
    (!out.is_empty()).then_some(out)
}

/// A configuration file under any input, as the `transparent_proxy_config`
/// fuzz target (`kumactl/fuzz`) drives it: `text` is applied over the
/// defaults as `--config-file` would be; a configuration `check` accepts
/// yields, for both families, `iptables-restore` input made only of table
/// headers, chain definitions, `-A`/`-I` rules and `COMMIT`s, each table
/// committed, whose words are plain tokens (nothing from the file can
/// smuggle a quote, a newline or an option of its own), and which, when
/// rules carry Kuma's comment, uninstall removes to the last rule.
pub fn check_config_file(text: &str) -> Result<(), String> {
    let mut config = Config::default();
    if config.apply_file(text).is_err() || config.check().is_err() {
        return Ok(());
    }
    let host = Host {
        loopback: "lo".into(),
        nameservers: vec![
            "10.96.0.10".parse().map_err(|_| "address")?,
            "fd00::10".parse().map_err(|_| "address")?,
        ],
        conntrack: true,
    };
    let plain = |word: &str| {
        !word.is_empty()
            && word
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.:/,!*[]".contains(c))
    };
    for family in [Family::V4, Family::V6] {
        let rules = restore_input(&config, family, &host);
        let mut open = false;
        for line in rules.lines() {
            // A comment is the one quoted text: Kuma's prefix, then words.
            let mut unquoted = line.to_string();
            if let Some(start) = line.find("--comment \"") {
                let rest = &line[start + 11..];
                let end = rest
                    .find('"')
                    .ok_or_else(|| format!("{family:?}: unterminated comment in {line:?}"))?;
                let comment = &rest[..end];
                let kumas = comment.starts_with(COMMENT_PREFIX)
                    && comment
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || " _-.:/,()".contains(c))
                    && !rest[end + 1..].contains('"');
                if !kumas {
                    return Err(format!("{family:?}: comment {comment:?} in {line:?}"));
                }
                unquoted = format!("{}{}", &line[..start], &rest[end + 1..]);
            } else if line.contains('"') {
                return Err(format!("{family:?}: a quote in {line:?}"));
            }
            let words: Vec<&str> = unquoted.split_whitespace().collect();
            if let Some(bad) = words.iter().find(|w| !plain(w) && **w != "*") {
                return Err(format!("{family:?}: word {bad:?} in {line:?}"));
            }
            match words.first().copied() {
                Some("*") if !open && words.len() == 2 => open = true,
                Some("-N" | "-A" | "-I") if open => {}
                Some("COMMIT") if open && words.len() == 1 => open = false,
                // Tables are separated by an empty line.
                None if !open => {}
                _ => return Err(format!("{family:?}: line {line:?}")),
            }
        }
        if open {
            return Err(format!("{family:?}: a table is not committed"));
        }
        if config.comments {
            let uninstalled = without_kuma_rules(&rules);
            if let Some(left) = uninstalled
                .lines()
                .find(|l| l.starts_with("-A") || l.starts_with("-I") || l.starts_with("-N"))
            {
                return Err(format!("{family:?}: uninstall would leave {left:?}"));
            }
        }
    }
    Ok(())
}
