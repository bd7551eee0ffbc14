//! Any string presented as a dataplane or user token, mostly edits of real
//! ones (genuine, expired, revoked, foreign-key, unsigned, HMAC with the
//! public key): only the genuine token is accepted, and only for its own
//! mesh, dataplane or user (`check_token`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: {
        // The RSA keys and base tokens are made before the per-input
        // timeout starts counting.
        let _ = kuma_operator::tokens::check::check_token(&[0]);
    },
    |data: &[u8]| {
        if let Err(broken) = kuma_operator::tokens::check::check_token(data) {
            panic!("{broken}");
        }
    }
);
