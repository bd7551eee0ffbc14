//! Any AdmissionReview body to any of the four webhook routes, through the
//! real router: always a review answer with the request's uid, patches
//! that apply, injection that keeps the Pod a Pod and is idempotent, an
//! injected Pod the converter makes a valid Dataplane of (`check_review`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(broken) = kuma_webhook::review_check::check_review(data) {
        panic!("{broken}");
    }
});
