//! Arbitrary bytes as a sequence of Envoy requests (ACKs, NACKs, stale
//! nonces, subscriptions, unknown types) and snapshots on one ADS stream,
//! state of the world or delta: never a panic, and every response keeps
//! the protocol rules `check_sequence` states.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(broken) = kuma_xds::server::sequence::check_sequence(data) {
        panic!("{broken}");
    }
});
