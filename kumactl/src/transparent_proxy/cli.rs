//! The flags of `kumactl install transparent-proxy`, as Kuma names them;
//! they override the config files, which override the defaults.

use super::config::{Config, parse_ips, parse_ports, parse_uid_exclusion};

/// `kumactl install transparent-proxy`: Kuma's flags; they override the
/// config files, which override the defaults.
#[derive(clap::Parser, Debug)]
#[command(name = "kumactl install transparent-proxy")]
pub struct TransparentProxyArgs {
    /// Print the rules, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the rules applied.
    #[arg(long)]
    pub verbose: bool,
    /// `dualstack` (IPv6 too when the host has it) or `ipv4`.
    #[arg(long)]
    pub ip_family_mode: Option<String>,
    /// Envoy's outbound port.
    #[arg(long)]
    pub redirect_outbound_port: Option<u16>,
    /// Redirect inbound traffic (false for gateways).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub redirect_inbound: Option<bool>,
    /// Envoy's inbound port.
    #[arg(long)]
    pub redirect_inbound_port: Option<u16>,
    /// Inbound ports not redirected (comma-separated).
    #[arg(long)]
    pub exclude_inbound_ports: Option<String>,
    /// Outbound ports not redirected (comma-separated).
    #[arg(long)]
    pub exclude_outbound_ports: Option<String>,
    /// The user kuma-dp runs as (a UID).
    #[arg(long)]
    pub kuma_dp_user: Option<String>,
    /// The UID kuma-dp runs as (deprecated: --kuma-dp-user).
    #[arg(long)]
    pub kuma_dp_uid: Option<String>,
    /// Redirect DNS to the resolvers of /etc/resolv.conf to kuma-dp's DNS proxy.
    #[arg(long)]
    pub redirect_dns: bool,
    /// Redirect all DNS traffic to kuma-dp's DNS proxy.
    #[arg(long)]
    pub redirect_all_dns_traffic: bool,
    /// kuma-dp's DNS proxy port.
    #[arg(long)]
    pub redirect_dns_port: Option<u16>,
    /// Do not split DNS connection tracking into zones.
    #[arg(long)]
    pub skip_dns_conntrack_zone_split: bool,
    /// Drop packets in the INVALID conntrack state.
    #[arg(long)]
    pub drop_invalid_packets: bool,
    /// Outbound ports not redirected for UIDs: `[protocol:][ports:]uids` (repeatable).
    #[arg(long)]
    pub exclude_outbound_ports_for_uids: Vec<String>,
    /// Sources whose inbound traffic is not redirected (comma-separated, repeatable).
    #[arg(long)]
    pub exclude_inbound_ips: Vec<String>,
    /// Destinations not redirected (comma-separated, repeatable).
    #[arg(long)]
    pub exclude_outbound_ips: Vec<String>,
    /// Log matching packets.
    #[arg(long)]
    pub iptables_logs: bool,
    /// No comments on the rules (uninstall then cannot find them).
    #[arg(long)]
    pub disable_comments: bool,
    /// Configuration files (YAML or JSON; `-` for stdin), in order.
    #[arg(long)]
    pub config: Vec<String>,
    /// A configuration file read before --config (deprecated).
    #[arg(long)]
    pub config_file: Option<String>,
    /// Accepted for compatibility; no effect here.
    #[arg(long, hide = true)]
    pub wait: Option<u32>,
    /// Accepted for compatibility; no effect here.
    #[arg(long, hide = true)]
    pub wait_interval: Option<u32>,
    /// Accepted for compatibility; no effect here.
    #[arg(long, hide = true)]
    pub max_retries: Option<u32>,
    /// Accepted for compatibility; no effect here.
    #[arg(long, hide = true)]
    pub sleep_between_retries: Option<String>,
    /// Accepted for compatibility; no effect here.
    #[arg(long, hide = true)]
    pub store_firewalld: bool,
}

impl TransparentProxyArgs {
    /// The configuration: defaults, then the files, then the flags.
    pub fn config(&self) -> Result<Config, String> {
        let mut c = Config::default();
        for path in self.config_file.iter().chain(self.config.iter()) {
            let text = if path == "-" {
                std::io::read_to_string(std::io::stdin()).map_err(|e| format!("stdin: {e}"))?
            } else {
                std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?
            };
            c.apply_file(&text).map_err(|e| format!("{path}: {e}"))?;
        }
        let e = |m: String| m;
        if let Some(m) = &self.ip_family_mode {
            c.ip_family_mode = m.parse().map_err(e)?;
        }
        if let Some(p) = self.redirect_outbound_port {
            c.outbound_port = p;
        }
        if let Some(b) = self.redirect_inbound {
            c.redirect_inbound = b;
        }
        if let Some(p) = self.redirect_inbound_port {
            c.inbound_port = p;
        }
        if let Some(v) = &self.exclude_inbound_ports {
            c.exclude_inbound_ports = parse_ports("--exclude-inbound-ports", v).map_err(e)?;
        }
        if let Some(v) = &self.exclude_outbound_ports {
            c.exclude_outbound_ports = parse_ports("--exclude-outbound-ports", v).map_err(e)?;
        }
        if let Some(user) = self.kuma_dp_user.as_ref().or(self.kuma_dp_uid.as_ref()) {
            c.kuma_dp_uid = user
                .parse()
                .map_err(|_| format!("--kuma-dp-user: {user:?} is not a UID"))?;
        }
        if self.redirect_dns && self.redirect_all_dns_traffic {
            return Err(
                "only one of '--redirect-dns' or '--redirect-all-dns-traffic' should be specified".into(),
            );
        }
        if self.redirect_dns {
            c.redirect_dns = true;
            c.redirect_all_dns = false;
        }
        if self.redirect_all_dns_traffic {
            c.redirect_all_dns = true;
            c.redirect_dns = false;
        }
        if let Some(p) = self.redirect_dns_port {
            c.dns_port = p;
        }
        if self.skip_dns_conntrack_zone_split {
            c.skip_dns_conntrack_zone_split = true;
        }
        if self.drop_invalid_packets {
            c.drop_invalid_packets = true;
        }
        if !self.exclude_outbound_ports_for_uids.is_empty() {
            c.exclude_outbound_ports_for_uids = self
                .exclude_outbound_ports_for_uids
                .iter()
                .map(|v| parse_uid_exclusion(v))
                .collect::<Result<_, _>>()
                .map_err(e)?;
        }
        if !self.exclude_inbound_ips.is_empty() {
            c.exclude_inbound_ips =
                parse_ips("--exclude-inbound-ips", &self.exclude_inbound_ips.join(",")).map_err(e)?;
        }
        if !self.exclude_outbound_ips.is_empty() {
            c.exclude_outbound_ips =
                parse_ips("--exclude-outbound-ips", &self.exclude_outbound_ips.join(",")).map_err(e)?;
        }
        if self.iptables_logs {
            c.iptables_logs = true;
        }
        if self.disable_comments {
            c.comments = false;
        }
        c.check().map_err(e)?;
        Ok(c)
    }
}
