//! Putting the rules in place (and taking them out) with
//! `iptables-restore`, all or nothing: the rules are checked first
//! (`--test`), the previous Kuma rules are removed, the new ones applied,
//! and if the kernel refuses any, Kuma's rules as they were before are put
//! back, in both families, and the refused rule is named. Only Kuma's own
//! rules and chains are ever added or deleted (`--noflush`): a table is
//! never flushed, so whatever else the host has, even nftables tables
//! iptables cannot show, stays exactly as it was.

use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};

use super::config::{Config, IpFamilyMode};
use super::rules::{CHAIN_PREFIX, COMMENT_PREFIX, Family, Host, kuma_rules_of, removal_input, restore_input};

/// The tools of one family.
struct Tools {
    family: Family,
    save: &'static str,
    restore: &'static str,
}

const V4: Tools = Tools {
    family: Family::V4,
    save: "iptables-save",
    restore: "iptables-restore",
};
const V6: Tools = Tools {
    family: Family::V6,
    save: "ip6tables-save",
    restore: "ip6tables-restore",
};

fn run_with_input(program: &str, args: &[&str], input: &str) -> Result<String, String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e} (is iptables installed?)"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .map_err(|e| format!("{program}: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

fn save(tools: &Tools) -> Result<String, String> {
    let out = Command::new(tools.save)
        .output()
        .map_err(|e| format!("cannot run {}: {e} (is iptables installed?)", tools.save))?;
    if !out.status.success() {
        return Err(format!(
            "{}: {}",
            tools.save,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

/// The rule of `input` a failure message's `line N` points at.
fn refused_rule(input: &str, error: &str) -> String {
    let line = error
        .split("line ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse::<usize>().ok());
    match line.and_then(|n| input.lines().nth(n.saturating_sub(1))) {
        Some(rule) => format!("{error}\nthe refused rule: {rule}"),
        None => error.to_string(),
    }
}

/// The host facts the rules depend on.
pub fn host() -> Host {
    let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let nameservers: Vec<IpAddr> = resolv
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|ip| ip.trim().parse().ok())
        .collect();
    Host {
        loopback: loopback_name(),
        nameservers,
        conntrack: true,
    }
}

/// The name of the loopback interface (the one flagged loopback).
fn loopback_name() -> String {
    const IFF_LOOPBACK: u32 = 0x8;
    if let Ok(entries) = std::fs::read_dir("/sys/class/net") {
        for entry in entries.flatten() {
            let flags = std::fs::read_to_string(entry.path().join("flags")).unwrap_or_default();
            let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).unwrap_or(0);
            if flags & IFF_LOOPBACK != 0 {
                return entry.file_name().to_string_lossy().to_string();
            }
        }
    }
    "lo".into()
}

/// Whether IPv6 rules apply: dual-stack mode and an IPv6 address other
/// than loopback; `::6` (Envoy's inbound passthrough source) is then added
/// to the loopback interface.
fn ipv6_enabled(config: &Config, loopback: &str) -> bool {
    if config.ip_family_mode != IpFamilyMode::DualStack {
        return false;
    }
    let global = |args: &[&str]| {
        Command::new("ip")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default()
    };
    // One line per address (`-o`); the `::6` a previous install put on
    // the loopback interface is not the host's IPv6.
    let addresses = global(&["-6", "-o", "addr", "show", "scope", "global"]);
    if !has_ipv6_beyond(&addresses, loopback) {
        return false;
    }
    if global(&["-6", "-o", "addr", "show", "dev", loopback]).contains(" ::6/128 ") {
        return true;
    }
    Command::new("ip")
        .args(["-6", "addr", "add", "::6/128", "dev", loopback])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Whether `ip -6 -o addr show scope global` lists an address on an
/// interface other than `loopback`.
fn has_ipv6_beyond(addresses: &str, loopback: &str) -> bool {
    addresses.lines().any(|line| {
        let interface = line.split_whitespace().nth(1).unwrap_or_default();
        line.contains(" inet6 ") && interface.split('@').next() != Some(loopback)
    })
}

/// The rules the configuration produces, per family, as `--dry-run` prints.
pub fn dry_run(config: &Config, host: &Host, ipv6: bool) -> String {
    let mut out = format!("### IPv4 ###\n\n{}", restore_input(config, Family::V4, host));
    if ipv6 {
        out.push_str(&format!(
            "\n### IPv6 ###\n\n{}",
            restore_input(config, Family::V6, host)
        ));
    }
    out
}

/// Installs the rules; returns what was applied.
pub fn install(config: &Config) -> Result<String, String> {
    config.check()?;
    let mut host = host();
    let mut families = vec![V4];
    if ipv6_enabled(config, &host.loopback) {
        families.push(V6);
    }
    let mut applied = String::new();
    // Each family's rules as they were, to go back to if a later step fails.
    let mut changed: Vec<(&Tools, String)> = Vec::new();
    for tools in &families {
        let mut input = restore_input(config, tools.family, &host);
        if let Err(e) = run_with_input(tools.restore, &["--test", "--noflush"], &input) {
            // Without the conntrack match, DNS goes without zone splitting.
            if !host.conntrack || !input.contains("CT --zone") {
                roll_back(&changed);
                return Err(format!("{}: {}", tools.restore, refused_rule(&input, &e)));
            }
            eprintln!("conntrack zone splitting is disabled. This requires the 'conntrack' iptables module");
            host.conntrack = false;
            input = restore_input(config, tools.family, &host);
        }
        let before = match save(tools).and_then(|saved| removable(&saved).map(|_| saved)) {
            Ok(saved) => saved,
            Err(e) => {
                roll_back(&changed);
                return Err(e);
            }
        };
        changed.push((tools, before));
        if let Some(previous) = changed.last().and_then(|(_, before)| removal_input(before))
            && let Err(e) = run_with_input(tools.restore, &["--noflush"], &previous)
        {
            roll_back(&changed);
            return Err(format!("{}: removing the previous rules: {e}", tools.restore));
        }
        if let Err(e) = run_with_input(tools.restore, &["--noflush"], &input) {
            roll_back(&changed);
            return Err(format!(
                "{}: the rules were refused, the previous ones are in place again: {}",
                tools.restore,
                refused_rule(&input, &e)
            ));
        }
        applied.push_str(&input);
    }
    Ok(applied)
}

/// Puts every family in `changed` back as it was: whatever of Kuma's is
/// there now goes, and Kuma's rules of before return to their places.
/// Nothing else is touched (no table is flushed or restored whole). Best
/// effort: the caller reports the failure that led here.
fn roll_back(changed: &[(&Tools, String)]) {
    for (tools, before) in changed.iter().rev() {
        if let Some(now) = save(tools).ok().as_deref().and_then(removal_input) {
            let _ = run_with_input(tools.restore, &["--noflush"], &now);
        }
        if let Some(previous) = kuma_rules_of(before) {
            let _ = run_with_input(tools.restore, &["--noflush"], &previous);
        }
    }
}

/// Refuses to touch Kuma-looking rules that cannot be told apart safely.
fn removable(saved: &str) -> Result<(), String> {
    if saved.contains(CHAIN_PREFIX) && !saved.contains(COMMENT_PREFIX) {
        return Err("transparent proxy rules detected, but expected comments are missing. Cleanup cannot proceed safely without comments to identify rules. Please remove the transparent proxy iptables rules manually".into());
    }
    Ok(())
}

/// Removes every rule and chain install added (both families); says what
/// happened.
pub fn uninstall(dry_run: bool) -> Result<String, String> {
    let mut report = String::new();
    for tools in [V4, V6] {
        let before = match save(&tools) {
            Ok(s) => s,
            Err(e) if tools.family == Family::V6 => {
                report.push_str(&format!("IPv6 skipped: {e}\n"));
                continue;
            }
            Err(e) => return Err(e),
        };
        removable(&before)?;
        let Some(removal) = removal_input(&before) else {
            continue;
        };
        if dry_run {
            report.push_str(&removal);
            continue;
        }
        run_with_input(tools.restore, &["--test", "--noflush"], &removal)
            .map_err(|e| format!("{}: {}", tools.restore, refused_rule(&removal, &e)))?;
        if let Err(e) = run_with_input(tools.restore, &["--noflush"], &removal) {
            roll_back(&[(&tools, before)]);
            return Err(format!("{}: {e}", tools.restore));
        }
    }
    if report.is_empty() && !dry_run {
        report.push_str("transparent proxy cleanup completed successfully\n");
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::has_ipv6_beyond;

    #[test]
    fn the_loopback_address_of_a_previous_install_is_not_the_hosts_ipv6() {
        let only_loopback =
            "1: lo    inet6 ::6/128 scope global \\       valid_lft forever preferred_lft forever\n";
        assert!(!has_ipv6_beyond(only_loopback, "lo"));
        assert!(!has_ipv6_beyond("", "lo"));
        let with_eth0 = format!(
            "{only_loopback}3: eth0@eth1    inet6 fd79::2/64 scope global nodad \\       valid_lft forever preferred_lft forever\n"
        );
        assert!(has_ipv6_beyond(&with_eth0, "lo"));
    }
}
