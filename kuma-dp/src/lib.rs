//! kuma-dp's pure parts, apart from the process that moves bytes: the DNS
//! proxy's decision (fuzzed by `kuma-dp/fuzz`).

pub mod dns_answer;
