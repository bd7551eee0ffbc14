//! Arbitrary text as `kumactl install transparent-proxy --config-file`:
//! never a panic, and an accepted configuration yields rules that keep
//! `check_config_file`'s properties.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(broken) = kumactl::transparent_proxy::rules::check_config_file(text) {
        panic!("{broken}");
    }
});
