//! `kumactl install transparent-proxy` when the kernel refuses the rules,
//! for real: a network namespace of the test's own whose nftables already
//! hold a `nat` table of another tool, with base chains of the wrong type
//! (as a host firewall may leave them). `iptables-restore --test` accepts
//! Kuma's rules; the kernel refuses them when they are committed
//! (`CHAIN_ADD failed`). Whatever install had changed by then is undone,
//! the refused rule is named, and nothing else of the host is touched:
//! no table is flushed, so the other tool's chains stay as they were
//! (`nft list table` before and after) and the host's own rules too
//! (`iptables-save`).

use std::process::{Command, Output};

use kuma_e2e::bin_dir;
use kuma_e2e::netns::{in_ns, ok, ok_with_input, saved_rules};

/// A network namespace, deleted on drop.
struct Namespace(String);

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Another tool's `nat` table of `family` whose base chains are filter
/// chains: iptables cannot add its own `nat` chains beside them.
fn foreign_nat_table(family: &str) -> String {
    format!(
        "table {family} nat {{\n  chain PREROUTING {{ type filter hook prerouting priority -100; policy accept; }}\n  chain OUTPUT {{ type filter hook output priority -100; policy accept; }}\n  chain firewall {{ tcp dport 7777 accept; }}\n}}\n"
    )
}

fn kumactl(ns: &str, args: &[&str]) -> Output {
    in_ns(ns, &bin_dir().join("kumactl").display().to_string(), args)
}

#[test]
fn rules_the_kernel_refuses_leave_the_host_as_it_was() {
    if !Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
    {
        eprintln!("skipped: needs root for network namespaces");
        return;
    }
    let version = Command::new("iptables")
        .arg("-V")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    assert!(
        version.contains("nf_tables"),
        "iptables must use the nf_tables backend here (it is Debian's default): {version}"
    );
    let ns = Namespace(format!("kuma-tpr-{}", std::process::id()));
    let status = Command::new("ip").args(["netns", "add", &ns.0]).status();
    assert!(status.is_ok_and(|s| s.success()), "ip netns add {}", ns.0);
    let ns = &ns.0;
    ok(ns, "ip", &["link", "set", "lo", "up"]);
    // A global IPv6 address: install then writes rules for both families.
    // (A veth pair with both ends inside: this kernel has no dummy links.)
    ok(
        ns,
        "ip",
        &["link", "add", "eth0", "type", "veth", "peer", "name", "eth1"],
    );
    ok(ns, "ip", &["addr", "add", "10.79.0.2/24", "dev", "eth0"]);
    ok(
        ns,
        "ip",
        &["-6", "addr", "add", "fd79::2/64", "dev", "eth0", "nodad"],
    );
    ok(ns, "ip", &["link", "set", "eth0", "up"]);
    // The host's own iptables rules.
    ok(
        ns,
        "iptables",
        &["-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT"],
    );
    ok(
        ns,
        "ip6tables",
        &["-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT"],
    );

    // IPv4 is committed, then the kernel refuses IPv6: IPv4 is undone too.
    ok_with_input(ns, "nft", &["-f", "-"], Some(&foreign_nat_table("ip6")));
    let foreign_v6 = ok(ns, "nft", &["list", "table", "ip6", "nat"]);
    let (v4, v6) = (
        saved_rules(ns, "iptables-save"),
        saved_rules(ns, "ip6tables-save"),
    );
    let refused = kumactl(ns, &["install", "transparent-proxy"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "install must fail: {stderr}");
    assert!(
        stderr.contains("ip6tables-restore") && stderr.contains("the refused rule: "),
        "the error names the refused rule: {stderr}"
    );
    // (iptables-nft may leave the empty `nat` table it created: no rule.)
    assert_eq!(
        saved_rules(ns, "iptables-save"),
        v4,
        "a refused install leaves no rule"
    );
    assert_eq!(saved_rules(ns, "ip6tables-save"), v6);
    assert_eq!(ok(ns, "nft", &["list", "table", "ip6", "nat"]), foreign_v6);

    // Kuma's rules in place (IPv4 only), then a new install is refused
    // half-way: the previous rules are back where they were.
    ok(
        ns,
        &bin_dir().join("kumactl").display().to_string(),
        &["install", "transparent-proxy", "--ip-family-mode", "ipv4"],
    );
    let installed = saved_rules(ns, "iptables-save");
    assert!(installed.contains("KUMA_MESH_OUTBOUND"), "{installed}");
    assert!(installed.contains("--to-ports 15001"), "{installed}");
    let refused = kumactl(
        ns,
        &[
            "install",
            "transparent-proxy",
            "--redirect-outbound-port",
            "15002",
        ],
    );
    assert!(
        !refused.status.success(),
        "install must fail: {}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert_eq!(
        saved_rules(ns, "iptables-save"),
        installed,
        "the previous Kuma rules are back, in their places"
    );
    assert_eq!(ok(ns, "nft", &["list", "table", "ip6", "nat"]), foreign_v6);

    // Uninstall takes out Kuma's rules and nothing else.
    ok(
        ns,
        &bin_dir().join("kumactl").display().to_string(),
        &["uninstall", "transparent-proxy"],
    );
    assert_eq!(saved_rules(ns, "iptables-save"), v4);
    assert_eq!(ok(ns, "nft", &["list", "table", "ip6", "nat"]), foreign_v6);

    // The other tool's table in IPv4: the first commit is refused.
    ok(ns, "nft", &["delete", "table", "ip", "nat"]);
    ok_with_input(ns, "nft", &["-f", "-"], Some(&foreign_nat_table("ip")));
    let foreign_v4 = ok(ns, "nft", &["list", "table", "ip", "nat"]);
    let v4 = saved_rules(ns, "iptables-save");
    let refused = kumactl(ns, &["install", "transparent-proxy", "--ip-family-mode", "ipv4"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "install must fail: {stderr}");
    assert!(stderr.contains("the refused rule: "), "{stderr}");
    assert_eq!(ok(ns, "nft", &["list", "table", "ip", "nat"]), foreign_v4);
    assert_eq!(saved_rules(ns, "iptables-save"), v4);
}
