//! Arbitrary bytes as the control plane's certificate: kuma-dp's verifier
//! never panics, accepts only what the user's CA file names or signs, and
//! says why it refuses (`check_server_certificate`).

#![no_main]

use libfuzzer_sys::fuzz_target;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

const BUNDLE: &[u8] = include_bytes!("../certs/bundle.pem");
const LEAF: &[u8] = include_bytes!("../certs/leaf.pem");

fuzz_target!(|data: &[u8]| {
    let named = CertificateDer::pem_slice_iter(BUNDLE).next().and_then(Result::ok);
    let leaf = CertificateDer::pem_slice_iter(LEAF).next().and_then(Result::ok);
    let accepted: Vec<CertificateDer<'static>> = named.into_iter().chain(leaf).collect();
    if let Err(broken) = kuma_dp::cp_tls::check_server_certificate(data, BUNDLE, &accepted) {
        panic!("{broken}");
    }
});
