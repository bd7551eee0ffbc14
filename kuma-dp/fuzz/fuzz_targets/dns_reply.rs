//! Arbitrary bytes as a DNS question to kuma-dp's DNS proxy: never a
//! panic, and every decision keeps `check_reply`'s properties.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let table = kuma_dp::dns_answer::fuzz_table();
    if let Err(broken) = kuma_dp::dns_answer::check_reply(data, &table) {
        panic!("{broken}");
    }
});
