//! `kumactl install transparent-proxy` (what kuma-init runs in every Pod)
//! and `kumactl uninstall transparent-proxy`: iptables rules redirecting a
//! host's (or Pod's) traffic into Envoy, in Kuma's layout.
//!
//! - [`config`]: Kuma's flags and config file, checked before anything changes;
//! - [`rules`]: the rules, a pure function of the configuration (golden-tested);
//! - [`apply`]: `iptables-restore`, all or nothing.

pub mod apply;
pub mod cli;
pub mod config;
pub mod rules;
