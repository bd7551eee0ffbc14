//! kuma-dp's pure parts, apart from the process that moves bytes: the DNS
//! proxy's decision (fuzzed by `kuma-dp/fuzz`) and how the control plane's
//! certificate is trusted.

pub mod cp_tls;

pub mod dns_answer;
