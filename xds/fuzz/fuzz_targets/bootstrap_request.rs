//! Arbitrary bytes as the Host header and body of a `/bootstrap` request:
//! never a panic, and an accepted request yields a bootstrap that keeps
//! `check_bootstrap`'s properties (an Envoy Bootstrap, node and ADS host
//! exactly as asked, YAML that reads back as the same document).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(broken) = kuma_xds::bootstrap::check_bootstrap(data) {
        panic!("{broken}");
    }
});
