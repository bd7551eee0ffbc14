//! Arbitrary REST requests (a request line, then the body) through the
//! real router over a memory store: never a panic or a 500, Kuma's error
//! body on a client error, a refused request changes nothing, and what an
//! accepted one stored validates (`check_request`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: {
        // The shared template (token signing keys: RSA) is made before
        // the per-input timeout starts counting.
        let _ = kuma_operator::api::request_check::check_request(b"GET /");
    },
    |data: &[u8]| {
        if let Err(broken) = kuma_operator::api::request_check::check_request(data) {
            panic!("{broken}");
        }
    }
);
