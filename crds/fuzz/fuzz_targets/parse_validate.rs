//! Arbitrary text through the parser and validator must never panic, and
//! whatever is accepted must be written back in both forms and accepted
//! again with the same meaning (`check_round_trip`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(broken) = kuma_crds::format::check_round_trip(text) {
        panic!("{broken}");
    }
});
